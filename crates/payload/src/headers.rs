//! Header names and fixed values of a webhook call (spec 2).
//!
//! Header names are case-insensitive in HTTP, but some receivers look them up by their exact
//! spelling (PHP's `getallheaders()`, hand-written parsers, log-based tests). These constants
//! are spelled as SuperOffice's captured requests spell them on the wire (title case, as .NET
//! writes them: `X-Superoffice-Eventid`), not as its prose does (`X-SuperOffice-EventId`).

/// The event name, same as the body's `Event`.
pub const EVENT: &str = "X-Superoffice-Event";
/// The event id, same as the body's `EventId`.
pub const EVENT_ID: &str = "X-Superoffice-Eventid";
/// base64(HMAC-SHA256) of the body; only sent when the webhook has a secret.
pub const SIGNATURE: &str = "X-Superoffice-Signature";
/// The attempt number within a retry cycle: 0, 1, 2.
pub const RETRY: &str = "X-Superoffice-Retry";
/// `true` on the `test` event only.
pub const HOOK_TEST: &str = "X-Hook-Test";
/// The body's media type, [`CONTENT_TYPE_JSON`].
pub const CONTENT_TYPE: &str = "Content-Type";
/// The sender, `NetServer-Webhook/<four-part version>`.
pub const USER_AGENT: &str = "User-Agent";
/// The target's host, as HTTP/1.1 requires.
pub const HOST: &str = "Host";
/// The body's length in bytes.
pub const CONTENT_LENGTH: &str = "Content-Length";
/// The `Content-Type` of every call.
pub const CONTENT_TYPE_JSON: &str = "application/json; charset=utf-8";
/// The product part of the `User-Agent`, which is `NetServer-Webhook/<four-part version>`.
pub const USER_AGENT_PRODUCT: &str = "NetServer-Webhook";

/// Every header of a webhook call, in the order SuperOffice sends them (custom headers go
/// between [`HOOK_TEST`] and [`HOST`]).
pub const STANDARD: [&str; 9] = [
    CONTENT_TYPE,
    USER_AGENT,
    EVENT,
    EVENT_ID,
    SIGNATURE,
    RETRY,
    HOOK_TEST,
    HOST,
    CONTENT_LENGTH,
];

/// Whether `name`, in any case, is one of the [`STANDARD`] headers of a call.
///
/// ```
/// use crmhooks_payload::headers;
/// assert!(headers::is_standard("x-superoffice-signature"));
/// assert!(!headers::is_standard("X-Custom"));
/// ```
pub fn is_standard(name: &str) -> bool {
    STANDARD.iter().any(|h| h.eq_ignore_ascii_case(name))
}
