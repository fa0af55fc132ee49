//! Merging what the shards returned, in text form: sums kept exact,
//! comparisons by type (integers and numerics by value, text by bytes as
//! the C collation does), ORDER BY over the union, re-aggregation by group.

use std::cmp::Ordering;
use std::collections::HashMap;

use super::{Combine, Row};
use crate::errors::Error;

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
