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
//!
//! mod.rs holds the harness and the Python reference; `data` makes the
//! rows and tables, `checks` compares predictions, `importing` calls
//! pgml.import_model and pgml.export_model every way a client does, and
//! `edits` changes model texts. The tests: `lightgbm` (import and export),
//! `xgboost` (and psycopg 3), `malformed` and `mutations`.

mod checks;
mod data;
mod edits;
mod importing;
mod lightgbm;
mod malformed;
mod mutations;
mod xgboost;

use std::future::Future;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;
use data::rows_json;

/// The features of the diabetes-like data, in order.
const NAMES: [&str; 8] = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4"];
/// How long one statement may take before the test calls it a hang.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

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

/// The connection still answers.
async fn alive(client: &tokio_postgres::Client, after: &str) {
    let msgs = timed(after, client.simple_query("SELECT 1"))
        .await
        .unwrap_or_else(|e| panic!("SELECT 1 after {after}: {e:?}"));
    let values: Vec<String> = simple_rows(&msgs).into_iter().flatten().collect();
    assert_eq!(values, ["1"], "SELECT 1 after {after}");
}

// ---------------------------------------------------------------------------
// The Python reference
// ---------------------------------------------------------------------------

/// tests/reference/ml_import_reference.py's answer to `request`.
fn reference(request: &Value) -> Value {
    python_reference("ml_import_reference.py", request)
}

/// A model for Python's lightgbm to train: parameters for a small,
/// reproducible model, with `objective` and `extra`.
fn lgb(objective: &str, extra: &[(&str, Value)]) -> Value {
    let params = json!({
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
    model_request("lightgbm", params, extra)
}

/// A model for Python's xgboost to train: depth 4, histogram trees, with
/// `objective` and `extra`.
fn xgb(objective: &str, extra: &[(&str, Value)]) -> Value {
    let params = json!({
        "objective": objective,
        "max_depth": 4,
        "eta": 0.3,
        "tree_method": "hist",
        "nthread": 1,
        "seed": 0,
    });
    model_request("xgboost", params, extra)
}

/// The reference's request for a `mode` model with `params`, `extra`
/// set over them.
fn model_request(mode: &str, mut params: Value, extra: &[(&str, Value)]) -> Value {
    for (k, v) in extra {
        params[*k] = v.clone();
    }
    json!({"mode": mode, "params": params})
}

/// `model` (from [`lgb`] or [`xgb`], to which a test may add e.g.
/// "categorical") trained by Python on (x, y) for `rounds` rounds, with
/// feature names `names`: {"model" (its text), "predict", and "raw_score"
/// (lightgbm) or "margin" (xgboost)} for the rows `pred`.
fn python_train(
    x: &[Vec<f64>],
    y: &[f64],
    mut model: Value,
    rounds: usize,
    names: Option<&[&str]>,
    pred: &[Vec<f64>],
) -> Value {
    model["rounds"] = json!(rounds);
    model["x"] = rows_json(x);
    model["y"] = json!(y);
    model["x_pred"] = rows_json(pred);
    model["feature_names"] = json!(names);
    reference(&model)
}

/// The texts of a small LightGBM regression (8 leaves, 6 rounds, named
/// features) and a small XGBoost binary:logistic model (depth 3, 4
/// rounds) trained by Python on `train`: what the malformed and mutated
/// models are made from.
fn small_models(train: &data::Data) -> (String, String) {
    let few = &train.x[..3];
    let lgb_model = lgb("regression", &[("num_leaves", json!(8))]);
    let lgb_answer = python_train(&train.x, &train.y, lgb_model, 6, Some(&NAMES), few);
    let xgb_model = xgb("binary:logistic", &[("max_depth", json!(3))]);
    let y = data::two_classes(&train.y);
    let xgb_answer = python_train(&train.x, &y, xgb_model, 4, None, few);
    (
        model_text(&lgb_answer).to_string(),
        model_text(&xgb_answer).to_string(),
    )
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
