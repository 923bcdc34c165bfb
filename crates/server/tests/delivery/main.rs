//! Issue 4: failure handling with a real receiver scripted to fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod disabling;
mod flow;
mod retries;
mod signals;

use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const T: Duration = Duration::from_secs(15);

fn retry_headers(got: &[crmhooks_listen::Received]) -> Vec<String> {
    got.iter()
        .map(|r| r.header("x-superoffice-retry").unwrap_or("-").to_owned())
        .collect()
}

/// The time between request `i - 1` and request `i`, checked to lie in `[min_ms, max_ms)`.
fn assert_gap(got: &[crmhooks_listen::Received], i: usize, min_ms: u64, max_ms: u64) {
    let gap = got[i].at.duration_since(got[i - 1].at);
    assert!(
        gap >= Duration::from_millis(min_ms) && gap < Duration::from_millis(max_ms),
        "gap {i}: {gap:?}"
    );
}

fn event_ids(got: &[crmhooks_listen::Received]) -> Vec<String> {
    got.iter()
        .map(|r| r.payload.as_ref().unwrap().event_id.to_string())
        .collect()
}
