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
use crate::router::copy::CopyIn;

/// What is left to do for a Query after its synchronous part.
enum QueryNext {
    Done,
    /// A server for this route, then the Query goes to it.
    Checkout(Route),
    /// Ours, or across shards: the boxed slow path decides again.
    Elsewhere,
}

/// What is left to do for an extended message after its synchronous part.
enum ExtendedNext {
    Done,
    /// To the server held.
    Forward,
    /// A server for this route, then the held messages and this one.
    Checkout(Route),
    /// A COPY into the sharded table, split from its Bind (its text).
    SplitCopy(CopyIn, String),
}

impl Session {
    pub(super) async fn on_client_message(&mut self, kind: u8, msg: &[u8]) -> Result<Flow> {
        if self.pool.replaced() {
            self.move_to_reloaded_pool();
        }
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
            Recovery::TimedOut => {
                let ms = self
                    .limits
                    .idle_in_transaction
                    .map_or(0, |d| d.as_millis() as u64);
                let err = crate::errors::Error::IdleTransactionTimeout(ms);
                messages::error_response(&mut self.client.out, &err);
                match kind {
                    client::TERMINATE => return Ok(Flow::Close),
                    client::QUERY | client::SYNC => {
                        self.recovery = Recovery::None;
                        messages::ready_for_query(&mut self.client.out, self.tx.status);
                    }
                    _ => self.recovery = Recovery::SkipToSync,
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
            self.count_query();
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
                    waits: true,
                    max_lag: None,
                    writes: true,
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
                Box::pin(self.close_with(err)).await
            }
        }
    }

    /// A simple Query. What needs no server is done at once; the one await
    /// of the usual case is the lease, and the rare paths (pgml, statements
    /// across shards) run boxed: this future is part of every session's.
    async fn on_query(&mut self, msg: &[u8]) -> Result<Flow> {
        match self.query_next(msg)? {
            QueryNext::Done => Ok(Flow::Continue),
            QueryNext::Checkout(route) => {
                if self.ensure_server(route, Protocol::Simple).await? {
                    self.forward_query(msg);
                }
                Ok(Flow::Continue)
            }
            QueryNext::Elsewhere => Box::pin(self.query_elsewhere(msg)).await,
        }
    }

    /// The part of a Query that needs no waiting.
    fn query_next(&mut self, msg: &[u8]) -> Result<QueryNext> {
        let (text, _) = codec::cstr_bytes(msg, 5)?;
        if let Some(e) = self.pin_refusal(text) {
            self.refuse_query(e);
            return Ok(QueryNext::Done);
        }
        // The text is read only when it may be ours (a pgcat command, a pgml
        // call) or the pool routes by content; the rest goes as it came (a
        // server reports bad encoding itself, as it would directly).
        // pgcat's SET/SHOW commands, DEALLOCATE, LISTEN/UNLISTEN by their
        // first word; pgml calls anywhere.
        let word = commands::first_word(text);
        let is = |w: &[u8]| word.eq_ignore_ascii_case(w);
        let ours = match (word.first().map_or(0, |b| b | 0x20), word.len()) {
            (b's', 3) => is(b"set"),
            (b's', 4) => is(b"show"),
            (b'd', 10) => is(b"deallocate"),
            (b'l', 6) => is(b"listen"),
            (b'u', 8) => is(b"unlisten"),
            _ => false,
        } || crate::ml::call::mentions_pgml_bytes(text)
            || self
                .pool
                .intercept
                .as_ref()
                .is_some_and(|i| i.answer(text).is_some());
        if ours {
            return Ok(QueryNext::Elsewhere);
        }
        let sql = if self.routes_by_content() {
            std::str::from_utf8(text).ok()
        } else {
            None
        };
        let stmt = Statement {
            sql,
            bind: None,
            runs: true,
            protocol: Protocol::Simple,
        };
        Ok(match self.decide(&stmt)? {
            Plan::Local(local) => {
                self.answer_local(local);
                QueryNext::Done
            }
            Plan::Refuse(e) => {
                self.refuse_query(e);
                QueryNext::Done
            }
            Plan::Held { writes } => {
                self.tx.wrote |= writes;
                self.forward_query(msg);
                QueryNext::Done
            }
            Plan::Checkout(route) => QueryNext::Checkout(route),
            Plan::FanOut(_) | Plan::Split(_) | Plan::SplitCopy(_) => QueryNext::Elsewhere,
        })
    }

    /// A Query that is ours (a pgcat command, a pgml call, a DEALLOCATE of
    /// a protocol-level statement, a LISTEN) or that spans shards.
    async fn query_elsewhere(&mut self, msg: &[u8]) -> Result<Flow> {
        let (text, _) = codec::cstr_bytes(msg, 5)?;
        let Ok(sql) = std::str::from_utf8(text) else {
            // Not ours after all: let the server say what is wrong with it.
            return self.query_routed(None, msg).await;
        };
        if let Some(command) = commands::parse(sql) {
            self.answer_local(Local::Command(command));
            return Ok(Flow::Continue);
        }
        if self.intercepted(sql.as_bytes()) {
            return Ok(Flow::Continue);
        }
        let listens_here = self.mode == crate::config::PoolMode::Transaction
            && self.tx.status != crate::net::messages::TxStatus::Failed;
        if let Some(command) = super::notify::parse(sql).filter(|_| listens_here) {
            return self.notify_command(command).await;
        }
        if let Some(target) = super::prepared::deallocate(sql) {
            if self.deallocate(target) {
                return Ok(Flow::Continue);
            }
        }
        if crate::ml::call::mentions_pgml(sql) {
            if let Some(flow) = self.ml_simple(sql).await? {
                return Ok(flow);
            }
        }
        self.query_routed(Some(sql), msg).await
    }

    /// A Query carried out as `decide` says, every plan included.
    async fn query_routed(&mut self, sql: Option<&str>, msg: &[u8]) -> Result<Flow> {
        let stmt = Statement {
            sql,
            bind: None,
            runs: true,
            protocol: Protocol::Simple,
        };
        let sql = sql.unwrap_or_default();
        match self.decide(&stmt)? {
            Plan::Local(local) => self.answer_local(local),
            Plan::FanOut(plan) => return self.fan_out(sql, plan).await,
            Plan::Split(parts) => return self.run_split(parts).await,
            Plan::SplitCopy(copy) => return self.start_copy_split(sql, copy, None).await,
            Plan::Refuse(e) => self.refuse_query(e),
            Plan::Held { writes } => {
                self.tx.wrote |= writes;
                self.forward_query(msg)
            }
            Plan::Checkout(route) => {
                if self.ensure_server(route, Protocol::Simple).await? {
                    self.forward_query(msg);
                }
            }
        }
        Ok(Flow::Continue)
    }

    /// Sends a Query to the server the client holds; one that may change
    /// session parameters, or state only that server can hold, is noted
    /// first.
    fn forward_query(&mut self, msg: &[u8]) {
        // The text between the header and its NUL (read already, not
        // scanned for its end again).
        let text = msg.get(5..msg.len().saturating_sub(1)).unwrap_or_default();
        if let Some(pooled) = self.server.binding.one() {
            pooled.server.state.simple = true;
        }
        self.client.statements.forget_unnamed();
        self.note_statement(text, super::notes::read(text));
        self.forward(client::QUERY, msg);
    }

    /// What a statement on its way to the held server may do beyond its
    /// rows is noted there, to be read back when the transaction ends.
    pub(super) fn note_statement(&mut self, text: &[u8], notes: super::notes::Notes) {
        self.note_pins(notes.pins);
        if notes.sets {
            self.note_parameters(text);
        }
    }

    /// A statement on its way to the held server may change session
    /// parameters: what it names is noted, and read back from the server
    /// when the transaction ends.
    fn note_parameters(&mut self, text: &[u8]) {
        let Some(pooled) = self.server.binding.one() else {
            return;
        };
        let changes = &mut pooled.server.state.changes;
        match super::params::named_parameters(text) {
            Some(named) => {
                changes.named.extend(named.names);
                changes.read += named.commands;
                changes.calls |= named.calls_set_config;
            }
            None => changes.unknown = true,
        }
    }

    /// Refuses a Query in its place among the answers still due.
    fn refuse_query(&mut self, e: Error) {
        let mut refusal = bytes::BytesMut::new();
        messages::error_response(&mut refusal, &e);
        messages::ready_for_query(&mut refusal, self.tx.status);
        self.respond_in_order(refusal.freeze());
    }

    /// An extended-protocol message. As for a Query, what needs no waiting
    /// is done at once, the lease is the one await of the usual case, and
    /// the rare paths (pgml, a split COPY) run boxed.
    async fn on_extended(&mut self, kind: u8, msg: &[u8]) -> Result<Flow> {
        if self.mode == crate::config::PoolMode::Transaction {
            // LISTEN/UNLISTEN are ours (see `notify`).
            let ours = match kind {
                client::PARSE => self.notify_parse(msg)?,
                _ if self.listening.is_some() => Box::pin(self.notify_extended(kind, msg)).await?,
                _ => false,
            };
            if ours {
                return Ok(Flow::Continue);
            }
        }
        if kind == client::PARSE && self.refuses_state() {
            let (_, name_end) = super::prepared::first_name(msg)?;
            let (text, _) = codec::cstr_bytes(msg, name_end)?;
            if let Some(e) = self.pin_refusal(text) {
                self.batch.take_held();
                self.refuse_in_batch(e);
                return Ok(Flow::Continue);
            }
        }
        if !self.surely_not_ml(kind, msg)? && Box::pin(self.ml_extended(kind, msg)).await? {
            return Ok(Flow::Continue);
        }
        let route = match self.extended_next(kind, msg)? {
            ExtendedNext::Done => return Ok(Flow::Continue),
            ExtendedNext::Forward => {
                self.extended(kind, msg)?;
                return Ok(Flow::Continue);
            }
            ExtendedNext::SplitCopy(copy, sql) => {
                let parsed_here = self
                    .batch
                    .take_held()
                    .iter()
                    .any(|(t, _)| *t == client::PARSE);
                return Box::pin(self.start_copy_split_owned(sql, copy, parsed_here)).await;
            }
            ExtendedNext::Checkout(route) => route,
        };
        if !self.ensure_server(route, Protocol::Extended).await? {
            self.batch.take_held();
            return Ok(Flow::Continue);
        }
        for (t, m) in self.batch.take_held() {
            self.extended(t, &m)?;
        }
        self.extended(kind, msg)?;
        Ok(Flow::Continue)
    }

    /// The part of an extended message that needs no waiting.
    fn extended_next(&mut self, kind: u8, msg: &[u8]) -> Result<ExtendedNext> {
        if self.answer_without_server(kind, msg)? {
            return Ok(ExtendedNext::Done);
        }
        let sharded = self.pool.shards.len() > 1;
        if !self.server.binding.is_idle() {
            // A Bind on the held server is decided only when it matters: a
            // key for another shard, or a write read-your-writes must see.
            if kind == client::BIND && (sharded || self.judges_held_statements()) {
                let sql = self.statement_text(kind, msg);
                let stmt = Statement {
                    sql: sql.as_deref(),
                    bind: Some(msg),
                    runs: true,
                    protocol: Protocol::Extended,
                };
                match self.decide(&stmt)? {
                    Plan::Refuse(e) => {
                        // Refuse in order; drop the rest of the batch; let
                        // the client's Sync through so the server ends it
                        // cleanly.
                        let mut refusal = bytes::BytesMut::new();
                        messages::error_response(&mut refusal, &e);
                        self.respond_in_order(refusal.freeze());
                        self.recovery = Recovery::DiscardToSync;
                        return Ok(ExtendedNext::Done);
                    }
                    Plan::Held { writes } => self.tx.wrote |= writes,
                    _ => {}
                }
            }
            return Ok(ExtendedNext::Forward);
        }
        let holds = matches!(kind, client::PARSE | client::DESCRIBE | client::CLOSE);
        if holds && (sharded || self.tx.deferred.is_some()) {
            // Which shard? The Bind's parameters may tell. Where does the
            // client's deferred transaction belong? What runs first tells
            // (a batch that only prepares is placed by its Parse).
            let held = Bytes::copy_from_slice(msg);
            match &mut self.batch {
                Batch::Holding(v) => v.push((kind, held)),
                batch => *batch = Batch::Holding(vec![(kind, held)]),
            }
            return Ok(ExtendedNext::Done);
        }
        let sql = self.statement_text(kind, msg);
        let stmt = Statement {
            sql: sql.as_deref(),
            bind: (kind == client::BIND).then_some(msg),
            runs: matches!(kind, client::BIND | client::EXECUTE),
            protocol: Protocol::Extended,
        };
        Ok(match self.decide(&stmt)? {
            Plan::FanOut(_) if kind == client::BIND => {
                let mut batch = self.batch.take_held();
                batch.push((kind, Bytes::copy_from_slice(msg)));
                self.batch = Batch::FanOut(batch);
                ExtendedNext::Done
            }
            Plan::SplitCopy(copy) if kind == client::BIND => {
                ExtendedNext::SplitCopy(copy, sql.unwrap_or_default())
            }
            Plan::Refuse(e) => {
                self.batch.take_held();
                self.refuse_in_batch(e);
                ExtendedNext::Done
            }
            Plan::FanOut(_) => {
                self.batch.take_held();
                let e = Error::NoShard(self.pool.sharding.missing_key());
                self.refuse_in_batch(e);
                ExtendedNext::Done
            }
            Plan::Checkout(route) => ExtendedNext::Checkout(route),
            // A COPY is split from its Bind; what only the simple protocol
            // has (a deferred BEGIN, a split INSERT) does not arise here.
            // Anything else needs no particular shard.
            Plan::SplitCopy(_) | Plan::Local(_) | Plan::Split(_) | Plan::Held { .. } => {
                let analysis = self.analysis(stmt.sql);
                ExtendedNext::Checkout(Route {
                    shard: 0,
                    target: self.target_for(analysis.as_deref()),
                    runs: stmt.runs,
                    waits: true,
                    max_lag: analysis.as_deref().and_then(|a| a.max_lag),
                    writes: analysis.as_deref().is_none_or(|a| a.may_write_data()),
                })
            }
        })
    }

    /// An error raised by the session mid-batch: Postgres skips to the
    /// Sync, and so does the session (letting the Sync through when a
    /// server holds the rest of the batch).
    pub(super) fn refuse_in_batch(&mut self, e: Error) {
        self.refuse_in_batch_with(|out| messages::error_response(out, &e));
    }

    /// `refuse_in_batch` with the error `write` writes.
    pub(super) fn refuse_in_batch_with(&mut self, write: impl FnOnce(&mut bytes::BytesMut)) {
        self.answer(write);
        self.recovery = match self.server.binding {
            Binding::One(_) => Recovery::DiscardToSync,
            _ => Recovery::SkipToSync,
        };
    }
}
