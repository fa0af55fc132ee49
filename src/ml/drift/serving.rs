//! What a model has been asked to predict: per project, a uniform
//! reservoir sample of the raw feature rows this process predicted, for
//! `pgml.drift(project, 'serving')`. Each batch takes one lock; once the
//! reservoir is full, Li's algorithm L jumps from one kept row to the next
//! (a few random draws per kept row, none per row passed over), and a row
//! is copied only when it is kept.

use dashmap::DashMap;
use parking_lot::Mutex;
use rand::Rng;

use super::compare::{Baseline, Observed, BINS};
use crate::ml::frame::RawValue;

#[cfg(test)]
const SAMPLE_ROWS: usize = 10_000;

/// Text kept of a value: enough to tell categories apart, so a sample of
/// long texts stays small (10,000 rows hold at most ~2.5 MB per text column).
const TEXT_BYTES: usize = 256;

/// A kept row, its long texts cut at a character boundary.
fn bounded(mut values: Vec<RawValue>) -> Vec<RawValue> {
    for v in &mut values {
        if let RawValue::Text(s) = v {
            cut(s);
        }
    }
    values
}

fn cut(s: &mut String) {
    if s.len() > TEXT_BYTES {
        let mut end = TEXT_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// Training's categories cut as the sample cuts texts (counts of
/// categories that then coincide added up), to compare with the sample.
pub fn bounded_baseline(baseline: Baseline) -> Baseline {
    let Baseline::Categorical { counts, missing } = baseline else {
        return baseline;
    };
    let mut merged: Vec<(String, f64)> = Vec::with_capacity(counts.len());
    let mut at: std::collections::HashMap<String, usize> = Default::default();
    for (mut k, c) in counts {
        cut(&mut k);
        match at.get(&k) {
            Some(&i) => merged[i].1 += c,
            None => {
                at.insert(k.clone(), merged.len());
                merged.push((k, c));
            }
        }
    }
    Baseline::Categorical {
        counts: merged,
        missing,
    }
}

#[derive(Default)]
pub struct Serving {
    /// (database key, project) → its reservoir.
    samples: DashMap<(String, String), Mutex<Reservoir>>,
}

#[derive(Default)]
struct Reservoir {
    /// The model's feature columns the rows are in; a model with other
    /// columns starts the sample again.
    columns: Vec<String>,
    rows: Vec<Vec<RawValue>>,
    /// Rows offered so far.
    seen: u64,
    /// Algorithm L's state once full: its weight, and the number (1-based,
    /// counted like `seen`) of the next row to keep.
    w: f64,
    next: u64,
}

impl Reservoir {
    /// Draws the next row to keep after row `after` (algorithm L).
    fn advance(&mut self, rng: &mut impl Rng, after: u64) {
        let k = self.rows.len().max(1) as f64;
        // 1 - U: in (0, 1], so the logarithms stay finite.
        self.w *= ((1.0 - rng.gen::<f64>()).ln() / k).exp();
        let skip = ((1.0 - rng.gen::<f64>()).ln() / (1.0 - self.w).ln()).floor();
        self.next = after + (skip.max(0.0) as u64) + 1;
    }
}

impl Serving {
    /// Offers a batch of rows; `raw` turns a kept one into its feature
    /// columns' values (called only for the rows the reservoir keeps).
    pub fn record<T>(
        &self,
        capacity: usize,
        database: &str,
        project: &str,
        columns: &[&str],
        rows: &[T],
        raw: impl Fn(&T) -> Option<Vec<RawValue>>,
    ) {
        if rows.is_empty() || capacity == 0 {
            return;
        }
        let key = (database.to_string(), project.to_string());
        let entry = match self.samples.get(&key) {
            Some(e) => e,
            None => self.samples.entry(key).or_default().downgrade(),
        };
        let mut r = entry.lock();
        if r.columns
            .iter()
            .map(String::as_str)
            .ne(columns.iter().copied())
        {
            *r = Reservoir {
                columns: columns.iter().map(|c| c.to_string()).collect(),
                ..Default::default()
            };
        }
        let mut rng = rand::thread_rng();
        let start = r.seen;
        let mut i = 0;
        // Filling: every row is kept.
        while r.rows.len() < capacity && i < rows.len() {
            if let Some(values) = raw(&rows[i]) {
                r.rows.push(bounded(values));
            }
            i += 1;
            if r.rows.len() == capacity {
                r.w = 1.0;
                r.advance(&mut rng, start + i as u64);
            }
        }
        // Full: from one kept row to the next, each replacing a random one.
        let end = start + rows.len() as u64;
        while r.rows.len() >= capacity && r.next <= end {
            let at = r.next;
            let row = (at - start - 1) as usize;
            if row >= i {
                if let (Some(values), slot) = (raw(&rows[row]), rng.gen_range(0..r.rows.len())) {
                    r.rows[slot] = bounded(values);
                }
            }
            r.advance(&mut rng, at);
        }
        r.seen = end;
    }

    /// The sample's counts of each feature, None when nothing was served
    /// for these columns.
    pub fn observe(
        &self,
        database: &str,
        project: &str,
        features: &[(String, Baseline)],
    ) -> Option<Vec<Observed>> {
        let key = (database.to_string(), project.to_string());
        let entry = self.samples.get(&key)?;
        let r = entry.lock();
        if r.rows.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(features.len());
        for (name, baseline) in features {
            let at = r.columns.iter().position(|c| c == name)?;
            out.push(count(r.rows.iter().filter_map(|row| row.get(at)), baseline));
        }
        Some(out)
    }
}

/// The counts `relation::observe` takes in SQL, taken of raw values.
fn count<'a>(values: impl Iterator<Item = &'a RawValue>, baseline: &Baseline) -> Observed {
    let mut seen = Observed {
        bins: vec![0.0; BINS],
        ..Default::default()
    };
    let mut categories: std::collections::BTreeMap<String, f64> = Default::default();
    for v in values {
        seen.rows += 1.0;
        match (v, baseline) {
            (RawValue::Null, _) => seen.missing += 1.0,
            (RawValue::Number(x), _) if x.is_nan() => seen.missing += 1.0,
            (RawValue::Number(x), Baseline::Numeric { bins, .. }) => seen.bins[bins.of(*x)] += 1.0,
            // A number given for a text column counts as its text.
            (RawValue::Number(x), Baseline::Categorical { .. }) => {
                *categories.entry(x.to_string()).or_default() += 1.0
            }
            (RawValue::Text(s), Baseline::Categorical { .. }) => {
                *categories.entry(s.clone()).or_default() += 1.0
            }
            (RawValue::Text(s), Baseline::Numeric { bins, .. }) => match number(s) {
                Some(x) => seen.bins[bins.of(x)] += 1.0,
                None => seen.missing += 1.0,
            },
            _ => {}
        }
    }
    seen.categories = categories.into_iter().collect();
    seen
}

/// A number given as text; booleans as training read them (1 and 0).
fn number(s: &str) -> Option<f64> {
    match s.trim() {
        "true" | "t" => Some(1.0),
        "false" | "f" => Some(0.0),
        s => s.parse::<f64>().ok().filter(|x| !x.is_nan()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::drift::compare::Bins;

    #[test]
    fn long_texts_are_cut_at_a_character() {
        let long = "é".repeat(200); // 400 bytes
        let kept = bounded(vec![RawValue::Text(long), RawValue::Number(1.0)]);
        match &kept[0] {
            RawValue::Text(s) => assert_eq!((s.len(), s.chars().count()), (256, 128)),
            other => panic!("{other:?}"),
        }
        assert_eq!(kept[1], RawValue::Number(1.0));
        // Training's long categories are cut alike, and merge when they
        // then coincide.
        let a = format!("{}a", "x".repeat(300));
        let b = format!("{}b", "x".repeat(300));
        let base = Baseline::Categorical {
            counts: vec![(a, 2.0), (b, 3.0), ("short".into(), 1.0)],
            missing: 0.0,
        };
        let Baseline::Categorical { counts, .. } = bounded_baseline(base) else {
            panic!("still categorical");
        };
        assert_eq!(counts, vec![("x".repeat(256), 5.0), ("short".into(), 1.0)]);
    }

    #[test]
    fn the_reservoir_is_bounded_and_uniform_enough() {
        let s = Serving::default();
        let rows: Vec<Vec<RawValue>> = (0..3 * SAMPLE_ROWS)
            .map(|i| vec![RawValue::Number(i as f64)])
            .collect();
        s.record(SAMPLE_ROWS, "db", "p", &["x"], &rows, |r| Some(r.clone()));
        let base = Baseline::Numeric {
            bins: Bins {
                lo: 0.0,
                width: (3 * SAMPLE_ROWS) as f64 / BINS as f64,
            },
            counts: vec![1.0; BINS],
            missing: 0.0,
        };
        let seen = s.observe("db", "p", &[("x".into(), base.clone())]).unwrap();
        assert_eq!(seen[0].rows, SAMPLE_ROWS as f64);
        // Each twentieth of the stream holds about a twentieth of the sample.
        for b in &seen[0].bins {
            assert!((*b - 500.0).abs() < 150.0, "{:?}", seen[0].bins);
        }
        // Offered in small batches, the sample is as uniform.
        let t = Serving::default();
        for chunk in rows.chunks(7) {
            t.record(SAMPLE_ROWS, "db", "p", &["x"], chunk, |r| Some(r.clone()));
        }
        let seen = t.observe("db", "p", &[("x".into(), base.clone())]).unwrap();
        assert_eq!(seen[0].rows, SAMPLE_ROWS as f64);
        for b in &seen[0].bins {
            assert!((*b - 500.0).abs() < 150.0, "{:?}", seen[0].bins);
        }
        // Other columns: the sample starts again.
        s.record(
            SAMPLE_ROWS,
            "db",
            "p",
            &["y"],
            &[vec![RawValue::Null]],
            |r| Some(r.clone()),
        );
        assert!(s
            .observe(
                "db",
                "p",
                &[(
                    "x".into(),
                    Baseline::Array {
                        rows: 0.0,
                        missing: 0.0
                    }
                )]
            )
            .is_none());
    }
}
