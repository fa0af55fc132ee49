//! Server side of the house: connections (`server`, opened in `connect`,
//! queried by the proxy itself in `query`), per-server pools, the registry
//! of (database, user) pools built from the config, and sets of servers
//! held across shards.

pub mod auth_query;
mod connect;
pub mod freshness;
pub mod health;
pub mod held;
pub mod listen;
pub mod pool;
pub mod query;
pub mod registry;
pub mod server;
pub mod shards;

pub use pool::{Pooled, ServerPool};
pub use registry::{Pool, Registry};
pub use server::{Address, Server};
pub use shards::ShardSet;
