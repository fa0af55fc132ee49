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

use bytes::{BufMut, BytesMut};
use tokio::io::AsyncWriteExt;

use super::prepared;
use super::session::{Flow, Session};
use crate::errors::{Error, Result};
use crate::ml::predict::{
    self, Describe, Description, Execution, Plan, Portal, Protocol, Rewriter, Shards,
};
use crate::ml::predictor::ModelSet;
use crate::ml::MlError;
use crate::net::codec;
use crate::net::messages::{self, TxStatus};
use crate::stats::Counters;

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
                messages::ready_for_query(&mut out, self.status);
                self.respond_in_order(out.freeze());
                return Ok(Some(Flow::Continue));
            }
        };
        if self.settle().await? == Flow::Close {
            return Ok(Some(Flow::Close));
        }
        let outcome = self.run_predict(&plan, Protocol::Simple).await;
        if let Err(e) = outcome {
            if matches!(e, Error::ClientGone | Error::Io(_)) {
                return Err(e);
            }
            messages::error_response(&mut self.to_client, &e);
        }
        messages::ready_for_query(&mut self.to_client, self.status);
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
            Portal {
                plan,
                param_formats,
                params,
                result_formats,
            },
        );
        let mut out = BytesMut::new();
        out.put_u8(b'2');
        out.put_i32(4);
        self.respond_in_order(out.freeze());
        Ok(true)
    }

    /// Describe (statement or portal) of a pgml.predict statement.
    pub(super) async fn predict_describe(&mut self, kind: u8, name: &str) -> Result<bool> {
        let (plan, portal) = match kind {
            b'S' => match self.ml_predicts().get(name).cloned() {
                Some(plan) => (plan, None),
                None => return Ok(false),
            },
            _ => match self.ml_predict_portals().get(name).cloned() {
                Some(p) => (p.plan.clone(), Some(p)),
                None => return Ok(false),
            },
        };
        if self.settle().await? == Flow::Close {
            return Err(Error::ClientGone);
        }
        let target = match &portal {
            Some(p) => Describe::Portal(p),
            None => Describe::Statement(&plan),
        };
        if let Err(e) = self.describe_predict(target).await {
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
        if let Err(e) = self
            .run_predict(&p.plan.clone(), Protocol::Extended(&p))
            .await
        {
            self.predict_failed(e)?;
        }
        Ok(true)
    }

    fn predict_failed(&mut self, e: Error) -> Result<()> {
        if matches!(e, Error::ClientGone | Error::Io(_)) {
            return Err(e);
        }
        messages::error_response(&mut self.to_client, &e);
        if self.server.is_some() {
            self.discard_until_sync = true;
        } else {
            self.skip_until_sync = true;
        }
        Ok(())
    }

    /// A server for the rewritten statement: the one held, or one checked
    /// out as for any statement (shard routing, deferred BEGIN).
    async fn predict_server(&mut self, server_sql: &str, simple: bool) -> Result<()> {
        if self.server.is_some() {
            return Ok(());
        }
        if !self
            .ensure_server(simple, Some(server_sql), None, true)
            .await?
        {
            return Err(Error::NoShard(self.pool.sharding.missing_key()));
        }
        Ok(())
    }

    async fn describe_predict(&mut self, target: Describe<'_>) -> Result<()> {
        match predict::describe(target)? {
            Description::Answered(answer) => self.to_client.extend_from_slice(&answer),
            Description::Server {
                sql,
                messages,
                mut rewriter,
            } => {
                self.predict_server(sql, false).await?;
                self.exchange(&messages, &mut rewriter, true, None).await?;
            }
        }
        Ok(())
    }

    /// Runs the statement: the rewritten SQL on the server(s), or a
    /// constant answer computed here.
    async fn run_predict(&mut self, plan: &Arc<Plan>, protocol: Protocol<'_>) -> Result<()> {
        let params = protocol.text_params();
        let models = ModelSet::resolve(&self.app.ml, &self.pool, &plan.calls, &params)
            .await
            .map_err(Error::Ml)?;
        let shards = match plan.server_sql.as_deref() {
            Some(sql) if self.predict_needs_all_shards(sql) => Shards::All,
            Some(sql) => {
                let simple = matches!(protocol, Protocol::Simple);
                self.predict_server(sql, simple).await?;
                Shards::One
            }
            // All arguments constant: no server.
            None => Shards::One,
        };
        let knows = |name: &str| self.server_knows(name);
        match predict::execution(plan, protocol, shards, &knows, Arc::new(models))? {
            Execution::Constant(answer) => self.to_client.extend_from_slice(&answer),
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
        Ok(())
    }

    /// A keyless read on a sharded pool, outside a transaction: it runs on
    /// every shard and the rows of all of them go through one rewriter.
    fn predict_needs_all_shards(&self, server_sql: &str) -> bool {
        self.server.is_none() && self.needs_fan_out(server_sql)
    }

    async fn predict_all_shards(
        &mut self,
        server_sql: &str,
        msg: &[u8],
        rewriter: &mut Rewriter,
        describe: bool,
    ) -> Result<()> {
        let target = self.target_for(Some(server_sql));
        let mut held = self
            .checkout_shards(0..self.pool.shards.len(), target)
            .await?;
        let mut result = Ok(());
        let last = held.len() - 1;
        let mut scratch = BytesMut::new();
        'shards: for (i, (_, pooled)) in held.iter_mut().enumerate() {
            if let Err(e) = pooled.server.stream.write_all(msg).await {
                pooled.server.broken = true;
                result = Err(Error::ServerLost(e.to_string()));
                break;
            }
            loop {
                let (tag, body) = match pooled.server.read_message().await {
                    Ok(m) => m,
                    Err(e) => {
                        result = Err(e);
                        break 'shards;
                    }
                };
                let keep = match tag {
                    b'Z' => break,
                    b'1' | b'2' | b'S' => false,
                    // One RowDescription, one CommandComplete for the whole.
                    b'T' => i == 0 && describe,
                    b'C' => i == last && result.is_ok(),
                    b'E' => {
                        result = Err(Error::ServerRefused {
                            addr: pooled.server.addr.to_string(),
                            fields: messages::parse_error_fields(&body),
                        });
                        false
                    }
                    _ => result.is_ok(),
                };
                let out = if keep {
                    &mut self.to_client
                } else {
                    &mut scratch
                };
                if (keep || tag == b'T') && result.is_ok() {
                    if let Err(e) = rewriter.on_message(tag, &body, out) {
                        result = Err(Error::Ml(e));
                    }
                }
                scratch.clear();
                if self.to_client.len() > 64 * 1024 {
                    Counters::add(&self.pool.counters.bytes_sent, self.to_client.len() as u64);
                    if self.client.write_all(&self.to_client).await.is_err() {
                        result = Err(Error::ClientGone);
                        break 'shards;
                    }
                    self.to_client.clear();
                }
            }
            if result.is_err() {
                break;
            }
        }
        for (sp, pooled) in held {
            sp.checkin(pooled);
        }
        if result.is_ok() {
            Counters::add(&self.pool.counters.xacts, 1);
        }
        result
    }

    /// Whether the held server has prepared statement `name` (never the
    /// unnamed one).
    fn server_knows(&self, name: &str) -> bool {
        !name.is_empty()
            && self
                .server
                .as_ref()
                .is_some_and(|s| s.server.prepared.contains(name))
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
        let Some(pooled) = self.server.as_mut() else {
            return Err(Error::ServerLost("no server for pgml.predict".into()));
        };
        if let Err(e) = pooled.server.stream.write_all(msg).await {
            pooled.server.broken = true;
            return Err(Error::ServerLost(e.to_string()));
        }
        let mut failure: Option<Error> = None;
        let mut scratch = BytesMut::new();
        let status = loop {
            let Some(pooled) = self.server.as_mut() else {
                return Err(Error::ServerLost("server gone".into()));
            };
            let (tag, body) = match pooled.server.read_message().await {
                Ok(m) => m,
                Err(e) => {
                    pooled.server.broken = true;
                    self.on_server_lost().await;
                    return Err(e);
                }
            };
            let server = &mut pooled.server;
            match tag {
                b'Z' => {
                    let st = body
                        .first()
                        .and_then(|&b| TxStatus::from_byte(b))
                        .unwrap_or(TxStatus::Failed);
                    server.status = st;
                    break st;
                }
                b'1' => {
                    if let Some(name) = preparing.take() {
                        server.prepared.insert(name);
                    }
                    continue;
                }
                b'2' => continue,
                b'S' => {
                    if let Some((name, value)) = messages::parse_parameter_status(&body) {
                        self.params.reported(name, value);
                        server.params.insert(name.to_string(), value.to_string());
                    }
                    continue;
                }
                b'C' => server.note_command(crate::backend::server::command_effect(&body)),
                b'E' => {
                    let fields = messages::parse_error_fields(&body);
                    if fields.severity == "FATAL" || fields.severity == "PANIC" {
                        server.broken = true;
                    }
                }
                _ => {}
            }
            if failure.is_some() {
                continue;
            }
            let out = if tag == b'T' && !describe {
                &mut scratch
            } else {
                &mut self.to_client
            };
            if let Err(e) = rewriter.on_message(tag, &body, out) {
                failure = Some(Error::Ml(e));
            }
            if self.to_client.len() > 64 * 1024 {
                Counters::add(&self.pool.counters.bytes_sent, self.to_client.len() as u64);
                if self.client.write_all(&self.to_client).await.is_err() {
                    return Err(Error::ClientGone);
                }
                self.to_client.clear();
            }
        };
        if self.deferred_begin.is_none() {
            if status == TxStatus::Idle {
                Counters::add(&self.pool.counters.xacts, 1);
            }
            self.status = status;
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

/// The SQL of a Parse message.
pub(super) fn parse_sql(msg: &[u8]) -> Result<(&str, &str)> {
    let (name, at) = prepared::first_name(msg)?;
    let (sql, _) = codec::cstr(msg, at)?;
    Ok((name, sql))
}
