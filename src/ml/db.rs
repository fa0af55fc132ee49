//! The proxy's own conversations with the database for the ML side, on
//! connections checked out of the client's pool: parameterised queries
//! (user-supplied values never spliced into SQL), COPY in and out,
//! transactions. The exchanges themselves are the server's (`backend::query`).

use std::sync::Arc;

use super::error::{MlError, MlResult};
use crate::backend::pool::{Pooled, ServerPool};
use crate::backend::Server;
use crate::errors::Error;

pub use crate::backend::query::Row;

tokio::task_local! {
    /// Set while a pgml call runs inside a client's transaction block: the
    /// ML side's statements then run on the client's own server, in its
    /// transaction (they see the block's rows, and roll back with it).
    static LENT: Lent;
}

/// The client's server, lent to the ML side for one call.
#[derive(Clone)]
pub struct Lent(Arc<parking_lot::Mutex<Option<Pooled>>>);

impl Lent {
    pub fn new(server: Pooled) -> Lent {
        Lent(Arc::new(parking_lot::Mutex::new(Some(server))))
    }

    /// Runs `work` with every `Db::checkout` on this server.
    pub async fn scope<F: std::future::Future>(&self, work: F) -> F::Output {
        LENT.scope(self.clone(), work).await
    }

    /// The server back, once the call is over (None: it was lost).
    pub fn take_back(&self) -> Option<Pooled> {
        self.0.lock().take()
    }
}

/// Whether the ML side is running inside a client's transaction block: it
/// then must not publish what it wrote (a model cache entry, the schema
/// being ready) before the client commits.
pub fn lent() -> bool {
    LENT.try_with(|_| ()).is_ok()
}

/// A server borrowed from a pool for pgmlcat's own statements. Goes back to
/// the pool when dropped if it is clean and idle, else it is closed. Inside
/// a client's block it is the client's server (`Lent`), which goes back to
/// the client.
pub struct Db {
    pool: Arc<ServerPool>,
    conn: Option<Pooled>,
    lent: Option<Lent>,
}

impl From<Error> for MlError {
    fn from(e: Error) -> MlError {
        match e {
            Error::Ml(m) => m,
            Error::ServerRefused { fields, .. } => MlError::Server(fields),
            other => MlError::Server(crate::errors::ErrorFields {
                severity: "ERROR".into(),
                code: other.sqlstate().to_string(),
                message: other.to_string(),
            }),
        }
    }
}

impl Db {
    pub async fn checkout(pool: &Arc<ServerPool>) -> MlResult<Db> {
        if let Ok(lent) = LENT.try_with(Lent::clone) {
            let conn = lent.0.lock().take().ok_or_else(|| {
                MlError::Unsupported(
                    "inside a transaction block a pgml call has the block's one connection: \
                     it cannot read several shards at once; name one shard"
                        .into(),
                )
            })?;
            return Ok(Db {
                pool: pool.clone(),
                conn: Some(conn),
                lent: Some(lent),
            });
        }
        let conn = pool.checkout().await?;
        Ok(Db {
            pool: pool.clone(),
            conn: Some(conn),
            lent: None,
        })
    }

    fn server(&mut self) -> MlResult<&mut Server> {
        self.conn
            .as_mut()
            .map(|c| &mut *c.server)
            .ok_or_else(|| MlError::Internal("server connection already returned".into()))
    }

    /// One statement with text parameters (None = NULL); all rows as text.
    pub async fn query(&mut self, sql: &str, params: &[Option<&str>]) -> MlResult<Vec<Row>> {
        Ok(self.server()?.query(sql, params).await?)
    }

    pub async fn query_one(&mut self, sql: &str, params: &[Option<&str>]) -> MlResult<Row> {
        self.query(sql, params)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| MlError::Internal(format!("no row from: {sql}")))
    }

    /// Statements without parameters or results (DDL, BEGIN...).
    pub async fn execute(&mut self, sql: &str) -> MlResult<()> {
        Ok(self.server()?.execute(sql).await?)
    }

    /// `COPY ... TO STDOUT`: every CopyData payload goes to `chunk` in order.
    pub async fn copy_out(
        &mut self,
        sql: &str,
        mut chunk: impl FnMut(&[u8]) -> MlResult<()>,
    ) -> MlResult<()> {
        // The decoder's own error is kept whole (its SQLSTATE is the ML
        // side's); the server's exchange only needs to know one happened.
        let mut failed = None;
        let result = self
            .server()?
            .copy_out(sql, |data| {
                chunk(data).map_err(|e| {
                    let err = Error::Unsupported(e.to_string());
                    failed = Some(e);
                    err
                })
            })
            .await;
        match (failed, result) {
            (Some(e), _) => Err(e),
            (None, r) => Ok(r?),
        }
    }

    /// `COPY ... FROM STDIN` with the given payload.
    /// `COPY ... TO STDOUT` read with awaits between the chunks (see
    /// `Server::start_copy_out`); `copy_out_next` gives None at the end.
    pub async fn copy_out_start(&mut self, sql: &str) -> MlResult<()> {
        Ok(self.server()?.start_copy_out(sql).await?)
    }

    pub async fn copy_out_next(&mut self) -> MlResult<Option<bytes::Bytes>> {
        Ok(self.server()?.next_copy_data().await?)
    }

    pub async fn copy_in(&mut self, sql: &str, data: &[u8]) -> MlResult<()> {
        self.server()?.copy_in(sql, data).await?;
        Ok(())
    }

    /// Runs `work` inside BEGIN/COMMIT; any error rolls back, so a failed
    /// training leaves no half-written catalog rows. On a client's server
    /// the client's block is the transaction.
    /// Starts a read-only snapshot in which the same query gives the same
    /// rows in the same order every time: REPEATABLE READ, no parallel
    /// plans, no scan joining another one mid-table. Inside a client's
    /// block (a lent connection) the block is the transaction.
    pub async fn begin_snapshot(&mut self) -> MlResult<()> {
        if self.lent.is_some() {
            return Ok(());
        }
        self.execute(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
             SET LOCAL synchronize_seqscans = off; SET LOCAL max_parallel_workers_per_gather = 0",
        )
        .await
    }

    /// Ends `begin_snapshot`'s transaction.
    pub async fn end_snapshot(&mut self) -> MlResult<()> {
        if self.lent.is_some() {
            return Ok(());
        }
        self.execute("COMMIT").await
    }

    pub async fn in_transaction<T>(
        &mut self,
        work: impl AsyncFnOnce(&mut Db) -> MlResult<T>,
    ) -> MlResult<T> {
        if self.lent.is_some() {
            return work(self).await;
        }
        self.execute("BEGIN").await?;
        match work(self).await {
            Ok(v) => {
                self.execute("COMMIT").await?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.execute("ROLLBACK").await;
                Err(e)
            }
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            match &self.lent {
                Some(lent) => *lent.0.lock() = Some(conn),
                None => self.pool.checkin(conn),
            }
        }
    }
}
