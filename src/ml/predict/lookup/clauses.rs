//! The clauses a collection query is made of, and the two statement
//! forms besides the walk: the names calls give their columns, and the
//! typed-NULL form a Describe runs.

use std::collections::HashSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    visit_expressions_mut, Expr, GroupByExpr, JoinConstraint, JoinOperator, Query, SelectItem,
    SetExpr, Statement, TableFactor, TableWithJoins, Visit,
};

use crate::ml::error::MlResult;

use super::super::calls::{analyse, as_call, contains_call, folded, parse_expr};
use super::super::select::conjuncts;
use super::super::types::MARKER_PREFIX;
use super::{value_type, VOLATILE};

pub(super) fn has_group_by(g: &GroupByExpr) -> bool {
    !matches!(g, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
}

/// The name of a volatile function used in a call's arguments, if any.
pub(super) fn volatile_in(f: &sqlparser::ast::Function) -> Option<String> {
    let mut found = None;
    let _ = sqlparser::ast::visit_expressions(&f.args, |e| {
        if let Expr::Function(g) = e {
            if let Some(sqlparser::ast::ObjectNamePart::Identifier(i)) = g.name.0.last() {
                let name = folded(i);
                if VOLATILE.contains(&name.as_str()) {
                    found = Some(name);
                    return ControlFlow::Break(());
                }
            }
        }
        ControlFlow::Continue(())
    });
    found
}

/// `e`'s AND-ed parts that mention no pgml call and no memo lookup.
pub(super) fn without_calls(e: Expr) -> Option<Expr> {
    keep_conjuncts(e, |p| !contains_call(p) && !mentions_memo(p))
}

/// `e`'s AND-ed parts that `keep` accepts (None: none).
pub(super) fn keep_conjuncts(e: Expr, keep: impl Fn(&Expr) -> bool) -> Option<Expr> {
    let mut parts = Vec::new();
    conjuncts(e, &mut parts);
    parts
        .into_iter()
        .filter(|p| keep(p))
        .reduce(|a, b| Expr::BinaryOp {
            left: Box::new(a),
            op: sqlparser::ast::BinaryOperator::And,
            right: Box::new(b),
        })
}

/// The names a block's FROM gives its relations (aliases, else table
/// names), folded.
pub(super) fn scope_names(from: &[TableWithJoins]) -> HashSet<String> {
    fn add(f: &TableFactor, out: &mut HashSet<String>) {
        match f {
            TableFactor::Table { name, alias, .. } => match alias {
                Some(a) => {
                    out.insert(folded(&a.name));
                }
                None => {
                    if let Some(i) = name.0.last().and_then(|p| p.as_ident()) {
                        out.insert(folded(i));
                    }
                }
            },
            TableFactor::Derived { alias: Some(a), .. }
            | TableFactor::Function { alias: Some(a), .. }
            | TableFactor::UNNEST { alias: Some(a), .. } => {
                out.insert(folded(&a.name));
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                if let Some(a) = alias {
                    out.insert(folded(&a.name));
                }
                add(&table_with_joins.relation, out);
                for j in &table_with_joins.joins {
                    add(&j.relation, out);
                }
            }
            _ => {}
        }
    }
    let mut out = HashSet::new();
    for twj in from {
        add(&twj.relation, &mut out);
        for j in &twj.joins {
            add(&j.relation, &mut out);
        }
    }
    out
}

/// Whether `node`, outside its own subqueries' scopes, names a column as
/// `q.col` where `q` is not among `names`: an outer query's column. (An
/// unqualified outer column cannot be told from the syntax; the server
/// then refuses the collection.)
pub(super) fn refers_outside<V: Visit>(node: &V, names: &HashSet<String>) -> bool {
    sqlparser::ast::visit_expressions(node, |e| match e {
        Expr::CompoundIdentifier(parts)
            if parts.len() == 2 && !names.contains(&folded(&parts[0])) =>
        {
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

pub(super) fn mentions_memo<V: Visit>(node: &V) -> bool {
    let mut found = false;
    let _ = sqlparser::ast::visit_relations(node, |r| {
        if r.to_string().contains(MARKER_PREFIX) {
            found = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    found
}

/// A FROM item with its join conditions' pgml conjuncts left out.
pub(super) fn without_call_conditions(twj: &TableWithJoins) -> TableWithJoins {
    let mut twj = twj.clone();
    for join in twj.joins.iter_mut() {
        if let Some(JoinConstraint::On(on)) = constraint_mut(&mut join.join_operator) {
            if contains_call(&*on) || mentions_memo(&*on) {
                let kept = without_calls(on.clone());
                *on = kept
                    .unwrap_or_else(|| Expr::Value(sqlparser::ast::Value::Boolean(true).into()));
            }
        }
    }
    twj
}

pub(super) fn constraint_mut(op: &mut JoinOperator) -> Option<&mut JoinConstraint> {
    match op {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c)
        | JoinOperator::Right(c)
        | JoinOperator::RightOuter(c)
        | JoinOperator::FullOuter(c)
        | JoinOperator::CrossJoin(c)
        | JoinOperator::Semi(c)
        | JoinOperator::LeftSemi(c)
        | JoinOperator::RightSemi(c)
        | JoinOperator::Anti(c)
        | JoinOperator::LeftAnti(c)
        | JoinOperator::RightAnti(c)
        | JoinOperator::StraightJoin(c) => Some(c),
        _ => None,
    }
}

/// Every unaliased SELECT item (and DELETE RETURNING item) that is a
/// call, through casts and parentheses, gets the name Postgres would give
/// it, before the call becomes a lookup (whose name would be `coalesce`).
pub(super) fn name_calls_everywhere(stmt: &mut Statement) {
    struct Namer;
    impl sqlparser::ast::VisitorMut for Namer {
        type Break = ();
        fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
            name_in_set_expr(&mut q.body);
            ControlFlow::Continue(())
        }
        fn pre_visit_statement(&mut self, s: &mut Statement) -> ControlFlow<()> {
            if let Statement::Delete(d) = s {
                if let Some(items) = d.returning.as_mut() {
                    name_calls(items);
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = sqlparser::ast::VisitMut::visit(stmt, &mut Namer);
}

pub(super) fn name_in_set_expr(body: &mut SetExpr) {
    match body {
        SetExpr::Select(s) => name_calls(&mut s.projection),
        SetExpr::SetOperation { left, right, .. } => {
            name_in_set_expr(left);
            name_in_set_expr(right);
        }
        _ => {}
    }
}

pub(super) fn name_calls(items: &mut [SelectItem]) {
    for item in items.iter_mut() {
        let SelectItem::UnnamedExpr(e) = item else {
            continue;
        };
        let Some(name) = call_name(e) else {
            continue;
        };
        let expr = std::mem::replace(e, Expr::Value(sqlparser::ast::Value::Null.into()));
        *item = SelectItem::ExprWithAlias {
            expr,
            alias: sqlparser::ast::Ident::with_quote('"', name),
        };
    }
}

pub(super) fn call_name(e: &Expr) -> Option<&'static str> {
    match e {
        Expr::Nested(inner) => call_name(inner),
        Expr::Cast { expr, .. } => call_name(expr),
        _ => as_call(e).map(|(func, _)| func.name()),
    }
}

/// The statement as a Describe sees it: each call a NULL of its type, its
/// features kept (so are their parameters and the types they resolve to).
pub(super) fn describe_form(stmt: &mut Statement) -> MlResult<()> {
    let flow = visit_expressions_mut(stmt, |e| {
        let Some((func, f)) = as_call(e) else {
            return ControlFlow::Continue(());
        };
        let replacement = analyse(func, f).and_then(|a| {
            parse_expr(&format!(
                "(SELECT NULL::{} WHERE ({}) IS NULL)",
                value_type(func),
                a.replacement
            ))
        });
        match replacement {
            Ok(r) => {
                *e = r;
                ControlFlow::Continue(())
            }
            Err(err) => ControlFlow::Break(err),
        }
    });
    if let ControlFlow::Break(e) = flow {
        return Err(e);
    }
    Ok(())
}

/// The name an UPDATE or DELETE target goes by in its statement (its
/// alias, else its table name), for `FOR UPDATE OF`.
pub(super) fn target_name(twj: &TableWithJoins) -> Option<String> {
    match &twj.relation {
        TableFactor::Table { alias: Some(a), .. } => Some(a.name.to_string()),
        TableFactor::Table { name, .. } => name.0.last().map(|p| p.to_string()),
        _ => None,
    }
}
