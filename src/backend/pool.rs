//! The connections to one server for one (database, user): an idle stack,
//! a semaphore of `pool_size` permits, and the rules for reuse.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::health::{parse_observation, Health, Observation, MONITOR_SQL};
use super::server::{Address, Credentials, Server};
use crate::config::PoolMode;
use crate::errors::{Error, Result};
use crate::net::messages::TxStatus;

/// How to reach a pool's servers over TLS (None: plain).
pub type ServerTls = (crate::net::tls::SslMode, tokio_rustls::TlsConnector);

/// Settings that a reload may change without replacing the pool.
#[derive(Clone)]
pub struct PoolSettings {
    pub pool_size: u32,
    pub min_pool_size: u32,
    pub mode: PoolMode,
    pub connect_timeout: Duration,
    pub checkout_timeout: Duration,
    pub idle_timeout: Duration,
    pub server_lifetime: Duration,
    /// Startup parameters for new server connections (statement_timeout...).
    pub server_params: Vec<(String, String)>,
    pub credentials: Credentials,
    /// Most prepared statements one server connection keeps before a reset.
    pub prepared_cache_size: usize,
    pub cleanup_server_connections: bool,
    pub ban_time: Duration,
    pub tls: Option<ServerTls>,
    pub healthcheck_delay: Duration,
    pub healthcheck_timeout: Duration,
}

#[derive(Default)]
pub struct PoolStats {
    pub checkouts: AtomicU64,
    pub connects: AtomicU64,
    pub connect_errors: AtomicU64,
    pub exhausted: AtomicU64,
    pub wait_micros: AtomicU64,
}

/// The settings read at every checkout and checkin, as plain numbers so the
/// hot path takes no reference on the settings; `update` writes them.
#[derive(Default)]
struct Reuse {
    lifetime_ms: AtomicU64,
    idle_ms: AtomicU64,
    healthcheck_ms: AtomicU64,
    prepared_cache_size: AtomicUsize,
    cleanup: AtomicBool,
}

impl Reuse {
    fn set(&self, s: &PoolSettings) {
        let ms = |d: Duration| d.as_millis().min(u64::MAX as u128) as u64;
        self.lifetime_ms
            .store(ms(s.server_lifetime), Ordering::Relaxed);
        self.idle_ms.store(ms(s.idle_timeout), Ordering::Relaxed);
        self.healthcheck_ms
            .store(ms(s.healthcheck_delay), Ordering::Relaxed);
        self.prepared_cache_size
            .store(s.prepared_cache_size, Ordering::Relaxed);
        self.cleanup
            .store(s.cleanup_server_connections, Ordering::Relaxed);
    }
}

/// What an idle server is fit for.
enum Fitness {
    /// Too old, idle too long or broken: closed.
    Retire,
    /// Idle past healthcheck_delay: checked before a client gets it.
    CheckFirst,
    Ready,
}

/// Milliseconds since the process started, the clock servers' ages are
/// kept in (plain integers, compared without Instant arithmetic).
pub fn millis(now: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    now.saturating_duration_since(epoch).as_millis() as u64
}

pub struct ServerPool {
    pub addr: Arc<Address>,
    /// "database/user", for messages.
    pub name: String,
    settings: ArcSwap<PoolSettings>,
    reuse: Reuse,
    /// Boxed: a server moves between this list and a client's session by
    /// pointer, and a session between transactions holds none of it.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<Server>>>,
    permits: Arc<Semaphore>,
    /// Permits currently in circulation (follows pool_size across reloads).
    size: AtomicU32,
    pub stats: PoolStats,
    /// Server-side names of statements some server of this pool has parsed
    /// successfully. A client preparing one of these outside a transaction
    /// is answered without a server (the Parse is replayed where needed), so
    /// clients that prepare synchronously cannot deadlock on a full pool.
    known_statements: parking_lot::RwLock<HashSet<String>>,
    pub health: Health,
    /// The monitor's own connection (replicated shards only).
    monitor: tokio::sync::Mutex<Option<Server>>,
}

/// A server on loan to one client. Hand it back with [`ServerPool::checkin`].
pub struct Pooled {
    pub server: Box<Server>,
    /// When it was checked out.
    pub since: Instant,
    _permit: OwnedSemaphorePermit,
}

impl Pooled {
    fn new(server: Box<Server>, permit: OwnedSemaphorePermit, since: Instant) -> Pooled {
        if let Some(s) = &server.stats {
            s.info.set_active(true);
        }
        Pooled {
            server,
            since,
            _permit: permit,
        }
    }
}

impl ServerPool {
    pub fn new(addr: Arc<Address>, name: String, settings: PoolSettings) -> Arc<ServerPool> {
        let size = settings.pool_size;
        let reuse = Reuse::default();
        reuse.set(&settings);
        Arc::new(ServerPool {
            name,
            reuse,
            settings: ArcSwap::from_pointee(settings),
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size as usize)),
            size: AtomicU32::new(size),
            stats: PoolStats::default(),
            known_statements: parking_lot::RwLock::new(HashSet::new()),
            health: Health::new(addr.role),
            monitor: tokio::sync::Mutex::new(None),
            addr,
        })
    }

    pub fn settings(&self) -> Arc<PoolSettings> {
        self.settings.load_full()
    }

    /// Applies new settings; a new pool_size takes effect at once for waiters.
    pub fn update(&self, settings: PoolSettings) {
        let new = settings.pool_size;
        let old = self.size.swap(new, Ordering::SeqCst);
        // A new login, or new rules for what a connection may carry
        // (prepared statements, cleanup, mode), retires the idle ones:
        // pgcat recreates a changed pool, so its prepared statement cache
        // starts empty. A new pool_size or timeout alone keeps them.
        let credentials_changed = {
            let cur = self.settings.load();
            cur.credentials.user != settings.credentials.user
                || cur.credentials.password != settings.credentials.password
                || cur.server_params != settings.server_params
                || cur.tls.as_ref().map(|t| t.0) != settings.tls.as_ref().map(|t| t.0)
                || cur.prepared_cache_size != settings.prepared_cache_size
                || cur.cleanup_server_connections != settings.cleanup_server_connections
                || cur.mode != settings.mode
        };
        self.reuse.set(&settings);
        self.settings.store(Arc::new(settings));
        if credentials_changed {
            // Connections logged in the old way are retired.
            self.idle.lock().clear();
        }
        if new > old {
            self.permits.add_permits((new - old) as usize);
        } else if new < old {
            // Take the surplus permits out of circulation as they come back.
            let permits = self.permits.clone();
            tokio::spawn(async move {
                if let Ok(p) = permits.acquire_many_owned(old - new).await {
                    p.forget();
                }
            });
        }
    }

    /// The fast path of `checkout`, without waiting: a free permit and an
    /// idle server fit for reuse with no health check due. None otherwise
    /// (then call `checkout`).
    pub fn try_checkout(&self) -> Option<Pooled> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        let now = Instant::now();
        let now_ms = millis(now);
        let mut idle = self.idle.lock();
        while let Some(server) = idle.pop() {
            match self.fitness(&server, now_ms) {
                Fitness::Retire => continue, // dropped: the connection closes
                Fitness::CheckFirst => {
                    idle.push(server); // `checkout` checks it first
                    return None;
                }
                Fitness::Ready => {
                    drop(idle);
                    self.stats.checkouts.fetch_add(1, Ordering::Relaxed);
                    return Some(Pooled::new(server, permit, now));
                }
            }
        }
        None
    }

    fn fitness(&self, server: &Server, now_ms: u64) -> Fitness {
        let r = &self.reuse;
        let age = now_ms.saturating_sub(server.created_ms);
        let idle = now_ms.saturating_sub(server.used_ms);
        if server.state.broken
            || age >= r.lifetime_ms.load(Ordering::Relaxed)
            || idle >= r.idle_ms.load(Ordering::Relaxed)
            // Closed while idle (a restart, a failover, a killed backend):
            // seen here, before a client's statement is sent into it.
            || server.stream.peer_went_away()
        {
            Fitness::Retire
        } else if idle >= r.healthcheck_ms.load(Ordering::Relaxed) {
            Fitness::CheckFirst
        } else {
            Fitness::Ready
        }
    }

    /// Waits up to `checkout_timeout` for a permit, then reuses an idle server
    /// or connects a new one.
    /// The time it takes counts as the client's wait (SHOW STATS): a
    /// client here found no idle server at once.
    pub async fn checkout(&self) -> Result<Pooled> {
        let started = Instant::now();
        let pooled = self.checkout_unmeasured().await;
        self.stats
            .wait_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        pooled
    }

    async fn checkout_unmeasured(&self) -> Result<Pooled> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => self.wait_for_permit().await?,
        };
        self.stats.checkouts.fetch_add(1, Ordering::Relaxed);
        let now_ms = millis(Instant::now());
        while let Some(mut server) = self.pop_idle() {
            match self.fitness(&server, now_ms) {
                Fitness::Retire => continue,
                Fitness::Ready => {}
                // The rare paths (health check, new connection) are boxed:
                // inline, their futures would make every client session's
                // future larger.
                Fitness::CheckFirst => {
                    let settings = self.settings();
                    if !Box::pin(self.healthy(&mut server, settings.healthcheck_timeout)).await {
                        self.ban(settings.ban_time, "health check failed");
                        continue;
                    }
                }
            }
            return Ok(Pooled::new(server, permit, Instant::now()));
        }
        let settings = self.settings();
        let server = Box::pin(self.connect(&settings)).await?;
        Ok(Pooled::new(Box::new(server), permit, Instant::now()))
    }

    /// The slow path: every permit is out; wait in line up to checkout_timeout.
    async fn wait_for_permit(&self) -> Result<OwnedSemaphorePermit> {
        let (timeout, pool_size) = {
            let s = self.settings.load();
            (s.checkout_timeout, s.pool_size)
        };
        let started = Instant::now();
        let waited = tokio::time::timeout(timeout, self.permits.clone().acquire_owned()).await;
        match waited {
            Ok(Ok(p)) => Ok(p),
            _ => {
                self.stats.exhausted.fetch_add(1, Ordering::Relaxed);
                Err(Error::PoolExhausted {
                    pool: self.name.clone(),
                    pool_size,
                    waited_ms: started.elapsed().as_millis() as u64,
                })
            }
        }
    }

    fn pop_idle(&self) -> Option<Box<Server>> {
        self.idle.lock().pop()
    }

    /// (prepared_statements_cache_size, cleanup_server_connections).
    pub fn reuse_rules(&self) -> (usize, bool) {
        let r = &self.reuse;
        (
            r.prepared_cache_size.load(Ordering::Relaxed),
            r.cleanup.load(Ordering::Relaxed),
        )
    }

    pub async fn connect(&self, settings: &PoolSettings) -> Result<Server> {
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        let result = Server::connect(
            self.addr.clone(),
            &settings.credentials,
            &settings.server_params,
            settings.tls.as_ref(),
            settings.connect_timeout,
        )
        .await;
        let mut result = result;
        if let Ok(server) = &mut result {
            server.stats = Some(crate::stats::connections().add_server(
                format!("{}:{}", self.addr.host, self.addr.port),
                &self.addr.database,
                &settings.credentials.user,
                server.key.0,
            ));
        }
        if let Err(e) = &result {
            self.stats.connect_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(pool = %self.name, server = %self.addr, error = %e, "server connection failed");
            if matches!(e, Error::ServerUnavailable { .. }) {
                self.health.unreachable();
                self.ban(settings.ban_time, "connection failed");
            }
        }
        result
    }

    /// An empty query answered within `timeout`.
    async fn healthy(&self, server: &mut Server, timeout: Duration) -> bool {
        matches!(
            tokio::time::timeout(timeout, server.execute(";")).await,
            Ok(Ok(()))
        )
    }

    pub fn ban(&self, ban_time: Duration, why: &str) {
        if self.health.ban(ban_time) {
            tracing::warn!(server = %self.addr, pool = %self.name, "banned for {} s: {why}", ban_time.as_secs());
            self.idle.lock().clear();
        }
    }

    /// Asks the server what it is (role, WAL position) over the monitor's
    /// own connection. None, and a ban, when it does not answer in time.
    pub async fn observe(&self) -> Option<Observation> {
        let settings = self.settings();
        let mut slot = self.monitor.lock().await;
        let attempt = async {
            if slot.is_none() {
                let mut params = settings.server_params.clone();
                params.push(("application_name".into(), "pgmlcat-monitor".into()));
                *slot = Some(
                    Server::connect(
                        self.addr.clone(),
                        &settings.credentials,
                        &params,
                        settings.tls.as_ref(),
                        settings.connect_timeout,
                    )
                    .await?,
                );
            }
            match slot.as_mut() {
                Some(server) => server.query_row(MONITOR_SQL).await,
                None => Ok(None),
            }
        };
        let limit = settings.connect_timeout + settings.healthcheck_timeout;
        match tokio::time::timeout(limit, attempt).await {
            Ok(Ok(Some(row))) => {
                let o = parse_observation(&row);
                if let Some(o) = o {
                    self.health.observed(o);
                }
                o
            }
            outcome => {
                *slot = None;
                let was_reachable = self.health.reachable();
                self.health.unreachable();
                if was_reachable {
                    tracing::warn!(server = %self.addr, ?outcome, "server did not answer the monitor");
                }
                self.ban(settings.ban_time, "monitor check failed");
                None
            }
        }
    }

    /// Takes a server back. The caller has already reset it if it was dirty
    /// and read its parameters if a client touched them; anything not clean
    /// and idle is closed instead of reused.
    pub fn checkin(&self, pooled: Pooled) {
        self.checkin_at(pooled, Instant::now())
    }

    /// `checkin` when the caller already read the clock.
    pub fn checkin_at(&self, pooled: Pooled, now: Instant) {
        let Pooled {
            mut server,
            _permit,
            ..
        } = pooled;
        if server.state.broken
            || server.state.dirty
            || server.state.may_hold
            || server.state.held.any()
            || server.state.changes.any()
            || server.state.status != TxStatus::Idle
            || !server.buf.is_empty()
        {
            return; // dropped: the connection closes
        }
        let now_ms = millis(now);
        if now_ms.saturating_sub(server.created_ms)
            >= self.reuse.lifetime_ms.load(Ordering::Relaxed)
        {
            return;
        }
        server.used_ms = now_ms;
        server.resend = super::server::Resend::Off;
        if let Some(s) = &server.stats {
            s.info.set_active(false); // SHOW SERVERS: idle again
        }
        self.idle.lock().push(server);
    }

    /// Closes idle connections past idle_timeout/server_lifetime (keeping
    /// min_pool_size) and opens connections up to min_pool_size.
    pub async fn maintain(&self) {
        let settings = self.settings();
        {
            let mut idle = self.idle.lock();
            let keep = settings.min_pool_size as usize;
            let mut i = 0;
            while i < idle.len() {
                let s = &idle[i];
                let expired = s.created.elapsed() >= settings.server_lifetime;
                let stale = s.idle_for() >= settings.idle_timeout && idle.len() > keep;
                if expired || stale {
                    idle.swap_remove(i);
                } else {
                    i += 1;
                }
            }
        }
        let in_use = settings.pool_size as usize
            - self
                .permits
                .available_permits()
                .min(settings.pool_size as usize);
        let have = self.idle.lock().len() + in_use;
        for _ in have..settings.min_pool_size as usize {
            match self.connect(&settings).await {
                Ok(mut s) => {
                    s.used_ms = millis(Instant::now());
                    self.idle.lock().push(Box::new(s));
                }
                Err(_) => break,
            }
        }
    }

    pub fn statement_known(&self, global: &str) -> bool {
        self.known_statements.read().contains(global)
    }

    pub fn statement_parsed(&self, global: &str) {
        if !self.statement_known(global) {
            self.known_statements.write().insert(global.to_string());
        }
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().len()
    }

    /// Drops the monitor connection (pool removed or server unused).
    pub async fn stop_monitor(&self) {
        *self.monitor.lock().await = None;
    }

    pub fn active_count(&self) -> usize {
        let size = self.size.load(Ordering::Relaxed) as usize;
        size.saturating_sub(self.permits.available_permits())
    }
}
