//! One feature column's fitted preprocessing: fitting it on the training
//! rows, and turning one raw value into its features.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::spec::{ColumnSpec, Encode, Impute, Scale};
use super::stats;
use crate::ml::error::{MlError, MlResult};
use crate::ml::frame::{Column, ColumnData};

/// A raw value on its way into features, from a frame or a predict row.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Cell<'a> {
    Null,
    Number(f64),
    Text(&'a str),
    Array(Vec<Option<f64>>),
}

/// `(x - center) / divisor`; the divisor is never 0.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Scaler {
    center: f64,
    divisor: f64,
}

impl Scaler {
    const IDENTITY: Scaler = Scaler {
        center: 0.0,
        divisor: 1.0,
    };

    /// Fitted on the imputed training values. A constant column keeps a
    /// divisor of 1 instead of dividing by 0, as scikit-learn's scalers do.
    fn fit(scale: Scale, values: &[f64]) -> Scaler {
        if values.is_empty() || scale == Scale::Preserve {
            return Scaler::IDENTITY;
        }
        let (min, max) = values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let (center, spread) = match scale {
            Scale::Preserve => return Scaler::IDENTITY,
            Scale::Standard => (stats::mean(values), stats::std_dev(values)),
            Scale::MinMax => (min, max - min),
            Scale::MaxAbs => (0.0, min.abs().max(max.abs())),
            Scale::Robust => {
                let sorted = stats::sorted(values.to_vec());
                (
                    stats::quantile(&sorted, 0.5),
                    stats::quantile(&sorted, 0.75) - stats::quantile(&sorted, 0.25),
                )
            }
        };
        let divisor = if spread.is_finite() && spread != 0.0 {
            spread
        } else {
            1.0
        };
        Scaler { center, divisor }
    }

    fn apply(&self, x: f64) -> f64 {
        (x - self.center) / self.divisor
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum Fitted {
    Number {
        fill: Option<f64>,
        scaler: Scaler,
    },
    /// Text, or numbers encoded as categories (their decimal text).
    Category {
        /// Training categories in first-seen order (one_hot's features).
        categories: Vec<String>,
        /// The number each category encodes to; for one_hot its feature index.
        codes: BTreeMap<String, f64>,
        /// What NULL and unseen categories encode to.
        missing: f64,
        /// impute = mode: NULL and unseen take this category instead.
        fill: Option<String>,
        scaler: Scaler,
    },
    Array {
        width: usize,
        fills: Vec<Option<f64>>,
        scalers: Vec<Scaler>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct FittedColumn {
    pub name: String,
    pub pg_type: String,
    /// 1-based position in the training data.
    pub position: usize,
    /// Whether the training rows held NULLs.
    pub nullable: bool,
    pub spec: ColumnSpec,
    pub fitted: Fitted,
}

impl FittedColumn {
    /// One feature that is the column's number as given (no scaling).
    pub(super) fn is_plain_number(&self) -> bool {
        matches!(&self.fitted, Fitted::Number { scaler, .. } if *scaler == Scaler::IDENTITY)
    }
}

fn null_error(column: &str) -> MlError {
    MlError::data(format!(
        "column \"{column}\" has NULL values; set an impute strategy, e.g. preprocess => '{{\"{column}\": {{\"impute\": \"mean\"}}}}'"
    ))
}

/// The fill value for `impute` from the present training values.
fn fill_value(
    column: &str,
    impute: Impute,
    present: &[f64],
    any_missing: bool,
) -> MlResult<Option<f64>> {
    if impute == Impute::Error {
        return if any_missing {
            Err(null_error(column))
        } else {
            Ok(None)
        };
    }
    if impute == Impute::Zero {
        return Ok(Some(0.0));
    }
    let sorted = stats::sorted(present.to_vec());
    let value = match impute {
        Impute::Mean => stats::mean(&sorted),
        Impute::Median => stats::quantile(&sorted, 0.5),
        Impute::Mode => stats::mode(&sorted),
        Impute::Min => sorted.first().copied().unwrap_or(f64::NAN),
        Impute::Max => sorted.last().copied().unwrap_or(f64::NAN),
        Impute::Error | Impute::Zero => 0.0,
    };
    if value.is_finite() {
        Ok(Some(value))
    } else {
        Err(MlError::data(format!(
            "column \"{column}\" has no values in the training rows to impute from"
        )))
    }
}

/// Numbers shown as category names: 1.0 is "1", as the text form of an int.
fn number_text(x: f64) -> String {
    format!("{x}")
}

impl FittedColumn {
    pub fn fit(
        col: &Column,
        position: usize,
        spec: &ColumnSpec,
        label: Option<&[f64]>,
        rows: &[usize],
    ) -> MlResult<FittedColumn> {
        let name = col.name.as_str();
        let cell = |r: usize| -> MlResult<Cell<'_>> {
            cell_of(&col.data, r).ok_or_else(|| {
                MlError::Internal(format!("row {r} out of range for column \"{name}\""))
            })
        };
        let categorical = matches!(col.data, ColumnData::Text(_)) || spec.encode != Encode::Native;
        let mut nullable = false;
        let fitted = match &col.data {
            ColumnData::Array { width, .. } => {
                if spec.encode != Encode::Native {
                    return Err(MlError::invalid(format!(
                        "column \"{name}\" is an array; only numbers and text take an encode option"
                    )));
                }
                let mut present: Vec<Vec<f64>> = vec![Vec::with_capacity(rows.len()); *width];
                let mut missing = vec![false; *width];
                for &r in rows {
                    let items = match cell(r)? {
                        Cell::Array(items) => items,
                        _ => vec![None; *width],
                    };
                    if items.len() != *width {
                        return Err(MlError::data(format!(
                            "column \"{name}\" holds arrays of {} and {width} elements; every array must have the same length",
                            items.len()
                        )));
                    }
                    for (i, item) in items.into_iter().enumerate() {
                        match item.filter(|x| !x.is_nan()) {
                            Some(x) => present[i].push(x),
                            None => missing[i] = true,
                        }
                    }
                }
                nullable = missing.iter().any(|&m| m);
                let mut fills = Vec::with_capacity(*width);
                let mut scalers = Vec::with_capacity(*width);
                for (values, any_missing) in present.iter().zip(&missing) {
                    let fill = fill_value(name, spec.impute, values, *any_missing)?;
                    let mut imputed = values.clone();
                    if let Some(f) = fill {
                        imputed.resize(rows.len(), f);
                    }
                    fills.push(fill);
                    scalers.push(Scaler::fit(spec.scale, &imputed));
                }
                Fitted::Array {
                    width: *width,
                    fills,
                    scalers,
                }
            }
            _ if categorical => {
                let mut seen: Vec<Option<String>> = Vec::with_capacity(rows.len());
                for &r in rows {
                    seen.push(match cell(r)? {
                        Cell::Text(s) => Some(s.to_string()),
                        Cell::Number(x) if !x.is_nan() => Some(number_text(x)),
                        _ => None,
                    });
                }
                nullable = seen.iter().any(Option::is_none);
                fit_category(name, spec, &seen, label, rows)?
            }
            _ => {
                let mut present = Vec::with_capacity(rows.len());
                for &r in rows {
                    match cell(r)? {
                        Cell::Number(x) if !x.is_nan() => present.push(x),
                        _ => nullable = true,
                    }
                }
                let fill = fill_value(name, spec.impute, &present, nullable)?;
                let mut imputed = present;
                if let Some(f) = fill {
                    imputed.resize(rows.len(), f);
                }
                Fitted::Number {
                    fill,
                    scaler: Scaler::fit(spec.scale, &imputed),
                }
            }
        };
        Ok(FittedColumn {
            name: col.name.clone(),
            pg_type: col.pg_type.clone(),
            position,
            nullable,
            spec: spec.clone(),
            fitted,
        })
    }

    pub fn width(&self) -> usize {
        match &self.fitted {
            Fitted::Number { .. } => 1,
            Fitted::Category { categories, .. } if self.spec.encode == Encode::OneHot => {
                categories.len()
            }
            Fitted::Category { .. } => 1,
            Fitted::Array { width, .. } => *width,
        }
    }

    pub fn feature_names(&self) -> Vec<String> {
        match &self.fitted {
            Fitted::Category { categories, .. } if self.spec.encode == Encode::OneHot => categories
                .iter()
                .map(|c| format!("{}={c}", self.name))
                .collect(),
            Fitted::Array { width, .. } => (1..=*width)
                .map(|i| format!("{}[{i}]", self.name))
                .collect(),
            _ => vec![self.name.clone()],
        }
    }

    /// Appends this column's features for one value to `out`.
    pub fn encode(&self, cell: Cell<'_>, out: &mut Vec<f64>) -> MlResult<()> {
        let name = &self.name;
        let mismatch = |what: &str| {
            MlError::DatatypeMismatch(format!(
                "column \"{name}\" ({}) cannot take {what}",
                self.pg_type
            ))
        };
        // A `real` column's value that arrives as a float8 (row input comes
        // as JSON text: `0.1`) is the float4 it prints, as training read it
        // (in binary): else a value on a split threshold goes the other way.
        let single = matches!(self.pg_type.as_str(), "real" | "real[]");
        let stored = |x: f64| if single { x as f32 as f64 } else { x };
        match &self.fitted {
            Fitted::Number { fill, scaler } => {
                let x = match cell {
                    Cell::Number(x) => Some(stored(x)).filter(|x| !x.is_nan()),
                    Cell::Null => None,
                    Cell::Text(s) => Some(stored(
                        parse_number(s).ok_or_else(|| mismatch(&format!("the text \"{s}\"")))?,
                    )),
                    Cell::Array(_) => return Err(mismatch("an array")),
                };
                let x = x.or(*fill).ok_or_else(|| null_error(name))?;
                out.push(scaler.apply(x));
            }
            Fitted::Category {
                categories,
                codes,
                missing,
                fill,
                scaler,
            } => {
                let text = match cell {
                    Cell::Text(s) => Some(s.to_string()),
                    Cell::Number(x) if !x.is_nan() => Some(number_text(x)),
                    Cell::Number(_) | Cell::Null => None,
                    Cell::Array(_) => return Err(mismatch("an array")),
                };
                // Unseen categories are treated as NULL.
                let known = text
                    .filter(|t| codes.contains_key(t))
                    .or_else(|| fill.clone());
                let code = known.and_then(|k| codes.get(&k).copied());
                if self.spec.encode == Encode::OneHot {
                    let start = out.len();
                    out.resize(start + categories.len(), 0.0);
                    if let Some(slot) = code.and_then(|i| out.get_mut(start + i as usize)) {
                        *slot = 1.0;
                    }
                } else {
                    out.push(scaler.apply(code.unwrap_or(*missing)));
                }
            }
            Fitted::Array {
                width,
                fills,
                scalers,
            } => {
                let items = match cell {
                    Cell::Array(items) => items,
                    Cell::Null => vec![None; *width],
                    Cell::Text(s) => {
                        parse_array(s).ok_or_else(|| mismatch(&format!("the text \"{s}\"")))?
                    }
                    Cell::Number(_) => return Err(mismatch("a single number")),
                };
                if items.len() != *width {
                    return Err(MlError::DatatypeMismatch(format!(
                        "column \"{name}\" takes arrays of {width} elements, got {}",
                        items.len()
                    )));
                }
                for ((item, fill), scaler) in items.into_iter().zip(fills).zip(scalers) {
                    let x = item
                        .map(stored)
                        .filter(|x| !x.is_nan())
                        .or(*fill)
                        .ok_or_else(|| null_error(name))?;
                    out.push(scaler.apply(x));
                }
            }
        }
        Ok(())
    }
}

fn fit_category(
    name: &str,
    spec: &ColumnSpec,
    seen: &[Option<String>],
    label: Option<&[f64]>,
    rows: &[usize],
) -> MlResult<Fitted> {
    let mut categories: Vec<String> = Vec::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in seen.iter().flatten() {
        let count = counts.entry(s).or_insert(0);
        if *count == 0 {
            categories.push(s.clone());
        }
        *count += 1;
    }
    let fill = match spec.impute {
        Impute::Error => None,
        // The most frequent category, the first seen on a tie.
        Impute::Mode => categories
            .iter()
            .fold(None::<(&String, usize)>, |best, c| {
                let n = counts.get(c.as_str()).copied().unwrap_or(0);
                match best {
                    Some((_, b)) if b >= n => best,
                    _ => Some((c, n)),
                }
            })
            .map(|(c, _)| c.clone()),
        other => {
            return Err(MlError::invalid(format!(
                "impute {:?} needs numbers, but column \"{name}\" is categorical; use \"mode\", or leave the default that makes NULL a category of its own",
                format!("{other:?}").to_lowercase()
            )))
        }
    };
    let mut codes = BTreeMap::new();
    let mut missing = 0.0;
    match &spec.encode {
        Encode::Native => {
            for (i, c) in categories.iter().enumerate() {
                codes.insert(c.clone(), (i + 1) as f64);
            }
        }
        Encode::Ordinal(order) => {
            if let Some(stray) = categories.iter().find(|c| !order.contains(c)) {
                return Err(MlError::data(format!(
                    "column \"{name}\" holds \"{stray}\", which its ordinal encoding does not list: {order:?}"
                )));
            }
            for (i, c) in order.iter().enumerate() {
                codes.insert(c.clone(), (i + 1) as f64);
            }
        }
        Encode::Target => {
            let label = label.ok_or_else(|| {
                MlError::invalid(format!(
                    "target encoding of \"{name}\" needs a label column (a supervised task)"
                ))
            })?;
            let mut sums: BTreeMap<Option<&str>, (f64, usize)> = BTreeMap::new();
            let (mut total, mut n) = (0.0, 0usize);
            for (value, &r) in seen.iter().zip(rows) {
                let Some(y) = label.get(r).copied().filter(|y| !y.is_nan()) else {
                    continue;
                };
                let entry = sums.entry(value.as_deref()).or_insert((0.0, 0));
                entry.0 += y;
                entry.1 += 1;
                total += y;
                n += 1;
            }
            if n == 0 {
                return Err(MlError::data(format!(
                    "target encoding of \"{name}\" found no label values in the training rows"
                )));
            }
            let prior = total / n as f64;
            let mean_of =
                |key: Option<&str>| sums.get(&key).map(|(s, c)| s / *c as f64).unwrap_or(prior);
            for c in &categories {
                codes.insert(c.clone(), mean_of(Some(c.as_str())));
            }
            missing = mean_of(None);
        }
        Encode::OneHot => {
            for (i, c) in categories.iter().enumerate() {
                codes.insert(c.clone(), i as f64);
            }
        }
    }
    // Scale the codes as the training rows will see them.
    let encoded: Vec<f64> = seen
        .iter()
        .map(|s| {
            s.as_ref()
                .or(fill.as_ref())
                .and_then(|c| codes.get(c).copied())
                .unwrap_or(missing)
        })
        .collect();
    let scaler = match spec.encode {
        Encode::OneHot => Scaler::IDENTITY,
        _ => Scaler::fit(spec.scale, &encoded),
    };
    Ok(Fitted::Category {
        categories,
        codes,
        missing,
        fill,
        scaler,
    })
}

/// The value of `row` in `data`; None when the row is out of range.
pub(super) fn cell_of(data: &ColumnData, row: usize) -> Option<Cell<'_>> {
    Some(match data {
        ColumnData::Float(v) => match v.get(row)? {
            Some(x) => Cell::Number(*x),
            None => Cell::Null,
        },
        ColumnData::Text(v) => match v.get(row)? {
            Some(s) => Cell::Text(s),
            None => Cell::Null,
        },
        ColumnData::Array { values, .. } => match values.get(row)? {
            Some(items) => Cell::Array(items.iter().map(|x| Some(*x)).collect()),
            None => Cell::Null,
        },
    })
}

/// A number from its text form; booleans as Postgres prints them count 0/1.
fn parse_number(s: &str) -> Option<f64> {
    let s = s.trim();
    match s.to_ascii_lowercase().as_str() {
        "t" | "true" => Some(1.0),
        "f" | "false" => Some(0.0),
        _ => s.parse().ok(),
    }
}

/// A Postgres array literal of numbers: `{1,2.5,NULL}`.
fn parse_array(s: &str) -> Option<Vec<Option<f64>>> {
    let inner = s.trim().strip_prefix('{')?.strip_suffix('}')?.trim();
    if inner.is_empty() {
        return Some(Vec::new());
    }
    inner
        .split(',')
        .map(|item| {
            let item = item.trim();
            if item.eq_ignore_ascii_case("null") {
                Some(None)
            } else {
                parse_number(item).map(Some)
            }
        })
        .collect()
}
