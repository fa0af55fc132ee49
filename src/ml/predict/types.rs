//! The types the planner, the evaluator and the rewriter share: the calls
//! of a statement, the features and predictions that flow through it, and
//! the plan's `Shape` (what the rewriter must do to the server's rows).
//! Data only, plus the few methods that are about the data itself; it
//! imports nothing from its siblings, so dependencies run one way:
//! types <- calls/eval/builder/select/plan <- rows <- execution.

use std::collections::HashMap;
use std::sync::Arc;

use crate::ml::error::MlResult;
use crate::ml::frame::RawValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Predict,
    PredictProba,
    PredictJoint,
    PredictBatch,
    /// `pgml.explain`: each feature's share of the prediction (jsonb).
    Explain,
}

/// The SQL type of a function's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Real,
    RealArray,
    Jsonb,
}

impl Func {
    /// The SQL name, also the column name Postgres gives an unaliased call.
    pub fn name(self) -> &'static str {
        match self {
            Func::Predict => "predict",
            Func::PredictProba => "predict_proba",
            Func::PredictJoint => "predict_joint",
            Func::PredictBatch => "predict_batch",
            Func::Explain => "explain",
        }
    }

    pub fn output(self) -> Output {
        match self {
            Func::Predict | Func::PredictBatch => Output::Real,
            Func::PredictProba | Func::PredictJoint => Output::RealArray,
            Func::Explain => Output::Jsonb,
        }
    }

    /// Whether the value is a number the proxy can compare and sort by.
    pub fn is_number(self) -> bool {
        self.output() == Output::Real
    }
}

/// `pgml.explain`'s `top_k`: how many contributions to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopK {
    All,
    Const(usize),
    /// `$n` (1-based) of the extended protocol.
    Param(usize),
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
    /// `group => ...`: the row's group picks the model of a project trained
    /// with `group_by`; its features then arrive as `Features::Grouped`.
    pub grouped: bool,
    /// `pgml.explain` only; `All` for the others.
    pub top_k: TopK,
}

/// Features of one row for one call.
#[derive(Debug, Clone, PartialEq)]
pub enum Features {
    Array(Vec<f64>),
    Row(Vec<RawValue>),
    /// The features of a `group => ...` call with the row's group: each
    /// group value in its text form (NULL: None).
    Grouped(GroupKey, Box<Features>),
}

/// A group of a model trained with `group_by`: each group column's value
/// as Postgres prints it, so any expression of a type that prints alike
/// (an int column and an int8 expression) finds the same model.
pub type GroupKey = Vec<Option<String>>;

#[derive(Debug, Clone, PartialEq)]
pub enum Prediction {
    Scalar(f32),
    /// `predict_proba`/`predict_joint`: one value per class/output;
    /// `predict_batch`: one prediction per row of the flattened input.
    Vector(Vec<f32>),
    /// `explain`: a JSON object's text.
    Json(String),
}

pub trait Predictor: Send + Sync {
    /// Predictions for a batch of rows of call number `call` (an index into
    /// `Plan::calls`); one result per input, in order. `None`: NULL (a row
    /// of a group that has no model).
    fn predict(&self, call: usize, inputs: &[Features]) -> MlResult<Vec<Option<Prediction>>>;
}

/// Prefix of the aliases marking replacement columns. Statements that
/// already contain it are refused so a user column can never be mistaken
/// for one.
pub(super) const MARKER_PREFIX: &str = "__pgml_";

/// Parses the marker number out of a RowDescription column name.
pub(super) fn marker_number(name: &str) -> Option<usize> {
    name.strip_prefix(MARKER_PREFIX)?.parse().ok()
}

/// A replacement column of the server's answer.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Marker {
    pub call: usize,
    /// The column name the client sees; `None`: a hidden column that only
    /// feeds the proxy's WHERE/ORDER BY and is dropped from the rows.
    pub name: Option<String>,
}

/// One output column of a statement answered without the server.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ConstItem {
    pub call: usize,
    pub name: String,
    /// `None`: the features are NULL, so is the prediction.
    pub input: Option<Features>,
}

/// What the rewriter needs to know besides the calls.
#[derive(Debug, Default)]
pub(super) struct Shape {
    pub calls: Vec<Call>,
    pub markers: Vec<Marker>,
    /// Hidden columns, all at the end of the outer SELECT list.
    pub hidden: usize,
    pub filter: Option<Cond>,
    pub order: Vec<SortKey>,
    pub limit: Option<u64>,
    pub offset: u64,
    pub constant: Option<Vec<ConstItem>>,
    /// The server's column layout, learnt from the first RowDescription and
    /// kept for later executions of the same statement, which get none.
    pub layout: parking_lot::Mutex<Option<Arc<Layout>>>,
    /// The server's RowDescription of the rewritten statement (formats as
    /// first seen), so a client's Describe needs no server round trip.
    pub description: parking_lot::Mutex<Option<Vec<u8>>>,
}

/// The server's columns for the rewritten statement.
#[derive(Debug)]
pub(super) struct Layout {
    pub cols: Vec<Col>,
    /// Marker → the server column holding it (its first occurrence).
    pub marker_col: HashMap<usize, usize>,
}

/// One column of the server's answer.
#[derive(Debug, Clone, Copy)]
pub(super) enum Col {
    /// A column the client gets as the server sent it.
    Pass { client: usize },
    /// Features the client gets as a prediction.
    Pred {
        marker: usize,
        client: usize,
        input: Input,
    },
    /// Features only the proxy's WHERE/ORDER BY use.
    Hidden { marker: usize, input: Input },
}

/// How a replacement column carries its features, by the type the server
/// gave it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Input {
    /// `to_json(row)::text`.
    Json,
    /// An array of numbers or booleans (of this element type): binary
    /// once the layout is known.
    Array(u32),
    /// Anything else (an array of text...): an error if a value comes.
    Other(u32),
}

impl Layout {
    /// Result formats for the server's Bind: the client's for the columns
    /// it sees, binary for feature arrays (no float printing on the server,
    /// no parsing here), text for the rest.
    pub fn server_formats(&self, client: &[i16]) -> Vec<i16> {
        self.cols
            .iter()
            .map(|c| match c {
                Col::Pass { client: i } => client_format(client, *i),
                Col::Pred { input, .. } | Col::Hidden { input, .. } => {
                    i16::from(matches!(input, Input::Array(_)))
                }
            })
            .collect()
    }
}

/// The format code of column `col` in a Bind's list of result formats
/// (none: all text; one: all alike).
pub(super) fn client_format(formats: &[i16], col: usize) -> i16 {
    match formats {
        [] => 0,
        [one] => *one,
        many => many.get(col).copied().unwrap_or(0),
    }
}

/// A WHERE condition on predictions, evaluated by the proxy (`eval`).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Cond {
    Const(Option<bool>),
    Cmp(Operand, CmpOp, Operand),
    Between {
        value: Operand,
        low: Operand,
        high: Operand,
        negated: bool,
    },
    IsNull(Operand, bool),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Operand {
    /// The prediction in the column of marker n.
    Pred(usize),
    Num(f64),
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// One proxy-side ORDER BY key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SortKey {
    /// The marker of the column holding the prediction.
    pub marker: usize,
    pub desc: bool,
    pub nulls_first: bool,
}
