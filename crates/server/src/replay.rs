//! Running replay jobs: batch after batch until done, waking the dispatcher for what each
//! queued; and picking up the jobs of a node that died.

use crmhooks_store::{
    now_ticks, ReplayJob, ReplayStatus, StoreError, REPLAY_BATCH, TICKS_PER_SECOND,
};

use crate::AppState;

/// A running job no batch ran for this long belongs to a node that died: another takes it.
const STALE_AFTER_SECS: i64 = 30;

/// Runs replay job `id` to its end, batch by batch (each a short transaction of its own).
pub async fn run(state: AppState, id: i64) -> Result<ReplayJob, StoreError> {
    let mut queued = 0;
    loop {
        let job = state.store.replay_step(id, REPLAY_BATCH).await?;
        if job.report.queued > queued {
            queued = job.report.queued;
            state.wake();
        }
        if job.status != ReplayStatus::Running {
            return Ok(job);
        }
    }
}

/// Starts the jobs whose node died (no batch for [`STALE_AFTER_SECS`]); how many.
pub async fn resume_stale(state: &AppState) -> Result<usize, StoreError> {
    let stale = state
        .store
        .stale_replays(now_ticks() - STALE_AFTER_SECS * TICKS_PER_SECOND)
        .await?;
    for id in &stale {
        let state = state.clone();
        let id = *id;
        tokio::spawn(async move {
            if let Err(e) = run(state, id).await {
                tracing::warn!(replay = id, error = %e, "a resumed replay failed; it is resumed again later");
            }
        });
    }
    Ok(stale.len())
}
