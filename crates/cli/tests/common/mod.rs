//! Helpers shared by the binary's integration tests.

use std::time::Duration;

/// Polls `f` every 50 ms until it holds or `timeout` passes; returns its last answer.
pub async fn wait_until(mut f: impl FnMut() -> bool, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}
