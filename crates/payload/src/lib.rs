//! SuperOffice-compatible webhook payloads: the `WebhookPayload` body, .NET-style dates, the
//! `X-SuperOffice-*` headers, and HMAC-SHA256 signing and verification.
//!
//! This crate does no I/O. With the `axum` feature it also offers an extractor,
//! `extract::SignedPayload`, that checks and parses webhook calls in an axum receiver.
//!
//! # Verifying a webhook call
//!
//! Check the signature over the raw body bytes *before* parsing, then parse:
//!
//! ```
//! use crmhooks_payload::{headers, sign, verify, SignatureError, WebhookPayload};
//!
//! let secret = "my shared secret";
//! // What a receiver gets: the raw body and the X-SuperOffice-Signature header.
//! let body = br#"{"EventId":"4b5ce038-50f2-4796-bdb2-f96908cf31c2","Timestamp":"2018-04-24T08:52:59.0005158Z","Changes":[],"Event":"test","PrimaryKey":0,"Entity":"test","ContextIdentifier":"Default","ChangedByAssociateId":316,"WebhookName":"Name you provided"}"#;
//! let signature = sign(secret, body); // normally: request.headers().get(headers::SIGNATURE)
//!
//! verify(secret, body, Some(&signature))?;
//! let payload = WebhookPayload::from_slice(body)?;
//! assert_eq!(payload.event, "test");
//! assert_eq!(payload.timestamp.to_string(), "2018-04-24T08:52:59.0005158Z");
//!
//! // Any change to the body, or a wrong secret, fails verification.
//! assert_eq!(verify("other secret", body, Some(&signature)), Err(SignatureError::Mismatch));
//! assert_eq!(verify(secret, body, None), Err(SignatureError::Missing));
//! # let _ = headers::SIGNATURE;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Building a payload
//!
//! ```
//! use crmhooks_payload::{contact_deleted_values, ContactEvent, NetDateTime, WebhookPayload};
//!
//! let payload = WebhookPayload {
//!     event_id: uuid::Uuid::new_v4(),
//!     timestamp: NetDateTime::now_utc(),
//!     changes: vec![],
//!     values: Some(contact_deleted_values(994863, 12)),
//!     event: ContactEvent::Deleted.to_string(),
//!     primary_key: 994863,
//!     entity: crmhooks_payload::CONTACT_ENTITY.to_owned(),
//!     context_identifier: "Cust1234".to_owned(),
//!     changed_by_associate_id: 316,
//!     webhook_name: "My hook".to_owned(),
//!     field_values: None,
//!     properties: None,
//! };
//! let body = payload.to_bytes(); // sign and send exactly these bytes
//! let signature = crmhooks_payload::sign("secret", &body);
//! # assert!(crmhooks_payload::verify("secret", &body, Some(&signature)).is_ok());
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod contact;
pub mod date;
pub mod headers;
pub mod payload;
pub mod signature;

#[cfg(feature = "axum")]
pub mod extract;

pub use contact::{
    contact_deleted_values, ContactEvent, ContactFieldValues, FieldValuesError,
    UnknownContactEvent, CONTACT_ENTITY, CONTACT_FIELD_VALUE_KEYS,
};
pub use date::{DateError, DateKind, NetDateTime};
pub use payload::{state_event_body_name, PayloadRef, PayloadTemplate, WebhookPayload, TEST_EVENT};
pub use signature::{sign, verify, SignatureError};
