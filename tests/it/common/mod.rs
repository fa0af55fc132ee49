//! Shared integration-test harness: real PostgreSQL 15 clusters and the
//! `pgmlcat` proxy binary, each living in its own temporary directory.
//!
//! Everything here is synchronous (it shells out to the PostgreSQL tools), so
//! it can be used from plain `#[test]`s and from `#[tokio::test]`s alike.
//!
//! Postgres refuses to run as root; when the tests run as root the server
//! tools (`initdb`, `pg_ctl`, `pg_basebackup`) are run as the `postgres` OS
//! user through `runuser`, and the temp dirs are handed to that user.
//!
//! Every module of tests/it runs in one process, side by side: each test
//! starts its own clusters and proxies in temp dirs of their own, ports come
//! from `free_port` (never the same one twice in the process), and nothing
//! here sets environment variables or the working directory of the process.
//!
//! `ml` holds what the pgml tests share (a cluster behind a proxy, psql
//! that fails the test on an error, SQLSTATEs, `real`s); `python` runs the
//! Python reference scripts and clients.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tempfile::TempDir;

mod ml;
mod node;
mod python;

pub use ml::*;
pub use node::*;
pub use python::*;

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Full path of a PostgreSQL 15 program, e.g. `pg_bin("pgbench")`.
pub fn pg_bin(name: &str) -> String {
    format!("{PG_BIN}/{name}")
}

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A currently free TCP port on 127.0.0.1, never handed out twice in one process.
pub fn free_port() -> u16 {
    let mut used = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let listener =
            TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
        let port = listener
            .local_addr()
            .expect("local_addr of the port probe")
            .port();
        if used.insert(port) {
            return port;
        }
    }
    panic!("could not find a free port that was not already handed out");
}

// ---------------------------------------------------------------------------
// Running programs
// ---------------------------------------------------------------------------

/// Whether the effective uid is 0 (read from /proc/self/status, falling back to `id -u`).
fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        if let Ok(status) = fs::read_to_string("/proc/self/status") {
            // "Uid:\t<real>\t<effective>\t<saved>\t<fs>"
            if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
                if let Some(euid) = line.split_whitespace().nth(2) {
                    return euid == "0";
                }
            }
        }
        Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
    })
}

/// A Command for a PostgreSQL server tool, run as `postgres` when we are root.
fn pg_tool(name: &str, cwd: &Path) -> Command {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &pg_bin(name)]);
        c
    } else {
        Command::new(pg_bin(name))
    };
    // The postgres user may not be able to enter the test's cwd (e.g. /root/...).
    cmd.current_dir(cwd).stdin(Stdio::null());
    cmd
}

fn output_text(out: &Output) -> String {
    format!(
        "exit: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd`, returning its output; panics if it fails, with its output and `context`.
fn run_checked(mut cmd: Command, what: &str, context: impl FnOnce() -> String) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not spawn {what}: {e}"));
    if !out.status.success() {
        panic!("{what} failed\n{}\n{}", output_text(&out), context());
    }
    out
}

/// Runs a program (psql, pgbench, ...) with PGCONNECT_TIMEOUT=10 and stdin closed.
/// Does not panic on a non-zero exit: inspect `status`, `stdout`, `stderr`.
/// Pass `-w` to psql so that it never prompts for a password.
pub fn run(cmd: &str, args: &[&str]) -> Output {
    run_env(cmd, args, &[])
}

/// Like [`run`] with extra environment variables, e.g. `&[("PGPASSWORD", "app_pw")]`.
pub fn run_env(cmd: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(cmd)
        .args(args)
        .env("PGCONNECT_TIMEOUT", "10")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("could not spawn {cmd} {args:?}: {e}"))
}

/// Last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A fresh temp dir that the postgres OS user can use (and root can still remove).
fn shared_tempdir(prefix: &str) -> TempDir {
    let tmp = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(std::env::temp_dir())
        .expect("create temp dir");
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o777))
        .expect("chmod 0777 the temp dir");
    tmp
}

// ---------------------------------------------------------------------------
// PostgreSQL clusters
// ---------------------------------------------------------------------------

/// The pg_hba method for TCP `host` connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    Trust,
    Md5,
    Scram,
}

/// A running PostgreSQL 15 cluster in a temp dir. Stopped (immediate) and
/// removed on drop.
pub struct PgCluster {
    pub port: u16,
    /// Data directory.
    pub dir: PathBuf,
    /// Unix socket directory.
    pub sock: PathBuf,
    log_path: PathBuf,
    tmp: TempDir,
}

impl PgCluster {
    /// A primary with `trust` authentication.
    pub fn start() -> PgCluster {
        Self::start_with(Auth::Trust)
    }

    /// A primary; TCP connections use `auth`. Has role `app` (superuser,
    /// password `app_pw`) owning database `app`; with Md5/Scram the `postgres`
    /// role has password `postgres_pw`.
    pub fn start_with(auth: Auth) -> PgCluster {
        let mut pg = Self::new_dirs("pgmlcat-pg.");

        let out = pg_tool("initdb", pg.tmp.path())
            .arg("-D")
            .arg(&pg.dir)
            .args(["-U", "postgres", "-A", "trust", "--no-sync"])
            .output()
            .expect("spawn initdb");
        if !out.status.success() {
            panic!("initdb failed\n{}", output_text(&out));
        }

        let method = match auth {
            Auth::Trust => "trust",
            Auth::Md5 => "md5",
            Auth::Scram => "scram-sha-256",
        };
        let encryption = if auth == Auth::Md5 {
            "md5"
        } else {
            "scram-sha-256"
        };
        pg.append_conf(&format!(
            "\n# pgmlcat test harness\n\
             listen_addresses = '127.0.0.1'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             shared_buffers = 32MB\n\
             max_connections = 300\n\
             wal_level = replica\n\
             max_wal_senders = 10\n\
             hot_standby = on\n\
             logging_collector = off\n\
             password_encryption = '{encryption}'\n"
        ));
        // Truncating an existing file keeps its owner (postgres).
        fs::write(
            pg.dir.join("pg_hba.conf"),
            format!(
                "local all all trust\n\
                 host replication all 127.0.0.1/32 trust\n\
                 host all all 127.0.0.1/32 {method}\n"
            ),
        )
        .expect("write pg_hba.conf");

        pg.boot();

        pg.psql(
            "postgres",
            "CREATE ROLE app LOGIN SUPERUSER PASSWORD 'app_pw'",
        );
        pg.psql("postgres", "CREATE DATABASE app OWNER app");
        if auth != Auth::Trust {
            pg.psql("postgres", "ALTER ROLE postgres PASSWORD 'postgres_pw'");
        }
        pg
    }

    /// A real streaming replica of `primary` (pg_basebackup -R -X stream),
    /// started and in recovery. It inherits the primary's pg_hba.conf.
    pub fn replica_of(primary: &PgCluster) -> PgCluster {
        let mut pg = Self::new_dirs("pgmlcat-replica.");
        let primary_port = primary.port.to_string();
        let mut cmd = pg_tool("pg_basebackup", pg.tmp.path());
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &primary_port,
            "-U",
            "postgres",
            "-D",
        ])
        .arg(&pg.dir)
        // -c fast: without it pg_basebackup waits for a spread checkpoint (~90 s).
        .args(["-R", "-X", "stream", "-c", "fast"])
        .env("PGCONNECT_TIMEOUT", "10");
        run_checked(cmd, "pg_basebackup", || {
            format!("primary log:\n{}", tail(&primary.log(), 50))
        });

        // The copied postgresql.conf carries the primary's port and socket dir;
        // boot() appends this cluster's own settings, which win.
        pg.boot();

        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match pg.try_psql("postgres", "SELECT pg_is_in_recovery()") {
                Ok(s) if s == "t" => break,
                Ok(s) if s == "f" => panic!("replica is not in recovery\n{}", pg.log()),
                _ if Instant::now() > deadline => {
                    panic!("replica did not become a hot standby in 30 s\n{}", pg.log())
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        pg
    }

    /// Creates the temp dir layout; the struct exists before anything is
    /// started so that a panic half-way still stops the server in Drop.
    fn new_dirs(prefix: &str) -> PgCluster {
        let tmp = shared_tempdir(prefix);
        let sock = tmp.path().join("sock");
        fs::create_dir(&sock).expect("create socket dir");
        if is_root() {
            let mut cmd = Command::new("chown");
            cmd.arg("-R").arg("postgres:postgres").arg(tmp.path());
            run_checked(cmd, "chown -R postgres:postgres <tmp>", String::new);
        }
        PgCluster {
            port: 0,
            dir: tmp.path().join("data"),
            sock,
            log_path: tmp.path().join("server.log"),
            tmp,
        }
    }

    fn append_conf(&self, text: &str) {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("postgresql.conf"))
            .expect("open postgresql.conf for appending");
        f.write_all(text.as_bytes())
            .expect("append to postgresql.conf");
    }

    /// Picks a port and starts the server, retrying with another port when
    /// something else grabbed it in the meantime.
    fn boot(&mut self) {
        for attempt in 1..=5 {
            self.port = free_port();
            self.append_conf(&format!(
                "port = {}\nunix_socket_directories = '{}'\n",
                self.port,
                self.sock.display()
            ));
            let log_len = self.log().len();
            let out = self.pg_ctl_start().output().expect("spawn pg_ctl start");
            if out.status.success() {
                return;
            }
            let new_log = self.log().get(log_len..).unwrap_or_default().to_string();
            if attempt < 5 && new_log.contains("Address already in use") {
                continue;
            }
            panic!(
                "pg_ctl start failed\n{}\nserver log:\n{}",
                output_text(&out),
                new_log
            );
        }
    }

    fn pg_ctl_start(&self) -> Command {
        let mut cmd = pg_tool("pg_ctl", self.tmp.path());
        cmd.arg("-D")
            .arg(&self.dir)
            .arg("-l")
            .arg(&self.log_path)
            .args(["-w", "-t", "60", "start"]);
        cmd
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut cmd = pg_tool("pg_ctl", self.tmp.path());
        cmd.arg("-D").arg(&self.dir).args(args);
        cmd
    }

    /// Runs SQL as superuser `postgres` over the unix socket (ON_ERROR_STOP,
    /// -qAt); returns trimmed stdout, panics with stderr on failure.
    /// Note: several statements in one string run in one implicit transaction.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql)
            .unwrap_or_else(|e| panic!("psql on port {} db {db} failed: {sql}\n{e}", self.port))
    }

    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let sock = self.sock.to_string_lossy();
        let port = self.port.to_string();
        let out = Command::new(pg_bin("psql"))
            .args(["-X", "-h", &sock, "-p", &port, "-U", "postgres", "-d", db])
            .args(["-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql])
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("could not spawn psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(output_text(&out))
        }
    }

    /// `pg_ctl stop -m fast -w`; panics if it fails.
    pub fn stop(&self) {
        run_checked(
            self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "60"]),
            "pg_ctl stop -m fast",
            || self.log(),
        );
    }

    /// `pg_ctl stop -m immediate` (crash-like); panics if it fails.
    pub fn stop_immediate(&self) {
        run_checked(
            self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "60"]),
            "pg_ctl stop -m immediate",
            || self.log(),
        );
    }

    /// Starts the server again (same dir and port). If it is still running,
    /// restarts it with `-m fast`.
    pub fn restart(&self) {
        let running = self
            .pg_ctl(&["status"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        let cmd = if running {
            let mut c = self.pg_ctl(&["restart", "-m", "fast", "-w", "-t", "60", "-l"]);
            c.arg(&self.log_path);
            c
        } else {
            self.pg_ctl_start()
        };
        run_checked(cmd, "pg_ctl start", || tail(&self.log(), 50));
    }

    /// `pg_ctl promote -w` (for replicas).
    pub fn promote(&self) {
        run_checked(
            self.pg_ctl(&["promote", "-w", "-t", "60"]),
            "pg_ctl promote",
            || tail(&self.log(), 50),
        );
    }

    /// Server log contents.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- postgres (port {}) log tail ----\n{}\n---- end postgres log ----",
                self.port,
                tail(&self.log(), 50)
            );
        }
        if self.dir.join("postmaster.pid").exists() {
            let _ = self
                .pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "30"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // `tmp` (a TempDir) is removed after this, ignoring errors.
    }
}

// ---------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------

/// A running `pgmlcat` process. Killed (SIGKILL) on drop.
pub struct Proxy {
    pub port: u16,
    pub config_path: PathBuf,
    log_path: PathBuf,
    child: Child,
    tmp: TempDir,
}

impl Proxy {
    /// Writes `config` (a complete pgcat.toml that listens on `port`) and
    /// starts the proxy with `--log-level debug`; waits up to 20 s for the
    /// port to accept TCP connections. Panics with the proxy log otherwise.
    pub fn start(port: u16, config: &str) -> Proxy {
        Proxy::start_env(port, config, &[])
    }

    /// Like `start`, with extra environment variables for the proxy process.
    pub fn start_env(port: u16, config: &str, envs: &[(&str, &str)]) -> Proxy {
        let tmp = shared_tempdir("pgmlcat-proxy.");
        let config_path = tmp.path().join("pgcat.toml");
        let log_path = tmp.path().join("proxy.log");
        fs::write(&config_path, config).expect("write proxy config");
        let log = fs::File::create(&log_path).expect("create proxy log file");
        let log_err = log.try_clone().expect("clone proxy log file handle");
        let child = Command::new(env!("CARGO_BIN_EXE_pgmlcat"))
            .arg(&config_path)
            .args(["--log-level", "debug"])
            .env("RUST_BACKTRACE", "1")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .expect("spawn the pgmlcat binary");
        let mut proxy = Proxy {
            port,
            config_path,
            log_path,
            child,
            tmp,
        };

        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = proxy.child.try_wait().expect("poll the proxy process") {
                panic!("proxy exited during startup ({status})\n{}", proxy.log());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return proxy;
            }
            if Instant::now() > deadline {
                panic!(
                    "proxy did not accept connections on {addr} within 20 s\n{}",
                    proxy.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Replaces the config file (atomically, via rename) e.g. before `signal("HUP")`.
    pub fn write_config(&self, config: &str) {
        let tmp_path = self.config_path.with_extension("toml.new");
        fs::write(&tmp_path, config).expect("write new proxy config");
        fs::rename(&tmp_path, &self.config_path).expect("move new proxy config into place");
    }

    /// Sends a signal by name: "HUP", "INT", "TERM", ...
    pub fn signal(&self, sig: &str) {
        let mut cmd = Command::new("kill");
        cmd.arg(format!("-{sig}")).arg(self.child.id().to_string());
        run_checked(
            cmd,
            &format!("kill -{sig} {}", self.child.id()),
            String::new,
        );
    }

    /// Waits up to `timeout` for the proxy to exit; `None` if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the proxy process") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Proxy stdout+stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// psql through the proxy as app/app_pw on database `app`: stdout
    /// (unaligned, tuples only) or, on failure, stderr.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        let (success, stdout, stderr) = self.psql_full(sql);
        if success {
            Ok(stdout)
        } else {
            Err(stderr.trim().to_string())
        }
    }

    /// psql through the proxy as [`Proxy::psql`] runs it: (success,
    /// trimmed stdout, stderr). NOTICEs go to stderr.
    pub fn psql_full(&self, sql: &str) -> (bool, String, String) {
        let port = self.port.to_string();
        let out = run_env(
            "psql",
            &[
                "-X",
                "-w",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "app",
                "-d",
                "app",
                "-v",
                "ON_ERROR_STOP=1",
                "-qAt",
                "-c",
                sql,
            ],
            &[("PGPASSWORD", "app_pw")],
        );
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// psql through the proxy with `sql` as its input file: statements
    /// sent one by one in one session, as an application would; stdout,
    /// or stderr on failure.
    pub fn psql_script(&self, sql: &str) -> Result<String, String> {
        use std::io::Write;
        let mut child = Command::new("psql")
            .args(["-X", "-w", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U",
                "app",
                "-d",
                "app",
                "-v",
                "ON_ERROR_STOP=1",
                "-qAt",
                "-f",
                "-",
            ])
            .env("PGPASSWORD", "app_pw")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("could not spawn psql: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(sql.as_bytes())
                .map_err(|e| format!("could not write the script: {e}"))?;
        }
        let out = child.wait_with_output().map_err(|e| format!("psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// libpq / tokio-postgres keyword connection string for the proxy.
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={db}",
            self.port
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- proxy (port {}) log tail ----\n{}\n---- end proxy log ----",
                self.port,
                tail(&self.log(), 200)
            );
        }
    }
}

/// The connection string for app/app_pw on database `app` of `pg`,
/// directly: what a scenario runs against to prove itself right.
pub fn direct_url(pg: &PgCluster) -> String {
    format!(
        "host=127.0.0.1 port={} user=app password=app_pw dbname=app",
        pg.port
    )
}

/// A minimal pgcat.toml: one pool `app` (user app/app_pw) with one primary,
/// database `app` on `pg`.
pub fn simple_config(proxy_port: u16, pg: &PgCluster, pool_mode: &str, pool_size: u32) -> String {
    format!(
        r#"[general]
host = "127.0.0.1"
port = {proxy_port}
admin_username = "admin"
admin_password = "admin_pw"
connect_timeout = 3000

[pools.app]
pool_mode = "{pool_mode}"

[pools.app.users.0]
username = "app"
password = "app_pw"
pool_size = {pool_size}

[pools.app.shards.0]
servers = [["127.0.0.1", {pg_port}, "primary"]]
database = "app"
"#,
        pg_port = pg.port
    )
}

/// `simple_config` with one server per pool and a short wait for it:
/// `checkout_timeout_ms` (58000 soon after), with `connect_timeout` long
/// enough to open one on a busy machine.
pub fn one_server_config(proxy_port: u16, pg: &PgCluster, checkout_timeout_ms: u64) -> String {
    simple_config(proxy_port, pg, "transaction", 1).replace(
        "connect_timeout = 3000",
        &format!("connect_timeout = 3000\ncheckout_timeout = {checkout_timeout_ms}"),
    )
}

/// A pool `app` (user app/app_pw, transaction mode) sharded over `shards`
/// (one primary each, database `app`), with `/* shard_id: n */` comments.
pub fn sharded_pool_config(proxy_port: u16, shards: &[PgCluster]) -> String {
    let mut cfg = format!(
        r#"[general]
host = "127.0.0.1"
port = {proxy_port}
admin_username = "admin"
admin_password = "admin_pw"

[pools.app]
pool_mode = "transaction"
default_shard = "all"
shard_id_regex = '/\* shard_id: (\d+) \*/'

[pools.app.users.0]
username = "app"
password = "app_pw"
pool_size = 4
"#
    );
    for (i, pg) in shards.iter().enumerate() {
        cfg.push_str(&format!(
            "\n[pools.app.shards.{i}]\nservers = [[\"127.0.0.1\", {}, \"primary\"]]\ndatabase = \"app\"\n",
            pg.port
        ));
    }
    cfg
}

/// A raw StartupMessage for protocol `major.minor` with `params`, for tests
/// that speak the wire protocol by hand.
pub fn startup_packet(major: i32, minor: i32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = ((major << 16) | minor).to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    msg.extend(body);
    msg
}

/// Connects with tokio-postgres (NoTls) and spawns the connection task.
/// Must be called inside a tokio runtime.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("tokio-postgres connect to `{url}` failed: {e}"));
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("tokio-postgres connection ended with error: {e}");
        }
    });
    client
}

/// Runs `pg_sleep(10)` on `client` while `cancel`, started 300 ms in,
/// sends a cancel request: the query ends with 57014 within `within`, and
/// the client's next query works.
pub async fn assert_sleep_cancelled(
    client: &tokio_postgres::Client,
    cancel: impl std::future::Future<Output = ()> + Send + 'static,
    within: Duration,
) {
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.await;
    });
    let started = Instant::now();
    let err = client
        .simple_query("select pg_sleep(10)")
        .await
        .expect_err("cancelled");
    assert_eq!(err.code().map(|c| c.code()), Some("57014"), "{err}");
    assert!(started.elapsed() < within, "took {:?}", started.elapsed());
    canceller.await.expect("canceller");
    let row = client
        .query_one("select 1", &[])
        .await
        .expect("usable after cancel");
    assert_eq!(row.get::<_, i32>(0), 1);
}
