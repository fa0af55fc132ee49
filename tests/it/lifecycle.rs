//! The process as an operator sees it: --check, SIGHUP reload, SIGINT and
//! SIGTERM shutdown.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

fn check(path: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pgmlcat"))
        .args(["--check", path])
        .output()
        .expect("run pgmlcat --check")
}

#[test]
fn check_accepts_pgcat_configs_and_names_bad_keys() {
    let ok = check("tests/fixtures/pgcat-1.x.toml");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let ok = check("pgcat.toml");
    assert!(
        ok.status.success(),
        "the shipped example must be valid: {}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string("tests/fixtures/pgcat-1.x.toml").expect("fixture");
    std::fs::write(&bad, text.replace("pool_size = 9", "pool_size = 0")).expect("write");
    let out = check(bad.to_str().expect("path"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pools.sharded_db.users.0.pool_size"), "{err}");

    std::fs::write(
        &bad,
        text.replace("pool_mode = \"session\"", "pool_mode = \"statement\""),
    )
    .expect("write");
    let out = check(bad.to_str().expect("path"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pool_mode") && err.contains("statement"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_resizes_a_pool_without_dropping_clients() {
    let pg = PgCluster::start();
    let port = free_port();
    let config = one_server_config(port, &pg, 500);
    let proxy = Proxy::start(port, &config);
    let url = proxy.url("app", "app_pw", "app");
    let holder = connect(&url).await;
    holder
        .batch_execute("begin; select 1")
        .await
        .expect("hold the one server");
    let other = connect(&url).await;
    let err = other
        .simple_query("select 1")
        .await
        .expect_err("pool of one is taken");
    assert_eq!(err.code().map(|c| c.code()), Some("58000"));

    proxy.write_config(&config.replace("pool_size = 1", "pool_size = 2"));
    proxy.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match other.simple_query("select 1").await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                assert_eq!(e.code().map(|c| c.code()), Some("58000"), "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("pool did not grow after SIGHUP: {e}\n{}", proxy.log()),
        }
    }
    // The client holding a transaction kept it through the reload.
    holder
        .batch_execute("rollback")
        .await
        .expect("holder still connected");
    let v: i32 = holder
        .query_one("select 1", &[])
        .await
        .expect("holder usable")
        .get(0);
    assert_eq!(v, 1);

    // A broken config is rejected and the running one stays.
    proxy.write_config("this is not toml [");
    proxy.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let v: i32 = other
        .query_one("select 2", &[])
        .await
        .expect("still serving")
        .get(0);
    assert_eq!(v, 2);
    assert!(proxy.log().contains("reload rejected"), "{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_lets_transactions_finish_then_exits() {
    let pg = PgCluster::start();
    let port = free_port();
    let config = simple_config(port, &pg, "transaction", 2);
    let mut proxy = Proxy::start(port, &config);
    let url = proxy.url("app", "app_pw", "app");
    let admin_url = proxy.url("admin", "admin_pw", "pgcat");
    let busy = connect(&url).await;
    busy.batch_execute("create table done(x int)")
        .await
        .expect("table");
    busy.batch_execute("begin; insert into done values (1)")
        .await
        .expect("open tx");
    let idle = connect(&url).await;
    let console = connect(&admin_url).await;
    proxy.signal("INT");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // New pool clients are refused at once, with the reason...
    let started = Instant::now();
    let refused = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .err()
        .expect("refused during shutdown");
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(refused.code().map(|c| c.code()), Some("57P01"), "{refused}");
    // ...idle clients are closed...
    assert!(
        idle.simple_query("select 1").await.is_err(),
        "idle client should be closed"
    );
    // ...the admin console keeps working, for new sessions too (pgcat's
    // shutdown contract)...
    console
        .simple_query("SHOW DATABASES")
        .await
        .expect("an open console works");
    connect(&admin_url)
        .await
        .simple_query("SHOW POOLS")
        .await
        .expect("a new console session works");
    // ...and the open transaction may finish.
    busy.batch_execute("insert into done values (2); commit")
        .await
        .expect("commit during graceful shutdown");
    assert_eq!(pg.psql("app", "select count(*) from done"), "2");
    let status = proxy
        .wait_exit(Duration::from_secs(5))
        .expect("proxy exits once clients are done (admin sessions do not hold it)");
    assert!(status.success(), "{status}");
    // The port is free again at once (SO_REUSEADDR): a new process takes it.
    let again = Proxy::start(port, &config);
    let c = connect(&url).await;
    c.simple_query("select 1")
        .await
        .expect("new process serves");
    drop(again);
}

/// pgcat's admin SHUTDOWN is graceful (as SIGINT) and answers a row;
/// PgBouncer's (on `pgbouncer`) is immediate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_shutdown_on_pgcat_is_graceful() {
    let pg = PgCluster::start();
    let port = free_port();
    let mut proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 2));
    let busy = connect(&proxy.url("app", "app_pw", "app")).await;
    busy.batch_execute("begin").await.expect("begin");
    busy.simple_query("select 1")
        .await
        .expect("in a transaction");
    let console = connect(&proxy.url("admin", "admin_pw", "pgcat")).await;
    let answer = console.simple_query("SHUTDOWN").await.expect("SHUTDOWN");
    let success = answer.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get("success").map(str::to_string),
        _ => None,
    });
    assert_eq!(success.as_deref(), Some("t"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    busy.simple_query("select 2")
        .await
        .expect("the transaction goes on");
    busy.batch_execute("commit").await.expect("commit");
    proxy
        .wait_exit(Duration::from_secs(5))
        .expect("exits once the transaction ended");
}

#[test]
fn sigterm_exits_at_once() {
    let pg = PgCluster::start();
    let port = free_port();
    let mut proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 2));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = rt.block_on(connect(&proxy.url("app", "app_pw", "app")));
    rt.block_on(client.batch_execute("begin")).expect("tx");
    let started = Instant::now();
    proxy.signal("TERM");
    proxy.wait_exit(Duration::from_secs(3)).expect("exited");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// A Postgres crash and restart is a pause for clients between
/// transactions: their next statements wait for the server (up to
/// query_wait_timeout) instead of failing, and the idle server connections
/// the crash closed are never handed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_is_a_pause_for_idle_clients() {
    let pg = PgCluster::start();
    let port = free_port();
    let proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 3));
    let url = proxy.url("app", "app_pw", "app");
    let mut clients = Vec::new();
    for _ in 0..6 {
        let c = connect(&url).await;
        c.simple_query("select 1").await.expect("before the crash");
        clients.push(c);
    }
    // Every idle server connection dies with the crash.
    pg.stop_immediate();
    let restarted = std::thread::spawn({
        let dir = pg.dir.clone();
        move || {
            std::thread::sleep(Duration::from_secs(3));
            dir
        }
    });
    let started = Instant::now();
    let queries = clients.iter().map(|c| c.query_one("select 40 + 2", &[]));
    let waiting = futures_util::future::join_all(queries);
    let restart = async {
        tokio::task::spawn_blocking(move || restarted.join())
            .await
            .expect("join")
            .expect("timer");
        pg.restart();
    };
    let (results, ()) = tokio::join!(waiting, restart);
    for r in results {
        let row = r.expect("a client between transactions waits out the restart");
        assert_eq!(row.get::<_, i32>(0), 42);
    }
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "the answers came after the restart"
    );
}

/// Clients busy with statements (simple and prepared) through a Postgres
/// crash and restart. What the README promises, phase by phase: a
/// statement sent once the server is down waits for it and succeeds (never
/// an error); one sent to a connection the crash ended before it answered
/// is sent again unseen; only a statement the crash caught in flight, whose
/// fate is unknown, may fail, with FATAL 08006 and the connection closed, as
/// a direct connection's would (directly every client loses its connection).
/// A client that lost one reconnects and goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_clients_lose_at_most_the_statement_in_flight_through_a_crash_restart() {
    use std::sync::atomic::{AtomicU8, Ordering::SeqCst};
    // 0 before the crash, 1 while Postgres stops, 2 down, 3 back.
    const STOPPING: u8 = 1;
    const BACK: u8 = 3;
    let pg = std::sync::Arc::new(PgCluster::start());
    let port = free_port();
    let proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 4));
    let url = proxy.url("app", "app_pw", "app");
    let phase = std::sync::Arc::new(AtomicU8::new(0));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let mut c = connect(&url).await;
        let (phase, url) = (phase.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let (mut after, mut n, mut lost) = (0, 0i32, 0);
            // Until 40 statements ran after the restart.
            while after < 40 {
                n += 1;
                let sent = phase.load(SeqCst);
                let result = if i % 2 == 0 {
                    c.simple_query("select 1").await.map(|rows| {
                        assert!(!rows.is_empty());
                    })
                } else {
                    c.query_one("select $1::int + 1", &[&n])
                        .await
                        .map(|row| assert_eq!(row.get::<_, i32>(0), n + 1))
                };
                if let Err(e) = result {
                    let in_flight_at_crash = sent <= STOPPING && phase.load(SeqCst) >= STOPPING;
                    let code = e.code().cloned();
                    if !in_flight_at_crash
                        || code != Some(tokio_postgres::error::SqlState::CONNECTION_FAILURE)
                    {
                        return Err(format!("statement {n} sent in phase {sent}: {e:?}"));
                    }
                    lost += 1;
                    c = connect(&url).await;
                }
                if sent == BACK {
                    after += 1;
                }
            }
            Ok::<(i32, i32), String>((n, lost))
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let crash = {
        let (pg, phase) = (pg.clone(), phase.clone());
        tokio::task::spawn_blocking(move || {
            phase.store(STOPPING, SeqCst);
            pg.stop_immediate();
            phase.store(2, SeqCst);
            std::thread::sleep(Duration::from_secs(1));
            pg.restart();
            phase.store(BACK, SeqCst);
        })
    };
    crash.await.expect("crash and restart");
    for t in tasks {
        let (n, lost) = t.await.expect("client task").unwrap_or_else(|e| {
            panic!(
                "a client saw an error it was not promised: {e}\n{}",
                proxy.log()
            )
        });
        assert!(n > 40);
        assert!(lost <= 1, "a client lost {lost} statements");
    }
}

/// How psycopg 3 sees Postgres stop (fast) while it is in `mode` (see
/// tests/it/clients/shutdown_mid_statement.py): the JSON it printed.
fn stopped_under(url: &str, pg: &PgCluster, mode: &str) -> serde_json::Value {
    use std::io::BufRead;
    let script = format!(
        "{}/tests/it/clients/shutdown_mid_statement.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut child = Command::new(python())
        .args([&script, url, mode])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the psycopg client");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().and_then(|l| l.ok());
    assert_eq!(first.as_deref(), Some("ready"), "the client did not start");
    std::thread::sleep(Duration::from_millis(700));
    pg.stop();
    let last = lines.map_while(|l| l.ok()).last().unwrap_or_default();
    let _ = child.wait();
    serde_json::from_str(&last).unwrap_or_else(|e| panic!("client output {last:?}: {e}"))
}

/// A session Postgres ends with FATAL 57P01 when it stops, with a statement
/// running or idle in a transaction: through pgmlcat libpq (under psycopg
/// 3) gets that one error, as directly. (A second FATAL of pgmlcat's own as
/// the connection closed made psycopg's COMMIT raise "received 2 results"
/// with no SQLSTATE; a transaction left idle was closed with no error.)
#[test]
fn a_session_ended_by_a_shutdown_gets_the_servers_one_error() {
    let pg = PgCluster::start();
    let port = free_port();
    let proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 2));
    for mode in ["running", "idle_in_transaction"] {
        let direct = stopped_under(&direct_url(&pg), &pg, mode);
        // libpq adds its own error (no SQLSTATE) when the connection closes.
        assert_eq!(direct["results"][0], "57P01", "{mode} directly: {direct}");
        pg.restart();
        let through = stopped_under(&proxy.url("app", "app_pw", "app"), &pg, mode);
        assert_eq!(through, direct, "{mode} through pgmlcat\n{}", proxy.log());
        pg.restart();
    }
}

async fn server_port(c: &tokio_postgres::Client) -> u16 {
    let row = c
        .query_one("select inet_server_port()", &[])
        .await
        .expect("keyless read goes to shard 0");
    row.get::<_, i32>(0) as u16
}

async fn count(c: &tokio_postgres::Client) -> i64 {
    c.query_one("select count(*) from pg_prepared_statements", &[])
        .await
        .expect("count")
        .get::<_, i64>(0)
}

/// pgcat's "pool recycling after config reload": a client in a
/// transaction keeps the old shard layout until it ends, then moves to the
/// new one; new clients get it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reaches_clients_between_transactions() {
    let (a, b) = (PgCluster::start(), PgCluster::start());
    let port = free_port();
    let config = |first: u16, second: u16| {
        format!(
            "[general]\nhost = \"127.0.0.1\"\nport = {port}\n\n[pools.app]\npool_mode = \"transaction\"\n\
             [pools.app.users.0]\nusername = \"app\"\npassword = \"app_pw\"\npool_size = 2\n\
             [pools.app.shards.0]\nservers = [[\"127.0.0.1\", {first}, \"primary\"]]\ndatabase = \"app\"\n\
             [pools.app.shards.1]\nservers = [[\"127.0.0.1\", {second}, \"primary\"]]\ndatabase = \"app\"\n"
        )
    };
    let proxy = Proxy::start(port, &config(a.port, b.port));
    let url = proxy.url("app", "app_pw", "app");
    let c = connect(&url).await;
    c.batch_execute("begin").await.expect("begin");
    assert_eq!(server_port(&c).await, a.port);
    // Swap the shards.
    proxy.write_config(&config(b.port, a.port));
    proxy.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        server_port(&c).await,
        a.port,
        "the transaction stays where it is"
    );
    c.batch_execute("commit").await.expect("commit");
    assert_eq!(server_port(&c).await, b.port, "after it, the new layout");
    let fresh = connect(&url).await;
    assert_eq!(server_port(&fresh).await, b.port);
}

/// As pgcat recreates a pool whose config changed, a reload that changes
/// a pool's prepared statement rules starts its servers afresh: a new
/// client finds no prepared statements there, and a client's own
/// prepared statement still runs (prepared again where needed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_a_pool_empties_its_prepared_statement_cache() {
    let pg = PgCluster::start();
    let port = free_port();
    let config = simple_config(port, &pg, "transaction", 1);
    let proxy = Proxy::start(port, &config);
    let url = proxy.url("app", "app_pw", "app");
    let c = connect(&url).await;
    let stmt = c.prepare("select 1 + $1::int").await.expect("prepare");
    c.query_one(&stmt, &[&1i32]).await.expect("run");
    let other = connect(&url).await;
    assert!(
        count(&other).await >= 1,
        "the statement lives on the one server"
    );
    proxy.write_config(&config.replace(
        "[pools.app]\n",
        "[pools.app]\nprepared_statements_cache_size = 7\n",
    ));
    proxy.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let check = connect(&url).await;
    // tokio-postgres prepares this count itself: one statement, its own.
    assert_eq!(count(&check).await, 1, "only the checker's own statement");
    let v: i32 = c
        .query_one(&stmt, &[&2i32])
        .await
        .expect("still runs")
        .get(0);
    assert_eq!(v, 3);
}

/// A rolling restart with `so_reuseport`: a second process binds the port
/// beside the first; SIGINT to the first hands new connections to the
/// second and closes its listener, while its client in a transaction
/// finishes it. A client connecting all along is never refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_takes_over_the_port_while_the_first_drains() {
    let pg = PgCluster::start();
    let port = free_port();
    let cfg = simple_config(port, &pg, "transaction", 4).replace(
        "connect_timeout = 3000",
        "connect_timeout = 3000\nso_reuseport = true\nshutdown_timeout = 20000",
    );
    let mut first = Proxy::start(port, &cfg);
    let url = first.url("app", "app_pw", "app");
    let held = connect(&url).await;
    held.batch_execute("begin").await.expect("begin");
    held.batch_execute("create temp table t (x int)")
        .await
        .expect("in the transaction");

    let second = Proxy::start(port, &cfg);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !second.log().contains("Waiting for clients") {
        assert!(
            Instant::now() < deadline,
            "the second process did not bind the port\n{}",
            second.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Connects, queries and leaves, over and over, until told to stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let connecting = {
        let (stop, url) = (stop.clone(), url.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let attempt = async {
                    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
                    let conn = tokio::spawn(conn);
                    c.query_one("select 1", &[]).await?;
                    drop(c);
                    let _ = conn.await;
                    Ok::<(), tokio_postgres::Error>(())
                };
                match attempt.await {
                    Ok(()) => ok += 1,
                    Err(e) => failed.push(format!("{e:?}")),
                }
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.signal("INT");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The first process still serves its client's transaction.
    held.batch_execute("insert into t values (1)")
        .await
        .expect("the transaction goes on on the draining process");
    held.batch_execute("commit").await.expect("commit");
    drop(held);
    let status = first.wait_exit(Duration::from_secs(15)).unwrap_or_else(|| {
        panic!(
            "the first process did not exit once its client left\n{}",
            first.log()
        )
    });
    assert!(status.success(), "{}", first.log());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = connecting.await.expect("connecting client");
    assert!(
        failed.is_empty(),
        "{} of {} connections failed during the handover: {:?}\nfirst:\n{}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(3)],
        first.log()
    );
    assert!(ok > 20, "only {ok} connections were tried");
    assert!(
        first
            .log()
            .contains("handing new connections to the next process"),
        "{}",
        first.log()
    );
    // The second process carries on alone.
    let c = connect(&url).await;
    assert_eq!(
        c.query_one("select 1", &[])
            .await
            .expect("served")
            .get::<_, i32>(0),
        1
    );
}
