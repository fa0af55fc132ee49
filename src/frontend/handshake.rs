//! From a client's first byte until it is logged in: TLS (or its refusal),
//! cancel requests, protocol version, pool lookup and authentication.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::app::App;
use crate::backend::Pool;
use crate::config::AuthType;
use crate::errors::{Error, Result};
use crate::net::auth::scram::{ClientKeys, Exchange, ScramError};
use crate::net::auth::{md5, Secret};
use crate::net::codec::{self, cstr, read_i32};
use crate::net::messages;
use crate::net::startup::{self, Startup, StartupPacket};
use crate::net::stream::Stream;
use crate::net::tag;

/// What a finished handshake hands on. `greeting` holds AuthenticationOk
/// and the ParameterStatus messages, not yet sent: the caller adds
/// BackendKeyData and ReadyForQuery and writes them all at once (one
/// wakeup of the client, as Postgres does).
pub enum LoggedIn {
    Pool {
        pool: Arc<Pool>,
        startup: Startup,
        greeting: BytesMut,
    },
    /// The admin console.
    Admin {
        greeting: BytesMut,
        database: String,
        user: String,
        application_name: String,
    },
}

/// Outcome of reading the opening packets.
pub enum Opening {
    Startup(Startup),
    /// A cancel request was handled; close the connection.
    Cancelled,
}

/// The largest auth message (password/SASL) we accept from a client.
const MAX_AUTH_MESSAGE: usize = 8 * 1024;

/// Reads packets until a StartupMessage, switching to TLS when the client
/// asks and a certificate is configured. GSS encryption is always refused.
pub async fn read_opening(app: &App, stream: &mut Stream, buf: &mut BytesMut) -> Result<Opening> {
    loop {
        let packet = read_startup_packet(stream, buf).await?;
        match startup::parse(&packet)? {
            StartupPacket::SslRequest if !stream.is_tls() => {
                let Some(acceptor) = app.tls.load_full() else {
                    stream.write_all(&[tag::encryption::REFUSED]).await?;
                    continue;
                };
                if !buf.is_empty() {
                    // Bytes sent before the handshake would be trusted as if
                    // they came over TLS (CVE-2021-23214): refuse.
                    return Err(Error::protocol(
                        "data received after SSLRequest before the TLS handshake",
                    ));
                }
                stream.write_all(&[tag::encryption::ACCEPTED]).await?;
                let Stream::Plain(tcp) = std::mem::replace(stream, Stream::Closed) else {
                    return Err(Error::protocol("TLS requested twice"));
                };
                let tls = acceptor.accept(tcp).await?;
                *stream = Stream::TlsServer(Box::new(tls));
            }
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                stream.write_all(&[tag::encryption::REFUSED]).await?;
            }
            StartupPacket::Cancel { pid, secret } => {
                let config = app.config();
                match app
                    .cancels
                    .peer_for(pid, config.general.peer_id, &config.peers)
                {
                    Some(peer) => super::cancel::forward(peer, pid, secret).await,
                    None => app.cancels.cancel(pid, secret).await,
                }
                return Ok(Opening::Cancelled);
            }
            StartupPacket::Startup(s) => {
                if !stream.is_tls() && app.config().general.tls_required {
                    return Err(Error::TlsRequired);
                }
                return Ok(Opening::Startup(s));
            }
        }
    }
}

async fn read_startup_packet(stream: &mut Stream, buf: &mut BytesMut) -> Result<BytesMut> {
    loop {
        if let Some(len) = codec::startup_len(buf)? {
            if buf.len() >= len {
                return Ok(buf.split_to(len));
            }
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(Error::ClientGone);
        }
    }
}

/// Finds the pool and authenticates the client. On error the caller sends it as FATAL.
pub async fn login(
    app: &App,
    stream: &mut Stream,
    buf: &mut BytesMut,
    startup: Startup,
) -> Result<LoggedIn> {
    if startup.major != 3 {
        return Err(Error::Unsupported(format!(
            "unsupported frontend protocol {}.{}: pgmlcat speaks 3.0",
            startup.major, startup.minor
        )));
    }
    let mut out = BytesMut::new();
    let unknown_opts = startup.protocol_options();
    if startup.minor > 0 || !unknown_opts.is_empty() {
        messages::negotiate_protocol_version(&mut out, 0, &unknown_opts);
    }
    let user = startup
        .param("user")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| Error::protocol("no PostgreSQL user name specified in startup packet"))?
        .to_string();
    let database = startup.param("database").unwrap_or(&user).to_string();
    if startup
        .param("replication")
        .is_some_and(|r| r != "false" && r != "0")
    {
        return Err(Error::Unsupported(
            "replication connections are not supported through pgmlcat".into(),
        ));
    }
    let registry = app.registry.load();
    if crate::admin::is_admin_database(&database) && !registry.has_database(&database) {
        let g = &registry.config.general;
        // The console wants a password unless admin_auth_type says trust
        // (pgcat's key): the general auth_type's trust does not open it.
        let g_trust = g.admin_auth_type == Some(AuthType::Trust);
        let auth_type = g.admin_auth_type.unwrap_or(match g.auth_type {
            AuthType::Trust => AuthType::Md5,
            other => other,
        });
        let is_admin = user == g.admin_username;
        drop(registry);
        let secret = crate::admin::admin_secret(app, &user);
        let ok = match auth_type {
            AuthType::Scram => scram_exchange(stream, buf, &mut out, secret.as_ref())
                .await?
                .is_some(),
            // Only admin_auth_type says trust here (the general one's
            // trust became md5 above).
            AuthType::Trust => true,
            _ => md5_exchange(stream, buf, &mut out)
                .await?
                .matches(&user, secret.as_ref()),
        };
        if !ok || !(secret.is_some() || (g_trust && is_admin)) {
            return Err(Error::AuthFailed(user));
        }
        messages::auth_ok(&mut out);
        for (name, value) in [
            ("server_version", "15.0 (pgmlcat admin)"),
            ("client_encoding", "UTF8"),
            ("server_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
        ] {
            messages::parameter_status(&mut out, name, value);
        }
        return Ok(LoggedIn::Admin {
            greeting: out,
            application_name: startup.param("application_name").unwrap_or("").to_string(),
            database,
            user,
        });
    }
    if app.shutdown_state() != crate::app::Shutdown::Running {
        return Err(Error::Shutdown);
    }
    if !registry.has_database(&database) {
        return Err(Error::UnknownDatabase(database));
    }
    let pool = registry.get(&database, &user).cloned();
    let auth_type = pool
        .as_ref()
        .map_or(registry.config.general.auth_type, |p| p.auth_type);
    drop(registry);
    // An unknown user still goes through a challenge, so its answer looks
    // like a wrong password's.
    let secret = match &pool {
        Some(p) => p.client_secret(false).await.unwrap_or_else(|why| {
            tracing::warn!(user = %user, pool = %p.database, "{why}");
            None
        }),
        None => None,
    };
    let authenticated = match auth_type {
        AuthType::Trust => pool.is_some(),
        AuthType::Md5 => {
            let answer = md5_exchange(stream, buf, &mut out).await?;
            answer.matches(&user, secret.as_ref())
                || match pool.as_ref().filter(|p| p.auth_query.is_some()) {
                    // The password may have changed in the database: read
                    // the hash again and check the same answer with it.
                    Some(p) => match p.client_secret(true).await {
                        Ok(fresh) => answer.matches(&user, fresh.as_ref()),
                        Err(why) => {
                            tracing::warn!(user = %user, pool = %p.database, "{why}");
                            false
                        }
                    },
                    None => false,
                }
        }
        AuthType::Scram => {
            let keys = scram_exchange(stream, buf, &mut out, secret.as_ref()).await?;
            if let (Some(keys), Some(p)) = (&keys, &pool) {
                // SCRAM pass-through: servers with no password of ours
                // are logged in to with the keys the client proved.
                p.log_in_servers_with_keys(&user, keys);
            }
            let ok = keys.is_some();
            if !ok {
                // A stale verifier cannot be checked again in this
                // exchange; the client's next try meets the fresh one.
                if let Some(p) = pool.as_ref().filter(|p| p.auth_query.is_some()) {
                    if let Err(why) = p.client_secret(true).await {
                        tracing::warn!(user = %user, pool = %p.database, "{why}");
                    }
                }
            }
            ok
        }
    };
    let pool = match pool {
        Some(p) if authenticated => p,
        _ => return Err(Error::AuthFailed(user)),
    };
    // Learn what the server reports before saying AuthenticationOk, so an
    // unreachable server fails the login instead of the first query.
    let server_params = pool.server_params().await?;
    messages::auth_ok(&mut out);
    let client = crate::frontend::params::ClientParams::from_startup(&startup.params);
    for (name, value) in server_params.iter() {
        let value = client.get(name).unwrap_or(value);
        messages::parameter_status(&mut out, name, value);
    }
    Ok(LoggedIn::Pool {
        pool,
        startup,
        greeting: out,
    })
}

/// A client's answer to an md5 challenge.
struct Md5Answer {
    salt: [u8; 4],
    response: BytesMut,
}

impl Md5Answer {
    fn matches(&self, user: &str, secret: Option<&Secret>) -> bool {
        let response = self.response.strip_suffix(&[0]).unwrap_or(&self.response);
        match secret.and_then(|s| s.md5_for(user)) {
            Some(stored) => md5::verify(&stored, self.salt, response),
            None => false,
        }
    }
}

async fn md5_exchange(
    stream: &mut Stream,
    buf: &mut BytesMut,
    out: &mut BytesMut,
) -> Result<Md5Answer> {
    let mut salt = [0u8; 4];
    rand::thread_rng().fill_bytes(&mut salt);
    messages::auth_md5(out, salt);
    stream.write_all(out).await?;
    out.clear();
    let response = read_auth_message(stream, buf).await?;
    Ok(Md5Answer { salt, response })
}

async fn scram_exchange(
    stream: &mut Stream,
    buf: &mut BytesMut,
    out: &mut BytesMut,
    secret: Option<&Secret>,
) -> Result<Option<ClientKeys>> {
    // An unknown user gets a made-up verifier so the exchange looks the same.
    let fallback;
    let verifier = match secret.and_then(Secret::scram_verifier) {
        Some(v) => v,
        None => {
            fallback = crate::net::auth::scram::Verifier::derive("");
            &fallback
        }
    };
    messages::auth_sasl(out);
    stream.write_all(out).await?;
    out.clear();
    let initial = read_auth_message(stream, buf).await?;
    let (mechanism, pos) = cstr(&initial, 0)?;
    if mechanism != "SCRAM-SHA-256" {
        return Err(Error::protocol(format!(
            "unsupported SASL mechanism {mechanism:?}"
        )));
    }
    let len = read_i32(&initial, pos)?;
    let data = initial
        .get(pos + 4..)
        .filter(|d| len >= 0 && d.len() == len as usize)
        .ok_or_else(|| Error::protocol("malformed SASLInitialResponse"))?;
    let (exchange, server_first) = Exchange::start(data, verifier).map_err(scram_error)?;
    messages::auth_sasl_continue(out, server_first.as_bytes());
    stream.write_all(out).await?;
    out.clear();
    let final_msg = read_auth_message(stream, buf).await?;
    match exchange.finish(&final_msg, verifier) {
        Ok((server_final, keys)) if secret.is_some() => {
            messages::auth_sasl_final(out, server_final.as_bytes());
            Ok(Some(keys))
        }
        Ok(_) | Err(ScramError::BadProof) => Ok(None),
        Err(e) => Err(scram_error(e)),
    }
}

fn scram_error(e: ScramError) -> Error {
    match e {
        ScramError::Malformed(why) => Error::protocol(format!("malformed SCRAM message: {why}")),
        ScramError::BadProof => Error::protocol("SCRAM proof rejected"),
        ScramError::Mismatch(why) => Error::protocol(why),
    }
}

/// Reads one 'p' message body (password, SASL initial or SASL response).
async fn read_auth_message(stream: &mut Stream, buf: &mut BytesMut) -> Result<BytesMut> {
    loop {
        if let Some(h) = codec::header(buf, MAX_AUTH_MESSAGE)? {
            if h.tag != tag::client::PASSWORD {
                return Err(Error::protocol(format!(
                    "expected password response, got message type '{}'",
                    codec::printable(h.tag)
                )));
            }
            if buf.len() >= h.total {
                let mut msg = buf.split_to(h.total);
                msg.advance(codec::HEADER_LEN);
                return Ok(msg);
            }
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(Error::protocol(
                "client closed the connection during authentication",
            ));
        }
    }
}
