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

/// Binds the client listener at `addr`. With `reuse_port` (PgBouncer's
/// `so_reuseport`), SO_REUSEPORT lets a new process bind the same port
/// beside this one, for a rolling restart.
pub fn bind_listener(addr: &str, reuse_port: bool) -> std::io::Result<tokio::net::TcpListener> {
    use std::net::ToSocketAddrs;
    let at = addr.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("no address for {addr}"),
        )
    })?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(at),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&at.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(socket.into())
}

/// Asks the kernel to give new connections on this port to the listener
/// that bound it after this one (the second of the SO_REUSEPORT group: the
/// process started for a rolling restart), with a one-instruction classic
/// BPF program, `return 1`. With no such listener the index is out of
/// range and the kernel picks as before.
pub fn hand_over(listener: &tokio::net::TcpListener) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // BPF_RET | BPF_K: return the constant 1.
    let mut program = [libc::sock_filter {
        code: 0x06,
        jt: 0,
        jf: 0,
        k: 1,
    }];
    let fprog = libc::sock_fprog {
        len: 1,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: a valid socket descriptor, and a sock_fprog that points at
    // `program`, alive for the call; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            std::ptr::addr_of!(fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
