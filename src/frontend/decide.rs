//! What a statement needs from the servers, decided once: the router's
//! analysis of its text (parsed at most once per text, per pool), the
//! client's routing choices and the session's state go in; one `Plan`
//! comes out, and the session just carries it out.

use std::sync::Arc;

use super::lease::{Protocol, Route};
use super::prepared;
use super::session::{Binding, Session};
use crate::errors::{Error, Result};
use crate::net::codec;
use crate::net::messages::TxStatus;
use crate::net::tag::client;
use crate::router::commands::Command;
use crate::router::copy::CopyIn;
use crate::router::merge::MergePlan;
use crate::router::rw::Intent;
use crate::router::shard::DefaultShard;
use crate::router::statement::Analysis;
use crate::router::{self, Hints, Placement, Target};

/// What the session answers itself.
pub(super) enum Local {
    /// pgcat's SET/SHOW SERVER ROLE, PRIMARY READS, SHARD, SHARDING KEY.
    Command(Result<Command>),
    /// A lone BEGIN before any server: sent with the first real statement,
    /// once that statement shows where the transaction belongs.
    Begin { sql: String, read_only: bool },
    /// COMMIT/ROLLBACK of a transaction that never reached a server.
    End { commit: bool },
}

/// What a statement needs from the servers.
pub(super) enum Plan {
    Local(Local),
    /// A read naming no shard, run on every shard and merged.
    FanOut(Arc<MergePlan>),
    /// Parts run on their shards, all committed or all rolled back: a
    /// multi-row INSERT whose rows fall on several shards, or (under
    /// `default_shard = "all"`) a keyless schema change on every shard.
    Split(Vec<(usize, String)>),
    /// COPY FROM STDIN into the sharded table, split by key.
    SplitCopy(CopyIn),
    /// Refused before any server sees it.
    Refuse(Error),
    /// The server already held; `writes`: the statement makes the
    /// transaction a write its reads will wait for (`held_writes`).
    Held {
        writes: bool,
    },
    /// A server for this route.
    Checkout(Route),
}

/// The statement whose routing is being decided.
pub(super) struct Statement<'a> {
    pub sql: Option<&'a str>,
    /// Its Bind, when there is one (its parameters may name the shard).
    pub bind: Option<&'a [u8]>,
    /// Whether the batch executes it (Parse/Describe alone do not).
    pub runs: bool,
    pub protocol: Protocol,
}

impl Session {
    /// Whether the pool routes this client's statements by what they say
    /// (sharded, or read/write splitting for this client).
    pub(super) fn routes_by_content(&self) -> bool {
        self.pool.shards.len() > 1 || self.pool.route.parses(self.client.route.role)
    }

    /// The routing analysis of `sql`, when the pool routes by content.
    pub(super) fn analysis(&self, sql: Option<&str>) -> Option<Arc<Analysis>> {
        let sql = sql?;
        self.routes_by_content().then(|| {
            self.pool
                .analyses
                .get(sql, &self.pool.sharding, &self.pool.route)
        })
    }

    /// The shard a pgml call is limited to: one its comment or the
    /// client's SET SHARD names (training then reads only that shard).
    pub(super) fn shard_named(&self, sql: Option<&str>) -> Option<usize> {
        let analysis = self.analysis(sql);
        let hints = Hints {
            client_shard: self.client.route.shard,
            param: &|_| None,
        };
        router::named_shard(analysis.as_deref(), &hints, false)
            .ok()
            .flatten()
    }

    /// Decides what `stmt` needs. The one place routing is worked out.
    pub(super) fn decide(&self, stmt: &Statement) -> Result<Plan> {
        let analysis = self.analysis(stmt.sql);
        let analysis = analysis.as_deref();
        let params = match stmt.bind {
            Some(b) => prepared::bind_params(b)?,
            None => Vec::new(),
        };
        let sharding = &self.pool.sharding;
        let param = |i: usize| {
            let (value, binary) = params.get(i)?;
            let value = (*value)?;
            if *binary {
                sharding.shard_for_binary(value)
            } else {
                sharding.shard_for(std::str::from_utf8(value).ok()?).ok()
            }
        };
        let hints = Hints {
            client_shard: self.client.route.shard,
            param: &param,
        };
        let sharded = self.pool.shards.len() > 1;
        if let Binding::One(held) = &self.server.binding {
            if stmt.runs && self.tx.deferred.is_some() {
                // Only on a sharded pool, between a batch that only
                // prepares and its Sync: the client's BEGIN is not on this
                // server, and nothing may run outside its transaction.
                return Ok(Plan::Refuse(Error::Unsupported(
                    "this statement arrived before the server had answered the batch that prepared it, inside a transaction that no statement has placed on a shard yet: wait for that batch's answers (or send the statement in the same batch)".into(),
                )));
            }
            // Inside a transaction (or pinned to its server) a statement
            // keyed to another shard is refused; keyless statements stay
            // on the transaction's shard.
            if sharded && (self.tx.status != TxStatus::Idle || self.pinned()) {
                let current = held.server.addr.shard;
                if let Some(s) = router::named_shard(analysis, &hints, true)? {
                    if s != current {
                        let msg = if self.tx.status != TxStatus::Idle {
                            format!("this transaction runs on shard {current}; the statement belongs to shard {s}: a transaction cannot span shards")
                        } else {
                            format!("this client is pinned to its server on shard {current} (it holds state only that connection can: see SHOW CLIENTS); the statement belongs to shard {s}")
                        };
                        return Ok(Plan::Refuse(Error::NoShard(msg)));
                    }
                }
            }
            let writes = stmt.runs && self.held_writes(analysis.is_none_or(|a| a.may_write_data()));
            return Ok(Plan::Held { writes });
        }
        if let Some(local) = self.deferred_transaction(analysis, stmt) {
            return Ok(Plan::Local(local));
        }
        if !sharded {
            return Ok(Plan::Checkout(self.route(0, analysis, stmt)));
        }
        if let Some(copy) = analysis.and_then(|a| a.copy_in.clone()) {
            if self.tx.status == TxStatus::Idle {
                return Ok(Plan::SplitCopy(copy));
            }
        }
        // As pgcat's: a shard whose primary failed lately (within ban_time)
        // is not healthy, even though a primary is never banned.
        let healthy = |s: usize| {
            let p = self.pool.primary(s);
            let h = &p.health;
            h.reachable() && !h.banned() && !h.failed_within(p.settings().ban_time)
        };
        let mut pick = |n: usize| rand::random::<usize>() % n;
        let placed = router::place(sharding, analysis, &hints, stmt.runs, &healthy, &mut pick);
        match placed {
            Ok(Placement::Shard(n)) => Ok(Plan::Checkout(self.route(n, analysis, stmt))),
            Ok(Placement::Picked(n)) => Ok(Plan::Checkout(Route {
                waits: false,
                ..self.route(n, analysis, stmt)
            })),
            Ok(Placement::Keyless) => Ok(self.keyless(analysis, stmt)),
            Err(e) => Ok(Plan::Refuse(e)),
        }
    }

    /// Whether `sql`, run now, would be a keyless read on every shard.
    pub(super) fn runs_on_every_shard(&self, sql: &str) -> bool {
        if !self.server.binding.is_idle() || self.pool.shards.len() <= 1 {
            return false;
        }
        let stmt = Statement {
            sql: Some(sql),
            bind: None,
            runs: true,
            protocol: Protocol::Simple,
        };
        match self.decide(&stmt) {
            Ok(Plan::FanOut(_)) => true,
            // A read the merge refuses still runs everywhere for a
            // prediction, whose rows are only concatenated.
            Ok(Plan::Refuse(_)) => self
                .analysis(Some(sql))
                .is_some_and(|a| a.intent == Intent::Read && a.merge.is_some()),
            _ => false,
        }
    }

    /// A statement that names no shard: a read runs on every shard (outside
    /// a transaction, or in a READ ONLY one not started yet: each read then
    /// has its own snapshot per shard); a multi-row INSERT may split; a
    /// schema change under `default_shard = "all"` runs on every shard; the
    /// rest is refused, never placed by guess.
    fn keyless(&self, analysis: Option<&Analysis>, stmt: &Statement) -> Plan {
        let missing = || Plan::Refuse(Error::NoShard(self.pool.sharding.missing_key()));
        let Some(a) = analysis else {
            return missing();
        };
        let reads_anywhere = self.tx.deferred.as_ref().is_none_or(|b| b.read_only);
        if a.intent == Intent::Read && reads_anywhere {
            return match a.merge_plan(&self.pool.sharding) {
                Ok(plan) => Plan::FanOut(plan),
                Err(e) => Plan::Refuse(e),
            };
        }
        let alone = self.tx.deferred.is_none() && stmt.protocol == Protocol::Simple;
        let sharding = &self.pool.sharding;
        match (&a.insert_split, stmt.sql) {
            (Some(parts), _) if alone => Plan::Split(parts.clone()),
            (None, Some(sql)) if alone && a.ddl && sharding.default_shard == DefaultShard::All => {
                Plan::Split((0..sharding.shards).map(|s| (s, sql.to_string())).collect())
            }
            _ => missing(),
        }
    }

    /// A lone BEGIN, or the end of a transaction that never reached a
    /// server, on a pool that routes by content.
    fn deferred_transaction(&self, analysis: Option<&Analysis>, stmt: &Statement) -> Option<Local> {
        if stmt.protocol != Protocol::Simple {
            return None;
        }
        if !self.routes_by_content() {
            return None;
        }
        match (analysis?.intent, &self.tx.deferred) {
            (Intent::Begin { read_only }, None) if self.tx.status == TxStatus::Idle => {
                Some(Local::Begin {
                    sql: stmt.sql?.to_string(),
                    read_only,
                })
            }
            (Intent::End { commit }, Some(_)) => Some(Local::End { commit }),
            _ => None,
        }
    }

    fn route(&self, shard: usize, analysis: Option<&Analysis>, stmt: &Statement) -> Route {
        Route {
            shard,
            target: self.target_for(analysis),
            runs: stmt.runs,
            waits: true,
            max_lag: analysis.and_then(|a| a.max_lag),
            writes: analysis.is_none_or(|a| a.may_write_data()),
        }
    }

    /// The role the transaction starting with `analysis` needs.
    pub(super) fn target_for(&self, analysis: Option<&Analysis>) -> Target {
        let cfg = &self.pool.route;
        let intent = match &self.tx.deferred {
            Some(b) if b.read_only => Some(Intent::Begin { read_only: true }),
            _ if cfg.parses(self.client.route.role) => analysis.map(|a| a.intent),
            _ => None,
        };
        router::target(cfg, &self.client.route, intent)
    }

    /// The text a Parse or Bind will run (or the held Parse a Sync or
    /// Describe ends), for routing its transaction; None when the pool does
    /// not route by content.
    pub(super) fn statement_text(&self, kind: u8, msg: &[u8]) -> Option<String> {
        if !self.routes_by_content() {
            return None;
        }
        let parse_text = |m: &[u8]| {
            let (_, end) = prepared::first_name(m).ok()?;
            codec::cstr(m, end).ok().map(|(q, _)| q.to_string())
        };
        let held_parse = || {
            let held = match &self.batch {
                super::session::Batch::Holding(v) => v.as_slice(),
                _ => &[],
            };
            held.iter()
                .rev()
                .find(|(t, _)| *t == client::PARSE)
                .and_then(|(_, m)| parse_text(m))
        };
        match kind {
            client::PARSE => parse_text(msg),
            client::BIND => {
                let (stmt, _, _) = prepared::bind_statement(msg).ok()?;
                if stmt.is_empty() {
                    return held_parse()
                        .or_else(|| self.client.statements.unnamed().map(str::to_string));
                }
                self.client.statements.get(stmt).map(|p| p.query.clone())
            }
            _ => held_parse(),
        }
    }
}
