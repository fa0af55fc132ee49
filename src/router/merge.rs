//! Reads that name no shard run on every shard; this plans the query each
//! shard gets and merges what they return into one result, as one Postgres
//! holding all rows would have answered.
//!
//! Supported: a single SELECT (joins of co-located tables and CTEs included)
//! with ORDER BY, LIMIT/OFFSET, GROUP BY and top-level count/sum/min/max/avg.
//! Refused with 0A000: DISTINCT, HAVING, window functions, set operations,
//! expressions over aggregates, aggregate DISTINCT/FILTER.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, Function, FunctionArguments, GroupByExpr, Ident, LimitClause, ObjectName, OrderByKind,
    OrderBySort, SelectItem, SetExpr, Statement, Value, ValueWithSpan, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Span;

use crate::errors::Error;

/// Where an output column is: a position in the select list, a name to
/// find in the RowDescription, or the k-th hidden column pgmlcat appended.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnRef {
    Position(usize),
    Name(String),
    Hidden(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    pub column: ColumnRef,
    pub desc: bool,
    pub nulls_first: bool,
}

/// How a column is combined across shards in an aggregate query.
#[derive(Debug, Clone, PartialEq)]
pub enum Combine {
    Group,
    Count,
    Sum,
    Min,
    Max,
    /// This column holds the sum; the count is in the hidden column.
    Avg {
        count: usize,
    },
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub shard_sql: String,
    pub hidden: usize,
    pub order: Vec<SortKey>,
    pub limit: Option<u64>,
    pub offset: u64,
    /// Per select-list item, then per hidden column (None: not aggregating).
    pub combine: Option<(Vec<Combine>, Vec<Combine>)>,
}

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

/// Plans a keyless read. `Ok(None)`: not a SELECT pgmlcat can look into.
pub fn plan(sql: &str) -> Result<Option<Plan>, Error> {
    let Ok(mut statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
        return Ok(None);
    };
    if statements.len() != 1 {
        return Err(unsupported("more than one statement"));
    }
    let Statement::Query(query) = &mut statements[0] else {
        return Ok(None);
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(unsupported("UNION/INTERSECT/EXCEPT"));
    };
    if select.distinct.is_some() {
        return Err(unsupported("DISTINCT"));
    }
    if select.having.is_some() {
        return Err(unsupported("HAVING"));
    }
    // Classify the select list.
    let mut combine = Vec::new();
    let mut aggregating =
        !matches!(&select.group_by, GroupByExpr::Expressions(g, _) if g.is_empty());
    let mut wildcard = false;
    for item in &select.projection {
        let expr = match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
            _ => {
                wildcard = true;
                combine.push(Combine::Group);
                continue;
            }
        };
        let s = scan(expr);
        if s.window {
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
                aggregating = true;
                combine.push(match aggregate_kind(f) {
                    Some("count") => Combine::Count,
                    Some("sum") => Combine::Sum,
                    Some("min") => Combine::Min,
                    Some("max") => Combine::Max,
                    _ => Combine::Avg { count: usize::MAX },
                });
            }
            e if scan(e).aggregate => return Err(unsupported("expressions over aggregates")),
            _ => combine.push(Combine::Group),
        }
    }
    if aggregating && wildcard {
        return Err(unsupported("SELECT * with aggregates"));
    }
    let mut hidden: Vec<Expr> = Vec::new();
    let mut hidden_combine = Vec::new();
    // avg(x) becomes sum(x) plus a hidden count(x).
    for (i, item) in select.projection.iter_mut().enumerate() {
        if combine[i] != (Combine::Avg { count: usize::MAX }) {
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
        // An unaliased avg(x) is still called "avg" by the client.
        if let SelectItem::UnnamedExpr(e) = item {
            *item = SelectItem::ExprWithAlias {
                expr: e.clone(),
                alias: Ident::new("avg"),
            };
        }
        combine[i] = Combine::Avg {
            count: hidden.len(),
        };
        hidden.push(call("count", args));
        hidden_combine.push(Combine::Count);
    }
    // GROUP BY keys missing from the select list travel as hidden columns.
    let projected: Vec<String> = select
        .projection
        .iter()
        .map(|item| match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e.to_string(),
            _ => String::new(),
        })
        .collect();
    let aliases: Vec<Option<String>> = select
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
    if let GroupByExpr::Expressions(keys, modifiers) = &select.group_by {
        if !modifiers.is_empty() {
            return Err(unsupported("GROUP BY ROLLUP/CUBE/GROUPING SETS"));
        }
        for key in keys {
            let in_list = number(key).is_some()
                || projected.contains(&key.to_string())
                || matches!(key, Expr::Identifier(i) if aliases.contains(&Some(i.value.to_ascii_lowercase())));
            if !in_list {
                hidden.push(key.clone());
                hidden_combine.push(Combine::Group);
            }
        }
    }
    // ORDER BY: each key must be found in the output, or travel hidden.
    let mut order = Vec::new();
    if let Some(order_by) = &query.order_by {
        let OrderByKind::Expressions(exprs) = &order_by.kind else {
            return Err(unsupported("ORDER BY ALL"));
        };
        for o in exprs {
            let desc = match o.options.sort {
                Some(OrderBySort::Desc) => true,
                Some(OrderBySort::Using(_)) => return Err(unsupported("ORDER BY ... USING")),
                _ => false,
            };
            let column = if let Some(n) = number(&o.expr) {
                ColumnRef::Position(n.saturating_sub(1) as usize)
            } else if let Some(i) = projected.iter().position(|p| *p == o.expr.to_string()) {
                ColumnRef::Position(i)
            } else if let Expr::Identifier(id) = &o.expr {
                match aliases
                    .iter()
                    .position(|a| a.as_deref() == Some(&id.value.to_ascii_lowercase()))
                {
                    Some(i) => ColumnRef::Position(i),
                    None if wildcard => ColumnRef::Name(id.value.to_ascii_lowercase()),
                    None => {
                        hidden.push(o.expr.clone());
                        hidden_combine.push(Combine::Group);
                        ColumnRef::Hidden(hidden.len() - 1)
                    }
                }
            } else {
                if aggregating && scan(&o.expr).aggregate {
                    return Err(unsupported("ORDER BY an aggregate not in the select list"));
                }
                hidden.push(o.expr.clone());
                hidden_combine.push(Combine::Group);
                ColumnRef::Hidden(hidden.len() - 1)
            };
            order.push(SortKey {
                column,
                desc,
                nulls_first: o.options.nulls_first.unwrap_or(desc),
            });
        }
    }
    for (k, e) in hidden.iter().enumerate() {
        select.projection.push(SelectItem::ExprWithAlias {
            expr: e.clone(),
            alias: Ident::new(format!("pgmlcat_hidden_{k}")),
        });
    }
    // LIMIT/OFFSET: shards return the first offset+limit rows; grouped
    // queries need every group.
    let (mut limit, mut offset) = (None, 0);
    if let Some(clause) = &query.limit_clause {
        let LimitClause::LimitOffset {
            limit: l,
            offset: o,
            limit_by,
        } = clause
        else {
            return Err(unsupported("LIMIT a, b"));
        };
        if !limit_by.is_empty() {
            return Err(unsupported("LIMIT BY"));
        }
        if let Some(l) = l {
            limit = Some(number(l).ok_or_else(|| unsupported("a non-constant LIMIT"))?);
        }
        if let Some(o) = o {
            offset = number(&o.value).ok_or_else(|| unsupported("a non-constant OFFSET"))?;
        }
    }
    if query.fetch.is_some() {
        return Err(unsupported("FETCH FIRST"));
    }
    query.limit_clause = match limit {
        Some(l) if !aggregating => Some(LimitClause::LimitOffset {
            limit: Some(num_expr(l + offset)),
            offset: None,
            limit_by: vec![],
        }),
        _ => None,
    };
    Ok(Some(Plan {
        shard_sql: statements[0].to_string(),
        hidden: hidden.len(),
        order,
        limit,
        offset,
        combine: aggregating.then_some((combine, hidden_combine)),
    }))
}

/// Type oids pgmlcat compares and adds by value.
pub use crate::net::oid;

/// A decimal as (mantissa, scale): exact sums of ints and numerics.
fn decimal(s: &str) -> Option<(i128, u32)> {
    let s = s.trim();
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let m: i128 = format!("{int}{frac}").parse().ok()?;
    Some((if neg { -m } else { m }, frac.len() as u32))
}

fn rescale(m: i128, from: u32, to: u32) -> Option<i128> {
    m.checked_mul(10i128.checked_pow(to - from)?)
}

fn format_decimal(m: i128, scale: u32) -> String {
    let neg = m < 0;
    let digits = m.unsigned_abs().to_string();
    let s = if scale == 0 {
        digits
    } else {
        let padded = format!("{digits:0>width$}", width = scale as usize + 1);
        let (i, f) = padded.split_at(padded.len() - scale as usize);
        format!("{i}.{f}")
    };
    if neg {
        format!("-{s}")
    } else {
        s
    }
}

/// Exact a + b for integer/numeric text; floats add as f64.
pub fn add(a: &str, b: &str, type_oid: u32) -> Option<String> {
    if matches!(type_oid, oid::FLOAT4 | oid::FLOAT8) {
        let sum = a.parse::<f64>().ok()? + b.parse::<f64>().ok()?;
        return Some(format!("{sum}"));
    }
    let (ma, sa) = decimal(a)?;
    let (mb, sb) = decimal(b)?;
    let scale = sa.max(sb);
    let sum = rescale(ma, sa, scale)?.checked_add(rescale(mb, sb, scale)?)?;
    Some(format_decimal(sum, scale))
}

/// Compares two non-null values of a type the way Postgres orders them
/// (text by bytes, as the C collation does).
pub fn compare(a: &str, b: &str, type_oid: u32) -> Ordering {
    match type_oid {
        oid::INT2 | oid::INT4 | oid::INT8 | oid::OID | oid::NUMERIC => {
            match (decimal(a), decimal(b)) {
                (Some((ma, sa)), Some((mb, sb))) => {
                    let scale = sa.max(sb);
                    match (rescale(ma, sa, scale), rescale(mb, sb, scale)) {
                        (Some(x), Some(y)) => x.cmp(&y),
                        _ => float_cmp(a, b),
                    }
                }
                _ => float_cmp(a, b), // NaN, Infinity
            }
        }
        oid::FLOAT4 | oid::FLOAT8 => float_cmp(a, b),
        _ => a.as_bytes().cmp(b.as_bytes()),
    }
}

fn float_cmp(a: &str, b: &str) -> Ordering {
    let f = |s: &str| match s {
        "NaN" => f64::INFINITY, // Postgres sorts NaN above everything
        "Infinity" => f64::MAX,
        "-Infinity" => f64::MIN,
        s => s.parse().unwrap_or(0.0),
    };
    let (x, y) = (f(a), f(b));
    x.partial_cmp(&y).unwrap_or(Ordering::Equal)
}

pub type Row = Vec<Option<String>>;

/// Sorts rows by `keys` (resolved to column indexes) with Postgres's NULL placement.
pub fn sort(rows: &mut [Row], keys: &[(usize, bool, bool)], types: &[u32]) {
    rows.sort_by(|x, y| {
        for &(col, desc, nulls_first) in keys {
            let ord = match (&x[col], &y[col]) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => {
                    if nulls_first {
                        Ordering::Less
                    } else {
                        Ordering::Greater
                    }
                }
                (Some(_), None) => {
                    if nulls_first {
                        Ordering::Greater
                    } else {
                        Ordering::Less
                    }
                }
                (Some(a), Some(b)) => {
                    let o = compare(a, b, types[col]);
                    if desc {
                        o.reverse()
                    } else {
                        o
                    }
                }
            };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    });
}

/// Folds rows from all shards group by group.
pub fn aggregate(rows: Vec<Row>, combine: &[Combine], types: &[u32]) -> Result<Vec<Row>, Error> {
    let group_cols: Vec<usize> = combine
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == Combine::Group)
        .map(|(i, _)| i)
        .collect();
    let mut order: Vec<Vec<Option<String>>> = Vec::new();
    let mut groups: HashMap<Vec<Option<String>>, Row> = HashMap::new();
    for row in rows {
        let key: Vec<Option<String>> = group_cols.iter().map(|&i| row[i].clone()).collect();
        match groups.get_mut(&key) {
            None => {
                order.push(key.clone());
                groups.insert(key, row);
            }
            Some(acc) => {
                for (i, how) in combine.iter().enumerate() {
                    let merged = match (how, acc[i].take(), row[i].clone()) {
                        (Combine::Group, a, _) => a,
                        (_, None, b) => b,
                        (_, a, None) => a,
                        (Combine::Count | Combine::Sum | Combine::Avg { .. }, Some(a), Some(b)) => {
                            Some(add(&a, &b, types[i]).ok_or_else(|| {
                                Error::Unsupported(format!("cannot add {a} and {b}"))
                            })?)
                        }
                        (Combine::Min, Some(a), Some(b)) => {
                            Some(if compare(&b, &a, types[i]) == Ordering::Less {
                                b
                            } else {
                                a
                            })
                        }
                        (Combine::Max, Some(a), Some(b)) => {
                            Some(if compare(&b, &a, types[i]) == Ordering::Greater {
                                b
                            } else {
                                a
                            })
                        }
                    };
                    acc[i] = merged;
                }
            }
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|k| groups.remove(&k))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            vec![SortKey {
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
