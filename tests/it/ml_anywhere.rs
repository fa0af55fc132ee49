//! pgml.predict wherever SQL allows a function (the general method:
//! memos filled by the proxy, lookups in the statement). Each statement
//! runs through the proxy and, directly on Postgres, with `pgml.` replaced
//! by `pgml_ref.`: SQL functions that return the SELECT-list fast path's
//! own predictions, stored beforehand. The outputs must be identical —
//! what a Postgres that had these functions returns, float4 bits included.

use crate::common::*;

/// The features of the three models: regression and linear on three
/// columns, classification on four.
const F3: &str = "ARRAY[sepal_length, sepal_width, petal_length]";
const F4: &str = "ARRAY[sepal_length, sepal_width, petal_length, petal_width]";

fn ok(proxy: &Proxy, sql: &str) -> String {
    proxy
        .psql(sql)
        .unwrap_or_else(|e| panic!("{sql}\n{e}\n{}", proxy.log()))
}

struct Setup {
    pg: PgCluster,
    proxy: Proxy,
}

impl Setup {
    fn start() -> Setup {
        let pg = PgCluster::start();
        let port = free_port();
        let proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 4));
        ok(&proxy, "SELECT pgml.load_dataset('iris')");
        ok(
            &proxy,
            "CREATE TABLE flowers AS SELECT row_number() OVER () AS id, * FROM pgml.iris",
        );
        ok(&proxy, "CREATE VIEW widths AS SELECT sepal_length, sepal_width, petal_length, petal_width FROM pgml.iris");
        ok(&proxy, "SELECT * FROM pgml.train('species', 'classification', 'pgml.iris', 'target', algorithm => 'lightgbm')");
        ok(&proxy, "SELECT * FROM pgml.train('width', 'regression', 'widths', 'petal_width', algorithm => 'lightgbm')");
        ok(&proxy, "SELECT * FROM pgml.train('width_linear', 'regression', 'widths', 'petal_width', algorithm => 'linear')");
        let s = Setup { pg, proxy };
        s.reference();
        s
    }

    /// `pgml_ref.predict` and `pgml_ref.predict_proba` on the direct
    /// connection: the fast path's predictions of every flower (and of
    /// the features the write tests give them), looked up by features.
    fn reference(&self) {
        self.pg.psql(
            "app",
            "CREATE SCHEMA pgml_ref; \
             CREATE TABLE pgml_ref.memo (model text, f real[], p real, pp real[]); \
             CREATE FUNCTION pgml_ref.predict(m text, f real[]) RETURNS real LANGUAGE sql STABLE STRICT \
               AS $$ SELECT p FROM pgml_ref.memo WHERE model = m AND memo.f = $2 $$; \
             CREATE FUNCTION pgml_ref.predict_proba(m text, f real[]) RETURNS real[] LANGUAGE sql STABLE STRICT \
               AS $$ SELECT pp FROM pgml_ref.memo WHERE model = m AND memo.f = $2 $$; \
             GRANT USAGE ON SCHEMA pgml_ref TO app; GRANT SELECT ON pgml_ref.memo TO app",
        );
        for (model, f) in [("width", F3), ("width_linear", F3), ("species", F4)] {
            let proba = if model == "species" {
                format!("pgml.predict_proba('{model}', {f})")
            } else {
                "NULL::real[]".into()
            };
            let rows = ok(
                &self.proxy,
                &format!(
                    "SELECT {f}, pgml.predict('{model}', {f}), {proba} FROM \
                     (SELECT sepal_length, sepal_width, petal_length, petal_width FROM flowers \
                      UNION SELECT (sepal_length + 1)::real, sepal_width, petal_length, petal_width FROM flowers) s"
                ),
            );
            let values: Vec<String> = rows
                .lines()
                .map(|l| {
                    let cols: Vec<&str> = l.split('|').collect();
                    let pp = if cols[2].is_empty() {
                        "NULL".into()
                    } else {
                        format!("'{}'", cols[2])
                    };
                    format!("('{model}', '{}', '{}', {pp})", cols[0], cols[1])
                })
                .collect();
            self.pg.psql(
                "app",
                &format!("INSERT INTO pgml_ref.memo VALUES {}", values.join(", ")),
            );
        }
    }

    /// The statement through the proxy and, with the reference functions,
    /// directly: the same output.
    fn same(&self, sql: &str) -> String {
        let through = ok(&self.proxy, sql);
        let direct = self.pg.psql("app", &sql.replace("pgml.", "pgml_ref."));
        assert_eq!(through, direct, "{sql}");
        assert!(
            !through.is_empty(),
            "{sql}: no rows, the test proves nothing"
        );
        through
    }
}

#[test]
fn every_expression_position_gives_what_the_function_would() {
    let s = Setup::start();
    let w = format!("pgml.predict('width', {F3})");
    let lin = format!("pgml.predict('width_linear', {F3})");
    let sp = format!("pgml.predict('species', {F4})");
    let pp = format!("pgml.predict_proba('species', {F4})");
    for sql in [
        // Arithmetic, comparison, CASE, coalesce, casts, function arguments.
        format!("SELECT id, {w} * 2 + 1, {lin} - {w} FROM flowers ORDER BY id"),
        format!("SELECT id, CASE WHEN {w} > 1.5 THEN 'wide' WHEN {lin} < 0.5 THEN 'thin' ELSE 'mid' END FROM flowers ORDER BY id"),
        format!("SELECT id, round(coalesce({w}, 0)::numeric, 2), {w}::text, {sp}::int FROM flowers ORDER BY id"),
        format!("SELECT id, ({pp})[1], {pp} FROM flowers ORDER BY id"),
        // Aggregates, FILTER, GROUP BY and HAVING on predictions.
        format!("SELECT target, avg({w}), sum({lin}), count(*) FILTER (WHERE {w} > 1.2), max(({pp})[3]) FROM flowers GROUP BY target ORDER BY target"),
        format!("SELECT {sp} AS s, count(*) FROM flowers GROUP BY 1 ORDER BY 1"),
        format!("SELECT target, count(*) FROM flowers GROUP BY target HAVING avg({w}) > 1 ORDER BY target"),
        // Windows, ORDER BY mixing predictions and columns, DISTINCT.
        format!("SELECT id, rank() OVER (PARTITION BY target ORDER BY {w} DESC, id), sum({w}) OVER (ORDER BY id) FROM flowers ORDER BY id"),
        format!("SELECT id FROM flowers ORDER BY target, {w} DESC, id"),
        format!("SELECT DISTINCT {sp} FROM flowers ORDER BY 1"),
        format!("SELECT DISTINCT ON (target) target, id, {w} FROM flowers ORDER BY target, {w} DESC, id"),
        // WHERE with other conditions, subqueries, CTEs, UNION.
        format!("SELECT id FROM flowers WHERE id % 3 = 0 AND ({w} > 1.5 OR {sp} = 0) ORDER BY id"),
        format!("SELECT id FROM flowers WHERE id IN (SELECT id FROM flowers WHERE {w} > (SELECT avg({w}) FROM flowers)) ORDER BY id"),
        format!("WITH p AS (SELECT id, {w} AS w FROM flowers), q AS (SELECT id, w FROM p WHERE w > 1) SELECT count(*), sum(w) FROM q"),
        format!("SELECT s.id, s.w + 1 FROM (SELECT id, {w} AS w FROM flowers) s WHERE s.w < 0.5 ORDER BY 1"),
        "SELECT f.id, (SELECT count(*) FROM flowers g WHERE g.target = f.target AND pgml.predict('width', ARRAY[g.sepal_length, g.sepal_width, g.petal_length]) > 1.5) FROM flowers f ORDER BY id".to_string(),
        format!("SELECT {w} FROM flowers WHERE id < 5 UNION ALL SELECT {lin} FROM flowers WHERE id > 145 ORDER BY 1"),
        format!("SELECT f.id, t.n FROM flowers f JOIN (SELECT target, count(*) AS n FROM flowers GROUP BY target) t ON t.target = f.target AND {w} > 2 ORDER BY 1"),
        // NULL features give NULL (the functions are STRICT), per row.
        format!("SELECT id, coalesce(pgml.predict('width', CASE WHEN id % 2 = 0 THEN {F3} END), -1) FROM flowers ORDER BY id"),
        // No rows: nothing to predict.
        format!("SELECT count(*), avg({w}) FROM flowers WHERE id < 0"),
    ] {
        s.same(&sql);
    }
    // A prediction of a prediction: as the fast path gives it from the
    // inner predictions stored first (the reference has no memo of these
    // features).
    let nested = ok(&s.proxy, &format!("SELECT id, pgml.predict('width', ARRAY[{w}, sepal_width, petal_length]) FROM flowers ORDER BY id"));
    let inner = ok(
        &s.proxy,
        &format!("SELECT id, {w}, sepal_width, petal_length FROM flowers"),
    );
    let rows: Vec<String> = inner
        .lines()
        .map(|l| format!("({})", l.split('|').collect::<Vec<_>>().join(",")))
        .collect();
    s.pg.psql("app", &format!("CREATE TABLE n (id bigint, w real, sw real, pl real); GRANT SELECT ON n TO app; INSERT INTO n VALUES {}", rows.join(",")));
    let streamed = ok(
        &s.proxy,
        "SELECT id, pgml.predict('width', ARRAY[w, sw, pl]) FROM n ORDER BY id",
    );
    assert_eq!(nested, streamed);
    // The same through a subquery's prediction column.
    let nested = ok(&s.proxy, &format!("SELECT id, pgml.predict('width', ARRAY[w, sepal_width, petal_length]) FROM (SELECT id, {w} AS w, sepal_width, petal_length FROM flowers) s ORDER BY id"));
    assert_eq!(nested, streamed);
    assert_eq!(nested.lines().count(), 150);
}

#[test]
fn statements_other_than_select_write_what_the_function_would() {
    let s = Setup::start();
    let w = format!("pgml.predict('width', {F3})");
    let setup = "DROP TABLE IF EXISTS t, u, c; \
                 CREATE TABLE t AS SELECT id, sepal_length, sepal_width, petal_length, petal_width, target, NULL::real AS p FROM flowers; \
                 CREATE TABLE u (id bigint, p real); \
                 GRANT ALL ON t, u TO app";
    let table = |on_proxy: bool, name: &str| {
        let sql = format!("SELECT * FROM {name} ORDER BY 1, 2");
        if on_proxy {
            ok(&s.proxy, &sql)
        } else {
            s.pg.psql("app", &sql)
        }
    };
    for (statement, check) in [
        (format!("UPDATE t SET p = {w}"), "t"),
        (format!("UPDATE t SET p = {w} + x.n FROM (SELECT 1 AS n) x WHERE t.id % 2 = 0 AND {w} > 1 RETURNING t.id, t.p"), "t"),
        (format!("UPDATE t SET sepal_length = sepal_length + 1, p = {w}"), "t"),
        (format!("DELETE FROM t WHERE {w} > 1.5 RETURNING id, {w}"), "t"),
        (format!("INSERT INTO u SELECT id, {w} FROM t WHERE id < 20"), "u"),
        ("INSERT INTO u VALUES (1, pgml.predict('width', ARRAY[5.1, 3.5, 1.4]::real[]))".to_string(), "u"),
        (format!("CREATE TABLE c AS SELECT id, {w} AS p FROM t"), "c"),
    ] {
        let through = {
            s.pg.psql("app", setup);
            let out = ok(&s.proxy, &statement);
            (out, table(true, check))
        };
        let direct = {
            s.pg.psql("app", setup);
            let out = s.pg.psql("app", &statement.replace("pgml.", "pgml_ref."));
            (out, table(false, check))
        };
        assert_eq!(through, direct, "{statement}");
        assert!(!through.1.is_empty(), "{statement}");
    }
    // COPY (SELECT ...) TO STDOUT and EXPLAIN (ANALYZE) run too.
    s.pg.psql("app", setup);
    s.same(&format!(
        "COPY (SELECT id, {w} FROM t WHERE {w} > 1 ORDER BY id) TO STDOUT"
    ));
    let plan = ok(
        &s.proxy,
        &format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) UPDATE t SET p = {w}"),
    );
    assert!(plan.contains("Update on t"), "{plan}");
    let plan = ok(&s.proxy, &format!("EXPLAIN SELECT avg({w}) FROM t"));
    assert!(plan.contains("Aggregate"), "{plan}");
}

#[test]
fn predictions_run_inside_the_clients_transaction() {
    let s = Setup::start();
    let w = format!("pgml.predict('width', {F3})");
    s.pg.psql(
        "app",
        "CREATE TABLE t AS SELECT id, sepal_length, sepal_width, petal_length, NULL::real AS p FROM flowers; \
         GRANT ALL ON t TO app",
    );
    // ROLLBACK undoes the UPDATE; nothing of the proxy's is left behind.
    let out = s.proxy.psql_script(
        &format!("BEGIN;\nUPDATE t SET p = {w};\nSELECT count(p) FROM t;\nROLLBACK;\nSELECT count(p) FROM t;\n"),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", s.proxy.log()));
    assert_eq!(out, "150\n0");
    // Predictions see the transaction's own writes, and a failing
    // statement aborts the block as Postgres would.
    let out = s.proxy.psql_script(
        &format!(
            "BEGIN;\nINSERT INTO t VALUES (1000, 6.1, 3.5, 1.4, NULL);\n\
             UPDATE t SET p = {w} WHERE id = 1000 RETURNING p IS NOT NULL;\n\
             SELECT count(*) FILTER (WHERE {w} > 0) FROM t;\nCOMMIT;\n\
             SELECT p = pgml.predict('width', ARRAY[6.1, 3.5, 1.4]::real[]) FROM t WHERE id = 1000;\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", s.proxy.log()));
    assert_eq!(out, "t\n151\nt");
    // An error the server never saw (the model's: wrong number of
    // features) fails the block too, as any failed statement does: the
    // next statement is refused, and it goes on after the ROLLBACK.
    let out = s
        .proxy
        .psql_script(
            "\\set ON_ERROR_STOP 0\nBEGIN;\nUPDATE t SET p = pgml.predict('width', ARRAY[sepal_length]);\n\
             SELECT 'after';\nROLLBACK;\nSELECT 'done';\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out, "done");
    // The same for the SELECT-list fast path.
    let out = s
        .proxy
        .psql_script(
            "\\set ON_ERROR_STOP 0\nBEGIN;\nSELECT pgml.predict('width', ARRAY[sepal_length]) FROM t;\n\
             SELECT 'after';\nROLLBACK;\nSELECT 'done';\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out, "done");
    let temp = s.pg.psql(
        "app",
        "SELECT count(*) FROM pg_class WHERE relname LIKE '\\_\\_pgml%'",
    );
    assert_eq!(temp, "0", "memo tables outlived their statement");
}

#[test]
fn shapes_that_cannot_be_reproduced_are_refused_by_name() {
    let s = Setup::start();
    for (sql, names) in [
        ("UPDATE flowers SET id = id WHERE pgml.predict('width', ARRAY[random()::real, 1, 2]) > 1".to_string(), "random()"),
        (format!("INSERT INTO flowers (id) SELECT 1 RETURNING pgml.predict('width', {F3})"), "RETURNING"),
    ] {
        let err = s.proxy.psql(&sql).unwrap_err();
        assert!(err.contains(names), "{sql}: {err}");
        assert_eq!(ok(&s.proxy, "SELECT 1"), "1");
    }
    // A NULL element fails the statement as it does in the SELECT list,
    // with the same error, and only when a row reaches the call.
    let streamed = s
        .proxy
        .psql("SELECT pgml.predict('width', ARRAY[sepal_length, NULL, petal_length]) FROM flowers")
        .unwrap_err();
    let general = s
        .proxy
        .psql("SELECT pgml.predict('width', ARRAY[sepal_length, NULL, petal_length]) + 1 FROM flowers")
        .unwrap_err();
    assert!(streamed.contains("NULL"), "{streamed}");
    assert_eq!(general, streamed);
    assert_eq!(
        ok(&s.proxy, "SELECT count(*) FROM flowers WHERE id < 0 AND pgml.predict('width', ARRAY[sepal_length, NULL, petal_length]) > 1"),
        "0"
    );
    // The connection and the pool go on.
    assert_eq!(ok(&s.proxy, "SELECT 1"), "1");
}

/// psycopg 3's parameters (text, and binary with declared types) as
/// thresholds, LIMIT, CASE results, FILTER values, the model name and
/// inside the features: the same rows as the functions would give.
#[test]
fn parameters_in_every_position_mean_what_the_client_sent() {
    let s = Setup::start();
    for (client, cases) in [
        ("predict_anywhere_params.py", 12),
        ("predict_anywhere_asyncpg.py", 16),
    ] {
        let script = format!("{}/tests/it/clients/{client}", env!("CARGO_MANIFEST_DIR"));
        let out = run(
            &python(),
            &[
                &script,
                &s.proxy.url("app", "app_pw", "app"),
                &direct_url(&s.pg),
            ],
        );
        assert!(
            out.status.success(),
            "{client}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            s.proxy.log()
        );
        let pairs: Vec<(serde_json::Value, serde_json::Value)> =
            serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(pairs.len(), cases, "{client}");
        for (i, (through, direct)) in pairs.iter().enumerate() {
            assert_eq!(through, direct, "{client} case {i}");
            assert!(
                through.as_array().is_some_and(|r| !r.is_empty()),
                "{client} case {i}"
            );
        }
    }
    // tokio-postgres: prepared with the server's inferred types, binary
    // parameters and results.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let proxy = connect(&s.proxy.url("app", "app_pw", "app")).await;
        let direct = connect(&direct_url(&s.pg)).await;
        let sql = format!(
            "SELECT id, pgml.predict('width', {F3}) * $2 FROM flowers WHERE pgml.predict('width', {F3}) > $1 ORDER BY id"
        );
        let rows = |rows: Vec<tokio_postgres::Row>| -> Vec<(i64, f32)> {
            rows.iter().map(|r| (r.get(0), r.get(1))).collect()
        };
        for _ in 0..2 {
            let through = rows(proxy.query(&sql, &[&1.5f32, &2f32]).await.expect("through"));
            let want = rows(
                direct
                    .query(&sql.replace("pgml.", "pgml_ref."), &[&1.5f32, &2f32])
                    .await
                    .expect("direct"),
            );
            assert!(!through.is_empty());
            assert_eq!(through, want);
        }
    });
}

/// A writer keeps changing rows' features (and clearing their score in
/// the same UPDATE) while `UPDATE t SET p = pgml.predict(...)` runs again
/// and again through the proxy: every score ever visible is the
/// prediction of its row's features, and an UPDATE that met changed rows
/// either got them right (Postgres re-evaluates the lookup on the new
/// version) or failed with 40001 — never a wrong or NULL score.
#[test]
fn concurrent_writers_never_see_a_wrong_prediction() {
    let s = Setup::start();
    s.pg.psql(
        "app",
        "CREATE TABLE t AS SELECT id, sepal_length, sepal_width, petal_length, NULL::real AS p FROM flowers; \
         GRANT ALL ON t TO app",
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let url = direct_url(&s.pg);
        std::thread::spawn(move || {
            let mut client = postgres_client(&url);
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = (n * 37) % 150 + 1;
                // Between the flower's own sepal_length and one more (both
                // in the reference).
                client
                    .execute(
                        "UPDATE t SET sepal_length = CASE WHEN t.sepal_length = f.sepal_length \
                         THEN (f.sepal_length + 1)::real ELSE f.sepal_length END, p = NULL \
                         FROM flowers f WHERE f.id = t.id AND t.id = $1",
                        &[&(id as i64)],
                    )
                    .expect("writer");
                n += 1;
                std::thread::sleep(std::time::Duration::from_millis(3));
            }
            n
        })
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (committed, retried) = rt.block_on(async {
        let client = connect(&s.proxy.url("app", "app_pw", "app")).await;
        let check = connect(&direct_url(&s.pg)).await;
        let (mut committed, mut retried) = (0, 0);
        for _ in 0..20 {
            match client
                .simple_query(&format!("UPDATE t SET p = pgml.predict('width', {F3})"))
                .await
            {
                Ok(_) => committed += 1,
                Err(e) => {
                    let code = e.as_db_error().map(|d| d.code().code().to_string());
                    assert_eq!(code.as_deref(), Some("40001"), "{e}");
                    retried += 1;
                }
            }
            let wrong = check
                .query_one(
                    &format!("SELECT count(*) FROM t WHERE p IS NOT NULL AND p IS DISTINCT FROM pgml_ref.predict('width', {F3})"),
                    &[],
                )
                .await
                .expect("check");
            if wrong.get::<_, i64>(0) != 0 {
                let rows = check
                    .simple_query(&format!("SELECT id, {F3}::text, p, pgml_ref.predict('width', {F3}) FROM t WHERE p IS NOT NULL AND p IS DISTINCT FROM pgml_ref.predict('width', {F3})"))
                    .await
                    .expect("detail");
                let detail: Vec<String> = rows
                    .iter()
                    .filter_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                            (0..4).map(|i| r.get(i).unwrap_or("NULL").to_string()).collect::<Vec<_>>().join("|"),
                        ),
                        _ => None,
                    })
                    .collect();
                panic!("scores that are not their row's prediction: {detail:?}");
            }
        }
        (committed, retried)
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.join().expect("writer");
    assert!(
        committed > 0,
        "no UPDATE committed ({retried} retried): the test proves nothing"
    );
    assert!(writes > 20, "the writer hardly ran ({writes} writes)");
    let scored = s.pg.psql("app", "SELECT count(p) FROM t");
    assert_ne!(scored, "0");
}

fn postgres_client(url: &str) -> SyncClient {
    SyncClient::new(url)
}

/// A blocking client for the writer thread (its own runtime).
struct SyncClient {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl SyncClient {
    fn new(url: &str) -> SyncClient {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let client = rt.block_on(connect(url));
        SyncClient { rt, client }
    }

    fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        self.rt.block_on(self.client.execute(sql, params))
    }
}

/// The same statement gives the same bits every time: its first
/// execution (features read as text, before the server's column layout is
/// known) and the next ones (read in binary), and after a deploy of
/// another model and the rollback to this one. A real printed as text and
/// read into a double was not the float4 the binary form gives, which a
/// linear model shows in the 8th digit.
#[test]
fn predictions_are_the_same_bits_on_every_execution() {
    let s = Setup::start();
    let sql = format!(
        "SELECT id, pgml.predict('width_linear', {F3}), pgml.predict_proba('species', {F4}) FROM flowers ORDER BY id"
    );
    let first = ok(&s.proxy, &sql);
    let again = ok(&s.proxy, &sql);
    assert_eq!(first, again, "first and second execution");
    ok(&s.proxy, "SELECT * FROM pgml.train('width_linear', 'regression', 'widths', 'petal_width', algorithm => 'ridge')");
    ok(&s.proxy, "SELECT * FROM pgml.train('species', 'classification', 'pgml.iris', 'target', algorithm => 'linear')");
    for project in ["width_linear", "species"] {
        ok(
            &s.proxy,
            &format!("SELECT * FROM pgml.deploy('{project}', 'most_recent')"),
        );
        assert_ne!(ok(&s.proxy, &sql), first, "the other models are deployed");
        ok(
            &s.proxy,
            &format!("SELECT * FROM pgml.deploy('{project}', 'rollback')"),
        );
    }
    assert_eq!(ok(&s.proxy, &sql), first, "after a deploy and the rollback");
    // And the general method's lookups give the fast path's bits.
    let general = ok(
        &s.proxy,
        &format!("SELECT id, CASE WHEN id > 0 THEN pgml.predict('width_linear', {F3}) END, pgml.predict_proba('species', {F4}) FROM flowers ORDER BY id"),
    );
    assert_eq!(general, first);
}

/// pgml.train and pgml.deploy inside a transaction block run in it: the
/// training reads the block's own table, predictions in the block use the
/// model it deployed, ROLLBACK leaves no catalog rows and the earlier
/// deployment in force (for this client and the others), COMMIT publishes
/// them, and a failed call fails the block as any statement would.
#[test]
fn training_and_deploying_run_inside_the_clients_transaction() {
    let s = Setup::start();
    let proxy_script = |sql: &str| s.proxy.psql_script(sql);
    let run =
        |sql: &str| proxy_script(sql).unwrap_or_else(|e| panic!("{sql}\n{e}\n{}", s.proxy.log()));
    let point = "ARRAY[5.1, 3.5, 1.4]::real[]";
    let before = ok(&s.proxy, &format!("SELECT pgml.predict('width', {point})"));
    let out = run(&format!(
        "BEGIN;\n\
         CREATE TABLE blk AS SELECT sepal_length, sepal_width, petal_length, petal_width * 10 AS petal_width FROM pgml.iris;\n\
         SELECT * FROM pgml.train('blockproj', 'regression', 'blk', 'petal_width', algorithm => 'linear');\n\
         SELECT pgml.predict('blockproj', {point}) > 1;\n\
         SELECT * FROM pgml.train('width', 'regression', 'blk', 'petal_width', algorithm => 'ridge');\n\
         SELECT * FROM pgml.deploy('width', 'most_recent');\n\
         SELECT pgml.predict('width', {point}) > 1, avg(pgml.predict('width', ARRAY[sepal_length, sepal_width, petal_length])) > 5 FROM flowers;\n\
         ROLLBACK;\n"
    ));
    let lines: Vec<&str> = out.lines().collect();
    // Trained on the block's table (width × 10) and used in the block.
    assert_eq!(lines[0], "blockproj|regression|linear|t", "{out}");
    assert_eq!(lines[1], "t", "{out}");
    assert_eq!(lines.last().copied(), Some("t|t"), "{out}");
    // Rolled back: no catalog rows, the old deployment in force.
    assert_eq!(
        s.pg.psql(
            "app",
            "SELECT count(*) FROM pgml.projects WHERE name = 'blockproj'"
        ),
        "0"
    );
    assert_eq!(
        s.pg.psql(
            "app",
            "SELECT count(*) FROM pgml.models WHERE algorithm = 'ridge'"
        ),
        "0"
    );
    assert_eq!(
        ok(&s.proxy, &format!("SELECT pgml.predict('width', {point})")),
        before
    );
    let err = s
        .proxy
        .psql(&format!("SELECT pgml.predict('blockproj', {point})"))
        .unwrap_err();
    assert!(err.contains("no deployed model"), "{err}");
    // COMMIT publishes the model.
    run("BEGIN;\nSELECT * FROM pgml.train('committed', 'regression', 'widths', 'petal_width', algorithm => 'linear');\nCOMMIT;\n");
    assert_eq!(
        ok(
            &s.proxy,
            &format!("SELECT pgml.predict('committed', {point}) IS NOT NULL")
        ),
        "t"
    );
    // A failed call fails the block.
    let err = proxy_script(
        "BEGIN;\nSELECT * FROM pgml.train('nope', 'regression', 'no_such_table', 'y');\nSELECT 1;\nCOMMIT;\n",
    )
    .unwrap_err();
    assert!(err.contains("no_such_table"), "{err}");
    let err = proxy_script(
        "\\set ON_ERROR_STOP 0\nBEGIN;\nSELECT * FROM pgml.train('nope', 'regression', 'no_such_table', 'y');\nSELECT 1;\nROLLBACK;\n",
    );
    let text = match err {
        Ok(out) => out,
        Err(e) => e,
    };
    assert!(
        !text.contains("\n1\n") && !text.starts_with("1\n"),
        "{text}"
    );
}

/// A query string of several statements with pgml calls and predictions
/// runs as Postgres runs such a string: in one implicit transaction, each
/// statement's answer in turn, stopping at the first error, which undoes
/// the statements before it (as the same string with an ordinary error
/// does on a direct connection).
#[test]
fn query_strings_with_pgml_calls_run_statement_by_statement() {
    let s = Setup::start();
    let out = ok(
        &s.proxy,
        &format!(
            "CREATE TABLE ms AS SELECT * FROM flowers; \
             SELECT * FROM pgml.train('msproj', 'regression', 'widths', 'petal_width', algorithm => 'linear'); \
             SELECT count(*) FILTER (WHERE pgml.predict('msproj', {F3}) > 1) > 0 FROM ms; \
             SELECT pgml.predict('width', {F3}) = pgml.predict('width', {F3}) FROM ms WHERE id = 1"
        ),
    );
    assert_eq!(out, "msproj|regression|linear|t\nt\nt");
    // The first error stops the string and undoes what came before.
    for (through, sql) in [
        (true, "CREATE TABLE ms2 (x int); SELECT * FROM pgml.train('bad', 'regression', 'no_such_table', 'y'); CREATE TABLE ms3 (x int)"),
        (false, "CREATE TABLE ms2 (x int); SELECT 1/0; CREATE TABLE ms3 (x int)"),
    ] {
        let err = if through {
            s.proxy.psql(sql).unwrap_err()
        } else {
            s.pg.try_psql("app", sql).unwrap_err()
        };
        assert!(err.contains("ERROR"), "{err}");
        let tables = s.pg.psql("app", "SELECT count(*) FROM pg_class WHERE relname IN ('ms2', 'ms3')");
        assert_eq!(tables, "0", "{sql}");
    }
    assert_eq!(
        s.pg.psql(
            "app",
            "SELECT count(*) FROM pgml.projects WHERE name = 'bad'"
        ),
        "0"
    );
    // Inside a block the string is part of it (one Query message).
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = connect(&s.proxy.url("app", "app_pw", "app")).await;
        client.simple_query("BEGIN").await.expect("BEGIN");
        let rows = client
            .simple_query(&format!("CREATE TABLE ms4 (x int); SELECT avg(pgml.predict('width', {F3})) > 0 FROM flowers"))
            .await
            .expect("the string");
        let values: Vec<String> = rows
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(String::from),
                _ => None,
            })
            .collect();
        assert_eq!(values, vec!["t"]);
        client.simple_query("ROLLBACK").await.expect("ROLLBACK");
    });
    assert_eq!(
        s.pg.psql("app", "SELECT count(*) FROM pg_class WHERE relname = 'ms4'"),
        "0"
    );
}

/// The features the general method collects count against `[ml]
/// max_memory_mb` like training data: past it the statement fails with
/// 53200 and changes nothing, the connection goes on, and the statement
/// under the cap works.
#[test]
fn collected_features_are_capped_by_max_memory_mb() {
    let pg = PgCluster::start();
    let port = free_port();
    let config = simple_config(port, &pg, "transaction", 2)
        .replace("[pools.app]", "[ml]\nmax_memory_mb = 1\n\n[pools.app]");
    let proxy = Proxy::start(port, &config);
    ok(&proxy, "CREATE TABLE wide AS SELECT g, g::real AS a, (g % 7)::real AS b, NULL::real AS p FROM generate_series(1, 50000) g");
    ok(
        &proxy,
        "CREATE VIEW train AS SELECT a, b, g % 3 AS y FROM wide WHERE g < 1000",
    );
    ok(
        &proxy,
        "SELECT * FROM pgml.train('capped', 'regression', 'train', 'y', algorithm => 'linear')",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = connect(&proxy.url("app", "app_pw", "app")).await;
        let err = c
            .simple_query("UPDATE wide SET p = pgml.predict('capped', ARRAY[a, b])")
            .await
            .expect_err("over the memory cap");
        assert_eq!(
            err.as_db_error().map(|e| e.code().code()),
            Some("53200"),
            "{err}"
        );
        let n: i64 = c
            .query_one("SELECT count(p) FROM wide", &[])
            .await
            .expect("the connection goes on")
            .get(0);
        assert_eq!(n, 0);
        c.simple_query("UPDATE wide SET p = pgml.predict('capped', ARRAY[a, b]) WHERE g <= 1000")
            .await
            .expect("under the cap");
        let n: i64 = c
            .query_one("SELECT count(p) FROM wide", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1000);
    });
}

/// SQL DEALLOCATE of prepared prediction statements (pgx and PDO evict
/// statements this way) works as on Postgres: the name goes, a second
/// DEALLOCATE of it fails, DEALLOCATE ALL forgets them all (the next use
/// fails); directly the same.
#[test]
fn deallocate_forgets_prediction_statements() {
    let s = Setup::start();
    let script = format!(
        "{}/tests/it/clients/deallocate_predict.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let steps = |url: &str, schema: &str| {
        let out = run(&python(), &[&script, url, schema]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let through = steps(&s.proxy.url("app", "app_pw", "app"), "pgml");
    let direct = steps(&direct_url(&s.pg), "pgml_ref");
    assert_eq!(through, direct, "{}", s.proxy.log());
    assert_eq!(through, "True\nDEALLOCATE\n26000\nDEALLOCATE ALL\n26000");
}
