//! Roles and load balancing as pgcat does them, on pgcat's own kind of
//! set-up: the "replicas" are clusters of their own (not in recovery), so
//! only the config says which server is which. `default_role`,
//! `SET SERVER ROLE`, both balancing modes, and what happens when every
//! replica is down.

use std::collections::HashMap;

use crate::common::*;

fn config(port: u16, primary: u16, replicas: &[u16], pools: &[(&str, &str)]) -> String {
    let mut servers = vec![format!("[\"127.0.0.1\", {primary}, \"primary\"]")];
    servers.extend(
        replicas
            .iter()
            .map(|r| format!("[\"127.0.0.1\", {r}, \"replica\"]")),
    );
    let servers = servers.join(", ");
    let mut out = format!(
        "[general]\nhost = \"127.0.0.1\"\nport = {port}\nconnect_timeout = 500\n\
         ban_time = 60\nhealthcheck_delay = 100\nquery_wait_timeout = 300\n"
    );
    for (name, extra) in pools {
        out.push_str(&format!(
            "\n[pools.{name}]\npool_mode = \"transaction\"\n{extra}\n\
             [pools.{name}.users.0]\nusername = \"app\"\npassword = \"app_pw\"\npool_size = 5\n\
             [pools.{name}.shards.0]\ndatabase = \"app\"\nservers = [{servers}]\n"
        ));
    }
    out
}

/// How many of `n` one-statement transactions each server port answered.
async fn spread(c: &tokio_postgres::Client, n: usize) -> HashMap<u16, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let row = c
            .query_one("select inet_server_port()", &[])
            .await
            .expect("query");
        *seen.entry(row.get::<_, i32>(0) as u16).or_default() += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_role_and_set_server_role_spread_as_pgcat() {
    let primary = PgCluster::start();
    let r1 = PgCluster::start();
    let r2 = PgCluster::start();
    let port = free_port();
    let pools = [
        (
            "random",
            "default_role = \"any\"\nload_balancing_mode = \"random\"",
        ),
        (
            "loc",
            "default_role = \"any\"\nload_balancing_mode = \"loc\"",
        ),
        ("replicas", "default_role = \"replica\""),
    ];
    let proxy = Proxy::start(
        port,
        &config(port, primary.port, &[r1.port, r2.port], &pools),
    );
    let all = [primary.port, r1.port, r2.port];

    for pool in ["random", "loc"] {
        let c = connect(&proxy.url("app", "app_pw", pool)).await;
        // `any`: the primary and every replica share the work (an even
        // share is 40 of 120; each must get a fair part of it).
        let seen = spread(&c, 120).await;
        for p in all {
            let got = seen.get(&p).copied().unwrap_or(0);
            assert!(got >= 15, "{pool}: server {p} got {got} of 120: {seen:?}");
        }
        c.batch_execute("SET SERVER ROLE TO 'replica'")
            .await
            .unwrap();
        let seen = spread(&c, 60).await;
        assert!(
            !seen.contains_key(&primary.port),
            "{pool}: replica role reached the primary: {seen:?}"
        );
        assert!(
            seen.contains_key(&r1.port) && seen.contains_key(&r2.port),
            "{pool}: both replicas serve: {seen:?}"
        );
        c.batch_execute("SET SERVER ROLE TO 'primary'")
            .await
            .unwrap();
        let seen = spread(&c, 20).await;
        assert_eq!(seen.get(&primary.port), Some(&20), "{pool}: {seen:?}");
        c.batch_execute("SET SERVER ROLE TO 'any'").await.unwrap();
        let seen = spread(&c, 90).await;
        assert_eq!(seen.len(), 3, "{pool}: any reaches every server: {seen:?}");
    }

    let c = connect(&proxy.url("app", "app_pw", "replicas")).await;
    let seen = spread(&c, 40).await;
    assert!(
        !seen.contains_key(&primary.port),
        "default_role replica: {seen:?}"
    );
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_replica_is_down_they_are_unbanned_and_tried() {
    let primary = PgCluster::start();
    let r1 = PgCluster::start();
    let r2 = PgCluster::start();
    let port = free_port();
    let pools = [
        ("strict", "default_role = \"replica\""),
        (
            "fallback",
            "default_role = \"replica\"\nreplica_fallback_to_primary = true",
        ),
    ];
    let proxy = Proxy::start(
        port,
        &config(port, primary.port, &[r1.port, r2.port], &pools),
    );
    let strict = connect(&proxy.url("app", "app_pw", "strict")).await;
    let fallback = connect(&proxy.url("app", "app_pw", "fallback")).await;
    assert_ne!(spread(&strict, 1).await.keys().next(), Some(&primary.port));

    r1.stop();
    r2.stop();
    // Every read meant for replicas fails (none reaches the primary), and
    // the connection stays usable.
    for i in 0..3 {
        let err = strict
            .query_one("select inet_server_port()", &[])
            .await
            .expect_err("no replica is up");
        let code = err.code().map(|c| c.code().to_string());
        assert!(
            code.as_deref().is_some_and(|c| c.starts_with("08")),
            "query {i}: {err:?}"
        );
    }
    // With the fallback on, the primary serves them.
    let seen = spread(&fallback, 3).await;
    assert_eq!(seen.get(&primary.port), Some(&3), "{seen:?}");

    // Back up: ban_time is 60 s, so reads work again only because a pool
    // whose replicas are all banned unbans them.
    r1.restart();
    r2.restart();
    let seen = spread(&strict, 10).await;
    assert!(
        !seen.contains_key(&primary.port),
        "{seen:?}\n{}",
        proxy.log()
    );
}
