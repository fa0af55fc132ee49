//! A server on loan to the client: taken for its transaction (or its whole
//! session), brought in line with the client's parameters, given back
//! clean when the transaction ends, and what happens when it dies under
//! the client.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::session::{Binding, Flow, Recovery, Session};
use crate::backend::server::{ParamsRead, Resend};
use crate::config::PoolMode;
use crate::errors::{Error, Result, Severity};
use crate::net::messages::{self, TxStatus};
use crate::router::Target;
use crate::stats::{ClientState, Counters};

/// How often a client waiting for an unreachable server tries again.
const RETRY_CONNECT: Duration = Duration::from_millis(500);

/// Where the client's next transaction runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Route {
    pub shard: usize,
    pub target: Target,
    /// Whether the batch executes anything. One that only prepares or
    /// describes runs outside the client's not-yet-started transaction.
    pub runs: bool,
    /// Whether an unreachable server is waited for (a restart is a pause);
    /// not for a shard picked at random, where the error lets the next
    /// statement pick a healthy one.
    pub waits: bool,
    /// The statement's `/* max_lag_ms: N */` bound on replica lag.
    pub max_lag: Option<std::time::Duration>,
    /// Whether the statement may write data (not known to only read, nor
    /// a session setting): its commit on a primary is what later reads
    /// must see.
    pub writes: bool,
}

/// Why one round of checkout found no server.
enum NoServer {
    /// The server writes go to cannot be reached: worth waiting for (a
    /// restart, a failover).
    Writer(Error),
    /// Anything else (no replica, a full pool): the client hears it now.
    Other(Error),
}

/// How the client speaks, for how a failure is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    /// A Query: the error ends with ReadyForQuery.
    Simple,
    /// Extended messages: the error is followed by skipping to Sync.
    Extended,
}

impl Session {
    /// Checks out a server for `route` and brings it in line. On failure the
    /// client is told and `false` returned.
    pub(super) async fn ensure_server(&mut self, route: Route, protocol: Protocol) -> Result<bool> {
        if !self.server.binding.is_idle() {
            if route.runs {
                self.tx.wrote |= self.held_writes(route.writes);
            }
            return Ok(true);
        }
        // The usual case needs no await: an idle server in line with the
        // client's parameters, nothing paused, no BEGIN to send first. The
        // rest is boxed so every session's future does not carry it.
        let leased = match self.lease_now(route) {
            Some(leased) => leased,
            None => Box::pin(self.lease(route)).await,
        };
        match self.leased(leased, protocol) {
            Err(e) => {
                // Told as this statement's error (ending with ReadyForQuery
                // in the simple protocol), then the connection closes: the
                // client hears why, and its next statement finds it closed,
                // as pgcat's clients do.
                let _ = self.flush_client().await;
                Err(e)
            }
            Ok(ok) => Ok(ok),
        }
    }

    /// Whether the lease went through; if not, the client is told, or,
    /// at pgcat's `checkout_failure_limit`, the error to close it with.
    fn leased(&mut self, leased: Result<()>, protocol: Protocol) -> Result<bool> {
        let err = match leased {
            Ok(()) => return Ok(true),
            Err(e) => e,
        };
        self.stats.info.set_state(ClientState::Idle);
        Counters::add(&self.pool.counters.errors, 1);
        let failures = self.stats.info.errors.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(client = %self.client.peer, pool = %self.server.last_pool.name, error = %err, "no server for client");
        let limit = self.pool.checkout_failure_limit.filter(|l| failures >= *l);
        let err = match limit {
            Some(limit) => {
                tracing::warn!(client = %self.client.peer, failures, limit, "checkout failure limit reached: disconnecting the client");
                Error::CheckoutFailureLimit { failures, limit }
            }
            None => err,
        };
        messages::error_with_severity(&mut self.client.out, &err, Severity::Error);
        match protocol {
            Protocol::Simple => messages::ready_for_query(&mut self.client.out, self.tx.status),
            Protocol::Extended => self.recovery = Recovery::SkipToSync,
        }
        if limit.is_some() {
            return Err(err);
        }
        Ok(false)
    }

    /// The lease without waiting, when nothing needs a round trip; None
    /// when something does (then `lease`).
    fn lease_now(&mut self, route: Route) -> Option<Result<()>> {
        if self.tx.deferred.is_some() || self.app.maybe_paused() {
            return None;
        }
        let need = match self.read_need(&route) {
            Ok(need) => need,
            Err(e) => return Some(Err(e)),
        };
        let server_pool = self
            .pool
            .choose_fresh(route.shard, route.target, need)
            .clone();
        let pooled = server_pool.try_checkout()?;
        let params = &self.client.params;
        if !pooled
            .server
            .in_line_with(params.wanted(), params.fingerprint())
        {
            // Back, untouched: the slow path takes it again and syncs it.
            server_pool.checkin_at(pooled, std::time::Instant::now());
            return None;
        }
        let mut pooled = pooled;
        pooled.server.state.synced = params.fingerprint();
        self.bind(server_pool, pooled);
        self.tx.wrote = self.may_write(&route);
        self.stats.info.set_state(ClientState::Active);
        Some(Ok(()))
    }

    async fn lease(&mut self, route: Route) -> Result<()> {
        self.app
            .wait_unpaused(&self.pool.database, &self.pool.user)
            .await;
        self.checkout(route).await?;
        if !route.runs && self.tx.deferred.is_some() && self.pool.shards.len() > 1 {
            // A batch that only prepares does not place the transaction
            // on a sharded pool: the shard is the Bind's key's. The server
            // goes back at this batch's Sync; its time starts with the BEGIN.
            self.tx.started = None;
            self.stats.info.set_state(ClientState::Active);
            return Ok(());
        }
        // Otherwise the client's BEGIN goes first, whatever the server is
        // for: a Bind of this batch, or of the next one sent before this
        // one's answers, may reach this server while it is held, and must
        // run inside the transaction.
        self.start_deferred_transaction().await?;
        self.stats.info.set_state(ClientState::Active);
        Ok(())
    }

    /// Checks out a server for the route. When none can be reached (the
    /// primary restarting, a failover under way) the client waits, trying
    /// again every half second, up to query_wait_timeout: between
    /// transactions nothing was sent yet, so a restart is only a pause.
    /// Replicas are not waited for: a read that found none fails at once,
    /// as in pgcat.
    async fn checkout(&mut self, route: Route) -> Result<()> {
        let mut until = None;
        loop {
            match self.checkout_once(route).await {
                Ok(()) => return Ok(()),
                Err(NoServer::Writer(e)) if route.waits => {
                    self.stats.info.set_state(ClientState::Waiting);
                    self.wait_for_server(&mut until, e).await?;
                }
                Err(NoServer::Writer(e) | NoServer::Other(e)) => return Err(e),
            }
        }
    }

    /// After `e` (no server reachable): returns once it is worth trying
    /// again (every half second), or `e` once query_wait_timeout has passed
    /// since the first try (`until`, set then) or shutdown began.
    pub(super) async fn wait_for_server(
        &self,
        until: &mut Option<Instant>,
        e: Error,
    ) -> Result<()> {
        let wait = Duration::from_millis(self.app.config().general.query_wait_timeout);
        let until = *until.get_or_insert_with(|| Instant::now() + wait);
        let now = Instant::now();
        if now >= until || self.app.shutdown_state() != crate::app::Shutdown::Running {
            return Err(e);
        }
        tokio::time::sleep(RETRY_CONNECT.min(until - now)).await;
        Ok(())
    }

    /// One round of `checkout`. A replica that cannot be reached is banned
    /// and the next candidate tried: nothing was sent yet, so this retry
    /// cannot run anything twice.
    async fn checkout_once(&mut self, route: Route) -> Result<(), NoServer> {
        let attempts = self.pool.shards[route.shard].len();
        let mut last = None;
        let need = self.read_need(&route).map_err(NoServer::Other)?;
        for _ in 0..attempts {
            let server_pool = self
                .pool
                .choose_fresh(route.shard, route.target, need)
                .clone();
            let pooled = match server_pool.try_checkout() {
                Some(p) => p,
                None => {
                    self.stats.info.set_state(ClientState::Waiting);
                    match server_pool.checkout().await {
                        Ok(p) => p,
                        Err(e @ Error::ServerUnavailable { .. }) => {
                            if server_pool.health.writer() {
                                return Err(NoServer::Writer(e));
                            }
                            last = Some(e);
                            continue;
                        }
                        Err(e) => return Err(NoServer::Other(e)),
                    }
                }
            };
            let mut pooled = pooled;
            let params = &self.client.params;
            // On failure the connection is dropped, so closed. One that
            // died (its server restarting) ran nothing of the client's: as
            // an unreachable server, the writer is waited for and another
            // replica tried.
            match pooled
                .server
                .sync_parameters(params.wanted(), params.fingerprint())
                .await
            {
                Ok(()) => {}
                Err(e @ Error::ServerLost(_)) if server_pool.health.writer() => {
                    return Err(NoServer::Writer(e))
                }
                Err(e @ Error::ServerLost(_)) => {
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(NoServer::Other(e)),
            }
            self.bind(server_pool, pooled);
            self.tx.wrote = self.may_write(&route);
            return Ok(());
        }
        let e = last.unwrap_or_else(|| Error::ServerLost("no server available".into()));
        Err(NoServer::Other(e))
    }

    /// The client holds `pooled` now: cancel requests reach it, its
    /// transaction time starts.
    pub(super) fn bind(
        &mut self,
        server_pool: std::sync::Arc<crate::backend::ServerPool>,
        mut pooled: crate::backend::Pooled,
    ) {
        if self.tx.status == TxStatus::Idle && self.tx.deferred.is_none() {
            // Between transactions nothing is lost if this server ends
            // before answering: keep the first batch (see `Resend`).
            pooled.server.resend = Resend::Armed;
        }
        let s = &pooled.server;
        self.cancel.entry.set(s.addr.clone(), s.key);
        self.tx.started = Some(pooled.since);
        self.server.binding = Binding::One(pooled);
        self.server.last_pool = server_pool;
    }

    /// Sends a BEGIN the client issued before we knew where to run it.
    async fn start_deferred_transaction(&mut self) -> Result<()> {
        let Some(pooled) = self.server.binding.one() else {
            return Ok(());
        };
        let Some(begin) = self.tx.deferred.take() else {
            return Ok(());
        };
        pooled.server.execute(&begin.sql).await
    }

    /// In transaction mode the server goes back once nothing is outstanding
    /// and the transaction has ended.
    pub(super) fn transaction_over(&mut self, server_status: TxStatus) -> bool {
        let mode = self.mode;
        let nothing_owed = self.server.expect.is_empty()
            && self.server.stream_left == 0
            && self.client.stream_left == 0;
        mode == PoolMode::Transaction
            && server_status == TxStatus::Idle
            && nothing_owed
            && self
                .server
                .binding
                .one()
                .is_some_and(|p| p.server.buf.is_empty())
    }

    /// Checks the server in at once if it needs no reset; false otherwise.
    pub(super) fn release_if_clean(&mut self) -> bool {
        let cache_size = self.server.last_pool.reuse_rules().0;
        let clean = self.server.binding.one().is_some_and(|p| {
            let state = &p.server.state;
            !state.dirty
                && !state.may_hold
                && !state.held.any()
                && !state.changes.any()
                && state.prepared.len() <= cache_size
        });
        if clean {
            if let Binding::One(pooled) = std::mem::replace(&mut self.server.binding, Binding::Idle)
            {
                let now = self.returned();
                self.server.last_pool.checkin_at(pooled, now);
            }
        }
        clean
    }

    /// Bookkeeping when the client gives its server back; the time it did.
    pub(super) fn returned(&mut self) -> Instant {
        self.note_commit();
        self.tx.wrote = false;
        self.cancel.entry.clear();
        self.client.statements.unnamed_left_server();
        self.server.pending.clear();
        self.stats.info.set_state(ClientState::Idle);
        let now = Instant::now();
        if let Some(t) = self.tx.started.take() {
            Counters::add(
                &self.pool.counters.xact_micros,
                now.saturating_duration_since(t).as_micros() as u64,
            );
        }
        now
    }

    /// Returns the server to the pool, clean, once the client's transaction
    /// is over.
    pub(super) async fn release(&mut self) {
        if self.stays_pinned().await {
            return;
        }
        let Binding::One(mut pooled) = std::mem::replace(&mut self.server.binding, Binding::Idle)
        else {
            return;
        };
        let now = self.returned();
        let server = &mut pooled.server;
        if server.state.changes.any() {
            // The client's parameters follow it to its next server: what
            // its transaction changed is read back here.
            match Box::pin(server.read_back_parameters()).await {
                Ok(read) => {
                    let params = &mut self.client.params;
                    match read {
                        ParamsRead::Named(values) => params.update(values),
                        ParamsRead::Whole(values) => params.session_read(values),
                    }
                    // In line unless a RESET took a startup value back to
                    // the server's default.
                    let in_line = server.in_line_with(params.wanted(), 0);
                    server.state.synced = if in_line { params.fingerprint() } else { 0 };
                }
                Err(e) => {
                    tracing::warn!(server = %server.addr, error = %e, "could not read the session's parameters; closing it");
                    server.state.broken = true;
                }
            }
        }
        let (cache_size, cleanup) = self.server.last_pool.reuse_rules();
        if server.state.prepared.len() > cache_size {
            server.state.dirty = true;
        }
        if server.state.dirty {
            if cleanup || self.mode == PoolMode::Session {
                if let Err(e) = Box::pin(server.reset()).await {
                    tracing::warn!(server = %server.addr, error = %e, "server reset failed; closing it");
                }
            } else {
                server.state.dirty = false;
            }
        }
        self.server.last_pool.checkin_at(pooled, now);
    }

    /// The client is gone or being closed: leave its server clean.
    pub(super) async fn finish(&mut self) {
        let Binding::One(mut pooled) = std::mem::replace(&mut self.server.binding, Binding::Idle)
        else {
            return;
        };
        self.cancel.entry.clear();
        let busy = !self.server.expect.is_empty() || self.server.stream_left > 0;
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
        let pool = self.server.last_pool.clone();
        let session_mode = self.mode == PoolMode::Session;
        tokio::spawn(async move {
            let server = &mut pooled.server;
            let state = &server.state;
            let held = state.may_hold || state.held.any();
            if state.status != TxStatus::Idle
                || session_mode
                || state.dirty
                || held
                || state.changes.any()
            {
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
        // A pinned client's locks, temporary tables... went with it.
        let pinned = self.pinned();
        let (addr, told) = match std::mem::replace(&mut self.server.binding, Binding::Idle) {
            Binding::One(p) => (p.server.addr.to_string(), p.server.state.fatal),
            _ => (String::new(), false),
        };
        self.returned();
        let ban_time = self.server.last_pool.settings().ban_time;
        self.server.last_pool.ban(ban_time, "connection lost");
        tracing::warn!(client = %self.client.peer, server = %addr, "server connection lost");
        let err = Error::ServerLost(format!("the connection to server {addr} was lost"));
        if self.server.expect.is_empty()
            && self.server.stream_left == 0
            && self.tx.status == TxStatus::Idle
            && !pinned
        {
            // The client asked for nothing and had nothing there: it has
            // nothing to be told (its next statement finds another server,
            // or waits for one).
            return Flow::Continue;
        }
        // Owed answers, mid-transaction or pinned: what ran is unknown or
        // the client's state is gone. Closed, as a direct connection to a
        // server that died would be (and as pgcat does); with the server's
        // own FATAL (a shutdown's 57P01) as the only error when it sent
        // one, as Postgres ends a session with one.
        if told {
            let _ = self.flush_client().await;
        } else {
            self.fatal(&err).await;
        }
        Flow::Close
    }
}
