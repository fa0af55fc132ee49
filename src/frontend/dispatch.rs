//! One client message at a time: the session's mode decides how it is
//! read (recovering after an error, collecting a batch, streaming a split
//! COPY), then what it means is decided once (`decide`) and carried out:
//! answered here, handed to the ML side, run across shards, or forwarded.

use bytes::Bytes;

use super::decide::{Local, Plan, Statement};
use super::lease::{Protocol, Route};
use super::session::{Batch, Binding, Flow, Recovery, Session};
use crate::errors::{Error, Result};
use crate::net::codec;
use crate::net::messages;
use crate::net::tag::client;
use crate::router::commands;
use crate::stats::Counters;

impl Session {
    pub(super) async fn on_client_message(&mut self, kind: u8, msg: &[u8]) -> Result<Flow> {
        match self.recovery {
            Recovery::None => {}
            Recovery::DiscardToSync => {
                match kind {
                    client::SYNC => {
                        self.recovery = Recovery::None;
                        self.forward(kind, msg);
                    }
                    client::TERMINATE => return Ok(Flow::Close),
                    _ => {}
                }
                return Ok(Flow::Continue);
            }
            Recovery::SkipToSync => {
                match kind {
                    client::SYNC => {
                        self.recovery = Recovery::None;
                        messages::ready_for_query(&mut self.client.out, self.tx.status);
                    }
                    client::TERMINATE => return Ok(Flow::Close),
                    _ => {}
                }
                return Ok(Flow::Continue);
            }
        }
        if kind == client::QUERY || kind == client::EXECUTE {
            Counters::add(&self.pool.counters.queries, 1);
        }
        if let Binding::CopySplit(_) = self.server.binding {
            return Box::pin(self.copy_split_message(kind, msg)).await;
        }
        match self.batch {
            Batch::FanOut(_) => return Box::pin(self.fanout_message(kind, msg)).await,
            Batch::CopyBound(_) => return Box::pin(self.copy_bound_message(kind)).await,
            Batch::None | Batch::Holding(_) => {}
        }
        match kind {
            client::TERMINATE => Ok(Flow::Close),
            client::QUERY => self.on_query(msg).await,
            client::FUNCTION_CALL => {
                let route = Route {
                    shard: 0,
                    target: self.target_for(None),
                    runs: true,
                };
                if self.ensure_server(route, Protocol::Simple).await? {
                    self.forward(kind, msg);
                }
                Ok(Flow::Continue)
            }
            client::PARSE
            | client::BIND
            | client::DESCRIBE
            | client::CLOSE
            | client::EXECUTE
            | client::SYNC
            | client::FLUSH => self.on_extended(kind, msg).await,
            client::COPY_DATA | client::COPY_DONE | client::COPY_FAIL => {
                // COPY data outside a server's COPY is ignored, as Postgres does.
                if let Binding::One(_) = self.server.binding {
                    self.server.out.extend_from_slice(msg);
                }
                Ok(Flow::Continue)
            }
            other => {
                let err = Error::protocol(format!(
                    "invalid frontend message type {}",
                    codec::printable(other) as u32
                ));
                tracing::warn!(client = %self.client.peer, error = %err, "closing client");
                self.flush().await?;
                self.fatal(&err).await;
                Ok(Flow::Close)
            }
        }
    }

    async fn on_query(&mut self, msg: &[u8]) -> Result<Flow> {
        let (text, _) = codec::cstr_bytes(msg, 5)?;
        // The text is read only when it may be ours (a pgcat command, a pgml
        // call) or the pool routes by content; the rest goes as it came (a
        // server reports bad encoding itself, as it would directly).
        let ours = commands::might_be(text) || crate::ml::call::mentions_pgml_bytes(text);
        let sql = if ours || self.routes_by_content() {
            std::str::from_utf8(text).ok()
        } else {
            None
        };
        if let Some(sql) = sql.filter(|_| ours) {
            if let Some(command) = commands::parse(sql) {
                self.answer_local(Local::Command(command));
                return Ok(Flow::Continue);
            }
            if crate::ml::call::mentions_pgml(sql) {
                if let Some(flow) = Box::pin(self.ml_simple(sql)).await? {
                    return Ok(flow);
                }
            }
        }
        let sql_text = sql.unwrap_or_default();
        let stmt = Statement {
            sql,
            bind: None,
            runs: true,
            protocol: Protocol::Simple,
        };
        match self.decide(&stmt)? {
            Plan::Local(local) => self.answer_local(local),
            Plan::FanOut(plan) => return Box::pin(self.fan_out(sql_text, plan)).await,
            Plan::SplitInsert(parts) => return Box::pin(self.split_insert(parts)).await,
            Plan::SplitCopy(copy) => {
                return Box::pin(self.start_copy_split(sql_text, copy, None)).await
            }
            Plan::Refuse(e) => {
                let mut refusal = bytes::BytesMut::new();
                messages::error_response(&mut refusal, &e);
                messages::ready_for_query(&mut refusal, self.tx.status);
                self.respond_in_order(refusal.freeze());
            }
            Plan::Held => self.forward(client::QUERY, msg),
            Plan::Checkout(route) => {
                if self.ensure_server(route, Protocol::Simple).await? {
                    self.forward(client::QUERY, msg);
                }
            }
        }
        Ok(Flow::Continue)
    }

    async fn on_extended(&mut self, kind: u8, msg: &[u8]) -> Result<Flow> {
        if !self.surely_not_ml(kind, msg)? && Box::pin(self.ml_extended(kind, msg)).await? {
            return Ok(Flow::Continue);
        }
        if self.answer_without_server(kind, msg)? {
            return Ok(Flow::Continue);
        }
        let sharded = self.pool.shards.len() > 1;
        if self.server.binding.is_idle() {
            let holds = matches!(kind, client::PARSE | client::DESCRIBE | client::CLOSE);
            if sharded && holds {
                // Which shard? The Bind's parameters may tell.
                let held = Bytes::copy_from_slice(msg);
                match &mut self.batch {
                    Batch::Holding(v) => v.push((kind, held)),
                    batch => *batch = Batch::Holding(vec![(kind, held)]),
                }
                return Ok(Flow::Continue);
            }
            let sql = self.statement_text(kind, msg);
            let stmt = Statement {
                sql: sql.as_deref(),
                bind: (kind == client::BIND).then_some(msg),
                runs: matches!(kind, client::BIND | client::EXECUTE),
                protocol: Protocol::Extended,
            };
            let route = match self.decide(&stmt)? {
                Plan::FanOut(_) if kind == client::BIND => {
                    let mut batch = self.batch.take_held();
                    batch.push((kind, Bytes::copy_from_slice(msg)));
                    self.batch = Batch::FanOut(batch);
                    return Ok(Flow::Continue);
                }
                Plan::SplitCopy(copy) if kind == client::BIND => {
                    let sql = sql.unwrap_or_default();
                    let parsed_here = self
                        .batch
                        .take_held()
                        .iter()
                        .any(|(t, _)| *t == client::PARSE);
                    return Box::pin(self.start_copy_split(&sql, copy, Some(parsed_here))).await;
                }
                Plan::Refuse(e) => {
                    self.batch.take_held();
                    self.refuse_in_batch(e);
                    return Ok(Flow::Continue);
                }
                Plan::FanOut(_) => {
                    self.batch.take_held();
                    let e = Error::NoShard(self.pool.sharding.missing_key());
                    self.refuse_in_batch(e);
                    return Ok(Flow::Continue);
                }
                Plan::Checkout(route) => route,
                // A COPY is split from its Bind; what only the simple
                // protocol has (a deferred BEGIN, a split INSERT) does not
                // arise here. Anything else needs no particular shard.
                Plan::SplitCopy(_) | Plan::Local(_) | Plan::SplitInsert(_) | Plan::Held => {
                    let analysis = self.analysis(stmt.sql);
                    Route {
                        shard: 0,
                        target: self.target_for(analysis.as_deref()),
                        runs: stmt.runs,
                    }
                }
            };
            if !self.ensure_server(route, Protocol::Extended).await? {
                self.batch.take_held();
                return Ok(Flow::Continue);
            }
            for (t, m) in self.batch.take_held() {
                self.extended(t, &m)?;
            }
        } else if kind == client::BIND && sharded {
            let sql = self.statement_text(kind, msg);
            let stmt = Statement {
                sql: sql.as_deref(),
                bind: Some(msg),
                runs: true,
                protocol: Protocol::Extended,
            };
            if let Plan::Refuse(e) = self.decide(&stmt)? {
                // Refuse in order; drop the rest of the batch; let the
                // client's Sync through so the server ends it cleanly.
                let mut refusal = bytes::BytesMut::new();
                messages::error_response(&mut refusal, &e);
                self.respond_in_order(refusal.freeze());
                self.recovery = Recovery::DiscardToSync;
                return Ok(Flow::Continue);
            }
        }
        self.extended(kind, msg)?;
        Ok(Flow::Continue)
    }

    /// An error raised by the session mid-batch: Postgres skips to the
    /// Sync, and so does the session (letting the Sync through when a
    /// server holds the rest of the batch).
    pub(super) fn refuse_in_batch(&mut self, e: Error) {
        let mut out = bytes::BytesMut::new();
        messages::error_response(&mut out, &e);
        self.respond_in_order(out.freeze());
        self.recovery = match self.server.binding {
            Binding::One(_) => Recovery::DiscardToSync,
            _ => Recovery::SkipToSync,
        };
    }
}
