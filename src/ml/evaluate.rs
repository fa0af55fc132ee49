//! How good the deployed model is on a relation now: `pgml.evaluate`
//! (the metrics training stores), `pgml.confusion_matrix` and
//! `pgml.roc_curve`. The relation is read from every shard like a
//! training's (replicas first), its features go through the model's stored
//! preprocessing, its label is the project's `y_column_name`.

use std::sync::Arc;

use ndarray::Array2;
use serde_json::Value;

use super::catalog;
use super::db::Db;
use super::error::{MlError, MlResult};
use super::frame::{ColumnData, Frame};
use super::labels::Classes;
use super::metrics;
use super::service::{Deployed, Ml, Progress, StoredModel};
use super::task::Task;
use crate::backend::registry::Pool;

/// The deployed model's predictions on a relation's rows, with their labels.
pub struct Scored {
    pub task: Task,
    classes: Option<Classes>,
    /// Label values (regression) or class codes (classification), one per
    /// row with a label.
    truth: Vec<f64>,
    /// rows × outputs: values or class codes.
    predicted: Array2<f64>,
    /// Classification: rows × classes.
    proba: Option<Array2<f64>>,
}

/// Reads `relation` and predicts its rows with `project`'s deployed model.
pub async fn score(
    ml: &Arc<Ml>,
    pool: &Arc<Pool>,
    project: &str,
    relation: &str,
    progress: &Progress,
) -> MlResult<Scored> {
    let deployed = ml.cache.deployed(ml, pool, project).await?;
    let model = match &*deployed {
        Deployed::Model(m) => m,
        Deployed::Groups(_) => {
            return Err(MlError::Unsupported(format!(
            "project \"{project}\" has a model per group; evaluating a group set is not supported"
        )))
        }
    };
    if !model.task.supervised() {
        return Err(MlError::invalid(format!(
            "project \"{project}\" is a {} project; only regression and classification are evaluated",
            model.task.name()
        )));
    }
    let labels = label_columns(ml, pool, model.id).await?;
    let frame = super::train::read_relation(ml, pool, relation, &labels, &[], progress).await?;
    let rows = labelled_rows(&frame, &labels)?;
    if rows.len() < frame.rows {
        progress.notice(format!(
            "pgml.evaluate: {} rows of {relation} have a NULL label and are skipped",
            frame.rows - rows.len()
        ));
    }
    score_rows(deployed, &frame, &labels, rows).await
}

/// Rows of `frame` whose labels are all present: a NULL label says nothing
/// of the model.
pub fn labelled_rows(frame: &Frame, labels: &[String]) -> MlResult<Vec<usize>> {
    let columns = label_data(frame, labels)?;
    Ok((0..frame.rows)
        .filter(|&r| columns.iter().all(|c| !c.is_null(r)))
        .collect())
}

fn label_data<'a>(frame: &'a Frame, labels: &[String]) -> MlResult<Vec<&'a ColumnData>> {
    labels
        .iter()
        .map(|name| {
            frame.column(name).map(|(_, c)| &c.data).ok_or_else(|| {
                MlError::UndefinedColumn(format!("label column \"{name}\" is missing"))
            })
        })
        .collect()
}

/// The deployed model's predictions of `rows` of `frame` (rows with a
/// label), with their labels: `pgml.evaluate`'s, and a scheduled
/// retraining's comparison on the new model's test rows.
pub async fn score_rows(
    deployed: Arc<Deployed>,
    frame: &Frame,
    labels: &[String],
    rows: Vec<usize>,
) -> MlResult<Scored> {
    let Deployed::Model(model) = &*deployed else {
        return Err(MlError::Unsupported(
            "evaluating a group set is not supported".into(),
        ));
    };
    let truth = truth(model, &label_data(frame, labels)?, &rows)?;
    let x = model.preprocessor.transform(frame, &rows)?;
    tokio::task::spawn_blocking(move || {
        let Deployed::Model(m) = &*deployed else {
            return Err(MlError::Internal("not a single model".into()));
        };
        let predicted = m.model.predict(x.view())?;
        let proba = match m.task {
            Task::Classification => Some(m.model.predict_proba(x.view())?),
            _ => None,
        };
        Ok(Scored {
            task: m.task,
            classes: m.classes.clone(),
            truth,
            predicted,
            proba,
        })
    })
    .await
    .map_err(|e| MlError::Internal(format!("evaluation thread failed: {e}")))?
}

/// The label columns of the model's training snapshot.
async fn label_columns(ml: &Ml, pool: &Arc<Pool>, model_id: i64) -> MlResult<Vec<String>> {
    let mut db = Db::checkout(pool.primary(0)).await?;
    ml.ensure_schema(pool, &mut db).await?;
    let labels = catalog::label_columns(&mut db, model_id).await?;
    if labels.is_empty() {
        return Err(MlError::invalid(format!(
            "model {model_id} has no label column (an imported model): it cannot be evaluated"
        )));
    }
    Ok(labels)
}

/// Label values, or class codes by the model's classes; a class the model
/// was not trained on is refused (no prediction could ever match it).
fn truth(model: &StoredModel, columns: &[&ColumnData], rows: &[usize]) -> MlResult<Vec<f64>> {
    let [column] = columns else {
        return Err(MlError::Unsupported(
            "evaluating a model with several labels (train_joint) is not supported".into(),
        ));
    };
    let unknown = |v: &dyn std::fmt::Display| {
        MlError::data(format!("label {v} is not a class the model was trained on"))
    };
    rows.iter()
        .map(|&r| match (column, &model.classes) {
            (ColumnData::Float(v), None) => {
                v[r].ok_or_else(|| MlError::Internal("NULL label".into()))
            }
            (ColumnData::Float(v), Some(Classes::Numbers(classes))) => {
                let value = v[r].unwrap_or(f64::NAN);
                classes
                    .iter()
                    .position(|c| *c == value)
                    .map(|i| i as f64)
                    .ok_or_else(|| unknown(&value))
            }
            (ColumnData::Text(v), Some(Classes::Texts(classes))) => {
                let value = v[r].as_deref().unwrap_or_default();
                classes
                    .iter()
                    .position(|c| c == value)
                    .map(|i| i as f64)
                    .ok_or_else(|| unknown(&value))
            }
            _ => Err(MlError::DatatypeMismatch(
                "the label column's type is not the one the model was trained on".into(),
            )),
        })
        .collect()
}

impl Scored {
    /// The task's metrics; `threshold` decides a binary classifier's
    /// positives (P(positive) >= threshold).
    pub fn metrics(&self, threshold: f64) -> MlResult<Value> {
        let metrics = match self.task {
            Task::Regression => {
                let y = Array2::from_shape_vec((self.truth.len(), 1), self.truth.clone())
                    .map_err(|e| MlError::Internal(e.to_string()))?;
                metrics::regression(y.view(), self.predicted.view())?
            }
            _ => {
                let proba = self.proba()?;
                metrics::classification(
                    &self.truth,
                    &self.classes_predicted(threshold)?,
                    Some(proba.view()),
                    proba.ncols(),
                )?
            }
        };
        Ok(Value::Object(metrics))
    }

    fn proba(&self) -> MlResult<&Array2<f64>> {
        self.proba
            .as_ref()
            .ok_or_else(|| MlError::invalid("the model is not a classifier"))
    }

    /// Class codes: the model's, or by `threshold` for a binary one.
    fn classes_predicted(&self, threshold: f64) -> MlResult<Vec<f64>> {
        let proba = self.proba()?;
        if proba.ncols() == 2 {
            return Ok(proba
                .column(1)
                .iter()
                .map(|&p| f64::from(u8::from(p >= threshold)))
                .collect());
        }
        Ok(self.predicted.column(0).to_vec())
    }

    /// (actual, predicted, count) for each pair that occurs, in class order.
    pub fn confusion_matrix(&self) -> MlResult<Vec<(String, String, u64)>> {
        let predicted = self.classes_predicted(0.5)?;
        let k = self.proba()?.ncols();
        let mut counts = vec![0u64; k * k];
        for (&t, &p) in self.truth.iter().zip(&predicted) {
            if let Some(c) = counts.get_mut(t as usize * k + p as usize) {
                *c += 1;
            }
        }
        let name = |code: usize| class_text(self.classes.as_ref(), code);
        Ok(counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(i, &c)| (name(i / k), name(i % k), c))
            .collect())
    }

    /// One point per distinct score, highest first: (threshold, recall,
    /// false positive rate, precision) when the positives are the rows
    /// scoring at least the threshold.
    pub fn roc_curve(&self) -> MlResult<Vec<[f64; 4]>> {
        let proba = self.proba()?;
        if proba.ncols() != 2 {
            return Err(MlError::invalid(format!(
                "pgml.roc_curve is for binary classification; this model has {} classes",
                proba.ncols()
            )));
        }
        let mut scored: Vec<(f64, bool)> = proba
            .column(1)
            .iter()
            .zip(&self.truth)
            .map(|(&s, &t)| (s, t == 1.0))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let positives = scored.iter().filter(|(_, p)| *p).count() as f64;
        let negatives = scored.len() as f64 - positives;
        let (mut tp, mut fp) = (0.0, 0.0);
        let mut out = Vec::new();
        for (i, &(score, positive)) in scored.iter().enumerate() {
            if positive {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            // A point once every row with this score is counted.
            if scored.get(i + 1).is_some_and(|next| next.0 == score) {
                continue;
            }
            let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
            out.push([
                score,
                ratio(tp, positives),
                ratio(fp, negatives),
                tp / (tp + fp),
            ]);
        }
        Ok(out)
    }
}

/// A class as text: a number as Postgres prints an integer or a float8,
/// text as itself.
fn class_text(classes: Option<&Classes>, code: usize) -> String {
    match classes {
        Some(Classes::Texts(t)) => t.get(code).cloned().unwrap_or_default(),
        Some(Classes::Numbers(n)) => {
            let v = n.get(code).copied().unwrap_or(f64::NAN);
            if v.fract() == 0.0 && v.abs() < 1e15 {
                format!("{}", v as i64)
            } else {
                v.to_string()
            }
        }
        None => code.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Axis;

    fn binary(truth: Vec<f64>, p: Vec<f64>) -> Scored {
        let n = p.len();
        let proba = Array2::from_shape_fn((n, 2), |(r, c)| if c == 1 { p[r] } else { 1.0 - p[r] });
        Scored {
            task: Task::Classification,
            classes: Some(Classes::Numbers(vec![0.0, 1.0])),
            truth,
            predicted: proba
                .map_axis(Axis(1), |r| f64::from(u8::from(r[1] > 0.5)))
                .insert_axis(Axis(1)),
            proba: Some(proba),
        }
    }

    #[test]
    fn roc_points_are_one_per_distinct_score() {
        // sklearn.metrics.roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8],
        // drop_intermediate=False): thresholds 0.8, 0.4, 0.35, 0.1.
        let s = binary(vec![0.0, 0.0, 1.0, 1.0], vec![0.1, 0.4, 0.35, 0.8]);
        let roc = s.roc_curve().unwrap();
        let got: Vec<[f64; 3]> = roc.iter().map(|p| [p[0], p[1], p[2]]).collect();
        assert_eq!(
            got,
            vec![
                [0.8, 0.5, 0.0],
                [0.4, 0.5, 0.5],
                [0.35, 1.0, 0.5],
                [0.1, 1.0, 1.0]
            ]
        );
        assert_eq!(roc[1][3], 0.5);
        // Ties make one point.
        let tied = binary(vec![0.0, 1.0, 1.0], vec![0.5, 0.5, 0.9]);
        assert_eq!(tied.roc_curve().unwrap().len(), 2);
    }

    #[test]
    fn threshold_moves_the_positives_and_confusion_counts_pairs() {
        let s = binary(vec![0.0, 1.0, 1.0, 0.0], vec![0.2, 0.3, 0.9, 0.6]);
        let m = s.metrics(0.25).unwrap();
        assert_eq!(m["accuracy"], serde_json::json!(0.75));
        assert_eq!(
            s.confusion_matrix().unwrap(),
            vec![
                ("0".to_string(), "0".to_string(), 1),
                ("0".to_string(), "1".to_string(), 1),
                ("1".to_string(), "0".to_string(), 1),
                ("1".to_string(), "1".to_string(), 1),
            ]
        );
    }
}
