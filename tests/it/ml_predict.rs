//! pgml.predict through the proxy against real Postgres: every form gives
//! what the stored model gives when called directly; ordering, filtering,
//! both protocols, NULLs, errors, restarts and deploys seen by a second
//! pgmlcat process.

use std::time::{Duration, Instant};

use crate::common::*;
use ndarray::Array2;
use pgmlcat::ml::algorithms::{self, Algorithm};
use pgmlcat::ml::Task;

fn ok(proxy: &Proxy, sql: &str) -> String {
    proxy
        .psql(sql)
        .unwrap_or_else(|e| panic!("{sql}\n{e}\n{}", proxy.log()))
}

fn setup() -> (PgCluster, Proxy) {
    setup_in("transaction")
}

fn setup_in(pool_mode: &str) -> (PgCluster, Proxy) {
    let pg = PgCluster::start();
    let port = free_port();
    let proxy = Proxy::start(port, &simple_config(port, &pg, pool_mode, 4));
    ok(&proxy, "SELECT pgml.load_dataset('iris')");
    ok(
        &proxy,
        "CREATE TABLE flowers AS SELECT row_number() OVER () AS id, * FROM pgml.iris",
    );
    ok(&proxy, "CREATE VIEW petals AS SELECT sepal_length, sepal_width, petal_length, petal_width FROM pgml.iris");
    ok(&proxy, "SELECT * FROM pgml.train('species', 'classification', 'pgml.iris', 'target', algorithm => 'lightgbm')");
    ok(&proxy, "CREATE VIEW widths AS SELECT sepal_length, sepal_width, petal_length, petal_width FROM pgml.iris");
    ok(&proxy, "SELECT * FROM pgml.train('width', 'regression', 'widths', 'petal_width', algorithm => 'lightgbm')");
    (pg, proxy)
}

/// The deployed model of `project`, loaded straight from the catalog.
fn stored_model(pg: &PgCluster, project: &str, task: Task) -> Box<dyn algorithms::Model> {
    let hex = pg.psql(
        "app",
        &format!(
            "SELECT encode(f.data, 'hex') FROM pgml.files f JOIN pgml.deployed_models d ON d.id = f.model_id \
             WHERE d.name = '{project}' AND f.path = 'model'"
        ),
    );
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    algorithms::load(Algorithm::Lightgbm, task, &bytes).expect("load the stored model")
}

/// The 'width' model's prediction for each flower, in id order, computed
/// by the stored model itself (rows × 1).
fn width_by_id(pg: &PgCluster) -> Array2<f64> {
    let rows = floats(&pg.psql(
        "app",
        "SELECT concat_ws(',', sepal_length::float8, sepal_width::float8, petal_length::float8) FROM flowers ORDER BY id",
    ));
    let x = Array2::from_shape_vec((150, 3), rows).unwrap();
    stored_model(pg, "width", Task::Regression)
        .predict(x.view())
        .unwrap()
}

fn floats(text: &str) -> Vec<f64> {
    text.split([',', '\n'])
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect()
}

#[test]
fn every_form_matches_the_stored_model() {
    let (pg, proxy) = setup();
    let direct = width_by_id(&pg);
    let direct: Vec<f32> = direct.column(0).iter().map(|&v| v as f32).collect();

    let as_f32 = |s: &str| -> Vec<f32> { s.lines().map(|l| l.parse().unwrap()).collect() };
    let array_form = as_f32(&ok(&proxy, "SELECT pgml.predict('width', ARRAY[sepal_length, sepal_width, petal_length]) FROM flowers ORDER BY id"));
    assert_eq!(array_form, direct, "ARRAY[...] input");
    let row_form = as_f32(&ok(&proxy, "SELECT pgml.predict('width', (sepal_length, sepal_width, petal_length)) FROM flowers ORDER BY id"));
    assert_eq!(row_form, direct, "(a, b, c) input");
    let row_kw = as_f32(&ok(&proxy, "SELECT PGML.PREDICT('width', ROW(sepal_length, sepal_width, petal_length)) AS p FROM flowers ORDER BY id"));
    assert_eq!(row_kw, direct, "ROW(...) input");
    let star = as_f32(&ok(
        &proxy,
        "SELECT pgml.predict('species', p.*) FROM petals p LIMIT 150",
    ));
    assert_eq!(star.len(), 150);
    let model_id = ok(
        &proxy,
        "SELECT id FROM pgml.deployed_models WHERE name = 'width'",
    );
    let by_id = as_f32(&ok(&proxy, &format!("SELECT pgml.predict({model_id}, ARRAY[sepal_length, sepal_width, petal_length]) FROM flowers ORDER BY id")));
    assert_eq!(by_id, direct, "model id instead of project");

    // Mixed with columns, several calls, names and types as Postgres gives them.
    let out = ok(&proxy, "SELECT id, pgml.predict('width', ARRAY[sepal_length, sepal_width, petal_length]) AS w, \
                          pgml.predict('species', ARRAY[sepal_length, sepal_width, petal_length, petal_width]), target \
                          FROM flowers WHERE id IN (1, 51, 101) ORDER BY id");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3);
    for line in &lines {
        let f: Vec<&str> = line.split('|').collect();
        assert_eq!(f.len(), 4, "{line}");
        assert_eq!(f[2], f[3], "species predicted as the class value: {line}");
    }
    let header = run_env(
        "psql",
        &["-X", "-w", "-h", "127.0.0.1", "-p", &proxy.port.to_string(), "-U", "app", "-d", "app", "-A",
          "-c", "SELECT pgml.predict('width', ARRAY[1, 2, 3]), pgml.predict_proba('species', ARRAY[5.1, 3.5, 1.4, 0.2]) AS pr"],
        &[("PGPASSWORD", "app_pw")],
    );
    let header = String::from_utf8_lossy(&header.stdout).to_string();
    assert!(header.starts_with("predict|pr\n"), "{header}");
    let proba_text = header
        .lines()
        .nth(1)
        .unwrap()
        .split('|')
        .nth(1)
        .unwrap()
        .to_string();
    let proba: Vec<f64> = floats(proba_text.trim_matches(|c| c == '{' || c == '}'));
    assert_eq!(proba.len(), 3);
    assert!((proba.iter().sum::<f64>() - 1.0).abs() < 1e-5, "{proba:?}");

    // ORDER BY a prediction with LIMIT equals sorting every prediction.
    let mut all: Vec<(f32, i64)> = direct
        .iter()
        .enumerate()
        .map(|(i, &p)| (p, i as i64 + 1))
        .collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    let top = ok(&proxy, "SELECT id, pgml.predict('width', ARRAY[sepal_length, sepal_width, petal_length]) AS w FROM flowers ORDER BY w DESC LIMIT 5 OFFSET 2");
    let top: Vec<f32> = top
        .lines()
        .map(|l| l.split('|').nth(1).unwrap().parse().unwrap())
        .collect();
    let want: Vec<f32> = all[2..7].iter().map(|p| p.0).collect();
    assert_eq!(top, want);
    // WHERE on a prediction filters exactly, and the count is right.
    let filtered = ok(&proxy, "SELECT id FROM flowers WHERE pgml.predict('width', ARRAY[sepal_length, sepal_width, petal_length]) > 1.5 AND id > 10 ORDER BY id");
    let want: Vec<String> = all
        .iter()
        .filter(|(p, id)| *p > 1.5 && *id > 10)
        .map(|(_, id)| *id)
        .collect::<std::collections::BTreeSet<_>>()
        .iter()
        .map(|i| i.to_string())
        .collect();
    assert_eq!(filtered.lines().map(String::from).collect::<Vec<_>>(), want);

    // NULL input gives NULL (the functions are STRICT).
    assert_eq!(
        ok(&proxy, "SELECT 'x', pgml.predict('width', NULL::real[])"),
        "x|"
    );
    ok(&proxy, "INSERT INTO flowers (id) VALUES (1000)");
    assert_eq!(ok(&proxy, "SELECT id, pgml.predict('width', CASE WHEN sepal_length IS NOT NULL THEN ARRAY[sepal_length, sepal_width, petal_length] END) FROM flowers WHERE id = 1000"), "1000|");
    // NULL elements in an array are an error, as in PostgresML.
    let err = proxy.psql("SELECT pgml.predict('width', ARRAY[sepal_length, sepal_width, petal_length]) FROM flowers WHERE id = 1000").unwrap_err();
    assert!(err.contains("NULL"), "{err}");
}

#[test]
fn errors_are_clear_and_the_connection_survives() {
    let (_pg, proxy) = setup();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        for (sql, state, needle) in [
            (
                "SELECT pgml.predict('nope', ARRAY[1, 2, 3])",
                "42704",
                "nope",
            ),
            (
                "SELECT pgml.predict(999999, ARRAY[1, 2, 3])",
                "42704",
                "999999",
            ),
            (
                "SELECT pgml.predict('width', ARRAY[1, 2])",
                "42804",
                "expects 3 features, got 2",
            ),
            (
                "SELECT pgml.predict('width', ARRAY[sepal_length]) * 2 FROM flowers",
                "42804",
                "expects 3 features, got 1",
            ),
            (
                "SELECT pgml.predict('width', ARRAY[random(), 1, 2]) * 2 FROM flowers",
                "0A000",
                "random()",
            ),
            (
                "SELECT pgml.predict('width', (sepal_length, 'text', petal_length)) FROM flowers",
                "42804",
                "",
            ),
        ] {
            let err = client.simple_query(sql).await.expect_err(sql);
            let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
            assert_eq!(db.code().code(), state, "{sql}: {}", db.message());
            assert!(db.message().contains(needle), "{sql}: {}", db.message());
            let rows = client.simple_query("SELECT 1").await.unwrap();
            let n = rows
                .iter()
                .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
                .count();
            assert_eq!(n, 1);
        }
    });
}

#[test]
fn extended_protocol_with_parameters_and_binary_results() {
    let (pg, proxy) = setup();
    let direct = width_by_id(&pg);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        // Prepared once, executed many times; binary result format.
        let stmt = client
            .prepare("SELECT id, pgml.predict('width', ARRAY[sepal_length, sepal_width, petal_length]) AS w FROM flowers WHERE id BETWEEN $1 AND $2 ORDER BY id")
            .await
            .expect("prepare");
        assert_eq!(stmt.columns()[1].type_(), &tokio_postgres::types::Type::FLOAT4);
        for (lo, hi) in [(1i64, 10i64), (50, 60), (140, 150)] {
            let rows = client.query(&stmt, &[&lo, &hi]).await.expect("execute");
            assert_eq!(rows.len() as i64, hi - lo + 1);
            for row in rows {
                let id: i64 = row.get(0);
                let w: f32 = row.get(1);
                assert_eq!(w, direct[[id as usize - 1, 0]] as f32, "id {id}");
            }
        }
        // A parameter inside the features, and the project as a parameter.
        let row = client
            .query_one("SELECT pgml.predict($1, ARRAY[$2::real, 3.5, 1.4])", &[&"width", &5.1f32])
            .await
            .expect("constant with parameters");
        let w: f32 = row.get(0);
        let want = stored_model(&pg, "width", Task::Regression)
            .predict(Array2::from_shape_vec((1, 3), vec![5.1f32 as f64, 3.5f32 as f64, 1.4f32 as f64]).unwrap().view())
            .unwrap()[[0, 0]] as f32;
        assert!((w - want).abs() < 1e-6, "{w} vs {want}");
        let proba = client
            .query_one("SELECT pgml.predict_proba('species', ARRAY[sepal_length, sepal_width, petal_length, petal_width]) FROM flowers WHERE id = $1", &[&1i64])
            .await
            .expect("predict_proba in binary");
        let p: Vec<f32> = proba.get(0);
        assert_eq!(p.len(), 3);
        // Text format through the simple protocol agrees with binary.
        let text = client
            .simple_query("SELECT pgml.predict('width', ARRAY[sepal_length, sepal_width, petal_length]) FROM flowers WHERE id = 7")
            .await
            .unwrap();
        let tokio_postgres::SimpleQueryMessage::Row(r) = &text[1] else { panic!("no row") };
        assert_eq!(r.get(0).unwrap().parse::<f32>().unwrap(), direct[[6, 0]] as f32);
    });
}

#[test]
fn row_input_with_text_and_a_second_proxy_learns_of_deploys() {
    let pg = PgCluster::start();
    let (pa, pb) = (free_port(), free_port());
    let a = Proxy::start(pa, &simple_config(pa, &pg, "transaction", 4));
    let b = Proxy::start(pb, &simple_config(pb, &pg, "transaction", 4));
    ok(&a, "CREATE TABLE shop AS SELECT (ARRAY['red','green','blue'])[1 + g % 3] AS colour, (g % 7)::real AS visits, \
            ((g % 3) * 10 + (g % 7))::real AS spend FROM generate_series(1, 600) g");
    ok(&a, "SELECT * FROM pgml.train('spend', 'regression', 'shop', 'spend', algorithm => 'lightgbm', hyperparams => '{\"min_data_in_leaf\": 5}')");
    let before: f64 = ok(&b, "SELECT pgml.predict('spend', ('green', 3))")
        .parse()
        .unwrap();
    assert!((before - 13.0).abs() < 1.5, "green=1*10 + 3: {before}");
    let blue: f64 = ok(
        &b,
        "SELECT pgml.predict('spend', ROW('blue'::text, 4::real))",
    )
    .parse()
    .unwrap();
    assert!((blue - 24.0).abs() < 1.5, "blue: {blue}");
    // A new, different model deployed through A: B serves it within 2 s.
    ok(&a, "UPDATE shop SET spend = spend + 100");
    ok(&a, "SELECT * FROM pgml.train('spend', relation_name => 'shop', y_column_name => 'spend', algorithm => 'lightgbm', automatic_deploy => false, hyperparams => '{\"min_data_in_leaf\": 5}')");
    let newest = ok(&a, "SELECT max(id) FROM pgml.models");
    ok(&a, &format!("SELECT * FROM pgml.deploy({newest})"));
    let started = Instant::now();
    loop {
        let now: f64 = ok(&b, "SELECT pgml.predict('spend', ('green', 3))")
            .parse()
            .unwrap();
        if (now - 113.0).abs() < 1.5 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "B still predicts {now} after {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A restarted proxy serves the deployed model.
    drop(b);
    let pc = free_port();
    let c = Proxy::start(pc, &simple_config(pc, &pg, "transaction", 4));
    let after: f64 = ok(&c, "SELECT pgml.predict('spend', ('green', 3))")
        .parse()
        .unwrap();
    assert!((after - 113.0).abs() < 1.5, "{after}");
    // A constant prediction needs no server: it is answered with the database down.
    pg.stop();
    let cached: f64 = ok(&c, "SELECT pgml.predict('spend', ('green', 3))")
        .parse()
        .unwrap();
    assert_eq!(cached, after);
}

#[test]
fn predictions_across_shards_are_spliced_into_the_union() {
    let shards = [PgCluster::start(), PgCluster::start()];
    for (i, pg) in shards.iter().enumerate() {
        pg.psql(
            "app",
            &format!(
                "CREATE TABLE pts AS SELECT g AS id, g::real AS x FROM generate_series({}, {}) g",
                i * 100 + 1,
                i * 100 + 100
            ),
        );
    }
    let port = free_port();
    let config = sharded_pool_config(port, &shards);
    let proxy = Proxy::start(port, &config);
    // y = 3x + 1 on shard 0 only: the catalog lives there.
    shards[0].psql("app", "CREATE TABLE line AS SELECT g::real AS x, (3 * g + 1)::real AS y FROM generate_series(1, 50) g");
    ok(
        &proxy,
        "/* shard_id: 0 */ SELECT * FROM pgml.train('line', 'regression', 'line', 'y')",
    );
    let out = ok(&proxy, "SELECT id, pgml.predict('line', ARRAY[x]) AS p FROM pts WHERE pgml.predict('line', ARRAY[x]) > 400");
    let mut got: Vec<(i64, f64)> = out
        .lines()
        .map(|l| {
            let (id, p) = l.split_once('|').unwrap();
            (id.parse().unwrap(), p.parse().unwrap())
        })
        .collect();
    got.sort_by_key(|r| r.0);
    // 3x + 1 > 400 for x >= 134: rows 134..=200, from shard 1 only.
    assert_eq!(got.len(), 67, "{out}");
    assert_eq!(got[0].0, 134);
    for (id, p) in &got {
        assert!((p - (3.0 * *id as f64 + 1.0)).abs() < 0.01, "{id}: {p}");
    }
    let top = ok(
        &proxy,
        "SELECT id FROM pts ORDER BY pgml.predict('line', ARRAY[x]) DESC LIMIT 3",
    );
    assert_eq!(top, "200\n199\n198");
    let err = proxy
        .psql("SELECT id, pgml.predict('line', ARRAY[x]) FROM pts ORDER BY id LIMIT 3")
        .unwrap_err();
    assert!(err.contains("across shards"), "{err}");
}

#[test]
fn joins_group_by_subqueries_and_ctes() {
    let (pg, proxy) = setup();
    let direct = width_by_id(&pg);
    let want = |id: usize| direct[[id - 1, 0]] as f32;
    ok(
        &proxy,
        "CREATE TABLE tags AS SELECT id, 'tag' || (id % 4) AS tag FROM flowers",
    );
    // A join, the prediction from one side's columns.
    let out = ok(&proxy, "SELECT f.id, t.tag, pgml.predict('width', ARRAY[f.sepal_length, f.sepal_width, f.petal_length]) AS w \
                          FROM flowers f JOIN tags t ON t.id = f.id WHERE f.id IN (3, 77) ORDER BY f.id");
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!((lines[0][0], lines[0][1]), ("3", "tag3"));
    assert_eq!(lines[1][2].parse::<f32>().unwrap(), want(77));
    // GROUP BY other columns, aggregates inside the arguments.
    let grouped = ok(&proxy, "SELECT target, pgml.predict('width', ARRAY[avg(sepal_length), avg(sepal_width), avg(petal_length)]) FROM flowers GROUP BY target ORDER BY target");
    assert_eq!(grouped.lines().count(), 3, "{grouped}");
    // A subquery and a CTE whose predictions the outer query selects and filters on.
    let sub = ok(&proxy, "SELECT s.id, s.w FROM (SELECT id, pgml.predict('width', ARRAY[sepal_length, sepal_width, petal_length]) AS w FROM flowers) s WHERE s.id = 10");
    assert_eq!(sub, format!("10|{}", want(10)));
    let cte = ok(&proxy, "WITH p AS (SELECT id, pgml.predict('width', ARRAY[sepal_length, sepal_width, petal_length]) AS w FROM flowers) \
                          SELECT id FROM p WHERE w > 2.2 ORDER BY id");
    let expected: Vec<String> = (1..=150)
        .filter(|&i| want(i) > 2.2)
        .map(|i| i.to_string())
        .collect();
    assert_eq!(cte.lines().map(String::from).collect::<Vec<_>>(), expected);
    // Shapes the streaming rewrite cannot serve go the general way
    // (tests/it/ml_anywhere.rs checks their values).
    for sql in [
        "SELECT DISTINCT pgml.predict('width', ARRAY[sepal_length, sepal_width, petal_length]) FROM flowers",
        "SELECT sum(w) FROM (SELECT pgml.predict('width', ARRAY[sepal_length, sepal_width, petal_length]) AS w FROM flowers) s",
        "SELECT id FROM flowers ORDER BY target, pgml.predict('width', ARRAY[sepal_length, sepal_width, petal_length])",
    ] {
        assert!(!ok(&proxy, sql).is_empty(), "{sql}");
    }
}

/// Feature arrays travel in binary once a statement's layout is known, and
/// the compared constants of simple-protocol statements become typed
/// parameters of one prepared statement: every element type decodes to the
/// values Postgres holds, and every constant compares as its literal would.
#[test]
fn array_element_types_and_constants_as_parameters() {
    let (pg, proxy) = setup();
    let model = stored_model(&pg, "width", Task::Regression);
    for ty in ["real", "float8", "numeric", "int2", "int4", "int8", "bool"] {
        let cast = |c: &str| {
            if ty == "bool" {
                format!("({c} > 3)")
            } else {
                format!("{c}::{ty}")
            }
        };
        let cols = ["sepal_length", "sepal_width", "petal_length"].map(cast);
        let values = floats(&pg.psql(
            "app",
            &format!(
                "SELECT concat_ws(',', {}) FROM flowers ORDER BY id",
                cols.iter()
                    .map(|c| if ty == "bool" {
                        format!("{c}::int::float8")
                    } else {
                        format!("{c}::float8")
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
        let want = model
            .predict(Array2::from_shape_vec((150, 3), values).unwrap().view())
            .unwrap();
        let sql = format!(
            "SELECT pgml.predict('width', ARRAY[{}]) FROM flowers ORDER BY id",
            cols.join(", ")
        );
        // The first execution learns the layout (text), the next are binary.
        for round in 0..3 {
            let got: Vec<f32> = ok(&proxy, &sql)
                .lines()
                .map(|l| l.parse().unwrap())
                .collect();
            let want: Vec<f32> = want.column(0).iter().map(|&v| v as f32).collect();
            assert_eq!(got, want, "{ty}, round {round}");
        }
    }

    // Constants compare as the literals would: `>= 3.1` against a real
    // column is a numeric comparison, `= 'a '` against char(n) ignores the
    // trailing blank, a big integer is int8.
    pg.psql(
        "app",
        "ALTER TABLE flowers ADD COLUMN tag char(4); UPDATE flowers SET tag = CASE WHEN id % 3 = 0 THEN 'a' ELSE 'b' END",
    );
    let predict =
        "SELECT pgml.predict('width', ARRAY[sepal_length, sepal_width, petal_length]) FROM flowers";
    for cond in [
        "sepal_width >= 3.1",
        "sepal_width >= 3.4",
        "sepal_width > 3",
        "tag = 'a '",
        "tag = 'b'",
        "id < 5000000000",
        "id <> 7",
    ] {
        let want: usize = pg
            .psql("app", &format!("SELECT count(*) FROM flowers WHERE {cond}"))
            .trim()
            .parse()
            .unwrap();
        for _ in 0..2 {
            let got = ok(&proxy, &format!("{predict} WHERE {cond}"))
                .lines()
                .count();
            assert_eq!(got, want, "{cond}");
        }
    }

    // A NULL element is an error naming it, in text and in binary.
    for _ in 0..2 {
        let err = proxy
            .psql("SELECT pgml.predict('width', ARRAY[sepal_length, NULL, petal_length]) FROM flowers")
            .expect_err("a NULL feature");
        assert!(err.contains("feature 2 of the array is NULL"), "{err}");
    }
    assert_eq!(ok(&proxy, "SELECT count(*) FROM flowers").trim(), "150");
}

/// The proxy's server-side statements survive what a client does to the
/// session: DEALLOCATE ALL and DISCARD ALL on the same server connection
/// (session mode) make pgmlcat prepare again, and the answers stay right.
#[test]
fn server_statements_survive_deallocate_and_discard() {
    let (pg, proxy) = setup_in("session");
    let want = width_by_id(&pg)[[8, 0]] as f32;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        let predict = "SELECT pgml.predict('width', ARRAY[sepal_length, sepal_width, petal_length]) FROM flowers WHERE id = 9";
        for reset in ["", "DEALLOCATE ALL", "DISCARD ALL", "DEALLOCATE ALL"] {
            if !reset.is_empty() {
                client.simple_query(reset).await.expect(reset);
            }
            for _ in 0..2 {
                let rows = client.simple_query(predict).await.expect(reset);
                let tokio_postgres::SimpleQueryMessage::Row(r) = &rows[1] else {
                    panic!("no row after {reset:?}")
                };
                assert_eq!(r.get(0).unwrap().parse::<f32>().unwrap(), want, "{reset}");
                let stmt = client.prepare(predict).await.expect("prepare");
                let w: f32 = client.query_one(&stmt, &[]).await.expect(reset).get(0);
                assert_eq!(w, want, "{reset}");
            }
        }
    });
}

/// psycopg 3 sends numbers as binary parameters with their types declared
/// (float8, int8) or, with %t, as text: every form gives what the same
/// values written as constants give (they were refused: "incorrect binary
/// data format", "invalid byte sequence" — the server statement declared no
/// types, so Postgres read a float8 as the real the cast asked for).
#[test]
fn psycopg_and_asyncpg_parameters_mean_what_the_client_sent() {
    let (_pg, proxy) = setup();
    let url = proxy.url("app", "app_pw", "app");
    same_as_constants(&python_client("predict_params.py", &url), 11);
    // asyncpg: types inferred by the server from the Describe, values in
    // binary.
    same_as_constants(&python_client("predict_params_asyncpg.py", &url), 3);
}

/// `text`: a JSON list of [with parameters, with constants] pairs, `n` of
/// them, each pair equal and not empty.
fn same_as_constants(text: &str, n: usize) {
    let pairs: Vec<(serde_json::Value, serde_json::Value)> =
        serde_json::from_str(text.trim()).expect("json");
    assert_eq!(pairs.len(), n);
    for (i, (params, consts)) in pairs.iter().enumerate() {
        assert_eq!(params, consts, "case {i}");
        assert!(
            params.as_array().is_some_and(|r| !r.is_empty()),
            "case {i} returned rows"
        );
    }
}
