//! SQL analysis and rewrite: every `pgml.predict*` call that pgmlcat can
//! serve becomes its features, `(ARRAY[...]) AS "__pgml_k"` (read in binary)
//! or `to_json(row)::text AS "__pgml_k"`. The marker alias
//! lets the rewriter find the column in the server's RowDescription even
//! through `*` of a subquery or CTE. Shapes that cannot be rewritten
//! faithfully are refused with 0A000 rather than answered wrongly.

use std::sync::Arc;

use std::ops::ControlFlow;

use sqlparser::ast::{
    visit_expressions, Expr, LimitClause, Query, Select, SelectItem, SetExpr, Statement, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::ml::error::{MlError, MlResult};

use super::builder::{batch_unsupported, Builder};
use super::calls::{analyse, as_call, contains_call, folded, is_aggregate};
use super::normalize::Parameters;
use super::select::{self, TopLevel};
use super::types::{Call, ConstItem, Func, ModelRef, Shape, MARKER_PREFIX};

#[derive(Debug, Clone)]
pub struct Plan {
    pub calls: Vec<Call>,
    /// The statement to send instead; `None` when every argument is a
    /// constant and `answer_constant` produces the whole answer.
    pub server_sql: Option<String>,
    /// How `server_sql` runs as a prepared statement.
    pub server_form: ServerForm,
    /// Whether `server_sql`'s rows from every shard, concatenated, are its
    /// answer over all of them (see `rows_concatenate`).
    pub(super) concatenates: bool,
    pub(super) shape: Arc<Shape>,
}

/// How the server statement of a simple-protocol execution is prepared.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum ServerForm {
    /// `server_sql` itself, the same text every time: prepared once per
    /// server connection.
    #[default]
    Fixed,
    /// `server_sql` with its compared constants as parameters: one
    /// prepared statement for every execution of the statement's shape.
    Params(Parameters),
    /// Constants that cannot be parameters: `server_sql`, unnamed.
    OneOff,
}

impl Plan {
    /// Whether the server's column layout is known (from an earlier
    /// RowDescription), so an execution needs no Describe.
    pub(super) fn knows_layout(&self) -> bool {
        self.shape.layout.lock().is_some()
    }

    /// Result format codes for the server's Bind. Once the server's layout
    /// is known: the client's for the columns it sees, binary for feature
    /// arrays. Before: the client's, plus text for the hidden columns when
    /// the client gave one code per column (the rewriter reads either).
    pub(super) fn server_result_formats(&self, client: &[i16]) -> Vec<i16> {
        if let Some(layout) = self.shape.layout.lock().as_ref() {
            return layout.server_formats(client);
        }
        let mut out = client.to_vec();
        if client.len() > 1 {
            out.extend(std::iter::repeat_n(0, self.shape.hidden));
        }
        out
    }
}

/// Cheap pre-check before any parsing: does the text mention `pgml` and
/// `predict` at all? Case-insensitive, so quoting and case variants pass
/// and `plan` decides.
pub fn mentions_predict(sql: &str) -> bool {
    let sql = sql.as_bytes();
    (contains_ci(sql, b"predict") || contains_ci(sql, b"explain")) && contains_ci(sql, b"pgml")
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// `None` when the statement calls no `pgml.predict*` function.
pub fn plan(sql: &str) -> MlResult<Option<Plan>> {
    if !mentions_predict(sql) {
        return Ok(None);
    }
    let statements = match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(s) => s,
        Err(e) => {
            if looks_like_call(sql) {
                return Err(unparsable(e));
            }
            return Ok(None);
        }
    };
    if !statements.iter().any(contains_call) {
        return Ok(None);
    }
    let Statement::Query(query) = one_statement(sql, statements)? else {
        return Err(MlError::Unsupported(
            "pgml.predict is only supported in SELECT statements (not in INSERT, UPDATE, CREATE ... AS, EXPLAIN ...)"
                .into(),
        ));
    };
    plan_query(*query).map(Some)
}

pub(super) fn unparsable(e: impl std::fmt::Display) -> MlError {
    MlError::Unsupported(format!(
        "pgmlcat cannot parse this statement ({e}), so it cannot serve its pgml.predict call"
    ))
}

/// The one statement of `sql` that calls pgml.predict; refused when there
/// are several, or when it uses the names pgmlcat reserves.
pub(super) fn one_statement(sql: &str, statements: Vec<Statement>) -> MlResult<Statement> {
    if statements.len() > 1 {
        return Err(MlError::Unsupported(
            "pgml.predict in a query string with several statements is not supported; send them one by one"
                .into(),
        ));
    }
    if sql.to_ascii_lowercase().contains(MARKER_PREFIX) {
        return Err(MlError::Unsupported(format!(
            "names starting with {MARKER_PREFIX} are reserved by pgmlcat in statements calling pgml.predict"
        )));
    }
    statements
        .into_iter()
        .next()
        .ok_or_else(|| MlError::Internal("no statement".into()))
}

/// After a parse failure: is there a `pgml . predict` token sequence?
fn looks_like_call(sql: &str) -> bool {
    let squeezed: String = sql
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '"')
        .collect::<String>()
        .to_ascii_lowercase();
    squeezed.contains("pgml.predict")
}

fn plan_query(mut q: Query) -> MlResult<Plan> {
    if let Some(plan) = constant_plan(&q)? {
        return Ok(plan);
    }
    let mut b = Builder::default();
    if let Some(with) = q.with.as_mut() {
        for cte in with.cte_tables.iter_mut() {
            if contains_call(&*cte.query) {
                if !cte.alias.columns.is_empty() {
                    return Err(MlError::Unsupported(format!(
                        "pgml.predict in a CTE with a column list ({}) is not supported; alias the call inside instead",
                        cte.alias
                    )));
                }
                b.nested(&mut cte.query, folded(&cte.alias.name))?;
            }
        }
    }
    let mut top = TopLevel::default();
    let body_has_call = contains_call(&*q.body);
    match q.body.as_mut() {
        SetExpr::Select(s) => {
            for twj in s.from.iter_mut() {
                b.nested_in_from(twj)?;
            }
            select::outer(&mut b, s, &mut q.order_by, &mut top)?;
        }
        _ if body_has_call || !b.nested.is_empty() => {
            return Err(MlError::Unsupported(
                "pgml.predict with UNION, INTERSECT, EXCEPT or VALUES is not supported".into(),
            ))
        }
        _ => {}
    }
    if top.moves_limit() {
        let (limit, offset) = select::take_limit(&mut q)?;
        top.limit = limit;
        top.offset = offset;
    }
    if contains_call(&q) {
        return Err(MlError::Unsupported(
            "pgml.predict is only supported as a whole item of the SELECT list (of the statement, of a \
             subquery in FROM or of a CTE), in WHERE conditions and in ORDER BY keys of the outer SELECT; \
             not inside other expressions, GROUP BY, HAVING, window definitions, JOIN conditions or \
             deeper subqueries"
                .into(),
        ));
    }
    let calls = b.calls.clone();
    let shape = Shape {
        calls: b.calls,
        hidden: b.markers.iter().filter(|m| m.name.is_none()).count(),
        markers: b.markers,
        filter: top.filter,
        order: top.order,
        limit: top.limit,
        offset: top.offset,
        constant: None,
        layout: Default::default(),
        description: Default::default(),
    };
    Ok(Plan {
        calls,
        concatenates: rows_concatenate(&q),
        server_sql: Some(q.to_string()),
        server_form: ServerForm::Fixed,
        shape: Arc::new(shape),
    })
}

/// Whether the server statement, run on every shard, answers for all of
/// them with its rows concatenated: nothing left on the server orders,
/// limits, deduplicates, groups or aggregates across rows, nor computes a
/// window over them. (ORDER BY and LIMIT on predictions run in the proxy,
/// over the rows of every shard, so they do not count.)
fn rows_concatenate(q: &Query) -> bool {
    let SetExpr::Select(s) = q.body.as_ref() else {
        return false;
    };
    let unlimited = match &q.limit_clause {
        None => true,
        // LIMIT ALL, OFFSET 0.
        Some(LimitClause::LimitOffset {
            limit: None,
            offset,
            limit_by,
        }) => limit_by.is_empty() && offset.as_ref().is_none_or(|o| is_zero(&o.value)),
        Some(_) => false,
    };
    let across_rows = visit_expressions(&s.projection, |e| match e {
        Expr::Function(f) if f.over.is_some() || is_aggregate(f) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break();
    unlimited
        && q.order_by.is_none()
        && q.fetch.is_none()
        && s.distinct.is_none()
        && s.having.is_none()
        && !select::has_group_by(&s.group_by)
        && !across_rows
}

fn is_zero(e: &Expr) -> bool {
    matches!(e, Expr::Value(v) if matches!(&v.value, Value::Number(n, _) if n.parse::<u64>() == Ok(0)))
}

/// `SELECT pgml.predict('p', ARRAY[1, 2]) [AS x], ...` with constants only:
/// answered without the server.
fn constant_plan(q: &Query) -> MlResult<Option<Plan>> {
    if q.with.is_some() || q.order_by.is_some() || q.limit_clause.is_some() || q.fetch.is_some() {
        return Ok(None);
    }
    let SetExpr::Select(s) = q.body.as_ref() else {
        return Ok(None);
    };
    if !is_bare_select(s) {
        return Ok(None);
    }
    let mut calls = Vec::new();
    let mut items = Vec::new();
    for item in &s.projection {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(folded(alias))),
            _ => return Ok(None),
        };
        let Some((func, f)) = as_call(expr) else {
            return Ok(None);
        };
        let analysed = analyse(func, f)?;
        let Some(input) = analysed.constant else {
            return Ok(None);
        };
        if matches!(analysed.call.model, ModelRef::Param(_)) {
            return Ok(None);
        }
        items.push(ConstItem {
            call: calls.len(),
            name: alias.unwrap_or_else(|| func.name().to_string()),
            input,
        });
        calls.push(analysed.call);
    }
    if calls.len() > 1 && calls.iter().any(|c| c.func == Func::PredictBatch) {
        return Err(batch_unsupported());
    }
    let shape = Shape {
        calls: calls.clone(),
        constant: Some(items),
        ..Default::default()
    };
    Ok(Some(Plan {
        calls,
        server_sql: None,
        server_form: ServerForm::Fixed,
        // No server statement at all.
        concatenates: true,
        shape: Arc::new(shape),
    }))
}

fn is_bare_select(s: &Select) -> bool {
    s.from.is_empty()
        && s.selection.is_none()
        && s.having.is_none()
        && s.distinct.is_none()
        && !select::has_group_by(&s.group_by)
}
