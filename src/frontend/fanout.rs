//! A read that names no shard, on a sharded pool: sent to every shard at
//! once and merged into one ordinary result (see `router::merge`). Plain
//! unions stream; sorting and re-aggregation hold only what they need
//! (each shard returns at most offset+limit rows when there is a LIMIT).

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend;
use tokio::io::AsyncWriteExt;

use super::session::{Flow, Session};
use crate::backend::server::{parse_data_row, quote_literal};
use crate::backend::{Pooled, ServerPool};
use crate::errors::{Error, ErrorFields, Result};
use crate::net::codec::cstr;
use crate::net::messages::{self, parse_error_fields};
use crate::router::merge::{self, oid, ColumnRef, Combine, Plan, Row};

/// RowDescription fields, kept whole so they can be written back (the
/// prediction rewriter reads and writes them too).
pub(super) use crate::net::rows::{write_row_description as write_fields, Field};

pub(super) use crate::net::rows::parse_row_description as parse_fields;

/// What one shard answered.
#[derive(Default)]
struct Answer {
    fields: Option<Vec<Field>>,
    rows: Vec<Row>,
    error: Option<ErrorFields>,
}

impl Session {
    /// Whether `sql` is a read that names no shard on a sharded pool.
    pub(super) fn needs_fan_out(&self, sql: &str) -> bool {
        self.pool.shards.len() > 1
            && self.server.is_none()
            // Outside a transaction, or in a READ ONLY one not started on
            // any shard yet (each read then has its own snapshot per shard).
            && matches!(self.deferred_begin, None | Some((_, true)))
            && matches!(
                self.shard_for(Some(sql), None, true),
                Err(Error::NoShard(_))
            )
            && crate::router::rw::classify(sql) == crate::router::rw::Intent::Read
    }

    pub(super) async fn fan_out(&mut self, sql: &str) -> Result<Flow> {
        let plan = match merge::plan(sql) {
            Ok(Some(plan)) => plan,
            Ok(None) => {
                return self
                    .refuse(Error::NoShard(self.pool.sharding.missing_key()))
                    .await
            }
            Err(e) => return self.refuse(e).await,
        };
        let target = self.target_for(Some(sql));
        let mut held = match self
            .checkout_shards(0..self.pool.shards.len(), target)
            .await
        {
            Ok(held) => held,
            Err(e) => return self.refuse(e).await,
        };
        let mut query = BytesMut::new();
        frontend::query(&plan.shard_sql, &mut query)?;
        for (_, pooled) in held.iter_mut() {
            if let Err(e) = pooled.server.stream.write_all(&query).await {
                pooled.server.broken = true;
                let e = Error::ServerLost(e.to_string());
                return self.finish_fan_out(held, Err(e)).await;
            }
        }
        let outcome = if plan.order.is_empty() && plan.combine.is_none() {
            self.stream_union(&mut held, &plan).await
        } else {
            self.merge_results(&mut held, &plan).await
        };
        self.finish_fan_out(held, outcome).await
    }

    /// One server per listed shard, taken in shard order so that
    /// concurrent multi-shard statements cannot deadlock on each other. On
    /// failure every server taken is given back.
    pub(super) async fn checkout_shards(
        &self,
        shards: impl Iterator<Item = usize>,
        target: crate::router::Target,
    ) -> Result<Vec<(Arc<ServerPool>, Pooled)>> {
        let mut held: Vec<(Arc<ServerPool>, Pooled)> = Vec::new();
        for shard in shards {
            let server_pool = self.pool.choose(shard, target).clone();
            let checked = match server_pool.checkout().await {
                Ok(mut pooled) => pooled
                    .server
                    .sync_parameters(self.params.wanted())
                    .await
                    .map(|_| pooled),
                Err(e) => Err(e),
            };
            match checked {
                Ok(pooled) => held.push((server_pool, pooled)),
                Err(e) => {
                    for (sp, p) in held {
                        sp.checkin(p);
                    }
                    return Err(e);
                }
            }
        }
        Ok(held)
    }

    /// Writes the error ending a multi-shard statement (a server's error as it was sent).
    pub(super) fn write_error(&mut self, e: &Error) {
        match e {
            Error::ServerRefused { fields, .. } => messages::error_fields(
                &mut self.to_client,
                b'E',
                &fields.severity,
                &fields.code,
                &fields.message,
            ),
            e => messages::error_response(&mut self.to_client, e),
        }
    }

    async fn refuse(&mut self, e: Error) -> Result<Flow> {
        messages::error_response(&mut self.to_client, &e);
        messages::ready_for_query(&mut self.to_client, self.status);
        Ok(Flow::Continue)
    }

    /// Checks the servers back in and ends the client's statement.
    async fn finish_fan_out(
        &mut self,
        held: Vec<(Arc<ServerPool>, Pooled)>,
        outcome: Result<u64>,
    ) -> Result<Flow> {
        for (sp, pooled) in held {
            sp.checkin(pooled);
        }
        match outcome {
            Ok(n) => {
                messages::command_complete(&mut self.to_client, &format!("SELECT {n}"));
                crate::stats::Counters::add(&self.pool.counters.xacts, 1);
            }
            Err(e) => self.write_error(&e),
        }
        messages::ready_for_query(&mut self.to_client, self.status);
        Ok(Flow::Continue)
    }

    /// Rows from each shard in turn, straight to the client.
    async fn stream_union(
        &mut self,
        held: &mut [(Arc<ServerPool>, Pooled)],
        plan: &Plan,
    ) -> Result<u64> {
        let (mut skip, mut left) = (plan.offset, plan.limit);
        let mut described = false;
        let mut sent = 0u64;
        let mut error = None;
        for (_, pooled) in held.iter_mut() {
            loop {
                let (tag, body) = pooled.server.read_message().await?;
                match tag {
                    b'T' if !described => {
                        described = true;
                        write_fields(&mut self.to_client, &parse_fields(&body)?);
                    }
                    b'D' => {
                        if skip > 0 {
                            skip -= 1;
                        } else if left != Some(0) {
                            left = left.map(|l| l - 1);
                            sent += 1;
                            self.to_client.put_u8(b'D');
                            self.to_client.put_i32(body.len() as i32 + 4);
                            self.to_client.put_slice(&body);
                            if self.to_client.len() > 64 * 1024 {
                                self.client.write_all(&self.to_client).await?;
                                self.to_client.clear();
                            }
                        }
                    }
                    b'E' => error = error.or(Some(parse_error_fields(&body))),
                    b'Z' => break,
                    _ => {}
                }
            }
        }
        match error {
            Some(fields) => Err(Error::ServerRefused {
                addr: "a shard".into(),
                fields,
            }),
            None => Ok(sent),
        }
    }

    /// Everything each shard returned (bounded by the plan's LIMIT), merged.
    async fn merge_results(
        &mut self,
        held: &mut [(Arc<ServerPool>, Pooled)],
        plan: &Plan,
    ) -> Result<u64> {
        let mut answer = Answer::default();
        for (_, pooled) in held.iter_mut() {
            loop {
                let (tag, body) = pooled.server.read_message().await?;
                match tag {
                    b'T' if answer.fields.is_none() => answer.fields = Some(parse_fields(&body)?),
                    b'D' => answer.rows.push(parse_data_row(&body)?),
                    b'E' => answer.error = answer.error.or(Some(parse_error_fields(&body))),
                    b'Z' => break,
                    _ => {}
                }
            }
        }
        if let Some(fields) = answer.error {
            return Err(Error::ServerRefused {
                addr: "a shard".into(),
                fields,
            });
        }
        let Some(fields) = answer.fields else {
            return Ok(0);
        };
        let server = &mut held[0].1.server;
        let (fields, rows) = merge_rows(server, plan, fields, answer.rows).await?;
        write_fields(&mut self.to_client, &fields);
        for row in &rows {
            let values: Vec<Option<&str>> = row.iter().map(|v| v.as_deref()).collect();
            messages::data_row(&mut self.to_client, &values);
        }
        Ok(rows.len() as u64)
    }
}

/// Every shard's rows (text format) combined as the plan says: aggregates
/// folded, sorted, OFFSET/LIMIT applied, hidden columns dropped. `server`
/// (one of the shards') divides averages.
pub(super) async fn merge_rows(
    server: &mut crate::backend::Server,
    plan: &Plan,
    mut fields: Vec<Field>,
    mut rows: Vec<Row>,
) -> Result<(Vec<Field>, Vec<Row>)> {
    let types: Vec<u32> = fields.iter().map(|f| f.type_oid).collect();
    let visible = fields.len().saturating_sub(plan.hidden);
    if let Some((combine, hidden)) = &plan.combine {
        let all: Vec<Combine> = combine
            .iter()
            .cloned()
            .map(|c| match c {
                Combine::Avg { count } => Combine::Avg {
                    count: visible + count,
                },
                c => c,
            })
            .chain(hidden.iter().cloned())
            .collect();
        // Without GROUP BY every shard sent one row; they fold into one.
        rows = merge::aggregate(rows, &all, &types)?;
        for (i, c) in all.iter().enumerate() {
            if let Combine::Avg { count } = c {
                let float = matches!(types[i], oid::FLOAT4 | oid::FLOAT8);
                finish_averages(server, &mut rows, i, *count, float).await?;
                fields[i].type_oid = if float { oid::FLOAT8 } else { oid::NUMERIC };
                fields[i].typlen = if float { 8 } else { -1 };
                fields[i].typmod = -1;
            }
        }
    }
    let resolve = |c: &ColumnRef| -> Result<usize> {
        match c {
            ColumnRef::Position(i) if *i < visible => Ok(*i),
            ColumnRef::Hidden(k) => Ok(visible + k),
            ColumnRef::Name(n) => fields
                .iter()
                .take(visible)
                .position(|f| f.name.eq_ignore_ascii_case(n))
                .ok_or_else(|| {
                    Error::Unsupported(format!("ORDER BY {n}: no such output column across shards"))
                }),
            ColumnRef::Position(i) => Err(Error::Unsupported(format!(
                "ORDER BY position {} is not in the select list",
                i + 1
            ))),
        }
    };
    let keys = plan
        .order
        .iter()
        .map(|k| resolve(&k.column).map(|c| (c, k.desc, k.nulls_first)))
        .collect::<Result<Vec<_>>>()?;
    merge::sort(&mut rows, &keys, &types);
    let start = (plan.offset as usize).min(rows.len());
    let end = plan
        .limit
        .map_or(rows.len(), |l| (start + l as usize).min(rows.len()));
    let rows = rows
        .drain(start..end)
        .map(|mut r| {
            r.truncate(visible);
            r
        })
        .collect();
    fields.truncate(visible);
    Ok((fields, rows))
}

/// avg = sum / count, divided by Postgres itself so the digits are exactly
/// what `avg` would have returned (numeric_div for integers and numerics).
async fn finish_averages(
    server: &mut crate::backend::Server,
    rows: &mut [Row],
    sum_col: usize,
    count_col: usize,
    float: bool,
) -> Result<()> {
    let cast = if float { "float8" } else { "numeric" };
    let pairs: Vec<String> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let (s, c) = (r[sum_col].as_ref()?, r[count_col].as_ref()?);
            (c != "0").then(|| format!("({i}, {}, {})", quote_literal(s), quote_literal(c)))
        })
        .collect();
    for r in rows.iter_mut() {
        r[sum_col] = None;
    }
    if pairs.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "select string_agg(i::text || ':' || (s::{cast} / c::{cast})::text, ',') from (values {}) v(i, s, c)",
        pairs.join(",")
    );
    let row = server.query_row(&sql).await?;
    let joined = row
        .and_then(|r| r.into_iter().next().flatten())
        .unwrap_or_default();
    for part in joined.split(',').filter(|p| !p.is_empty()) {
        if let Some((i, v)) = part.split_once(':') {
            if let Some(r) = i.parse::<usize>().ok().and_then(|i| rows.get_mut(i)) {
                r[sum_col] = Some(v.to_string());
            }
        }
    }
    Ok(())
}

impl Session {
    /// A multi-row INSERT that spans shards, split per shard; None otherwise.
    pub(super) fn insert_parts(&self, sql: &str) -> Option<Vec<(usize, String)>> {
        if self.pool.shards.len() <= 1 || self.server.is_some() || self.deferred_begin.is_some() {
            return None;
        }
        match self.shard_for(Some(sql), None, true) {
            Err(Error::NoShard(_)) => self.pool.sharding.split_insert(sql),
            _ => None,
        }
    }

    /// Runs each shard's part in a transaction of its own and commits them
    /// all only if every part succeeded (otherwise all roll back). Not
    /// two-phase commit: a shard failing at COMMIT itself is reported.
    pub(super) async fn split_insert(&mut self, parts: Vec<(usize, String)>) -> Result<Flow> {
        let shards = parts.iter().map(|(shard, _)| *shard);
        let mut held = match self
            .checkout_shards(shards, crate::router::Target::Primary)
            .await
        {
            Ok(held) => held,
            Err(e) => return self.refuse(e).await,
        };
        let mut failure: Option<Error> = None;
        for ((_, pooled), (_, sql)) in held.iter_mut().zip(&parts) {
            let mut query = BytesMut::new();
            frontend::query(&format!("BEGIN;{sql}"), &mut query)?;
            if let Err(e) = pooled.server.stream.write_all(&query).await {
                pooled.server.broken = true;
                failure = Some(Error::ServerLost(e.to_string()));
            }
        }
        let (mut total, mut described) = (0u64, false);
        let mut out = BytesMut::new();
        for (_, pooled) in held.iter_mut() {
            if pooled.server.broken {
                continue;
            }
            loop {
                let (tag, body) = match pooled.server.read_message().await {
                    Ok(m) => m,
                    Err(e) => {
                        failure = failure.or(Some(e));
                        break;
                    }
                };
                match tag {
                    b'T' if !described => {
                        described = true;
                        write_fields(&mut out, &parse_fields(&body)?);
                    }
                    b'D' => {
                        out.put_u8(b'D');
                        out.put_i32(body.len() as i32 + 4);
                        out.put_slice(&body);
                    }
                    b'C' => {
                        let tag = cstr(&body, 0)
                            .map(|(t, _)| t.to_string())
                            .unwrap_or_default();
                        if let Some(n) = tag
                            .strip_prefix("INSERT 0 ")
                            .and_then(|n| n.parse::<u64>().ok())
                        {
                            total += n;
                        }
                    }
                    b'E' => {
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
        let end = if failure.is_none() {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        for (_, pooled) in held.iter_mut() {
            if pooled.server.broken {
                continue;
            }
            match pooled.server.run_internal(end).await {
                Ok(None) => {}
                Ok(Some(fields)) => {
                    failure = failure.or(Some(Error::ServerRefused {
                        addr: pooled.server.addr.to_string(),
                        fields,
                    }))
                }
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        for (sp, pooled) in held {
            sp.checkin(pooled);
        }
        match failure {
            None => {
                self.to_client.extend_from_slice(&out);
                messages::command_complete(&mut self.to_client, &format!("INSERT 0 {total}"));
                crate::stats::Counters::add(&self.pool.counters.xacts, 1);
            }
            Some(e) => self.write_error(&e),
        }
        messages::ready_for_query(&mut self.to_client, self.status);
        Ok(Flow::Continue)
    }
}
