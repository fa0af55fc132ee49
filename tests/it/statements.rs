//! Prepared statements exactly as the client sees them, through transaction
//! pooling: SQL DEALLOCATE of statements prepared with the protocol (pgx's
//! cache eviction, PHP PDO's dropped statements), also inside a
//! transaction, and statements prepared again after DDL, driven with
//! psycopg 3 and compared with a direct run.

use crate::common::*;

#[test]
fn sql_deallocate_of_protocol_statements() {
    let pg = PgCluster::start();
    pg.psql("app", "create table dd(x int)");
    let direct = python_client(
        "deallocate.py",
        &format!(
            "host=127.0.0.1 port={} user=app password=app_pw dbname=app",
            pg.port
        ),
    );
    // The statement is gone after DEALLOCATE (26000 on its next use), the
    // transaction around a DEALLOCATE commits, DEALLOCATE ALL works.
    assert_eq!(direct, r#"[2, "26000", 2, 15]"#, "the scenario itself");

    let port = free_port();
    let proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 2));
    let pooled = python_client("deallocate.py", &proxy.url("app", "app_pw", "app"));
    assert_eq!(pooled, direct);
}

/// DDL changes what a prepared statement returns; the driver prepares the
/// same text again (psycopg on seeing the DDL, pgJDBC on the 0A000). The
/// shared statement every server holds must not be handed back stale.
#[test]
fn reprepare_after_ddl() {
    let pg = PgCluster::start();
    let direct = python_client(
        "stale_plan.py",
        &format!(
            "host=127.0.0.1 port={} user=app password=app_pw dbname=app",
            pg.port
        ),
    );
    let port = free_port();
    let proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 2));
    let pooled = python_client("stale_plan.py", &proxy.url("app", "app_pw", "app"));
    assert_eq!(pooled, direct);
    assert!(direct.ends_with("[[1, 5]], [[1, 5]]]"), "{direct}");
}
