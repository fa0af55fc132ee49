//! pgml.train through the proxy against real Postgres: the catalog, the
//! data pull, every algorithm, metrics against Python's reference figures,
//! search, deployment, sharded data and bad input.

use crate::common::*;
use serde_json::Value;

/// Row i of a scikit-learn dataset goes to position (i*37) % n, as
/// tests/reference/ml_reference.py does, so 'last' sampling splits alike.
fn mixed(proxy: &Proxy, dataset: &str, n: usize) {
    ok(
        proxy,
        &format!("SELECT * FROM pgml.load_dataset('{dataset}')"),
    );
    ok(
        proxy,
        &format!(
            "CREATE TABLE {dataset}_mixed AS SELECT * FROM (SELECT *, row_number() OVER () - 1 AS i FROM pgml.{dataset}) s ORDER BY (i * 37) % {n}; \
             ALTER TABLE {dataset}_mixed DROP COLUMN i"
        ),
    );
}

fn metrics(proxy: &Proxy, project: &str) -> Value {
    let text = ok(
        proxy,
        &format!(
            "SELECT m.metrics FROM pgml.models m JOIN pgml.projects p ON p.id = m.project_id \
             WHERE p.name = '{project}' ORDER BY m.id DESC LIMIT 1"
        ),
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn key(proxy: &Proxy, project: &str, key: &str) -> f64 {
    let m = metrics(proxy, project);
    m.get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{project}: no {key} in {m}"))
}

#[test]
fn metrics_agree_with_python_on_the_same_split() {
    let (_pg, proxy) = single();
    mixed(&proxy, "iris", 150);
    mixed(&proxy, "breast_cancer", 569);
    mixed(&proxy, "diabetes", 442);
    let params = r#"'{"seed": 0, "deterministic": true, "num_threads": 1}'"#;
    let out = ok(&proxy, &format!(
        "SELECT * FROM pgml.train('iris_lgbm', 'classification', 'iris_mixed', 'target', algorithm => 'lightgbm', test_sampling => 'last', hyperparams => {params})"
    ));
    assert_eq!(out, "iris_lgbm|classification|lightgbm|t");
    ok(&proxy, &format!(
        "SELECT pgml.train('bc_lgbm', 'classification', 'breast_cancer_mixed', 'malignant', 'lightgbm', {params}, test_sampling => 'last')"
    ));
    ok(&proxy, &format!(
        "SELECT * FROM pgml.train('diabetes_lgbm', 'regression', 'diabetes_mixed', 'target', algorithm => 'lightgbm', test_sampling => 'last', hyperparams => {params})"
    ));
    ok(&proxy,
        "SELECT * FROM pgml.train('diabetes_linear', 'regression', 'diabetes_mixed', 'target', test_sampling => 'last')");
    // Figures from tests/reference/ml_reference.py (lightgbm 4.7, scikit-learn 1.9).
    for (project, metric, python) in [
        ("iris_lgbm", "f1", 0.894949494949495),
        ("bc_lgbm", "f1", 0.9708538587848933),
        ("diabetes_lgbm", "r2", 0.5540680399389994),
        ("diabetes_linear", "r2", 0.6355832467678999),
    ] {
        let ours = key(&proxy, project, metric);
        assert!(
            (ours - python).abs() <= 0.02,
            "{project} {metric}: pgmlcat {ours}, python {python}"
        );
    }
    // Binary classification also reports probability-based metrics.
    let bc = metrics(&proxy, "bc_lgbm");
    for k in [
        "roc_auc",
        "log_loss",
        "precision",
        "recall",
        "accuracy",
        "mcc",
        "fit_time",
        "score_time",
    ] {
        assert!(
            bc.get(k).and_then(Value::as_f64).is_some(),
            "bc_lgbm lacks {k}: {bc}"
        );
    }
    let roc = bc["roc_auc"].as_f64().unwrap();
    assert!(roc > 0.95 && roc <= 1.0, "roc_auc {roc}");
    // The catalog views PostgresML users query.
    let deployed = ok(
        &proxy,
        "SELECT name || ':' || algorithm FROM pgml.deployed_models ORDER BY name",
    );
    assert_eq!(
        deployed,
        "bc_lgbm:lightgbm\ndiabetes_lgbm:lightgbm\ndiabetes_linear:linear\niris_lgbm:lightgbm"
    );
    let overview = ok(&proxy, "SELECT count(*) FROM pgml.overview");
    assert_eq!(overview, "4");
}

#[test]
fn every_algorithm_trains_on_a_task_it_fits() {
    let (_pg, proxy) = single();
    ok(&proxy, "SELECT pgml.load_dataset('iris'); SELECT pgml.load_dataset('diabetes'); SELECT pgml.load_dataset('breast_cancer')");
    ok(&proxy, "CREATE VIEW iris_features AS SELECT sepal_length, sepal_width, petal_length, petal_width FROM pgml.iris");
    // (task, algorithm, relation, label, key metric, lowest acceptable value)
    type Case<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, &'a str, f64);
    let cases: &[Case] = &[
        (
            "regression",
            "linear",
            "pgml.diabetes",
            Some("target"),
            "r2",
            0.3,
        ),
        (
            "regression",
            "ridge",
            "pgml.diabetes",
            Some("target"),
            "r2",
            -1.0,
        ),
        (
            "regression",
            "lasso",
            "pgml.diabetes",
            Some("target"),
            "r2",
            -1.0,
        ),
        (
            "regression",
            "elastic_net",
            "pgml.diabetes",
            Some("target"),
            "r2",
            -1.0,
        ),
        (
            "regression",
            "svm",
            "pgml.diabetes",
            Some("target"),
            "r2",
            -1.0,
        ),
        (
            "regression",
            "lightgbm",
            "pgml.diabetes",
            Some("target"),
            "r2",
            0.2,
        ),
        (
            "classification",
            "linear",
            "pgml.iris",
            Some("target"),
            "f1",
            0.8,
        ),
        (
            "classification",
            "svm",
            "pgml.iris",
            Some("target"),
            "f1",
            0.8,
        ),
        (
            "classification",
            "decision_tree",
            "pgml.iris",
            Some("target"),
            "f1",
            0.8,
        ),
        (
            "classification",
            "random_forest",
            "pgml.iris",
            Some("target"),
            "f1",
            0.8,
        ),
        (
            "classification",
            "naive_bayes",
            "pgml.iris",
            Some("target"),
            "f1",
            0.8,
        ),
        (
            "classification",
            "knn",
            "pgml.iris",
            Some("target"),
            "f1",
            0.8,
        ),
        (
            "classification",
            "lightgbm",
            "pgml.iris",
            Some("target"),
            "f1",
            0.8,
        ),
        (
            "classification",
            "linear",
            "pgml.breast_cancer",
            Some("malignant"),
            "f1",
            0.8,
        ),
        (
            "classification",
            "svm",
            "pgml.breast_cancer",
            Some("malignant"),
            "f1",
            0.5,
        ),
        (
            "clustering",
            "kmeans",
            "iris_features",
            None,
            "silhouette",
            0.3,
        ),
        (
            "clustering",
            "dbscan",
            "iris_features",
            None,
            "silhouette",
            -1.0,
        ),
        (
            "decomposition",
            "pca",
            "iris_features",
            None,
            "cumulative_explained_variance",
            0.5,
        ),
    ];
    for (i, (task, algorithm, relation, y, metric, at_least)) in cases.iter().enumerate() {
        let project = format!("p{i}_{algorithm}");
        let y = y.map(|y| format!("'{y}'")).unwrap_or_else(|| "NULL".into());
        let out = ok(&proxy, &format!(
            "SELECT * FROM pgml.train('{project}', '{task}', '{relation}', {y}, algorithm => '{algorithm}')"
        ));
        assert!(
            out.starts_with(&format!("{project}|{task}|{algorithm}|")),
            "{out}"
        );
        let value = key(&proxy, &project, metric);
        assert!(
            value >= *at_least,
            "{project}: {metric} = {value}, expected >= {at_least}"
        );
    }
}

#[test]
fn search_refits_and_every_deploy_strategy_works() {
    let (pg, proxy) = single();
    ok(&proxy, "SELECT pgml.load_dataset('iris')");
    let out = ok(
        &proxy,
        r#"SELECT * FROM pgml.train('iris', 'classification', 'pgml.iris', 'target', algorithm => 'lightgbm',
              search => 'grid', search_params => '{"num_leaves": [4, 8], "n_estimators": [10, 30]}', search_args => '{"cv": 3}')"#,
    );
    assert_eq!(out, "iris|classification|lightgbm|t");
    let m = metrics(&proxy, "iris");
    let results = &m["search_results"];
    assert_eq!(results["results"].as_array().map(Vec::len), Some(4), "{m}");
    assert_eq!(results["refit"], Value::Bool(true));
    let best = &results["best_params"];
    assert!(
        best.get("num_leaves").is_some() && best.get("n_estimators").is_some(),
        "{best}"
    );
    let hyper = ok(
        &proxy,
        "SELECT hyperparams FROM pgml.models ORDER BY id DESC LIMIT 1",
    );
    let hyper: Value = serde_json::from_str(&hyper).unwrap();
    assert_eq!(&hyper, best, "the winner is refit and recorded");

    // A second, weaker model: automatic deploy keeps the better one.
    ok(
        &proxy,
        r#"SELECT * FROM pgml.train('iris', algorithm => 'lightgbm', hyperparams => '{"n_estimators": 1, "num_leaves": 2, "min_data_in_leaf": 50}')"#,
    );
    let deployed = |proxy: &Proxy| {
        ok(
            proxy,
            "SELECT id FROM pgml.deployed_models WHERE name = 'iris'",
        )
    };
    let ids: Vec<String> = ok(&proxy, "SELECT id FROM pgml.models ORDER BY id")
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(ids.len(), 2);
    let weak_f1 = key(&proxy, "iris", "f1");
    let first_f1: f64 = ok(
        &proxy,
        &format!(
            "SELECT metrics->>'f1' FROM pgml.models WHERE id = {}",
            ids[0]
        ),
    )
    .parse()
    .unwrap();
    if first_f1 > weak_f1 {
        assert_eq!(deployed(&proxy), ids[0], "the better deployed model stays");
    }
    assert_eq!(
        ok(&proxy, "SELECT * FROM pgml.deploy('iris', 'most_recent')"),
        "iris|most_recent|lightgbm"
    );
    assert_eq!(deployed(&proxy), ids[1]);
    ok(&proxy, "SELECT * FROM pgml.deploy('iris', 'best_score')");
    let best_id = ok(
        &proxy,
        "SELECT id FROM pgml.models ORDER BY (metrics->>'f1')::float8 DESC, id DESC LIMIT 1",
    );
    assert_eq!(deployed(&proxy), best_id);
    ok(&proxy, &format!("SELECT * FROM pgml.deploy({})", ids[1]));
    assert_eq!(deployed(&proxy), ids[1]);
    ok(&proxy, "SELECT * FROM pgml.deploy('iris', 'rollback')");
    assert_eq!(
        deployed(&proxy),
        best_id,
        "rollback returns to the previous deployment"
    );
    let err = proxy
        .psql("SELECT * FROM pgml.deploy('iris', 'best_score', 'svm')")
        .unwrap_err();
    assert!(err.contains("no svm model"), "{err}");
    let err = proxy
        .psql("SELECT * FROM pgml.deploy('iris', 'sideways')")
        .unwrap_err();
    assert!(err.contains("best_score, most_recent, rollback"), "{err}");

    // The models live in the database: a new proxy process sees them.
    drop(proxy);
    let port = free_port();
    let proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 4));
    assert_eq!(deployed(&proxy), best_id);
    let files = ok(
        &proxy,
        &format!("SELECT count(*) FROM pgml.files WHERE model_id = {best_id}"),
    );
    assert_eq!(files, "3", "model, meta.json and preprocessor.json");
}

#[test]
fn bad_input_gets_clear_errors_and_the_connection_stays_usable() {
    let (pg, proxy) = single();
    ok(&proxy, "SELECT pgml.load_dataset('iris')");
    ok(&proxy, "CREATE TABLE dated (d date, y int); INSERT INTO dated VALUES ('2020-01-01', 1), ('2020-01-02', 0)");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        let cases: &[(&str, &str, &str)] = &[
            ("SELECT * FROM pgml.train('p', 'classification', 'no_such_table', 'target')", "42P01", "no_such_table"),
            ("SELECT * FROM pgml.train('p', 'classification', 'pgml.iris', 'no_such_column')", "42703", "no_such_column"),
            ("SELECT * FROM pgml.train('p', 'classification', 'pgml.iris', 'target', algorithm => 'xgboostish')", "22023", "lightgbm"),
            ("SELECT * FROM pgml.train('p', 'classification', 'pgml.iris', 'target', algorithm => 'lightgbm', hyperparams => '{\"no_such_knob\": 1}')", "22023", "no_such_knob"),
            ("SELECT * FROM pgml.train('p', 'classification', 'dated', 'y')", "42804", "date"),
            ("SELECT * FROM pgml.train('p', 'wrongtask', 'pgml.iris', 'target')", "22023", "regression"),
            ("SELECT * FROM pgml.train('p', 'classification', 'pgml.iris; DROP TABLE pgml.iris', 'target')", "", ""),
            ("SELECT * FROM pgml.train('p', 'classification', 'pgml.iris', 'target\"; DROP TABLE pgml.iris; --')", "42703", ""),
            ("SELECT * FROM pgml.train('p''); DROP TABLE pgml.iris; --', 'classification', 'pgml.iris\"', 'target')", "", ""),
            ("SELECT * FROM pgml.train('never')", "22023", "task"),
        ];
        for (sql, state, needle) in cases {
            let err = client.simple_query(sql).await.expect_err(sql);
            let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
            if !state.is_empty() {
                assert_eq!(db.code().code(), *state, "{sql}: {}", db.message());
            }
            assert!(db.message().contains(needle), "{sql}: {}", db.message());
            // The same connection keeps working.
            let rows = client.simple_query("SELECT 1").await.expect("after an error");
            let n = rows.iter().filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_))).count();
            assert_eq!(n, 1);
        }
        // Nothing was dropped and no catalog rows were left half-written.
        assert_eq!(client.query_one("SELECT count(*) FROM pgml.iris", &[]).await.unwrap().get::<_, i64>(0), 150);
        assert_eq!(client.query_one("SELECT count(*) FROM pgml.projects", &[]).await.unwrap().get::<_, i64>(0), 0);
        assert_eq!(client.query_one("SELECT count(*) FROM pgml.snapshots", &[]).await.unwrap().get::<_, i64>(0), 0);
        // The extended protocol: parameters are text.
        let rows = client
            .query("SELECT * FROM pgml.train($1, $2, $3, $4)", &[&"ext", &"classification", &"pgml.iris", &"target"])
            .await
            .expect("extended pgml.train");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].get::<_, &str>(0), "ext");
        assert!(rows[0].get::<_, bool>(3));
        let err = client
            .query("SELECT * FROM pgml.train($1, 'regression', 'pgml.nope', 'target')", &[&"ext2"])
            .await
            .expect_err("missing relation");
        assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("42P01"));
        assert_eq!(client.query_one("SELECT 2::int", &[]).await.unwrap().get::<_, i32>(0), 2);
    });
    // Tiny data: 2 rows, one class in the test split. A clear error or a model, never a crash.
    ok(&proxy, "CREATE TABLE tiny (x real, y int); INSERT INTO tiny VALUES (1, 0), (2, 1), (3, 0), (4, 1), (5, 1)");
    match proxy.psql(
        "SELECT * FROM pgml.train('tiny', 'classification', 'tiny', 'y', algorithm => 'lightgbm')",
    ) {
        Ok(out) => assert!(out.starts_with("tiny|classification|lightgbm"), "{out}"),
        Err(e) => assert!(e.contains("ERROR"), "{e}"),
    }
    assert_eq!(ok(&proxy, "SELECT 3"), "3");
    // A user without CREATE on the database gets 42501.
    pg.psql("app", "CREATE ROLE weak LOGIN PASSWORD 'weak_pw'; REVOKE CREATE ON DATABASE app FROM PUBLIC; GRANT SELECT ON pgml.iris TO weak");
    let port = free_port();
    let config = simple_config(port, &pg, "transaction", 2).replace(
        "username = \"app\"\npassword = \"app_pw\"",
        "username = \"weak\"\npassword = \"weak_pw\"",
    );
    let weak = Proxy::start(port, &config);
    ok(&proxy, "DROP SCHEMA pgml CASCADE");
    let out = run_env(
        "psql",
        &[
            "-X",
            "-w",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "weak",
            "-d",
            "app",
            "-qAt",
            "-c",
            "SELECT * FROM pgml.train('w', 'regression', 'x', 'y')",
        ],
        &[("PGPASSWORD", "weak_pw")],
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("CREATE"), "{err}\n{}", weak.log());
}

#[test]
fn training_reads_every_shard_and_progress_shows_in_psql() {
    let shards = [PgCluster::start(), PgCluster::start()];
    for (i, pg) in shards.iter().enumerate() {
        pg.psql("app", &format!(
            "CREATE TABLE points AS SELECT g::real AS x, (2 * g + 1)::real AS y FROM generate_series({}, {}) g",
            i * 100, i * 100 + 99 - i * 50
        ));
    }
    let port = free_port();
    let config = sharded_pool_config(port, &shards);
    let proxy = Proxy::start(port, &config);
    let out = run_env(
        "psql",
        &[
            "-X",
            "-w",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "app",
            "-d",
            "app",
            "-At",
            "-c",
            "SELECT * FROM pgml.train('line', 'regression', 'points', 'y')",
        ],
        &[("PGPASSWORD", "app_pw")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{}", proxy.log());
    assert!(
        stderr.contains("NOTICE:") && stderr.contains("read 150 rows"),
        "progress: {stderr}"
    );
    // The catalog lives on shard 0 only.
    assert_eq!(
        shards[0].psql("app", "SELECT analysis->>'samples' FROM pgml.snapshots"),
        "150"
    );
    assert!(shards[1]
        .try_psql("app", "SELECT 1 FROM pgml.projects")
        .is_err());
    let r2: f64 = shards[0]
        .psql("app", "SELECT metrics->>'r2' FROM pgml.models")
        .parse()
        .unwrap();
    assert!(r2 > 0.999, "a straight line: r2 {r2}");
}

#[test]
fn preprocessing_text_and_nulls_and_other_clients_keep_flowing() {
    let (_pg, proxy) = single();
    ok(
        &proxy,
        "CREATE TABLE shop AS SELECT g AS id, (ARRAY['red','green','blue'])[1 + g % 3] AS colour, \
                CASE WHEN g % 10 = 0 THEN NULL ELSE (g % 7)::real END AS visits, \
                ARRAY[(g % 5)::real, (g % 3)::real] AS vec, \
                (g % 3 = 0 OR g % 7 > 4) AS bought FROM generate_series(1, 3000) g",
    );
    let err = proxy
        .psql("SELECT * FROM pgml.train('shop', 'classification', 'shop', 'bought')")
        .unwrap_err();
    assert!(err.contains("visits") && err.contains("impute"), "{err}");
    ok(
        &proxy,
        r#"SELECT * FROM pgml.train('shop', 'classification', 'shop', 'bought', algorithm => 'lightgbm',
        preprocess => '{"visits": {"impute": "mean", "scale": "standard"}, "colour": {"encode": "one_hot"}}')"#,
    );
    let columns = ok(
        &proxy,
        "SELECT columns FROM pgml.snapshots ORDER BY id DESC LIMIT 1",
    );
    assert!(
        columns.contains("visits") && columns.contains("mean") && columns.contains("one_hot"),
        "{columns}"
    );
    let f1 = key(&proxy, "shop", "f1");
    assert!(f1 > 0.9, "f1 {f1}");
    // materialize_snapshot copies the data; a NULL relation reuses the snapshot.
    ok(&proxy, "SELECT * FROM pgml.train('shop', relation_name => 'shop', y_column_name => 'bought', materialize_snapshot => true, algorithm => 'lightgbm', preprocess => '{\"visits\": {\"impute\": \"zero\"}}')");
    let sid = ok(
        &proxy,
        "SELECT id FROM pgml.snapshots WHERE materialized ORDER BY id DESC LIMIT 1",
    );
    assert_eq!(
        ok(&proxy, &format!("SELECT count(*) FROM pgml.snapshot_{sid}")),
        "3000"
    );
    ok(&proxy, "SELECT * FROM pgml.train('shop', algorithm => 'lightgbm', preprocess => '{\"visits\": {\"impute\": \"zero\"}}')");
    assert_eq!(ok(&proxy, "SELECT count(*) FROM pgml.models"), "3");

    // A long training does not hold up other clients.
    ok(&proxy, "CREATE TABLE big AS SELECT random()::real AS a, random()::real AS b, random()::real AS c, (g % 2) AS y FROM generate_series(1, 200000) g");
    let url = proxy.url("app", "app_pw", "app");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let trainer = connect(&url).await;
        let other = connect(&url).await;
        let training = tokio::spawn(async move {
            trainer
                .simple_query("SELECT * FROM pgml.train('big', 'classification', 'big', 'y', algorithm => 'lightgbm', hyperparams => '{\"n_estimators\": 300}')")
                .await
                .map(|_| ())
        });
        for _ in 0..20 {
            other.simple_query("SELECT 1").await.unwrap();
        }
        assert!(!training.is_finished(), "20 queries ran while the training was still going");
        training.await.unwrap().unwrap();
    });
}

#[test]
fn joint_snapshot_datasets_and_the_memory_cap() {
    let pg = PgCluster::start();
    let port = free_port();
    let config = simple_config(port, &pg, "transaction", 4);
    let proxy = Proxy::start(port, &config);
    for (name, rows) in [("wine", "178"), ("digits", "1797"), ("linnerud", "20")] {
        assert_eq!(
            ok(
                &proxy,
                &format!("SELECT * FROM pgml.load_dataset('{name}')")
            ),
            format!("pgml.{name}|{rows}")
        );
    }
    // Multi-output regression: three physiological measures from exercises.
    let out = ok(&proxy, "SELECT * FROM pgml.train_joint('fitness', 'regression', 'pgml.linnerud', ARRAY['weight', 'waist', 'pulse'], algorithm => 'linear')");
    assert_eq!(out, "fitness|regression|linear|t");
    let joint = ok(&proxy, "SELECT pgml.predict_joint('fitness', ARRAY[chins, situps, jumps]) FROM pgml.linnerud LIMIT 1");
    assert_eq!(
        joint
            .trim_matches(|c| c == '{' || c == '}')
            .split(',')
            .count(),
        3,
        "{joint}"
    );
    // Digits: 8x8 image arrays, one feature per pixel.
    ok(&proxy, "SELECT * FROM pgml.train('digits', 'classification', 'pgml.digits', 'target', algorithm => 'lightgbm', hyperparams => '{\"n_estimators\": 20}')");
    let f1: f64 = ok(&proxy, "SELECT metrics->>'f1' FROM pgml.models m JOIN pgml.projects p ON p.id = m.project_id WHERE p.name = 'digits'").parse().unwrap();
    assert!(f1 > 0.85, "digits f1 {f1}");
    assert_eq!(
        ok(
            &proxy,
            "SELECT num_features FROM pgml.models ORDER BY id DESC LIMIT 1"
        ),
        "64"
    );
    // pgml.snapshot materializes the data with column statistics.
    assert_eq!(
        ok(&proxy, "SELECT * FROM pgml.snapshot('pgml.wine', 'target')"),
        "pgml.wine|{target}"
    );
    let id = ok(
        &proxy,
        "SELECT id FROM pgml.snapshots WHERE relation_name = 'pgml.wine'",
    );
    assert_eq!(
        ok(&proxy, &format!("SELECT count(*) FROM pgml.snapshot_{id}")),
        "178"
    );
    let stats = ok(
        &proxy,
        &format!("SELECT columns FROM pgml.snapshots WHERE id = {id}"),
    );
    assert!(
        stats.contains("\"alcohol\"") && stats.contains("std_dev"),
        "{stats}"
    );
    // More data than [ml] max_memory_mb allows (set by a live reload): 53200,
    // and nothing written.
    proxy.write_config(&config.replace("[pools.app]", "[ml]\nmax_memory_mb = 1\n\n[pools.app]"));
    proxy.signal("HUP");
    std::thread::sleep(std::time::Duration::from_millis(300));
    ok(&proxy, "CREATE TABLE wide AS SELECT g::real AS a, g::real AS b, g::real AS c, g % 2 AS y FROM generate_series(1, 100000) g");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = connect(&proxy.url("app", "app_pw", "app")).await;
        let err = c
            .simple_query("SELECT * FROM pgml.train('wide', 'classification', 'wide', 'y')")
            .await
            .expect_err("over the memory cap");
        assert_eq!(
            err.as_db_error().map(|e| e.code().code()),
            Some("53200"),
            "{err}"
        );
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM pgml.projects WHERE name = 'wide'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0);
    });
}

/// Integers, floats, numeric, booleans and arrays travel in their own
/// binary forms (numeric cast by the server): a model trained on them is
/// exactly the model trained on the same values as float8.
#[test]
fn every_column_type_reads_as_its_float8_value() {
    let (_pg, proxy) = single();
    ok(
        &proxy,
        "CREATE TABLE typed AS \
         SELECT (g % 7)::int2 AS a, (g * 13 % 101)::int4 AS b, (g::int8 * 1000003) % 9973 AS c, \
                (g / 7.0)::real AS d, sqrt(g)::float8 AS e, (g / 3.0)::numeric(12, 4) AS f, \
                g % 3 = 0 AS h, ARRAY[(g % 5)::real, (g % 11)::real] AS i, ARRAY[g % 2 = 0, g % 4 = 0] AS j, \
                (g % 7) * 2.5 + (g * 13 % 101) * 0.1 + sqrt(g) + (g % 3 = 0)::int + (g % 5) AS y \
         FROM generate_series(1, 500) g",
    );
    ok(
        &proxy,
        "CREATE VIEW typed_native AS SELECT a, b, c, d, e, f, h, i, j, y FROM typed",
    );
    ok(
        &proxy,
        "CREATE VIEW typed_float8 AS SELECT a::float8, b::float8, c::float8, d::float8, e, f::float8, \
         h::int::float8 AS h, i::float8[] AS i, j::int[]::float8[] AS j, y FROM typed",
    );
    for (project, view) in [("native", "typed_native"), ("float8", "typed_float8")] {
        ok(
            &proxy,
            &format!("SELECT * FROM pgml.train('{project}', 'regression', '{view}', 'y', algorithm => 'linear')"),
        );
    }
    let (native, float8) = (metrics(&proxy, "native"), metrics(&proxy, "float8"));
    for k in ["r2", "mse", "mae"] {
        assert_eq!(native.get(k), float8.get(k), "{k}: {native} vs {float8}");
    }
    assert!(key(&proxy, "native", "r2") > 0.9, "{native}");
}
