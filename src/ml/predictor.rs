//! The bridge from a planned pgml.predict statement to the model cache:
//! resolves each call's model once per execution and predicts batches of
//! rows with PostgresML's semantics (array input as given, row input
//! through the stored preprocessing, class values for classification).

use std::borrow::Borrow;
use std::sync::Arc;
use std::time::Instant;

use ndarray::Array2;

use super::error::{MlError, MlResult};
use super::explain;
use super::frame::RawValue;
use super::predict::{Call, Features, Func, GroupKey, ModelRef, Prediction, Predictor, TopK};
use super::service::{group_text, Deployed, GroupModels, Ml, StoredModel};
use super::task::Task;
use crate::backend::registry::Pool;

/// The models of one statement's calls, resolved.
pub struct ModelSet {
    ml: Arc<Ml>,
    /// Per call: the function (explain's top_k resolved) and its model
    /// (None: a NULL model), with the name predictions are counted under.
    calls: Vec<(Resolved, Option<Named>)>,
    /// Groups met that have no model, per project: each named once per
    /// statement in a NOTICE (`notices`).
    missing: parking_lot::Mutex<std::collections::BTreeSet<(String, String)>>,
    /// The catalog's database: the serving sample is kept per database.
    database: String,
}

type Named = (String, Arc<Deployed>);

/// A call's function, with explain's `top_k` read from the Bind values.
#[derive(Clone, Copy)]
struct Resolved {
    func: Func,
    top_k: Option<usize>,
    /// Called by project name: its rows join the project's serving sample.
    by_project: bool,
}

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
            let by_project = matches!(reference, ModelRef::Project(_));
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
            let top_k = match call.top_k {
                TopK::All => None,
                TopK::Const(k) => Some(k),
                TopK::Param(n) => match params.get(n.wrapping_sub(1)) {
                    Some(None) => None,
                    Some(Some(v)) => Some(v.trim().parse::<usize>().map_err(|_| {
                        MlError::invalid(format!(
                            "pgml.explain: top_k must be a non-negative integer, not {v}"
                        ))
                    })?),
                    None => return Err(MlError::invalid(format!("there is no parameter ${n}"))),
                },
            };
            out.push((
                Resolved {
                    func: call.func,
                    top_k,
                    by_project,
                },
                model,
            ));
        }
        Ok(ModelSet {
            ml: ml.clone(),
            calls: out,
            missing: Default::default(),
            database: Ml::database_key(pool),
        })
    }

    /// The NOTICEs of the statement so far: one per (project, group) with
    /// no model, each once.
    pub fn notices(&self) -> Vec<String> {
        let missing = std::mem::take(&mut *self.missing.lock());
        missing
            .into_iter()
            .map(|(project, group)| {
                format!("pgml.predict: project \"{project}\" has no model for group {group}; its rows predict NULL")
            })
            .collect()
    }

    /// Predictions of a group set: each row by its group's model, NULL
    /// for a group without one.
    fn predict_groups(
        &self,
        project: &str,
        set: &GroupModels,
        func: Resolved,
        inputs: &[Features],
    ) -> MlResult<Vec<Option<Prediction>>> {
        // Rows of one group are predicted together, in one batch per group.
        let mut by_group: std::collections::HashMap<&GroupKey, Vec<usize>> = Default::default();
        for (i, input) in inputs.iter().enumerate() {
            let Features::Grouped(key, _) = input else {
                return Err(MlError::invalid(format!(
                    "project \"{project}\" has a model per group of ({}): call pgml.{}(..., group => ...)",
                    set.columns.join(", "),
                    func.func.name()
                )));
            };
            by_group.entry(key).or_default().push(i);
        }
        let mut out = vec![None; inputs.len()];
        for (key, rows) in by_group {
            let Some(model) = set.models.get(key) else {
                self.missing
                    .lock()
                    .insert((project.to_string(), group_text(&set.columns, key)));
                continue;
            };
            // The group's rows by reference: nothing is copied.
            let features: Vec<&Features> = rows
                .iter()
                .map(|&i| match &inputs[i] {
                    Features::Grouped(_, f) => &**f,
                    other => other,
                })
                .collect();
            for (i, p) in rows.into_iter().zip(run(model, func, &features)?) {
                out[i] = Some(p);
            }
        }
        Ok(out)
    }
}

impl Predictor for ModelSet {
    fn predict(&self, call: usize, inputs: &[Features]) -> MlResult<Vec<Option<Prediction>>> {
        let (func, model) = self
            .calls
            .get(call)
            .ok_or_else(|| MlError::Internal(format!("no model for call {call}")))?;
        let Some((project, model)) = model else {
            return Err(MlError::Internal("predict asked of a NULL model".into()));
        };
        let started = Instant::now();
        let predictions = match &**model {
            Deployed::Model(m) => run(m, *func, inputs)?.into_iter().map(Some).collect(),
            Deployed::Groups(set) => self.predict_groups(project, set, *func, inputs)?,
        };
        self.ml
            .metrics
            .predicted(project, inputs.len(), started.elapsed());
        if let (true, Deployed::Model(m)) =
            (func.by_project && func.func != Func::PredictBatch, &**model)
        {
            self.sample(project, m, inputs);
        }
        Ok(predictions)
    }
}

impl ModelSet {
    /// Offers the rows to the project's serving sample: rows as given, and
    /// arrays whose elements are the feature columns' own numbers.
    fn sample(&self, project: &str, model: &StoredModel, inputs: &[Features]) {
        let capacity = self.ml.settings().serving_sample_rows;
        if capacity == 0 {
            return;
        }
        let columns = model.preprocessor.column_names();
        let plain = model.preprocessor.passes_numbers_through();
        self.ml.serving.record(
            capacity,
            &self.database,
            project,
            &columns,
            inputs,
            |f| match f {
                Features::Row(values) => Some(values.clone()),
                Features::Array(values) if plain && values.len() == columns.len() => {
                    Some(values.iter().map(|&x| RawValue::Number(x)).collect())
                }
                _ => None,
            },
        );
    }
}

/// A prediction or an explanation.
fn run<F: Borrow<Features>>(
    model: &StoredModel,
    call: Resolved,
    inputs: &[F],
) -> MlResult<Vec<Prediction>> {
    match call.func {
        Func::Explain => explain(model, inputs, call.top_k),
        func => predict(model, func, inputs),
    }
}

/// `pgml.explain` of each input row.
fn explain<F: Borrow<Features>>(
    model: &StoredModel,
    inputs: &[F],
    top_k: Option<usize>,
) -> MlResult<Vec<Prediction>> {
    if inputs.is_empty() {
        return Ok(Vec::new());
    }
    let x = matrix(model, inputs, false)?;
    let c = off_the_worker(|| {
        explain::contributions(&*model.model, model.algorithm, x.view(), &model.means)
    })?;
    let names = model.preprocessor.feature_names();
    let class = |code: usize| match &model.classes {
        Some(classes) => classes.value(code) as f32 as f64,
        None => code as f64,
    };
    Ok((0..x.nrows())
        .map(|row| Prediction::Json(explain::explanation(&c, row, &names, top_k, class)))
        .collect())
}

/// Runs `f`, which may take long (TreeSHAP costs a hundred predictions a
/// row), so that on a multi-threaded runtime this worker's other tasks
/// move to another worker meanwhile instead of waiting for it.
fn off_the_worker<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Feature rows → one matrix, checked against what the model was trained on.
fn matrix<F: Borrow<Features>>(
    model: &StoredModel,
    inputs: &[F],
    batch: bool,
) -> MlResult<Array2<f64>> {
    let width = model.model.num_features();
    if width == 0 {
        return Err(MlError::Internal("the model has no features".into()));
    }
    let mut data = Vec::with_capacity(inputs.len() * width);
    let mut rows = 0;
    for input in inputs {
        match input.borrow() {
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
            Features::Grouped(..) => {
                return Err(MlError::invalid(format!(
                    "model {} was not trained with group_by: call it without group => ...",
                    model.id
                )))
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

/// `inputs`: the features, owned or borrowed.
pub fn predict<F: Borrow<Features>>(
    model: &StoredModel,
    func: Func,
    inputs: &[F],
) -> MlResult<Vec<Prediction>> {
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
                let n = match input.borrow() {
                    Features::Array(v) => v.len() / width,
                    Features::Row(_) | Features::Grouped(..) => 1,
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
        Func::Explain => Err(MlError::Internal("pgml.explain predicted".into())),
        Func::PredictJoint => {
            let y = model.model.predict(x.view())?;
            Ok(y.rows()
                .into_iter()
                .map(|r| Prediction::Vector(r.iter().map(|&v| v as f32).collect()))
                .collect())
        }
    }
}
