//! `pgml.train(..., group_by => ...)`: one model per distinct value of the
//! group columns, each trained on its group's rows exactly as a single
//! model is (split, preprocessing, search, fit, metrics), several groups
//! at a time on the training threads. The models are one set in the
//! catalog (a row for the set, which deploys, and a row per group), so a
//! deploy moves them together.
//!
//! A group that cannot train (too few rows to split, one class) gets a
//! NOTICE and no model; an error in the arguments fails the training.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;
use ndarray::Axis;
use serde_json::{json, Map, Value};

use super::models::{Record, Run, Snapshot};
use super::{fit_model, prepare, read_relation, spawn_statistics, Data, Fitted, Trained};
use crate::ml::error::{MlError, MlResult};
use crate::ml::frame::{Column, ColumnData, Frame};
use crate::ml::labels::Classes;
use crate::ml::metrics;
use crate::ml::predict::GroupKey;
use crate::ml::preprocess;
use crate::ml::service::{group_text, Progress};
use crate::ml::task::Task;

/// A group's trained model, ready for the catalog.
struct Member {
    key: GroupKey,
    data: Data,
    fitted: Fitted,
}

impl Run<'_> {
    /// Reads the relation, trains its groups, saves the set.
    pub async fn train_groups(self) -> MlResult<Trained> {
        let args = self.args;
        let frame = read_relation(
            self.ml,
            self.pool,
            &self.source.relation,
            &self.source.y_columns,
            &args.group_by,
            self.progress,
        )
        .await?;
        if let Some(g) = args
            .group_by
            .iter()
            .find(|g| self.source.y_columns.contains(g))
        {
            return Err(MlError::invalid(format!(
                "column \"{g}\" cannot be both the label and a group column"
            )));
        }
        let (frame, keys) = split_off_groups(frame, &args.group_by)?;
        let groups = partition(&keys);
        self.progress.notice(format!(
            "pgml.train: read {} rows of {} groups from {}",
            frame.rows,
            groups.len(),
            self.source.relation
        ));
        let frame = Arc::new(frame);
        // The snapshot describes the whole relation: statistics over
        // every row, computed while the groups train.
        let all_rows: Vec<usize> = (0..frame.rows).collect();
        let _slot = self.ml.training_slot(self.progress).await?;
        let members = self.fit_groups(&frame, groups).await?;
        let Some(first) = members.first() else {
            return Err(MlError::data(format!(
                "no group of {} could be trained (see the NOTICEs)",
                self.source.relation
            )));
        };
        let statistics = spawn_statistics(
            &frame,
            &first.data.features,
            &first.data.label_idx,
            &all_rows,
        );
        let mut statistics = statistics
            .await
            .map_err(|e| MlError::Internal(format!("column statistics: {e}")))?;
        let labels = statistics.split_off(first.data.features.len());
        let mut columns = first.data.pre.columns_json(statistics);
        if let Value::Array(list) = &mut columns {
            for (&i, s) in first.data.label_idx.iter().zip(labels) {
                list.push(preprocess::label_column_json(
                    &frame.columns[i],
                    i + 1,
                    &all_rows,
                    s,
                ));
            }
        }
        let mut set_metrics = pooled_metrics(self.task, &members)?;
        set_metrics.insert("groups".into(), json!(members.len()));
        let snapshot = Snapshot {
            columns,
            analysis: json!({"samples": frame.rows, "groups": members.len()}),
        };
        let records = members
            .into_iter()
            .map(|m| Record {
                key: m.key,
                model: m.fitted.model,
                pre: m.data.pre,
                classes: m.data.classes,
                metrics: m.fitted.metrics,
                hyperparams: m.fitted.hyperparams,
            })
            .collect();
        self.save(records, &snapshot, set_metrics).await
    }

    /// Trains every group, `threads` at a time with one thread each (many
    /// small fits gain nothing from threads of their own).
    async fn fit_groups(
        &self,
        frame: &Arc<Frame>,
        groups: Vec<(GroupKey, Vec<usize>)>,
    ) -> MlResult<Vec<Member>> {
        let total = groups.len();
        let columns = &self.args.group_by;
        let fits = futures_util::stream::iter(groups.into_iter().enumerate())
            .map(|(i, (key, rows))| {
                let frame = frame.clone();
                async move {
                    let result = self.train_group(frame, rows).await;
                    (i, key, result)
                }
            })
            .buffer_unordered(self.ml.threads().max(1));
        futures_util::pin_mut!(fits);
        let mut members = Vec::with_capacity(total);
        let mut skipped = 0;
        while let Some((i, key, result)) = fits.next().await {
            match result {
                Ok((data, fitted)) => members.push((i, Member { key, data, fitted })),
                // What the group's rows cannot give (too few to split, one
                // class): the group has no model.
                Err(MlError::Data(reason)) => {
                    skipped += 1;
                    self.progress.notice(format!(
                        "pgml.train: group {} has no model: {reason}",
                        group_text(columns, &key)
                    ));
                }
                Err(e) => return Err(e),
            }
            let done = members.len() + skipped;
            if done % 100 == 0 || done == total {
                self.progress.notice(format!(
                    "pgml.train: {done}/{total} groups done, {skipped} without a model"
                ));
            }
        }
        // Catalog rows in the groups' first-seen order, whatever order
        // they finished in.
        members.sort_unstable_by_key(|(i, _)| *i);
        Ok(members.into_iter().map(|(_, m)| m).collect())
    }

    async fn train_group(&self, frame: Arc<Frame>, rows: Vec<usize>) -> MlResult<(Data, Fitted)> {
        let source = self.source.clone();
        let preprocess = self.args.preprocess.clone();
        let (task, algorithm) = (self.task, self.algorithm);
        let data = tokio::task::spawn_blocking(move || {
            prepare(
                frame.select(&rows),
                &source,
                &preprocess,
                task,
                algorithm,
                1,
            )
        })
        .await
        .map_err(|e| MlError::Internal(format!("training thread failed: {e}")))??;
        let fitted = fit_model(&data, self.args, &Progress::default()).await?;
        Ok((data, fitted))
    }
}

/// The frame without its group columns, and each row's group key.
fn split_off_groups(frame: Frame, group_by: &[String]) -> MlResult<(Frame, Vec<GroupKey>)> {
    let rows = frame.rows;
    let mut group_columns: Vec<Option<Column>> = vec![None; group_by.len()];
    let mut rest = Vec::with_capacity(frame.columns.len());
    for column in frame.columns {
        match group_by.iter().position(|g| *g == column.name) {
            Some(i) => group_columns[i] = Some(column),
            None => rest.push(column),
        }
    }
    let mut values = Vec::with_capacity(group_by.len());
    for (name, column) in group_by.iter().zip(group_columns) {
        match column.map(|c| c.data) {
            Some(ColumnData::Text(v)) => values.push(v),
            _ => {
                return Err(MlError::UndefinedColumn(format!(
                    "group column \"{name}\" was not read"
                )))
            }
        }
    }
    let keys = (0..rows)
        .map(|r| values.iter_mut().map(|v| v[r].take()).collect())
        .collect();
    Ok((
        Frame {
            columns: rest,
            rows,
        },
        keys,
    ))
}

/// Row indexes per group, groups in first-seen order.
fn partition(keys: &[GroupKey]) -> Vec<(GroupKey, Vec<usize>)> {
    let mut index: HashMap<&GroupKey, usize> = HashMap::new();
    let mut groups: Vec<(GroupKey, Vec<usize>)> = Vec::new();
    for (r, key) in keys.iter().enumerate() {
        let at = *index.entry(key).or_insert_with(|| {
            groups.push((key.clone(), Vec::new()));
            groups.len() - 1
        });
        groups[at].1.push(r);
    }
    groups
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
            for m in members {
                let set = &m.data.set;
                if set.x_test.nrows() == 0 {
                    continue;
                }
                truth.push(set.y_test.clone());
                predicted.push(m.fitted.model.predict(set.x_test.view())?);
            }
            if truth.is_empty() {
                return Ok(Map::new());
            }
            let views: Vec<_> = truth.iter().map(|a| a.view()).collect();
            let y = ndarray::concatenate(Axis(0), &views)
                .map_err(|e| MlError::Internal(e.to_string()))?;
            let views: Vec<_> = predicted.iter().map(|a| a.view()).collect();
            let p = ndarray::concatenate(Axis(0), &views)
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
            for m in members {
                let set = &m.data.set;
                if set.x_test.nrows() == 0 {
                    continue;
                }
                let p = m.fitted.model.predict(set.x_test.view())?;
                let classes = m.data.classes.as_ref();
                for (t, p) in set.y_test.column(0).iter().zip(p.column(0)) {
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
    fn rows_are_partitioned_by_group_in_first_seen_order() {
        let k = |a: &str| vec![Some(a.to_string())];
        let keys = vec![k("b"), k("a"), k("b"), vec![None], k("a")];
        let groups = partition(&keys);
        assert_eq!(
            groups,
            vec![
                (k("b"), vec![0, 2]),
                (k("a"), vec![1, 4]),
                (vec![None], vec![3])
            ]
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
