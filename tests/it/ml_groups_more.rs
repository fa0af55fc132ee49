//! Issue #18, continued (tests/it/ml_groups.rs has the first part and the
//! helpers used here): groups split over shards, a pool sharded by the
//! group column, ROW features on a sharded pool, deploying group sets,
//! per-group classification, real drivers' parameters, and a training
//! inside a rolled-back transaction block. Every figure is checked against
//! numpy on the rows read straight from Postgres, or against the model
//! files stored in the catalog.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::*;
use crate::ml_groups::*;
use pgmlcat::router::hash::Key;
use serde_json::Value;

/// Turns on log_statement on `pg`, so the statements pgmlcat sends to it
/// are in its server log.
fn log_statements(pg: &PgCluster) {
    pg.psql("app", "ALTER SYSTEM SET log_statement = 'all'");
    pg.psql("app", "SELECT pg_reload_conf()");
}

/// Whether pgmlcat asked `pg` which groups it holds (the SELECT DISTINCT
/// that finds the groups split over several shards).
fn asked_for_groups(pg: &PgCluster) -> bool {
    pg.log()
        .lines()
        .any(|l| l.contains("SELECT DISTINCT") && l.contains("store_id"))
}

/// The ROW forms of a group prediction, checked against `models` on every
/// row of `sales` through `proxy`; each must give all `total` rows.
fn check_row_forms(proxy: &Proxy, models: &BTreeMap<String, Linear>, total: usize) {
    for prediction in [
        "pgml.predict('stores', ROW(x1, x2, x3), group => store_id)",
        "pgml.predict('stores', (x1, x2, x3), \"group\" => store_id)",
    ] {
        let n = check_predictions(proxy, prediction, "sales", models);
        assert_eq!(n, total, "{prediction}: the rows of both shards");
    }
}

#[test]
fn groups_spread_over_shards_are_gathered() {
    let shards = [PgCluster::start(), PgCluster::start()];
    for (i, pg) in shards.iter().enumerate() {
        log_statements(pg);
        // Every store has rows on both shards: its odd rows on shard 1.
        pg.psql("app", &store_table_sql("sales", &format!("k % 2 = {i}")));
    }
    let port = free_port();
    let proxy = Proxy::start(port, &sharded_pool_config(port, &shards));
    let models = train_stores(&proxy, &shards[0]);

    // A store's rows: shard 0's (in its scan order), then shard 1's.
    let mut groups: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for pg in &shards {
        let here = by_group(&scan(pg, "store_id", &FEATURES, "y", "sales"));
        assert_eq!(here.len(), 50, "every store on every shard");
        for (g, rows) in here {
            groups.entry(g).or_default().extend(rows);
        }
    }
    for (g, rows) in &groups {
        assert_eq!(rows.len(), rows_of_store(g.parse().unwrap()), "store {g}");
    }
    let reference = numpy_lstsq(&train_rows_last(&groups));
    assert_groups_close(
        &models,
        &reference,
        1e-8,
        "per-store OLS, stores split over two shards",
    );
    // The order of the shards' parts is visible: shard 1's rows first
    // would put other rows in the test sets, and give other models.
    let mut swapped: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for pg in shards.iter().rev() {
        for (g, rows) in by_group(&scan(pg, "store_id", &FEATURES, "y", "sales")) {
            swapped.entry(g).or_default().extend(rows);
        }
    }
    let swapped = numpy_lstsq(&train_rows_last(&swapped));
    let differ = models
        .iter()
        .filter(|(g, m)| {
            (m.predict(&[1.0, 1.0, 1.0]) - swapped[*g].predict(&[1.0, 1.0, 1.0])).abs() > 1e-4
        })
        .count();
    assert!(differ > 40, "{differ} of 50 stores tell the orders apart");
    // Without an automatic_sharding_key the shards were asked.
    for (i, pg) in shards.iter().enumerate() {
        assert!(asked_for_groups(pg), "shard {i} was not asked its groups");
    }

    // ROW features on the sharded pool (see also ml_groups.rs's ARRAY form).
    let total: usize = groups.values().map(Vec::len).sum();
    check_row_forms(&proxy, &models, total);
}

#[test]
fn automatic_sharding_key_on_the_group_column() {
    let shards = [PgCluster::start(), PgCluster::start()];
    for pg in &shards {
        log_statements(pg);
        pg.psql(
            "app",
            "CREATE TABLE sales (store_id int, x1 float8, x2 float8, x3 float8, y float8)",
        );
    }
    // The rows, made on shard 0 aside, as text (float8's shortest exact form).
    shards[0].psql("app", &store_table_sql("source_rows", "true"));
    let source = shards[0].psql("app", "SELECT store_id, x1, x2, x3, y FROM source_rows");
    shards[0].psql("app", "DROP TABLE source_rows");
    let source: Vec<&str> = source.lines().collect();
    assert_eq!(source.len(), (1..=50).map(rows_of_store).sum::<usize>());

    let port = free_port();
    let config = sharded_pool_config(port, &shards).replace(
        "default_shard = \"all\"\n",
        "default_shard = \"all\"\nautomatic_sharding_key = \"sales.store_id\"\nsharding_key_type = \"bigint\"\n",
    );
    let proxy = Proxy::start(port, &config);
    // pgmlcat places the rows: multi-row INSERTs, split by store_id.
    for chunk in source.chunks(500) {
        let values: Vec<String> = chunk
            .iter()
            .map(|line| {
                let cols: Vec<&str> = line.split('|').collect();
                format!(
                    "({}, '{}', '{}', '{}', '{}')",
                    cols[0], cols[1], cols[2], cols[3], cols[4]
                )
            })
            .collect();
        ok(
            &proxy,
            &format!(
                "INSERT INTO sales (store_id, x1, x2, x3, y) VALUES {}",
                values.join(", ")
            ),
        );
    }
    let mut groups = BTreeMap::new();
    for (i, pg) in shards.iter().enumerate() {
        let here = by_group(&scan(pg, "store_id", &FEATURES, "y", "sales"));
        assert!(
            here.len() > 10,
            "shard {i} holds {} stores: {:?}",
            here.len(),
            here.keys()
        );
        for (g, rows) in here {
            assert_eq!(
                Key::Bigint(g.parse().unwrap()).shard(2),
                i,
                "store {g} on shard {i}"
            );
            assert!(groups.insert(g, rows).is_none(), "a store on both shards");
        }
    }
    assert_eq!(groups.values().map(Vec::len).sum::<usize>(), source.len());

    let models = train_stores(&proxy, &shards[0]);
    let reference = numpy_lstsq(&train_rows_last(&groups));
    assert_groups_close(
        &models,
        &reference,
        1e-8,
        "per-store OLS, sharded by store_id",
    );
    // The sharding key tells each store is on one shard: nothing asked.
    for (i, pg) in shards.iter().enumerate() {
        assert!(
            !asked_for_groups(pg),
            "shard {i} was asked its groups though the pool is sharded by store_id"
        );
    }
    check_row_forms(&proxy, &models, source.len());
}

// ---------------------------------------------------------------------------
// Deploying group sets
// ---------------------------------------------------------------------------

const BY_PROJECT: &str = "pgml.predict('stores', ROW(x1, x2, x3), group => store_id)";

/// `store_id|x1|x2|x3|prediction` for every row of `sales`, in one order.
fn prediction_lines(proxy: &Proxy, prediction: &str) -> Vec<String> {
    ok(
        proxy,
        &format!(
            "SELECT store_id, x1, x2, x3, {prediction} FROM sales ORDER BY store_id, x1, x2, x3"
        ),
    )
    .lines()
    .map(str::to_string)
    .collect()
}

#[test]
fn group_sets_deploy_and_roll_back_as_one() {
    let (pg, proxy) = single();
    pg.psql("app", &store_table_sql("sales", "true"));
    let linear = train_stores(&proxy, &pg);
    let (linear_set, linear_metrics) = set_row(&pg, "stores");
    let out = ok(
        &proxy,
        r#"SELECT * FROM pgml.train('stores', 'regression', 'sales', 'y', algorithm => 'lightgbm',
           hyperparams => '{"n_estimators": 20, "deterministic": true, "num_threads": 1, "seed": 0}',
           group_by => 'store_id', test_sampling => 'last')"#,
    );
    let lgbm_set: i64 = pg
        .psql(
            "app",
            "SELECT id FROM pgml.models WHERE group_of IS NULL AND algorithm = 'lightgbm'",
        )
        .parse()
        .unwrap();
    let lgbm_r2: f64 = pg
        .psql(
            "app",
            &format!("SELECT metrics->>'r2' FROM pgml.models WHERE id = {lgbm_set}"),
        )
        .parse()
        .unwrap();
    let linear_r2 = linear_metrics["r2"].as_f64().unwrap();
    assert!(
        linear_r2 > lgbm_r2,
        "the linear set scores best: {linear_r2} vs {lgbm_r2}"
    );
    // Automatic deployment keeps the better set.
    assert_eq!(out, "stores|regression|lightgbm|f|50");
    assert_eq!(deployed_id(&pg, "stores"), linear_set);
    let members = pg.psql(
        "app",
        &format!("SELECT count(*) FROM pgml.models WHERE group_of = {lgbm_set}"),
    );
    assert_eq!(members, "50");

    let total = check_predictions(&proxy, BY_PROJECT, "sales", &linear);
    // The LightGBM set's predictions, by its id, while it is not deployed.
    let by_lgbm_id = format!("pgml.predict({lgbm_set}, ROW(x1, x2, x3), group => store_id)");
    let lgbm = prediction_lines(&proxy, &by_lgbm_id);
    assert_eq!(lgbm.len(), total);
    let differ = lgbm
        .iter()
        .filter(|line| {
            let cols: Vec<&str> = line.split('|').collect();
            let x: Vec<f64> = cols[1..4].iter().map(|v| v.parse().unwrap()).collect();
            let got: f32 = cols[4].parse().unwrap_or_else(|e| panic!("{line}: {e}"));
            !f32_close(got, linear[cols[0]].predict(&x))
        })
        .count();
    assert!(
        differ > total * 9 / 10,
        "the two sets predict differently: {differ} of {total}"
    );
    let deployed_is_lgbm = || {
        assert_eq!(deployed_id(&pg, "stores"), lgbm_set);
        assert_eq!(prediction_lines(&proxy, BY_PROJECT), lgbm, "{BY_PROJECT}");
    };
    let deployed_is_linear = || {
        assert_eq!(deployed_id(&pg, "stores"), linear_set);
        check_predictions(&proxy, BY_PROJECT, "sales", &linear);
    };
    let deploy = |args: &str| ok(&proxy, &format!("SELECT * FROM pgml.deploy({args})"));

    assert_eq!(deploy(&lgbm_set.to_string()), "stores|specific|lightgbm");
    deployed_is_lgbm();
    assert_eq!(
        ok(
            &proxy,
            "SELECT id, name, algorithm FROM pgml.deployed_models"
        ),
        format!("{lgbm_set}|stores|lightgbm")
    );

    // A group's own model does not deploy, and the deployment stays.
    let member: i64 = pg
        .psql(
            "app",
            &format!("SELECT min(id) FROM pgml.models WHERE group_of = {linear_set}"),
        )
        .parse()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        let sql = format!("SELECT * FROM pgml.deploy({member})");
        let err = client.simple_query(&sql).await.expect_err(&sql);
        let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
        assert_eq!(db.code().code(), "22023", "{sql}: {}", db.message());
        assert!(
            db.message().contains(&linear_set.to_string()),
            "{sql}: the error names the set: {}",
            db.message()
        );
        let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);
    });
    deployed_is_lgbm();

    assert_eq!(deploy("'stores', 'rollback'"), "stores|rollback|linear");
    deployed_is_linear();
    assert_eq!(
        deploy("'stores', 'most_recent'"),
        "stores|most_recent|lightgbm"
    );
    deployed_is_lgbm();
    assert_eq!(deploy("'stores', 'best_score'"), "stores|best_score|linear");
    deployed_is_linear();
    assert_eq!(
        ok(
            &proxy,
            "SELECT id FROM pgml.deployed_models WHERE name = 'stores'"
        ),
        linear_set.to_string()
    );
    // By id, whichever set is deployed.
    assert_eq!(prediction_lines(&proxy, &by_lgbm_id), lgbm);
    let by_linear_id = format!("pgml.predict({linear_set}, ROW(x1, x2, x3), group => store_id)");
    assert_eq!(
        check_predictions(&proxy, &by_linear_id, "sales", &linear),
        total
    );
    assert_eq!(deploy("'stores', 'rollback'"), "stores|rollback|lightgbm");
    deployed_is_lgbm();
}

// ---------------------------------------------------------------------------
// Classification per group
// ---------------------------------------------------------------------------

/// `{0.1,0.9}` → its values.
fn real_array(text: &str) -> Vec<f32> {
    text.strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or_else(|| panic!("not an array: {text}"))
        .split(',')
        .map(|v| v.parse().unwrap_or_else(|e| panic!("{text}: {e}")))
        .collect()
}

#[test]
fn predict_proba_per_group() {
    let (pg, proxy) = single();
    // Five stores, each with its own class boundaries; store 5 has only
    // classes 1 and 2.
    pg.psql(
        "app",
        "CREATE TABLE visits (store_id int, x1 float8, x2 float8, kind int); \
         INSERT INTO visits \
         SELECT g, x1, x2, \
                CASE WHEN g = 5 THEN CASE WHEN x1 + 0.3 * x2 > 0 THEN 2 ELSE 1 END \
                     WHEN x1 + (g - 2) * 0.4 * x2 < -0.6 THEN 0 \
                     WHEN x1 + (g - 2) * 0.4 * x2 < 0.6 THEN 1 ELSE 2 END \
         FROM (SELECT g, k, 2 * sin(g * 1.7 + k * 0.61) AS x1, 1.5 * cos(g * 0.3 + k * 1.29) AS x2 \
               FROM generate_series(1, 5) AS g, generate_series(1, 160) AS k) s \
         ORDER BY (g * 131 + k * 977) % 1009, g, k",
    );
    let out = ok(
        &proxy,
        r#"SELECT * FROM pgml.train('kinds', 'classification', 'visits', 'kind', algorithm => 'lightgbm',
           hyperparams => '{"n_estimators": 10, "deterministic": true, "num_threads": 1, "seed": 0}',
           group_by => 'store_id')"#,
    );
    assert_eq!(out, "kinds|classification|lightgbm|t|5");
    // Each store's classes, sorted: class code i is classes[i].
    let classes: BTreeMap<String, Vec<String>> = pg
        .psql(
            "app",
            "SELECT store_id, string_agg(DISTINCT kind::text, ',' ORDER BY kind::text) FROM visits GROUP BY 1",
        )
        .lines()
        .map(|l| {
            let (g, c) = l.split_once('|').unwrap();
            (g.to_string(), c.split(',').map(str::to_string).collect())
        })
        .collect();
    assert_eq!(classes["5"], ["1", "2"]);
    assert_eq!(classes["1"], ["0", "1", "2"]);
    // A store that came after the training.
    pg.psql("app", "INSERT INTO visits VALUES (999, 0.5, 0.5, 1)");

    let mut outputs = Vec::new();
    for features in ["ROW(x1, x2)", "ARRAY[x1, x2]"] {
        let sql = format!(
            "SELECT store_id, kind, pgml.predict('kinds', {features}, group => store_id), \
             pgml.predict_proba('kinds', {features}, group => store_id) FROM visits ORDER BY store_id, x1, x2"
        );
        outputs.push(ok(&proxy, &sql));
    }
    assert_eq!(outputs[0], outputs[1], "ROW and ARRAY features");
    let (mut rows, mut decided, mut right) = (0, 0, 0);
    let mut predicted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in outputs[0].lines() {
        let cols: Vec<&str> = line.split('|').collect();
        assert_eq!(cols.len(), 4, "{line}");
        rows += 1;
        let Some(classes) = classes.get(cols[0]) else {
            assert_eq!(
                (cols[2], cols[3]),
                ("", ""),
                "a store without a model: {line}"
            );
            continue;
        };
        let proba = real_array(cols[3]);
        assert_eq!(
            proba.len(),
            classes.len(),
            "one per class of the store: {line}"
        );
        assert!(proba.iter().all(|p| (0.0..=1.0).contains(p)), "{line}");
        let sum: f32 = proba.iter().sum();
        assert!(
            (sum - 1.0).abs() < 1e-5,
            "probabilities sum to {sum}: {line}"
        );
        let class: f64 = cols[2].parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        predicted
            .entry(cols[0].to_string())
            .or_default()
            .insert(cols[2].to_string());
        if class == cols[1].parse::<f64>().unwrap() {
            right += 1;
        }
        let mut order: Vec<usize> = (0..proba.len()).collect();
        order.sort_by(|a, b| proba[*b].total_cmp(&proba[*a]));
        if proba[order[0]] - proba[order[1]] < 1e-6 {
            continue; // a tie: either class is the argmax
        }
        decided += 1;
        assert_eq!(
            classes[order[0]].parse::<f64>().unwrap(),
            class,
            "pgml.predict's class is the most probable: {line}"
        );
    }
    assert_eq!(rows, 5 * 160 + 1);
    assert!(decided > rows * 9 / 10, "{decided} of {rows} without a tie");
    assert!(right > rows * 6 / 10, "{right} of {rows} right");
    assert_eq!(
        predicted["1"].len(),
        3,
        "store 1 predicts every class: {predicted:?}"
    );
}

// ---------------------------------------------------------------------------
// Real drivers
// ---------------------------------------------------------------------------

/// "store|x1|x2|x3" with the floats as Rust prints them.
fn row_key(store: &str, x: &[f64]) -> String {
    format!("{store}|{}|{}|{}", x[0], x[1], x[2])
}

#[test]
fn drivers_send_group_predictions_with_parameters() {
    let (pg, proxy) = single();
    pg.psql("app", &store_table_sql("sales", "g <= 10"));
    let out = ok(
        &proxy,
        "SELECT * FROM pgml.train('stores', 'regression', 'sales', 'y', algorithm => 'linear', \
         group_by => 'store_id', test_sampling => 'last')",
    );
    assert_eq!(out, "stores|regression|linear|t|10");
    let (set_id, _) = set_row(&pg, "stores");
    let models = group_models(&pg, set_id, "store_id");
    assert_eq!(models.len(), 10);
    pg.psql(
        "app",
        "INSERT INTO sales VALUES (999, 0.5, 0.25, -1, 7), (999, 1, 2, 3, 4)",
    );
    let total: usize = pg
        .psql("app", "SELECT count(*) FROM sales")
        .parse()
        .unwrap();

    // psql (simple protocol, text): checked against the stored coefficients.
    let n = check_predictions(&proxy, BY_PROJECT, "sales", &models);
    assert_eq!(n, total);
    let mut by_psql: BTreeMap<String, String> = BTreeMap::new();
    for line in ok(
        &proxy,
        &format!("SELECT store_id, x1, x2, x3, {BY_PROJECT} FROM sales"),
    )
    .lines()
    {
        let cols: Vec<&str> = line.split('|').collect();
        let x: Vec<f64> = cols[1..4].iter().map(|v| v.parse().unwrap()).collect();
        by_psql.insert(row_key(cols[0], &x), cols[4].to_string());
    }
    assert_eq!(by_psql.len(), total, "rows are distinct");

    let url = proxy.url("app", "app_pw", "app");
    let mut scenarios: Vec<(String, Vec<Value>)> = Vec::new();
    for (client, names) in [
        (
            "predict_groups.py",
            &["binary", "prepared", "prepared_binary"][..],
        ),
        ("predict_groups_asyncpg.py", &["prepared", "cached"][..]),
    ] {
        let out: Value = serde_json::from_str(&python_client(client, &url))
            .unwrap_or_else(|e| panic!("{client}: {e}"));
        for name in names {
            let rows = out[*name]
                .as_array()
                .unwrap_or_else(|| panic!("{client}: no {name} in {out}"))
                .clone();
            scenarios.push((format!("{client} {name}"), rows));
        }
    }

    // tokio-postgres: the same statement, prepared, binary parameters.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(connect(&url));
    let sql =
        "SELECT pgml.predict('stores', ROW($1::float8, $2::float8, $3::float8), group => $4::int)";
    let statement = rt.block_on(client.prepare(sql)).expect(sql);
    for (scenario, rows) in &scenarios {
        assert!(
            rows.len() > total / 3 - 5,
            "{scenario}: {} rows of {total}",
            rows.len()
        );
        let mut without_model = 0;
        for row in rows {
            let store = row[0]
                .as_i64()
                .unwrap_or_else(|| panic!("{scenario}: {row}"));
            let x: Vec<f64> = (1..4).map(|i| row[i].as_f64().unwrap()).collect();
            let got = row[4].as_f64().map(|v| v as f32);
            let key = row_key(&store.to_string(), &x);
            let psql = &by_psql
                .get(&key)
                .unwrap_or_else(|| panic!("{scenario}: {key} is not a row"));
            let tokio: Option<f32> = rt
                .block_on(client.query_one(&statement, &[&x[0], &x[1], &x[2], &(store as i32)]))
                .unwrap_or_else(|e| panic!("{sql} {key}: {e}"))
                .get(0);
            match models.get(&store.to_string()) {
                Some(m) => {
                    let got = got.unwrap_or_else(|| panic!("{scenario}: NULL for {key}"));
                    let want = m.predict(&x);
                    assert!(
                        f32_close(got, want),
                        "{scenario}: {key} predicts {got}, the stored coefficients give {want}"
                    );
                    assert_eq!(Some(got), tokio, "{scenario} and tokio-postgres: {key}");
                    assert_eq!(
                        got,
                        psql.parse::<f32>().unwrap(),
                        "{scenario} and psql: {key}"
                    );
                }
                None => {
                    assert_eq!(got, None, "{scenario}: store {store} has no model");
                    assert_eq!(tokio, None, "tokio-postgres: {key}");
                    assert_eq!(psql.as_str(), "", "psql: {key}");
                    without_model += 1;
                }
            }
        }
        assert_eq!(without_model, 2, "{scenario}: the rows of store 999");
    }
}

// ---------------------------------------------------------------------------
// A training inside a transaction block
// ---------------------------------------------------------------------------

/// The lines of `out` after the line `marker`, up to the next `--` line.
fn section<'a>(out: &'a str, marker: &str) -> Vec<&'a str> {
    out.lines()
        .skip_while(|l| *l != marker)
        .skip(1)
        .take_while(|l| !l.starts_with("--"))
        .collect()
}

#[test]
fn training_in_a_rolled_back_block_leaves_no_models() {
    let (pg, proxy) = single();
    pg.psql("app", &store_table_sql("sales", "g <= 8"));
    // A model before the block: the catalog exists already.
    ok(
        &proxy,
        "SELECT * FROM pgml.train('before', 'regression', 'sales', 'y', algorithm => 'linear')",
    );
    let catalog = "SELECT (SELECT count(*) FROM pgml.models), (SELECT count(*) FROM pgml.files), \
                   (SELECT count(*) FROM pgml.projects), (SELECT count(*) FROM pgml.deployments)";
    let before = pg.psql("app", catalog);
    let total: usize = pg
        .psql("app", "SELECT count(*) FROM sales")
        .parse()
        .unwrap();

    let script = "BEGIN;\n\
        SELECT * FROM pgml.train('in_block', 'regression', 'sales', 'y', algorithm => 'linear', \
        group_by => 'store_id', test_sampling => 'last');\n\
        SELECT '--predictions';\n\
        SELECT store_id, x1, x2, x3, pgml.predict('in_block', ROW(x1, x2, x3), group => store_id) FROM sales;\n\
        SELECT '--models';\n\
        SELECT m.group_key->>'store_id', convert_from(f.data, 'UTF8')::jsonb \
        FROM pgml.models m JOIN pgml.files f ON f.model_id = m.id AND f.path = 'model' \
        JOIN pgml.models s ON s.id = m.group_of JOIN pgml.projects p ON p.id = s.project_id \
        WHERE p.name = 'in_block';\n\
        SELECT '--end';\n\
        ROLLBACK;\n";
    let out = proxy
        .psql_script(script)
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    assert_eq!(
        out.lines().next(),
        Some("in_block|regression|linear|t|8"),
        "{out}"
    );
    let mut models = BTreeMap::new();
    for line in section(&out, "--models") {
        let (key, file) = line.split_once('|').unwrap();
        models.insert(key.to_string(), Linear::from_model_file(file));
    }
    assert_eq!(models.len(), 8, "the models, seen inside the block");
    let groups = by_group(&scan(&pg, "store_id", &FEATURES, "y", "sales"));
    let reference = numpy_lstsq(&train_rows_last(&groups));
    assert_groups_close(&models, &reference, 1e-8, "per-store OLS in a block");
    let predictions = section(&out, "--predictions");
    assert_eq!(predictions.len(), total, "{out}");
    for line in predictions {
        let cols: Vec<&str> = line.split('|').collect();
        let x: Vec<f64> = cols[1..4].iter().map(|v| v.parse().unwrap()).collect();
        let got: f32 = cols[4].parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        let want = models[cols[0]].predict(&x);
        assert!(
            f32_close(got, want),
            "inside the block: {line}, want {want}"
        );
    }

    // Rolled back: nothing of it in the catalog, and nothing predicts.
    assert_eq!(
        pg.psql("app", catalog),
        before,
        "models, files, projects, deployments"
    );
    assert_eq!(
        pg.psql(
            "app",
            "SELECT count(*) FROM pgml.projects WHERE name = 'in_block'"
        ),
        "0"
    );
    for _ in 0..2 {
        let err = proxy
            .psql(&format!("SELECT {BY_PROJECT} FROM sales").replace("'stores'", "'in_block'"))
            .expect_err("a project rolled back does not predict");
        assert!(err.contains("in_block"), "{err}");
    }
    let n = ok(
        &proxy,
        "SELECT count(pgml.predict('before', ARRAY[store_id, x1, x2, x3])) FROM sales",
    );
    assert_eq!(n, total.to_string());
}
