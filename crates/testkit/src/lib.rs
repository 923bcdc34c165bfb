//! Test support shared by the crmhooks test suites (a dev-dependency only).
//!
//! - [`Backend`] and [`both_backends!`]: every database test runs on SQLite and on PostgreSQL.
//! - [`postgres`]: where the PostgreSQL variants get their databases. `CRMHOOKS_TEST_DATABASE_URL`
//!   when it is set; otherwise a local server at [`postgres::LOCAL_URL`] when one answers;
//!   otherwise the variant is skipped.
//! - [`skips`]: a skip is never silent. It is printed at once (past the test harness's output
//!   capture) and appended to a file of this `cargo test` run; the `skipped` test of this crate,
//!   which `cargo test --workspace` runs after every other package's tests, prints the count.
//! - [`wait_until`]: polling with a deadline, for what tests cannot drive step by step.

pub mod postgres;
pub mod skips;

use std::future::Future;
use std::time::Duration;

/// The database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on the PostgreSQL server of [`postgres::admin_url`].
    Postgres,
}

/// Generates `<test>::sqlite` and `<test>::postgres` for each named `async fn`, each calling
/// `runner(backend, test_name, test_fn)`. The runner, written once per suite, builds what the
/// suite's tests take (a store, a server) and asks [`postgres::admin_or_skip`] before a
/// PostgreSQL variant, which counts a skip when no server is there.
///
/// ```text
/// crmhooks_testkit::both_backends!(#[tokio::test] crate::common::run => a_test, another_test);
/// ```
#[macro_export]
macro_rules! both_backends {
    (#[$attr:meta] $runner:path => $($name:ident),* $(,)?) => {$(
        mod $name {
            #[$attr]
            async fn sqlite() {
                $runner(
                    $crate::Backend::Sqlite,
                    concat!(module_path!(), "::sqlite"),
                    super::$name,
                )
                .await
            }
            #[$attr]
            async fn postgres() {
                $runner(
                    $crate::Backend::Postgres,
                    concat!(module_path!(), "::postgres"),
                    super::$name,
                )
                .await
            }
        }
    )*};
}

/// Polls `f` every 20 ms until it holds or `timeout` passes; returns its last answer.
pub async fn wait_until(mut f: impl FnMut() -> bool, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// [`wait_until`] for a condition that has to be fetched (an API call, a query): polls `f`
/// every 20 ms until it returns `Some`, or `timeout` passes (`None`).
pub async fn wait_for<T, F: Future<Output = Option<T>>>(
    mut f: impl FnMut() -> F,
    timeout: Duration,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
