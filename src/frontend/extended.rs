//! Client messages on their way to the server. Most go unchanged; in
//! transaction mode named statements are renamed to their shared server
//! names (`prepared`), and what the session answers itself (a Parse the
//! server already has, a Close of a shared statement) is queued in its
//! place among the server's answers (`expect`).

use std::sync::Arc;

use bytes::BytesMut;

use super::expect::{expect_for, Expect};
use super::prepared::{self, Prepared};
use super::session::Session;
use crate::config::PoolMode;
use crate::errors::Result;
use crate::net::messages;
use crate::net::tag::client;

impl Session {
    /// Queues a message for the server unchanged, noting its expected reply.
    pub(super) fn forward(&mut self, kind: u8, msg: &[u8]) {
        self.server_out().extend_from_slice(msg);
        if let Some(e) = expect_for(kind) {
            self.server.expect.push(e);
        }
    }

    /// Between transactions in transaction mode, some extended messages need
    /// no server: a Parse of a statement the pool already knows to be valid,
    /// a Close of a statement, a Flush, and a Sync with nothing outstanding.
    /// Returns true when the message was answered here.
    pub(super) fn answer_without_server(&mut self, kind: u8, msg: &[u8]) -> Result<bool> {
        // Held messages answer first, in order.
        if !self.server.binding.is_idle()
            || self.mode != PoolMode::Transaction
            || self.batch.holding()
        {
            return Ok(false);
        }
        match kind {
            client::PARSE => {
                let (name, name_end) = prepared::first_name(msg)?;
                if name.is_empty() {
                    return Ok(false);
                }
                let epoch = self.pool.plans_epoch();
                let p = self.client.statements.define(name, msg, name_end, epoch);
                if !self.server.last_pool.statement_known(&p.global) {
                    // Never parsed here: let a server check it now, so errors
                    // surface at Parse time as they would on Postgres.
                    return Ok(false);
                }
                self.answer(messages::parse_complete);
                Ok(true)
            }
            client::CLOSE => {
                let (target, name) = prepared::target(msg)?;
                if target != client::STATEMENT || name.is_empty() {
                    return Ok(false);
                }
                self.client.statements.remove(name);
                self.answer(messages::close_complete);
                Ok(true)
            }
            client::FLUSH => Ok(self.server.expect.is_empty()),
            client::SYNC if self.server.expect.is_empty() => {
                messages::ready_for_query(&mut self.client.out, self.tx.status);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// An extended-protocol message for the held server. In transaction
    /// mode named statements go by their shared server names.
    pub(super) fn extended(&mut self, kind: u8, msg: &[u8]) -> Result<()> {
        if self.mode == PoolMode::Session {
            if kind == client::PARSE {
                self.server.expect.push(Expect::Parse {
                    injected: false,
                    name: None,
                });
                self.server_out().extend_from_slice(msg);
            } else {
                self.forward(kind, msg);
            }
            return Ok(());
        }
        match kind {
            client::PARSE => self.parse(msg)?,
            client::BIND => {
                if let Some(pooled) = self.server.binding.one() {
                    pooled.server.state.simple = false;
                }
                let (stmt, at, end) = prepared::bind_statement(msg)?;
                if stmt.is_empty() {
                    self.resend_unnamed();
                }
                match self.known(stmt) {
                    Some(p) => {
                        if self.ensure_prepared(&p) {
                            self.cached_plan_changed();
                            return Ok(());
                        }
                        self.note_statement(p.query.as_bytes(), p.notes);
                        let renamed = prepared::rename_bind(msg, at, end, &p.global);
                        self.forward(kind, &renamed);
                    }
                    None => self.forward(kind, msg),
                }
            }
            client::DESCRIBE => {
                let (target, name) = prepared::target(msg)?;
                if target == client::STATEMENT && name.is_empty() {
                    self.resend_unnamed();
                }
                match (target, self.known(name)) {
                    (client::STATEMENT, Some(p)) => {
                        self.ensure_prepared(&p);
                        self.forward(kind, &prepared::describe_statement(&p.global));
                    }
                    _ => self.forward(kind, msg),
                }
            }
            client::CLOSE => {
                let (target, name) = prepared::target(msg)?;
                if target == client::STATEMENT && !name.is_empty() {
                    // Shared on the server; closing it there would pull it
                    // from under other clients. Postgres answers CloseComplete
                    // for unknown names too.
                    self.client.statements.remove(name);
                    self.answer(messages::close_complete);
                } else {
                    self.forward(kind, msg);
                }
            }
            _ => self.forward(kind, msg),
        }
        Ok(())
    }

    fn parse(&mut self, msg: &[u8]) -> Result<()> {
        let (name, name_end) = prepared::first_name(msg)?;
        if name.is_empty() {
            // Kept: a later batch may bind it on another connection, and
            // on a sharded pool its Binds may name another shard.
            self.client.statements.set_unnamed(msg, name_end);
            self.server.expect.push(Expect::Parse {
                injected: false,
                name: None,
            });
            self.server_out().extend_from_slice(msg);
            if let Ok((query, _)) = crate::net::codec::cstr_bytes(msg, name_end) {
                self.note_statement(query, super::notes::read(query));
            }
            return Ok(());
        }
        let epoch = self.pool.plans_epoch();
        let p = self.client.statements.define(name, msg, name_end, epoch);
        match self.server_copy(&p) {
            Copy::Current { shape } => {
                if shape != 0 {
                    p.learn_shape(shape);
                }
                self.answer(messages::parse_complete);
            }
            copy => {
                if copy == Copy::Older {
                    self.close_copy(&p.global);
                }
                self.parse_copy(&p, false);
            }
        }
        Ok(())
    }

    /// Parses the client's unnamed statement again, unseen, when the held
    /// server does not have it (the client's earlier batch ran elsewhere).
    fn resend_unnamed(&mut self) {
        let Some(parse) = self.client.statements.unnamed_to_resend() else {
            return;
        };
        lent(&mut self.server.out).extend_from_slice(parse);
        self.server.expect.push(Expect::Parse {
            injected: true,
            name: None,
        });
    }

    fn known(&self, name: &str) -> Option<Arc<Prepared>> {
        if name.is_empty() {
            return None;
        }
        self.client.statements.get(name).cloned()
    }

    /// What the held server has of a client's statement: a copy parsed
    /// this transaction (pending) or since the client prepared it is
    /// current; one from before a schema change the client has seen is
    /// older and gets replaced.
    fn server_copy(&mut self, p: &Prepared) -> Copy {
        if self.server.pending.contains(&p.global) {
            return Copy::Current { shape: 0 };
        }
        let copy = self
            .server
            .binding
            .one()
            .and_then(|s| s.server.state.prepared.get(&p.global).copied());
        match copy {
            None => Copy::None,
            Some(c) if c.epoch >= p.epoch => Copy::Current { shape: c.shape },
            Some(_) => Copy::Older,
        }
    }

    /// Closes the server's older copy of a statement, unseen by the client.
    fn close_copy(&mut self, global: &str) {
        if let Some(pooled) = self.server.binding.one() {
            pooled.server.state.prepared.remove(global);
        }
        self.server_out()
            .extend_from_slice(&prepared::close_statement(global));
        self.server.expect.push(Expect::HiddenClose);
    }

    /// Parses a statement on the held server under its shared name, and
    /// asks (unseen) what this copy returns.
    fn parse_copy(&mut self, p: &Prepared, injected: bool) {
        self.server.pending.insert(p.global.clone());
        self.server.expect.push(Expect::Parse {
            injected,
            name: Some(p.global.clone()),
        });
        self.server_out().extend_from_slice(&p.parse);
        self.server_out()
            .extend_from_slice(&prepared::describe_statement(&p.global));
        self.server
            .expect
            .push(Expect::HiddenDescribe(p.global.clone()));
    }

    /// Sends the statement's Parse first if this server has no current
    /// copy of it (a client that prepared it after a schema change gets a
    /// fresh one). True when the server's copy returns other columns than
    /// the client was told (a copy parsed after a schema change the client
    /// has not seen): its Bind gets the 0A000 Postgres gives, and the
    /// client prepares it again.
    fn ensure_prepared(&mut self, p: &Prepared) -> bool {
        match self.server_copy(p) {
            Copy::Current { shape } => {
                let known = p.shape();
                if known == 0 && shape != 0 {
                    p.learn_shape(shape);
                }
                return known != 0 && shape != 0 && known != shape;
            }
            Copy::Older => self.close_copy(&p.global),
            Copy::None => {}
        }
        self.parse_copy(p, true);
        false
    }

    /// Refuses a Bind of a statement whose copy returns other columns, as
    /// Postgres does (drivers recognize the error by its routine).
    fn cached_plan_changed(&mut self) {
        self.refuse_in_batch_with(messages::cached_plan_changed);
    }

    /// What goes to the server next, in a buffer lent while there is some.
    pub(super) fn server_out(&mut self) -> &mut BytesMut {
        lent(&mut self.server.out)
    }

    /// Queues an answer we give ourselves (written by `write`), in its
    /// place among the server's.
    pub(super) fn answer(&mut self, write: impl FnOnce(&mut BytesMut)) {
        let mut out = BytesMut::new();
        write(&mut out);
        self.respond_in_order(out.freeze());
    }

    /// Queues whole messages for the client behind every answer still due.
    pub(super) fn respond_in_order(&mut self, msg: bytes::Bytes) {
        self.server.expect.push(Expect::Synthetic(msg));
        let out = &mut self.client.out;
        self.server
            .expect
            .drain_synthetic(|m| out.extend_from_slice(m));
    }
}

/// What a server holds of a client's statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Copy {
    None,
    /// Parsed since the client prepared it; what it returns (0: not known).
    Current {
        shape: u64,
    },
    Older,
}

/// `buf`, with a buffer lent by the thread's pool if it has none (the
/// session's own buffers stay empty while it is idle).
fn lent(buf: &mut BytesMut) -> &mut BytesMut {
    if buf.capacity() == 0 {
        *buf = crate::net::bufpool::take();
    }
    buf
}
