//! LightGBM on a relation larger than the proxy's memory: the rows stream
//! into LightGBM's binned dataset (`lightgbm_stream`) and no float matrix
//! of the training rows ever exists in the proxy.
//!
//! Three reads of the relation per shard, in one REPEATABLE READ snapshot
//! that gives the same rows in the same order each time:
//! 1. the label column: the row count, the classes and the split (the same
//!    split the in-memory path makes);
//! 2. the features of the training rows LightGBM samples for its bins;
//! 3. every row: training rows pushed into the dataset chunk by chunk,
//!    test rows kept for scoring.
//!
//! Same data, same parameters: the same model as the in-memory path.
//! Numeric feature columns only, with the default preprocessing; the
//! snapshot's statistics come from the bin sample (features) and ~100k
//! training rows (the label).

use std::time::Instant;

use ndarray::{Array2, ArrayView2, Axis};
use serde_json::{json, Map, Value};

use super::models::{identity_preprocessor, Record, Run, Snapshot};
use super::{Trained, SEED};
use crate::ml::algorithms::lightgbm_stream::{Sample, Settings, StreamedDataset};
use crate::ml::algorithms::Algorithm;
use crate::ml::algorithms::Model;
use crate::ml::db::Db;
use crate::ml::error::{MlError, MlResult};
use crate::ml::explain::Insight;
use crate::ml::frame::{Column, ColumnData, Frame};
use crate::ml::labels::{self, Classes};
use crate::ml::metrics;
use crate::ml::preprocess;
use crate::ml::pull::{self, Source, SourceColumn};
use crate::ml::split;
use crate::ml::task::Task;
use crate::router::Target;

/// Rows per chunk pushed into the dataset.
const CHUNK: usize = 8192;

pub(super) fn applies(task: Task, algorithm: Algorithm) -> bool {
    algorithm == Algorithm::Lightgbm && matches!(task, Task::Regression | Task::Classification)
}

/// Whether the pulled frame (16 bytes a value) would take over a quarter
/// of `[ml] max_memory_mb`, by the planner's row estimate.
pub(super) async fn large(run: &Run<'_>) -> MlResult<bool> {
    if run.check_streaming().is_err() {
        return Ok(false);
    }
    let bytes = run.estimate("reltuples * relnatts").await? * 16.0;
    Ok(bytes > run.ml.max_bytes() as f64 / 4.0)
}

/// One shard's connection, in its snapshot, and what it reads.
struct Reader {
    db: Db,
    source: Source,
    label: SourceColumn,
    features: Vec<SourceColumn>,
}

/// The split, as the stream meets the rows.
struct Split {
    is_test: Vec<bool>,
    /// Each shard's rows, in shard order.
    shard_rows: Vec<usize>,
    y_train: Array2<f64>,
    y_test: Array2<f64>,
    classes: Option<Classes>,
    num_classes: usize,
    label_statistics: Value,
    label_column: Column,
}

impl Run<'_> {
    pub async fn train_streaming(self) -> MlResult<Trained> {
        self.check_streaming()?;
        let mut readers = Vec::new();
        for shard in self.shards() {
            readers.push(self.reader(shard).await?);
        }
        let features = readers[0].features.clone();
        if readers.iter().any(|r| {
            r.features
                .iter()
                .map(|c| &c.name)
                .ne(features.iter().map(|c| &c.name))
        }) {
            return Err(MlError::data(
                "the shards' relations have different columns",
            ));
        }
        let split = self.split(&mut readers).await?;
        let _slot = self.ml.training_slot(self.progress).await?;
        let hyperparams = self.args.hyperparams.clone();
        let settings = Settings {
            task: self.task,
            num_classes: split.num_classes,
            hyperparams: &hyperparams,
            threads: self.ml.threads(),
        };
        let n_train = split.y_train.nrows();
        let picks = settings.sample_rows(n_train)?;
        let (sample, sample_frame) = sample_pass(&mut readers, &features, &split, &picks).await?;
        self.progress.notice(format!(
            "pgml.train: streaming: bins from a sample of {} of {n_train} training rows",
            picks.len()
        ));
        let started = Instant::now();
        let mut dataset = {
            let (hyperparams, task, num_classes, threads) = (
                hyperparams.clone(),
                self.task,
                split.num_classes,
                self.ml.threads(),
            );
            tokio::task::spawn_blocking(move || {
                let settings = Settings {
                    task,
                    num_classes,
                    hyperparams: &hyperparams,
                    threads,
                };
                StreamedDataset::new(&settings, sample, n_train)
            })
            .await
            .map_err(|e| MlError::Internal(format!("training thread failed: {e}")))??
        };
        let x_test = push_pass(&mut readers, &features, &split, &mut dataset).await?;
        for r in &mut readers {
            r.db.end_snapshot().await?;
        }
        drop(readers);
        self.progress.notice(format!(
            "pgml.train: fitting lightgbm on {n_train} streamed rows × {} features; {}",
            features.len(),
            memory_use()
        ));
        let y_train = split.y_train;
        let model = tokio::task::spawn_blocking(move || dataset.fit(y_train.view()))
            .await
            .map_err(|e| MlError::Internal(format!("training thread failed: {e}")))??;
        let fit_time = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let mut metrics = score_rows(
            &*model,
            self.task,
            &x_test,
            split.y_test.view(),
            split.num_classes,
        )?;
        metrics.insert("fit_time".into(), json!(fit_time));
        metrics.insert("score_time".into(), json!(started.elapsed().as_secs_f64()));
        self.progress.notice(format!(
            "pgml.train: lightgbm {} = {}; {}",
            self.task.key_metric(),
            metrics
                .get(self.task.key_metric())
                .map_or("n/a".to_string(), |v| v.to_string()),
            memory_use()
        ));
        let pre = identity_preprocessor(&features)?;
        let insight = Insight::without_rows(&*model, &pre.feature_names());
        let all: Vec<usize> = (0..sample_frame.rows).collect();
        let statistics = features
            .iter()
            .enumerate()
            .map(|(i, _)| preprocess::column_statistics(&sample_frame.columns[i], &all))
            .collect();
        let mut columns = pre.columns_json(statistics);
        if let Value::Array(list) = &mut columns {
            list.push(preprocess::label_column_json(
                &split.label_column,
                features.len() + 1,
                &[],
                split.label_statistics,
            ));
        }
        let snapshot = Snapshot {
            columns,
            analysis: json!({
                "samples": split.is_test.len(),
                "train_rows": n_train,
                "test_rows": split.y_test.nrows(),
                "streaming": true,
                "bin_sample_rows": picks.len(),
            }),
        };
        let mut stored_hyperparams = hyperparams;
        stored_hyperparams.insert("streaming".into(), Value::Bool(true));
        let record = Record {
            key: Vec::new(),
            model,
            pre,
            classes: split.classes,
            metrics,
            hyperparams: stored_hyperparams,
            insight,
        };
        self.save(vec![record], &snapshot, Map::new()).await
    }

    pub(super) fn check_streaming(&self) -> MlResult<()> {
        let refuse = |why: &str| {
            Err(MlError::Unsupported(format!(
                "streaming training {why}; train with hyperparams => '{{\"streaming\": false}}'"
            )))
        };
        if !applies(self.task, self.algorithm) {
            return refuse("is for lightgbm regression and classification");
        }
        if let Some(why) = self.own_way_refusal() {
            return refuse(why);
        }
        if !self.args.group_by.is_empty() {
            return refuse("trains one model (each group of group_by is held in memory anyway)");
        }
        if self.args.materialize_snapshot {
            return refuse("does not materialize the snapshot");
        }
        Ok(())
    }

    /// A shard's connection in its snapshot, and its columns: every one
    /// but the label is a numeric feature.
    async fn reader(&self, shard: usize) -> MlResult<Reader> {
        let mut db = Db::checkout(self.pool.choose(shard, Target::Replica)).await?;
        db.begin_snapshot().await?;
        let source = pull::describe(&mut db, &self.source.relation).await?;
        let (label, features) = self.label_and_features(&source)?;
        if let Some(c) = features.iter().find(|c| !c.is_number()) {
            return refuse_column(c);
        }
        Ok(Reader {
            db,
            source,
            label,
            features,
        })
    }

    /// Pass 1: the labels, encoded, and the split of the in-memory path.
    async fn split(&self, readers: &mut [Reader]) -> MlResult<Split> {
        let mut frames = Vec::with_capacity(readers.len());
        for r in readers.iter_mut() {
            let label = [r.label.clone()];
            frames.push(
                r.source
                    .read(&mut r.db, &label, self.ml.max_bytes())
                    .await?,
            );
        }
        let shard_rows = frames.iter().map(|f| f.rows).collect();
        let frame = pull::concat(frames)?;
        let rows = frame.rows;
        let label_column = frame
            .columns
            .into_iter()
            .next()
            .ok_or_else(|| MlError::Internal("no label read".into()))?;
        let (y, classes) = labels::encode(self.task, &[&label_column])?;
        let num_classes = classes.as_ref().map_or(0, Classes::len);
        if self.task == Task::Classification && num_classes < 2 {
            return Err(MlError::data(format!(
                "classification needs at least 2 classes in \"{}\"; found {num_classes}",
                label_column.name
            )));
        }
        let strat = (self.task == Task::Classification).then(|| y.column(0).to_vec());
        let (train_rows, test_rows) = split::split(
            rows,
            self.source.test_size,
            self.source.sampling,
            strat.as_deref(),
            SEED,
        )?;
        drop(strat);
        // The label's statistics from at most ~100k training rows, evenly
        // spread (they sort their values); then the column goes.
        let step = (train_rows.len() / 100_000).max(1);
        let some: Vec<usize> = train_rows.iter().step_by(step).copied().collect();
        let label_statistics = preprocess::column_statistics(&label_column, &some);
        let label_column = Column {
            data: ColumnData::Float(Vec::new()),
            ..label_column
        };
        let mut is_test = vec![false; rows];
        for &r in &test_rows {
            is_test[r] = true;
        }
        self.progress.notice(format!(
            "pgml.train: streaming {rows} rows of {} ({} to train on)",
            self.source.relation,
            train_rows.len()
        ));
        let (y_train, y_test) = (
            y.select(Axis(0), &train_rows),
            y.select(Axis(0), &test_rows),
        );
        drop((y, train_rows, test_rows));
        Ok(Split {
            is_test,
            shard_rows,
            y_train,
            y_test,
            classes,
            num_classes,
            label_statistics,
            label_column,
        })
    }
}

fn refuse_column<T>(c: &SourceColumn) -> MlResult<T> {
    Err(MlError::Unsupported(format!(
        "streaming training takes numeric feature columns only; column \"{}\" has type {}; \
         leave it out with a view, or train with hyperparams => '{{\"streaming\": false}}'",
        c.name, c.pg_type
    )))
}

/// Walks the rows of every shard in order: `each(row index, is a
/// training row, its position among the training rows, its features)`.
async fn each_row(
    readers: &mut [Reader],
    features: &[SourceColumn],
    is_test: &[bool],
    mut each: impl FnMut(bool, usize, &[f64]) -> MlResult<()>,
) -> MlResult<()> {
    let (mut row, mut train_pos) = (0usize, 0usize);
    let mut values = vec![0.0; features.len()];
    for r in readers.iter_mut() {
        r.source
            .stream(&mut r.db, features, CHUNK, |columns, n| {
                for i in 0..n {
                    row_values(columns, i, features, &mut values)?;
                    let test = *is_test.get(row).ok_or_else(changed)?;
                    each(!test, train_pos, &values)?;
                    train_pos += usize::from(!test);
                    row += 1;
                }
                Ok(())
            })
            .await?;
    }
    if row != is_test.len() {
        return Err(changed());
    }
    Ok(())
}

/// Pass 2: the features of the training rows LightGBM samples, which
/// alone leave the servers; also kept as a frame, for the snapshot's
/// statistics.
async fn sample_pass(
    readers: &mut [Reader],
    features: &[SourceColumn],
    split: &Split,
    picks: &[i32],
) -> MlResult<(Sample, Frame)> {
    // (training position, place in LightGBM's sample) by position, then
    // (row of the relation, place) as the rows are walked.
    let mut by_position: Vec<(usize, usize)> = picks
        .iter()
        .enumerate()
        .map(|(place, &pos)| (pos as usize, place))
        .collect();
    by_position.sort_unstable();
    let mut wanted: Vec<(usize, usize)> = Vec::with_capacity(picks.len());
    let mut next = by_position.iter().peekable();
    let mut position = 0;
    for (row, &test) in split.is_test.iter().enumerate() {
        if test {
            continue;
        }
        while let Some(&(_, place)) = next.next_if(|(p, _)| *p == position) {
            wanted.push((row, place));
        }
        position += 1;
    }
    let mut sample = Sample::new(features.len());
    let mut kept: Vec<Vec<Option<f64>>> = vec![Vec::with_capacity(picks.len()); features.len()];
    let mut values = vec![0.0; features.len()];
    let (mut offset, mut at) = (0, 0);
    for (reader, &rows) in readers.iter_mut().zip(&split.shard_rows) {
        let end = wanted[at..].partition_point(|(r, _)| *r < offset + rows) + at;
        let local: Vec<usize> = wanted[at..end].iter().map(|(r, _)| r - offset).collect();
        if !local.is_empty() {
            let sql = reader.source.rows_copy_sql(features, &local);
            let mut i = at;
            let got = reader
                .source
                .stream_copy(&mut reader.db, &sql, features, CHUNK, |columns, n| {
                    for r in 0..n {
                        row_values(columns, r, features, &mut values)?;
                        let place = wanted.get(i).map(|w| w.1).ok_or_else(changed)?;
                        sample.push(place, &values)?;
                        for (k, v) in kept.iter_mut().zip(&values) {
                            k.push(Some(*v));
                        }
                        i += 1;
                    }
                    Ok(())
                })
                .await?;
            if got != local.len() {
                return Err(changed());
            }
        }
        (offset, at) = (offset + rows, end);
    }
    let frame = Frame {
        rows: kept.first().map_or(0, Vec::len),
        columns: features
            .iter()
            .zip(kept)
            .map(|(c, values)| Column {
                name: c.name.clone(),
                pg_type: c.pg_type.clone(),
                data: ColumnData::Float(values),
            })
            .collect(),
    };
    Ok((sample, frame))
}

fn changed() -> MlError {
    MlError::Internal("the relation changed between its reads".into())
}

/// Row `r` of a chunk's feature columns into `values`: a NULL or NaN is
/// refused as the in-memory path's default preprocessing refuses it.
fn row_values(
    columns: &[ColumnData],
    r: usize,
    features: &[SourceColumn],
    values: &mut [f64],
) -> MlResult<()> {
    for (j, column) in columns.iter().enumerate() {
        values[j] = match column {
            ColumnData::Float(v) => v[r].filter(|x| !x.is_nan()).ok_or_else(|| {
                MlError::data(format!(
                    "column \"{}\" has NULL (or NaN) values; impute them in a view",
                    features[j].name
                ))
            })?,
            _ => return refuse_column(&features[j]),
        };
    }
    Ok(())
}

/// Pass 3: training rows into the dataset, a chunk at a time; the test
/// rows' features are returned.
async fn push_pass(
    readers: &mut [Reader],
    features: &[SourceColumn],
    split: &Split,
    dataset: &mut StreamedDataset,
) -> MlResult<TestRows> {
    let k = features.len();
    let mut chunk: Vec<f64> = Vec::with_capacity(CHUNK * k);
    let mut test = TestRows::new(features, split.y_test.nrows());
    each_row(readers, features, &split.is_test, |train, _, row| {
        if !train {
            test.push(row);
            return Ok(());
        }
        chunk.extend_from_slice(row);
        if chunk.len() >= CHUNK * k {
            dataset.push(&chunk)?;
            chunk.clear();
        }
        Ok(())
    })
    .await?;
    dataset.push(&chunk)?;
    Ok(test)
}

/// The test rows' features, kept for scoring: as float4 when every
/// feature column's values are exact in it (real, smallint, boolean),
/// which halves what the training holds.
enum TestRows {
    F32(Vec<f32>, usize),
    F64(Vec<f64>, usize),
}

impl TestRows {
    fn new(features: &[SourceColumn], rows: usize) -> TestRows {
        let k = features.len();
        let exact = features
            .iter()
            .all(|c| matches!(c.pg_type.as_str(), "real" | "smallint" | "boolean"));
        match exact {
            true => TestRows::F32(Vec::with_capacity(rows * k), k),
            false => TestRows::F64(Vec::with_capacity(rows * k), k),
        }
    }

    fn push(&mut self, row: &[f64]) {
        match self {
            TestRows::F32(v, _) => v.extend(row.iter().map(|&x| x as f32)),
            TestRows::F64(v, _) => v.extend_from_slice(row),
        }
    }

    /// The rows as float8 matrices of at most `rows` rows each.
    fn chunks(&self, rows: usize) -> impl Iterator<Item = MlResult<Array2<f64>>> + '_ {
        let (len, k) = match self {
            TestRows::F32(v, k) => (v.len(), *k),
            TestRows::F64(v, k) => (v.len(), *k),
        };
        let step = rows * k.max(1);
        (0..len).step_by(step.max(1)).map(move |at| {
            let end = (at + step).min(len);
            let data: Vec<f64> = match self {
                TestRows::F32(v, _) => v[at..end].iter().map(|&x| f64::from(x)).collect(),
                TestRows::F64(v, _) => v[at..end].to_vec(),
            };
            Array2::from_shape_vec(((end - at) / k.max(1), k), data)
                .map_err(|e| MlError::Internal(e.to_string()))
        })
    }
}

/// The test metrics the in-memory path computes (`score`), from the test
/// rows a chunk at a time.
fn score_rows(
    model: &dyn Model,
    task: Task,
    test: &TestRows,
    y: ArrayView2<f64>,
    num_classes: usize,
) -> MlResult<Map<String, Value>> {
    if y.nrows() == 0 {
        return Ok(Map::new());
    }
    let (mut predicted, mut proba) = (Vec::new(), Vec::new());
    for x in test.chunks(65_536) {
        let x = x?;
        predicted.push(model.predict(x.view())?);
        if task == Task::Classification {
            proba.push(model.predict_proba(x.view()).ok());
        }
    }
    let join = |parts: &[Array2<f64>]| {
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        ndarray::concatenate(Axis(0), &views).map_err(|e| MlError::Internal(e.to_string()))
    };
    let predicted = join(&predicted)?;
    match task {
        Task::Classification => {
            let proba: Option<Vec<Array2<f64>>> = proba.into_iter().collect();
            let proba = proba.map(|p| join(&p)).transpose()?;
            metrics::classification(
                &y.column(0).to_vec(),
                &predicted.column(0).to_vec(),
                proba.as_ref().map(|p| p.view()),
                num_classes,
            )
        }
        _ => metrics::regression(y, predicted.view()),
    }
}

/// The proxy's resident memory now and at its peak, from /proc.
pub(super) fn memory_use() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .map_or("?".to_string(), |kb| format!("{} MB", kb / 1024))
    };
    format!(
        "proxy memory {} (peak {})",
        field("VmRSS:"),
        field("VmHWM:")
    )
}
