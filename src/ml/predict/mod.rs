//! `pgml.predict*` served from the proxy: the statement is rewritten so the
//! server returns each call's features (arrays in binary, rows as JSON
//! text), the proxy predicts and
//! splices the values into the rows the client gets, as if the server had
//! the function.
//!
//! `plan` analyses and rewrites the SQL, `Rewriter` turns the server's
//! answer into the client's, `eval` runs the WHERE/ORDER BY parts that
//! depend on predictions, `format` prints `real`/`real[]` like Postgres.

mod calls;
mod eval;
pub mod format;
mod json;
pub mod normalize;
mod plan;
mod rows;
mod select;

pub use plan::{plan, Plan, ServerForm};
pub use rows::Rewriter;

use crate::ml::error::MlResult;
use crate::ml::frame::RawValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Predict,
    PredictProba,
    PredictJoint,
    PredictBatch,
}

impl Func {
    /// The SQL name, also the column name Postgres gives an unaliased call.
    pub fn name(self) -> &'static str {
        match self {
            Func::Predict => "predict",
            Func::PredictProba => "predict_proba",
            Func::PredictJoint => "predict_joint",
            Func::PredictBatch => "predict_batch",
        }
    }

    /// Whether the result is `real[]` rather than `real`.
    pub fn returns_array(self) -> bool {
        matches!(self, Func::PredictProba | Func::PredictJoint)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    /// The deployed model of a project.
    Project(String),
    /// A specific model by id.
    Id(i64),
    /// `$n` (1-based) of the extended protocol: project name or model id,
    /// read from the Bind parameters by the session.
    Param(usize),
    /// A literal NULL: the call is NULL for every row (the functions are
    /// STRICT), so the predictor is never asked.
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// `ARRAY[...]`: used as-is, no preprocessing.
    Array,
    /// `(a, b)`, `ROW(a, b)`, `alias.*`: the training columns by position.
    Row,
    /// Another expression (a column, `$n`...): decided per value, an array
    /// value is Array input and a composite value Row input.
    Either,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub func: Func,
    pub model: ModelRef,
    pub input: InputKind,
}

/// Features of one row for one call.
#[derive(Debug, Clone, PartialEq)]
pub enum Features {
    Array(Vec<f64>),
    Row(Vec<RawValue>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Prediction {
    Scalar(f32),
    /// `predict_proba`/`predict_joint`: one value per class/output;
    /// `predict_batch`: one prediction per row of the flattened input.
    Vector(Vec<f32>),
}

pub trait Predictor: Send + Sync {
    /// Predictions for a batch of rows of call number `call` (an index into
    /// `Plan::calls`); one result per input, in order.
    fn predict(&self, call: usize, inputs: &[Features]) -> MlResult<Vec<Prediction>>;
}

/// Cheap pre-check before any parsing: does the text mention `pgml` and
/// `predict` at all? Case-insensitive, so quoting and case variants pass
/// and `plan` decides.
pub fn mentions_predict(sql: &str) -> bool {
    contains_ci(sql.as_bytes(), b"predict") && contains_ci(sql.as_bytes(), b"pgml")
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}
