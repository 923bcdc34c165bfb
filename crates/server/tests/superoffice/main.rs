//! What a SuperOffice integration meets, on both backends: the request head on the wire,
//! the authentication schemes, the contact list, dates in the server's time zone, and the
//! agent API driven with request bodies from SuperOffice's reference pages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod agents;
mod contact_list;
mod wire;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(10);
