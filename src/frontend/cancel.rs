//! Cancel requests. Each client gets a virtual BackendKeyData from us; while
//! it has a server, its entry points at that server's real key, so a
//! CancelRequest reaches the query the client is actually running.

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
    pub fn register(self: &Arc<Self>) -> CancelHandle {
        let mut rng = rand::thread_rng();
        let entry = Arc::new(CancelEntry {
            secret: rng.gen(),
            target: Mutex::new(None),
        });
        loop {
            let pid: i32 = rng.gen_range(1..i32::MAX);
            if let dashmap::Entry::Vacant(v) = self.entries.entry(pid) {
                v.insert(entry.clone());
                return CancelHandle {
                    pid,
                    entry,
                    registry: self.clone(),
                };
            }
        }
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

pub fn secret_of(handle: &CancelHandle) -> i32 {
    handle.entry.secret
}
