//! Session parameters follow the client in transaction mode: SET, RESET,
//! SET LOCAL, a rolled-back SET, set_config and the startup `options`, over
//! many statements while the client provably changes server connections and
//! other clients use the same servers. Each scenario also runs directly
//! against Postgres, where it must give the same answers.

use std::collections::HashSet;

use crate::common::*;

async fn show(c: &tokio_postgres::Client, name: &str) -> String {
    c.query_one(&format!("show {name}"), &[])
        .await
        .unwrap_or_else(|e| panic!("show {name}: {e}"))
        .get(0)
}

async fn backend_pid(c: &tokio_postgres::Client) -> i32 {
    c.query_one("select pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0)
}

/// The scenario, through `url`; returns the server pids the client ran on.
async fn set_scenario(url: &str) -> HashSet<i32> {
    let a = connect(url).await;
    let bystander = connect(url).await;
    let holder = connect(url).await;
    a.batch_execute("SET search_path TO s2, public; SET statement_timeout = '1234ms'")
        .await
        .expect("set");
    let mut pids = HashSet::new();
    for i in 0..24 {
        // Every other round another client holds a server in a transaction,
        // so the client under test lands on the other one.
        let hold = i % 2 == 0;
        if hold {
            holder.batch_execute("BEGIN").await.expect("begin");
        }
        let n: i64 = a
            .query_one("select count(*) from only_here", &[])
            .await
            .unwrap_or_else(|e| panic!("round {i}: the search_path was lost: {e}"))
            .get(0);
        assert_eq!(n, 1);
        assert_eq!(show(&a, "statement_timeout").await, "1234ms", "round {i}");
        pids.insert(backend_pid(&a).await);
        if hold {
            holder.batch_execute("COMMIT").await.expect("commit");
        }
        // Nothing leaks to a client that never set anything.
        assert_eq!(
            show(&bystander, "statement_timeout").await,
            "0",
            "round {i}"
        );
        assert_eq!(show(&bystander, "search_path").await, "\"$user\", public");
    }

    // A SET in a transaction that rolls back does not persist; SET LOCAL
    // lasts for its transaction only.
    a.batch_execute("BEGIN; SET search_path TO public; ROLLBACK")
        .await
        .expect("rolled back");
    assert_eq!(show(&a, "search_path").await, "s2, public");
    a.batch_execute("BEGIN; SET LOCAL statement_timeout = '5s'")
        .await
        .expect("set local");
    assert_eq!(show(&a, "statement_timeout").await, "5s");
    a.batch_execute("COMMIT").await.expect("commit");
    assert_eq!(show(&a, "statement_timeout").await, "1234ms");

    // set_config(..., false) is a SET; RESET takes a value back.
    a.simple_query("select set_config('work_mem', '3MB', false)")
        .await
        .expect("set_config");
    a.batch_execute("RESET statement_timeout")
        .await
        .expect("reset");
    for i in 0..4 {
        if i % 2 == 0 {
            holder.batch_execute("BEGIN").await.expect("begin");
        }
        assert_eq!(show(&a, "work_mem").await, "3MB", "round {i}");
        assert_eq!(show(&a, "statement_timeout").await, "0", "round {i}");
        assert_eq!(show(&a, "search_path").await, "s2, public", "round {i}");
        pids.insert(backend_pid(&a).await);
        if i % 2 == 0 {
            holder.batch_execute("COMMIT").await.expect("commit");
        }
        assert_eq!(show(&bystander, "work_mem").await, "4MB");
    }
    // set_config of a parameter the server does not report, through the
    // extended protocol (a prepared statement with a parameter).
    a.query_one("select set_config('search_path', $1, false)", &[&"public"])
        .await
        .expect("set_config, extended");
    for i in 0..4 {
        if i % 2 == 0 {
            holder.batch_execute("BEGIN").await.expect("begin");
        }
        assert_eq!(show(&a, "search_path").await, "public", "round {i}");
        pids.insert(backend_pid(&a).await);
        if i % 2 == 0 {
            holder.batch_execute("COMMIT").await.expect("commit");
        }
    }
    a.batch_execute("SET search_path TO s2, public")
        .await
        .expect("set again");
    // An invalid value is the server's error, as directly, and changes nothing.
    let err = a
        .batch_execute("SET statement_timeout = 'soon'")
        .await
        .expect_err("invalid value");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE)
    );
    assert_eq!(show(&a, "statement_timeout").await, "0");
    pids
}

fn prepare(pg: &PgCluster) {
    pg.psql(
        "app",
        "create schema s2; create table s2.only_here(x int); insert into s2.only_here values (1)",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_follows_the_client_across_servers() {
    let pg = PgCluster::start();
    prepare(&pg);
    let direct = set_scenario(&direct_url(&pg)).await;
    assert_eq!(direct.len(), 1, "directly, one backend");

    let port = free_port();
    let proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 2));
    let pooled = set_scenario(&proxy.url("app", "app_pw", "app")).await;
    assert!(
        pooled.len() >= 2,
        "the client must have changed servers to prove anything: {pooled:?}"
    );
}

/// libpq's `options` (and PGOPTIONS): `-c name=value` items are session
/// parameters of the client, on every server it lands on.
async fn options_scenario(url: &str) -> HashSet<i32> {
    let url = format!("{url} options='-c search_path=s2,public -c statement_timeout=4321'");
    let a = connect(&url).await;
    let holder = connect(&url).await;
    let mut pids = HashSet::new();
    for i in 0..20 {
        if i % 2 == 0 {
            holder.batch_execute("BEGIN").await.expect("begin");
        }
        let n: i64 = a
            .query_one("select count(*) from only_here", &[])
            .await
            .unwrap_or_else(|e| panic!("round {i}: options were ignored: {e}"))
            .get(0);
        assert_eq!(n, 1);
        assert_eq!(show(&a, "statement_timeout").await, "4321ms");
        pids.insert(backend_pid(&a).await);
        if i % 2 == 0 {
            holder.batch_execute("COMMIT").await.expect("commit");
        }
    }
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_options_are_session_parameters() {
    let pg = PgCluster::start();
    prepare(&pg);
    let direct = options_scenario(&direct_url(&pg)).await;
    assert_eq!(direct.len(), 1);

    let port = free_port();
    let proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 2));
    let pooled = options_scenario(&proxy.url("app", "app_pw", "app")).await;
    assert!(pooled.len() >= 2, "{pooled:?}");
}

/// Reported parameters under churn: 8 clients on a pool of 3, each with its
/// own TimeZone and IntervalStyle (set with SET, with set_config, or never),
/// 1,000+ statements in all; every statement runs with its client's values.
async fn churn_scenario(url: &str) -> usize {
    let zones = ["UTC", "Asia/Tokyo", "America/New_York", "Europe/Paris"];
    let mut tasks = Vec::new();
    for i in 0..8usize {
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let c = connect(&url).await;
            let default_zone = show(&c, "TimeZone").await;
            let (zone, style) = match i % 3 {
                0 => {
                    let zone = zones[i % zones.len()];
                    c.batch_execute(&format!(
                        "SET TIME ZONE '{zone}'; SET IntervalStyle = 'iso_8601'"
                    ))
                    .await
                    .expect("set");
                    (zone.to_string(), "iso_8601")
                }
                1 => {
                    let zone = zones[(i + 1) % zones.len()];
                    c.simple_query(&format!(
                        "select set_config('TimeZone', '{zone}', false), \
                         set_config('IntervalStyle', 'sql_standard', false)"
                    ))
                    .await
                    .expect("set_config");
                    (zone.to_string(), "sql_standard")
                }
                _ => (default_zone, "postgres"),
            };
            for n in 0..130 {
                let row = c
                    .query_one(
                        "select current_setting('TimeZone'), current_setting('IntervalStyle')",
                        &[],
                    )
                    .await
                    .expect("statement");
                let (z, s): (String, String) = (row.get(0), row.get(1));
                assert_eq!(
                    (z.as_str(), s.as_str()),
                    (zone.as_str(), style),
                    "client {i}, statement {n}"
                );
            }
            130
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("client task");
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reported_parameters_under_churn() {
    let pg = PgCluster::start();
    assert_eq!(churn_scenario(&direct_url(&pg)).await, 1040);
    let port = free_port();
    let proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 3));
    assert_eq!(
        churn_scenario(&proxy.url("app", "app_pw", "app")).await,
        1040
    );
}

/// pgcat's state clearance, read in the server's statement log as its spec
/// reads pg_stat_statements: in session mode a client that SET nothing
/// leaves with DISCARD ALL alone (no RESET ALL); one that SET a parameter
/// also gets RESET ROLE and RESET ALL; and the next client sees the
/// server's defaults either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_sends_reset_all_only_after_a_set() {
    let pg = PgCluster::start();
    pg.psql("postgres", "ALTER SYSTEM SET log_statement = 'all'");
    pg.psql("postgres", "SELECT pg_reload_conf()");
    let port = free_port();
    let proxy = Proxy::start(port, &simple_config(port, &pg, "session", 1));
    let url = proxy.url("app", "app_pw", "app");
    let resets = |pg: &PgCluster| pg.log().matches("statement: RESET ROLE; RESET ALL").count();
    for _ in 0..3 {
        let c = connect(&url).await;
        c.simple_query("select 1").await.expect("select");
        drop(c);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(resets(&pg), 0, "nothing was set: no RESET ALL");
    for _ in 0..3 {
        let c = connect(&url).await;
        c.simple_query("set statement_timeout to 5000")
            .await
            .expect("set");
        drop(c);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let c = connect(&url).await;
    assert_eq!(show(&c, "statement_timeout").await, "0", "not leaked");
    assert_eq!(
        resets(&pg),
        3,
        "one RESET ALL per client that SET\n{}",
        pg.log()
    );
}
