//! Session state a client made that lives on one server connection and
//! cannot move to another: session advisory locks, temporary relations,
//! `WITH HOLD` cursors, SQL `PREPARE`d statements. In transaction mode a
//! client holding any of it keeps its server (it is *pinned*) until the
//! state is gone. The server says what it holds: one catalog query, asked
//! only after a transaction whose statements may have made or dropped such
//! state.

use std::fmt;

use super::server::Server;
use crate::errors::{Error, Result};

/// Kinds of state only one connection can hold, as a small set.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Kinds(u8);

impl Kinds {
    pub const NONE: Kinds = Kinds(0);
    pub const ADVISORY_LOCK: Kinds = Kinds(1);
    pub const TEMP_TABLE: Kinds = Kinds(2);
    pub const HOLD_CURSOR: Kinds = Kinds(4);
    pub const SQL_PREPARE: Kinds = Kinds(8);

    /// Each kind alone.
    pub const ALL: [Kinds; 4] = [
        Kinds::ADVISORY_LOCK,
        Kinds::TEMP_TABLE,
        Kinds::HOLD_CURSOR,
        Kinds::SQL_PREPARE,
    ];

    const NAMES: [(Kinds, &'static str); 4] = [
        (Kinds::ADVISORY_LOCK, "advisory lock"),
        (Kinds::TEMP_TABLE, "temporary table"),
        (Kinds::HOLD_CURSOR, "WITH HOLD cursor"),
        (Kinds::SQL_PREPARE, "PREPARE"),
    ];

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn bits(self) -> u8 {
        self.0
    }

    pub fn from_bits(bits: u8) -> Kinds {
        Kinds(bits & 15)
    }

    pub fn with(self, other: Kinds) -> Kinds {
        Kinds(self.0 | other.0)
    }

    pub fn contains(self, other: Kinds) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    /// Each kind in the set, by name.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Kinds::NAMES
            .into_iter()
            .filter(move |(k, _)| self.contains(*k))
            .map(|(_, n)| n)
    }
}

impl fmt::Display for Kinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.names().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

/// What a connection holds, counted by the server.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Session-level advisory locks (transaction-level ones end with it).
    pub advisory_locks: u32,
    /// Relations in the session's temporary schema (tables, their indexes
    /// and sequences, temporary views).
    pub temp_relations: u32,
    /// Cursors that outlive their transaction.
    pub hold_cursors: u32,
    /// Statements prepared with SQL PREPARE (the protocol-level ones are
    /// pgmlcat's own and move freely).
    pub sql_prepared: u32,
}

impl Held {
    pub fn any(&self) -> bool {
        !self.kinds().is_empty()
    }

    pub fn kinds(&self) -> Kinds {
        let mut k = Kinds::NONE;
        for (n, kind) in [
            (self.advisory_locks, Kinds::ADVISORY_LOCK),
            (self.temp_relations, Kinds::TEMP_TABLE),
            (self.hold_cursors, Kinds::HOLD_CURSOR),
            (self.sql_prepared, Kinds::SQL_PREPARE),
        ] {
            if n > 0 {
                k = k.with(kind);
            }
        }
        k
    }
}

/// Counts what the session holds; asked between transactions, when
/// transaction-level locks and cursors are already gone.
const HELD_QUERY: &str = "SELECT \
    (SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()), \
    (SELECT count(*) FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema()), \
    (SELECT count(*) FROM pg_catalog.pg_cursors WHERE is_holdable), \
    (SELECT count(*) FROM pg_catalog.pg_prepared_statements WHERE from_sql)";

impl Server {
    /// Asks the server what the session holds that cannot move, and keeps
    /// the answer in its state.
    pub async fn read_held(&mut self) -> Result<Held> {
        let row = self.query_row(HELD_QUERY).await?.unwrap_or_default();
        let count = |i: usize| -> Result<u32> {
            row.get(i)
                .and_then(|v| v.as_deref())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| Error::protocol("unreadable answer about session state"))
        };
        let held = Held {
            advisory_locks: count(0)?,
            temp_relations: count(1)?,
            hold_cursors: count(2)?,
            sql_prepared: count(3)?,
        };
        self.state.held = held;
        self.state.may_hold = false;
        Ok(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_name_what_is_held() {
        let held = Held {
            advisory_locks: 2,
            sql_prepared: 1,
            ..Held::default()
        };
        assert!(held.any());
        assert_eq!(held.kinds().to_string(), "advisory lock, PREPARE");
        assert!(!Held::default().any());
        assert_eq!(Kinds::from_bits(held.kinds().bits()), held.kinds());
    }
}
