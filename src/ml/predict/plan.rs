//! SQL analysis and rewrite: every `pgml.predict*` call that pgmlcat can
//! serve becomes its features, `(ARRAY[...]) AS "__pgml_k"` (read in binary)
//! or `to_json(row)::text AS "__pgml_k"`. The marker alias
//! lets the rewriter find the column in the server's RowDescription even
//! through `*` of a subquery or CTE. Shapes that cannot be rewritten
//! faithfully are refused with 0A000 rather than answered wrongly.

use std::collections::HashMap;
use std::sync::Arc;

use sqlparser::ast::{
    Distinct, Expr, GroupByExpr, Ident, Query, Select, SelectItem, SetExpr, Statement, TableFactor,
    TableWithJoins,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::ml::error::{MlError, MlResult};

use super::calls::{analyse, as_call, contains_call, folded, parse_expr};
use super::eval::{Cond, SortKey};
use super::normalize::Parameters;
use super::rows::Layout;
use super::select::{self, TopLevel};
use super::{mentions_predict, Call, Features, Func, ModelRef};

/// Prefix of the aliases marking replacement columns. Statements that
/// already contain it are refused so a user column can never be mistaken
/// for one.
pub(super) const MARKER_PREFIX: &str = "__pgml_";

/// A replacement column of the server's answer.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Marker {
    pub call: usize,
    /// The column name the client sees; `None`: a hidden column that only
    /// feeds the proxy's WHERE/ORDER BY and is dropped from the rows.
    pub name: Option<String>,
}

/// One output column of a statement answered without the server.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ConstItem {
    pub call: usize,
    pub name: String,
    /// `None`: the features are NULL, so is the prediction.
    pub input: Option<Features>,
}

/// What the rewriter needs to know besides the calls.
#[derive(Debug, Default)]
pub(super) struct Shape {
    pub calls: Vec<Call>,
    pub markers: Vec<Marker>,
    /// Hidden columns, all at the end of the outer SELECT list.
    pub hidden: usize,
    pub filter: Option<Cond>,
    pub order: Vec<SortKey>,
    pub limit: Option<u64>,
    pub offset: u64,
    pub constant: Option<Vec<ConstItem>>,
    /// The server's column layout, learnt from the first RowDescription and
    /// kept for later executions of the same statement, which get none.
    pub layout: parking_lot::Mutex<Option<Arc<Layout>>>,
    /// The server's RowDescription of the rewritten statement (formats as
    /// first seen), so a client's Describe needs no server round trip.
    pub description: parking_lot::Mutex<Option<Vec<u8>>>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub calls: Vec<Call>,
    /// The statement to send instead; `None` when every argument is a
    /// constant and `answer_constant` produces the whole answer.
    pub server_sql: Option<String>,
    /// How `server_sql` runs as a prepared statement.
    pub server_form: ServerForm,
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
    /// The client's RowDescription for `result_formats`, from the server's
    /// description seen earlier; false when there is none yet.
    pub fn describe_cached(
        &self,
        predictor: Arc<dyn super::Predictor>,
        result_formats: &[i16],
        out: &mut bytes::BytesMut,
    ) -> MlResult<bool> {
        let Some(body) = self.shape.description.lock().clone() else {
            return Ok(false);
        };
        self.rewriter(predictor, result_formats, &[])
            .on_message(b'T', &body, out)?;
        Ok(true)
    }

    /// Whether the server's column layout is known (from an earlier
    /// RowDescription), so an execution needs no Describe.
    pub fn knows_layout(&self) -> bool {
        self.shape.layout.lock().is_some()
    }

    /// Result format codes for the server's Bind. Once the server's layout
    /// is known: the client's for the columns it sees, binary for feature
    /// arrays. Before: the client's, plus text for the hidden columns when
    /// the client gave one code per column (the rewriter reads either).
    pub fn server_result_formats(&self, client: &[i16]) -> Vec<i16> {
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

pub(super) fn marker_ident(k: usize) -> Ident {
    Ident::with_quote('"', format!("{MARKER_PREFIX}{k}"))
}

/// Parses the marker number out of a RowDescription column name.
pub(super) fn marker_number(name: &str) -> Option<usize> {
    name.strip_prefix(MARKER_PREFIX)?.parse().ok()
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
                return Err(MlError::Unsupported(format!(
                    "pgmlcat cannot parse this statement ({e}), so it cannot serve its pgml.predict call"
                )));
            }
            return Ok(None);
        }
    };
    if !statements.iter().any(contains_call) {
        return Ok(None);
    }
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
    let Some(Statement::Query(query)) = statements.into_iter().next() else {
        return Err(MlError::Unsupported(
            "pgml.predict is only supported in SELECT statements (not in INSERT, UPDATE, CREATE ... AS, EXPLAIN ...)"
                .into(),
        ));
    };
    plan_query(*query).map(Some)
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
        server_sql: Some(q.to_string()),
        server_form: ServerForm::Fixed,
        shape: Arc::new(shape),
    })
}

/// A call's output column in a subquery or CTE: `qualifier.name` in the
/// outer query is really marker `marker`.
#[derive(Debug, Clone)]
pub(super) struct NestedName {
    pub qualifier: String,
    pub name: String,
    pub marker: usize,
}

#[derive(Default)]
pub(super) struct Builder {
    pub calls: Vec<Call>,
    pub markers: Vec<Marker>,
    pub nested: Vec<NestedName>,
    /// Call or reference (by its SQL text) → marker number of a column of
    /// the outer SELECT that computes it, so WHERE/ORDER BY reuse it.
    pub outer_calls: HashMap<String, usize>,
    /// Columns appended to the outer SELECT list for WHERE/ORDER BY.
    pub hidden_items: Vec<SelectItem>,
}

impl Builder {
    pub fn add_marker(&mut self, call: usize, name: Option<String>) -> usize {
        self.markers.push(Marker { call, name });
        self.markers.len() - 1
    }

    /// Replaces a SELECT item that is a call; returns (marker, column name).
    pub fn replace_item(&mut self, item: &mut SelectItem) -> MlResult<Option<(usize, String)>> {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(e) => (&*e, None),
            SelectItem::ExprWithAlias { expr, alias } => (&*expr, Some(folded(alias))),
            _ => return Ok(None),
        };
        let Some((func, f)) = as_call(expr) else {
            return Ok(None);
        };
        if func == Func::PredictBatch {
            return Err(batch_unsupported());
        }
        let key = expr.to_string();
        let analysed = analyse(func, f)?;
        let name = alias.unwrap_or_else(|| func.name().to_string());
        self.calls.push(analysed.call);
        let call = self.calls.len() - 1;
        let k = self.add_marker(call, Some(name.clone()));
        *item = SelectItem::ExprWithAlias {
            expr: parse_expr(&analysed.replacement)?,
            alias: marker_ident(k),
        };
        self.outer_calls.entry(key).or_insert(k);
        Ok(Some((k, name)))
    }

    /// The marker of the column holding a call (or a subquery's prediction
    /// column) used in WHERE/ORDER BY, adding a hidden column unless the
    /// outer SELECT list already computes the same call.
    pub fn proxy_call(&mut self, e: &Expr) -> MlResult<Option<usize>> {
        if let Some((func, f)) = as_call(e) {
            if func == Func::PredictBatch {
                return Err(batch_unsupported());
            }
            if func.returns_array() {
                return Err(MlError::Unsupported(format!(
                    "comparing or sorting the real[] result of pgml.{} is not supported",
                    func.name()
                )));
            }
            let key = e.to_string();
            if let Some(k) = self.outer_calls.get(&key) {
                return Ok(Some(*k));
            }
            let analysed = analyse(func, f)?;
            self.calls.push(analysed.call);
            let call = self.calls.len() - 1;
            let k = self.add_marker(call, None);
            self.hidden_items.push(SelectItem::ExprWithAlias {
                expr: parse_expr(&analysed.replacement)?,
                alias: marker_ident(k),
            });
            self.outer_calls.insert(key, k);
            return Ok(Some(k));
        }
        // A subquery's prediction referenced by name from the outer query.
        if let Some(n) = self.nested_ref(e)? {
            let call = self.markers.get(n.marker).map(|m| m.call).ok_or_else(|| {
                MlError::Internal("marker of a subquery prediction is missing".into())
            })?;
            // Keyed by the qualified reference: a CTE joined to itself has
            // the same marker twice, with different values.
            let renamed = renamed_ref(e, n.marker);
            let key = renamed.to_string();
            if let Some(k) = self.outer_calls.get(&key) {
                return Ok(Some(*k));
            }
            if self.calls.get(call).is_some_and(|c| c.func.returns_array()) {
                return Err(MlError::Unsupported(format!(
                    "comparing or sorting the real[] column {} is not supported",
                    n.name
                )));
            }
            let k = self.add_marker(call, None);
            self.hidden_items.push(SelectItem::ExprWithAlias {
                expr: renamed,
                alias: marker_ident(k),
            });
            self.outer_calls.insert(key, k);
            return Ok(Some(k));
        }
        Ok(None)
    }

    /// The subquery prediction a column reference names, if any.
    pub fn nested_ref(&self, e: &Expr) -> MlResult<Option<NestedName>> {
        let (qualifier, name) = match e {
            Expr::Identifier(i) => (None, folded(i)),
            Expr::CompoundIdentifier(parts) => match parts.as_slice() {
                [q, i] => (Some(folded(q)), folded(i)),
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        let found: Vec<&NestedName> = self
            .nested
            .iter()
            .filter(|n| n.name == name && qualifier.as_ref().is_none_or(|q| *q == n.qualifier))
            .collect();
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some((*one).clone())),
            _ => Err(MlError::Unsupported(format!(
                "column reference {e} names predictions of several subqueries; qualify it"
            ))),
        }
    }

    fn nested_in_from(&mut self, twj: &mut TableWithJoins) -> MlResult<()> {
        self.nested_in_factor(&mut twj.relation)?;
        for j in twj.joins.iter_mut() {
            self.nested_in_factor(&mut j.relation)?;
        }
        Ok(())
    }

    fn nested_in_factor(&mut self, factor: &mut TableFactor) -> MlResult<()> {
        match factor {
            TableFactor::Derived {
                subquery, alias, ..
            } if contains_call(&**subquery) => {
                let Some(alias) = alias else {
                    return Err(MlError::Unsupported(
                        "pgml.predict in a subquery without an alias is not supported".into(),
                    ));
                };
                if !alias.columns.is_empty() {
                    return Err(MlError::Unsupported(format!(
                        "pgml.predict in a subquery with a column alias list ({alias}) is not supported"
                    )));
                }
                let qualifier = folded(&alias.name);
                self.nested(subquery, qualifier)
            }
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => self.nested_in_from(table_with_joins),
            _ => Ok(()),
        }
    }

    /// A subquery or CTE: its SELECT-list calls become visible markers.
    fn nested(&mut self, q: &mut Query, qualifier: String) -> MlResult<()> {
        let SetExpr::Select(s) = q.body.as_mut() else {
            return Err(MlError::Unsupported(
                "pgml.predict in a subquery with UNION, INTERSECT, EXCEPT or VALUES is not supported".into(),
            ));
        };
        if matches!(s.distinct, Some(Distinct::Distinct | Distinct::On(_))) {
            return Err(distinct_unsupported());
        }
        for item in s.projection.iter_mut() {
            if let Some((marker, name)) = self.replace_item(item)? {
                self.nested.push(NestedName {
                    qualifier: qualifier.clone(),
                    name,
                    marker,
                });
            }
        }
        // Calls of a subquery are not visible to the outer query's dedup.
        self.outer_calls.clear();
        Ok(())
    }
}

/// `x` / `q.x` with the column renamed to marker `k`.
pub(super) fn renamed_ref(e: &Expr, k: usize) -> Expr {
    match e {
        Expr::CompoundIdentifier(parts) if parts.len() == 2 => {
            let mut parts = parts.clone();
            parts[1] = marker_ident(k);
            Expr::CompoundIdentifier(parts)
        }
        _ => Expr::Identifier(marker_ident(k)),
    }
}

pub(super) fn batch_unsupported() -> MlError {
    MlError::Unsupported(
        "pgml.predict_batch returns a set; pgmlcat serves it only with constant arguments as the \
         only item of a SELECT without FROM"
            .into(),
    )
}

pub(super) fn distinct_unsupported() -> MlError {
    MlError::Unsupported(
        "DISTINCT together with pgml.predict is not supported (the server would compare features, not predictions)"
            .into(),
    )
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
        shape: Arc::new(shape),
    }))
}

fn is_bare_select(s: &Select) -> bool {
    s.from.is_empty()
        && s.selection.is_none()
        && s.having.is_none()
        && s.distinct.is_none()
        && matches!(&s.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
}
