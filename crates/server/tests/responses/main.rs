//! Golden transcripts of the API's answers, byte for byte: webhook and contact carriers in and
//! out, the `default` and list routes, the delivery log and every kind of error. Clients (and
//! SuperOffice receivers' tooling) parse these bytes, so property order, null against absent,
//! number and date formats are part of the contract.
//!
//! A transcript masks only what changes from run to run: the server's and the receiver's
//! addresses, the clock (dates the server stamps, keeping their format), random `EventId`s,
//! durations and the receiver's `date:` header. Both backends write the same transcript.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;
mod contact;
mod delivery_log;
mod errors;
mod superoffice;
mod transcript;
mod webhook;

use contact::contact_responses;
use delivery_log::{delivery_log_responses, pending_delivery_responses};
use errors::error_responses;
use superoffice::superoffice_responses;
use webhook::{webhook_patch_clears, webhook_responses, webhook_secret_semantics};

both_backends!(
    webhook_responses,
    webhook_secret_semantics,
    webhook_patch_clears,
    delivery_log_responses,
    pending_delivery_responses,
    contact_responses,
    error_responses,
    superoffice_responses,
);
