//! The planner's working state while it rewrites a statement: the calls
//! found so far, their marker columns, the predictions of subqueries and
//! CTEs visible to the outer query by name, and the hidden columns the
//! outer SELECT gets for the proxy's WHERE/ORDER BY. `plan` drives it over
//! CTEs, FROM and the outer SELECT (`select`).

use std::collections::HashMap;

use sqlparser::ast::{
    Distinct, Expr, Ident, Query, SelectItem, SetExpr, TableFactor, TableWithJoins,
};

use crate::ml::error::{MlError, MlResult};

use super::calls::{analyse, as_call, contains_call, folded, parse_expr};
use super::types::{Call, Func, Marker, MARKER_PREFIX};

pub(super) fn marker_ident(k: usize) -> Ident {
    Ident::with_quote('"', format!("{MARKER_PREFIX}{k}"))
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
        self.refuse_nested_features(f)?;
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
            if !func.is_number() {
                return Err(MlError::Unsupported(format!(
                    "comparing or sorting the {} result of pgml.{} is not supported",
                    crate::ml::predict::lookup::value_type(func),
                    func.name()
                )));
            }
            self.refuse_nested_features(f)?;
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
            if let Some(c) = self.calls.get(call).filter(|c| !c.func.is_number()) {
                return Err(MlError::Unsupported(format!(
                    "comparing or sorting the {} column {} is not supported",
                    crate::ml::predict::lookup::value_type(c.func),
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

    /// Features made of a subquery's prediction are the proxy's values,
    /// which the server cannot compute: that shape goes the general way.
    fn refuse_nested_features(&self, f: &sqlparser::ast::Function) -> MlResult<()> {
        let uses = sqlparser::ast::visit_expressions(&f.args, |e| match e {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => match self.nested_ref(e) {
                Ok(None) => std::ops::ControlFlow::Continue(()),
                _ => std::ops::ControlFlow::Break(()),
            },
            _ => std::ops::ControlFlow::Continue(()),
        })
        .is_break();
        if uses {
            return Err(MlError::Unsupported(
                "features made of a subquery's prediction are not streamed".into(),
            ));
        }
        Ok(())
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

    pub fn nested_in_from(&mut self, twj: &mut TableWithJoins) -> MlResult<()> {
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
    pub fn nested(&mut self, q: &mut Query, qualifier: String) -> MlResult<()> {
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
