//! `pgml.train(..., group_by => ...)`: one model per distinct value of the
//! group columns, each trained on its group's rows exactly as a single
//! model is (split, preprocessing, search, fit, metrics), several groups
//! at a time on the training threads. The models are one set in the
//! catalog (a row for the set, which deploys, and a row per group), so a
//! deploy moves them together.
//!
//! The data is pulled where it lives: every shard streams its rows ordered
//! by group, and a group is trained as soon as its last row has arrived
//! while the stream goes on. A stream waits while every training thread is
//! busy, so the proxy holds the groups training now and one per shard
//! being read, not the relation. A group found on several shards (the
//! sharding key does not determine the groups) is gathered from all of
//! them first; whether there are any is asked of the shards beforehand,
//! unless the pool's `automatic_sharding_key` is a group column.
//!
//! A group that cannot train (too few rows to split, one class) gets a
//! NOTICE and no model; an error in the arguments fails the training.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ndarray::{Array2, Axis};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::models::{Record, Run, Snapshot};
use super::{fit_model, prepare, Data, Fitted, Source, Trained, SEED};
use crate::backend::server::quote_ident;
use crate::ml::algorithms::Algorithm;
use crate::ml::args::TrainArgs;
use crate::ml::db::Db;
use crate::ml::error::{MlError, MlResult};
use crate::ml::frame::{Column, ColumnData, Frame};
use crate::ml::labels::Classes;
use crate::ml::metrics;
use crate::ml::predict::GroupKey;
use crate::ml::preprocess::{self, Preprocessor};
use crate::ml::pull::{self, BinaryCopy, SourceColumn};
use crate::ml::service::{group_text, Progress};
use crate::ml::task::Task;
use crate::router::Target;

/// Rows decoded before the stream looks for group boundaries.
const CHUNK: usize = 1024;
/// Rows kept for the snapshot's column statistics (a uniform sample).
const STATISTICS_ROWS: usize = 100_000;

/// A group's trained model, ready for the catalog, with what the set's
/// metrics need of its test rows (its rows and matrices are dropped as
/// soon as it is trained: a thousand groups must not hold theirs).
struct Member {
    key: GroupKey,
    fitted: Fitted,
    pre: Preprocessor,
    classes: Option<Classes>,
    /// The frame's feature and label columns, by index.
    features: Vec<usize>,
    label_idx: Vec<usize>,
    /// Test labels and the model's predictions of them.
    truth: Array2<f64>,
    predicted: Array2<f64>,
}

/// What every group's training needs, owned, for its task.
struct Job {
    source: Source,
    args: TrainArgs,
    task: Task,
    algorithm: Algorithm,
    progress: Progress,
    done: AtomicUsize,
}

type Training = JoinHandle<(GroupKey, MlResult<Member>)>;

/// The streams' shared state: the training threads, the trainings
/// started, the groups held for several shards, the statistics sample.
struct Gather {
    job: Arc<Job>,
    threads: Arc<Semaphore>,
    shared: HashSet<GroupKey>,
    trainings: Mutex<Vec<Training>>,
    held: Mutex<HashMap<GroupKey, Vec<(usize, Frame)>>>,
    sample: Mutex<RowSample>,
    rows: AtomicUsize,
}

impl Run<'_> {
    /// Streams every shard's groups into training, then saves the set.
    pub async fn train_groups(self) -> MlResult<Trained> {
        let args = self.args;
        if let Some(g) = args
            .group_by
            .iter()
            .find(|g| self.source.y_columns.contains(g))
        {
            return Err(MlError::invalid(format!(
                "column \"{g}\" cannot be both the label and a group column"
            )));
        }
        let shards = self.shards();
        let shared = self.shared_groups(&shards).await?;
        let _slot = self.ml.training_slot(self.progress).await?;
        let gather = Gather {
            job: Arc::new(Job {
                source: self.source.clone(),
                args: args.clone(),
                task: self.task,
                algorithm: self.algorithm,
                progress: self.progress.clone(),
                done: AtomicUsize::new(0),
            }),
            threads: Arc::new(Semaphore::new(self.ml.threads().max(1))),
            shared,
            trainings: Mutex::new(Vec::new()),
            held: Mutex::new(HashMap::new()),
            sample: Mutex::new(RowSample::default()),
            rows: AtomicUsize::new(0),
        };
        let streams = shards.iter().map(|&s| self.stream_shard(s, &gather));
        let streamed = futures_util::future::join_all(streams).await;
        // The groups of several shards, their rows in shard order.
        let held = std::mem::take(&mut *gather.held.lock());
        for (key, mut parts) in held {
            parts.sort_by_key(|(shard, _)| *shard);
            let frame = pull::concat(parts.into_iter().map(|(_, f)| f).collect())?;
            gather.dispatch(key, frame).await?;
        }
        let trainings = std::mem::take(&mut *gather.trainings.lock());
        let mut members = Vec::with_capacity(trainings.len());
        let mut skipped = 0;
        let mut failure = streamed.into_iter().find_map(Result::err);
        for training in trainings {
            let (key, result) = training
                .await
                .map_err(|e| MlError::Internal(format!("training task failed: {e}")))?;
            match result {
                Ok(member) => members.push(member),
                // What the group's rows cannot give (too few to split, one
                // class): the group has no model.
                Err(MlError::Data(reason)) => {
                    skipped += 1;
                    self.progress.notice(format!(
                        "pgml.train: group {} has no model: {reason}",
                        group_text(&args.group_by, &key)
                    ));
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let rows = gather.rows.load(Ordering::Relaxed);
        self.progress.notice(format!(
            "pgml.train: {} groups of {rows} rows from {} trained, {skipped} without a model",
            members.len(),
            self.source.relation
        ));
        // Catalog rows in the groups' order, whatever order they finished in.
        members.sort_by(|a, b| a.key.cmp(&b.key));
        let sample = std::mem::take(&mut *gather.sample.lock());
        self.save_groups(members, sample.frame, rows).await
    }

    /// The set into the catalog: statistics from the sample, metrics
    /// pooled over the groups.
    async fn save_groups(
        self,
        members: Vec<Member>,
        sample: Frame,
        rows: usize,
    ) -> MlResult<Trained> {
        let Some(first) = members.first() else {
            return Err(MlError::data(format!(
                "no group of {} could be trained (see the NOTICEs)",
                self.source.relation
            )));
        };
        let all: Vec<usize> = (0..sample.rows).collect();
        let (features, labels) = (first.features.clone(), first.label_idx.clone());
        let sample = Arc::new(sample);
        let statistics = super::spawn_statistics(&sample, &features, &labels, &all);
        let mut statistics = statistics
            .await
            .map_err(|e| MlError::Internal(format!("column statistics: {e}")))?;
        let label_statistics = statistics.split_off(features.len());
        let mut columns = first.pre.columns_json(statistics);
        if let Value::Array(list) = &mut columns {
            for (&i, s) in labels.iter().zip(label_statistics) {
                list.push(preprocess::label_column_json(
                    &sample.columns[i],
                    i + 1,
                    &all,
                    s,
                ));
            }
        }
        let mut set_metrics = pooled_metrics(self.task, &members)?;
        set_metrics.insert("groups".into(), json!(members.len()));
        let snapshot = Snapshot {
            columns,
            analysis: json!({"samples": rows, "groups": members.len(), "statistics_rows": sample.rows}),
        };
        let records = members
            .into_iter()
            .map(|m| Record {
                key: m.key,
                model: m.fitted.model,
                pre: m.pre,
                classes: m.classes,
                metrics: m.fitted.metrics,
                hyperparams: m.fitted.hyperparams,
                insight: m.fitted.insight,
            })
            .collect();
        self.save(records, &snapshot, set_metrics).await
    }

    /// The groups found on more than one shard: none on one shard, or
    /// when the pool's automatic_sharding_key (on this relation) is a
    /// group column; else asked of every shard (SELECT DISTINCT).
    async fn shared_groups(&self, shards: &[usize]) -> MlResult<HashSet<GroupKey>> {
        if shards.len() < 2 || self.sharded_by_group() {
            return Ok(HashSet::new());
        }
        let columns: Vec<String> = self
            .args
            .group_by
            .iter()
            .map(|g| format!("({}::text)", quote_ident(g)))
            .collect();
        let mut seen: HashMap<GroupKey, usize> = HashMap::new();
        for &shard in shards {
            let mut db = Db::checkout(self.pool.choose(shard, Target::Replica)).await?;
            let source = pull::describe(&mut db, &self.source.relation).await?;
            source.select(&self.args.group_by).or_else(|e| match e {
                // Unusable types are fine for a group: it is read as text.
                MlError::DatatypeMismatch(_) => Ok(Vec::new()),
                other => Err(other),
            })?;
            let sql = format!(
                "SELECT DISTINCT {} FROM {}",
                columns.join(", "),
                source.relation
            );
            for key in db.query(&sql, &[]).await? {
                *seen.entry(key).or_default() += 1;
            }
        }
        Ok(seen
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(k, _)| k)
            .collect())
    }

    /// Whether the pool routes this relation by one of the group columns.
    fn sharded_by_group(&self) -> bool {
        let Some((table, column)) = self.pool.sharding.automatic() else {
            return false;
        };
        let relation = self.source.relation.rsplit('.').next().unwrap_or_default();
        relation.trim_matches('"').eq_ignore_ascii_case(table)
            && self
                .args
                .group_by
                .iter()
                .any(|g| g.eq_ignore_ascii_case(column))
    }

    /// One shard's rows, ordered by group: each group, once complete, to
    /// `dispatch`.
    async fn stream_shard(&self, shard: usize, gather: &Gather) -> MlResult<()> {
        let mut db = Db::checkout(self.pool.choose(shard, Target::Replica)).await?;
        let mut source = pull::describe(&mut db, &self.source.relation).await?;
        source.select(&self.source.y_columns)?;
        for c in &mut source.columns {
            if self.args.group_by.contains(&c.name) {
                *c = c.clone().as_text();
            }
        }
        source.select(&self.args.group_by)?;
        let columns = source.select(&source.names())?;
        let group_at: Vec<usize> = self
            .args
            .group_by
            .iter()
            .filter_map(|g| columns.iter().position(|c| &c.name == g))
            .collect();
        let features: Vec<&SourceColumn> = columns
            .iter()
            .enumerate()
            .filter(|(i, _)| !group_at.contains(i))
            .map(|(_, c)| c)
            .collect();
        let mut decoder = BinaryCopy::for_columns(&columns)?;
        // The relation's order within a group (test_sampling 'last') is its
        // scan order: no parallel scan, no scan joining another mid-table.
        db.begin_snapshot().await?;
        db.copy_out_start(&source.grouped_copy_sql(&columns, &self.args.group_by))
            .await?;
        let mut current: Option<(GroupKey, Vec<ColumnData>)> = None;
        loop {
            let bytes = db.copy_out_next().await?;
            if let Some(b) = &bytes {
                decoder.feed(b)?;
                if decoder.buffered() < CHUNK && !decoder.finished() {
                    continue;
                }
            }
            let (chunk, n) = decoder.take();
            for (key, from, to) in runs(&chunk, &group_at, n) {
                if current.as_ref().is_some_and(|(k, _)| *k != key) {
                    if let Some((done, data)) = current.take() {
                        gather
                            .dispatch_columns(shard, done, data, &features)
                            .await?;
                    }
                }
                let (_, data) = current.get_or_insert_with(|| {
                    let empty = chunk
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !group_at.contains(i))
                        .map(|(_, c)| c.empty_like())
                        .collect();
                    (key, empty)
                });
                let kept = chunk
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !group_at.contains(i));
                for (into, (_, from_column)) in data.iter_mut().zip(kept) {
                    into.extend_from(from_column, from, to);
                }
            }
            if bytes.is_none() {
                break;
            }
        }
        if !decoder.finished() {
            return Err(MlError::Internal("binary COPY ended early".into()));
        }
        db.end_snapshot().await?;
        if let Some((key, data)) = current.take() {
            gather.dispatch_columns(shard, key, data, &features).await?;
        }
        Ok(())
    }
}

/// The runs of equal group keys in a chunk: (key, first row, end).
fn runs(chunk: &[ColumnData], group_at: &[usize], n: usize) -> Vec<(GroupKey, usize, usize)> {
    let key = |r: usize| -> GroupKey {
        group_at
            .iter()
            .map(|&c| match &chunk[c] {
                ColumnData::Text(v) => v[r].clone(),
                _ => None,
            })
            .collect()
    };
    let mut out: Vec<(GroupKey, usize, usize)> = Vec::new();
    for r in 0..n {
        let k = key(r);
        match out.last_mut() {
            Some((last, _, end)) if *last == k => *end = r + 1,
            _ => out.push((k, r, r + 1)),
        }
    }
    out
}

impl Gather {
    /// A complete group of shard `shard`, column by column.
    async fn dispatch_columns(
        &self,
        shard: usize,
        key: GroupKey,
        data: Vec<ColumnData>,
        features: &[&SourceColumn],
    ) -> MlResult<()> {
        let frame = Frame {
            rows: data.first().map_or(0, ColumnData::len),
            columns: features
                .iter()
                .zip(data)
                .map(|(c, data)| Column {
                    name: c.name.clone(),
                    pg_type: c.pg_type.clone(),
                    data,
                })
                .collect(),
        };
        self.rows.fetch_add(frame.rows, Ordering::Relaxed);
        if self.shared.contains(&key) {
            self.held
                .lock()
                .entry(key)
                .or_default()
                .push((shard, frame));
            return Ok(());
        }
        self.dispatch(key, frame).await
    }

    /// Starts the group's training once a training thread is free (the
    /// caller's stream waits till then).
    async fn dispatch(&self, key: GroupKey, frame: Frame) -> MlResult<()> {
        let permit = self
            .threads
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| MlError::Internal(e.to_string()))?;
        self.sample.lock().offer(&frame);
        let job = self.job.clone();
        let training = tokio::spawn(async move {
            let result = train_group(&job, key.clone(), frame).await;
            drop(permit);
            let done = job.done.fetch_add(1, Ordering::Relaxed) + 1;
            if done.is_multiple_of(100) {
                job.progress
                    .notice(format!("pgml.train: {done} groups trained"));
            }
            (key, result)
        });
        self.trainings.lock().push(training);
        Ok(())
    }
}

/// A group's split, preprocessing and fit, on one training thread.
async fn train_group(job: &Job, key: GroupKey, frame: Frame) -> MlResult<Member> {
    let source = job.source.clone();
    let preprocess = job.args.preprocess.clone();
    let (task, algorithm) = (job.task, job.algorithm);
    let data = tokio::task::spawn_blocking(move || {
        prepare(frame, &source, &preprocess, task, algorithm, 1)
    })
    .await
    .map_err(|e| MlError::Internal(format!("training thread failed: {e}")))??;
    let fitted = fit_model(&data, &job.args, &Progress::default()).await?;
    let Data {
        set,
        pre,
        classes,
        features,
        label_idx,
        ..
    } = data;
    let predicted = match set.x_test.nrows() {
        0 => Array2::zeros((0, set.y_test.ncols())),
        _ => fitted.model.predict(set.x_test.view())?,
    };
    Ok(Member {
        key,
        pre,
        classes,
        features,
        label_idx,
        truth: set.y_test.clone(),
        predicted,
        fitted,
    })
}

/// A uniform sample of the rows (reservoir sampling, seeded), for the
/// snapshot's column statistics.
#[derive(Default)]
struct RowSample {
    frame: Frame,
    seen: usize,
    rng: Option<StdRng>,
}

impl RowSample {
    fn offer(&mut self, frame: &Frame) {
        if self.frame.columns.is_empty() {
            self.frame = Frame {
                rows: 0,
                columns: frame
                    .columns
                    .iter()
                    .map(|c| Column {
                        name: c.name.clone(),
                        pg_type: c.pg_type.clone(),
                        data: c.data.empty_like(),
                    })
                    .collect(),
            };
        }
        let rng = self.rng.get_or_insert_with(|| StdRng::seed_from_u64(SEED));
        for r in 0..frame.rows {
            self.seen += 1;
            let slot = if self.frame.rows < STATISTICS_ROWS {
                None
            } else {
                match rng.gen_range(0..self.seen) {
                    j if j < STATISTICS_ROWS => Some(j),
                    _ => continue,
                }
            };
            for (into, from) in self.frame.columns.iter_mut().zip(&frame.columns) {
                match slot {
                    None => into.data.extend_from(&from.data, r, r + 1),
                    Some(j) => into.data.set_from(j, &from.data, r),
                }
            }
            if slot.is_none() {
                self.frame.rows += 1;
            }
        }
    }
}

/// The set's metrics: every group's test rows scored together by their
/// own group's model (classes compared by value, so groups that number
/// their classes differently pool alike). Regression and classification;
/// other tasks keep only their groups' own metrics.
fn pooled_metrics(task: Task, members: &[Member]) -> MlResult<Map<String, Value>> {
    match task {
        Task::Regression => {
            let mut truth = Vec::new();
            let mut predicted = Vec::new();
            for m in members.iter().filter(|m| m.truth.nrows() > 0) {
                truth.push(m.truth.view());
                predicted.push(m.predicted.view());
            }
            if truth.is_empty() {
                return Ok(Map::new());
            }
            let y = ndarray::concatenate(Axis(0), &truth)
                .map_err(|e| MlError::Internal(e.to_string()))?;
            let p = ndarray::concatenate(Axis(0), &predicted)
                .map_err(|e| MlError::Internal(e.to_string()))?;
            metrics::regression(y.view(), p.view())
        }
        Task::Classification => {
            let mut names: HashMap<String, usize> = HashMap::new();
            let mut code = |classes: Option<&Classes>, c: f64| -> f64 {
                let name = match classes {
                    Some(Classes::Texts(t)) => t.get(c as usize).cloned().unwrap_or_default(),
                    Some(k) => k.value(c as usize).to_string(),
                    None => c.to_string(),
                };
                let next = names.len();
                *names.entry(name).or_insert(next) as f64
            };
            let (mut truth, mut predicted) = (Vec::new(), Vec::new());
            for m in members.iter().filter(|m| m.truth.nrows() > 0) {
                let classes = m.classes.as_ref();
                for (t, p) in m.truth.column(0).iter().zip(m.predicted.column(0)) {
                    truth.push(code(classes, *t));
                    predicted.push(code(classes, *p));
                }
            }
            if truth.is_empty() {
                return Ok(Map::new());
            }
            metrics::classification(&truth, &predicted, None, names.len().max(2))
        }
        Task::Clustering | Task::Decomposition => Ok(Map::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_a_chunk_by_group() {
        let k = |a: &str| vec![Some(a.to_string())];
        let chunk = vec![
            ColumnData::Float(vec![Some(1.0); 5]),
            ColumnData::Text(vec![
                Some("a".into()),
                Some("a".into()),
                Some("b".into()),
                None,
                None,
            ]),
        ];
        assert_eq!(
            runs(&chunk, &[1], 5),
            vec![(k("a"), 0, 2), (k("b"), 2, 3), (vec![None], 3, 5)]
        );
        assert_eq!(
            group_text(
                &["region".into(), "store".into()],
                &vec![Some("w".into()), None]
            ),
            "(region, store)=(w, NULL)"
        );
        assert_eq!(
            super::super::models::key_object(&["s".into()], &k("7")),
            serde_json::json!({"s": "7"})
        );
    }
}
