//! The execution decisions, checked message by message: what a constant
//! plan answers, what the first and later executions on one server send,
//! each server form of the simple protocol, every shard, and Describe.

use super::*;
use crate::ml::predict::normalize;
use crate::net::codec::{cstr, read_i16, read_i32};
use crate::net::rows::{write_row_description, Field};
use crate::net::tag::server;

/// Predicts the sum of array features.
struct Sum;

impl Predictor for Sum {
    fn predict(&self, _call: usize, inputs: &[Features]) -> MlResult<Vec<Option<Prediction>>> {
        Ok(inputs
            .iter()
            .map(|f| match f {
                Features::Array(v) => Some(Prediction::Scalar(v.iter().sum::<f64>() as f32)),
                Features::Row(v) => Some(Prediction::Scalar(v.len() as f32)),
                Features::Grouped(..) => None,
            })
            .collect())
    }
}

fn sum() -> Arc<dyn Predictor> {
    Arc::new(Sum)
}

fn plan(sql: &str) -> Plan {
    crate::ml::predict::plan(sql).unwrap().unwrap()
}

fn portal(plan: Plan, params: &[&str], result_formats: &[i16]) -> Portal {
    Portal {
        plan: Arc::new(plan),
        types: Arc::from([]),
        param_formats: Vec::new(),
        params: params.iter().map(|p| Some(p.as_bytes().to_vec())).collect(),
        result_formats: result_formats.to_vec(),
    }
}

const NEVER: &dyn Fn(&str) -> bool = &|_| false;
const ALWAYS: &dyn Fn(&str) -> bool = &|_| true;

/// The messages in `bytes`: (tag, body).
fn split(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len = read_i32(bytes, at + 1).unwrap() as usize;
        out.push((bytes[at], bytes[at + 5..at + 1 + len].to_vec()));
        at += 1 + len;
    }
    assert_eq!(at, bytes.len());
    out
}

fn tags(bytes: &[u8]) -> String {
    split(bytes).iter().map(|(t, _)| *t as char).collect()
}

fn body(bytes: &[u8], tag: u8) -> Vec<u8> {
    let found = split(bytes).into_iter().find(|(t, _)| *t == tag);
    found.map(|(_, b)| b).unwrap_or_default()
}

/// A Parse: (statement name, SQL, parameter types).
fn parse_of(bytes: &[u8]) -> (String, String, Vec<u32>) {
    let b = body(bytes, client::PARSE);
    let (name, at) = cstr(&b, 0).unwrap();
    let (sql, at) = cstr(&b, at).unwrap();
    let n = read_i16(&b, at).unwrap() as usize;
    let types = (0..n)
        .map(|i| read_i32(&b, at + 2 + 4 * i).unwrap() as u32)
        .collect();
    (name.into(), sql.into(), types)
}

/// A Bind: (statement name, parameters as text, result formats).
fn bind_of(bytes: &[u8]) -> (String, Vec<String>, Vec<i16>) {
    let b = body(bytes, client::BIND);
    let (portal, at) = cstr(&b, 0).unwrap();
    assert_eq!(portal, "");
    let (name, mut at) = cstr(&b, at).unwrap();
    let formats = read_i16(&b, at).unwrap() as usize;
    at += 2 + 2 * formats;
    let n = read_i16(&b, at).unwrap() as usize;
    at += 2;
    let mut params = Vec::new();
    for _ in 0..n {
        let len = read_i32(&b, at).unwrap() as usize;
        params.push(String::from_utf8(b[at + 4..at + 4 + len].to_vec()).unwrap());
        at += 4 + len;
    }
    let n = read_i16(&b, at).unwrap() as usize;
    let results = (0..n)
        .map(|i| read_i16(&b, at + 2 + 2 * i).unwrap())
        .collect();
    (name.into(), params, results)
}

/// The RowDescription the server gives `SELECT id, (ARRAY[x]) AS
/// "__pgml_0" ...`, fed to a rewriter of `plan` so the plan learns it.
fn learn_layout(plan: &Plan) {
    let field = |name: &str, type_oid| Field {
        name: name.into(),
        table_oid: 0,
        attnum: 0,
        type_oid,
        typlen: -1,
        typmod: -1,
        format: 0,
    };
    let mut msg = BytesMut::new();
    write_row_description(&mut msg, &[field("id", oid::INT4), field("__pgml_0", 1022)]);
    let mut out = BytesMut::new();
    plan.rewriter(sum(), &[], &[])
        .on_message(server::ROW_DESCRIPTION, &msg[5..], &mut out)
        .unwrap();
}

/// `Execution::OneServer`'s (messages, prepares, describe).
fn one_server(e: MlResult<Execution>) -> (BytesMut, Option<String>, bool) {
    match e {
        Ok(Execution::OneServer {
            messages,
            prepares,
            describe,
            ..
        }) => (messages, prepares, describe),
        _ => panic!("not on one server"),
    }
}

/// `Execution::AllShards`'s (sql, messages, describe).
fn all_shards(e: MlResult<Execution>) -> (String, BytesMut, bool) {
    match e {
        Ok(Execution::AllShards {
            sql,
            messages,
            describe,
            ..
        }) => (sql.to_string(), messages, describe),
        Ok(_) => panic!("not on every shard"),
        Err(e) => panic!("{e}"),
    }
}

const ROWS: &str = "SELECT id, pgml.predict('p', ARRAY[x]) FROM t WHERE id > $1";

#[test]
fn a_constant_plan_is_answered_here() {
    let constant = plan("SELECT pgml.predict('p', ARRAY[1, 2]) AS s");
    let Ok(Execution::Constant(answer)) =
        execution(&constant, Protocol::Simple, Shards::All, ALWAYS, sum())
    else {
        panic!("not constant");
    };
    assert_eq!(tags(&answer), "TDC");
    // DataRow: one column, "3".
    assert_eq!(body(&answer, server::DATA_ROW), b"\0\x01\0\0\0\x013");
    // Execute: no RowDescription, the portal's (binary) format.
    let p = portal(constant, &[], &[1]);
    let Ok(Execution::Constant(answer)) =
        execution(&p.plan, Protocol::Extended(&p), Shards::One, NEVER, sum())
    else {
        panic!("not constant");
    };
    assert_eq!(tags(&answer), "DC");
    let row = body(&answer, server::DATA_ROW);
    assert_eq!(row[2..6], 4i32.to_be_bytes());
    assert_eq!(row[6..], 3.0f32.to_be_bytes());
}

#[test]
fn the_first_execution_prepares_and_describes_later_ones_do_not() {
    let p = portal(plan(ROWS), &["7"], &[]);
    let sql = p.plan.server_sql.clone().unwrap();
    let run = |knows| {
        one_server(execution(
            &p.plan,
            Protocol::Extended(&p),
            Shards::One,
            knows,
            sum(),
        ))
    };

    let (first, prepares, describe) = run(NEVER);
    assert_eq!(tags(&first), "PBDES");
    let (name, parsed, types) = parse_of(&first);
    assert!(name.starts_with("pgmlcat_predict_"), "{name}");
    assert_eq!((parsed, types), (sql, vec![]));
    assert_eq!(prepares.as_deref(), Some(name.as_str()));
    assert!(!describe, "Execute sends no RowDescription");
    assert_eq!(bind_of(&first), (name.clone(), vec!["7".into()], vec![]));

    // Prepared on this server already: no Parse, nothing to record.
    let (known, prepares, _) = run(ALWAYS);
    assert_eq!(tags(&known), "BDES");
    assert_eq!(prepares, None);

    // Layout known: no Describe, feature arrays in binary.
    learn_layout(&p.plan);
    let (later, _, _) = run(ALWAYS);
    assert_eq!(tags(&later), "BES");
    assert_eq!(bind_of(&later), (name, vec!["7".into()], vec![0, 1]));
}

#[test]
fn the_simple_protocol_runs_each_server_form() {
    // Fixed: the server SQL itself, named after its text.
    let fixed = plan("SELECT id, pgml.predict('p', ARRAY[x]) FROM t");
    let sql = fixed.server_sql.clone().unwrap();
    let (msgs, prepares, describe) = one_server(execution(
        &fixed,
        Protocol::Simple,
        Shards::One,
        NEVER,
        sum(),
    ));
    assert_eq!(tags(&msgs), "PBDES");
    let (name, parsed, types) = parse_of(&msgs);
    assert_eq!(
        (name.as_str(), parsed, types),
        (statement_name(&sql, &[]).as_str(), sql, vec![])
    );
    assert_eq!(prepares, Some(name.clone()));
    assert!(describe, "a Query's answer has a RowDescription");
    assert_eq!(bind_of(&msgs), (name, vec![], vec![]));
    let (msgs, prepares, _) = one_server(execution(
        &fixed,
        Protocol::Simple,
        Shards::One,
        ALWAYS,
        sum(),
    ));
    assert_eq!((tags(&msgs).as_str(), prepares), ("BDES", None));

    // Params: the compared constants as typed parameters, as the
    // service plans `WHERE id = 42`.
    let n = normalize::normalize("SELECT id, pgml.predict('p', ARRAY[x]) FROM t WHERE id = 42")
        .unwrap();
    let mut params = plan(&n.key);
    let template = params.server_sql.clone().unwrap();
    let form = normalize::parameterize(&template, &n.literals).unwrap();
    params.server_sql = normalize::restore(&template, &n.literals);
    params.server_form = ServerForm::Params(form.clone());
    let (msgs, prepares, _) = one_server(execution(
        &params,
        Protocol::Simple,
        Shards::One,
        NEVER,
        sum(),
    ));
    assert_eq!(tags(&msgs), "PBDES");
    let (name, parsed, types) = parse_of(&msgs);
    assert_eq!(name, statement_name(&form.sql, &form.types));
    assert_ne!(name, statement_name(&form.sql, &[]));
    assert_eq!((parsed, types), (form.sql.clone(), vec![oid::INT4]));
    assert_eq!(prepares, Some(name.clone()));
    assert_eq!(bind_of(&msgs), (name, vec!["42".into()], vec![]));

    // OneOff: unnamed, parsed every time, never recorded.
    params.server_form = ServerForm::OneOff;
    let (msgs, prepares, _) = one_server(execution(
        &params,
        Protocol::Simple,
        Shards::One,
        ALWAYS,
        sum(),
    ));
    assert_eq!(tags(&msgs), "PBDES");
    let (name, parsed, _) = parse_of(&msgs);
    assert_eq!(
        (name.as_str(), parsed.as_str()),
        ("", params.server_sql.as_deref().unwrap())
    );
    assert_eq!(prepares, None);
    assert_eq!(bind_of(&msgs).0, "");
}

#[test]
fn every_shard_gets_an_unnamed_statement() {
    let sql =
        "SELECT id, pgml.predict('p', ARRAY[x]) AS p FROM t WHERE pgml.predict('p', ARRAY[x]) > 4";
    let union = plan(sql);
    let server_sql = union.server_sql.clone().unwrap();
    // Simple: the statement as a Query, its RowDescription to the client.
    let (routed, msgs, describe) = all_shards(execution(
        &union,
        Protocol::Simple,
        Shards::All,
        ALWAYS,
        sum(),
    ));
    assert_eq!(routed, server_sql);
    assert_eq!(tags(&msgs), "Q");
    assert_eq!(
        body(&msgs, client::QUERY),
        format!("{server_sql}\0").as_bytes()
    );
    assert!(describe);
    // Extended: unnamed (never recorded), always described.
    learn_layout(&union);
    let p = portal(union, &[], &[]);
    let (_, msgs, describe) = all_shards(execution(
        &p.plan,
        Protocol::Extended(&p),
        Shards::All,
        ALWAYS,
        sum(),
    ));
    assert_eq!(tags(&msgs), "PBDES");
    assert_eq!(parse_of(&msgs).0, "");
    assert_eq!(bind_of(&msgs).0, "");
    assert!(!describe);
}

#[test]
fn across_shards_what_the_server_would_combine_is_refused() {
    let p = "pgml.predict('p', ARRAY[x])";
    for sql in [
        format!("SELECT id, {p} FROM t ORDER BY id LIMIT 3"),
        format!("SELECT id, {p} FROM t ORDER BY id"),
        format!("SELECT id, {p} FROM t LIMIT 3"),
        format!("SELECT id, {p} FROM t OFFSET 2"),
        format!("SELECT {p}, x FROM t GROUP BY x"),
        format!("SELECT {p}, x FROM t GROUP BY x HAVING count(*) > 1"),
        "SELECT pgml.predict('p', ARRAY[1]), count(*) FROM t".into(),
        "SELECT pgml.predict('p', ARRAY[1]), sum(x) + 1 FROM t".into(),
        format!("SELECT id, {p}, row_number() OVER () FROM t"),
        format!("SELECT ALL id, {p} FROM t"),
    ] {
        let planned = plan(&sql);
        let err = execution(&planned, Protocol::Simple, Shards::All, ALWAYS, sum())
            .err()
            .unwrap_or_else(|| panic!("{sql} ran across shards"));
        assert_eq!(err.sqlstate(), "0A000", "{sql}");
        assert_eq!(
            err.to_string(),
            "pgml.predict across shards with ORDER BY, LIMIT, DISTINCT or aggregates on other \
             columns is not supported; give the sharding key, or order and limit by the prediction"
        );
        // On one shard the server does it all.
        one_server(execution(
            &planned,
            Protocol::Simple,
            Shards::One,
            NEVER,
            sum(),
        ));
    }
    for sql in [
        format!("SELECT id FROM t ORDER BY {p} DESC LIMIT 3"),
        format!("SELECT id, {p} AS s FROM t WHERE {p} > 1 ORDER BY s OFFSET 1"),
        format!("SELECT id, {p} FROM t OFFSET 0"),
        format!("SELECT t.*, {p} FROM t JOIN u USING (id)"),
        format!("SELECT s.id, s.p FROM (SELECT id, {p} AS p FROM t) s"),
    ] {
        let planned = plan(&sql);
        all_shards(execution(
            &planned,
            Protocol::Simple,
            Shards::All,
            ALWAYS,
            sum(),
        ));
    }
}

#[test]
fn describe_is_answered_here_when_it_can_be() {
    let statement = |plan: Plan, types: &[u32]| PredictStatement {
        plan: Arc::new(plan),
        types: types.into(),
    };
    // Constant: no parameters, one real column.
    let constant = statement(plan("SELECT pgml.predict('p', ARRAY[1, 2]) AS s"), &[]);
    let Ok(Description::Answered(answer)) = describe(Describe::Statement(&constant)) else {
        panic!("not answered");
    };
    assert_eq!(tags(&answer), "tT");
    assert_eq!(body(&answer, server::PARAMETER_DESCRIPTION), b"\0\0");

    // A statement: the server describes it, with the types the client
    // declared (float8 here) declared in its Parse.
    let rows = statement(plan(ROWS), &[701]);
    let sql = rows.plan.server_sql.clone().unwrap();
    let Ok(Description::Server {
        sql: routed,
        messages,
        ..
    }) = describe(Describe::Statement(&rows))
    else {
        panic!("not on the server");
    };
    assert_eq!(routed, sql);
    assert_eq!(tags(&messages), "PDS");
    assert_eq!(parse_of(&messages).0, "");
    assert_eq!(
        parse_of(&messages).2,
        vec![701],
        "the client's declared types"
    );
    assert_eq!(body(&messages, client::DESCRIBE), b"S\0");

    // A portal: bound and described on the server, until the plan
    // has seen the server's description.
    let p = portal(Arc::unwrap_or_clone(rows.plan), &["7"], &[]);
    let Ok(Description::Server { messages, .. }) = describe(Describe::Portal(&p)) else {
        panic!("not on the server");
    };
    assert_eq!(tags(&messages), "PBDS");
    assert_eq!(bind_of(&messages), ("".into(), vec!["7".into()], vec![]));
    assert_eq!(body(&messages, client::DESCRIBE), b"P\0");
    learn_layout(&p.plan);
    let Ok(Description::Answered(answer)) = describe(Describe::Portal(&p)) else {
        panic!("not answered from the cached description");
    };
    assert_eq!(tags(&answer), "T");
    let fields =
        crate::net::rows::parse_row_description(&body(&answer, server::ROW_DESCRIPTION)).unwrap();
    let columns: Vec<(&str, u32)> = fields
        .iter()
        .map(|f| (f.name.as_str(), f.type_oid))
        .collect();
    assert_eq!(columns, [("id", oid::INT4), ("predict", 700)]);
}
