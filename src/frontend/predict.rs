//! pgml.predict in a client session. The statement is planned once (and
//! cached by text); `ml::predict` decides what each execution or Describe
//! sends where, and this file does the I/O: the rewritten SQL runs on the
//! client's server (or every shard), and the server's answer goes through
//! the plan's Rewriter, which splices the predictions in. Simple protocol
//! and extended (Parse/Bind/Describe/
//! Execute), where each Describe or Execute is one short exchange of our
//! own on the server, so the session's pipelining bookkeeping never sees
//! the rewritten statement.

use std::sync::Arc;

use bytes::BytesMut;

use super::decide::{Plan as RoutePlan, Statement};
use super::lease::Protocol as Wire;
use super::lookup::{LookupPortal, LookupStatement};
use super::prepared;
use super::session::{Binding, Flow, Recovery, Session};
use crate::errors::{Error, Result};
use crate::ml::predict::{
    self, Describe, Description, Execution, Plan, Planned, Portal, PredictStatement, Protocol,
    Rewriter, Shards,
};
use crate::ml::MlError;
use crate::net::messages;
use crate::net::tag::{client, server as tag};
use crate::router::Target;

/// A portal of a statement calling pgml.predict, by the way it runs.
enum Bound {
    Stream(Portal),
    Lookup(LookupPortal),
}

impl Session {
    /// The plan of a statement calling pgml.predict; None if it calls none.
    fn predict_plan(&self, sql: &str) -> std::result::Result<Option<Planned>, MlError> {
        self.app.ml.planned(sql)
    }

    /// Simple Query with pgml.predict: Some(flow) when handled.
    pub(super) async fn predict_simple(&mut self, sql: &str) -> Result<Option<Flow>> {
        let planned = match self.predict_plan(sql) {
            Ok(Some(planned)) => planned,
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
        if let Err(e) = self.run_planned(planned).await {
            if matches!(e, Error::ClientGone | Error::Io(_)) {
                return Err(e);
            }
            messages::error_response(&mut self.client.out, &e);
        }
        messages::ready_for_query(&mut self.client.out, self.tx.status);
        Ok(Some(Flow::Continue))
    }

    /// A statement calling pgml.predict, simple protocol, its answer up to
    /// (not including) ReadyForQuery; None when it calls none.
    pub(super) async fn predict_statement(&mut self, sql: &str) -> Option<Result<()>> {
        match self.predict_plan(sql) {
            Ok(Some(planned)) => Some(self.run_planned(planned).await),
            Ok(None) => None,
            Err(e) => Some(Err(Error::Ml(e))),
        }
    }

    async fn run_planned(&mut self, planned: Planned) -> Result<()> {
        match planned {
            Planned::Stream(plan) => self.run_predict(&plan, Protocol::Simple).await,
            Planned::Lookup(plan) => self.run_lookup(&plan, None).await,
        }
    }

    /// Parse of a pgml.predict statement: planned now, answered here.
    pub(super) fn predict_parse(&mut self, name: &str, sql: &str, types: Vec<u32>) -> Result<bool> {
        match self.predict_plan(sql) {
            Ok(None) => Ok(false),
            Ok(Some(planned)) => {
                let types = types.into();
                match planned {
                    Planned::Stream(plan) => {
                        self.ml_predicts()
                            .insert(name.to_string(), PredictStatement { plan, types });
                    }
                    Planned::Lookup(plan) => {
                        self.ml_lookups()
                            .insert(name.to_string(), LookupStatement { plan, types });
                    }
                }
                let mut out = BytesMut::new();
                messages::parse_complete(&mut out);
                self.respond_in_order(out.freeze());
                Ok(true)
            }
            Err(e) => Err(Error::Ml(e)),
        }
    }

    /// Bind of a pgml.predict statement (either way); false if `stmt` is
    /// not one.
    pub(super) fn predict_bind(&mut self, portal: &str, stmt: &str, msg: &[u8]) -> Result<bool> {
        if let Some(statement) = self.ml_predicts().get(stmt).cloned() {
            let bound = portal_of(statement, msg)?;
            self.ml_predict_portals().insert(portal.to_string(), bound);
        } else if let Some(statement) = self.ml_lookups().get(stmt).cloned() {
            let bound = portal_of(statement, msg)?;
            self.ml_lookup_portals().insert(portal.to_string(), bound);
        } else {
            return Ok(false);
        }
        let mut out = BytesMut::new();
        messages::bind_complete(&mut out);
        self.respond_in_order(out.freeze());
        Ok(true)
    }

    /// Describe of a statement or portal the general method serves.
    async fn lookup_describe(&mut self, kind: u8, name: &str) -> Result<bool> {
        let (statement, portal) = if kind == client::STATEMENT {
            match self.ml_lookups().get(name).cloned() {
                Some(s) => (s, None),
                None => return Ok(false),
            }
        } else {
            match self.ml_lookup_portals().get(name).cloned() {
                Some(p) => (
                    PredictStatement {
                        plan: p.plan.clone(),
                        types: p.types.clone(),
                    },
                    Some(p),
                ),
                None => return Ok(false),
            }
        };
        if self.settle().await? == Flow::Close {
            return Err(Error::ClientGone);
        }
        if let Err(e) = self
            .describe_lookup(kind, &statement, portal.as_ref())
            .await
        {
            self.predict_failed(e)?;
        }
        Ok(true)
    }

    /// Describe (statement or portal) of a pgml.predict statement.
    pub(super) async fn predict_describe(&mut self, kind: u8, name: &str) -> Result<bool> {
        // Owned copies (the maps are the session's), described below.
        let statement: PredictStatement;
        let portal: Portal;
        let target = match kind {
            client::STATEMENT => match self.ml_predicts().get(name).cloned() {
                Some(s) => {
                    statement = s;
                    Describe::Statement(&statement)
                }
                None => return self.lookup_describe(kind, name).await,
            },
            _ => match self.ml_predict_portals().get(name).cloned() {
                Some(p) => {
                    portal = p;
                    Describe::Portal(&portal)
                }
                None => return self.lookup_describe(kind, name).await,
            },
        };
        if self.settle().await? == Flow::Close {
            return Err(Error::ClientGone);
        }
        if let Err(e) = self.describe_predict(target).await {
            self.predict_failed(e)?;
        }
        Ok(true)
    }

    /// Execute of a pgml.predict portal (either way).
    pub(super) async fn predict_execute(&mut self, portal: &str) -> Result<bool> {
        let bound = match self.ml_predict_portals().get(portal).cloned() {
            Some(p) => Bound::Stream(p),
            None => match self.ml_lookup_portals().get(portal).cloned() {
                Some(p) => Bound::Lookup(p),
                None => return Ok(false),
            },
        };
        if self.settle().await? == Flow::Close {
            return Err(Error::ClientGone);
        }
        let result = match bound {
            Bound::Stream(p) => {
                self.run_predict(&p.plan.clone(), Protocol::Extended(&p))
                    .await
            }
            Bound::Lookup(p) => self.run_lookup(&p.plan, Some(&p)).await,
        };
        if let Err(e) = result {
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

    /// A server for a statement pgmlcat runs for the client: the one
    /// held, or one checked out as for any statement (shard routing,
    /// deferred BEGIN), of role `target` when given.
    pub(super) async fn server_for(
        &mut self,
        sql: &str,
        simple: bool,
        target: Option<Target>,
    ) -> Result<()> {
        let protocol = if simple { Wire::Simple } else { Wire::Extended };
        let stmt = Statement {
            sql: Some(sql),
            bind: None,
            runs: true,
            protocol,
        };
        match self.decide(&stmt)? {
            RoutePlan::Held { writes } => {
                self.tx.wrote |= writes;
                Ok(())
            }
            RoutePlan::Checkout(mut route) => {
                if let Some(t) = target {
                    route.target = t;
                }
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

    /// The next frame from the held server, its ParameterStatus noted for
    /// the client and passed over; a lost server is handled.
    pub(super) async fn held_frame(&mut self) -> Result<crate::backend::server::Frame> {
        loop {
            let Some(pooled) = self.server.binding.one() else {
                return Err(Error::ServerLost("server gone".into()));
            };
            let frame = match pooled.server.recv().await {
                Ok(f) => f,
                Err(e) => {
                    self.on_server_lost().await;
                    return Err(e);
                }
            };
            if frame.tag() != tag::PARAMETER_STATUS {
                return Ok(frame);
            }
            if let Some((name, value)) = messages::parse_parameter_status(frame.body()) {
                self.client.params.reported(name, value);
            }
        }
    }

    async fn describe_predict(&mut self, target: Describe<'_>) -> Result<()> {
        match predict::describe(target)? {
            Description::Answered(answer) => self.client.out.extend_from_slice(&answer),
            Description::Server {
                sql,
                messages,
                mut rewriter,
            } => {
                self.server_for(sql, false, None).await?;
                self.exchange(&messages, &mut rewriter, true, None).await?;
            }
        }
        Ok(())
    }

    /// Runs the statement: the rewritten SQL on the server(s), or a
    /// constant answer computed here.
    async fn run_predict(&mut self, plan: &Arc<Plan>, protocol: Protocol<'_>) -> Result<()> {
        let result = self.stream_predict(plan, protocol).await;
        if matches!(result, Err(Error::Ml(_))) {
            self.fail_block().await;
        }
        result
    }

    async fn stream_predict(&mut self, plan: &Arc<Plan>, protocol: Protocol<'_>) -> Result<()> {
        let params = protocol.text_params();
        let models = Arc::new(self.models(&plan.calls, &params).await?);
        let shards = match plan.server_sql.as_deref() {
            Some(sql) if self.predict_needs_all_shards(sql) => Shards::All,
            Some(sql) => {
                let simple = matches!(protocol, Protocol::Simple);
                self.server_for(sql, simple, None).await?;
                Shards::One
            }
            // All arguments constant: no server.
            None => Shards::One,
        };
        let knows = |name: &str| self.server_knows(name);
        match predict::execution(plan, protocol, shards, &knows, models.clone())? {
            Execution::Constant(answer) => self.client.out.extend_from_slice(&answer),
            Execution::OneServer {
                messages,
                prepares,
                describe,
                mut rewriter,
            } => {
                self.exchange(&messages, &mut rewriter, describe, prepares)
                    .await?
            }
            Execution::AllShards {
                sql,
                messages,
                describe,
                mut rewriter,
            } => {
                self.predict_all_shards(sql, &messages, &mut rewriter, describe)
                    .await?
            }
        }
        self.notices(&models);
        Ok(())
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
        let analysis = self.analysis(Some(server_sql));
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
            self.count_xact();
        }
        result
    }

    /// Whether the held server has prepared statement `name` (never the
    /// unnamed one).
    fn server_knows(&self, name: &str) -> bool {
        !name.is_empty()
            && self
                .server
                .binding
                .held()
                .is_some_and(|s| s.server.state.prepared.contains_key(name))
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
        let epoch = self.pool.plans_epoch();
        let mut failure: Option<Error> = None;
        let mut scratch = BytesMut::new();
        loop {
            let frame = self.held_frame().await?;
            let kind = frame.tag();
            match kind {
                tag::READY_FOR_QUERY => break,
                tag::PARSE_COMPLETE => {
                    if let Some(name) = preparing.take() {
                        if let Some(pooled) = self.server.binding.one() {
                            let copy = crate::backend::server::StatementCopy::new(epoch);
                            pooled.server.state.prepared.insert(name, copy);
                        }
                    }
                    continue;
                }
                tag::BIND_COMPLETE => continue,
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
        }
        // The server's status is the client's now; the server goes back
        // when the transaction is over.
        self.statement_done().await;
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// A portal of `statement` from the client's Bind.
fn portal_of<P>(statement: PredictStatement<P>, msg: &[u8]) -> Result<Portal<P>> {
    let (param_formats, params, result_formats) = prepared::bind_parts(msg)?;
    Ok(Portal {
        plan: statement.plan,
        types: statement.types,
        param_formats,
        params,
        result_formats,
    })
}
