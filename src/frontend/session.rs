//! A logged-in client: the loop that moves its messages to a server and the
//! server's answers back, checking servers out and in around transactions.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::net::stream::Stream;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::cancel::CancelHandle;
use super::expect::{Expect, ExpectQueue};
use super::params::ClientParams;
use super::prepared::ClientStatements;
use crate::app::{App, Shutdown};
use crate::backend::{Pool, Pooled, ServerPool};
use crate::config::{PoolMode, Role};
use crate::errors::{Error, Result, Severity};
use crate::net::codec;
use crate::net::messages::{self, TxStatus};
use crate::router::shard::{DefaultShard, Sharding};
use crate::router::{self, rw::Intent, RouteState, Target};
use crate::stats::{ClientState, Counters};

/// A message this large or larger is streamed through in pieces instead of
/// being held whole (DataRow and CopyData only).
pub(super) const STREAM_THRESHOLD: usize = 64 * 1024;

/// What the loop does next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    Close,
}

pub struct Session {
    pub(super) app: Arc<App>,
    pub(super) client: Stream,
    pub(super) peer: SocketAddr,
    /// Bytes from the client not handled yet.
    pub(super) cbuf: BytesMut,
    pub(super) to_client: BytesMut,
    pub(super) to_server: BytesMut,
    /// The server pool of the server currently held (or last held).
    pub(super) server_pool: Arc<ServerPool>,
    pub(super) pool: Arc<Pool>,
    /// The client's SET SERVER ROLE / SET PRIMARY READS.
    pub(super) route: RouteState,
    /// A BEGIN answered by us, to be sent with the first real statement,
    /// once that statement shows where the transaction belongs; with
    /// whether it was READ ONLY.
    pub(super) deferred_begin: Option<(String, bool)>,
    /// On a sharded pool, extended messages waiting for a Bind or Sync to
    /// show which shard they belong to.
    pub(super) held: Vec<(u8, bytes::Bytes)>,
    /// A split COPY that came through the extended protocol is running.
    pub(super) copy_extended: bool,
    /// This client in SHOW CLIENTS.
    pub(super) stats: crate::stats::ClientHandle,
    /// When the current server was checked out (for transaction time).
    pub(super) checked_out_at: Option<std::time::Instant>,
    pub(super) mode: PoolMode,
    pub(super) params: ClientParams,
    pub(super) statements: ClientStatements,
    pub(super) server: Option<Pooled>,
    pub(super) expect: ExpectQueue,
    /// Statement names sent to the current server whose ParseComplete has not come.
    pub(super) pending: HashSet<String>,
    pub(super) cancel: CancelHandle,
    /// Transaction status as last reported to the client.
    pub(super) status: TxStatus,
    /// After an error we raised in the extended protocol: drop messages until Sync.
    pub(super) skip_until_sync: bool,
    /// After refusing a statement mid-batch while a server is held: drop
    /// messages until Sync, then forward the Sync so the server ends the batch.
    pub(super) discard_until_sync: bool,
    /// Bytes of a large client CopyData still to pass through.
    pub(super) client_stream_left: usize,
    /// Bytes of a large server message still to pass through.
    pub(super) server_stream_left: usize,
    pub(super) max_message: usize,
    pub(super) idle_tx_timeout: Option<Duration>,
    /// pgml statements and portals answered by the proxy.
    pub(super) ml: super::ml::MlState,
    /// A keyless extended-protocol read being collected until Sync, to run
    /// on every shard.
    pub(super) fanout_batch: Option<Vec<(u8, bytes::Bytes)>>,
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        app: Arc<App>,
        client: Stream,
        peer: SocketAddr,
        cbuf: BytesMut,
        pool: Arc<Pool>,
        params: ClientParams,
        cancel: CancelHandle,
        stats: crate::stats::ClientHandle,
    ) -> Session {
        let config = app.config();
        let server_pool = pool.primary(0).clone();
        let idle = config.general.idle_client_in_transaction_timeout;
        Session {
            client,
            peer,
            cbuf,
            to_client: BytesMut::with_capacity(1024),
            to_server: BytesMut::with_capacity(1024),
            mode: pool.mode,
            server_pool,
            pool,
            route: RouteState::default(),
            deferred_begin: None,
            held: Vec::new(),
            copy_extended: false,
            stats,
            checked_out_at: None,
            params,
            statements: ClientStatements::default(),
            server: None,
            expect: ExpectQueue::default(),
            pending: HashSet::new(),
            cancel,
            status: TxStatus::Idle,
            skip_until_sync: false,
            ml: Default::default(),
            fanout_batch: None,
            discard_until_sync: false,
            client_stream_left: 0,
            server_stream_left: 0,
            max_message: config.general.max_message_size,
            idle_tx_timeout: (idle > 0).then(|| Duration::from_millis(idle)),
            app,
        }
    }

    /// Runs until the client leaves or is closed. Errors returned here are
    /// ones the client could not be told about (or was already told).
    pub async fn run(mut self) -> Result<()> {
        let shutdown = self.app.shutdown.subscribe();
        let result = self.run_loop(shutdown).await;
        self.finish().await;
        result
    }

    async fn run_loop(&mut self, shutdown: watch::Receiver<Shutdown>) -> Result<()> {
        // One long-lived future, not a new waiter registration per turn of
        // the loop: this loop turns twice per transaction.
        let stopping = until_stopping(shutdown.clone());
        tokio::pin!(stopping);
        let mut stop_seen = false;
        loop {
            if stop_seen && self.should_close_for_shutdown(&shutdown) {
                self.fatal(&Error::Shutdown).await;
                return Ok(());
            }
            let read = match self.server.as_mut() {
                None => {
                    tokio::select! {
                        r = self.client.read_buf(&mut self.cbuf) => r,
                        _ = &mut stopping, if !stop_seen => { stop_seen = true; continue }
                    }
                }
                Some(pooled) => {
                    let idle_timer = self
                        .idle_tx_timeout
                        .filter(|_| self.status != TxStatus::Idle && self.expect.is_empty());
                    tokio::select! {
                        r = self.client.read_buf(&mut self.cbuf) => r,
                        r = pooled.server.stream.read_buf(&mut pooled.server.buf) => {
                            match r {
                                Ok(n) if n > 0 => {
                                    if self.on_server_data().await? == Flow::Close {
                                        return Ok(());
                                    }
                                }
                                _ => {
                                    if self.on_server_lost().await == Flow::Close {
                                        return Ok(());
                                    }
                                }
                            }
                            continue;
                        }
                        _ = sleep_opt(idle_timer) => {
                            let ms = idle_timer.map_or(0, |d| d.as_millis() as u64);
                            tracing::info!(client = %self.peer, pool = %self.server_pool.name, "closing client idle in transaction for {ms} ms");
                            self.fatal(&Error::IdleInTransaction(ms)).await;
                            return Ok(());
                        }
                        _ = &mut stopping, if !stop_seen => { stop_seen = true; continue }
                    }
                }
            };
            match read {
                Ok(n) if n > 0 => {
                    Counters::add(&self.pool.counters.bytes_received, n as u64);
                    if self.on_client_data().await? == Flow::Close {
                        return Ok(());
                    }
                }
                _ => return Ok(()), // the client went away
            }
        }
    }

    fn should_close_for_shutdown(&self, shutdown: &watch::Receiver<Shutdown>) -> bool {
        match *shutdown.borrow() {
            Shutdown::Running => false,
            Shutdown::Fast => true,
            // Let a transaction in progress finish first.
            Shutdown::Graceful => self.status == TxStatus::Idle && self.expect.is_empty(),
        }
    }

    /// Sends a FATAL error to the client (best effort).
    pub(super) async fn fatal(&mut self, err: &Error) {
        let mut out = BytesMut::new();
        messages::error_with_severity(&mut out, err, Severity::Fatal);
        let _ = self.client.write_all(&out).await;
    }

    /// Gets a server for the client's next request and brings its session
    /// parameters in line. On failure the client is told and `false` returned.
    /// `sql` is the text of the transaction's first statement and `bind` its
    /// Bind message, for routing; `needs_key`: whether the batch runs
    /// anything (a Parse/Describe-only batch may go to any shard).
    pub(super) async fn ensure_server(
        &mut self,
        simple: bool,
        sql: Option<&str>,
        bind: Option<&[u8]>,
        needs_key: bool,
    ) -> Result<bool> {
        if self.server.is_some() {
            return Ok(true);
        }
        let err = match self.shard_for(sql, bind, needs_key) {
            Ok(shard) => {
                let target = self.target_for(sql);
                self.stats.info.set_state(ClientState::Waiting);
                self.app
                    .wait_unpaused(&self.pool.database, &self.pool.user)
                    .await;
                match self.checkout(shard, target).await {
                    // A batch that only prepares/describes runs outside the
                    // client's not-yet-started transaction: it must not pin
                    // the transaction to a shard its statements do not choose.
                    Ok(()) if !needs_key && self.deferred_begin.is_some() => {
                        self.stats.info.set_state(ClientState::Active);
                        return Ok(true);
                    }
                    Ok(()) => match self.start_deferred_transaction().await {
                        Ok(()) => {
                            self.stats.info.set_state(ClientState::Active);
                            self.checked_out_at = Some(std::time::Instant::now());
                            return Ok(true);
                        }
                        Err(e) => e,
                    },
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        self.stats.info.set_state(ClientState::Idle);
        Counters::add(&self.pool.counters.errors, 1);
        tracing::warn!(client = %self.peer, pool = %self.server_pool.name, error = %err, "no server for client");
        messages::error_with_severity(&mut self.to_client, &err, Severity::Error);
        if simple {
            messages::ready_for_query(&mut self.to_client, self.status);
        } else {
            self.skip_until_sync = true;
        }
        Ok(false)
    }

    /// The shard for a transaction: a comment in the statement, then the
    /// client's SET SHARD / SET SHARDING KEY, then the automatic key (in the
    /// text or the Bind parameters), then default_shard. Nothing else: a
    /// statement is never placed by guess.
    pub(super) fn shard_for(
        &self,
        sql: Option<&str>,
        bind: Option<&[u8]>,
        needs_key: bool,
    ) -> Result<usize> {
        if self.pool.shards.len() <= 1 {
            return Ok(0);
        }
        if let Some(named) = self.named_shard(sql, bind, false)? {
            return Ok(named);
        }
        // Describing a statement works on any shard (the schemas match),
        // and so does one that reads no table.
        let anywhere = !needs_key || !sql.is_some_and(Sharding::touches_tables);
        let read = || {
            sql.is_some_and(|s| crate::router::rw::classify(s) == crate::router::rw::Intent::Read)
        };
        match self.pool.sharding.default_shard {
            Some(DefaultShard::Fixed(n)) => Ok(n),
            // A random shard serves reads of data every shard holds alike
            // (reference tables); a write is never placed by chance.
            Some(DefaultShard::Random) if read() => {
                Ok(rand::random::<usize>() % self.pool.shards.len())
            }
            Some(DefaultShard::RandomHealthy) if read() => Ok(self.healthy_random_shard()),
            _ if anywhere => Ok(0),
            _ => Err(Error::NoShard(self.pool.sharding.missing_key())),
        }
    }

    /// A shard chosen at random among those whose primary is reachable and
    /// not banned (any shard when none is).
    fn healthy_random_shard(&self) -> usize {
        let healthy: Vec<usize> = (0..self.pool.shards.len())
            .filter(|&s| {
                let p = self.pool.primary(s);
                p.health.reachable() && !p.health.banned()
            })
            .collect();
        match healthy.len() {
            0 => rand::random::<usize>() % self.pool.shards.len(),
            n => healthy[rand::random::<usize>() % n],
        }
    }

    /// The shard the statement itself or the client names, if any.
    /// `statement_only` ignores the client's SET SHARD / SET SHARDING KEY.
    pub(super) fn named_shard(
        &self,
        sql: Option<&str>,
        bind: Option<&[u8]>,
        statement_only: bool,
    ) -> Result<Option<usize>> {
        let sharding = &self.pool.sharding;
        if let Some(found) = sql.and_then(|s| sharding.from_comment(s)) {
            return found.map(Some);
        }
        if let (Some(n), false) = (self.route.shard, statement_only) {
            return Ok(Some(n));
        }
        let params = match bind {
            Some(b) => super::prepared::bind_params(b)?,
            None => Vec::new(),
        };
        let param = |i: usize| {
            let (value, binary) = params.get(i)?;
            let value = (*value)?;
            if *binary {
                sharding.shard_for_binary(value)
            } else {
                sharding.shard_for(std::str::from_utf8(value).ok()?).ok()
            }
        };
        Ok(sql.and_then(|s| sharding.from_statement(s, &param)))
    }

    /// Inside a transaction on a sharded pool: a statement whose key names
    /// another shard than the transaction's is refused (keyless statements
    /// stay on the transaction's shard).
    pub(super) fn check_same_shard(&self, sql: Option<&str>, bind: Option<&[u8]>) -> Result<()> {
        let Some(held) = self.server.as_ref() else {
            return Ok(());
        };
        if self.pool.shards.len() <= 1 {
            return Ok(());
        }
        let current = held.server.addr.shard;
        match self.named_shard(sql, bind, true)? {
            Some(s) if s != current => Err(Error::NoShard(format!(
                "this transaction runs on shard {current}; the statement belongs to shard {s}: a transaction cannot span shards"
            ))),
            _ => Ok(()),
        }
    }

    /// Where the transaction starting with `sql` should run.
    pub(super) fn target_for(&self, sql: Option<&str>) -> Target {
        let cfg = &self.pool.route;
        let intent = match &self.deferred_begin {
            Some((_, true)) => Some(Intent::Begin { read_only: true }),
            _ if cfg.parses(self.route.role) => sql.map(|s| router::intent(cfg, s)),
            _ => None,
        };
        router::target(cfg, &self.route, intent)
    }

    /// Checks out a server for `target`. A replica that cannot be reached is
    /// banned and the next candidate tried: nothing was sent yet, so this
    /// retry cannot run anything twice.
    async fn checkout(&mut self, shard: usize, target: Target) -> Result<()> {
        let attempts = self.pool.shards[shard].len();
        let mut last = None;
        for _ in 0..attempts {
            let server_pool = self.pool.choose(shard, target).clone();
            match server_pool.checkout().await {
                Ok(mut pooled) => {
                    pooled.server.sync_parameters(self.params.wanted()).await?;
                    let s = &pooled.server;
                    self.cancel.entry.set(s.addr.clone(), s.key);
                    self.server = Some(pooled);
                    self.server_pool = server_pool;
                    return Ok(());
                }
                Err(e @ Error::ServerUnavailable { .. })
                    if server_pool.health.role() != Role::Primary =>
                {
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::ServerLost("no server available".into())))
    }

    /// Sends a BEGIN the client issued before we knew where to run it.
    async fn start_deferred_transaction(&mut self) -> Result<()> {
        let (Some((sql, _)), Some(pooled)) = (self.deferred_begin.take(), self.server.as_mut())
        else {
            return Ok(());
        };
        match pooled.server.run_internal(&sql).await? {
            None => Ok(()),
            Some(fields) => Err(Error::ServerRefused {
                addr: pooled.server.addr.to_string(),
                fields,
            }),
        }
    }

    /// Checks the server in at once if it needs no reset; false otherwise.
    pub(super) fn release_if_clean(&mut self) -> bool {
        let clean = self.server.as_ref().is_some_and(|p| {
            !p.server.dirty && p.server.prepared.len() <= self.server_pool.reuse_rules().0
        });
        if clean {
            if let Some(pooled) = self.server.take() {
                self.returned();
                self.server_pool.checkin(pooled);
            }
        }
        clean
    }

    /// Bookkeeping when the client gives its server back.
    fn returned(&mut self) {
        self.cancel.entry.clear();
        self.pending.clear();
        self.stats.info.set_state(ClientState::Idle);
        if let Some(t) = self.checked_out_at.take() {
            Counters::add(
                &self.pool.counters.xact_micros,
                t.elapsed().as_micros() as u64,
            );
        }
    }

    /// Returns the server to the pool, clean, once the client's transaction is over.
    pub(super) async fn release(&mut self) {
        let Some(mut pooled) = self.server.take() else {
            return;
        };
        self.returned();
        let server = &mut pooled.server;
        let (cache_size, cleanup) = self.server_pool.reuse_rules();
        if server.prepared.len() > cache_size {
            server.dirty = true;
        }
        if server.dirty {
            if cleanup || self.mode == PoolMode::Session {
                if let Err(e) = server.reset().await {
                    tracing::warn!(server = %server.addr, error = %e, "server reset failed; closing it");
                }
            } else {
                server.dirty = false;
            }
        }
        self.server_pool.checkin(pooled);
    }

    /// The client is gone or being closed: leave its server clean.
    async fn finish(&mut self) {
        let Some(mut pooled) = self.server.take() else {
            return;
        };
        self.cancel.entry.clear();
        let busy = !self.expect.is_empty() || self.server_stream_left > 0;
        if busy {
            // A query is still running: cancel it and close the connection
            // rather than wait for a result nobody will read.
            let addr = pooled.server.addr.clone();
            let key = pooled.server.key;
            tokio::spawn(async move {
                let _ = crate::backend::server::send_cancel(&addr, key).await;
            });
            return;
        }
        let pool = self.server_pool.clone();
        let session_mode = self.mode == PoolMode::Session;
        tokio::spawn(async move {
            let server = &mut pooled.server;
            if server.status != TxStatus::Idle || session_mode || server.dirty {
                if let Err(e) = server.reset().await {
                    tracing::debug!(server = %server.addr, error = %e, "reset after client left failed");
                    return;
                }
            }
            pool.checkin(pooled);
        });
    }

    /// The server connection died under the client.
    pub(super) async fn on_server_lost(&mut self) -> Flow {
        let addr = self
            .server
            .take()
            .map(|p| p.server.addr.to_string())
            .unwrap_or_default();
        self.returned();
        let ban_time = self.server_pool.settings().ban_time;
        self.server_pool.ban(ban_time, "connection lost");
        tracing::warn!(client = %self.peer, server = %addr, "server connection lost");
        let err = Error::ServerLost(format!("the connection to server {addr} was lost"));
        // Mid-message or mid-transaction the client's state is gone: close it.
        if self.server_stream_left > 0 || self.status != TxStatus::Idle {
            self.fatal(&err).await;
            return Flow::Close;
        }
        let owed = self.expect.syncs();
        self.expect.clear();
        messages::error_with_severity(&mut self.to_client, &err, Severity::Error);
        for _ in 0..owed {
            messages::ready_for_query(&mut self.to_client, TxStatus::Idle);
        }
        if owed == 0 {
            self.skip_until_sync = true;
        }
        match self.client.write_all(&self.to_client).await {
            Ok(()) => {
                self.to_client.clear();
                Flow::Continue
            }
            Err(_) => Flow::Close,
        }
    }

    /// Writes what is queued for the server and for the client.
    pub(super) async fn flush(&mut self) -> Result<Flow> {
        if !self.to_server.is_empty() {
            match self.server.as_mut() {
                Some(pooled) => {
                    if let Err(e) = pooled.server.stream.write_all(&self.to_server).await {
                        tracing::warn!(server = %pooled.server.addr, error = %e, "write to server failed");
                        pooled.server.broken = true;
                        self.to_server.clear();
                        return Ok(self.on_server_lost().await);
                    }
                }
                None => tracing::debug!(
                    "dropping {} bytes for a server we no longer hold",
                    self.to_server.len()
                ),
            }
            self.to_server.clear();
        }
        if !self.to_client.is_empty() {
            if self.client.write_all(&self.to_client).await.is_err() {
                return Ok(Flow::Close);
            }
            self.to_client.clear();
        }
        Ok(Flow::Continue)
    }

    /// Splits complete client messages off the buffer and handles each.
    async fn on_client_data(&mut self) -> Result<Flow> {
        loop {
            if self.client_stream_left > 0 {
                let n = self.client_stream_left.min(self.cbuf.len());
                if n == 0 {
                    break;
                }
                self.to_server.extend_from_slice(&self.cbuf[..n]);
                self.cbuf.advance(n);
                self.client_stream_left -= n;
                continue;
            }
            let header = match codec::header(&self.cbuf, self.max_message) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(client = %self.peer, error = %e, "closing client");
                    self.flush().await?;
                    self.fatal(&e).await;
                    return Ok(Flow::Close);
                }
            };
            if self.cbuf.len() < header.total {
                if header.tag == b'd' && header.total > STREAM_THRESHOLD && self.server.is_some() {
                    self.client_stream_left = header.total - self.cbuf.len();
                    self.to_server.extend_from_slice(&self.cbuf);
                    self.cbuf.clear();
                    break;
                }
                self.cbuf.reserve(header.total - self.cbuf.len());
                break;
            }
            let msg = self.cbuf.split_to(header.total).freeze();
            if self.on_client_message(header.tag, msg).await? == Flow::Close {
                self.flush().await?;
                return Ok(Flow::Close);
            }
        }
        self.flush().await
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

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

pub(super) fn expect_for(tag: u8) -> Option<Expect> {
    match tag {
        b'B' => Some(Expect::Reply(b"2")),
        b'D' => Some(Expect::Reply(b"Tn")),
        b'E' => Some(Expect::Reply(b"CIs")),
        b'C' => Some(Expect::Reply(b"3")),
        b'S' | b'Q' | b'F' => Some(Expect::Sync),
        _ => None,
    }
}
