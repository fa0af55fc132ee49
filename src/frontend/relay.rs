//! Server to client: scan what the server sent, let the connection observe
//! what matters (status, parameters, session state, a fatal error), settle
//! what the session owes (prepared statements it sent unseen, answers it
//! gave itself), and forward the bytes, usually straight from the read
//! buffer with no copy. Large rows are passed through in pieces so memory
//! stays bounded whatever the result size.

use bytes::Buf;

use super::expect::{Learnt, Matched};
use super::session::{Binding, Flow, Session, STREAM_THRESHOLD};
use crate::backend::server::{Observed, Resend, Server, StatementCopy};
use crate::errors::Result;
use crate::net::codec;
use crate::net::messages::TxStatus;
use crate::net::tag::server as tag;

/// Largest message the relay holds whole from a server (the rest stream).
const MAX_SERVER_MESSAGE: usize = 1 << 30;

impl Session {
    pub(super) async fn on_server_data(&mut self) -> Result<Flow> {
        let between_transactions = self.tx.status == TxStatus::Idle;
        let Binding::One(pooled) = &mut self.server.binding else {
            return Ok(Flow::Continue);
        };
        if !matches!(pooled.server.resend, Resend::Off) {
            match first_answer(&pooled.server) {
                FirstAnswer::Incomplete => return Ok(Flow::Continue),
                FirstAnswer::Ended => return Box::pin(self.resend_elsewhere()).await,
                FirstAnswer::Answered => {
                    if let Resend::Kept(mut kept) = std::mem::take(&mut pooled.server.resend) {
                        // The buffer serves the next batch, as if never moved.
                        if self.server.out.capacity() == 0 {
                            kept.clear();
                            self.server.out = kept;
                        } else {
                            crate::net::bufpool::give(kept);
                        }
                    }
                }
            }
        }
        let Binding::One(pooled) = &mut self.server.binding else {
            return Ok(Flow::Continue);
        };
        let server = &mut pooled.server;
        let expect = &mut self.server.expect;
        let params = &mut self.client.params;
        let statements = &self.client.statements;
        let pending = &mut self.server.pending;
        let out = &mut self.client.out;
        let server_pool = &self.server.last_pool;
        let epoch = self.pool.plans_epoch();
        let deferred = self.tx.deferred.is_some();
        let mut status = None;
        // buf[..pos] is scanned; buf[copied..pos] is not yet in `out` (only
        // used once something had to be dropped or inserted).
        let mut pos = 0;
        let mut copied = 0;
        let mut edited = !out.is_empty();
        loop {
            if self.server.stream_left > 0 {
                let n = self.server.stream_left.min(server.buf.len() - pos);
                pos += n;
                self.server.stream_left -= n;
                if self.server.stream_left > 0 {
                    break;
                }
                continue;
            }
            let Some(h) = codec::header(&server.buf[pos..], MAX_SERVER_MESSAGE)? else {
                break;
            };
            let available = server.buf.len() - pos;
            if available < h.total {
                let row = h.tag == tag::DATA_ROW || h.tag == tag::COPY_DATA;
                if row && h.total > STREAM_THRESHOLD {
                    self.server.stream_left = h.total - available;
                    pos = server.buf.len();
                } else {
                    server.buf.reserve(h.total - available);
                }
                break;
            }
            let mut hide = false;
            // DataRow, the common case, changes nothing.
            if h.tag != tag::DATA_ROW {
                let body = pos + codec::HEADER_LEN..pos + h.total;
                match server.state.observe(h.tag, &server.buf[body.clone()]) {
                    Observed::Ready(st) => {
                        status = Some(st);
                        if deferred && st == TxStatus::Idle {
                            // The client is in a transaction we have not
                            // started on any server yet: that is what it
                            // must be told.
                            server.buf[body.start] = TxStatus::InTransaction.as_byte();
                        }
                    }
                    Observed::Parameter(name, value) => params.reported(name, value),
                    Observed::Nothing => {}
                }
                if h.tag == tag::ERROR_RESPONSE
                    && expect.is_empty()
                    && server.state.broken
                    // Nothing kept there either (`pinned`).
                    && between_transactions
                    && !server.state.held.any()
                {
                    // A FATAL (a shutdown) on a server the client owes
                    // nothing on and keeps nothing on: the client goes on
                    // with another server and was never asked, so it is
                    // not told. One in a transaction there, or pinned to
                    // it, lost its session: it gets the server's FATAL, as
                    // directly, and is closed (`on_server_lost`).
                    server.state.fatal = false;
                    out.extend_from_slice(&server.buf[copied..pos]);
                    copied = pos + h.total;
                    edited = true;
                    pos += h.total;
                    continue;
                }
                let prepared = &mut server.state.prepared;
                let message = &server.buf[body];
                let matched = expect.on_server_message(h.tag, message, |learnt| match learnt {
                    Learnt::Parsed(name) => {
                        pending.remove(&name);
                        server_pool.statement_parsed(&name);
                        prepared.insert(name, StatementCopy::new(epoch));
                    }
                    Learnt::Shape(name, shape) => {
                        if let Some(copy) = prepared.get_mut(&name) {
                            copy.shape = shape;
                        }
                        // A client that prepared it now was told this.
                        if let Some(p) = statements.by_global(&name).filter(|p| p.epoch == epoch) {
                            p.learn_shape(shape);
                        }
                    }
                });
                if h.tag == tag::READY_FOR_QUERY && expect.is_empty() {
                    pending.clear();
                }
                hide = matches!(matched, Matched::Hide);
            }
            if hide {
                out.extend_from_slice(&server.buf[copied..pos]);
                copied = pos + h.total;
                edited = true;
            }
            pos += h.total;
            let mut inserted = false;
            expect.drain_synthetic(|t| {
                if !inserted {
                    out.extend_from_slice(&server.buf[copied..pos]);
                    copied = pos;
                    inserted = true;
                }
                out.extend_from_slice(t);
            });
            edited |= inserted;
        }
        let response = if edited {
            out.extend_from_slice(&server.buf[copied..pos]);
            server.buf.advance(pos);
            out.split()
        } else {
            // Zero-copy: the response leaves the server's buffer.
            server.buf.split_to(pos)
        };
        // Give a finished server back before writing to the client: the
        // write wakes the client, which may preempt us, and waiting clients
        // should not wait on that.
        if status.is_some() && server.state.plans_stale {
            // DDL ran, or a cached plan went stale: statements prepared from
            // now on are newer than every server copy.
            server.state.plans_stale = false;
            self.pool.plans_went_stale();
        }
        let ended = match status {
            Some(TxStatus::Idle) => Some(server.state.ended.take().unwrap_or(true)),
            _ => None,
        };
        if let Some(committed) = ended.filter(|_| self.notify_pending()) {
            Box::pin(self.settle_notify(committed)).await;
        }
        let over = status.is_some_and(|st| self.transaction_over(st));
        // Inside a deferred transaction the client's status stays as it is.
        if let Some(st) = status.filter(|_| !deferred) {
            if st == TxStatus::Idle {
                self.count_xact();
            }
            self.tx.status = st;
        }
        if over && self.release_if_clean() {
            let flow = self.write_client(&response).await;
            self.return_buffers_if_idle();
            return Ok(flow);
        }
        if self.write_client(&response).await == Flow::Close {
            return Ok(Flow::Close);
        }
        if over {
            self.release().await;
            self.return_buffers_if_idle();
        } else if self.server_went_away_unasked() {
            // Dropped, not given back: the connection closes.
            if let Binding::One(pooled) = std::mem::replace(&mut self.server.binding, Binding::Idle)
            {
                self.returned();
                drop(pooled);
            }
        }
        Ok(Flow::Continue)
    }

    /// The held server said it is ending (FATAL) while the client, between
    /// transactions and not pinned, owed it nothing.
    fn server_went_away_unasked(&self) -> bool {
        self.server.expect.is_empty()
            && self.tx.status == TxStatus::Idle
            && !self.pinned()
            && self
                .server
                .binding
                .held()
                .is_some_and(|p| p.server.state.broken)
    }
}

/// What a connection fresh from the pool said first.
enum FirstAnswer {
    /// Not a whole message yet.
    Incomplete,
    /// It ended the connection before answering (FATAL, class 57: a
    /// shutdown or restart): nothing of the batch ran.
    Ended,
    Answered,
}

/// A FATAL, or the WARNING an immediate shutdown sends instead (Postgres
/// 14+), with SQLSTATE 57P01-57P03 (admin shutdown, crash shutdown, cannot
/// connect now), as the very first message: the server is going away.
fn first_answer(server: &Server) -> FirstAnswer {
    let Ok(Some(h)) = codec::header(&server.buf, MAX_SERVER_MESSAGE) else {
        return FirstAnswer::Incomplete;
    };
    if h.tag != tag::ERROR_RESPONSE && h.tag != tag::NOTICE_RESPONSE {
        return FirstAnswer::Answered;
    }
    let Some(body) = server.buf.get(codec::HEADER_LEN..h.total) else {
        return FirstAnswer::Incomplete;
    };
    let fields = crate::net::messages::parse_error_fields(body);
    let shutdown = matches!(fields.code.as_str(), "57P01" | "57P02" | "57P03");
    let ends = match h.tag {
        tag::ERROR_RESPONSE => fields.severity == "FATAL",
        _ => fields.severity == "WARNING",
    };
    if shutdown && ends {
        FirstAnswer::Ended
    } else {
        FirstAnswer::Answered
    }
}
