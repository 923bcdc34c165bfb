//! The syncer thread: makes committed changes durable (one `fdatasync` of the WAL for every
//! group waiting) before their callers hear "saved", and hands over what they leased.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::handoff::Handed;
use super::writer::Task;
use crate::{ChangeOutcome, Result, StoreError};

/// Answers to a committed batch of changes, owed once the WAL is on disk.
pub(super) type Answers = Vec<(
    oneshot::Sender<Result<ChangeOutcome>>,
    Result<ChangeOutcome>,
)>;

/// Work for the syncer: a committed batch of changes (or a task) waiting for its fsync (its
/// answers, the highest delivery id it may have written, the deliveries it handed to the
/// dispatcher), or next heads a bookkeeping leased that wait for an earlier batch's fsync
/// (`wait_for`).
pub(super) struct SyncJob {
    pub(super) answers: Answers,
    /// Tasks committed durably, answered after the fsync.
    pub(super) tasks: Vec<Box<dyn Task>>,
    pub(super) upto: i64,
    pub(super) handed: Handed,
    /// `None`: a group commit, made durable by the next fsync. `Some(id)`: deliveries leased by
    /// a bookkeeping, given once deliveries up to `id` are durable (no fsync of their own).
    pub(super) wait_for: Option<i64>,
}

/// The syncer thread: takes every job waiting, makes the WAL durable with one `fdatasync`,
/// marks their deliveries claimable, hands over what they leased, then answers the callers.
/// Jobs that only wait for deliveries already durable are handed over without an fsync.
pub(super) fn syncer(
    wal: &Path,
    synced_upto: &AtomicI64,
    rx: &std::sync::mpsc::Receiver<SyncJob>,
    delay: Duration,
) {
    let mut file: Option<std::fs::File> = None;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        jobs.extend(rx.try_iter());
        let started = Instant::now();
        let durable = synced_upto.load(Ordering::SeqCst);
        if jobs
            .iter()
            .all(|j| j.wait_for.is_some_and(|id| id <= durable))
        {
            // Only hand-overs waiting for an fsync that is done already.
            for job in jobs {
                job.handed.give();
            }
            continue;
        }
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        // The WAL stays one file while the writer's connection is open (SQLite deletes it only
        // when the last connection closes; a checkpoint truncates it in place), so it is opened
        // once, not for every fsync.
        let synced = match &file {
            Some(f) => f.sync_data(),
            None => std::fs::OpenOptions::new()
                .write(true)
                .open(wal)
                .and_then(|f| {
                    let done = f.sync_data();
                    file = Some(f);
                    done
                }),
        };
        let took = started.elapsed();
        metrics::histogram!("crmhooks_store_fsync_seconds").record(took.as_secs_f64());
        tracing::debug!(
            batches = jobs.len(),
            sync_us = took.as_micros() as u64,
            "wal sync"
        );
        let upto = jobs.iter().map(|j| j.upto).max().unwrap_or(0);
        match synced {
            Ok(()) => {
                synced_upto.fetch_max(upto, Ordering::SeqCst);
                for job in jobs {
                    job.handed.give();
                    for (reply, result) in job.answers {
                        let _ = reply.send(result);
                    }
                    for task in job.tasks {
                        task.answer(None);
                    }
                }
            }
            Err(e) => {
                // The changes are committed but their durability is unknown: say so, and let
                // their deliveries go (the database holds them; holding them back forever
                // would be worse).
                tracing::error!(error = %e, wal = %wal.display(), "fsync of the WAL failed");
                synced_upto.fetch_max(upto, Ordering::SeqCst);
                for job in jobs {
                    job.handed.give();
                    for (reply, result) in job.answers {
                        let _ = reply.send(result.and(Err(StoreError::Unavailable(format!(
                            "the change was committed but could not be made durable: {e}"
                        )))));
                    }
                    for task in job.tasks {
                        task.answer(Some(StoreError::Unavailable(format!(
                            "the change was committed but could not be made durable: {e}"
                        ))));
                    }
                }
            }
        }
    }
}
