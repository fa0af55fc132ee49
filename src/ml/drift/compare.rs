//! The drift statistics themselves, from counts: what training stored of a
//! feature (its `statistics` in the snapshot) against the same counts taken
//! of a relation or of the served rows. Pure arithmetic, shared by every
//! side, so the database's counts and the proxy's are compared alike.

use serde_json::Value;

/// Bins of the snapshot histogram (`preprocess::stats`).
pub const BINS: usize = 20;

/// Proportions below this are raised to it inside the PSI's logarithm, so
/// an empty bin on one side is a large term, not an infinite one (the usual
/// PSI floor; Evidently and most implementations use 0.0001).
const PSI_FLOOR: f64 = 1e-4;

/// What training stored of one feature column.
#[derive(Debug, Clone, PartialEq)]
pub enum Baseline {
    /// Equal-width bins over the training range, with their counts.
    Numeric {
        bins: Bins,
        counts: Vec<f64>,
        missing: f64,
    },
    /// Category → training count (non-NULL values).
    Categorical {
        counts: Vec<(String, f64)>,
        missing: f64,
    },
    /// Array columns: only the missing rate is compared.
    Array { rows: f64, missing: f64 },
}

/// The histogram's edges: `lo` and the width of each of the 20 bins.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bins {
    pub lo: f64,
    pub width: f64,
}

impl Bins {
    /// The bin of `x`, as training's histogram put it (values outside the
    /// training range go to the first or last bin). With a constant training
    /// column (width 0) a value above it goes to the last bin.
    pub fn of(&self, x: f64) -> usize {
        if self.width > 0.0 {
            ((x - self.lo) / self.width)
                .floor()
                .clamp(0.0, (BINS - 1) as f64) as usize
        } else if x <= self.lo {
            0
        } else {
            BINS - 1
        }
    }

    /// The same in SQL on `column` (float8, NULL for NULL and NaN): bit for
    /// bit what `of` computes, since both are IEEE float8 on the same
    /// constants (written in their shortest exact form).
    pub fn sql(&self, column: &str) -> String {
        let x = format!("NULLIF({column}::float8, 'NaN')");
        if self.width > 0.0 {
            // GREATEST and LEAST skip NULLs: a NULL must stay NULL (missing).
            format!(
                "CASE WHEN {x} IS NOT NULL THEN \
                 least(greatest(floor(({x} - '{:?}'::float8) / '{:?}'::float8), 0), {})::int END",
                self.lo,
                self.width,
                BINS - 1
            )
        } else {
            format!(
                "CASE WHEN {x} <= '{:?}'::float8 THEN 0 WHEN {x} IS NOT NULL THEN {} END",
                self.lo,
                BINS - 1
            )
        }
    }
}

/// The counts of one feature on the compared side.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Numeric: count per bin. Categorical: unused.
    pub bins: Vec<f64>,
    /// Categorical: value → count.
    pub categories: Vec<(String, f64)>,
    /// Rows in all, and rows whose value is NULL.
    pub rows: f64,
    pub missing: f64,
}

impl Baseline {
    /// Reads a snapshot column's `statistics`; None when it holds nothing
    /// to compare. `train_rows`: the training split's size, which an array
    /// column's statistics (elements pooled) do not tell.
    pub fn from_statistics(s: &Value, train_rows: Option<f64>) -> Option<Baseline> {
        let missing = s.get("missing")?.as_f64()?;
        if let Some(categories) = s.get("categories").and_then(Value::as_object) {
            let counts = categories
                .iter()
                .map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                .collect::<Option<Vec<_>>>()?;
            return Some(Baseline::Categorical { counts, missing });
        }
        let histogram: Vec<f64> = s
            .get("histogram")?
            .as_array()?
            .iter()
            .map(Value::as_f64)
            .collect::<Option<_>>()?;
        if s.get("width").is_some() {
            // Array elements are pooled in the histogram; rows are not.
            return Some(Baseline::Array {
                rows: train_rows.unwrap_or(0.0),
                missing,
            });
        }
        let (lo, hi) = (s.get("min")?.as_f64(), s.get("max")?.as_f64());
        let bins = match (lo, hi) {
            (Some(lo), Some(hi)) if lo.is_finite() && hi.is_finite() => Bins {
                lo,
                width: (hi - lo) / BINS as f64,
            },
            // No present value in training: compare the missing rate only.
            _ => Bins {
                lo: 0.0,
                width: 0.0,
            },
        };
        (histogram.len() == BINS).then_some(Baseline::Numeric {
            bins,
            counts: histogram,
            missing,
        })
    }

    /// Training rows of the column and how many were NULL.
    fn rows(&self) -> (f64, f64) {
        match self {
            Baseline::Numeric {
                counts, missing, ..
            } => (counts.iter().sum::<f64>() + missing, *missing),
            Baseline::Categorical { counts, missing } => (
                counts.iter().map(|(_, c)| c).sum::<f64>() + missing,
                *missing,
            ),
            Baseline::Array { rows, missing } => (*rows, *missing),
        }
    }
}

/// One statistic of one feature: its value (None when a side has nothing
/// to compare).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Statistic {
    Psi,
    Ks,
    Linf,
    Missing,
}

impl Statistic {
    pub const ALL: [Statistic; 4] = [
        Statistic::Psi,
        Statistic::Ks,
        Statistic::Linf,
        Statistic::Missing,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Statistic::Psi => "psi",
            Statistic::Ks => "ks",
            Statistic::Linf => "linf",
            Statistic::Missing => "missing",
        }
    }

    /// The documented defaults: PSI above 0.2 is the usual "significant
    /// shift"; BigQuery's L-infinity default is 0.3.
    pub fn default_threshold(self) -> f64 {
        match self {
            Statistic::Psi => 0.2,
            Statistic::Ks => 0.1,
            Statistic::Linf => 0.3,
            Statistic::Missing => 0.05,
        }
    }

    /// Whether `value` crosses `threshold` (the missing rate either way).
    pub fn drifted(self, value: f64, threshold: f64) -> bool {
        match self {
            Statistic::Missing => value.abs() > threshold,
            _ => value > threshold,
        }
    }
}

/// The statistics of one feature, in the order they are reported.
pub fn compare(baseline: &Baseline, seen: &Observed) -> Vec<(Statistic, Option<f64>)> {
    let (train_rows, train_missing) = baseline.rows();
    let missing = (seen.rows > 0.0 && train_rows > 0.0)
        .then(|| seen.missing / seen.rows - train_missing / train_rows);
    match baseline {
        Baseline::Numeric { counts, .. } => {
            let (p, q) = (proportions(counts), proportions(&seen.bins));
            let (psi, ks) = match (p, q) {
                (Some(p), Some(q)) => (Some(psi(&p, &q)), Some(ks(&p, &q))),
                _ => (None, None),
            };
            vec![
                (Statistic::Psi, psi),
                (Statistic::Ks, ks),
                (Statistic::Missing, missing),
            ]
        }
        Baseline::Categorical { counts, .. } => {
            vec![
                (Statistic::Linf, linf(counts, &seen.categories)),
                (Statistic::Missing, missing),
            ]
        }
        Baseline::Array { .. } => vec![(Statistic::Missing, missing)],
    }
}

/// Counts → proportions; None when there are none.
fn proportions(counts: &[f64]) -> Option<Vec<f64>> {
    let total: f64 = counts.iter().sum();
    (total > 0.0).then(|| counts.iter().map(|c| c / total).collect())
}

/// Population stability index: Σ (q − p) · ln(q / p), each proportion
/// floored inside the sum.
pub fn psi(p: &[f64], q: &[f64]) -> f64 {
    p.iter()
        .zip(q)
        .map(|(&p, &q)| {
            let (p, q) = (p.max(PSI_FLOOR), q.max(PSI_FLOOR));
            (q - p) * (q / p).ln()
        })
        .sum()
}

/// Kolmogorov–Smirnov statistic over the bins: the largest gap between the
/// two cumulative distributions at a bin edge.
pub fn ks(p: &[f64], q: &[f64]) -> f64 {
    let (mut cp, mut cq, mut gap) = (0.0f64, 0.0f64, 0.0f64);
    for (&p, &q) in p.iter().zip(q) {
        cp += p;
        cq += q;
        gap = gap.max((cp - cq).abs());
    }
    gap
}

/// L-infinity distance of category frequencies over the union of both
/// sides' categories; None when a side has no value.
pub fn linf(train: &[(String, f64)], seen: &[(String, f64)]) -> Option<f64> {
    let (tn, sn) = (
        train.iter().map(|(_, c)| c).sum::<f64>(),
        seen.iter().map(|(_, c)| c).sum::<f64>(),
    );
    if tn <= 0.0 || sn <= 0.0 {
        return None;
    }
    let index = |side: &[(String, f64)]| -> std::collections::HashMap<String, f64> {
        side.iter().map(|(k, c)| (k.clone(), *c)).collect()
    };
    let (t, s) = (index(train), index(seen));
    let gap = t
        .iter()
        .map(|(k, c)| (c / tn - s.get(k).copied().unwrap_or(0.0) / sn).abs())
        .chain(
            s.iter()
                .filter(|(k, _)| !t.contains_key(*k))
                .map(|(_, c)| c / sn),
        )
        .fold(0.0, f64::max);
    Some(gap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bins_match_the_training_histogram() {
        let b = Bins {
            lo: 1.0,
            width: 0.15,
        };
        // The statistics' own rule: floor((v - min) / width), max to the last bin.
        assert_eq!(b.of(1.0), 0);
        assert_eq!(b.of(4.0), 19);
        assert_eq!(b.of(-5.0), 0);
        assert_eq!(b.of(100.0), 19);
        assert_eq!(b.of(1.0 + 0.15 * 6.5), 6);
        let constant = Bins {
            lo: 3.0,
            width: 0.0,
        };
        assert_eq!(
            (constant.of(3.0), constant.of(2.0), constant.of(3.5)),
            (0, 0, 19)
        );
        let sql = b.sql("\"x\"");
        assert!(sql.contains("'1.0'::float8) / '0.15'::float8"));
        // NULL and NaN stay NULL (missing), not bin 0.
        assert!(sql.starts_with("CASE WHEN NULLIF(\"x\"::float8, 'NaN') IS NOT NULL THEN"));
    }

    #[test]
    fn identical_sides_do_not_drift() {
        let s = json!({"min": 0.0, "max": 20.0, "missing": 0,
                       "histogram": vec![5; 20], "ventiles": []});
        let b = Baseline::from_statistics(&s, None).unwrap();
        let seen = Observed {
            bins: vec![1.0; 20],
            rows: 20.0,
            ..Default::default()
        };
        let stats = compare(&b, &seen);
        assert_eq!(stats[0], (Statistic::Psi, Some(0.0)));
        assert!(stats[1].1.unwrap() < 1e-12);
        assert_eq!(stats[2], (Statistic::Missing, Some(0.0)));
    }

    #[test]
    fn psi_ks_and_linf_by_hand() {
        let (p, q) = ([0.5, 0.5, 0.0], [0.25, 0.25, 0.5]);
        let expected = (0.25 - 0.5) * (0.5f64).ln() * 2.0 + (0.5 - 1e-4) * (0.5f64 / 1e-4).ln();
        assert!((psi(&p, &q) - expected).abs() < 1e-12);
        assert_eq!(ks(&p, &q), 0.5);
        let train = [("a".to_string(), 5.0), ("b".to_string(), 5.0)];
        let seen = [("a".to_string(), 1.0), ("c".to_string(), 3.0)];
        assert_eq!(linf(&train, &seen), Some(0.75));
        assert_eq!(linf(&train, &[]), None);
    }

    #[test]
    fn missing_rate_is_signed() {
        let s = json!({"missing": 1, "categories": {"a": 9}});
        let b = Baseline::from_statistics(&s, None).unwrap();
        let seen = Observed {
            categories: vec![("a".into(), 5.0)],
            rows: 10.0,
            missing: 5.0,
            ..Default::default()
        };
        let stats = compare(&b, &seen);
        assert_eq!(stats[0], (Statistic::Linf, Some(0.0)));
        assert!((stats[1].1.unwrap() - 0.4).abs() < 1e-12);
        assert!(Statistic::Missing.drifted(-0.4, 0.05));
        let empty = Observed::default();
        assert_eq!(compare(&b, &empty)[1], (Statistic::Missing, None));
    }
}
