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

/// A server borrowed from a pool for pgmlcat's own statements. Goes back to
/// the pool when dropped if it is clean and idle, else it is closed.
pub struct Db {
    pool: Arc<ServerPool>,
    conn: Option<Pooled>,
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
        let conn = pool.checkout().await?;
        Ok(Db {
            pool: pool.clone(),
            conn: Some(conn),
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
    pub async fn copy_in(&mut self, sql: &str, data: &[u8]) -> MlResult<()> {
        self.server()?.copy_in(sql, data).await?;
        Ok(())
    }

    /// Runs `work` inside BEGIN/COMMIT; any error rolls back, so a failed
    /// training leaves no half-written catalog rows.
    pub async fn in_transaction<T>(
        &mut self,
        work: impl AsyncFnOnce(&mut Db) -> MlResult<T>,
    ) -> MlResult<T> {
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
            self.pool.checkin(conn);
        }
    }
}
