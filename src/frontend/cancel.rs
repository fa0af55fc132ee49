//! Cancel requests. Each client gets a virtual BackendKeyData from us; while
//! it has a server, its entry points at that server's real key, so a
//! CancelRequest reaches the query the client is actually running.
//!
//! Several pgmlcat processes behind one address (a load balancer, a
//! rolling restart) may see a client's cancel arrive at another process
//! than the client's. With `peer_id` set, the process id of each key holds
//! it (bits 16 to 29, PgBouncer's 14-bit range, over 16 random bits), and a
//! cancel for a key of another `[peers]` entry is forwarded there.

use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
use rand::Rng;
use subtle::ConstantTimeEq;

use crate::backend::server::{send_cancel, Address};

/// The server a client's query is running on, and that server's real key.
type Target = (Arc<Address>, (i32, i32));

pub struct CancelEntry {
    secret: i32,
    target: Mutex<Option<Target>>,
}

impl CancelEntry {
    pub fn set(&self, addr: Arc<Address>, key: (i32, i32)) {
        *self.target.lock() = Some((addr, key));
    }

    pub fn clear(&self) {
        *self.target.lock() = None;
    }
}

/// The largest peer id (14 bits, as PgBouncer's).
pub const MAX_PEER_ID: u16 = 16383;
const PEER_SHIFT: u32 = 16;

/// The peer id a key's process id holds (0: none).
pub fn peer_of(pid: i32) -> u16 {
    ((pid >> PEER_SHIFT) & i32::from(MAX_PEER_ID)) as u16
}

#[derive(Default)]
pub struct CancelRegistry {
    entries: DashMap<i32, Arc<CancelEntry>>,
}

/// Removes the client's entry when its session ends.
pub struct CancelHandle {
    pub pid: i32,
    pub entry: Arc<CancelEntry>,
    registry: Arc<CancelRegistry>,
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        self.registry.entries.remove(&self.pid);
    }
}

impl CancelRegistry {
    /// A key for a new client; with `peer_id` (not 0) its process id holds
    /// the peer id (65,536 clients at once per process; beyond, plain keys).
    pub fn register(self: &Arc<Self>, peer_id: u16) -> CancelHandle {
        let mut rng = rand::thread_rng();
        let entry = Arc::new(CancelEntry {
            secret: rng.gen(),
            target: Mutex::new(None),
        });
        let mut attempt = 0u32;
        loop {
            let pid: i32 = if peer_id > 0 && attempt < 1024 {
                (i32::from(peer_id.min(MAX_PEER_ID)) << PEER_SHIFT) | rng.gen_range(0..=0xFFFF)
            } else {
                rng.gen_range(1..i32::MAX)
            };
            if let dashmap::Entry::Vacant(v) = self.entries.entry(pid) {
                v.insert(entry.clone());
                return CancelHandle {
                    pid,
                    entry,
                    registry: self.clone(),
                };
            }
            attempt = attempt.saturating_add(1);
        }
    }

    /// A cancel for a key this process did not hand out: the peer whose id
    /// the key holds, unless that is this process (never forwarded twice).
    pub fn peer_for<'a>(
        &self,
        pid: i32,
        own: u16,
        peers: &'a std::collections::BTreeMap<String, String>,
    ) -> Option<&'a str> {
        let peer = peer_of(pid);
        if own == 0 || peer == 0 || peer == own || self.entries.contains_key(&pid) {
            return None;
        }
        peers.get(&peer.to_string()).map(String::as_str)
    }

    /// Forwards a cancel to the server the client is using, if the key matches.
    pub async fn cancel(&self, pid: i32, secret: i32) {
        let target = self.entries.get(&pid).and_then(|e| {
            let ok: bool = e.secret.to_be_bytes().ct_eq(&secret.to_be_bytes()).into();
            if ok {
                e.target.lock().clone()
            } else {
                None
            }
        });
        match target {
            Some((addr, key)) => {
                if let Err(e) = send_cancel(&addr, key).await {
                    tracing::warn!(server = %addr, error = %e, "could not forward cancel request");
                }
            }
            None => tracing::debug!(pid, "cancel request for no running query"),
        }
    }
}

/// Forwards a CancelRequest as it came to the peer at `addr` ("host:port").
pub async fn forward(addr: &str, pid: i32, secret: i32) {
    let send = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        crate::backend::server::cancel_over(&mut stream, (pid, secret)).await
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), send).await {
        Ok(Ok(())) => tracing::debug!(peer = addr, pid, "cancel request forwarded to its peer"),
        Ok(Err(e)) => {
            tracing::warn!(peer = addr, error = %e, "could not forward cancel request to its peer")
        }
        Err(_) => tracing::warn!(
            peer = addr,
            "forwarding a cancel request to its peer timed out"
        ),
    }
}

pub fn secret_of(handle: &CancelHandle) -> i32 {
    handle.entry.secret
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_ids_ride_in_the_process_id() {
        let registry = Arc::new(CancelRegistry::default());
        let mut peers = std::collections::BTreeMap::new();
        peers.insert("7".to_string(), "10.0.0.7:6432".to_string());
        let mine = registry.register(3);
        assert_eq!(peer_of(mine.pid), 3);
        assert!(mine.pid > 0);
        let top = registry.register(MAX_PEER_ID);
        assert_eq!(peer_of(top.pid), MAX_PEER_ID);
        assert!(top.pid > 0);
        // Another peer's key goes to that peer; our own, and keys of no
        // known peer, do not.
        let theirs = (7 << 16) | 42;
        assert_eq!(registry.peer_for(theirs, 3, &peers), Some("10.0.0.7:6432"));
        assert_eq!(registry.peer_for(mine.pid, 3, &peers), None);
        assert_eq!(registry.peer_for((9 << 16) | 1, 3, &peers), None);
        // Without a peer id of our own, nothing is forwarded.
        assert_eq!(registry.peer_for(theirs, 0, &peers), None);
    }
}
