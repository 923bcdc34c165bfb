//! An axum extractor for receivers: reads the raw body, checks the signature, parses the payload.
//!
//! ```
//! use axum::{routing::post, Router};
//! use crmhooks_payload::extract::{SignedPayload, WebhookSecret};
//!
//! async fn hook(webhook: SignedPayload) -> &'static str {
//!     println!("{} {}", webhook.payload.event, webhook.payload.primary_key);
//!     "ok"
//! }
//!
//! let app: Router = Router::new()
//!     .route("/hook", post(hook))
//!     .with_state(WebhookSecret(Some("my secret".into())));
//! ```

use axum::extract::{FromRef, FromRequest, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::{headers, verify, SignatureError, WebhookPayload};

/// The shared secret to check signatures with; `None` (or an empty secret) means signatures are
/// not checked. Provide it as the router state, or make it `FromRef` of your state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebhookSecret(pub Option<String>);

/// A webhook call whose signature was checked (when a secret is set) and whose body parsed.
///
/// The body is read with axum's `DefaultBodyLimit` (2 MiB unless you set
/// `DefaultBodyLimit::max(..)`); a larger body is refused with 413.
#[derive(Clone, Debug)]
pub struct SignedPayload {
    /// The parsed body.
    pub payload: WebhookPayload,
    /// The raw body, exactly as received (and signed).
    pub body: Bytes,
    /// The `X-SuperOffice-EventId` header, which should equal `payload.event_id`.
    pub event_id_header: Option<String>,
    /// The `X-SuperOffice-Retry` header, when present and numeric.
    pub retry: Option<u32>,
    /// Whether `X-Hook-Test: true` came with the call (the `test` event).
    pub is_test: bool,
}

/// Why a [`SignedPayload`] was refused. As a response: 401 for signature problems, 400 for a
/// body that is not a payload, 413 for a body over the limit; a JSON body
/// `{"Error": …, "ErrorType": …, "Message": …}` says why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignedPayloadRejection {
    /// The signature is missing, malformed or wrong.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The body is not JSON, or not a webhook payload.
    #[error("the body is not a webhook payload: {0}")]
    InvalidPayload(#[source] serde_json::Error),
    /// The body is over the body limit.
    #[error("the body is larger than the limit")]
    PayloadTooLarge,
    /// The body could not be read.
    #[error("the body could not be read: {message}")]
    Body {
        /// The status axum chose for the failure.
        status: StatusCode,
        /// What went wrong.
        message: String,
    },
}

impl SignedPayloadRejection {
    /// The HTTP status this rejection answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            SignedPayloadRejection::Signature(_) => StatusCode::UNAUTHORIZED,
            SignedPayloadRejection::InvalidPayload(_) => StatusCode::BAD_REQUEST,
            SignedPayloadRejection::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            SignedPayloadRejection::Body { status, .. } => *status,
        }
    }

    /// A stable code, sent as `ErrorType`.
    pub fn code(&self) -> &'static str {
        match self {
            SignedPayloadRejection::Signature(e) => e.code(),
            SignedPayloadRejection::InvalidPayload(_) => "InvalidPayload",
            SignedPayloadRejection::PayloadTooLarge => "PayloadTooLarge",
            SignedPayloadRejection::Body { .. } => "BodyUnreadable",
        }
    }
}

impl IntoResponse for SignedPayloadRejection {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({
            "Error": status.canonical_reason().unwrap_or("Error"),
            "ErrorType": self.code(),
            "Message": self.to_string(),
        });
        (status, axum::Json(body)).into_response()
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl<S> FromRequest<S> for SignedPayload
where
    S: Send + Sync,
    WebhookSecret: FromRef<S>,
{
    type Rejection = SignedPayloadRejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let WebhookSecret(secret) = WebhookSecret::from_ref(state);
        let h = req.headers();
        let signature = header(h, headers::SIGNATURE).map(str::to_owned);
        let event_id_header = header(h, headers::EVENT_ID).map(str::to_owned);
        let retry = header(h, headers::RETRY).and_then(|v| v.trim().parse().ok());
        let is_test =
            header(h, headers::HOOK_TEST).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));

        let body = Bytes::from_request(req, state).await.map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                SignedPayloadRejection::PayloadTooLarge
            } else {
                SignedPayloadRejection::Body {
                    status,
                    message: rejection.body_text(),
                }
            }
        })?;

        if let Some(secret) = secret.as_deref().filter(|s| !s.is_empty()) {
            verify(secret, &body, signature.as_deref())?;
        }
        let payload =
            WebhookPayload::from_slice(&body).map_err(SignedPayloadRejection::InvalidPayload)?;
        Ok(SignedPayload {
            payload,
            body,
            event_id_header,
            retry,
            is_test,
        })
    }
}
