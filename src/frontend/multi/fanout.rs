//! A read that names no shard, on a sharded pool, in the simple protocol:
//! sent to every shard at once and merged into one ordinary result (see
//! `router::merge`). Plain unions stream; sorting and re-aggregation hold
//! only what they need (each shard returns at most offset+limit rows when
//! there is a LIMIT).

use std::sync::Arc;

use bytes::BytesMut;
use postgres_protocol::message::frontend;

use super::shard_error;
use crate::backend::server::quote_literal;
use crate::backend::{Server, ShardSet};
use crate::errors::{Error, ErrorFields, Result};
use crate::frontend::session::{Flow, Session};
use crate::net::messages::{self, parse_error_fields};
use crate::net::rows::{data_row_text, parse_row_description, write_row_description, Field};
use crate::net::tag::server as tag;
use crate::router::merge::{self, oid, ColumnRef, Combine, MergePlan, Row};

impl Session {
    pub(in crate::frontend) async fn fan_out(
        &mut self,
        sql: &str,
        plan: Arc<MergePlan>,
    ) -> Result<Flow> {
        let analysis = self.analysis(Some(sql));
        let target = self.target_for(analysis.as_deref());
        let mut set = match self.shard_set(0..self.pool.shards.len(), target).await {
            Ok(set) => set,
            Err(e) => return self.refuse(e),
        };
        let mut query = BytesMut::new();
        frontend::query(&plan.shard_sql, &mut query)?;
        let outcome = match set.broadcast(&query).await {
            Ok(()) if plan.merges_rows() => self.merge_results(&mut set, &plan).await,
            Ok(()) => self.stream_union(&mut set, &plan).await,
            Err(e) => Err(e),
        };
        if matches!(outcome, Err(ref e) if !matches!(e, Error::ServerRefused { .. })) {
            // Answers may still be on their way: these servers cannot be reused.
            set.abandon();
        }
        drop(set);
        match outcome {
            Ok(n) => {
                messages::command_complete(&mut self.client.out, &format!("SELECT {n}"));
                self.count_xact();
            }
            Err(Error::ClientGone) => return Ok(Flow::Close),
            Err(e) => self.write_error(&e),
        }
        messages::ready_for_query(&mut self.client.out, self.tx.status);
        Ok(Flow::Continue)
    }

    /// Rows from each shard in turn, straight to the client.
    async fn stream_union(&mut self, set: &mut ShardSet, plan: &MergePlan) -> Result<u64> {
        let (mut skip, mut left) = (plan.offset, plan.limit);
        let mut described = false;
        let mut sent = 0u64;
        let mut error: Option<ErrorFields> = None;
        for i in 0..set.len() {
            loop {
                let frame = set.server(i).recv().await?;
                match frame.tag() {
                    tag::ROW_DESCRIPTION if !described => {
                        described = true;
                        self.client.out.extend_from_slice(frame.bytes());
                    }
                    tag::DATA_ROW if skip > 0 => skip -= 1,
                    tag::DATA_ROW if left != Some(0) => {
                        left = left.map(|l| l - 1);
                        sent += 1;
                        self.client.out.extend_from_slice(frame.bytes());
                        self.spill_to_client().await?;
                    }
                    tag::ERROR_RESPONSE => {
                        error = error.or_else(|| Some(parse_error_fields(frame.body())));
                    }
                    tag::READY_FOR_QUERY => break,
                    _ => {}
                }
            }
        }
        match error {
            Some(fields) => Err(shard_error(fields)),
            None => Ok(sent),
        }
    }

    /// Everything each shard returned (bounded by the plan's LIMIT), merged.
    async fn merge_results(&mut self, set: &mut ShardSet, plan: &MergePlan) -> Result<u64> {
        let mut fields = None;
        let mut rows = Vec::new();
        let mut error: Option<ErrorFields> = None;
        for i in 0..set.len() {
            loop {
                let frame = set.server(i).recv().await?;
                match frame.tag() {
                    tag::ROW_DESCRIPTION if fields.is_none() => {
                        fields = Some(parse_row_description(frame.body())?)
                    }
                    tag::ERROR_RESPONSE => {
                        error = error.or_else(|| Some(parse_error_fields(frame.body())));
                    }
                    tag::READY_FOR_QUERY => break,
                    tag::DATA_ROW => rows.push(data_row_text(frame.body())?),
                    _ => {}
                }
            }
        }
        if let Some(fields) = error {
            return Err(shard_error(fields));
        }
        let Some(fields) = fields else {
            return Ok(0);
        };
        let (fields, rows) = merge_rows(set.server(0), plan, fields, rows).await?;
        write_row_description(&mut self.client.out, &fields);
        for row in &rows {
            let values: Vec<Option<&str>> = row.iter().map(|v| v.as_deref()).collect();
            messages::data_row(&mut self.client.out, &values);
        }
        Ok(rows.len() as u64)
    }
}

/// Every shard's rows (text format) combined as the plan says: aggregates
/// folded, sorted, OFFSET/LIMIT applied, hidden columns dropped. `server`
/// (one of the shards') divides averages.
pub(super) async fn merge_rows(
    server: &mut Server,
    plan: &MergePlan,
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
        // The shards' rows of one group fold into one (without GROUP BY,
        // every shard sent one row).
        rows = merge::aggregate(rows, &all, &types)?;
        for (i, c) in all.iter().enumerate() {
            if let Combine::Avg { count } = c {
                let float = matches!(types[i], oid::FLOAT4 | oid::FLOAT8);
                finish_averages(server, &mut rows, i, *count, float).await?;
                retype_average(&mut fields[i]);
            }
        }
    }
    let keys = plan
        .order
        .iter()
        .map(|k| resolve(&fields, visible, &k.column).map(|c| (c, k.desc, k.nulls_first)))
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

/// An average is float8 over floats and numeric over the rest, as `avg`
/// returns it.
pub(super) fn retype_average(field: &mut Field) {
    let float = matches!(field.type_oid, oid::FLOAT4 | oid::FLOAT8);
    field.type_oid = if float { oid::FLOAT8 } else { oid::NUMERIC };
    field.typlen = if float { 8 } else { -1 };
    field.typmod = -1;
}

/// The index of an ORDER BY column in the merged rows.
fn resolve(fields: &[Field], visible: usize, c: &ColumnRef) -> Result<usize> {
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
}

/// avg = sum / count, divided by Postgres itself so the digits are exactly
/// what `avg` would have returned (numeric_div for integers and numerics).
async fn finish_averages(
    server: &mut Server,
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
