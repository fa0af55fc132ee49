//! Server to client: scan what the server sent, note what matters (status,
//! session state, parameters, statements), and forward the bytes, usually
//! straight from the read buffer with no copy. Large rows are passed
//! through in pieces so memory stays bounded whatever the result size.

use bytes::Buf;
use tokio::io::AsyncWriteExt;

use super::expect::Matched;
use super::session::{Flow, Session, STREAM_THRESHOLD};
use crate::backend::server::command_effect;
use crate::config::PoolMode;
use crate::errors::Result;
use crate::net::codec;
use crate::net::messages::{parse_error_fields, parse_parameter_status, TxStatus};
use crate::stats::Counters;

/// Largest message we hold whole from a server (the rest stream).
const MAX_SERVER_MESSAGE: usize = 1 << 30;

impl Session {
    pub(super) async fn on_server_data(&mut self) -> Result<Flow> {
        let Some(pooled) = self.server.as_mut() else {
            return Ok(Flow::Continue);
        };
        let server = &mut pooled.server;
        let expect = &mut self.expect;
        let params = &mut self.params;
        let pending = &mut self.pending;
        let out = &mut self.to_client;
        let server_pool = &self.server_pool;
        let deferred = self.deferred_begin.is_some();
        let mut status = None;
        // buf[..pos] is scanned; buf[copied..pos] is not yet in `out` (only
        // used once something had to be dropped or inserted).
        let mut pos = 0;
        let mut copied = 0;
        let mut edited = !out.is_empty();
        loop {
            if self.server_stream_left > 0 {
                let n = self.server_stream_left.min(server.buf.len() - pos);
                pos += n;
                self.server_stream_left -= n;
                if self.server_stream_left > 0 {
                    break;
                }
                continue;
            }
            let Some(h) = codec::header(&server.buf[pos..], MAX_SERVER_MESSAGE)? else {
                break;
            };
            let available = server.buf.len() - pos;
            if available < h.total {
                if (h.tag == b'D' || h.tag == b'd') && h.total > STREAM_THRESHOLD {
                    self.server_stream_left = h.total - available;
                    pos = server.buf.len();
                } else {
                    server.buf.reserve(h.total - available);
                }
                break;
            }
            let body = pos + codec::HEADER_LEN..pos + h.total;
            let mut hide = false;
            match h.tag {
                b'D' => {} // the common case: nothing to note
                b'Z' => {
                    let st = server
                        .buf
                        .get(body.start)
                        .and_then(|&b| TxStatus::from_byte(b));
                    server.status = st.unwrap_or(TxStatus::Failed);
                    status = Some(server.status);
                    if deferred && server.status == TxStatus::Idle {
                        // The client is in a transaction we have not started
                        // on any server yet: that is what it must be told.
                        server.buf[body.start] = TxStatus::InTransaction.as_byte();
                    }
                    expect.on_server_message(h.tag, |_| {});
                    if expect.is_empty() {
                        pending.clear();
                    }
                }
                b'C' => {
                    let effect = command_effect(&server.buf[body.clone()]);
                    server.note_command(effect);
                    expect.on_server_message(h.tag, |_| {});
                }
                b'S' => {
                    if let Some((name, value)) = parse_parameter_status(&server.buf[body.clone()]) {
                        params.reported(name, value);
                        server.params.insert(name.to_string(), value.to_string());
                    }
                }
                b'E' => {
                    let fields = parse_error_fields(&server.buf[body.clone()]);
                    if fields.severity == "FATAL" || fields.severity == "PANIC" {
                        server.broken = true;
                    }
                    expect.on_server_message(h.tag, |_| {});
                }
                t => {
                    let prepared = &mut server.prepared;
                    let matched = expect.on_server_message(t, |name| {
                        pending.remove(&name);
                        server_pool.statement_parsed(&name);
                        prepared.insert(name);
                    });
                    hide = matches!(matched, Matched::Hide);
                }
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
            out.split()
        } else {
            // Zero-copy: the response leaves the server's buffer.
            server.buf.split_to(pos)
        };
        if edited {
            server.buf.advance(pos);
        }
        // Give a finished server back before writing to the client: the
        // write wakes the client, which may preempt us, and waiting clients
        // should not wait on that.
        let over = status.is_some_and(|st| self.transaction_over(st));
        // Inside a deferred transaction the client's status stays as it is.
        if let Some(st) = status.filter(|_| !deferred) {
            if st == TxStatus::Idle {
                Counters::add(&self.pool.counters.xacts, 1);
            }
            self.status = st;
        }
        if over && self.release_if_clean() {
            return Ok(self.write_client(&response).await);
        }
        if self.write_client(&response).await == Flow::Close {
            return Ok(Flow::Close);
        }
        if over {
            self.release().await;
        }
        Ok(Flow::Continue)
    }

    async fn write_client(&mut self, bytes: &[u8]) -> Flow {
        if bytes.is_empty() {
            return Flow::Continue;
        }
        Counters::add(&self.pool.counters.bytes_sent, bytes.len() as u64);
        // A client that stops reading while holding a server may keep it no
        // longer than idle_client_in_transaction_timeout.
        let write = self.client.write_all(bytes);
        let written = match (self.idle_tx_timeout, self.server.is_some()) {
            (Some(limit), true) => match tokio::time::timeout(limit, write).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::info!(client = %self.peer, pool = %self.server_pool.name, "closing client that stopped reading results");
                    return Flow::Close;
                }
            },
            _ => write.await,
        };
        match written {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Close,
        }
    }

    /// In transaction mode the server goes back once nothing is outstanding
    /// and the transaction has ended.
    pub(super) fn transaction_over(&self, server_status: TxStatus) -> bool {
        self.mode == PoolMode::Transaction
            && server_status == TxStatus::Idle
            && self.expect.is_empty()
            && self.server_stream_left == 0
            && self.client_stream_left == 0
            && self
                .server
                .as_ref()
                .is_some_and(|p| p.server.buf.is_empty())
    }
}
