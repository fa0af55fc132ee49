//! Limits that protect the proxy and everyone else from one client.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::*;

fn with_general(pg: &PgCluster, port: u16, extra: &str) -> String {
    simple_config(port, pg, "transaction", 2).replace(
        "connect_timeout = 3000",
        &format!("connect_timeout = 3000\n{extra}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_conn_refuses_extra_clients_with_53300() {
    let pg = PgCluster::start();
    let port = free_port();
    let proxy = Proxy::start(port, &with_general(&pg, port, "max_client_conn = 3"));
    let url = proxy.url("app", "app_pw", "app");
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(&url).await);
    }
    let err = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .err()
        .expect("fourth client refused");
    assert_eq!(err.code().map(|c| c.code()), Some("53300"), "{err}");
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = connect(&url).await;
    let v: i32 = c
        .query_one("select 1", &[])
        .await
        .expect("a freed slot is usable")
        .get(0);
    assert_eq!(v, 1);
    for h in &held {
        h.simple_query("select 1")
            .await
            .expect("the others are unaffected");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_refused_and_others_continue() {
    let pg = PgCluster::start();
    let port = free_port();
    let proxy = Proxy::start(port, &with_general(&pg, port, "max_message_size = 65536"));
    let url = proxy.url("app", "app_pw", "app");
    let bystander = connect(&url).await;
    let big = connect(&url).await;
    let sql = format!("select '{}'", "x".repeat(100_000));
    let err = big
        .simple_query(&sql)
        .await
        .expect_err("oversized query refused");
    assert!(
        err.is_closed() || err.code().map(|c| c.code()) == Some("08P01"),
        "{err}"
    );
    // COPY data is streamed, not bound by the limit.
    bystander
        .batch_execute("create table blob(t text)")
        .await
        .expect("table");
    let fine = format!("select length('{}')", "y".repeat(60_000));
    let n: i32 = bystander
        .query_one(fine.as_str(), &[])
        .await
        .expect("under the limit")
        .get(0);
    assert_eq!(n, 60_000);
    assert!(!proxy.log().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_loses_its_server() {
    let pg = PgCluster::start();
    let port = free_port();
    let cfg = with_general(&pg, port, "idle_client_in_transaction_timeout = 1000")
        .replace("pool_size = 2", "pool_size = 1");
    let proxy = Proxy::start(port, &cfg);
    // A raw client: log in with md5, ask for a large result, never read it.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let msg = startup_packet(3, 0, &[("user", "app"), ("database", "app")]);
    s.write_all(&msg).expect("startup");
    let mut head = [0u8; 13];
    s.read_exact(&mut head).expect("md5 challenge");
    assert_eq!(head[0], b'R');
    let salt: [u8; 4] = head[9..13].try_into().expect("salt");
    let hash = postgres_protocol::authentication::md5_hash(b"app", b"app_pw", salt);
    let mut pw = vec![b'p'];
    pw.extend_from_slice(&((hash.len() + 5) as i32).to_be_bytes());
    pw.extend_from_slice(hash.as_bytes());
    pw.push(0);
    s.write_all(&pw).expect("password");
    let sql = b"select repeat('z', 10000) from generate_series(1, 100000)\0";
    let mut q = vec![b'Q'];
    q.extend_from_slice(&((sql.len() + 4) as i32).to_be_bytes());
    q.extend_from_slice(sql);
    s.write_all(&q).expect("query");
    // Never read. Another client needs the only server.
    let started = Instant::now();
    let other = connect(&proxy.url("app", "app_pw", "app")).await;
    let v: i32 = other
        .query_one("select 5", &[])
        .await
        .expect("server freed from the stalled client")
        .get(0);
    assert_eq!(v, 5);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injection_in_startup_parameters_stays_a_value() {
    let pg = PgCluster::start();
    pg.psql(
        "app",
        "create table victim(x int); insert into victim values (1)",
    );
    let port = free_port();
    let proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 1));
    // Parameters are replayed with SET on each server: they must stay values.
    let payload = "x'; drop table victim; --";
    let url = format!(
        "{} application_name={}",
        proxy.url("app", "app_pw", "app"),
        "'x\\'; drop table victim; --'"
    );
    let c = connect(&url).await;
    let name: String = c
        .query_one("select current_setting('application_name')", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(name, payload);
    assert_eq!(pg.psql("app", "select count(*) from victim"), "1");
    // The custom commands' values too.
    let err = c
        .simple_query("SET SERVER ROLE TO 'x''; drop table victim; --'")
        .await
        .expect_err("bad role");
    assert_eq!(err.code().map(|c| c.code()), Some("22023"));
    assert_eq!(pg.psql("app", "select count(*) from victim"), "1");
}
