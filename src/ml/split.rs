//! Train/test split and k-fold partitions over row indexes.
//!
//! Everything is seeded so a retrain on the same data gives the same split,
//! and every function copes with tiny data by returning an error instead of
//! an empty side (1–2 row test sets used to crash PostgresML).

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::error::{MlError, MlResult};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampling {
    Random,
    Last,
    Stratified,
}

impl Sampling {
    pub const ALL: [Sampling; 3] = [Sampling::Random, Sampling::Last, Sampling::Stratified];

    pub fn parse(s: &str) -> MlResult<Sampling> {
        Sampling::ALL
            .into_iter()
            .find(|v| v.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                MlError::invalid(format!(
                    "unknown test_sampling \"{s}\"; valid values: random, last, stratified"
                ))
            })
    }

    pub fn name(self) -> &'static str {
        match self {
            Sampling::Random => "random",
            Sampling::Last => "last",
            Sampling::Stratified => "stratified",
        }
    }
}

/// How many of `n_rows` go to the test set: `test_size` <= 1 is a fraction,
/// above 1 a row count; always leaves at least one row on each side.
fn test_count(n_rows: usize, test_size: f64) -> MlResult<usize> {
    if test_size.is_nan() || test_size <= 0.0 {
        return Err(MlError::invalid(format!(
            "test_size must be above 0 (a fraction up to 1, or a row count), got {test_size}"
        )));
    }
    if n_rows == 0 {
        return Err(MlError::data("no rows to train on: the relation is empty"));
    }
    if n_rows == 1 {
        return Err(MlError::data(
            "only 1 row: training needs at least 2 rows (one to train on, one to test)",
        ));
    }
    let wanted = if test_size <= 1.0 {
        (n_rows as f64 * test_size).round()
    } else {
        test_size.floor()
    };
    // The float-to-int cast saturates, so an infinite test_size is safe here.
    Ok((wanted as usize).clamp(1, n_rows - 1))
}

/// Returns (train rows, test rows), each in ascending row order, both
/// non-empty. Random shuffles with `seed`; Last keeps physical order with the
/// tail as test; Stratified splits each class of `labels` (class codes, one
/// per row; the label only, unlike PostgresML which stratified by every
/// column) in proportion, and is random without labels. Pass `None` for a
/// regression label: continuous labels fall back to random anyway.
pub fn split(
    n_rows: usize,
    test_size: f64,
    sampling: Sampling,
    labels: Option<&[f64]>,
    seed: u64,
) -> MlResult<(Vec<usize>, Vec<usize>)> {
    let n_test = test_count(n_rows, test_size)?;
    let n_train = n_rows - n_test;
    let stratified_split = match (sampling, labels) {
        (Sampling::Last, _) => return Ok(((0..n_train).collect(), (n_train..n_rows).collect())),
        (Sampling::Stratified, Some(labels)) => {
            if labels.len() != n_rows {
                return Err(MlError::Internal(format!(
                    "stratified split: {} labels for {n_rows} rows",
                    labels.len()
                )));
            }
            stratified(labels, n_test, seed)
        }
        (Sampling::Random, _) | (Sampling::Stratified, None) => None,
    };
    if let Some(split) = stratified_split {
        return Ok(split);
    }
    let mut rows: Vec<usize> = (0..n_rows).collect();
    rows.shuffle(&mut StdRng::seed_from_u64(seed));
    let mut test = rows.split_off(n_train);
    rows.sort_unstable();
    test.sort_unstable();
    Ok((rows, test))
}

/// Allocates `n_test` rows over the classes in proportion to their sizes
/// (largest remainder), keeping at least one row of every class with two or
/// more rows in train so the model sees every class it can. None when that
/// leaves less than half the requested test rows — mostly singleton classes,
/// as a continuous label gives — where a random split serves better.
fn stratified(labels: &[f64], n_test: usize, seed: u64) -> Option<(Vec<usize>, Vec<usize>)> {
    let n = labels.len();
    // First-seen class order keeps the allocation deterministic.
    let mut index: HashMap<u64, usize> = HashMap::new();
    let mut classes: Vec<Vec<usize>> = Vec::new();
    for (row, label) in labels.iter().enumerate() {
        // -0.0 and 0.0 are the same class; every NaN is one class.
        let key = if label.is_nan() {
            f64::NAN.to_bits()
        } else {
            (label + 0.0).to_bits()
        };
        let class = *index.entry(key).or_insert_with(|| {
            classes.push(Vec::new());
            classes.len() - 1
        });
        classes[class].push(row);
    }

    let mut rng = StdRng::seed_from_u64(seed);
    for rows in &mut classes {
        rows.shuffle(&mut rng);
    }

    let cap = |size: usize| size.saturating_sub(1);
    let mut take: Vec<usize> = Vec::with_capacity(classes.len());
    let mut remainders: Vec<(f64, usize)> = Vec::with_capacity(classes.len());
    for (class, rows) in classes.iter().enumerate() {
        let exact = rows.len() as f64 * n_test as f64 / n as f64;
        take.push((exact.floor() as usize).min(cap(rows.len())));
        remainders.push((exact - exact.floor(), class));
    }
    // Largest remainder first; ties go to the larger class, then first seen.
    remainders.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(classes[b.1].len().cmp(&classes[a.1].len()))
            .then(a.1.cmp(&b.1))
    });
    let mut missing = n_test.saturating_sub(take.iter().sum());
    while missing > 0 {
        let before = missing;
        for &(_, class) in &remainders {
            if missing == 0 {
                break;
            }
            if take[class] < cap(classes[class].len()) {
                take[class] += 1;
                missing -= 1;
            }
        }
        if missing == before {
            break;
        }
    }
    let allocated: usize = take.iter().sum();
    if allocated == 0 || allocated * 2 < n_test {
        return None;
    }

    let mut train = Vec::with_capacity(n - n_test);
    let mut test = Vec::with_capacity(n_test);
    for (rows, k) in classes.iter().zip(&take) {
        let (t, r) = rows.split_at((*k).min(rows.len()));
        test.extend_from_slice(t);
        train.extend_from_slice(r);
    }
    train.sort_unstable();
    test.sort_unstable();
    Some((train, test))
}

/// K folds over `rows`, shuffled with `seed`; `k` is clamped to the row count.
/// Fold sizes differ by at most one (the first `len % k` folds are larger,
/// as scikit-learn's KFold). Returns (fit rows, validation rows) per fold.
pub fn kfold(rows: &[usize], k: usize, seed: u64) -> MlResult<Vec<(Vec<usize>, Vec<usize>)>> {
    if k < 2 {
        return Err(MlError::invalid(format!(
            "cross-validation needs at least 2 folds, got cv = {k}"
        )));
    }
    if rows.len() < 2 {
        return Err(MlError::data(format!(
            "cross-validation needs at least 2 training rows, got {}",
            rows.len()
        )));
    }
    let k = k.min(rows.len());
    let mut shuffled = rows.to_vec();
    shuffled.shuffle(&mut StdRng::seed_from_u64(seed));
    let base = shuffled.len() / k;
    let extra = shuffled.len() % k;
    let mut folds = Vec::with_capacity(k);
    let mut start = 0;
    for fold in 0..k {
        let size = base + usize::from(fold < extra);
        let end = start + size;
        let mut validation = shuffled[start..end].to_vec();
        let mut fit: Vec<usize> = shuffled[..start]
            .iter()
            .chain(&shuffled[end..])
            .copied()
            .collect();
        validation.sort_unstable();
        fit.sort_unstable();
        folds.push((fit, validation));
        start = end;
    }
    Ok(folds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_partition(n: usize, train: &[usize], test: &[usize]) {
        let mut all: Vec<usize> = train.iter().chain(test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>());
        assert!(!train.is_empty() && !test.is_empty());
    }

    #[test]
    fn parse_sampling() {
        assert_eq!(Sampling::parse("Stratified").unwrap(), Sampling::Stratified);
        assert_eq!(Sampling::parse("last").unwrap(), Sampling::Last);
        let err = Sampling::parse("bogus").unwrap_err();
        assert_eq!(err.sqlstate(), "22023");
        assert!(err.to_string().contains("random, last, stratified"));
    }

    #[test]
    fn fraction_and_count() {
        let (train, test) = split(100, 0.25, Sampling::Random, None, 1).unwrap();
        assert_eq!((train.len(), test.len()), (75, 25));
        assert_partition(100, &train, &test);
        let (train, test) = split(100, 10.0, Sampling::Random, None, 1).unwrap();
        assert_eq!((train.len(), test.len()), (90, 10));
        // A count above the rows still leaves one row to train on.
        let (train, test) = split(5, 50.0, Sampling::Random, None, 1).unwrap();
        assert_eq!((train.len(), test.len()), (1, 4));
        let (train, test) = split(5, f64::INFINITY, Sampling::Last, None, 1).unwrap();
        assert_eq!((train, test), (vec![0], vec![1, 2, 3, 4]));
    }

    #[test]
    fn random_is_seeded() {
        let a = split(50, 0.3, Sampling::Random, None, 42).unwrap();
        let b = split(50, 0.3, Sampling::Random, None, 42).unwrap();
        let c = split(50, 0.3, Sampling::Random, None, 43).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Not just the tail.
        assert_ne!(a.1, (35..50).collect::<Vec<_>>());
    }

    #[test]
    fn last_takes_the_tail() {
        let (train, test) = split(10, 0.2, Sampling::Last, None, 0).unwrap();
        assert_eq!(train, (0..8).collect::<Vec<_>>());
        assert_eq!(test, vec![8, 9]);
    }

    #[test]
    fn tiny_data() {
        assert_eq!(
            split(0, 0.25, Sampling::Random, None, 0)
                .unwrap_err()
                .sqlstate(),
            "22000"
        );
        assert_eq!(
            split(1, 0.25, Sampling::Stratified, Some(&[1.0]), 0)
                .unwrap_err()
                .sqlstate(),
            "22000"
        );
        for sampling in Sampling::ALL {
            for n in [2, 3, 5] {
                let labels: Vec<f64> = (0..n).map(|i| (i % 2) as f64).collect();
                let (train, test) = split(n, 0.25, sampling, Some(&labels), 7).unwrap();
                assert_partition(n, &train, &test);
                let (train, test) = split(n, 0.01, sampling, Some(&labels), 7).unwrap();
                assert_partition(n, &train, &test);
                let (train, test) = split(n, 1.0, sampling, Some(&labels), 7).unwrap();
                assert_partition(n, &train, &test);
            }
        }
    }

    #[test]
    fn bad_test_size() {
        for bad in [0.0, -1.0, f64::NAN] {
            let err = split(10, bad, Sampling::Random, None, 0).unwrap_err();
            assert_eq!(err.sqlstate(), "22023");
        }
    }

    #[test]
    fn stratified_keeps_proportions() {
        // 80 of class 0, 20 of class 1: a 25% test set is 20 + 5.
        let labels: Vec<f64> = (0..100).map(|i| if i < 80 { 0.0 } else { 1.0 }).collect();
        let (train, test) = split(100, 0.25, Sampling::Stratified, Some(&labels), 3).unwrap();
        assert_partition(100, &train, &test);
        let ones = test.iter().filter(|&&r| labels[r] == 1.0).count();
        assert_eq!((test.len(), ones), (25, 5));
    }

    #[test]
    fn stratified_keeps_every_class_in_train() {
        // Classes of sizes 1, 2, 2: the singleton stays in train, and each
        // pair leaves a row in train even when the test set is large.
        let labels = [0.0, 1.0, 1.0, 2.0, 2.0];
        let (train, test) = split(5, 0.9, Sampling::Stratified, Some(&labels), 1).unwrap();
        assert_eq!(test.len(), 2);
        for class in [0.0, 1.0, 2.0] {
            assert!(train.iter().any(|&r| labels[r] == class), "class {class}");
        }
    }

    #[test]
    fn stratified_one_class_in_test() {
        // 3 rows, 2 classes, one test row: the test set holds one class only.
        let labels = [0.0, 0.0, 1.0];
        let (train, test) = split(3, 0.25, Sampling::Stratified, Some(&labels), 9).unwrap();
        assert_eq!(test.len(), 1);
        assert_eq!(labels[test[0]], 0.0);
        assert_eq!(train.len(), 2);
    }

    #[test]
    fn stratified_all_singletons() {
        let labels = [0.0, 1.0, 2.0];
        let (train, test) = split(3, 0.25, Sampling::Stratified, Some(&labels), 9).unwrap();
        assert_partition(3, &train, &test);
        assert_eq!(test.len(), 1);
    }

    #[test]
    fn continuous_labels_fall_back_to_random() {
        let labels: Vec<f64> = (0..40).map(|i| i as f64 * 0.5).collect();
        let parts = split(40, 0.25, Sampling::Stratified, Some(&labels), 5).unwrap();
        assert_eq!(parts.1.len(), 10);
        assert_eq!(parts, split(40, 0.25, Sampling::Random, None, 5).unwrap());
    }

    #[test]
    fn stratified_without_labels_is_random() {
        assert_eq!(
            split(20, 0.25, Sampling::Stratified, None, 5).unwrap(),
            split(20, 0.25, Sampling::Random, None, 5).unwrap()
        );
    }

    #[test]
    fn stratified_label_count_mismatch() {
        let err = split(3, 0.25, Sampling::Stratified, Some(&[1.0]), 0).unwrap_err();
        assert_eq!(err.sqlstate(), "XX000");
    }

    #[test]
    fn kfold_partitions() {
        let rows: Vec<usize> = (10..20).collect();
        let folds = kfold(&rows, 3, 11).unwrap();
        assert_eq!(folds.len(), 3);
        let sizes: Vec<usize> = folds.iter().map(|f| f.1.len()).collect();
        assert_eq!(sizes, vec![4, 3, 3]);
        let mut validated: Vec<usize> = folds.iter().flat_map(|f| f.1.clone()).collect();
        validated.sort_unstable();
        assert_eq!(validated, rows);
        for (fit, validation) in &folds {
            assert_eq!(fit.len() + validation.len(), 10);
            assert!(fit.iter().all(|r| !validation.contains(r)));
        }
        assert_eq!(folds, kfold(&rows, 3, 11).unwrap());
    }

    #[test]
    fn kfold_tiny() {
        let folds = kfold(&[4, 7], 5, 0).unwrap();
        assert_eq!(folds.len(), 2);
        assert!(folds.iter().all(|(f, v)| f.len() == 1 && v.len() == 1));
        assert_eq!(kfold(&[1, 2, 3], 1, 0).unwrap_err().sqlstate(), "22023");
        assert_eq!(kfold(&[1], 2, 0).unwrap_err().sqlstate(), "22000");
    }
}
