//! Opening a server connection: the socket (Unix or TCP), TLS when asked,
//! the startup packet and authentication (cleartext, md5, SCRAM-SHA-256),
//! up to the first ReadyForQuery. Also the one-shot cancel request.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

use crate::net::auth::scram::{KeyedClient, ScramError};

/// A SCRAM exchange with a server: with the password, or with the keys a
/// client proved it has (pass-through).
enum Sasl {
    Password(ScramSha256),
    Keys(KeyedClient),
}
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::pool::ServerTls;
use super::server::{Address, Credentials, Server};
use crate::errors::{Error, Result};
use crate::net::messages::error_fields_of;
use crate::net::stream::Stream;
use crate::net::tag;
use crate::net::tls::SslMode;

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
        match tokio::time::timeout(timeout, open(addr.clone(), creds, params, tls)).await {
            Ok(Ok(server)) => Ok(server),
            Ok(Err(Error::Io(e))) => Err(unavailable(e.to_string())),
            Ok(Err(Error::ServerLost(e))) => Err(unavailable(e)),
            // Starting up, shutting down, in recovery: the server will be
            // back, so a client may wait for it like for a refused socket.
            Ok(Err(Error::ServerRefused { fields, .. })) if fields.code == "57P03" => {
                Err(unavailable(fields.to_string()))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(unavailable(format!(
                "timed out after {} ms",
                timeout.as_millis()
            ))),
        }
    }

    async fn authenticate(&mut self, creds: &Credentials) -> Result<()> {
        let mut scram: Option<Sasl> = None;
        loop {
            let mut out = BytesMut::new();
            match self.recv_message().await? {
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword => {
                    let pw = self.need_password(creds, "cleartext")?;
                    frontend::password_message(pw.as_bytes(), &mut out)?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = match (&creds.password, &creds.md5) {
                        (Some(pw), _) => postgres_protocol::authentication::md5_hash(
                            creds.user.as_bytes(),
                            pw.as_bytes(),
                            body.salt(),
                        ),
                        (None, Some(stored)) => {
                            crate::net::auth::md5::expected_response(stored, body.salt())
                        }
                        (None, None) => return Err(self.no_password("md5")),
                    };
                    frontend::password_message(hash.as_bytes(), &mut out)?;
                }
                Message::AuthenticationSasl(body) => {
                    let offered = body
                        .mechanisms()
                        .any(|m| Ok(m == "SCRAM-SHA-256"))
                        .map_err(lost)?;
                    if !offered {
                        return Err(Error::Unsupported(format!(
                            "server {} offers no SASL mechanism pgmlcat supports",
                            self.addr
                        )));
                    }
                    let s = match (&creds.password, &creds.scram) {
                        (Some(pw), _) => {
                            let s = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
                            frontend::sasl_initial_response(
                                "SCRAM-SHA-256",
                                s.message(),
                                &mut out,
                            )?;
                            Sasl::Password(s)
                        }
                        (None, Some(keys)) => {
                            let (s, first) = KeyedClient::start(keys.clone());
                            frontend::sasl_initial_response("SCRAM-SHA-256", &first, &mut out)?;
                            Sasl::Keys(s)
                        }
                        (None, None) => return Err(self.no_password("SCRAM-SHA-256")),
                    };
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let message = match scram.as_mut() {
                        Some(Sasl::Password(s)) => {
                            s.update(body.data()).map_err(lost)?;
                            s.message().to_vec()
                        }
                        Some(Sasl::Keys(s)) => {
                            s.update(body.data()).map_err(|e| self.pass_through(e))?
                        }
                        None => return Err(Error::protocol("SASL continue before SASL start")),
                    };
                    frontend::sasl_response(&message, &mut out)?;
                }
                Message::AuthenticationSaslFinal(body) => match scram.as_mut() {
                    Some(Sasl::Password(s)) => s.finish(body.data()).map_err(lost)?,
                    Some(Sasl::Keys(s)) => {
                        s.finish(body.data()).map_err(|e| self.pass_through(e))?
                    }
                    None => return Err(Error::protocol("SASL final before SASL start")),
                },
                Message::BackendKeyData(body) => self.key = (body.process_id(), body.secret_key()),
                Message::ErrorResponse(body) => {
                    return Err(Error::ServerRefused {
                        addr: self.addr.to_string(),
                        fields: error_fields_of(&body),
                    })
                }
                Message::ReadyForQuery(_) => {
                    // The startup's ParameterStatus messages are the
                    // server's defaults, not a client's change.
                    self.state.changes = Default::default();
                    self.state.session.clear();
                    return Ok(());
                }
                Message::AuthenticationKerberosV5
                | Message::AuthenticationScmCredential
                | Message::AuthenticationGss
                | Message::AuthenticationGssContinue(_)
                | Message::AuthenticationSspi => {
                    return Err(Error::Unsupported(format!(
                        "server {} asked for an authentication method pgmlcat does not support",
                        self.addr
                    )))
                }
                _ => {} // ParameterStatus (observed), NoticeResponse
            }
            if !out.is_empty() {
                self.stream.write_all(&out).await?;
            }
        }
    }

    fn need_password<'a>(&self, creds: &'a Credentials, method: &str) -> Result<&'a str> {
        creds
            .password
            .as_deref()
            .ok_or_else(|| self.no_password(method))
    }

    /// SCRAM pass-through failed against this server.
    fn pass_through(&self, e: ScramError) -> Error {
        let why = match e {
            ScramError::Mismatch(why) | ScramError::Malformed(why) => why,
            ScramError::BadProof => "proof rejected",
        };
        Error::Config(format!(
            "server {}: SCRAM pass-through with the client's keys failed: {why} (the verifier pgmlcat checks clients with must be the server's own: copy it from pg_authid, or use auth_query)",
            self.addr
        ))
    }

    fn no_password(&self, method: &str) -> Error {
        Error::Config(format!(
            "server {} asks for {method} authentication, but no usable password is configured (set server_password or a plain password; with a SCRAM verifier, servers are logged in to once a client logged in with SCRAM)",
            self.addr
        ))
    }
}

async fn open(
    addr: Arc<Address>,
    creds: &Credentials,
    params: &[(String, String)],
    tls: Option<&ServerTls>,
) -> Result<Server> {
    let stream = match (dial(&addr).await?, tls) {
        (Stream::Plain(tcp), Some((mode, connector))) => {
            start_tls(&addr, tcp, *mode, connector).await?
        }
        // No TLS over a local socket: Postgres does not offer it there,
        // and libpq ignores sslmode for it too.
        (plain_or_unix, _) => plain_or_unix,
    };
    let mut server = Server::new(stream, addr);
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
        tag::encryption::ACCEPTED => {
            let name = crate::net::tls::server_name(&addr.host).map_err(refused)?;
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| refused(format!("TLS handshake failed (sslmode={mode:?}): {e}")))?;
            Ok(Stream::TlsClient(Box::new(tls)))
        }
        tag::encryption::REFUSED if mode == SslMode::Prefer => Ok(Stream::Plain(tcp)),
        tag::encryption::REFUSED => Err(refused(format!(
            "the server does not support TLS, but sslmode={mode:?} requires it"
        ))),
        other => Err(Error::protocol(format!(
            "unexpected answer {other:#x} to SSLRequest"
        ))),
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
    cancel_over(&mut dial(addr).await?, key).await
}

/// Writes a CancelRequest for `key` on a fresh connection to a server or
/// a pgmlcat peer, and waits (2 s at most) for it to close the connection,
/// which it does once it has read the request.
pub async fn cancel_over<S>(stream: &mut S, key: (i32, i32)) -> Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut out = BytesMut::new();
    frontend::cancel_request(key.0, key.1, &mut out);
    stream.write_all(&out).await?;
    let mut sink = [0u8; 1];
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut sink)).await;
    Ok(())
}
