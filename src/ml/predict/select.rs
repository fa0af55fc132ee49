//! The outer SELECT: its call items, and the WHERE conjuncts and ORDER BY
//! keys that depend on predictions, which move to the proxy (with LIMIT
//! and OFFSET when they do).

use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, Distinct, Expr, GroupByExpr, LimitClause, OrderBy, OrderByKind, OrderBySort,
    Query, Select, SelectItem, Value, Visit,
};

use crate::ml::error::{MlError, MlResult};

use super::builder::{distinct_unsupported, marker_ident, renamed_ref, Builder};
use super::calls::{contains_call, folded, is_aggregate};
use super::eval::cond_from_expr;
use super::types::{Cond, SortKey};

/// What the outer query leaves to the proxy.
#[derive(Debug, Default)]
pub(super) struct TopLevel {
    pub filter: Option<Cond>,
    pub order: Vec<SortKey>,
    pub limit: Option<u64>,
    pub offset: u64,
}

impl TopLevel {
    /// LIMIT/OFFSET apply after the proxy's filter and sort, so they move too.
    pub fn moves_limit(&self) -> bool {
        self.filter.is_some() || !self.order.is_empty()
    }
}

/// An outer SELECT item, for ORDER BY by name or position.
enum Item {
    Wildcard,
    Pred { marker: usize, name: String },
    Other,
}

/// Whether `node` refers by name to a subquery's prediction column.
fn mentions_nested<V: Visit>(b: &Builder, node: &V) -> bool {
    sqlparser::ast::visit_expressions(node, |e| match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => match b.nested_ref(e) {
            Ok(None) => ControlFlow::Continue(()),
            _ => ControlFlow::Break(()),
        },
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

fn has_aggregate<V: Visit>(node: &V) -> bool {
    sqlparser::ast::visit_expressions(node, |e| match e {
        Expr::Function(f) if is_aggregate(f) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

pub(super) fn has_group_by(g: &GroupByExpr) -> bool {
    !matches!(g, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
}

/// `e`'s AND-ed parts, in order.
pub(super) fn conjuncts(e: Expr, out: &mut Vec<Expr>) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(*left, out);
            conjuncts(*right, out);
        }
        Expr::Nested(inner)
            if matches!(
                *inner,
                Expr::BinaryOp {
                    op: BinaryOperator::And,
                    ..
                }
            ) =>
        {
            conjuncts(*inner, out)
        }
        other => out.push(other),
    }
}

pub(super) fn outer(
    b: &mut Builder,
    s: &mut Select,
    order_by: &mut Option<OrderBy>,
    top: &mut TopLevel,
) -> MlResult<()> {
    if matches!(s.distinct, Some(Distinct::Distinct | Distinct::On(_)))
        && (contains_call(&*s) || !b.nested.is_empty())
    {
        return Err(distinct_unsupported());
    }
    let items = projection(b, s)?;

    if contains_call(&s.group_by)
        || mentions_nested(b, &s.group_by)
        || groups_by_prediction(&s.group_by, &items)
    {
        return Err(MlError::Unsupported(
            "GROUP BY a pgml.predict result is not supported".into(),
        ));
    }
    if let Some(h) = &s.having {
        if contains_call(h) || mentions_nested(b, h) {
            return Err(MlError::Unsupported(
                "HAVING on a pgml.predict result is not supported".into(),
            ));
        }
    }

    if let Some(selection) = s.selection.take() {
        let mut parts = Vec::new();
        conjuncts(selection, &mut parts);
        let mut keep: Option<Expr> = None;
        for part in parts {
            if contains_call(&part) || mentions_nested(b, &part) {
                let cond = cond_from_expr(&part, &mut |e| b.proxy_call(e))?;
                top.filter = Some(match top.filter.take() {
                    Some(prev) => Cond::And(Box::new(prev), Box::new(cond)),
                    None => cond,
                });
            } else {
                keep = Some(match keep {
                    Some(prev) => Expr::BinaryOp {
                        left: Box::new(prev),
                        op: BinaryOperator::And,
                        right: Box::new(part),
                    },
                    None => part,
                });
            }
        }
        s.selection = keep;
        if top.filter.is_some()
            && (has_group_by(&s.group_by) || s.having.is_some() || has_aggregate(&s.projection))
        {
            return Err(MlError::Unsupported(
                "a WHERE condition on pgml.predict together with GROUP BY, HAVING or aggregates is not \
                 supported (pgmlcat filters the rows the server returns, after grouping)"
                    .into(),
            ));
        }
    }

    if let Some(ob) = order_by.as_ref() {
        if let Some(keys) = order_keys(b, ob, &items)? {
            top.order = keys;
            *order_by = None;
        }
    }
    s.projection.append(&mut b.hidden_items);
    Ok(())
}

/// Replaces the outer SELECT list's calls and references to subquery
/// predictions; describes each item.
fn projection(b: &mut Builder, s: &mut Select) -> MlResult<Vec<Item>> {
    let mut items = Vec::with_capacity(s.projection.len());
    for item in s.projection.iter_mut() {
        if matches!(
            item,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        ) {
            items.push(Item::Wildcard);
            continue;
        }
        if let Some((marker, name)) = b.replace_item(item)? {
            items.push(Item::Pred { marker, name });
            continue;
        }
        let reference = match &*item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                b.nested_ref(e)?
            }
            _ => None,
        };
        if let Some(n) = reference {
            let call = b.markers.get(n.marker).map(|m| m.call).ok_or_else(|| {
                MlError::Internal("marker of a subquery prediction is missing".into())
            })?;
            match item {
                SelectItem::UnnamedExpr(e) => {
                    *e = renamed_ref(e, n.marker);
                    items.push(Item::Pred {
                        marker: n.marker,
                        name: n.name,
                    });
                }
                SelectItem::ExprWithAlias { expr, alias } => {
                    let name = folded(alias);
                    let k = b.add_marker(call, Some(name.clone()));
                    *expr = renamed_ref(expr, n.marker);
                    *alias = marker_ident(k);
                    items.push(Item::Pred { marker: k, name });
                }
                _ => {}
            }
            continue;
        }
        if contains_call(&*item) {
            return Err(MlError::Unsupported(format!(
                "pgml.predict inside an expression (`{item}`) is not supported; select the call as a column of its own"
            )));
        }
        if mentions_nested(b, &*item) {
            return Err(MlError::Unsupported(format!(
                "`{item}` uses a subquery's pgml.predict column inside an expression, which is not supported"
            )));
        }
        items.push(Item::Other);
    }
    Ok(items)
}

fn position(e: &Expr) -> Option<usize> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// The item an ORDER BY/GROUP BY position refers to; `Err(())` when a `*`
/// before it makes the position unknowable.
fn item_at(items: &[Item], pos: usize) -> Result<Option<&Item>, ()> {
    let idx = pos.checked_sub(1).ok_or(())?;
    if items
        .iter()
        .take(idx + 1)
        .any(|i| matches!(i, Item::Wildcard))
    {
        return Err(());
    }
    Ok(items.get(idx))
}

fn pred_named<'a>(items: &'a [Item], e: &Expr) -> Option<&'a Item> {
    let Expr::Identifier(i) = e else { return None };
    let name = folded(i);
    items
        .iter()
        .find(|it| matches!(it, Item::Pred { name: n, .. } if *n == name))
}

fn has_pred(items: &[Item]) -> bool {
    items.iter().any(|i| matches!(i, Item::Pred { .. }))
}

fn groups_by_prediction(g: &GroupByExpr, items: &[Item]) -> bool {
    let GroupByExpr::Expressions(exprs, _) = g else {
        return false;
    };
    exprs.iter().any(|e| {
        pred_named(items, e).is_some()
            || position(e).is_some_and(|p| match item_at(items, p) {
                Ok(it) => matches!(it, Some(Item::Pred { .. })),
                Err(()) => has_pred(items),
            })
    })
}

/// `Some(keys)` when ORDER BY sorts by predictions only (the proxy sorts);
/// `None` when it sorts by server columns only (the server sorts).
fn order_keys(b: &mut Builder, ob: &OrderBy, items: &[Item]) -> MlResult<Option<Vec<SortKey>>> {
    let OrderByKind::Expressions(exprs) = &ob.kind else {
        return Ok(None);
    };
    let mut keys = Vec::new();
    let mut server = 0;
    for key in exprs {
        let e = &key.expr;
        let marker = if let Some(Item::Pred { marker, .. }) = pred_named(items, e) {
            Some(*marker)
        } else if let Some(k) = b.proxy_call(e)? {
            Some(k)
        } else if let Some(p) = position(e) {
            match item_at(items, p) {
                Ok(Some(Item::Pred { marker, .. })) => Some(*marker),
                Ok(_) => None,
                Err(()) if has_pred(items) => {
                    return Err(MlError::Unsupported(format!(
                        "ORDER BY {p} after a * in a SELECT list with pgml.predict is not supported; order by the name"
                    )))
                }
                Err(()) => None,
            }
        } else if contains_call(e) || mentions_nested(b, e) {
            return Err(MlError::Unsupported(format!(
                "ORDER BY an expression of a prediction (`{e}`) is not supported; order by the prediction itself"
            )));
        } else {
            None
        };
        match marker {
            Some(marker) => {
                let desc = match &key.options.sort {
                    None | Some(OrderBySort::Asc) => false,
                    Some(OrderBySort::Desc) => true,
                    Some(OrderBySort::Using(op)) => {
                        return Err(MlError::Unsupported(format!(
                            "ORDER BY a prediction USING {op} is not supported"
                        )))
                    }
                };
                if key.with_fill.is_some() {
                    return Err(MlError::Unsupported(
                        "ORDER BY ... WITH FILL is not supported".into(),
                    ));
                }
                keys.push(SortKey {
                    marker,
                    desc,
                    nulls_first: key.options.nulls_first.unwrap_or(desc),
                });
            }
            None => server += 1,
        }
    }
    if keys.is_empty() {
        return Ok(None);
    }
    if server > 0 {
        return Err(MlError::Unsupported(
            "ORDER BY mixing pgml.predict results with other keys is not supported: the server cannot \
             sort by a prediction and pgmlcat sorts by predictions only"
                .into(),
        ));
    }
    Ok(Some(keys))
}

fn count(e: &Expr, what: &str) -> MlResult<Option<u64>> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Null => Ok(None),
            Value::Number(n, _) => n.parse::<u64>().map(Some).map_err(|_| {
                MlError::invalid(format!("{what} must be a non-negative integer, not {n}"))
            }),
            _ => Err(limit_unsupported(e, what)),
        },
        Expr::Nested(inner) => count(inner, what),
        _ => Err(limit_unsupported(e, what)),
    }
}

fn limit_unsupported(e: &Expr, what: &str) -> MlError {
    MlError::Unsupported(format!(
        "{what} {e} with a WHERE or ORDER BY on pgml.predict is not supported; use an integer constant"
    ))
}

/// Takes LIMIT/OFFSET/FETCH off the statement for the proxy to apply.
pub(super) fn take_limit(q: &mut Query) -> MlResult<(Option<u64>, u64)> {
    let mut limit = None;
    let mut offset = 0;
    match q.limit_clause.take() {
        None => {}
        Some(LimitClause::LimitOffset {
            limit: l,
            offset: o,
            limit_by,
        }) => {
            if !limit_by.is_empty() {
                return Err(MlError::Unsupported("LIMIT ... BY is not supported".into()));
            }
            if let Some(l) = l {
                limit = count(&l, "LIMIT")?;
            }
            if let Some(o) = o {
                offset = count(&o.value, "OFFSET")?.unwrap_or(0);
            }
        }
        Some(LimitClause::OffsetCommaLimit { .. }) => {
            return Err(MlError::Unsupported(
                "LIMIT offset, count is not supported".into(),
            ))
        }
    }
    if let Some(fetch) = q.fetch.take() {
        if fetch.with_ties || fetch.percent {
            return Err(MlError::Unsupported(
                "FETCH ... WITH TIES or PERCENT with pgml.predict is not supported".into(),
            ));
        }
        let n = match &fetch.quantity {
            Some(e) => count(e, "FETCH FIRST")?,
            None => Some(1),
        };
        limit = match (limit, n) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok((limit, offset))
}
