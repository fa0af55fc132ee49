//! pgml.* in a client session: function calls answered by the proxy (simple
//! and extended protocol), with training progress streamed as NOTICEs.
//! Only statements that mention "pgml" get here; everything else never
//! pays for the check beyond a byte scan.

use std::collections::HashMap;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::lookup::{LookupPortal, LookupStatement};
use super::prepared;
use super::session::{Binding, Flow, Recovery, Session};
use crate::errors::{Error, Result};
use crate::ml::call::{self, FnCall};
use crate::ml::db::Lent;
use crate::ml::exec;
use crate::ml::predict::{typed_param_text, Portal, PredictStatement};
use crate::ml::service::Progress;
use crate::net::codec;
use crate::net::messages::{self, TxStatus};
use crate::net::tag::client;

/// Statements and portals of this client that pgmlcat answers itself.
#[derive(Default)]
pub(super) struct MlState {
    statements: HashMap<String, FnCall>,
    portals: HashMap<String, FnCall>,
    predicts: HashMap<String, PredictStatement>,
    predict_portals: HashMap<String, Portal>,
    lookups: HashMap<String, LookupStatement>,
    lookup_portals: HashMap<String, LookupPortal>,
}

impl MlState {
    fn is_empty(&self) -> bool {
        self.statements.is_empty()
            && self.portals.is_empty()
            && self.predicts.is_empty()
            && self.predict_portals.is_empty()
            && self.lookups.is_empty()
            && self.lookup_portals.is_empty()
    }

    /// A statement or portal name is being reused: forget the old one.
    fn forget(&mut self, kind: u8, name: &str) -> bool {
        match kind {
            client::STATEMENT => {
                self.statements.remove(name).is_some()
                    | self.predicts.remove(name).is_some()
                    | self.lookups.remove(name).is_some()
            }
            _ => {
                self.portals.remove(name).is_some()
                    | self.predict_portals.remove(name).is_some()
                    | self.lookup_portals.remove(name).is_some()
            }
        }
    }
}

impl Session {
    /// This client's pgml statements and portals, made on first use.
    fn ml(&mut self) -> &mut MlState {
        self.ml.get_or_insert_with(Box::default)
    }

    /// Whether the client has no pgml statement or portal.
    fn ml_is_empty(&self) -> bool {
        self.ml.as_ref().is_none_or(|m| m.is_empty())
    }

    /// SQL DEALLOCATE of a statement pgmlcat answers itself (true when
    /// `name` was one), or of all of them (`None`).
    pub(super) fn ml_deallocate(&mut self, name: Option<&str>) -> bool {
        let Some(ml) = self.ml.as_mut() else {
            return false;
        };
        match name {
            Some(name) => ml.forget(client::STATEMENT, name),
            None => {
                ml.statements.clear();
                ml.predicts.clear();
                ml.lookups.clear();
                false
            }
        }
    }

    pub(super) fn ml_predicts(&mut self) -> &mut HashMap<String, PredictStatement> {
        &mut self.ml().predicts
    }

    pub(super) fn ml_predict_portals(&mut self) -> &mut HashMap<String, Portal> {
        &mut self.ml().predict_portals
    }

    pub(super) fn ml_lookups(&mut self) -> &mut HashMap<String, LookupStatement> {
        &mut self.ml().lookups
    }

    pub(super) fn ml_lookup_portals(&mut self) -> &mut HashMap<String, LookupPortal> {
        &mut self.ml().lookup_portals
    }

    /// A simple Query: Some(flow) when it was a pgml call we answered.
    pub(super) async fn ml_simple(&mut self, sql: &str) -> Result<Option<Flow>> {
        if !call::mentions_pgml(sql) {
            return Ok(None);
        }
        // Several statements: one by one, as Postgres runs the string.
        // (Tokenized only when a semicolon stands before the end: a single
        // prediction, the common case, pays a byte scan.)
        let several = sql.trim_end().trim_end_matches(';').contains(';');
        if let Some(parts) = several
            .then(|| call::split_statements(sql))
            .flatten()
            .filter(|p| p.len() > 1)
        {
            return self.ml_script(&parts).await.map(Some);
        }
        // A prediction statement seen before: no parsing at all.
        if self.app.ml.has_plan(sql) {
            return self.predict_simple(sql).await;
        }
        let calls = match call::parse_calls(sql) {
            Ok(Some(calls)) => calls,
            Ok(None) => return self.predict_simple(sql).await,
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
        // A shard named by comment or SET SHARD limits what training reads.
        let shard = self.shard_named(Some(sql));
        // As Postgres: statements run in turn; the first error ends the string.
        for call in &calls {
            if !self.run_call(call, true, shard).await? {
                break;
            }
        }
        messages::ready_for_query(&mut self.client.out, self.tx.status);
        Ok(Some(Flow::Continue))
    }

    /// The common case, decided without entering the (large, boxed) ML
    /// path: an extended-protocol message that cannot concern a pgml call.
    /// A Parse of ordinary SQL also retires an ML statement of its name.
    pub(super) fn surely_not_ml(&mut self, tag: u8, msg: &[u8]) -> Result<bool> {
        if tag != client::PARSE {
            return Ok(self.ml_is_empty());
        }
        let (name, at) = prepared::first_name(msg)?;
        let (sql, _) = codec::cstr_bytes(msg, at)?;
        if call::mentions_pgml_bytes(sql) {
            return Ok(false);
        }
        if !self.ml_is_empty() {
            self.ml().forget(client::STATEMENT, name);
        }
        Ok(true)
    }

    /// An extended-protocol message that `surely_not_ml` did not rule out
    /// (the caller asks it first, to keep this future off the hot path);
    /// true when answered here.
    pub(super) async fn ml_extended(&mut self, tag: u8, msg: &[u8]) -> Result<bool> {
        match tag {
            client::PARSE => {
                let (name, sql, types) = crate::net::extended::parse_parts(msg)?;
                let name = name.to_string();
                self.ml().forget(client::STATEMENT, &name);
                match call::parse_call(sql) {
                    Ok(None) => match self.predict_parse(&name, sql, types) {
                        Ok(handled) => Ok(handled),
                        Err(e) => {
                            self.refuse_in_batch(e);
                            Ok(true)
                        }
                    },
                    Ok(Some(mut call)) => {
                        call.param_types = types.to_vec();
                        self.ml().statements.insert(name, call);
                        let mut out = BytesMut::new();
                        messages::parse_complete(&mut out);
                        self.respond_in_order(out.freeze());
                        Ok(true)
                    }
                    Err(e) => {
                        self.refuse_in_batch(Error::Ml(e));
                        Ok(true)
                    }
                }
            }
            client::BIND => {
                let (portal, _) = codec::cstr(msg, 5)?;
                let (stmt, _, _) = prepared::bind_statement(msg)?;
                self.ml().forget(client::PORTAL, portal);
                let Some(call) = self.ml().statements.get(stmt) else {
                    return self.predict_bind(portal, stmt, msg);
                };
                let mut call = call.clone();
                let portal = portal.to_string();
                let values: crate::ml::MlResult<Vec<Option<String>>> = prepared::bind_params(msg)?
                    .into_iter()
                    .enumerate()
                    .map(|(i, (v, binary))| {
                        let oid = call.param_type(i);
                        v.map(|b| typed_param_text(b, binary, oid)).transpose()
                    })
                    .collect();
                if let Err(e) = values.and_then(|values| call.bind(&values)) {
                    self.refuse_in_batch(Error::Ml(e));
                    return Ok(true);
                }
                call.result_formats = prepared::bind_parts(msg)?.2;
                self.ml().portals.insert(portal, call);
                let mut out = BytesMut::new();
                messages::bind_complete(&mut out);
                self.respond_in_order(out.freeze());
                Ok(true)
            }
            client::DESCRIBE => {
                let (kind, name) = prepared::target(msg)?;
                let mut out = BytesMut::new();
                if kind == client::STATEMENT {
                    let Some(call) = self.ml().statements.get(name) else {
                        return self.predict_describe(kind, name).await;
                    };
                    // Parameters are described as the client declared them,
                    // else by the argument they stand for: the proxy reads
                    // each as described.
                    let types: Vec<u32> = (0..call.param_count())
                        .map(|i| call.param_type(i))
                        .collect();
                    messages::parameter_description(&mut out, &types);
                    exec::describe(call, &mut out);
                } else {
                    let Some(call) = self.ml().portals.get(name) else {
                        return self.predict_describe(kind, name).await;
                    };
                    exec::describe(call, &mut out);
                }
                self.respond_in_order(out.freeze());
                Ok(true)
            }
            client::EXECUTE => {
                let (portal, _) = codec::cstr(msg, 5)?;
                let Some(call) = self.ml().portals.get(portal).cloned() else {
                    return self.predict_execute(portal).await;
                };
                if self.settle().await? == Flow::Close {
                    return Err(Error::ClientGone);
                }
                let shard = self.shard_named(None);
                if !self.run_call(&call, false, shard).await? {
                    self.recovery = match self.server.binding {
                        Binding::One(_) => Recovery::DiscardToSync,
                        _ => Recovery::SkipToSync,
                    };
                }
                Ok(true)
            }
            client::CLOSE => {
                let (kind, name) = prepared::target(msg)?;
                if !self.ml().forget(kind, name) {
                    return Ok(false);
                }
                let mut out = BytesMut::new();
                messages::close_complete(&mut out);
                self.respond_in_order(out.freeze());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Waits until every answer owed to the client from a held server has
    /// been relayed, so what we write next comes after it.
    pub(super) async fn settle(&mut self) -> Result<Flow> {
        // Nothing owed: what is queued for the client goes out with the
        // answer, in one write (an early write would wake the client for a
        // BindComplete alone).
        if self.server.expect.is_empty() {
            return Ok(Flow::Continue);
        }
        if self.flush().await? == Flow::Close {
            return Ok(Flow::Close);
        }
        while !self.server.expect.is_empty() {
            let Some(pooled) = self.server.binding.one() else {
                break;
            };
            let n = pooled
                .server
                .stream
                .read_buf(&mut pooled.server.buf)
                .await
                .unwrap_or(0);
            let flow = if n == 0 {
                self.on_server_lost().await
            } else {
                self.on_server_data().await?
            };
            if flow == Flow::Close || self.flush().await? == Flow::Close {
                return Ok(Flow::Close);
            }
        }
        Ok(Flow::Continue)
    }

    /// Runs a call, streaming its NOTICEs, then writes its result (with a
    /// RowDescription when `describe`) or its error. False on error.
    pub(super) async fn run_call(
        &mut self,
        call: &FnCall,
        describe: bool,
        shard: Option<usize>,
    ) -> Result<bool> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (ml, pool) = (self.app.ml.clone(), self.pool.clone());
        let mut body = BytesMut::new();
        let lent = self.lend_server().await?;
        let result = {
            let work = exec::execute(
                &ml,
                &pool,
                call,
                Progress::new(tx).on_shard(shard),
                &mut body,
            );
            let work = async {
                match &lent {
                    Some(l) => l.scope(work).await,
                    None => work.await,
                }
            };
            tokio::pin!(work);
            loop {
                tokio::select! {
                    r = &mut work => break r,
                    Some(note) = rx.recv() => {
                        messages::notice(&mut self.client.out, &note);
                        if self.flush().await? == Flow::Close {
                            return Err(Error::ClientGone);
                        }
                    }
                }
            }
        };
        while let Ok(note) = rx.try_recv() {
            messages::notice(&mut self.client.out, &note);
        }
        if let Some(lent) = lent {
            self.take_back(lent, result.is_err()).await?;
        }
        match result {
            Ok(()) => {
                if describe {
                    exec::describe(call, &mut self.client.out);
                }
                self.client.out.extend_from_slice(&body);
                Ok(true)
            }
            Err(e) => {
                let e = Error::Ml(e);
                tracing::info!(client = %self.client.peer, pool = %self.pool.database, error = %e, "pgml.{} failed", call.func.name());
                messages::error_response(&mut self.client.out, &e);
                Ok(false)
            }
        }
    }

    /// Inside a transaction block, the client's server for a pgml call (a
    /// deferred BEGIN starts now): the call runs in the client's
    /// transaction. None outside a block.
    pub(super) async fn lend_server(&mut self) -> Result<Option<Lent>> {
        if self.tx.status == TxStatus::Idle && self.tx.deferred.is_none() {
            self.tx.ml_wrote = false;
            return Ok(None);
        }
        if self.server.binding.is_idle() {
            self.primary_server("SELECT pgml", true).await?;
        }
        if !matches!(self.server.binding, Binding::One(_)) {
            return Ok(None);
        }
        let Binding::One(pooled) = std::mem::replace(&mut self.server.binding, Binding::Idle)
        else {
            return Ok(None);
        };
        self.tx.ml_wrote = true;
        Ok(Some(Lent::new(pooled)))
    }

    /// The server back from a pgml call. A call that failed leaves the
    /// block failed, as any statement's error does in Postgres (the
    /// failure may have been the proxy's, which the server never saw).
    pub(super) async fn take_back(&mut self, lent: Lent, failed: bool) -> Result<()> {
        let Some(pooled) = lent.take_back() else {
            return Err(Error::ServerLost(
                "the server of a pgml call was lost".into(),
            ));
        };
        let status = pooled.server.state.status;
        self.server.binding = Binding::One(pooled);
        if failed {
            self.fail_block().await;
        } else if self.tx.deferred.is_none() {
            self.tx.status = status;
        }
        Ok(())
    }

    /// After an error of the proxy's own (the model's, a failed pgml call)
    /// in a statement the server ran well: inside a transaction block the
    /// block fails, as any failed statement fails it in Postgres.
    pub(super) async fn fail_block(&mut self) {
        let Some(pooled) = self.server.binding.one() else {
            return;
        };
        if pooled.server.state.status == TxStatus::InTransaction {
            let _ = pooled.server.execute(ABORT_BLOCK).await;
        }
        if self.tx.deferred.is_none() {
            self.tx.status = pooled.server.state.status;
        }
    }
}

/// Fails the server's transaction block (the error is the proxy's own and
/// stays with it).
const ABORT_BLOCK: &str = "DO $pgml$ BEGIN RAISE EXCEPTION 'a pgml call failed'; END $pgml$";
