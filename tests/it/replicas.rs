//! A real primary with real streaming replicas (pg_basebackup -R): routing,
//! load balancing, bans, lag, promotion, servers that are down at start.

use std::time::{Duration, Instant};

use crate::common::*;

/// A pool over `primary` and `replicas`, splitting reads from writes.
pub(crate) fn config(
    port: u16,
    primary: u16,
    replicas: &[u16],
    pool_extra: &str,
    general_extra: &str,
) -> String {
    let mut servers = vec![format!("[\"127.0.0.1\", {primary}, \"primary\"]")];
    servers.extend(
        replicas
            .iter()
            .map(|r| format!("[\"127.0.0.1\", {r}, \"replica\"]")),
    );
    format!(
        r#"[general]
host = "127.0.0.1"
port = {port}
connect_timeout = 1000
ban_time = 2
healthcheck_delay = 100
healthcheck_timeout = 500
{general_extra}

[pools.app]
pool_mode = "transaction"
default_role = "any"
query_parser_enabled = true
query_parser_read_write_splitting = true
primary_reads_enabled = false
{pool_extra}

[pools.app.users.0]
username = "app"
password = "app_pw"
pool_size = 4

[pools.app.shards.0]
servers = [{}]
database = "app"
"#,
        servers.join(", ")
    )
}

async fn in_recovery(c: &tokio_postgres::Client, sql: &str) -> bool {
    c.query_one(sql, &[]).await.expect("query").get(0)
}

/// The port of the server that answered.
async fn server_port(c: &tokio_postgres::Client) -> i32 {
    c.query_one("select inet_server_port()", &[])
        .await
        .expect("port")
        .get(0)
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_replicas_and_writes_to_the_primary() {
    let primary = PgCluster::start();
    let replica = PgCluster::replica_of(&primary);
    let port = free_port();
    let proxy = Proxy::start(port, &config(port, primary.port, &[replica.port], "", ""));
    let c = connect(&proxy.url("app", "app_pw", "app")).await;
    assert!(
        in_recovery(&c, "select pg_is_in_recovery()").await,
        "a read should land on the replica"
    );
    c.batch_execute("create table t(id int)")
        .await
        .expect("DDL goes to the primary");
    c.execute("insert into t values (1)", &[])
        .await
        .expect("write goes to the primary");
    // Functions that write, and locking reads, go to the primary.
    c.batch_execute("create sequence s")
        .await
        .expect("sequence");
    let _: i64 = c
        .query_one("select nextval('s')", &[])
        .await
        .expect("nextval on the primary")
        .get(0);
    let locked = c
        .query("select id from t for update", &[])
        .await
        .expect("FOR UPDATE on the primary");
    assert_eq!(locked.len(), 1);
    // A transaction stays where it started; a lone BEGIN waits for its first statement.
    c.batch_execute("begin").await.expect("begin");
    c.execute("insert into t values (2)", &[])
        .await
        .expect("insert in tx");
    assert!(
        !in_recovery(&c, "select pg_is_in_recovery()").await,
        "still on the primary inside the transaction"
    );
    c.batch_execute("commit").await.expect("commit");
    // An empty transaction never needs a server.
    c.batch_execute("begin").await.expect("begin");
    c.batch_execute("rollback").await.expect("rollback");
    // Row visibility: what was written on the primary is read back from the replica.
    wait_until("replication", Duration::from_secs(5), || {
        replica.try_psql("app", "select count(*) from t").as_deref() == Ok("2")
    });
    // BEGIN READ ONLY is a read transaction: on the replica once it
    // replayed this client's writes (until then, the primary: see the
    // freshness tests).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        c.batch_execute("begin read only").await.expect("begin ro");
        let on_replica = in_recovery(&c, "select pg_is_in_recovery()").await;
        c.batch_execute("commit").await.expect("commit ro");
        if on_replica {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a read-only transaction never reached the replica"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let n: i64 = c
        .query_one("select count(*) from t", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 2);

    // Custom commands.
    let role = |rows: Vec<tokio_postgres::SimpleQueryMessage>| {
        rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
    };
    assert_eq!(
        role(c.simple_query("SHOW SERVER ROLE").await.expect("show")),
        Some("any".into())
    );
    c.simple_query("SET SERVER ROLE TO 'primary'")
        .await
        .expect("set role");
    assert!(
        !in_recovery(&c, "select pg_is_in_recovery()").await,
        "forced to the primary"
    );
    assert_eq!(
        role(c.simple_query("show server role").await.expect("show")),
        Some("primary".into())
    );
    c.simple_query("SET SERVER ROLE TO 'auto'")
        .await
        .expect("set auto");
    // Its statements on the forced primary may have written (they are not
    // parsed): reads go back to the replica once it replayed them.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !in_recovery(&c, "select pg_is_in_recovery()").await {
        assert!(
            Instant::now() < deadline,
            "auto never read from the replica again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.simple_query("SET PRIMARY READS TO 'on'")
        .await
        .expect("primary reads");
    assert_eq!(
        role(c.simple_query("SHOW PRIMARY READS").await.expect("show")),
        Some("on".into())
    );
    let err = c
        .simple_query("SET SERVER ROLE TO 'leader'")
        .await
        .expect_err("bad role");
    assert_eq!(err.code().map(|c| c.code()), Some("22023"));
    let _ = c
        .simple_query("select 1")
        .await
        .expect("usable after a bad command");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_loc_spread_reads_over_two_replicas() {
    let primary = PgCluster::start();
    let r1 = PgCluster::replica_of(&primary);
    let r2 = PgCluster::replica_of(&primary);
    for mode in ["random", "loc"] {
        let port = free_port();
        let cfg = config(
            port,
            primary.port,
            &[r1.port, r2.port],
            &format!("load_balancing_mode = \"{mode}\""),
            "",
        )
        // This test is about spreading load, not health: a monitor check
        // timing out under a loaded CI machine must not ban a replica here.
        .replace("connect_timeout = 1000", "connect_timeout = 10000")
        .replace("healthcheck_timeout = 500", "healthcheck_timeout = 10000");
        let proxy = Proxy::start(port, &cfg);
        let url = proxy.url("app", "app_pw", "app");
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let c = connect(&url).await;
                let mut ports = Vec::new();
                for _ in 0..50 {
                    ports.push(server_port(&c).await);
                }
                ports
            }));
        }
        let mut seen = std::collections::HashMap::new();
        for t in tasks {
            for p in t.await.expect("task") {
                *seen.entry(p).or_insert(0) += 1;
            }
        }
        let on = |p: u16| seen.get(&(p as i32)).copied().unwrap_or(0);
        assert_eq!(
            on(primary.port),
            0,
            "{mode}: reads reached the primary: {seen:?}"
        );
        assert!(
            on(r1.port) >= 20 && on(r2.port) >= 20,
            "{mode}: uneven spread {seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_dying_costs_only_in_flight_queries() {
    let primary = PgCluster::start();
    let r1 = PgCluster::replica_of(&primary);
    let r2 = PgCluster::replica_of(&primary);
    let port = free_port();
    let proxy = Proxy::start(
        port,
        &config(port, primary.port, &[r1.port, r2.port], "", ""),
    );
    let url = proxy.url("app", "app_pw", "app");
    let clients = 3;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loops = Vec::new();
    for _ in 0..clients {
        let url = url.clone();
        let stop = stop.clone();
        loops.push(tokio::spawn(async move {
            let (mut ok, mut failed, mut ports) = (0, 0, std::collections::HashSet::new());
            let mut c = connect(&url).await;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match c.query_one("select inet_server_port()", &[]).await {
                    Ok(row) => {
                        ok += 1;
                        ports.insert(row.get::<_, i32>(0));
                    }
                    Err(_) => {
                        failed += 1;
                        if c.is_closed() {
                            c = connect(&url).await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, failed, ports)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    r1.stop_immediate();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    r1.restart();
    // Back in rotation once its ban (2 s) is over.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    // Count which ports answer from here on, with a fresh client.
    let c = connect(&url).await;
    let mut recent = std::collections::HashSet::new();
    for _ in 0..60 {
        recent.insert(server_port(&c).await);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total_failed = 0;
    let mut total_ok = 0;
    for l in loops {
        let (ok, failed, _) = l.await.expect("loop");
        total_ok += ok;
        total_failed += failed;
    }
    assert!(total_ok > 100, "loops made little progress: {total_ok}");
    assert!(
        total_failed <= clients,
        "{total_failed} queries failed for {clients} clients"
    );
    assert!(
        recent.contains(&(r1.port as i32)),
        "restarted replica not used again: {recent:?}"
    );
    assert!(!recent.contains(&(primary.port as i32)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_gets_no_reads_until_it_catches_up() {
    let primary = PgCluster::start();
    let replica = PgCluster::replica_of(&primary);
    let port = free_port();
    let proxy = Proxy::start(
        port,
        &config(
            port,
            primary.port,
            &[replica.port],
            "max_replica_lag = 1000000",
            "",
        ),
    );
    let c = connect(&proxy.url("app", "app_pw", "app")).await;
    assert!(in_recovery(&c, "select pg_is_in_recovery()").await);
    replica.psql("postgres", "select pg_wal_replay_pause()");
    c.batch_execute("create table big as select g, md5(g::text) from generate_series(1, 100000) g")
        .await
        .expect("write several MB of WAL");
    let deadline = Instant::now() + Duration::from_secs(5);
    while in_recovery(&c, "select pg_is_in_recovery()").await {
        assert!(
            Instant::now() < deadline,
            "lagging replica still gets reads\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    replica.psql("postgres", "select pg_wal_replay_resume()");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !in_recovery(&c, "select pg_is_in_recovery()").await {
        assert!(
            Instant::now() < deadline,
            "caught-up replica not used again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let n: i64 = c
        .query_one("select count(*) from big", &[])
        .await
        .expect("replica has the rows")
        .get(0);
    assert_eq!(n, 100000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_a_promotion_without_config_change() {
    let primary = PgCluster::start();
    let replica = PgCluster::replica_of(&primary);
    let port = free_port();
    // Fail fast instead of waiting for the primary to come back.
    let general = "query_wait_timeout = 0";
    let proxy = Proxy::start(
        port,
        &config(port, primary.port, &[replica.port], "", general),
    );
    let c = connect(&proxy.url("app", "app_pw", "app")).await;
    c.batch_execute("create table t(id int)")
        .await
        .expect("table");
    wait_until("replication", Duration::from_secs(5), || {
        replica.try_psql("app", "select count(*) from t").is_ok()
    });
    primary.stop();
    // The primary is down: writes fail fast and clearly.
    let started = Instant::now();
    let err = c
        .execute("insert into t values (1)", &[])
        .await
        .expect_err("primary down");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        err.is_closed() || err.code().map(|c| c.code()) == Some("08006"),
        "{err}"
    );
    replica.promote();
    let c = connect(&proxy.url("app", "app_pw", "app")).await;
    let promoted = Instant::now();
    loop {
        match c.execute("insert into t values (2)", &[]).await {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    promoted.elapsed() < Duration::from_secs(10),
                    "writes did not follow the promotion: {e}\n{}",
                    proxy.log()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    assert_eq!(
        replica.psql("app", "select count(*) from t where id = 2"),
        "1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_with_a_server_down_and_picks_it_up() {
    let primary = PgCluster::start();
    let replica = PgCluster::replica_of(&primary);
    replica.stop();
    let port = free_port();
    let proxy = Proxy::start(
        port,
        &config(
            port,
            primary.port,
            &[replica.port],
            "replica_fallback_to_primary = true",
            "",
        ),
    );
    let c = connect(&proxy.url("app", "app_pw", "app")).await;
    // Reads fall back to the primary while the only replica is down.
    assert!(!in_recovery(&c, "select pg_is_in_recovery()").await);
    replica.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !in_recovery(&c, "select pg_is_in_recovery()").await {
        assert!(
            Instant::now() < deadline,
            "replica not picked up\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_checked_before_reuse() {
    let primary = PgCluster::start();
    let replica = PgCluster::replica_of(&primary);
    let port = free_port();
    let proxy = Proxy::start(port, &config(port, primary.port, &[replica.port], "", ""));
    let c = connect(&proxy.url("app", "app_pw", "app")).await;
    assert!(
        in_recovery(&c, "select pg_is_in_recovery()").await,
        "first read on the replica"
    );
    // The replica drops the proxy's idle pool connection behind its back.
    let killed = replica.psql(
        "postgres",
        "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity \
         where usename = 'app' and application_name <> 'pgmlcat-monitor') t",
    );
    assert_eq!(killed, "1", "one idle pool connection on the replica");
    tokio::time::sleep(Duration::from_millis(300)).await; // > healthcheck_delay (100 ms)
                                                          // The dead connection is seen at checkout (the socket was closed) or by
                                                          // the health check: the client never sees it.
    for _ in 0..5 {
        c.query_one("select 1", &[])
            .await
            .expect("no error from a dead idle connection");
    }
    // A closed idle connection is retired, not a reason to ban the replica.
    assert!(
        in_recovery(&c, "select pg_is_in_recovery()").await,
        "reads still go to the replica\n{}",
        proxy.log()
    );
}
