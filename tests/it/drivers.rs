//! Drivers other than libpq, as applications use them through transaction
//! pooling: pgJDBC (Java) re-preparing a server-prepared statement after DDL,
//! keeping SET search_path / SET TIME ZONE, listening for notifications and
//! holding state that pins it to a server (a session advisory lock, a
//! temporary table), and pgx v4 (Go) evicting from a tiny statement cache
//! with SQL DEALLOCATE and keeping a SET search_path. Each client program
//! (tests/it/clients/) is compiled into a temp dir by its test, run directly
//! against Postgres (which proves the scenario itself) and through a
//! transaction-mode pool of 2 while another connection keeps one server busy
//! at times, and both outputs must be equal. pgJDBC, pgx and node-postgres
//! also read their own writes through read/write splitting, from streaming
//! replicas that replay late (`freshness`), and log in through SCRAM
//! pass-through with their own SCRAM clients.
//!
//! Needs java and javac (default-jdk-headless), pgJDBC
//! (libpostgresql-jdbc-java), go (golang-go), pgx v4's sources
//! (golang-github-jackc-pgx-v4-dev), Node.js and node-postgres (npm's pg in
//! tests/it/clients/node): scripts/setup.sh installs them. A missing one
//! fails the test; nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use tempfile::TempDir;

use crate::common::*;

/// pgJDBC, as Debian's libpostgresql-jdbc-java installs it.
const PGJDBC_JAR: &str = "/usr/share/java/postgresql.jar";
/// Debian's Go source tree (GOPATH layout) with pgx v4 and what it imports.
const GOCODE: &str = "/usr/share/gocode";
/// A client program that has not finished in this many seconds is killed.
const CLIENT_TIMEOUT_SECS: &str = "60";

fn client_source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/clients")
        .join(name)
}

fn output_text(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a build tool; panics if it cannot be started (not installed) or fails.
fn build_step(mut cmd: Command, what: &str, package: &str) {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| {
        panic!("{what}: cannot run it ({e}); install {package} (scripts/setup.sh does)")
    });
    assert!(out.status.success(), "{what} failed: {}", output_text(&out));
}

/// A client program compiled into a temp dir of its own (a node-postgres
/// script runs from tests/it/clients/node, where its `pg` is).
struct Client {
    dir: TempDir,
    /// The command line that runs it, before its arguments.
    argv: Vec<String>,
}

impl Client {
    /// Compiles tests/it/clients/`class`.java against pgJDBC.
    fn java(class: &str) -> Client {
        assert!(
            Path::new(PGJDBC_JAR).exists(),
            "{PGJDBC_JAR} is missing: install libpostgresql-jdbc-java (scripts/setup.sh does)"
        );
        let dir = tempfile::Builder::new()
            .prefix("pgmlcat-java.")
            .tempdir()
            .expect("temp dir");
        let started = Instant::now();
        let mut javac = Command::new("javac");
        javac
            .args(["-nowarn", "-cp", PGJDBC_JAR, "-d"])
            .arg(dir.path())
            .arg(client_source(&format!("{class}.java")));
        build_step(
            javac,
            &format!("javac {class}.java"),
            "default-jdk-headless",
        );
        eprintln!("javac {class}.java: {:.1?}", started.elapsed());
        let classpath = format!("{PGJDBC_JAR}:{}", dir.path().display());
        Client {
            argv: [
                "java",
                // pgJDBC sends the JVM's zone as the TimeZone startup
                // parameter: one that is not the server's default.
                "-Duser.timezone=America/New_York",
                "-XX:TieredStopAtLevel=1",
                "-cp",
                &classpath,
                class,
            ]
            .map(String::from)
            .to_vec(),
            dir,
        }
    }

    /// Builds tests/it/clients/`file` against Debian's pgx v4 sources,
    /// offline: GOPATH mode (no modules, no proxy) over /usr/share/gocode.
    /// The build cache is shared by the tests (Go's cache is safe for
    /// concurrent builds) in cargo's temp dir for integration tests, so only
    /// the first build compiles pgx.
    fn go(file: &str) -> Client {
        assert!(
            Path::new(GOCODE)
                .join("src/github.com/jackc/pgx/v4/conn.go")
                .exists(),
            "pgx v4 sources are missing under {GOCODE}: install golang-github-jackc-pgx-v4-dev \
             (scripts/setup.sh does)"
        );
        let dir = tempfile::Builder::new()
            .prefix("pgmlcat-go.")
            .tempdir()
            .expect("temp dir");
        let bin = dir.path().join(file.trim_end_matches(".go"));
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-build-cache");
        let started = Instant::now();
        let mut go = Command::new("go");
        go.args(["build", "-o"])
            .arg(&bin)
            .arg(client_source(file))
            .env("GO111MODULE", "off")
            .env(
                "GOPATH",
                format!("{}:{GOCODE}", dir.path().join("gopath").display()),
            )
            .env("GOCACHE", &cache)
            .env("GOFLAGS", "")
            .env("GOPROXY", "off")
            .env("GOENV", "off")
            .env("GOTOOLCHAIN", "local");
        build_step(go, &format!("go build {file}"), "golang-go");
        eprintln!("go build {file}: {:.1?}", started.elapsed());
        Client {
            argv: vec![bin.to_string_lossy().into_owned()],
            dir,
        }
    }

    /// A node-postgres script of tests/it/clients/node (scripts/setup.sh
    /// installs the `pg` that its package-lock.json pins beside it).
    fn node(file: &str) -> Client {
        let script = client_source("node").join(file);
        let pg = client_source("node/node_modules/pg/package.json");
        assert!(
            pg.exists(),
            "{} is missing: run scripts/setup.sh (npm ci in tests/it/clients/node)",
            pg.display()
        );
        Client {
            argv: vec!["node".into(), script.to_string_lossy().into_owned()],
            dir: tempfile::Builder::new()
                .prefix("pgmlcat-node.")
                .tempdir()
                .expect("temp dir"),
        }
    }

    /// A Python client of tests/it/clients run by the tests' Python
    /// (`PGMLCAT_PYTHON`), with `first` as its first argument (which
    /// driver).
    fn python(file: &str, first: &str) -> Client {
        Client {
            argv: vec![
                python(),
                client_source(file).to_string_lossy().into_owned(),
                first.into(),
            ],
            dir: tempfile::Builder::new()
                .prefix("pgmlcat-python.")
                .tempdir()
                .expect("temp dir"),
        }
    }

    /// Runs the program with `args` (the connection last); returns its
    /// stdout, trimmed.
    fn stdout(&self, client_args: &[&str]) -> String {
        let conn = client_args.last().copied().unwrap_or_default();
        let mut args = vec![CLIENT_TIMEOUT_SECS];
        args.extend(self.argv.iter().map(String::as_str));
        args.extend_from_slice(client_args);
        let out = Command::new("timeout")
            .args(&args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("could not start {:?}: {e}", self.argv));
        assert!(
            out.status.success(),
            "{} against {conn}: {}",
            self.argv.last().unwrap(),
            output_text(&out)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs the program with `args` (the connection last); returns its
    /// stdout split into what it saw and the `backends: ...` counts it ends
    /// with.
    fn run(&self, client_args: &[&str]) -> (String, Vec<usize>) {
        let stdout = self.stdout(client_args);
        let (seen, last) = stdout
            .rsplit_once('\n')
            .unwrap_or_else(|| panic!("no output:\n{stdout}"));
        let backends = last
            .strip_prefix("backends: ")
            .unwrap_or_else(|| panic!("no `backends:` line at the end:\n{stdout}"))
            .split_whitespace()
            .map(|n| n.parse().expect("a count"))
            .collect();
        (seen.to_string(), backends)
    }
}

/// A transaction-mode pool of 2 on `pg`.
fn pool_of_two(pg: &PgCluster) -> Proxy {
    let port = free_port();
    Proxy::start(port, &simple_config(port, pg, "transaction", 2))
}

fn jdbc_url(port: u16) -> String {
    format!("jdbc:postgresql://127.0.0.1:{port}/app?connectTimeout=10&socketTimeout=60")
}

/// node-postgres's connection string.
fn node_url(port: u16) -> String {
    format!("postgres://app:app_pw@127.0.0.1:{port}/app")
}

fn pgx_conn(port: u16, extra: &str) -> String {
    format!(
        "host=127.0.0.1 port={port} user=app password=app_pw dbname=app connect_timeout=10 {extra}"
    )
}

/// Both outputs equal; directly every connection ran on one backend, through
/// the pool every one ran on both servers (else nothing was proved).
fn assert_same(direct: &(String, Vec<usize>), pooled: &(String, Vec<usize>)) {
    assert!(
        direct.1.iter().all(|&n| n == 1),
        "directly, one backend per connection: {:?}",
        direct.1
    );
    assert!(
        pooled.1.len() == direct.1.len() && pooled.1.iter().all(|&n| n >= 2),
        "through the pool each connection must have changed servers to prove anything: {:?}",
        pooled.1
    );
    if pooled.0 != direct.0 {
        let first = direct
            .0
            .lines()
            .zip(pooled.0.lines())
            .position(|(d, p)| d != p);
        panic!(
            "through pgmlcat the client saw something else; first difference at line {first:?}\n\
             ---- direct ----\n{}\n---- through pgmlcat ----\n{}",
            direct.0, pooled.0
        );
    }
}

/// Schema s2 first in search_path finds s2.only_here (1 row), public first
/// finds public.only_here (2 rows).
fn two_schemas(pg: &PgCluster) {
    pg.psql(
        "app",
        "create schema s2; create table s2.only_here(x int); insert into s2.only_here values (1); \
         create table public.only_here(x int); insert into public.only_here values (1), (2)",
    );
}

/// pgJDBC with prepareThreshold=1: after ALTER TABLE ... ADD COLUMN the
/// server-prepared statement fails with 0A000 on the next execution and the
/// driver prepares it again: transparently in autocommit mode and inside a
/// transaction with autosave=conservative; without autosave the error
/// reaches the application, which rolls back and goes on.
#[test]
fn pgjdbc_reprepares_after_ddl() {
    let pg = PgCluster::start();
    let client = Client::java("Reprepare");
    let direct = client.run(&[&jdbc_url(pg.port)]);
    let d = &direct.0;
    assert!(!d.contains("NOT server-prepared"), "{d}");
    for line in [
        "auto 5 server-prepared: (a=1) (a=2)",
        "auto-after-ddl 0 server-prepared: (a=1, b=5) (a=2, b=5)",
        "tx-after-ddl 0 server-prepared: (a=1, b=5, c=6) (a=2, b=5, c=6) | (a=1, b=5, c=6) (a=2, b=5, c=6)",
        "auto-after-2nd-ddl 0 server-prepared: (a=1, b=5, c=6) (a=2, b=5, c=6)",
        "no-autosave-tx-after-ddl 0 server-prepared: error 0A000 ERROR: cached plan must not change result type | (a=1, b=5, c=6, d=7) (a=2, b=5, c=6, d=7)",
        "no-autosave-tx-after-ddl 3 server-prepared: (a=1, b=5, c=6, d=7) (a=2, b=5, c=6, d=7) | (a=1, b=5, c=6, d=7) (a=2, b=5, c=6, d=7)",
    ] {
        assert!(d.lines().any(|l| l == line), "the scenario itself: no `{line}` in\n{d}");
    }
    // Each DDL made one execution fail on the server, healed by the driver.
    assert_eq!(
        pg.log()
            .matches("ERROR:  cached plan must not change result type")
            .count(),
        4,
        "{}",
        pg.log()
    );

    let proxy = pool_of_two(&pg);
    let pooled = client.run(&[&jdbc_url(proxy.port)]);
    assert_same(&direct, &pooled);
}

/// pgJDBC: SET search_path and SET TIME ZONE through a Statement last over
/// 24 rounds of Statement and server-prepared PreparedStatement executions
/// on both servers; a SET rolled back does not.
#[test]
fn pgjdbc_session_settings_persist() {
    let pg = PgCluster::start();
    two_schemas(&pg);
    let client = Client::java("SessionSet");
    let direct = client.run(&["set", &jdbc_url(pg.port)]);
    let d = &direct.0;
    for line in [
        "startup TimeZone: America/New_York",
        "set 23 show search_path: s2, public",
        "set 23 show TimeZone: Asia/Tokyo",
        "set 23 only_here: 1",
        "set 23 prepared: s2, public | Asia/Tokyo | 2024-01-01 21:00:00+09 | 1",
        "after rollback 3 prepared: s2, public | Asia/Tokyo | 2024-01-01 21:00:00+09 | 1",
    ] {
        assert!(
            d.lines().any(|l| l == line),
            "the scenario itself: no `{line}` in\n{d}"
        );
    }
    assert_eq!(d.lines().count(), 1 + (24 + 4) * 4, "{d}");

    let proxy = pool_of_two(&pg);
    let pooled = client.run(&["set", &jdbc_url(proxy.port)]);
    assert_same(&direct, &pooled);
}

/// pgJDBC sends the JVM's zone as the TimeZone startup parameter: that is
/// the session's default, which RESET TIME ZONE and RESET ALL go back to
/// (and RESET ALL takes search_path back to the server's default).
#[test]
fn pgjdbc_reset_goes_back_to_the_startup_time_zone() {
    let pg = PgCluster::start();
    two_schemas(&pg);
    let client = Client::java("SessionSet");
    let direct = client.run(&["reset", &jdbc_url(pg.port)]);
    let d = &direct.0;
    for line in [
        "set 1 show TimeZone: Asia/Tokyo",
        "reset 3 show TimeZone: America/New_York",
        "reset 3 prepared: public, s2 | America/New_York | 2024-01-01 07:00:00-05 | 2",
        "reset all 3 prepared: \"$user\", public | America/New_York | 2024-01-01 07:00:00-05 | 2",
    ] {
        assert!(
            d.lines().any(|l| l == line),
            "the scenario itself: no `{line}` in\n{d}"
        );
    }
    assert_eq!(d.lines().count(), 1 + (2 + 4 + 4) * 4, "{d}");

    let proxy = pool_of_two(&pg);
    let pooled = client.run(&["reset", &jdbc_url(proxy.port)]);
    assert_same(&direct, &pooled);
}

/// pgx v4 with statement_cache_capacity=2 (prepare mode): six distinct
/// queries in rotation make it DEALLOCATE (SQL, by name) a protocol
/// statement before nearly every new one, outside and inside transactions;
/// the transactions commit with their rows.
#[test]
fn pgx_statement_cache_evicts_with_deallocate() {
    let pg = PgCluster::start();
    pg.psql("app", "create table dd(x int)");
    // Log the app's statements: the direct run shows that pgx did send
    // DEALLOCATEs (through pgmlcat they are the proxy's business).
    pg.psql("postgres", "alter role app set log_statement = 'all'");
    let client = Client::go("pgx_deallocate.go");
    let direct = client.run(&[&pgx_conn(pg.port, "statement_cache_capacity=2")]);
    let d = &direct.0;
    for line in [
        r#"{"at":"auto3","q":5,"round":0,"v":5}"#,
        r#"{"at":"tx0","q":5,"round":1,"v":115}"#,
        r#"{"at":"tx1","q":4,"round":1,"v":17}"#,
        r#"{"committed":[100,101,200,201]}"#,
        r#"{"at":"after","q":5,"round":0,"v":206}"#,
    ] {
        assert!(
            d.lines().any(|l| l == line),
            "the scenario itself: no `{line}` in\n{d}"
        );
    }
    assert_eq!(d.lines().count(), 6 * (4 + 2 * 2 + 1) + 1, "{d}");
    let log = pg.log();
    let deallocates = log.matches("statement: deallocate lrupsc_").count();
    assert!(deallocates >= 50, "{deallocates} DEALLOCATEs:\n{log}");

    let proxy = pool_of_two(&pg);
    let pooled = client.run(&[&pgx_conn(proxy.port, "statement_cache_capacity=2")]);
    assert_same(&direct, &pooled);
    assert_eq!(
        pg.psql("app", "select string_agg(x::text, ',' order by x) from dd"),
        "100,101,200,201"
    );
}

/// pgx v4: SET search_path (simple protocol) lasts over 24 rounds of
/// cached prepared statements on both servers; set again in a committed
/// transaction it changes, in a rolled-back one it does not.
#[test]
fn pgx_search_path_persists() {
    let pg = PgCluster::start();
    two_schemas(&pg);
    let client = Client::go("pgx_search_path.go");
    let direct = client.run(&[&pgx_conn(pg.port, "")]);
    let d = &direct.0;
    for line in [
        r#"{"at":"set","current_setting":"s2, public","only_here":1,"round":23,"show":"s2, public"}"#,
        r#"{"at":"set in committed tx","current_setting":"public, s2","only_here":2,"round":3,"show":"public, s2"}"#,
        r#"{"at":"set in rolled-back tx","current_setting":"public, s2","only_here":2,"round":3,"show":"public, s2"}"#,
    ] {
        assert!(
            d.lines().any(|l| l == line),
            "the scenario itself: no `{line}` in\n{d}"
        );
    }
    assert_eq!(d.lines().count(), 24 + 4 + 4, "{d}");

    let proxy = pool_of_two(&pg);
    let pooled = client.run(&[&pgx_conn(proxy.port, "")]);
    assert_same(&direct, &pooled);
}

/// pgJDBC and LISTEN/NOTIFY (ListenPin.java, mode `listen`): the listener
/// LISTENs through the extended protocol, as pgJDBC sends every statement,
/// and keeps running statements on both servers (LISTEN pins nothing in
/// transaction mode) while a sender's 30 notifications (NOTIFY and a
/// server-prepared pg_notify in turn) arrive in order through
/// getNotifications; nothing after UNLISTEN; inside a transaction block
/// (autocommit off) LISTEN and UNLISTEN take effect at COMMIT and not at
/// all when rolled back, also as a transaction's first statement, which
/// pgJDBC sends in one batch (one Sync) after its BEGIN.
#[test]
fn pgjdbc_listen_notify() {
    let pg = PgCluster::start();
    let client = Client::java("ListenPin");
    let direct = client.run(&["listen", &jdbc_url(pg.port)]);
    let mut expected = vec!["pg_notify server-prepared: true".to_string()];
    expected.extend((0..30).map(|i| format!("jch {i}: jch p{i}")));
    expected.extend(
        [
            "jch: 30 heard",
            "after UNLISTEN jch: 0 heard",
            "jtx 0: jtx after COMMIT",
            "jtx 1: jtx after rolled-back UNLISTEN",
            "jtx: 2 heard",
            "after UNLISTEN *: 0 heard",
        ]
        .map(String::from),
    );
    assert_eq!(
        direct.0.lines().collect::<Vec<_>>(),
        expected,
        "the scenario itself"
    );

    let proxy = pool_of_two(&pg);
    let pooled = client.run(&["listen", &jdbc_url(proxy.port)]);
    assert_same(&direct, &pooled);
}

/// pgJDBC and state that pins (ListenPin.java, mode `pin`): a session
/// advisory lock taken through a Statement keeps another connection out
/// over 20 rounds until unlocked; a temporary table used by server-prepared
/// statements (prepareThreshold=1) over 20 rounds, then dropped. While a
/// connection holds either it stays on one backend (the client prints
/// whether it did, always so directly); once both are gone it changes
/// servers again (its `backends:` count).
#[test]
fn pgjdbc_advisory_lock_and_temp_table() {
    let pg = PgCluster::start();
    let client = Client::java("ListenPin");
    let direct = client.run(&["pin", &jdbc_url(pg.port)]);
    let mut expected = vec!["A locked 77".to_string()];
    expected.extend((0..20).map(|i| format!("lock round {i}: 77 free to B: false")));
    expected.extend(
        [
            "same backend while locked: true",
            "A unlocks 77: true",
            "77 free to B after unlock: true",
        ]
        .map(String::from),
    );
    expected.extend((0..20).map(|i| {
        format!(
            "temp round {i}: inserted 1, jt has {} rows, sum {} (server-prepared)",
            i + 1,
            i * (i + 1) / 2
        )
    }));
    expected.extend(["same backend while jt exists: true", "jt after drop: 0"].map(String::from));
    expected.extend((0..8).map(|i| format!("free round {i}: 77 free to B: true")));
    assert_eq!(
        direct.0.lines().collect::<Vec<_>>(),
        expected,
        "the scenario itself"
    );

    let proxy = pool_of_two(&pg);
    let pooled = client.run(&["pin", &jdbc_url(proxy.port)]);
    assert_same(&direct, &pooled);
}

/// lib/pq (pgcat's Go test): every query with arguments is an unnamed
/// statement parsed in one batch and bound in the next, which through a
/// transaction pool may run on another server connection, one whose
/// unnamed statement is another client's. As in pgcat's Go set-up, the
/// server is listed twice (primary and "replica", `default_role = "any"`),
/// so each batch picks one of two server pools at random. The client must
/// read what it reads directly, never run the other client's statement.
#[test]
fn lib_pq_unnamed_statements_across_servers() {
    let pg = PgCluster::start();
    let client = Client::go("pq_unnamed.go");
    let conn = |port: u16| {
        format!("host=127.0.0.1 port={port} user=app password=app_pw dbname=app sslmode=disable connect_timeout=10")
    };
    let direct = client.run(&[&conn(pg.port)]);
    assert!(
        direct
            .0
            .lines()
            .any(|l| l == r#"{"label":"mine","round":23,"sum":123,"theirs":"theirs 23"}"#),
        "the scenario itself:\n{}",
        direct.0
    );
    let port = free_port();
    let config = simple_config(port, &pg, "transaction", 2).replace(
        &format!("servers = [[\"127.0.0.1\", {}, \"primary\"]]", pg.port),
        &format!(
            "servers = [[\"127.0.0.1\", {0}, \"primary\"], [\"localhost\", {0}, \"replica\"]]",
            pg.port
        ),
    );
    assert!(config.contains("localhost"));
    let proxy = Proxy::start(port, &config);
    let pooled = client.run(&[&conn(proxy.port)]);
    assert_same(&direct, &pooled);
}

/// pgJDBC and pgml.predict (#17): parameters with declared types (float8,
/// int4), server-prepared from the first execution, where pgJDBC moves to
/// binary: every execution gives the float4 bits the same values as
/// constants give.
#[test]
fn pgjdbc_predict_parameters_mean_what_the_client_sent() {
    let pg = PgCluster::start();
    let port = free_port();
    let proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 2));
    for sql in [
        "SELECT pgml.load_dataset('iris')",
        "SELECT * FROM pgml.train('species', 'classification', 'pgml.iris', 'target', algorithm => 'lightgbm')",
        "CREATE VIEW widths AS SELECT sepal_length, sepal_width, petal_length, petal_width FROM pgml.iris",
        "SELECT * FROM pgml.train('width', 'regression', 'widths', 'petal_width', algorithm => 'lightgbm')",
    ] {
        proxy
            .psql(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}\n{}", proxy.log()));
    }
    let client = Client::java("PredictParams");
    let (seen, _) = client.run(&[&jdbc_url(port)]);
    for q in 0..4 {
        let consts: Vec<&str> = seen
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("consts {q}: ")))
            .collect();
        let params: Vec<&str> = seen
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("params {q}: ")))
            .collect();
        assert_eq!(consts.len(), 1, "{seen}");
        assert_eq!(params.len(), 8, "{seen}");
        // Text results say "0", binary ones "0.0": the values, as float4
        // bits, must be the same.
        let bits = |v: &str| v.parse::<f32>().map(f32::to_bits).ok();
        assert!(bits(consts[0]).is_some(), "{seen}");
        assert!(
            params.iter().all(|p| bits(p) == bits(consts[0])),
            "query {q}:\n{seen}"
        );
    }
}

/// SCRAM pass-through with pgJDBC's, pgx's and node-postgres's own SCRAM
/// clients: the
/// config holds only the verifier Postgres holds; each driver logs in,
/// runs a prepared statement with a parameter and SETs a parameter of
/// pgmlcat's, and sees what it sees directly.
#[test]
fn pgjdbc_pgx_and_node_postgres_log_in_with_scram_pass_through() {
    let pg = PgCluster::start_with(Auth::Scram);
    let verifier = pg.psql(
        "postgres",
        "select rolpassword from pg_authid where rolname = 'app'",
    );
    let port = free_port();
    let cfg = simple_config(port, &pg, "transaction", 2)
        .replace(
            "connect_timeout = 3000",
            "connect_timeout = 3000\nauth_type = \"scram-sha-256\"",
        )
        .replace(
            "password = \"app_pw\"",
            &format!("password = \"{verifier}\""),
        );
    assert!(!cfg.contains("app_pw"), "no plain password in the config");
    let _proxy = Proxy::start(port, &cfg);
    let java = Client::java("ScramLogin");
    let go = Client::go("pgx_scram_login.go");
    let node = Client::node("scram_login.js");
    for (client, direct, pooled) in [
        (
            &java,
            vec![jdbc_url(pg.port), "app".into(), "app_pw".into()],
            vec![jdbc_url(port), "app".into(), "app_pw".into()],
        ),
        (&go, vec![pgx_conn(pg.port, "")], vec![pgx_conn(port, "")]),
        (&node, vec![node_url(pg.port)], vec![node_url(port)]),
    ] {
        let direct: Vec<&str> = direct.iter().map(String::as_str).collect();
        let pooled: Vec<&str> = pooled.iter().map(String::as_str).collect();
        let (seen_direct, _) = client.run(&direct);
        let (seen_pooled, _) = client.run(&pooled);
        assert!(seen_direct.starts_with("user app"), "{seen_direct}");
        assert_eq!(seen_pooled, seen_direct, "through pgmlcat");
    }
}

mod freshness;
