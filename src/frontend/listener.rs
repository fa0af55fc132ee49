//! Accepting clients and running each one as its own task.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::handshake::{self, Opening};
use super::session::Session;
use crate::app::{App, Shutdown};
use crate::errors::{Error, Severity};
use crate::net::messages::{self, TxStatus};
use crate::net::stream::Stream;

/// How long a client may take from connect to logged in (Postgres: authentication_timeout).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a listener handing over keeps accepting: what was already in
/// its queue, or half-way through a handshake, when new connections began
/// to go to the next process.
const HANDOFF_WINDOW: Duration = Duration::from_millis(500);

/// Accepts until the process stops. During a graceful shutdown new
/// connections are still accepted, so the admin console stays reachable
/// and pool clients hear why they are refused (57P01) at once; with
/// `so_reuseport` the listener hands over and closes first instead.
pub async fn serve(app: Arc<App>, listener: TcpListener) {
    let mut shutdown = app.shutdown.subscribe();
    // Set once handing over: when the listener closes.
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        let close_at = closing.unwrap_or_else(tokio::time::Instant::now);
        tokio::select! {
            _ = app.handoff.notified(), if closing.is_none() => {
                match crate::net::socket::hand_over(&listener) {
                    Ok(()) => tracing::info!("handing new connections to the next process on this port"),
                    Err(e) => tracing::warn!(error = %e, "could not steer new connections away; closing the listener anyway"),
                }
                closing = Some(tokio::time::Instant::now() + HANDOFF_WINDOW);
            }
            _ = tokio::time::sleep_until(close_at), if closing.is_some() => {
                tracing::info!("listener closed: new connections go to the next process");
                drop(listener);
                app.shutdown.send_replace(Shutdown::Graceful);
                return;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(client_task(app.clone(), stream, peer));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => {
                if *shutdown.borrow() == Shutdown::Fast {
                    tracing::info!("no longer accepting connections");
                    return;
                }
            }
        }
    }
}

/// Counts a client for max_client_conn and SHOW commands while it lives.
struct ClientSlot(Arc<App>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn client_task(app: Arc<App>, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    crate::net::socket::keepalive(&tcp);
    let mut stream = Stream::Plain(tcp);
    let count = app.clients.fetch_add(1, Ordering::Relaxed) + 1;
    let slot = ClientSlot(app.clone());
    let config = app.config();
    // Lent by the thread's pool and given back when the client goes idle:
    // a fresh 8 KiB per client would stay resident after it was freed.
    let mut buf = crate::net::bufpool::take();
    // The login and the session are boxed, each when its turn comes, so the
    // task spawned per connection stays small: tokio moves a task's future
    // several times while spawning it.
    let login = Box::pin(async {
        let startup = match handshake::read_opening(&app, &mut stream, &mut buf).await? {
            Opening::Cancelled => return Ok(None),
            Opening::Startup(s) => s,
        };
        if count > config.general.max_client_conn {
            return Err(Error::TooManyClients(config.general.max_client_conn));
        }
        handshake::login(&app, &mut stream, &mut buf, startup)
            .await
            .map(Some)
    });
    let opened = tokio::time::timeout(HANDSHAKE_TIMEOUT, login)
        .await
        .unwrap_or_else(|_| {
            Err(Error::protocol(
                "timed out waiting for the client to log in",
            ))
        });
    let logged_in = match opened {
        Ok(Some(super::handshake::LoggedIn::Admin {
            greeting,
            database,
            user,
            application_name,
        })) => {
            let mut out = greeting;
            messages::backend_key_data(&mut out, 0, 0);
            messages::ready_for_query(&mut out, TxStatus::Idle);
            // Listed in SHOW CLIENTS, as PgBouncer and pgcat list theirs.
            let _listed = crate::stats::connections().add_client(
                peer,
                &database,
                &user,
                &application_name,
                true,
            );
            let dialect = crate::admin::Dialect::of(&database);
            if stream.write_all(&out).await.is_ok() {
                if let Err(e) =
                    Box::pin(crate::admin::serve(app.clone(), stream, buf, dialect)).await
                {
                    tracing::info!(client = %peer, error = %e, "admin session ended with an error");
                }
            }
            return;
        }
        Ok(Some(super::handshake::LoggedIn::Pool {
            pool,
            startup,
            greeting,
        })) => (pool, startup, greeting),
        Ok(None) | Err(Error::ClientGone) => return,
        Err(e) => {
            tracing::info!(client = %peer, error = %e, "client login failed");
            let mut out = BytesMut::new();
            messages::error_with_severity(&mut out, &e, Severity::Fatal);
            let _ = stream.write_all(&out).await;
            return;
        }
    };
    let (pool, startup, greeting) = logged_in;
    if config.general.log_client_connections {
        tracing::info!(client = %peer, database = %pool.database, user = %pool.user, "client connected");
    }
    // The session runs as a task of its own, and this one ends: what a
    // logged-in client keeps is its session, not the login's state.
    let session = Session::start(app.clone(), stream, peer, buf, pool, &startup.params);
    drop(startup);
    tokio::spawn(run_session(session, greeting, slot));
}

/// Greets the client and runs its session to the end.
///
/// Not an `async fn`: one of those keeps its arguments twice, as captured
/// and as locals (rust-lang/rust#62958), and this future is what every
/// connected client costs. An `async move` block keeps them once.
#[allow(clippy::manual_async_fn)]
fn run_session(
    mut session: Session,
    greeting: BytesMut,
    slot: ClientSlot,
) -> impl std::future::Future<Output = ()> {
    async move {
        if session.greet(greeting).await.is_ok() {
            if let Err(e) = session.run().await {
                let (peer, pool) = session.describe();
                tracing::info!(client = %peer, pool = %pool, error = %e, "client session ended with an error");
            }
        }
        if slot.0.config().general.log_client_disconnections {
            let (peer, pool) = session.describe();
            tracing::info!(client = %peer, pool = %pool, "client disconnected");
        }
    }
}
