//! Issue #19 points 1-3 through the proxy against real Postgres:
//! `pgml.explain` (per-row contributions), `pgml.feature_importance` and
//! evaluation on any relation (`pgml.evaluate`, `pgml.confusion_matrix`,
//! `pgml.roc_curve`), as the README's pgml section describes them. Every figure
//! is checked against a reference computed without pgmlcat: Python's
//! lightgbm on the model text pgmlcat stored in `pgml.files`, numpy, and
//! scikit-learn's metrics (tests/reference/ml_explain_reference.py), on the
//! rows read straight from Postgres (`ORDER BY ctid`: the order the
//! training read them in, so `test_sampling => 'last'` splits alike).
//!
//! mod.rs holds what every test here uses: the reference, the rows, the
//! training and the stored model. `explanation` reads and checks
//! `pgml.explain`'s values; `metrics` reads feature importances and
//! evaluations. The tests: `lightgbm`, `linear`, `evaluate` and
//! `errors_and_clients`.

mod errors_and_clients;
mod evaluate;
mod explanation;
mod lightgbm;
mod linear;
mod metrics;

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::common::*;

/// tests/reference/ml_explain_reference.py's answer to `request`.
fn reference(request: &Value) -> Value {
    python_reference("ml_explain_reference.py", request)
}

/// |a - b| <= tol * max(1, |b|).
fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1.0)
}

/// A `real` the proxy returned and the f64 it stands for agree to float4
/// precision (relative 1e-6).
fn real_close(got: f32, want: f64) -> bool {
    got == want as f32 || ((got as f64) - want).abs() <= 1e-6 * want.abs().max(1e-3)
}

fn sigmoid(m: f64) -> f64 {
    1.0 / (1.0 + (-m).exp())
}

// ---------------------------------------------------------------------------
// Rows, read straight from Postgres
// ---------------------------------------------------------------------------

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `ARRAY["a", "b", ...]` of the feature columns.
fn array_of(features: &[String]) -> String {
    let cols: Vec<String> = features.iter().map(|f| ident(f)).collect();
    format!("ARRAY[{}]", cols.join(", "))
}

/// `("a", "b", ...)`: the row form.
fn row_of(features: &[String]) -> String {
    let cols: Vec<String> = features.iter().map(|f| ident(f)).collect();
    format!("({})", cols.join(", "))
}

/// The columns of `relation`, in their order, as Postgres lists them.
fn columns(pg: &PgCluster, relation: &str) -> Vec<String> {
    pg.psql(
        "app",
        &format!(
            "SELECT attname FROM pg_attribute WHERE attrelid = '{relation}'::regclass \
             AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        ),
    )
    .lines()
    .map(str::to_string)
    .collect()
}

/// A relation's numeric feature columns (every column but the label, in
/// order), each row's values as float8 and its label's text (None: NULL).
#[derive(Debug, Clone)]
struct Rows {
    features: Vec<String>,
    x: Vec<Vec<f64>>,
    labels: Vec<Option<String>>,
}

impl Rows {
    fn read(pg: &PgCluster, relation: &str, label: &str) -> Rows {
        let features: Vec<String> = columns(pg, relation)
            .into_iter()
            .filter(|c| c != label)
            .collect();
        let cols: Vec<String> = features
            .iter()
            .map(|f| format!("{}::float8", ident(f)))
            .collect();
        let l = ident(label);
        let sql = format!(
            "SELECT {}, {l} IS NULL, {l}::text FROM {relation} ORDER BY ctid",
            cols.join(", ")
        );
        let out = pg.psql("app", &sql);
        let mut x = Vec::new();
        let mut labels = Vec::new();
        for line in out.lines() {
            let c: Vec<&str> = line.split('|').collect();
            assert_eq!(c.len(), features.len() + 2, "{sql}: {line}");
            x.push(
                c[..features.len()]
                    .iter()
                    .map(|v| v.parse::<f64>().unwrap_or_else(|e| panic!("{line}: {e}")))
                    .collect(),
            );
            labels.push(match c[features.len()] {
                "t" => None,
                _ => Some(c[features.len() + 1].to_string()),
            });
        }
        Rows {
            features,
            x,
            labels,
        }
    }

    fn len(&self) -> usize {
        self.x.len()
    }

    /// Rows `test_sampling => 'last'` (test_size 0.25) trains on: the first
    /// n - round(n / 4).
    fn n_train(&self) -> usize {
        self.len() - (self.len() as f64 * 0.25).round() as usize
    }

    fn train_x(&self) -> Vec<Vec<f64>> {
        self.x[..self.n_train()].to_vec()
    }

    fn test_x(&self) -> Vec<Vec<f64>> {
        self.x[self.n_train()..].to_vec()
    }

    fn label_f64(&self) -> Vec<f64> {
        self.labels
            .iter()
            .map(|l| l.as_deref().unwrap().parse().unwrap())
            .collect()
    }

    /// The labels as class codes (classes sorted: false before true,
    /// numbers by value), None for NULL; and the classes' texts.
    fn codes(&self) -> (Vec<Option<usize>>, Vec<String>) {
        let distinct: BTreeSet<&str> = self.labels.iter().flatten().map(String::as_str).collect();
        let mut classes: Vec<String> = distinct.iter().map(|s| s.to_string()).collect();
        if distinct.iter().all(|c| *c == "true" || *c == "false") {
            classes.sort_by_key(|c| c == "true");
        } else {
            classes.sort_by(|a, b| {
                a.parse::<f64>()
                    .unwrap()
                    .total_cmp(&b.parse::<f64>().unwrap())
            });
        }
        let codes = self
            .labels
            .iter()
            .map(|l| {
                l.as_ref()
                    .map(|l| classes.iter().position(|c| c == l).unwrap())
            })
            .collect();
        (codes, classes)
    }
}

// ---------------------------------------------------------------------------
// The catalog and the stored model
// ---------------------------------------------------------------------------

/// Trains `project` through the proxy with test_sampling 'last'; checks
/// the result row.
fn train(
    proxy: &Proxy,
    project: &str,
    task: &str,
    relation: &str,
    label: &str,
    algorithm: &str,
    extra: &str,
) {
    let sql = format!(
        "SELECT * FROM pgml.train('{project}', '{task}', '{relation}', '{label}', \
         algorithm => '{algorithm}', test_sampling => 'last'{extra})"
    );
    let out = ok(proxy, &sql);
    assert_eq!(out, format!("{project}|{task}|{algorithm}|t"), "{sql}");
}

const LGBM: &str = r#", hyperparams => '{"n_estimators": 20, "deterministic": true, "num_threads": 1, "seed": 0}'"#;

/// Loads the toy dataset `dataset` (diabetes, a regression on target, or
/// breast_cancer, a classification of malignant) through the proxy and
/// trains `project` on it as [`train`] does.
fn train_on(proxy: &Proxy, dataset: &str, project: &str, algorithm: &str, extra: &str) {
    let (task, label) = match dataset {
        "diabetes" => ("regression", "target"),
        "breast_cancer" => ("classification", "malignant"),
        _ => panic!("no task and label known for {dataset}"),
    };
    ok(
        proxy,
        &format!("SELECT * FROM pgml.load_dataset('{dataset}')"),
    );
    let relation = format!("pgml.{dataset}");
    train(proxy, project, task, &relation, label, algorithm, extra);
}

/// The deployed model's file 'model', read on the catalog's cluster directly.
fn model_file(pg: &PgCluster, project: &str) -> Vec<u8> {
    let id = deployed_id(pg, project);
    let b64 = pg.psql(
        "app",
        &format!("SELECT encode(data, 'base64') FROM pgml.files WHERE model_id = {id} AND path = 'model'"),
    );
    assert!(
        !b64.is_empty(),
        "no file 'model' for model {id} of {project}"
    );
    decode_base64(&b64)
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a') as u32 + 26,
            b'0'..=b'9' => (c - b'0') as u32 + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// What Python's lightgbm says of the deployed model of `project`.
struct Lgbm {
    num_class: usize,
    /// Per row: the value (regression), P(positive) (binary), or one
    /// probability per class.
    predict: Vec<Vec<f64>>,
    /// Per row: the raw score (one, or one per class).
    raw: Vec<Vec<f64>>,
    /// Per row, per class: the contributions of each feature, then the base.
    contrib: Vec<Vec<Vec<f64>>>,
    gain: Vec<f64>,
    shap: Vec<f64>,
}

impl Lgbm {
    /// A binary model's [P(false), P(true)] per row.
    fn binary_proba(&self) -> Vec<Vec<f64>> {
        self.predict
            .iter()
            .map(|p| vec![1.0 - p[0], p[0]])
            .collect()
    }
}

fn per_row(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| match r {
            Value::Array(_) => floats(r),
            _ => vec![r.as_f64().unwrap()],
        })
        .collect()
}

fn lightgbm_reference(pg: &PgCluster, project: &str, x: &[Vec<f64>], x_test: &[Vec<f64>]) -> Lgbm {
    let text =
        String::from_utf8(model_file(pg, project)).expect("the LightGBM model text is UTF-8");
    assert!(
        text.starts_with("tree"),
        "not a LightGBM model text: {}",
        &text[..text.len().min(200)]
    );
    let req = json!({
        "mode": "lightgbm",
        "model_b64": base64_encode(text.as_bytes()),
        "x": x,
        "x_test": x_test,
    });
    let out = reference(&req);
    Lgbm {
        num_class: out["num_class"].as_u64().unwrap() as usize,
        predict: per_row(&out["predict"]),
        raw: per_row(&out["raw"]),
        contrib: out["contrib"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(floats).collect())
            .collect(),
        gain: floats(&out["gain"]),
        shap: floats(&out["shap"]),
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let mut n = 0u32;
        for (i, b) in chunk.iter().enumerate() {
            n |= (*b as u32) << (16 - 8 * i);
        }
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The stored model of a 'linear' regression (linfa's OLS as JSON):
/// `{"n_features": k, "outputs": [{"intercept": b, "params": {"data": [...]}}]}`.
fn stored_linear(pg: &PgCluster, project: &str) -> (f64, Vec<f64>) {
    let text = String::from_utf8(model_file(pg, project)).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("model file {text}: {e}"));
    let out = &v["outputs"][0];
    let params = if out.get("params").is_some() {
        &out["params"]
    } else {
        &out["hyperplane"]
    };
    (
        out["intercept"]
            .as_f64()
            .unwrap_or_else(|| panic!("no intercept in {text}")),
        floats(&params["data"]),
    )
}

/// breast_cancer's 30 feature names, as Postgres lists the table's columns.
fn breast_cancer_features(pg: &PgCluster) -> Vec<String> {
    let features: Vec<String> = columns(pg, "pgml.breast_cancer")
        .into_iter()
        .filter(|c| c != "malignant")
        .collect();
    assert_eq!(features.len(), 30);
    assert_eq!(features[0], "mean radius");
    assert!(features.contains(&"worst fractal dimension".to_string()));
    features
}

/// `SELECT <cols>, <calls...> FROM <from>` through the proxy: each line
/// split in `n` columns (the last one may hold '|').
fn select(proxy: &Proxy, sql: &str, n: usize) -> Vec<Vec<String>> {
    ok(proxy, sql)
        .lines()
        .map(|l| {
            let c: Vec<String> = l.splitn(n, '|').map(str::to_string).collect();
            assert_eq!(c.len(), n, "{sql}: {l}");
            c
        })
        .collect()
}
