//! Issue 3: the four contact events on the wire, with a real server and a real receiver.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod events;
mod webhook_api;

use common::*;
use crmhooks_payload::{verify, CONTACT_FIELD_VALUE_KEYS};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
