//! One connection: hyper serves it, and its task watches the clock. Between requests a
//! connection is idle (closed after `idle_timeout_secs`); from a request's first byte until
//! its head is whole it is reading the head (408 after `header_read_timeout_secs`); while a
//! request is served nothing cuts it (its body has its own deadline, see `request`). When the
//! server is at its connection cap, connections idle or reading a head for a second or more
//! are closed to make room.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::io::{answer_and_linger, Io};
use super::{Cut, Limits, Stats};
use crate::error::{ApiError, ErrorCode};

/// How long a connection must have been waiting for (the rest of) a request before it is
/// closed to make room for a new one at the cap: long enough for a client that has just
/// connected to send its request.
pub(super) const SHED_AFTER: Duration = Duration::from_secs(1);

/// How long the answer to a connection cut off mid-request may take to write, and how long
/// its socket then lingers to read what the client still sends (a client that reads the
/// answer and closes ends it at once).
const LINGER: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request since then.
    Idle(Instant),
    /// A request's head started arriving then.
    Head(Instant),
    /// A request is being served.
    Busy,
}

/// What the connection is doing, told by its socket and its service, read by its task.
pub(super) struct Activity {
    phase: Mutex<Phase>,
    changed: Notify,
    /// An answer went out with `Connection: close` while the client may still be sending.
    linger: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Activity {
            phase: Mutex::new(Phase::Idle(Instant::now())),
            changed: Notify::new(),
            linger: AtomicBool::new(false),
        }
    }

    fn set(&self, f: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        let next = f(*phase);
        if next != *phase {
            *phase = next;
            drop(phase);
            self.changed.notify_one();
        }
    }

    fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes arrived: an idle connection starts reading a head.
    pub(super) fn bytes_arrived(&self) {
        self.set(|p| match p {
            Phase::Idle(_) => Phase::Head(Instant::now()),
            other => other,
        });
    }

    /// A request is being served until the guard is dropped.
    pub(super) fn busy(self: &Arc<Self>) -> BusyGuard {
        self.set(|_| Phase::Busy);
        BusyGuard(self.clone())
    }

    /// The answer about to go out closes a connection whose client may still be sending.
    pub(super) fn linger(&self) {
        self.linger.store(true, Ordering::Relaxed);
    }
}

pub(super) struct BusyGuard(Arc<Activity>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.set(|_| Phase::Idle(Instant::now()));
    }
}

/// Why the task acts next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Due {
    IdleTimeout,
    HeadTimeout,
    Shed,
    /// A close asked of hyper did not finish in time (a client that does not read).
    Abandon,
}

/// When and why the task acts next, if ever (not while a request is served).
fn next_due(
    phase: Phase,
    limits: &Limits,
    pressure: bool,
    closing: Option<Instant>,
) -> Option<(Instant, Due)> {
    let (since, timeout, due) = match phase {
        Phase::Busy => return None,
        Phase::Idle(t) => (t, limits.idle, Due::IdleTimeout),
        Phase::Head(t) => (t, limits.header_read, Due::HeadTimeout),
    };
    if let Some(c) = closing {
        return Some((since.max(c) + limits.header_read, Due::Abandon));
    }
    let own = (since + timeout, due);
    Some(if pressure && since + SHED_AFTER < own.0 {
        (since + SHED_AFTER, Due::Shed)
    } else {
        own
    })
}

enum Event {
    Done,
    Woke,
    Shutdown,
    Pressure,
}

/// How the connection ends after hyper is done with it.
enum End {
    Closed,
    /// Cut off reading a head: a 408 is still possible.
    HeadTimedOut,
}

fn head_timeout_answer() -> Vec<u8> {
    ApiError::new(
        ErrorCode::RequestTimeout,
        "the request head did not arrive within header_read_timeout_secs",
    )
    .to_http1_bytes()
}

/// Serves one accepted connection until it ends; `_permit` is its place under the cap.
pub(super) async fn run(
    tcp: TcpStream,
    app: Router,
    limits: Arc<Limits>,
    stats: Arc<Stats>,
    mut pressure: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let _open = stats.opened();
    let tcp = Arc::new(tcp);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Io::new(tcp.clone(), activity.clone()));
    let service = {
        let (activity, limits, stats) = (activity.clone(), limits.clone(), stats.clone());
        hyper::service::service_fn(move |req| {
            let (app, activity, limits, stats) =
                (app.clone(), activity.clone(), limits.clone(), stats.clone());
            async move {
                Ok::<_, std::convert::Infallible>(
                    super::request::serve(app, req, &activity, &limits, &stats).await,
                )
            }
        })
    };
    let mut builder = http1::Builder::new();
    // The head's deadline is kept here (hyper's would start while the connection is idle).
    builder.timer(TokioTimer::new()).header_read_timeout(None);
    let mut conn = Box::pin(builder.serve_connection(io, service));
    let mut closing: Option<Instant> = None;
    let mut shutting_down = false;
    let mut accepting = true;
    let end = loop {
        let due = next_due(activity.phase(), &limits, *pressure.borrow(), closing);
        let event = tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                Event::Done
            }
            () = sleep_until(due.map(|d| d.0)) => Event::Woke,
            () = activity.changed.notified() => continue,
            r = shutdown.changed(), if !shutting_down => {
                if r.is_ok() && !*shutdown.borrow() {
                    continue;
                }
                shutting_down = true;
                Event::Shutdown
            }
            r = pressure.changed(), if accepting => {
                if r.is_err() {
                    // The accept loop is gone: the server is stopping.
                    accepting = false;
                    Event::Shutdown
                } else {
                    Event::Pressure
                }
            }
        };
        match event {
            Event::Done => break End::Closed,
            Event::Pressure => continue,
            Event::Shutdown => {
                conn.as_mut().graceful_shutdown();
                closing.get_or_insert_with(Instant::now);
            }
            Event::Woke => {
                // Recomputed: the phase may have changed since the sleep began.
                let now = Instant::now();
                let Some((at, why)) =
                    next_due(activity.phase(), &limits, *pressure.borrow(), closing)
                else {
                    continue;
                };
                if at > now {
                    continue;
                }
                let head = matches!(activity.phase(), Phase::Head(_));
                match why {
                    Due::Abandon => break End::Closed,
                    Due::HeadTimeout => {
                        stats.cut(Cut::HeaderTimeout);
                        break End::HeadTimedOut;
                    }
                    Due::Shed if head => {
                        // Its bytes so far are in hyper's buffer, so closing resets nothing.
                        stats.cut(Cut::Shed);
                        break End::Closed;
                    }
                    Due::Shed | Due::IdleTimeout => {
                        stats.cut(if why == Due::Shed {
                            Cut::Shed
                        } else {
                            Cut::Idle
                        });
                        conn.as_mut().graceful_shutdown();
                        closing.get_or_insert(now);
                    }
                }
            }
        }
    };
    // hyper lets go of the socket; the task still holds it.
    drop(conn);
    match end {
        End::HeadTimedOut => answer_and_linger(&tcp, &head_timeout_answer(), LINGER).await,
        End::Closed if activity.linger.load(Ordering::Relaxed) => {
            answer_and_linger(&tcp, b"", LINGER).await
        }
        End::Closed => {}
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_timeout_answer_is_the_json_error_body_with_its_length() {
        let answer = String::from_utf8(head_timeout_answer()).unwrap_or_default();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_default();
        assert!(
            head.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{head}"
        );
        assert!(
            head.ends_with(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(v["ErrorType"], "RequestTimeout");
        assert_eq!(v["Error"], "Request Timeout");
    }

    #[test]
    fn deadlines_follow_the_phase_and_the_pressure() {
        let limits = Limits::for_tests();
        let t = Instant::now();
        assert_eq!(
            next_due(Phase::Idle(t), &limits, false, None),
            Some((t + limits.idle, Due::IdleTimeout))
        );
        assert_eq!(
            next_due(Phase::Head(t), &limits, false, None),
            Some((t + limits.header_read, Due::HeadTimeout))
        );
        assert_eq!(next_due(Phase::Busy, &limits, true, Some(t)), None);
        assert_eq!(
            next_due(Phase::Idle(t), &limits, true, None),
            Some((t + SHED_AFTER, Due::Shed))
        );
        assert_eq!(
            next_due(Phase::Idle(t), &limits, false, Some(t)),
            Some((t + limits.header_read, Due::Abandon))
        );
    }
}
