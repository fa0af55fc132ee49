//! A server that ends before answering a client's first batch between
//! transactions (a restart's FATAL, sent while the connection sat idle in
//! the pool and read only now) ran none of it: the batch goes to another
//! connection, unseen by the client, which waits for one as for any
//! checkout (up to query_wait_timeout). With the pool's check of idle
//! connections, this is what makes a restart or a failover invisible to
//! clients between transactions.

use bytes::{Bytes, BytesMut};

use super::expect::Expect;
use super::prepared;
use super::session::{Binding, Flow, Session};
use crate::backend::server::Resend;
use crate::errors::{Error, Result};
use crate::net::codec;
use crate::net::tag::client;

impl Session {
    /// The held server ended before answering the batch it was sent:
    /// sends the batch again on another connection.
    pub(super) async fn resend_elsewhere(&mut self) -> Result<Flow> {
        let Binding::One(mut old) = std::mem::replace(&mut self.server.binding, Binding::Idle)
        else {
            return Ok(Flow::Continue);
        };
        let Resend::Kept(batch) = std::mem::take(&mut old.server.resend) else {
            self.server.binding = Binding::One(old);
            return Ok(Flow::Continue);
        };
        tracing::info!(client = %self.client.peer, server = %old.server.addr, "server ended before answering; sending the client's statement to another connection");
        old.server.state.broken = true;
        drop(old); // closes it
        let pool = self.server.last_pool.clone();
        let mut pooled = match self.checkout_waiting(&pool).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(client = %self.client.peer, error = %e, "no server to send the statement again");
                return Ok(self.on_server_lost().await);
            }
        };
        let params = &self.client.params;
        if let Err(e) = pooled
            .server
            .sync_parameters(params.wanted(), params.fingerprint())
            .await
        {
            tracing::warn!(error = %e, "could not bring the new server in line");
            return Ok(self.on_server_lost().await);
        }
        let missing = self.statements_missing(&batch, &pooled.server.state.prepared)?;
        self.bind(pool, pooled);
        let mut out = BytesMut::with_capacity(batch.len());
        for (global, parse) in &missing {
            out.extend_from_slice(parse);
            self.server.pending.insert(global.clone());
        }
        for (global, _) in missing.iter().rev() {
            self.server.expect.push_front(Expect::Parse {
                injected: true,
                name: Some(global.clone()),
            });
        }
        out.extend_from_slice(&batch);
        crate::net::bufpool::give(std::mem::replace(&mut self.server.out, out));
        self.flush().await
    }

    /// Whether a read error says the server closed without reading the
    /// batch it was sent: a connection reset (a socket closed with unread
    /// data resets) while the first batch is kept. A plain end of stream
    /// says nothing of what ran, so it is not resent.
    pub(super) fn unread_by_server(&self, e: &std::io::Error) -> bool {
        e.kind() == std::io::ErrorKind::ConnectionReset
            && self
                .server
                .binding
                .held()
                .is_some_and(|p| matches!(p.server.resend, Resend::Kept(_)))
    }

    /// A connection from `pool`, waiting while the server is unreachable,
    /// up to query_wait_timeout.
    async fn checkout_waiting(
        &mut self,
        pool: &std::sync::Arc<crate::backend::ServerPool>,
    ) -> Result<crate::backend::Pooled> {
        let mut until = None;
        loop {
            match pool.checkout().await {
                Err(e @ Error::ServerUnavailable { .. }) => {
                    self.wait_for_server(&mut until, e).await?
                }
                other => return other,
            }
        }
    }

    /// The statements `batch` binds or describes by their server names
    /// without parsing them, that `has` lacks: (name, its Parse).
    fn statements_missing(
        &self,
        batch: &[u8],
        has: &std::collections::HashMap<String, crate::backend::server::StatementCopy>,
    ) -> Result<Vec<(String, Bytes)>> {
        let mut parsed: Vec<String> = Vec::new();
        let mut missing: Vec<(String, Bytes)> = Vec::new();
        let mut at = 0;
        while let Some(h) = codec::header(&batch[at..], usize::MAX)? {
            let Some(msg) = batch.get(at..at + h.total) else {
                break;
            };
            at += h.total;
            let name = match h.tag {
                client::PARSE => {
                    parsed.push(prepared::first_name(msg)?.0.to_string());
                    continue;
                }
                client::BIND => prepared::bind_statement(msg)?.0,
                client::DESCRIBE => match prepared::target(msg)? {
                    (client::STATEMENT, name) => name,
                    _ => continue,
                },
                _ => continue,
            };
            let known = name.is_empty()
                || has.contains_key(name)
                || parsed.iter().any(|p| p == name)
                || missing.iter().any(|(g, _)| g == name);
            if known {
                continue;
            }
            if let Some(p) = self.client.statements.by_global(name) {
                missing.push((p.global.clone(), p.parse.clone()));
            }
        }
        Ok(missing)
    }
}
