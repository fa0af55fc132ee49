//! The proxy's own conversations with the database, on connections checked
//! out of the client's pool: parameterised queries (user-supplied values
//! never spliced into SQL), COPY in and out, transactions.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use postgres_protocol::message::frontend;
use tokio::io::AsyncWriteExt;

use super::error::{MlError, MlResult};
use crate::backend::pool::{Pooled, ServerPool};
use crate::backend::server::parse_data_row;
use crate::errors::Error;
use crate::net::messages::{parse_error_fields, TxStatus};

pub type Row = Vec<Option<String>>;

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

    fn conn(&mut self) -> MlResult<&mut Pooled> {
        self.conn
            .as_mut()
            .ok_or_else(|| MlError::Internal("server connection already returned".into()))
    }

    async fn send(&mut self, buf: &[u8]) -> MlResult<()> {
        let conn = self.conn()?;
        if let Err(e) = conn.server.stream.write_all(buf).await {
            conn.server.broken = true;
            return Err(Error::from(e).into());
        }
        Ok(())
    }

    async fn read(&mut self) -> MlResult<(u8, Bytes)> {
        let conn = self.conn()?;
        match conn.server.read_message().await {
            Ok(m) => Ok(m),
            Err(e) => {
                conn.server.broken = true;
                Err(e.into())
            }
        }
    }

    /// Reads until ReadyForQuery, handing every other message to `each`.
    /// The first ErrorResponse becomes the result.
    async fn until_ready(
        &mut self,
        mut each: impl FnMut(u8, Bytes) -> MlResult<()>,
    ) -> MlResult<()> {
        let mut first_error = None;
        loop {
            let (tag, body) = self.read().await?;
            match tag {
                b'E' => {
                    first_error.get_or_insert(parse_error_fields(&body));
                }
                b'S' => self.conn()?.server.note_parameter(&body),
                b'Z' => {
                    let status = body
                        .first()
                        .and_then(|&b| TxStatus::from_byte(b))
                        .unwrap_or(TxStatus::Failed);
                    self.conn()?.server.status = status;
                    return match first_error {
                        Some(fields) => Err(MlError::Server(fields)),
                        None => Ok(()),
                    };
                }
                _ if first_error.is_none() => each(tag, body)?,
                _ => {}
            }
        }
    }

    /// One statement with text parameters (None = NULL); all rows as text.
    pub async fn query(&mut self, sql: &str, params: &[Option<&str>]) -> MlResult<Vec<Row>> {
        let mut buf = BytesMut::new();
        let encode = |e: std::io::Error| MlError::Internal(e.to_string());
        frontend::parse("", sql, std::iter::empty(), &mut buf).map_err(encode)?;
        frontend::bind(
            "",
            "",
            std::iter::empty::<i16>(),
            params.iter(),
            |p, out| match p {
                Some(v) => {
                    out.extend_from_slice(v.as_bytes());
                    Ok(postgres_protocol::IsNull::No)
                }
                None => Ok(postgres_protocol::IsNull::Yes),
            },
            std::iter::empty::<i16>(),
            &mut buf,
        )
        .map_err(|_| MlError::Internal("could not encode parameters".into()))?;
        frontend::execute("", 0, &mut buf).map_err(encode)?;
        frontend::sync(&mut buf);
        self.send(&buf).await?;
        let mut rows = Vec::new();
        self.until_ready(|tag, body| {
            if tag == b'D' {
                rows.push(parse_data_row(&body)?);
            }
            Ok(())
        })
        .await?;
        Ok(rows)
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
        let mut buf = BytesMut::new();
        frontend::query(sql, &mut buf).map_err(|e| MlError::Internal(e.to_string()))?;
        self.send(&buf).await?;
        self.until_ready(|_, _| Ok(())).await
    }

    /// `COPY ... TO STDOUT`: every CopyData payload goes to `chunk` in order.
    pub async fn copy_out(
        &mut self,
        sql: &str,
        mut chunk: impl FnMut(&[u8]) -> MlResult<()>,
    ) -> MlResult<()> {
        let mut buf = BytesMut::new();
        frontend::query(sql, &mut buf).map_err(|e| MlError::Internal(e.to_string()))?;
        self.send(&buf).await?;
        let mut failed = None;
        let result = self
            .until_ready(|tag, body| {
                if tag == b'd' && failed.is_none() {
                    if let Err(e) = chunk(&body) {
                        failed = Some(e);
                    }
                }
                Ok(())
            })
            .await;
        match failed {
            Some(e) => Err(e),
            None => result,
        }
    }

    /// `COPY ... FROM STDIN` with the given payload.
    pub async fn copy_in(&mut self, sql: &str, data: &[u8]) -> MlResult<()> {
        let mut buf = BytesMut::new();
        frontend::query(sql, &mut buf).map_err(|e| MlError::Internal(e.to_string()))?;
        self.send(&buf).await?;
        // Wait for CopyInResponse (or an error, which ends with ReadyForQuery).
        loop {
            let (tag, body) = self.read().await?;
            match tag {
                b'G' => break,
                b'E' => {
                    let fields = parse_error_fields(&body);
                    self.until_ready(|_, _| Ok(())).await.ok();
                    return Err(MlError::Server(fields));
                }
                _ => {}
            }
        }
        let mut buf = BytesMut::new();
        for piece in data.chunks(64 * 1024) {
            frontend::CopyData::new(piece)
                .map_err(|e| MlError::Internal(e.to_string()))?
                .write(&mut buf);
        }
        frontend::copy_done(&mut buf);
        self.send(&buf).await?;
        self.until_ready(|_, _| Ok(())).await
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
