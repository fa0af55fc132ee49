//! Where a statement goes: which role (and, later, which shard).

pub mod commands;
pub mod copy;
pub mod hash;
pub mod merge;
pub mod rw;
pub mod shard;

use crate::config::{DefaultRole, PoolConfig};
use commands::RoleSetting;
use rw::Intent;

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

    /// Whether `classify` is worth calling for a client in this state.
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

/// Classifies `sql` unless it is longer than the parser may look at.
pub fn intent(cfg: &RouteConfig, sql: &str) -> Intent {
    match cfg.max_length {
        Some(max) if sql.len() > max => Intent::Write,
        _ => rw::classify(sql),
    }
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

    #[test]
    fn long_queries_go_to_the_primary() {
        let long = format!("select {}", "1+".repeat(600) + "1");
        assert_eq!(intent(&cfg(true, false), &long), Intent::Write);
    }
}
