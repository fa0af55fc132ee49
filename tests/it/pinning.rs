//! State that cannot move is pinned, not lost: in transaction mode a client
//! holding a session advisory lock, a temporary table, a WITH HOLD cursor
//! or an SQL PREPAREd statement keeps its server until the state is gone,
//! then goes back to transaction pooling. Each scenario also runs directly
//! against Postgres, where it must give the same answers; through the
//! proxy, backend pids prove the client kept (then changed) servers.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tokio_postgres::SimpleQueryMessage;

use crate::common::*;

async fn pid(c: &tokio_postgres::Client) -> i32 {
    c.query_one("select pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0)
}

async fn try_lock(c: &tokio_postgres::Client, key: i64) -> bool {
    let got: bool = c
        .query_one("select pg_try_advisory_lock($1)", &[&key])
        .await
        .expect("try lock")
        .get(0);
    if got {
        c.query_one("select pg_advisory_unlock($1)", &[&key])
            .await
            .expect("unlock");
    }
    got
}

/// The first value of a simple query's first row.
async fn value(c: &tokio_postgres::Client, sql: &str) -> String {
    let rows = c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_string()),
            _ => None,
        })
        .unwrap_or_default()
}

/// What the scenario saw, and the server pids the client under test ran
/// on while pinned and after.
struct Seen {
    transcript: Vec<String>,
    pinned_pids: HashSet<i32>,
    later_pids: HashSet<i32>,
}

/// Advisory locks: held across transactions until unlocked (also one taken
/// in a transaction that rolled back), gone when the client disconnects;
/// transaction-level locks pin nothing.
async fn lock_scenario(url: &str) -> Seen {
    let a = connect(url).await;
    let other = connect(url).await;
    let holder = connect(url).await;
    let mut seen = Seen {
        transcript: Vec::new(),
        pinned_pids: HashSet::new(),
        later_pids: HashSet::new(),
    };
    // Simple protocol for the lock, extended (a prepared statement) for
    // the checks: both are read on their way.
    a.batch_execute("select pg_advisory_lock(42)")
        .await
        .expect("lock");
    for i in 0..20 {
        // Every other round another client holds a server in a
        // transaction: an unpinned client would land on the other one.
        if i % 2 == 0 {
            holder.batch_execute("BEGIN").await.expect("begin");
        }
        seen.pinned_pids.insert(pid(&a).await);
        if i % 2 == 0 {
            holder.batch_execute("COMMIT").await.expect("commit");
        }
        let free = try_lock(&other, 42).await;
        seen.transcript
            .push(format!("round {i}: 42 free to others: {free}"));
    }
    let unlocked: bool = a
        .query_one("select pg_advisory_unlock($1)", &[&42i64])
        .await
        .expect("unlock")
        .get(0);
    seen.transcript.push(format!("unlocked: {unlocked}"));
    seen.transcript.push(format!(
        "42 free after unlock: {}",
        try_lock(&other, 42).await
    ));

    // A session lock taken in a transaction that rolls back stays held.
    a.batch_execute("BEGIN; select pg_advisory_lock(44); ROLLBACK")
        .await
        .expect("lock in rolled-back transaction");
    seen.transcript.push(format!(
        "44 free after rollback: {}",
        try_lock(&other, 44).await
    ));
    a.batch_execute("select pg_advisory_unlock_all()")
        .await
        .expect("unlock all");
    seen.transcript.push(format!(
        "44 free after unlock_all: {}",
        try_lock(&other, 44).await
    ));

    // Transaction-level locks end with the transaction: nothing pins.
    a.batch_execute("BEGIN; select pg_advisory_xact_lock(45); COMMIT")
        .await
        .expect("xact lock");
    for i in 0..6 {
        if i % 2 == 0 {
            holder.batch_execute("BEGIN").await.expect("begin");
        }
        seen.later_pids.insert(pid(&a).await);
        if i % 2 == 0 {
            holder.batch_execute("COMMIT").await.expect("commit");
        }
    }

    // A client that leaves takes its locks with it.
    let leaver = connect(url).await;
    leaver
        .query_one("select pg_advisory_lock($1)", &[&43i64])
        .await
        .expect("lock 43");
    seen.transcript.push(format!(
        "43 free while held: {}",
        try_lock(&other, 43).await
    ));
    drop(leaver);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut free = false;
    while !free && Instant::now() < deadline {
        free = try_lock(&other, 43).await;
        if !free {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    seen.transcript
        .push(format!("43 free after its client left: {free}"));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_locks_pin_the_client_until_released() {
    let pg = PgCluster::start();
    let direct = lock_scenario(&direct_url(&pg)).await;
    assert!(direct
        .transcript
        .iter()
        .take(20)
        .all(|l| l.ends_with("false")));
    assert_eq!(
        direct.transcript[20..],
        [
            "unlocked: true",
            "42 free after unlock: true",
            "44 free after rollback: false",
            "44 free after unlock_all: true",
            "43 free while held: false",
            "43 free after its client left: true",
        ],
        "the scenario itself"
    );

    let port = free_port();
    let proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 2));
    let pooled = lock_scenario(&proxy.url("app", "app_pw", "app")).await;
    assert_eq!(pooled.transcript, direct.transcript);
    assert_eq!(pooled.pinned_pids.len(), 1, "pinned: one server throughout");
    assert!(
        pooled.later_pids.len() >= 2,
        "unpinned: back to transaction pooling ({:?})",
        pooled.later_pids
    );
}

/// A temporary table, a WITH HOLD cursor and an SQL PREPARE, each usable
/// across statements while other clients use the pool, then dropped.
/// `watch`: the proxy's admin URL and metrics port, to check what they say
/// while the client is pinned.
async fn state_scenario(url: &str, watch: Option<(String, u16)>) -> Seen {
    let a = connect(url).await;
    let holder = connect(url).await;
    let mut seen = Seen {
        transcript: Vec::new(),
        pinned_pids: HashSet::new(),
        later_pids: HashSet::new(),
    };
    let steps: [(&str, &str, &str, &str); 4] = [
        (
            "create temp table tt(x int); insert into tt values (1), (2)",
            "insert into tt values (3); select count(*) from tt",
            "drop table tt",
            "temporary table",
        ),
        (
            "declare c cursor with hold for select generate_series(1, 100)",
            "fetch 1 from c",
            "close c",
            "WITH HOLD cursor",
        ),
        (
            // No CREATE: the server's answer tells.
            "select 7 as x into temp st",
            "select sum(x) from st",
            "drop table st",
            "temporary table",
        ),
        (
            "prepare q(int) as select $1 * 2",
            "execute q(21)",
            "deallocate q",
            "PREPARE",
        ),
    ];
    for (make, use_it, drop_it, kind) in steps {
        a.batch_execute(make)
            .await
            .unwrap_or_else(|e| panic!("{make}: {e}"));
        if let Some((admin, metrics_port)) = &watch {
            // The client has its answer before the proxy asks the server
            // what it holds: give that a moment.
            let show = connect(admin).await;
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut pinned = show_clients_pinned(&show).await;
            while pinned.is_empty() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
                pinned = show_clients_pinned(&show).await;
            }
            assert_eq!(pinned, [kind], "SHOW CLIENTS");
            let scrape = crate::admin::scrape(*metrics_port);
            let labels = [("database", "app"), ("reason", kind)];
            let n = crate::admin::metric(&scrape, "pgmlcat_clients_pinned", &labels);
            assert_eq!(n, 1.0, "/metrics: pinned by {kind}");
        }
        for i in 0..8 {
            if i % 2 == 0 {
                holder.batch_execute("BEGIN").await.expect("begin");
            }
            let v = value(&a, use_it).await;
            seen.transcript.push(format!("{use_it}: {v}"));
            seen.pinned_pids.insert(pid(&a).await);
            if i % 2 == 0 {
                holder.batch_execute("COMMIT").await.expect("commit");
            }
        }
        a.batch_execute(drop_it)
            .await
            .unwrap_or_else(|e| panic!("{drop_it}: {e}"));
    }
    for i in 0..6 {
        if i % 2 == 0 {
            holder.batch_execute("BEGIN").await.expect("begin");
        }
        seen.later_pids.insert(pid(&a).await);
        if i % 2 == 0 {
            holder.batch_execute("COMMIT").await.expect("commit");
        }
    }
    seen
}

/// The `pinned` column of SHOW CLIENTS, for every client that has one.
async fn show_clients_pinned(admin: &tokio_postgres::Client) -> Vec<String> {
    let rows = admin
        .simple_query("SHOW CLIENTS")
        .await
        .expect("show clients");
    rows.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get("pinned").map(str::to_string),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_tables_cursors_and_sql_prepare_are_pinned() {
    let pg = PgCluster::start();
    let direct = state_scenario(&direct_url(&pg), None).await;
    assert!(direct.transcript.contains(&"fetch 1 from c: 8".to_string()));
    assert!(direct
        .transcript
        .contains(&"insert into tt values (3); select count(*) from tt: 10".to_string()));
    assert!(direct.transcript.contains(&"execute q(21): 42".to_string()));

    let port = free_port();
    let metrics_port = free_port();
    let config = simple_config(port, &pg, "transaction", 2).replace(
        "connect_timeout = 3000",
        &format!("connect_timeout = 3000\nenable_prometheus_exporter = true\nprometheus_exporter_port = {metrics_port}"),
    );
    let proxy = Proxy::start(port, &config);
    let admin = proxy.url("admin", "admin_pw", "pgbouncer");
    let watch = Some((admin.clone(), metrics_port));
    let pooled = state_scenario(&proxy.url("app", "app_pw", "app"), watch).await;
    assert_eq!(pooled.transcript, direct.transcript);
    assert!(
        pooled.later_pids.len() >= 2,
        "unpinned once the state is gone ({:?})",
        pooled.later_pids
    );
    // Nothing pinned any more: SHOW POOLS and /metrics agree.
    let show = connect(&admin).await;
    assert!(show_clients_pinned(&show).await.is_empty());
    let pools = show.simple_query("SHOW POOLS").await.expect("show pools");
    let pinned: Vec<String> = pools
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get("cl_pinned").map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(pinned, ["0"]);
}

/// A pool that refuses pinned state: the statement gets 0A000 naming it,
/// the connection stays usable, and the transaction-level forms work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_can_refuse_state_that_would_pin() {
    let pg = PgCluster::start();
    let port = free_port();
    let config = simple_config(port, &pg, "transaction", 2).replace(
        "pool_mode = \"transaction\"",
        "pool_mode = \"transaction\"\nsession_state = \"refuse\"",
    );
    let proxy = Proxy::start(port, &config);
    let a = connect(&proxy.url("app", "app_pw", "app")).await;
    for sql in [
        "select pg_advisory_lock(1)",
        "create temp table t(x int)",
        "prepare q as select 1",
        "declare c cursor with hold for select 1",
    ] {
        let err = a.batch_execute(sql).await.expect_err(sql);
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED),
            "{sql}: {err}"
        );
        let text = err.as_db_error().map(|e| e.message().to_string());
        assert!(
            text.as_deref().is_some_and(|m| m.contains(sql)),
            "the error names the statement: {text:?}"
        );
        // Also through the extended protocol.
        let err = a.query(sql, &[]).await.expect_err(sql);
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED),
            "{sql} (extended): {err}"
        );
        assert_eq!(value(&a, "select 1").await, "1", "still usable");
    }
    a.batch_execute(
        "BEGIN; select pg_advisory_xact_lock(1); create temp table t(x int) on commit drop; COMMIT",
    )
    .await
    .expect("transaction-level forms work");
}
