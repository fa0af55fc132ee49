//! The pooler core against a real Postgres: protocol flows, pooling modes,
//! prepared statements, parameters, cancel, COPY.

use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::{pin_mut, SinkExt, TryStreamExt};

fn proxy_for(pg: &PgCluster, mode: &str, pool_size: u32) -> Proxy {
    let port = free_port();
    Proxy::start(port, &simple_config(port, pg, mode, pool_size))
}

fn psql_through(proxy: &Proxy, sql: &str) -> std::process::Output {
    run_env(
        "psql",
        &[
            "-X",
            "-w",
            "-qAt",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &proxy.port.to_string(),
            "-U",
            "app",
            "-d",
            "app",
            "-c",
            sql,
        ],
        &[("PGPASSWORD", "app_pw")],
    )
}

#[test]
fn psql_session_through_the_proxy() {
    let pg = PgCluster::start();
    let proxy = proxy_for(&pg, "transaction", 2);
    let out = psql_through(&proxy, "select current_database(), current_user, 40 + 2");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "app|app|42");
    // Multi-statement scripts and errors that leave the session usable.
    let out = psql_through(
        &proxy,
        "create table t(id int primary key, v text); insert into t values (1,'a'),(2,'b'); select count(*) from t",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    assert_eq!(
        pg.psql("app", "select string_agg(v, ',' order by id) from t"),
        "a,b"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_and_prepared_statements_across_servers() {
    let pg = PgCluster::start();
    let proxy = proxy_for(&pg, "transaction", 3);
    let url = proxy.url("app", "app_pw", "app");
    let setup = connect(&url).await;
    setup
        .batch_execute("create table kv(k int primary key, v text); insert into kv select g, 'v' || g from generate_series(1, 100) g")
        .await
        .expect("setup");
    // Several clients, each preparing once and executing many times; with a
    // pool of 3 their transactions land on different server connections.
    let mut tasks = Vec::new();
    for c in 0..8 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = connect(&url).await;
            let stmt = client
                .prepare("select v from kv where k = $1")
                .await
                .expect("prepare");
            for i in 0..200 {
                let k = (i * 7 + c) % 100 + 1;
                let row = client
                    .query_one(&stmt, &[&k])
                    .await
                    .expect("execute prepared");
                let v: String = row.get(0);
                assert_eq!(v, format!("v{k}"));
            }
            // A typed statement with two parameters, and one that errors.
            let add = client
                .prepare("select $1::int8 + $2::int8")
                .await
                .expect("prepare add");
            let row = client.query_one(&add, &[&40i64, &2i64]).await.expect("add");
            assert_eq!(row.get::<_, i64>(0), 42);
            let err = client
                .query("select 1/0", &[])
                .await
                .expect_err("division by zero");
            assert_eq!(err.code().map(|c| c.code()), Some("22012"));
            let row = client
                .query_one(&stmt, &[&5i32])
                .await
                .expect("usable after error");
            assert_eq!(row.get::<_, String>(0), "v5");
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    // Statements live on the servers under shared names, not one per client.
    let n: i64 = pg
        .psql(
            "app",
            "select count(*) from pg_stat_activity where datname = 'app' and usename = 'app'",
        )
        .parse()
        .expect("count");
    assert!(n <= 4, "pool of 3 (+1 for this check) but {n} backends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_stay_on_one_server_and_session_state_is_reset() {
    let pg = PgCluster::start();
    let proxy = proxy_for(&pg, "transaction", 1);
    let url = proxy.url("app", "app_pw", "app");
    let a = connect(&url).await;
    let b = connect(&url).await;
    // A session-level SET by one client must not leak to the other.
    a.batch_execute("set work_mem = '7MB'").await.expect("set");
    let wm: String = b
        .query_one("show work_mem", &[])
        .await
        .expect("show")
        .get(0);
    assert_ne!(wm, "7MB", "session state leaked between clients");
    // A transaction keeps its server: temp table visible inside it.
    a.batch_execute("begin; create temp table tt(x int) on commit drop; insert into tt values (1)")
        .await
        .expect("begin");
    let n: i64 = a
        .query_one("select count(*) from tt", &[])
        .await
        .expect("in tx")
        .get(0);
    assert_eq!(n, 1);
    a.batch_execute("commit").await.expect("commit");
    // Reported parameters follow the client across servers.
    a.batch_execute("set timezone = 'Asia/Tokyo'")
        .await
        .expect("set tz");
    b.batch_execute("set timezone = 'UTC'")
        .await
        .expect("set tz b");
    let tz: String = a.query_one("show timezone", &[]).await.expect("tz").get(0);
    assert_eq!(tz, "Asia/Tokyo");
    let tz: String = b.query_one("show timezone", &[]).await.expect("tz").get(0);
    assert_eq!(tz, "UTC");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_keeps_state_and_discards_it_on_leave() {
    let pg = PgCluster::start();
    let proxy = proxy_for(&pg, "session", 1);
    let url = proxy.url("app", "app_pw", "app");
    {
        let a = connect(&url).await;
        a.batch_execute("set work_mem = '9MB'; prepare p as select 1")
            .await
            .expect("set");
        let wm: String = a
            .query_one("show work_mem", &[])
            .await
            .expect("show")
            .get(0);
        assert_eq!(wm, "9MB");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = connect(&url).await;
    let wm: String = b
        .query_one("show work_mem", &[])
        .await
        .expect("show")
        .get(0);
    assert_ne!(
        wm, "9MB",
        "DISCARD ALL did not run when the session client left"
    );
    let n: i64 = b
        .query_one(
            "select count(*) from pg_prepared_statements where name = 'p'",
            &[],
        )
        .await
        .expect("ps")
        .get(0);
    assert_eq!(n, 0, "the previous client's prepared statement survived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_exhausted_gives_58000_and_client_stays_usable() {
    let pg = PgCluster::start();
    let port = free_port();
    let config = one_server_config(port, &pg, 500);
    let proxy = Proxy::start(port, &config);
    let url = proxy.url("app", "app_pw", "app");
    let holder = connect(&url).await;
    holder
        .batch_execute("begin; select 1")
        .await
        .expect("hold the only server");
    let waiter = connect(&url).await;
    let started = Instant::now();
    let err = waiter
        .simple_query("select 1")
        .await
        .expect_err("pool exhausted");
    let db = err.as_db_error().expect("a server error");
    assert_eq!(
        db.code().code(),
        "58000",
        "pgcat's class for a failed checkout"
    );
    assert!(db.message().contains("exhausted"), "{}", db.message());
    assert!(started.elapsed() < Duration::from_secs(3));
    holder.batch_execute("commit").await.expect("release");
    let row = waiter
        .query_one("select 2", &[])
        .await
        .expect("usable after 58000");
    assert_eq!(row.get::<_, i32>(0), 2);
}

/// pgcat's checkout_failure_limit: unset, failed checkouts never close a
/// client; set to 2, the second failure's error says so and the connection
/// closes (the client's next statement finds it closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_failure_limit_closes_a_client_only_when_set() {
    let pg = PgCluster::start();
    let port = free_port();
    let config = one_server_config(port, &pg, 200);
    let limited = config.replace("[pools.app]\n", "[pools.app]\ncheckout_failure_limit = 2\n");
    assert_ne!(limited, config);
    for (cfg, limit) in [(&config, None), (&limited, Some(2))] {
        let proxy = Proxy::start(port, cfg);
        let url = proxy.url("app", "app_pw", "app");
        let holder = connect(&url).await;
        holder
            .batch_execute("begin; select 1")
            .await
            .expect("hold the only server");
        let waiter = connect(&url).await;
        for attempt in 1..=3 {
            let err = waiter
                .simple_query("select 1")
                .await
                .expect_err("pool exhausted");
            if limit == Some(attempt) {
                // This statement's error says why; then the connection goes.
                let db = err.as_db_error().expect("an error from pgmlcat");
                assert_eq!(db.code().code(), "58000");
                assert!(db.message().contains("checkout failure limit"), "{db:?}");
                break;
            }
            assert_eq!(err.code().map(|c| c.code()), Some("58000"), "{err}");
            assert!(!waiter.is_closed(), "attempt {attempt}: {err}");
        }
        holder.batch_execute("commit").await.expect("release");
        let after = waiter.simple_query("select 2").await;
        match limit {
            Some(_) => assert!(after.is_err() && waiter.is_closed(), "closed at the limit"),
            None => {
                after.expect("no limit: the client goes on");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_running_query() {
    let pg = PgCluster::start();
    let proxy = proxy_for(&pg, "transaction", 2);
    let client = connect(&proxy.url("app", "app_pw", "app")).await;
    assert_cancel_reaches_the_server(&client).await;
}

/// Cancels a `pg_sleep(10)` after 300 ms: 57014 within a second, and the
/// client's next query works.
async fn assert_cancel_reaches_the_server(client: &tokio_postgres::Client) {
    let token = client.cancel_token();
    let cancel = async move {
        token
            .cancel_query(tokio_postgres::NoTls)
            .await
            .expect("send cancel");
    };
    assert_sleep_cancelled(client, cancel, Duration::from_millis(1300)).await;
}

/// A server `host` that is a directory is the server's Unix socket, as in
/// libpq and PgBouncer: the server sees a local connection, and queries,
/// prepared statements, transactions and cancel work as over TCP. A
/// directory without the socket is an unreachable server (08006).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_behind_a_unix_socket() {
    let pg = PgCluster::start();
    let port = free_port();
    let tcp_server = r#"servers = [["127.0.0.1", "#;
    let base = simple_config(port, &pg, "transaction", 2);
    assert!(base.contains(tcp_server));
    let mut config = base
        .replace(
            tcp_server,
            &format!(r#"servers = [["{}/", "#, pg.sock.display()),
        )
        // The pool without a socket fails at once instead of waiting.
        .replacen("[general]\n", "[general]\nquery_wait_timeout = 0\n", 1);
    config.push_str(&format!(
        r#"
[pools.nosocket]
pool_mode = "transaction"
[pools.nosocket.users.0]
username = "app"
password = "app_pw"
pool_size = 1
[pools.nosocket.shards.0]
servers = [["/nonexistent-dir", {}, "primary"]]
database = "app"
"#,
        pg.port
    ));
    let proxy = Proxy::start(port, &config);
    let client = connect(&proxy.url("app", "app_pw", "app")).await;

    let local = client
        .query_one(
            "select inet_server_addr() is null and client_addr is null \
             from pg_stat_activity where pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("query over the unix socket");
    assert!(
        local.get::<_, bool>(0),
        "the server leg is not a unix socket"
    );

    let stmt = client.prepare("select $1::int + 1").await.expect("prepare");
    for i in 0..5 {
        let row = client.query_one(&stmt, &[&i]).await.expect("execute");
        assert_eq!(row.get::<_, i32>(0), i + 1);
    }
    client
        .batch_execute("begin; create temp table t(x int); insert into t values (7);")
        .await
        .expect("transaction");
    let row = client
        .query_one("select x from t", &[])
        .await
        .expect("same server inside the transaction");
    assert_eq!(row.get::<_, i32>(0), 7);
    client.batch_execute("rollback").await.expect("rollback");

    assert_cancel_reaches_the_server(&client).await;

    let err = tokio_postgres::connect(
        &proxy.url("app", "app_pw", "nosocket"),
        tokio_postgres::NoTls,
    )
    .await;
    let err = match err {
        Ok((c, conn)) => {
            tokio::spawn(conn);
            c.simple_query("select 1").await.expect_err("no server")
        }
        Err(e) => e,
    };
    assert_eq!(err.code().map(|c| c.code()), Some("08006"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_round_trip_a_million_rows() {
    let pg = PgCluster::start();
    let proxy = proxy_for(&pg, "transaction", 2);
    let client = connect(&proxy.url("app", "app_pw", "app")).await;
    client
        .batch_execute("create table src(id int, v text); create table dst(id int, v text)")
        .await
        .expect("tables");
    client
        .batch_execute("insert into src select g, md5(g::text) from generate_series(1, 1000000) g")
        .await
        .expect("fill");
    // COPY TO STDOUT through the proxy, straight into COPY FROM STDIN through the proxy.
    let reader = client
        .copy_out("copy src to stdout")
        .await
        .expect("copy out");
    let writer_client = connect(&proxy.url("app", "app_pw", "app")).await;
    let sink = writer_client
        .copy_in("copy dst from stdin")
        .await
        .expect("copy in");
    pin_mut!(reader);
    pin_mut!(sink);
    let mut bytes = 0usize;
    while let Some(chunk) = reader.try_next().await.expect("copy out chunk") {
        bytes += chunk.len();
        sink.send(chunk).await.expect("copy in chunk");
    }
    let rows = sink.finish().await.expect("copy in finish");
    assert_eq!(rows, 1_000_000);
    assert!(bytes > 30_000_000);
    let sum = |t: &str| {
        pg.psql(
            "app",
            &format!("select count(*), sum(hashtext(id || v)) from {t}"),
        )
    };
    assert_eq!(sum("src"), sum("dst"));
    let _ = client.simple_query("select 1").await.expect("still usable");
}

/// Peak resident memory of a process (VmHWM), in kB.
fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("proc status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .expect("VmHWM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_result_streams_in_bounded_memory() {
    let pg = PgCluster::start();
    let proxy = proxy_for(&pg, "transaction", 2);
    let client = connect(&proxy.url("app", "app_pw", "app")).await;
    // 1 GiB of rows, including some 4 MB rows that must be passed through in pieces.
    let sql = "copy (select repeat('x', 1024) from generate_series(1, 1048576) \
               union all select repeat('y', 4 << 20) from generate_series(1, 4)) to stdout";
    let reader = client.copy_out(sql).await.expect("copy out");
    pin_mut!(reader);
    let mut bytes = 0u64;
    while let Some(chunk) = reader.try_next().await.expect("chunk") {
        bytes += chunk.len() as u64;
    }
    assert!(bytes > 1 << 30, "{bytes}");
    // The same through a plain SELECT (DataRows instead of CopyData).
    let rows = client
        .simple_query("select repeat('z', 1 << 20) from generate_series(1, 64)")
        .await
        .expect("wide rows");
    let data_rows = rows
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count();
    assert_eq!(data_rows, 64);
    let peak = peak_rss_kb(proxy.pid());
    assert!(
        peak < 64 * 1024,
        "proxy peak RSS {peak} kB for a 1 GiB result"
    );
}

/// pgcat's `tcp_keepalives_idle/_interval/_count` apply to the proxy's
/// sockets (pgcat's spec reads them with `ss`): a server connection idle in
/// the pool waits the configured time before its first keepalive probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_keepalives_follow_the_config() {
    let pg = PgCluster::start();
    let port = free_port();
    let config = simple_config(port, &pg, "transaction", 2).replace(
        "connect_timeout = 3000",
        "connect_timeout = 3000\ntcp_keepalives_idle = 37\ntcp_keepalives_interval = 11\ntcp_keepalives_count = 3",
    );
    let proxy = Proxy::start(port, &config);
    let c = connect(&proxy.url("app", "app_pw", "app")).await;
    c.simple_query("select 1").await.expect("query");
    // The proxy's end of its server connection: source any, destination pg.
    let out = run(
        "ss",
        &[
            "-tnoH",
            "state",
            "established",
            &format!("( dport = :{} )", pg.port),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let timers: Vec<u64> = text
        .split("timer:(keepalive,")
        .skip(1)
        .filter_map(|t| {
            let secs = t.split(|c: char| !c.is_ascii_digit() && c != '.').next()?;
            secs.parse::<f64>().ok().map(|s| s.ceil() as u64)
        })
        .collect();
    assert!(
        !timers.is_empty(),
        "no keepalive timer on the server connection: {text}"
    );
    assert!(
        timers.iter().all(|s| (20..=37).contains(s)),
        "first probe after tcp_keepalives_idle = 37 s: {timers:?} ({text})"
    );
}
