//! COPY ... FROM STDIN into a sharded table: each row goes to the shard of
//! its key, streamed, and the shards commit together or not at all. While
//! it runs the session is bound to every shard (`Binding::CopySplit`) and
//! the client's CopyData messages come here one by one.

use bytes::BytesMut;
use postgres_protocol::message::frontend;

use crate::backend::server::quote_literal;
use crate::backend::ShardSet;
use crate::errors::{Error, ErrorFields, Result};
use crate::frontend::session::{Batch, Binding, Flow, Recovery, Session};
use crate::net::codec::{self, cstr};
use crate::net::messages;
use crate::net::tag::client;
use crate::router::copy::{CopyIn, RowSplitter};
use crate::router::Target;

/// Rows are sent to a shard in CopyData messages of about this size.
const BATCH: usize = 64 * 1024;

/// A COPY whose Bind came (extended protocol): it starts at the Execute.
pub struct BoundCopy {
    pub sql: String,
    pub copy: CopyIn,
    /// Whether its Parse was held back, so ParseComplete is owed too.
    pub parsed_here: bool,
}

/// A split COPY in progress.
pub struct CopySplit {
    set: ShardSet,
    splitter: RowSplitter,
    /// The position of the sharding key among the COPY's fields.
    key: usize,
    /// Rows on their way to each shard.
    batches: Vec<BytesMut>,
    /// A header row still to copy to every shard.
    header: bool,
    /// A row that could not be placed: the COPY fails when it ends.
    failure: Option<Error>,
    /// It came through the extended protocol: the client's Sync follows.
    extended: bool,
}

impl Session {
    /// Starts the split: BEGIN and COPY on every shard, then
    /// CopyInResponse to the client. `extended`: Some(whether a ParseComplete
    /// is owed) when it came as Parse/Bind: it then starts at the Execute.
    pub(in crate::frontend) async fn start_copy_split(
        &mut self,
        sql: &str,
        copy: CopyIn,
        extended: Option<bool>,
    ) -> Result<Flow> {
        if let Some(parsed_here) = extended {
            self.batch = Batch::CopyBound(Box::new(BoundCopy {
                sql: sql.to_string(),
                copy,
                parsed_here,
            }));
            return Ok(Flow::Continue);
        }
        self.open_copy_split(sql, copy, None).await
    }

    /// `start_copy_split` of an extended-protocol COPY, owning its text.
    pub(in crate::frontend) async fn start_copy_split_owned(
        &mut self,
        sql: String,
        copy: CopyIn,
        parsed_here: bool,
    ) -> Result<Flow> {
        self.start_copy_split(&sql, copy, Some(parsed_here)).await
    }

    /// A message while the COPY's Bind waits for its Execute.
    pub(in crate::frontend) async fn copy_bound_message(&mut self, kind: u8) -> Result<Flow> {
        match kind {
            client::TERMINATE => Ok(Flow::Close),
            client::EXECUTE => {
                let Batch::CopyBound(bound) = std::mem::replace(&mut self.batch, Batch::None)
                else {
                    return Ok(Flow::Continue);
                };
                let BoundCopy {
                    sql,
                    copy,
                    parsed_here,
                } = *bound;
                self.open_copy_split(&sql, copy, Some(parsed_here)).await
            }
            // Describe, Flush...: the COPY answers for itself.
            _ => Ok(Flow::Continue),
        }
    }

    async fn open_copy_split(
        &mut self,
        sql: &str,
        copy: CopyIn,
        parsed_here: Option<bool>,
    ) -> Result<Flow> {
        let extended = parsed_here.is_some();
        let mut set = match self
            .shard_set(0..self.pool.shards.len(), Target::Primary)
            .await
        {
            Ok(set) => set,
            Err(e) => return Ok(self.end_copy(Err(e), extended)),
        };
        let started = match self.key_field(&mut set, &copy).await {
            Ok(Some(key)) => begin_everywhere(&mut set, sql).await.map(|r| (key, r)),
            Ok(None) => Err(Error::NoShard(self.pool.sharding.missing_key())),
            Err(e) => Err(e),
        };
        let (key, (format, formats)) = match started {
            Ok(s) => s,
            Err(e) => {
                rollback(&mut set).await;
                return Ok(self.end_copy(Err(e), extended));
            }
        };
        let out = &mut self.client.out;
        if parsed_here == Some(true) {
            messages::parse_complete(out);
        }
        if extended {
            messages::bind_complete(out);
        }
        messages::copy_in_response(out, format, &formats);
        let shards = set.len();
        self.server.binding = Binding::CopySplit(Box::new(CopySplit {
            set,
            splitter: RowSplitter::new(&copy),
            key,
            batches: vec![BytesMut::new(); shards],
            header: copy.header,
            failure: None,
            extended,
        }));
        Ok(Flow::Continue)
    }

    /// The position of the key among the COPY's fields.
    async fn key_field(&self, set: &mut ShardSet, copy: &CopyIn) -> Result<Option<usize>> {
        let Some((_, key)) = self.pool.sharding.automatic() else {
            return Ok(None);
        };
        if !copy.columns.is_empty() {
            return Ok(copy.columns.iter().position(|c| c == key));
        }
        let sql = format!(
            "select string_agg(attname::text, ',' order by attnum) from pg_attribute \
             where attrelid = {}::regclass and attnum > 0 and not attisdropped",
            quote_literal(&copy.table)
        );
        let row = set.server(0).query_row(&sql).await?;
        let names = row
            .and_then(|r| r.into_iter().next().flatten())
            .unwrap_or_default();
        Ok(names.split(',').position(|c| c.eq_ignore_ascii_case(key)))
    }

    /// One client message during the COPY.
    pub(in crate::frontend) async fn copy_split_message(
        &mut self,
        kind: u8,
        msg: &[u8],
    ) -> Result<Flow> {
        let Binding::CopySplit(split) = &mut self.server.binding else {
            return Ok(Flow::Continue);
        };
        let body = &msg[codec::HEADER_LEN..];
        let rows = match kind {
            client::COPY_DATA => split.splitter.feed(body),
            client::COPY_DONE => split.splitter.rest().into_iter().collect(),
            client::COPY_FAIL => {
                let why = cstr(body, 0)
                    .map(|(m, _)| m.to_string())
                    .unwrap_or_default();
                let e = Error::ServerRefused {
                    addr: "client".into(),
                    fields: ErrorFields {
                        severity: "ERROR".into(),
                        code: "57014".into(),
                        message: format!("COPY from stdin failed: {why}"),
                    },
                };
                return self.finish_copy_split(Some(e)).await;
            }
            client::FLUSH | client::SYNC => return Ok(Flow::Continue),
            other => {
                let e = Error::protocol(format!(
                    "unexpected message type '{}' during COPY",
                    codec::printable(other)
                ));
                return self.finish_copy_split(Some(e)).await;
            }
        };
        for row in rows {
            split.place(&row, &self.pool.sharding);
        }
        let done = kind == client::COPY_DONE;
        for i in 0..split.batches.len() {
            if split.batches[i].len() >= BATCH || (done && !split.batches[i].is_empty()) {
                let data = std::mem::take(&mut split.batches[i]);
                let mut out = BytesMut::with_capacity(data.len() + 5);
                frontend::CopyData::new(&data[..])
                    .map_err(|e| Error::protocol(e.to_string()))?
                    .write(&mut out);
                if let Err(e) = split.set.server(i).send(&out).await {
                    return self.finish_copy_split(Some(e)).await;
                }
            }
        }
        if done {
            return self.finish_copy_split(None).await;
        }
        Ok(Flow::Continue)
    }

    /// Ends the COPY on every shard, commits them all or rolls them all
    /// back, and answers the client. `failed`: the client's CopyFail or a
    /// message the COPY cannot take.
    async fn finish_copy_split(&mut self, failed: Option<Error>) -> Result<Flow> {
        let Binding::CopySplit(split) = std::mem::replace(&mut self.server.binding, Binding::Idle)
        else {
            return Ok(Flow::Continue);
        };
        let CopySplit {
            mut set,
            failure,
            extended,
            ..
        } = *split;
        let failed = failed.or(failure);
        let mut total = 0u64;
        let mut outcome: Result<u64> = Ok(0);
        for server in set.servers() {
            let fail = failed.as_ref().map(|_| "aborted by pgmlcat");
            match server.finish_copy_in(fail).await {
                Ok(n) => total += n,
                // After CopyFail the server's error is the expected one.
                Err(e) if failed.is_none() && outcome.is_ok() => outcome = Err(e),
                Err(_) => {}
            }
        }
        let outcome = match (failed, outcome) {
            (Some(e), _) => Err(e),
            (None, Err(e)) => Err(e),
            (None, Ok(_)) => Ok(total),
        };
        let outcome = set.finish(outcome).await;
        Ok(self.end_copy(outcome, extended))
    }

    /// Answers the client for a split COPY that ended (or never started).
    fn end_copy(&mut self, outcome: Result<u64>, extended: bool) -> Flow {
        let failed = outcome.is_err();
        match outcome {
            Ok(n) => messages::command_complete(&mut self.client.out, &format!("COPY {n}")),
            Err(Error::ClientGone) => return Flow::Close,
            Err(e) => self.write_error(&e),
        }
        if extended {
            // The client's Sync gets ReadyForQuery; after an error, what it
            // sent up to that Sync is dropped, as Postgres does.
            if failed {
                self.recovery = Recovery::SkipToSync;
            }
        } else {
            messages::ready_for_query(&mut self.client.out, self.tx.status);
        }
        Flow::Continue
    }
}

impl CopySplit {
    pub fn shards(&self) -> usize {
        self.set.len()
    }

    /// Puts one row in its shard's batch (a header row in every batch).
    fn place(&mut self, row: &[u8], sharding: &crate::router::shard::Sharding) {
        if self.failure.is_some() || row.starts_with(b"\\.") {
            return;
        }
        if std::mem::take(&mut self.header) {
            for b in self.batches.iter_mut() {
                b.extend_from_slice(row);
            }
            return;
        }
        let shard = self
            .splitter
            .field(row, self.key)
            .ok_or_else(|| Error::NoShard("COPY row without a sharding key value".into()))
            .and_then(|key| sharding.shard_for(&key));
        match shard {
            Ok(s) => self.batches[s].extend_from_slice(row),
            Err(e) => self.failure = Some(e),
        }
    }
}

/// BEGIN and the COPY on every shard; each must answer CopyInResponse.
/// The first shard's formats are what the client is told. On failure the
/// COPYs already started are failed, so every shard can roll back.
async fn begin_everywhere(set: &mut ShardSet, sql: &str) -> Result<(u8, Vec<u16>)> {
    let mut first = None;
    let mut started = 0;
    let mut failure = None;
    for server in set.servers() {
        let begun = match server.execute("BEGIN").await {
            Ok(()) => server.start_copy_in(sql).await,
            Err(e) => Err(e),
        };
        match begun {
            Ok(formats) => {
                first.get_or_insert(formats);
                started += 1;
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if let Some(e) = failure {
        for server in set.servers().take(started) {
            let _ = server.finish_copy_in(Some("aborted by pgmlcat")).await;
        }
        return Err(e);
    }
    first.ok_or_else(|| Error::protocol("no shard to COPY into"))
}

/// Rolls back what a failed start left open (errors end those servers).
async fn rollback(set: &mut ShardSet) {
    for server in set.servers() {
        if !server.state.broken && server.execute("ROLLBACK").await.is_err() {
            server.state.broken = true;
        }
    }
}
