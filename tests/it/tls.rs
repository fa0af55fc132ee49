//! TLS on both hops against a real Postgres with `ssl = on`, with a CA and
//! certificates the test makes with openssl.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// A CA and a certificate for 127.0.0.1 signed by it.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki { dir };
        pki.ca("ca");
        pki.ca("other_ca");
        pki.leaf("server", "ca");
        pki.leaf("proxy", "ca");
        pki.leaf("proxy2", "other_ca");
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ca(&self, name: &str) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ]);
    }

    fn leaf(&self, name: &str, ca: &str) {
        std::fs::write(
            self.path(&format!("{name}.ext")),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("ext");
        self.openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.crt"),
        ]);
    }
}

fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Turns on ssl in a running cluster with the given cert and key.
fn enable_ssl(pg: &PgCluster, pki: &Pki) {
    for f in ["server.crt", "server.key"] {
        let dest = pg.dir.join(f);
        std::fs::copy(pki.path(f), &dest).expect("copy cert");
        let _ = Command::new("chown")
            .args(["postgres:postgres", &p(&dest)])
            .status();
        let _ = Command::new("chmod").args(["600", &p(&dest)]).status();
    }
    pg.psql("postgres", "alter system set ssl = on");
    pg.psql("postgres", "select pg_reload_conf()");
    std::thread::sleep(std::time::Duration::from_millis(500));
}

fn config(port: u16, pg: &PgCluster, pki: &Pki, server_ca: &str, extra: &str) -> String {
    simple_config(port, pg, "transaction", 2).replace(
        "connect_timeout = 3000",
        &format!(
            "connect_timeout = 3000\ntls_certificate = \"{}\"\ntls_private_key = \"{}\"\nserver_sslmode = \"verify-full\"\nserver_tls_ca_file = \"{}\"\n{extra}",
            p(&pki.path("proxy.crt")),
            p(&pki.path("proxy.key")),
            p(&pki.path(server_ca)),
        ),
    )
}

fn psql(port: u16, conn: &str, sql: &str) -> std::process::Output {
    run_env(
        "psql",
        &[
            "-X",
            "-w",
            "-qAt",
            "-d",
            &format!("host=127.0.0.1 port={port} user=app dbname=app {conn}"),
            "-c",
            sql,
        ],
        &[("PGPASSWORD", "app_pw")],
    )
}

const BOTH_HOPS: &str = "select ssl from pg_stat_ssl where pid = pg_backend_pid()";

#[test]
fn verify_full_on_both_hops() {
    let pki = Pki::new();
    let pg = PgCluster::start();
    enable_ssl(&pg, &pki);
    let port = free_port();
    let proxy = Proxy::start(port, &config(port, &pg, &pki, "ca.crt", ""));
    let root = format!("sslmode=verify-full sslrootcert={}", p(&pki.path("ca.crt")));
    let out = psql(port, &root, BOTH_HOPS);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.log()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "t",
        "the server hop is not encrypted"
    );
    // A client that does not verify still gets encryption; plain text is allowed unless required.
    assert!(psql(port, "sslmode=require", "select 1").status.success());
    assert!(psql(port, "sslmode=disable", "select 1").status.success());
    // A client trusting another CA refuses the proxy's certificate.
    let wrong = format!(
        "sslmode=verify-full sslrootcert={}",
        p(&pki.path("other_ca.crt"))
    );
    assert!(!psql(port, &wrong, "select 1").status.success());
}

/// pgcat's CI key is PKCS#8 content under an `RSA PRIVATE KEY` label;
/// OpenSSL and pgcat accept it, and so must pgmlcat.
#[test]
fn a_pkcs8_key_under_an_rsa_label_is_accepted() {
    let pki = Pki::new();
    let key = std::fs::read_to_string(pki.path("proxy.key")).expect("key");
    assert!(key.contains("BEGIN PRIVATE KEY"), "openssl wrote PKCS#8");
    std::fs::write(
        pki.path("proxy.key"),
        key.replace("PRIVATE KEY-----", "RSA PRIVATE KEY-----"),
    )
    .expect("relabel");
    let pg = PgCluster::start();
    enable_ssl(&pg, &pki);
    let port = free_port();
    let proxy = Proxy::start(port, &config(port, &pg, &pki, "ca.crt", ""));
    let out = psql(port, "sslmode=require", BOTH_HOPS);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t");
}

#[test]
fn wrong_server_ca_fails_clearly() {
    let pki = Pki::new();
    let pg = PgCluster::start();
    enable_ssl(&pg, &pki);
    let port = free_port();
    let _proxy = Proxy::start(port, &config(port, &pg, &pki, "other_ca.crt", ""));
    let out = psql(port, "sslmode=require", "select 1");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TLS handshake failed") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
}

#[test]
fn server_without_tls_and_sslmode_require_is_refused() {
    let pki = Pki::new();
    let pg = PgCluster::start(); // ssl = off
    let port = free_port();
    let cfg = config(port, &pg, &pki, "ca.crt", "").replace(
        "server_sslmode = \"verify-full\"",
        "server_sslmode = \"require\"",
    );
    let _proxy = Proxy::start(port, &cfg);
    let out = psql(port, "sslmode=require", "select 1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not support TLS"), "{err}");
    // prefer falls back to plain text.
    let port = free_port();
    let cfg = config(port, &pg, &pki, "ca.crt", "").replace(
        "server_sslmode = \"verify-full\"",
        "server_sslmode = \"prefer\"",
    );
    let _proxy = Proxy::start(port, &cfg);
    let out = psql(port, "sslmode=require", BOTH_HOPS);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "f",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tls_required_refuses_plain_clients_and_certificates_reload() {
    let pki = Pki::new();
    let pg = PgCluster::start();
    enable_ssl(&pg, &pki);
    let port = free_port();
    let cfg = config(port, &pg, &pki, "ca.crt", "tls_required = true");
    let proxy = Proxy::start(port, &cfg);
    let out = psql(port, "sslmode=disable", "select 1");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("requires TLS"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ca = format!("sslmode=verify-full sslrootcert={}", p(&pki.path("ca.crt")));
    assert!(psql(port, &ca, "select 1").status.success());
    // Swap in a certificate from the other CA and reload: new clients see it.
    proxy.write_config(
        &cfg.replace("proxy.crt", "proxy2.crt")
            .replace("proxy.key", "proxy2.key"),
    );
    proxy.signal("HUP");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        !psql(port, &ca, "select 1").status.success(),
        "old CA still accepted after reload"
    );
    let other = format!(
        "sslmode=verify-full sslrootcert={}",
        p(&pki.path("other_ca.crt"))
    );
    let out = psql(port, &other, "select 1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
