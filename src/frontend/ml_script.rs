//! A simple Query of several statements, some of them pgml calls or
//! predictions: run one by one as Postgres runs such a string — in one
//! implicit transaction (unless the client is in a block already), each
//! statement's answer in turn, stopping at the first error (which rolls
//! the implicit transaction back), one ReadyForQuery at the end.

use bytes::BytesMut;
use postgres_protocol::message::frontend;

use super::session::{Flow, Session};
use crate::errors::{Error, Result};
use crate::ml::call;
use crate::ml::MlError;
use crate::net::messages::{self, TxStatus};
use crate::net::tag::server as tag;

impl Session {
    pub(super) async fn ml_script(&mut self, statements: &[&str]) -> Result<Flow> {
        if self.settle().await? == Flow::Close {
            return Ok(Flow::Close);
        }
        if let Some(control) = statements.iter().find(|s| is_transaction_control(s)) {
            let e = Error::Ml(MlError::Unsupported(format!(
                "a query string with pgml calls runs in one implicit transaction; send `{}` on its own",
                control.trim()
            )));
            messages::error_response(&mut self.client.out, &e);
            messages::ready_for_query(&mut self.client.out, self.tx.status);
            return Ok(Flow::Continue);
        }
        let implicit = self.tx.status == TxStatus::Idle && self.tx.deferred.is_none();
        let mut ok = true;
        if implicit {
            if let Err(e) = self.begin_implicit().await {
                messages::error_response(&mut self.client.out, &e);
                ok = false;
            }
        }
        if ok {
            for sql in statements {
                if !self.script_statement(sql).await? {
                    ok = false;
                    break;
                }
            }
        }
        if implicit {
            let end = if ok { "COMMIT" } else { "ROLLBACK" };
            if let Some(pooled) = self.server.binding.one() {
                if let Err(e) = pooled.server.execute(end).await {
                    messages::error_response(&mut self.client.out, &e);
                }
            }
            self.statement_done().await;
        }
        messages::ready_for_query(&mut self.client.out, self.tx.status);
        Ok(Flow::Continue)
    }

    /// The implicit transaction, on a primary (the string may write).
    async fn begin_implicit(&mut self) -> Result<()> {
        self.primary_server("BEGIN", true).await?;
        match self.server.binding.one() {
            Some(pooled) => pooled.server.execute("BEGIN").await?,
            None => return Err(Error::ServerLost("no server for the query string".into())),
        }
        self.tx.status = TxStatus::InTransaction;
        Ok(())
    }

    /// One statement of the string; false when it failed (its error is
    /// written).
    async fn script_statement(&mut self, sql: &str) -> Result<bool> {
        match call::parse_call(sql) {
            Ok(Some(c)) => {
                let shard = self.shard_named(Some(sql));
                return self.run_call(&c, true, shard).await;
            }
            Ok(None) => {}
            Err(e) => {
                messages::error_response(&mut self.client.out, &Error::Ml(e));
                return Ok(false);
            }
        }
        let result = match self.predict_statement(sql).await {
            Some(r) => r,
            None => self.script_forward(sql).await,
        };
        match result {
            Ok(()) => Ok(true),
            Err(e) if matches!(e, Error::ClientGone | Error::Io(_)) => Err(e),
            Err(e) => {
                messages::error_response(&mut self.client.out, &e);
                Ok(false)
            }
        }
    }

    /// A statement without pgml, as the server answers it.
    async fn script_forward(&mut self, sql: &str) -> Result<()> {
        if self.server.binding.is_idle() {
            self.primary_server(sql, true).await?;
        }
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).map_err(|e| Error::protocol(e.to_string()))?;
        self.relay_answer(&out, |t| t != tag::READY_FOR_QUERY, &mut false)
            .await
            .map_err(super::lookup::as_statements)
    }
}

/// BEGIN, COMMIT and the like, which would end the implicit transaction.
fn is_transaction_control(sql: &str) -> bool {
    let first = sql
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    matches!(
        first.as_str(),
        "begin"
            | "start"
            | "commit"
            | "end"
            | "rollback"
            | "abort"
            | "savepoint"
            | "release"
            | "prepare"
    )
}
