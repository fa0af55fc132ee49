//! Counters and the live list of connections behind SHOW commands and
//! /metrics. The hot path only bumps relaxed atomics; everything else is
//! computed when an operator asks.

pub mod prometheus;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use dashmap::DashMap;

/// Traffic counters of one (database, user) pool.
#[derive(Default)]
pub struct Counters {
    pub xacts: AtomicU64,
    pub queries: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub xact_micros: AtomicU64,
    pub errors: AtomicU64,
}

impl Counters {
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A client's state as SHOW CLIENTS/POOLS report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientState {
    /// Logged in, no server.
    Idle = 0,
    /// Waiting for a server.
    Waiting = 1,
    /// Holding a server.
    Active = 2,
}

impl ClientState {
    /// As SHOW CLIENTS and /metrics name it.
    pub fn name(self) -> &'static str {
        match self {
            ClientState::Idle => "idle",
            ClientState::Waiting => "waiting",
            ClientState::Active => "active",
        }
    }
}

pub struct ClientInfo {
    pub addr: SocketAddr,
    pub database: String,
    pub user: String,
    pub application_name: String,
    pub connected_at: SystemTime,
    /// An admin console session (not a pool's client).
    pub admin: bool,
    state: AtomicU8,
    /// What keeps its server pinned (`backend::held::Kinds` bits; 0: none).
    pinned: AtomicU8,
    /// Micros since `since` when the client started waiting (0: not waiting).
    wait_started: AtomicU64,
    since: Instant,
    /// Its own traffic, for pgcat's SHOW CLIENTS.
    pub xacts: AtomicU64,
    pub queries: AtomicU64,
    pub errors: AtomicU64,
    /// The longest it has waited for a server, in µs.
    max_wait: AtomicU64,
}

impl ClientInfo {
    #[inline]
    pub fn set_state(&self, s: ClientState) {
        self.state.store(s as u8, Ordering::Relaxed);
        if s == ClientState::Waiting {
            let mark = self.since.elapsed().as_micros() as u64 + 1;
            self.wait_started.store(mark, Ordering::Relaxed);
        } else if self.wait_started.load(Ordering::Relaxed) != 0 {
            // A wait ended: remember it if it was the longest.
            self.max_wait
                .fetch_max(self.waiting_micros(), Ordering::Relaxed);
            self.wait_started.store(0, Ordering::Relaxed);
        }
    }

    /// The longest wait for a server so far (the current one included).
    pub fn max_wait_micros(&self) -> u64 {
        self.max_wait
            .load(Ordering::Relaxed)
            .max(self.waiting_micros())
    }

    pub fn state(&self) -> ClientState {
        match self.state.load(Ordering::Relaxed) {
            1 => ClientState::Waiting,
            2 => ClientState::Active,
            _ => ClientState::Idle,
        }
    }

    pub fn set_pinned(&self, kinds: crate::backend::held::Kinds) {
        self.pinned.store(kinds.bits(), Ordering::Relaxed);
    }

    /// What keeps the client's server pinned (empty: nothing).
    pub fn pinned(&self) -> crate::backend::held::Kinds {
        crate::backend::held::Kinds::from_bits(self.pinned.load(Ordering::Relaxed))
    }

    /// How long the client has been waiting for a server, in microseconds.
    pub fn waiting_micros(&self) -> u64 {
        match self.wait_started.load(Ordering::Relaxed) {
            0 => 0,
            t => (self.since.elapsed().as_micros() as u64 + 1).saturating_sub(t),
        }
    }
}

pub struct ServerInfo {
    pub addr: String,
    pub database: String,
    pub user: String,
    pub connected_at: SystemTime,
    pub remote_pid: i32,
    active: std::sync::atomic::AtomicBool,
}

impl ServerInfo {
    pub fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    #[inline]
    pub fn set_active(&self, active: bool) {
        self.active.store(active, Ordering::Relaxed);
    }
}

/// Removes a server connection from the list when dropped.
pub struct ServerHandle {
    id: u64,
    pub info: Arc<ServerInfo>,
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        connections().servers.remove(&self.id);
    }
}

/// Every client and server connection of the process, by id.
#[derive(Default)]
pub struct Connections {
    next_id: AtomicU64,
    pub clients: DashMap<u64, Arc<ClientInfo>>,
    pub servers: DashMap<u64, Arc<ServerInfo>>,
}

/// Removes a client from the list when dropped.
pub struct ClientHandle {
    pub id: u64,
    pub info: Arc<ClientInfo>,
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        connections().clients.remove(&self.id);
    }
}

impl Connections {
    /// Every client, oldest first (ids grow), for SHOW CLIENTS.
    pub fn clients_in_order(&self) -> Vec<(u64, Arc<ClientInfo>)> {
        let mut rows: Vec<_> = self
            .clients
            .iter()
            .map(|e| (*e.key(), e.value().clone()))
            .collect();
        rows.sort_by_key(|(id, _)| *id);
        rows
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn add_server(
        &self,
        addr: String,
        database: &str,
        user: &str,
        remote_pid: i32,
    ) -> ServerHandle {
        let id = self.next_id();
        let info = Arc::new(ServerInfo {
            addr,
            database: database.to_string(),
            user: user.to_string(),
            connected_at: SystemTime::now(),
            remote_pid,
            active: std::sync::atomic::AtomicBool::new(false),
        });
        self.servers.insert(id, info.clone());
        ServerHandle { id, info }
    }

    /// Clients of pools (admin sessions aside).
    pub fn pool_clients(&self) -> usize {
        self.clients.iter().filter(|c| !c.admin).count()
    }

    pub fn add_client(
        &self,
        addr: SocketAddr,
        database: &str,
        user: &str,
        application_name: &str,
        admin: bool,
    ) -> ClientHandle {
        let id = self.next_id();
        let info = Arc::new(ClientInfo {
            addr,
            database: database.to_string(),
            user: user.to_string(),
            application_name: application_name.to_string(),
            connected_at: SystemTime::now(),
            admin,
            state: AtomicU8::new(ClientState::Idle as u8),
            pinned: AtomicU8::new(0),
            wait_started: AtomicU64::new(0),
            since: Instant::now(),
            xacts: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            max_wait: AtomicU64::new(0),
        });
        self.clients.insert(id, info.clone());
        ClientHandle { id, info }
    }
}

/// The process-wide list of connections (like a metrics registry: one per
/// process), for SHOW CLIENTS/SERVERS and /metrics.
pub fn connections() -> &'static Connections {
    static CONNECTIONS: OnceLock<Connections> = OnceLock::new();
    CONNECTIONS.get_or_init(Connections::default)
}

/// Seconds since the Unix epoch, for SHOW output.
pub fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
