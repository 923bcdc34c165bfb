//! Header names and fixed values of a webhook call (spec 2).
//!
//! Header names are case-insensitive on the wire; these are the canonical spellings to send.

/// The event name, same as the body's `Event`.
pub const EVENT: &str = "X-SuperOffice-Event";
/// The event id, same as the body's `EventId`.
pub const EVENT_ID: &str = "X-SuperOffice-EventId";
/// base64(HMAC-SHA256) of the body; only sent when the webhook has a secret.
pub const SIGNATURE: &str = "X-SuperOffice-Signature";
/// The attempt number within a retry cycle: 0, 1, 2.
pub const RETRY: &str = "X-SuperOffice-Retry";
/// `true` on the `test` event only.
pub const HOOK_TEST: &str = "X-Hook-Test";
/// The `Content-Type` of every call.
pub const CONTENT_TYPE_JSON: &str = "application/json; charset=utf-8";
/// The product part of the `User-Agent`, which is `NetServer-Webhook/<four-part version>`.
pub const USER_AGENT_PRODUCT: &str = "NetServer-Webhook";
