//! One HTTP/1.1 connection of hyper's own client, and the loopback URLs the children print.

use std::net::SocketAddr;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

/// The address and path of `http://IP:PORT[/PATH]`, as the server child, the relay child and
/// the receiver print their URLs (no names to resolve).
pub(crate) fn loopback_url(url: &str) -> anyhow::Result<(SocketAddr, &str)> {
    url.strip_prefix("http://")
        .and_then(|rest| {
            let (addr, path) = rest.split_once('/').unwrap_or((rest, ""));
            Some((addr.parse::<SocketAddr>().ok()?, path))
        })
        .with_context(|| format!("{url:?} is not http://IP:PORT[/PATH]"))
}

/// One HTTP/1.1 keep-alive connection of hyper's own client (`client::conn::http1`): no pool
/// and no checkout, the cheapest way hyper sends a request (hyper-util's pooled client, which
/// the raw baseline used before, made fewer POSTs per second). The raw baseline, the load's API
/// clients and the relay's deliveries use it, so that the baseline is the fastest stack on this
/// machine and the load generator takes as little of the shared cores as it can.
pub(crate) struct Conn {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: hyper::header::HeaderValue,
}

impl Conn {
    /// Connects to `addr` (no delay on small writes).
    pub(crate) async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP/1.1 handshake with {addr}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            send,
            host: hyper::header::HeaderValue::from_str(&addr.to_string())?,
        })
    }

    /// The server closed the connection (or it failed): open another.
    pub(crate) fn is_closed(&self) -> bool {
        self.send.is_closed()
    }

    /// The connection in `slot` while it is open, else a new one to `addr` put there.
    pub(crate) async fn in_slot(
        slot: &mut Option<Conn>,
        addr: SocketAddr,
    ) -> anyhow::Result<&mut Conn> {
        if slot.as_ref().is_some_and(Conn::is_closed) {
            *slot = None;
        }
        match slot {
            Some(conn) => Ok(conn),
            None => Ok(slot.insert(Conn::open(addr).await?)),
        }
    }

    /// Sends `req` (a path as its URI; the Host header is added) and reads the whole answer.
    pub(crate) async fn send(
        &mut self,
        mut req: Request<Full<Bytes>>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        req.headers_mut()
            .insert(hyper::header::HOST, self.host.clone());
        self.send.ready().await?;
        let resp = self.send.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}
