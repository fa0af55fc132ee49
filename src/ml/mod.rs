//! The pgml API served from the proxy: call detection and query rewrite,
//! training (data pull, preprocessing, algorithms, search, metrics), the
//! model registry in the database's `pgml` schema and the model cache.

pub mod error;
pub mod frame;
pub mod predict;
pub mod task;

pub use error::{MlError, MlResult};
pub use task::Task;
