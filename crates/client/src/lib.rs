//! The client side of the crmhooks REST API, written once for every caller: `crmhooks contact`
//! and `crmhooks webhook`, `crmhooks demo`, and the benchmark's load.
//!
//! A request is an [`ApiCall`] (method, path under `/api/v1`, query, JSON body), made by the
//! functions of [`routes`] from the bodies in this crate ([`ContactBody`], [`NewWebhook`],
//! [`Replay`]) and turned into an HTTP request, with its `Authorization` header, by
//! [`ApiCall::request`]. A [`Transport`] only sends that request and returns the status and
//! the answer; what the answer means (the server's error message, JSON, a new contact's id) is
//! read here too. [`HttpApi`] is the transport over reqwest, for the commands; the benchmark's
//! load brings its own over one hyper connection, so that the load generator takes as little
//! of the machine as it can.
//!
//! ```no_run
//! # async fn demo() -> Result<(), crmhooks_client::ClientError> {
//! use crmhooks_client::{routes, ApiKey, ContactBody, HttpApi, Transport as _};
//!
//! let mut api = HttpApi::new("http://127.0.0.1:8080", ApiKey::new("my-key")?)?;
//! let id = api.create_contact(&ContactBody::named("Acme")).await?;
//! let contact = api.json(&routes::get_contact(id)).await?;
//! println!("{contact}");
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod body;
mod call;
mod http_api;
pub mod routes;

use std::future::Future;

use bytes::Bytes;
use http::StatusCode;
use serde_json::Value;

pub use body::{ContactBody, NewWebhook, Replay};
pub use call::{ApiCall, ApiKey};
pub use http_api::HttpApi;

/// Any error of a transport.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Errors of a call to the API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("{call}: {message}")]
    Answer {
        /// `METHOD /path` of the call.
        call: String,
        /// The status.
        status: StatusCode,
        /// `server answered STATUS: MESSAGE`, the message taken from the error body.
        message: String,
    },
    /// The request could not be sent or its answer not read.
    #[error("{call}")]
    Send {
        /// `METHOD /path` of the call.
        call: String,
        /// What the transport said.
        #[source]
        source: BoxError,
    },
    /// The answer is not what the call answers with.
    #[error("{call}: the answer is not {expected}")]
    Unexpected {
        /// `METHOD /path` of the call.
        call: String,
        /// What was expected, e.g. `JSON`.
        expected: &'static str,
        /// Why it could not be read.
        #[source]
        source: serde_json::Error,
    },
    /// A request body could not be written as JSON.
    #[error("cannot write the request body as JSON")]
    Encode(#[source] serde_json::Error),
    /// The HTTP request could not be built.
    #[error("{call}: cannot build the request")]
    Request {
        /// `METHOD /path` of the call.
        call: String,
        /// Why.
        #[source]
        source: http::Error,
    },
    /// The server URL cannot be used.
    #[error("invalid server URL {url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The API key cannot be sent.
    #[error("the API key {0}")]
    Key(&'static str),
}

/// A way to send API requests to one server. The requests are built by [`ApiCall::request`]
/// from [`Transport::base`] and [`Transport::key`]; the provided methods read the answers.
pub trait Transport: Send {
    /// What goes before each call's path: `http://HOST:PORT[/TENANT]`, or empty when requests
    /// carry only their path (a connection to one server).
    fn base(&self) -> &str;

    /// The API key sent with each call.
    fn key(&self) -> &ApiKey;

    /// Sends one request and reads the whole answer.
    fn send(
        &mut self,
        request: http::Request<Bytes>,
    ) -> impl Future<Output = Result<(StatusCode, Bytes), BoxError>> + Send;

    /// Sends `call`: the answer's body when its status is a success, else the server's error.
    fn call(&mut self, call: &ApiCall) -> impl Future<Output = Result<Bytes, ClientError>> + Send {
        async move {
            let request = call.request(self.base(), self.key())?;
            let (status, body) = self
                .send(request)
                .await
                .map_err(|source| ClientError::Send {
                    call: call.to_string(),
                    source,
                })?;
            if !status.is_success() {
                return Err(ClientError::Answer {
                    call: call.to_string(),
                    status,
                    message: error_message(status, &body),
                });
            }
            Ok(body)
        }
    }

    /// Sends `call`; its JSON answer, `Null` when the answer is empty.
    fn json(&mut self, call: &ApiCall) -> impl Future<Output = Result<Value, ClientError>> + Send {
        async move {
            let body = self.call(call).await?;
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok(Value::Null);
            }
            serde_json::from_slice(&body).map_err(|source| ClientError::Unexpected {
                call: call.to_string(),
                expected: "JSON",
                source,
            })
        }
    }

    /// Creates a contact; its `ContactId`.
    fn create_contact(
        &mut self,
        contact: &ContactBody<'_>,
    ) -> impl Future<Output = Result<i64, ClientError>> + Send {
        async move {
            let call = routes::create_contact(contact)?;
            let body = self.call(&call).await?;
            body::contact_id(&body).map_err(|source| ClientError::Unexpected {
                call: call.to_string(),
                expected: "JSON with a ContactId",
                source,
            })
        }
    }

    /// Changes fields of a contact (a merge patch of the fields set in `patch`).
    fn change_contact(
        &mut self,
        id: i64,
        patch: &ContactBody<'_>,
    ) -> impl Future<Output = Result<(), ClientError>> + Send {
        async move {
            self.call(&routes::change_contact(id, patch)?).await?;
            Ok(())
        }
    }
}

/// The message of an error answer: `server answered STATUS`, then the `Message` (or `Error`)
/// of a JSON error body, else the body itself.
pub fn error_message(status: StatusCode, body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        ["Message", "Error"].iter().find_map(|k| {
            v.get(k)?
                .as_str()
                .filter(|s| !s.trim().is_empty())
                .map(str::to_owned)
        })
    });
    let text = from_json.unwrap_or_else(|| {
        String::from_utf8_lossy(body)
            .trim()
            .chars()
            .take(500)
            .collect()
    });
    if text.is_empty() {
        format!("server answered {status}")
    } else {
        format!("server answered {status}: {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages() {
        let body =
            br#"{"Error": "not_found", "ErrorType": "NotFound", "Message": "Contact 9 not found"}"#;
        assert_eq!(
            error_message(StatusCode::NOT_FOUND, body),
            "server answered 404 Not Found: Contact 9 not found"
        );
        assert_eq!(
            error_message(StatusCode::BAD_REQUEST, br#"{"Error": "bad_request"}"#),
            "server answered 400 Bad Request: bad_request"
        );
        assert_eq!(
            error_message(StatusCode::BAD_GATEWAY, b" oops "),
            "server answered 502 Bad Gateway: oops"
        );
        assert_eq!(
            error_message(StatusCode::UNAUTHORIZED, b""),
            "server answered 401 Unauthorized"
        );
    }
}
