//! Summary statistics: the numbers imputation and scaling are fitted from,
//! and the per-column `statistics` kept in the snapshot's `columns` JSON.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::ml::frame::{Column, ColumnData};

/// Bins of the snapshot histogram.
const HISTOGRAM_BINS: usize = 20;

/// Quantile `q` in [0, 1] of ascending `sorted` values with linear
/// interpolation between ranks (numpy's default, which scikit-learn's
/// RobustScaler uses). NaN when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return f64::NAN;
    };
    let pos = q.clamp(0.0, 1.0) * last as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(last);
    match (sorted.get(lo), sorted.get(hi)) {
        (Some(a), Some(b)) => a + (b - a) * (pos - lo as f64),
        _ => f64::NAN,
    }
}

pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Population standard deviation (ddof = 0), as scikit-learn's StandardScaler.
pub fn std_dev(values: &[f64]) -> f64 {
    let m = mean(values);
    (values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / values.len() as f64).sqrt()
}

/// The most frequent of ascending `sorted` values, the smallest on a tie
/// (scikit-learn's SimpleImputer `most_frequent`). NaN when empty.
pub fn mode(sorted: &[f64]) -> f64 {
    let mut best = (f64::NAN, 0usize);
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i + 1;
        while j < sorted.len() && sorted[j] == sorted[i] {
            j += 1;
        }
        if j - i > best.1 {
            best = (sorted[i], j - i);
        }
        i = j;
    }
    best.0
}

pub fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    // Values equal under total_cmp are bit-identical: stability is moot.
    values.sort_unstable_by(f64::total_cmp);
    values
}

/// JSON number, or null for NaN/infinite (JSON has neither).
fn num(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        Value::Null
    }
}

/// The statistics PostgresML keeps per column, over `rows` of `col`: for
/// numbers (array elements pooled) min, max, mean, median, mode, std_dev,
/// missing, distinct, a 20-bin histogram and the ventiles (0%, 5%, ..., 100%);
/// for text missing, distinct, mode and `categories` (value → row count).
pub fn column_statistics(col: &Column, rows: &[usize]) -> Value {
    match &col.data {
        ColumnData::Float(values) => {
            let mut missing = 0;
            let mut present = Vec::with_capacity(rows.len());
            for v in rows.iter().filter_map(|&r| values.get(r)) {
                match v {
                    Some(x) if !x.is_nan() => present.push(*x),
                    _ => missing += 1,
                }
            }
            Value::Object(numeric_statistics(present, missing))
        }
        ColumnData::Array { values, width } => {
            let mut missing = 0;
            let mut present = Vec::new();
            for v in rows.iter().filter_map(|&r| values.get(r)) {
                match v {
                    Some(items) => present.extend(items.iter().filter(|x| !x.is_nan())),
                    None => missing += 1,
                }
            }
            let mut stats = numeric_statistics(present, missing);
            stats.insert("width".into(), json!(width));
            Value::Object(stats)
        }
        ColumnData::Text(values) => {
            let mut missing = 0;
            let mut order: Vec<&str> = Vec::new();
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for v in rows.iter().filter_map(|&r| values.get(r)) {
                match v {
                    Some(s) => {
                        let count = counts.entry(s.as_str()).or_insert(0);
                        if *count == 0 {
                            order.push(s);
                        }
                        *count += 1;
                    }
                    None => missing += 1,
                }
            }
            // First-seen order on ties, like the native codes.
            let mode = order.iter().fold(None::<(&str, usize)>, |best, s| {
                let c = counts.get(s).copied().unwrap_or(0);
                match best {
                    Some((_, b)) if b >= c => best,
                    _ => Some((s, c)),
                }
            });
            let categories: Map<String, Value> = order
                .iter()
                .map(|s| (s.to_string(), json!(counts.get(s).copied().unwrap_or(0))))
                .collect();
            json!({
                "missing": missing,
                "distinct": order.len(),
                "mode": mode.map(|(s, _)| s),
                "categories": categories,
            })
        }
    }
}

fn numeric_statistics(present: Vec<f64>, missing: usize) -> Map<String, Value> {
    let values = sorted(present);
    let (min, max) = match (values.first(), values.last()) {
        (Some(a), Some(b)) => (*a, *b),
        _ => (f64::NAN, f64::NAN),
    };
    let mut distinct = values.clone();
    distinct.dedup();
    let mut histogram = vec![0usize; HISTOGRAM_BINS];
    if !values.is_empty() {
        let width = (max - min) / HISTOGRAM_BINS as f64;
        for v in &values {
            let bin = if width > 0.0 {
                (((v - min) / width) as usize).min(HISTOGRAM_BINS - 1)
            } else {
                0
            };
            histogram[bin] += 1;
        }
    }
    let ventiles: Vec<Value> = (0..=20)
        .map(|i| num(quantile(&values, i as f64 / 20.0)))
        .collect();
    let mut stats = Map::new();
    stats.insert("min".into(), num(min));
    stats.insert("max".into(), num(max));
    stats.insert("mean".into(), num(mean(&values)));
    stats.insert("median".into(), num(quantile(&values, 0.5)));
    stats.insert("mode".into(), num(mode(&values)));
    stats.insert("std_dev".into(), num(std_dev(&values)));
    stats.insert("missing".into(), json!(missing));
    stats.insert("distinct".into(), json!(distinct.len()));
    stats.insert("histogram".into(), json!(histogram));
    stats.insert("ventiles".into(), Value::Array(ventiles));
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 2.5);
        assert_eq!(quantile(&v, 0.25), 1.75);
        assert_eq!(quantile(&v, 0.75), 3.25);
        assert_eq!(quantile(&v, 1.0), 4.0);
        assert_eq!(quantile(&[7.0], 0.3), 7.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn mode_takes_the_smallest_on_ties() {
        assert_eq!(mode(&[1.0, 2.0, 2.0, 3.0, 3.0]), 2.0);
        assert_eq!(mode(&[5.0]), 5.0);
        assert!(mode(&[]).is_nan());
    }

    #[test]
    fn population_std() {
        assert_eq!(std_dev(&[1.0, 3.0]), 1.0);
    }

    #[test]
    fn numeric_column() {
        let col = Column {
            name: "x".into(),
            pg_type: "real".into(),
            data: ColumnData::Float(vec![
                Some(4.0),
                None,
                Some(1.0),
                Some(1.0),
                Some(2.0),
                Some(100.0),
            ]),
        };
        // Row 5 (100) is not among the rows asked for.
        let s = column_statistics(&col, &[0, 1, 2, 3, 4]);
        assert_eq!(s["min"], json!(1.0));
        assert_eq!(s["max"], json!(4.0));
        assert_eq!(s["mean"], json!(2.0));
        assert_eq!(s["median"], json!(1.5));
        assert_eq!(s["mode"], json!(1.0));
        assert_eq!(s["missing"], json!(1));
        assert_eq!(s["distinct"], json!(3));
        let hist: Vec<u64> = serde_json::from_value(s["histogram"].clone()).unwrap();
        assert_eq!(hist.len(), 20);
        assert_eq!((hist[0], hist[6], hist[19]), (2, 1, 1));
        assert_eq!(s["ventiles"][0], json!(1.0));
        assert_eq!(s["ventiles"][20], json!(4.0));
        assert!((s["std_dev"].as_f64().unwrap() - 1.224744871391589).abs() < 1e-12);
    }

    #[test]
    fn empty_and_all_null() {
        let col = Column {
            name: "x".into(),
            pg_type: "real".into(),
            data: ColumnData::Float(vec![None, None]),
        };
        let s = column_statistics(&col, &[0, 1, 7]);
        assert_eq!(s["missing"], json!(2));
        assert_eq!(s["mean"], Value::Null);
    }

    #[test]
    fn text_column() {
        let col = Column {
            name: "c".into(),
            pg_type: "text".into(),
            data: ColumnData::Text(vec![
                Some("b".into()),
                Some("a".into()),
                None,
                Some("a".into()),
                Some("b".into()),
            ]),
        };
        let s = column_statistics(&col, &[0, 1, 2, 3, 4]);
        assert_eq!(s["missing"], json!(1));
        assert_eq!(s["distinct"], json!(2));
        assert_eq!(s["mode"], json!("b"));
        assert_eq!(s["categories"], json!({"a": 2, "b": 2}));
    }

    #[test]
    fn array_column_pools_elements() {
        let col = Column {
            name: "v".into(),
            pg_type: "real[]".into(),
            data: ColumnData::Array {
                width: 2,
                values: vec![Some(vec![1.0, 2.0]), None, Some(vec![3.0, 6.0])],
            },
        };
        let s = column_statistics(&col, &[0, 1, 2]);
        assert_eq!(s["mean"], json!(3.0));
        assert_eq!(s["missing"], json!(1));
        assert_eq!(s["width"], json!(2));
    }
}
