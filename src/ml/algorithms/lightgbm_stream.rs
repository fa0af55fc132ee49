//! A LightGBM dataset built from rows as they stream in, so training on a
//! large relation never holds its float matrix: LightGBM bins every
//! feature into at most `max_bin` buckets, and only the buckets are kept.
//!
//! LightGBM builds a dataset from a matrix in two steps: bin boundaries
//! from a sample of the rows (`bin_construct_sample_cnt`, 200,000 by
//! default, drawn by its own seeded generator), then every row pushed into
//! the bins. The same two steps through its C API, with the rows LightGBM
//! itself would have sampled (`LGBM_SampleIndices`) and the same
//! parameters, give the dataset `LGBM_DatasetCreateFromMat` gives, bit for
//! bit: the model trained on it is the in-memory path's.

use std::ffi::{c_int, c_void};

use lightgbm3_sys as sys;
use ndarray::ArrayView2;
use serde_json::{Map, Value};

use super::lightgbm::{call, parameters, to_i32, train_on, DatasetHandle, Parameters};
use super::lightgbm_threads::Lease;
use super::Model;
use crate::ml::error::{MlError, MlResult};
use crate::ml::task::Task;

/// What LightGBM counts as zero when it samples (`kZeroThreshold`).
const ZERO: f64 = 1e-35_f32 as f64;

/// The training's LightGBM settings, shared by the sample and the dataset.
pub struct Settings<'a> {
    pub task: Task,
    pub num_classes: usize,
    pub hyperparams: &'a Map<String, Value>,
    pub threads: usize,
}

impl Settings<'_> {
    fn parameters(&self) -> MlResult<Parameters> {
        parameters(self.task, self.num_classes, self.hyperparams, self.threads)
    }

    /// The training rows (positions among `rows`) LightGBM builds its bins
    /// from, in its order.
    pub fn sample_rows(&self, rows: usize) -> MlResult<Vec<i32>> {
        let params = self.parameters()?;
        let total = to_i32(rows, "rows")?;
        let mut count: c_int = 0;
        call(
            // SAFETY: NUL-terminated parameters, valid out pointer.
            unsafe { sys::LGBM_GetSampleCount(total, params.string.as_ptr(), &mut count) },
            "sample",
        )?;
        let mut out = vec![0i32; usize::try_from(count).unwrap_or(0)];
        let mut len: i32 = 0;
        call(
            // SAFETY: `out` has room for the `count` indices LightGBM writes.
            unsafe {
                sys::LGBM_SampleIndices(
                    total,
                    params.string.as_ptr(),
                    out.as_mut_ptr() as *mut c_void,
                    &mut len,
                )
            },
            "sample",
        )?;
        out.truncate(usize::try_from(len).unwrap_or(0));
        Ok(out)
    }
}

/// The sampled rows' values, column by column, as LightGBM keeps them:
/// the non-zero ones (and NaN), each with its row's position in the sample.
pub struct Sample {
    values: Vec<Vec<f64>>,
    positions: Vec<Vec<c_int>>,
    rows: usize,
}

impl Sample {
    pub fn new(cols: usize) -> Sample {
        Sample {
            values: vec![Vec::new(); cols],
            positions: vec![Vec::new(); cols],
            rows: 0,
        }
    }

    /// Row `position` of the sample (as `sample_rows` ordered it).
    pub fn push(&mut self, position: usize, row: &[f64]) -> MlResult<()> {
        let at = to_i32(position, "sample rows")?;
        for ((values, positions), &v) in self.values.iter_mut().zip(&mut self.positions).zip(row) {
            if v.abs() > ZERO || v.is_nan() {
                values.push(v);
                positions.push(at);
            }
        }
        self.rows = self.rows.max(position + 1);
        Ok(())
    }
}

/// A dataset whose bins are set and whose rows are pushed in order.
pub struct StreamedDataset {
    dataset: DatasetHandle,
    params: Parameters,
    task: Task,
    rows: usize,
    cols: usize,
    pushed: usize,
    /// Held from the bins to the trained model (and dropped last):
    /// LightGBM sizes the dataset's per-thread buffers from the count
    /// when it builds them.
    _lease: Lease,
}

impl StreamedDataset {
    /// The bins from `sample`, for a dataset of `rows` rows. Call it on a
    /// blocking thread: it waits while LightGBM runs with another count.
    pub fn new(settings: &Settings, mut sample: Sample, rows: usize) -> MlResult<StreamedDataset> {
        let params = settings.parameters()?;
        let lease = Lease::exactly(params.threads);
        let cols = sample.values.len();
        let counts: Vec<c_int> = sample
            .values
            .iter()
            .map(|v| to_i32(v.len(), "sample values"))
            .collect::<MlResult<_>>()?;
        let mut value_ptrs: Vec<*mut f64> =
            sample.values.iter_mut().map(|v| v.as_mut_ptr()).collect();
        let mut position_ptrs: Vec<*mut c_int> = sample
            .positions
            .iter_mut()
            .map(|v| v.as_mut_ptr())
            .collect();
        let mut handle = std::ptr::null_mut();
        call(
            // SAFETY: one pointer per column to `counts[c]` values and as
            // many positions, all alive for the call (LightGBM copies what
            // it keeps); NUL-terminated parameters.
            unsafe {
                sys::LGBM_DatasetCreateFromSampledColumn(
                    value_ptrs.as_mut_ptr(),
                    position_ptrs.as_mut_ptr(),
                    to_i32(cols, "features")?,
                    counts.as_ptr(),
                    to_i32(sample.rows, "sample rows")?,
                    to_i32(rows, "rows")?,
                    rows as i64,
                    params.string.as_ptr(),
                    &mut handle,
                )
            },
            "dataset",
        )?;
        Ok(StreamedDataset {
            dataset: DatasetHandle(handle),
            params,
            task: settings.task,
            rows,
            cols,
            pushed: 0,
            _lease: lease,
        })
    }

    /// The next rows, row-major; the dataset is complete with the last.
    pub fn push(&mut self, chunk: &[f64]) -> MlResult<()> {
        if self.cols == 0 || chunk.is_empty() {
            return Ok(());
        }
        let n = chunk.len() / self.cols;
        if n * self.cols != chunk.len() || self.pushed + n > self.rows {
            return Err(MlError::Internal(format!(
                "lightgbm: {} values pushed into a dataset of {} rows × {} features ({} pushed)",
                chunk.len(),
                self.rows,
                self.cols,
                self.pushed
            )));
        }
        call(
            // SAFETY: `chunk` holds n rows × cols f64, row-major, as declared.
            unsafe {
                sys::LGBM_DatasetPushRows(
                    self.dataset.0,
                    chunk.as_ptr() as *const c_void,
                    sys::C_API_DTYPE_FLOAT64 as c_int,
                    to_i32(n, "rows")?,
                    to_i32(self.cols, "features")?,
                    to_i32(self.pushed, "rows")?,
                )
            },
            "push",
        )?;
        self.pushed += n;
        Ok(())
    }

    /// Trains on the complete dataset; `y` holds its rows' labels.
    pub fn fit(self, y: ArrayView2<f64>) -> MlResult<Box<dyn Model>> {
        if self.pushed != self.rows || y.nrows() != self.rows {
            return Err(MlError::Internal(format!(
                "lightgbm: {} of {} rows pushed, {} labels",
                self.pushed,
                self.rows,
                y.nrows()
            )));
        }
        train_on(self.task, &self.dataset, y, &self.params, self.cols)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// The streamed dataset trains the model the in-memory one does, also
    /// when the sample is a strict subset of the rows.
    #[test]
    fn streamed_training_equals_the_in_memory_one() {
        let rows = 3000;
        let x = Array2::from_shape_fn((rows, 3), |(i, j)| {
            let v = ((i * 7 + j * 13) % 101) as f64 / 10.0;
            if (i + j) % 17 == 0 {
                0.0
            } else {
                v
            }
        });
        let y = Array2::from_shape_fn((rows, 1), |(i, _)| x[[i, 0]] * 2.0 - x[[i, 2]]);
        let mut hyper = Map::new();
        hyper.insert("n_estimators".into(), Value::from(5));
        hyper.insert("bin_construct_sample_cnt".into(), Value::from(500));
        let settings = Settings {
            task: Task::Regression,
            num_classes: 0,
            hyperparams: &hyper,
            threads: 1,
        };
        let memory =
            super::super::lightgbm::fit(Task::Regression, x.view(), y.view(), 0, &hyper, 1)
                .unwrap();
        let picks = settings.sample_rows(rows).unwrap();
        assert_eq!(picks.len(), 500);
        let mut sample = Sample::new(3);
        for (position, &row) in picks.iter().enumerate() {
            let row = x.row(row as usize).to_vec();
            sample.push(position, &row).unwrap();
        }
        let mut streamed = StreamedDataset::new(&settings, sample, rows).unwrap();
        for chunk in x.as_slice().unwrap().chunks(3 * 700) {
            streamed.push(chunk).unwrap();
        }
        let model = streamed.fit(y.view()).unwrap();
        assert_eq!(model.to_bytes().unwrap(), memory.to_bytes().unwrap());
    }
}
