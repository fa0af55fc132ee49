//! One connection to a Postgres server and what it holds: its transaction
//! status, reported parameters, prepared statements, whether a client left
//! session state on it. Every server message, whoever reads it, goes
//! through [`ServerState::observe`], so that bookkeeping lives in one place:
//! the relay calls it on the bytes it forwards (no copy), every other
//! reader gets messages from [`Server::recv`], which calls it too.
//! Connecting is in `connect.rs`, the proxy's own queries in `query.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use postgres_protocol::message::backend::Message;
use tokio::io::AsyncReadExt;

use super::held::Held;
use crate::config::Role;
use crate::errors::{Error, Result};
use crate::net::codec::{self, cstr};
use crate::net::messages::{parse_error_fields, parse_parameter_status, TxStatus};
use crate::net::stream::Stream;
use crate::net::tag::server as tag;

pub use super::connect::{cancel_over, send_cancel};

/// Where a server is and what it is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub role: Role,
    pub shard: usize,
}

impl Address {
    /// The socket file when `host` is a directory (starts with `/`), read as
    /// libpq and PgBouncer read it: `<host>/.s.PGSQL.<port>`.
    pub fn unix_socket(&self) -> Option<String> {
        self.host
            .starts_with('/')
            .then(|| format!("{}/.s.PGSQL.{}", self.host.trim_end_matches('/'), self.port))
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}/{}", self.host, self.port, self.database)
    }
}

/// How pgmlcat logs in to a server.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    /// Plain password (needed for SCRAM and cleartext).
    pub password: Option<String>,
    /// md5 hash of password+user, enough for md5 auth.
    pub md5: Option<String>,
    /// SCRAM keys a client proved it has (SCRAM pass-through), enough for
    /// SCRAM auth against a server holding the same verifier.
    pub scram: Option<crate::net::auth::scram::ClientKeys>,
}

pub struct Server {
    pub stream: Stream,
    /// Bytes read from the server that nobody has handled yet.
    pub buf: BytesMut,
    pub addr: Arc<Address>,
    /// BackendKeyData, for cancel requests.
    pub key: (i32, i32),
    pub state: ServerState,
    pub created: Instant,
    /// When it was opened and last given back, in `pool::millis`.
    pub created_ms: u64,
    pub used_ms: u64,
    /// Its entry in SHOW SERVERS (pool connections only, not the monitor's).
    pub stats: Option<crate::stats::ServerHandle>,
    /// The first batch a client sent since it took this connection from
    /// the pool between transactions, kept until the server answers it.
    pub resend: Resend,
}

/// A server's copy of a shared statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementCopy {
    /// The pool's plans epoch it was parsed in.
    pub epoch: u64,
    /// What it returns (`net::extended::result_shape`; 0: not known).
    pub shape: u64,
}

impl StatementCopy {
    pub fn new(epoch: u64) -> StatementCopy {
        StatementCopy { epoch, shape: 0 }
    }
}

/// What the session keeps of the first batch on a connection fresh from
/// the pool. A server that ends the connection before answering it (a
/// restart's FATAL, sent while the connection sat idle, unread) has run
/// nothing of it, so the batch can go to another connection unseen by the
/// client: a restart is then invisible between transactions.
#[derive(Debug, Default)]
pub enum Resend {
    /// Not kept (the client was in a transaction, or the server answered).
    #[default]
    Off,
    /// Keep what the client sends first.
    Armed,
    /// Sent, not answered yet.
    Kept(BytesMut),
}

/// What the server's session holds, as learnt from its messages.
#[derive(Debug)]
pub struct ServerState {
    pub status: TxStatus,
    /// Current values of the parameters the server reports (GUC_REPORT),
    /// and of those pgmlcat SET itself.
    pub params: HashMap<String, String>,
    /// The protocol-level prepared statements this connection holds.
    pub prepared: HashMap<String, StatementCopy>,
    /// A client changed session state that a reset clears and nobody
    /// needs kept (LOAD, LISTEN in session mode, DISCARD): reset before
    /// anyone else uses this connection.
    pub dirty: bool,
    /// A statement that may have made or dropped state only this
    /// connection can hold went by: the server is asked (`read_held`)
    /// before the connection goes back to the pool.
    pub may_hold: bool,
    /// What the server last said the session holds that cannot move (see
    /// `held`): while any, the client keeps the connection.
    pub held: Held,
    /// What the statement being answered said of its result so far.
    pub described: Described,
    /// The batch being answered came as a simple Query (set by the session).
    pub simple: bool,
    /// How the last transaction ended, by its tag: COMMIT (true), ROLLBACK
    /// or an error (false; a COMMIT of a failed transaction says ROLLBACK).
    /// Taken when the server is idle again; none said means the implicit
    /// transaction of a batch committed.
    pub ended: Option<bool>,
    /// What the client's statements of this transaction did to session
    /// parameters, read back before the connection goes to the pool.
    pub changes: ParamChanges,
    /// Parameters whose value here was set for a session (by a client or by
    /// pgmlcat on its behalf), not the server's default: what the next
    /// client must have reset unless it wants the same.
    pub session: Vec<String>,
    /// The connection cannot be reused (I/O error, protocol confusion, FATAL).
    pub broken: bool,
    /// The server ended the session with a FATAL (or PANIC) error, which
    /// the client was sent as the server's last word.
    pub fatal: bool,
    /// DDL ran here, or the server refused a statement whose cached plan
    /// went stale ("cached plan must not change result type", after DDL
    /// elsewhere): the pool's plans epoch moves on (see `Pool::plans_epoch`).
    pub plans_stale: bool,
    /// The fingerprint of the client parameters last brought in line here
    /// (0: none); any reported change forgets it.
    pub synced: u64,
}

/// What a client's statements did to session parameters in one
/// transaction: what the session saw of them on their way (see
/// `frontend::params::named_parameters`) and what the server completed.
/// With every SET/RESET the server completed read on its way, only the
/// parameters named need reading back.
#[derive(Debug, Default, Clone)]
pub struct ParamChanges {
    /// Parameters the statements were read to name.
    pub named: Vec<String>,
    /// SET/RESET commands read on their way.
    pub read: u32,
    /// SET/RESET commands the server completed.
    pub completed: u32,
    /// A set_config call went by (it completes as a SELECT, not a SET).
    pub calls: bool,
    /// A statement the reader could not follow.
    pub unknown: bool,
}

impl ParamChanges {
    /// Whether anything may have changed.
    pub fn any(&self) -> bool {
        self.completed > 0 || self.calls || self.unknown
    }

    fn named_suffice(&self) -> bool {
        !self.unknown && self.completed <= self.read
    }
}

/// A session's parameters as read back from its server.
pub enum ParamsRead {
    /// The parameters the statements named, with their values now.
    Named(Vec<(String, String)>),
    /// Every parameter set for the session (the reader could not follow).
    Whole(Vec<(String, String)>),
}

/// What the statement being answered said of its result: a SELECT tag
/// with no rows described put its rows in a table (SELECT ... INTO, CREATE
/// TABLE ... AS), perhaps a temporary one, which may pin the client. In a
/// simple Query every SELECT describes its rows; through the extended
/// protocol only a Describe that answered NoData tells (an Execute needs no
/// Describe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Described {
    Nothing,
    Rows,
    NoData,
}

/// What a server message changed, for the reader that passes it on.
#[derive(Debug, PartialEq, Eq)]
pub enum Observed<'a> {
    Nothing,
    /// ReadyForQuery, with the server's transaction status.
    Ready(TxStatus),
    /// ParameterStatus: a reported parameter took this value.
    Parameter(&'a str, &'a str),
}

impl ServerState {
    fn new() -> ServerState {
        ServerState {
            status: TxStatus::Idle,
            params: HashMap::new(),
            prepared: HashMap::new(),
            dirty: false,
            may_hold: false,
            held: Held::default(),
            described: Described::Nothing,
            simple: false,
            ended: None,
            changes: ParamChanges::default(),
            session: Vec::new(),
            broken: false,
            fatal: false,
            plans_stale: false,
            synced: 0,
        }
    }

    /// Applies one server message (its tag and body) to the bookkeeping.
    /// DataRow and CopyData, the bulk of any traffic, change nothing: the
    /// relay does not even call this for them.
    #[inline]
    pub fn observe<'a>(&mut self, tag: u8, body: &'a [u8]) -> Observed<'a> {
        match tag {
            tag::READY_FOR_QUERY => {
                // A status byte we cannot read is treated as a failed
                // transaction: the connection is then never reused clean.
                self.status = body
                    .first()
                    .and_then(|&b| TxStatus::from_byte(b))
                    .unwrap_or(TxStatus::Failed);
                Observed::Ready(self.status)
            }
            tag::PARAMETER_STATUS => match parse_parameter_status(body) {
                Some((name, value)) => {
                    if self.params.get(name).map(String::as_str) != Some(value) {
                        self.params.insert(name.to_string(), value.to_string());
                        self.synced = 0;
                        // No longer the server's default: whoever gets this
                        // connection next has it brought in line.
                        if !self.session.iter().any(|n| n == name) {
                            self.session.push(name.to_string());
                        }
                    }
                    Observed::Parameter(name, value)
                }
                None => Observed::Nothing,
            },
            tag::ROW_DESCRIPTION => {
                self.described = Described::Rows;
                Observed::Nothing
            }
            tag::NO_DATA => {
                self.described = Described::NoData;
                Observed::Nothing
            }
            tag::COMMAND_COMPLETE => {
                let described = std::mem::replace(&mut self.described, Described::Nothing);
                let into_table = match described {
                    Described::Rows => false,
                    Described::NoData => true,
                    Described::Nothing => self.simple,
                };
                if into_table && body.starts_with(b"SELECT ") {
                    self.may_hold = true;
                }
                match body {
                    b"COMMIT\0" => self.ended = Some(true),
                    b"ROLLBACK\0" => self.ended = Some(false),
                    _ => {}
                }
                match command_effect(body) {
                    CommandEffect::None => {}
                    CommandEffect::Parameters => self.changes.completed += 1,
                    CommandEffect::Schema => {
                        self.plans_stale = true;
                        // A DROP of a temporary table the client held.
                        self.may_hold |= self.held.any();
                    }
                    CommandEffect::SessionState => self.dirty = true,
                    CommandEffect::MayHold => self.may_hold = true,
                    CommandEffect::StatementsGone => {
                        self.prepared.clear();
                        self.dirty = true;
                        self.may_hold |= self.held.any();
                    }
                }
                Observed::Nothing
            }
            tag::ERROR_RESPONSE => {
                self.ended = Some(false);
                let fields = parse_error_fields(body);
                if fields.severity == "FATAL" || fields.severity == "PANIC" {
                    self.broken = true;
                    self.fatal = true;
                } else if fields.code == "0A000"
                    && fields.message == "cached plan must not change result type"
                {
                    self.plans_stale = true;
                }
                Observed::Nothing
            }
            _ => Observed::Nothing,
        }
    }
}

/// Largest message the proxy accepts from a server when reading it whole.
const MAX_SERVER_MESSAGE: usize = 1 << 30;

impl Server {
    pub(super) fn new(stream: Stream, addr: Arc<Address>) -> Server {
        Server {
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            addr,
            key: (0, 0),
            state: ServerState::new(),
            created: Instant::now(),
            created_ms: super::pool::millis(Instant::now()),
            used_ms: super::pool::millis(Instant::now()),
            stats: None,
            resend: Resend::Off,
        }
    }

    /// The one reader of whole server messages (everything but the relay's
    /// pass-through): reads the next message and observes it. An I/O
    /// failure or a malformed header marks the connection broken.
    pub async fn recv(&mut self) -> Result<Frame> {
        loop {
            if let Some(h) = codec::header(&self.buf, MAX_SERVER_MESSAGE).inspect_err(|_| {
                self.state.broken = true;
            })? {
                if self.buf.len() >= h.total {
                    self.state
                        .observe(h.tag, &self.buf[codec::HEADER_LEN..h.total]);
                    return Ok(Frame(self.buf.split_to(h.total)));
                }
                self.buf.reserve(h.total - self.buf.len());
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(n) if n > 0 => {}
                Ok(_) => {
                    self.state.broken = true;
                    return Err(Error::ServerLost(format!(
                        "server {} closed the connection",
                        self.addr
                    )));
                }
                Err(e) => {
                    self.state.broken = true;
                    return Err(Error::ServerLost(format!("server {}: {e}", self.addr)));
                }
            }
        }
    }

    /// The next message, typed (postgres-protocol's reading of it).
    pub async fn recv_message(&mut self) -> Result<Message> {
        let frame = self.recv().await?;
        frame
            .into_message()
            .inspect_err(|_| self.state.broken = true)
    }

    /// Brings a connection back to a clean session: DISCARD ALL (which also
    /// drops every prepared statement it held).
    pub async fn reset(&mut self) -> Result<()> {
        if self.state.status != TxStatus::Idle {
            self.execute("ROLLBACK").await?;
        }
        // DISCARD ALL clears everything; when the client's statements set
        // parameters here (not pgmlcat's own sync of its startup values),
        // RESET ROLE and RESET ALL go first, so what pgcat sends (and its
        // users count in pg_stat_statements) is sent exactly when pgcat
        // would send it. (DISCARD ALL refuses to share a query string.)
        if self.state.changes.any() {
            if let Err(e) = self.execute("RESET ROLE; RESET ALL").await {
                self.state.broken = true;
                return Err(e);
            }
        }
        if let Err(e) = self.execute("DISCARD ALL").await {
            self.state.broken = true;
            return Err(e);
        }
        self.state.prepared.clear();
        // Values we SET ourselves are back at their defaults; forget them all
        // and let the next sync set what the next client wants.
        self.state.params.clear();
        self.state.session.clear();
        self.state.synced = 0;
        self.state.dirty = false;
        self.state.may_hold = false;
        self.state.held = Held::default();
        self.state.changes = ParamChanges::default();
        Ok(())
    }

    /// Whether the server's parameters already match `wanted`: the same
    /// fingerprint was synced and nothing changed since, or every value is
    /// already the one wanted and nothing else was set for a session.
    pub fn in_line_with(&self, wanted: &[(String, String)], fingerprint: u64) -> bool {
        (fingerprint != 0 && self.state.synced == fingerprint)
            || (wanted
                .iter()
                .all(|(name, value)| self.state.params.get(name) == Some(value))
                && self
                    .state
                    .session
                    .iter()
                    .all(|name| wanted.iter().any(|(n, _)| n == name)))
    }

    /// Brings the session's parameters in line with a client's: SETs what
    /// differs, RESETs what an earlier client set and this one does not
    /// want, all in one round trip.
    pub async fn sync_parameters(
        &mut self,
        wanted: &[(String, String)],
        fingerprint: u64,
    ) -> Result<()> {
        if fingerprint != 0 && self.state.synced == fingerprint {
            return Ok(());
        }
        // set_config takes a value as the server prints it (a list such as
        // a search_path included), where SET would read a quoted list as
        // one element.
        let mut sql = String::new();
        for (name, value) in wanted {
            if self.state.params.get(name).map(String::as_str) != Some(value.as_str()) {
                sql.push_str(if sql.is_empty() { "SELECT " } else { ", " });
                sql.push_str(&format!(
                    "pg_catalog.set_config({}, {}, false)",
                    quote_literal(name),
                    quote_literal(value)
                ));
            }
        }
        if !sql.is_empty() {
            sql.push(';');
        }
        let unwanted: Vec<String> = self
            .state
            .session
            .iter()
            .filter(|name| !wanted.iter().any(|(n, _)| n == *name))
            .cloned()
            .collect();
        for name in &unwanted {
            sql.push_str(&format!("RESET {};", quote_ident(name)));
        }
        if !sql.is_empty() {
            match self.execute(&sql).await {
                // The statements ran as one implicit transaction: all or nothing.
                Err(Error::ServerRefused { fields, .. }) => {
                    tracing::warn!(server = %self.addr, error = %fields, "could not apply client parameters");
                    return Ok(());
                }
                Err(e) => return Err(e),
                Ok(()) => {}
            }
            // Parameters the server does not report are remembered here;
            // one that was reset has a value we no longer know.
            for name in &unwanted {
                self.state.params.remove(name);
            }
            for (name, value) in wanted {
                self.state.params.insert(name.clone(), value.clone());
            }
            self.state.session = wanted.iter().map(|(n, _)| n.clone()).collect();
        }
        self.state.synced = fingerprint;
        Ok(())
    }

    /// Reads back what a client's transaction did to the session's
    /// parameters (`state.changes` says what may have): the parameters its
    /// statements named, with `current_setting` (one short query; none for
    /// SET LOCAL alone), or, when a statement could not be followed, every
    /// parameter set for the session from `pg_settings`. The server's answer
    /// covers a rolled-back SET, SET LOCAL and savepoints exactly as
    /// Postgres applied them.
    pub async fn read_back_parameters(&mut self) -> Result<ParamsRead> {
        let changes = std::mem::take(&mut self.state.changes);
        let read = if changes.named_suffice() {
            let mut names = changes.named;
            names.sort();
            names.dedup();
            ParamsRead::Named(self.current_settings(&names).await?)
        } else {
            ParamsRead::Whole(self.session_parameters().await?)
        };
        Ok(read)
    }

    async fn current_settings(&mut self, names: &[String]) -> Result<Vec<(String, String)>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let calls: Vec<String> = names
            .iter()
            .map(|n| format!("pg_catalog.current_setting({}, true)", quote_literal(n)))
            .collect();
        let row = self
            .query_row(&format!("SELECT {}", calls.join(", ")))
            .await?
            .unwrap_or_default();
        let values: Vec<(String, String)> = names
            .iter()
            .zip(row)
            .filter_map(|(name, value)| Some((name.clone(), value?)))
            .collect();
        self.remember(&values);
        Ok(values)
    }

    async fn session_parameters(&mut self) -> Result<Vec<(String, String)>> {
        // current_setting, not `setting`: the spelling the named read gives
        // (`1h`, not `3600000`), or the two reads would disagree and every
        // checkout would set the value again.
        let rows = self
            .simple_query("SELECT name, pg_catalog.current_setting(name) FROM pg_catalog.pg_settings WHERE source = 'session' ORDER BY name")
            .await?;
        let values: Vec<(String, String)> = rows
            .into_iter()
            .filter_map(|row| match row.as_slice() {
                [Some(name), Some(value)] => Some((name.clone(), value.clone())),
                _ => None,
            })
            .collect();
        self.state.session.clear();
        self.remember(&values);
        Ok(values)
    }

    /// Values set for this session, as the server gave them.
    fn remember(&mut self, values: &[(String, String)]) {
        for (name, value) in values {
            self.state.params.insert(name.clone(), value.clone());
            if !self.state.session.contains(name) {
                self.state.session.push(name.clone());
            }
        }
    }

    pub fn idle_for(&self) -> Duration {
        let idle = super::pool::millis(Instant::now()).saturating_sub(self.used_ms);
        Duration::from_millis(idle)
    }
}

/// One whole server message as it came: tag, length and body, ready to be
/// passed on unchanged or read typed.
pub struct Frame(BytesMut);

impl Frame {
    pub fn tag(&self) -> u8 {
        self.0[0]
    }

    /// The message without its tag and length.
    pub fn body(&self) -> &[u8] {
        &self.0[codec::HEADER_LEN..]
    }

    /// The whole message, to pass on.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// postgres-protocol's typed reading of the message (no copy).
    pub fn into_message(mut self) -> Result<Message> {
        match Message::parse(&mut self.0) {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(Error::protocol("a server message cut short")),
            Err(e) => Err(Error::protocol(format!("unreadable server message: {e}"))),
        }
    }
}

/// What a completed command did to the server's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandEffect {
    None,
    /// SET or RESET: the session's parameters, which follow the client.
    Parameters,
    /// LISTEN, LOAD: reset before reuse.
    SessionState,
    /// PREPARE, DECLARE CURSOR, CREATE TABLE, CLOSE: what the session
    /// holds that cannot move may have changed (see `held`).
    MayHold,
    /// ALTER, DROP, CREATE VIEW: what a prepared statement returns may
    /// have changed, on every connection.
    Schema,
    /// DISCARD / DEALLOCATE: our prepared statements may be gone too.
    StatementsGone,
}

/// Reads a CommandComplete body (the tag, NUL-terminated).
#[inline]
pub fn command_effect(body: &[u8]) -> CommandEffect {
    let tag = body.strip_suffix(&[0]).unwrap_or(body);
    if tag.starts_with(b"DISCARD") || tag.starts_with(b"DEALLOCATE") {
        CommandEffect::StatementsGone
    } else if tag == b"SET" || tag == b"RESET" {
        CommandEffect::Parameters
    } else if tag.starts_with(b"ALTER ") || tag.starts_with(b"DROP ") || tag == b"CREATE VIEW" {
        CommandEffect::Schema
    } else if tag.starts_with(b"PREPARE")
        || tag.starts_with(b"DECLARE CURSOR")
        || tag.starts_with(b"CREATE TABLE")
        || tag.starts_with(b"CLOSE CURSOR")
    {
        CommandEffect::MayHold
    } else if tag.starts_with(b"LISTEN") || tag.starts_with(b"LOAD") {
        CommandEffect::SessionState
    } else {
        CommandEffect::None
    }
}

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The error text in an ErrorResponse, for logs.
pub fn error_text(body: &[u8]) -> String {
    let fields = parse_error_fields(body);
    if fields.message.is_empty() {
        cstr(body, 0)
            .map(|(s, _)| s.to_string())
            .unwrap_or_default()
    } else {
        fields.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::messages;

    #[test]
    fn a_directory_host_is_a_unix_socket() {
        let at = |host: &str| Address {
            host: host.into(),
            port: 5433,
            database: "app".into(),
            role: Role::Primary,
            shard: 0,
        };
        assert_eq!(
            at("/var/run/postgresql/").unix_socket().as_deref(),
            Some("/var/run/postgresql/.s.PGSQL.5433")
        );
        assert_eq!(
            at("/tmp").unix_socket().as_deref(),
            Some("/tmp/.s.PGSQL.5433")
        );
        assert_eq!(at("db.internal").unix_socket(), None);
        assert_eq!(at("127.0.0.1").unix_socket(), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    /// Every message kind that matters to the pool is observed the same way
    /// whoever reads it.
    #[test]
    fn observe_keeps_the_books() {
        let mut s = ServerState::new();
        let body = |f: &dyn Fn(&mut BytesMut)| {
            let mut b = BytesMut::new();
            f(&mut b);
            b.split_off(5)
        };
        let rfq = body(&|b| messages::ready_for_query(b, TxStatus::InTransaction));
        assert_eq!(
            s.observe(tag::READY_FOR_QUERY, &rfq),
            Observed::Ready(TxStatus::InTransaction)
        );
        assert_eq!(s.status, TxStatus::InTransaction);
        assert_eq!(
            s.observe(tag::READY_FOR_QUERY, b"?"),
            Observed::Ready(TxStatus::Failed)
        );

        s.synced = 7;
        let ps = body(&|b| messages::parameter_status(b, "TimeZone", "UTC"));
        assert_eq!(
            s.observe(tag::PARAMETER_STATUS, &ps),
            Observed::Parameter("TimeZone", "UTC")
        );
        assert_eq!(s.params.get("TimeZone").map(String::as_str), Some("UTC"));
        assert_eq!(s.synced, 0, "a reported change forgets the last sync");
        assert!(
            s.session.contains(&"TimeZone".to_string()),
            "a reported change is the session's now"
        );

        s.prepared.insert("pgmlcat_x".into(), StatementCopy::new(0));
        s.observe(tag::COMMAND_COMPLETE, b"SELECT 1\0");
        assert!(!s.dirty && !s.changes.any());
        s.observe(tag::COMMAND_COMPLETE, b"SET\0");
        assert!(s.changes.any() && !s.dirty, "a SET follows the client");
        assert_eq!(s.changes.completed, 1);
        s.observe(tag::COMMAND_COMPLETE, b"PREPARE\0");
        assert!(s.may_hold && !s.dirty, "a PREPARE may pin the client");
        s.may_hold = false;
        s.observe(tag::COMMAND_COMPLETE, b"DROP TABLE\0");
        assert!(!s.may_hold, "a DROP matters only while something is held");
        s.held.temp_relations = 1;
        s.observe(tag::COMMAND_COMPLETE, b"DROP TABLE\0");
        assert!(s.may_hold, "a DROP of the temporary table may unpin");
        s.observe(tag::COMMAND_COMPLETE, b"LISTEN\0");
        assert!(s.dirty, "LISTEN (session mode) is reset before reuse");
        s.observe(tag::COMMAND_COMPLETE, b"ALTER TABLE\0");
        assert!(s.plans_stale, "DDL may change what statements return");
        s.plans_stale = false;
        let stale = body(&|b| {
            let m = "cached plan must not change result type";
            messages::error_fields(b, tag::ERROR_RESPONSE, "ERROR", "0A000", m)
        });
        s.observe(tag::ERROR_RESPONSE, &stale);
        assert!(s.plans_stale && !s.broken);
        s.observe(tag::COMMAND_COMPLETE, b"DEALLOCATE ALL\0");
        assert!(s.prepared.is_empty());

        let err =
            body(&|b| messages::error_fields(b, tag::ERROR_RESPONSE, "ERROR", "42601", "syntax"));
        s.observe(tag::ERROR_RESPONSE, &err);
        assert!(!s.broken);
        let fatal = body(&|b| {
            messages::error_fields(b, tag::ERROR_RESPONSE, "FATAL", "57P01", "terminating")
        });
        s.observe(tag::ERROR_RESPONSE, &fatal);
        assert!(s.broken);
    }
}
