//! Behaviour tests for every algorithm: each trains on a small synthetic
//! data set that fits its task, predicts sensibly, and survives a
//! to_bytes → load round trip unchanged.

use ndarray::{Array2, ArrayView2};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

use super::*;

/// The SQLSTATE of a failed fit (`unwrap_err` needs `Debug` on the model).
fn code(r: MlResult<Box<dyn Model>>) -> String {
    r.err()
        .map(|e| e.sqlstate().to_string())
        .unwrap_or_else(|| "ok".into())
}

fn params(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn none() -> Map<String, Value> {
    Map::new()
}

fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.gen_range(1e-12..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// `per_class` points around each of `centers`, sd 0.7; labels = center index.
fn blobs(centers: &[[f64; 2]], per_class: usize, seed: u64) -> (Array2<f64>, Array2<f64>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = centers.len() * per_class;
    let mut x = Array2::zeros((n, 2));
    let mut y = Array2::zeros((n, 1));
    for (c, center) in centers.iter().enumerate() {
        for i in 0..per_class {
            let r = c * per_class + i;
            x[[r, 0]] = center[0] + 0.7 * normal(&mut rng);
            x[[r, 1]] = center[1] + 0.7 * normal(&mut rng);
            y[[r, 0]] = c as f64;
        }
    }
    (x, y)
}

const TWO: &[[f64; 2]] = &[[0.0, 0.0], [5.0, 5.0]];
const THREE: &[[f64; 2]] = &[[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]];

/// y = 3a - 2b + 1 (+ a second output a + b), tiny noise.
fn linear_data(n: usize) -> (Array2<f64>, Array2<f64>) {
    let mut rng = StdRng::seed_from_u64(7);
    let mut x = Array2::zeros((n, 2));
    let mut y = Array2::zeros((n, 2));
    for r in 0..n {
        let (a, b) = (rng.gen_range(-3.0..3.0), rng.gen_range(-3.0..3.0));
        x[[r, 0]] = a;
        x[[r, 1]] = b;
        y[[r, 0]] = 3.0 * a - 2.0 * b + 1.0 + 0.01 * normal(&mut rng);
        y[[r, 1]] = a + b;
    }
    (x, y)
}

fn accuracy(pred: &Array2<f64>, y: &Array2<f64>) -> f64 {
    let hits = pred
        .column(0)
        .iter()
        .zip(y.column(0))
        .filter(|(p, t)| p == t)
        .count();
    hits as f64 / y.nrows() as f64
}

fn r2(pred: ArrayView2<f64>, y: ArrayView2<f64>) -> f64 {
    let mean = y.mean().unwrap_or(0.0);
    let ss_res: f64 = pred.iter().zip(y).map(|(p, t)| (p - t).powi(2)).sum();
    let ss_tot: f64 = y.iter().map(|t| (t - mean).powi(2)).sum();
    1.0 - ss_res / ss_tot
}

/// Round trip through the stored form must not change a single prediction.
fn assert_roundtrip(alg: Algorithm, task: Task, model: &dyn Model, x: ArrayView2<f64>) {
    let bytes = model.to_bytes().unwrap();
    let loaded = load(alg, task, &bytes).unwrap();
    assert_eq!(loaded.num_features(), model.num_features());
    assert_eq!(
        loaded.predict(x).unwrap(),
        model.predict(x).unwrap(),
        "{alg:?}"
    );
    if task == Task::Classification {
        assert_eq!(
            loaded.predict_proba(x).unwrap(),
            model.predict_proba(x).unwrap(),
            "{alg:?}"
        );
    }
}

#[test]
fn parse_names_and_task_defaults() {
    assert_eq!(
        Algorithm::parse("Elastic_Net", Task::Regression).unwrap(),
        Algorithm::ElasticNet
    );
    assert_eq!(
        Algorithm::parse("linear", Task::Clustering).unwrap(),
        Algorithm::Kmeans
    );
    assert_eq!(
        Algorithm::parse("linear", Task::Decomposition).unwrap(),
        Algorithm::Pca
    );
    for alg in Algorithm::ALL {
        for task in Task::ALL {
            if Algorithm::valid_for(task).contains(&alg) {
                assert_eq!(Algorithm::parse(alg.name(), task).unwrap(), alg);
            }
        }
    }
    let err = Algorithm::parse("xgboost", Task::Classification).unwrap_err();
    assert_eq!(err.sqlstate(), "22023");
    assert!(
        err.to_string().contains("random_forest, naive_bayes, knn"),
        "{err}"
    );
    let err = Algorithm::parse("kmeans", Task::Regression).unwrap_err();
    assert!(err.to_string().contains("linear, ridge"), "{err}");
}

#[test]
fn error_lists_every_valid_algorithm_in_order() {
    let listed = |task: Task| {
        let err = Algorithm::parse("xgboost", task).unwrap_err().to_string();
        err.split("valid algorithms: ")
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        listed(Task::Regression),
        "linear, ridge, lasso, elastic_net, svm, lightgbm, knn"
    );
    assert_eq!(
        listed(Task::Classification),
        "linear, svm, lightgbm, decision_tree, random_forest, naive_bayes, knn"
    );
    assert_eq!(listed(Task::Clustering), "linear, kmeans, dbscan");
    assert_eq!(listed(Task::Decomposition), "linear, pca");
    assert_eq!(
        Algorithm::parse("xgboost", Task::Clustering).unwrap_err().to_string(),
        "algorithm \"xgboost\" is not available for clustering; valid algorithms: linear, kmeans, dbscan"
    );
}

#[test]
fn linear_regression_recovers_coefficients_and_joint() {
    let (x, y) = linear_data(200);
    let single = y.slice(ndarray::s![.., 0..1]);
    let m = fit(
        Algorithm::Linear,
        Task::Regression,
        x.view(),
        single,
        0,
        &none(),
        1,
    )
    .unwrap();
    let probe = ndarray::array![[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]];
    let p = m.predict(probe.view()).unwrap();
    assert!((p[[0, 0]] - 1.0).abs() < 0.01, "{p}");
    assert!((p[[1, 0]] - 4.0).abs() < 0.01, "{p}");
    assert!((p[[2, 0]] + 1.0).abs() < 0.01, "{p}");

    let joint = fit(
        Algorithm::Linear,
        Task::Regression,
        x.view(),
        y.view(),
        0,
        &none(),
        1,
    )
    .unwrap();
    let p = joint.predict(probe.view()).unwrap();
    assert_eq!(p.dim(), (3, 2));
    assert!(
        (p[[1, 1]] - 1.0).abs() < 1e-6 && (p[[2, 1]] - 1.0).abs() < 1e-6,
        "{p}"
    );
    assert_roundtrip(
        Algorithm::Linear,
        Task::Regression,
        joint.as_ref(),
        x.view(),
    );
    assert_eq!(m.predict_proba(x.view()).unwrap_err().sqlstate(), "22023");
    let wrong = Array2::<f64>::zeros((2, 3));
    assert_eq!(m.predict(wrong.view()).unwrap_err().sqlstate(), "42804");
}

#[test]
fn regularized_and_svm_regressors_fit_linear_data() {
    let (x, y) = linear_data(150);
    let y = y.slice(ndarray::s![.., 0..1]);
    for (alg, hp) in [
        (Algorithm::Ridge, json!({"alpha": 0.01})),
        (Algorithm::Lasso, json!({"alpha": 0.01, "max_iter": 5000})),
        (
            Algorithm::ElasticNet,
            json!({"alpha": 0.01, "l1_ratio": 0.3}),
        ),
        (Algorithm::Svm, json!({"kernel": "linear", "C": 10.0})),
        (
            Algorithm::Knn,
            json!({"n_neighbors": 3, "weights": "distance"}),
        ),
    ] {
        let m = fit(alg, Task::Regression, x.view(), y, 0, &params(hp), 2).unwrap();
        let score = r2(m.predict(x.view()).unwrap().view(), y);
        assert!(score > 0.95, "{alg:?} r2 {score}");
        assert_roundtrip(alg, Task::Regression, m.as_ref(), x.view());
    }
}

#[test]
fn bad_hyperparameters_are_22023() {
    let (x, y) = linear_data(50);
    let y1 = y.slice(ndarray::s![.., 0..1]);
    let cases = [
        (Algorithm::Ridge, json!({"alpah": 1.0})),
        (Algorithm::Ridge, json!({"l1_ratio": 0.5})),
        (Algorithm::ElasticNet, json!({"alpha": "high"})),
        (Algorithm::Svm, json!({"kernel": "sigmoid"})),
        (Algorithm::Svm, json!({"gamma": -1})),
        (Algorithm::Lightgbm, json!({"num_leafs": 8})),
        (Algorithm::Lightgbm, json!({"num_leaves": "eight"})),
        (
            Algorithm::Lightgbm,
            json!({"objective": "no_such_objective"}),
        ),
        (Algorithm::Knn, json!({"n_neighbors": 0})),
    ];
    for (alg, hp) in cases {
        let got = code(fit(
            alg,
            Task::Regression,
            x.view(),
            y1,
            0,
            &params(hp.clone()),
            1,
        ));
        assert_eq!(got, "22023", "{alg:?} {hp}");
    }
    let (x, y) = blobs(TWO, 20, 1);
    for (alg, hp) in [
        (Algorithm::RandomForest, json!({"max_features": "half"})),
        (Algorithm::DecisionTree, json!({"criterion": "mse"})),
        (Algorithm::Linear, json!({"C": 1.0, "alpha": 1.0})),
        (Algorithm::NaiveBayes, json!({"alpha": 1.0})),
    ] {
        let err = fit(
            alg,
            Task::Classification,
            x.view(),
            y.view(),
            2,
            &params(hp.clone()),
            1,
        )
        .err()
        .map(|e| e.sqlstate().to_string());
        assert_eq!(err.as_deref(), Some("22023"), "{alg:?} {hp}");
    }
}

#[test]
fn classifiers_separate_blobs() {
    let classifiers = [
        (Algorithm::Linear, json!({})),
        (Algorithm::Svm, json!({})),
        (Algorithm::DecisionTree, json!({"max_depth": 5})),
        (Algorithm::RandomForest, json!({"n_estimators": 15})),
        (Algorithm::NaiveBayes, json!({})),
        (Algorithm::Knn, json!({})),
        (Algorithm::Lightgbm, json!({"n_estimators": 30})),
    ];
    for (centers, k) in [(TWO, 2), (THREE, 3)] {
        let (x, y) = blobs(centers, 60, 3);
        let (xt, yt) = blobs(centers, 30, 4);
        for (alg, hp) in &classifiers {
            let m = fit(
                *alg,
                Task::Classification,
                x.view(),
                y.view(),
                k,
                &params(hp.clone()),
                2,
            )
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            let pred = m.predict(xt.view()).unwrap();
            let acc = accuracy(&pred, &yt);
            assert!(acc > 0.9, "{alg:?} with {k} classes: accuracy {acc}");
            let proba = m.predict_proba(xt.view()).unwrap();
            assert_eq!(proba.dim(), (xt.nrows(), k), "{alg:?}");
            for (row, p) in proba.rows().into_iter().zip(pred.column(0)) {
                assert!((row.sum() - 1.0).abs() < 1e-9, "{alg:?} {row}");
                assert_eq!(
                    argmax(row) as f64,
                    *p,
                    "{alg:?} proba disagrees with predict"
                );
            }
            assert_roundtrip(*alg, Task::Classification, m.as_ref(), xt.view());
        }
    }
}

#[test]
fn randomness_is_seeded() {
    let (x, y) = blobs(THREE, 40, 5);
    // LightGBM repeats exactly (its model string records num_threads, so
    // compare same-thread bytes, and predictions across thread counts).
    let hp = params(json!({"n_estimators": 10, "bagging_fraction": 0.5, "bagging_freq": 1}));
    let gbm = |threads| {
        fit(
            Algorithm::Lightgbm,
            Task::Classification,
            x.view(),
            y.view(),
            3,
            &hp,
            threads,
        )
        .unwrap()
    };
    let (a, b, c) = (gbm(2), gbm(2), gbm(1));
    assert_eq!(a.to_bytes().unwrap(), b.to_bytes().unwrap());
    assert_eq!(
        a.predict_proba(x.view()).unwrap(),
        c.predict_proba(x.view()).unwrap()
    );
    // linfa's trees sum f32 class frequencies in HashMap order, so their
    // stored impurities may differ in the last bits; the forest's bootstrap
    // and feature draws, and so its votes, do not depend on the thread count.
    let hp = params(json!({"n_estimators": 10}));
    let a = fit(
        Algorithm::RandomForest,
        Task::Classification,
        x.view(),
        y.view(),
        3,
        &hp,
        1,
    )
    .unwrap();
    let b = fit(
        Algorithm::RandomForest,
        Task::Classification,
        x.view(),
        y.view(),
        3,
        &hp,
        2,
    )
    .unwrap();
    assert_eq!(
        a.predict_proba(x.view()).unwrap(),
        b.predict_proba(x.view()).unwrap()
    );
    let a = fit(
        Algorithm::Kmeans,
        Task::Clustering,
        x.view(),
        Array2::zeros((120, 0)).view(),
        0,
        &params(json!({"n_clusters": 3})),
        1,
    )
    .unwrap();
    let b = fit(
        Algorithm::Kmeans,
        Task::Clustering,
        x.view(),
        Array2::zeros((120, 0)).view(),
        0,
        &params(json!({"n_clusters": 3})),
        1,
    )
    .unwrap();
    assert_eq!(a.to_bytes().unwrap(), b.to_bytes().unwrap());
}

#[test]
fn lightgbm_regression_joint_and_importance() {
    let (x, y) = linear_data(300);
    let hp = params(json!({"num_boost_round": 50, "learning_rate": 0.2, "seed": 1}));
    let m = fit(
        Algorithm::Lightgbm,
        Task::Regression,
        x.view(),
        y.view(),
        0,
        &hp,
        2,
    )
    .unwrap();
    let p = m.predict(x.view()).unwrap();
    assert_eq!(p.dim(), (300, 2));
    for c in 0..2 {
        let score = r2(
            p.column(c).insert_axis(ndarray::Axis(1)),
            y.column(c).insert_axis(ndarray::Axis(1)),
        );
        assert!(score > 0.9, "output {c}: r2 {score}");
    }
    let imp = m.feature_importance().unwrap();
    assert_eq!(imp.len(), 2);
    assert!(imp.iter().all(|g| *g > 0.0), "{imp:?}");
    assert_roundtrip(Algorithm::Lightgbm, Task::Regression, m.as_ref(), x.view());

    // Column-major and strided inputs give the same predictions as row-major.
    let transposed = x.t().as_standard_layout().into_owned();
    let fortran = transposed.view().reversed_axes();
    assert!(!fortran.is_standard_layout());
    assert_eq!(m.predict(fortran).unwrap(), p);
    let single = y.slice(ndarray::s![.., 0..1]);
    let one = fit(
        Algorithm::Lightgbm,
        Task::Regression,
        x.view(),
        single,
        0,
        &hp,
        1,
    )
    .unwrap();
    let bytes = one.to_bytes().unwrap();
    assert!(
        bytes.starts_with(b"tree"),
        "single booster stored as LightGBM's model string"
    );
}

#[test]
fn kmeans_finds_two_blobs() {
    let (x, y) = blobs(TWO, 50, 9);
    let m = fit(
        Algorithm::Kmeans,
        Task::Clustering,
        x.view(),
        Array2::zeros((100, 0)).view(),
        0,
        &params(json!({"n_clusters": 2})),
        1,
    )
    .unwrap();
    let ids = m.predict(x.view()).unwrap();
    let first = ids[[0, 0]];
    let agree = ids
        .column(0)
        .iter()
        .zip(y.column(0))
        .filter(|(id, label)| (**id == first) == (**label == 0.0))
        .count();
    assert_eq!(agree, 100);
    assert_roundtrip(Algorithm::Kmeans, Task::Clustering, m.as_ref(), x.view());
}

#[test]
fn dbscan_clusters_and_marks_noise() {
    let (x, _) = blobs(&[[0.0, 0.0], [20.0, 20.0]], 40, 11);
    let m = fit(
        Algorithm::Dbscan,
        Task::Clustering,
        x.view(),
        Array2::zeros((80, 0)).view(),
        0,
        &params(json!({"eps": 1.5, "min_samples": 4})),
        1,
    )
    .unwrap();
    let probe = ndarray::array![[0.0, 0.0], [20.0, 20.0], [10.0, 10.0]];
    let p = m.predict(probe.view()).unwrap();
    assert!(
        p[[0, 0]] >= 0.0 && p[[1, 0]] >= 0.0 && p[[0, 0]] != p[[1, 0]],
        "{p}"
    );
    assert_eq!(p[[2, 0]], -1.0);
    assert_roundtrip(Algorithm::Dbscan, Task::Clustering, m.as_ref(), x.view());
}

#[test]
fn pca_first_component_explains_collinear_data() {
    let mut rng = StdRng::seed_from_u64(13);
    let mut x = Array2::zeros((100, 3));
    for r in 0..100 {
        let t: f64 = rng.gen_range(-5.0..5.0);
        x[[r, 0]] = t;
        x[[r, 1]] = 2.0 * t + 0.05 * normal(&mut rng);
        x[[r, 2]] = -t + 0.05 * normal(&mut rng);
    }
    let m = fit(
        Algorithm::Pca,
        Task::Decomposition,
        x.view(),
        Array2::zeros((100, 0)).view(),
        0,
        &params(json!({"n_components": 2})),
        1,
    )
    .unwrap();
    let ratio = m.explained_variance_ratio().unwrap();
    assert_eq!(ratio.len(), 2);
    assert!(ratio[0] > 0.9, "{ratio:?}");
    assert!(ratio.iter().sum::<f64>() <= 1.0 + 1e-9, "{ratio:?}");
    assert_eq!(m.predict(x.view()).unwrap().dim(), (100, 2));
    assert_roundtrip(Algorithm::Pca, Task::Decomposition, m.as_ref(), x.view());
    let none_y = Array2::zeros((100, 0));
    let too_many = params(json!({"n_components": 4}));
    let got = code(fit(
        Algorithm::Pca,
        Task::Decomposition,
        x.view(),
        none_y.view(),
        0,
        &too_many,
        1,
    ));
    assert_eq!(got, "22023");
}

#[test]
fn bad_data_is_reported() {
    let (mut x, y) = blobs(TWO, 10, 1);
    x[[3, 1]] = f64::NAN;
    assert_eq!(
        code(fit(
            Algorithm::Linear,
            Task::Classification,
            x.view(),
            y.view(),
            2,
            &none(),
            1,
        )),
        "22000"
    );
    let (x, mut y) = blobs(TWO, 10, 1);
    y[[0, 0]] = 7.0;
    assert_eq!(
        code(fit(
            Algorithm::NaiveBayes,
            Task::Classification,
            x.view(),
            y.view(),
            2,
            &none(),
            1,
        )),
        "22000"
    );
    assert_eq!(
        code(fit(
            Algorithm::Kmeans,
            Task::Regression,
            x.view(),
            y.view(),
            0,
            &none(),
            1,
        )),
        "22023"
    );
}

/// LightGBM keeps one process-wide thread count, and a call that changes
/// it under another overruns that call's per-thread buffers: trainings
/// with different counts beside LightGBM predictions crashed the process
/// (SIGSEGV) before every call took a lease. Now each training gives the
/// model it gives alone, and each prediction the values it gives alone.
#[test]
fn trainings_with_different_thread_counts_and_predictions_run_at_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let (x, _) = blobs(THREE, 1000, 8);
    // Two outputs: a joint model, predicted by LightGBM itself (a single
    // booster would take the fast evaluator).
    let y = Array2::from_shape_fn((x.nrows(), 2), |(i, j)| x[[i, j]] * 2.0);
    let hp = params(json!({"n_estimators": 2}));
    let train = move |x: &Array2<f64>, y: &Array2<f64>, threads| {
        fit(
            Algorithm::Lightgbm,
            Task::Regression,
            x.view(),
            y.view(),
            0,
            &hp,
            threads,
        )
        .unwrap()
        .to_bytes()
        .unwrap()
    };
    let counts = [1usize, 4, 1, 3];
    let alone: Vec<Vec<u8>> = counts.iter().map(|&t| train(&x, &y, t)).collect();
    let model: Arc<dyn Model> = Arc::from(
        fit(
            Algorithm::Lightgbm,
            Task::Regression,
            x.view(),
            y.view(),
            0,
            &params(json!({"n_estimators": 2})),
            1,
        )
        .unwrap(),
    );
    let probe = x.slice(ndarray::s![0..2, ..]).to_owned();
    let predicted = model.predict(probe.view()).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let predictors: Vec<_> = (0..2)
        .map(|_| {
            let (model, probe, predicted, done) = (
                model.clone(),
                probe.clone(),
                predicted.clone(),
                done.clone(),
            );
            std::thread::spawn(move || {
                let mut n = 0;
                while !done.load(Ordering::Relaxed) || n == 0 {
                    assert_eq!(model.predict(probe.view()).unwrap(), predicted);
                    n += 1;
                }
            })
        })
        .collect();
    let trainers: Vec<_> = counts
        .iter()
        .zip(alone)
        .map(|(&threads, alone)| {
            let (x, y, train) = (x.clone(), y.clone(), train.clone());
            std::thread::spawn(move || {
                for _ in 0..150 {
                    assert!(train(&x, &y, threads) == alone, "{threads} threads");
                }
            })
        })
        .collect();
    for t in trainers {
        t.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    for p in predictors {
        p.join().unwrap();
    }
}
