//! The progress bar on stderr.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crmhooks_listen::counting::Tally;
use indicatif::{ProgressBar, ProgressStyle};

use crate::load::LoadTally;

/// The progress bar on stderr (indicatif hides it when stderr is not a terminal).
pub(crate) struct Progress {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
    expected: Arc<AtomicU64>,
}

impl Progress {
    /// A bar over the load's milliseconds, with events and deliveries so far.
    pub(crate) fn start(
        total_ms: u64,
        load: Arc<LoadTally>,
        tally: Arc<Tally>,
        webhooks: u64,
    ) -> Self {
        let bar = ProgressBar::new(total_ms);
        if let Ok(style) = ProgressStyle::with_template("{spinner} [{bar:30}] {elapsed:>4} {msg}") {
            bar.set_style(style.progress_chars("=> "));
        }
        let expected = Arc::new(AtomicU64::new(0));
        let (b, exp) = (bar.clone(), expected.clone());
        let started = Instant::now();
        let ticker = tokio::spawn(async move {
            loop {
                let committed = load.committed.load(Ordering::Relaxed);
                let delivered = tally.deliveries();
                let expected = exp.load(Ordering::Relaxed);
                if expected == 0 {
                    b.set_position((started.elapsed().as_millis() as u64).min(total_ms));
                    b.set_message(format!(
                        "load: {committed} events committed, {delivered} of {} delivered",
                        committed * webhooks
                    ));
                } else {
                    b.set_message(format!("drain: {delivered} of {expected} delivered"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Progress {
            bar,
            ticker,
            expected,
        }
    }

    /// A plain counting bar.
    pub(crate) fn start_count(total: u64, what: &str) -> ProgressBar {
        let bar = ProgressBar::new(total);
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {per_sec} {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_owned());
        bar
    }

    pub(crate) fn draining(&self, expected: u64) {
        self.bar.set_position(self.bar.length().unwrap_or(0));
        self.expected.store(expected.max(1), Ordering::Relaxed);
    }

    pub(crate) fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}
