//! `pgml.predict*` served from the proxy: the statement is rewritten so the
//! server returns each call's features (arrays in binary, rows as JSON
//! text), the proxy predicts and splices the values into the rows the
//! client gets, as if the server had the function.
//!
//! `types` holds what the others share and imports none of them. `plan`
//! analyses and rewrites the SQL (with `calls`, `builder` and `select`),
//! `eval` runs the WHERE/ORDER BY parts that depend on predictions,
//! `Rewriter` (`rows`) turns the server's answer into the client's,
//! `format` prints `real`/`real[]` like Postgres. `execution` decides how
//! a statement runs (which messages go to which servers) and hands the
//! session what to send and the rewriter to read the answer with.

mod builder;
mod calls;
mod eval;
mod execution;
pub mod format;
mod json;
pub mod lookup;
pub mod memo;
pub mod normalize;
mod plan;
mod rows;
mod select;
mod types;

pub use execution::{
    describe, execution, param_text, typed_param_text, Describe, Description, Execution, Portal,
    PredictStatement, Protocol, Shards,
};
pub use lookup::LookupPlan;
pub use plan::{mentions_predict, plan, Plan, ServerForm};
pub use rows::Rewriter;
pub use types::{
    Call, Features, Func, GroupKey, InputKind, ModelRef, Output, Prediction, Predictor, TopK,
};

/// How a statement calling pgml.predict runs.
#[derive(Clone)]
pub enum Planned {
    /// The streaming rewrite of the SELECT list (the fast path).
    Stream(std::sync::Arc<Plan>),
    /// Memos and lookups: every other position (see `lookup`).
    Lookup(std::sync::Arc<LookupPlan>),
}
