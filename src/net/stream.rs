//! A connection that is plain TCP, TLS or a Unix socket, on either side of
//! the proxy.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

pub enum Stream {
    Plain(TcpStream),
    /// A server reached through its Unix socket (a `host` that is a directory).
    Unix(UnixStream),
    /// A client that asked for TLS.
    TlsServer(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// A server we reached over TLS.
    TlsClient(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Nothing: while the socket is handed to a TLS handshake, and after one failed.
    Closed,
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::TlsServer(_) | Stream::TlsClient(_))
    }

    /// Reads what is there into the spare capacity of `buf` (at least
    /// `min_spare` bytes of it, grown if needed). Ready(Ok(0)) is the end of
    /// the stream.
    #[inline]
    pub fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        min_spare: usize,
    ) -> Poll<io::Result<usize>> {
        if buf.capacity() - buf.len() < min_spare {
            buf.reserve(min_spare);
        }
        let spare = buf.spare_capacity_mut();
        let mut read = ReadBuf::uninit(spare);
        match Pin::new(self).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => {
                let n = read.filled().len();
                // SAFETY: poll_read initialised the first n bytes of the
                // spare capacity (ReadBuf tracks what it filled).
                unsafe { buf.set_len(buf.len() + n) };
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Whether an idle connection was closed by its peer (or has something
    /// to say, which an idle server never does unless it is going away: a
    /// restart's FATAL, then EOF). `try_read` makes no system call and
    /// registers no waker while the reactor has seen nothing on the socket.
    /// TLS connections are not checked.
    pub fn peer_went_away(&self) -> bool {
        let mut byte = [0u8; 1];
        let read = match self {
            Stream::Plain(s) => s.try_read(&mut byte),
            Stream::Unix(s) => s.try_read(&mut byte),
            _ => return false,
        };
        !matches!(read, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Writes what the socket takes now, without waiting (one send);
    /// `WouldBlock` when it takes nothing, or for TLS, whose records need
    /// the async path.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.try_write(buf),
            Stream::Unix(s) => s.try_write(buf),
            _ => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Writes all of `buf`: one send when the socket takes it all (the usual
    /// case), the async path for the rest.
    pub async fn send_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let sent = match self.try_write(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        if sent < buf.len() {
            self.write_all(&buf[sent..]).await?;
        }
        Ok(())
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection closed")
}

impl AsyncRead for Stream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }
}
