//! Authentication on both sides: clients to pgmlcat (trust, md5, SCRAM) and
//! pgmlcat to Postgres (md5, SCRAM, server_username/server_password), plus
//! the protocol-version handshake.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::*;

fn config(port: u16, pg: &PgCluster, auth_type: &str, user_extra: &str) -> String {
    simple_config(port, pg, "transaction", 2)
        .replace(
            "connect_timeout = 3000",
            &format!("connect_timeout = 3000\nauth_type = \"{auth_type}\""),
        )
        .replace("pool_size = 2", &format!("pool_size = 2\n{user_extra}"))
}

async fn login(url: &str) -> Result<i32, String> {
    match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            let row = client
                .query_one("select 1", &[])
                .await
                .map_err(|e| e.to_string())?;
            Ok(row.get(0))
        }
        Err(e) => Err(e
            .code()
            .map(|c| c.code().to_string())
            .unwrap_or_else(|| e.to_string())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_clients_and_scram_server() {
    let pg = PgCluster::start_with(Auth::Scram);
    let port = free_port();
    let proxy = Proxy::start(port, &config(port, &pg, "scram-sha-256", ""));
    assert_eq!(login(&proxy.url("app", "app_pw", "app")).await, Ok(1));
    assert_eq!(
        login(&proxy.url("app", "bad", "app")).await,
        Err("28P01".into())
    );
    assert_eq!(
        login(&proxy.url("ghost", "app_pw", "app")).await,
        Err("28P01".into())
    );
    // psql speaks SCRAM too.
    let out = run_env(
        "psql",
        &[
            "-X",
            "-w",
            "-qAt",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "app",
            "-d",
            "app",
            "-c",
            "select 'scram ok'",
        ],
        &[("PGPASSWORD", "app_pw")],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "scram ok",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_clients_md5_server_and_hashed_config_passwords() {
    let pg = PgCluster::start_with(Auth::Md5);
    // The config holds only the md5 hash of the password: md5 works on both sides.
    let hash = pg.psql("postgres", "select 'md5' || md5('app_pw' || 'app')");
    let port = free_port();
    let cfg = config(port, &pg, "md5", "")
        .replace("password = \"app_pw\"", &format!("password = \"{hash}\""));
    let proxy = Proxy::start(port, &cfg);
    assert_eq!(login(&proxy.url("app", "app_pw", "app")).await, Ok(1));
    assert_eq!(
        login(&proxy.url("app", "nope", "app")).await,
        Err("28P01".into())
    );
    assert!(
        !proxy.log().contains(&hash),
        "the hash must never be logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_verifier_in_config_and_server_credentials() {
    let pg = PgCluster::start_with(Auth::Scram);
    pg.psql(
        "postgres",
        "create role owner_role login password 'owner_pw'; grant all on database app to owner_role",
    );
    // Clients log in as `app` with a SCRAM verifier in the config; pgmlcat
    // logs in to Postgres as owner_role with its plain password.
    let verifier = pg.psql(
        "postgres",
        "select rolpassword from pg_authid where rolname = 'app'",
    );
    assert!(verifier.starts_with("SCRAM-SHA-256$"));
    let port = free_port();
    let cfg = config(
        port,
        &pg,
        "scram-sha-256",
        "server_username = \"owner_role\"\nserver_password = \"${PGMLCAT_TEST_OWNER_PW}\"",
    )
    .replace(
        "password = \"app_pw\"",
        &format!("password = \"{verifier}\""),
    );
    let proxy = Proxy::start_env(port, &cfg, &[("PGMLCAT_TEST_OWNER_PW", "owner_pw")]);
    let client = connect(&proxy.url("app", "app_pw", "app")).await;
    let who: String = client
        .query_one("select current_user::text", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(who, "owner_role");
    assert_eq!(
        login(&proxy.url("app", "wrong", "app")).await,
        Err("28P01".into())
    );
}

#[test]
fn trust_and_protocol_negotiation() {
    let pg = PgCluster::start();
    let port = free_port();
    let proxy = Proxy::start(port, &config(port, &pg, "trust", ""));
    // Protocol 3.2 with a _pq_ option: NegotiateProtocolVersion(3.0, [_pq_.x]), then login.
    let msg = startup_packet(
        3,
        2,
        &[
            ("user", "app"),
            ("database", "app"),
            ("_pq_.frobnicate", "1"),
        ],
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(&msg).expect("send startup");
    let mut got = vec![0u8; 4096];
    let mut n = 0;
    while !got[..n].windows(6).any(|w| w == b"Z\0\0\0\x05I") {
        let r = s.read(&mut got[n..]).expect("read");
        assert!(r > 0, "closed early: {:?}", &got[..n]);
        n += r;
    }
    assert_eq!(got[0], b'v', "NegotiateProtocolVersion first");
    let minor = i32::from_be_bytes(got[5..9].try_into().expect("4 bytes"));
    assert_eq!(minor, 0);
    assert!(got[..n].windows(15).any(|w| w == b"_pq_.frobnicate"));
    assert!(
        got[..n].windows(5).any(|w| w == b"R\0\0\0\x08"),
        "AuthenticationOk"
    );
    drop(proxy);
}
