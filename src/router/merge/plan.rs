//! Planning a keyless read for every shard: which columns combine how,
//! which travel hidden (an average's count, GROUP BY and ORDER BY keys not
//! in the select list), and how far each shard's LIMIT must reach. Each
//! step below is one question asked of the parsed SELECT.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, Function, FunctionArguments, GroupByExpr, Ident, LimitClause, ObjectName, OrderBy,
    OrderByKind, OrderBySort, Query, Select, SelectItem, SetExpr, Statement, Value, ValueWithSpan,
    Visit, Visitor,
};
use sqlparser::tokenizer::Span;

use super::{ColumnRef, Combine, MergePlan, OrderKey};
use crate::errors::Error;

fn unsupported(what: &str) -> Error {
    Error::Unsupported(format!(
        "{what} across shards is not supported; add the sharding key to run it on one shard"
    ))
}

fn aggregate_kind(f: &Function) -> Option<&'static str> {
    let name = f.name.to_string().to_ascii_lowercase();
    match name.rsplit('.').next().unwrap_or(&name) {
        "count" => Some("count"),
        "sum" => Some("sum"),
        "min" => Some("min"),
        "max" => Some("max"),
        "avg" => Some("avg"),
        _ => None,
    }
}

const ANY_AGGREGATE: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "array_agg",
    "string_agg",
    "json_agg",
    "jsonb_agg",
    "bool_and",
    "bool_or",
    "every",
    "stddev",
    "variance",
    "stddev_pop",
    "stddev_samp",
    "var_pop",
    "var_samp",
    "percentile_cont",
    "percentile_disc",
    "mode",
    "json_object_agg",
    "jsonb_object_agg",
    "bit_and",
    "bit_or",
    "corr",
];

struct Scan {
    window: bool,
    aggregate: bool,
}

impl Visitor for Scan {
    type Break = ();
    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = e {
            if f.over.is_some() {
                self.window = true;
            }
            let name = f.name.to_string().to_ascii_lowercase();
            if ANY_AGGREGATE.contains(&name.rsplit('.').next().unwrap_or(&name)) {
                self.aggregate = true;
            }
        }
        ControlFlow::Continue(())
    }
}

fn scan(e: &Expr) -> Scan {
    let mut s = Scan {
        window: false,
        aggregate: false,
    };
    let _ = e.visit(&mut s);
    s
}

fn number(e: &Expr) -> Option<u64> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

fn num_expr(n: u64) -> Expr {
    Expr::Value(ValueWithSpan {
        value: Value::Number(n.to_string(), false),
        span: Span::empty(),
    })
}

fn call(name: &str, args: FunctionArguments) -> Expr {
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args,
        within_group: vec![],
        filter: None,
        null_treatment: None,
        over: None,
    })
}

/// The avg placeholder before its hidden count exists.
const AVG_PENDING: Combine = Combine::Avg { count: usize::MAX };

/// Columns appended for the merge, with how each combines.
#[derive(Default)]
struct Hidden {
    exprs: Vec<Expr>,
    combine: Vec<Combine>,
}

impl Hidden {
    fn push(&mut self, e: Expr, c: Combine) -> usize {
        self.exprs.push(e);
        self.combine.push(c);
        self.exprs.len() - 1
    }
}

/// The select list's output as ORDER BY and GROUP BY may name it.
struct Output {
    /// Each item's expression as text ("" for wildcards).
    texts: Vec<String>,
    /// Each item's name, lower case: its alias or its column name.
    names: Vec<Option<String>>,
}

impl Output {
    fn of(select: &Select) -> Output {
        let texts = select
            .projection
            .iter()
            .map(|item| match item {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                    e.to_string()
                }
                _ => String::new(),
            })
            .collect();
        let names = select
            .projection
            .iter()
            .map(|item| match item {
                SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.to_ascii_lowercase()),
                SelectItem::UnnamedExpr(Expr::Identifier(i)) => Some(i.value.to_ascii_lowercase()),
                SelectItem::UnnamedExpr(Expr::CompoundIdentifier(p)) => {
                    p.last().map(|i| i.value.to_ascii_lowercase())
                }
                _ => None,
            })
            .collect();
        Output { texts, names }
    }

    fn named(&self, id: &Ident) -> Option<usize> {
        let want = id.value.to_ascii_lowercase();
        self.names.iter().position(|a| a.as_deref() == Some(&want))
    }
}

/// The select list, classified: how each item combines, whether the query
/// aggregates, whether it has a wildcard.
struct Projection {
    combine: Vec<Combine>,
    aggregating: bool,
    wildcard: bool,
}

/// Plans a keyless read. `Ok(None)`: not a SELECT pgmlcat can look into.
pub fn plan(statement: &Statement) -> Result<Option<MergePlan>, Error> {
    let Statement::Query(query) = statement else {
        return Ok(None);
    };
    let mut query = query.clone();
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(unsupported("UNION/INTERSECT/EXCEPT"));
    };
    if select.distinct.is_some() {
        return Err(unsupported("DISTINCT"));
    }
    if select.having.is_some() {
        return Err(unsupported("HAVING"));
    }
    let mut projection = classify(select)?;
    let mut hidden = Hidden::default();
    split_averages(select, &mut projection.combine, &mut hidden);
    let output = Output::of(select);
    hide_group_keys(select, &output, &mut hidden)?;
    let order = order_keys(query.order_by.as_ref(), &output, &projection, &mut hidden)?;
    let select_items = &mut select.projection;
    for (k, e) in hidden.exprs.iter().enumerate() {
        select_items.push(SelectItem::ExprWithAlias {
            expr: e.clone(),
            alias: Ident::new(format!("pgmlcat_hidden_{k}")),
        });
    }
    let (limit, offset) = limit_and_offset(&query)?;
    // Shards return the first offset+limit rows; grouped queries need
    // every group.
    query.limit_clause = match limit {
        Some(l) if !projection.aggregating => Some(LimitClause::LimitOffset {
            limit: Some(num_expr(l + offset)),
            offset: None,
            limit_by: vec![],
        }),
        _ => None,
    };
    Ok(Some(MergePlan {
        shard_sql: Statement::Query(query).to_string(),
        hidden: hidden.exprs.len(),
        order,
        limit,
        offset,
        combine: projection
            .aggregating
            .then_some((projection.combine, hidden.combine)),
    }))
}

/// How each select-list item combines across shards.
fn classify(select: &Select) -> Result<Projection, Error> {
    let mut p = Projection {
        combine: Vec::new(),
        aggregating: !matches!(&select.group_by, GroupByExpr::Expressions(g, _) if g.is_empty()),
        wildcard: false,
    };
    for item in &select.projection {
        let expr = match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
            _ => {
                p.wildcard = true;
                p.combine.push(Combine::Group);
                continue;
            }
        };
        if scan(expr).window {
            return Err(unsupported("window functions"));
        }
        match expr {
            Expr::Function(f) if aggregate_kind(f).is_some() => {
                if let FunctionArguments::List(list) = &f.args {
                    if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
                        return Err(unsupported("aggregates with DISTINCT or ORDER BY"));
                    }
                }
                if f.filter.is_some() || f.over.is_some() {
                    return Err(unsupported("aggregates with FILTER or OVER"));
                }
                p.aggregating = true;
                p.combine.push(match aggregate_kind(f) {
                    Some("count") => Combine::Count,
                    Some("sum") => Combine::Sum,
                    Some("min") => Combine::Min,
                    Some("max") => Combine::Max,
                    _ => AVG_PENDING,
                });
            }
            e if scan(e).aggregate => return Err(unsupported("expressions over aggregates")),
            _ => p.combine.push(Combine::Group),
        }
    }
    if p.aggregating && p.wildcard {
        return Err(unsupported("SELECT * with aggregates"));
    }
    Ok(p)
}

/// avg(x) becomes sum(x) plus a hidden count(x); the client still sees a
/// column named avg.
fn split_averages(select: &mut Select, combine: &mut [Combine], hidden: &mut Hidden) {
    for (i, item) in select.projection.iter_mut().enumerate() {
        if combine[i] != AVG_PENDING {
            continue;
        }
        let (SelectItem::UnnamedExpr(Expr::Function(f))
        | SelectItem::ExprWithAlias {
            expr: Expr::Function(f),
            ..
        }) = item
        else {
            continue;
        };
        let args = f.args.clone();
        f.name = ObjectName::from(vec![Ident::new("sum")]);
        if let SelectItem::UnnamedExpr(e) = item {
            *item = SelectItem::ExprWithAlias {
                expr: e.clone(),
                alias: Ident::new("avg"),
            };
        }
        combine[i] = Combine::Avg {
            count: hidden.push(call("count", args), Combine::Count),
        };
    }
}

/// GROUP BY keys missing from the select list travel as hidden columns.
fn hide_group_keys(select: &Select, output: &Output, hidden: &mut Hidden) -> Result<(), Error> {
    let GroupByExpr::Expressions(keys, modifiers) = &select.group_by else {
        return Ok(());
    };
    if !modifiers.is_empty() {
        return Err(unsupported("GROUP BY ROLLUP/CUBE/GROUPING SETS"));
    }
    for key in keys {
        let in_list = number(key).is_some()
            || output.texts.contains(&key.to_string())
            || matches!(key, Expr::Identifier(i) if output.named(i).is_some());
        if !in_list {
            hidden.push(key.clone(), Combine::Group);
        }
    }
    Ok(())
}

/// ORDER BY: each key must be found in the output, or travel hidden.
fn order_keys(
    order_by: Option<&OrderBy>,
    output: &Output,
    projection: &Projection,
    hidden: &mut Hidden,
) -> Result<Vec<OrderKey>, Error> {
    let Some(order_by) = order_by else {
        return Ok(Vec::new());
    };
    let OrderByKind::Expressions(exprs) = &order_by.kind else {
        return Err(unsupported("ORDER BY ALL"));
    };
    let mut order = Vec::new();
    for o in exprs {
        let desc = match o.options.sort {
            Some(OrderBySort::Desc) => true,
            Some(OrderBySort::Using(_)) => return Err(unsupported("ORDER BY ... USING")),
            _ => false,
        };
        let column = if let Some(n) = number(&o.expr) {
            ColumnRef::Position(n.saturating_sub(1) as usize)
        } else if let Some(i) = output.texts.iter().position(|p| *p == o.expr.to_string()) {
            ColumnRef::Position(i)
        } else if let Expr::Identifier(id) = &o.expr {
            match output.named(id) {
                Some(i) => ColumnRef::Position(i),
                None if projection.wildcard => ColumnRef::Name(id.value.to_ascii_lowercase()),
                None => ColumnRef::Hidden(hidden.push(o.expr.clone(), Combine::Group)),
            }
        } else {
            if projection.aggregating && scan(&o.expr).aggregate {
                return Err(unsupported("ORDER BY an aggregate not in the select list"));
            }
            ColumnRef::Hidden(hidden.push(o.expr.clone(), Combine::Group))
        };
        order.push(OrderKey {
            column,
            desc,
            nulls_first: o.options.nulls_first.unwrap_or(desc),
        });
    }
    Ok(order)
}

/// The constant LIMIT and OFFSET of the query.
fn limit_and_offset(query: &Query) -> Result<(Option<u64>, u64), Error> {
    if query.fetch.is_some() {
        return Err(unsupported("FETCH FIRST"));
    }
    let Some(clause) = &query.limit_clause else {
        return Ok((None, 0));
    };
    let LimitClause::LimitOffset {
        limit,
        offset,
        limit_by,
    } = clause
    else {
        return Err(unsupported("LIMIT a, b"));
    };
    if !limit_by.is_empty() {
        return Err(unsupported("LIMIT BY"));
    }
    let limit = match limit {
        Some(l) => Some(number(l).ok_or_else(|| unsupported("a non-constant LIMIT"))?),
        None => None,
    };
    let offset = match offset {
        Some(o) => number(&o.value).ok_or_else(|| unsupported("a non-constant OFFSET"))?,
        None => 0,
    };
    Ok((limit, offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::merge::rows::{add, aggregate, compare, oid, sort};
    use std::cmp::Ordering;

    fn plan(sql: &str) -> Result<Option<MergePlan>, Error> {
        let statements =
            sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql)
                .map_err(|e| Error::protocol(e.to_string()))?;
        super::plan(&statements[0])
    }

    #[test]
    fn plans_limits_and_orders() {
        let p = plan("select id, name from users order by name desc limit 10 offset 5")
            .unwrap()
            .unwrap();
        assert!(p.shard_sql.contains("LIMIT 15"), "{}", p.shard_sql);
        assert!(!p.shard_sql.contains("OFFSET"));
        assert_eq!((p.limit, p.offset), (Some(10), 5));
        assert_eq!(
            p.order,
            vec![OrderKey {
                column: ColumnRef::Position(1),
                desc: true,
                nulls_first: true
            }]
        );
        assert!(p.combine.is_none());
        let p = plan("select name from users order by id").unwrap().unwrap();
        assert_eq!(p.hidden, 1);
        assert!(p.shard_sql.contains("pgmlcat_hidden_0"));
        assert_eq!(p.order[0].column, ColumnRef::Hidden(0));
        let p = plan("select * from users order by id").unwrap().unwrap();
        assert_eq!(p.order[0].column, ColumnRef::Name("id".into()));
    }

    #[test]
    fn plans_aggregates() {
        let p = plan("select g, count(*), avg(x) from t group by g order by 2 desc limit 3")
            .unwrap()
            .unwrap();
        assert!(
            !p.shard_sql.to_uppercase().contains("LIMIT"),
            "{}",
            p.shard_sql
        );
        assert!(p.shard_sql.contains("sum(x) AS avg"), "{}", p.shard_sql);
        assert!(
            p.shard_sql.contains("count(x) AS pgmlcat_hidden_0"),
            "{}",
            p.shard_sql
        );
        let (cols, hidden) = p.combine.unwrap();
        assert_eq!(
            cols,
            vec![Combine::Group, Combine::Count, Combine::Avg { count: 0 }]
        );
        assert_eq!(hidden, vec![Combine::Count]);
        let p = plan("select count(*) from t group by g").unwrap().unwrap();
        assert_eq!(p.hidden, 1, "the group key travels hidden");
    }

    #[test]
    fn refuses_what_it_cannot_merge() {
        for sql in [
            "select distinct a from t",
            "select a, count(*) from t group by a having count(*) > 1",
            "select a, rank() over (order by a) from t",
            "select a from t union select a from u",
            "select sum(x) * 2 from t",
            "select count(distinct a) from t",
            "select a from t limit $1",
        ] {
            assert!(matches!(plan(sql), Err(Error::Unsupported(_))), "{sql}");
        }
        assert!(plan("insert into t values (1)").unwrap().is_none());
    }

    #[test]
    fn arithmetic_and_order() {
        assert_eq!(add("1.50", "2.255", oid::NUMERIC).unwrap(), "3.755");
        assert_eq!(add("-7", "3", oid::INT8).unwrap(), "-4");
        assert_eq!(add("0.001", "-0.002", oid::NUMERIC).unwrap(), "-0.001");
        assert_eq!(compare("10", "9", oid::INT4), Ordering::Greater);
        assert_eq!(compare("10", "9", 25), Ordering::Less);
        assert_eq!(compare("2.50", "2.5", oid::NUMERIC), Ordering::Equal);
        let mut rows = vec![vec![Some("2".into())], vec![None], vec![Some("10".into())]];
        sort(&mut rows, &[(0, false, false)], &[oid::INT4]);
        assert_eq!(
            rows,
            vec![vec![Some("2".into())], vec![Some("10".into())], vec![None]]
        );
    }

    #[test]
    fn folds_groups() {
        let rows = vec![
            vec![
                Some("a".into()),
                Some("2".into()),
                Some("5".into()),
                Some("1".into()),
            ],
            vec![
                Some("b".into()),
                Some("1".into()),
                Some("7".into()),
                Some("7".into()),
            ],
            vec![
                Some("a".into()),
                Some("3".into()),
                Some("1".into()),
                Some("9".into()),
            ],
        ];
        let combine = [Combine::Group, Combine::Count, Combine::Min, Combine::Max];
        let out = aggregate(rows, &combine, &[25, oid::INT8, oid::INT4, oid::INT4]).unwrap();
        assert_eq!(
            out[0],
            vec![
                Some("a".into()),
                Some("5".into()),
                Some("1".into()),
                Some("9".into())
            ]
        );
        assert_eq!(out[1][0].as_deref(), Some("b"));
    }
}
