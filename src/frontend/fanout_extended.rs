//! Keyless reads through the extended protocol on a sharded pool. The
//! client's batch (its held Parse, Bind, Describe, Execute ... up to Sync)
//! is replayed on every shard as unnamed statements and portals, and the
//! answers are merged as the simple-protocol fan-out merges them. Results
//! stream through untouched when the rows need no merging; when they must
//! be sorted or re-aggregated the shards answer in text, and columns the
//! client asked for in binary are converted by Postgres itself.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use postgres_protocol::message::frontend;
use tokio::io::AsyncWriteExt;

use super::fanout::{merge_rows, parse_fields, write_fields, Field};
use super::prepared;
use super::session::{Flow, Session};
use crate::backend::server::parse_data_row;
use crate::backend::{Pooled, ServerPool};
use crate::errors::{Error, ErrorFields, Result};
use crate::net::codec::{self, read_i16, read_i32};
use crate::net::messages::{self, parse_error_fields};
use crate::router::merge::{self, Plan, Row};

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

/// One Bind of the batch, as the shards get it.
struct Bound {
    formats: Vec<i16>,
}

impl Session {
    /// Messages of a batch being collected for a fan-out, if one is.
    pub(super) fn fanout_collecting(&self) -> bool {
        self.fanout_batch.is_some()
    }

    /// Starts collecting at a Bind whose statement is a keyless read.
    pub(super) fn start_fanout_batch(&mut self, bind: Bytes) {
        let mut batch = std::mem::take(&mut self.held);
        batch.push((b'B', bind));
        self.fanout_batch = Some(batch);
    }

    /// The next message of a batch being collected; runs it at Sync.
    pub(super) async fn fanout_message(&mut self, tag: u8, msg: Bytes) -> Result<Flow> {
        match tag {
            b'X' => return Ok(Flow::Close),
            b'S' => {}
            _ => {
                if let Some(batch) = self.fanout_batch.as_mut() {
                    batch.push((tag, msg));
                }
                return Ok(Flow::Continue);
            }
        }
        let batch = self.fanout_batch.take().unwrap_or_default();
        if let Err(e) = self.fan_out_extended(batch).await {
            if matches!(e, Error::ClientGone | Error::Io(_)) {
                return Err(e);
            }
            self.write_error(&e);
        }
        messages::ready_for_query(&mut self.to_client, self.status);
        Ok(Flow::Continue)
    }

    async fn fan_out_extended(&mut self, batch: Vec<(u8, Bytes)>) -> Result<()> {
        // The SQL of the statement the batch executes, and how it merges.
        let mut sql: Option<String> = None;
        let mut types: Vec<u32> = Vec::new();
        let mut out = BytesMut::new();
        let mut steps = Vec::new();
        let mut bound: Option<Bound> = None;
        let mut plan: Option<Plan> = None;
        for (tag, msg) in &batch {
            match tag {
                b'P' => {
                    let (name, at) = prepared::first_name(msg)?;
                    let (text, after) = codec::cstr(msg, at)?;
                    types = param_types(msg, after)?;
                    if !name.is_empty() {
                        self.statements.define(name, msg, at);
                    }
                    sql = Some(text.to_string());
                    steps.push(Step::ParseComplete);
                }
                b'B' => {
                    let (stmt, _, _) = prepared::bind_statement(msg)?;
                    if !stmt.is_empty() {
                        let p = self.statements.get(stmt).ok_or_else(|| {
                            Error::Unsupported(format!(
                                "prepared statement \"{stmt}\" does not exist"
                            ))
                        })?;
                        sql = Some(p.query.clone());
                        types = param_types(
                            &p.parse,
                            codec::cstr(&p.parse, codec::cstr(&p.parse, 5)?.1)?.1,
                        )?;
                    }
                    let text = sql
                        .clone()
                        .ok_or_else(|| Error::protocol("Bind without a statement"))?;
                    let p = merge::plan(&text)?
                        .ok_or_else(|| Error::NoShard(self.pool.sharding.missing_key()))?;
                    frontend::parse("", &p.shard_sql, types.iter().copied(), &mut out)?;
                    let (param_formats, params, result_formats) = prepared::bind_parts(msg)?;
                    // Rows that must be decoded to merge come back as text.
                    let merging = !p.order.is_empty() || p.combine.is_some();
                    let server_formats = if merging {
                        Vec::new()
                    } else {
                        result_formats.clone()
                    };
                    let params = params.iter().map(|v| v.as_deref());
                    prepared::bind_portal("", &param_formats, params, &server_formats, &mut out)?;
                    bound = Some(Bound {
                        formats: result_formats,
                    });
                    plan = Some(p);
                    steps.push(Step::BindComplete);
                }
                b'D' => {
                    let (kind, name) = prepared::target(msg)?;
                    if kind == b'S' {
                        let text = match self.statements.get(name) {
                            Some(p) if !name.is_empty() => p.query.clone(),
                            _ => sql
                                .clone()
                                .ok_or_else(|| Error::protocol("Describe of no statement"))?,
                        };
                        let shard_sql = merge::plan(&text)?.map(|p| p.shard_sql).unwrap_or(text);
                        frontend::parse("", &shard_sql, types.iter().copied(), &mut out)?;
                        frontend::describe(b'S', "", &mut out)?;
                        steps.push(Step::DescribeStatement);
                    } else {
                        frontend::describe(b'P', "", &mut out)?;
                        steps.push(Step::DescribePortal);
                    }
                }
                b'E' => {
                    let max_rows = read_i32(msg, codec::cstr(msg, 5)?.1)?;
                    if max_rows > 0 {
                        return Err(Error::Unsupported(
                            "fetching a keyless read across shards in pieces (Execute with a row limit) is not supported".into(),
                        ));
                    }
                    // The layout of the rows is needed to merge them.
                    frontend::describe(b'P', "", &mut out)?;
                    frontend::execute("", 0, &mut out)?;
                    steps.push(Step::Execute);
                }
                b'C' => {
                    let (kind, name) = prepared::target(msg)?;
                    if kind == b'S' {
                        self.statements.remove(name);
                    }
                    steps.push(Step::CloseComplete);
                }
                _ => {} // Flush
            }
        }
        frontend::sync(&mut out);
        let target = self.target_for(sql.as_deref());
        let mut held = self
            .checkout_shards(0..self.pool.shards.len(), target)
            .await?;
        let result = self
            .replay(&mut held, &out, &steps, plan.as_ref(), bound.as_ref())
            .await;
        for (sp, pooled) in held {
            sp.checkin(pooled);
        }
        if result.is_ok() {
            crate::stats::Counters::add(&self.pool.counters.xacts, 1);
        }
        result
    }

    /// Sends the batch to every shard and answers the client's steps.
    async fn replay(
        &mut self,
        held: &mut [(Arc<ServerPool>, Pooled)],
        batch: &[u8],
        steps: &[Step],
        plan: Option<&Plan>,
        bound: Option<&Bound>,
    ) -> Result<()> {
        let mut answers: Vec<Vec<(u8, Bytes)>> = Vec::with_capacity(held.len());
        for (_, pooled) in held.iter_mut() {
            if let Err(e) = pooled.server.stream.write_all(batch).await {
                pooled.server.broken = true;
                return Err(Error::ServerLost(e.to_string()));
            }
        }
        for (_, pooled) in held.iter_mut() {
            let mut messages = Vec::new();
            loop {
                let (tag, body) = pooled.server.read_message().await?;
                if tag == b'Z' {
                    break;
                }
                messages.push((tag, body));
            }
            if let Some((_, body)) = messages.iter().find(|(t, _)| *t == b'E') {
                return Err(shard_error(parse_error_fields(body)));
            }
            answers.push(messages);
        }
        let mut answers = Answers {
            cursors: vec![0; answers.len()],
            answers,
        };
        let mut described: Option<Vec<Field>> = None;
        for step in steps {
            match step {
                Step::ParseComplete => messages::parse_complete(&mut self.to_client),
                Step::CloseComplete => messages::close_complete(&mut self.to_client),
                Step::BindComplete => {
                    answers.take_all(); // ParseComplete
                    answers.take_all(); // BindComplete
                    self.to_client.put_u8(b'2');
                    self.to_client.put_i32(4);
                }
                Step::DescribeStatement => {
                    answers.take_all(); // ParseComplete
                    if let Some((t, body)) = answers.take_all() {
                        put(&mut self.to_client, t, &body); // ParameterDescription
                    }
                    if let Some((t, body)) = answers.take_all() {
                        self.write_description(t, &body, plan, &[])?;
                    }
                }
                Step::DescribePortal => {
                    if let Some((t, body)) = answers.take_all() {
                        let formats = bound.map(|b| b.formats.as_slice()).unwrap_or(&[]);
                        self.write_description(t, &body, plan, formats)?;
                    }
                }
                Step::Execute => {
                    // Each shard: RowDescription (ours), DataRows, CommandComplete.
                    let (tag, body) = answers
                        .take_all()
                        .ok_or_else(|| Error::protocol("a shard sent no description"))?;
                    if tag == b'T' {
                        described = Some(parse_fields(&body)?);
                    }
                    // Then DataRows and a CommandComplete from each shard.
                    let mut rows: Vec<Bytes> = Vec::new();
                    for shard in 0..answers.answers.len() {
                        while let Some((t, b)) = answers.next(shard) {
                            if t != b'D' {
                                break;
                            }
                            rows.push(b);
                        }
                    }
                    let formats = bound.map(|b| b.formats.clone()).unwrap_or_default();
                    self.write_rows(held, plan, described.clone(), rows, &formats)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// A RowDescription for the client: hidden merge columns dropped,
    /// averages retyped, formats as the client bound them.
    fn write_description(
        &mut self,
        tag: u8,
        body: &[u8],
        plan: Option<&Plan>,
        formats: &[i16],
    ) -> Result<()> {
        if tag != b'T' {
            put(&mut self.to_client, tag, body);
            return Ok(());
        }
        let mut fields = parse_fields(body)?;
        if let Some(p) = plan {
            let visible = fields.len().saturating_sub(p.hidden);
            fields.truncate(visible);
            if let Some((combine, _)) = &p.combine {
                for (f, c) in fields.iter_mut().zip(combine) {
                    if let merge::Combine::Avg { .. } = c {
                        let float = matches!(f.type_oid, merge::oid::FLOAT4 | merge::oid::FLOAT8);
                        f.type_oid = if float {
                            merge::oid::FLOAT8
                        } else {
                            merge::oid::NUMERIC
                        };
                        f.typlen = if float { 8 } else { -1 };
                        f.typmod = -1;
                    }
                }
            }
        }
        for (i, f) in fields.iter_mut().enumerate() {
            f.format = format_of(formats, i);
        }
        write_fields(&mut self.to_client, &fields);
        Ok(())
    }

    /// The rows of one Execute: passed through, or merged in text and
    /// converted to the formats the client bound.
    async fn write_rows(
        &mut self,
        held: &mut [(Arc<ServerPool>, Pooled)],
        plan: Option<&Plan>,
        fields: Option<Vec<Field>>,
        rows: Vec<Bytes>,
        formats: &[i16],
    ) -> Result<()> {
        let plan = plan.ok_or_else(|| Error::protocol("Execute without Bind"))?;
        let merging = !plan.order.is_empty() || plan.combine.is_some();
        if !merging {
            // A plain union: rows as the shards sent them, OFFSET/LIMIT here.
            let mut n = 0u64;
            for body in rows
                .into_iter()
                .skip(plan.offset as usize)
                .take(plan.limit.map_or(usize::MAX, |l| l as usize))
            {
                put(&mut self.to_client, b'D', &body);
                n += 1;
                if self.to_client.len() > 64 * 1024 {
                    self.client
                        .write_all(&self.to_client)
                        .await
                        .map_err(|_| Error::ClientGone)?;
                    self.to_client.clear();
                }
            }
            messages::command_complete(&mut self.to_client, &format!("SELECT {n}"));
            return Ok(());
        }
        let fields = fields.ok_or_else(|| Error::protocol("no RowDescription to merge by"))?;
        let rows: Vec<Row> = rows
            .iter()
            .map(|b| parse_data_row(b))
            .collect::<Result<_>>()?;
        let server = &mut held[0].1.server;
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
            messages::data_row(&mut self.to_client, row);
        }
        messages::command_complete(&mut self.to_client, &format!("SELECT {}", out.len()));
        Ok(())
    }
}

fn shard_error(fields: ErrorFields) -> Error {
    Error::ServerRefused {
        addr: "a shard".into(),
        fields,
    }
}

fn put(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
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
    server: &mut crate::backend::Server,
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
    answers: Vec<Vec<(u8, Bytes)>>,
    cursors: Vec<usize>,
}

impl Answers {
    fn next(&mut self, shard: usize) -> Option<(u8, Bytes)> {
        let m = self.answers.get(shard)?.get(self.cursors[shard]).cloned();
        self.cursors[shard] += 1;
        m
    }

    /// The same answer from every shard; shard 0's is kept.
    fn take_all(&mut self) -> Option<(u8, Bytes)> {
        let first = self.next(0);
        for shard in 1..self.answers.len() {
            self.next(shard);
        }
        first
    }
}
