//! pgml.predict by the general method (`ml::predict::lookup`) in a
//! session: on the client's server, in the client's transaction (or one of
//! the proxy's own around the statement, as autocommit would be), the
//! memos are filled site by site, then the statement runs with lookups
//! and its answer goes to the client as the server gave it.

use std::sync::Arc;

use bytes::BytesMut;
use postgres_protocol::message::frontend;

use super::session::Session;
use crate::backend::query::Bound;
use crate::backend::server::Server;
use crate::errors::{Error, Result};
use crate::ml::predict::lookup::Own;
use crate::ml::predict::Predictor;
use crate::ml::predict::{memo, LookupPlan, Portal, PredictStatement};
use crate::ml::predictor::ModelSet;
use crate::ml::MlError;
use crate::net::messages::{self, TxStatus};
use crate::net::tag::{client, server as tag};
use crate::router::Target;

/// A Parse of a statement the general method serves, and its Bind.
pub type LookupStatement = PredictStatement<LookupPlan>;
pub type LookupPortal = Portal<LookupPlan>;

fn bound(p: &LookupPortal) -> Bound<'_> {
    Bound {
        types: &p.types,
        formats: &p.param_formats,
        values: &p.params,
    }
}

/// Runs of a statement in the proxy's own transaction, the first included.
const ATTEMPTS: u32 = 3;

/// The server's error of a statement pgmlcat ran for the client, as the
/// client would have had it from the server (not as a refusal of one of
/// pgmlcat's own connections).
pub(super) fn as_statements(e: Error) -> Error {
    match e {
        Error::ServerRefused { fields, .. } => Error::Ml(MlError::Server(fields)),
        other => other,
    }
}

fn is_serialization_failure(r: &Result<()>) -> bool {
    matches!(r, Err(Error::ServerRefused { fields, .. }) if fields.code == "40001")
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Ml(MlError::Internal(e.to_string()))
}

impl Session {
    /// Runs the statement; its answer up to (not including) ReadyForQuery
    /// goes to the client. Simple protocol when `portal` is None.
    pub(super) async fn run_lookup(
        &mut self,
        plan: &Arc<LookupPlan>,
        portal: Option<&LookupPortal>,
    ) -> Result<()> {
        let params = portal.map(|p| p.text_params()).unwrap_or_default();
        self.primary_server(&plan.final_sql, portal.is_none())
            .await?;
        let models = Arc::new(self.models(&plan.calls, &params).await?);
        // Every statement made from the client's declares every parameter's
        // type: a collection may not use them all, and Postgres could not
        // infer an unused one.
        let mut types = portal.map(|p| p.types.to_vec()).unwrap_or_default();
        if let Some(p) = portal {
            if types.len() < p.params.len() || types.contains(&0) {
                types = self
                    .held_server()?
                    .parameter_types(&plan.describe_sql, &types)
                    .await?;
            }
        }
        let bound = match portal {
            Some(p) => Bound {
                types: &types,
                ..bound(p)
            },
            None => Bound::default(),
        };
        let mut out = BytesMut::new();
        match portal {
            None => frontend::query(&plan.final_sql, &mut out).map_err(internal)?,
            Some(p) => {
                bound.write(&plan.final_sql, &p.result_formats, &mut out)?;
                frontend::execute("", 0, &mut out).map_err(internal)?;
                frontend::sync(&mut out);
            }
        }
        let mut attempt = 1;
        let result = loop {
            let own = self.held_server()?.state.status == TxStatus::Idle;
            let mut relayed = false;
            let max_bytes = self.app.ml.max_bytes();
            let mut result =
                prepare(self.held_server()?, plan, bound, &models, own, max_bytes).await;
            if result.is_ok() {
                let keep = |t| !matches!(t, tag::PARSE_COMPLETE | tag::BIND_COMPLETE);
                result = self.relay_answer(&out, keep, &mut relayed).await;
            }
            result = self.end_lookup(plan, own, result).await;
            // In its own transaction, a statement that met rows changed
            // since its snapshot (40001) runs again while the client has
            // seen nothing of it.
            if own && !relayed && attempt < ATTEMPTS && is_serialization_failure(&result) {
                attempt += 1;
                continue;
            }
            break result;
        };
        self.statement_done().await;
        self.notices(&models);
        result.map_err(as_statements)
    }

    /// Ends the proxy's own transaction (COMMIT, or ROLLBACK after an
    /// error), or, inside the client's, drops the memos, or fails the
    /// block after an error the server did not see (the model's, the
    /// memory cap's), as any failed statement fails it in Postgres.
    async fn end_lookup(&mut self, plan: &LookupPlan, own: bool, result: Result<()>) -> Result<()> {
        let end = match (own, &result) {
            (true, Ok(())) => "COMMIT".to_string(),
            (true, Err(_)) => "ROLLBACK".to_string(),
            (false, Ok(())) if !plan.sites.is_empty() => memo::drop_sql(plan.sites.len()),
            (false, Ok(())) => return result,
            (false, Err(_)) => {
                self.fail_block().await;
                return result;
            }
        };
        let server = self.held_server()?;
        if server.state.status == TxStatus::Idle {
            return result;
        }
        let ended = server.execute(&end).await;
        result.and(ended)
    }

    /// Describe of a statement or portal the general method serves: the
    /// server describes the statement with typed NULLs for the calls.
    pub(super) async fn describe_lookup(
        &mut self,
        kind: u8,
        statement: &LookupStatement,
        portal: Option<&LookupPortal>,
    ) -> Result<()> {
        let plan = &statement.plan;
        self.primary_server(&plan.describe_sql, false).await?;
        let mut out = BytesMut::new();
        match (kind, portal) {
            (client::STATEMENT, _) | (_, None) => {
                frontend::parse(
                    "",
                    &plan.describe_sql,
                    statement.types.iter().copied(),
                    &mut out,
                )
                .map_err(internal)?;
                frontend::describe(b'S', "", &mut out).map_err(internal)?;
            }
            (_, Some(p)) => {
                bound(p).write(&plan.describe_sql, &p.result_formats, &mut out)?;
                frontend::describe(b'P', "", &mut out).map_err(internal)?;
            }
        }
        frontend::sync(&mut out);
        let keep = |t| {
            matches!(
                t,
                tag::PARAMETER_DESCRIPTION | tag::ROW_DESCRIPTION | tag::NO_DATA
            )
        };
        let result = self.relay_answer(&out, keep, &mut false).await;
        self.statement_done().await;
        result.map_err(as_statements)
    }

    /// The models of a statement's calls: from the shared cache, or, in a
    /// block where a pgml call ran (it may have trained or deployed), as
    /// the block's catalog says.
    pub(super) async fn models(
        &mut self,
        calls: &[crate::ml::predict::Call],
        params: &[Option<String>],
    ) -> Result<ModelSet> {
        let (ml, pool) = (self.app.ml.clone(), self.pool.clone());
        let resolve = ModelSet::resolve(&ml, &pool, calls, params);
        if !self.tx.ml_wrote || self.tx.status == TxStatus::Idle {
            return resolve.await.map_err(Error::Ml);
        }
        let Some(lent) = self.lend_server().await? else {
            return resolve.await.map_err(Error::Ml);
        };
        let result = lent.scope(resolve).await;
        self.take_back(lent, result.is_err()).await?;
        result.map_err(Error::Ml)
    }

    /// The statement's NOTICEs from its predictions (groups without a
    /// model), after its rows.
    pub(super) fn notices(&mut self, models: &ModelSet) {
        for note in models.notices() {
            crate::net::messages::notice(&mut self.client.out, &note);
        }
    }

    fn held_server(&mut self) -> Result<&mut Server> {
        match self.server.binding.one() {
            Some(p) => Ok(&mut p.server),
            None => Err(Error::ServerLost("no server for pgml.predict".into())),
        }
    }

    /// A server for the statement, as for any statement, but a primary:
    /// the memos are temporary tables, which a standby cannot make.
    pub(super) async fn primary_server(&mut self, sql: &str, simple: bool) -> Result<()> {
        match self.server_for(sql, simple, Some(Target::Primary)).await {
            Err(Error::NoShard(_)) if self.server.binding.is_idle() => {
                Err(Error::Ml(MlError::Unsupported(
                    "pgml.predict outside the SELECT list runs on one shard: name it (a sharding \
                     key, SET SHARD or a shard comment)"
                        .into(),
                )))
            }
            other => other,
        }
    }

    /// Sends `msg` and reads to ReadyForQuery; messages whose tag `keep`
    /// accepts go to the client (`relayed` says whether any did). The
    /// server's first error is the result.
    pub(super) async fn relay_answer(
        &mut self,
        msg: &[u8],
        keep: impl Fn(u8) -> bool,
        relayed: &mut bool,
    ) -> Result<()> {
        self.held_server()?.send(msg).await?;
        let mut failure = None;
        loop {
            let frame = self.held_frame().await?;
            let kind = frame.tag();
            match kind {
                tag::READY_FOR_QUERY => break,
                tag::ERROR_RESPONSE => {
                    let addr = self.held_server()?.addr.to_string();
                    failure.get_or_insert(Error::ServerRefused {
                        addr,
                        fields: messages::parse_error_fields(frame.body()),
                    });
                }
                k if failure.is_none() && keep(k) => {
                    *relayed = true;
                    self.client.out.extend_from_slice(frame.bytes());
                    self.spill_to_client().await?;
                }
                _ => {}
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// The client's transaction status is the server's now; a server
    /// whose transaction is over goes back as after any statement.
    pub(super) async fn statement_done(&mut self) {
        let Some(pooled) = self.server.binding.one() else {
            return;
        };
        let status = pooled.server.state.status;
        if self.tx.deferred.is_none() {
            if status == TxStatus::Idle {
                self.count_xact();
            }
            self.tx.status = status;
        }
        if self.transaction_over(status) && !self.release_if_clean() {
            self.release().await;
        }
    }
}

/// Begins the proxy's own transaction when the client is in none, makes
/// the helper functions, and fills each site's memo in order.
async fn prepare(
    server: &mut Server,
    plan: &LookupPlan,
    bound: Bound<'_>,
    models: &Arc<ModelSet>,
    own: bool,
    max_bytes: usize,
) -> Result<()> {
    let mut setup = String::new();
    if own {
        setup.push_str(match plan.own {
            Own::Snapshot => "BEGIN ISOLATION LEVEL REPEATABLE READ; ",
            Own::Locking => "BEGIN; ",
        });
    }
    setup.push_str(memo::FUNCTIONS);
    server.execute(&setup).await?;
    for (i, site) in plan.sites.iter().enumerate() {
        let predictor: Arc<dyn Predictor> = models.clone();
        let mut keys = memo::Collector::new(predictor, i, plan.calls[i].clone(), max_bytes);
        let sql = if plan.evaluates {
            std::borrow::Cow::Borrowed(site.collect_sql.as_str())
        } else {
            std::borrow::Cow::Owned(format!("{} LIMIT 0", site.collect_sql))
        };
        let type_oid = server
            .first_column(&sql, bound, |t, v| keys.push(t, v))
            .await?;
        if keys.over() {
            return Err(Error::Ml(MlError::OutOfMemory(format!(
                "pgml.{}: the features this statement needs take more than the [ml] max_memory_mb \
                 the proxy may hold; predict fewer rows at a time",
                plan.calls[i].func.name()
            ))));
        }
        let Some(type_name) = memo::type_name(type_oid) else {
            return Err(Error::Ml(MlError::DatatypeMismatch(format!(
                "pgml.{}: the features must be an array of numbers or booleans, or a row; \
                 the server gave type oid {type_oid}",
                plan.calls[i].func.name()
            ))));
        };
        server
            .execute(&memo::create_sql(i, type_name, &plan.calls[i]))
            .await?;
        // Predicted while the rows came (see `Collector`).
        let Some(data) = keys.finish().await.map_err(Error::Ml)? else {
            continue;
        };
        server.copy_in(&memo::copy_sql(i), &data).await?;
        server.execute(&memo::index_sql(i)).await?;
    }
    Ok(())
}
