//! Socket options shared by client and server connections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

/// `tcp_keepalives_idle`, `_interval` (seconds) and `_count`, packed in one
/// word so a socket never sees half of a reload: 24 bits each.
static KEEPALIVE: AtomicU64 = AtomicU64::new(pack(5, 5, 5));

const fn pack(idle: u64, interval: u64, count: u64) -> u64 {
    const MASK: u64 = (1 << 24) - 1;
    (idle & MASK) << 48 | (interval & MASK) << 24 | (count & MASK)
}

/// Sets the keepalives of connections opened from now on (from `[general]`
/// at start and on every reload; pgcat's keys and defaults, 5/5/5).
pub fn set_keepalives(idle_secs: u64, interval_secs: u64, count: u32) {
    KEEPALIVE.store(
        pack(idle_secs, interval_secs, count.into()),
        Ordering::Relaxed,
    );
}

/// Enables TCP keepalives so dead peers are noticed.
pub fn keepalive(stream: &TcpStream) {
    const MASK: u64 = (1 << 24) - 1;
    let k = KEEPALIVE.load(Ordering::Relaxed);
    let ka = TcpKeepalive::new()
        .with_time(Duration::from_secs((k >> 48).max(1)))
        .with_interval(Duration::from_secs(((k >> 24) & MASK).max(1)))
        .with_retries(((k & MASK) as u32).max(1));
    if let Err(e) = SockRef::from(stream).set_tcp_keepalive(&ka) {
        tracing::debug!(error = %e, "could not set TCP keepalive");
    }
}
