//! The pgml API served from the proxy: call detection and query rewrite,
//! training (data pull, preprocessing, algorithms, search, AutoML,
//! metrics), the model registry in the database's `pgml` schema and the
//! model cache; explanations (`explain`), evaluation on any relation
//! (`evaluate`, answered by `inspect`) and models trained elsewhere
//! (`import`).

pub mod algorithms;
pub mod args;
pub mod binary;
pub mod cache;
pub mod call;
pub mod catalog;
pub mod datasets;
pub mod db;
pub mod drift;
pub mod error;
pub mod evaluate;
pub mod exec;
pub mod explain;
pub mod frame;
pub mod import;
pub mod inspect;
pub mod labels;
pub mod metrics;
pub mod pgtime;
pub mod predict;
pub mod predictor;
pub mod preprocess;
pub mod pull;
pub mod schedule;
pub mod search;
pub mod service;
pub mod split;
pub mod stats;
pub mod task;
pub mod train;

pub use error::{MlError, MlResult};
pub use task::Task;
