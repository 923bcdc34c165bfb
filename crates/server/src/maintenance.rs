//! Background upkeep: the recycle-bin purge (fires `contact.deleted`), event-log and audit-log
//! retention.

use std::time::Duration;

use crmhooks_store::contact::CONTACT;
use crmhooks_store::{now_ticks, Actor, Change, StoreError, TICKS_PER_SECOND};
use tokio::sync::watch;

use crate::{AppState, Config};

fn days(d: f64) -> i64 {
    (d * 86_400.0 * TICKS_PER_SECOND as f64) as i64
}

/// One pass: purges expired recycle-bin rows and prunes old events. Returns (purged, pruned).
pub async fn run_once(state: &AppState, config: &Config) -> Result<(u64, u64), StoreError> {
    let now = now_ticks();
    let mut purged = 0;
    let expired = state
        .store
        .recycle_bin_expired(&CONTACT, now - days(config.recycle_bin_days), 1000)
        .await?;
    for (tenant_id, tenant, pk) in expired {
        let actor = Actor::system(tenant_id, &tenant);
        let out = state
            .store
            .apply_change(
                &actor,
                &CONTACT,
                Some(pk),
                Box::new(|current| match current {
                    // Restored meanwhile: leave it.
                    Some(r) if r.get(&CONTACT, "deleted").as_i64() != 0 => Ok(Change::Delete),
                    _ => Ok(Change::Nothing),
                }),
            )
            .await;
        match out {
            Ok(o) => {
                purged += 1;
                state.committed(&actor, &o.committed);
            }
            Err(StoreError::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    let pruned = state
        .store
        .prune_events(now - days(config.event_retention_days), 10_000)
        .await?;
    // The audit log is kept as long as the event log.
    let audited = state
        .store
        .prune_audit(now - days(config.event_retention_days))
        .await?;
    if audited > 0 {
        tracing::info!(audit_entries = audited, "pruned the audit log");
    }
    let resumed = crate::replay::resume_stale(state).await?;
    if resumed > 0 {
        tracing::info!(resumed, "resumed replays whose node stopped");
    }
    Ok((purged, pruned))
}

/// Runs [`run_once`] every `maintenance_interval_secs` until shutdown.
pub async fn run(state: AppState, config: Config, mut shutdown: watch::Receiver<bool>) {
    let every = Duration::from_secs_f64(config.maintenance_interval_secs);
    loop {
        match run_once(&state, &config).await {
            Ok((0, 0)) => {}
            Ok((purged, pruned)) => tracing::info!(purged, pruned, "maintenance"),
            Err(e) => tracing::warn!(error = %e, "maintenance pass failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}
