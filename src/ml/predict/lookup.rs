//! pgml.predict anywhere SQL allows a function: the general method, for
//! every shape the streaming rewrite of SELECT lists (`plan`) refuses.
//!
//! A prediction is a pure function of (model, features). So the statement
//! runs on the server as written, with each call replaced by a lookup in a
//! temporary table of that function's values — a memo — which the proxy
//! fills first, in the same transaction, with the predictions of every
//! feature vector the call can meet:
//!
//! 1. each call site gets a *collection* query: the features expression
//!    over its block's FROM, WHERE, GROUP BY and HAVING (the conjuncts that
//!    themselves call pgml left out of a filter's own collection), which
//!    yields a superset of the vectors the site evaluates;
//! 2. the proxy predicts them and COPYs (features, prediction) into
//!    `pg_temp.__pgml_m<n>`;
//! 3. the statement runs with each call replaced by
//!    `coalesce((SELECT v ... WHERE k = features LIMIT 1), miss(features))`.
//!
//! Sites are numbered in dependency order: nested blocks (CTEs, derived
//! tables, subqueries) before their parent; in a block, join conditions and
//! WHERE, GROUP BY, HAVING, then the SELECT list and ORDER BY; a call in
//! another call's features before that call. A site's collection only
//! mentions sites numbered before it, as lookups, so filling the memos in
//! order makes every collection runnable.
//!
//! Correctness does not rest on the superset being tight: a features value
//! the memo lacks (a row another session changed between collection and
//! use) makes `miss` raise 40001, never a silent NULL. Outside a
//! transaction block the proxy runs collection and statement in one
//! transaction of its own: REPEATABLE READ for reads (one snapshot, so
//! nothing misses); for UPDATE and DELETE the collection locks the target
//! rows, so no other session changes them before they are written (see
//! `Own`). A miss of the proxy's own transaction, before the client saw
//! anything, runs the statement again.

use std::ops::ControlFlow;

use sqlparser::ast::{
    visit_expressions_mut, Cte, Expr, FunctionArguments, GroupByExpr, JoinConstraint,
    NamedWindowDefinition, Query, Select, SetExpr, Statement, TableFactor, TableWithJoins, With,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::ml::error::{MlError, MlResult};

use super::calls::{analyse, as_call, contains_call, folded, is_aggregate, parse_expr};
use super::plan::{one_statement, unparsable};
use super::types::{Call, Func, Output, MARKER_PREFIX};
use clauses::*;

/// How a statement that calls pgml.predict where the streaming rewrite
/// cannot runs: its sites' collections, then the statement with lookups.
#[derive(Debug, Clone)]
pub struct LookupPlan {
    /// Per site, in dependency order.
    pub calls: Vec<Call>,
    pub sites: Vec<Site>,
    /// The client's statement with every call a memo lookup.
    pub final_sql: String,
    /// The statement with every call a typed NULL (parameters kept): what
    /// a Describe runs, as it needs no memo.
    pub describe_sql: String,
    /// False for EXPLAIN without ANALYZE: the memos are made (the plan
    /// mentions them) but left empty, as nothing is evaluated.
    pub evaluates: bool,
    /// The transaction the proxy runs it in when the client is in none.
    pub own: Own,
}

/// Outside a transaction block, what makes the features the statement
/// meets the ones collected.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Own {
    /// One REPEATABLE READ snapshot for collection and statement.
    #[default]
    Snapshot,
    /// UPDATE and DELETE: the server's isolation, as the statement alone
    /// would have; the collection locks the target's rows (FOR UPDATE),
    /// so they cannot change before the statement writes them. (In one
    /// snapshot, a row changed by another session would fail the write
    /// with 40001 instead of waiting for it.)
    Locking,
}

#[derive(Debug, Clone)]
pub struct Site {
    /// `SELECT <features> AS k FROM ...`: the vectors this site can meet.
    pub collect_sql: String,
}

/// The memo table of site `i`.
pub fn memo_table(i: usize) -> String {
    format!("pg_temp.{MARKER_PREFIX}m{i}")
}

/// The SQL type of a site's values.
pub fn value_type(func: Func) -> &'static str {
    match func.output() {
        Output::Real => "real",
        Output::RealArray => "real[]",
        Output::Jsonb => "jsonb",
    }
}

/// Functions whose value the collection could not reproduce: a call
/// whose features use one is refused.
pub(super) const VOLATILE: &[&str] = &[
    "random",
    "random_normal",
    "nextval",
    "setval",
    "clock_timestamp",
    "timeofday",
    "gen_random_uuid",
    "uuid_generate_v1",
    "uuid_generate_v4",
    "txid_current",
    "pg_current_xact_id",
];

pub fn plan(sql: &str) -> MlResult<LookupPlan> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(unparsable)?;
    let statement = one_statement(sql, statements)?;
    let mut stmt = statement;
    name_calls_everywhere(&mut stmt);
    let mut described = stmt.clone();
    describe_form(&mut described)?;
    let mut w = Walker::default();
    let evaluates = w.statement(&mut stmt)?;
    if contains_call(&stmt) {
        return Err(MlError::Unsupported(
            "pgml.predict in this position is not supported (LIMIT/OFFSET, a table function in FROM, \
             a LATERAL subquery, a recursive CTE, ON CONFLICT, or RETURNING of INSERT/UPDATE, \
             which would see the new row)"
                .into(),
        ));
    }
    Ok(LookupPlan {
        calls: w.calls,
        sites: w.sites,
        final_sql: stmt.to_string(),
        describe_sql: described.to_string(),
        evaluates,
        own: w.own,
    })
}

/// Which part of its block a site is in, so which parts its collection
/// keeps.
#[derive(Clone, Copy, PartialEq)]
enum Level {
    /// Join conditions and WHERE: FROM, and the filters that call no pgml.
    Filter,
    /// Per input row (GROUP BY keys, aggregate arguments, UPDATE's SET,
    /// VALUES): FROM and WHERE.
    Row,
    /// HAVING: grouped, with the HAVING conjuncts that call no pgml.
    GroupFilter,
    /// The SELECT list and ORDER BY: FROM, WHERE, GROUP BY, HAVING.
    Output,
}

/// What of a block a collection query copies, as it stands when the site
/// is processed (earlier sites already lookups).
#[derive(Default, Clone)]
struct Scope {
    from: Vec<TableWithJoins>,
    selection: Option<Expr>,
    group_by: Option<GroupByExpr>,
    having: Option<Expr>,
    windows: Vec<NamedWindowDefinition>,
    /// The target of an UPDATE or DELETE, whose rows the collection locks:
    /// until the statement ends no other session can change the features
    /// it collected (see `Own`).
    lock: Option<String>,
}

#[derive(Default)]
struct Walker {
    calls: Vec<Call>,
    sites: Vec<Site>,
    own: Own,
    /// CTEs in scope, outermost first, as rewritten.
    ctes: Vec<Cte>,
    recursive: bool,
}

impl Walker {
    /// Returns whether the statement evaluates anything (EXPLAIN without
    /// ANALYZE does not).
    fn statement(&mut self, stmt: &mut Statement) -> MlResult<bool> {
        match stmt {
            Statement::Query(q) => self.query(q).map(|()| true),
            Statement::Insert(insert) => {
                if let Some(source) = insert.source.as_mut() {
                    self.query(source)?;
                }
                Ok(true)
            }
            Statement::Update(u) => self.update(u).map(|()| true),
            Statement::Delete(d) => self.delete(d).map(|()| true),
            Statement::CreateTable(ct) => {
                if let Some(q) = ct.query.as_mut() {
                    self.query(q)?;
                }
                Ok(true)
            }
            Statement::Copy {
                source: sqlparser::ast::CopySource::Query(q),
                to: true,
                ..
            } => {
                self.query(q).map(|()| true)
            }
            Statement::Explain {
                statement,
                analyze,
                options,
                ..
            } => {
                let analyze = *analyze
                    || options.iter().flatten().any(|o| {
                        folded(&o.name) == "analyze"
                            && o.arg.as_ref().is_none_or(|a| {
                                !matches!(a.to_string().to_ascii_lowercase().as_str(), "false" | "off" | "0")
                            })
                    });
                self.statement(statement)?;
                Ok(analyze)
            }
            _ => Err(MlError::Unsupported(
                "pgml.predict is supported in SELECT, INSERT, UPDATE, DELETE, CREATE TABLE ... AS, \
                 COPY (...) TO and EXPLAIN"
                    .into(),
            )),
        }
    }

    /// UPDATE: its WHERE's calls filter, its SET's are per row, over the
    /// target and FROM. (A call in RETURNING would see the new row: left
    /// for the refusal.)
    fn update(&mut self, u: &mut sqlparser::ast::Update) -> MlResult<()> {
        let mut from = vec![u.table.clone()];
        if let Some(
            sqlparser::ast::UpdateTableFromKind::AfterSet(more)
            | sqlparser::ast::UpdateTableFromKind::BeforeSet(more),
        ) = u.from.as_mut()
        {
            for twj in more.iter_mut() {
                self.in_from(twj)?;
            }
            from.extend(more.iter().cloned());
        }
        for a in u.assignments.iter_mut() {
            self.nested(&mut a.value)?;
        }
        if let Some(sel) = u.selection.as_mut() {
            self.nested(sel)?;
        }
        let mut scope = Scope {
            lock: target_name(&u.table),
            from,
            selection: u.selection.clone(),
            ..Default::default()
        };
        self.own = Own::Locking;
        if let Some(sel) = u.selection.as_mut() {
            self.sites(sel, &scope, Level::Filter)?;
            scope.selection = Some(sel.clone());
        }
        for a in u.assignments.iter_mut() {
            self.sites(&mut a.value, &scope, Level::Row)?;
        }
        Ok(())
    }

    /// DELETE: as UPDATE; RETURNING sees the old row, so the same rows.
    fn delete(&mut self, d: &mut sqlparser::ast::Delete) -> MlResult<()> {
        let (sqlparser::ast::FromTable::WithFromKeyword(tables)
        | sqlparser::ast::FromTable::WithoutKeyword(tables)) = &mut d.from;
        for twj in tables.iter_mut() {
            self.in_from(twj)?;
        }
        let mut from = tables.clone();
        if let Some(using) = d.using.as_mut() {
            for twj in using.iter_mut() {
                self.in_from(twj)?;
            }
            from.extend(using.iter().cloned());
        }
        if let Some(sel) = d.selection.as_mut() {
            self.nested(sel)?;
        }
        let mut scope = Scope {
            lock: tables.first().and_then(target_name),
            from,
            selection: d.selection.clone(),
            ..Default::default()
        };
        self.own = Own::Locking;
        if let Some(sel) = d.selection.as_mut() {
            self.sites(sel, &scope, Level::Filter)?;
            scope.selection = Some(sel.clone());
        }
        // RETURNING of a DELETE sees the old row: the same rows.
        if let Some(items) = d.returning.as_mut() {
            for item in items.iter_mut() {
                self.nested(item)?;
                self.sites(item, &scope, Level::Row)?;
            }
        }
        Ok(())
    }

    fn query(&mut self, q: &mut Query) -> MlResult<()> {
        let outer = self.ctes.len();
        let was_recursive = self.recursive;
        if let Some(with) = q.with.as_mut() {
            for cte in with.cte_tables.iter_mut() {
                if with.recursive && contains_call(&*cte.query) {
                    return Err(MlError::Unsupported(
                        "pgml.predict inside a recursive CTE is not supported".into(),
                    ));
                }
                self.query(&mut cte.query)?;
                // A later definition of the same name hides the outer one.
                let name = folded(&cte.alias.name);
                self.ctes.retain(|c| folded(&c.alias.name) != name);
                self.ctes.push(cte.clone());
            }
            self.recursive |= with.recursive;
        }
        let result = self.set_expr(&mut q.body, q.order_by.as_mut());
        self.ctes.truncate(outer.min(self.ctes.len()));
        self.recursive = was_recursive;
        result
    }

    fn set_expr(
        &mut self,
        body: &mut SetExpr,
        order_by: Option<&mut sqlparser::ast::OrderBy>,
    ) -> MlResult<()> {
        match body {
            SetExpr::Select(s) => self.select(s, order_by),
            SetExpr::Query(q) => self.query(q),
            SetExpr::SetOperation { left, right, .. } => {
                self.set_expr(left, None)?;
                self.set_expr(right, None)
            }
            SetExpr::Values(values) => {
                for row in values.rows.iter_mut() {
                    for e in row.iter_mut() {
                        self.nested(e)?;
                        self.sites(e, &Scope::default(), Level::Row)?;
                    }
                }
                Ok(())
            }
            SetExpr::Update(stmt) | SetExpr::Delete(stmt) | SetExpr::Insert(stmt) => {
                self.statement(stmt).map(|_| ())
            }
            _ => Ok(()),
        }
    }

    fn select(
        &mut self,
        s: &mut Select,
        mut order_by: Option<&mut sqlparser::ast::OrderBy>,
    ) -> MlResult<()> {
        // Nested blocks first.
        for twj in s.from.iter_mut() {
            self.in_from(twj)?;
        }
        self.nested(&mut s.projection)?;
        if let Some(sel) = s.selection.as_mut() {
            self.nested(sel)?;
        }
        self.nested(&mut s.group_by)?;
        if let Some(h) = s.having.as_mut() {
            self.nested(h)?;
        }
        if let Some(o) = order_by.as_deref_mut() {
            self.nested(o)?;
        }
        // Join conditions and WHERE: collected over FROM and the filters
        // that call no pgml (a superset of the rows they see).
        let filter_scope = Scope {
            from: s.from.iter().map(without_call_conditions).collect(),
            selection: s.selection.clone(),
            ..Default::default()
        };
        for twj in s.from.iter_mut() {
            for join in twj.joins.iter_mut() {
                if let Some(JoinConstraint::On(on)) = constraint_mut(&mut join.join_operator) {
                    self.sites(on, &filter_scope, Level::Filter)?;
                }
            }
        }
        if let Some(sel) = s.selection.as_mut() {
            self.sites(sel, &filter_scope, Level::Filter)?;
        }
        let mut scope = Scope {
            from: s.from.clone(),
            selection: s.selection.clone(),
            group_by: Some(s.group_by.clone()),
            having: s.having.clone(),
            windows: s.named_window.clone(),
            lock: None,
        };
        self.sites(&mut s.group_by, &scope, Level::Row)?;
        scope.group_by = Some(s.group_by.clone());
        if let Some(h) = s.having.as_mut() {
            self.aggregate_sites(h, &scope)?;
            self.sites(h, &scope, Level::GroupFilter)?;
        }
        scope.having = s.having.clone();
        self.aggregate_sites(&mut s.projection, &scope)?;
        self.sites(&mut s.projection, &scope, Level::Output)?;
        if let Some(o) = order_by {
            self.aggregate_sites(o, &scope)?;
            self.sites(o, &scope, Level::Output)?;
        }
        Ok(())
    }

    /// A FROM item's derived tables (and the subqueries of its joins).
    fn in_from(&mut self, twj: &mut TableWithJoins) -> MlResult<()> {
        self.factor(&mut twj.relation)?;
        for join in twj.joins.iter_mut() {
            self.factor(&mut join.relation)?;
            if let Some(JoinConstraint::On(on)) = constraint_mut(&mut join.join_operator) {
                self.nested(on)?;
            }
        }
        Ok(())
    }

    fn factor(&mut self, f: &mut TableFactor) -> MlResult<()> {
        match f {
            TableFactor::Derived {
                lateral: false,
                subquery,
                ..
            } => self.query(subquery),
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => self.in_from(table_with_joins),
            _ => Ok(()),
        }
    }

    /// The subqueries inside `node`'s expressions, each a block of its own.
    fn nested<V: sqlparser::ast::VisitMut>(&mut self, node: &mut V) -> MlResult<()> {
        let flow = visit_expressions_mut(node, |e| {
            let q = match e {
                Expr::Subquery(q)
                | Expr::Exists { subquery: q, .. }
                | Expr::InSubquery { subquery: q, .. } => q,
                Expr::Function(f) => match &mut f.args {
                    FunctionArguments::Subquery(q) => q,
                    _ => return ControlFlow::Continue(()),
                },
                _ => return ControlFlow::Continue(()),
            };
            match self.query(q) {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => ControlFlow::Break(e),
            }
        });
        finished(flow)
    }

    /// Calls inside (non-window) aggregates: per input row, not per group.
    fn aggregate_sites<V: sqlparser::ast::VisitMut>(
        &mut self,
        node: &mut V,
        scope: &Scope,
    ) -> MlResult<()> {
        let flow = visit_expressions_mut(node, |e| {
            let is_agg = matches!(e, Expr::Function(f) if is_aggregate(f)) && contains_call(&*e);
            if !is_agg {
                return ControlFlow::Continue(());
            }
            match self.sites(e, scope, Level::Row) {
                Ok(()) => ControlFlow::Continue(()),
                Err(err) => ControlFlow::Break(err),
            }
        });
        finished(flow)
    }

    /// Every call directly in `node` (nested blocks are done already)
    /// becomes a site, innermost first, and its lookup.
    fn sites<V: sqlparser::ast::VisitMut>(
        &mut self,
        node: &mut V,
        scope: &Scope,
        level: Level,
    ) -> MlResult<()> {
        let flow = visit_expressions_mut(node, |e| {
            let Some((func, f)) = as_call(e) else {
                return ControlFlow::Continue(());
            };
            match self.site(func, f, scope, level) {
                Ok(lookup) => {
                    *e = lookup;
                    ControlFlow::Continue(())
                }
                Err(err) => ControlFlow::Break(err),
            }
        });
        finished(flow)
    }

    fn site(
        &mut self,
        func: Func,
        f: &sqlparser::ast::Function,
        scope: &Scope,
        level: Level,
    ) -> MlResult<Expr> {
        if func == Func::PredictBatch {
            return Err(MlError::Unsupported(
                "pgml.predict_batch is only supported as a whole item of a SELECT list".into(),
            ));
        }
        let analysed = analyse(func, f)?;
        if let Some(name) = volatile_in(f) {
            return Err(MlError::Unsupported(format!(
                "pgml.{}: the features call {name}(), whose value pgmlcat cannot reproduce to predict \
                 them ahead of the statement; compute them in a subquery or CTE first",
                func.name()
            )));
        }
        let names = scope_names(&scope.from);
        if refers_outside(f, &names) {
            return Err(MlError::Unsupported(format!(
                "pgml.{}: features that use columns of an outer query (a correlated subquery) are \
                 not supported; join the tables in the subquery instead",
                func.name()
            )));
        }
        let k = analysed.replacement;
        let i = self.sites.len();
        self.sites.push(Site {
            collect_sql: self.collection(&k, scope, level),
        });
        self.calls.push(analysed.call);
        let memo = memo_table(i);
        let vt = value_type(func);
        // The memo's columns carry the reserved prefix, so no name in the
        // features can resolve to them.
        let p = MARKER_PREFIX;
        parse_expr(&format!(
            "coalesce((SELECT coalesce({p}v, pg_temp.{p}fail({p}c, {p}e, NULL::{vt})) FROM {memo} \
             WHERE {p}k = ({k}) LIMIT 1), pg_temp.{p}miss(({k}), '{memo}', NULL::{vt}))"
        ))
    }

    fn collection(&self, k: &str, scope: &Scope, level: Level) -> String {
        let mut sql = String::new();
        if !self.ctes.is_empty() {
            let with = With {
                with_token: sqlparser::ast::helpers::attached_token::AttachedToken::empty(),
                recursive: self.recursive,
                cte_tables: self.ctes.clone(),
            };
            sql.push_str(&format!("{with} "));
        }
        sql.push_str(&format!("SELECT ({k}) AS k"));
        if !scope.from.is_empty() {
            let from: Vec<String> = scope.from.iter().map(|t| t.to_string()).collect();
            sql.push_str(&format!(" FROM {}", from.join(", ")));
        }
        // Conditions on an outer query's columns (a correlated subquery)
        // are left out: the collection covers every outer row at once.
        let names = scope_names(&scope.from);
        let inner = |e: Expr| keep_conjuncts(e, |p| !refers_outside(p, &names));
        let selection = match level {
            Level::Filter => scope.selection.clone().and_then(without_calls),
            _ => scope.selection.clone(),
        }
        .and_then(inner);
        if let Some(sel) = selection {
            sql.push_str(&format!(" WHERE {sel}"));
        }
        if let Some(target) = &scope.lock {
            sql.push_str(&format!(" FOR UPDATE OF {target}"));
        }
        if matches!(level, Level::GroupFilter | Level::Output) {
            if let Some(g) = scope.group_by.as_ref().filter(|g| has_group_by(g)) {
                sql.push_str(&format!(" {g}"));
            }
            let having = match level {
                Level::GroupFilter => scope.having.clone().and_then(without_calls),
                _ => scope.having.clone(),
            }
            .and_then(inner);
            if let Some(h) = having {
                sql.push_str(&format!(" HAVING {h}"));
            }
            if !scope.windows.is_empty() {
                let w: Vec<String> = scope.windows.iter().map(|w| w.to_string()).collect();
                sql.push_str(&format!(" WINDOW {}", w.join(", ")));
            }
        }
        sql
    }
}

/// A visit that stopped at an error, as a result.
fn finished(flow: ControlFlow<MlError>) -> MlResult<()> {
    match flow {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

mod clauses;
#[cfg(test)]
mod tests;
