//! Servers of several shards held at once, for one statement that spans
//! shards (a keyless read run everywhere, an INSERT or COPY split by key).
//! They are taken in shard order, so two such statements cannot deadlock
//! each other on full pools, and each goes back to its pool when the set
//! is dropped, whatever path the statement took.

use std::sync::Arc;

use super::pool::{Pooled, ServerPool};
use super::registry::Pool;
use super::server::Server;
use crate::errors::Result;
use crate::router::Target;

pub struct ShardSet {
    held: Vec<(Arc<ServerPool>, Pooled)>,
}

impl ShardSet {
    /// One server for each of `shards` (ascending), for `target`, with the
    /// client's parameters (`wanted`, fingerprinted as `fingerprint`)
    /// applied. On failure every server taken so far goes back.
    pub async fn checkout(
        pool: &Pool,
        shards: impl Iterator<Item = usize>,
        target: Target,
        wanted: &[(String, String)],
        fingerprint: u64,
    ) -> Result<ShardSet> {
        let mut set = ShardSet { held: Vec::new() };
        for shard in shards {
            let server_pool = pool.choose(shard, target).clone();
            let mut pooled = server_pool.checkout().await?;
            let synced = pooled.server.sync_parameters(wanted, fingerprint).await;
            // Held before checking the sync, so a failure gives it back too.
            set.held.push((server_pool, pooled));
            synced?;
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The i-th server of the set (in the order the shards were listed).
    pub fn server(&mut self, i: usize) -> &mut Server {
        &mut self.held[i].1.server
    }

    pub fn servers(&mut self) -> impl Iterator<Item = &mut Server> {
        self.held.iter_mut().map(|(_, p)| &mut *p.server)
    }

    /// The statement stopped halfway (answers may still be on their way):
    /// none of these servers is reused.
    pub fn abandon(&mut self) {
        for server in self.servers() {
            server.state.broken = true;
        }
    }

    /// Ends the transaction a split statement opened on every shard: all
    /// commit if `outcome` is a success, else all roll back. The first
    /// failure to commit turns the outcome into that error.
    pub async fn finish<T>(mut self, outcome: Result<T>) -> Result<T> {
        let end = if outcome.is_ok() {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        let mut outcome = outcome;
        for server in self.servers() {
            if server.state.broken {
                continue;
            }
            if let Err(e) = server.execute(end).await {
                if outcome.is_ok() {
                    outcome = Err(e);
                }
            }
        }
        outcome
    }

    /// Writes the same bytes to every server; the first failure is returned
    /// (that server is marked broken and will not be reused).
    pub async fn broadcast(&mut self, out: &[u8]) -> Result<()> {
        for server in self.servers() {
            server.send(out).await?;
        }
        Ok(())
    }
}

impl Drop for ShardSet {
    fn drop(&mut self) {
        for (server_pool, pooled) in self.held.drain(..) {
            server_pool.checkin(pooled);
        }
    }
}
