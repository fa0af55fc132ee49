//! Server connection lifetimes and the timeouts that protect the pool.

use std::time::{Duration, Instant};

use crate::common::*;

fn with(pg: &PgCluster, port: u16, general: &str, user: &str) -> String {
    simple_config(port, pg, "transaction", 2)
        .replace(
            "connect_timeout = 3000",
            &format!("connect_timeout = 3000\n{general}"),
        )
        .replace(
            "pool_size = 2",
            &if user.lines().any(|l| l.starts_with("pool_size")) {
                user.to_string()
            } else {
                format!("pool_size = 2\n{user}")
            },
        )
}

fn backends(pg: &PgCluster) -> i64 {
    pg.psql(
        "app",
        "select count(*) from pg_stat_activity where usename = 'app'",
    )
    .parse()
    .expect("count")
}

async fn server_pid(c: &tokio_postgres::Client) -> i32 {
    c.query_one("select pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0)
}

/// pgcat's idle_client_in_transaction_timeout: the transaction is rolled
/// back and its server freed; the client's next statement gets 58000
/// ("idle transaction timeout") and the connection goes on. A client whose
/// server holds session state (pinned) is closed instead (25P03), as
/// Postgres closes an idle-in-transaction session: that state is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_in_transaction_is_rolled_back_and_the_server_freed() {
    let pg = PgCluster::start();
    let port = free_port();
    let proxy = Proxy::start(
        port,
        &with(&pg, port, "idle_client_in_transaction_timeout = 500", ""),
    );
    let url = proxy.url("app", "app_pw", "app");
    let stalled = connect(&url).await;
    stalled
        .batch_execute("create table t(x int)")
        .await
        .expect("table");
    stalled
        .batch_execute("begin; insert into t values (1)")
        .await
        .expect("open tx");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Its work was rolled back and the server went back to the pool.
    let idle_in_tx = pg.psql(
        "app",
        "select count(*) from pg_stat_activity where state like 'idle in transaction%'",
    );
    assert_eq!(idle_in_tx, "0");
    let err = stalled
        .simple_query("commit")
        .await
        .expect_err("told about the timeout");
    let db = err.as_db_error().expect("an error from pgmlcat");
    assert_eq!(db.code().code(), "58000", "pgcat's class");
    assert!(db.message().contains("idle transaction timeout"), "{db:?}");
    let n: i64 = stalled
        .query_one("select count(*) from t", &[])
        .await
        .expect("the connection goes on")
        .get(0);
    assert_eq!(n, 0, "rolled back");

    // Pinned by a temporary table: closed, its state went with the rollback.
    let pinned = connect(&url).await;
    pinned
        .batch_execute("create temp table mine(x int)")
        .await
        .expect("pinned");
    pinned
        .batch_execute("begin; insert into mine values (1)")
        .await
        .expect("in a transaction");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let err = pinned.simple_query("commit").await.expect_err("closed");
    assert!(
        err.is_closed() || err.code().map(|c| c.code()) == Some("25P03"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_cancels_long_statements() {
    let pg = PgCluster::start();
    let port = free_port();
    let proxy = Proxy::start(port, &with(&pg, port, "", "statement_timeout = 300"));
    let c = connect(&proxy.url("app", "app_pw", "app")).await;
    let started = Instant::now();
    let err = c
        .simple_query("select pg_sleep(5)")
        .await
        .expect_err("timed out");
    assert_eq!(err.code().map(|c| c.code()), Some("57014"));
    assert!(started.elapsed() < Duration::from_secs(2));
    let v: i32 = c.query_one("select 1", &[]).await.expect("usable").get(0);
    assert_eq!(v, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_lifetime_and_idle_timeout_retire_connections() {
    let pg = PgCluster::start();
    let port = free_port();
    let proxy = Proxy::start(
        port,
        &with(&pg, port, "server_lifetime = 400", "pool_size = 1"),
    );
    let c = connect(&proxy.url("app", "app_pw", "app")).await;
    let first = server_pid(&c).await;
    assert_eq!(server_pid(&c).await, first, "reused while young");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_ne!(
        server_pid(&c).await,
        first,
        "replaced after server_lifetime"
    );

    let port = free_port();
    let proxy = Proxy::start(
        port,
        &with(&pg, port, "idle_timeout = 300", "pool_size = 1"),
    );
    let c = connect(&proxy.url("app", "app_pw", "app")).await;
    let _ = server_pid(&c).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    // The maintenance task closes it once idle past idle_timeout (only the
    // proxy's connections count: pool 1 here, the first proxy's is gone too).
    while backends(&pg) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(backends(&pg), 0, "idle server connections were not closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_pool_size_is_kept_open() {
    let pg = PgCluster::start();
    let port = free_port();
    let proxy = Proxy::start(port, &with(&pg, port, "", "min_pool_size = 2"));
    // No client has connected yet: the pool opens its minimum by itself.
    let deadline = Instant::now() + Duration::from_secs(5);
    while backends(&pg) < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(backends(&pg), 2);
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_transaction_leaves_a_rolled_back_server() {
    let pg = PgCluster::start();
    let port = free_port();
    let proxy = Proxy::start(port, &with(&pg, port, "", "pool_size = 1"));
    let url = proxy.url("app", "app_pw", "app");
    let setup = connect(&url).await;
    setup
        .batch_execute("create table t(x int)")
        .await
        .expect("table");
    drop(setup);
    {
        // Open a transaction, then drop the TCP connection without Terminate.
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        let task = tokio::spawn(conn);
        client
            .batch_execute("begin; insert into t values (1)")
            .await
            .expect("tx");
        task.abort();
        let _ = task.await;
    }
    // Mid-query too: a client that disappears while pg_sleep runs.
    {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        let task = tokio::spawn(conn);
        let q = tokio::spawn(async move { client.simple_query("select pg_sleep(30)").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        task.abort();
        q.abort();
    }
    // The single server connection becomes available again, rolled back.
    let next = connect(&url).await;
    let started = Instant::now();
    let n: i64 = next
        .query_one("select count(*) from t", &[])
        .await
        .expect("server freed")
        .get(0);
    assert_eq!(n, 0, "the vanished client's insert must be rolled back");
    assert!(started.elapsed() < Duration::from_secs(3));
    // The cancel goes out from a task of its own as the connection is
    // dropped, so it may land a moment after the next client's query ran;
    // left running, the sleep would go on for 30 s.
    let sleeping = || {
        pg.psql("app", "select count(*) from pg_stat_activity where query like '%pg_sleep(30)%' and state = 'active' and pid <> pg_backend_pid()")
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while sleeping() != "0" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sleeping(), "0", "the vanished client's query kept running");
}
