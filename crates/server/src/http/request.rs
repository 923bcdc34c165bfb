//! One request through the router, its body bounded in time, and drained when the answer was
//! made without reading it all.
//!
//! A handler that refuses a request before reading its body (401, 404, a declared length
//! over the limit) leaves the body on the wire; closing the connection with it unread makes
//! the kernel reset the connection, and the client gets a broken pipe instead of the answer.
//! So the rest of the body is read and discarded before the answer goes out, up to twice
//! `max_body_bytes` in all and within the body's deadline; past either, the answer says
//! `Connection: close` and the socket lingers a moment before it closes.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::header::{HeaderValue, CONNECTION, EXPECT};
use axum::response::Response;
use axum::Router;
use http_body_util::BodyExt as _;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;

use super::conn::Activity;
use super::{Cut, Limits, Stats};
use crate::body::BodyTimedOut;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a request's body left behind when the handler let it go.
#[derive(Default)]
enum Left {
    /// Nothing: read to its end, or never dropped (no body at all).
    #[default]
    Nothing,
    /// The unread rest.
    Rest(Rest),
    /// It broke off (its deadline passed, or the client's framing was wrong).
    Broken,
}

struct Rest {
    body: Incoming,
    deadline: Pin<Box<Sleep>>,
    read: u64,
    polled: bool,
}

/// The request body as handlers see it: ends in [`BodyTimedOut`] at its deadline, and hands
/// its unread rest back when dropped.
struct TrackedBody {
    inner: Option<Incoming>,
    deadline: Pin<Box<Sleep>>,
    read: u64,
    polled: bool,
    broken: bool,
    left: Arc<Mutex<Left>>,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        this.polled = true;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.inner = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.read += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.broken = true;
                this.inner = None;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    this.broken = true;
                    this.inner = None;
                    return Poll::Ready(Some(Err(BodyTimedOut.into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        let left = if self.broken {
            Left::Broken
        } else {
            match self.inner.take() {
                Some(body) if !body.is_end_stream() => Left::Rest(Rest {
                    body,
                    deadline: std::mem::replace(
                        &mut self.deadline,
                        Box::pin(tokio::time::sleep(std::time::Duration::ZERO)),
                    ),
                    read: self.read,
                    polled: self.polled,
                }),
                _ => Left::Nothing,
            }
        };
        *self.left.lock().unwrap_or_else(PoisonError::into_inner) = left;
    }
}

/// Serves `req` with `app`: the answer, after the unread body is drained.
pub(super) async fn serve(
    app: Router,
    req: hyper::Request<Incoming>,
    activity: &Arc<Activity>,
    limits: &Limits,
    stats: &Stats,
) -> Response {
    let _busy = activity.busy();
    let left = Arc::new(Mutex::new(Left::Nothing));
    let expect_continue = req
        .headers()
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let deadline = Box::pin(tokio::time::sleep_until(Instant::now() + limits.request));
    let req = req.map(|body| {
        Body::new(TrackedBody {
            inner: Some(body),
            deadline,
            read: 0,
            polled: false,
            broken: false,
            left: left.clone(),
        })
    });
    let mut resp = match app.oneshot(crate::strip_tenant_prefix(req)).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    let left = std::mem::take(&mut *left.lock().unwrap_or_else(PoisonError::into_inner));
    let budget = 2 * limits.max_body as u64;
    let keep = match left {
        Left::Nothing => true,
        Left::Broken => {
            if resp.status() == axum::http::StatusCode::REQUEST_TIMEOUT {
                stats.cut(Cut::BodyTimeout);
            }
            false
        }
        // The client waits for `100 Continue` before it sends the body: it will not send it.
        Left::Rest(rest) if expect_continue && !rest.polled => false,
        Left::Rest(rest) => drain(rest, budget).await,
    };
    if !keep {
        activity.linger();
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Reads and discards the rest of a body: true when it ended within the budget and in time.
async fn drain(rest: Rest, budget: u64) -> bool {
    let Rest {
        mut body,
        mut deadline,
        mut read,
        ..
    } = rest;
    if read.saturating_add(body.size_hint().lower()) > budget {
        return false;
    }
    let reading = async {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return false;
            };
            if let Some(data) = frame.data_ref() {
                read += data.len() as u64;
                if read > budget {
                    return false;
                }
            }
        }
        true
    };
    tokio::select! {
        done = reading => done,
        () = deadline.as_mut() => false,
    }
}
