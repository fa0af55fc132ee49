//! Which replicas a client's read may use (see `backend::freshness`): after
//! a transaction of its own on the primary, only those that replayed it;
//! with a lag bound (a `/* max_lag_ms: N */` comment, or `SET
//! pgmlcat.max_lag_ms`, a session parameter like any other), only those
//! no further behind. Nothing is asked of a client that has neither.

use std::time::Duration;

use super::lease::Route;
use super::session::Session;
use crate::backend::freshness::{Mark, Need};
use crate::errors::{Error, Result};
use crate::router::commands::RoleSetting;
use crate::router::Target;

/// The session parameter that bounds lag.
pub const MAX_LAG_PARAMETER: &str = "pgmlcat.max_lag_ms";

/// A client's freshness state.
#[derive(Debug, Default)]
pub struct Fresh {
    /// Writes whose replay its reads wait for, one per shard at most.
    marks: Vec<Mark>,
    /// `pgmlcat.max_lag_ms` as last read, for the parameters' fingerprint.
    set_bound: Option<(u64, Option<Duration>)>,
}

impl Session {
    /// What a read routed by `route` needs of a replica.
    pub(super) fn read_need(&mut self, route: &Route) -> Result<Need> {
        if route.target == Target::Primary || !self.pool.replicated(route.shard) {
            return Ok(Need::Any);
        }
        let bound = match route.max_lag {
            Some(bound) => Some(bound),
            None => self.set_bound()?,
        };
        // A client that chose its role (SET SERVER ROLE replica / any)
        // reads where it said; only routing by content waits for writes.
        let chosen = matches!(
            self.client.route.role,
            RoleSetting::Replica | RoleSetting::Any
        );
        let shard = route.shard;
        let at = match chosen {
            true => None,
            false => self.fresh.marks.iter().position(|m| m.shard == shard),
        };
        let need = self
            .pool
            .clock
            .need(at.map(|i| &mut self.fresh.marks[i]), bound);
        if let (Some(i), Need::Reached(lsn)) = (at, need) {
            // Every replica has it: nothing left to wait for.
            let caught_up = self.pool.shards[shard]
                .iter()
                .filter(|s| !s.health.writer())
                .all(|s| s.health.lsn() >= lsn);
            if caught_up {
                self.fresh.marks.swap_remove(i);
            }
        }
        Ok(need)
    }

    /// The server goes back: if the client's transaction may have written
    /// on a shard's primary, its reads there wait for the replay.
    pub(super) fn note_commit(&mut self) {
        if !self.tx.wrote || !self.on_replicated_primary() {
            return;
        }
        let shard = self.server.last_pool.addr.shard;
        let Some(mark) = self.pool.clock.mark(shard) else {
            return;
        };
        self.fresh.marks.retain(|m| m.shard != shard);
        self.fresh.marks.push(mark);
    }

    /// Whether the transaction `route` places may write on the primary: a
    /// statement not known to only read, or any once the client forced
    /// the primary (its statements are not parsed, and a transaction is
    /// placed by its first). A batch that only prepares writes nothing,
    /// unless it opens the client's transaction.
    pub(super) fn may_write(&self, route: &Route) -> bool {
        route.target == Target::Primary
            && (route.writes || self.forced_primary())
            && (route.runs || self.tx.deferred.is_some())
    }

    /// The client chose `SET SERVER ROLE primary`: its statements are not
    /// parsed, so any may write.
    fn forced_primary(&self) -> bool {
        self.client.route.role == RoleSetting::Primary
    }

    /// Whether the client's server (held, or last held) is the primary of
    /// a replicated shard on a pool that has read-your-writes: where a
    /// commit is one its reads may have to wait for.
    fn on_replicated_primary(&self) -> bool {
        let server = &self.server.last_pool;
        self.pool.read_your_writes
            && server.health.writer()
            && self.pool.replicated(server.addr.shard)
    }

    /// Whether a statement run on the server the client already holds
    /// must be judged for writing: the transaction is on a replicated
    /// shard's primary and nothing of it has been judged a write yet. The
    /// lease judged only the statement that placed the transaction, and
    /// drivers place it with one that runs nothing (pgJDBC's batch opens
    /// with the Parse of its INSERT or BEGIN) or only reads.
    pub(super) fn judges_held_statements(&self) -> bool {
        !self.tx.wrote && self.on_replicated_primary()
    }

    /// Whether a statement run on the held server makes the transaction's
    /// commit a write its reads wait for: it may write (`writes`: not
    /// known to only read), or the client forced the primary.
    pub(super) fn held_writes(&self, writes: bool) -> bool {
        self.judges_held_statements() && (writes || self.forced_primary())
    }

    /// The session's `pgmlcat.max_lag_ms`, read again only when its
    /// parameters changed. Postgres takes any text for a parameter of
    /// ours, so the value is checked here, at the read it would route.
    fn set_bound(&mut self) -> Result<Option<Duration>> {
        let fingerprint = self.client.params.fingerprint();
        if let Some((seen, bound)) = self.fresh.set_bound {
            if seen == fingerprint {
                return Ok(bound);
            }
        }
        let bound = match self.client.params.get(MAX_LAG_PARAMETER) {
            None | Some("") => None,
            Some(v) => Some(parse_ms(v).ok_or_else(|| {
                Error::InvalidParameter(format!(
                    "invalid value for parameter \"{MAX_LAG_PARAMETER}\": \"{v}\" (a whole number of milliseconds)"
                ))
            })?),
        };
        self.fresh.set_bound = Some((fingerprint, bound));
        Ok(bound)
    }
}

/// Milliseconds as a bound.
pub fn parse_ms(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_whole_milliseconds() {
        assert_eq!(parse_ms(" 100 "), Some(Duration::from_millis(100)));
        assert_eq!(parse_ms("0"), Some(Duration::ZERO));
        assert_eq!(parse_ms("1.5"), None);
        assert_eq!(parse_ms("-1"), None);
        assert_eq!(parse_ms("soon"), None);
    }
}
