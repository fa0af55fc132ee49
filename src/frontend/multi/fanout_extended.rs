//! Keyless reads through the extended protocol on a sharded pool. The
//! client's batch (its held Parse, Bind, Describe, Execute ... up to Sync)
//! is replayed on every shard as unnamed statements and portals, and the
//! answers are merged as the simple-protocol fan-out merges them. Results
//! stream through untouched when the rows need no merging; when they must
//! be sorted or re-aggregated the shards answer in text, and columns the
//! client asked for in binary are converted by Postgres itself.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use postgres_protocol::message::frontend;

use super::fanout::{merge_rows, retype_average};
use super::shard_error;
use crate::backend::server::Frame;
use crate::backend::{Server, ShardSet};
use crate::errors::{Error, Result};
use crate::frontend::prepared;
use crate::frontend::session::{Batch, Flow, Session};
use crate::net::codec::{self, read_i16, read_i32};
use crate::net::messages::{self, parse_error_fields};
use crate::net::rows::{data_row_text, parse_row_description, write_row_description, Field};
use crate::net::tag::{client, server as tag};
use crate::router::merge::{Combine, MergePlan, Row};

/// What the client gets for each of its messages, in order.
enum Step {
    ParseComplete,
    BindComplete,
    CloseComplete,
    /// ParameterDescription and RowDescription/NoData of the statement.
    DescribeStatement,
    /// RowDescription/NoData of the portal.
    DescribePortal,
    Execute,
}

/// The client's batch as the shards get it.
#[derive(Default)]
struct Replay {
    /// Messages for every shard, ending with Sync.
    out: BytesMut,
    steps: Vec<Step>,
    /// The SQL the batch executes, its parameter types and merge plan.
    sql: Option<String>,
    types: Vec<u32>,
    plan: Option<Arc<MergePlan>>,
    /// Result formats as the client bound them.
    formats: Vec<i16>,
}

impl Session {
    /// The next message of a batch being collected; runs it at Sync.
    pub(in crate::frontend) async fn fanout_message(
        &mut self,
        kind: u8,
        msg: &[u8],
    ) -> Result<Flow> {
        match kind {
            client::TERMINATE => return Ok(Flow::Close),
            client::SYNC => {}
            _ => {
                if let Batch::FanOut(batch) = &mut self.batch {
                    batch.push((kind, Bytes::copy_from_slice(msg)));
                }
                return Ok(Flow::Continue);
            }
        }
        let batch = match std::mem::replace(&mut self.batch, Batch::None) {
            Batch::FanOut(batch) => batch,
            _ => Vec::new(),
        };
        if let Err(e) = self.fan_out_extended(batch).await {
            if matches!(e, Error::ClientGone | Error::Io(_)) {
                return Err(e);
            }
            self.write_error(&e);
        }
        messages::ready_for_query(&mut self.client.out, self.tx.status);
        Ok(Flow::Continue)
    }

    async fn fan_out_extended(&mut self, batch: Vec<(u8, Bytes)>) -> Result<()> {
        let replay = self.replay_of(&batch)?;
        let analysis = self.analysis(replay.sql.as_deref());
        let target = self.target_for(analysis.as_deref());
        let mut set = self.shard_set(0..self.pool.shards.len(), target).await?;
        let result = self.replay(&mut set, &replay).await;
        if matches!(result, Err(ref e) if !matches!(e, Error::ServerRefused { .. })) {
            set.abandon();
        }
        if result.is_ok() {
            self.count_xact();
        }
        result
    }

    /// Translates the client's batch into unnamed statements and portals.
    fn replay_of(&mut self, batch: &[(u8, Bytes)]) -> Result<Replay> {
        let mut r = Replay::default();
        for (kind, msg) in batch {
            match *kind {
                client::PARSE => {
                    let (name, at) = prepared::first_name(msg)?;
                    let (text, after) = codec::cstr(msg, at)?;
                    r.types = param_types(msg, after)?;
                    if !name.is_empty() {
                        let epoch = self.pool.plans_epoch();
                        self.client.statements.define(name, msg, at, epoch);
                    }
                    r.sql = Some(text.to_string());
                    r.steps.push(Step::ParseComplete);
                }
                client::BIND => self.replay_bind(msg, &mut r)?,
                client::DESCRIBE => self.replay_describe(msg, &mut r)?,
                client::EXECUTE => {
                    let max_rows = read_i32(msg, codec::cstr(msg, 5)?.1)?;
                    if max_rows > 0 {
                        return Err(Error::Unsupported(
                            "fetching a keyless read across shards in pieces (Execute with a row limit) is not supported".into(),
                        ));
                    }
                    // The layout of the rows is needed to merge them.
                    frontend::describe(client::PORTAL, "", &mut r.out)?;
                    frontend::execute("", 0, &mut r.out)?;
                    r.steps.push(Step::Execute);
                }
                client::CLOSE => {
                    let (target, name) = prepared::target(msg)?;
                    if target == client::STATEMENT {
                        self.client.statements.remove(name);
                    }
                    r.steps.push(Step::CloseComplete);
                }
                _ => {} // Flush
            }
        }
        frontend::sync(&mut r.out);
        Ok(r)
    }

    fn replay_bind(&mut self, msg: &[u8], r: &mut Replay) -> Result<()> {
        let (stmt, _, _) = prepared::bind_statement(msg)?;
        if !stmt.is_empty() {
            let p = self.client.statements.get(stmt).ok_or_else(|| {
                Error::Unsupported(format!("prepared statement \"{stmt}\" does not exist"))
            })?;
            r.sql = Some(p.query.clone());
            let after_name = codec::cstr(&p.parse, 5)?.1;
            r.types = param_types(&p.parse, codec::cstr(&p.parse, after_name)?.1)?;
        }
        let text = r
            .sql
            .clone()
            .ok_or_else(|| Error::protocol("Bind without a statement"))?;
        let plan = self
            .analysis(Some(&text))
            .ok_or_else(|| Error::NoShard(self.pool.sharding.missing_key()))?
            .merge_plan(&self.pool.sharding)?;
        frontend::parse("", &plan.shard_sql, r.types.iter().copied(), &mut r.out)?;
        let (param_formats, params, result_formats) = prepared::bind_parts(msg)?;
        // Rows that must be decoded to merge come back as text.
        let server_formats = if plan.merges_rows() {
            Vec::new()
        } else {
            result_formats.clone()
        };
        let params = params.iter().map(|v| v.as_deref());
        prepared::bind_portal("", &param_formats, params, &server_formats, &mut r.out)?;
        r.formats = result_formats;
        r.plan = Some(plan);
        r.steps.push(Step::BindComplete);
        Ok(())
    }

    fn replay_describe(&mut self, msg: &[u8], r: &mut Replay) -> Result<()> {
        let (target, name) = prepared::target(msg)?;
        if target != client::STATEMENT {
            frontend::describe(client::PORTAL, "", &mut r.out)?;
            r.steps.push(Step::DescribePortal);
            return Ok(());
        }
        let text = match self.client.statements.get(name) {
            Some(p) if !name.is_empty() => p.query.clone(),
            _ => r
                .sql
                .clone()
                .ok_or_else(|| Error::protocol("Describe of no statement"))?,
        };
        let shard_sql = match self.analysis(Some(&text)).and_then(|a| a.merge.clone()) {
            Some(plan) => plan.map_err(Error::Unsupported)?.shard_sql.clone(),
            None => text,
        };
        frontend::parse("", &shard_sql, r.types.iter().copied(), &mut r.out)?;
        frontend::describe(client::STATEMENT, "", &mut r.out)?;
        r.steps.push(Step::DescribeStatement);
        Ok(())
    }

    /// Sends the batch to every shard and answers the client's steps.
    async fn replay(&mut self, set: &mut ShardSet, r: &Replay) -> Result<()> {
        set.broadcast(&r.out).await?;
        let mut answers = Vec::with_capacity(set.len());
        for server in set.servers() {
            let mut frames = Vec::new();
            loop {
                let frame = server.recv().await?;
                if frame.tag() == tag::READY_FOR_QUERY {
                    break;
                }
                frames.push(frame);
            }
            answers.push(frames);
        }
        // Every shard was read to its ReadyForQuery: the servers are clean.
        for frames in &answers {
            if let Some(e) = frames.iter().find(|f| f.tag() == tag::ERROR_RESPONSE) {
                return Err(shard_error(parse_error_fields(e.body())));
            }
        }
        let mut answers = Answers {
            cursors: vec![0; answers.len()],
            answers,
        };
        let plan = r.plan.as_deref();
        let mut described: Option<Vec<Field>> = None;
        for step in &r.steps {
            let out = &mut self.client.out;
            match step {
                Step::ParseComplete => messages::parse_complete(out),
                Step::CloseComplete => messages::close_complete(out),
                Step::BindComplete => {
                    answers.take_all(); // ParseComplete
                    answers.take_all(); // BindComplete
                    messages::bind_complete(out);
                }
                Step::DescribeStatement => {
                    answers.take_all(); // ParseComplete
                    if let Some(f) = answers.take_all() {
                        out.extend_from_slice(f.bytes()); // ParameterDescription
                    }
                    if let Some(f) = answers.take_all() {
                        write_description(out, f, plan, &[])?;
                    }
                }
                Step::DescribePortal => {
                    if let Some(f) = answers.take_all() {
                        write_description(out, f, plan, &r.formats)?;
                    }
                }
                Step::Execute => {
                    // Each shard: RowDescription (ours), DataRows, CommandComplete.
                    let f = answers
                        .take_all()
                        .ok_or_else(|| Error::protocol("a shard sent no description"))?;
                    if f.tag() == tag::ROW_DESCRIPTION {
                        described = Some(parse_row_description(f.body())?);
                    }
                    let rows = answers.rows();
                    let plan = plan.ok_or_else(|| Error::protocol("Execute without Bind"))?;
                    self.write_rows(set.server(0), plan, described.clone(), rows, &r.formats)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// The rows of one Execute: passed through, or merged in text and
    /// converted to the formats the client bound.
    async fn write_rows(
        &mut self,
        server: &mut Server,
        plan: &MergePlan,
        fields: Option<Vec<Field>>,
        rows: Vec<&Frame>,
        formats: &[i16],
    ) -> Result<()> {
        if !plan.merges_rows() {
            // A plain union: rows as the shards sent them, OFFSET/LIMIT here.
            let mut n = 0u64;
            let limit = plan.limit.map_or(usize::MAX, |l| l as usize);
            for f in rows.into_iter().skip(plan.offset as usize).take(limit) {
                self.client.out.extend_from_slice(f.bytes());
                n += 1;
                self.spill_to_client().await?;
            }
            messages::command_complete(&mut self.client.out, &format!("SELECT {n}"));
            return Ok(());
        }
        let fields = fields.ok_or_else(|| Error::protocol("no RowDescription to merge by"))?;
        let rows: Vec<Row> = rows.into_iter().map(text_of).collect::<Result<_>>()?;
        let (fields, rows) = merge_rows(server, plan, fields, rows).await?;
        let mut out: Vec<Vec<Option<Vec<u8>>>> = rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|v| v.as_ref().map(|s| s.as_bytes().to_vec()))
                    .collect()
            })
            .collect();
        // Binary columns: Postgres converts the merged text values.
        for (i, f) in fields.iter().enumerate() {
            if format_of(formats, i) == 1 {
                let values: Vec<Option<&str>> = rows.iter().map(|r| r[i].as_deref()).collect();
                let binary = to_binary(server, f, &values).await?;
                for (row, value) in out.iter_mut().zip(binary) {
                    row[i] = value;
                }
            }
        }
        for row in &out {
            messages::data_row(&mut self.client.out, row);
        }
        messages::command_complete(&mut self.client.out, &format!("SELECT {}", out.len()));
        Ok(())
    }
}

/// A RowDescription for the client: hidden merge columns dropped,
/// averages retyped, formats as the client bound them. NoData passes.
fn write_description(
    out: &mut BytesMut,
    frame: &Frame,
    plan: Option<&MergePlan>,
    formats: &[i16],
) -> Result<()> {
    if frame.tag() != tag::ROW_DESCRIPTION {
        out.extend_from_slice(frame.bytes());
        return Ok(());
    }
    let mut fields = parse_row_description(frame.body())?;
    if let Some(p) = plan {
        let visible = fields.len().saturating_sub(p.hidden);
        fields.truncate(visible);
        if let Some((combine, _)) = &p.combine {
            for (f, c) in fields.iter_mut().zip(combine) {
                if let Combine::Avg { .. } = c {
                    retype_average(f);
                }
            }
        }
    }
    for (i, f) in fields.iter_mut().enumerate() {
        f.format = format_of(formats, i);
    }
    write_row_description(out, &fields);
    Ok(())
}

/// A shard's DataRow as text values.
fn text_of(frame: &Frame) -> Result<Row> {
    data_row_text(frame.body())
}

fn format_of(formats: &[i16], i: usize) -> i16 {
    match formats {
        [] => 0,
        [one] => *one,
        many => many.get(i).copied().unwrap_or(0),
    }
}

/// The parameter type OIDs of a Parse, from just after its query string.
fn param_types(msg: &[u8], at: usize) -> Result<Vec<u32>> {
    let n = read_i16(msg, at)?.max(0) as usize;
    (0..n)
        .map(|i| read_i32(msg, at + 2 + 4 * i).map(|v| v as u32))
        .collect()
}

/// The binary forms of text values of a column's type, computed by
/// Postgres (`SELECT v::<type> FROM unnest($1::text[])`, binary results).
async fn to_binary(
    server: &mut Server,
    field: &Field,
    values: &[Option<&str>],
) -> Result<Vec<Option<Vec<u8>>>> {
    let type_name = server
        .query_row(&format!(
            "SELECT format_type({}, {})",
            field.type_oid, field.typmod
        ))
        .await?
        .and_then(|r| r.into_iter().next().flatten())
        .ok_or_else(|| Error::protocol("format_type returned nothing"))?;
    server.binary_values(&type_name, values).await
}

/// The answers of every shard to the batch, read in step.
struct Answers {
    answers: Vec<Vec<Frame>>,
    cursors: Vec<usize>,
}

impl Answers {
    /// The DataRows each shard sent next, shard after shard, and the
    /// message ending them (its CommandComplete) skipped.
    fn rows(&mut self) -> Vec<&Frame> {
        let mut rows = Vec::new();
        for (frames, cursor) in self.answers.iter().zip(self.cursors.iter_mut()) {
            while let Some(f) = frames.get(*cursor) {
                *cursor += 1;
                if f.tag() != tag::DATA_ROW {
                    break;
                }
                rows.push(f);
            }
        }
        rows
    }

    /// The same answer from every shard; shard 0's is kept.
    fn take_all(&mut self) -> Option<&Frame> {
        for shard in 1..self.answers.len() {
            self.cursors[shard] += 1;
        }
        let i = self.cursors[0];
        self.cursors[0] += 1;
        self.answers.first()?.get(i)
    }
}
