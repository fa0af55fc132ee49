//! One client message at a time: what goes to the server, renamed or not,
//! and what the session answers itself.

use std::sync::Arc;

use bytes::Bytes;

use super::expect::Expect;
use super::prepared::{self, Prepared};
use super::session::{expect_for, Flow, Session};
use crate::config::PoolMode;
use crate::errors::{Error, Result};
use crate::net::codec;
use crate::net::messages::{self, TxStatus};
use crate::stats::Counters;

impl Session {
    pub(super) async fn on_client_message(&mut self, tag: u8, msg: Bytes) -> Result<Flow> {
        if self.discard_until_sync {
            match tag {
                b'S' => {
                    self.discard_until_sync = false;
                    self.forward(tag, &msg);
                }
                b'X' => return Ok(Flow::Close),
                _ => {}
            }
            return Ok(Flow::Continue);
        }
        if self.skip_until_sync {
            match tag {
                b'S' => {
                    self.skip_until_sync = false;
                    messages::ready_for_query(&mut self.to_client, self.status);
                }
                b'X' => return Ok(Flow::Close),
                _ => {}
            }
            return Ok(Flow::Continue);
        }
        if tag == b'Q' || tag == b'E' {
            Counters::add(&self.pool.counters.queries, 1);
        }
        if self.fanout_collecting() {
            return Box::pin(self.fanout_message(tag, msg)).await;
        }
        match tag {
            b'X' => return Ok(Flow::Close),
            b'Q' => {
                let (sql, _) = codec::cstr(&msg, 5)?;
                if self.answer_locally(sql) {
                    return Ok(Flow::Continue);
                }
                if crate::ml::call::mentions_pgml(sql) {
                    if let Some(flow) = Box::pin(self.ml_simple(sql)).await? {
                        return Ok(flow);
                    }
                }
                if self.needs_fan_out(sql) {
                    let sql = sql.to_string();
                    return Box::pin(self.fan_out(&sql)).await;
                }
                if let Some(parts) = self.insert_parts(sql) {
                    return Box::pin(self.split_insert(parts)).await;
                }
                if let Some(plan) = self.copy_in_plan(sql) {
                    let sql = sql.to_string();
                    return Box::pin(self.copy_split(&sql, plan, false)).await;
                }
                if self.server.is_some() && self.status != TxStatus::Idle {
                    if let Err(e) = self.check_same_shard(Some(sql), None) {
                        let mut refusal = bytes::BytesMut::new();
                        messages::error_response(&mut refusal, &e);
                        messages::ready_for_query(&mut refusal, self.status);
                        self.respond_in_order(refusal.freeze());
                        return Ok(Flow::Continue);
                    }
                }
                if self.ensure_server(true, Some(sql), None, true).await? {
                    self.forward(tag, &msg);
                }
            }
            b'F' => {
                if self.ensure_server(true, None, None, true).await? {
                    self.forward(tag, &msg);
                }
            }
            b'P' | b'B' | b'D' | b'C' | b'E' | b'S' | b'H' => {
                if !self.surely_not_ml(tag, &msg)? && Box::pin(self.ml_extended(tag, &msg)).await? {
                    return Ok(Flow::Continue);
                }
                if self.answer_without_server(tag, &msg)? {
                    return Ok(Flow::Continue);
                }
                if self.server.is_none() {
                    let sharded = self.pool.shards.len() > 1;
                    if sharded && matches!(tag, b'P' | b'D' | b'C') {
                        // Which shard? The Bind's parameters may tell.
                        self.held.push((tag, msg));
                        return Ok(Flow::Continue);
                    }
                    let sql = self.statement_text(tag, &msg, sharded);
                    if tag == b'B'
                        && sharded
                        && sql.as_deref().is_some_and(|s| self.needs_fan_out(s))
                    {
                        self.start_fanout_batch(msg);
                        return Ok(Flow::Continue);
                    }
                    if tag == b'B' {
                        if let Some(plan) = sql.as_deref().and_then(|s| self.copy_in_plan(s)) {
                            let sql = sql.unwrap_or_default();
                            return Box::pin(self.copy_split(&sql, plan, true)).await;
                        }
                    }
                    let bind = (tag == b'B').then_some(&msg[..]);
                    let needs_key = matches!(tag, b'B' | b'E');
                    if !self
                        .ensure_server(false, sql.as_deref(), bind, needs_key)
                        .await?
                    {
                        self.held.clear();
                        return Ok(Flow::Continue);
                    }
                    for (t, m) in std::mem::take(&mut self.held) {
                        self.extended(t, m)?;
                    }
                }
                if tag == b'B' && self.pool.shards.len() > 1 && self.status != TxStatus::Idle {
                    let sql = self.statement_text(tag, &msg, true);
                    if let Err(e) = self.check_same_shard(sql.as_deref(), Some(&msg)) {
                        // Refuse in order; drop the rest of the batch; let the
                        // client's Sync through so the server ends it cleanly.
                        let mut refusal = bytes::BytesMut::new();
                        messages::error_response(&mut refusal, &e);
                        self.respond_in_order(refusal.freeze());
                        self.discard_until_sync = true;
                        return Ok(Flow::Continue);
                    }
                }
                self.extended(tag, msg)?;
            }
            b'd' | b'c' | b'f' => {
                // COPY data outside a server's COPY is ignored, as Postgres does.
                if self.server.is_some() {
                    self.to_server.extend_from_slice(&msg);
                }
            }
            other => {
                let err = Error::protocol(format!(
                    "invalid frontend message type {}",
                    codec::printable(other) as u32
                ));
                tracing::warn!(client = %self.peer, error = %err, "closing client");
                self.flush().await?;
                self.fatal(&err).await;
                return Ok(Flow::Close);
            }
        }
        Ok(Flow::Continue)
    }

    /// The text a Parse or Bind will run (or the held Parse a Sync ends),
    /// for routing its transaction.
    fn statement_text(&self, tag: u8, msg: &[u8], sharded: bool) -> Option<String> {
        if !sharded && !self.pool.route.parses(self.route.role) {
            return None;
        }
        let parse_text = |m: &[u8]| {
            let (_, end) = prepared::first_name(m).ok()?;
            codec::cstr(m, end).ok().map(|(q, _)| q.to_string())
        };
        match tag {
            b'P' => parse_text(msg),
            b'B' => {
                let (stmt, _, _) = prepared::bind_statement(msg).ok()?;
                if stmt.is_empty() {
                    let (_, m) = self.held.iter().rev().find(|(t, _)| *t == b'P')?;
                    return parse_text(m);
                }
                self.statements.get(stmt).map(|p| p.query.clone())
            }
            _ => {
                let (_, m) = self.held.iter().rev().find(|(t, _)| *t == b'P')?;
                parse_text(m)
            }
        }
    }

    /// Between transactions in transaction mode, some extended messages need
    /// no server: a Parse of a statement the pool already knows to be valid,
    /// a Close of a statement, a Flush, and a Sync with nothing outstanding.
    /// Returns true when the message was answered here.
    fn answer_without_server(&mut self, tag: u8, msg: &[u8]) -> Result<bool> {
        // Held messages answer first, in order.
        if self.server.is_some() || self.mode != PoolMode::Transaction || !self.held.is_empty() {
            return Ok(false);
        }
        match tag {
            b'P' => {
                let (name, name_end) = prepared::first_name(msg)?;
                if name.is_empty() {
                    return Ok(false);
                }
                let p = self.statements.define(name, msg, name_end);
                if !self.server_pool.statement_known(&p.global) {
                    // Never parsed here: let a server check it now, so errors
                    // surface at Parse time as they would on Postgres.
                    return Ok(false);
                }
                self.synthetic(b'1');
                Ok(true)
            }
            b'C' => {
                let (kind, name) = prepared::target(msg)?;
                if kind != b'S' || name.is_empty() {
                    return Ok(false);
                }
                self.statements.remove(name);
                self.synthetic(b'3');
                Ok(true)
            }
            b'H' => Ok(self.expect.is_empty()),
            b'S' if self.expect.is_empty() => {
                messages::ready_for_query(&mut self.to_client, self.status);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Queues a message for the server unchanged, noting its expected reply.
    fn forward(&mut self, tag: u8, msg: &[u8]) {
        self.to_server.extend_from_slice(msg);
        if let Some(e) = expect_for(tag) {
            self.expect.push(e);
        }
    }

    /// The extended protocol. In transaction mode named statements are
    /// renamed to their shared server-side names.
    fn extended(&mut self, tag: u8, msg: Bytes) -> Result<()> {
        if self.mode == PoolMode::Session {
            if tag == b'P' {
                self.expect.push(Expect::Parse {
                    injected: false,
                    name: None,
                });
                self.to_server.extend_from_slice(&msg);
            } else {
                self.forward(tag, &msg);
            }
            return Ok(());
        }
        match tag {
            b'P' => self.parse(&msg)?,
            b'B' => {
                let (stmt, at, end) = prepared::bind_statement(&msg)?;
                match self.known(stmt) {
                    Some(p) => {
                        self.ensure_prepared(&p);
                        let renamed = prepared::rename_bind(&msg, at, end, &p.global);
                        self.forward(tag, &renamed);
                    }
                    None => self.forward(tag, &msg),
                }
            }
            b'D' => {
                let (kind, name) = prepared::target(&msg)?;
                match (kind, self.known(name)) {
                    (b'S', Some(p)) => {
                        self.ensure_prepared(&p);
                        self.forward(tag, &prepared::describe_statement(&p.global));
                    }
                    _ => self.forward(tag, &msg),
                }
            }
            b'C' => {
                let (kind, name) = prepared::target(&msg)?;
                if kind == b'S' && !name.is_empty() {
                    // Shared on the server; closing it there would pull it
                    // from under other clients. Postgres answers CloseComplete
                    // for unknown names too.
                    self.statements.remove(name);
                    self.synthetic(b'3');
                } else {
                    self.forward(tag, &msg);
                }
            }
            _ => self.forward(tag, &msg),
        }
        Ok(())
    }

    fn parse(&mut self, msg: &[u8]) -> Result<()> {
        let (name, name_end) = prepared::first_name(msg)?;
        if name.is_empty() {
            self.expect.push(Expect::Parse {
                injected: false,
                name: None,
            });
            self.to_server.extend_from_slice(msg);
            return Ok(());
        }
        let p = self.statements.define(name, msg, name_end);
        if self.server_has(&p.global) {
            self.synthetic(b'1');
        } else {
            self.pending.insert(p.global.clone());
            self.expect.push(Expect::Parse {
                injected: false,
                name: Some(p.global.clone()),
            });
            self.to_server.extend_from_slice(&p.parse);
        }
        Ok(())
    }

    fn known(&self, name: &str) -> Option<Arc<Prepared>> {
        if name.is_empty() {
            return None;
        }
        self.statements.get(name).cloned()
    }

    fn server_has(&self, global: &str) -> bool {
        self.pending.contains(global)
            || self
                .server
                .as_ref()
                .is_some_and(|p| p.server.prepared.contains(global))
    }

    /// Sends the statement's Parse first if this server does not have it.
    fn ensure_prepared(&mut self, p: &Prepared) {
        if self.server_has(&p.global) {
            return;
        }
        self.pending.insert(p.global.clone());
        self.expect.push(Expect::Parse {
            injected: true,
            name: Some(p.global.clone()),
        });
        self.to_server.extend_from_slice(&p.parse);
    }

    /// Queues an answer we give ourselves (ParseComplete '1' or
    /// CloseComplete '3'), in its place among the server's.
    fn synthetic(&mut self, tag: u8) {
        let mut msg = bytes::BytesMut::new();
        match tag {
            b'1' => messages::parse_complete(&mut msg),
            _ => messages::close_complete(&mut msg),
        }
        self.respond_in_order(msg.freeze());
    }

    /// Queues whole messages for the client behind every answer still due.
    pub(super) fn respond_in_order(&mut self, msg: bytes::Bytes) {
        self.expect.push(Expect::Synthetic(msg));
        let out = &mut self.to_client;
        self.expect.drain_synthetic(|m| out.extend_from_slice(m));
    }
}
