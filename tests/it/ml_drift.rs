//! Issue #20 point 1 through the proxy against real Postgres:
//! `pgml.drift(project, relation)`, the deployed model's training
//! statistics against a relation's (or the rows the proxy served
//! predictions for), one row per feature and statistic (psi, ks and
//! missing for numbers; linf and missing for text).
//!
//! Every figure is checked against tests/reference/ml_drift_reference.py,
//! which recomputes the training histograms and both sides' statistics
//! with numpy from the raw rows read straight from Postgres (`ORDER BY
//! ctid`: the order training reads them in, so `test_sampling => 'last'`
//! makes the first n - round(n / 4) rows the training rows), with no
//! pgmlcat involved. Values come back as `real`: they must agree with the
//! float64 reference to float4 precision.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use tokio_postgres::types::Type;

use crate::common::*;

// ---------------------------------------------------------------------------
// The data: deterministic, from hashes of the row number
// ---------------------------------------------------------------------------

/// Rows in every generated table.
const ROWS: usize = 3000;

/// A uniform in (0, 1) from the row number `i` and a stream `k`.
fn u(k: u32) -> String {
    format!("(((hashint8(i * 16 + {k}) & 2147483647)::float8 + 0.5) / 2147483648.0)")
}

/// A standard normal (Box-Muller) from streams `a` and `b`.
fn normal(a: u32, b: u32) -> String {
    format!("(sqrt(-2 * ln({})) * cos(2 * pi() * {}))", u(a), u(b))
}

/// `table` with x1 real (uniform 0..10), x2 float8 (standard normal), x3
/// int (0..49) and the label y: the rows i = 1..3000 that `filter` keeps,
/// in order of i.
fn numeric_table_sql(table: &str, filter: &str) -> String {
    format!(
        "CREATE TABLE {table} AS SELECT x1, x2, x3, 2 * x1 + 3 * x2 - 0.5 * x3 + 0.1 * n AS y FROM \
         (SELECT i, (10 * {u1})::real AS x1, {x2} AS x2, floor(50 * {u4})::int AS x3, {n} AS n \
          FROM generate_series(1, {ROWS}) AS i) s WHERE {filter} ORDER BY i",
        u1 = u(1),
        x2 = normal(2, 3),
        u4 = u(4),
        n = normal(5, 6),
    )
}

/// `base` (all rows) and `shifted`: the same rows with x2 moved by two
/// standard deviations.
fn numeric_tables(pg: &PgCluster, filter: &str) {
    pg.psql("app", &numeric_table_sql("base", filter));
    pg.psql(
        "app",
        "CREATE TABLE shifted AS SELECT x1, x2 + 2.0 AS x2, x3, y FROM base ORDER BY ctid",
    );
}

const NUMERIC: [Feature; 3] = [
    Feature::numeric("x1"),
    Feature::numeric("x2"),
    Feature::numeric("x3"),
];

/// Trains `project` (linear regression on y) through the proxy with
/// test_sampling 'last'.
fn train(proxy: &Proxy, project: &str, relation: &str, label: &str, extra: &str) {
    let sql = format!(
        "SELECT * FROM pgml.train('{project}', 'regression', '{relation}', '{label}', \
         algorithm => 'linear', test_sampling => 'last'{extra})"
    );
    let out = ok(proxy, &sql);
    assert_eq!(out, format!("{project}|regression|linear|t"), "{sql}");
}

// ---------------------------------------------------------------------------
// Raw rows and the reference
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Numeric,
    Text,
}

#[derive(Clone, Copy, Debug)]
struct Feature {
    name: &'static str,
    kind: Kind,
}

impl Feature {
    const fn numeric(name: &'static str) -> Feature {
        Feature {
            name,
            kind: Kind::Numeric,
        }
    }

    const fn text(name: &'static str) -> Feature {
        Feature {
            name,
            kind: Kind::Text,
        }
    }
}

/// The values of `feature` in `relation` on each of `shards` in turn,
/// each in its scan order: text forms (numbers as float8), None for NULL.
fn scan(shards: &[&PgCluster], relation: &str, feature: &Feature) -> Vec<Option<String>> {
    let c = feature.name;
    let value = match feature.kind {
        Kind::Numeric => format!("{c}::float8::text"),
        Kind::Text => c.to_string(),
    };
    let sql = format!("SELECT {c} IS NULL, {value} FROM {relation} ORDER BY ctid");
    let mut out = Vec::new();
    for pg in shards {
        for line in pg.psql("app", &sql).lines() {
            let (null, v) = line
                .split_once('|')
                .unwrap_or_else(|| panic!("{sql}: {line:?}"));
            out.push(match null {
                "t" => None,
                _ => Some(v.to_string()),
            });
        }
    }
    out
}

/// Rows `test_sampling => 'last'` (test_size 0.25) trains on: the first
/// n - round(n / 4).
fn n_train(n: usize) -> usize {
    n - (n as f64 * 0.25).round() as usize
}

/// One row of pgml.drift as the reference has it.
#[derive(Debug, Clone)]
struct Expected {
    feature: String,
    statistic: String,
    value: Option<f64>,
    threshold: f64,
    drifted: Option<bool>,
}

struct Reference {
    rows: Vec<Expected>,
    /// Per feature: min, max, histogram, missing (numbers) or
    /// categories, missing (text) of the training rows.
    training: Value,
}

/// What pgml.drift should answer for a model trained on `training`
/// (test_sampling 'last') measured on `relation` (rows read from
/// `shards`, in shard order), with threshold overrides `thresholds`.
fn reference(
    shards: &[&PgCluster],
    features: &[Feature],
    training: &str,
    relation: &str,
    thresholds: Value,
) -> Reference {
    reference_on(shards, shards, features, training, relation, thresholds)
}

/// [`reference`] with the training rows read from `train_shards` and the
/// relation's from `relation_shards`.
fn reference_on(
    train_shards: &[&PgCluster],
    relation_shards: &[&PgCluster],
    features: &[Feature],
    training: &str,
    relation: &str,
    thresholds: Value,
) -> Reference {
    let request: Vec<Value> = features
        .iter()
        .map(|f| {
            let mut train = scan(train_shards, training, f);
            train.truncate(n_train(train.len()));
            json!({
                "name": f.name,
                "kind": match f.kind { Kind::Numeric => "numeric", Kind::Text => "text" },
                "train": train,
                "relation": scan(relation_shards, relation, f),
            })
        })
        .collect();
    let answer = python_reference(
        "ml_drift_reference.py",
        &json!({"features": request, "thresholds": thresholds}),
    );
    let rows = answer["rows"]
        .as_array()
        .expect("the reference's rows")
        .iter()
        .map(|r| Expected {
            feature: r["feature"].as_str().unwrap().to_string(),
            statistic: r["statistic"].as_str().unwrap().to_string(),
            value: r["value"].as_f64(),
            threshold: r["threshold"].as_f64().unwrap(),
            drifted: r["drifted"].as_bool(),
        })
        .collect();
    Reference {
        rows,
        training: answer["training"].clone(),
    }
}

// ---------------------------------------------------------------------------
// What pgml.drift answers
// ---------------------------------------------------------------------------

/// One row of pgml.drift as a client reads it.
#[derive(Debug, Clone, PartialEq)]
struct Drift {
    feature: String,
    statistic: String,
    value: Option<f32>,
    threshold: f32,
    drifted: Option<bool>,
}

/// `SELECT * FROM pgml.drift(<args>)` through the proxy with psql.
fn drift(proxy: &Proxy, args: &str) -> Vec<Drift> {
    let sql = format!("SELECT * FROM pgml.drift({args})");
    ok(proxy, &sql)
        .lines()
        .map(|line| {
            let c: Vec<&str> = line.split('|').collect();
            assert_eq!(c.len(), 5, "{sql}: {line:?}");
            Drift {
                feature: c[0].to_string(),
                statistic: c[1].to_string(),
                value: (!c[2].is_empty()).then(|| real(c[2])),
                threshold: real(c[3]),
                drifted: match c[4] {
                    "t" => Some(true),
                    "f" => Some(false),
                    "" => None,
                    other => panic!("{sql}: drifted {other:?}"),
                },
            }
        })
        .collect()
}

/// A `real` the proxy returned agrees with the float64 reference to
/// float4 precision.
fn real_close(got: f32, want: f64) -> bool {
    ((got as f64) - want).abs() <= 1e-6 + 1e-6 * want.abs()
}

/// Every row as the reference has it: same features and statistics in the
/// same order, values to float4 precision, thresholds, drifted.
fn assert_rows(got: &[Drift], want: &[Expected], what: &str) {
    let names = |g: &[Drift]| -> Vec<(String, String)> {
        g.iter()
            .map(|d| (d.feature.clone(), d.statistic.clone()))
            .collect()
    };
    let want_names: Vec<(String, String)> = want
        .iter()
        .map(|e| (e.feature.clone(), e.statistic.clone()))
        .collect();
    assert_eq!(names(got), want_names, "{what}: rows\n{got:#?}");
    for (g, e) in got.iter().zip(want) {
        let at = format!("{what}: {} {}", e.feature, e.statistic);
        match (g.value, e.value) {
            (None, None) => {}
            (Some(v), Some(w)) => assert!(
                real_close(v, w),
                "{at}: value {v} but the reference has {w} (difference {:e})",
                (v as f64 - w).abs()
            ),
            (v, w) => panic!("{at}: value {v:?} but the reference has {w:?}"),
        }
        assert_eq!(g.threshold, e.threshold as f32, "{at}: threshold");
        assert_eq!(g.drifted, e.drifted, "{at}: drifted (value {:?})", g.value);
    }
}

/// (feature, statistic) of the rows marked drifted.
fn drifted(rows: &[Drift]) -> BTreeSet<(String, String)> {
    rows.iter()
        .filter(|d| d.drifted == Some(true))
        .map(|d| (d.feature.clone(), d.statistic.clone()))
        .collect()
}

fn set(pairs: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    pairs
        .iter()
        .map(|(f, s)| (f.to_string(), s.to_string()))
        .collect()
}

/// The deployed model's snapshot `columns` JSON, on the catalog directly.
fn snapshot_columns(catalog: &PgCluster, project: &str) -> Vec<Value> {
    let id = deployed_id(catalog, project);
    let text = catalog.psql(
        "app",
        &format!(
            "SELECT s.columns FROM pgml.snapshots s JOIN pgml.models m ON m.snapshot_id = s.id \
             WHERE m.id = {id}"
        ),
    );
    serde_json::from_str::<Value>(&text)
        .unwrap_or_else(|e| panic!("snapshot columns of {project}: {e}: {text}"))
        .as_array()
        .expect("columns is a list")
        .clone()
}

/// The snapshot's training statistics are those the reference recomputed
/// from the raw training rows: the reference and pgmlcat agree on which
/// rows are the training rows and how they are binned.
fn assert_training_side(catalog: &PgCluster, project: &str, reference: &Reference) {
    let columns = snapshot_columns(catalog, project);
    let training = reference.training.as_object().unwrap();
    for (name, want) in training {
        let column = columns
            .iter()
            .find(|c| c["name"] == json!(name))
            .unwrap_or_else(|| panic!("{project}: no column {name} in the snapshot"));
        let stats = &column["statistics"];
        for key in want.as_object().unwrap().keys() {
            match key.as_str() {
                "min" | "max" => assert_eq!(
                    stats[key].as_f64(),
                    want[key].as_f64(),
                    "{project}: {name} training {key}"
                ),
                _ => assert_eq!(stats[key], want[key], "{project}: {name} training {key}"),
            }
        }
    }
}

/// The server's error for `sql` (SQLSTATE, message); the session goes on.
async fn sqlstate(client: &tokio_postgres::Client, sql: &str) -> (String, String) {
    let error = expect_error(client, sql).await;
    let one: i32 = client
        .query_one("SELECT 1", &[])
        .await
        .unwrap_or_else(|e| panic!("after {sql}: {e}"))
        .get(0);
    assert_eq!(one, 1, "the session goes on after {sql}");
    error
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

/// A numeric feature shifted by two standard deviations: psi and ks flag
/// it and nothing else; every value is the reference's. The training
/// relation itself drifts nowhere; its training rows alone give 0; an
/// empty relation and an all-NULL column give NULLs.
#[test]
fn numeric_shift_flags_exactly_the_shifted_feature() {
    let (pg, proxy) = single();
    numeric_tables(&pg, "true");
    train(&proxy, "p", "base", "y", "");
    let shards = [&pg];

    let want = reference(&shards, &NUMERIC, "base", "shifted", json!({}));
    assert_training_side(&pg, "p", &want);
    let got = drift(&proxy, "'p', 'shifted'");
    assert_rows(&got, &want.rows, "drift('p', 'shifted')");
    assert_eq!(
        drifted(&got),
        set(&[("x2", "psi"), ("x2", "ks")]),
        "only x2 drifted: {got:#?}"
    );
    assert!(
        got.iter()
            .filter(|d| d.statistic == "missing")
            .all(|d| d.value == Some(0.0)),
        "no NULLs on either side: {got:#?}"
    );
    // Named arguments, any case of the function name.
    assert_eq!(
        drift(&proxy, "project_name => 'p', relation_name => 'shifted'"),
        got,
        "named arguments"
    );
    assert_eq!(got.len(), 9, "three rows for each of three features");
    assert_eq!(drift(&proxy, "'p', 'shifted'"), got, "the same again");
    let upper = ok(&proxy, "SELECT * FROM PGML.DRIFT('p', 'shifted')");
    assert_eq!(upper.lines().count(), 9, "PGML.DRIFT: {upper}");

    // The default relation: the snapshot's, test rows included.
    let want = reference(&shards, &NUMERIC, "base", "base", json!({}));
    for args in ["'p'", "'p', NULL", "project_name => 'p'"] {
        let got = drift(&proxy, args);
        assert_rows(&got, &want.rows, &format!("drift({args})"));
        assert!(drifted(&got).is_empty(), "drift({args}): {got:#?}");
    }

    // The training rows alone: the very histogram, psi and ks 0.
    pg.psql(
        "app",
        &format!(
            "CREATE TABLE train_only AS SELECT * FROM base ORDER BY ctid LIMIT {}",
            n_train(ROWS)
        ),
    );
    let got = drift(&proxy, "'p', 'train_only'");
    assert_rows(
        &got,
        &reference(&shards, &NUMERIC, "base", "train_only", json!({})).rows,
        "drift('p', 'train_only')",
    );
    assert!(
        got.iter().all(|d| d.value == Some(0.0)),
        "the training rows against themselves: {got:#?}"
    );

    // No rows: every value NULL.
    pg.psql(
        "app",
        "CREATE TABLE empty_rel AS SELECT * FROM base LIMIT 0",
    );
    let got = drift(&proxy, "'p', 'empty_rel'");
    assert_rows(
        &got,
        &reference(&shards, &NUMERIC, "base", "empty_rel", json!({})).rows,
        "drift('p', 'empty_rel')",
    );
    assert!(
        got.iter().all(|d| d.value.is_none() && d.drifted.is_none()),
        "an empty relation: {got:#?}"
    );

    // tokio-postgres: typed columns, parameters, binary results.
    let want = reference(&shards, &NUMERIC, "base", "shifted", json!({}));
    let psql_rows = drift(&proxy, "'p', 'shifted'");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        let sql = "SELECT * FROM pgml.drift($1, $2)";
        let stmt = client
            .prepare_typed(sql, &[Type::TEXT, Type::TEXT])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let cols: Vec<(&str, &Type)> = stmt
            .columns()
            .iter()
            .map(|c| (c.name(), c.type_()))
            .collect();
        assert_eq!(
            cols,
            vec![
                ("feature", &Type::TEXT),
                ("statistic", &Type::TEXT),
                ("value", &Type::FLOAT4),
                ("threshold", &Type::FLOAT4),
                ("drifted", &Type::BOOL),
            ],
            "{sql}: result columns"
        );
        let rows = client
            .query(&stmt, &[&"p", &"shifted"])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let typed: Vec<Drift> = rows
            .iter()
            .map(|r| Drift {
                feature: r.get(0),
                statistic: r.get(1),
                value: r.get(2),
                threshold: r.get(3),
                drifted: r.get(4),
            })
            .collect();
        assert_rows(&typed, &want.rows, "tokio-postgres drift($1, $2)");
        assert_eq!(typed, psql_rows, "binary results equal psql's text");

        // Simple protocol, and a parameter that is NULL.
        let msgs = client
            .simple_query("SELECT * FROM pgml.drift('p', 'shifted')")
            .await
            .expect("simple-protocol drift");
        assert_eq!(simple_rows(&msgs).len(), 9);
        let rows = client
            .query(&stmt, &[&"p", &None::<&str>])
            .await
            .unwrap_or_else(|e| panic!("{sql} with NULL: {e}"));
        assert_eq!(rows.len(), 9, "{sql} with a NULL relation: the default");
        let flagged: Vec<bool> = rows
            .iter()
            .map(|r| r.get::<_, Option<bool>>(4).unwrap())
            .collect();
        assert!(
            !flagged.contains(&true),
            "the default relation drifts nowhere"
        );
    });

    // x2 all NULL: no psi or ks for it, every row of it missing; a
    // schema-qualified relation; the feature columns in another order
    // and an extra column do not matter.
    pg.psql(
        "app",
        "CREATE SCHEMA other; \
         CREATE TABLE other.no_x2 AS SELECT x3, NULL::float8 AS x2, 'extra'::text AS note, x1 FROM base ORDER BY ctid",
    );
    let got = drift(&proxy, "'p', 'other.no_x2'");
    assert_rows(
        &got,
        &reference(&shards, &NUMERIC, "base", "other.no_x2", json!({})).rows,
        "drift('p', 'other.no_x2')",
    );
    assert_eq!(
        drifted(&got),
        set(&[("x2", "missing")]),
        "x2 entirely missing: {got:#?}"
    );
}

/// A text feature whose category frequencies change gives a drifted linf;
/// NULLs added beyond 5% give a drifted `missing` with the signed
/// difference; NaN counts as missing; fewer NULLs give a negative one.
#[test]
fn categorical_and_missing_rate_drift() {
    let (pg, proxy) = single();
    // Training: c is 'a' 50%, 'b' 30%, 'c' 20%; x3 2% NULL; x1 never NULL.
    pg.psql(
        "app",
        &format!(
            "CREATE TABLE cat_base AS SELECT c, x1, x3, x1 + (c = 'a')::int + coalesce(x3, 0) + 0.1 * n AS y FROM \
             (SELECT i, CASE WHEN {u1} < 0.5 THEN 'a' WHEN {u1} < 0.8 THEN 'b' ELSE 'c' END AS c, \
                     10 * {u2} AS x1, CASE WHEN {u3} < 0.02 THEN NULL ELSE {x3} END AS x3, {n} AS n \
              FROM generate_series(1, {ROWS}) AS i) s ORDER BY i",
            u1 = u(1),
            u2 = u(2),
            u3 = u(3),
            x3 = normal(4, 5),
            n = normal(6, 7),
        ),
    );
    // Now: 'a' 10%, 'b' 50%, 'c' 30%, a new 'd' 10%, 3% NULL; x1 1% NaN; x3 20% NULL.
    pg.psql(
        "app",
        &format!(
            "CREATE TABLE cat_new AS SELECT \
               CASE WHEN {u8} < 0.03 THEN NULL WHEN {u1} < 0.1 THEN 'a' WHEN {u1} < 0.6 THEN 'b' \
                    WHEN {u1} < 0.9 THEN 'c' ELSE 'd' END AS c, \
               CASE WHEN {u9} < 0.01 THEN 'NaN'::float8 ELSE 10 * {u2} END AS x1, \
               CASE WHEN {u3} < 0.2 THEN NULL ELSE {x3} END AS x3, 0.0::float8 AS y \
             FROM generate_series(1, {ROWS}) AS i ORDER BY i",
            u1 = u(1),
            u2 = u(2),
            u3 = u(3),
            u8 = u(8),
            u9 = u(9),
            x3 = normal(4, 5),
        ),
    );
    // Fewer NULLs than in training: none at all.
    pg.psql(
        "app",
        "CREATE TABLE cat_full AS SELECT c, x1, coalesce(x3, 0.5) AS x3 FROM cat_base ORDER BY ctid",
    );
    train(
        &proxy,
        "cats",
        "cat_base",
        "y",
        r#", preprocess => '{"x3": {"impute": "mean"}}'"#,
    );
    let shards = [&pg];
    let features = [
        Feature::text("c"),
        Feature::numeric("x1"),
        Feature::numeric("x3"),
    ];

    // Served rows with NULLs and a category training never saw (the NaN
    // rows left out: x1 has no impute, so they cannot be predicted): the
    // proxy's own counts give the reference's figures too.
    pg.psql(
        "app",
        "CREATE TABLE cat_served AS SELECT * FROM cat_new WHERE x1 <> 'NaN' ORDER BY ctid",
    );
    let out = ok(
        &proxy,
        "SELECT pgml.predict('cats', ROW(c, x1, x3)) FROM cat_served",
    );
    let served: usize = pg
        .psql("app", "SELECT count(*) FROM cat_served")
        .parse()
        .unwrap();
    assert_eq!(out.lines().count(), served, "every row predicted");
    let want = reference(&shards, &features, "cat_base", "cat_served", json!({}));
    let got = drift(&proxy, "'cats', 'serving'");
    assert_rows(&got, &want.rows, "drift('cats', 'serving')");
    assert_eq!(
        drifted(&got),
        set(&[("c", "linf"), ("x3", "missing")]),
        "{got:#?}"
    );

    let want = reference(&shards, &features, "cat_base", "cat_new", json!({}));
    assert_training_side(&pg, "cats", &want);
    let got = drift(&proxy, "'cats', 'cat_new'");
    assert_rows(&got, &want.rows, "drift('cats', 'cat_new')");
    let stats: Vec<(&str, &str)> = got
        .iter()
        .map(|d| (d.feature.as_str(), d.statistic.as_str()))
        .collect();
    assert_eq!(
        stats,
        [
            ("c", "linf"),
            ("c", "missing"),
            ("x1", "psi"),
            ("x1", "ks"),
            ("x1", "missing"),
            ("x3", "psi"),
            ("x3", "ks"),
            ("x3", "missing"),
        ],
        "the snapshot's column order, no label"
    );
    assert_eq!(
        drifted(&got),
        set(&[("c", "linf"), ("x3", "missing")]),
        "{got:#?}"
    );
    let value = |f: &str, s: &str| {
        got.iter()
            .find(|d| d.feature == f && d.statistic == s)
            .and_then(|d| d.value)
            .unwrap_or_else(|| panic!("{f} {s}: {got:#?}"))
    };
    assert!(value("c", "linf") > 0.35, "a: 50% -> 10%");
    assert!(value("x3", "missing") > 0.15, "x3: 2% -> 20% NULL, signed");
    assert!(
        value("x1", "missing") > 0.005 && value("x1", "missing") < 0.02,
        "x1's NaNs count as missing"
    );

    // Fewer NULLs: a negative difference, not drifted (2% < 5%).
    let want = reference(&shards, &features, "cat_base", "cat_full", json!({}));
    let got = drift(&proxy, "'cats', 'cat_full'");
    assert_rows(&got, &want.rows, "drift('cats', 'cat_full')");
    let missing = got
        .iter()
        .find(|d| d.feature == "x3" && d.statistic == "missing")
        .unwrap();
    assert!(
        missing.value.unwrap() < -0.01 && missing.drifted == Some(false),
        "{missing:?}"
    );

    // The training relation: nothing drifted.
    let want = reference(&shards, &features, "cat_base", "cat_base", json!({}));
    let got = drift(&proxy, "'cats'");
    assert_rows(&got, &want.rows, "drift('cats')");
    assert!(drifted(&got).is_empty(), "{got:#?}");

    // The served rows' table, counted by Postgres.
    let want = reference(&shards, &features, "cat_base", "cat_served", json!({}));
    assert_rows(
        &drift(&proxy, "'cats', 'cat_served'"),
        &want.rows,
        "drift('cats', 'cat_served')",
    );
}

/// pgml.drift(project, 'serving'): the rows this proxy predicted (row
/// input in both forms, and array input), which were shifted: 55000
/// before any prediction, then x2 flagged with the reference's values
/// over exactly the predicted rows.
#[test]
fn serving_drift_measures_the_predicted_rows() {
    let (pg, proxy) = single();
    numeric_tables(&pg, "true");
    train(&proxy, "p", "base", "y", "");
    // A second project nothing is predicted with.
    train(&proxy, "idle", "base", "y", "");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        let (code, message) = sqlstate(&client, "SELECT * FROM pgml.drift('p', 'serving')").await;
        assert_eq!(code, "55000", "no predictions yet: {message}");
    });

    let mut predicted = 0;
    for sql in [
        "SELECT pgml.predict('p', ROW(x1, x2, x3)) FROM shifted WHERE x1 < 3",
        "SELECT pgml.predict('p', (x1, x2, x3)) FROM shifted WHERE x1 >= 3 AND x1 < 6",
        "SELECT pgml.predict('p', ARRAY[x1, x2, x3]) FROM shifted WHERE x1 >= 6",
    ] {
        let out = ok(&proxy, sql);
        for line in out.lines() {
            assert!(real(line).is_finite(), "{sql}: {line}");
        }
        predicted += out.lines().count();
    }
    assert_eq!(predicted, ROWS, "every shifted row predicted once");

    let shards = [&pg];
    let want = reference(&shards, &NUMERIC, "base", "shifted", json!({}));
    let got = drift(&proxy, "'p', 'serving'");
    assert_rows(&got, &want.rows, "drift('p', 'serving')");
    assert_eq!(
        drifted(&got),
        set(&[("x2", "psi"), ("x2", "ks")]),
        "{got:#?}"
    );
    // The same figures as the relation the rows came from.
    assert_rows(
        &drift(&proxy, "'p', 'shifted'"),
        &want.rows,
        "drift('p', 'shifted')",
    );
    assert_eq!(
        drift(&proxy, "project_name => 'p', relation_name => 'serving'"),
        got,
        "named arguments"
    );

    // Serving rows are per project.
    rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        let (code, message) =
            sqlstate(&client, "SELECT * FROM pgml.drift('idle', 'serving')").await;
        assert_eq!(code, "55000", "nothing predicted with idle: {message}");
    });

    // Past the reservoir's 10,000 rows: 12,000 more rows of the same
    // distribution (four copies of shifted). The sample is random, so the
    // figures are the full relation's only up to sampling error.
    pg.psql(
        "app",
        "CREATE TABLE shifted4 AS SELECT s.* FROM shifted s, generate_series(1, 4)",
    );
    let out = ok(
        &proxy,
        "SELECT pgml.predict('p', ROW(x1, x2, x3)) FROM shifted4",
    );
    assert_eq!(out.lines().count(), 4 * ROWS);
    let got = drift(&proxy, "'p', 'serving'");
    assert_eq!(
        drifted(&got),
        set(&[("x2", "psi"), ("x2", "ks")]),
        "{got:#?}"
    );
    for (g, e) in got.iter().zip(&want.rows) {
        let (v, w) = (g.value.unwrap() as f64, e.value.unwrap());
        let tolerance = match e.statistic.as_str() {
            "psi" => 0.02 + 0.1 * w,
            "ks" => 0.03,
            _ => 0.0,
        };
        assert!(
            (v - w).abs() <= tolerance,
            "sampled serving rows: {} {} {v}, all rows {w}",
            e.feature,
            e.statistic
        );
    }
}

/// pgml.projects.drift_thresholds overrides the defaults, key by key; a
/// bad key or a non-number is 22023.
#[test]
fn thresholds_override_per_project() {
    let (pg, proxy) = single();
    numeric_tables(&pg, "true");
    train(&proxy, "p", "base", "y", "");
    let shards = [&pg];

    ok(
        &proxy,
        r#"UPDATE pgml.projects SET drift_thresholds = '{"psi": 100, "ks": 100}' WHERE name = 'p'"#,
    );
    let thresholds = json!({"psi": 100, "ks": 100});
    let want = reference(&shards, &NUMERIC, "base", "shifted", thresholds);
    let got = drift(&proxy, "'p', 'shifted'");
    assert_rows(&got, &want.rows, "thresholds psi 100, ks 100");
    assert!(drifted(&got).is_empty(), "{got:#?}");
    for d in &got {
        let threshold = match d.statistic.as_str() {
            "psi" | "ks" => 100.0,
            "missing" => 0.05,
            other => panic!("{other}"),
        };
        assert_eq!(d.threshold, threshold, "{d:?}");
    }

    // One key: the others keep their defaults.
    pg.psql(
        "app",
        r#"UPDATE pgml.projects SET drift_thresholds = '{"psi": 0.1}' WHERE name = 'p'"#,
    );
    let want = reference(&shards, &NUMERIC, "base", "shifted", json!({"psi": 0.1}));
    let got = drift(&proxy, "'p', 'shifted'");
    assert_rows(&got, &want.rows, "threshold psi 0.1");
    assert_eq!(
        drifted(&got),
        set(&[("x2", "psi"), ("x2", "ks")]),
        "{got:#?}"
    );
    // A missing threshold of 0 flags any difference in the NULL rate; the
    // psi threshold can sit right under x1's small psi.
    let x1_psi = want.rows[0].value.unwrap();
    assert!(x1_psi > 0.0, "x1's psi over all rows is not 0");
    let overrides = json!({"missing": 0, "psi": x1_psi / 2.0});
    ok(
        &proxy,
        &format!("UPDATE pgml.projects SET drift_thresholds = '{overrides}' WHERE name = 'p'"),
    );
    let want = reference(&shards, &NUMERIC, "base", "base", overrides);
    let got = drift(&proxy, "'p'");
    assert_rows(&got, &want.rows, "thresholds missing 0, psi under x1's");
    assert!(
        drifted(&got).contains(&("x1".to_string(), "psi".to_string())),
        "{got:#?}"
    );

    // Bad overrides: refused (by the UPDATE or by pgml.drift) with 22023.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        for bad in [r#"{"bogus": 1}"#, r#"{"psi": "high"}"#] {
            let update =
                format!("UPDATE pgml.projects SET drift_thresholds = '{bad}' WHERE name = 'p'");
            match client.simple_query(&update).await {
                Err(e) => {
                    let (code, message) = db_error(&e, &update);
                    assert_eq!(code, "22023", "{update}: {message}");
                }
                Ok(_) => {
                    let (code, message) =
                        sqlstate(&client, "SELECT * FROM pgml.drift('p', 'shifted')").await;
                    assert_eq!(code, "22023", "{bad}: {message}");
                }
            }
        }
        // Back to the defaults.
        client
            .simple_query("UPDATE pgml.projects SET drift_thresholds = '{}' WHERE name = 'p'")
            .await
            .expect("reset the thresholds");
    });
    let want = reference(&shards, &NUMERIC, "base", "shifted", json!({}));
    assert_rows(
        &drift(&proxy, "'p', 'shifted'"),
        &want.rows,
        "thresholds back to the defaults",
    );
}

/// Unknown project or none deployed 42704, a missing relation 42P01, a
/// relation without a feature column 42703, an imported model (no
/// training statistics) 55000; the session goes on after each, and
/// pgml.drift still answers.
#[test]
fn errors_keep_the_session() {
    let (pg, proxy) = single();
    numeric_tables(&pg, "true");
    train(&proxy, "p", "base", "y", "");
    pg.psql(
        "app",
        "CREATE TABLE no_x2 AS SELECT x1, x3, y FROM base; \
         INSERT INTO pgml.projects (name, task) VALUES ('undeployed', 'regression')",
    );
    // A LightGBM model exported and imported again: no training statistics.
    ok(
        &proxy,
        r#"SELECT * FROM pgml.train('lg', 'regression', 'base', 'y', algorithm => 'lightgbm', hyperparams => '{"n_estimators": 5}')"#,
    );
    let lg = deployed_id(&pg, "lg");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        let export = format!("SELECT pgml.export_model({lg})");
        let msgs = client
            .simple_query(&export)
            .await
            .unwrap_or_else(|e| panic!("{export}: {e}"));
        let text = simple_rows(&msgs)[0][0].clone();
        assert!(!text.contains("$model$"));
        client
            .simple_query(&format!(
                "SELECT * FROM pgml.import_model('imp', 'regression', 'lightgbm', $model${text}$model$, \
                 feature_names => ARRAY['x1', 'x2', 'x3'])"
            ))
            .await
            .unwrap_or_else(|e| panic!("import the exported model: {e}"));
        for (sql, want) in [
            ("SELECT * FROM pgml.drift('imp')", "55000"),
            ("SELECT * FROM pgml.drift('imp', 'base')", "55000"),
            ("SELECT * FROM pgml.drift('no_such_project')", "42704"),
            (
                "SELECT * FROM pgml.drift('no_such_project', 'base')",
                "42704",
            ),
            ("SELECT * FROM pgml.drift('undeployed')", "42704"),
            ("SELECT * FROM pgml.drift('p', 'no_such_table')", "42P01"),
            (
                "SELECT * FROM pgml.drift('p', 'public.no_such_table')",
                "42P01",
            ),
            ("SELECT * FROM pgml.drift('p', 'no_x2')", "42703"),
        ] {
            let (code, message) = sqlstate(&client, sql).await;
            assert_eq!(code, want, "{sql}: {message}");
            // Extended protocol too.
            let err = client
                .query(sql, &[])
                .await
                .err()
                .unwrap_or_else(|| panic!("{sql}: succeeded in the extended protocol"));
            assert_eq!(db_error(&err, sql).0, want, "{sql} (extended)");
            let rows = client
                .query("SELECT * FROM pgml.drift('p', 'shifted')", &[])
                .await
                .unwrap_or_else(|e| panic!("drift after {sql}: {e}"));
            assert_eq!(rows.len(), 9, "drift after {sql}");
        }
        // Inside a transaction block the error aborts it, as any error.
        client.simple_query("BEGIN").await.expect("BEGIN");
        let err = client
            .simple_query("SELECT * FROM pgml.drift('p', 'no_such_table')")
            .await
            .expect_err("missing relation in a transaction");
        assert_eq!(db_error(&err, "in a transaction").0, "42P01");
        client.simple_query("ROLLBACK").await.expect("ROLLBACK");
        let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);
    });
    // psql: the message reaches the user, the proxy stays up.
    let (success, _, stderr) = proxy.psql_full("SELECT * FROM pgml.drift('p', 'no_x2')");
    assert!(
        !success && stderr.contains("x2"),
        "names the column: {stderr}"
    );
    assert_eq!(drift(&proxy, "'p'").len(), 9, "drift after the errors");
}

/// A sharded pool: training reads shard 0's rows then shard 1's; the
/// relation's side adds up both shards.
#[test]
fn sharded_relation_sums_every_shard() {
    let shards = [PgCluster::start(), PgCluster::start()];
    for (i, pg) in shards.iter().enumerate() {
        numeric_tables(pg, &format!("i % 2 = {i}"));
    }
    let port = free_port();
    let proxy = Proxy::start(port, &sharded_pool_config(port, &shards));
    train(&proxy, "p", "base", "y", "");
    let both = [&shards[0], &shards[1]];
    // The catalog lives on shard 0.
    let want = reference(&both, &NUMERIC, "base", "shifted", json!({}));
    assert_training_side(&shards[0], "p", &want);
    let got = drift(&proxy, "'p', 'shifted'");
    assert_rows(&got, &want.rows, "sharded drift('p', 'shifted')");
    assert_eq!(
        drifted(&got),
        set(&[("x2", "psi"), ("x2", "ks")]),
        "{got:#?}"
    );
    let want = reference(&both, &NUMERIC, "base", "base", json!({}));
    let got = drift(&proxy, "'p'");
    assert_rows(&got, &want.rows, "sharded drift('p')");
    assert!(drifted(&got).is_empty(), "{got:#?}");
    // Not one shard's figures: the relation on shard 1 alone has other
    // values (the test tells them apart).
    let one = reference_on(&both, &[&shards[1]], &NUMERIC, "base", "base", json!({}));
    let differ = one
        .rows
        .iter()
        .zip(&want.rows)
        .filter(|(a, b)| {
            a.statistic != "missing" && (a.value.unwrap() - b.value.unwrap()).abs() > 1e-5
        })
        .count();
    assert!(differ >= 4, "one shard's psi and ks equal both shards'");
}

/// A boolean feature is read by training as 0 and 1: the relation's side
/// (Postgres has no boolean to float8 cast) and the serving side bin it
/// alike. 30% true in training; 90% true in `flipped`.
#[test]
fn boolean_features_drift_as_zero_and_one() {
    let (pg, proxy) = single();
    pg.psql(
        "app",
        "CREATE TABLE b AS SELECT g, (g % 10 < 3) AS flag, (g % 7)::float8 AS x, \
                (g % 7)::float8 + (g % 10 < 3)::int * 5 AS y FROM generate_series(1, 2000) g; \
         CREATE TABLE flipped AS SELECT g, (g % 10 < 9) AS flag, x, y FROM b",
    );
    ok(
        &proxy,
        "SELECT * FROM pgml.train('bools', 'regression', 'b', 'y', algorithm => 'linear', test_sampling => 'last')",
    );
    // Training split: the first 1500 rows, 450 true; the bins of [0, 1]:
    // false in bin 0, true in bin 19.
    let p = [0.7, 0.3];
    let psi_ks = |q: [f64; 2]| {
        let psi: f64 = p.iter().zip(q).map(|(p, q)| (q - p) * (q / p).ln()).sum();
        (psi, (p[0] - q[0]).abs())
    };
    let check = |rows: &[Drift], q: [f64; 2], what: &str| {
        let (psi, ks) = psi_ks(q);
        let get = |s: &str| {
            rows.iter()
                .find(|d| d.feature == "flag" && d.statistic == s)
                .and_then(|d| d.value)
                .unwrap_or_else(|| panic!("{what}: no flag {s} in {rows:?}"))
        };
        assert!(
            real_close(get("psi"), psi),
            "{what}: psi {} != {psi}",
            get("psi")
        );
        assert!(
            real_close(get("ks"), ks),
            "{what}: ks {} != {ks}",
            get("ks")
        );
    };
    check(&drift(&proxy, "'bools', 'flipped'"), [0.1, 0.9], "flipped");
    let rows = drift(&proxy, "'bools', 'flipped'");
    assert!(drifted(&rows).contains(&("flag".to_string(), "psi".to_string())));
    // Serving: row input with the boolean as it is.
    ok(
        &proxy,
        "SELECT count(pgml.predict('bools', (g, flag, x))) FROM flipped",
    );
    check(&drift(&proxy, "'bools', 'serving'"), [0.1, 0.9], "serving");
}

mod drivers;
