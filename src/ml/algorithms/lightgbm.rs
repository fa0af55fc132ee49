//! LightGBM for regression (one booster per output column for joint
//! training) and binary/multiclass classification.
//!
//! Training goes through LightGBM's C API (lightgbm3-sys) rather than
//! lightgbm3's `Dataset::from_slice` + `Booster::train`, because that path
//! builds the Dataset with an empty parameter string: dataset-level
//! parameters (`max_bin`, `min_data_in_bin`, `linear_tree`,
//! `feature_pre_filter`...) would be silently ignored, and a small
//! `min_data_in_leaf` would act on features already pre-filtered with the
//! default 20. Like LightGBM's Python package, pgmlcat hands the same
//! parameters to both. The trained model is then reopened with lightgbm3's
//! `Booster` for prediction, importance and saving.
//!
//! Hyperparameters pass through to LightGBM under their canonical names (see
//! `lightgbm_params`); pgmlcat adds `objective` (regression / binary /
//! multiclass), `num_class`, `num_threads` = the training's thread budget
//! and `verbosity` = -1 when the user gives none. Every call into LightGBM
//! holds a `Lease` (see `lightgbm_threads`): its thread count is one
//! process-wide variable that calls running at once must agree on. Rounds default to 100 as
//! in Python's `lightgbm.train`. `early_stopping_round` is accepted but has
//! no effect: training has no validation set.

use std::ffi::{c_char, c_int, c_void, CStr, CString};

use lightgbm3::{Booster, ImportanceType};
use lightgbm3_sys as sys;
use ndarray::{aview1, Array2, ArrayView2};
use serde_json::{Map, Value};

use super::lgbm_fast::FastModel;
use super::lightgbm_params::{canonical, to_param_string};
use super::lightgbm_threads::Lease;
use super::{check_features, Model};
use crate::ml::error::{MlError, MlResult};
use crate::ml::task::Task;

const DEFAULT_ROUNDS: i64 = 100;

/// SAFETY: lightgbm3's `Booster` is `!Send`/`!Sync` only because it holds a
/// raw handle. LightGBM's C++ Booster guards its state with its own mutex
/// (predictions take a shared lock, training an exclusive one), and
/// pgmlcat never calls the `&mut self` methods (`single_row_fast_init`,
/// `set_max_iterations`) after construction, so moving the handle between
/// threads and predicting from several threads at once is sound.
struct Gbm(Booster);
// SAFETY: see above.
unsafe impl Send for Gbm {}
// SAFETY: see above.
unsafe impl Sync for Gbm {}

struct LightGbmModel {
    task: Task,
    n_features: usize,
    boosters: Vec<Gbm>,
    /// A second handle on the single booster, made on the first
    /// explanation: lightgbm3's `predict_contrib` sizes its output for one
    /// class (a multiclass model would write past it) and its handle is
    /// private.
    contrib: std::sync::OnceLock<MlResult<BoosterHandle>>,
    /// The compiled evaluator of a single-booster model, when it replicates
    /// it exactly (see `lgbm_fast`); predictions then skip LightGBM.
    fast: Option<FastModel>,
}

/// The fast evaluator for a single booster's model string, if it agrees
/// with LightGBM on the model's shape.
fn fast_model(strings: &[String], boosters: &[Gbm]) -> Option<FastModel> {
    let ([text], [booster]) = (strings, boosters) else {
        return None;
    };
    let fast = FastModel::parse(text)?;
    let features = usize::try_from(booster.0.num_features()).ok()?;
    let classes = usize::try_from(booster.0.num_classes()).ok()?;
    (fast.num_features() == features && fast.num_outputs() == classes.max(1)).then_some(fast)
}

/// A matrix as LightGBM's C API takes it: a flat buffer plus its order.
/// Views that are already contiguous in either order are passed without a
/// copy; only a strided view is copied, once.
struct Flat<'a> {
    data: std::borrow::Cow<'a, [f64]>,
    row_major: bool,
}

/// Rows from which a prediction batch is spread over every core.
const PARALLEL_PREDICT_ROWS: usize = 512;

fn flat<'a>(x: ArrayView2<'a, f64>) -> Flat<'a> {
    if let Some(s) = x.to_slice() {
        return Flat {
            data: s.into(),
            row_major: true,
        };
    }
    if let Some(s) = x.reversed_axes().to_slice() {
        return Flat {
            data: s.into(),
            row_major: false,
        };
    }
    Flat {
        data: x.iter().copied().collect::<Vec<f64>>().into(),
        row_major: true,
    }
}

fn last_error() -> String {
    // SAFETY: LGBM_GetLastError returns a pointer to a thread-local,
    // NUL-terminated buffer that stays valid until the next API call.
    unsafe { CStr::from_ptr(sys::LGBM_GetLastError()) }
        .to_string_lossy()
        .into_owned()
}

pub(super) fn call(ret: c_int, what: &str) -> MlResult<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(MlError::invalid(format!(
            "lightgbm {what}: {}",
            last_error()
        )))
    }
}

pub(super) struct DatasetHandle(pub(super) sys::DatasetHandle);
// SAFETY: a LightGBM Dataset has no thread affinity; pgmlcat uses each
// from one thread at a time (it moves, it is never shared).
unsafe impl Send for DatasetHandle {}
impl Drop for DatasetHandle {
    fn drop(&mut self) {
        // SAFETY: the handle came from LGBM_DatasetCreateFromMat and is freed once.
        unsafe { sys::LGBM_DatasetFree(self.0) };
    }
}

struct BoosterHandle(sys::BoosterHandle);
// SAFETY: as `Gbm`: LightGBM's Booster locks its own state, and this one
// only predicts.
unsafe impl Send for BoosterHandle {}
// SAFETY: see above.
unsafe impl Sync for BoosterHandle {}
impl Drop for BoosterHandle {
    fn drop(&mut self) {
        // SAFETY: the handle came from LGBM_BoosterCreate and is freed once.
        unsafe { sys::LGBM_BoosterFree(self.0) };
    }
}

pub(super) fn to_i32(n: usize, what: &str) -> MlResult<i32> {
    i32::try_from(n).map_err(|_| MlError::data(format!("too many {what} for lightgbm: {n}")))
}

/// The parameters LightGBM gets for both the Dataset and the Booster,
/// and the number of rounds.
pub(super) struct Parameters {
    pub string: CString,
    rounds: i64,
    /// The `num_threads` in `string`, which the training's lease must hold.
    pub threads: usize,
}

pub(super) fn parameters(
    task: Task,
    num_classes: usize,
    hyperparams: &Map<String, Value>,
    threads: usize,
) -> MlResult<Parameters> {
    let mut params = canonical(hyperparams)?;
    let objective = match task {
        Task::Classification if num_classes > 2 => "multiclass",
        Task::Classification => "binary",
        _ => "regression",
    };
    params
        .entry("objective")
        .or_insert_with(|| Value::from(objective));
    if task == Task::Classification && num_classes > 2 {
        params
            .entry("num_class")
            .or_insert_with(|| Value::from(num_classes as i64));
    }
    // LightGBM reads 0 or less as "OpenMP's default"; the lease needs the
    // number itself.
    let threads = match params.get("num_threads").and_then(Value::as_i64) {
        Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
        Some(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
        None => threads.max(1),
    };
    params.insert("num_threads".into(), Value::from(threads as i64));
    params.entry("verbosity").or_insert_with(|| Value::from(-1));
    let rounds = params
        .get("num_iterations")
        .and_then(Value::as_i64)
        .unwrap_or(DEFAULT_ROUNDS);
    if rounds < 1 {
        return Err(MlError::invalid(
            "lightgbm needs at least 1 boosting round (num_iterations)",
        ));
    }
    let string = CString::new(to_param_string(&params))
        .map_err(|_| MlError::invalid("lightgbm hyperparameters contain a NUL byte"))?;
    Ok(Parameters {
        string,
        rounds,
        threads,
    })
}

pub fn fit(
    task: Task,
    x: ArrayView2<f64>,
    y: ArrayView2<f64>,
    num_classes: usize,
    hyperparams: &Map<String, Value>,
    threads: usize,
) -> MlResult<Box<dyn Model>> {
    let params = parameters(task, num_classes, hyperparams, threads)?;
    let _lease = Lease::exactly(params.threads);
    let (rows, cols) = x.dim();
    let (nrow, ncol) = (to_i32(rows, "rows")?, to_i32(cols, "features")?);
    let matrix = flat(x);
    let mut handle = std::ptr::null_mut();
    call(
        // SAFETY: `matrix.data` holds rows × cols f64 in the declared order and
        // outlives the call (LightGBM copies it into its own bins); the
        // parameter string is NUL-terminated.
        unsafe {
            sys::LGBM_DatasetCreateFromMat(
                matrix.data.as_ptr() as *const c_void,
                sys::C_API_DTYPE_FLOAT64 as c_int,
                nrow,
                ncol,
                c_int::from(matrix.row_major),
                params.string.as_ptr(),
                std::ptr::null_mut(),
                &mut handle,
            )
        },
        "dataset",
    )?;
    let dataset = DatasetHandle(handle);
    drop(matrix);
    train_on(task, &dataset, y, &params, cols)
}

/// Trains one booster per column of `y` (the labels of the dataset's
/// rows) on a constructed dataset, under the lease of `params.threads`
/// the dataset was built under.
pub(super) fn train_on(
    task: Task,
    dataset: &DatasetHandle,
    y: ArrayView2<f64>,
    params: &Parameters,
    cols: usize,
) -> MlResult<Box<dyn Model>> {
    let nrow = to_i32(y.nrows(), "rows")?;
    let mut boosters = Vec::with_capacity(y.ncols());
    let mut strings = Vec::with_capacity(y.ncols());
    for target in y.columns() {
        let labels: Vec<f32> = target.iter().map(|&v| v as f32).collect();
        let label_field = c"label";
        call(
            // SAFETY: `labels` has exactly `nrow` f32 values, as declared.
            unsafe {
                sys::LGBM_DatasetSetField(
                    dataset.0,
                    label_field.as_ptr(),
                    labels.as_ptr() as *const c_void,
                    nrow,
                    sys::C_API_DTYPE_FLOAT32 as c_int,
                )
            },
            "labels",
        )?;
        drop(labels);
        let model = train_booster(dataset, &params.string, params.rounds)?;
        let booster = Booster::from_string(&model)
            .map_err(|e| MlError::Internal(format!("lightgbm reload: {e}")))?;
        boosters.push(Gbm(booster));
        strings.push(model);
    }
    let fast = fast_model(&strings, &boosters);
    Ok(Box::new(LightGbmModel {
        task,
        n_features: cols,
        boosters,
        fast,
        contrib: Default::default(),
    }))
}

/// Trains `rounds` iterations (fewer if LightGBM finds nothing left to
/// split) and returns the model string.
fn train_booster(dataset: &DatasetHandle, params: &CStr, rounds: i64) -> MlResult<String> {
    let mut handle = std::ptr::null_mut();
    call(
        // SAFETY: the dataset handle is live for the whole function.
        unsafe { sys::LGBM_BoosterCreate(dataset.0, params.as_ptr(), &mut handle) },
        "parameters",
    )?;
    let booster = BoosterHandle(handle);
    for _ in 0..rounds {
        let mut finished: c_int = 0;
        // SAFETY: live booster handle, valid out pointer.
        let ret = unsafe { sys::LGBM_BoosterUpdateOneIter(booster.0, &mut finished) };
        if ret != 0 {
            return Err(MlError::data(format!(
                "lightgbm training: {}",
                last_error()
            )));
        }
        if finished != 0 {
            break;
        }
    }
    let mut len: i64 = 0;
    call(
        // SAFETY: a zero-length buffer asks only for the needed size.
        unsafe {
            sys::LGBM_BoosterSaveModelToString(
                booster.0,
                0,
                -1,
                0,
                0,
                &mut len,
                std::ptr::null_mut(),
            )
        },
        "save",
    )?;
    let size = usize::try_from(len)
        .map_err(|_| MlError::Internal("lightgbm reported a negative model size".into()))?;
    let mut buffer = vec![0u8; size];
    call(
        // SAFETY: `buffer` has `len` writable bytes, as declared.
        unsafe {
            sys::LGBM_BoosterSaveModelToString(
                booster.0,
                0,
                -1,
                0,
                len,
                &mut len,
                buffer.as_mut_ptr() as *mut c_char,
            )
        },
        "save",
    )?;
    let text = CStr::from_bytes_until_nul(&buffer)
        .map_err(|_| MlError::Internal("lightgbm model string is not terminated".into()))?;
    Ok(text.to_string_lossy().into_owned())
}

/// One booster is stored as LightGBM's own model string; several (joint
/// regression) as a JSON array of model strings. Model strings never start
/// with '['.
pub fn load(task: Task, bytes: &[u8]) -> MlResult<Box<dyn Model>> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| MlError::Data("stored lightgbm model is not UTF-8".into()))?;
    let strings: Vec<String> = if text.starts_with('[') {
        serde_json::from_str(text)
            .map_err(|e| MlError::Data(format!("stored lightgbm model is unreadable: {e}")))?
    } else {
        vec![text.to_string()]
    };
    let _lease = Lease::any(1);
    let boosters = strings
        .iter()
        .map(|s| {
            Booster::from_string(s)
                .map(Gbm)
                .map_err(|e| MlError::Data(format!("stored lightgbm model is unreadable: {e}")))
        })
        .collect::<MlResult<Vec<_>>>()?;
    let n_features = boosters
        .first()
        .map(|b| b.0.num_features())
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| MlError::Data("stored lightgbm model is empty".into()))?;
    let fast = fast_model(&strings, &boosters);
    Ok(Box::new(LightGbmModel {
        task,
        n_features,
        boosters,
        fast,
        contrib: Default::default(),
    }))
}

/// The booster reloaded from its own model string (under the caller's
/// lease).
fn contrib_booster(booster: &Booster) -> MlResult<BoosterHandle> {
    let text = booster
        .save_string()
        .map_err(|e| MlError::Internal(format!("lightgbm save: {e}")))?;
    let text = CString::new(text).map_err(|e| MlError::Internal(e.to_string()))?;
    let mut handle = std::ptr::null_mut();
    let mut iterations: c_int = 0;
    // SAFETY: `text` is NUL-terminated and was written by LightGBM itself.
    let ret = unsafe {
        sys::LGBM_BoosterLoadModelFromString(text.as_ptr(), &mut iterations, &mut handle)
    };
    call(ret, "load")?;
    Ok(BoosterHandle(handle))
}

/// Predictions run on the proxy's I/O threads, a batch at a time. A few
/// rows take one thread (waking an OpenMP team costs more than they do);
/// large batches use every core.
fn predict_threads(rows: usize) -> usize {
    if rows >= PARALLEL_PREDICT_ROWS {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        1
    }
}

impl LightGbmModel {
    /// LightGBM's output for one booster: rows × (1 or num_class),
    /// row-major. A model with a fast evaluator has a single booster, which
    /// the evaluator replaces.
    fn run(&self, booster: &Gbm, x: ArrayView2<f64>) -> MlResult<Vec<f64>> {
        let threads = predict_threads(x.nrows());
        if let Some(fast) = &self.fast {
            return Ok(fast.predict(x, threads));
        }
        let lease = Lease::any(threads);
        let matrix = flat(x);
        booster
            .0
            .predict_with_params(
                &matrix.data,
                to_i32(x.ncols(), "features")?,
                matrix.row_major,
                &lease.parameter(),
            )
            .map_err(|e| MlError::Internal(format!("lightgbm predict: {e}")))
    }
}

impl Model for LightGbmModel {
    fn predict(&self, x: ArrayView2<f64>) -> MlResult<Array2<f64>> {
        check_features(x, self.n_features)?;
        if self.task == Task::Classification {
            let proba = self.predict_proba(x)?;
            return Ok(super::argmax_rows(&proba));
        }
        let mut out = Array2::zeros((x.nrows(), self.boosters.len()));
        if x.nrows() == 0 {
            return Ok(out);
        }
        for (mut col, booster) in out.columns_mut().into_iter().zip(&self.boosters) {
            let values = self.run(booster, x)?;
            if values.len() != x.nrows() {
                return Err(MlError::Internal(format!(
                    "lightgbm returned {} values for {} rows",
                    values.len(),
                    x.nrows()
                )));
            }
            col.assign(&aview1(&values));
        }
        Ok(out)
    }

    /// LightGBM's own probabilities: binary models give P(class 1), multiclass
    /// ones a row per input.
    fn predict_proba(&self, x: ArrayView2<f64>) -> MlResult<Array2<f64>> {
        if self.task != Task::Classification {
            return Err(super::not_classifier(self.task.name()));
        }
        check_features(x, self.n_features)?;
        let booster = self
            .boosters
            .first()
            .ok_or_else(|| MlError::Internal("lightgbm model without booster".into()))?;
        let k = usize::try_from(booster.0.num_classes()).unwrap_or(1).max(1);
        let width = if k == 1 { 2 } else { k };
        if x.nrows() == 0 {
            return Ok(Array2::zeros((0, width)));
        }
        let values = self.run(booster, x)?;
        if values.len() != x.nrows() * k {
            return Err(MlError::Internal(format!(
                "lightgbm returned {} values for {} rows",
                values.len(),
                x.nrows()
            )));
        }
        if k == 1 {
            let mut out = Array2::zeros((x.nrows(), 2));
            for (mut row, p) in out.rows_mut().into_iter().zip(values) {
                row[0] = 1.0 - p;
                row[1] = p;
            }
            return Ok(out);
        }
        Array2::from_shape_vec((x.nrows(), k), values)
            .map_err(|e| MlError::Internal(format!("lightgbm output shape: {e}")))
    }

    fn num_features(&self) -> usize {
        self.n_features
    }

    fn to_bytes(&self) -> MlResult<Vec<u8>> {
        let _lease = Lease::any(1);
        let strings = self
            .boosters
            .iter()
            .map(|b| {
                b.0.save_string()
                    .map_err(|e| MlError::Internal(format!("lightgbm save: {e}")))
            })
            .collect::<MlResult<Vec<_>>>()?;
        match strings.as_slice() {
            [one] => Ok(one.clone().into_bytes()),
            _ => serde_json::to_vec(&strings)
                .map_err(|e| MlError::Internal(format!("lightgbm save: {e}"))),
        }
    }

    /// LightGBM's own TreeSHAP (`C_API_PREDICT_CONTRIB`), of a single
    /// booster.
    fn tree_contributions(&self, x: ArrayView2<f64>) -> Option<MlResult<Array2<f64>>> {
        let [booster] = self.boosters.as_slice() else {
            return None;
        };
        Some((|| {
            check_features(x, self.n_features)?;
            let outputs = usize::try_from(booster.0.num_classes()).unwrap_or(1).max(1);
            let width = outputs * (self.n_features + 1);
            if x.nrows() == 0 {
                return Ok(Array2::zeros((0, width)));
            }
            let lease = Lease::any(predict_threads(x.nrows()));
            let contrib = match self.contrib.get_or_init(|| contrib_booster(&booster.0)) {
                Ok(c) => c,
                Err(e) => return Err(e.clone()),
            };
            let matrix = flat(x);
            let mut out = vec![0.0f64; x.nrows() * width];
            let mut out_len: i64 = 0;
            let params =
                CString::new(lease.parameter()).map_err(|e| MlError::Internal(e.to_string()))?;
            // SAFETY: the handle is a loaded booster; `matrix` holds nrows ×
            // ncols f64 in the order given; `out` has the length the C API
            // documents for contributions (num_class × rows × (features + 1)).
            let ret = unsafe {
                sys::LGBM_BoosterPredictForMat(
                    contrib.0,
                    matrix.data.as_ptr() as *const c_void,
                    sys::C_API_DTYPE_FLOAT64 as c_int,
                    to_i32(x.nrows(), "rows")?,
                    to_i32(x.ncols(), "features")?,
                    c_int::from(matrix.row_major),
                    sys::C_API_PREDICT_CONTRIB as c_int,
                    0,
                    -1,
                    params.as_ptr(),
                    &mut out_len,
                    out.as_mut_ptr(),
                )
            };
            call(ret, "predict_contrib")?;
            Array2::from_shape_vec((x.nrows(), width), out)
                .map_err(|e| MlError::Internal(format!("lightgbm contributions shape: {e}")))
        })())
    }

    /// Total gain per feature, summed over the boosters of a joint model.
    fn feature_importance(&self) -> Option<Vec<f64>> {
        let mut total = vec![0.0; self.n_features];
        let _lease = Lease::any(1);
        for b in &self.boosters {
            let gains = b.0.feature_importance(ImportanceType::Gain).ok()?;
            for (t, g) in total.iter_mut().zip(gains) {
                *t += g;
            }
        }
        Some(total)
    }
}
