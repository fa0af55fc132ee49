//! What the pgml tests share: a cluster behind a proxy, psql through it
//! that fails the test on an error, the catalog's deployed model, the
//! server's errors as SQLSTATEs, and reading `real`s and JSON numbers.

use serde_json::Value;
use tokio_postgres::SimpleQueryMessage;

use super::{free_port, simple_config, PgCluster, Proxy};

/// One PostgreSQL cluster behind a proxy (pool `app`, transaction mode,
/// 4 servers): where most pgml tests start.
pub fn single() -> (PgCluster, Proxy) {
    let pg = PgCluster::start();
    let port = free_port();
    let proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 4));
    (pg, proxy)
}

/// `sql` through the proxy with psql; its output, or a panic with the
/// error and the proxy's log.
pub fn ok(proxy: &Proxy, sql: &str) -> String {
    proxy
        .psql(sql)
        .unwrap_or_else(|e| panic!("{}\n{e}\n{}", head(sql), proxy.log()))
}

/// `sql` as psql's input file (it may be longer than one argument may
/// be); its output, or a panic with the error and the proxy's log.
pub fn ok_script(proxy: &Proxy, sql: &str) -> String {
    proxy
        .psql_script(sql)
        .unwrap_or_else(|e| panic!("{}\n{e}\n{}", head(sql), proxy.log()))
}

/// The start of a long statement, for messages.
pub fn head(sql: &str) -> String {
    match sql.char_indices().nth(300) {
        Some((i, _)) => format!("{}... ({} bytes)", &sql[..i], sql.len()),
        None => sql.to_string(),
    }
}

/// The id of the model pgml.deployed_models shows for `project`, read on
/// the catalog's cluster directly.
pub fn deployed_id(catalog: &PgCluster, project: &str) -> i64 {
    catalog
        .psql(
            "app",
            &format!("SELECT id FROM pgml.deployed_models WHERE name = '{project}'"),
        )
        .parse()
        .unwrap_or_else(|e| panic!("deployed model of {project}: {e}"))
}

/// The SQLSTATE and message of a server error; anything else (the
/// connection closed: the proxy crashed or dropped the client) fails the
/// test, naming `what`.
pub fn db_error(e: &tokio_postgres::Error, what: &str) -> (String, String) {
    match e.as_db_error() {
        Some(db) => (db.code().code().to_string(), db.message().to_string()),
        None => panic!("{what}: not an error from the server but {e:?}"),
    }
}

/// Runs `sql` in the simple protocol, which must fail with a server
/// error: its SQLSTATE and message.
pub async fn expect_error(client: &tokio_postgres::Client, sql: &str) -> (String, String) {
    let err = client
        .simple_query(sql)
        .await
        .err()
        .unwrap_or_else(|| panic!("{sql}: succeeded, an error was expected"));
    db_error(&err, sql)
}

/// The rows of a simple-protocol answer, every value as text ("" = NULL).
pub fn simple_rows(msgs: &[SimpleQueryMessage]) -> Vec<Vec<String>> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// A `real` as Postgres prints it (NaN and the infinities included).
pub fn real(text: &str) -> f32 {
    match text {
        "NaN" => f32::NAN,
        "Infinity" => f32::INFINITY,
        "-Infinity" => f32::NEG_INFINITY,
        _ => text
            .parse()
            .unwrap_or_else(|e| panic!("not a real: {text:?}: {e}")),
    }
}

/// `{0.1,0.9}` -> [0.1, 0.9].
pub fn reals(text: &str) -> Vec<f32> {
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or_else(|| panic!("not a real[]: {text:?}"));
    inner.split(',').map(real).collect()
}

/// A JSON list of numbers.
pub fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap_or_else(|| panic!("not a number: {x}")))
        .collect()
}

/// A JSON list of lists of numbers.
pub fn matrix(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(floats)
        .collect()
}
