//! Where a statement goes: which shard (`place`) and which role
//! (`target`), both pure functions of what the statement says
//! (`statement::Analysis`), what the client chose (`RouteState`) and the
//! pool's settings.

pub mod commands;
pub mod copy;
pub mod hash;
pub mod merge;
pub mod rw;
pub mod shard;
pub mod statement;

use crate::config::{DefaultRole, PoolConfig};
use crate::errors::Error;
use commands::RoleSetting;
use rw::Intent;
use shard::{DefaultShard, Sharding};
use statement::Analysis;

/// The kind of server a transaction needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Primary,
    Replica,
    /// Replicas, and the primary too when primary reads are on.
    Any,
}

/// The routing settings of a pool.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub default_role: DefaultRole,
    pub parser: bool,
    pub max_length: Option<usize>,
    pub primary_reads: bool,
}

impl RouteConfig {
    pub fn from_pool(p: &PoolConfig) -> RouteConfig {
        RouteConfig {
            default_role: p.default_role,
            parser: p.query_parser_enabled && p.query_parser_read_write_splitting,
            max_length: p.query_parser_max_length,
            primary_reads: p.primary_reads_enabled,
        }
    }

    /// Whether a statement's read/write intent is worth parsing for a
    /// client in this state.
    pub fn parses(&self, role: RoleSetting) -> bool {
        match role {
            RoleSetting::Auto => true,
            RoleSetting::Default => self.parser,
            _ => false,
        }
    }
}

/// A client's routing choices (its SET SERVER ROLE / SET PRIMARY READS).
#[derive(Debug, Clone, Copy)]
pub struct RouteState {
    pub role: RoleSetting,
    pub primary_reads: Option<bool>,
    /// SET SHARD / SET SHARDING KEY (None: ANY, the statement decides).
    pub shard: Option<usize>,
}

impl Default for RouteState {
    fn default() -> Self {
        RouteState {
            role: RoleSetting::Default,
            primary_reads: None,
            shard: None,
        }
    }
}

/// Decides the target for a transaction whose first statement has `intent`
/// (None when the parser is not used or there is no text to look at).
pub fn target(cfg: &RouteConfig, state: &RouteState, intent: Option<Intent>) -> Target {
    let fixed = |r: DefaultRole| match r {
        DefaultRole::Any => Target::Any,
        DefaultRole::Primary => Target::Primary,
        DefaultRole::Replica => Target::Replica,
    };
    match state.role {
        RoleSetting::Primary => return Target::Primary,
        RoleSetting::Replica => return Target::Replica,
        RoleSetting::Any => return Target::Any,
        RoleSetting::Auto | RoleSetting::Default => {}
    }
    if !cfg.parses(state.role) {
        return fixed(cfg.default_role);
    }
    let reads = |cfg: &RouteConfig| {
        if state.primary_reads.unwrap_or(cfg.primary_reads) {
            Target::Any
        } else {
            Target::Replica
        }
    };
    match intent {
        Some(Intent::Read) | Some(Intent::Begin { read_only: true }) => reads(cfg),
        Some(Intent::Write) | Some(Intent::Begin { read_only: false }) => Target::Primary,
        Some(Intent::End { .. }) | None => fixed(cfg.default_role),
    }
}

/// Where a statement goes on a sharded pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Shard(usize),
    /// A shard picked at random for a keyless read (`default_shard =
    /// "random"` / `"random_healthy"`): any other would have done, so a
    /// shard that cannot be reached is not waited for.
    Picked(usize),
    /// Nothing names a shard and `default_shard` does not place it: a read
    /// may run on every shard, a multi-row INSERT may split; anything else
    /// is refused.
    Keyless,
}

/// What can name a statement's shard besides its own text.
pub struct Hints<'a> {
    /// The client's SET SHARD / SET SHARDING KEY.
    pub client_shard: Option<usize>,
    /// The shard of Bind parameter `$n+1`, when there is a Bind.
    pub param: &'a dyn Fn(usize) -> Option<usize>,
}

/// The shard the statement or the client names, first match wins: a
/// comment, SET SHARD / SET SHARDING KEY (unless `statement_only`), the
/// automatic key (constants, or Bind parameters).
pub fn named_shard(
    analysis: Option<&Analysis>,
    hints: &Hints,
    statement_only: bool,
) -> Result<Option<usize>, Error> {
    if let Some(found) = analysis.and_then(Analysis::comment_shard) {
        return found.map(Some);
    }
    if let (Some(n), false) = (hints.client_shard, statement_only) {
        return Ok(Some(n));
    }
    Ok(analysis.and_then(|a| a.keys.resolve(hints.param)))
}

/// The shard for a transaction whose first statement is `analysis` (None:
/// no text to look at). `runs`: whether the batch executes anything (a
/// Parse/Describe-only batch works on any shard, the schemas match).
/// `healthy` says whether a shard's primary is up; `pick(n)` draws in
/// `0..n` (random in production, fixed in tests). A statement is never
/// placed by guess: only a random default places keyless reads, for
/// reference tables every shard holds alike.
pub fn place(
    sharding: &Sharding,
    analysis: Option<&Analysis>,
    hints: &Hints,
    runs: bool,
    healthy: &dyn Fn(usize) -> bool,
    pick: &mut dyn FnMut(usize) -> usize,
) -> Result<Placement, Error> {
    let shards = sharding.shards;
    if shards <= 1 {
        return Ok(Placement::Shard(0));
    }
    if let Some(named) = named_shard(analysis, hints, false)? {
        return Ok(Placement::Shard(named));
    }
    if analysis.is_some_and(|a| a.insert_split.is_some()) {
        // Rows with keys on several shards: split, whatever the default.
        return Ok(Placement::Keyless);
    }
    let read = analysis.is_some_and(|a| a.intent == Intent::Read);
    let anywhere = !runs || !analysis.is_some_and(|a| a.touches_tables);
    Ok(match sharding.default_shard {
        DefaultShard::Fixed(n) => Placement::Shard(n),
        DefaultShard::Random if read => Placement::Picked(pick(shards)),
        DefaultShard::RandomHealthy if read => {
            let up: Vec<usize> = (0..shards).filter(|&s| healthy(s)).collect();
            Placement::Picked(match up.len() {
                0 => pick(shards),
                n => up[pick(n)],
            })
        }
        _ if anywhere => Placement::Shard(0),
        _ => Placement::Keyless,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(parser: bool, primary_reads: bool) -> RouteConfig {
        RouteConfig {
            default_role: DefaultRole::Any,
            parser,
            max_length: Some(1000),
            primary_reads,
        }
    }

    /// Session settings go where writes go, as pgcat sends them, but write
    /// no data: read-your-writes does not wait for them.
    #[test]
    fn session_settings_write_no_data() {
        let one = Sharding::from_pool(&PoolConfig::default(), 1).expect("a pool");
        let analyse = |sql| statement::analyse(sql, &one, &cfg(true, false));
        for sql in [
            "SET application_name = 'PostgreSQL JDBC Driver'",
            "SET extra_float_digits = 3",
            "set local statement_timeout = 5",
            "SET TIME ZONE 'UTC'",
            "RESET ALL",
            "DISCARD ALL",
        ] {
            let a = analyse(sql);
            assert!(a.may_write() && !a.may_write_data(), "{sql}: {a:?}");
        }
        for sql in [
            "SET x.y = 1; INSERT INTO t VALUES (1)",
            "INSERT INTO t VALUES (1)",
            "SELECT set_config('a.b', '1', false)",
        ] {
            assert!(analyse(sql).may_write_data(), "{sql}");
        }
        assert!(!analyse("SELECT 1").may_write_data());
    }

    #[test]
    fn routing_table() {
        let st = RouteState::default();
        assert_eq!(
            target(&cfg(true, false), &st, Some(Intent::Read)),
            Target::Replica
        );
        assert_eq!(
            target(&cfg(true, true), &st, Some(Intent::Read)),
            Target::Any
        );
        assert_eq!(
            target(&cfg(true, false), &st, Some(Intent::Write)),
            Target::Primary
        );
        assert_eq!(
            target(&cfg(false, false), &st, Some(Intent::Write)),
            Target::Any
        );
        let forced = RouteState {
            role: RoleSetting::Primary,
            ..Default::default()
        };
        assert_eq!(
            target(&cfg(true, false), &forced, Some(Intent::Read)),
            Target::Primary
        );
        let auto = RouteState {
            role: RoleSetting::Auto,
            primary_reads: Some(false),
            ..Default::default()
        };
        assert_eq!(
            target(&cfg(false, true), &auto, Some(Intent::Read)),
            Target::Replica
        );
        assert_eq!(
            target(
                &cfg(true, false),
                &st,
                Some(Intent::Begin { read_only: true })
            ),
            Target::Replica
        );
    }

    mod placement {
        use super::super::*;
        use crate::config::PoolConfig;
        use crate::router::hash::Key;
        use crate::router::shard::KeyType;

        fn sharding(default_shard: Option<&str>) -> Sharding {
            let p = PoolConfig {
                automatic_sharding_key: Some("users.id".into()),
                sharding_key_type: KeyType::Bigint,
                shard_id_regex: Some(r"/\* shard_id: (\d+) \*/".into()),
                default_shard: default_shard.map(String::from),
                ..Default::default()
            };
            Sharding::from_pool(&p, 3).expect("a valid sharding config")
        }

        fn analysis(s: &Sharding, sql: &str) -> Analysis {
            let route = RouteConfig {
                default_role: DefaultRole::Any,
                parser: false,
                max_length: None,
                primary_reads: true,
            };
            statement::analyse(sql, s, &route)
        }

        fn place_with(
            s: &Sharding,
            sql: Option<&str>,
            client_shard: Option<usize>,
            param: &dyn Fn(usize) -> Option<usize>,
            runs: bool,
        ) -> Result<Placement, Error> {
            let a = sql.map(|q| analysis(s, q));
            let hints = Hints {
                client_shard,
                param,
            };
            place(s, a.as_ref(), &hints, runs, &|shard| shard == 2, &mut |n| {
                n - 1
            })
        }

        const NONE: &dyn Fn(usize) -> Option<usize> = &|_| None;

        #[test]
        fn precedence_comment_then_client_then_key() {
            let s = sharding(Some("all"));
            let key42 = Key::Bigint(42).shard(3);
            let sql = "select * from users where id = 42";
            assert_eq!(
                place_with(&s, Some(sql), None, NONE, true).unwrap(),
                Placement::Shard(key42)
            );
            let other = (key42 + 1) % 3;
            assert_eq!(
                place_with(&s, Some(sql), Some(other), NONE, true).unwrap(),
                Placement::Shard(other),
                "SET SHARD wins over the key"
            );
            let commented = format!("/* shard_id: {key42} */ select * from users");
            assert_eq!(
                place_with(&s, Some(&commented), Some(other), NONE, true).unwrap(),
                Placement::Shard(key42),
                "a comment wins over SET SHARD"
            );
            assert!(place_with(&s, Some("/* shard_id: 9 */ select 1"), None, NONE, true).is_err());
            let by_param = place_with(
                &s,
                Some("select * from users where id = $1"),
                None,
                &|i| (i == 0).then_some(1),
                true,
            );
            assert_eq!(by_param.unwrap(), Placement::Shard(1));
        }

        #[test]
        fn keyless_statements_by_default_shard() {
            let read = Some("select * from users");
            let write = Some("delete from users");
            // Unset: shard 0, as in pgcat.
            let unset = sharding(None);
            for sql in [read, write] {
                assert_eq!(
                    place_with(&unset, sql, None, NONE, true).unwrap(),
                    Placement::Shard(0)
                );
            }
            let s = sharding(Some("all"));
            assert_eq!(
                place_with(&s, read, None, NONE, true).unwrap(),
                Placement::Keyless
            );
            assert_eq!(
                place_with(&s, write, None, NONE, true).unwrap(),
                Placement::Keyless
            );
            // Nothing to key on: anywhere will do, so shard 0.
            assert_eq!(
                place_with(&s, Some("select now()"), None, NONE, true).unwrap(),
                Placement::Shard(0)
            );
            assert_eq!(
                place_with(&s, read, None, NONE, false).unwrap(),
                Placement::Shard(0)
            );
            assert_eq!(
                place_with(&s, None, None, NONE, true).unwrap(),
                Placement::Shard(0)
            );

            let fixed = sharding(Some("shard_1"));
            assert_eq!(
                place_with(&fixed, write, None, NONE, true).unwrap(),
                Placement::Shard(1)
            );

            let random = sharding(Some("random"));
            assert_eq!(
                place_with(&random, read, None, NONE, true).unwrap(),
                Placement::Picked(2),
                "pick(3) = 2 in this test"
            );
            assert_eq!(
                place_with(&random, write, None, NONE, true).unwrap(),
                Placement::Keyless,
                "a write is never placed at random"
            );
            let healthy = sharding(Some("random_healthy"));
            assert_eq!(
                place_with(&healthy, read, None, NONE, true).unwrap(),
                Placement::Picked(2),
                "only shard 2 is up"
            );
        }
    }
}
