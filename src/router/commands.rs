//! pgcat's custom SQL commands, answered by the proxy and never sent to a
//! server: SET/SHOW SERVER ROLE, SET/SHOW PRIMARY READS, SET/SHOW SHARD,
//! SET SHARDING KEY.

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

/// The first word of a statement's text: the letters after leading
/// whitespace (at most 11: the longest word anyone looks for).
#[inline]
pub fn first_word(sql: &[u8]) -> &[u8] {
    let start = sql
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(sql.len());
    let rest = &sql[start..];
    let end = rest
        .iter()
        .take(11)
        .position(|b| !b.is_ascii_alphabetic())
        .unwrap_or(rest.len().min(11));
    &rest[..end]
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
        ["set", "sharding", "key", ..] => Some(literal_after_to(trimmed).map(Command::SetShardingKey)),
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

/// The value of `SET SHARDING KEY TO <literal>`: a quoted SQL string (spaces
/// and '' allowed) or a bare word.
fn literal_after_to(statement: &str) -> Result<String, Error> {
    let bad = || Error::InvalidParameter("syntax: SET SHARDING KEY TO '<value>'".into());
    let text = statement.trim().trim_end_matches(';').trim_end();
    let lower = text.to_ascii_lowercase();
    let after_key = lower.find("key").ok_or_else(bad)? + 3;
    let rest = text[after_key..].trim_start();
    let rest = if rest.len() >= 2 && rest[..2].eq_ignore_ascii_case("to") {
        &rest[2..]
    } else {
        rest.strip_prefix('=').ok_or_else(bad)?
    };
    let rest = rest.trim();
    let Some(body) = rest.strip_prefix('\'') else {
        return match rest.split_whitespace().count() {
            1 => Ok(rest.to_string()),
            _ => Err(bad()),
        };
    };
    let mut out = String::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            if chars.peek() == Some(&'\'') {
                out.push('\'');
                chars.next();
            } else {
                return if chars.all(char::is_whitespace) {
                    Ok(out)
                } else {
                    Err(bad())
                };
            }
        } else {
            out.push(c);
        }
    }
    Err(bad())
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
    fn the_first_word_is_a_cheap_first_look() {
        assert_eq!(first_word(b"  SET SHARD TO '1'"), b"SET");
        assert_eq!(first_word(b"show server role"), b"show");
        assert_eq!(first_word(b"deallocate_x"), b"deallocate");
        assert_eq!(first_word(b""), b"");
        // Every statement parse() answers starts with SET or SHOW.
        for sql in [
            "SET SERVER ROLE TO 'any'",
            "SHOW SHARD",
            "set sharding key to '7'",
        ] {
            let word = first_word(sql.as_bytes());
            let ours = word.eq_ignore_ascii_case(b"set") || word.eq_ignore_ascii_case(b"show");
            assert!(parse(sql).is_some() && ours, "{sql}");
        }
    }

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
        assert_eq!(
            parse("set sharding key = 'New York; it''s'")
                .unwrap()
                .unwrap(),
            Command::SetShardingKey("New York; it's".into())
        );
        assert_eq!(
            parse("SET SHARDING KEY TO 42").unwrap().unwrap(),
            Command::SetShardingKey("42".into())
        );
        assert!(parse("SET SHARDING KEY TO 'open").unwrap().is_err());
        assert!(parse("SET SHARDING KEY TO 'a' b").unwrap().is_err());
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
