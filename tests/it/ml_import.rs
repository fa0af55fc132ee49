//! Issue #19 point 5 through the proxy against real Postgres:
//! `pgml.import_model(project, task, format, model, feature_names)` deploys
//! a LightGBM text model or an XGBoost JSON model trained elsewhere, and
//! `pgml.export_model(model_id)` hands a LightGBM model back as LightGBM's
//! own text. Every model here is trained by Python's lightgbm or xgboost
//! (tests/reference/ml_import_reference.py) and every prediction is checked
//! against theirs: LightGBM bit-for-bit (as `real`), XGBoost within 1e-6.
//! Malformed and mutated models are refused with 22023 (or, for a mutation
//! that is still a model, imported and then used), never a crash, a hang or
//! a dropped connection.
//!
//! The model goes in every way a client sends it: a dollar-quoted literal
//! through psql, a bytea literal, a text or a bytea parameter of
//! tokio-postgres, and psycopg 3's bytes (binary and text bytea) and str
//! (tests/it/clients/import_model.py).

use std::future::Future;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::SimpleQueryMessage;

use crate::common::*;
use crate::ml_groups::deployed_id;

/// The features of the diabetes-like data, in order.
const NAMES: [&str; 8] = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4"];
/// How long one statement may take before the test calls it a hang.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

fn setup() -> (PgCluster, Proxy) {
    let pg = PgCluster::start();
    let port = free_port();
    let proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 4));
    (pg, proxy)
}

fn ok(proxy: &Proxy, sql: &str) -> String {
    proxy
        .psql(sql)
        .unwrap_or_else(|e| panic!("{}\n{e}\n{}", head(sql), proxy.log()))
}

/// `sql` as psql's input file (it may be longer than one argument may be).
fn script(proxy: &Proxy, sql: &str) -> String {
    proxy
        .psql_script(sql)
        .unwrap_or_else(|e| panic!("{}\n{e}\n{}", head(sql), proxy.log()))
}

/// The start of a long statement, for messages.
fn head(sql: &str) -> String {
    match sql.char_indices().nth(300) {
        Some((i, _)) => format!("{}... ({} bytes)", &sql[..i], sql.len()),
        None => sql.to_string(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `work`, or a panic naming `what` when it takes longer than
/// STATEMENT_TIMEOUT (a model that sends the proxy round in circles).
async fn timed<T>(what: &str, work: impl Future<Output = T>) -> T {
    tokio::time::timeout(STATEMENT_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {STATEMENT_TIMEOUT:?}"))
}

/// The SQLSTATE of a server error; anything else (the connection closed:
/// the proxy crashed or dropped the client) fails the test.
fn sqlstate(e: &tokio_postgres::Error, what: &str) -> String {
    match e.as_db_error() {
        Some(db) => db.code().code().to_string(),
        None => panic!("{what}: not an error from the server but {e:?}"),
    }
}

fn error_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|db| db.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

/// The connection still answers.
async fn alive(client: &tokio_postgres::Client, after: &str) {
    let msgs = timed(after, client.simple_query("SELECT 1"))
        .await
        .unwrap_or_else(|e| panic!("SELECT 1 after {after}: {e:?}"));
    let values: Vec<String> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(values, ["1"], "SELECT 1 after {after}");
}

/// The rows of a simple-protocol answer, every value as text ("" = NULL).
fn simple_rows(msgs: &[SimpleQueryMessage]) -> Vec<Vec<String>> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The Python reference
// ---------------------------------------------------------------------------

/// Runs tests/reference/ml_import_reference.py with `request` on stdin and
/// .tools/py (where scripts/setup.sh puts numpy, lightgbm and xgboost when
/// the system Python lacks them) first on PYTHONPATH; its JSON answer.
fn reference(request: &Value) -> Value {
    let root = env!("CARGO_MANIFEST_DIR");
    let script = format!("{root}/tests/reference/ml_import_reference.py");
    run_python(&script, &[], request, true)
}

/// `python3 <script> <args>` with `input` as JSON on stdin; its JSON stdout.
fn run_python(script: &str, args: &[&str], input: &Value, tools: bool) -> Value {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut cmd = Command::new("python3");
    cmd.arg(script).args(args);
    if tools {
        let tools = format!("{root}/.tools/py");
        let path = match std::env::var("PYTHONPATH") {
            Ok(p) if !p.is_empty() => format!("{tools}:{p}"),
            _ => tools,
        };
        cmd.env("PYTHONPATH", path);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3 (scripts/setup.sh installs what it needs)");
    let body = input.to_string();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        stdin.write_all(body.as_bytes()).unwrap();
    });
    let out = child.wait_with_output().expect("wait for python3");
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "{script} failed (scripts/setup.sh installs numpy, lightgbm, xgboost):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{script}'s answer: {e}\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// LightGBM's parameters for a small, reproducible model.
fn lgb_params(objective: &str, extra: &[(&str, Value)]) -> Value {
    let mut p = json!({
        "objective": objective,
        "num_leaves": 15,
        "learning_rate": 0.1,
        "min_data_in_leaf": 5,
        "num_threads": 1,
        "deterministic": true,
        "force_row_wise": true,
        "seed": 7,
        "verbose": -1,
    });
    for (k, v) in extra {
        p[*k] = v.clone();
    }
    p
}

/// XGBoost's parameters: depth 4, histogram trees.
fn xgb_params(objective: &str, extra: &[(&str, Value)]) -> Value {
    let mut p = json!({
        "objective": objective,
        "max_depth": 4,
        "eta": 0.3,
        "tree_method": "hist",
        "nthread": 1,
        "seed": 0,
    });
    for (k, v) in extra {
        p[*k] = v.clone();
    }
    p
}

/// A LightGBM model trained by Python on (x, y): {"model", "predict",
/// "raw_score"} for the rows `pred`.
fn lgb_train(
    x: &[Vec<f64>],
    y: &[f64],
    params: Value,
    rounds: usize,
    names: Option<&[&str]>,
    pred: &[Vec<f64>],
) -> Value {
    reference(&json!({
        "mode": "lightgbm", "params": params, "rounds": rounds,
        "x": rows_json(x), "y": y, "x_pred": rows_json(pred), "feature_names": names,
    }))
}

/// An XGBoost model trained by Python on (x, y): {"model" (its JSON),
/// "predict", "margin"} for the rows `pred`.
fn xgb_train(
    x: &[Vec<f64>],
    y: &[f64],
    params: Value,
    rounds: usize,
    names: Option<&[&str]>,
    pred: &[Vec<f64>],
) -> Value {
    reference(&json!({
        "mode": "xgboost", "params": params, "rounds": rounds,
        "x": rows_json(x), "y": y, "x_pred": rows_json(pred), "feature_names": names,
    }))
}

/// A model text Python's lightgbm reads back: {"predict", "raw_score",
/// "num_feature", "feature_names", "num_trees"} for the rows `pred`.
fn lgb_load(model: &str, pred: &[Vec<f64>]) -> Value {
    reference(&json!({"mode": "lightgbm_predict", "model": model, "x_pred": rows_json(pred)}))
}

fn model_text(answer: &Value) -> &str {
    answer["model"]
        .as_str()
        .expect("the reference's model text")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap_or_else(|| panic!("not a number: {x}")))
        .collect()
}

fn matrix(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(floats)
        .collect()
}

// ---------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------

/// splitmix64: deterministic data and mutations, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Features (NaN = missing) and a label.
struct Data {
    x: Vec<Vec<f64>>,
    y: Vec<f64>,
}

/// Like scikit-learn's diabetes data: eight standardized features (`sex`
/// takes two values), a target around 150 that depends on them non-linearly;
/// `s1` is missing in ~12% of the rows and `s3` in ~6% (after the target was
/// computed from them), so the trees learn default directions.
fn diabetes_like(n: usize, seed: u64) -> Data {
    let mut rng = Rng(seed);
    let (mut x, mut y) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let age = (rng.uniform() - 0.5) * 0.2;
        let sex = if rng.uniform() < 0.5 {
            -0.044641636506989
        } else {
            0.0506801187398187
        };
        let mut f = vec![age, sex];
        for _ in 0..6 {
            f.push(rng.normal() * 0.0476);
        }
        let (bmi, bp, s1, s2, s3, s4) = (f[2], f[3], f[4], f[5], f[6], f[7]);
        let target = 152.0 + 950.0 * bmi + 420.0 * bp + 300.0 * s1 * (1.0 + 15.0 * sex)
            - 480.0 * s3
            + 3000.0 * age * bmi
            + 2000.0 * s4 * s4
            + 150.0 * s2.abs()
            + 12.0 * rng.normal();
        if rng.uniform() < 0.12 {
            f[4] = f64::NAN;
        }
        if rng.uniform() < 0.06 {
            f[6] = f64::NAN;
        }
        x.push(f);
        y.push(target);
    }
    Data { x, y }
}

/// 1 above the median-ish 152, else 0.
fn two_classes(y: &[f64]) -> Vec<f64> {
    y.iter()
        .map(|&v| if v > 152.0 { 1.0 } else { 0.0 })
        .collect()
}

/// 0, 1, 2 by thirds of the target's range.
fn three_classes(y: &[f64]) -> Vec<f64> {
    y.iter()
        .map(|&v| {
            if v < 125.0 {
                0.0
            } else if v < 180.0 {
                1.0
            } else {
                2.0
            }
        })
        .collect()
}

/// The rows predictions are checked on: `n_train` training rows (an
/// XGBoost split condition is one of them, as float32), 25 new ones, and
/// edge cases: every feature missing, zeros, huge values, values below
/// LightGBM's zero threshold, missing values where training had none.
fn prediction_rows(train: &Data, n_train: usize) -> Vec<Vec<f64>> {
    let nan = f64::NAN;
    let mut rows: Vec<Vec<f64>> = train.x[..n_train].to_vec();
    rows.extend(diabetes_like(25, 99).x);
    rows.push(vec![nan; 8]);
    rows.push(vec![0.0; 8]);
    rows.push(vec![1e30; 8]);
    rows.push(vec![-1e30; 8]);
    rows.push(vec![1e-40; 8]);
    let mut r = train.x[0].clone();
    r[2] = nan;
    r[4] = nan;
    r[6] = nan;
    rows.push(r);
    let mut r = train.x[1].clone();
    r[4] = nan;
    rows.push(r);
    rows
}

/// Rows as JSON: NaN (which JSON lacks) as null.
fn rows_json(rows: &[Vec<f64>]) -> Value {
    Value::Array(
        rows.iter()
            .map(|r| {
                Value::Array(
                    r.iter()
                        .map(|v| if v.is_nan() { Value::Null } else { json!(v) })
                        .collect(),
                )
            })
            .collect(),
    )
}

/// A float8 constant holding exactly `v` (Rust's shortest round-trip text).
fn lit(v: f64) -> String {
    if v.is_nan() {
        "'NaN'::float8".to_string()
    } else {
        format!("'{v:?}'::float8")
    }
}

fn array_of(row: &[f64]) -> String {
    let items: Vec<String> = row.iter().map(|v| lit(*v)).collect();
    format!("ARRAY[{}]", items.join(", "))
}

/// Table `name` (id int, <columns> float8): row i has id i + 1.
fn create_table(proxy: &Proxy, name: &str, columns: &[&str], rows: &[Vec<f64>]) {
    let cols: Vec<String> = columns.iter().map(|c| format!("{c} float8")).collect();
    let values: Vec<String> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let v: Vec<String> = r.iter().map(|v| lit(*v)).collect();
            format!("({}, {})", i + 1, v.join(", "))
        })
        .collect();
    script(
        proxy,
        &format!(
            "CREATE TABLE {name} (id int PRIMARY KEY, {});\nINSERT INTO {name} VALUES\n{};\n",
            cols.join(", "),
            values.join(",\n")
        ),
    );
}

/// `ARRAY[c1, c2, ...]` and `(c1, c2, ...)` of the columns.
fn array_input(columns: &[&str]) -> String {
    format!("ARRAY[{}]", columns.join(", "))
}

fn row_input(columns: &[&str]) -> String {
    format!("({})", columns.join(", "))
}

/// `SELECT pgml.<func>(<model>, <input>) FROM <table> ORDER BY id` through
/// the proxy with psql: each row's value as text.
fn column(proxy: &Proxy, func: &str, model: &str, table: &str, input: &str) -> Vec<String> {
    ok(
        proxy,
        &format!("SELECT pgml.{func}({model}, {input}) FROM {table} ORDER BY id"),
    )
    .lines()
    .map(str::to_string)
    .collect()
}

fn real(text: &str) -> f32 {
    match text {
        "NaN" => f32::NAN,
        "Infinity" => f32::INFINITY,
        "-Infinity" => f32::NEG_INFINITY,
        _ => text
            .parse()
            .unwrap_or_else(|e| panic!("not a real: {text:?}: {e}")),
    }
}

/// `{0.1,0.9}` -> [0.1, 0.9].
fn reals(text: &str) -> Vec<f32> {
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or_else(|| panic!("not a real[]: {text:?}"));
    inner.split(',').map(real).collect()
}

// ---------------------------------------------------------------------------
// Comparisons
// ---------------------------------------------------------------------------

/// Each `real` printed by Postgres is Python's float64 prediction rounded
/// to float4, bit for bit.
fn assert_exact(got: &[String], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: rows");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let (g, w32) = (real(g), *w as f32);
        assert!(
            g.to_bits() == w32.to_bits(),
            "{what}, row {}: pgmlcat {g:?}, Python {w32:?} (float64 {w:?})",
            i + 1
        );
    }
}

/// |got - want| <= rel * max(|want|, 1) for every row.
fn assert_close(got: &[f32], want: &[f64], rel: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: rows");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = rel * w.abs().max(1.0);
        assert!(
            (g as f64 - w).abs() <= tol,
            "{what}, row {}: pgmlcat {g:?}, Python {w:?} (difference {:e}, allowed {tol:e})",
            i + 1,
            (g as f64 - w).abs()
        );
    }
}

/// Each `real[]` row has the reference's probabilities within `tol`.
fn assert_proba(got: &[String], want: &[Vec<f64>], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: rows");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let g = reals(g);
        assert_eq!(g.len(), w.len(), "{what}, row {}: {g:?} vs {w:?}", i + 1);
        for (k, (&gk, &wk)) in g.iter().zip(w).enumerate() {
            assert!(
                (gk as f64 - wk).abs() <= tol,
                "{what}, row {}, class {k}: pgmlcat {gk:?}, Python {wk:?}\npgmlcat {g:?}\nPython {w:?}",
                i + 1
            );
        }
    }
}

/// The class index of the largest probability; None on a near tie.
fn argmax(p: &[f64]) -> Option<usize> {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    (p[order[0]] - p[order[1]] > 1e-5).then_some(order[0])
}

/// pgml.predict of a classification gives the class index of the largest
/// probability (rows with a near tie are skipped).
fn assert_classes(got: &[String], proba: &[Vec<f64>], what: &str) {
    assert_eq!(got.len(), proba.len(), "{what}: rows");
    for (i, (g, p)) in got.iter().zip(proba).enumerate() {
        if let Some(k) = argmax(p) {
            assert_eq!(
                real(g),
                k as f32,
                "{what}, row {}: probabilities {p:?}",
                i + 1
            );
        }
    }
}

/// [1 - p, p] for binary P(positive).
fn binary_proba(p: &[f64]) -> Vec<Vec<f64>> {
    p.iter().map(|&p| vec![1.0 - p, p]).collect()
}

fn softmax(margin: &[f64]) -> Vec<f64> {
    let m = margin.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = margin.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

// ---------------------------------------------------------------------------
// Importing
// ---------------------------------------------------------------------------

/// pgml.import_model's row.
#[derive(Debug, Clone)]
struct Imported {
    project: String,
    task: String,
    algorithm: String,
    model_id: i64,
}

impl Imported {
    fn from_texts(cols: &[String]) -> Imported {
        assert_eq!(cols.len(), 4, "pgml.import_model's row: {cols:?}");
        Imported {
            project: cols[0].clone(),
            task: cols[1].clone(),
            algorithm: cols[2].clone(),
            model_id: cols[3]
                .parse()
                .unwrap_or_else(|e| panic!("model_id {:?}: {e}", cols[3])),
        }
    }

    fn from_row(row: &tokio_postgres::Row) -> Imported {
        let text = |i: usize| -> String {
            row.try_get(i)
                .unwrap_or_else(|e| panic!("column {i} ({:?}): {e:?}", row.columns()[i]))
        };
        Imported {
            project: text(0),
            task: text(1),
            algorithm: text(2),
            model_id: row
                .try_get(3)
                .unwrap_or_else(|e| panic!("model_id ({:?}): {e:?}", row.columns()[3])),
        }
    }

    /// Echoes the call; the algorithm names the format's library (or, for
    /// XGBoost, LightGBM); the model is the project's deployed one.
    fn check(&self, pg: &PgCluster, project: &str, task: &str, format: &str) {
        assert_eq!(
            (self.project.as_str(), self.task.as_str()),
            (project, task),
            "{self:?}"
        );
        // The contract leaves an XGBoost import's algorithm open: it may
        // keep its library's name or be stored as the LightGBM model it
        // becomes.
        let names: &[&str] = if format == "lightgbm" {
            &["lightgbm"]
        } else {
            &["xgboost", "lightgbm"]
        };
        assert!(
            names.iter().any(|n| self.algorithm.eq_ignore_ascii_case(n)),
            "algorithm of a {format} import: {self:?}"
        );
        assert!(self.model_id > 0, "{self:?}");
        assert_eq!(
            deployed_id(pg, project),
            self.model_id,
            "the imported model is deployed at once: {self:?}"
        );
    }
}

const TAG: &str = "$model$";

/// `SELECT * FROM pgml.import_model(...)` with the model dollar-quoted;
/// `extra` is appended to the arguments (e.g. feature_names).
fn import_sql(project: &str, task: &str, format: &str, model: &str, extra: &str) -> String {
    assert!(!model.contains(TAG), "the model holds {TAG}");
    format!(
        "SELECT * FROM pgml.import_model('{project}', '{task}', '{format}', {TAG}{model}{TAG}{extra})"
    )
}

/// `, feature_names => ARRAY['a', ...]`.
fn names_arg(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    format!(", feature_names => ARRAY[{}]", quoted.join(", "))
}

/// The import through psql, the model a literal in its input file.
fn import_psql(
    pg: &PgCluster,
    proxy: &Proxy,
    project: &str,
    task: &str,
    format: &str,
    model: &str,
    extra: &str,
) -> Imported {
    let out = script(
        proxy,
        &format!("{};\n", import_sql(project, task, format, model, extra)),
    );
    let cols: Vec<String> = out.split('|').map(str::to_string).collect();
    let imported = Imported::from_texts(&cols);
    imported.check(pg, project, task, format);
    imported
}

/// The import in one simple-protocol statement: the row's values, or the
/// error.
async fn import_simple(
    client: &tokio_postgres::Client,
    project: &str,
    task: &str,
    format: &str,
    model: &str,
    extra: &str,
) -> Result<Imported, tokio_postgres::Error> {
    let sql = import_sql(project, task, format, model, extra);
    let msgs = timed(&head(&sql), client.simple_query(&sql)).await?;
    let rows = simple_rows(&msgs);
    assert_eq!(rows.len(), 1, "{}: {rows:?}", head(&sql));
    Ok(Imported::from_texts(&rows[0]))
}

/// The import with the model a text parameter (the extended protocol; the
/// proxy describes the parameters).
async fn import_text_param(
    client: &tokio_postgres::Client,
    project: &str,
    task: &str,
    format: &str,
    model: &str,
) -> Result<Imported, tokio_postgres::Error> {
    let rows = timed(
        &format!("import {project} (text parameter)"),
        client.query(
            "SELECT * FROM pgml.import_model($1, $2, $3, $4)",
            &[&project, &task, &format, &model],
        ),
    )
    .await?;
    assert_eq!(rows.len(), 1, "import {project}");
    Ok(Imported::from_row(&rows[0]))
}

/// The import with the model a bytea parameter, declared so in the Parse
/// (sent in binary: the bytes themselves).
async fn import_bytea_param(
    client: &tokio_postgres::Client,
    project: &str,
    task: &str,
    format: &str,
    model: &[u8],
) -> Result<Imported, tokio_postgres::Error> {
    let params: [(&(dyn ToSql + Sync), Type); 4] = [
        (&project, Type::TEXT),
        (&task, Type::TEXT),
        (&format, Type::TEXT),
        (&model, Type::BYTEA),
    ];
    let rows = timed(
        &format!("import {project} (bytea parameter)"),
        client.query_typed("SELECT * FROM pgml.import_model($1, $2, $3, $4)", &params),
    )
    .await?;
    assert_eq!(rows.len(), 1, "import {project}");
    Ok(Imported::from_row(&rows[0]))
}

/// pgml.export_model's text, through the simple protocol (exact bytes).
async fn export(
    client: &tokio_postgres::Client,
    model_id: i64,
) -> Result<String, tokio_postgres::Error> {
    let sql = format!("SELECT pgml.export_model({model_id})");
    let msgs = timed(&sql, client.simple_query(&sql)).await?;
    let rows = simple_rows(&msgs);
    assert_eq!(rows.len(), 1, "{sql}");
    assert_eq!(rows[0].len(), 1, "{sql}");
    Ok(rows[0][0].clone())
}

// ---------------------------------------------------------------------------
// LightGBM
// ---------------------------------------------------------------------------

/// A Python-trained LightGBM regression (with missing values) imported with
/// feature names predicts what Python predicts, bit for bit as `real`: from
/// a table with ARRAY and row input, by project and by model id, from
/// constants, in text and binary results. A second import into the project
/// deploys the new model at once; the first still answers by its id. A
/// model without feature names, and a model given as a bytea literal.
#[test]
fn lightgbm_regression_predicts_as_python_lightgbm() {
    let (pg, proxy) = setup();
    let train = diabetes_like(400, 1);
    let rows = prediction_rows(&train, 15);
    create_table(&proxy, "diab", &NAMES, &rows);
    let big = lgb_train(
        &train.x,
        &train.y,
        lgb_params("regression", &[]),
        40,
        Some(&NAMES),
        &rows,
    );
    let want = floats(&big["predict"]);

    let imported = import_psql(
        &pg,
        &proxy,
        "diab",
        "regression",
        "lightgbm",
        model_text(&big),
        &names_arg(&NAMES),
    );
    assert_eq!(imported.algorithm, "lightgbm", "{imported:?}");
    let array = array_input(&NAMES);
    assert_exact(
        &column(&proxy, "predict", "'diab'", "diab", &array),
        &want,
        "ARRAY input",
    );
    assert_exact(
        &column(&proxy, "predict", "'diab'", "diab", &row_input(&NAMES)),
        &want,
        "row input",
    );
    let by_id = imported.model_id.to_string();
    assert_exact(
        &column(&proxy, "predict", &by_id, "diab", &array),
        &want,
        "by model id",
    );
    // Constants (NaN among them) need no table.
    let n = rows.len();
    for i in [0, 1, 20, n - 7, n - 5, n - 3, n - 1] {
        let got = ok(
            &proxy,
            &format!("SELECT pgml.predict('diab', {})", array_of(&rows[i])),
        );
        assert_exact(&[got], &want[i..=i], &format!("constant row {}", i + 1));
    }

    let rt = runtime();
    rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        // Binary results of the extended protocol.
        let sql = format!("SELECT pgml.predict('diab', {array}) FROM diab ORDER BY id");
        let got: Vec<String> = timed(&sql, client.query(sql.as_str(), &[]))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
            .iter()
            .map(|r| format!("{:?}", r.get::<_, f32>(0)))
            .collect();
        assert_exact(&got, &want, "binary results");
        // The model's feature count is enforced as for trained models.
        let err = timed(
            "3 features",
            client.simple_query("SELECT pgml.predict('diab', ARRAY[1, 2, 3])"),
        )
        .await
        .expect_err("3 features for an 8-feature model");
        assert_eq!(
            sqlstate(&err, "3 features"),
            "42804",
            "{}",
            error_message(&err)
        );
        alive(&client, "a feature count error").await;
    });

    // A second import into the project, without feature_names (the
    // model's own line names them): deployed at once.
    let small = lgb_train(
        &train.x,
        &train.y,
        lgb_params("regression", &[]),
        8,
        Some(&NAMES),
        &rows,
    );
    let second = import_psql(
        &pg,
        &proxy,
        "diab",
        "regression",
        "lightgbm",
        model_text(&small),
        "",
    );
    assert!(
        second.model_id > imported.model_id,
        "{second:?} after {imported:?}"
    );
    assert_exact(
        &column(&proxy, "predict", "'diab'", "diab", &array),
        &floats(&small["predict"]),
        "after the second import",
    );
    assert_exact(
        &column(&proxy, "predict", &by_id, "diab", &array),
        &want,
        "the first model by its id after the second import",
    );
    // A model trained without names (Column_0, ...): named by default.
    let unnamed = lgb_train(
        &train.x,
        &train.y,
        lgb_params("regression", &[]),
        5,
        None,
        &rows,
    );
    import_psql(
        &pg,
        &proxy,
        "unnamed",
        "regression",
        "lightgbm",
        model_text(&unnamed),
        "",
    );
    assert_exact(
        &column(&proxy, "predict", "'unnamed'", "diab", &array),
        &floats(&unnamed["predict"]),
        "a model without feature names",
    );
    // The model as a bytea literal ('\x' hex).
    let hex: String = model_text(&small)
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    let out = script(
        &proxy,
        &format!(
            "SELECT * FROM pgml.import_model('hexlit', 'regression', 'lightgbm', '\\x{hex}'::bytea);\n"
        ),
    );
    let cols: Vec<String> = out.split('|').map(str::to_string).collect();
    Imported::from_texts(&cols).check(&pg, "hexlit", "regression", "lightgbm");
    assert_exact(
        &column(&proxy, "predict", "'hexlit'", "diab", &array),
        &floats(&small["predict"]),
        "a bytea literal",
    );
}

/// LightGBM binary and multiclass models imported through tokio-postgres
/// (the model a text parameter, then a bytea parameter): predict_proba is
/// Python's probabilities within 1e-6, predict the class index.
#[test]
fn lightgbm_classification_predicts_as_python_lightgbm() {
    let (pg, proxy) = setup();
    let train = diabetes_like(400, 2);
    let rows = prediction_rows(&train, 15);
    create_table(&proxy, "diab", &NAMES, &rows);
    let bin = lgb_train(
        &train.x,
        &two_classes(&train.y),
        lgb_params("binary", &[]),
        30,
        Some(&NAMES),
        &rows,
    );
    let multi = lgb_train(
        &train.x,
        &three_classes(&train.y),
        lgb_params("multiclass", &[("num_class", json!(3))]),
        25,
        None,
        &rows,
    );
    let array = array_input(&NAMES);
    let bin_proba = binary_proba(&floats(&bin["predict"]));
    let multi_proba = matrix(&multi["predict"]);

    let rt = runtime();
    let (b, m) = rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        let b = import_text_param(
            &client,
            "bin",
            "classification",
            "lightgbm",
            model_text(&bin),
        )
        .await
        .unwrap_or_else(|e| panic!("binary import: {e:?}\n{}", proxy.log()));
        let m = import_bytea_param(
            &client,
            "multi",
            "classification",
            "lightgbm",
            model_text(&multi).as_bytes(),
        )
        .await
        .unwrap_or_else(|e| panic!("multiclass import: {e:?}\n{}", proxy.log()));
        // predict_proba in binary results.
        let sql = format!("SELECT pgml.predict_proba('multi', {array}) FROM diab ORDER BY id");
        let got: Vec<String> = timed(&sql, client.query(sql.as_str(), &[]))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
            .iter()
            .map(|r| {
                let p: Vec<f32> = r.get(0);
                let items: Vec<String> = p.iter().map(|v| format!("{v:?}")).collect();
                format!("{{{}}}", items.join(","))
            })
            .collect();
        assert_proba(
            &got,
            &multi_proba,
            1e-6,
            "multiclass predict_proba, binary results",
        );
        (b, m)
    });
    b.check(&pg, "bin", "classification", "lightgbm");
    m.check(&pg, "multi", "classification", "lightgbm");

    assert_proba(
        &column(&proxy, "predict_proba", "'bin'", "diab", &array),
        &bin_proba,
        1e-6,
        "binary predict_proba",
    );
    assert_classes(
        &column(&proxy, "predict", "'bin'", "diab", &array),
        &bin_proba,
        "binary predict",
    );
    assert_proba(
        &column(&proxy, "predict_proba", "'multi'", "diab", &array),
        &multi_proba,
        1e-6,
        "multiclass predict_proba",
    );
    assert_classes(
        &column(&proxy, "predict", "'multi'", "diab", &array),
        &multi_proba,
        "multiclass predict",
    );
    assert_classes(
        &column(&proxy, "predict", "'multi'", "diab", &row_input(&NAMES)),
        &multi_proba,
        "multiclass predict, row input",
    );
}

/// A LightGBM model with a categorical feature (more categories than
/// max_cat_to_onehot: many-vs-many splits). The contract restricts only
/// XGBoost to numeric splits, so either it imports, and then predicts as
/// Python does for seen, unseen, negative, fractional and missing
/// categories and exports text that reads back the same, or it is refused
/// with 22023 naming the categorical split (the connection going on).
#[test]
fn lightgbm_categorical_splits_predict_as_python_or_are_refused() {
    let (pg, proxy) = setup();
    let names = ["shop", "x1", "x2", "x3"];
    let mut rng = Rng(5);
    let effect = [10.0, -5.0, 3.0, 8.0, 0.0, -2.0];
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for _ in 0..400 {
        let shop = rng.below(6);
        let f = vec![shop as f64, rng.normal(), rng.normal(), rng.normal()];
        y.push(effect[shop] + 4.0 * f[1] - 2.0 * f[2] * f[3] + 0.3 * rng.normal());
        x.push(f);
    }
    for row in x.iter_mut().step_by(20) {
        row[0] = f64::NAN;
    }
    let mut rows: Vec<Vec<f64>> = x[..20].to_vec();
    for shop in [7.0, 12.0, -1.0, f64::NAN, 2.5, 100.0, 0.0, 5.0] {
        rows.push(vec![shop, x[0][1], x[0][2], x[0][3]]);
    }
    create_table(&proxy, "shops", &names, &rows);
    let answer = reference(&json!({
        "mode": "lightgbm",
        "params": lgb_params("regression", &[
            ("max_cat_to_onehot", json!(4)),
            ("min_data_per_group", json!(5)),
            ("cat_smooth", json!(1.0)),
            ("cat_l2", json!(1.0)),
        ]),
        "rounds": 20, "x": rows_json(&x), "y": y, "x_pred": rows_json(&rows),
        "feature_names": names, "categorical": [0],
    }));
    let text = model_text(&answer);
    assert!(
        text.contains("cat_boundaries="),
        "the model has categorical splits"
    );
    let want = floats(&answer["predict"]);
    let rt = runtime();
    let imported = rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        let result = import_simple(&client, "shops", "regression", "lightgbm", text, "").await;
        let imported = match result {
            Ok(imported) => imported,
            Err(e) => {
                let (state, message) = (sqlstate(&e, "categorical"), error_message(&e));
                assert_eq!(state, "22023", "{message}");
                assert!(message.contains("categorical"), "{message}");
                alive(&client, "a refused categorical model").await;
                return None;
            }
        };
        let exported = export(&client, imported.model_id)
            .await
            .unwrap_or_else(|e| panic!("export: {e:?}"));
        Some((imported, exported))
    });
    let Some((imported, exported)) = imported else {
        return;
    };
    imported.check(&pg, "shops", "regression", "lightgbm");
    assert_exact(
        &column(&proxy, "predict", "'shops'", "shops", &array_input(&names)),
        &want,
        "categorical splits",
    );
    let back = lgb_load(&exported, &rows);
    assert_eq!(
        back["predict"], answer["predict"],
        "the export predicts as the original"
    );
}

// ---------------------------------------------------------------------------
// XGBoost
// ---------------------------------------------------------------------------

/// XGBoost JSON models (reg:squarederror, binary:logistic, multi:softprob,
/// multi:softmax; 3.x's bracketed base_score, a vector of them for
/// multiclass; missing values in training, so default directions matter)
/// predict what xgboost's predict gives, within 1e-6 (relative for the
/// regression), on rows that include training rows (split conditions are
/// float32 values of them: xgboost compares the float32 feature) and
/// missing values. Imported through psql, a text and a bytea parameter.
#[test]
fn xgboost_json_predicts_as_xgboost() {
    let (pg, proxy) = setup();
    let train = diabetes_like(500, 3);
    let rows = prediction_rows(&train, 40);
    create_table(&proxy, "diab", &NAMES, &rows);
    let three = three_classes(&train.y);
    let reg = xgb_train(
        &train.x,
        &train.y,
        xgb_params("reg:squarederror", &[]),
        40,
        Some(&NAMES),
        &rows,
    );
    let bin = xgb_train(
        &train.x,
        &two_classes(&train.y),
        xgb_params("binary:logistic", &[]),
        30,
        None,
        &rows,
    );
    let prob = xgb_train(
        &train.x,
        &three,
        xgb_params("multi:softprob", &[("num_class", json!(3))]),
        20,
        None,
        &rows,
    );
    let soft = xgb_train(
        &train.x,
        &three,
        xgb_params("multi:softmax", &[("num_class", json!(3))]),
        20,
        None,
        &rows,
    );
    // The models use default directions.
    for answer in [&reg, &bin, &prob, &soft] {
        assert!(
            xgb_any_node(model_text(answer), "default_left", 1),
            "a split sends missing values left"
        );
    }
    let array = array_input(&NAMES);

    import_psql(
        &pg,
        &proxy,
        "xreg",
        "regression",
        "xgboost_json",
        model_text(&reg),
        "",
    );
    let got: Vec<f32> = column(&proxy, "predict", "'xreg'", "diab", &array)
        .iter()
        .map(|s| real(s))
        .collect();
    assert_close(&got, &floats(&reg["predict"]), 1e-6, "reg:squarederror");
    let got: Vec<f32> = column(&proxy, "predict", "'xreg'", "diab", &row_input(&NAMES))
        .iter()
        .map(|s| real(s))
        .collect();
    assert_close(
        &got,
        &floats(&reg["predict"]),
        1e-6,
        "reg:squarederror, row input",
    );

    let rt = runtime();
    let (b, p) = rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        let b = import_text_param(
            &client,
            "xbin",
            "classification",
            "xgboost_json",
            model_text(&bin),
        )
        .await
        .unwrap_or_else(|e| panic!("binary import: {e:?}\n{}", proxy.log()));
        let p = import_bytea_param(
            &client,
            "xprob",
            "classification",
            "xgboost_json",
            model_text(&prob).as_bytes(),
        )
        .await
        .unwrap_or_else(|e| panic!("softprob import: {e:?}\n{}", proxy.log()));
        (b, p)
    });
    b.check(&pg, "xbin", "classification", "xgboost_json");
    p.check(&pg, "xprob", "classification", "xgboost_json");
    let bin_proba = binary_proba(&floats(&bin["predict"]));
    assert_proba(
        &column(&proxy, "predict_proba", "'xbin'", "diab", &array),
        &bin_proba,
        1e-6,
        "binary:logistic predict_proba",
    );
    assert_classes(
        &column(&proxy, "predict", "'xbin'", "diab", &array),
        &bin_proba,
        "binary:logistic predict",
    );
    let prob_proba = matrix(&prob["predict"]);
    assert_proba(
        &column(&proxy, "predict_proba", "'xprob'", "diab", &array),
        &prob_proba,
        1e-6,
        "multi:softprob predict_proba",
    );
    assert_classes(
        &column(&proxy, "predict", "'xprob'", "diab", &array),
        &prob_proba,
        "multi:softprob predict",
    );

    // multi:softmax: predict is xgboost's class; probabilities are the
    // softmax of its margins.
    import_psql(
        &pg,
        &proxy,
        "xsoft",
        "classification",
        "xgboost_json",
        model_text(&soft),
        &names_arg(&NAMES),
    );
    let soft_proba: Vec<Vec<f64>> = matrix(&soft["margin"]).iter().map(|m| softmax(m)).collect();
    assert_proba(
        &column(&proxy, "predict_proba", "'xsoft'", "diab", &array),
        &soft_proba,
        1e-6,
        "multi:softmax predict_proba",
    );
    let classes = floats(&soft["predict"]);
    let got = column(&proxy, "predict", "'xsoft'", "diab", &array);
    for (i, (g, (c, pr))) in got.iter().zip(classes.iter().zip(&soft_proba)).enumerate() {
        if argmax(pr).is_some() {
            assert_eq!(real(g), *c as f32, "multi:softmax predict, row {}", i + 1);
        }
    }
    // Constants with NaN.
    let n = rows.len();
    for i in [0, 39, n - 7, n - 2, n - 1] {
        let got = real(&ok(
            &proxy,
            &format!("SELECT pgml.predict('xreg', {})", array_of(&rows[i])),
        ));
        assert_close(
            &[got],
            &floats(&reg["predict"])[i..=i],
            1e-6,
            &format!("constant row {}", i + 1),
        );
    }
}

// ---------------------------------------------------------------------------
// Export
// ---------------------------------------------------------------------------

/// export_model gives LightGBM text that Python's lightgbm loads and
/// predicts with exactly as the original (imported regression and
/// multiclass; a model pgml.train trained, against pgml.predict); the text
/// imports again. A linear model: 0A000; an unknown id: 42704. An imported
/// XGBoost model: 0A000, or LightGBM text that predicts as xgboost does.
#[test]
fn export_model_round_trips_through_python_lightgbm() {
    let (pg, proxy) = setup();
    let train = diabetes_like(300, 4);
    let rows = prediction_rows(&train, 15);
    create_table(&proxy, "diab", &NAMES, &rows);
    let reg = lgb_train(
        &train.x,
        &train.y,
        lgb_params("regression", &[]),
        30,
        Some(&NAMES),
        &rows,
    );
    let multi = lgb_train(
        &train.x,
        &three_classes(&train.y),
        lgb_params("multiclass", &[("num_class", json!(3))]),
        10,
        Some(&NAMES),
        &rows,
    );
    let xbin = xgb_train(
        &train.x,
        &two_classes(&train.y),
        xgb_params("binary:logistic", &[]),
        10,
        None,
        &rows,
    );
    let r = import_psql(
        &pg,
        &proxy,
        "ereg",
        "regression",
        "lightgbm",
        model_text(&reg),
        &names_arg(&NAMES),
    );
    let m = import_psql(
        &pg,
        &proxy,
        "emulti",
        "classification",
        "lightgbm",
        model_text(&multi),
        "",
    );
    let x = import_psql(
        &pg,
        &proxy,
        "exgb",
        "classification",
        "xgboost_json",
        model_text(&xbin),
        "",
    );

    // A model pgml.train trained (no missing values: they are the data
    // of a table), and a linear one.
    let complete: Vec<Vec<f64>> = train
        .x
        .iter()
        .map(|r| {
            r.iter()
                .map(|v| if v.is_nan() { 0.0 } else { *v })
                .collect()
        })
        .collect();
    let mut with_y: Vec<&str> = NAMES.to_vec();
    with_y.push("y");
    let table: Vec<Vec<f64>> = complete
        .iter()
        .zip(&train.y)
        .map(|(r, y)| r.iter().copied().chain([*y]).collect())
        .collect();
    create_table(&proxy, "tr", &with_y, &table);
    ok(
        &proxy,
        &format!("CREATE VIEW tr_v AS SELECT {}, y FROM tr", NAMES.join(", ")),
    );
    ok(
        &proxy,
        "SELECT * FROM pgml.train('trained', 'regression', 'tr_v', 'y', algorithm => 'lightgbm', hyperparams => '{\"n_estimators\": 20}')",
    );
    ok(
        &proxy,
        "SELECT * FROM pgml.train('lin', 'regression', 'tr_v', 'y', algorithm => 'linear')",
    );
    let trained = deployed_id(&pg, "trained");
    let linear = deployed_id(&pg, "lin");

    let rt = runtime();
    let (reg_text, multi_text, trained_text, xgb_export) = rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        let mut texts = Vec::new();
        for id in [r.model_id, m.model_id, trained] {
            texts.push(
                export(&client, id)
                    .await
                    .unwrap_or_else(|e| panic!("export_model({id}): {e:?}\n{}", proxy.log())),
            );
        }
        for (id, state) in [(linear, "0A000"), (987_654_321, "42704")] {
            let err = export(&client, id)
                .await
                .expect_err(&format!("export_model({id})"));
            assert_eq!(
                sqlstate(&err, "export_model"),
                state,
                "export_model({id}): {}",
                error_message(&err)
            );
            alive(&client, &format!("export_model({id})")).await;
        }
        let xgb_export = match export(&client, x.model_id).await {
            Ok(text) => Some(text),
            Err(e) => {
                assert_eq!(
                    sqlstate(&e, "export xgboost"),
                    "0A000",
                    "{}",
                    error_message(&e)
                );
                None
            }
        };
        alive(&client, "export of an xgboost model").await;
        (
            texts.remove(0),
            texts.remove(0),
            texts.remove(0),
            xgb_export,
        )
    });

    for (what, text, original) in [
        ("regression", &reg_text, &reg),
        ("multiclass", &multi_text, &multi),
    ] {
        let back = lgb_load(text, &rows);
        assert_eq!(
            back["predict"], original["predict"],
            "{what}: the export's predictions"
        );
        assert_eq!(
            back["raw_score"], original["raw_score"],
            "{what}: the export's raw scores"
        );
        assert_eq!(back["num_feature"], json!(8), "{what}");
    }
    // The export imports again.
    import_psql(
        &pg,
        &proxy,
        "again",
        "regression",
        "lightgbm",
        &reg_text,
        "",
    );
    assert_exact(
        &column(&proxy, "predict", "'again'", "diab", &array_input(&NAMES)),
        &floats(&reg["predict"]),
        "the exported text imported again",
    );
    // pgml.train's model: Python predicts from the export what pgml.predict gives.
    let back = lgb_load(&trained_text, &complete);
    assert_exact(
        &column(&proxy, "predict", "'trained'", "tr", &array_input(&NAMES)),
        &floats(&back["predict"]),
        "a pgml.train model's export against pgml.predict",
    );
    if let Some(text) = xgb_export {
        let back = lgb_load(&text, &rows);
        let want = floats(&xbin["predict"]);
        let got: Vec<f32> = floats(&back["predict"]).iter().map(|v| *v as f32).collect();
        assert_close(
            &got,
            &want,
            1e-6,
            "an xgboost model exported as LightGBM text",
        );
    }
}

// ---------------------------------------------------------------------------
// Malformed input
// ---------------------------------------------------------------------------

/// `text` with the value of the `nth` line (0-based) that starts with
/// `key=` replaced by `f(value)`.
fn edit(text: &str, key: &str, nth: usize, f: impl FnOnce(&str) -> String) -> String {
    let prefix = format!("{key}=");
    let mut f = Some(f);
    let mut seen = 0;
    let lines: Vec<String> = text
        .split('\n')
        .map(|line| {
            if line.starts_with(&prefix) {
                seen += 1;
                if seen == nth + 1 {
                    let edit = f.take().unwrap();
                    return format!("{prefix}{}", edit(&line[prefix.len()..]));
                }
            }
            line.to_string()
        })
        .collect();
    assert!(f.is_none(), "no line {nth} starting with {prefix}");
    lines.join("\n")
}

/// Replaces the `i`th space-separated token.
fn set_token(i: usize, new: &str) -> impl FnOnce(&str) -> String {
    let new = new.to_string();
    move |v: &str| {
        let mut t: Vec<&str> = v.split(' ').collect();
        t[i] = &new;
        t.join(" ")
    }
}

fn tokens(text: &str, key: &str, nth: usize) -> Vec<String> {
    let prefix = format!("{key}=");
    text.split('\n')
        .filter(|l| l.starts_with(&prefix))
        .nth(nth)
        .unwrap_or_else(|| panic!("no line {nth} starting with {prefix}"))[prefix.len()..]
        .split(' ')
        .map(str::to_string)
        .collect()
}

/// The header's `tree_sizes=` recomputed from the trees as they now are,
/// so that LightGBM's own loader would read an edited model tree by tree
/// (the check that refuses it must be pgmlcat's). Unchanged when the text
/// has no trees or no such line.
fn fix_tree_sizes(text: &str) -> String {
    let mut starts: Vec<usize> = Vec::new();
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if line.starts_with("Tree=") || line.starts_with("end of trees") {
            starts.push(at);
        }
        at += line.len();
    }
    if starts.len() < 2 || !text.contains("\ntree_sizes=") {
        return text.to_string();
    }
    let sizes: Vec<String> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]).to_string())
        .collect();
    edit(text, "tree_sizes", 0, |_| sizes.join(" "))
}

fn xgb_edit(model: &str, f: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(model).expect("xgboost JSON");
    f(&mut v);
    v.to_string()
}

fn tree_mut(v: &mut Value, t: usize) -> &mut Value {
    &mut v["learner"]["gradient_booster"]["model"]["trees"][t]
}

/// The model argument of a malformed case.
enum Model {
    Text(String),
    Bytes(Vec<u8>),
}

struct Case {
    what: &'static str,
    task: &'static str,
    format: &'static str,
    model: Model,
    extra: String,
}

fn case(what: &'static str, task: &'static str, format: &'static str, model: String) -> Case {
    Case {
        what,
        task,
        format,
        model: Model::Text(model),
        extra: String::new(),
    }
}

/// Every malformed model, argument and unsupported XGBoost feature named in
/// the contract is refused with 22023; the connection goes on; no model is
/// stored; a valid import works afterwards, and so does a new connection.
#[test]
fn malformed_models_are_refused_with_22023() {
    let (_pg, proxy) = setup();
    let train = diabetes_like(300, 5);
    let few = &train.x[..5];
    let three = three_classes(&train.y);
    let small = model_text(&lgb_train(
        &train.x,
        &train.y,
        lgb_params("regression", &[("num_leaves", json!(8))]),
        6,
        Some(&NAMES),
        few,
    ))
    .to_string();
    let small_multi = model_text(&lgb_train(
        &train.x,
        &three,
        lgb_params(
            "multiclass",
            &[("num_class", json!(3)), ("num_leaves", json!(8))],
        ),
        3,
        None,
        few,
    ))
    .to_string();
    let xbin = model_text(&xgb_train(
        &train.x,
        &two_classes(&train.y),
        xgb_params("binary:logistic", &[("max_depth", json!(3))]),
        4,
        None,
        few,
    ))
    .to_string();
    let xmulti = model_text(&xgb_train(
        &train.x,
        &three,
        xgb_params(
            "multi:softprob",
            &[("num_class", json!(3)), ("max_depth", json!(3))],
        ),
        3,
        None,
        few,
    ))
    .to_string();
    // sex as a categorical feature (two categories).
    let cat_x: Vec<Vec<f64>> = train
        .x
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut r = r.clone();
            r[1] = (i % 5) as f64;
            r
        })
        .collect();
    let cat_y: Vec<f64> = cat_x
        .iter()
        .zip(&train.y)
        .map(|(r, y)| y + 30.0 * (r[1] - 2.0).abs())
        .collect();
    let xcat = reference(&json!({
        "mode": "xgboost", "params": xgb_params("reg:squarederror", &[]), "rounds": 3,
        "x": rows_json(&cat_x), "y": cat_y, "x_pred": rows_json(&cat_x[..2]), "categorical": [1],
    }));
    let xcat = model_text(&xcat).to_string();
    assert!(xgb_any_node(&xcat, "split_type", 1), "a categorical split");
    let qid: Vec<u32> = (0..train.x.len() as u32).map(|i| i / 20).collect();
    let xrank = reference(&json!({
        "mode": "xgboost", "params": xgb_params("rank:pairwise", &[]), "rounds": 3,
        "x": rows_json(&train.x), "y": three, "x_pred": rows_json(few), "qid": qid,
    }));
    let xrank = model_text(&xrank).to_string();
    let xlinear = model_text(&xgb_train(
        &train.x,
        &train.y,
        json!({"booster": "gblinear", "objective": "reg:squarederror", "nthread": 1}),
        3,
        None,
        few,
    ))
    .to_string();
    // Node 1 of the first trees is a split (so pointing it back at the
    // root makes a cycle).
    assert!(!tokens(&small, "left_child", 0)[1].starts_with('-'));
    let xv: Value = serde_json::from_str(&xbin).unwrap();
    assert_ne!(
        xv["learner"]["gradient_booster"]["model"]["trees"][0]["left_children"][1],
        json!(-1)
    );

    let fixed = |t: String| fix_tree_sizes(&t);
    let mut cases = vec![
        case(
            "lightgbm: truncated in a tree",
            "regression",
            "lightgbm",
            small[..small.len() / 2].to_string(),
        ),
        case(
            "lightgbm: truncated in the header",
            "regression",
            "lightgbm",
            small[..120].to_string(),
        ),
        case(
            "lightgbm: a child index out of range",
            "regression",
            "lightgbm",
            fixed(edit(&small, "left_child", 0, set_token(0, "999"))),
        ),
        case(
            "lightgbm: a leaf index out of range",
            "regression",
            "lightgbm",
            fixed(edit(&small, "left_child", 0, set_token(0, "-999"))),
        ),
        case(
            "lightgbm: a cycle back to the root",
            "regression",
            "lightgbm",
            fixed(edit(&small, "left_child", 0, set_token(1, "0"))),
        ),
        case(
            "lightgbm: a node that is its own child",
            "regression",
            "lightgbm",
            fixed(edit(&small, "right_child", 1, set_token(2, "2"))),
        ),
        case(
            "lightgbm: one leaf value too few",
            "regression",
            "lightgbm",
            fixed(edit(&small, "leaf_value", 0, |v| {
                v.rsplit_once(' ').unwrap().0.to_string()
            })),
        ),
        case(
            "lightgbm: one leaf value too many",
            "regression",
            "lightgbm",
            fixed(edit(&small, "leaf_value", 2, |v| format!("{v} 0.25"))),
        ),
        case(
            "lightgbm: a split on a feature the model does not have",
            "regression",
            "lightgbm",
            fixed(edit(&small, "split_feature", 0, set_token(0, "99"))),
        ),
        case(
            "lightgbm: a threshold that is not a number",
            "regression",
            "lightgbm",
            fixed(edit(&small, "threshold", 0, set_token(0, "abc"))),
        ),
        case(
            "lightgbm: num_leaves disagrees with the arrays",
            "regression",
            "lightgbm",
            fixed(edit(&small, "num_leaves", 0, |_| "30".to_string())),
        ),
        case(
            "lightgbm: a categorical decision with no categories",
            "regression",
            "lightgbm",
            fixed(edit(&small, "decision_type", 0, set_token(0, "1"))),
        ),
        case(
            "lightgbm: num_class disagrees with the trees per iteration",
            "classification",
            "lightgbm",
            edit(&small_multi, "num_class", 0, |_| "4".to_string()),
        ),
        case(
            "lightgbm: garbage",
            "regression",
            "lightgbm",
            "hello, world".to_string(),
        ),
        case("lightgbm: empty", "regression", "lightgbm", String::new()),
        case(
            "lightgbm: a header line and nothing else",
            "regression",
            "lightgbm",
            "tree\n".to_string(),
        ),
        case("unknown format", "regression", "onnx", small.clone()),
        case("unknown task", "clustering", "lightgbm", small.clone()),
        case(
            "lightgbm text as xgboost_json",
            "regression",
            "xgboost_json",
            small.clone(),
        ),
        case(
            "xgboost json as lightgbm",
            "classification",
            "lightgbm",
            xbin.clone(),
        ),
        case(
            "xgboost: a categorical split",
            "regression",
            "xgboost_json",
            xcat,
        ),
        case(
            "xgboost: objective rank:pairwise",
            "regression",
            "xgboost_json",
            xrank,
        ),
        case(
            "xgboost: a gblinear booster",
            "regression",
            "xgboost_json",
            xlinear,
        ),
        case(
            "xgboost: num_class disagrees with the trees",
            "classification",
            "xgboost_json",
            xgb_edit(&xmulti, |v| {
                v["learner"]["learner_model_param"]["num_class"] = json!("2");
                v["learner"]["objective"]["softmax_multiclass_param"]["num_class"] = json!("2");
            }),
        ),
        case(
            "xgboost: a child index out of range",
            "classification",
            "xgboost_json",
            xgb_edit(&xbin, |v| tree_mut(v, 0)["left_children"][0] = json!(9999)),
        ),
        case(
            "xgboost: a cycle back to the root",
            "classification",
            "xgboost_json",
            xgb_edit(&xbin, |v| tree_mut(v, 0)["left_children"][1] = json!(0)),
        ),
        case(
            "xgboost: a split on a feature the model does not have",
            "classification",
            "xgboost_json",
            xgb_edit(&xbin, |v| tree_mut(v, 0)["split_indices"][0] = json!(50)),
        ),
        case(
            "xgboost: node arrays of different lengths",
            "classification",
            "xgboost_json",
            xgb_edit(&xbin, |v| {
                tree_mut(v, 1)["left_children"]
                    .as_array_mut()
                    .unwrap()
                    .pop();
            }),
        ),
        case(
            "xgboost: a tree for a class the model does not have",
            "classification",
            "xgboost_json",
            xgb_edit(&xbin, |v| {
                v["learner"]["gradient_booster"]["model"]["tree_info"][0] = json!(1)
            }),
        ),
        case(
            "xgboost: truncated",
            "classification",
            "xgboost_json",
            xbin[..xbin.len() / 2].to_string(),
        ),
        case(
            "xgboost: not JSON",
            "classification",
            "xgboost_json",
            "{\"learner\": nope".to_string(),
        ),
        case(
            "xgboost: JSON but no model",
            "classification",
            "xgboost_json",
            "{}".to_string(),
        ),
    ];
    cases.push(Case {
        what: "feature_names of the wrong length",
        task: "regression",
        format: "lightgbm",
        model: Model::Text(small.clone()),
        extra: names_arg(&["a", "b", "c"]),
    });
    cases.push(Case {
        what: "bytes that are not text, as bytea",
        task: "regression",
        format: "lightgbm",
        model: Model::Bytes(vec![
            0xff, 0xfe, 0x00, 0x01, 0x80, b't', b'r', b'e', b'e', 0xc3,
        ]),
        extra: String::new(),
    });
    // A NUL inside the first leaf value of the first tree (a field the
    // model needs: "-0.5" becomes "-\00.5").
    let mut nul = small.as_bytes().to_vec();
    nul[small.find("\nleaf_value=").unwrap() + "\nleaf_value=".len() + 1] = 0;
    cases.push(Case {
        what: "a NUL byte inside a leaf value, as bytea",
        task: "regression",
        format: "lightgbm",
        model: Model::Bytes(nul),
        extra: String::new(),
    });

    let rt = runtime();
    rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        // A valid import first (and the catalog exists).
        import_simple(&client, "valid", "regression", "lightgbm", &small, "")
            .await
            .unwrap_or_else(|e| panic!("the unmutated model: {e:?}\n{}", proxy.log()));
        let models_before = model_count(&client).await;
        let mut failures = Vec::new();
        for (i, c) in cases.iter().enumerate() {
            let project = format!("bad_{i}");
            let result = match &c.model {
                Model::Text(t) => {
                    import_simple(&client, &project, c.task, c.format, t, &c.extra).await
                }
                Model::Bytes(b) => import_bytea_param(&client, &project, c.task, c.format, b).await,
            };
            match result {
                Ok(imported) => failures.push(format!("{}: imported {imported:?}", c.what)),
                Err(e) => {
                    let state = sqlstate(&e, c.what);
                    let message = error_message(&e);
                    eprintln!("{}: {state} {message}", c.what);
                    if state != "22023" || message.trim().is_empty() {
                        failures.push(format!("{}: {state} {message}", c.what));
                    }
                }
            }
            alive(&client, c.what).await;
        }
        assert!(
            failures.is_empty(),
            "not refused with 22023:\n{}\n{}",
            failures.join("\n"),
            proxy
                .log()
                .lines()
                .rev()
                .take(50)
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert_eq!(
            model_count(&client).await,
            models_before,
            "a refused import stores no model"
        );
        import_simple(&client, "valid_after", "regression", "lightgbm", &small, "")
            .await
            .unwrap_or_else(|e| panic!("a valid import after the refusals: {e:?}"));
    });
    assert_eq!(ok(&proxy, "SELECT 1"), "1", "a new connection");
}

async fn model_count(client: &tokio_postgres::Client) -> String {
    let msgs = timed(
        "count",
        client.simple_query("SELECT count(*) FROM pgml.models"),
    )
    .await
    .unwrap_or_else(|e| panic!("SELECT count(*) FROM pgml.models: {e:?}"));
    simple_rows(&msgs)[0][0].clone()
}

/// Whether some node of some tree of an XGBoost JSON model has `value` in
/// its `key` array.
fn xgb_any_node(model: &str, key: &str, value: i64) -> bool {
    let v: Value = serde_json::from_str(model).expect("xgboost JSON");
    v["learner"]["gradient_booster"]["model"]["trees"]
        .as_array()
        .expect("trees")
        .iter()
        .any(|t| {
            t[key]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x.as_i64() == Some(value)))
        })
}

/// One deterministic mutation of LightGBM model text: (what, text).
fn lgb_mutation(base: &str, i: u64) -> (String, String) {
    let mut rng = Rng(1000 + i);
    let lines: Vec<&str> = base.split('\n').collect();
    let end = lines
        .iter()
        .position(|l| l.starts_with("end of trees"))
        .expect("end of trees");
    let n_trees = lines.iter().filter(|l| l.starts_with("Tree=")).count();
    let kind = i % 11;
    let tree = rng.below(n_trees);
    let (what, text) = match kind {
        0 => {
            let k = rng.below(end);
            let mut l = lines.clone();
            l.remove(k);
            (format!("line {k} ({:?}) deleted", lines[k]), l.join("\n"))
        }
        1 => {
            let k = rng.below(end);
            let mut l = lines.clone();
            l.insert(k, lines[k]);
            (format!("line {k} ({:?}) doubled", lines[k]), l.join("\n"))
        }
        2 => {
            let key = *rng.pick(&[
                "split_feature",
                "threshold",
                "decision_type",
                "left_child",
                "right_child",
                "leaf_value",
            ]);
            let t = tokens(base, key, tree);
            let (a, b) = (rng.below(t.len()), rng.below(t.len()));
            let text = edit(base, key, tree, |v| {
                let mut t: Vec<&str> = v.split(' ').collect();
                t.swap(a, b);
                t.join(" ")
            });
            (
                format!("tree {tree} {key}: tokens {a} and {b} swapped"),
                text,
            )
        }
        3 => {
            let key = *rng.pick(&["left_child", "right_child"]);
            let t = tokens(base, key, tree);
            let at = rng.below(t.len());
            let new = *rng.pick(&[
                "1000000",
                "-1000000",
                "0",
                "7",
                "8",
                "-8",
                "-9",
                "2147483647",
                "-2147483648",
                "99999999999",
            ]);
            (
                format!("tree {tree} {key}[{at}] = {new}"),
                edit(base, key, tree, set_token(at, new)),
            )
        }
        4 => {
            let t = tokens(base, "split_feature", tree);
            let at = rng.below(t.len());
            let new = *rng.pick(&["8", "1000", "-1", "2147483648", "7"]);
            (
                format!("tree {tree} split_feature[{at}] = {new}"),
                edit(base, "split_feature", tree, set_token(at, new)),
            )
        }
        5 => {
            let key = *rng.pick(&[
                "threshold",
                "leaf_value",
                "shrinkage",
                "decision_type",
                "num_cat",
            ]);
            let t = tokens(base, key, tree);
            let at = rng.below(t.len());
            let new = *rng.pick(&["nan", "inf", "-inf", "1e400", "", "x", "-0"]);
            (
                format!("tree {tree} {key}[{at}] = {new:?}"),
                edit(base, key, tree, set_token(at, new)),
            )
        }
        6 => {
            let at = rng.below(base.len());
            (format!("truncated at byte {at}"), base[..at].to_string())
        }
        7 => {
            let new = *rng.pick(&["0", "1", "2", "1000", "-3"]);
            (
                format!("tree {tree} num_leaves = {new}"),
                edit(base, "num_leaves", tree, |_| new.to_string()),
            )
        }
        8 => {
            let t = tokens(base, "decision_type", tree);
            let at = rng.below(t.len());
            let new = *rng.pick(&["1", "3", "255", "-1", "64", "9"]);
            (
                format!("tree {tree} decision_type[{at}] = {new}"),
                edit(base, "decision_type", tree, set_token(at, new)),
            )
        }
        9 => {
            let (key, values): (&str, &[&str]) = *rng.pick(&[
                ("max_feature_idx", &["0", "3", "100", "-1"][..]),
                ("num_class", &["0", "2", "-1"][..]),
                ("num_tree_per_iteration", &["0", "2"][..]),
                (
                    "objective",
                    &[
                        "binary sigmoid:1",
                        "multiclass num_class:3",
                        "xentropy",
                        "lambdarank",
                        "nonsense",
                    ][..],
                ),
            ]);
            let new = *rng.pick(values);
            (
                format!("header {key} = {new}"),
                edit(base, key, 0, |_| new.to_string()),
            )
        }
        _ => {
            let t = tokens(base, "tree_sizes", 0);
            let at = rng.below(t.len());
            let size: usize = t[at].parse().unwrap();
            let new = match rng.below(3) {
                0 => (size + 10).to_string(),
                1 => "0".to_string(),
                _ => (size / 2).to_string(),
            };
            (
                format!("tree_sizes[{at}] = {new}"),
                edit(base, "tree_sizes", 0, set_token(at, &new)),
            )
        }
    };
    // Half the time the tree sizes are made to agree with the text, so
    // LightGBM's loader itself would read the mutated trees.
    if i.is_multiple_of(2) && kind != 10 {
        (format!("{what}, tree_sizes fixed"), fix_tree_sizes(&text))
    } else {
        (what, text)
    }
}

/// One deterministic mutation of an XGBoost JSON model: (what, text).
fn xgb_mutation(base: &str, i: u64) -> (String, String) {
    let mut rng = Rng(2000 + i);
    let v: Value = serde_json::from_str(base).unwrap();
    let n_trees = v["learner"]["gradient_booster"]["model"]["trees"]
        .as_array()
        .unwrap()
        .len();
    let tree = rng.below(n_trees);
    let n_nodes = v["learner"]["gradient_booster"]["model"]["trees"][tree]["left_children"]
        .as_array()
        .unwrap()
        .len();
    let node = rng.below(n_nodes);
    let mut what = String::new();
    let text = xgb_edit(base, |v| match i % 12 {
        0 | 1 => {
            let key = if i.is_multiple_of(12) {
                "left_children"
            } else {
                "right_children"
            };
            let new = rng
                .pick(&[
                    json!(9999),
                    json!(-5),
                    json!(0),
                    json!(node),
                    json!(2147483648u64),
                    json!(-2147483649i64),
                ])
                .clone();
            what = format!("tree {tree} {key}[{node}] = {new}");
            tree_mut(v, tree)[key][node] = new;
        }
        2 => {
            let new = rng
                .pick(&[json!(8), json!(1000), json!(-1), json!(4294967296u64)])
                .clone();
            what = format!("tree {tree} split_indices[{node}] = {new}");
            tree_mut(v, tree)["split_indices"][node] = new;
        }
        3 => {
            let new = rng
                .pick(&[json!(1e38), Value::Null, json!("x"), json!(-1e38)])
                .clone();
            what = format!("tree {tree} split_conditions[{node}] = {new}");
            tree_mut(v, tree)["split_conditions"][node] = new;
        }
        4 => {
            let new = rng
                .pick(&[json!(2), json!(-1), json!("x"), json!(true)])
                .clone();
            what = format!("tree {tree} default_left[{node}] = {new}");
            tree_mut(v, tree)["default_left"][node] = new;
        }
        5 => {
            let key = *rng.pick(&[
                "left_children",
                "right_children",
                "split_indices",
                "split_conditions",
                "default_left",
                "base_weights",
                "tree_param",
                "split_type",
            ]);
            what = format!("tree {tree} without {key}");
            tree_mut(v, tree).as_object_mut().unwrap().remove(key);
        }
        6 => {
            let key = *rng.pick(&[
                "right_children",
                "split_indices",
                "split_conditions",
                "default_left",
                "base_weights",
            ]);
            what = format!("tree {tree} {key} one short");
            tree_mut(v, tree)[key].as_array_mut().unwrap().pop();
        }
        7 => {
            let new = rng.pick(&[json!(5), json!(-1), json!(1)]).clone();
            what = format!("tree_info[{tree}] = {new}");
            v["learner"]["gradient_booster"]["model"]["tree_info"][tree] = new;
        }
        8 => {
            let new = *rng.pick(&["1000", "0", "-1", "x"]);
            what = format!("num_trees = {new}");
            v["learner"]["gradient_booster"]["model"]["gbtree_model_param"]["num_trees"] =
                json!(new);
        }
        9 => {
            let new = *rng.pick(&["[abc]", "[1,2]", "", "[NaN]", "0.5", "[1e400]"]);
            what = format!("base_score = {new:?}");
            v["learner"]["learner_model_param"]["base_score"] = json!(new);
        }
        10 => {
            let new = *rng.pick(&["0", "1000", "-1"]);
            what = format!("tree {tree} num_nodes = {new}");
            tree_mut(v, tree)["tree_param"]["num_nodes"] = json!(new);
        }
        _ => {
            let new = *rng.pick(&["0", "2", "100000000000"]);
            what = format!("num_feature = {new}");
            v["learner"]["learner_model_param"]["num_feature"] = json!(new);
        }
    });
    (what, text)
}

/// 30 mutations of a LightGBM model and 12 of an XGBoost model (lines
/// deleted and doubled, numbers swapped, indices made large or negative,
/// counts and header values changed, truncation): each is imported (and
/// then predicts, or refuses a feature count the mutation changed: 42804)
/// or refused with 22023; never a crash, a hang or a dropped connection.
#[test]
fn mutated_models_are_imported_or_refused_never_a_crash() {
    let (_pg, proxy) = setup();
    let train = diabetes_like(300, 6);
    let few = &train.x[..3];
    let lgb = model_text(&lgb_train(
        &train.x,
        &train.y,
        lgb_params("regression", &[("num_leaves", json!(8))]),
        6,
        Some(&NAMES),
        few,
    ))
    .to_string();
    let xgb = model_text(&xgb_train(
        &train.x,
        &two_classes(&train.y),
        xgb_params("binary:logistic", &[("max_depth", json!(3))]),
        4,
        None,
        few,
    ))
    .to_string();
    let mut mutations: Vec<(String, &str, &str, String)> = Vec::new();
    for i in 0..30 {
        let (what, text) = lgb_mutation(&lgb, i);
        mutations.push((
            format!("lightgbm #{i}: {what}"),
            "regression",
            "lightgbm",
            text,
        ));
    }
    for i in 0..12 {
        let (what, text) = xgb_mutation(&xgb, i);
        mutations.push((
            format!("xgboost #{i}: {what}"),
            "classification",
            "xgboost_json",
            text,
        ));
    }
    let features = array_of(&train.x[7]);
    let rt = runtime();
    rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        // The models before mutation import.
        import_simple(&client, "unmutated_lgb", "regression", "lightgbm", &lgb, "")
            .await
            .unwrap_or_else(|e| panic!("the unmutated LightGBM model: {e:?}"));
        import_simple(
            &client,
            "unmutated_xgb",
            "classification",
            "xgboost_json",
            &xgb,
            "",
        )
        .await
        .unwrap_or_else(|e| panic!("the unmutated XGBoost model: {e:?}"));
        let (mut imported, mut refused, mut failures) = (0, 0, Vec::new());
        for (i, (what, task, format, text)) in mutations.iter().enumerate() {
            let project = format!("mut_{i}");
            match import_simple(&client, &project, task, format, text, "").await {
                Ok(_) => {
                    imported += 1;
                    let sql = format!("SELECT pgml.predict('{project}', {features})");
                    match timed(what, client.simple_query(&sql)).await {
                        Ok(msgs) => {
                            let rows = simple_rows(&msgs);
                            if rows.len() != 1 {
                                failures
                                    .push(format!("{what}: imported, then predict gave {rows:?}"));
                            } else {
                                eprintln!("{what}: imported, predicts {}", rows[0][0]);
                            }
                        }
                        Err(e) => {
                            let state = sqlstate(&e, what);
                            eprintln!("{what}: imported, predict: {state} {}", error_message(&e));
                            if state != "42804" {
                                failures.push(format!(
                                    "{what}: imported, then predict failed: {state} {}",
                                    error_message(&e)
                                ));
                            }
                        }
                    }
                }
                Err(e) => {
                    refused += 1;
                    let state = sqlstate(&e, what);
                    eprintln!("{what}: {state} {}", error_message(&e));
                    if state != "22023" {
                        failures.push(format!("{what}: {state} {}", error_message(&e)));
                    }
                }
            }
            alive(&client, what).await;
        }
        eprintln!("{imported} mutations imported, {refused} refused");
        assert!(
            failures.is_empty(),
            "{} of {} mutations went wrong:\n{}",
            failures.len(),
            mutations.len(),
            failures.join("\n")
        );
        assert!(
            refused >= 10,
            "most mutations break the model: only {refused} refused"
        );
    });
    assert_eq!(
        ok(&proxy, "SELECT 1"),
        "1",
        "a new connection after the mutations"
    );
}

// ---------------------------------------------------------------------------
// psycopg 3
// ---------------------------------------------------------------------------

/// psycopg 3 sends the model as bytes (a binary bytea parameter, and a text
/// one: `\x` hex) and as str: each form imports the same model, which
/// predicts as Python's library does. LightGBM text and XGBoost JSON.
#[test]
fn psycopg_sends_the_model_as_bytea_or_text() {
    let (pg, proxy) = setup();
    let train = diabetes_like(300, 7);
    let rows = prediction_rows(&train, 10);
    create_table(&proxy, "diab", &NAMES, &rows);
    let lgb = lgb_train(
        &train.x,
        &train.y,
        lgb_params("regression", &[]),
        15,
        Some(&NAMES),
        &rows,
    );
    let xgb = xgb_train(
        &train.x,
        &train.y,
        xgb_params("reg:squarederror", &[]),
        15,
        None,
        &rows,
    );
    let client = format!(
        "{}/tests/it/clients/import_model.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let url = proxy.url("app", "app_pw", "app");
    let array = array_input(&NAMES);
    for (prefix, format, answer) in [("plgb", "lightgbm", &lgb), ("pxgb", "xgboost_json", &xgb)] {
        let out = run_python(
            &client,
            &[&url],
            &json!({"model": model_text(answer), "task": "regression", "format": format, "project": prefix}),
            false,
        );
        let entries = out.as_array().expect("a list");
        assert_eq!(entries.len(), 3, "{out}");
        let want = floats(&answer["predict"]);
        for e in entries {
            let form = e["form"].as_str().unwrap();
            let project = format!("{prefix}_{form}");
            let row = e["row"]
                .as_array()
                .unwrap_or_else(|| panic!("{format} as psycopg {form}: {e}\n{}", proxy.log()));
            let cols: Vec<String> = row
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect();
            Imported::from_texts(&cols).check(&pg, &project, "regression", format);
            let got = column(&proxy, "predict", &format!("'{project}'"), "diab", &array);
            if format == "lightgbm" {
                assert_exact(&got, &want, &format!("{format} as psycopg {form}"));
            } else {
                let got: Vec<f32> = got.iter().map(|s| real(s)).collect();
                assert_close(&got, &want, 1e-6, &format!("{format} as psycopg {form}"));
            }
        }
    }
}
