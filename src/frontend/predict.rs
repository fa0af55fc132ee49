//! pgml.predict in a client session. The statement is planned once (and
//! cached by text), the rewritten SQL runs on the client's server, and the
//! server's answer goes through the plan's Rewriter, which splices the
//! predictions in. Simple protocol and extended (Parse/Bind/Describe/
//! Execute), where each Describe or Execute is one short exchange of our
//! own on the server, so the session's pipelining bookkeeping never sees
//! the rewritten statement.

use std::sync::Arc;

use bytes::BytesMut;
use postgres_protocol::message::frontend;

use super::decide::{Plan as RoutePlan, Statement};
use super::lease::Protocol;
use super::prepared;
use super::session::{Binding, Flow, Recovery, Session};
use crate::errors::{Error, Result};
use crate::ml::predict::{self, Plan, Rewriter, ServerForm};
use crate::ml::predictor::ModelSet;
use crate::ml::MlError;
use crate::net::codec;
use crate::net::messages::{self, TxStatus};
use crate::net::tag::{client, server as tag};
use crate::stats::Counters;

/// A Bind of a pgml.predict statement, kept until its Execute.
#[derive(Clone)]
pub(super) struct PredictPortal {
    pub plan: Arc<Plan>,
    /// Parameter format codes and values, as the client sent them.
    pub param_formats: Vec<i16>,
    pub params: Vec<Option<Vec<u8>>>,
    pub result_formats: Vec<i16>,
}

impl PredictPortal {
    fn text_params(&self) -> Vec<Option<String>> {
        self.params
            .iter()
            .map(|p| p.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()))
            .collect()
    }
}

/// Bind's sections: (param formats, params, result formats).
impl Session {
    /// The plan of a statement calling pgml.predict; None if it calls none.
    fn predict_plan(&self, sql: &str) -> std::result::Result<Option<Arc<Plan>>, MlError> {
        self.app.ml.plan(sql)
    }

    /// Simple Query with pgml.predict: Some(flow) when handled.
    pub(super) async fn predict_simple(&mut self, sql: &str) -> Result<Option<Flow>> {
        let plan = match self.predict_plan(sql) {
            Ok(Some(plan)) => plan,
            Ok(None) => return Ok(None),
            Err(e) => {
                let mut out = BytesMut::new();
                messages::error_response(&mut out, &Error::Ml(e));
                messages::ready_for_query(&mut out, self.tx.status);
                self.respond_in_order(out.freeze());
                return Ok(Some(Flow::Continue));
            }
        };
        if self.settle().await? == Flow::Close {
            return Ok(Some(Flow::Close));
        }
        let outcome = self.run_predict(&plan, None, true).await;
        if let Err(e) = outcome {
            if matches!(e, Error::ClientGone | Error::Io(_)) {
                return Err(e);
            }
            messages::error_response(&mut self.client.out, &e);
        }
        messages::ready_for_query(&mut self.client.out, self.tx.status);
        Ok(Some(Flow::Continue))
    }

    /// Parse of a pgml.predict statement: planned now, answered here.
    pub(super) fn predict_parse(&mut self, name: &str, sql: &str) -> Result<bool> {
        match self.predict_plan(sql) {
            Ok(None) => Ok(false),
            Ok(Some(plan)) => {
                self.ml_predicts().insert(name.to_string(), plan);
                let mut out = BytesMut::new();
                messages::parse_complete(&mut out);
                self.respond_in_order(out.freeze());
                Ok(true)
            }
            Err(e) => Err(Error::Ml(e)),
        }
    }

    /// Bind of a pgml.predict statement; false if `stmt` is not one.
    pub(super) fn predict_bind(&mut self, portal: &str, stmt: &str, msg: &[u8]) -> Result<bool> {
        let Some(plan) = self.ml_predicts().get(stmt).cloned() else {
            return Ok(false);
        };
        let (param_formats, params, result_formats) = prepared::bind_parts(msg)?;
        self.ml_predict_portals().insert(
            portal.to_string(),
            PredictPortal {
                plan,
                param_formats,
                params,
                result_formats,
            },
        );
        let mut out = BytesMut::new();
        messages::bind_complete(&mut out);
        self.respond_in_order(out.freeze());
        Ok(true)
    }

    /// Describe (statement or portal) of a pgml.predict statement.
    pub(super) async fn predict_describe(&mut self, kind: u8, name: &str) -> Result<bool> {
        let portal = match kind {
            client::STATEMENT => match self.ml_predicts().get(name).cloned() {
                Some(plan) => PredictPortal {
                    plan,
                    param_formats: Vec::new(),
                    params: Vec::new(),
                    result_formats: Vec::new(),
                },
                None => return Ok(false),
            },
            _ => match self.ml_predict_portals().get(name).cloned() {
                Some(p) => p,
                None => return Ok(false),
            },
        };
        if self.settle().await? == Flow::Close {
            return Err(Error::ClientGone);
        }
        if let Err(e) = self
            .describe_predict(&portal, kind == client::STATEMENT)
            .await
        {
            self.predict_failed(e)?;
        }
        Ok(true)
    }

    /// Execute of a pgml.predict portal.
    pub(super) async fn predict_execute(&mut self, portal: &str) -> Result<bool> {
        let Some(p) = self.ml_predict_portals().get(portal).cloned() else {
            return Ok(false);
        };
        if self.settle().await? == Flow::Close {
            return Err(Error::ClientGone);
        }
        if let Err(e) = self.run_predict(&p.plan.clone(), Some(&p), false).await {
            self.predict_failed(e)?;
        }
        Ok(true)
    }

    fn predict_failed(&mut self, e: Error) -> Result<()> {
        if matches!(e, Error::ClientGone | Error::Io(_)) {
            return Err(e);
        }
        messages::error_response(&mut self.client.out, &e);
        self.recovery = match self.server.binding {
            Binding::One(_) => Recovery::DiscardToSync,
            _ => Recovery::SkipToSync,
        };
        Ok(())
    }

    /// A server for the rewritten statement: the one held, or one checked
    /// out as for any statement (shard routing, deferred BEGIN).
    async fn predict_server(&mut self, server_sql: &str, simple: bool) -> Result<()> {
        let protocol = if simple {
            Protocol::Simple
        } else {
            Protocol::Extended
        };
        let stmt = Statement {
            sql: Some(server_sql),
            bind: None,
            runs: true,
            protocol,
        };
        match self.decide(&stmt)? {
            RoutePlan::Held => Ok(()),
            RoutePlan::Checkout(route) => {
                if self.ensure_server(route, protocol).await? {
                    Ok(())
                } else {
                    Err(Error::NoShard(self.pool.sharding.missing_key()))
                }
            }
            RoutePlan::Refuse(e) => Err(e),
            _ => Err(Error::NoShard(self.pool.sharding.missing_key())),
        }
    }

    async fn describe_predict(&mut self, portal: &PredictPortal, statement: bool) -> Result<()> {
        let plan = &portal.plan;
        let Some(server_sql) = plan.server_sql.clone() else {
            if statement {
                // $n of a constant statement can only be a model reference: text.
                let n = plan
                    .calls
                    .iter()
                    .filter_map(|c| match c.model {
                        predict::ModelRef::Param(n) => Some(n),
                        _ => None,
                    })
                    .max()
                    .unwrap_or(0);
                let types = vec![crate::net::oid::TEXT; n];
                messages::parameter_description(&mut self.client.out, &types);
            }
            plan.describe_constant(&portal.result_formats, &mut self.client.out)
                .map_err(Error::Ml)?;
            return Ok(());
        };
        if !statement
            && plan
                .describe_cached(
                    Arc::new(NoModels),
                    &portal.result_formats,
                    &mut self.client.out,
                )
                .map_err(Error::Ml)?
        {
            return Ok(());
        }
        self.predict_server(&server_sql, false).await?;
        let mut msg = BytesMut::new();
        frontend::parse("", &server_sql, std::iter::empty(), &mut msg)?;
        if statement {
            frontend::describe(client::STATEMENT, "", &mut msg)?;
        } else {
            let formats = plan.server_result_formats(&portal.result_formats);
            bind_client_portal(portal, "", &formats, &mut msg)?;
            frontend::describe(client::PORTAL, "", &mut msg)?;
        }
        frontend::sync(&mut msg);
        // Describe answers need no models: nothing is predicted.
        let mut rewriter = plan.rewriter(Arc::new(NoModels), &portal.result_formats, &[]);
        self.exchange(&msg, &mut rewriter, true, None).await
    }

    /// Runs the statement: the rewritten SQL on the server, or a constant
    /// answer computed here.
    async fn run_predict(
        &mut self,
        plan: &Arc<Plan>,
        portal: Option<&PredictPortal>,
        simple: bool,
    ) -> Result<()> {
        let params = portal.map(PredictPortal::text_params).unwrap_or_default();
        let models = ModelSet::resolve(&self.app.ml, &self.pool, &plan.calls, &params)
            .await
            .map_err(Error::Ml)?;
        let Some(server_sql) = plan.server_sql.clone() else {
            let formats = portal.map(|p| p.result_formats.clone()).unwrap_or_default();
            if simple {
                plan.answer_constant(&models, &mut self.client.out)
            } else {
                plan.execute_constant(&models, &formats, &mut self.client.out)
            }
            .map_err(Error::Ml)?;
            return Ok(());
        };
        let formats = portal.map(|p| p.result_formats.clone()).unwrap_or_default();
        let fan_out = self.predict_needs_all_shards(&server_sql);
        if !fan_out {
            self.predict_server(&server_sql, simple).await?;
        }
        // On one server every execution is a prepared statement (named
        // after its text, prepared once per server connection, described
        // once per plan), so feature arrays can come in binary; on every
        // shard it goes unnamed (simple: as a Query).
        let server_formats = if fan_out && portal.is_none() {
            Vec::new()
        } else {
            plan.server_result_formats(&formats)
        };
        let mut rewriter = plan.rewriter(Arc::new(models), &formats, &server_formats);
        let mut msg = BytesMut::new();
        let mut prepared_as = None;
        match (portal, fan_out) {
            (None, true) => frontend::query(&server_sql, &mut msg)?,
            (None, false) => {
                let (name, sql, types, values) = simple_statement(plan, &server_sql);
                if !self.server_knows(&name) {
                    frontend::parse(&name, sql, types.iter().copied(), &mut msg)?;
                    prepared_as = (!name.is_empty()).then(|| name.clone());
                }
                let params = values.iter().map(|v| Some(v.as_bytes()));
                prepared::bind_portal(&name, &[], params, &server_formats, &mut msg)?;
                // The simple protocol's client gets a RowDescription.
                frontend::describe(client::PORTAL, "", &mut msg)?;
                frontend::execute("", 0, &mut msg)?;
                frontend::sync(&mut msg);
            }
            (Some(p), _) => {
                let name = if fan_out {
                    String::new()
                } else {
                    statement_name(&server_sql, &[])
                };
                if fan_out || !self.server_knows(&name) {
                    frontend::parse(&name, &server_sql, std::iter::empty(), &mut msg)?;
                    if !fan_out {
                        prepared_as = Some(name.clone());
                    }
                }
                bind_client_portal(p, &name, &server_formats, &mut msg)?;
                if fan_out || !plan.knows_layout() {
                    frontend::describe(client::PORTAL, "", &mut msg)?;
                }
                frontend::execute("", 0, &mut msg)?;
                frontend::sync(&mut msg);
            }
        }
        if fan_out {
            return self
                .predict_all_shards(&server_sql, &msg, &mut rewriter, simple)
                .await;
        }
        // Execute sends no RowDescription; the simple protocol does.
        self.exchange(&msg, &mut rewriter, simple, prepared_as)
            .await
    }

    /// A keyless read on a sharded pool, outside a transaction: it runs on
    /// every shard and the rows of all of them go through one rewriter.
    fn predict_needs_all_shards(&self, server_sql: &str) -> bool {
        self.runs_on_every_shard(server_sql)
    }

    async fn predict_all_shards(
        &mut self,
        server_sql: &str,
        msg: &[u8],
        rewriter: &mut Rewriter,
        describe: bool,
    ) -> Result<()> {
        // Rows are concatenated: anything the server would order, limit or
        // aggregate across rows would come out wrong.
        let analysis = self.analysis(Some(server_sql));
        let concatenates = analysis.as_ref().and_then(|a| a.merge.clone()).is_some_and(
            |m| matches!(m, Ok(p) if !p.merges_rows() && p.limit.is_none() && p.offset == 0),
        );
        if !concatenates {
            return Err(Error::Unsupported(
                "pgml.predict across shards with ORDER BY, LIMIT, DISTINCT or aggregates on other columns is not supported; \
                 give the sharding key, or order and limit by the prediction"
                    .into(),
            ));
        }
        let target = self.target_for(analysis.as_deref());
        let mut set = self.shard_set(0..self.pool.shards.len(), target).await?;
        let mut result = Ok(());
        let last = set.len() - 1;
        let mut scratch = BytesMut::new();
        'shards: for i in 0..set.len() {
            let server = set.server(i);
            if let Err(e) = server.send(msg).await {
                result = Err(e);
                break;
            }
            loop {
                let frame = match server.recv().await {
                    Ok(f) => f,
                    Err(e) => {
                        result = Err(e);
                        break 'shards;
                    }
                };
                let kind = frame.tag();
                let keep = match kind {
                    tag::READY_FOR_QUERY => break,
                    tag::PARSE_COMPLETE | tag::BIND_COMPLETE | tag::PARAMETER_STATUS => false,
                    // One RowDescription, one CommandComplete for the whole.
                    tag::ROW_DESCRIPTION => i == 0 && describe,
                    tag::COMMAND_COMPLETE => i == last && result.is_ok(),
                    tag::ERROR_RESPONSE => {
                        result = Err(Error::ServerRefused {
                            addr: server.addr.to_string(),
                            fields: messages::parse_error_fields(frame.body()),
                        });
                        false
                    }
                    _ => result.is_ok(),
                };
                let out = if keep {
                    &mut self.client.out
                } else {
                    &mut scratch
                };
                if (keep || kind == tag::ROW_DESCRIPTION) && result.is_ok() {
                    if let Err(e) = rewriter.on_message(kind, frame.body(), out) {
                        result = Err(Error::Ml(e));
                    }
                }
                scratch.clear();
                if let Err(e) = self.spill_to_client().await {
                    result = Err(e);
                    break 'shards;
                }
            }
            if result.is_err() {
                break;
            }
        }
        if matches!(result, Err(ref e) if !matches!(e, Error::ServerRefused { .. } | Error::Ml(_)))
        {
            set.abandon();
        }
        drop(set);
        if result.is_ok() {
            Counters::add(&self.pool.counters.xacts, 1);
        }
        result
    }

    /// Whether the held server has prepared statement `name` (never the
    /// unnamed one).
    fn server_knows(&mut self, name: &str) -> bool {
        !name.is_empty()
            && self
                .server
                .binding
                .one()
                .is_some_and(|s| s.server.state.prepared.contains(name))
    }

    /// One exchange on the held server, ending at its ReadyForQuery; the
    /// answer goes through `rewriter` to the client. RowDescriptions reach
    /// the client only when `describe`.
    /// `preparing`: the statement name a Parse in `msg` creates, recorded
    /// on the server when its ParseComplete comes.
    async fn exchange(
        &mut self,
        msg: &[u8],
        rewriter: &mut Rewriter,
        describe: bool,
        mut preparing: Option<String>,
    ) -> Result<()> {
        let Some(pooled) = self.server.binding.one() else {
            return Err(Error::ServerLost("no server for pgml.predict".into()));
        };
        pooled.server.send(msg).await?;
        let mut failure: Option<Error> = None;
        let mut scratch = BytesMut::new();
        let status = loop {
            let Some(pooled) = self.server.binding.one() else {
                return Err(Error::ServerLost("server gone".into()));
            };
            let server = &mut pooled.server;
            let frame = match server.recv().await {
                Ok(f) => f,
                Err(e) => {
                    self.on_server_lost().await;
                    return Err(e);
                }
            };
            let kind = frame.tag();
            match kind {
                tag::READY_FOR_QUERY => break server.state.status,
                tag::PARSE_COMPLETE => {
                    if let Some(name) = preparing.take() {
                        server.state.prepared.insert(name);
                    }
                    continue;
                }
                tag::BIND_COMPLETE => continue,
                tag::PARAMETER_STATUS => {
                    if let Some((name, value)) = messages::parse_parameter_status(frame.body()) {
                        self.client.params.reported(name, value);
                    }
                    continue;
                }
                _ => {}
            }
            if failure.is_some() {
                continue;
            }
            let out = if kind == tag::ROW_DESCRIPTION && !describe {
                &mut scratch
            } else {
                &mut self.client.out
            };
            if let Err(e) = rewriter.on_message(kind, frame.body(), out) {
                failure = Some(Error::Ml(e));
            }
            self.spill_to_client().await?;
        };
        if self.tx.deferred.is_none() {
            if status == TxStatus::Idle {
                Counters::add(&self.pool.counters.xacts, 1);
            }
            self.tx.status = status;
        }
        if self.transaction_over(status) && !self.release_if_clean() {
            self.release().await;
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Bind for a client's portal: its parameters as it sent them.
fn bind_client_portal(
    p: &PredictPortal,
    statement: &str,
    result_formats: &[i16],
    out: &mut BytesMut,
) -> Result<()> {
    let params = p.params.iter().map(|v| v.as_deref());
    prepared::bind_portal(statement, &p.param_formats, params, result_formats, out)
}

/// The server statement of a simple-protocol execution: its name (empty:
/// unnamed), text, parameter types and parameter values.
fn simple_statement<'a>(
    plan: &'a Plan,
    server_sql: &'a str,
) -> (String, &'a str, &'a [u32], &'a [String]) {
    match &plan.server_form {
        ServerForm::Fixed => (statement_name(server_sql, &[]), server_sql, &[], &[]),
        ServerForm::Params(p) => (
            statement_name(&p.sql, &p.types),
            &p.sql,
            &p.types,
            &p.values,
        ),
        ServerForm::OneOff => (String::new(), server_sql, &[], &[]),
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

/// Stand-in predictor for Describe, which never predicts.
struct NoModels;

impl predict::Predictor for NoModels {
    fn predict(
        &self,
        _call: usize,
        _inputs: &[predict::Features],
    ) -> crate::ml::MlResult<Vec<predict::Prediction>> {
        Err(MlError::Internal("Describe does not predict".into()))
    }
}

/// The SQL of a Parse message.
pub(super) fn parse_sql(msg: &[u8]) -> Result<(&str, &str)> {
    let (name, at) = prepared::first_name(msg)?;
    let (sql, _) = codec::cstr(msg, at)?;
    Ok((name, sql))
}
