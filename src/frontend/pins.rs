//! Pinning: in transaction mode a client that makes state only its server
//! connection can hold (a session advisory lock, a temporary table, a
//! `WITH HOLD` cursor, an SQL `PREPARE`) keeps that server, as in session
//! mode, until the state is gone; then it goes back to transaction pooling.
//!
//! The statement text is read on its way (cheaply: its first word and a
//! `memchr` for `_`) to tell whether it *may* touch such state; the server
//! itself then says what the session holds, once, when the transaction
//! ends (`backend::held`). A pool with `session_state = "refuse"` refuses
//! the statements that would make such state instead.

use super::session::{Binding, Session};
use crate::backend::held::Kinds;
use crate::config::{PoolMode, SessionStateMode};
use crate::errors::Error;
use crate::net::messages::TxStatus;
use crate::stats::ClientState;

/// What a statement may do to state only one connection can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// Nothing: the common case.
    None,
    /// It may make or drop such state (DROP, CLOSE, an advisory unlock):
    /// the server is asked when the transaction ends.
    May,
    /// It makes state of these kinds (a pool that refuses pinning refuses
    /// the statement).
    Makes(Kinds),
}

/// Reads a statement text for what it may do to pinned state. No parse:
/// a false positive costs one catalog query at the transaction's end.
pub fn touch(text: &[u8]) -> Touch {
    super::notes::read(text).pins
}

/// What the first word says (`word`: it, `text`: the statement). A
/// SELECT ... INTO TEMP is not looked for here, in every SELECT's path:
/// the server's answer tells (a SELECT tag with no rows described, see
/// `ServerState::observe`), and a named statement's text is read for it
/// once, when prepared (`select_into_temp`).
pub(super) fn by_first_word(word: &[u8], text: &[u8]) -> Touch {
    let Some(first) = word.first() else {
        return Touch::None;
    };
    // One comparison per statement: the first letter picks the word.
    let is = |w: &[u8]| word.eq_ignore_ascii_case(w);
    match (first | 0x20, word.len()) {
        (b'd', 4) if is(b"drop") => Touch::May,
        (b'c', 5) if is(b"close") => Touch::May,
        (b'c', 6) if is(b"create") => {
            if makes_temp(text) {
                Touch::Makes(Kinds::TEMP_TABLE)
            } else {
                Touch::May
            }
        }
        (b'p', 7) if is(b"prepare") => Touch::Makes(Kinds::SQL_PREPARE),
        (b'd', 7) if is(b"declare") && has_word(text, b"hold") => Touch::Makes(Kinds::HOLD_CURSOR),
        (b'd', 7) if is(b"discard") => Touch::May,
        (b'd', 10) if is(b"deallocate") => Touch::May,
        _ => Touch::None,
    }
}

/// An advisory-lock function name after a `_` (`rest`: what follows it):
/// pg_advisory_lock, pg_try_advisory_lock (and _shared) make a session
/// lock; the unlocks may drop one; the _xact_ variants end with the
/// transaction and need nothing.
pub(super) fn advisory(rest: &[u8]) -> Touch {
    if !starts_with_ci(rest, b"advisory_") {
        return Touch::None;
    }
    let name = &rest[b"advisory_".len()..];
    if starts_with_ci(name, b"lock") {
        Touch::Makes(Kinds::ADVISORY_LOCK)
    } else if starts_with_ci(name, b"unlock") {
        Touch::May
    } else {
        Touch::None
    }
}

/// SELECT ... INTO TEMP t: a temporary table without CREATE (read once
/// per named statement, when prepared).
pub(super) fn select_into_temp(text: &[u8]) -> Touch {
    let word = crate::router::commands::first_word(text);
    if !word.eq_ignore_ascii_case(b"select") && !word.eq_ignore_ascii_case(b"with") {
        return Touch::None;
    }
    let into = (0..text.len()).any(|i| {
        word_at(text, i, b"into") && {
            let rest = text[i + 4..].trim_ascii_start();
            starts_with_ci(rest, b"temp") || starts_with_ci(rest, b"pg_temp")
        }
    });
    if into && makes_temp(text) {
        Touch::Makes(Kinds::TEMP_TABLE)
    } else {
        Touch::None
    }
}

/// A temporary relation that outlives the transaction: TEMP, TEMPORARY or
/// the pg_temp schema, without ON COMMIT DROP.
fn makes_temp(text: &[u8]) -> bool {
    let temp = has_word(text, b"temp")
        || has_word(text, b"temporary")
        || find_ci(text, b"pg_temp.").is_some();
    temp && find_ci(text, b"on commit drop").is_none()
}

pub(super) fn starts_with_ci(text: &[u8], prefix: &[u8]) -> bool {
    text.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

fn find_ci(text: &[u8], needle: &[u8]) -> Option<usize> {
    text.windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

/// `word` at `i`, not part of a longer identifier.
fn word_at(text: &[u8], i: usize, word: &[u8]) -> bool {
    let ident = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    starts_with_ci(&text[i..], word)
        && (i == 0 || !ident(&text[i - 1]))
        && !text.get(i + word.len()).is_some_and(ident)
}

fn has_word(text: &[u8], word: &[u8]) -> bool {
    (0..text.len()).any(|i| word_at(text, i, word))
}

impl Session {
    /// A statement on its way to the held server, in transaction mode: one
    /// that may touch pinned state has the server asked at the
    /// transaction's end.
    pub(super) fn note_pins(&mut self, touch: Touch) {
        if touch == Touch::None || self.mode != PoolMode::Transaction {
            return;
        }
        if let Some(pooled) = self.server.binding.one() {
            pooled.server.state.may_hold = true;
        }
    }

    /// Whether this is a transaction-mode pool that refuses pinned state.
    pub(super) fn refuses_state(&self) -> bool {
        self.mode == PoolMode::Transaction && self.pool.session_state == SessionStateMode::Refuse
    }

    /// On a pool with `session_state = "refuse"`, the error for a statement
    /// that would make state only one server connection can hold; checked
    /// before the statement takes a server.
    pub(super) fn pin_refusal(&self, text: &[u8]) -> Option<Error> {
        if !self.refuses_state() {
            return None;
        }
        let Touch::Makes(kinds) = touch(text) else {
            return None;
        };
        let statement = String::from_utf8_lossy(text);
        let statement = statement.trim();
        let shown: String = statement.chars().take(80).collect();
        let cut = if shown.len() < statement.len() {
            "..."
        } else {
            ""
        };
        Some(Error::Unsupported(format!(
            "\"{shown}{cut}\" makes a {kinds}, which would tie this client to one server connection; pool \"{}\" refuses that (session_state = \"refuse\"): use the transaction-level form or a session-mode pool",
            self.pool.database
        )))
    }

    /// Whether the client holds its server between transactions.
    pub(super) fn pinned(&self) -> bool {
        self.server
            .binding
            .held()
            .is_some_and(|p| p.server.state.held.any())
    }

    /// At a transaction's end: asks the server what the session holds if
    /// a statement may have changed it. True when the client keeps the
    /// server (it is pinned); SHOW CLIENTS and /metrics say why.
    pub(super) async fn stays_pinned(&mut self) -> bool {
        let Binding::One(pooled) = &mut self.server.binding else {
            return false;
        };
        let server = &mut pooled.server;
        if server.state.may_hold && server.state.status == TxStatus::Idle {
            if let Err(e) = Box::pin(server.read_held()).await {
                tracing::warn!(server = %server.addr, error = %e, "could not read what the session holds; closing it");
                server.state.broken = true;
                self.stats.info.set_pinned(Kinds::NONE);
                return false;
            }
        }
        let kinds = server.state.held.kinds();
        self.stats.info.set_pinned(kinds);
        if kinds.is_empty() {
            return false;
        }
        tracing::debug!(client = %self.client.peer, "pinned to its server: {kinds}");
        self.server.pending.clear();
        self.stats.info.set_state(ClientState::Active);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_that_make_pinned_state() {
        let makes =
            |sql: &str, k: Kinds| assert_eq!(touch(sql.as_bytes()), Touch::Makes(k), "{sql}");
        makes("SELECT pg_advisory_lock(42)", Kinds::ADVISORY_LOCK);
        makes("select PG_TRY_ADVISORY_LOCK(1, 2)", Kinds::ADVISORY_LOCK);
        makes("select pg_advisory_lock_shared(7)", Kinds::ADVISORY_LOCK);
        makes("CREATE TEMP TABLE t(x int)", Kinds::TEMP_TABLE);
        makes("create temporary table t as select 1", Kinds::TEMP_TABLE);
        makes("create table pg_temp.t(x int)", Kinds::TEMP_TABLE);

        makes(
            "declare c cursor with hold for select 1",
            Kinds::HOLD_CURSOR,
        );
        makes("PREPARE q AS SELECT 1", Kinds::SQL_PREPARE);
    }

    #[test]
    fn statements_that_may_drop_it_or_do_nothing() {
        let t = |sql: &str| touch(sql.as_bytes());
        assert_eq!(t("select pg_advisory_unlock(42)"), Touch::May);
        assert_eq!(t("SELECT pg_advisory_unlock_all()"), Touch::May);
        assert_eq!(t("drop table t"), Touch::May);
        assert_eq!(t("CLOSE c"), Touch::May);
        assert_eq!(t("create table t(x int)"), Touch::May);
        assert_eq!(t("select pg_advisory_xact_lock(1)"), Touch::None);
        assert_eq!(
            t("create temp table t(x int) on commit drop"),
            Touch::May,
            "gone with the transaction"
        );
        assert_eq!(t("declare c cursor for select 1"), Touch::None);
        assert_eq!(t("select temperature, template from t"), Touch::None);
        assert_eq!(t("select x into t from y"), Touch::None);
        assert_eq!(
            select_into_temp(b"SELECT * INTO TEMP t FROM x"),
            Touch::Makes(Kinds::TEMP_TABLE)
        );
        assert_eq!(select_into_temp(b"select x into t from y"), Touch::None);
        assert_eq!(
            t("SELECT abalance FROM pgbench_accounts WHERE aid = $1"),
            Touch::None
        );
        assert_eq!(t(""), Touch::None);
    }
}
