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

/// pgcat's auth_query set-up: a SECURITY DEFINER lookup of pg_shadow,
/// callable by a dedicated user.
fn auth_query_setup(pg: &PgCluster) {
    pg.psql(
        "app",
        "CREATE ROLE lookup LOGIN PASSWORD 'lookup_pw'; \
         CREATE ROLE shopper LOGIN PASSWORD 'first'; \
         CREATE ROLE keeper LOGIN PASSWORD 'kept'; \
         GRANT ALL ON DATABASE app TO shopper; \
         CREATE FUNCTION public.user_lookup(in i_username text, out uname text, out phash text) \
         RETURNS record AS $$ BEGIN SELECT usename, passwd FROM pg_catalog.pg_shadow \
         WHERE usename = i_username INTO uname, phash; RETURN; END; $$ \
         LANGUAGE plpgsql SECURITY DEFINER; \
         REVOKE ALL ON FUNCTION public.user_lookup(text) FROM public; \
         GRANT EXECUTE ON FUNCTION public.user_lookup(text) TO lookup",
    );
}

fn auth_query_config(port: u16, pg: &PgCluster, lookup_pw: &str) -> String {
    format!(
        "[general]\nhost = \"127.0.0.1\"\nport = {port}\nadmin_username = \"admin\"\n\
         admin_password = \"admin_pw\"\n\
         auth_query = \"SELECT * FROM public.user_lookup('$1');\"\n\
         auth_query_user = \"lookup\"\nauth_query_password = \"{lookup_pw}\"\n\n\
         [pools.app]\npool_mode = \"transaction\"\n\
         [pools.app.users.0]\nusername = \"shopper\"\npool_size = 3\n\
         [pools.app.users.1]\nusername = \"keeper\"\npassword = \"kept\"\npool_size = 3\n\
         [pools.app.shards.0]\ndatabase = \"app\"\n\
         servers = [[\"127.0.0.1\", {}, \"primary\"]]\n",
        pg.port
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_logs_in_with_the_hash_the_database_holds() {
    let pg = PgCluster::start_with(Auth::Md5);
    auth_query_setup(&pg);
    let port = free_port();
    let proxy = Proxy::start(port, &auth_query_config(port, &pg, "lookup_pw"));
    // No password in the config: the client's is checked against the hash,
    // and the servers are logged in to with it (md5 pass-through).
    let url = |pw: &str| proxy.url("shopper", pw, "app");
    assert_eq!(login(&url("first")).await, Ok(1));
    assert_eq!(login(&url("wrong")).await, Err("28P01".into()));
    let kept = connect(&url("first")).await;
    kept.simple_query("select 1").await.expect("query");

    // The password changes in the database: connected clients go on, the
    // new password works at once (the hash is read again), the old one no
    // longer does.
    pg.psql("app", "ALTER ROLE shopper PASSWORD 'second'");
    kept.simple_query("select 2")
        .await
        .expect("still connected");
    assert_eq!(login(&url("second")).await, Ok(1));
    assert_eq!(login(&url("first")).await, Err("28P01".into()));
    shopper_directly_has_the_second_password(&pg).await;
}

/// Directly, as through pgmlcat once the password changed: `second` logs
/// shopper in, `first` no longer does.
async fn shopper_directly_has_the_second_password(pg: &PgCluster) {
    let direct = |pw: &str| {
        format!(
            "host=127.0.0.1 port={} user=shopper password={pw} dbname=app",
            pg.port
        )
    };
    assert_eq!(login(&direct("second")).await, Ok(1));
    assert_eq!(login(&direct("first")).await, Err("28P01".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_auth_query_fails_logins_until_a_reload_fixes_it() {
    let pg = PgCluster::start_with(Auth::Md5);
    auth_query_setup(&pg);
    let port = free_port();
    let proxy = Proxy::start(port, &auth_query_config(port, &pg, "not_it"));
    let url = proxy.url("shopper", "first", "app");
    assert_eq!(login(&url).await, Err("28P01".into()));
    assert!(
        proxy
            .log()
            .contains("Error trying to obtain password from auth_query"),
        "pgcat's words in the log: {}",
        proxy.log()
    );
    proxy.write_config(&auth_query_config(port, &pg, "lookup_pw"));
    proxy.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while login(&url).await != Ok(1) {
        assert!(std::time::Instant::now() < deadline, "{}", proxy.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_user_without_password_or_auth_query_is_refused_at_start() {
    let pg = PgCluster::start();
    let port = free_port();
    let text = auth_query_config(port, &pg, "x")
        .lines()
        .filter(|l| !l.starts_with("auth_query"))
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pgcat.toml");
    std::fs::write(&path, &text).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgmlcat"))
        .arg(&path)
        .output()
        .expect("run pgmlcat");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pools.app.users.0.password")
            && err.contains(
                "You have to specify a user password for every pool if auth_query is not specified"
            ),
        "{err}"
    );
    // Under trust no password is needed.
    std::fs::write(
        &path,
        text.replace("[general]\n", "[general]\nauth_type = \"trust\"\n"),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgmlcat"))
        .args(["--check"])
        .arg(&path)
        .output()
        .expect("run pgmlcat --check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// pgcat's trust set-up: `admin_auth_type = "trust"` with an empty admin
/// password opens the console to the admin user without a password, and a
/// user's own `auth_type = "trust"` lets it in without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_for_the_console_and_per_user_as_pgcat() {
    let pg = PgCluster::start();
    let port = free_port();
    let cfg = simple_config(port, &pg, "transaction", 2)
        .replace(
            "admin_password = \"admin_pw\"",
            "admin_password = \"\"\nadmin_auth_type = \"trust\"",
        )
        .replace("pool_size = 2", "pool_size = 2\nauth_type = \"trust\"");
    let proxy = Proxy::start(port, &cfg);
    let no_pw =
        |user: &str, db: &str| format!("host=127.0.0.1 port={port} user={user} dbname={db}");
    let admin = connect(&no_pw("admin", "pgcat")).await;
    admin.simple_query("SHOW POOLS").await.expect("console");
    assert!(
        tokio_postgres::connect(&no_pw("app", "pgcat"), tokio_postgres::NoTls)
            .await
            .is_err(),
        "only the admin user opens the console"
    );
    assert_eq!(login(&no_pw("app", "app")).await, Ok(1));
    drop(proxy);
}

/// SCRAM pass-through: the config holds only the SCRAM verifier Postgres
/// holds (no password anywhere); a client's SCRAM login gives pgmlcat the
/// keys it logs in to the server with, for every new server connection,
/// through a reload too. A verifier that is not the server's own is
/// refused with a message that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_pass_through_needs_no_password_in_the_config() {
    let pg = PgCluster::start_with(Auth::Scram);
    let verifier = pg.psql(
        "postgres",
        "select rolpassword from pg_authid where rolname = 'app'",
    );
    let port = free_port();
    let cfg = config(port, &pg, "scram-sha-256", "").replace(
        "password = \"app_pw\"",
        &format!("password = \"{verifier}\""),
    );
    assert!(!cfg.contains("app_pw"), "no plain password in the config");
    let proxy = Proxy::start(port, &cfg);
    let url = |pw: &str| proxy.url("app", pw, "app");
    assert_eq!(login(&url("wrong")).await, Err("28P01".into()));
    // Two clients in transactions at once: two server connections, each
    // logged in with the first client's keys.
    let (a, b) = (connect(&url("app_pw")).await, connect(&url("app_pw")).await);
    a.batch_execute("begin").await.expect("begin");
    b.batch_execute("begin").await.expect("begin");
    let pids: Vec<i32> = futures_util::future::join_all([&a, &b].map(|c| async move {
        c.query_one("select pg_backend_pid()", &[])
            .await
            .expect("on a server")
            .get(0)
    }))
    .await;
    assert_ne!(pids[0], pids[1], "two server connections");
    let who: String = a
        .query_one("select current_user::text", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(who, "app");
    a.batch_execute("commit").await.expect("commit");
    b.batch_execute("commit").await.expect("commit");
    // A reload keeps the keys: new server connections still log in.
    proxy.write_config(&cfg.replace("pool_size = 2", "pool_size = 3"));
    proxy.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.psql(
        "postgres",
        "select pg_terminate_backend(pid) from pg_stat_activity where usename = 'app'",
    );
    let c = connect(&url("app_pw")).await;
    let row = c.query_one("select 1", &[]).await;
    let row = match row {
        Ok(r) => r,
        // The terminated connection may be handed out once, as directly.
        Err(_) => c
            .query_one("select 1", &[])
            .await
            .expect("a new server connection"),
    };
    assert_eq!(row.get::<_, i32>(0), 1);
    // Other SCRAM clients: libpq's (psycopg 3) and asyncpg's own.
    assert_eq!(
        python_client("scram_login.py", &url("app_pw")),
        r#"{"psycopg": "app", "asyncpg": "app"}"#
    );

    // A verifier for the same password but not the server's (another
    // salt): clients log in to pgmlcat, the server refuses the keys.
    let other = postgres_protocol::password::scram_sha_256(b"app_pw");
    let port = free_port();
    let proxy = Proxy::start(
        port,
        &config(port, &pg, "scram-sha-256", "")
            .replace("password = \"app_pw\"", &format!("password = \"{other}\"")),
    );
    let err = tokio_postgres::connect(&proxy.url("app", "app_pw", "app"), tokio_postgres::NoTls)
        .await
        .err()
        .expect("the server cannot take these keys");
    let db = err.as_db_error().expect("an error from pgmlcat");
    assert!(
        db.message().contains("SCRAM pass-through"),
        "the error says why: {db:?}"
    );
}

/// auth_query with SCRAM verifiers: no password for the user anywhere,
/// the verifier read through the dedicated auth_query_user checks the
/// client and its keys log the pool in (SCRAM pass-through); what was read
/// is trusted for auth_query_cache_ttl, then read again, so a password
/// changed in the database stops working without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_with_scram_verifiers_and_a_ttl() {
    let pg = PgCluster::start_with(Auth::Scram);
    auth_query_setup(&pg);
    let port = free_port();
    let cfg = auth_query_config(port, &pg, "lookup_pw").replace(
        "auth_query_user",
        "auth_type = \"scram-sha-256\"\nauth_query_cache_ttl = 1\nauth_query_user",
    );
    let proxy = Proxy::start(port, &cfg);
    let url = |pw: &str| proxy.url("shopper", pw, "app");
    assert_eq!(login(&url("first")).await, Ok(1));
    assert_eq!(login(&url("wrong")).await, Err("28P01".into()));
    let c = connect(&url("first")).await;
    let who: String = c
        .query_one("select current_user::text", &[])
        .await
        .expect("logged in to the server as shopper")
        .get(0);
    assert_eq!(who, "shopper");
    // Changed in the database: once the TTL passed, the old password no
    // longer logs in (with no login on the new one to prompt a re-read),
    // and the new one does, its keys logging in new server connections.
    pg.psql("app", "ALTER ROLE shopper PASSWORD 'second'");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(login(&url("first")).await, Err("28P01".into()));
    pg.psql(
        "postgres",
        "select pg_terminate_backend(pid) from pg_stat_activity where usename = 'shopper'",
    );
    // Every server connection is gone: the next is logged in with the
    // new password's keys.
    assert_eq!(login(&url("second")).await, Ok(1));
    shopper_directly_has_the_second_password(&pg).await;
}
