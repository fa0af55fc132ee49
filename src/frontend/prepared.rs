//! Named prepared statements in transaction mode. A client's statement
//! names are its own; on the servers every statement lives under a name
//! derived from its text and parameter types, shared by all clients. A
//! client's next transaction may land on a server that has never seen its
//! statement: the session then sends the Parse first, unseen by the client.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::net::codec::cstr;
use crate::net::extended::parse_named;
pub use crate::net::extended::{
    bind_params, bind_parts, bind_portal, bind_statement, close_statement, describe_statement,
    first_name, rename_bind, target, BindParam, BindParts,
};

/// A statement as the servers know it.
pub struct Prepared {
    /// The server-side name, `pgmlcat_` + 32 hex digits of SHA-256.
    pub global: String,
    /// A ready-to-send Parse message under `global`.
    pub parse: Bytes,
    /// The statement's text, for routing its executions.
    pub query: String,
    /// Whether the text may change session parameters (SET, RESET,
    /// set_config): its executions are then noted (see `params`).
    /// What it may do beyond its rows (see `notes`): its executions are
    /// noted.
    pub notes: super::notes::Notes,
    /// The pool's plans epoch when the client prepared it: a server copy
    /// older than that is replaced before use (see `Pool::plans_epoch`).
    pub epoch: u64,
    /// What the client was told it returns (`net::extended::result_shape`;
    /// 0: not known yet), learnt from the copy it was prepared on.
    pub shape: std::sync::atomic::AtomicU64,
}

impl Prepared {
    pub fn shape(&self) -> u64 {
        self.shape.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Learns what the statement returns, if not known yet.
    pub fn learn_shape(&self, shape: u64) {
        let _ = self.shape.compare_exchange(
            0,
            shape,
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// The client's unnamed statement, in transaction mode: its Parse is kept
/// so that a later batch that binds or describes it on a server connection
/// that has not seen it gets it parsed there first. Between the client's
/// batches its server may serve another client, whose unnamed statement
/// replaces it (binding that one would run someone else's SQL), or the
/// next batch may run on another connection (lib/pq parses in one batch
/// and binds in the next).
struct Unnamed {
    /// The whole Parse message (its buffer reused by the next one).
    parse: Vec<u8>,
    /// Where the statement's text starts in it.
    text_at: usize,
    /// Whether the server the client holds has it.
    on_server: bool,
}

/// One client's statement names.
#[derive(Default)]
pub struct ClientStatements {
    map: HashMap<String, Arc<Prepared>>,
    unnamed: Option<Box<Unnamed>>,
}

impl ClientStatements {
    /// Records the client's Parse; returns the statement as the servers know it.
    /// `msg` is the whole Parse message, `name` its statement name.
    pub fn define(&mut self, name: &str, msg: &[u8], name_end: usize, epoch: u64) -> Arc<Prepared> {
        let rest = &msg[name_end..];
        let digest = Sha256::digest(rest);
        let mut global = String::with_capacity(40);
        global.push_str("pgmlcat_");
        for b in &digest[..16] {
            global.push_str(&format!("{b:02x}"));
        }
        let parse = parse_named(&global, rest);
        let query = cstr(rest, 0)
            .map(|(q, _)| q.to_string())
            .unwrap_or_default();
        let mut notes = super::notes::read(query.as_bytes());
        if notes.pins == super::pins::Touch::None {
            // Once per statement: what a SELECT's answer may not tell.
            notes.pins = super::pins::select_into_temp(query.as_bytes());
        }
        let prepared = Arc::new(Prepared {
            global,
            parse,
            notes,
            epoch,
            shape: Default::default(),
            query,
        });
        self.map.insert(name.to_string(), prepared.clone());
        prepared
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Prepared>> {
        self.map.get(name)
    }

    /// Keeps the Parse of an unnamed statement the held server now has
    /// (`text_at`: where its text starts).
    pub fn set_unnamed(&mut self, msg: &[u8], text_at: usize) {
        let u = self.unnamed.get_or_insert_with(|| {
            Box::new(Unnamed {
                parse: Vec::new(),
                text_at,
                on_server: true,
            })
        });
        u.parse.clear();
        u.parse.extend_from_slice(msg);
        u.text_at = text_at;
        u.on_server = true;
    }

    /// The text of the unnamed statement, if any.
    pub fn unnamed(&self) -> Option<&str> {
        let u = self.unnamed.as_ref()?;
        crate::net::codec::cstr(&u.parse, u.text_at)
            .ok()
            .map(|(text, _)| text)
    }

    /// The unnamed statement's Parse when the held server lacks it (it is
    /// then taken as sent there).
    pub fn unnamed_to_resend(&mut self) -> Option<&[u8]> {
        let u = self.unnamed.as_mut().filter(|u| !u.on_server)?;
        u.on_server = true;
        Some(&u.parse)
    }

    /// The client gave its server back: the next one does not have the
    /// unnamed statement.
    pub fn unnamed_left_server(&mut self) {
        if let Some(u) = self.unnamed.as_mut() {
            u.on_server = false;
        }
    }

    /// A simple Query ends the unnamed statement, as on Postgres.
    pub fn forget_unnamed(&mut self) {
        self.unnamed = None;
    }

    /// The client's statement kept on the servers as `global`.
    pub fn by_global(&self, global: &str) -> Option<&Arc<Prepared>> {
        self.map.values().find(|p| p.global == global)
    }

    pub fn remove(&mut self, name: &str) -> bool {
        self.map.remove(name).is_some()
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }
}

/// What an SQL `DEALLOCATE` names.
#[derive(Debug, PartialEq, Eq)]
pub enum Deallocate {
    All,
    Name(String),
}

/// `DEALLOCATE [PREPARE] { name | ALL }` with an optional `;`: what it
/// names, the name folded as Postgres folds an identifier (lower case
/// unless double-quoted). None for anything else.
pub fn deallocate(sql: &str) -> Option<Deallocate> {
    let mut rest = sql
        .trim()
        .strip_suffix(';')
        .unwrap_or(sql.trim())
        .trim_end();
    let word = |rest: &mut &str, w: &str| -> bool {
        let r = rest.trim_start();
        match r.get(..w.len()) {
            Some(p)
                if p.eq_ignore_ascii_case(w)
                    && r[w.len()..].starts_with(|c: char| c.is_whitespace() || c == '"') =>
            {
                *rest = &r[w.len()..];
                true
            }
            _ => false,
        }
    };
    if !word(&mut rest, "deallocate") {
        return None;
    }
    word(&mut rest, "prepare");
    let name = rest.trim();
    if name.eq_ignore_ascii_case("all") {
        return Some(Deallocate::All);
    }
    identifier(name).map(Deallocate::Name)
}

/// An SQL identifier as Postgres reads it: folded to lower case unless
/// double-quoted (`""` inside quotes is one `"`). None if it is not one.
pub fn identifier(name: &str) -> Option<String> {
    if let Some(quoted) = name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        if quoted.is_empty() || quoted.replace("\"\"", "").contains('"') {
            return None;
        }
        return Some(quoted.replace("\"\"", "\""));
    }
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '$');
    plain.then(|| name.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use postgres_protocol::message::frontend;

    #[test]
    fn reads_deallocate() {
        assert_eq!(
            deallocate("DEALLOCATE lrupsc_1_0"),
            Some(Deallocate::Name("lrupsc_1_0".into()))
        );
        assert_eq!(
            deallocate("deallocate prepare \"Pdo_Stmt_1\";"),
            Some(Deallocate::Name("Pdo_Stmt_1".into()))
        );
        assert_eq!(
            deallocate("DEALLOCATE Stmt1"),
            Some(Deallocate::Name("stmt1".into()))
        );
        assert_eq!(deallocate("DEALLOCATE ALL"), Some(Deallocate::All));
        assert_eq!(deallocate("DEALLOCATE PREPARE ALL;"), Some(Deallocate::All));
        assert_eq!(deallocate("DEALLOCATE"), None);
        assert_eq!(deallocate("DEALLOCATE a; select 1"), None);
        assert_eq!(deallocate("deallocatex y"), None);
    }

    #[test]
    fn same_text_same_global_name() {
        let mut a = BytesMut::new();
        frontend::parse("s1", "select $1", [23u32], &mut a).unwrap();
        let mut b = BytesMut::new();
        frontend::parse("other", "select $1", [23u32], &mut b).unwrap();
        let mut stmts = ClientStatements::default();
        let (_, end_a) = first_name(&a).unwrap();
        let (_, end_b) = first_name(&b).unwrap();
        let pa = stmts.define("s1", &a, end_a, 0);
        let pb = stmts.define("other", &b, end_b, 0);
        assert_eq!(pa.global, pb.global);
        assert!(pa.global.len() < 64);
        // The renamed Parse is a well-formed Parse under the global name.
        let (name, _) = first_name(&pa.parse).unwrap();
        assert_eq!(name, pa.global);
        let len = u32::from_be_bytes(pa.parse[1..5].try_into().unwrap()) as usize;
        assert_eq!(len + 1, pa.parse.len());
    }
}
