//! Simple-protocol statements the session answers itself: pgcat's custom
//! commands, and BEGIN/COMMIT around a transaction that has not reached a
//! server yet.

use super::session::Session;
use crate::config::DefaultRole;
use crate::errors::Error;
use crate::net::messages::{self, TxStatus};
use crate::router::commands::{self, Command, RoleSetting};
use crate::router::{self, rw::Intent};

/// Type oid of `text`.
const TEXT: u32 = 25;

impl Session {
    /// Answers `sql` without a server if it is ours to answer.
    pub(super) fn answer_locally(&mut self, sql: &str) -> bool {
        if let Some(parsed) = commands::parse(sql) {
            if let Err(e) = parsed.and_then(|cmd| self.run_command(cmd)) {
                messages::error_response(&mut self.to_client, &e);
            }
            messages::ready_for_query(&mut self.to_client, self.status);
            return true;
        }
        // A lone BEGIN waits for the statement that shows where the
        // transaction belongs: its role (read/write splitting) or its shard.
        let routes = self.pool.route.parses(self.route.role) || self.pool.shards.len() > 1;
        if self.server.is_some() || !routes {
            return false;
        }
        match (router::intent(&self.pool.route, sql), &self.deferred_begin) {
            (Intent::Begin { read_only }, None) if self.status == TxStatus::Idle => {
                self.deferred_begin = Some((sql.to_string(), read_only));
                self.status = TxStatus::InTransaction;
                messages::command_complete(&mut self.to_client, "BEGIN");
            }
            (Intent::End { commit }, Some(_)) => {
                // Nothing ran: there is nothing to commit or roll back.
                self.deferred_begin = None;
                self.status = TxStatus::Idle;
                messages::command_complete(
                    &mut self.to_client,
                    if commit { "COMMIT" } else { "ROLLBACK" },
                );
            }
            _ => return false,
        }
        messages::ready_for_query(&mut self.to_client, self.status);
        true
    }

    fn run_command(&mut self, cmd: Command) -> Result<(), Error> {
        let out = &mut self.to_client;
        let shards = self.pool.shards.len();
        match cmd {
            Command::SetShard(shard) => {
                if let Some(n) = shard.filter(|n| *n >= shards) {
                    return Err(Error::InvalidParameter(format!(
                        "shard {n} does not exist: the pool has {shards}"
                    )));
                }
                self.route.shard = shard;
                messages::command_complete(out, "SET");
            }
            Command::SetShardingKey(key) => {
                self.route.shard = Some(self.pool.sharding.shard_for(&key)?);
                messages::command_complete(out, "SET");
            }
            Command::ShowShard => {
                let shard = self
                    .route
                    .shard
                    .map_or_else(|| "any".to_string(), |n| n.to_string());
                show(out, "shard", &shard);
            }
            Command::SetServerRole(role) => {
                self.route.role = role;
                messages::command_complete(out, "SET");
            }
            Command::SetPrimaryReads(on) => {
                self.route.primary_reads = on;
                messages::command_complete(out, "SET");
            }
            Command::ShowServerRole => {
                let role = match self.route.role {
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
                let on = self
                    .route
                    .primary_reads
                    .unwrap_or(self.pool.route.primary_reads);
                show(out, "primary reads", if on { "on" } else { "off" });
            }
        }
        Ok(())
    }
}

fn show(out: &mut bytes::BytesMut, column: &str, value: &str) {
    messages::row_description(out, &[(column, TEXT)]);
    messages::data_row(out, &[Some(value)]);
    messages::command_complete(out, "SHOW");
}
