//! Statements that span shards: a keyless read run on every shard and
//! merged (`fanout`, and `fanout_extended` for the extended protocol), a
//! multi-row INSERT split by key or a schema change on every shard
//! (`split`), a COPY FROM STDIN split by key (`copy_split`). Each holds its servers as a `ShardSet`, which
//! gives them back whatever path the statement takes.

pub mod copy_split;
mod fanout;
mod fanout_extended;
mod split;

use super::session::{Flow, Session};
use crate::backend::ShardSet;
use crate::errors::{Error, Result};
use crate::net::messages;
use crate::router::Target;
use crate::stats::Counters;

/// Rows are written to the client in pieces of about this size.
const CLIENT_CHUNK: usize = 64 * 1024;

impl Session {
    /// One server per listed shard for `target`, with the client's
    /// parameters applied.
    pub(super) async fn shard_set(
        &self,
        shards: impl Iterator<Item = usize>,
        target: Target,
    ) -> Result<ShardSet> {
        let params = &self.client.params;
        ShardSet::checkout(
            &self.pool,
            shards,
            target,
            params.wanted(),
            params.fingerprint(),
        )
        .await
    }

    /// Writes the error ending a multi-shard statement: a server's error as
    /// the server sent it, or one of ours.
    pub(super) fn write_error(&mut self, e: &Error) {
        match e {
            Error::ServerRefused { fields, .. } => messages::error_fields(
                &mut self.client.out,
                crate::net::tag::server::ERROR_RESPONSE,
                &fields.severity,
                &fields.code,
                &fields.message,
            ),
            e => messages::error_response(&mut self.client.out, e),
        }
    }

    /// Refuses a simple-protocol statement before any server saw it.
    pub(super) fn refuse(&mut self, e: Error) -> Result<Flow> {
        messages::error_response(&mut self.client.out, &e);
        messages::ready_for_query(&mut self.client.out, self.tx.status);
        Ok(Flow::Continue)
    }

    /// Sends what is queued for the client once it is big: rows of a large
    /// merged result do not pile up in memory.
    pub(super) async fn spill_to_client(&mut self) -> Result<()> {
        if self.client.out.len() < CLIENT_CHUNK {
            return Ok(());
        }
        Counters::add(&self.pool.counters.bytes_sent, self.client.out.len() as u64);
        self.client
            .stream
            .send_all(&self.client.out)
            .await
            .map_err(|_| Error::ClientGone)?;
        self.client.out.clear();
        Ok(())
    }
}

/// A shard's error, as the client sees it.
fn shard_error(fields: crate::errors::ErrorFields) -> Error {
    Error::ServerRefused {
        addr: "a shard".into(),
        fields,
    }
}
