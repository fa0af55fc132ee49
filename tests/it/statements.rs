//! Prepared statements exactly as the client sees them, through transaction
//! pooling: SQL DEALLOCATE of statements prepared with the protocol (pgx's
//! cache eviction, PHP PDO's dropped statements), also inside a
//! transaction, driven with psycopg 3 and compared with a direct run.

use crate::common::*;

fn deallocate_script(conninfo: &str) -> String {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/clients/deallocate.py"
    );
    let out = run("python3", &[script, conninfo]);
    assert!(
        out.status.success(),
        "deallocate.py against {conninfo}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn sql_deallocate_of_protocol_statements() {
    let pg = PgCluster::start();
    pg.psql("app", "create table dd(x int)");
    let direct = deallocate_script(&format!(
        "host=127.0.0.1 port={} user=app password=app_pw dbname=app",
        pg.port
    ));
    // The statement is gone after DEALLOCATE (26000 on its next use), the
    // transaction around a DEALLOCATE commits, DEALLOCATE ALL works.
    assert_eq!(direct, r#"[2, "26000", 2, 15]"#, "the scenario itself");

    let port = free_port();
    let proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 2));
    let pooled = deallocate_script(&proxy.url("app", "app_pw", "app"));
    assert_eq!(pooled, direct);
}
