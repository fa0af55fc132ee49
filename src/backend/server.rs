//! One connection to a Postgres server: connecting, authenticating, and the
//! small internal queries the pooler runs itself (reset, sync, rollback).
//! Client traffic does not go through methods here: the session reads and
//! writes `stream` directly so the hot path stays a plain byte pump.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::pool::ServerTls;
use crate::config::Role;
use crate::errors::{Error, ErrorFields, Result};
use crate::net::codec::{self, cstr, read_i32};
use crate::net::messages::{
    parse_backend_key, parse_error_fields, parse_parameter_status, TxStatus,
};
use crate::net::stream::Stream;
use crate::net::tls::SslMode;

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
}

/// Session-scoped state the server reported or we know it holds.
pub struct Server {
    pub stream: Stream,
    /// Bytes read from the server that the session has not handled yet.
    pub buf: BytesMut,
    pub addr: Arc<Address>,
    /// BackendKeyData, for cancel requests.
    pub key: (i32, i32),
    /// Current values of the parameters the server reports (GUC_REPORT).
    pub params: HashMap<String, String>,
    /// Names of the protocol-level prepared statements this connection holds.
    pub prepared: HashSet<String>,
    pub status: TxStatus,
    /// A client changed session state (SET, PREPARE, LISTEN, temp tables...):
    /// reset before anyone else uses this connection.
    pub dirty: bool,
    /// The connection cannot be reused (I/O error, protocol confusion, FATAL).
    pub broken: bool,
    pub created: Instant,
    pub last_used: Instant,
    /// Its entry in SHOW SERVERS (pool connections only, not the monitor's).
    pub stats: Option<crate::stats::ServerHandle>,
}

/// Largest message we accept from a server when reading it whole.
const MAX_SERVER_MESSAGE: usize = 1 << 30;

fn lost(e: impl std::fmt::Display) -> Error {
    Error::ServerLost(e.to_string())
}

impl Server {
    /// Opens, authenticates and waits for ReadyForQuery, all within `timeout`.
    pub async fn connect(
        addr: Arc<Address>,
        creds: &Credentials,
        params: &[(String, String)],
        tls: Option<&ServerTls>,
        timeout: Duration,
    ) -> Result<Server> {
        let unavailable = |reason: String| Error::ServerUnavailable {
            addr: addr.to_string(),
            reason,
        };
        match tokio::time::timeout(
            timeout,
            Self::connect_inner(addr.clone(), creds, params, tls),
        )
        .await
        {
            Ok(Ok(server)) => Ok(server),
            Ok(Err(Error::Io(e))) => Err(unavailable(e.to_string())),
            Ok(Err(Error::ServerLost(e))) => Err(unavailable(e)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(unavailable(format!(
                "timed out after {} ms",
                timeout.as_millis()
            ))),
        }
    }

    async fn connect_inner(
        addr: Arc<Address>,
        creds: &Credentials,
        params: &[(String, String)],
        tls: Option<&ServerTls>,
    ) -> Result<Server> {
        let stream = match (dial(&addr).await?, tls) {
            (Stream::Plain(tcp), Some((mode, connector))) => {
                Self::start_tls(&addr, tcp, *mode, connector).await?
            }
            // No TLS over a local socket: Postgres does not offer it there,
            // and libpq ignores sslmode for it too.
            (plain_or_unix, _) => plain_or_unix,
        };
        let mut server = Server {
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            addr,
            key: (0, 0),
            params: HashMap::new(),
            prepared: HashSet::new(),
            status: TxStatus::Idle,
            dirty: false,
            broken: false,
            created: Instant::now(),
            last_used: Instant::now(),
            stats: None,
        };
        let mut startup: Vec<(&str, &str)> = vec![
            ("user", creds.user.as_str()),
            ("database", server.addr.database.as_str()),
        ];
        startup.extend(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut out = BytesMut::new();
        frontend::startup_message(startup, &mut out)?;
        server.stream.write_all(&out).await?;
        server.authenticate(creds).await?;
        Ok(server)
    }

    /// SSLRequest, then the TLS handshake if the server agrees. With
    /// sslmode=prefer a server without TLS is used in plain text.
    async fn start_tls(
        addr: &Address,
        mut tcp: TcpStream,
        mode: SslMode,
        connector: &tokio_rustls::TlsConnector,
    ) -> Result<Stream> {
        let mut out = BytesMut::new();
        frontend::ssl_request(&mut out);
        tcp.write_all(&out).await?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await?;
        let refused = |reason: String| Error::ServerUnavailable {
            addr: addr.to_string(),
            reason,
        };
        match answer[0] {
            b'S' => {
                let name = crate::net::tls::server_name(&addr.host).map_err(refused)?;
                let tls = connector.connect(name, tcp).await.map_err(|e| {
                    refused(format!("TLS handshake failed (sslmode={mode:?}): {e}"))
                })?;
                Ok(Stream::TlsClient(Box::new(tls)))
            }
            b'N' if mode == SslMode::Prefer => Ok(Stream::Plain(tcp)),
            b'N' => Err(refused(format!(
                "the server does not support TLS, but sslmode={mode:?} requires it"
            ))),
            other => Err(Error::protocol(format!(
                "unexpected answer {other:#x} to SSLRequest"
            ))),
        }
    }

    async fn authenticate(&mut self, creds: &Credentials) -> Result<()> {
        let mut scram: Option<ScramSha256> = None;
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                b'R' => {
                    let kind = read_i32(&body, 0)?;
                    let mut out = BytesMut::new();
                    match kind {
                        0 => {}
                        3 => {
                            let pw = self.need_password(creds, "cleartext")?;
                            frontend::password_message(pw.as_bytes(), &mut out)?;
                        }
                        5 => {
                            let salt: [u8; 4] = body
                                .get(4..8)
                                .and_then(|s| s.try_into().ok())
                                .ok_or_else(|| Error::protocol("short md5 salt"))?;
                            let hash = match (&creds.password, &creds.md5) {
                                (Some(pw), _) => postgres_protocol::authentication::md5_hash(
                                    creds.user.as_bytes(),
                                    pw.as_bytes(),
                                    salt,
                                ),
                                (None, Some(stored)) => {
                                    crate::net::auth::md5::expected_response(stored, salt)
                                }
                                (None, None) => return Err(self.no_password("md5")),
                            };
                            frontend::password_message(hash.as_bytes(), &mut out)?;
                        }
                        10 => {
                            let mechanisms = &body[4..];
                            if !mechanisms
                                .split(|&b| b == 0)
                                .any(|m| m == b"SCRAM-SHA-256")
                            {
                                return Err(Error::Unsupported(format!(
                                    "server {} offers no SASL mechanism pgmlcat supports",
                                    self.addr
                                )));
                            }
                            let pw = self.need_password(creds, "SCRAM-SHA-256")?;
                            let s = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
                            frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut out)?;
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram
                                .as_mut()
                                .ok_or_else(|| Error::protocol("SASL continue before SASL start"))?;
                            s.update(&body[4..]).map_err(lost)?;
                            frontend::sasl_response(s.message(), &mut out)?;
                        }
                        12 => {
                            let s = scram
                                .as_mut()
                                .ok_or_else(|| Error::protocol("SASL final before SASL start"))?;
                            s.finish(&body[4..]).map_err(lost)?;
                        }
                        other => {
                            return Err(Error::Unsupported(format!(
                                "server {} asked for authentication method {other}, which pgmlcat does not support",
                                self.addr
                            )))
                        }
                    }
                    if !out.is_empty() {
                        self.stream.write_all(&out).await?;
                    }
                }
                b'S' => self.note_parameter(&body),
                b'K' => {
                    self.key = parse_backend_key(&body)
                        .ok_or_else(|| Error::protocol("short BackendKeyData"))?
                }
                b'E' => {
                    return Err(Error::ServerRefused {
                        addr: self.addr.to_string(),
                        fields: parse_error_fields(&body),
                    })
                }
                b'Z' => return Ok(()),
                _ => {} // NoticeResponse and friends
            }
        }
    }

    fn need_password<'a>(&self, creds: &'a Credentials, method: &str) -> Result<&'a str> {
        creds
            .password
            .as_deref()
            .ok_or_else(|| self.no_password(method))
    }

    fn no_password(&self, method: &str) -> Error {
        Error::Config(format!(
            "server {} asks for {method} authentication, but no usable password is configured (set server_password or a plain password)",
            self.addr
        ))
    }

    /// Records a ParameterStatus body.
    pub fn note_parameter(&mut self, body: &[u8]) {
        if let Some((name, value)) = parse_parameter_status(body) {
            self.params.insert(name.to_string(), value.to_string());
        }
    }

    /// Reads one whole message (for internal use, not the client hot path).
    pub async fn read_message(&mut self) -> Result<(u8, Bytes)> {
        loop {
            if let Some(h) = codec::header(&self.buf, MAX_SERVER_MESSAGE)? {
                if self.buf.len() >= h.total {
                    let mut msg = self.buf.split_to(h.total);
                    msg.advance(codec::HEADER_LEN);
                    return Ok((h.tag, msg.freeze()));
                }
                self.buf.reserve(h.total - self.buf.len());
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                self.broken = true;
                return Err(Error::ServerLost(format!(
                    "server {} closed the connection",
                    self.addr
                )));
            }
        }
    }

    /// Runs SQL the pooler needs for itself; discards results, keeps reported
    /// parameters. Returns the first error the server sent, if any.
    pub async fn run_internal(&mut self, sql: &str) -> Result<Option<ErrorFields>> {
        Ok(self.exchange(sql).await?.1)
    }

    /// Runs a query for the pooler and returns its first row as text.
    pub async fn query_row(&mut self, sql: &str) -> Result<Option<Vec<Option<String>>>> {
        match self.exchange(sql).await? {
            (_, Some(fields)) => Err(Error::ServerRefused {
                addr: self.addr.to_string(),
                fields,
            }),
            (row, None) => Ok(row),
        }
    }

    /// Text values converted by Postgres to the binary form of `type_name`
    /// (a name as `format_type` prints it), in order; for merging results
    /// of several shards into a client's binary format.
    pub async fn binary_values(
        &mut self,
        type_name: &str,
        values: &[Option<&str>],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        // The values travel as one text[] parameter, in its text form.
        let mut array = String::from("{");
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                array.push(',');
            }
            match v {
                None => array.push_str("NULL"),
                Some(v) => {
                    array.push('"');
                    for c in v.chars() {
                        if c == '"' || c == '\\' {
                            array.push('\\');
                        }
                        array.push(c);
                    }
                    array.push('"');
                }
            }
        }
        array.push('}');
        let sql = format!(
            "SELECT v::{type_name} FROM unnest($1::text[]) WITH ORDINALITY AS u(v, n) ORDER BY n"
        );
        let mut out = BytesMut::new();
        let encode = |_| Error::protocol("could not encode a conversion query");
        frontend::parse("", &sql, std::iter::empty(), &mut out).map_err(encode)?;
        frontend::bind(
            "",
            "",
            std::iter::empty::<i16>(),
            std::iter::once(array.as_str()),
            |v, buf| {
                buf.extend_from_slice(v.as_bytes());
                Ok(postgres_protocol::IsNull::No)
            },
            std::iter::once(1i16),
            &mut out,
        )
        .map_err(|_| Error::protocol("could not encode a conversion query"))?;
        frontend::execute("", 0, &mut out).map_err(encode)?;
        frontend::sync(&mut out);
        if let Err(e) = self.stream.write_all(&out).await {
            self.broken = true;
            return Err(e.into());
        }
        let mut converted = Vec::with_capacity(values.len());
        let mut error = None;
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                b'D' => {
                    let len = body
                        .get(2..6)
                        .map_or(-1, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                    converted.push((len >= 0).then(|| body[6..].to_vec()));
                }
                b'E' => {
                    error.get_or_insert(parse_error_fields(&body));
                }
                b'Z' => {
                    self.status = body
                        .first()
                        .and_then(|&b| TxStatus::from_byte(b))
                        .ok_or_else(|| Error::protocol("bad ReadyForQuery"))?;
                    break;
                }
                _ => {}
            }
        }
        match error {
            Some(fields) => Err(Error::ServerRefused {
                addr: self.addr.to_string(),
                fields,
            }),
            None => Ok(converted),
        }
    }

    /// One simple-protocol round trip: the first row and the first error.
    /// Any I/O failure marks the connection broken.
    async fn exchange(
        &mut self,
        sql: &str,
    ) -> Result<(Option<Vec<Option<String>>>, Option<ErrorFields>)> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out)?;
        if let Err(e) = self.stream.write_all(&out).await {
            self.broken = true;
            return Err(e.into());
        }
        let (mut row, mut error) = (None, None);
        loop {
            let (tag, body) = match self.read_message().await {
                Ok(m) => m,
                Err(e) => {
                    self.broken = true;
                    return Err(e);
                }
            };
            match tag {
                b'S' => self.note_parameter(&body),
                b'D' if row.is_none() => row = Some(parse_data_row(&body)?),
                b'E' => {
                    let fields = parse_error_fields(&body);
                    if fields.severity == "FATAL" || fields.severity == "PANIC" {
                        self.broken = true;
                    }
                    error.get_or_insert(fields);
                }
                b'Z' => {
                    self.status = body
                        .first()
                        .and_then(|&b| TxStatus::from_byte(b))
                        .ok_or_else(|| Error::protocol("bad ReadyForQuery"))?;
                    return Ok((row, error));
                }
                _ => {}
            }
        }
    }

    /// Brings a connection back to a clean session: DISCARD ALL (which also
    /// drops every prepared statement it held).
    pub async fn reset(&mut self) -> Result<()> {
        if self.status != TxStatus::Idle {
            self.run_internal("ROLLBACK").await?;
        }
        if let Some(err) = self.run_internal("DISCARD ALL").await? {
            self.broken = true;
            return Err(Error::ServerRefused {
                addr: self.addr.to_string(),
                fields: err,
            });
        }
        self.prepared.clear();
        // Values we SET ourselves are back at their defaults; forget them all
        // and let the next sync set what the next client wants.
        self.params.clear();
        self.dirty = false;
        Ok(())
    }

    /// Makes the server's reported parameters match `wanted`, in one round trip.
    pub async fn sync_parameters(&mut self, wanted: &[(String, String)]) -> Result<()> {
        let mut sql = String::new();
        for (name, value) in wanted {
            if self.params.get(name).map(String::as_str) != Some(value.as_str()) {
                sql.push_str(&format!(
                    "SET {} = {};",
                    quote_ident(name),
                    quote_literal(value)
                ));
            }
        }
        if sql.is_empty() {
            return Ok(());
        }
        match self.run_internal(&sql).await? {
            // The statements ran as one implicit transaction: all or nothing.
            Some(err) => {
                tracing::warn!(server = %self.addr, error = %err, "could not apply client parameters");
            }
            None => {
                // Parameters the server does not report are remembered here.
                for (name, value) in wanted {
                    self.params.insert(name.clone(), value.clone());
                }
            }
        }
        Ok(())
    }

    /// Applies what a CommandComplete told us about session state.
    #[inline]
    pub fn note_command(&mut self, effect: CommandEffect) {
        match effect {
            CommandEffect::None => {}
            CommandEffect::SessionState => self.dirty = true,
            CommandEffect::StatementsGone => {
                self.prepared.clear();
                self.dirty = true;
            }
        }
    }

    pub fn idle_for(&self) -> Duration {
        self.last_used.elapsed()
    }
}

/// Text values of a DataRow body.
pub(crate) fn parse_data_row(body: &[u8]) -> Result<Vec<Option<String>>> {
    let n = crate::net::codec::read_i16(body, 0)?;
    let mut pos = 2;
    let mut values = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        let len = read_i32(body, pos)?;
        pos += 4;
        if len < 0 {
            values.push(None);
            continue;
        }
        let end = pos + len as usize;
        let bytes = body
            .get(pos..end)
            .ok_or_else(|| Error::protocol("DataRow truncated"))?;
        values.push(Some(String::from_utf8_lossy(bytes).into_owned()));
        pos = end;
    }
    Ok(values)
}

/// What a completed command did to the server's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandEffect {
    None,
    /// SET, PREPARE, LISTEN, cursors, temp tables...: reset before reuse.
    SessionState,
    /// DISCARD / DEALLOCATE: our prepared statements may be gone too.
    StatementsGone,
}

/// Reads a CommandComplete body (the tag, NUL-terminated).
#[inline]
pub fn command_effect(body: &[u8]) -> CommandEffect {
    let tag = body.strip_suffix(&[0]).unwrap_or(body);
    if tag.starts_with(b"DISCARD") || tag.starts_with(b"DEALLOCATE") {
        CommandEffect::StatementsGone
    } else if tag == b"SET"
        || tag.starts_with(b"PREPARE")
        || tag.starts_with(b"LISTEN")
        || tag.starts_with(b"DECLARE CURSOR")
        || tag.starts_with(b"CREATE TABLE")
        || tag.starts_with(b"LOAD")
    {
        CommandEffect::SessionState
    } else {
        CommandEffect::None
    }
}

/// A new connection to the server at `addr`: its Unix socket when `host`
/// is a directory, else TCP (no delay, keepalives on).
async fn dial(addr: &Address) -> Result<Stream> {
    if let Some(path) = addr.unix_socket() {
        return Ok(Stream::Unix(UnixStream::connect(path).await?));
    }
    let tcp = TcpStream::connect((addr.host.as_str(), addr.port)).await?;
    tcp.set_nodelay(true)?;
    crate::net::socket::keepalive(&tcp);
    Ok(Stream::Plain(tcp))
}

/// Sends a CancelRequest for `key` to the server at `addr` (fire and forget).
pub async fn send_cancel(addr: &Address, key: (i32, i32)) -> Result<()> {
    let mut stream = dial(addr).await?;
    let mut out = BytesMut::new();
    frontend::cancel_request(key.0, key.1, &mut out);
    stream.write_all(&out).await?;
    // The server closes the connection once it has read the request.
    let mut sink = [0u8; 1];
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut sink)).await;
    Ok(())
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
}
