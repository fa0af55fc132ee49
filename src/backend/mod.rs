//! Server side of the house: connections, per-server pools, and the
//! registry of (database, user) pools built from the config.

pub mod health;
pub mod pool;
pub mod registry;
pub mod server;

pub use pool::{Pooled, ServerPool};
pub use registry::{Pool, Registry};
pub use server::{Address, Server};
