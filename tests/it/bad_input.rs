//! Bad input: each case gets a clear error with the right SQLSTATE, and the
//! proxy keeps serving everyone else.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::*;

fn error_code(url: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
            Ok(_) => "ok".to_string(),
            Err(e) => e
                .code()
                .map(|c| c.code().to_string())
                .unwrap_or_else(|| format!("no code: {e}")),
        }
    })
}

fn works(proxy: &Proxy) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = connect(&proxy.url("app", "app_pw", "app")).await;
        let v: i32 = c
            .query_one("select 7", &[])
            .await
            .expect("normal query after bad input")
            .get(0);
        assert_eq!(v, 7);
    });
}

/// Sends raw bytes, returns what the proxy answered before closing.
fn raw(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn startup(user: &str, db: &str) -> Vec<u8> {
    startup_packet(3, 0, &[("user", user), ("database", db)])
}

#[test]
fn login_errors_have_the_right_sqlstate() {
    let pg = PgCluster::start();
    let port = free_port();
    let proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 2));
    assert_eq!(error_code(&proxy.url("app", "app_pw", "nosuchdb")), "3D000");
    assert_eq!(error_code(&proxy.url("app", "wrong", "app")), "28P01");
    assert_eq!(error_code(&proxy.url("nobody", "app_pw", "app")), "28P01");
    // Same message for both, so user names cannot be probed.
    let msg = |url: &str| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let e = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .err()
                .expect("fails");
            e.as_db_error().map(|d| {
                d.message()
                    .replace("\"app\"", "\"X\"")
                    .replace("\"nobody\"", "\"X\"")
            })
        })
    };
    assert_eq!(
        msg(&proxy.url("app", "wrong", "app")),
        msg(&proxy.url("nobody", "app_pw", "app"))
    );
    works(&proxy);
}

/// With query_wait_timeout = 0 a server that cannot be reached is an error
/// at once (the default waits for it: see lifecycle's restart test).
#[test]
fn unreachable_server_is_08006_within_connect_timeout() {
    let port = free_port();
    let dead = free_port();
    let config = format!(
        "[general]\nhost = \"127.0.0.1\"\nport = {port}\nconnect_timeout = 1000\nquery_wait_timeout = 0\n\n[pools.app]\n[pools.app.users.0]\nusername = \"app\"\npassword = \"app_pw\"\npool_size = 2\n[pools.app.shards.0]\nservers = [[\"127.0.0.1\", {dead}, \"primary\"]]\ndatabase = \"app\"\n"
    );
    let proxy = Proxy::start(port, &config);
    let started = Instant::now();
    assert_eq!(error_code(&proxy.url("app", "app_pw", "app")), "08006");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn malformed_messages_close_only_that_client() {
    let pg = PgCluster::start();
    let port = free_port();
    let proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 2));
    // A healthy client that is connected the whole time.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let bystander = rt.block_on(connect(&proxy.url("app", "app_pw", "app")));

    // Length below 4 in the startup packet.
    let out = raw(port, &[0, 0, 0, 2, 0, 3, 0, 0]);
    assert!(out.is_empty() || out[0] == b'E');
    // A startup packet claiming 1 GB.
    let out = raw(port, &[0x40, 0, 0, 0, 0, 3, 0, 0]);
    assert!(out.is_empty() || out[0] == b'E', "{out:?}");
    // Garbage bytes.
    let out = raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(out.is_empty() || out[0] == b'E');
    // Truncated frame: a startup packet that stops half way, then hang up.
    let mut half = startup("app", "app");
    half.truncate(10);
    let _ = raw(port, &half);
    // After login (trust would be simpler; do md5 by hand is long), send a
    // message with a bad length: the proxy answers 08P01 and closes.
    let mut bad = startup("app", "app");
    bad.extend_from_slice(b"p\0\0\0\x02");
    let out = raw(port, &bad);
    assert!(
        out.windows(5).any(|w| w == b"08P01"),
        "expected 08P01 in {:?}",
        String::from_utf8_lossy(&out)
    );
    // An absurd message after login is refused by its length alone.
    let mut huge = startup("app", "app");
    huge.extend_from_slice(b"p\x7f\xff\xff\xff");
    let out = raw(port, &huge);
    assert!(out.windows(5).any(|w| w == b"08P01"));

    rt.block_on(async {
        let v: i32 = bystander
            .query_one("select 3", &[])
            .await
            .expect("bystander unaffected")
            .get(0);
        assert_eq!(v, 3);
    });
    works(&proxy);
    assert!(
        !proxy.log().contains("panicked"),
        "a task panicked:\n{}",
        proxy.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_message_after_login_is_08p01_and_others_continue() {
    let pg = PgCluster::start();
    let port = free_port();
    let proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 2));
    let client = connect(&proxy.url("app", "app_pw", "app")).await;
    // SQL errors keep the session usable, as in Postgres.
    let err = client
        .simple_query("select * from no_such_table")
        .await
        .expect_err("42P01");
    assert_eq!(err.code().map(|c| c.code()), Some("42P01"));
    let err = client.simple_query("selec 1").await.expect_err("syntax");
    assert_eq!(err.code().map(|c| c.code()), Some("42601"));
    let v: i32 = client
        .query_one("select 5", &[])
        .await
        .expect("usable")
        .get(0);
    assert_eq!(v, 5);
}
