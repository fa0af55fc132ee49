//! Real clients at scale: pgbench in every protocol mode through transaction
//! pooling, connect-per-transaction, and a thousand idle clients.

use std::process::Output;

use crate::common::*;

fn pgbench(proxy_port: u16, args: &[&str]) -> Output {
    let port = proxy_port.to_string();
    let mut all = vec!["-h", "127.0.0.1", "-p", &port, "-U", "app"];
    all.extend_from_slice(args);
    all.push("app");
    run_env(&pg_bin("pgbench"), &all, &[("PGPASSWORD", "app_pw")])
}

/// Transactions processed, after checking pgbench reported no failures.
fn processed(out: &Output) -> u64 {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pgbench failed:\n{stdout}\n{stderr}");
    assert!(
        !stderr.contains("error") && !stderr.contains("ERROR"),
        "pgbench reported errors:\n{stderr}"
    );
    let failed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
        .map(|v| v.split_whitespace().next().unwrap_or("?").to_string());
    if let Some(f) = failed {
        assert_eq!(f, "0", "failed transactions:\n{stdout}");
    }
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no transaction count in:\n{stdout}"))
}

#[test]
fn pgbench_all_protocols_through_transaction_pooling() {
    let pg = PgCluster::start();
    let port = free_port();
    let proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 10));
    // -i runs DDL, COPY FROM STDIN and VACUUM through the proxy.
    let init = pgbench(port, &["-i", "-s", "1", "-q"]);
    assert!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    assert_eq!(
        pg.psql("app", "select count(*) from pgbench_accounts"),
        "100000"
    );
    for mode in ["simple", "extended", "prepared"] {
        let out = pgbench(port, &["-S", "-c", "64", "-j", "2", "-T", "3", "-M", mode]);
        let n = processed(&out);
        assert!(n > 100, "{mode}: only {n} transactions");
    }
    // The full TPC-B-like script writes in multi-statement transactions.
    let out = pgbench(port, &["-c", "16", "-j", "2", "-t", "50", "-M", "prepared"]);
    assert_eq!(processed(&out), 16 * 50);
    let backends: i64 = pg
        .psql(
            "app",
            "select count(*) from pg_stat_activity where usename = 'app'",
        )
        .parse()
        .expect("count");
    assert!(
        backends <= 10,
        "pool_size 10 but {backends} server connections"
    );
    drop(proxy);
}

#[test]
fn pgbench_connect_per_transaction() {
    let pg = PgCluster::start();
    let port = free_port();
    let _proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 4));
    let init = pgbench(port, &["-i", "-s", "1", "-q"]);
    assert!(init.status.success());
    let out = pgbench(port, &["-S", "-C", "-c", "8", "-j", "2", "-t", "100"]);
    assert_eq!(processed(&out), 800);
    let out = pgbench(
        port,
        &[
            "-S", "-C", "-c", "8", "-j", "2", "-t", "50", "-M", "extended",
        ],
    );
    assert_eq!(processed(&out), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_clients_on_five_servers() {
    let pg = PgCluster::start();
    let port = free_port();
    let proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 5));
    let url = proxy.url("app", "app_pw", "app");
    let mut clients = Vec::new();
    for batch in 0..10 {
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let c = connect(&url).await;
                let v: i32 = c.query_one("select 1", &[]).await.expect("query").get(0);
                assert_eq!(v, 1);
                c
            }));
        }
        for t in tasks {
            clients.push(t.await.unwrap_or_else(|e| panic!("batch {batch}: {e}")));
        }
    }
    assert_eq!(clients.len(), 1000);
    // All still connected and usable, each on one of five server connections.
    for (i, c) in clients.iter().enumerate().step_by(97) {
        let v: i64 = c
            .query_one("select $1::int8", &[&(i as i64)])
            .await
            .expect("still usable")
            .get(0);
        assert_eq!(v, i as i64);
    }
    let backends: i64 = pg
        .psql(
            "app",
            "select count(*) from pg_stat_activity where usename = 'app'",
        )
        .parse()
        .expect("count");
    assert!(
        backends <= 5,
        "{backends} server connections for pool_size 5"
    );
}
