//! Issue #19 points 1-3 through the proxy against real Postgres:
//! `pgml.explain` (per-row contributions), `pgml.feature_importance` and
//! evaluation on any relation (`pgml.evaluate`, `pgml.confusion_matrix`,
//! `pgml.roc_curve`), as the README's pgml section describes them. Every figure
//! is checked against a reference computed without pgmlcat: Python's
//! lightgbm on the model text pgmlcat stored in `pgml.files`, numpy, and
//! scikit-learn's metrics (tests/reference/ml_explain_reference.py), on the
//! rows read straight from Postgres (`ORDER BY ctid`: the order the
//! training read them in, so `test_sampling => 'last'` splits alike).

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::common::*;
use crate::ml_groups::{deployed_id, ok, psql_full, single};

// ---------------------------------------------------------------------------
// The Python reference
// ---------------------------------------------------------------------------

/// Runs tests/reference/ml_explain_reference.py with `request` on stdin
/// and .tools/py first on PYTHONPATH; its JSON answer.
fn reference(request: &Value) -> Value {
    let root = env!("CARGO_MANIFEST_DIR");
    let script = format!("{root}/tests/reference/ml_explain_reference.py");
    let tools = format!("{root}/.tools/py");
    let path = match std::env::var("PYTHONPATH") {
        Ok(p) if !p.is_empty() => format!("{tools}:{p}"),
        _ => tools,
    };
    let mut child = Command::new("python3")
        .arg(&script)
        .env("PYTHONPATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3 (scripts/setup.sh installs what it needs)");
    let body = request.to_string();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        stdin.write_all(body.as_bytes()).unwrap();
    });
    let out = child.wait_with_output().expect("wait for python3");
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "the Python reference failed (numpy, scikit-learn and lightgbm in .tools/py?):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the Python reference's answer: {e}\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap_or_else(|| panic!("not a number: {x}")))
        .collect()
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

// ---------------------------------------------------------------------------
// Explanations
// ---------------------------------------------------------------------------

/// One `pgml.explain` value: its contributions in the order the text has them.
#[derive(Debug, Clone)]
struct Explanation {
    base: f64,
    contributions: Vec<(String, f64)>,
    class: Option<f64>,
    /// The object's own keys.
    keys: BTreeSet<String>,
}

/// A JSON object's entries in text order (serde_json's Map sorts them).
struct InOrder(Vec<(String, f64)>);

impl<'de> serde::Deserialize<'de> for InOrder {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<InOrder, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = InOrder;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of numbers")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<InOrder, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, f64>()? {
                    entries.push((k, v));
                }
                Ok(InOrder(entries))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(serde::Deserialize)]
struct ContributionsInOrder {
    contributions: InOrder,
}

impl Explanation {
    fn parse(text: &str) -> Explanation {
        let v: Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("explain gave {text}: {e}"));
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("explain gave {text}: not an object"));
        let ordered: ContributionsInOrder =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("explain gave {text}: {e}"));
        Explanation {
            base: obj
                .get("base")
                .and_then(Value::as_f64)
                .unwrap_or_else(|| panic!("no numeric \"base\" in {text}")),
            contributions: ordered.contributions.0,
            class: obj.get("class").map(|c| {
                c.as_f64()
                    .unwrap_or_else(|| panic!("\"class\" is not a number in {text}"))
            }),
            keys: obj.keys().cloned().collect(),
        }
    }

    fn sum(&self) -> f64 {
        self.base + self.contributions.iter().map(|(_, v)| v).sum::<f64>()
    }

    fn get(&self, feature: &str) -> Option<f64> {
        self.contributions
            .iter()
            .find(|(k, _)| k == feature)
            .map(|(_, v)| *v)
    }

    fn names(&self) -> BTreeSet<String> {
        self.contributions.iter().map(|(k, _)| k.clone()).collect()
    }

    /// Keys in order of |value| descending, as the proxy writes them.
    fn assert_ordered(&self, what: &str) {
        for pair in self.contributions.windows(2) {
            assert!(
                pair[0].1.abs() >= pair[1].1.abs(),
                "{what}: contributions not in order of |value| descending: {:?}",
                self.contributions
            );
        }
    }

    /// The same explanation as `other` (another input form of the same
    /// row) within `tol`: the same features, base and class.
    fn assert_close_to(&self, other: &Explanation, tol: f64, what: &str) {
        assert_eq!(self.names(), other.names(), "{what}: features");
        assert_eq!(self.class, other.class, "{what}: class");
        assert!(
            close(self.base, other.base, tol),
            "{what}: base {} vs {}",
            self.base,
            other.base
        );
        for (name, v) in &self.contributions {
            let w = other.get(name).unwrap();
            assert!(
                close(*v, w, tol),
                "{what}: {name} = {v} vs {w}\n{:?}\n{:?}",
                self.contributions,
                other.contributions
            );
        }
    }

    /// `self` is `full` cut to the k largest |values| (ties at the cut may
    /// go either way), with the same base.
    fn assert_top_k_of(&self, full: &Explanation, k: usize, what: &str) {
        assert_eq!(
            self.contributions.len(),
            k.min(full.contributions.len()),
            "{what}: top {k} of {:?}, got {:?}",
            full.contributions,
            self.contributions
        );
        assert!(
            close(self.base, full.base, 1e-12),
            "{what}: base {} vs {}",
            self.base,
            full.base
        );
        assert_eq!(self.class, full.class, "{what}: class");
        for (name, v) in &self.contributions {
            let w = full.get(name).unwrap_or_else(|| {
                panic!(
                    "{what}: {name} is not a feature of {:?}",
                    full.contributions
                )
            });
            assert!(close(*v, w, 1e-12), "{what}: {name} = {v}, in full {w}");
        }
        let kept = self.names();
        let smallest_kept = self
            .contributions
            .iter()
            .map(|(_, v)| v.abs())
            .fold(f64::INFINITY, f64::min);
        for (name, v) in &full.contributions {
            if !kept.contains(name) {
                assert!(
                    v.abs() <= smallest_kept,
                    "{what}: {name} ({v}) left out of the top {k} while a smaller one is kept: {:?}",
                    self.contributions
                );
            }
        }
    }
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

fn parse_real(s: &str) -> f32 {
    s.parse()
        .unwrap_or_else(|e| panic!("not a real: {s:?}: {e}"))
}

/// `{0.1,0.9}` -> [0.1, 0.9].
fn parse_real_array(s: &str) -> Vec<f32> {
    s.trim_matches(|c| c == '{' || c == '}')
        .split(',')
        .map(parse_real)
        .collect()
}

/// Every row's explanation: the keys are exactly `features`, in order of
/// |value|, and the object has `keys` (base, contributions[, class]).
fn check_shape(e: &Explanation, features: &[String], keys: &[&str], what: &str) {
    let want: BTreeSet<String> = features.iter().cloned().collect();
    assert_eq!(e.names(), want, "{what}: one contribution per feature");
    assert_eq!(
        e.contributions.len(),
        features.len(),
        "{what}: no feature twice"
    );
    let want_keys: BTreeSet<String> = keys.iter().map(|k| k.to_string()).collect();
    assert_eq!(e.keys, want_keys, "{what}: the object's keys");
    e.assert_ordered(what);
}

/// The explanation equals Python lightgbm's pred_contrib (class block
/// `class`): each feature's contribution and the base, within 1e-6.
fn check_treeshap(e: &Explanation, contrib: &[f64], features: &[String], what: &str) {
    assert_eq!(
        contrib.len(),
        features.len() + 1,
        "{what}: python's columns"
    );
    for (j, f) in features.iter().enumerate() {
        let got = e.get(f).unwrap();
        assert!(
            close(got, contrib[j], 1e-6),
            "{what}: {f} = {got}, lightgbm's pred_contrib {}",
            contrib[j]
        );
    }
    assert!(
        close(e.base, contrib[features.len()], 1e-6),
        "{what}: base {} vs lightgbm's expected value {}",
        e.base,
        contrib[features.len()]
    );
}

// ---------------------------------------------------------------------------
// Feature importance
// ---------------------------------------------------------------------------

/// `SELECT * FROM pgml.feature_importance('p')`: (feature, importance, method).
fn feature_importance(proxy: &Proxy, project: &str) -> Vec<(String, f64, String)> {
    let sql = format!("SELECT * FROM pgml.feature_importance('{project}')");
    ok(proxy, &sql)
        .lines()
        .map(|l| {
            let c: Vec<&str> = l.split('|').collect();
            assert_eq!(c.len(), 3, "{sql}: {l}");
            (c[0].to_string(), parse_real(c[1]) as f64, c[2].to_string())
        })
        .collect()
}

/// Rows of `methods` in that order, one per feature each, importance
/// descending within a method, every value within `tol` (relative) of
/// `want[method][feature]`.
fn check_importance(
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

fn evaluate(proxy: &Proxy, args: &str) -> Value {
    let sql = format!("SELECT * FROM pgml.evaluate({args})");
    let out = ok(proxy, &sql);
    assert_eq!(out.lines().count(), 1, "{sql}: one row: {out}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{sql}: {out}: {e}"));
    assert!(v.is_object(), "{sql}: {out}");
    v
}

fn assert_metrics(got: &Value, want: &Value, names: &[&str], what: &str) {
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

const CLASSIFICATION: [&str; 6] = ["accuracy", "precision", "recall", "f1", "mcc", "log_loss"];
const REGRESSION: [&str; 4] = [
    "r2",
    "mean_absolute_error",
    "mean_squared_error",
    "explained_variance",
];

/// The stored metrics of the deployed model of `project`.
fn training_metrics(pg: &PgCluster, project: &str) -> Value {
    let id = deployed_id(pg, project);
    let text = pg.psql(
        "app",
        &format!("SELECT metrics FROM pgml.models WHERE id = {id}"),
    );
    serde_json::from_str(&text).unwrap()
}

/// Evaluate's metric names are names the training stores.
fn assert_same_names(evaluated: &Value, stored: &Value, what: &str) {
    for k in evaluated.as_object().unwrap().keys() {
        assert!(
            stored.get(k).is_some(),
            "{what}: evaluate's {k} is not a name the training stores: {stored}"
        );
    }
}

/// The scikit-learn reference for labels (codes, NULLs skipped) and
/// probabilities (one per class, f64).
fn classification_reference(codes: &[Option<usize>], proba: &[Vec<f64>], threshold: f64) -> Value {
    let (y, p): (Vec<usize>, Vec<Vec<f64>>) = codes
        .iter()
        .zip(proba)
        .filter_map(|(c, p)| c.map(|c| (c, p.clone())))
        .unzip();
    reference(&json!({"mode": "classification", "y": y, "proba": p, "threshold": threshold}))
}

/// `pgml.confusion_matrix` equals the reference's, classes named by `names`.
fn check_confusion(proxy: &Proxy, args: &str, want: &Value, names: &[String], what: &str) {
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

// ---------------------------------------------------------------------------
// LightGBM
// ---------------------------------------------------------------------------

const DIABETES: [&str; 10] = [
    "age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6",
];

#[test]
fn explain_lightgbm_regression_is_lightgbm_treeshap() {
    let (pg, proxy) = single();
    ok(&proxy, "SELECT * FROM pgml.load_dataset('diabetes')");
    train(
        &proxy,
        "dia_lgbm",
        "regression",
        "pgml.diabetes",
        "target",
        "lightgbm",
        LGBM,
    );
    let rows = Rows::read(&pg, "pgml.diabetes", "target");
    assert_eq!(rows.features, DIABETES.map(String::from).to_vec());
    assert_eq!(rows.len(), 442);
    let py = lightgbm_reference(&pg, "dia_lgbm", &rows.x, &rows.test_x());
    assert_eq!(py.num_class, 1);

    // Every row: the predicted value, the explanation, the features as
    // Postgres gives them directly.
    let arr = array_of(&rows.features);
    let sql = format!(
        "SELECT age::float8, s6::float8, pgml.predict('dia_lgbm', {arr}), pgml.explain('dia_lgbm', {arr}) \
         FROM pgml.diabetes ORDER BY ctid"
    );
    let out = select(&proxy, &sql, 4);
    assert_eq!(out.len(), rows.len(), "{sql}: every row");
    let mut full = Vec::new();
    for (i, r) in out.iter().enumerate() {
        let what = format!("row {i}");
        assert_eq!(
            r[0].parse::<f64>().unwrap(),
            rows.x[i][0],
            "{what}: the row order"
        );
        assert_eq!(
            r[1].parse::<f64>().unwrap(),
            rows.x[i][9],
            "{what}: the row order"
        );
        let e = Explanation::parse(&r[3]);
        check_shape(&e, &rows.features, &["base", "contributions"], &what);
        // Additivity: base + contributions = the prediction.
        let predicted = parse_real(&r[2]);
        assert!(
            real_close(predicted, e.sum()),
            "{what}: base + contributions = {}, pgml.predict {predicted}",
            e.sum()
        );
        assert!(
            close(e.sum(), py.predict[i][0], 1e-6),
            "{what}: lightgbm predicts {}",
            py.predict[i][0]
        );
        check_treeshap(&e, &py.contrib[i][0], &rows.features, &what);
        full.push(e);
    }
    // The base is the model's expected value: the same for every row.
    assert!(full.iter().all(|e| e.base == full[0].base));

    // Row forms and top_k, positional, named, NULL and above the feature count.
    // (A table in the same physical order, so ORDER BY ctid pairs the rows.)
    pg.psql(
        "app",
        "CREATE TABLE dia_features AS SELECT age, sex, bmi, bp, s1, s2, s3, s4, s5, s6 FROM pgml.diabetes ORDER BY ctid",
    );
    let row = row_of(&rows.features);
    // Each input form: its explanation adds up to its own prediction, equals
    // the ARRAY form's (within 1e-6: row input travels as text), and its
    // top_k (positional, named, NULL, above the feature count) is the cut.
    for (form, from, top_k, k) in [
        (row.clone(), "pgml.diabetes", "3", 3),
        (format!("ROW{row}"), "pgml.diabetes", "top_k => 5", 5),
        ("d.*".to_string(), "dia_features d", "100", 10),
        (arr.clone(), "pgml.diabetes", "top_k => 1", 1),
        (arr.clone(), "pgml.diabetes", "NULL", 10),
    ] {
        let sql = format!(
            "SELECT pgml.predict('dia_lgbm', {form}), pgml.explain('dia_lgbm', {form}), \
             pgml.explain('dia_lgbm', {form}, {top_k}) FROM {from} ORDER BY ctid"
        );
        let out = select(&proxy, &sql, 3);
        assert_eq!(out.len(), rows.len(), "{sql}");
        for (i, r) in out.iter().enumerate() {
            let what = format!("{sql}: row {i}");
            let whole = Explanation::parse(&r[1]);
            check_shape(&whole, &rows.features, &["base", "contributions"], &what);
            let predicted = parse_real(&r[0]);
            assert!(
                real_close(predicted, whole.sum()),
                "{what}: base + contributions = {}, pgml.predict {predicted}",
                whole.sum()
            );
            whole.assert_close_to(&full[i], 1e-6, &what);
            let cut = Explanation::parse(&r[2]);
            cut.assert_ordered(&what);
            cut.assert_top_k_of(&whole, k, &what);
        }
    }

    // Where Postgres computes with the value (the general method): the rows
    // whose largest contribution is bmi's.
    let want = full
        .iter()
        .filter(|e| e.contributions[0].0 == "bmi")
        .count();
    assert!(want > 0 && want < rows.len(), "bmi leads in {want} rows");
    let sql = format!(
        "SELECT count(*) FROM pgml.diabetes WHERE pgml.explain('dia_lgbm', {arr}, 1)->'contributions' ? 'bmi'"
    );
    assert_eq!(ok(&proxy, &sql), want.to_string(), "{sql}");
    let sql = format!(
        "SELECT sum((pgml.explain('dia_lgbm', {arr})->'contributions'->>'bmi')::float8) FROM pgml.diabetes"
    );
    let sum: f64 = ok(&proxy, &sql).parse().unwrap();
    let want_sum: f64 = full.iter().map(|e| e.get("bmi").unwrap()).sum();
    assert!(close(sum, want_sum, 1e-9), "{sql}: {sum}, want {want_sum}");
    assert_eq!(pg.psql("app", "SELECT count(*) FROM pgml.diabetes"), "442");

    // All constant features: no server needed, same numbers.
    let consts: Vec<String> = rows.x[7].iter().map(|v| format!("{v}::float8")).collect();
    let sql = format!(
        "SELECT pgml.explain('dia_lgbm', ARRAY[{}]::real[], 4)",
        consts.join(", ")
    );
    let e = Explanation::parse(&ok(&proxy, &sql));
    e.assert_top_k_of(&full[7], 4, &sql);

    // Feature importance: LightGBM's normalized gain, then the mean |SHAP|
    // over the test split's rows.
    let fi = feature_importance(&proxy, "dia_lgbm");
    check_importance(
        &fi,
        &rows.features,
        &[("gain", py.gain.clone()), ("shap", py.shap.clone())],
        1e-6,
        "dia_lgbm",
    );
    let gain_sum: f64 = fi.iter().filter(|r| r.2 == "gain").map(|r| r.1).sum();
    assert!((gain_sum - 1.0).abs() < 1e-5, "gain sums to {gain_sum}");
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

#[test]
fn explain_lightgbm_binary_is_the_positive_class_margin() {
    let (pg, proxy) = single();
    ok(&proxy, "SELECT * FROM pgml.load_dataset('breast_cancer')");
    train(
        &proxy,
        "bc_lgbm",
        "classification",
        "pgml.breast_cancer",
        "malignant",
        "lightgbm",
        LGBM,
    );
    let features = breast_cancer_features(&pg);
    let rows = Rows::read(&pg, "pgml.breast_cancer", "malignant");
    assert_eq!(rows.features, features);
    assert_eq!(rows.len(), 569);
    let py = lightgbm_reference(&pg, "bc_lgbm", &rows.x, &rows.test_x());
    assert_eq!(py.num_class, 1);

    let arr = array_of(&features);
    let sql = format!(
        "SELECT malignant, pgml.predict_proba('bc_lgbm', {arr}), pgml.explain('bc_lgbm', {arr}) \
         FROM pgml.breast_cancer ORDER BY ctid"
    );
    let out = select(&proxy, &sql, 3);
    assert_eq!(out.len(), rows.len());
    let mut full = Vec::new();
    for (i, r) in out.iter().enumerate() {
        let what = format!("row {i}");
        let label = if r[0] == "t" { "true" } else { "false" };
        assert_eq!(Some(label), rows.labels[i].as_deref(), "{what}: row order");
        let e = Explanation::parse(&r[2]);
        check_shape(&e, &features, &["base", "contributions"], &what);
        // The margin (log-odds) of the positive class, true.
        let proba = parse_real_array(&r[1]);
        assert_eq!(proba.len(), 2, "{what}: {}", r[1]);
        let p = sigmoid(e.sum());
        assert!(
            (p - proba[1] as f64).abs() <= 1e-6,
            "{what}: sigmoid(base + contributions) = {p}, predict_proba {:?}",
            proba
        );
        assert!(
            close(e.sum(), py.raw[i][0], 1e-6),
            "{what}: lightgbm's raw score {}",
            py.raw[i][0]
        );
        check_treeshap(&e, &py.contrib[i][0], &features, &what);
        full.push(e);
    }

    // The row form, and top_k named. Row input travels as text (to_json):
    // a real's shortest decimal, which pgmlcat reads back as the float4 the
    // column holds (read as a float8, row 432 fell on the other side of a
    // split before), so both forms predict and explain every row alike.
    let row = row_of(&features);
    let sql = format!(
        "SELECT pgml.predict_proba('bc_lgbm', {arr}), pgml.predict_proba('bc_lgbm', {row}), \
         pgml.explain('bc_lgbm', {row}), pgml.explain('bc_lgbm', {row}, top_k => 4) \
         FROM pgml.breast_cancer ORDER BY ctid"
    );
    let out = select(&proxy, &sql, 4);
    assert_eq!(out.len(), rows.len());
    let mut differ = Vec::new();
    for (i, r) in out.iter().enumerate() {
        let what = format!("{sql}: row {i}");
        let whole = Explanation::parse(&r[2]);
        check_shape(&whole, &features, &["base", "contributions"], &what);
        let proba = parse_real_array(&r[1]);
        let p = sigmoid(whole.sum());
        assert!(
            (p - proba[1] as f64).abs() <= 1e-6,
            "{what}: sigmoid(base + contributions) = {p}, predict_proba {proba:?}"
        );
        let agree = whole.names() == full[i].names()
            && close(whole.base, full[i].base, 1e-6)
            && whole
                .contributions
                .iter()
                .all(|(name, v)| close(*v, full[i].get(name).unwrap(), 1e-6));
        if !agree || r[0] != r[1] {
            differ.push((i, r[0].clone(), r[1].clone()));
        }
        let cut = Explanation::parse(&r[3]);
        cut.assert_ordered(&what);
        cut.assert_top_k_of(&whole, 4, &what);
        // Names with spaces come as they are.
        assert!(cut.names().iter().all(|n| features.contains(n)), "{what}");
    }
    assert!(
        differ.is_empty(),
        "the row and ARRAY forms explain {} rows differently (row, P by ARRAY, P by row): {differ:?}",
        differ.len()
    );
    // In a subquery, then filtered by Postgres.
    let sql = format!(
        "SELECT count(*) FROM (SELECT pgml.explain('bc_lgbm', {arr}) AS e FROM pgml.breast_cancer) s \
         WHERE (e->'contributions'->>'worst area')::float8 > 0"
    );
    let want = full
        .iter()
        .filter(|e| e.get("worst area").unwrap() > 0.0)
        .count();
    assert!(want > 0 && want < rows.len(), "{want}");
    assert_eq!(ok(&proxy, &sql), want.to_string(), "{sql}");

    let fi = feature_importance(&proxy, "bc_lgbm");
    check_importance(
        &fi,
        &features,
        &[("gain", py.gain.clone()), ("shap", py.shap.clone())],
        1e-6,
        "bc_lgbm",
    );
}

#[test]
fn explain_lightgbm_multiclass_names_the_class() {
    let (pg, proxy) = single();
    ok(&proxy, "SELECT * FROM pgml.load_dataset('iris')");
    // iris is ordered by class: mix it so the 'last' test rows have every class.
    ok(
        &proxy,
        "CREATE TABLE iris_mixed AS SELECT sepal_length, sepal_width, petal_length, petal_width, target \
         FROM (SELECT *, row_number() OVER () - 1 AS i FROM pgml.iris) s ORDER BY (i * 37) % 150",
    );
    train(
        &proxy,
        "iris_lgbm",
        "classification",
        "iris_mixed",
        "target",
        "lightgbm",
        LGBM,
    );
    let rows = Rows::read(&pg, "iris_mixed", "target");
    assert_eq!(rows.len(), 150);
    let (codes, classes) = rows.codes();
    assert_eq!(classes, ["0", "1", "2"]);
    let py = lightgbm_reference(&pg, "iris_lgbm", &rows.x, &rows.test_x());
    assert_eq!(py.num_class, 3);

    let arr = array_of(&rows.features);
    let sql = format!(
        "SELECT pgml.predict('iris_lgbm', {arr}), pgml.explain('iris_lgbm', {arr}) FROM iris_mixed ORDER BY ctid"
    );
    let out = select(&proxy, &sql, 2);
    assert_eq!(out.len(), 150);
    let mut full = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, r) in out.iter().enumerate() {
        let what = format!("row {i}");
        let e = Explanation::parse(&r[1]);
        check_shape(
            &e,
            &rows.features,
            &["base", "contributions", "class"],
            &what,
        );
        let predicted = parse_real(&r[0]) as f64;
        assert_eq!(
            e.class,
            Some(predicted),
            "{what}: \"class\" is what pgml.predict returns"
        );
        let code = predicted as usize;
        seen.insert(code);
        // The raw score of the predicted class, the largest one.
        let raw = &py.raw[i];
        let best = (0..3).max_by(|a, b| raw[*a].total_cmp(&raw[*b])).unwrap();
        assert_eq!(code, best, "{what}: lightgbm's raw scores {raw:?}");
        assert!(
            close(e.sum(), raw[code], 1e-6),
            "{what}: base + contributions {} vs raw {}",
            e.sum(),
            raw[code]
        );
        check_treeshap(&e, &py.contrib[i][code], &rows.features, &what);
        full.push(e);
    }
    assert_eq!(seen.len(), 3, "every class is predicted somewhere");
    let sql = format!("SELECT pgml.explain('iris_lgbm', {arr}, 2) FROM iris_mixed ORDER BY ctid");
    for (i, r) in select(&proxy, &sql, 1).iter().enumerate() {
        let e = Explanation::parse(&r[0]);
        assert!(e.keys.contains("class"), "{sql}: {:?}", e.keys);
        e.assert_top_k_of(&full[i], 2, &format!("{sql}: row {i}"));
    }

    // Importance: gain, and mean |SHAP| summed over the classes.
    check_importance(
        &feature_importance(&proxy, "iris_lgbm"),
        &rows.features,
        &[("gain", py.gain.clone()), ("shap", py.shap.clone())],
        1e-6,
        "iris_lgbm",
    );

    // Evaluation: multiclass metrics (no roc_auc), confusion matrix, and
    // roc_curve refused.
    let want = classification_reference(&codes, &py.predict, 0.5);
    let got = evaluate(&proxy, "'iris_lgbm', 'iris_mixed'");
    assert_metrics(&got, &want, &CLASSIFICATION, "iris_lgbm on iris_mixed");
    assert!(
        got.get("roc_auc").is_none(),
        "roc_auc is binary only: {got}"
    );
    assert_same_names(&got, &training_metrics(&pg, "iris_lgbm"), "iris_lgbm");
    check_confusion(
        &proxy,
        "'iris_lgbm', 'iris_mixed'",
        &want,
        &classes,
        "iris_lgbm",
    );
    let (success, _, stderr) = psql_full(
        &proxy,
        "SELECT * FROM pgml.roc_curve('iris_lgbm', 'iris_mixed')",
    );
    assert!(!success && stderr.contains("ERROR"), "{stderr}");
}

#[test]
fn explain_names_array_elements_and_one_hot_categories() {
    let (pg, proxy) = single();
    pg.psql(
        "app",
        "CREATE TABLE kinds AS SELECT k::float8 / 10 AS x, (ARRAY['red', 'green', 'blue'])[k % 3 + 1] AS color, \
                ARRAY[sin(k * 0.7), cos(k * 1.3)] AS v, \
                k::float8 / 10 + (k % 3) * 2 + 3 * sin(k * 0.7) - cos(k * 1.3) AS y \
         FROM generate_series(1, 300) AS k; \
         CREATE VIEW kinds_x AS SELECT x, color, v FROM kinds",
    );
    train(
        &proxy,
        "kinds",
        "regression",
        "kinds",
        "y",
        "lightgbm",
        r#", hyperparams => '{"n_estimators": 20, "min_data_in_leaf": 5}', preprocess => '{"color": {"encode": "one_hot"}}'"#,
    );
    let want: BTreeSet<String> = [
        "x",
        "color=red",
        "color=green",
        "color=blue",
        "v[1]",
        "v[2]",
    ]
    .map(String::from)
    .into();
    let sql = "SELECT pgml.predict('kinds', k.*), pgml.explain('kinds', k.*) FROM kinds_x k";
    let out = select(&proxy, sql, 2);
    assert_eq!(out.len(), 300);
    for (i, r) in out.iter().enumerate() {
        let e = Explanation::parse(&r[1]);
        let what = format!("{sql}: row {i}");
        assert_eq!(e.names(), want, "{what}");
        assert_eq!(e.contributions.len(), want.len(), "{what}");
        e.assert_ordered(&what);
        let predicted = parse_real(&r[0]);
        assert!(
            real_close(predicted, e.sum()),
            "{what}: {} vs {predicted}",
            e.sum()
        );
    }
    let fi = feature_importance(&proxy, "kinds");
    for method in ["gain", "shap"] {
        let names: BTreeSet<String> = fi
            .iter()
            .filter(|r| r.2 == method)
            .map(|r| r.0.clone())
            .collect();
        assert_eq!(names, want, "{method}: {fi:?}");
    }
}

// ---------------------------------------------------------------------------
// Linear models
// ---------------------------------------------------------------------------

#[test]
fn explain_linear_regression_is_coef_times_distance_to_the_training_mean() {
    let (pg, proxy) = single();
    ok(&proxy, "SELECT * FROM pgml.load_dataset('diabetes')");
    train(
        &proxy,
        "dia_lin",
        "regression",
        "pgml.diabetes",
        "target",
        "linear",
        "",
    );
    let rows = Rows::read(&pg, "pgml.diabetes", "target");
    let (intercept, coef) = stored_linear(&pg, "dia_lin");
    assert_eq!(coef.len(), 10);
    let y = rows.label_f64();
    let n_train = rows.n_train();
    assert_eq!(n_train, 331);
    let py = reference(&json!({
        "mode": "linear",
        "coef": [coef],
        "intercept": [intercept],
        "x_train": rows.train_x(),
        "y_train": &y[..n_train],
        "x": rows.x,
    }));
    // The stored model is the training split's least squares.
    let ols = &py["lstsq"];
    assert!(
        close(intercept, ols["intercept"].as_f64().unwrap(), 1e-6),
        "{intercept} vs {ols}"
    );
    for (c, w) in coef.iter().zip(floats(&ols["coef"])) {
        assert!(close(*c, w, 1e-6), "coefficient {c} vs numpy's {w}");
    }

    let arr = array_of(&rows.features);
    let sql = format!(
        "SELECT pgml.predict('dia_lin', {arr}), pgml.explain('dia_lin', {arr}) FROM pgml.diabetes ORDER BY ctid"
    );
    let out = select(&proxy, &sql, 2);
    assert_eq!(out.len(), 442);
    let mut outputs = Vec::new();
    for (i, r) in out.iter().enumerate() {
        let what = format!("row {i}");
        let e = Explanation::parse(&r[1]);
        check_shape(&e, &rows.features, &["base", "contributions"], &what);
        let want = &py["explain"][i][0];
        let predicted = parse_real(&r[0]);
        assert!(
            real_close(predicted, e.sum()),
            "{what}: {} vs pgml.predict {predicted}",
            e.sum()
        );
        assert!(
            close(e.sum(), want["output"].as_f64().unwrap(), 1e-9),
            "{what}: {want}"
        );
        assert!(
            close(e.base, want["base"].as_f64().unwrap(), 1e-6),
            "{what}: base {} = intercept + coef . mean {}",
            e.base,
            want["base"]
        );
        for (j, (f, c)) in rows
            .features
            .iter()
            .zip(floats(&want["contributions"]))
            .enumerate()
        {
            let got = e.get(f).unwrap();
            assert!(
                close(got, c, 1e-6),
                "{what}: {f}: {got}, coef {} * (x {} - mean {}) = {c}",
                coef[j],
                rows.x[i][j],
                py["mean"][j]
            );
        }
        outputs.push(want["output"].as_f64().unwrap());
    }
    let row = row_of(&rows.features);
    let sql = format!(
        "SELECT pgml.explain('dia_lin', {row}), pgml.explain('dia_lin', {row}, 2) FROM pgml.diabetes ORDER BY ctid"
    );
    let by_row = select(&proxy, &sql, 2);
    assert_eq!(by_row.len(), out.len());
    for (i, (r, a)) in by_row.iter().zip(&out).enumerate() {
        let what = format!("{sql}: row {i}");
        let whole = Explanation::parse(&r[0]);
        whole.assert_close_to(&Explanation::parse(&a[1]), 1e-6, &what);
        Explanation::parse(&r[1]).assert_top_k_of(&whole, 2, &what);
    }

    // Importance: |coef_j| * std_j over the training split.
    check_importance(
        &feature_importance(&proxy, "dia_lin"),
        &rows.features,
        &[("coefficient", floats(&py["importance"]))],
        1e-6,
        "dia_lin",
    );

    // Evaluation on the whole table, from the model's own outputs.
    let want = reference(&json!({"mode": "regression", "y": y, "pred": outputs}));
    let got = evaluate(&proxy, "'dia_lin', 'pgml.diabetes'");
    assert_metrics(&got, &want, &REGRESSION, "dia_lin on pgml.diabetes");
    assert_same_names(&got, &training_metrics(&pg, "dia_lin"), "dia_lin");
}

#[test]
fn explain_logistic_is_linear_in_each_feature() {
    let (pg, proxy) = single();
    ok(&proxy, "SELECT * FROM pgml.load_dataset('breast_cancer')");
    train(
        &proxy,
        "bc_logit",
        "classification",
        "pgml.breast_cancer",
        "malignant",
        "linear",
        "",
    );
    let features = breast_cancer_features(&pg);
    let rows = Rows::read(&pg, "pgml.breast_cancer", "malignant");
    let f = features.len();
    let moments = reference(&json!({
        "mode": "linear", "coef": [vec![0.0; f]], "intercept": [0.0], "x_train": rows.train_x(),
    }));
    let mean = floats(&moments["mean"]);

    let arr = array_of(&features);
    let sql = format!(
        "SELECT pgml.predict_proba('bc_logit', {arr}), pgml.explain('bc_logit', {arr}) FROM pgml.breast_cancer ORDER BY ctid"
    );
    let out = select(&proxy, &sql, 2);
    assert_eq!(out.len(), 569);
    let mut full = Vec::new();
    for (i, r) in out.iter().enumerate() {
        let what = format!("row {i}");
        let e = Explanation::parse(&r[1]);
        check_shape(&e, &features, &["base", "contributions"], &what);
        let proba = parse_real_array(&r[0]);
        let p = sigmoid(e.sum());
        assert!(
            (p - proba[1] as f64).abs() <= 1e-6,
            "{what}: sigmoid(base + contributions) = {p}, predict_proba {proba:?}"
        );
        full.push(e);
    }
    // contribution_j = coef_j (x_j - mean_j) with one coef_j for every row:
    // read coef_j off the row farthest from the mean, then check them all.
    let mut coef = Vec::new();
    for (j, name) in features.iter().enumerate() {
        let far = (0..rows.len())
            .max_by(|a, b| {
                (rows.x[*a][j] - mean[j])
                    .abs()
                    .total_cmp(&(rows.x[*b][j] - mean[j]).abs())
            })
            .unwrap();
        coef.push(full[far].get(name).unwrap() / (rows.x[far][j] - mean[j]));
    }
    assert!(
        coef.iter().any(|c| c.abs() > 1e-6),
        "a model that uses its features: {coef:?}"
    );
    let base = full[0].base;
    let intercept = base - coef.iter().zip(&mean).map(|(c, m)| c * m).sum::<f64>();
    let py = reference(&json!({
        "mode": "linear",
        "coef": [coef],
        "intercept": [intercept],
        "x_train": rows.train_x(),
        "x": rows.x,
    }));
    for (i, e) in full.iter().enumerate() {
        assert!(
            close(e.base, base, 1e-12),
            "row {i}: one base for every row"
        );
        let want = floats(&py["explain"][i][0]["contributions"]);
        for (j, name) in features.iter().enumerate() {
            let got = e.get(name).unwrap();
            assert!(
                close(got, want[j], 1e-6),
                "row {i}: {name} = {got}, but coef {} * (x {} - training mean {}) = {}",
                coef[j],
                rows.x[i][j],
                mean[j],
                want[j]
            );
        }
    }
    // The coefficient importance is |coef_j| * std_j of those same coefs.
    check_importance(
        &feature_importance(&proxy, "bc_logit"),
        &features,
        &[("coefficient", floats(&py["importance"]))],
        1e-6,
        "bc_logit",
    );

    // Evaluation from the margins.
    let (codes, _) = rows.codes();
    let proba: Vec<Vec<f64>> = full
        .iter()
        .map(|e| {
            let p = sigmoid(e.sum());
            vec![1.0 - p, p]
        })
        .collect();
    let want = classification_reference(&codes, &proba, 0.5);
    let got = evaluate(&proxy, "'bc_logit', 'pgml.breast_cancer'");
    let mut names = CLASSIFICATION.to_vec();
    names.push("roc_auc");
    assert_metrics(&got, &want, &names, "bc_logit on pgml.breast_cancer");
}

// ---------------------------------------------------------------------------
// Evaluation on any relation
// ---------------------------------------------------------------------------

#[test]
fn evaluate_binary_on_any_relation_matches_sklearn() {
    let (pg, proxy) = single();
    ok(&proxy, "SELECT * FROM pgml.load_dataset('breast_cancer')");
    train(
        &proxy,
        "bc_lgbm",
        "classification",
        "pgml.breast_cancer",
        "malignant",
        "lightgbm",
        LGBM,
    );
    let features = breast_cancer_features(&pg);
    let arr = array_of(&features);
    let mut names = CLASSIFICATION.to_vec();
    names.push("roc_auc");

    // The training relation itself: probabilities from Python's lightgbm on
    // the stored model, checked against pgml.predict_proba row by row.
    let rows = Rows::read(&pg, "pgml.breast_cancer", "malignant");
    let (codes, classes) = rows.codes();
    assert_eq!(classes, ["false", "true"]);
    let py = lightgbm_reference(&pg, "bc_lgbm", &rows.x, &[]);
    let proba: Vec<Vec<f64>> = py.predict.iter().map(|p| vec![1.0 - p[0], p[0]]).collect();
    let sql = format!(
        "SELECT malignant, pgml.predict('bc_lgbm', {arr}), pgml.predict_proba('bc_lgbm', {arr}) FROM pgml.breast_cancer ORDER BY ctid"
    );
    let out = select(&proxy, &sql, 3);
    assert_eq!(out.len(), rows.len());
    for (i, r) in out.iter().enumerate() {
        let pr = parse_real_array(&r[2]);
        assert!(
            (pr[1] as f64 - proba[i][1]).abs() <= 1e-6,
            "row {i}: {pr:?} vs lightgbm {}",
            proba[i][1]
        );
        let class = parse_real(&r[1]);
        assert_eq!(
            class,
            if proba[i][1] >= 0.5 { 1.0 } else { 0.0 },
            "row {i}: {r:?}"
        );
    }
    let want = classification_reference(&codes, &proba, 0.5);
    let got = evaluate(&proxy, "'bc_lgbm', 'pgml.breast_cancer'");
    assert_metrics(&got, &want, &names, "bc_lgbm on pgml.breast_cancer");
    assert_same_names(&got, &training_metrics(&pg, "bc_lgbm"), "bc_lgbm");
    for k in REGRESSION {
        assert!(got.get(k).is_none(), "{k} in classification metrics: {got}");
    }

    // The test split as a table of its own: the metrics the training stored.
    let n_train = rows.n_train();
    pg.psql(
        "app",
        &format!(
            "CREATE TABLE bc_test AS SELECT * FROM pgml.breast_cancer ORDER BY ctid OFFSET {n_train}"
        ),
    );
    let stored = training_metrics(&pg, "bc_lgbm");
    let got = evaluate(&proxy, "'bc_lgbm', 'bc_test'");
    assert_metrics(
        &got,
        &stored,
        &names,
        "bc_lgbm on its test rows vs the training's metrics",
    );
    let test_want = classification_reference(&codes[n_train..], &proba[n_train..], 0.5);
    assert_metrics(&got, &test_want, &names, "bc_lgbm on bc_test");

    // The ROC curve: one row per distinct score, thresholds descending.
    let sql = "SELECT * FROM pgml.roc_curve('bc_lgbm', 'pgml.breast_cancer')";
    let curve: Vec<Vec<f32>> = ok(&proxy, sql)
        .lines()
        .map(|l| l.split('|').map(parse_real).collect())
        .collect();
    let want_curve = want["roc"].as_array().unwrap();
    assert_eq!(
        curve.len(),
        want_curve.len(),
        "{sql}: one row per distinct score"
    );
    assert!(curve.len() > 100, "{} distinct scores", curve.len());
    for (i, (got, w)) in curve.iter().zip(want_curve).enumerate() {
        let w = floats(w);
        assert_eq!(got.len(), 4, "{sql}: row {i}");
        assert!(
            real_close(got[0], w[0]),
            "{sql}: row {i}: threshold {} vs {}",
            got[0],
            w[0]
        );
        for c in 1..4 {
            assert!(
                ((got[c] as f64) - w[c]).abs() <= 1e-6,
                "{sql}: row {i}: column {c}: {got:?} vs sklearn {w:?}"
            );
        }
        if i > 0 {
            assert!(got[0] <= curve[i - 1][0], "{sql}: thresholds descending");
        }
    }
    let last = curve.last().unwrap();
    assert_eq!(
        (last[1], last[2]),
        (1.0, 1.0),
        "the lowest threshold takes every row"
    );

    // A filtered copy, created through the proxy; its size checked directly.
    ok(
        &proxy,
        "CREATE TABLE bc_eval AS SELECT * FROM pgml.breast_cancer WHERE \"mean radius\" > 13",
    );
    let want_n = rows.x.iter().filter(|x| x[0] > 13.0).count();
    assert_eq!(
        pg.psql("app", "SELECT count(*) FROM bc_eval"),
        want_n.to_string()
    );
    let eval_rows = Rows::read(&pg, "bc_eval", "malignant");
    assert_eq!(eval_rows.len(), want_n);
    let (eval_codes, _) = eval_rows.codes();
    let eval_proba: Vec<Vec<f64>> = lightgbm_reference(&pg, "bc_lgbm", &eval_rows.x, &[])
        .predict
        .iter()
        .map(|p| vec![1.0 - p[0], p[0]])
        .collect();
    let want = classification_reference(&eval_codes, &eval_proba, 0.5);
    let got = evaluate(&proxy, "'bc_lgbm', 'bc_eval'");
    assert_metrics(&got, &want, &names, "bc_lgbm on bc_eval");
    check_confusion(
        &proxy,
        "'bc_lgbm', 'bc_eval'",
        &want,
        &bool_class_names(&proxy),
        "bc_eval",
    );
    let total: u64 = want["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[2].as_u64().unwrap())
        .sum();
    assert_eq!(total as usize, want_n);
    let eval_curve = ok(&proxy, "SELECT * FROM pgml.roc_curve('bc_lgbm', 'bc_eval')");
    assert_eq!(
        eval_curve.lines().count(),
        want["roc"].as_array().unwrap().len()
    );

    // threshold: positive when P(true) >= 0.3.
    let low = classification_reference(&eval_codes, &eval_proba, 0.3);
    assert_ne!(
        low["recall"], want["recall"],
        "the data has probabilities in [0.3, 0.5): the threshold shows"
    );
    for args in [
        "'bc_lgbm', 'bc_eval', 0.3",
        "'bc_lgbm', 'bc_eval', threshold => 0.3",
    ] {
        let got = evaluate(&proxy, args);
        assert_metrics(&got, &low, &names, args);
    }

    // NULL labels are skipped.
    pg.psql(
        "app",
        "UPDATE bc_eval SET malignant = NULL WHERE \"mean texture\" > 22",
    );
    let nulled = Rows::read(&pg, "bc_eval", "malignant");
    let n_null = nulled.labels.iter().filter(|l| l.is_none()).count();
    assert!(n_null > 10 && n_null < want_n - 10, "{n_null} NULL labels");
    let (null_codes, _) = nulled.codes();
    let null_proba: Vec<Vec<f64>> = lightgbm_reference(&pg, "bc_lgbm", &nulled.x, &[])
        .predict
        .iter()
        .map(|p| vec![1.0 - p[0], p[0]])
        .collect();
    let want = classification_reference(&null_codes, &null_proba, 0.5);
    let got = evaluate(&proxy, "'bc_lgbm', 'bc_eval'");
    assert_metrics(&got, &want, &names, "bc_lgbm on bc_eval with NULL labels");
    // (The README: a NOTICE counts them.)
    let (success, _, stderr) =
        psql_full(&proxy, "SELECT * FROM pgml.evaluate('bc_lgbm', 'bc_eval')");
    assert!(success, "{stderr}");
    assert!(
        stderr.contains("NOTICE") && stderr.contains(&n_null.to_string()),
        "a NOTICE counts the {n_null} rows skipped: {stderr}"
    );
}

/// How the proxy names the classes of a boolean label. The contract says
/// "the label's text form (numbers as Postgres prints them)", which does
/// not settle a boolean: 'false'/'true' (its ::text), 'f'/'t' (its output
/// form) or '0'/'1' (the class values pgml.predict returns). Any of them,
/// the same in every row, false's first.
fn bool_class_names(proxy: &Proxy) -> Vec<String> {
    let out = ok(
        proxy,
        "SELECT * FROM pgml.confusion_matrix('bc_lgbm', 'bc_eval')",
    );
    let mut got: Vec<String> = Vec::new();
    for line in out.lines() {
        let actual = line.split('|').next().unwrap().to_string();
        if !got.contains(&actual) {
            got.push(actual);
        }
    }
    assert!(
        got == ["false", "true"] || got == ["f", "t"] || got == ["0", "1"],
        "a boolean label's classes: {got:?}"
    );
    got
}

#[test]
fn evaluate_regression_equals_the_training_metrics_on_the_test_rows() {
    let (pg, proxy) = single();
    ok(&proxy, "SELECT * FROM pgml.load_dataset('diabetes')");
    train(
        &proxy,
        "dia_lgbm",
        "regression",
        "pgml.diabetes",
        "target",
        "lightgbm",
        LGBM,
    );
    let rows = Rows::read(&pg, "pgml.diabetes", "target");
    let y = rows.label_f64();
    let py = lightgbm_reference(&pg, "dia_lgbm", &rows.x, &[]);
    let pred: Vec<f64> = py.predict.iter().map(|p| p[0]).collect();

    let want = reference(&json!({"mode": "regression", "y": y, "pred": pred}));
    let got = evaluate(&proxy, "'dia_lgbm', 'pgml.diabetes'");
    assert_metrics(&got, &want, &REGRESSION, "dia_lgbm on pgml.diabetes");
    let stored = training_metrics(&pg, "dia_lgbm");
    assert_same_names(&got, &stored, "dia_lgbm");
    for k in ["accuracy", "f1", "roc_auc", "log_loss"] {
        assert!(got.get(k).is_none(), "{k} in regression metrics: {got}");
    }

    // The test split as a table of its own: the metrics the training stored.
    let n_train = rows.n_train();
    pg.psql(
        "app",
        &format!(
            "CREATE TABLE dia_test AS SELECT * FROM pgml.diabetes ORDER BY ctid OFFSET {n_train}"
        ),
    );
    assert_eq!(
        pg.psql("app", "SELECT count(*) FROM dia_test"),
        (rows.len() - n_train).to_string()
    );
    let got = evaluate(&proxy, "'dia_lgbm', 'dia_test'");
    assert_metrics(
        &got,
        &stored,
        &REGRESSION,
        "dia_lgbm on its test rows vs the training's metrics",
    );
    let want =
        reference(&json!({"mode": "regression", "y": &y[n_train..], "pred": &pred[n_train..]}));
    assert_metrics(&got, &want, &REGRESSION, "dia_lgbm on dia_test");

    // A view with a filter, through the search_path; NULL labels skipped.
    pg.psql(
        "app",
        "CREATE VIEW dia_view AS SELECT age, sex, bmi, bp, s1, s2, s3, s4, s5, s6, \
         CASE WHEN bmi > 0.05 THEN NULL ELSE target END AS target FROM pgml.diabetes",
    );
    let keep: Vec<usize> = (0..rows.len()).filter(|i| rows.x[*i][2] <= 0.05).collect();
    assert!(
        keep.len() > 300 && keep.len() < rows.len(),
        "{}",
        keep.len()
    );
    assert_eq!(
        pg.psql("app", "SELECT count(target) FROM dia_view"),
        keep.len().to_string()
    );
    let want = reference(&json!({
        "mode": "regression",
        "y": keep.iter().map(|i| y[*i]).collect::<Vec<_>>(),
        "pred": keep.iter().map(|i| pred[*i]).collect::<Vec<_>>(),
    }));
    let got = evaluate(&proxy, "'dia_lgbm', 'dia_view'");
    assert_metrics(&got, &want, &REGRESSION, "dia_lgbm on dia_view");

    // A regression has no ROC curve.
    let (success, _, stderr) = psql_full(
        &proxy,
        "SELECT * FROM pgml.roc_curve('dia_lgbm', 'pgml.diabetes')",
    );
    assert!(!success && stderr.contains("ERROR"), "{stderr}");
}

// ---------------------------------------------------------------------------
// Errors, and other clients
// ---------------------------------------------------------------------------

async fn sqlstate(client: &tokio_postgres::Client, sql: &str) -> (String, String) {
    let err = client
        .simple_query(sql)
        .await
        .err()
        .unwrap_or_else(|| panic!("{sql}: succeeded, an error was expected"));
    let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
    let one: i32 = client
        .query_one("SELECT 1", &[])
        .await
        .unwrap_or_else(|e| panic!("after {sql}: {e}"))
        .get(0);
    assert_eq!(one, 1, "the session goes on after {sql}");
    (db.code().code().to_string(), db.message().to_string())
}

#[test]
fn unsupported_and_unknown_get_their_sqlstates() {
    let (pg, proxy) = single();
    ok(&proxy, "SELECT * FROM pgml.load_dataset('iris')");
    ok(
        &proxy,
        "CREATE TABLE iris_bin AS SELECT sepal_length, sepal_width, petal_length, petal_width, target = 2 AS virginica FROM pgml.iris",
    );
    train(
        &proxy,
        "iris_svm",
        "classification",
        "pgml.iris",
        "target",
        "svm",
        "",
    );
    train(
        &proxy,
        "iris_width",
        "regression",
        "pgml.iris",
        "petal_width",
        "lightgbm",
        LGBM,
    );
    train(
        &proxy,
        "iris_bin",
        "classification",
        "iris_bin",
        "virginica",
        "lightgbm",
        LGBM,
    );
    // An int label 0/1, and a relation where it is 0/1/2.
    ok(
        &proxy,
        "CREATE TABLE iris_bin2 AS SELECT sepal_length, sepal_width, petal_length, petal_width, (target = 2)::int AS target FROM pgml.iris; \
         CREATE TABLE iris_new AS SELECT sepal_length, sepal_width, petal_length, petal_width, target FROM pgml.iris",
    );
    train(
        &proxy,
        "iris_bin2",
        "classification",
        "iris_bin2",
        "target",
        "lightgbm",
        LGBM,
    );
    const F: &str = "ARRAY[sepal_length, sepal_width, petal_length, petal_width]";
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        let cases = [
            // An algorithm without explanations or importances.
            (
                format!("SELECT pgml.explain('iris_svm', {F}) FROM pgml.iris"),
                "0A000",
                "",
            ),
            (
                "SELECT pgml.explain('iris_svm', ARRAY[1, 2, 3, 4])".to_string(),
                "0A000",
                "",
            ),
            (
                "SELECT * FROM pgml.feature_importance('iris_svm')".to_string(),
                "0A000",
                "",
            ),
            // Unknown projects.
            (
                format!("SELECT pgml.explain('no_such_project', {F}) FROM pgml.iris"),
                "42704",
                "no_such_project",
            ),
            (
                "SELECT * FROM pgml.feature_importance('no_such_project')".to_string(),
                "42704",
                "no_such_project",
            ),
            (
                "SELECT * FROM pgml.evaluate('no_such_project', 'pgml.iris')".to_string(),
                "42704",
                "no_such_project",
            ),
            (
                "SELECT * FROM pgml.confusion_matrix('no_such_project', 'pgml.iris')".to_string(),
                "42704",
                "no_such_project",
            ),
            (
                "SELECT * FROM pgml.roc_curve('no_such_project', 'iris_bin')".to_string(),
                "42704",
                "no_such_project",
            ),
            // Missing relations.
            (
                "SELECT * FROM pgml.evaluate('iris_bin', 'no_such_table')".to_string(),
                "42P01",
                "no_such_table",
            ),
            (
                "SELECT * FROM pgml.confusion_matrix('iris_bin', 'no_such_table')".to_string(),
                "42P01",
                "no_such_table",
            ),
            (
                "SELECT * FROM pgml.roc_curve('iris_bin', 'no_such_table')".to_string(),
                "42P01",
                "no_such_table",
            ),
            (
                "SELECT * FROM pgml.evaluate('iris_width', 'public.no_such_table')".to_string(),
                "42P01",
                "no_such_table",
            ),
            // A ROC curve is for binary classification.
            (
                "SELECT * FROM pgml.roc_curve('iris_width', 'pgml.iris')".to_string(),
                "22023",
                "",
            ),
            // A label value the model never saw (the README: 22000).
            (
                "SELECT * FROM pgml.evaluate('iris_bin2', 'iris_new')".to_string(),
                "22000",
                "",
            ),
            // A negative top_k.
            (
                format!("SELECT pgml.explain('iris_bin', {F}, -1) FROM pgml.iris"),
                "22023",
                "top_k",
            ),
        ];
        for (sql, code, word) in &cases {
            let (got, message) = sqlstate(&client, sql).await;
            assert_eq!(&got, code, "{sql}: {message}");
            assert!(
                message.contains(word),
                "{sql}: the message names {word}: {message}"
            );
        }
        // What works still works on that session.
        let rows = client
            .simple_query("SELECT * FROM pgml.evaluate('iris_bin', 'iris_bin')")
            .await
            .unwrap();
        let n = rows
            .iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            .count();
        assert_eq!(n, 1);
    });
    // Nothing was written to the catalog by the failed calls.
    assert_eq!(pg.psql("app", "SELECT count(*) FROM pgml.projects"), "4");
}

/// A jsonb (binary: version 1, then the text) or json column as text.
struct JsonText(String);

impl<'a> tokio_postgres::types::FromSql<'a> for JsonText {
    fn from_sql(
        ty: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<JsonText, Box<dyn std::error::Error + Sync + Send>> {
        let body = if *ty == tokio_postgres::types::Type::JSONB {
            match raw.split_first() {
                Some((1, rest)) => rest,
                _ => return Err("jsonb binary without version 1".into()),
            }
        } else {
            raw
        };
        Ok(JsonText(std::str::from_utf8(body)?.to_string()))
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        *ty == tokio_postgres::types::Type::JSONB || *ty == tokio_postgres::types::Type::JSON
    }
}

/// psycopg 3 (server-side parameters, text and binary results) calling
/// pgml.explain with the project and top_k as $n.
const PSYCOPG_EXPLAIN: &str = r#"
import json, sys
import psycopg

F = "ARRAY[age, sex, bmi, bp, s1, s2, s3, s4, s5, s6]"
out = {}
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    sql = f"SELECT pgml.explain(%s, {F}, top_k => %s) FROM pgml.diabetes ORDER BY ctid"
    with conn.cursor() as cur:
        cur.execute(sql, ("dia_lgbm", 3))
        out["text3"] = [json.dumps(r[0]) for r in cur.fetchall()]
        cur.execute(sql, ("dia_lgbm", 2), prepare=True)
        cur.execute(sql, ("dia_lgbm", 2), prepare=True)
        out["prepared2"] = [json.dumps(r[0]) for r in cur.fetchall()]
    with conn.cursor(binary=True) as cur:
        cur.execute(f"SELECT pgml.explain(%s, {F}, %s) FROM pgml.diabetes ORDER BY ctid", ("dia_lgbm", 1))
        out["binary1"] = [json.dumps(r[0]) for r in cur.fetchall()]
    with conn.cursor() as cur:
        x = [float(v) for v in sys.argv[2].split(",")]
        marks = ", ".join(["%s"] * len(x))
        cur.execute(f"SELECT pgml.explain(%s, ARRAY[{marks}]::real[])", ["dia_lgbm", *x])
        out["constant"] = json.dumps(cur.fetchone()[0])
print(json.dumps(out))
"#;

#[test]
fn explain_with_parameters_from_psycopg_and_tokio_postgres() {
    let (pg, proxy) = single();
    ok(&proxy, "SELECT * FROM pgml.load_dataset('diabetes')");
    train(
        &proxy,
        "dia_lgbm",
        "regression",
        "pgml.diabetes",
        "target",
        "lightgbm",
        LGBM,
    );
    let rows = Rows::read(&pg, "pgml.diabetes", "target");
    let arr = array_of(&rows.features);
    let full: Vec<Explanation> = select(
        &proxy,
        &format!("SELECT pgml.explain('dia_lgbm', {arr}) FROM pgml.diabetes ORDER BY ctid"),
        1,
    )
    .iter()
    .map(|r| Explanation::parse(&r[0]))
    .collect();
    assert_eq!(full.len(), rows.len());

    // psycopg 3 loads json with the key order of the text it got.
    let x7: Vec<String> = rows.x[7].iter().map(|v| v.to_string()).collect();
    let script_out = run(
        "python3",
        &[
            "-c",
            PSYCOPG_EXPLAIN,
            &proxy.url("app", "app_pw", "app"),
            &x7.join(","),
        ],
    );
    assert!(
        script_out.status.success(),
        "psycopg: {}\n{}",
        String::from_utf8_lossy(&script_out.stderr),
        proxy.log()
    );
    let got: Value = serde_json::from_slice(&script_out.stdout).unwrap();
    for (key, k, ordered) in [
        ("text3", 3, true),
        ("prepared2", 2, true),
        ("binary1", 1, false),
    ] {
        let list = got[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key}: {got}"));
        assert_eq!(list.len(), rows.len(), "psycopg {key}");
        for (i, v) in list.iter().enumerate() {
            let e = Explanation::parse(v.as_str().unwrap());
            if ordered {
                e.assert_ordered(&format!("psycopg {key} row {i}"));
            }
            e.assert_top_k_of(&full[i], k, &format!("psycopg {key} row {i}"));
        }
    }
    let constant = Explanation::parse(got["constant"].as_str().unwrap());
    constant.assert_top_k_of(&full[7], 10, "psycopg, constant features");

    // tokio-postgres: typed parameters, binary results.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        let sql =
            format!("SELECT pgml.explain($1, {arr}, top_k => $2) FROM pgml.diabetes ORDER BY ctid");
        let stmt = client
            .prepare_typed(
                &sql,
                &[
                    tokio_postgres::types::Type::TEXT,
                    tokio_postgres::types::Type::INT4,
                ],
            )
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}\n{}", proxy.log()));
        assert_eq!(stmt.columns().len(), 1);
        assert_eq!(
            stmt.columns()[0].type_(),
            &tokio_postgres::types::Type::JSONB,
            "{sql}"
        );
        for k in [4i32, 1] {
            let got = client.query(&stmt, &[&"dia_lgbm", &k]).await.unwrap();
            assert_eq!(got.len(), rows.len());
            for (i, row) in got.iter().enumerate() {
                let JsonText(text) = row.get(0);
                Explanation::parse(&text).assert_top_k_of(
                    &full[i],
                    k as usize,
                    &format!("tokio-postgres top_k {k} row {i}"),
                );
            }
        }
        // The result columns of the other functions, as described.
        for (sql, want) in [
            (
                "SELECT * FROM pgml.feature_importance('dia_lgbm')",
                vec![
                    ("feature", "text"),
                    ("importance", "float4"),
                    ("method", "text"),
                ],
            ),
            (
                "SELECT * FROM pgml.evaluate('dia_lgbm', 'pgml.diabetes')",
                vec![("metrics", "jsonb")],
            ),
        ] {
            let stmt = client
                .prepare(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let cols: Vec<(&str, &str)> = stmt
                .columns()
                .iter()
                .map(|c| (c.name(), c.type_().name()))
                .collect();
            assert_eq!(cols, want, "{sql}");
            let got = client
                .query(&stmt, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert!(!got.is_empty(), "{sql}");
            if want.len() == 1 {
                // evaluate's metrics, in binary.
                let JsonText(text) = got[0]
                    .try_get(0)
                    .unwrap_or_else(|e| panic!("{sql}: binary jsonb: {e}"));
                let metrics: Value = serde_json::from_str(&text).unwrap();
                assert!(metrics.get("r2").is_some(), "{sql}: {metrics}");
            }
        }
        let sql = "SELECT * FROM pgml.feature_importance($1)";
        let stmt = client
            .prepare_typed(sql, &[tokio_postgres::types::Type::TEXT])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let importance = client
            .query(&stmt, &[&"dia_lgbm"])
            .await
            .unwrap_or_else(|e| panic!("feature_importance($1): {e}"));
        assert_eq!(importance.len(), 20, "gain and shap for 10 features");
        // Binary results: importance is a float4.
        let first: f32 = importance[0]
            .try_get(1)
            .unwrap_or_else(|e| panic!("{sql}: importance in binary: {e}"));
        assert!(first > 0.0);
    });
}

#[test]
fn confusion_matrix_and_roc_curve_columns_are_typed() {
    let (_pg, proxy) = single();
    ok(&proxy, "SELECT * FROM pgml.load_dataset('breast_cancer')");
    train(
        &proxy,
        "bc_lgbm",
        "classification",
        "pgml.breast_cancer",
        "malignant",
        "lightgbm",
        LGBM,
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        for (sql, want) in [
            (
                "SELECT * FROM pgml.confusion_matrix('bc_lgbm', 'pgml.breast_cancer')",
                vec![("actual", "text"), ("predicted", "text"), ("count", "int8")],
            ),
            (
                "SELECT * FROM pgml.roc_curve('bc_lgbm', 'pgml.breast_cancer')",
                vec![
                    ("threshold", "float4"),
                    ("recall", "float4"),
                    ("false_positive_rate", "float4"),
                    ("precision", "float4"),
                ],
            ),
        ] {
            let stmt = client
                .prepare(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let cols: Vec<(&str, &str)> = stmt
                .columns()
                .iter()
                .map(|c| (c.name(), c.type_().name()))
                .collect();
            assert_eq!(cols, want, "{sql}");
        }
        let sql = "SELECT * FROM pgml.confusion_matrix($1, $2)";
        let text = tokio_postgres::types::Type::TEXT;
        let stmt = client
            .prepare_typed(sql, &[text.clone(), text])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let rows = client
            .query(&stmt, &[&"bc_lgbm", &"pgml.breast_cancer"])
            .await
            .unwrap_or_else(|e| panic!("confusion_matrix($1, $2): {e}"));
        // Binary results: count is an int8, the classes text.
        let total: i64 = rows
            .iter()
            .map(|r| {
                r.try_get::<_, i64>(2)
                    .unwrap_or_else(|e| panic!("{sql}: count in binary: {e}"))
            })
            .sum();
        let actual: &str = rows[0]
            .try_get(0)
            .unwrap_or_else(|e| panic!("{sql}: actual in binary: {e}"));
        assert!(!actual.is_empty());
        let sql = "SELECT * FROM pgml.roc_curve('bc_lgbm', 'pgml.breast_cancer')";
        let curve = client
            .query(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        for r in &curve {
            for c in 0..4 {
                let v: f32 = r
                    .try_get(c)
                    .unwrap_or_else(|e| panic!("{sql}: column {c} in binary: {e}"));
                assert!((0.0..=1.0).contains(&v), "{sql}: {v}");
            }
        }
        assert_eq!(total, 569, "every row counted once");
        assert!(rows.len() >= 2 && rows.len() <= 4);
    });
}
