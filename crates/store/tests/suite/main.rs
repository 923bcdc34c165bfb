//! The store suite: every test runs against SQLite (a temporary file) and PostgreSQL (a fresh
//! database per test, on the server `crmhooks_testkit::postgres` finds; the PostgreSQL variant
//! is skipped, and the skip counted, when there is none).
//!
//! One file per concern; a new topic gets a file of its own, registered below. Shared helpers
//! live in `common.rs`; a test run on both backends is registered with `both_backends!` in its
//! own file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Generates, for each named `async fn(&Ctx)`, a module with a `sqlite` and a `postgres` test.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        crmhooks_testkit::both_backends!(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)] crate::common::run => $($name),*
        );
    };
}

mod common;

mod changes;
mod claims;
mod handoff;
mod heads;
mod keys;
mod open;
mod records;
mod replay;
mod resend;
mod retention;
mod secrets;
mod webhooks;
