//! The socket as hyper sees it: a shared [`TcpStream`] that tells the connection's
//! [`Activity`] when the first byte of a request arrives, and that the connection's task can
//! still write to after hyper has given the connection up (a 408 for a head that did not
//! arrive in time).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::conn::Activity;

pub(super) struct Io {
    tcp: Arc<TcpStream>,
    activity: Arc<Activity>,
}

impl Io {
    pub(super) fn new(tcp: Arc<TcpStream>, activity: Arc<Activity>) -> Self {
        Io { tcp, activity }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.tcp.poll_read_ready(cx))?;
            match self.tcp.try_read_buf(buf) {
                Ok(n) => {
                    if n > 0 {
                        self.activity.bytes_arrived();
                    }
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            match self.tcp.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            match self.tcp.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Ends the sending side only: the socket closes when the connection's task lets it go,
    /// after a lingering read when the client may still be sending.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        shutdown_write(&self.tcp);
        Poll::Ready(Ok(()))
    }
}

/// Sends the end of stream (FIN) while the socket stays open for reading. Through a duplicate
/// of the descriptor: tokio shuts a stream down only through `&mut`, and the socket is shared.
fn shutdown_write(tcp: &TcpStream) {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd as _;
        if let Ok(fd) = tcp.as_fd().try_clone_to_owned() {
            let _ = std::net::TcpStream::from(fd).shutdown(std::net::Shutdown::Write);
        }
    }
    #[cfg(not(unix))]
    let _ = tcp;
}

/// Writes `bytes` to `tcp` and ends the sending side, then reads and discards what the client
/// still sends until it closes its side or `linger` passes: closing with unread bytes would
/// reset the connection, and the client could lose the answer.
pub(super) async fn answer_and_linger(tcp: &TcpStream, bytes: &[u8], linger: std::time::Duration) {
    let _ = tokio::time::timeout(linger, async {
        let mut written = 0;
        while written < bytes.len() {
            if tcp.writable().await.is_err() {
                return;
            }
            match tcp.try_write(&bytes[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
        shutdown_write(tcp);
        let mut sink = [0u8; 8192];
        loop {
            if tcp.readable().await.is_err() {
                return;
            }
            match tcp.try_read(&mut sink) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    })
    .await;
}
