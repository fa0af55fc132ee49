//! COPY ... FROM STDIN into a sharded table: each row goes to the shard of
//! its key, streamed, and the shards commit together or not at all.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::session::{Flow, Session};
use crate::backend::server::quote_literal;
use crate::backend::{Pooled, ServerPool};
use crate::errors::{Error, Result};
use crate::net::codec::{self, cstr};
use crate::net::messages::{self, parse_error_fields, TxStatus};
use crate::router::copy::{self, CopyIn, RowSplitter};

/// Rows are sent to a shard in CopyData messages of about this size.
const BATCH: usize = 64 * 1024;

impl Session {
    /// A COPY FROM STDIN into the pool's sharded table, outside a transaction.
    pub(super) fn copy_in_plan(&self, sql: &str) -> Option<CopyIn> {
        if self.pool.shards.len() <= 1 || self.server.is_some() || self.status != TxStatus::Idle {
            return None;
        }
        let (table, _) = self.pool.sharding.automatic()?;
        copy::parse(sql, table)
    }

    /// `extended`: the COPY came as Parse/Bind/Execute (the Bind is
    /// consumed; the Execute is read here).
    pub(super) async fn copy_split(
        &mut self,
        sql: &str,
        plan: CopyIn,
        extended: bool,
    ) -> Result<Flow> {
        self.copy_extended = extended;
        let parsed_here = extended
            && std::mem::take(&mut self.held)
                .iter()
                .any(|(t, _)| *t == b'P');
        if extended {
            // The Execute that starts the COPY.
            loop {
                match self.next_client_message().await? {
                    None => return Ok(Flow::Close),
                    Some((b'E', _)) => break,
                    Some(_) => continue,
                }
            }
        }
        let shards = 0..self.pool.shards.len();
        let mut held = match self
            .checkout_shards(shards, crate::router::Target::Primary)
            .await
        {
            Ok(held) => held,
            Err(e) => return self.end_copy(Vec::new(), Err(e), false).await,
        };
        let index = match self.key_field(&mut held[0].1, &plan).await {
            Ok(Some(i)) => i,
            Ok(None) => {
                return self
                    .end_copy(
                        held,
                        Err(Error::NoShard(self.pool.sharding.missing_key())),
                        false,
                    )
                    .await
            }
            Err(e) => return self.end_copy(held, Err(e), false).await,
        };
        // BEGIN and COPY everywhere; each shard must answer CopyInResponse.
        let mut copy_in_response = None;
        for (_, pooled) in held.iter_mut() {
            let server = &mut pooled.server;
            let started = match server.run_internal("BEGIN").await {
                Ok(None) => Ok(()),
                Ok(Some(fields)) => Err(Error::ServerRefused {
                    addr: server.addr.to_string(),
                    fields,
                }),
                Err(e) => Err(e),
            };
            if let Err(e) = started {
                return self.end_copy(held, Err(e), true).await;
            }
            let mut q = BytesMut::new();
            frontend::query(sql, &mut q)?;
            server.stream.write_all(&q).await?;
            loop {
                let (tag, body) = server.read_message().await?;
                match tag {
                    b'G' => {
                        copy_in_response.get_or_insert(body);
                        break;
                    }
                    b'E' => {
                        let fields = parse_error_fields(&body);
                        let _ = server.read_message().await; // ReadyForQuery
                        let e = Error::ServerRefused {
                            addr: server.addr.to_string(),
                            fields,
                        };
                        return self.end_copy(held, Err(e), true).await;
                    }
                    _ => {}
                }
            }
        }
        if extended {
            if parsed_here {
                messages::parse_complete(&mut self.to_client);
            }
            self.to_client.extend_from_slice(b"2\0\0\0\x04");
        }
        if let Some(body) = copy_in_response {
            self.to_client.put_u8(b'G');
            self.to_client.put_i32(body.len() as i32 + 4);
            self.to_client.put_slice(&body);
            self.client.write_all(&self.to_client).await?;
            self.to_client.clear();
        }
        // Stream the client's rows to their shards.
        let mut splitter = RowSplitter::new(&plan);
        let mut batches: Vec<BytesMut> = vec![BytesMut::new(); held.len()];
        let mut header = plan.header;
        let mut failure: Option<Error> = None;
        let client_failed = loop {
            let Some((tag, body)) = self.next_client_message().await? else {
                // The client went away mid-COPY: abandon everything.
                return self.end_copy(held, Err(Error::ClientGone), true).await;
            };
            let mut rows = match tag {
                b'd' => splitter.feed(&body),
                b'c' => splitter.rest().into_iter().collect(),
                b'f' => {
                    break Some(
                        cstr(&body, 0)
                            .map(|(m, _)| m.to_string())
                            .unwrap_or_default(),
                    )
                }
                b'H' | b'S' => continue,
                other => {
                    let e = Error::protocol(format!(
                        "unexpected message type '{}' during COPY",
                        codec::printable(other)
                    ));
                    return self.end_copy(held, Err(e), true).await;
                }
            };
            for row in rows.drain(..) {
                if failure.is_some() || row.starts_with(b"\\.") {
                    continue;
                }
                if std::mem::take(&mut header) {
                    for b in batches.iter_mut() {
                        b.extend_from_slice(&row);
                    }
                    continue;
                }
                let shard = splitter
                    .field(&row, index)
                    .ok_or_else(|| Error::NoShard("COPY row without a sharding key value".into()))
                    .and_then(|key| self.pool.sharding.shard_for(&key));
                match shard {
                    Ok(s) => batches[s].extend_from_slice(&row),
                    Err(e) => failure = Some(e),
                }
            }
            for (i, batch) in batches.iter_mut().enumerate() {
                if batch.len() >= BATCH || (tag == b'c' && !batch.is_empty()) {
                    send_copy_data(&mut held[i].1, batch).await?;
                }
            }
            if tag == b'c' {
                break None;
            }
        };
        // Finish the COPY on every shard and gather the counts.
        let abort = client_failed.is_some() || failure.is_some();
        let mut total = 0u64;
        for (_, pooled) in held.iter_mut() {
            let mut out = BytesMut::new();
            if abort {
                frontend::copy_fail("aborted by pgmlcat", &mut out)?;
            } else {
                frontend::copy_done(&mut out);
            }
            pooled.server.stream.write_all(&out).await?;
            loop {
                let (tag, body) = pooled.server.read_message().await?;
                match tag {
                    b'C' => {
                        let done = cstr(&body, 0)
                            .map(|(t, _)| t.to_string())
                            .unwrap_or_default();
                        total += done
                            .strip_prefix("COPY ")
                            .and_then(|n| n.parse::<u64>().ok())
                            .unwrap_or(0);
                    }
                    b'E' if !abort => {
                        let fields = parse_error_fields(&body);
                        failure = failure.or(Some(Error::ServerRefused {
                            addr: pooled.server.addr.to_string(),
                            fields,
                        }));
                    }
                    b'Z' => break,
                    _ => {}
                }
            }
        }
        let outcome = match (client_failed, failure) {
            (Some(msg), _) => Err(Error::ServerRefused {
                addr: "client".into(),
                fields: crate::errors::ErrorFields {
                    severity: "ERROR".into(),
                    code: "57014".into(),
                    message: format!("COPY from stdin failed: {msg}"),
                },
            }),
            (None, Some(e)) => Err(e),
            (None, None) => Ok(total),
        };
        self.end_copy(held, outcome, true).await
    }

    /// The position of the key among the COPY's fields.
    async fn key_field(&self, pooled: &mut Pooled, plan: &CopyIn) -> Result<Option<usize>> {
        let Some((_, key)) = self.pool.sharding.automatic() else {
            return Ok(None);
        };
        if !plan.columns.is_empty() {
            return Ok(plan.columns.iter().position(|c| c == key));
        }
        let sql = format!(
            "select string_agg(attname::text, ',' order by attnum) from pg_attribute \
             where attrelid = {}::regclass and attnum > 0 and not attisdropped",
            quote_literal(&plan.table)
        );
        let row = pooled.server.query_row(&sql).await?;
        let names = row
            .and_then(|r| r.into_iter().next().flatten())
            .unwrap_or_default();
        Ok(names.split(',').position(|c| c.eq_ignore_ascii_case(key)))
    }

    /// Commits (on success) or rolls back every shard, checks them in and
    /// answers the client.
    async fn end_copy(
        &mut self,
        held: Vec<(Arc<ServerPool>, Pooled)>,
        outcome: Result<u64>,
        began: bool,
    ) -> Result<Flow> {
        let mut outcome = outcome;
        for (sp, mut pooled) in held {
            if began && !pooled.server.broken {
                let end = if outcome.is_ok() {
                    "COMMIT"
                } else {
                    "ROLLBACK"
                };
                match pooled.server.run_internal(end).await {
                    Ok(None) => {}
                    Ok(Some(fields)) if outcome.is_ok() => {
                        outcome = Err(Error::ServerRefused {
                            addr: pooled.server.addr.to_string(),
                            fields,
                        })
                    }
                    Ok(Some(_)) => {}
                    Err(e) => {
                        if outcome.is_ok() {
                            outcome = Err(e);
                        }
                    }
                }
            }
            sp.checkin(pooled);
        }
        let failed = outcome.is_err();
        match outcome {
            Ok(n) => messages::command_complete(&mut self.to_client, &format!("COPY {n}")),
            Err(Error::ClientGone) => return Ok(Flow::Close),
            Err(e) => self.write_error(&e),
        }
        if std::mem::take(&mut self.copy_extended) {
            // The client's Sync gets ReadyForQuery; after an error, what it
            // sent up to that Sync is dropped, as Postgres does.
            self.skip_until_sync = failed;
        } else {
            messages::ready_for_query(&mut self.to_client, self.status);
        }
        Ok(Flow::Continue)
    }

    /// The client's next whole message (None: it hung up).
    async fn next_client_message(&mut self) -> Result<Option<(u8, Bytes)>> {
        loop {
            if let Some(h) = codec::header(&self.cbuf, self.max_message)? {
                if self.cbuf.len() >= h.total {
                    let mut msg = self.cbuf.split_to(h.total);
                    let _ = msg.split_to(codec::HEADER_LEN);
                    return Ok(Some((h.tag, msg.freeze())));
                }
                self.cbuf.reserve(h.total - self.cbuf.len());
            }
            if self.client.read_buf(&mut self.cbuf).await? == 0 {
                return Ok(None);
            }
        }
    }
}

async fn send_copy_data(pooled: &mut Pooled, batch: &mut BytesMut) -> Result<()> {
    let mut out = BytesMut::with_capacity(batch.len() + 5);
    out.put_u8(b'd');
    out.put_i32(batch.len() as i32 + 4);
    out.put_slice(batch);
    batch.clear();
    pooled.server.stream.write_all(&out).await?;
    Ok(())
}
