//! The bridge from a planned pgml.predict statement to the model cache:
//! resolves each call's model once per execution and predicts batches of
//! rows with PostgresML's semantics (array input as given, row input
//! through the stored preprocessing, class values for classification).

use std::sync::Arc;
use std::time::Instant;

use ndarray::Array2;

use super::error::{MlError, MlResult};
use super::predict::{Call, Features, Func, ModelRef, Prediction, Predictor};
use super::service::{Ml, StoredModel};
use super::task::Task;
use crate::backend::registry::Pool;

/// The models of one statement's calls, resolved.
pub struct ModelSet {
    ml: Arc<Ml>,
    /// Per call: the function and its model (None: a NULL model), with
    /// the name predictions are counted under.
    calls: Vec<(Func, Option<Named>)>,
}

type Named = (String, Arc<StoredModel>);

impl ModelSet {
    /// Resolves every call's model; `params` are the Bind values (text) for
    /// calls whose model is a `$n`.
    pub async fn resolve(
        ml: &Arc<Ml>,
        pool: &Arc<Pool>,
        calls: &[Call],
        params: &[Option<String>],
    ) -> MlResult<ModelSet> {
        ml.check_enabled(pool)?;
        let mut out = Vec::with_capacity(calls.len());
        for call in calls {
            let reference = match &call.model {
                ModelRef::Param(n) => match params.get(n.wrapping_sub(1)) {
                    Some(Some(v)) => match v.trim().parse::<i64>() {
                        Ok(id) => ModelRef::Id(id),
                        Err(_) => ModelRef::Project(v.clone()),
                    },
                    Some(None) => ModelRef::Null,
                    None => return Err(MlError::invalid(format!("there is no parameter ${n}"))),
                },
                other => other.clone(),
            };
            let model = match reference {
                ModelRef::Project(name) => {
                    let m = ml.cache.deployed(ml, pool, &name).await?;
                    Some((name, m))
                }
                ModelRef::Id(id) => {
                    let m = ml.cache.by_id(ml, pool, id).await?;
                    Some((format!("model {id}"), m))
                }
                ModelRef::Null | ModelRef::Param(_) => None,
            };
            out.push((call.func, model));
        }
        Ok(ModelSet {
            ml: ml.clone(),
            calls: out,
        })
    }
}

impl Predictor for ModelSet {
    fn predict(&self, call: usize, inputs: &[Features]) -> MlResult<Vec<Prediction>> {
        let (func, model) = self
            .calls
            .get(call)
            .ok_or_else(|| MlError::Internal(format!("no model for call {call}")))?;
        let Some((project, model)) = model else {
            return Err(MlError::Internal("predict asked of a NULL model".into()));
        };
        let started = Instant::now();
        let predictions = predict(model, *func, inputs)?;
        self.ml
            .metrics
            .predicted(project, inputs.len(), started.elapsed());
        Ok(predictions)
    }
}

/// Feature rows → one matrix, checked against what the model was trained on.
fn matrix(model: &StoredModel, inputs: &[Features], batch: bool) -> MlResult<Array2<f64>> {
    let width = model.model.num_features();
    if width == 0 {
        return Err(MlError::Internal("the model has no features".into()));
    }
    let mut data = Vec::with_capacity(inputs.len() * width);
    let mut rows = 0;
    for input in inputs {
        match input {
            Features::Array(values) => {
                if batch {
                    if values.len() % width != 0 {
                        return Err(MlError::DatatypeMismatch(format!(
                            "pgml.predict_batch: {} values is not a whole number of rows of {width} features",
                            values.len()
                        )));
                    }
                    rows += values.len() / width;
                } else {
                    if values.len() != width {
                        return Err(MlError::DatatypeMismatch(format!(
                            "the model expects {width} features, got {}",
                            values.len()
                        )));
                    }
                    rows += 1;
                }
                data.extend_from_slice(values);
            }
            Features::Row(values) => {
                let row = model.preprocessor.transform_row(values)?;
                if row.len() != width {
                    return Err(MlError::DatatypeMismatch(format!(
                        "the model expects {width} features, got {}",
                        row.len()
                    )));
                }
                data.extend(row);
                rows += 1;
            }
        }
    }
    Array2::from_shape_vec((rows, width), data).map_err(|e| MlError::Internal(e.to_string()))
}

pub fn predict(model: &StoredModel, func: Func, inputs: &[Features]) -> MlResult<Vec<Prediction>> {
    if inputs.is_empty() {
        return Ok(Vec::new());
    }
    let batch = func == Func::PredictBatch;
    let x = matrix(model, inputs, batch)?;
    match func {
        Func::Predict | Func::PredictBatch => {
            let y = model.model.predict(x.view())?;
            let value = |v: f64| match (&model.classes, model.task) {
                (Some(classes), Task::Classification) => classes.value(v as usize) as f32,
                _ => v as f32,
            };
            let scalars: Vec<f32> = y.column(0).iter().map(|&v| value(v)).collect();
            if !batch {
                return Ok(scalars.into_iter().map(Prediction::Scalar).collect());
            }
            // predict_batch: one vector per input, one value per row in it.
            let width = model.model.num_features();
            let mut out = Vec::with_capacity(inputs.len());
            let mut at = 0;
            for input in inputs {
                let n = match input {
                    Features::Array(v) => v.len() / width,
                    Features::Row(_) => 1,
                };
                out.push(Prediction::Vector(scalars[at..at + n].to_vec()));
                at += n;
            }
            Ok(out)
        }
        Func::PredictProba => {
            if model.task != Task::Classification {
                return Err(MlError::invalid(
                    "pgml.predict_proba needs a classification model",
                ));
            }
            let p = model.model.predict_proba(x.view())?;
            Ok(p.rows()
                .into_iter()
                .map(|r| Prediction::Vector(r.iter().map(|&v| v as f32).collect()))
                .collect())
        }
        Func::PredictJoint => {
            let y = model.model.predict(x.view())?;
            Ok(y.rows()
                .into_iter()
                .map(|r| Prediction::Vector(r.iter().map(|&v| v as f32).collect()))
                .collect())
        }
    }
}
