//! Transactions through read/write splitting, sent the way drivers send
//! them. A BEGIN on a pool that routes by content waits (deferred) until
//! a statement shows where the transaction belongs; the statements after
//! it must then run inside it, whatever protocol batch carries them.

use serde_json::{json, Value};

use crate::common::*;

/// Runs both clients against `conninfo` (ids from `first`); their answers
/// by driver.
fn transactions(conninfo: &str, first: i64) -> Value {
    let mut out = python_client_json("rollback_atomic.py", conninfo, &json!({"first": first}));
    let node = node_client_json(
        "rollback_atomic.js",
        conninfo,
        &json!({"first": first + 10}),
    );
    if let (Some(all), Some(node)) = (out.as_object_mut(), node.as_object()) {
        all.extend(node.clone());
    }
    out
}

/// psycopg 3 (its implicit BEGIN, then Parse/Bind/Execute batches; also in
/// pipeline mode), asyncpg (its own prepare round trip first) and
/// node-postgres run two INSERTs and a read in a transaction and roll it
/// back: every statement ran inside the transaction (it has an id and sees
/// its rows) and nothing is left, through pgmlcat as directly. Before the
/// fix, pgmlcat held the deferred BEGIN back while a Parse placed the
/// transaction, and the INSERT that the same batch's Bind ran committed on
/// its own.
#[test]
fn rolled_back_transactions_leave_nothing_through_read_write_splitting() {
    let primary = PgCluster::start();
    let replica = PgCluster::replica_of(&primary);
    primary.psql("app", "create table t (id int)");
    primary.psql("app", "grant all on t to app");
    let port = free_port();
    let _proxy = Proxy::start(
        port,
        &crate::replicas::config(port, primary.port, &[replica.port], "", ""),
    );
    let direct = transactions(&direct_url(&primary), 1_000);
    let pooled = transactions(
        &format!("host=127.0.0.1 port={port} user=app password=app_pw dbname=app"),
        2_000,
    );
    for driver in ["psycopg", "psycopg_pipeline", "asyncpg", "node-postgres"] {
        assert_eq!(
            direct[driver],
            json!({"xid": true, "own_rows": 2}),
            "{driver} directly: {direct}"
        );
        assert_eq!(
            pooled[driver], direct[driver],
            "{driver} through pgmlcat: {pooled}"
        );
    }
    assert_eq!(
        primary.psql("app", "select count(*) from t"),
        "0",
        "rows of rolled-back transactions are on the primary"
    );
}
