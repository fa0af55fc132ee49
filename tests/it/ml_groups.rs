//! Issue #18 through the proxy against real Postgres: one model per group
//! (`group_by =>` in pgml.train, `group =>` in pgml.predict), linear
//! regression pushed down to the shards as aggregates, and LightGBM built
//! from the streamed rows. Every figure is checked against a reference
//! computed without pgmlcat: numpy's least squares and Python's lightgbm
//! (tests/reference/ml_groups_reference.py) on the rows read straight from
//! Postgres, in the order Postgres scans them.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::*;
use serde_json::{json, Value};

// Reachable here as well, for the modules that import them from ml_groups.
pub(crate) use crate::common::{deployed_id, ok, single};

/// A linear model: intercept and one coefficient per feature.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    intercept: f64,
    coef: Vec<f64>,
}

impl Linear {
    fn from_reference(v: &Value) -> Linear {
        Linear {
            intercept: v["intercept"].as_f64().unwrap(),
            coef: v["coef"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_f64().unwrap())
                .collect(),
        }
    }

    /// The stored model file of a 'linear' (or 'ridge') regression:
    /// {"n_features": k, "outputs": [{"intercept": b, "params": {"data": [...]}}]}
    /// (linfa's ElasticNet names the coefficients "hyperplane").
    pub(crate) fn from_model_file(text: &str) -> Linear {
        let v: Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("model file {text}: {e}"));
        let out = &v["outputs"][0];
        let params = if out.get("params").is_some() {
            &out["params"]
        } else {
            &out["hyperplane"]
        };
        let coef: Vec<f64> = params["data"]
            .as_array()
            .unwrap_or_else(|| panic!("no coefficients in the model file {text}"))
            .iter()
            .map(|c| c.as_f64().unwrap())
            .collect();
        assert_eq!(
            v["n_features"].as_u64(),
            Some(coef.len() as u64),
            "n_features in {text}"
        );
        Linear {
            intercept: out["intercept"]
                .as_f64()
                .unwrap_or_else(|| panic!("no intercept in the model file {text}")),
            coef,
        }
    }

    /// The prediction as `real`, as pgml.predict returns it.
    pub(crate) fn predict(&self, x: &[f64]) -> f32 {
        let dot: f64 = self.coef.iter().zip(x).map(|(c, v)| c * v).sum();
        (dot + self.intercept) as f32
    }
}

/// |a - b| <= rel * |b|, for every coefficient and the intercept.
pub(crate) fn assert_linear_close(ours: &Linear, reference: &Linear, rel: f64, what: &str) {
    assert_eq!(
        ours.coef.len(),
        reference.coef.len(),
        "{what}: feature count"
    );
    let pairs = std::iter::once((ours.intercept, reference.intercept)).chain(
        ours.coef
            .iter()
            .copied()
            .zip(reference.coef.iter().copied()),
    );
    for (i, (a, b)) in pairs.enumerate() {
        assert!(
            (a - b).abs() <= rel * b.abs(),
            "{what}: {} pgmlcat {a}, reference {b} (relative error {:e})\npgmlcat {ours:?}\nreference {reference:?}",
            if i == 0 { "intercept".to_string() } else { format!("coefficient {}", i - 1) },
            ((a - b) / b).abs()
        );
    }
}

/// Two `real` predictions agree to float4 precision (one unit in the last
/// place: the sum may be taken in another order before the rounding).
pub(crate) fn f32_close(a: f32, b: f32) -> bool {
    a == b || (a - b).abs() <= f32::EPSILON * b.abs().max(a.abs())
}

// ---------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------

/// Table `name` (store_id int, x1, x2, x3, y float8): 50 stores with 60 to
/// 100 rows each, y = a_g + b_g x1 + c_g x2 + d_g x3 + small noise, every
/// value deterministic (sin/cos of the row numbers), inserted in a mixed
/// order; only the stores `filter` keeps (e.g. "g % 2 = 0").
pub(crate) fn store_table_sql(name: &str, filter: &str) -> String {
    format!(
        "CREATE TABLE {name} (store_id int, x1 float8, x2 float8, x3 float8, y float8); \
         INSERT INTO {name} \
         SELECT g, x1, x2, x3, \
                (3 + 0.37 * g) + (1 + (g % 7) * 0.5) * x1 + (-2 + (g % 5) * 0.3) * x2 \
                + (0.5 + (g % 11) * 0.25) * x3 + 0.05 * sin(k * 12.9898 + g * 78.233) \
         FROM (SELECT g, k, 2 * sin(g * 1.3 + k * 0.7) AS x1, 1.5 * cos(g * 0.9 + k * 1.1) AS x2, \
                      sin(k * 0.37 + g) * cos(k * 0.11) + 0.3 * cos(k * 2.3) AS x3 \
               FROM generate_series(1, 50) AS g, generate_series(1, 60 + (g * 7) % 41) AS k) s \
         WHERE {filter} \
         ORDER BY (g * 131 + k * 977) % 1009, g, k"
    )
}

/// How many rows store `g` has in `store_table_sql`.
pub(crate) fn rows_of_store(g: usize) -> usize {
    60 + (g * 7) % 41
}

/// One row of a grouped table: group value (text), features, label.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) group: String,
    pub(crate) x: Vec<f64>,
    pub(crate) y: f64,
}

/// `SELECT <group>, <features>, <label> FROM <from>` on `pg` directly (no
/// ORDER BY: the scan order), each value in its exact float8 text form.
pub(crate) fn scan(
    pg: &PgCluster,
    group: &str,
    features: &[&str],
    label: &str,
    from: &str,
) -> Vec<Row> {
    let sql = format!(
        "SELECT {group}, {}, {label} FROM {from}",
        features.join(", ")
    );
    pg.psql("app", &sql)
        .lines()
        .map(|l| {
            let cols: Vec<&str> = l.split('|').collect();
            assert_eq!(cols.len(), features.len() + 2, "{l}");
            Row {
                group: cols[0].to_string(),
                x: cols[1..=features.len()]
                    .iter()
                    .map(|v| v.parse().unwrap())
                    .collect(),
                y: cols[features.len() + 1].parse().unwrap(),
            }
        })
        .collect()
}

/// Rows per group, each group's in the order given.
pub(crate) fn by_group(rows: &[Row]) -> BTreeMap<String, Vec<Row>> {
    let mut out: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for r in rows {
        out.entry(r.group.clone()).or_default().push(r.clone());
    }
    out
}

/// test_sampling 'last' with test_size 0.25: each group's first
/// n - round(n * 0.25) rows.
pub(crate) fn train_rows_last(groups: &BTreeMap<String, Vec<Row>>) -> BTreeMap<String, Vec<Row>> {
    groups
        .iter()
        .map(|(g, rows)| {
            let n_test = (rows.len() as f64 * 0.25).round() as usize;
            (g.clone(), rows[..rows.len() - n_test].to_vec())
        })
        .collect()
}

pub(crate) fn xy(rows: &[Row]) -> Value {
    json!({
        "x": rows.iter().map(|r| r.x.clone()).collect::<Vec<_>>(),
        "y": rows.iter().map(|r| r.y).collect::<Vec<_>>(),
    })
}

/// numpy's least squares (with intercept) for each group.
pub(crate) fn numpy_lstsq(groups: &BTreeMap<String, Vec<Row>>) -> BTreeMap<String, Linear> {
    let req = json!({
        "mode": "lstsq",
        "groups": groups.iter().map(|(g, rows)| (g.clone(), xy(rows))).collect::<serde_json::Map<_, _>>(),
    });
    let out = python_reference("ml_groups_reference.py", &req);
    groups
        .keys()
        .map(|g| (g.clone(), Linear::from_reference(&out[g])))
        .collect()
}

/// The ridge minimizer in closed form for each group.
fn numpy_ridge(groups: &BTreeMap<String, Vec<Row>>, alpha: f64) -> BTreeMap<String, Linear> {
    let req = json!({
        "mode": "ridge",
        "alpha": alpha,
        "groups": groups.iter().map(|(g, rows)| (g.clone(), xy(rows))).collect::<serde_json::Map<_, _>>(),
    });
    let out = python_reference("ml_groups_reference.py", &req);
    groups
        .keys()
        .map(|g| (g.clone(), Linear::from_reference(&out[g])))
        .collect()
}

// ---------------------------------------------------------------------------
// The catalog
// ---------------------------------------------------------------------------

/// The set row of the latest group training of `project`: its id and
/// metrics; checks that it has no group key and that it is the deployed one.
pub(crate) fn set_row(catalog: &PgCluster, project: &str) -> (i64, Value) {
    let out = catalog.psql(
        "app",
        &format!(
            "SELECT m.id, m.metrics FROM pgml.models m JOIN pgml.projects p ON p.id = m.project_id \
             WHERE p.name = '{project}' AND m.group_key IS NULL AND m.group_of IS NULL ORDER BY m.id DESC LIMIT 1"
        ),
    );
    let (id, metrics) = out
        .split_once('|')
        .unwrap_or_else(|| panic!("no set row for {project}: {out}"));
    let id: i64 = id.parse().unwrap();
    assert_eq!(
        deployed_id(catalog, project),
        id,
        "{project}: the set row is the deployed model"
    );
    (id, serde_json::from_str(metrics).unwrap())
}

/// The linear model of each group of set `set_id`, by the group key's
/// `column` value (its text form).
pub(crate) fn group_models(
    catalog: &PgCluster,
    set_id: i64,
    column: &str,
) -> BTreeMap<String, Linear> {
    let out = catalog.psql(
        "app",
        &format!(
            "SELECT m.group_key->>'{column}', convert_from(f.data, 'UTF8')::jsonb \
             FROM pgml.models m JOIN pgml.files f ON f.model_id = m.id AND f.path = 'model' \
             WHERE m.group_of = {set_id}"
        ),
    );
    let mut models = BTreeMap::new();
    for line in out.lines() {
        let (key, file) = line.split_once('|').unwrap();
        let previous = models.insert(key.to_string(), Linear::from_model_file(file));
        assert!(previous.is_none(), "group {key} twice in set {set_id}");
    }
    models
}

/// The deployed model of `project` (trained without groups).
fn deployed_linear(catalog: &PgCluster, project: &str) -> Linear {
    let text = catalog.psql(
        "app",
        &format!(
            "SELECT convert_from(f.data, 'UTF8')::jsonb FROM pgml.files f \
             JOIN pgml.deployed_models d ON d.id = f.model_id WHERE d.name = '{project}' AND f.path = 'model'"
        ),
    );
    Linear::from_model_file(&text)
}

pub(crate) fn assert_groups_close(
    ours: &BTreeMap<String, Linear>,
    reference: &BTreeMap<String, Linear>,
    rel: f64,
    what: &str,
) {
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        reference.keys().collect::<Vec<_>>(),
        "{what}: the groups with a model"
    );
    for (g, model) in ours {
        assert_linear_close(model, &reference[g], rel, &format!("{what}, group {g}"));
    }
}

// ---------------------------------------------------------------------------
// Predictions
// ---------------------------------------------------------------------------

/// `SELECT store_id, x1, x2, x3, <prediction> FROM <from>` through the
/// proxy, checked row by row against `models` (by the row's store); rows
/// of a store without a model must be NULL. Returns the number of rows.
pub(crate) fn check_predictions(
    proxy: &Proxy,
    prediction: &str,
    from: &str,
    models: &BTreeMap<String, Linear>,
) -> usize {
    let sql = format!("SELECT store_id, x1, x2, x3, {prediction} FROM {from}");
    let out = ok(proxy, &sql);
    let mut n = 0;
    for line in out.lines() {
        let cols: Vec<&str> = line.split('|').collect();
        assert_eq!(cols.len(), 5, "{sql}: {line}");
        let x: Vec<f64> = cols[1..4].iter().map(|v| v.parse().unwrap()).collect();
        match models.get(cols[0]) {
            Some(m) => {
                let got: f32 = cols[4]
                    .parse()
                    .unwrap_or_else(|e| panic!("{sql}: {line}: {e}"));
                let want = m.predict(&x);
                assert!(
                    f32_close(got, want),
                    "{sql}: {line}: want {want} from store {}'s model",
                    cols[0]
                );
            }
            None => assert_eq!(cols[4], "", "{sql}: a store without a model: {line}"),
        }
        n += 1;
    }
    n
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

pub(crate) const FEATURES: [&str; 3] = ["x1", "x2", "x3"];

/// Trains 'stores' per store_id with 'last' sampling on `sales` through the
/// proxy; checks the result row and the catalog's set row; returns the
/// per-group models as stored.
pub(crate) fn train_stores(proxy: &Proxy, catalog: &PgCluster) -> BTreeMap<String, Linear> {
    let out = ok(
        proxy,
        "SELECT * FROM pgml.train('stores', 'regression', 'sales', 'y', algorithm => 'linear', \
         group_by => 'store_id', test_sampling => 'last')",
    );
    assert_eq!(out, "stores|regression|linear|t|50");
    let (set_id, metrics) = set_row(catalog, "stores");
    assert_eq!(
        metrics.get("groups").and_then(Value::as_i64),
        Some(50),
        "{metrics}"
    );
    assert!(
        metrics.get("r2").and_then(Value::as_f64).unwrap_or(0.0) > 0.99,
        "pooled metrics of an almost exact fit: {metrics}"
    );
    let models = group_models(catalog, set_id, "store_id");
    assert_eq!(models.len(), 50, "one model row per store");
    let keys: BTreeSet<i64> = models.keys().map(|k| k.parse().unwrap()).collect();
    assert_eq!(keys, (1..=50).collect());
    models
}

#[test]
fn group_by_linear_matches_numpy_per_group() {
    let (pg, proxy) = single();
    pg.psql("app", &store_table_sql("sales", "true"));
    let models = train_stores(&proxy, &pg);

    let rows = scan(&pg, "store_id", &FEATURES, "y", "sales");
    assert_eq!(rows.len(), (1..=50).map(rows_of_store).sum::<usize>());
    let groups = by_group(&rows);
    assert_eq!(groups.len(), 50);
    let reference = numpy_lstsq(&train_rows_last(&groups));
    assert_groups_close(&models, &reference, 1e-8, "per-store OLS");

    // The fit on the whole group (test rows included) is a different
    // model: the comparison above is sharp enough to tell them apart.
    let whole = numpy_lstsq(&groups);
    let differs = models
        .iter()
        .any(|(g, m)| (m.intercept - whole[g].intercept).abs() > 1e-8 * whole[g].intercept.abs());
    assert!(
        differs,
        "the train split is not visible in the coefficients"
    );

    // Each group's own metrics are on its model row.
    let per_group = pg.psql(
        "app",
        "SELECT count(*) FROM pgml.models WHERE group_of IS NOT NULL AND (metrics->>'r2')::float8 > 0.99",
    );
    assert_eq!(per_group, "50");
}

#[test]
fn group_predictions_pick_the_group_model() {
    let (pg, proxy) = single();
    pg.psql("app", &store_table_sql("sales", "true"));
    let models = train_stores(&proxy, &pg);
    let total = pg.psql("app", "SELECT count(*) FROM sales");
    let total: usize = total.parse().unwrap();

    // A store that came after the training: no model.
    pg.psql(
        "app",
        "INSERT INTO sales VALUES (999, 0.5, 0.25, -1, 7), (999, 1, 2, 3, 4), (999, -1, 0, 1, 2)",
    );
    for prediction in [
        "pgml.predict('stores', ROW(x1, x2, x3), group => store_id)",
        "pgml.predict('stores', (x1, x2, x3), \"group\" => store_id)",
        "pgml.predict('stores', ARRAY[x1, x2, x3], group => store_id)",
    ] {
        let n = check_predictions(&proxy, prediction, "sales", &models);
        assert_eq!(n, total + 3, "{prediction}: every row");
    }

    // One NOTICE per statement names the store without a model.
    let (success, stdout, stderr) = proxy.psql_full(
        "SELECT store_id, pgml.predict('stores', ROW(x1, x2, x3), group => store_id) FROM sales WHERE store_id IN (999, 3)",
    );
    assert!(success, "{stderr}");
    let rows: Vec<&str> = stdout.lines().collect();
    assert_eq!(rows.iter().filter(|l| **l == "999|").count(), 3, "{stdout}");
    assert_eq!(rows.len(), 3 + rows_of_store(3), "{stdout}");
    let notices: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("no model for group"))
        .collect();
    assert_eq!(notices.len(), 1, "one NOTICE per statement: {stderr}");
    assert!(
        notices[0].contains("NOTICE")
            && notices[0].contains("stores")
            && notices[0].contains("999"),
        "{stderr}"
    );

    // WHERE and ORDER BY on the prediction.
    let p = "pgml.predict('stores', ARRAY[x1, x2, x3], group => store_id)";
    let sql = format!(
        "SELECT store_id, x1, x2, x3 FROM sales WHERE {p} > 10 AND store_id < 999 ORDER BY {p} DESC"
    );
    let out = ok(&proxy, &sql);
    let reference = |line: &str| -> f32 {
        let cols: Vec<&str> = line.split('|').collect();
        let x: Vec<f64> = cols[1..4].iter().map(|v| v.parse().unwrap()).collect();
        models[cols[0]].predict(&x)
    };
    let got: Vec<&str> = out.lines().collect();
    let all = pg.psql(
        "app",
        "SELECT store_id, x1, x2, x3 FROM sales WHERE store_id < 999",
    );
    let want: BTreeSet<&str> = all.lines().filter(|l| reference(l) > 10.0).collect();
    assert!(
        want.len() > 100 && want.len() < total - 100,
        "the filter keeps some rows: {}",
        want.len()
    );
    assert_eq!(
        got.iter().copied().collect::<BTreeSet<_>>(),
        want,
        "{sql}: the rows kept"
    );
    assert_eq!(got.len(), want.len(), "{sql}: no row twice");
    for pair in got.windows(2) {
        assert!(
            reference(pair[0]) >= reference(pair[1]),
            "{sql}: {} before {}",
            pair[0],
            pair[1]
        );
    }

    // The general method: an UPDATE writes every row's group prediction.
    pg.psql("app", "ALTER TABLE sales ADD COLUMN pred real");
    let (success, _, stderr) = proxy.psql_full(
        "UPDATE sales SET pred = pgml.predict('stores', ARRAY[x1, x2, x3], group => store_id)",
    );
    assert!(success, "{stderr}\n{}", proxy.log());
    let written = pg.psql("app", "SELECT store_id, x1, x2, x3, pred FROM sales");
    let mut n = 0;
    for line in written.lines() {
        let cols: Vec<&str> = line.split('|').collect();
        if cols[0] == "999" {
            assert_eq!(cols[4], "", "no model, NULL: {line}");
        } else {
            let x: Vec<f64> = cols[1..4].iter().map(|v| v.parse().unwrap()).collect();
            let got: f32 = cols[4]
                .parse()
                .unwrap_or_else(|e| panic!("UPDATE wrote {line}: {e}"));
            let want = models[cols[0]].predict(&x);
            assert!(f32_close(got, want), "UPDATE wrote {line}, want {want}");
        }
        n += 1;
    }
    assert_eq!(n, total + 3);
}

#[test]
fn group_by_lightgbm_matches_python_lightgbm() {
    let (pg, proxy) = single();
    // 10 stores of 200 to 300 rows, a non-linear label, mixed order.
    pg.psql(
        "app",
        "CREATE TABLE visits (store_id int, x1 float8, x2 float8, x3 float8, y float8); \
         INSERT INTO visits \
         SELECT g, x1, x2, x3, g * sin(x1) + x2 * x2 - (g % 3) * x3 + 0.1 * cos(k * 7.77) \
         FROM (SELECT g, k, 3 * sin(g * 2.1 + k * 0.61) AS x1, 2 * cos(g * 0.7 + k * 1.37) AS x2, \
                      sin(k * 0.29 + g) + cos(k * 3.1) AS x3 \
               FROM generate_series(1, 10) AS g, generate_series(1, 200 + (g * 37) % 101) AS k) s \
         ORDER BY (g * 211 + k * 389) % 1013, g, k",
    );
    let out = ok(
        &proxy,
        r#"SELECT * FROM pgml.train('visits', 'regression', 'visits', 'y', algorithm => 'lightgbm',
           hyperparams => '{"n_estimators": 20, "deterministic": true, "num_threads": 1, "seed": 0}',
           group_by => 'store_id', test_sampling => 'last')"#,
    );
    assert_eq!(out, "visits|regression|lightgbm|t|10");
    let (_, metrics) = set_row(&pg, "visits");
    assert_eq!(metrics.get("groups").and_then(Value::as_i64), Some(10));

    let groups = by_group(&scan(&pg, "store_id", &FEATURES, "y", "visits"));
    let train = train_rows_last(&groups);
    let req = json!({
        "mode": "lightgbm",
        "params": {"objective": "regression", "deterministic": true, "num_threads": 1, "seed": 0, "verbosity": -1},
        "rounds": 20,
        "groups": train.iter().map(|(g, rows)| {
            let mut v = xy(rows);
            v["x_pred"] = json!(groups[g].iter().map(|r| r.x.clone()).collect::<Vec<_>>());
            (g.clone(), v)
        }).collect::<serde_json::Map<_, _>>(),
    });
    let python = python_reference("ml_groups_reference.py", &req);
    // Python's prediction for each row, by its exact text.
    let mut want: BTreeMap<String, f32> = BTreeMap::new();
    for (g, rows) in &groups {
        let preds = python[g].as_array().unwrap();
        assert_eq!(preds.len(), rows.len());
        for (r, p) in rows.iter().zip(preds) {
            let key = format!("{g}|{}|{}|{}", r.x[0], r.x[1], r.x[2]);
            assert!(
                want.insert(key, p.as_f64().unwrap() as f32).is_none(),
                "duplicate row"
            );
        }
    }
    let distinct: BTreeSet<u32> = want.values().map(|v| v.to_bits()).collect();
    assert!(distinct.len() > 100, "the models predict many values");

    let out = ok(
        &proxy,
        "SELECT store_id, x1, x2, x3, \
         pgml.predict('visits', ARRAY[x1, x2, x3], group => store_id) FROM visits",
    );
    let mut n = 0;
    for line in out.lines() {
        let (key, p) = line.rsplit_once('|').unwrap();
        // Keys as Rust prints the parsed floats, like `want`'s.
        let cols: Vec<&str> = key.split('|').collect();
        let x: Vec<f64> = cols[1..].iter().map(|v| v.parse().unwrap()).collect();
        let key = format!("{}|{}|{}|{}", cols[0], x[0], x[1], x[2]);
        let got: f32 = p.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        let w = want
            .get(&key)
            .unwrap_or_else(|| panic!("row {key} not in the scan"));
        assert!(f32_close(got, *w), "{line}: python lightgbm predicts {w}");
        n += 1;
    }
    assert_eq!(n, want.len());
}

#[test]
fn group_by_on_two_shards() {
    let shards = [PgCluster::start(), PgCluster::start()];
    for (i, pg) in shards.iter().enumerate() {
        pg.psql("app", &store_table_sql("sales", &format!("g % 2 = {i}")));
    }
    let port = free_port();
    let proxy = Proxy::start(port, &sharded_pool_config(port, &shards));
    // The catalog lives on shard 0.
    let models = train_stores(&proxy, &shards[0]);

    // Each store lives on one shard: its rows in that shard's scan order.
    let mut groups = BTreeMap::new();
    for (i, pg) in shards.iter().enumerate() {
        for (g, rows) in by_group(&scan(pg, "store_id", &FEATURES, "y", "sales")) {
            assert_eq!(g.parse::<i64>().unwrap() % 2, i as i64);
            groups.insert(g, rows);
        }
    }
    assert_eq!(groups.len(), 50);
    let reference = numpy_lstsq(&train_rows_last(&groups));
    assert_groups_close(&models, &reference, 1e-8, "per-store OLS over two shards");

    let total: usize = groups.values().map(Vec::len).sum();
    // (The ROW(...) forms on a sharded pool: ml_groups_more.rs.)
    let n = check_predictions(
        &proxy,
        "pgml.predict('stores', ARRAY[x1, x2, x3], group => store_id)",
        "sales",
        &models,
    );
    assert_eq!(n, total, "the rows of both shards");
}

/// Rows `SELECT ... FROM <table> AS r` that the pushdown split keeps for
/// training (test_size 0.25), on `pg` directly.
fn pushdown_train_rows(pg: &PgCluster, group: &str, table: &str) -> Vec<Row> {
    scan(
        pg,
        group,
        &FEATURES,
        "y",
        &format!(
            "{table} AS r WHERE NOT ((hash_record(r) & 2147483647) % 10000 < round(0.25 * 10000))"
        ),
    )
}

#[test]
fn pushdown_linear_matches_numpy_on_two_shards() {
    let shards = [PgCluster::start(), PgCluster::start()];
    for (i, pg) in shards.iter().enumerate() {
        pg.psql(
            "app",
            &format!(
                "CREATE TABLE lin AS \
                 SELECT x1, x2, x3, 1.5 + 2 * x1 - 3 * x2 + 0.7 * x3 + 0.1 * sin(k * 12.9898) AS y \
                 FROM (SELECT k, sin(k * 0.71) * 2 AS x1, cos(k * 1.13) AS x2, sin(k * 0.173) + 0.5 * cos(k * 2.9) AS x3 \
                       FROM generate_series({}, {}) AS k) s",
                i * 10000 + 1,
                i * 10000 + 3000 + i * 500
            ),
        );
    }
    let port = free_port();
    let proxy = Proxy::start(port, &sharded_pool_config(port, &shards));
    // The NOTICEs tell the aggregates ran on both shards (no rows pulled).
    for (project, algorithm, params) in [
        ("push", "linear", r#"{"pushdown": true}"#),
        ("push_ridge", "ridge", r#"{"pushdown": true, "alpha": 0.1}"#),
    ] {
        let (success, stdout, stderr) = proxy.psql_full(&format!(
            "SELECT * FROM pgml.train('{project}', 'regression', 'lin', 'y', algorithm => '{algorithm}', hyperparams => '{params}')"
        ));
        assert!(success, "{stderr}\n{}", proxy.log());
        assert_eq!(stdout, format!("{project}|regression|{algorithm}|t"));
        assert!(
            stderr.contains("pushdown") && stderr.contains("2 shard"),
            "{project}: {stderr}"
        );
    }

    let mut train = Vec::new();
    for pg in &shards {
        train.extend(pushdown_train_rows(pg, "'all'", "lin"));
    }
    let all: usize = shards
        .iter()
        .map(|pg| {
            pg.psql("app", "SELECT count(*) FROM lin")
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert_eq!(all, 6500);
    assert!(
        train.len() > all * 6 / 10 && train.len() < all * 9 / 10,
        "about 3/4 train rows: {} of {all}",
        train.len()
    );
    let groups = by_group(&train);
    let ols = numpy_lstsq(&groups);
    assert_linear_close(
        &deployed_linear(&shards[0], "push"),
        &ols["all"],
        1e-8,
        "pushdown OLS",
    );
    let ridge = numpy_ridge(&groups, 0.1);
    assert_linear_close(
        &deployed_linear(&shards[0], "push_ridge"),
        &ridge["all"],
        1e-8,
        "pushdown ridge",
    );
    // The shrinkage is visible: ridge is not OLS.
    assert!(
        (ridge["all"].coef[1] - ols["all"].coef[1]).abs() > 1e-3,
        "ridge {:?} vs ols {:?}",
        ridge["all"],
        ols["all"]
    );
    // Its predictions work like any linear model's.
    let m = deployed_linear(&shards[0], "push");
    let out = ok(
        &proxy,
        "SELECT x1, x2, x3, pgml.predict('push', ARRAY[x1, x2, x3]) FROM lin",
    );
    assert_eq!(out.lines().count(), all);
    for line in out.lines() {
        let cols: Vec<&str> = line.split('|').collect();
        let x: Vec<f64> = cols[..3].iter().map(|v| v.parse().unwrap()).collect();
        let got: f32 = cols[3].parse().unwrap();
        assert!(
            f32_close(got, m.predict(&x)),
            "{line}: want {}",
            m.predict(&x)
        );
    }

    // Pushdown with group_by, on a single pool.
    let (pg, proxy) = single();
    pg.psql("app", &store_table_sql("sales", "true"));
    let (success, stdout, stderr) = proxy.psql_full(
        r#"SELECT * FROM pgml.train('push_stores', 'regression', 'sales', 'y', algorithm => 'linear',
           hyperparams => '{"pushdown": true}', group_by => 'store_id')"#,
    );
    assert!(success, "{stderr}\n{}", proxy.log());
    assert_eq!(stdout, "push_stores|regression|linear|t|50");
    assert!(stderr.contains("pushdown"), "{stderr}");
    let (set_id, metrics) = set_row(&pg, "push_stores");
    assert_eq!(metrics.get("groups").and_then(Value::as_i64), Some(50));
    let models = group_models(&pg, set_id, "store_id");
    let reference = numpy_lstsq(&by_group(&pushdown_train_rows(&pg, "store_id", "sales")));
    assert_groups_close(&models, &reference, 1e-8, "pushdown OLS per store");
}

#[test]
fn streaming_lightgbm_equals_in_memory() {
    let (pg, proxy) = single();
    pg.psql(
        "app",
        "CREATE TABLE wide AS \
         SELECT sin(k * 0.37) AS x1, cos(k * 1.91) * 3 AS x2, sin(k * 0.013) AS x3, \
                (k % 17)::float8 AS x4, cos(k * 0.0071) + sin(k * 5.3) AS x5, \
                sin(k * 0.37) * (k % 17) + cos(k * 1.91) * 3 - sin(k * 0.013) * cos(k * 0.0071) + 0.1 * sin(k * 12.9898) AS y \
         FROM generate_series(1, 20000) AS k",
    );
    let params = r#"{"n_estimators": 20, "deterministic": true, "num_threads": 1, "seed": 0}"#;
    let streamed = r#"{"n_estimators": 20, "deterministic": true, "num_threads": 1, "seed": 0, "streaming": true}"#;
    ok(
        &proxy,
        &format!(
            "SELECT * FROM pgml.train('in_memory', 'regression', 'wide', 'y', algorithm => 'lightgbm', \
             hyperparams => '{params}', test_sampling => 'last')"
        ),
    );
    let (success, stdout, stderr) = proxy.psql_full(&format!(
        "SELECT * FROM pgml.train('streamed', 'regression', 'wide', 'y', algorithm => 'lightgbm', \
             hyperparams => '{streamed}', test_sampling => 'last')"
    ));
    assert!(success, "{stderr}\n{}", proxy.log());
    assert_eq!(stdout, "streamed|regression|lightgbm|t");
    assert!(
        stderr.contains("NOTICE") && stderr.contains("streaming") && stderr.contains("peak"),
        "the streamed training reports its peak memory: {stderr}"
    );

    let out = ok(
        &proxy,
        "SELECT pgml.predict('in_memory', ARRAY[x1, x2, x3, x4, x5]), \
                pgml.predict('streamed', ARRAY[x1, x2, x3, x4, x5]) FROM wide",
    );
    let mut distinct = BTreeSet::new();
    let mut n = 0;
    for line in out.lines() {
        let (a, b) = line.split_once('|').unwrap();
        assert_eq!(a, b, "in memory | streamed: {line}");
        distinct.insert(a.to_string());
        n += 1;
    }
    assert_eq!(n, 20000);
    assert!(
        distinct.len() > 100,
        "{} distinct predictions",
        distinct.len()
    );
    let metrics = |p: &str| {
        pg.psql(
            "app",
            &format!(
                "SELECT m.metrics->>'r2' FROM pgml.models m JOIN pgml.projects p ON p.id = m.project_id WHERE p.name = '{p}'"
            ),
        )
    };
    assert_eq!(metrics("in_memory"), metrics("streamed"), "same test r2");

    // Bins from a strict subset of the rows (LightGBM's own sample of 700,
    // which the servers filter), a random split: still the same model file.
    for (project, streaming) in [("sub_memory", false), ("sub_streamed", true)] {
        ok(
            &proxy,
            &format!(
                "SELECT * FROM pgml.train('{project}', 'regression', 'wide', 'y', algorithm => 'lightgbm', \
                 hyperparams => '{{\"n_estimators\": 10, \"bin_construct_sample_cnt\": 700, \"streaming\": {streaming}}}', \
                 test_sampling => 'random')"
            ),
        );
    }
    let model_md5 = |p: &str| {
        pg.psql(
            "app",
            &format!(
                "SELECT md5(f.data) FROM pgml.files f JOIN pgml.models m ON m.id = f.model_id \
                 JOIN pgml.projects p ON p.id = m.project_id WHERE p.name = '{p}' AND f.path = 'model'"
            ),
        )
    };
    assert_eq!(model_md5("sub_memory"), model_md5("sub_streamed"));
    assert_ne!(model_md5("sub_memory"), model_md5("in_memory"));
}

async fn ok_async(client: &tokio_postgres::Client, sql: &str) {
    if let Err(e) = client.simple_query(sql).await {
        panic!("{sql}: {e:?}");
    }
}

#[test]
fn bad_group_input_gets_clear_errors() {
    let (pg, proxy) = single();
    pg.psql("app", &store_table_sql("sales", "g <= 5"));
    ok(
        &proxy,
        "SELECT * FROM pgml.train('plain', 'regression', 'sales', 'y', algorithm => 'linear')",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        // group_by naming a column the relation lacks.
        let sql = "SELECT * FROM pgml.train('g', 'regression', 'sales', 'y', algorithm => 'linear', group_by => 'no_such_column')";
        let (code, message) = expect_error(&client, sql).await;
        assert_eq!(code, "42703", "{sql}: {message}");
        assert!(message.contains("no_such_column"), "{message}");
        let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);

        // group => on a project trained without groups ('plain' has
        // store_id among its 4 features).
        let sql = "SELECT pgml.predict('plain', ARRAY[store_id, x1, x2, x3], group => store_id) FROM sales";
        let (code, message) = expect_error(&client, sql).await;
        assert_eq!(code, "22023", "{sql}: {message}");
        assert!(message.contains("group_by"), "{sql}: {message}");
        let two: i32 = client.query_one("SELECT 2", &[]).await.unwrap().get(0);
        assert_eq!(two, 2);
        // Without group => the project predicts as before.
        let rows = client
            .simple_query("SELECT pgml.predict('plain', ARRAY[store_id, x1, x2, x3]) FROM sales")
            .await
            .unwrap();
        let n = simple_rows(&rows).len();
        assert!(n > 300, "{n} rows");
        // And a project with a model per group needs group =>.
        ok_async(&client, "SELECT * FROM pgml.train('per_store', 'regression', 'sales', 'y', algorithm => 'linear', group_by => 'store_id')").await;
        let sql = "SELECT pgml.predict('per_store', ARRAY[x1, x2, x3]) FROM sales";
        let (code, message) = expect_error(&client, sql).await;
        assert_eq!(code, "22023", "{sql}: {message}");
        assert!(
            message.contains("per_store") && message.contains("group =>"),
            "{sql}: {message}"
        );
        let three: i32 = client.query_one("SELECT 3", &[]).await.unwrap().get(0);
        assert_eq!(three, 3);
        // Pushdown and streaming refuse what they cannot do, each naming
        // it, and a NULL names its column.
        let refused = [
            ("'{\"pushdown\": true}', algorithm => 'lightgbm'", "0A000", "linear and ridge"),
            ("'{\"pushdown\": true}', algorithm => 'linear', preprocess => '{\"x1\": {\"scale\": \"standard\"}}'", "0A000", "preprocess"),
            ("'{\"streaming\": true}', algorithm => 'linear'", "0A000", "lightgbm"),
            ("'{\"streaming\": true}', algorithm => 'lightgbm', group_by => 'store_id'", "0A000", "group_by"),
            ("'{\"pushdown\": 3}', algorithm => 'linear'", "22023", "pushdown"),
        ];
        for (args, code, word) in refused {
            let sql = format!("SELECT * FROM pgml.train('g', 'regression', 'sales', 'y', hyperparams => {args})");
            let (got, message) = expect_error(&client, &sql).await;
            assert_eq!(got, code, "{sql}: {message}");
            assert!(message.contains(word), "{sql}: {message}");
        }
        ok_async(&client, "CREATE TABLE with_null AS SELECT x1, x2, y FROM sales; UPDATE with_null SET x2 = NULL WHERE x1 > 0.5").await;
        let sql = "SELECT * FROM pgml.train('g', 'regression', 'with_null', 'y', hyperparams => '{\"pushdown\": true}')";
        let (code, message) = expect_error(&client, sql).await;
        assert_eq!(code, "22000", "{sql}: {message}");
        assert!(message.contains("\"x2\"") && !message.contains("\"x1\""), "{message}");
        let four: i32 = client.query_one("SELECT 4", &[]).await.unwrap().get(0);
        assert_eq!(four, 4);
        // No training of 'g' was recorded.
        let n: i64 = client
            .query_one("SELECT count(*) FROM pgml.projects WHERE name = 'g'", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0);
    });
}
