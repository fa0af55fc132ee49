//! Simple-protocol statements the session answers itself: pgcat's custom
//! commands and intercepted statements, BEGIN/COMMIT around a transaction
//! that has not reached a server yet, and SQL DEALLOCATE of the client's
//! protocol-level statements.

use super::decide::Local;
use super::prepared::Deallocate;
use super::session::{DeferredBegin, Session};
use crate::config::{DefaultRole, PoolMode};
use crate::errors::Error;
use crate::net::messages::{self, TxStatus};
use crate::net::oid;
use crate::router::commands::{Command, RoleSetting};

impl Session {
    /// Writes the answer to `local`, ending with ReadyForQuery.
    pub(super) fn answer_local(&mut self, local: Local) {
        match local {
            Local::Command(parsed) => {
                if let Err(e) = parsed.and_then(|cmd| self.run_command(cmd)) {
                    messages::error_response(&mut self.client.out, &e);
                }
            }
            Local::Begin { sql, read_only } => {
                self.tx.deferred = Some(DeferredBegin { sql, read_only });
                self.tx.status = TxStatus::InTransaction;
                messages::command_complete(&mut self.client.out, "BEGIN");
            }
            Local::End { commit } => {
                // Nothing ran: there is nothing to commit or roll back.
                self.tx.deferred = None;
                self.tx.status = TxStatus::Idle;
                self.settle_notify_now(commit);
                let tag = if commit { "COMMIT" } else { "ROLLBACK" };
                messages::command_complete(&mut self.client.out, tag);
            }
        }
        messages::ready_for_query(&mut self.client.out, self.tx.status);
    }

    /// Answers `sql` with the rows pgcat's intercept plugin configures for
    /// it, if it is one of its statements; false when it is not.
    pub(super) fn intercepted(&mut self, sql: &[u8]) -> bool {
        let pool = self.pool.clone();
        let Some(answer) = pool.intercept.as_ref().and_then(|i| i.answer(sql)) else {
            return false;
        };
        let out = &mut self.client.out;
        let columns: Vec<(&str, u32)> = answer
            .columns
            .iter()
            .map(|(n, t)| (n.as_str(), *t))
            .collect();
        messages::row_description(out, &columns);
        for row in &answer.rows {
            messages::data_row(out, row);
        }
        messages::command_complete(out, &format!("SELECT {}", answer.rows.len()));
        messages::ready_for_query(out, self.tx.status);
        true
    }

    /// SQL DEALLOCATE of statements the client prepared with the protocol:
    /// in transaction mode they live on the servers under shared names, so
    /// the name is the client's alone, and forgetting it is the whole job
    /// (pgx and PHP PDO evict statements this way). Answered here unless a
    /// server must answer: a failed transaction (Postgres refuses
    /// everything), answers still due, or DEALLOCATE ALL in a transaction
    /// (the server's SQL-prepared statements go too). Returns false when
    /// the statement is to be sent on.
    pub(super) fn deallocate(&mut self, target: Deallocate) -> bool {
        if self.tx.status == TxStatus::Failed || !self.server.expect.is_empty() {
            return false;
        }
        // Statements pgmlcat answers itself (pgml calls, predictions) are
        // the client's alone in every mode: no server has them.
        let name = match &target {
            Deallocate::Name(name) => Some(name.as_str()),
            Deallocate::All => None,
        };
        if self.ml_deallocate(name) {
            messages::command_complete(&mut self.client.out, "DEALLOCATE");
            messages::ready_for_query(&mut self.client.out, self.tx.status);
            return true;
        }
        if self.mode != PoolMode::Transaction {
            return false;
        }
        match target {
            Deallocate::Name(name) => {
                if !self.client.statements.remove(&name) {
                    return false;
                }
                messages::command_complete(&mut self.client.out, "DEALLOCATE");
            }
            Deallocate::All => {
                self.client.statements.clear();
                if !self.server.binding.is_idle() {
                    return false;
                }
                messages::command_complete(&mut self.client.out, "DEALLOCATE ALL");
            }
        }
        messages::ready_for_query(&mut self.client.out, self.tx.status);
        true
    }

    fn run_command(&mut self, cmd: Command) -> Result<(), Error> {
        let out = &mut self.client.out;
        let route = &mut self.client.route;
        let shards = self.pool.shards.len();
        match cmd {
            Command::SetShard(shard) => {
                if let Some(n) = shard.filter(|n| *n >= shards) {
                    return Err(Error::InvalidParameter(format!(
                        "shard {n} does not exist: the pool has {shards}"
                    )));
                }
                route.shard = shard;
                messages::command_complete(out, "SET");
            }
            Command::SetShardingKey(key) => {
                route.shard = Some(self.pool.sharding.shard_for(&key)?);
                messages::command_complete(out, "SET");
            }
            Command::ShowShard => {
                let shard = route
                    .shard
                    .map_or_else(|| "any".to_string(), |n| n.to_string());
                show(out, "shard", &shard);
            }
            Command::SetServerRole(role) => {
                route.role = role;
                messages::command_complete(out, "SET");
            }
            Command::SetPrimaryReads(on) => {
                route.primary_reads = on;
                messages::command_complete(out, "SET");
            }
            Command::ShowServerRole => {
                let role = match route.role {
                    RoleSetting::Default => match self.pool.route.default_role {
                        DefaultRole::Any => "any",
                        DefaultRole::Primary => "primary",
                        DefaultRole::Replica => "replica",
                    },
                    other => other.as_str(),
                };
                show(out, "server role", role);
            }
            Command::ShowPrimaryReads => {
                let on = route.primary_reads.unwrap_or(self.pool.route.primary_reads);
                show(out, "primary reads", if on { "on" } else { "off" });
            }
        }
        Ok(())
    }
}

fn show(out: &mut bytes::BytesMut, column: &str, value: &str) {
    messages::row_description(out, &[(column, oid::TEXT)]);
    messages::data_row(out, &[Some(value)]);
    messages::command_complete(out, "SHOW");
}
