//! The compiled evaluator against LightGBM's own predictor: bit-identical
//! predictions for the model shapes it accepts, None for the others.

use super::*;
use crate::ml::algorithms::lightgbm_threads::Lease;
use crate::ml::algorithms::{fit, Algorithm, Model};
use crate::ml::task::Task;
use lightgbm3::Booster;
use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

fn params(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

/// Features with NaN, exact zeros, tiny values and a few repeated values
/// so splits land on them.
fn features(rows: usize, cols: usize, seed: u64) -> Array2<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    Array2::from_shape_fn((rows, cols), |_| {
        let u: f64 = rng.gen();
        if u < 0.08 {
            f64::NAN
        } else if u < 0.18 {
            0.0
        } else if u < 0.20 {
            -0.0
        } else if u < 0.21 {
            1e-40
        } else if u < 0.30 {
            (rng.gen_range(-3..4)) as f64
        } else {
            rng.gen_range(-5.0..5.0)
        }
    })
}

fn target(x: &Array2<f64>, classes: usize) -> Array2<f64> {
    Array2::from_shape_fn((x.nrows(), 1), |(r, _)| {
        let v = |c: usize| {
            let f = x[[r, c % x.ncols()]];
            if f.is_nan() {
                1.5
            } else {
                f
            }
        };
        let s = v(0) + 0.5 * v(1) * v(2) - v(3).abs();
        if classes == 0 {
            s
        } else {
            let bucket = ((s + 6.0) / 12.0 * classes as f64).floor();
            bucket.clamp(0.0, (classes - 1) as f64)
        }
    })
}

fn model_string(m: &dyn Model) -> String {
    String::from_utf8(m.to_bytes().unwrap()).unwrap()
}

/// The missing types (0 None, 1 Zero, 2 NaN) of a model's splits.
fn missing_types(text: &str) -> Vec<i8> {
    let mut seen: Vec<i8> = text
        .lines()
        .filter_map(|l| l.strip_prefix("decision_type="))
        .flat_map(|l| l.split(' ').map(|t| (t.parse::<i8>().unwrap() >> 2) & 3))
        .collect();
    seen.sort_unstable();
    seen.dedup();
    seen
}

/// Fast evaluator vs LightGBM's predictor on fresh inputs, and vs the
/// model's own `predict_proba`/`predict`. Returns the missing types seen.
fn check(task: Task, classes: usize, hp: Value) -> Vec<i8> {
    let x = features(600, 6, 1);
    let y = target(&x, classes);
    let m = fit(
        Algorithm::Lightgbm,
        task,
        x.view(),
        y.view(),
        classes,
        &params(hp),
        1,
    )
    .unwrap();
    let text = model_string(m.as_ref());
    let fast = FastModel::parse(&text).expect("parsed");
    let lease = Lease::any(1);
    let booster = Booster::from_string(&text).unwrap();
    for (seed, rows) in [(7, 2000), (8, 1), (10, 13), (9, 3003)] {
        let probe = features(rows, 6, seed);
        let want = booster
            .predict_with_params(probe.as_slice().unwrap(), 6, true, &lease.parameter())
            .unwrap();
        for threads in [1, 2] {
            let got = fast.predict(probe.view(), threads);
            assert_eq!(got.len(), want.len());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= 1e-12, "value {i}: fast {g} lightgbm {w}");
            }
        }
        let raw = booster
            .raw_scores_with_params(probe.as_slice().unwrap(), 6, true, &lease.parameter())
            .unwrap();
        let got = fast.predict_raw(probe.view(), 1);
        assert_eq!(got, raw, "raw scores bit-identical");
        // Through the model (fast path wired in).
        if task == Task::Classification {
            let p = m.predict_proba(probe.view()).unwrap();
            let k = fast.num_outputs();
            for r in 0..rows {
                if k == 1 {
                    assert_eq!(p[[r, 1]], want[r]);
                    assert_eq!(p[[r, 0]], 1.0 - want[r]);
                } else {
                    for c in 0..k {
                        assert_eq!(p[[r, c]], want[r * k + c]);
                    }
                }
            }
        } else {
            let p = m.predict(probe.view()).unwrap();
            assert_eq!(p.column(0).to_vec(), want);
        }
    }
    missing_types(&text)
}

#[test]
fn regression_matches_lightgbm() {
    let seen = check(
        Task::Regression,
        0,
        json!({"num_iterations": 60, "num_leaves": 31, "min_data_in_leaf": 5, "seed": 3}),
    );
    assert!(seen.contains(&2), "NaN-missing splits: {seen:?}");
}

#[test]
fn regression_zero_as_missing_matches_lightgbm() {
    let seen = check(
        Task::Regression,
        0,
        json!({"num_iterations": 40, "zero_as_missing": true, "min_data_in_leaf": 5}),
    );
    assert!(seen.contains(&1), "zero-missing splits: {seen:?}");
    let seen = check(
        Task::Regression,
        0,
        json!({"num_iterations": 40, "use_missing": false, "min_data_in_leaf": 5}),
    );
    assert_eq!(seen, [0], "no missing handling");
    let _ = check(
        Task::Regression,
        0,
        json!({"num_iterations": 40, "objective": "huber", "min_data_in_leaf": 5}),
    );
}

#[test]
fn binary_matches_lightgbm() {
    let _ = check(
        Task::Classification,
        2,
        json!({"num_iterations": 50, "min_data_in_leaf": 5}),
    );
    let _ = check(
        Task::Classification,
        2,
        json!({"num_iterations": 30, "sigmoid": 0.7, "zero_as_missing": true}),
    );
}

#[test]
fn multiclass_matches_lightgbm() {
    let _ = check(
        Task::Classification,
        3,
        json!({"num_iterations": 40, "min_data_in_leaf": 5}),
    );
    let _ = check(
        Task::Classification,
        4,
        json!({"num_iterations": 20, "zero_as_missing": true, "min_data_in_leaf": 5}),
    );
}

#[test]
fn unsupported_models_fall_back() {
    let x = features(400, 4, 2);
    let y = target(&x, 0);
    let fit_text = |hp: Value| {
        let m = fit(
            Algorithm::Lightgbm,
            Task::Regression,
            x.view(),
            y.view(),
            0,
            &params(hp),
            1,
        )
        .unwrap();
        model_string(m.as_ref())
    };
    let linear = fit_text(json!({"num_iterations": 5, "linear_tree": true}));
    assert!(linear.contains("is_linear=1"));
    assert!(FastModel::parse(&linear).is_none());

    let plain = fit_text(json!({"num_iterations": 5}));
    assert!(FastModel::parse(&plain).is_some());
    // A categorical split (num_cat > 0 / decision_type bit 0).
    let categorical = plain.replacen("num_cat=0", "num_cat=1", 1);
    assert!(FastModel::parse(&categorical).is_none());
    let poisson = plain.replacen("objective=regression", "objective=poisson", 1);
    assert!(FastModel::parse(&poisson).is_none());
    let sqrt = plain.replacen("objective=regression", "objective=regression sqrt", 1);
    assert!(FastModel::parse(&sqrt).is_none());
    let averaged = plain.replacen(
        "objective=regression\n",
        "objective=regression\naverage_output\n",
        1,
    );
    assert!(averaged.contains("\naverage_output\n"));
    assert!(FastModel::parse(&averaged).is_none());

    // Malformed text never panics.
    assert!(FastModel::parse("").is_none());
    assert!(FastModel::parse("tree\nversion=v4\n").is_none());
    for cut in (0..plain.len()).step_by(97) {
        if plain.is_char_boundary(cut) {
            let _ = FastModel::parse(&plain[..cut]);
        }
    }
    let cyclic = plain.replacen("left_child=", "left_child=0 ", 1);
    assert!(FastModel::parse(&cyclic).is_none());
    let far = plain.replacen("split_feature=", "split_feature=99 ", 1);
    assert!(FastModel::parse(&far).is_none());
}

/// Run with `cargo test --release --lib lgbm_fast -- --ignored --nocapture`.
#[test]
#[ignore]
fn timing_fast_vs_lightgbm() {
    let x = features(5000, 10, 4);
    let y = target(&x, 0);
    let m = fit(
        Algorithm::Lightgbm,
        Task::Regression,
        x.view(),
        y.view(),
        0,
        &params(json!({"num_iterations": 100, "num_leaves": 31})),
        2,
    )
    .unwrap();
    let text = model_string(m.as_ref());
    let fast = FastModel::parse(&text).unwrap();
    let lease = Lease::exactly(1);
    let booster = Booster::from_string(&text).unwrap();
    let probe = features(10_000, 10, 5);
    let flat = probe.as_slice().unwrap();
    let reps = 5;
    let time = |f: &dyn Fn() -> Vec<f64>| {
        let _ = f();
        let t = std::time::Instant::now();
        for _ in 0..reps {
            std::hint::black_box(f());
        }
        t.elapsed().as_secs_f64() / (reps * probe.nrows()) as f64 * 1e9
    };
    let lgbm = time(&|| {
        booster
            .predict_with_params(flat, 10, true, &lease.parameter())
            .unwrap()
    });
    let one = time(&|| fast.predict(probe.view(), 1));
    let two = time(&|| fast.predict(probe.view(), 2));
    // Single rows, as the proxy often predicts.
    let single = time(&|| {
        let mut v = Vec::with_capacity(probe.nrows());
        for r in 0..probe.nrows() {
            v.extend(fast.predict(probe.slice(ndarray::s![r..r + 1, ..]), 1));
        }
        v
    });
    let lgbm_single = time(&|| {
        let mut v = Vec::with_capacity(probe.nrows());
        for r in 0..probe.nrows() {
            v.extend(
                booster
                    .predict_with_params(
                        probe.row(r).as_slice().unwrap(),
                        10,
                        true,
                        &lease.parameter(),
                    )
                    .unwrap(),
            );
        }
        v
    });
    println!(
        "ns/row, 100 trees x 31 leaves, 10 features, 10k rows: lightgbm {lgbm:.0}, \
         fast {one:.0} (1 thread, {:.1}x), fast {two:.0} (2 threads); single-row calls: \
         lightgbm {lgbm_single:.0}, fast {single:.0} ({:.1}x)",
        lgbm / one,
        lgbm_single / single
    );
}
