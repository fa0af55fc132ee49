//! Statements run in parts on several shards: a multi-row INSERT whose rows
//! fall on several shards, split per shard
//! (`router::shard::Sharding::split_insert`), or a schema change run on
//! every shard (`default_shard = "all"`). Each shard's part runs in a
//! transaction of its own, and they commit only if every part succeeded
//! (otherwise all roll back). Not two-phase commit: a shard failing at
//! COMMIT itself is reported.

use bytes::BytesMut;
use postgres_protocol::message::frontend;

use crate::backend::ShardSet;
use crate::errors::{Error, Result};
use crate::frontend::session::{Flow, Session};
use crate::net::messages::{self, parse_error_fields};
use crate::net::rows::{command_count, command_tag};
use crate::net::tag::server as tag;
use crate::router::Target;

impl Session {
    pub(in crate::frontend) async fn run_split(
        &mut self,
        parts: Vec<(usize, String)>,
    ) -> Result<Flow> {
        let shards = parts.iter().map(|(shard, _)| *shard);
        let mut set = match self.shard_set(shards, Target::Primary).await {
            Ok(set) => set,
            Err(e) => return self.refuse(e),
        };
        let mut out = BytesMut::new();
        let outcome = run_parts(&mut set, &parts, &mut out).await;
        // Every part was read to its end: commit all, or roll all back.
        match set.finish(outcome).await {
            Ok(done) => {
                self.client.out.extend_from_slice(&out);
                // An INSERT's count is the sum; a schema change's tag is
                // what every shard said.
                let tag = match done.tag {
                    Some(t) if !t.starts_with("INSERT") => t,
                    _ => format!("INSERT 0 {}", done.total),
                };
                messages::command_complete(&mut self.client.out, &tag);
                self.count_xact();
            }
            Err(e) => self.write_error(&e),
        }
        messages::ready_for_query(&mut self.client.out, self.tx.status);
        Ok(Flow::Continue)
    }
}

/// What the parts said: the rows counted, and the last statement's tag.
struct Done {
    total: u64,
    tag: Option<String>,
}

/// Sends each shard `BEGIN;` and its part, and reads every answer: the
/// RETURNING rows (into `out`, one RowDescription for all), the total
/// count and the tag. The first failure is the result.
async fn run_parts(
    set: &mut ShardSet,
    parts: &[(usize, String)],
    out: &mut BytesMut,
) -> Result<Done> {
    let mut failure: Option<Error> = None;
    for (i, (_, sql)) in parts.iter().enumerate() {
        let mut query = BytesMut::new();
        frontend::query(&format!("BEGIN;{sql}"), &mut query)?;
        if let Err(e) = set.server(i).send(&query).await {
            failure = failure.or(Some(e));
        }
    }
    let (mut total, mut described, mut last) = (0u64, false, None);
    for server in set.servers() {
        if server.state.broken {
            continue;
        }
        loop {
            let frame = match server.recv().await {
                Ok(f) => f,
                Err(e) => {
                    failure = failure.or(Some(e));
                    break;
                }
            };
            match frame.tag() {
                tag::ROW_DESCRIPTION if !described => {
                    described = true;
                    out.extend_from_slice(frame.bytes());
                }
                tag::DATA_ROW => out.extend_from_slice(frame.bytes()),
                tag::COMMAND_COMPLETE => {
                    let done = String::from_utf8_lossy(command_tag(frame.body())).into_owned();
                    if done.starts_with("INSERT") {
                        total += command_count(&done);
                    }
                    if done != "BEGIN" {
                        last = Some(done);
                    }
                }
                tag::ERROR_RESPONSE => {
                    failure = failure.or_else(|| {
                        Some(Error::ServerRefused {
                            addr: server.addr.to_string(),
                            fields: parse_error_fields(frame.body()),
                        })
                    });
                }
                tag::READY_FOR_QUERY => break,
                _ => {}
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(Done { total, tag: last }),
    }
}
