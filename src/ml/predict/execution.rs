//! How a pgml.predict statement runs, decided here rather than by the
//! session: answered without a server (all arguments constant), on the
//! session's server as a prepared statement named after its text (prepared
//! once per server connection, described once per plan, so feature arrays
//! can come in binary), or on every shard as an unnamed statement whose
//! rows are concatenated. The session does the I/O: it finds the server,
//! sends the messages, feeds the answer to the rewriter and records the
//! statement the server prepared.

use std::sync::Arc;

use bytes::BytesMut;
use postgres_protocol::message::frontend;

use crate::ml::error::{MlError, MlResult};
use crate::net::messages;
use crate::net::oid;
use crate::net::tag::client;

use super::plan::{Plan, ServerForm};
use super::rows::Rewriter;
use super::types::{client_format, Features, ModelRef, Prediction, Predictor};

/// A client's Parse of a pgml.predict statement: the plan (shared by
/// text) and the parameter types the client declared, which every server
/// statement made from it declares too, so a parameter means what the
/// client sent (psycopg 3 sends float8 in binary with its type declared).
#[derive(Clone)]
pub struct PredictStatement<P = Plan> {
    pub plan: Arc<P>,
    pub types: Arc<[u32]>,
}

/// A Bind of a pgml.predict statement, kept until its Execute.
#[derive(Clone)]
pub struct Portal<P = Plan> {
    pub plan: Arc<P>,
    /// The parameter types its statement declared.
    pub types: Arc<[u32]>,
    /// Parameter format codes and values, as the client sent them.
    pub param_formats: Vec<i16>,
    pub params: Vec<Option<Vec<u8>>>,
    pub result_formats: Vec<i16>,
}

impl<P> Portal<P> {
    /// The Bind parameters as text, for the `$n` of pgml calls: a model
    /// (name or id) or explain's top_k. A binary parameter is a name's
    /// UTF-8, or an int2/int4/int8 (asyncpg sends ids and counts so); the
    /// proxy does not have the server's parameter types, so a binary value
    /// of an integer's width that is not printable text is read as one.
    pub fn text_params(&self) -> Vec<Option<String>> {
        self.params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                p.as_ref()
                    .map(|b| param_text(b, client_format(&self.param_formats, i) == 1))
            })
            .collect()
    }
}

/// One parameter as text (see `Portal::text_params`).
pub fn param_text(value: &[u8], binary: bool) -> String {
    match binary_integer(value) {
        Some(n) if binary => n.to_string(),
        _ => String::from_utf8_lossy(value).into_owned(),
    }
}

/// One parameter as text when the client declared its type: a binary
/// number or boolean by that type (a binary float8 is no int8), anything
/// else as `param_text` reads it.
pub fn typed_param_text(value: &[u8], binary: bool, oid: u32) -> MlResult<String> {
    use crate::ml::binary;
    if !binary {
        return Ok(param_text(value, false));
    }
    match oid {
        binary::BOOL => Ok(if binary::scalar(oid, value)? != 0.0 {
            "t"
        } else {
            "f"
        }
        .into()),
        binary::INT2 | binary::INT4 | binary::INT8 => {
            Ok((binary::scalar(oid, value)? as i64).to_string())
        }
        binary::FLOAT4 | binary::FLOAT8 | binary::NUMERIC => {
            Ok(binary::scalar(oid, value)?.to_string())
        }
        crate::net::oid::INTERVAL => crate::ml::pgtime::interval_input(value).ok_or_else(|| {
            crate::ml::MlError::invalid("a binary interval parameter must be 16 bytes")
        }),
        _ => Ok(param_text(value, true)),
    }
}

/// A big-endian int2/int4/int8 that is not printable text.
fn binary_integer(b: &[u8]) -> Option<i64> {
    if b.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
        return None;
    }
    Some(match *b {
        [a, b] => i16::from_be_bytes([a, b]) as i64,
        [a, b, c, d] => i32::from_be_bytes([a, b, c, d]) as i64,
        [a, b, c, d, e, f, g, h] => i64::from_be_bytes([a, b, c, d, e, f, g, h]),
        _ => return None,
    })
}

/// How the client asked for the rows.
#[derive(Clone, Copy)]
pub enum Protocol<'a> {
    /// A Query: the answer has a RowDescription, rows are text.
    Simple,
    /// An Execute of the client's portal: no RowDescription, rows in the
    /// portal's result formats.
    Extended(&'a Portal),
}

impl Protocol<'_> {
    /// The Bind parameters as text, for `$n` model references.
    pub fn text_params(&self) -> Vec<Option<String>> {
        match self {
            Protocol::Simple => Vec::new(),
            Protocol::Extended(p) => p.text_params(),
        }
    }

    fn result_formats(&self) -> &[i16] {
        match self {
            Protocol::Simple => &[],
            Protocol::Extended(p) => &p.result_formats,
        }
    }
}

/// Where the rewritten statement runs, as the session's routing decided
/// (not consulted for a plan answered without a server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shards {
    /// The server the session holds.
    One,
    /// Every shard of the pool: a keyless read outside a transaction.
    All,
}

pub enum Execution<'a> {
    /// Answered without a server: the bytes for the client.
    Constant(BytesMut),
    /// On the session's server: send `messages` (ending with Sync) and
    /// pass its answer through `rewriter`.
    OneServer {
        messages: BytesMut,
        /// The statement `messages` prepare, to record on the server when
        /// its ParseComplete comes.
        prepares: Option<String>,
        /// Whether the client gets the (rewritten) RowDescription.
        describe: bool,
        rewriter: Rewriter,
    },
    /// On every shard: each gets `messages`, all their rows go through
    /// `rewriter`; the client gets one RowDescription (when `describe`)
    /// and one CommandComplete.
    AllShards {
        /// The statement, for routing on each shard (reads to replicas).
        sql: &'a str,
        messages: BytesMut,
        describe: bool,
        rewriter: Rewriter,
    },
}

/// What to do for an execution of `plan`. `knows(name)`: whether the
/// session's server has prepared statement `name` already; `predictor`
/// holds the calls' models.
pub fn execution<'a>(
    plan: &'a Plan,
    protocol: Protocol<'_>,
    shards: Shards,
    knows: &dyn Fn(&str) -> bool,
    predictor: Arc<dyn Predictor>,
) -> MlResult<Execution<'a>> {
    let Some(sql) = plan.server_sql.as_deref() else {
        let mut answer = BytesMut::new();
        match protocol {
            Protocol::Simple => plan.answer_constant(&*predictor, &mut answer)?,
            Protocol::Extended(p) => {
                plan.execute_constant(&*predictor, &p.result_formats, &mut answer)?
            }
        }
        return Ok(Execution::Constant(answer));
    };
    if shards == Shards::All && !plan.concatenates {
        return Err(MlError::Unsupported(
            "pgml.predict across shards with ORDER BY, LIMIT, DISTINCT or aggregates on other columns is not supported; \
             give the sharding key, or order and limit by the prediction"
                .into(),
        ));
    }
    let formats = protocol.result_formats();
    // A Query on every shard has no Bind: text.
    let server_formats = match (protocol, shards) {
        (Protocol::Simple, Shards::All) => Vec::new(),
        _ => plan.server_result_formats(formats),
    };
    let rewriter = plan.rewriter(predictor, formats, &server_formats);
    let mut messages = BytesMut::new();
    Ok(match (protocol, shards) {
        (Protocol::Simple, Shards::All) => {
            frontend::query(sql, &mut messages).map_err(encoding("Query"))?;
            Execution::AllShards {
                sql,
                messages,
                describe: true,
                rewriter,
            }
        }
        (Protocol::Simple, Shards::One) => {
            let statement = simple_statement(plan, sql);
            let prepares = parse_unless_known(&statement, knows, &mut messages)?;
            let values = statement.values.iter().map(|v| Some(v.as_bytes()));
            bind(&statement.name, &[], values, &server_formats, &mut messages)?;
            // The simple protocol's client gets a RowDescription.
            describe_portal(&mut messages)?;
            execute(&mut messages)?;
            Execution::OneServer {
                messages,
                prepares,
                describe: true,
                rewriter,
            }
        }
        (Protocol::Extended(p), Shards::One) => {
            let statement = ServerStatement {
                name: statement_name(sql, &p.types),
                sql,
                types: &p.types,
                values: &[],
            };
            let prepares = parse_unless_known(&statement, knows, &mut messages)?;
            bind_portal(p, &statement.name, &server_formats, &mut messages)?;
            // Once the layout is known, the rewriter reads rows without it.
            if !plan.knows_layout() {
                describe_portal(&mut messages)?;
            }
            execute(&mut messages)?;
            Execution::OneServer {
                messages,
                prepares,
                describe: false,
                rewriter,
            }
        }
        (Protocol::Extended(p), Shards::All) => {
            frontend::parse("", sql, p.types.iter().copied(), &mut messages)
                .map_err(encoding("Parse"))?;
            bind_portal(p, "", &server_formats, &mut messages)?;
            describe_portal(&mut messages)?;
            execute(&mut messages)?;
            Execution::AllShards {
                sql,
                messages,
                describe: false,
                rewriter,
            }
        }
    })
}

/// What a client's Describe is about.
#[derive(Clone, Copy)]
pub enum Describe<'a> {
    /// A prepared statement: its parameter types, then its columns.
    Statement(&'a PredictStatement),
    /// A bound portal: its columns, in the portal's result formats.
    Portal(&'a Portal),
}

pub enum Description<'a> {
    /// Answered without a server: the bytes for the client.
    Answered(BytesMut),
    /// On the session's server (found by routing `sql`): send `messages`
    /// and pass the whole answer, RowDescription included, through
    /// `rewriter`.
    Server {
        sql: &'a str,
        messages: BytesMut,
        /// Boxed: a rewriter is large, and `Answered` needs none.
        rewriter: Box<Rewriter>,
    },
}

/// What to do for a client's Describe of a pgml.predict statement or portal.
pub fn describe(target: Describe<'_>) -> MlResult<Description<'_>> {
    let (plan, types, result_formats): (&Plan, &[u32], &[i16]) = match target {
        Describe::Statement(s) => (&s.plan, &s.types, &[]),
        Describe::Portal(p) => (&p.plan, &p.types, &p.result_formats),
    };
    let mut answer = BytesMut::new();
    let Some(sql) = plan.server_sql.as_deref() else {
        if let Describe::Statement(_) = target {
            // $n of a constant statement can only be a model reference: text.
            let n = plan
                .calls
                .iter()
                .filter_map(|c| match c.model {
                    ModelRef::Param(n) => Some(n),
                    _ => None,
                })
                .max()
                .unwrap_or(0);
            messages::parameter_description(&mut answer, &vec![oid::TEXT; n]);
        }
        plan.describe_constant(result_formats, &mut answer)?;
        return Ok(Description::Answered(answer));
    };
    // Describe answers need no models: nothing is predicted.
    let no_models = || Arc::new(NoModels) as Arc<dyn Predictor>;
    if let Describe::Portal(_) = target {
        if plan.describe_cached(no_models(), result_formats, &mut answer)? {
            return Ok(Description::Answered(answer));
        }
    }
    let mut messages = BytesMut::new();
    frontend::parse("", sql, types.iter().copied(), &mut messages).map_err(encoding("Parse"))?;
    match target {
        Describe::Statement(_) => frontend::describe(client::STATEMENT, "", &mut messages)
            .map_err(encoding("Describe"))?,
        Describe::Portal(p) => {
            let formats = plan.server_result_formats(result_formats);
            bind_portal(p, "", &formats, &mut messages)?;
            frontend::describe(client::PORTAL, "", &mut messages).map_err(encoding("Describe"))?;
        }
    }
    frontend::sync(&mut messages);
    Ok(Description::Server {
        sql,
        messages,
        rewriter: Box::new(plan.rewriter(no_models(), result_formats, &[])),
    })
}

/// A server statement: its name (empty: unnamed), text, parameter types
/// and parameter values.
struct ServerStatement<'a> {
    name: String,
    sql: &'a str,
    types: &'a [u32],
    values: &'a [String],
}

/// The server statement of a simple-protocol execution on one server.
fn simple_statement<'a>(plan: &'a Plan, sql: &'a str) -> ServerStatement<'a> {
    match &plan.server_form {
        ServerForm::Fixed => ServerStatement {
            name: statement_name(sql, &[]),
            sql,
            types: &[],
            values: &[],
        },
        ServerForm::Params(p) => ServerStatement {
            name: statement_name(&p.sql, &p.types),
            sql: &p.sql,
            types: &p.types,
            values: &p.values,
        },
        ServerForm::OneOff => ServerStatement {
            name: String::new(),
            sql,
            types: &[],
            values: &[],
        },
    }
}

/// The server-side name of a rewritten statement: derived from its text,
/// so every client's executions of it share one prepared statement.
/// Parameter types are part of it: one text may be prepared with `$1`
/// as int4 and as int8.
fn statement_name(sql: &str, types: &[u32]) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write;
    let mut hasher = Sha256::new();
    hasher.update(sql.as_bytes());
    for t in types {
        hasher.update(t.to_be_bytes());
    }
    let digest = hasher.finalize();
    let mut name = String::with_capacity(40);
    name.push_str("pgmlcat_predict_");
    for b in &digest[..12] {
        let _ = write!(name, "{b:02x}");
    }
    name
}

/// Parse of `statement` unless the server has it already; the name to
/// record when the server has parsed it. An unnamed statement does not
/// outlive its Sync, so it is always parsed and never recorded.
fn parse_unless_known(
    statement: &ServerStatement,
    knows: &dyn Fn(&str) -> bool,
    out: &mut BytesMut,
) -> MlResult<Option<String>> {
    let named = !statement.name.is_empty();
    if named && knows(&statement.name) {
        return Ok(None);
    }
    let types = statement.types.iter().copied();
    frontend::parse(&statement.name, statement.sql, types, out).map_err(encoding("Parse"))?;
    Ok(named.then(|| statement.name.clone()))
}

/// Bind of the unnamed portal to `statement` with the client's parameters,
/// as it sent them.
fn bind_portal(p: &Portal, statement: &str, formats: &[i16], out: &mut BytesMut) -> MlResult<()> {
    let params = p.params.iter().map(|v| v.as_deref());
    bind(statement, &p.param_formats, params, formats, out)
}

/// Bind of the unnamed portal to `statement` (see `net::extended::bind_portal`).
fn bind<'p>(
    statement: &str,
    param_formats: &[i16],
    params: impl IntoIterator<Item = Option<&'p [u8]>>,
    result_formats: &[i16],
    out: &mut BytesMut,
) -> MlResult<()> {
    crate::net::extended::bind_portal(statement, param_formats, params, result_formats, out)
        .map_err(|_| MlError::Internal("could not encode Bind".into()))
}

fn describe_portal(out: &mut BytesMut) -> MlResult<()> {
    frontend::describe(client::PORTAL, "", out).map_err(encoding("Describe"))
}

/// Execute of the whole unnamed portal, then Sync.
fn execute(out: &mut BytesMut) -> MlResult<()> {
    frontend::execute("", 0, out).map_err(encoding("Execute"))?;
    frontend::sync(out);
    Ok(())
}

fn encoding(message: &'static str) -> impl Fn(std::io::Error) -> MlError {
    move |e| MlError::Internal(format!("could not encode {message}: {e}"))
}

/// Stand-in predictor for Describe, which never predicts.
struct NoModels;

impl Predictor for NoModels {
    fn predict(&self, _call: usize, _inputs: &[Features]) -> MlResult<Vec<Option<Prediction>>> {
        Err(MlError::Internal("Describe does not predict".into()))
    }
}

#[cfg(test)]
mod tests;
