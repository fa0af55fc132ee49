//! A logged-in client: the loop that waits for the next thing to happen
//! (client bytes, server bytes, a timer, shutdown), and the writes that
//! answer it. What a client message means is decided in `dispatch`, where
//! server answers go in `relay`; this file only moves bytes and keeps the
//! loop cheap: one poll function, no futures rebuilt per turn, buffers
//! borrowed while the client has something to say.

mod state;

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::time::Sleep;

pub use state::{Batch, Binding, ClientSide, DeferredBegin, Recovery, ServerSide, Transaction};

use super::cancel::CancelHandle;
use super::expect::ExpectQueue;
use super::ml::MlState;
use super::params::ClientParams;
use super::prepared::ClientStatements;
use crate::app::{App, Shutdown};
use crate::backend::Pool;
use crate::config::PoolMode;
use crate::errors::{Error, Result, Severity};
use crate::net::messages::{self, TxStatus};
use crate::net::stream::Stream;
use crate::net::{bufpool, codec, tag};
use crate::router::RouteState;
use crate::stats::Counters;

/// A message this large or larger is streamed through in pieces instead of
/// being held whole (DataRow and CopyData only).
pub(super) const STREAM_THRESHOLD: usize = 64 * 1024;

/// What the loop does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Close,
}

/// What woke the session.
enum Event {
    /// Bytes from the client are in its buffer (Ok(0): it hung up).
    Client(io::Result<usize>),
    /// Bytes from the held server are in its buffer (Ok(0): it closed).
    Server(io::Result<usize>),
    /// The client sat in a transaction longer than
    /// idle_client_in_transaction_timeout.
    IdleInTransaction,
    /// Shutdown began.
    Stopping,
    /// A notification for a channel the client listens to, sendable now.
    Notification(bytes::Bytes),
}

/// Per-client limits, fixed at login.
pub(super) struct Limits {
    pub max_message: usize,
    pub idle_in_transaction: Option<Duration>,
}

pub struct Session {
    pub(super) app: Arc<App>,
    pub(super) pool: Arc<Pool>,
    pub(super) mode: PoolMode,
    pub(super) limits: Limits,
    pub(super) client: ClientSide,
    pub(super) server: ServerSide,
    pub(super) tx: Transaction,
    pub(super) recovery: Recovery,
    pub(super) batch: Batch,
    /// pgml statements and portals answered by the proxy (boxed: most
    /// clients never make one, and every idle client carries the session).
    pub(super) ml: Option<Box<MlState>>,
    /// The client's LISTENs (boxed: few clients listen).
    pub(super) listening: Option<Box<super::notify::Listening>>,
    /// This client in SHOW CLIENTS.
    pub(super) stats: crate::stats::ClientHandle,
    pub(super) cancel: CancelHandle,
    /// Which replicas its reads may use (read-your-writes, lag bounds).
    pub(super) fresh: super::fresh::Fresh,
    shutdown: watch::Receiver<Shutdown>,
    stop_seen: bool,
    idle_timer: Option<Pin<Box<Sleep>>>,
}

/// What a session is doing, for tests (and anything that wants to look).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The transaction status the client was last told.
    pub status: TxStatus,
    /// A BEGIN answered here, not yet sent to a server.
    pub deferred_begin: bool,
    pub recovery: Recovery,
    pub batch: BatchView,
    pub binding: BindingView,
    /// Answers the server still owes (and the session's own, in place).
    pub owed: usize,
    /// Whether the client side holds a read buffer.
    pub holds_buffer: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchView {
    None,
    Holding(usize),
    FanOut(usize),
    CopyBound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingView {
    Idle,
    /// One server, on this shard.
    One {
        shard: usize,
    },
    /// A split COPY across this many shards.
    CopySplit {
        shards: usize,
    },
}

impl Session {
    /// A reload replaced the client's pool: between transactions, with
    /// nothing in flight, the client moves to the new one (its shard
    /// layout, routing and settings; pool_mode stays as the client began).
    /// A pool the reload removed keeps serving the clients it has.
    pub(super) fn move_to_reloaded_pool(&mut self) {
        let between = self.server.binding.is_idle()
            && self.tx.status == TxStatus::Idle
            && self.tx.deferred.is_none()
            && self.server.expect.is_empty()
            && matches!(self.batch, Batch::None)
            && matches!(self.recovery, Recovery::None);
        if !between {
            return;
        }
        let registry = self.app.registry.load();
        if let Some(new) = registry.get(&self.pool.database, &self.pool.user) {
            self.pool = new.clone();
        }
    }

    /// A transaction ended: counted for the pool and the client.
    #[inline]
    pub(super) fn count_xact(&self) {
        Counters::add(&self.pool.counters.xacts, 1);
        Counters::add(&self.stats.info.xacts, 1);
    }

    #[inline]
    pub(super) fn count_query(&self) {
        Counters::add(&self.pool.counters.queries, 1);
        Counters::add(&self.stats.info.queries, 1);
    }

    /// A session for a client logged in to `pool` with these startup
    /// parameters: registered for cancel requests and in SHOW CLIENTS.
    pub fn start(
        app: Arc<App>,
        stream: Stream,
        peer: SocketAddr,
        buf: BytesMut,
        pool: Arc<Pool>,
        startup: &[(String, String)],
    ) -> Session {
        let application_name = startup
            .iter()
            .find(|(k, _)| k == "application_name")
            .map_or("", |(_, v)| v.as_str());
        let stats = crate::stats::connections().add_client(
            peer,
            &pool.database,
            &pool.user,
            application_name,
            false,
        );
        let cancel = app.cancels.register(app.config().general.peer_id);
        let params = ClientParams::from_startup(startup);
        // The login's read buffer goes back now unless the client already
        // sent more: an idle client holds none.
        let buf = match (&stream, buf.is_empty()) {
            (Stream::Plain(_), true) => {
                bufpool::give(buf);
                BytesMut::new()
            }
            _ => buf,
        };
        Session::new(app, stream, peer, buf, pool, params, cancel, stats)
    }

    /// Ends the login: `greeting` (AuthenticationOk and ParameterStatus),
    /// then BackendKeyData and ReadyForQuery, in one write.
    pub async fn greet(&mut self, mut greeting: BytesMut) -> io::Result<()> {
        let secret = super::cancel::secret_of(&self.cancel);
        messages::backend_key_data(&mut greeting, self.cancel.pid, secret);
        messages::ready_for_query(&mut greeting, TxStatus::Idle);
        self.client.stream.write_all(&greeting).await
    }

    /// The client's address and its pool ("database/user"), for log lines.
    pub fn describe(&self) -> (SocketAddr, String) {
        (
            self.client.peer,
            format!("{}/{}", self.pool.database, self.pool.user),
        )
    }

    /// What the session is doing now.
    pub fn view(&self) -> View {
        View {
            status: self.tx.status,
            deferred_begin: self.tx.deferred.is_some(),
            recovery: self.recovery,
            batch: match &self.batch {
                Batch::None => BatchView::None,
                Batch::Holding(v) => BatchView::Holding(v.len()),
                Batch::FanOut(v) => BatchView::FanOut(v.len()),
                Batch::CopyBound(_) => BatchView::CopyBound,
            },
            binding: match &self.server.binding {
                Binding::Idle => BindingView::Idle,
                Binding::One(p) => BindingView::One {
                    shard: p.server.addr.shard,
                },
                Binding::CopySplit(c) => BindingView::CopySplit { shards: c.shards() },
            },
            owed: self.server.expect.len(),
            holds_buffer: self.client.buf.capacity() > 0,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        app: Arc<App>,
        stream: Stream,
        peer: SocketAddr,
        buf: BytesMut,
        pool: Arc<Pool>,
        params: ClientParams,
        cancel: CancelHandle,
        stats: crate::stats::ClientHandle,
    ) -> Session {
        let config = app.config();
        let idle = config.general.idle_client_in_transaction_timeout;
        Session {
            mode: pool.mode,
            limits: Limits {
                max_message: config.general.max_message_size,
                idle_in_transaction: (idle > 0).then(|| Duration::from_millis(idle)),
            },
            client: ClientSide {
                stream,
                peer,
                buf,
                out: BytesMut::new(),
                stream_left: 0,
                statements: ClientStatements::default(),
                params,
                route: RouteState::default(),
            },
            server: ServerSide {
                binding: Binding::Idle,
                out: BytesMut::new(),
                expect: ExpectQueue::default(),
                pending: Default::default(),
                stream_left: 0,
                last_pool: pool.primary(0).clone(),
            },
            tx: Transaction {
                status: TxStatus::Idle,
                deferred: None,
                started: None,
                ml_wrote: false,
                wrote: false,
            },
            recovery: Recovery::None,
            batch: Batch::None,
            ml: None,
            listening: None,
            stats,
            cancel,
            fresh: Default::default(),
            shutdown: app.shutdown.subscribe(),
            stop_seen: false,
            idle_timer: None,
            pool,
            app,
        }
    }

    /// Runs until the client leaves or is closed. Errors returned here are
    /// ones the client could not be told about (or was already told). The
    /// session is borrowed, not moved in: its future then holds only the
    /// loop's own state, which is what every idle client pays for.
    pub async fn run(&mut self) -> Result<()> {
        let result = self.run_loop().await;
        Box::pin(self.finish()).await;
        result
    }

    async fn run_loop(&mut self) -> Result<()> {
        // One long-lived shutdown watcher, polled once to register and then
        // only when the channel says something changed.
        let stopping = until_stopping(self.shutdown.clone());
        tokio::pin!(stopping);
        let mut watching = false;
        loop {
            if self.stop_seen && self.should_close_for_shutdown() {
                Box::pin(self.fatal(&Error::Shutdown)).await;
                return Ok(());
            }
            self.arm_idle_timer();
            let event = poll_fn(|cx| {
                if !watching || (!self.stop_seen && self.shutdown.has_changed().unwrap_or(true)) {
                    watching = true;
                    if stopping.as_mut().poll(cx).is_ready() && !self.stop_seen {
                        return Poll::Ready(Event::Stopping);
                    }
                }
                self.poll_event(cx)
            })
            .await;
            if self.handle(event).await? == Flow::Close {
                return Ok(());
            }
        }
    }

    /// Waits for the next event and handles it: one turn of the loop,
    /// without the shutdown watch. Tests and tools drive a session with it
    /// and look at `view()` in between.
    pub async fn step(&mut self) -> Result<Flow> {
        self.arm_idle_timer();
        let event = poll_fn(|cx| self.poll_event(cx)).await;
        self.handle(event).await
    }

    async fn handle(&mut self, event: Event) -> Result<Flow> {
        match event {
            Event::Stopping => {
                self.stop_seen = true;
                Ok(Flow::Continue)
            }
            Event::Notification(first) => Ok(Box::pin(self.send_notifications(first)).await),
            Event::IdleInTransaction => {
                let ms = self
                    .limits
                    .idle_in_transaction
                    .map_or(0, |d| d.as_millis() as u64);
                if self.pinned() {
                    // Its session state would go with the rollback: close
                    // it, as Postgres closes an idle-in-transaction session.
                    tracing::info!(client = %self.client.peer, pool = %self.server.last_pool.name, "closing client idle in transaction for {ms} ms");
                    Box::pin(self.fatal(&Error::IdleInTransaction(ms))).await;
                    return Ok(Flow::Close);
                }
                // pgcat's way: the transaction is rolled back and the server
                // given back; the client hears it at its next message.
                tracing::info!(client = %self.client.peer, pool = %self.server.last_pool.name, "rolled back a transaction idle for {ms} ms");
                self.returned();
                Box::pin(self.finish()).await;
                self.tx.status = TxStatus::Idle;
                self.tx.deferred = None;
                // Its LISTEN/UNLISTENs rolled back with it.
                self.settle_notify_now(false);
                self.recovery = Recovery::TimedOut;
                Ok(Flow::Continue)
            }
            Event::Client(Ok(n)) if n > 0 => {
                Counters::add(&self.pool.counters.bytes_received, n as u64);
                self.on_client_data().await
            }
            Event::Client(_) => Ok(Flow::Close), // the client went away
            Event::Server(Ok(n)) if n > 0 => self.on_server_data().await,
            Event::Server(Err(e)) if self.unread_by_server(&e) => {
                // Reset with our bytes unread: nothing of the batch ran.
                Box::pin(self.resend_elsewhere()).await
            }
            Event::Server(end) => {
                tracing::debug!(client = %self.client.peer, "server connection ended: {end:?}");
                Ok(Box::pin(self.on_server_lost()).await)
            }
        }
    }

    /// The next event. The held server is read first: its answer is what a
    /// client in a transaction is waiting for.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        if let Binding::One(pooled) = &mut self.server.binding {
            let server = &mut pooled.server;
            if let Poll::Ready(r) = server.stream.poll_read_buf(cx, &mut server.buf, 4096) {
                return Poll::Ready(Event::Server(r));
            }
        }
        if let Some(timer) = self.idle_timer.as_mut() {
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::IdleInTransaction);
            }
        }
        if self.listening.is_some() && self.may_notify() {
            if let Some(l) = self.listening.as_mut() {
                if let Poll::Ready(Some(m)) = l.queue.poll_recv(cx) {
                    return Poll::Ready(Event::Notification(m));
                }
            }
        }
        self.poll_client(cx).map(Event::Client)
    }

    /// Reads from the client. An idle client holds no buffer: its socket is
    /// watched for readiness and a buffer borrowed when bytes arrive.
    fn poll_client(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let client = &mut self.client;
        if client.buf.capacity() == 0 {
            if let Stream::Plain(tcp) = &client.stream {
                if let Err(e) = std::task::ready!(tcp.poll_read_ready(cx)) {
                    return Poll::Ready(Err(e));
                }
            }
            client.buf = bufpool::take();
        }
        client.stream.poll_read_buf(cx, &mut client.buf, 1024)
    }

    /// The idle-in-transaction timer runs while the client holds a server
    /// in a transaction and owes the next move; any event restarts it.
    fn arm_idle_timer(&mut self) {
        let Some(limit) = self.limits.idle_in_transaction else {
            return;
        };
        let waiting_on_client = matches!(self.server.binding, Binding::One(_))
            && self.tx.status != TxStatus::Idle
            && self.server.expect.is_empty();
        if !waiting_on_client {
            self.idle_timer = None;
            return;
        }
        let deadline = tokio::time::Instant::now() + limit;
        match self.idle_timer.as_mut() {
            Some(t) => t.as_mut().reset(deadline),
            None => self.idle_timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }

    fn should_close_for_shutdown(&self) -> bool {
        match *self.shutdown.borrow() {
            Shutdown::Running => false,
            Shutdown::Fast => true,
            // Let a transaction in progress finish first.
            Shutdown::Graceful => self.tx.status == TxStatus::Idle && self.server.expect.is_empty(),
        }
    }

    /// Sends a FATAL error to the client (best effort).
    pub(super) async fn fatal(&mut self, err: &Error) {
        let mut out = BytesMut::new();
        messages::error_with_severity(&mut out, err, Severity::Fatal);
        let _ = self.client.stream.write_all(&out).await;
    }

    /// Writes what is queued for the server and for the client.
    pub(super) async fn flush(&mut self) -> Result<Flow> {
        if !self.server.out.is_empty() {
            match self.server.binding.one() {
                Some(pooled) => {
                    if let Err(e) = pooled.server.stream.send_all(&self.server.out).await {
                        tracing::warn!(server = %pooled.server.addr, error = %e, "write to server failed");
                        pooled.server.state.broken = true;
                        self.server.out.clear();
                        return Ok(Box::pin(self.on_server_lost()).await);
                    }
                    if keep_sent(&mut pooled.server.resend, &mut self.server.out) {
                        return self.flush_client().await;
                    }
                }
                None => tracing::debug!(
                    "dropping {} bytes for a server we no longer hold",
                    self.server.out.len()
                ),
            }
            self.server.out.clear();
        }
        self.flush_client().await
    }

    /// Writes what is queued for the client.
    pub(super) async fn flush_client(&mut self) -> Result<Flow> {
        if !self.client.out.is_empty() {
            if self.client.stream.send_all(&self.client.out).await.is_err() {
                return Ok(Flow::Close);
            }
            self.client.out.clear();
        }
        Ok(Flow::Continue)
    }

    /// Writes bytes to the client. One that stops reading while holding a
    /// server may keep it no longer than idle_client_in_transaction_timeout.
    pub(super) async fn write_client(&mut self, bytes: &[u8]) -> Flow {
        if bytes.is_empty() {
            return Flow::Continue;
        }
        Counters::add(&self.pool.counters.bytes_sent, bytes.len() as u64);
        let holding = matches!(self.server.binding, Binding::One(_));
        let written = match (self.limits.idle_in_transaction, holding) {
            // The timer lives only while a write waits: boxed, the rare case.
            (Some(limit), true) => {
                let write = self.client.stream.send_all(bytes);
                match Box::pin(tokio::time::timeout(limit, write)).await {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::info!(client = %self.client.peer, pool = %self.server.last_pool.name, "closing client that stopped reading results");
                        return Flow::Close;
                    }
                }
            }
            _ => self.client.stream.send_all(bytes).await,
        };
        match written {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Close,
        }
    }

    /// Takes complete client messages off the buffer and handles each in
    /// place (a handler that keeps a message copies it).
    pub(super) async fn on_client_data(&mut self) -> Result<Flow> {
        // Handlers do not read the client: the buffer is theirs meanwhile.
        let mut buf = std::mem::take(&mut self.client.buf);
        let flow = loop {
            if self.client.stream_left > 0 {
                let n = self.client.stream_left.min(buf.len());
                if n == 0 {
                    break Ok(Flow::Continue);
                }
                self.server.out.extend_from_slice(&buf[..n]);
                buf.advance(n);
                self.client.stream_left -= n;
                continue;
            }
            let header = match codec::header(&buf, self.limits.max_message) {
                Ok(Some(h)) => h,
                Ok(None) => break Ok(Flow::Continue),
                Err(e) => break Box::pin(self.close_with(e)).await,
            };
            if buf.len() < header.total {
                let streams = header.tag == tag::client::COPY_DATA
                    && header.total > STREAM_THRESHOLD
                    && matches!(self.server.binding, Binding::One(_));
                if streams {
                    // A big CopyData goes through in pieces as it arrives.
                    self.client.stream_left = header.total - buf.len();
                    self.server.out.extend_from_slice(&buf);
                    buf.clear();
                } else {
                    buf.reserve(header.total - buf.len());
                }
                break Ok(Flow::Continue);
            }
            match self
                .on_client_message(header.tag, &buf[..header.total])
                .await
            {
                Ok(Flow::Continue) => buf.advance(header.total),
                other => break other,
            }
        };
        self.client.buf = buf;
        if flow? == Flow::Close {
            self.flush().await?;
            return Ok(Flow::Close);
        }
        let flow = self.flush().await?;
        self.return_buffers_if_idle();
        Ok(flow)
    }

    /// The client broke the protocol: what is queued goes out, then a FATAL.
    pub(super) async fn close_with(&mut self, e: Error) -> Result<Flow> {
        tracing::warn!(client = %self.client.peer, error = %e, "closing client");
        self.flush().await?;
        self.fatal(&e).await;
        Ok(Flow::Close)
    }

    /// An idle client keeps no buffers: its read and write buffers go back
    /// to the thread's pool.
    pub(super) fn return_buffers_if_idle(&mut self) {
        let idle = self.server.binding.is_idle()
            && self.client.buf.is_empty()
            && self.client.stream_left == 0
            && matches!(self.batch, Batch::None);
        if !idle {
            return;
        }
        if matches!(self.client.stream, Stream::Plain(_)) && self.client.buf.capacity() > 0 {
            bufpool::give(std::mem::take(&mut self.client.buf));
        }
        if self.client.out.capacity() > 0 {
            bufpool::give(std::mem::take(&mut self.client.out));
        }
        if self.server.out.capacity() > 0 {
            bufpool::give(std::mem::take(&mut self.server.out));
        }
    }
}

/// A batch just sent on a connection fresh from the pool is kept until the
/// server answers (see `Resend`): true when `out` was kept (it is empty
/// now, its buffer moved, not copied).
fn keep_sent(resend: &mut crate::backend::server::Resend, out: &mut BytesMut) -> bool {
    use crate::backend::server::Resend;
    match resend {
        Resend::Off => false,
        Resend::Armed => {
            *resend = Resend::Kept(std::mem::take(out));
            true
        }
        Resend::Kept(kept) => {
            // More of the same batch before any answer.
            kept.extend_from_slice(out);
            out.clear();
            true
        }
    }
}

/// Resolves once shutdown has begun.
async fn until_stopping(mut rx: watch::Receiver<Shutdown>) {
    while *rx.borrow_and_update() == Shutdown::Running {
        if rx.changed().await.is_err() {
            // The sender is gone: the process is ending.
            return;
        }
    }
}
