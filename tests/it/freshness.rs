//! Reads that see the client's own writes, and lag bounds, on a real
//! primary with real streaming replicas whose replay is held back by
//! `recovery_min_apply_delay`: what a direct connection to a replica would
//! get wrong, through pgmlcat it gets right.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::replicas::config;

/// Holds back the replay of commits on `replica` by `delay`.
fn delay_replay(replica: &PgCluster, delay: &str) {
    replica.psql(
        "postgres",
        &format!("alter system set recovery_min_apply_delay = '{delay}'"),
    );
    replica.psql("postgres", "select pg_reload_conf()");
}

/// Waits until `replica` has table t.
fn wait_for_table(replica: &PgCluster) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while replica.try_psql("app", "select 1 from t limit 1").is_err() {
        assert!(Instant::now() < deadline, "t never reached the replica");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A primary with table t (id int) for app, and two streaming replicas
/// that have it and replay `delay` late.
pub(crate) fn lagging_replicas(delay: &str) -> (PgCluster, [PgCluster; 2]) {
    let primary = PgCluster::start();
    let replicas = [
        PgCluster::replica_of(&primary),
        PgCluster::replica_of(&primary),
    ];
    primary.psql("app", "create table t (id int)");
    primary.psql("app", "grant all on t to app");
    primary.psql("postgres", "select pg_switch_wal()");
    for r in &replicas {
        wait_for_table(r);
        delay_replay(r, delay);
    }
    (primary, replicas)
}

/// `replicas::config` for these tests, where reads go is what they
/// watch: a replica is banned (and its reads sent to the primary) when a
/// health check or a checkout outlasts its timeout, as in pgcat, so each
/// may take 5 s, not 0.5 and 1, and each server takes 20 connections, not
/// 4, for the many clients some of these tests run at once on a loaded
/// machine.
pub(crate) fn patient_config(
    port: u16,
    primary: u16,
    replicas: &[u16],
    pool_extra: &str,
) -> String {
    config(port, primary, replicas, pool_extra, "")
        .replace("healthcheck_timeout = 500", "healthcheck_timeout = 5000")
        .replace("connect_timeout = 1000", "connect_timeout = 5000")
        .replace("pool_size = 4", "pool_size = 20")
}

/// (rows with `id`, whether a replica answered).
async fn read_back(c: &tokio_postgres::Client, id: i32, simple: bool) -> (i64, bool) {
    let sql = "select count(*), pg_is_in_recovery() from t where id = $1";
    if simple {
        let rows = c
            .simple_query(&sql.replace("$1", &id.to_string()))
            .await
            .expect("read");
        let row = rows
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .expect("a row");
        (
            row.get(0).and_then(|v| v.parse().ok()).expect("count"),
            row.get(1) == Some("t"),
        )
    } else {
        let row = c.query_one(sql, &[&id]).await.expect("read");
        (row.get(0), row.get(1))
    }
}

/// `pairs` insert-then-read pairs, alternating simple and extended
/// protocol: (stale reads, reads a replica answered).
async fn pairs(
    writer: &tokio_postgres::Client,
    reader: &tokio_postgres::Client,
    from: i32,
    pairs: i32,
) -> (u32, u32) {
    let (mut stale, mut on_replica) = (0, 0);
    for id in from..from + pairs {
        let simple = id % 2 == 0;
        if simple {
            writer
                .simple_query(&format!("insert into t values ({id})"))
                .await
                .expect("insert");
        } else {
            writer
                .execute("insert into t values ($1)", &[&id])
                .await
                .expect("insert");
        }
        let (n, replica) = read_back(reader, id, simple).await;
        stale += u32::from(n == 0);
        on_replica += u32::from(replica);
    }
    (stale, on_replica)
}

/// 1,000 insert-then-read pairs through pgmlcat read nothing stale while
/// the replicas replay 300 ms late, and a client that wrote nothing reads
/// from replicas all along. The same pairs straight to a replica, and
/// through pgmlcat with `read_your_writes = false` (pgcat's routing), read
/// stale rows: the test sees staleness when there is some.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_see_the_clients_writes_while_replicas_lag() {
    let (primary, replicas) = lagging_replicas("300ms");
    let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();

    // Directly: written on the primary, read on a replica.
    let direct_primary = connect(&direct_url(&primary)).await;
    let direct_replica = connect(&direct_url(&replicas[0])).await;
    let (stale, _) = pairs(&direct_primary, &direct_replica, 1_000_000, 20).await;
    assert!(
        stale > 0,
        "a lagging replica read directly shows no staleness: the test would prove nothing"
    );

    let port = free_port();
    let proxy = Proxy::start(port, &patient_config(port, primary.port, &ports, ""));
    let url = proxy.url("app", "app_pw", "app");
    let writer = connect(&url).await;
    let bystander = connect(&url).await;
    let watch = tokio::spawn(async move {
        // A client that never writes: every read on a replica.
        let mut reads = 0u32;
        let mut on_primary = 0u32;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            let (_, replica) = read_back(&bystander, 0, reads.is_multiple_of(2)).await;
            reads += 1;
            on_primary += u32::from(!replica);
        }
        (reads, on_primary)
    });
    let (stale, on_replica) = pairs(&writer, &writer, 1, 1000).await;
    assert_eq!(stale, 0, "stale reads through pgmlcat\n{}", proxy.log());
    // A read reaches a replica only once it replayed the write, 300 ms
    // after the commit: right after it, only on a machine that stalled
    // that long between the two (stale reads, above, must never happen).
    assert!(
        on_replica <= 10,
        "{on_replica} reads right after a write went to a replica 300 ms behind"
    );
    let (reads, on_primary) = watch.await.expect("bystander");
    assert!(reads > 10);
    assert_eq!(
        on_primary, 0,
        "a client that never wrote read from the primary"
    );

    // Once the replicas replayed the last write, its reads go back to them.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !read_back(&writer, 1, false).await.1 {
        assert!(
            Instant::now() < deadline,
            "the writer's reads never went back to the replicas"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // pgcat's routing: the same pairs read stale rows.
    let port = free_port();
    let pgcat_like = Proxy::start(
        port,
        &patient_config(port, primary.port, &ports, "read_your_writes = false"),
    );
    let c = connect(&pgcat_like.url("app", "app_pw", "app")).await;
    let (stale, _) = pairs(&c, &c, 2_000_000, 20).await;
    assert!(
        stale > 0,
        "without read_your_writes the replicas should have served stale reads"
    );
}

/// `/* max_lag_ms: N */` and `SET pgmlcat.max_lag_ms` send a read only to
/// replicas no further behind than N (else the primary), while writes
/// stream on; a bad value is 22023 and the client goes on; a transaction
/// a bounded read placed on the primary and which then wrote is waited
/// for like any write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lag_bound_routes_to_replicas_close_enough() {
    let primary = PgCluster::start();
    let (late, close) = (
        PgCluster::replica_of(&primary),
        PgCluster::replica_of(&primary),
    );
    primary.psql("app", "create table t (id int)");
    primary.psql("app", "grant all on t to app");
    primary.psql("postgres", "select pg_switch_wal()");
    wait_for_table(&late);
    wait_for_table(&close);
    delay_replay(&late, "1s");
    let port = free_port();
    let proxy = Proxy::start(
        port,
        &config(port, primary.port, &[late.port, close.port], "", ""),
    );
    let url = proxy.url("app", "app_pw", "app");
    // Writes commit all along, so a late replica is behind in time.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writing = {
        let (stop, direct) = (stop.clone(), direct_url(&primary));
        tokio::spawn(async move {
            let c = connect(&direct).await;
            // Test clusters commit asynchronously: WAL would reach even a
            // prompt replica only at the WAL writer's pace.
            c.batch_execute("set synchronous_commit = on")
                .await
                .expect("set");
            let mut id = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                id += 1;
                c.execute("insert into t values ($1)", &[&id])
                    .await
                    .expect("write");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let c = connect(&url).await;
    // Each form, and no bound: which servers answer 60 reads.
    let mut seen = std::collections::HashMap::<&str, std::collections::HashSet<u16>>::new();
    for (label, sql) in [
        ("tight", "/* max_lag_ms: 200 */ select inet_server_port()"),
        ("loose", "select inet_server_port() /* max_lag_ms: 10000 */"),
        ("none", "select inet_server_port()"),
    ] {
        for _ in 0..60 {
            seen.entry(label)
                .or_default()
                .insert(port_of(&c, sql).await);
        }
    }
    let tight = &seen["tight"];
    assert!(
        !tight.contains(&late.port),
        "a replica 1 s behind served a read bounded to 200 ms: {seen:?}"
    );
    assert!(
        tight.contains(&close.port),
        "the close replica never served the bounded read: {seen:?}"
    );
    assert!(
        seen["loose"].contains(&late.port),
        "a loose bound kept the late replica out: {seen:?}"
    );
    assert!(
        !seen["none"].contains(&primary.port),
        "an unbounded read went to the primary: {seen:?}"
    );

    // The same bound as a session parameter; RESET lifts it.
    c.batch_execute("set pgmlcat.max_lag_ms = 200")
        .await
        .expect("set");
    let mut set_seen = std::collections::HashSet::new();
    for _ in 0..60 {
        set_seen.insert(port_of(&c, "select inet_server_port()").await);
    }
    assert!(
        !set_seen.contains(&late.port),
        "SET pgmlcat.max_lag_ms was not followed: {set_seen:?}"
    );
    let shown: String = c
        .query_one("show pgmlcat.max_lag_ms", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(shown, "200");

    // Both replicas late: a tight bound sends the read to the primary.
    delay_replay(&close, "1s");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(port_of(&c, "select inet_server_port()").await, primary.port);
    c.batch_execute("reset pgmlcat.max_lag_ms")
        .await
        .expect("reset");
    // The RESET ran on the primary but wrote nothing: reads go back to
    // the replicas (while they are 1 s behind the writer's commits).
    let deadline = Instant::now() + Duration::from_secs(5);
    while port_of(&c, "select inet_server_port()").await == primary.port {
        assert!(
            Instant::now() < deadline,
            "unbounded reads never went back to the replicas"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A bad value: 22023 at the read it would route, and the client goes on.
    c.batch_execute("set pgmlcat.max_lag_ms = 'soon'")
        .await
        .expect("Postgres takes any text");
    let err = c
        .query_one("select 1", &[])
        .await
        .expect_err("a bound that is not a number");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE),
        "{err:?}"
    );
    c.batch_execute("reset pgmlcat.max_lag_ms")
        .await
        .expect("reset after the error");
    let row = c.query_one("select 1", &[]).await.expect("usable");
    assert_eq!(row.get::<_, i32>(0), 1);

    // A transaction a bounded read placed on the primary, which then
    // writes: its commit is a write like any other, in the simple and in
    // the extended protocol.
    for (id, simple) in [(-1, true), (-2, false)] {
        let deadline = Instant::now() + Duration::from_secs(5);
        while port_of(&c, "select inet_server_port()").await == primary.port {
            assert!(Instant::now() < deadline, "reads never left the primary");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Both replicas are 1 s behind while the writer commits; a loaded
        // machine can stall it long enough for them to catch up, so a
        // bounded read that found one close enough is tried again.
        let mut tries = 0;
        loop {
            c.batch_execute("begin").await.expect("begin");
            let bounded = "/* max_lag_ms: 200 */ select inet_server_port()";
            if port_of(&c, bounded).await == primary.port {
                break;
            }
            c.batch_execute("rollback").await.expect("rollback");
            tries += 1;
            assert!(
                tries < 100,
                "a read bounded to 200 ms never went to the primary"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if simple {
            c.batch_execute(&format!("insert into t values ({id})"))
                .await
                .expect("insert");
        } else {
            c.execute("insert into t values ($1)", &[&id])
                .await
                .expect("insert");
        }
        c.batch_execute("commit").await.expect("commit");
        let row = c
            .query_one(
                "select count(*), inet_server_port() from t where id = $1",
                &[&id],
            )
            .await
            .expect("read back");
        assert_eq!(
            row.get::<_, i64>(0),
            1,
            "the write of a transaction a read placed was read stale (simple protocol: {simple}) \
             on port {}",
            row.get::<_, i32>(1)
        );
    }

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writing.await.expect("writer");
}

/// The port of the server that answered `sql`.
async fn port_of(c: &tokio_postgres::Client, sql: &str) -> u16 {
    let row = c.query_one(sql, &[]).await.expect("read");
    row.get::<_, i32>(0) as u16
}
