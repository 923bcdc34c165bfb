//! The API's HTTP server: an accept loop under a connection cap, and hyper serving each
//! connection with the timeouts of `[http]` (see `config.default.toml` and
//! `docs/robustness.md`).
//!
//! - [`conn`]: one connection, its idle and head deadlines, shedding at the cap;
//! - [`request`]: one request, its body's deadline, draining what a handler left unread;
//! - [`io`]: the socket as hyper sees it.

mod conn;
mod io;
mod request;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::config::Config;

/// The limits one connection and its requests are held to.
#[derive(Clone, Debug)]
pub struct Limits {
    /// From a request's first byte until its head is whole.
    pub header_read: Duration,
    /// From a request's head until its body is whole.
    pub request: Duration,
    /// Waiting for a request.
    pub idle: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// `max_body_bytes`: the drain reads up to twice this of a body in all.
    pub max_body: usize,
}

impl Limits {
    /// The limits `config` sets.
    pub fn of(config: &Config) -> Limits {
        let h = &config.http;
        Limits {
            header_read: Duration::from_secs_f64(h.header_read_timeout_secs),
            request: Duration::from_secs_f64(h.request_timeout_secs),
            idle: Duration::from_secs_f64(h.idle_timeout_secs),
            max_connections: h.max_connections,
            max_body: config.max_body_bytes,
        }
    }

    #[cfg(test)]
    fn for_tests() -> Limits {
        Limits {
            header_read: Duration::from_secs(10),
            request: Duration::from_secs(30),
            idle: Duration::from_secs(60),
            max_connections: 8,
            max_body: 1024,
        }
    }
}

/// What the HTTP server has done, for tests; each count also goes to the process's metrics
/// (`crmhooks_http_*`, docs/metrics.md).
#[derive(Debug, Default)]
pub struct Stats {
    open: AtomicUsize,
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections that waited for a place under the cap.
    pub waited: AtomicU64,
    /// Closed after `idle_timeout_secs` without a request.
    pub idle_closed: AtomicU64,
    /// Closed (with a 408) when a head did not arrive within `header_read_timeout_secs`.
    pub header_timeouts: AtomicU64,
    /// Answered 408 when a body did not arrive within `request_timeout_secs`.
    pub body_timeouts: AtomicU64,
    /// Closed at the cap, waiting for a request, to make room for a new connection.
    pub shed: AtomicU64,
}

/// Why a connection or a request was cut off (the `reason` of `crmhooks_http_cut_off_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cut {
    Idle,
    HeaderTimeout,
    BodyTimeout,
    Shed,
}

impl Cut {
    fn label(self) -> &'static str {
        match self {
            Cut::Idle => "idle",
            Cut::HeaderTimeout => "header_timeout",
            Cut::BodyTimeout => "body_timeout",
            Cut::Shed => "shed",
        }
    }
}

/// Counts an open connection until dropped.
pub(crate) struct OpenGuard<'a>(&'a Stats);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("crmhooks_http_connections_open").decrement(1.0);
    }
}

impl Stats {
    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn opened(&self) -> OpenGuard<'_> {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.accepted.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("crmhooks_http_connections_open").increment(1.0);
        metrics::counter!("crmhooks_http_connections_total").increment(1);
        OpenGuard(self)
    }

    fn waited(&self) {
        self.waited.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("crmhooks_http_connections_waited_total").increment(1);
    }

    /// Counts a connection or request cut off.
    pub(crate) fn cut(&self, why: Cut) {
        let counter = match why {
            Cut::Idle => &self.idle_closed,
            Cut::HeaderTimeout => &self.header_timeouts,
            Cut::BodyTimeout => &self.body_timeouts,
            Cut::Shed => &self.shed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("crmhooks_http_cut_off_total", "reason" => why.label()).increment(1);
    }
}

/// Serves `app` on `listener` until `shutdown` turns true; then stops accepting, lets each
/// connection finish its request, and waits for them at most `grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stats: Arc<Stats>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let limits = Arc::new(limits);
    let places = Arc::new(Semaphore::new(limits.max_connections));
    let (pressure, pressure_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let tcp = match accepted {
            Ok((tcp, _peer)) => tcp,
            Err(e) => {
                // A connection that failed before it was accepted is the client's; running out
                // of file descriptors is ours, and passes only as connections close.
                tracing::warn!(error = %e, "cannot accept a connection");
                if !is_connection_error(&e) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        let place = match places.clone().try_acquire_owned() {
            Ok(place) => place,
            Err(_) => {
                stats.waited();
                // Connections waiting for a request make room (see conn::SHED_AFTER).
                pressure.send_replace(true);
                let place = tokio::select! {
                    p = places.clone().acquire_owned() => p,
                    _ = shutdown.wait_for(|stop| *stop) => break,
                };
                pressure.send_replace(false);
                match place {
                    Ok(place) => place,
                    Err(_) => break,
                }
            }
        };
        connections.spawn(conn::run(
            tcp,
            app.clone(),
            limits.clone(),
            stats.clone(),
            pressure_rx.clone(),
            shutdown.clone(),
            place,
        ));
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    drop(pressure);
    let finished = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            open = connections.len(),
            "connections still open after the shutdown grace are closed"
        );
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
