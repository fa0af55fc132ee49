//! `pgml.feature_importance`, `pgml.evaluate` and `pgml.confusion_matrix`
//! read through the proxy and checked against the reference's figures.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::{close, reference};
use crate::common::*;

// ---------------------------------------------------------------------------
// Feature importance
// ---------------------------------------------------------------------------

/// `SELECT * FROM pgml.feature_importance('p')`: (feature, importance, method).
pub(super) fn feature_importance(proxy: &Proxy, project: &str) -> Vec<(String, f64, String)> {
    let sql = format!("SELECT * FROM pgml.feature_importance('{project}')");
    ok(proxy, &sql)
        .lines()
        .map(|l| {
            let c: Vec<&str> = l.split('|').collect();
            assert_eq!(c.len(), 3, "{sql}: {l}");
            (c[0].to_string(), real(c[1]) as f64, c[2].to_string())
        })
        .collect()
}

/// Rows of `methods` in that order, one per feature each, importance
/// descending within a method, every value within `tol` (relative) of
/// `want[method][feature]`.
pub(super) fn check_importance(
    rows: &[(String, f64, String)],
    features: &[String],
    want: &[(&str, Vec<f64>)],
    tol: f64,
    what: &str,
) {
    let methods: Vec<&str> = want.iter().map(|(m, _)| *m).collect();
    assert_eq!(
        rows.len(),
        features.len() * methods.len(),
        "{what}: one row per feature and method ({methods:?}): {rows:?}"
    );
    for (i, (method, values)) in want.iter().enumerate() {
        let block = &rows[i * features.len()..(i + 1) * features.len()];
        assert!(
            block.iter().all(|r| r.2 == *method),
            "{what}: rows ordered by method {methods:?}: {rows:?}"
        );
        let names: BTreeSet<&str> = block.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(
            names,
            features.iter().map(String::as_str).collect(),
            "{what}: {method}: one row per feature"
        );
        for pair in block.windows(2) {
            assert!(
                pair[0].1 >= pair[1].1,
                "{what}: {method} not descending: {block:?}"
            );
        }
        for (feature, importance, _) in block {
            let j = features.iter().position(|f| f == feature).unwrap();
            assert!(
                close(*importance, values[j], tol),
                "{what}: {method} importance of {feature}: pgmlcat {importance}, reference {}",
                values[j]
            );
            assert!(*importance >= 0.0, "{what}: {feature}: {importance}");
        }
    }
}

// ---------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------

pub(super) fn evaluate(proxy: &Proxy, args: &str) -> Value {
    let sql = format!("SELECT * FROM pgml.evaluate({args})");
    let out = ok(proxy, &sql);
    assert_eq!(out.lines().count(), 1, "{sql}: one row: {out}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{sql}: {out}: {e}"));
    assert!(v.is_object(), "{sql}: {out}");
    v
}

pub(super) fn assert_metrics(got: &Value, want: &Value, names: &[&str], what: &str) {
    for name in names {
        let g = got
            .get(*name)
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("{what}: no {name} in {got}"));
        let w = want[*name]
            .as_f64()
            .unwrap_or_else(|| panic!("{what}: the reference has no {name}: {want}"));
        assert!(
            close(g, w, 1e-6),
            "{what}: {name} pgmlcat {g}, scikit-learn {w}\npgmlcat {got}\nreference {want}"
        );
    }
}

pub(super) const CLASSIFICATION: [&str; 6] =
    ["accuracy", "precision", "recall", "f1", "mcc", "log_loss"];
pub(super) const REGRESSION: [&str; 4] = [
    "r2",
    "mean_absolute_error",
    "mean_squared_error",
    "explained_variance",
];

/// The stored metrics of the deployed model of `project`.
pub(super) fn training_metrics(pg: &PgCluster, project: &str) -> Value {
    let id = deployed_id(pg, project);
    let text = pg.psql(
        "app",
        &format!("SELECT metrics FROM pgml.models WHERE id = {id}"),
    );
    serde_json::from_str(&text).unwrap()
}

/// Evaluate's metric names are names the training stores.
pub(super) fn assert_same_names(evaluated: &Value, stored: &Value, what: &str) {
    for k in evaluated.as_object().unwrap().keys() {
        assert!(
            stored.get(k).is_some(),
            "{what}: evaluate's {k} is not a name the training stores: {stored}"
        );
    }
}

/// The scikit-learn reference for labels (codes, NULLs skipped) and
/// probabilities (one per class, f64).
pub(super) fn classification_reference(
    codes: &[Option<usize>],
    proba: &[Vec<f64>],
    threshold: f64,
) -> Value {
    let (y, p): (Vec<usize>, Vec<Vec<f64>>) = codes
        .iter()
        .zip(proba)
        .filter_map(|(c, p)| c.map(|c| (c, p.clone())))
        .unzip();
    reference(&json!({"mode": "classification", "y": y, "proba": p, "threshold": threshold}))
}

/// The scikit-learn reference for a regression's labels and predictions.
pub(super) fn regression_reference(y: &[f64], pred: &[f64]) -> Value {
    reference(&json!({"mode": "regression", "y": y, "pred": pred}))
}

/// pgml.roc_curve of `args` fails: a ROC curve is for binary
/// classification.
pub(super) fn assert_no_roc_curve(proxy: &Proxy, args: &str) {
    let (success, _, stderr) = proxy.psql_full(&format!("SELECT * FROM pgml.roc_curve({args})"));
    assert!(!success && stderr.contains("ERROR"), "{stderr}");
}

/// `pgml.confusion_matrix` equals the reference's, classes named by `names`.
pub(super) fn check_confusion(
    proxy: &Proxy,
    args: &str,
    want: &Value,
    names: &[String],
    what: &str,
) {
    let sql = format!("SELECT * FROM pgml.confusion_matrix({args})");
    let got: Vec<String> = ok(proxy, &sql).lines().map(str::to_string).collect();
    let want: Vec<String> = want["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{}|{}|{}",
                names[t[0].as_u64().unwrap() as usize],
                names[t[1].as_u64().unwrap() as usize],
                t[2]
            )
        })
        .collect();
    assert_eq!(got, want, "{what}: {sql}");
}
