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

/// One client's statement names.
#[derive(Default)]
pub struct ClientStatements {
    map: HashMap<String, Arc<Prepared>>,
    /// The text of the last unnamed statement sent to a server, on a
    /// sharded pool (its Binds may name a shard).
    unnamed: Option<String>,
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

    /// Notes the text of an unnamed statement the server now has.
    pub fn set_unnamed(&mut self, query: &str) {
        self.unnamed = Some(query.to_string());
    }

    /// The text of the unnamed statement, if noted.
    pub fn unnamed(&self) -> Option<&str> {
        self.unnamed.as_deref()
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
