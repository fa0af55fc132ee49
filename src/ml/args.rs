//! Typed arguments of the pgml functions, with PostgresML's defaults, read
//! from a bound call. Wrong types are 22023 naming the argument.

use serde_json::{Map, Value};

use super::call::{Arg, FnCall};
use super::error::{MlError, MlResult};
use super::search::Search;
use super::split::Sampling;
use super::task::Task;

fn wrong(name: &str, want: &str) -> MlError {
    MlError::invalid(format!("argument \"{name}\" must be {want}"))
}

fn text(call: &FnCall, name: &str) -> MlResult<Option<String>> {
    match call.get(name) {
        None | Some(Arg::Null) => Ok(None),
        Some(Arg::Text(s)) => Ok(Some(s.clone())),
        Some(Arg::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(wrong(name, "text")),
    }
}

fn required_text(call: &FnCall, name: &str) -> MlResult<String> {
    text(call, name)?.ok_or_else(|| MlError::invalid(format!("argument \"{name}\" is required")))
}

fn number(call: &FnCall, name: &str, default: f64) -> MlResult<f64> {
    match call.get(name) {
        None | Some(Arg::Null) => Ok(default),
        Some(Arg::Number(n)) => Ok(*n),
        Some(Arg::Text(s)) => s.trim().parse().map_err(|_| wrong(name, "a number")),
        Some(_) => Err(wrong(name, "a number")),
    }
}

fn boolean(call: &FnCall, name: &str, default: bool) -> MlResult<bool> {
    match call.get(name) {
        None | Some(Arg::Null) => Ok(default),
        Some(Arg::Bool(b)) => Ok(*b),
        Some(Arg::Text(s)) => match s.trim().to_lowercase().as_str() {
            "t" | "true" | "on" | "yes" | "1" => Ok(true),
            "f" | "false" | "off" | "no" | "0" => Ok(false),
            _ => Err(wrong(name, "a boolean")),
        },
        Some(_) => Err(wrong(name, "a boolean")),
    }
}

fn object(call: &FnCall, name: &str) -> MlResult<Map<String, Value>> {
    match call.get(name) {
        None | Some(Arg::Null) => Ok(Map::new()),
        Some(Arg::Text(s)) => match serde_json::from_str(s) {
            Ok(Value::Object(o)) => Ok(o),
            _ => Err(wrong(name, "a JSON object")),
        },
        Some(_) => Err(wrong(name, "a JSON object")),
    }
}

/// `'a'`, `ARRAY['a','b']` or the text form `'{a,b}'` of a text[].
fn text_list(call: &FnCall, name: &str) -> MlResult<Vec<String>> {
    match call.get(name) {
        None | Some(Arg::Null) => Ok(Vec::new()),
        Some(Arg::Text(s)) if s.starts_with('{') && s.ends_with('}') => Ok(s[1..s.len() - 1]
            .split(',')
            .map(|v| v.trim().trim_matches('"').to_string())
            .filter(|v| !v.is_empty())
            .collect()),
        Some(Arg::Text(s)) => Ok(vec![s.clone()]),
        Some(Arg::Array(items)) => items
            .iter()
            .map(|i| match i {
                Arg::Text(s) => Ok(s.clone()),
                _ => Err(wrong(name, "text or text[]")),
            })
            .collect(),
        Some(_) => Err(wrong(name, "text or text[]")),
    }
}

#[derive(Debug, Clone)]
pub struct TrainArgs {
    pub project: String,
    pub task: Option<Task>,
    pub relation: Option<String>,
    pub y_columns: Vec<String>,
    pub algorithm: String,
    pub hyperparams: Map<String, Value>,
    pub search: Option<Search>,
    pub search_params: Map<String, Value>,
    pub search_args: Map<String, Value>,
    pub test_size: f64,
    pub test_sampling: Sampling,
    pub automatic_deploy: bool,
    pub materialize_snapshot: bool,
    pub preprocess: Value,
    /// One model per distinct value of these columns (empty: one model).
    pub group_by: Vec<String>,
    /// pgmlcat's own hyperparameters, taken out of `hyperparams` (the
    /// algorithms never see them): how the data is trained on, None: as
    /// the relation's size decides.
    pub pushdown: Option<bool>,
    pub streaming: Option<bool>,
    pub deploy_rule: DeployRule,
}

/// How `automatic_deploy` decides that a new model beats the deployed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployRule {
    /// By the key metrics both stored at training (each on its own test
    /// split): PostgresML's rule, and `pgml.train`'s.
    StoredScores,
    /// The deployed model is scored again on the new model's test rows
    /// (scheduled retraining: the data moved, so old scores compare
    /// different rows). Where it cannot be (pushdown, streamed and group
    /// trainings, a changed schema), the stored scores decide.
    SameTestRows,
}

impl TrainArgs {
    pub fn from_call(call: &FnCall) -> MlResult<TrainArgs> {
        let mut hyperparams = object(call, "hyperparams")?;
        let mut own = |key: &str| match hyperparams.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(MlError::invalid(format!(
                "hyperparameter \"{key}\" must be true or false"
            ))),
        };
        let (pushdown, streaming) = (own("pushdown")?, own("streaming")?);
        if let Some(runtime) = text(call, "runtime")? {
            if !matches!(runtime.as_str(), "rust" | "python") {
                return Err(MlError::invalid(format!(
                    "unknown runtime \"{runtime}\"; pgmlcat trains everything in its own (rust) runtime"
                )));
            }
        }
        Ok(TrainArgs {
            project: required_text(call, "project_name")?,
            task: text(call, "task")?.map(|t| Task::parse(&t)).transpose()?,
            relation: text(call, "relation_name")?,
            y_columns: text_list(call, "y_column_name")?,
            algorithm: text(call, "algorithm")?.unwrap_or_else(|| "linear".into()),
            hyperparams,
            search: text(call, "search")?
                .map(|s| Search::parse(&s))
                .transpose()?,
            search_params: object(call, "search_params")?,
            search_args: object(call, "search_args")?,
            test_size: number(call, "test_size", 0.25)?,
            test_sampling: Sampling::parse(
                &text(call, "test_sampling")?.unwrap_or_else(|| "stratified".into()),
            )?,
            automatic_deploy: boolean(call, "automatic_deploy", true)?,
            materialize_snapshot: boolean(call, "materialize_snapshot", false)?,
            preprocess: Value::Object(object(call, "preprocess")?),
            group_by: text_list(call, "group_by")?,
            pushdown,
            streaming,
            deploy_rule: DeployRule::StoredScores,
        })
    }
}

pub enum DeployArgs {
    Model(i64),
    Strategy {
        project: String,
        strategy: String,
        algorithm: Option<String>,
    },
}

impl DeployArgs {
    pub fn from_call(call: &FnCall) -> MlResult<DeployArgs> {
        // pgml.deploy(model_id BIGINT) has one numeric argument.
        if let (Some(Arg::Number(id)), None) = (call.get("project_name"), call.get("strategy")) {
            return Ok(DeployArgs::Model(*id as i64));
        }
        Ok(DeployArgs::Strategy {
            project: required_text(call, "project_name")?,
            strategy: required_text(call, "strategy")?,
            algorithm: text(call, "algorithm")?,
        })
    }
}

pub struct SnapshotArgs {
    pub relation: String,
    pub y_columns: Vec<String>,
    pub test_size: f64,
    pub test_sampling: Sampling,
    pub preprocess: Value,
}

impl SnapshotArgs {
    pub fn from_call(call: &FnCall) -> MlResult<SnapshotArgs> {
        Ok(SnapshotArgs {
            relation: required_text(call, "relation_name")?,
            y_columns: text_list(call, "y_column_name")?,
            test_size: number(call, "test_size", 0.25)?,
            test_sampling: Sampling::parse(
                &text(call, "test_sampling")?.unwrap_or_else(|| "stratified".into()),
            )?,
            preprocess: Value::Object(object(call, "preprocess")?),
        })
    }
}

pub fn dataset_name(call: &FnCall) -> MlResult<String> {
    required_text(call, "source")
}

/// The project argument of the functions that read a project's model.
pub fn project_name(call: &FnCall) -> MlResult<String> {
    required_text(call, "project_name")
}

/// `pgml.evaluate`, `pgml.confusion_matrix`, `pgml.roc_curve`.
pub struct EvaluateArgs {
    pub project: String,
    pub relation: String,
    /// A binary classifier's positives: P(positive) >= threshold.
    pub threshold: f64,
}

impl EvaluateArgs {
    pub fn from_call(call: &FnCall) -> MlResult<EvaluateArgs> {
        let threshold = number(call, "threshold", 0.5)?;
        if !(0.0..=1.0).contains(&threshold) {
            return Err(MlError::invalid(format!(
                "argument \"threshold\" must be between 0 and 1, not {threshold}"
            )));
        }
        Ok(EvaluateArgs {
            project: project_name(call)?,
            relation: required_text(call, "relation_name")?,
            threshold,
        })
    }
}

/// `pgml.import_model`.
pub struct ImportArgs {
    pub project: String,
    pub task: Task,
    pub format: String,
    /// The model's bytes: text as given, or bytea (its `\x` hex text form
    /// decoded).
    pub model: Vec<u8>,
    pub feature_names: Vec<String>,
}

impl ImportArgs {
    pub fn from_call(call: &FnCall) -> MlResult<ImportArgs> {
        let task = Task::parse(&required_text(call, "task")?)?;
        let model = required_text(call, "model")?;
        let model = match model.strip_prefix("\\x") {
            Some(hex) => decode_hex(hex).ok_or_else(|| wrong("model", "text or bytea"))?,
            None => model.into_bytes(),
        };
        Ok(ImportArgs {
            project: project_name(call)?,
            task,
            format: required_text(call, "format")?,
            model,
            feature_names: text_list(call, "feature_names")?,
        })
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    let hex = hex.as_bytes();
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.chunks(2)
        .map(|pair| {
            let digit = |c: u8| (c as char).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

/// `pgml.drift`: the project, and what to compare with (None: the
/// training relation now).
pub fn drift(call: &FnCall) -> MlResult<(String, Option<String>)> {
    Ok((project_name(call)?, text(call, "relation_name")?))
}

/// `pgml.schedule`.
pub struct ScheduleArgs {
    pub project: String,
    /// As written: Postgres reads it as an interval.
    pub every: String,
    pub relation: Option<String>,
    pub condition: Option<String>,
}

impl ScheduleArgs {
    pub fn from_call(call: &FnCall) -> MlResult<ScheduleArgs> {
        Ok(ScheduleArgs {
            project: project_name(call)?,
            every: required_text(call, "every")?,
            relation: text(call, "relation_name")?,
            condition: text(call, "condition")?,
        })
    }
}

/// `pgml.export_model`'s model id.
pub fn model_id(call: &FnCall) -> MlResult<i64> {
    let id = number(call, "model_id", f64::NAN)?;
    if id.fract() != 0.0 || !id.is_finite() {
        return Err(wrong("model_id", "a model id (bigint)"));
    }
    Ok(id as i64)
}
