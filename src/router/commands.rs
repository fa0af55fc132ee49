//! pgcat's custom SQL commands, answered by the proxy and never sent to a
//! server: SET/SHOW SERVER ROLE, SET/SHOW PRIMARY READS.

use crate::errors::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleSetting {
    /// The pool's default_role, and the query parser as configured.
    Default,
    /// Route by the query parser whatever the config says.
    Auto,
    Primary,
    Replica,
    Any,
}

impl RoleSetting {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleSetting::Default => "default",
            RoleSetting::Auto => "auto",
            RoleSetting::Primary => "primary",
            RoleSetting::Replica => "replica",
            RoleSetting::Any => "any",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    SetServerRole(RoleSetting),
    ShowServerRole,
    /// None: back to the pool's primary_reads_enabled.
    SetPrimaryReads(Option<bool>),
    ShowPrimaryReads,
    /// None: ANY (routing decides).
    SetShard(Option<usize>),
    ShowShard,
    /// The key as the client wrote it (case kept: text keys).
    SetShardingKey(String),
}

/// `None` when the statement is not one of ours (the common case, decided
/// from the first word without allocating).
pub fn parse(sql: &str) -> Option<Result<Command, Error>> {
    let trimmed = sql.trim_start();
    let first = trimmed.split_whitespace().next()?;
    if !first.eq_ignore_ascii_case("set") && !first.eq_ignore_ascii_case("show") {
        return None;
    }
    let original: Vec<&str> = trimmed
        .trim_end()
        .trim_end_matches(';')
        .split_whitespace()
        .collect();
    let words: Vec<String> = original.iter().map(|w| w.to_ascii_lowercase()).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["show", "shard"] => Some(Ok(Command::ShowShard)),
        ["set", "shard", rest @ ..] => Some(value(rest).and_then(|v| match v.as_str() {
            "any" => Ok(Command::SetShard(None)),
            n => n
                .parse()
                .map(|n| Command::SetShard(Some(n)))
                .map_err(|_| Error::InvalidParameter(format!("invalid shard {n:?}: use a shard number or 'ANY'"))),
        })),
        ["set", "sharding", "key", ..] => Some(value(&original[3..]).map(Command::SetShardingKey)),
        ["show", "server", "role"] => Some(Ok(Command::ShowServerRole)),
        ["show", "primary", "reads"] => Some(Ok(Command::ShowPrimaryReads)),
        ["set", "server", "role", rest @ ..] => Some(value(rest).and_then(|v| {
            let role = match v.as_str() {
                "primary" => RoleSetting::Primary,
                "replica" => RoleSetting::Replica,
                "any" => RoleSetting::Any,
                "auto" => RoleSetting::Auto,
                "default" => RoleSetting::Default,
                other => {
                    return Err(Error::InvalidParameter(format!(
                        "invalid server role {other:?}: use 'primary', 'replica', 'any', 'auto' or 'default'"
                    )))
                }
            };
            Ok(Command::SetServerRole(role))
        })),
        ["set", "primary", "reads", rest @ ..] => Some(value(rest).and_then(|v| {
            let on = match v.as_str() {
                "on" | "true" => Some(true),
                "off" | "false" => Some(false),
                "default" => None,
                other => {
                    return Err(Error::InvalidParameter(format!(
                        "invalid primary reads setting {other:?}: use 'on', 'off' or 'default'"
                    )))
                }
            };
            Ok(Command::SetPrimaryReads(on))
        })),
        _ => None,
    }
}

/// `TO 'x'` or `= x` (the value may not contain spaces; '' is a quote).
fn value(rest: &[&str]) -> Result<String, Error> {
    match rest {
        [to, v] if to.eq_ignore_ascii_case("to") || *to == "=" => {
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(v);
            Ok(v.replace("''", "'"))
        }
        _ => Err(Error::InvalidParameter(
            "syntax: SET ... TO '<value>'".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(
            parse("SET SERVER ROLE TO 'replica';").unwrap().unwrap(),
            Command::SetServerRole(RoleSetting::Replica)
        );
        assert_eq!(
            parse("  show server role").unwrap().unwrap(),
            Command::ShowServerRole
        );
        assert_eq!(
            parse("set primary reads = off").unwrap().unwrap(),
            Command::SetPrimaryReads(Some(false))
        );
        assert_eq!(
            parse("SHOW PRIMARY READS").unwrap().unwrap(),
            Command::ShowPrimaryReads
        );
        assert!(parse("set server role to 'leader'").unwrap().is_err());
        assert_eq!(
            parse("SET SHARD TO '2'").unwrap().unwrap(),
            Command::SetShard(Some(2))
        );
        assert_eq!(
            parse("set shard to 'ANY'").unwrap().unwrap(),
            Command::SetShard(None)
        );
        assert_eq!(parse("SHOW SHARD").unwrap().unwrap(), Command::ShowShard);
        assert_eq!(
            parse("SET SHARDING KEY TO 'Customer-7'").unwrap().unwrap(),
            Command::SetShardingKey("Customer-7".into())
        );
    }

    #[test]
    fn leaves_other_sql_alone() {
        for sql in [
            "select 1",
            "set work_mem = '4MB'",
            "show timezone",
            "SET",
            "sh",
        ] {
            assert!(parse(sql).is_none(), "{sql}");
        }
    }
}
