//! LISTEN/NOTIFY in transaction mode: one listening server connection per
//! (database, user) pool, shared by every client of the pool that listens.
//! A client's LISTEN/UNLISTEN becomes a subscription here; the first
//! subscriber of a channel makes the connection LISTEN to it, the last one
//! leaving UNLISTENs. Each NotificationResponse the server sends goes, as
//! the server wrote it (the sending backend's pid, channel, payload), to
//! every client subscribed to its channel, in the order it came.
//!
//! The connection is opened on the first LISTEN and closed when nobody
//! listens. If it is lost (a restart, a failover) it is opened again and
//! every channel LISTENed again; what was notified in between is lost, and
//! each listening client is told so with a WARNING notice.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Weak;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use postgres_protocol::message::backend::Message;
use tokio::sync::{mpsc, oneshot};

use super::registry::Pool;
use super::server::{quote_ident, Server};
use crate::errors::{Error, Result};
use crate::net::messages;
use crate::net::tag::server as tag;

/// How often a lost listening connection is tried again.
const RECONNECT: Duration = Duration::from_millis(500);

/// Where a client's notifications go: whole messages, ready to write.
pub type Sink = mpsc::UnboundedSender<Bytes>;

/// A request to the pool's listener.
enum Request {
    Listen {
        client: u64,
        channel: String,
        sink: Sink,
        done: oneshot::Sender<Result<()>>,
    },
    /// `None`: every channel (UNLISTEN *).
    Unlisten {
        client: u64,
        channel: Option<String>,
        done: oneshot::Sender<Result<()>>,
    },
    /// The client left.
    Gone { client: u64 },
}

/// A pool's listener: the handle sessions talk to.
#[derive(Clone)]
pub struct Listener {
    requests: mpsc::UnboundedSender<Request>,
}

impl Listener {
    /// Starts the listener task of `pool` (on the current runtime).
    pub fn start(pool: Weak<Pool>) -> Listener {
        let (requests, rx) = mpsc::unbounded_channel();
        tokio::spawn(Task::new(pool).run(rx));
        Listener { requests }
    }

    /// Subscribes `client` to `channel`. The request is sent at once; the
    /// future resolves when the server listens, from when every
    /// notification committed on the channel reaches `sink` (drop it not
    /// to wait).
    pub fn listen(
        &self,
        client: u64,
        channel: String,
        sink: Sink,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        self.ask(move |done| Request::Listen {
            client,
            channel,
            sink,
            done,
        })
    }

    /// Unsubscribes `client` from `channel` (None: from every channel); as
    /// `listen`, sent at once.
    pub fn unlisten(
        &self,
        client: u64,
        channel: Option<String>,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        self.ask(move |done| Request::Unlisten {
            client,
            channel,
            done,
        })
    }

    /// The client left: its subscriptions end (no answer awaited).
    pub fn gone(&self, client: u64) {
        let _ = self.requests.send(Request::Gone { client });
    }

    /// Sends the request `make` builds now; the future is its answer.
    fn ask(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<()>>) -> Request,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        let (done, answer) = oneshot::channel();
        let sent = self.requests.send(make(done)).is_ok();
        async move {
            let stopped = || Error::ServerLost("the pool's listener stopped".into());
            if !sent {
                return Err(stopped());
            }
            answer.await.map_err(|_| stopped())?
        }
    }
}

/// The listener task's state.
struct Task {
    pool: Weak<Pool>,
    /// Subscribers by channel, in the order they came.
    channels: HashMap<String, Vec<(u64, Sink)>>,
    /// The listening connection, while there is one.
    server: Option<Server>,
    /// The connection was lost while clients listened: open it again.
    lost: bool,
}

impl Task {
    fn new(pool: Weak<Pool>) -> Task {
        Task {
            pool,
            channels: HashMap::new(),
            server: None,
            lost: false,
        }
    }

    async fn run(mut self, mut requests: mpsc::UnboundedReceiver<Request>) {
        loop {
            let request = match &mut self.server {
                Some(server) => tokio::select! {
                    request = requests.recv() => request,
                    frame = server.recv() => {
                        match frame {
                            Ok(frame) => self.deliver(frame.tag(), frame.bytes()),
                            Err(e) => self.on_lost(e),
                        }
                        continue;
                    }
                },
                None if self.lost => tokio::select! {
                    request = requests.recv() => request,
                    _ = tokio::time::sleep(RECONNECT) => {
                        self.reconnect().await;
                        continue;
                    }
                },
                None => requests.recv().await,
            };
            let Some(request) = request else {
                return; // the pool and every client are gone
            };
            self.handle(request).await;
        }
    }

    async fn handle(&mut self, request: Request) {
        match request {
            Request::Listen {
                client,
                channel,
                sink,
                done,
            } => {
                let result = self.subscribe(client, channel, sink).await;
                let _ = done.send(result);
            }
            Request::Unlisten {
                client,
                channel,
                done,
            } => {
                let result = self.unsubscribe(client, channel.as_deref()).await;
                let _ = done.send(result);
            }
            Request::Gone { client } => {
                let _ = self.unsubscribe(client, None).await;
            }
        }
    }

    async fn subscribe(&mut self, client: u64, channel: String, sink: Sink) -> Result<()> {
        if self.channels.get(&channel).is_none_or(|s| s.is_empty()) {
            if self.server.is_none() {
                self.server = Some(self.connect().await?);
                self.lost = false;
            }
            self.execute(&format!("LISTEN {}", quote_ident(&channel)))
                .await?;
        }
        let subscribers = self.channels.entry(channel).or_default();
        if !subscribers.iter().any(|(c, _)| *c == client) {
            subscribers.push((client, sink));
        }
        Ok(())
    }

    async fn unsubscribe(&mut self, client: u64, channel: Option<&str>) -> Result<()> {
        let mut emptied = Vec::new();
        for (name, subscribers) in self.channels.iter_mut() {
            if channel.is_some_and(|c| c != name) {
                continue;
            }
            subscribers.retain(|(c, _)| *c != client);
            if subscribers.is_empty() {
                emptied.push(name.clone());
            }
        }
        for name in emptied {
            self.channels.remove(&name);
            if self.server.is_some() {
                self.execute(&format!("UNLISTEN {}", quote_ident(&name)))
                    .await?;
            }
        }
        if self.channels.is_empty() {
            // Nobody listens: the connection goes.
            self.server = None;
            self.lost = false;
        }
        Ok(())
    }

    /// Runs a LISTEN/UNLISTEN on the listening connection, delivering the
    /// notifications that arrive meanwhile.
    async fn execute(&mut self, sql: &str) -> Result<()> {
        let Some(server) = self.server.as_mut() else {
            return Ok(());
        };
        let mut out = BytesMut::new();
        postgres_protocol::message::frontend::query(sql, &mut out)
            .map_err(|e| Error::protocol(format!("could not encode {sql}: {e}")))?;
        let channels = &mut self.channels;
        let result = server
            .exchange(&out, |m| {
                if let Message::NotificationResponse(n) = m {
                    let mut msg = BytesMut::new();
                    let channel = n.channel().map_err(|e| Error::protocol(e.to_string()))?;
                    let payload = n.message().map_err(|e| Error::protocol(e.to_string()))?;
                    messages::notification(&mut msg, n.process_id(), channel, payload);
                    send_to(channels, channel, msg.freeze());
                }
                Ok(())
            })
            .await;
        if result.is_err() && server.state.broken {
            self.server = None;
            self.lost = !self.channels.is_empty();
        }
        result
    }

    /// A server message outside any exchange: a notification goes out as
    /// the server wrote it.
    fn deliver(&mut self, kind: u8, message: &[u8]) {
        if kind != tag::NOTIFICATION_RESPONSE {
            return; // ParameterStatus, NoticeResponse: nothing for clients
        }
        // Body: pid (4 bytes), channel, payload.
        let channel = message
            .get(crate::net::codec::HEADER_LEN + 4..)
            .and_then(|b| crate::net::codec::cstr(b, 0).ok())
            .map(|(c, _)| c);
        if let Some(channel) = channel {
            let message = Bytes::copy_from_slice(message);
            send_to(&mut self.channels, channel, message);
        }
    }

    fn on_lost(&mut self, e: Error) {
        tracing::warn!(error = %e, "the listening connection was lost; opening it again");
        self.server = None;
        self.lost = !self.channels.is_empty();
    }

    async fn connect(&self) -> Result<Server> {
        let pool = self
            .pool
            .upgrade()
            .ok_or_else(|| Error::ServerLost("the pool was removed".into()))?;
        let server_pool = pool.primary(0).clone();
        drop(pool);
        let settings = server_pool.settings();
        server_pool.connect(&settings).await
    }

    /// Opens the lost connection again and LISTENs to every channel; tells
    /// every subscriber that notifications may have been lost meanwhile.
    async fn reconnect(&mut self) {
        let server = match self.connect().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "listening connection: server still unreachable");
                return;
            }
        };
        self.server = Some(server);
        self.lost = false;
        let names: Vec<String> = self.channels.keys().cloned().collect();
        for name in &names {
            if self
                .execute(&format!("LISTEN {}", quote_ident(name)))
                .await
                .is_err()
            {
                return; // lost again: the next round tries again
            }
        }
        tracing::info!(
            channels = names.len(),
            "the listening connection is back; channels listened to again"
        );
        let mut warning = BytesMut::new();
        messages::error_fields(
            &mut warning,
            tag::NOTICE_RESPONSE,
            "WARNING",
            "01000",
            "pgmlcat: the server connection listening for notifications was lost and has been re-established; notifications sent meanwhile were lost",
        );
        let warning = warning.freeze();
        let mut told = Vec::new();
        for subscribers in self.channels.values() {
            for (client, sink) in subscribers {
                if !told.contains(client) {
                    told.push(*client);
                    let _ = sink.send(warning.clone());
                }
            }
        }
    }
}

/// One notification to every subscriber of its channel; a subscriber that
/// is gone is dropped here too, before its Gone arrives.
fn send_to(channels: &mut HashMap<String, Vec<(u64, Sink)>>, channel: &str, message: Bytes) {
    if let Some(subscribers) = channels.get_mut(channel) {
        subscribers.retain(|(_, sink)| sink.send(message.clone()).is_ok());
    }
}
