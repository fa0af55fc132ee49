//! The floor for a proxy built on tokio (benches/pgbench.sh's `tokio`
//! target): what benches/floor_proxy.c does, on the runtime pgmlcat runs on.
//! One current-thread runtime, one task per client with its own server
//! connection, each read copied to the other side with one write. No
//! parsing, no pooling, no auth.
//!
//! The C floor bounds what any proxy can reach on the machine; this one
//! bounds what a proxy can reach on tokio: its user CPU per transaction is
//! the runtime's own cost (task wake-ups, the reactor, readiness bookkeeping)
//! that pgmlcat pays before doing anything of its own.
//!
//! Usage: floor_tokio LISTEN_PORT SERVER_PORT      (both on 127.0.0.1)

use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(server)) = (
        args.get(1).and_then(|p| p.parse::<u16>().ok()),
        args.get(2).and_then(|p| p.parse::<u16>().ok()),
    ) else {
        eprintln!("usage: floor_tokio LISTEN_PORT SERVER_PORT");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", listen)).await?;
        loop {
            let (client, _) = listener.accept().await?;
            tokio::spawn(async move {
                if let Err(e) = relay(client, server).await {
                    eprintln!("floor_tokio: {e}");
                }
            });
        }
    })
}

/// Copies each read from one side to the other until either side closes.
async fn relay(mut client: TcpStream, server_port: u16) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let mut server = TcpStream::connect(("127.0.0.1", server_port)).await?;
    server.set_nodelay(true)?;
    let mut from_client = vec![0u8; 16384];
    let mut from_server = vec![0u8; 16384];
    loop {
        // Whichever side has bytes first; the client is polled first, as a
        // pooler polls the socket a transaction starts on.
        let (to_server, n) = poll_fn(|cx| {
            let mut read = ReadBuf::new(&mut from_client);
            if let Poll::Ready(r) = Pin::new(&mut client).poll_read(cx, &mut read) {
                return Poll::Ready(r.map(|()| (true, read.filled().len())));
            }
            let mut read = ReadBuf::new(&mut from_server);
            if let Poll::Ready(r) = Pin::new(&mut server).poll_read(cx, &mut read) {
                return Poll::Ready(r.map(|()| (false, read.filled().len())));
            }
            Poll::Pending
        })
        .await?;
        if n == 0 {
            return Ok(());
        }
        let (to, bytes) = if to_server {
            (&mut server, &from_client[..n])
        } else {
            (&mut client, &from_server[..n])
        };
        // One send when the socket takes it all, as pgmlcat does.
        let sent = match to.try_write(bytes) {
            Ok(sent) => sent,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        if sent < n {
            to.write_all(&bytes[sent..]).await?;
        }
    }
}
