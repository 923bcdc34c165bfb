//! Waking the nodes: `NOTIFY crmhooks_work` after a commit that queued work for a claim, and
//! each node `LISTEN`ing on a connection of its own.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio::sync::{watch, Notify};

/// The channel commits notify when they queue work.
const WORK_CHANNEL: &str = "crmhooks_work";

/// Sends `NOTIFY crmhooks_work` whenever [`PgStore::wake_nodes`] asked for it, until `alive`
/// closes. Each is a statement of its own: a transaction without writes, so no WAL flush and
/// no hold on the notify lock across one.
pub(super) async fn notify_loop(pool: PgPool, signal: Arc<Notify>, mut alive: watch::Receiver<()>) {
    loop {
        tokio::select! {
            _ = signal.notified() => {}
            _ = alive.changed() => return,
        }
        notify_nodes(&pool).await;
    }
}

/// `NOTIFY crmhooks_work`, as a statement of its own; a failure is logged and otherwise costs
/// only latency (nodes also poll).
pub(super) async fn notify_nodes(pool: &PgPool) {
    if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
        .bind(WORK_CHANNEL)
        .execute(pool)
        .await
    {
        tracing::debug!(error = %e, "cannot NOTIFY other nodes; they will poll");
    }
}

/// Listens on [`WORK_CHANNEL`] with a connection of its own until `alive` closes; reconnects
/// with exponential backoff (100 ms .. 5 s). Every notification, and every reconnect (work may
/// have been queued while nobody listened), wakes `wake`.
pub(super) async fn listen_loop(
    connect: PgConnectOptions,
    wake: Arc<Notify>,
    mut alive: watch::Receiver<()>,
) {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);
    let mut backoff = MIN;
    let mut lost = false;
    loop {
        let attempt = async {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(5))
                .max_lifetime(None)
                .idle_timeout(None)
                .connect_with(connect.clone())
                .await?;
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.ignore_pool_close_event(true);
            listener.listen(WORK_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let connected = tokio::select! {
            r = attempt => r,
            _ = alive.changed() => return,
        };
        let mut listener = match connected {
            Ok(l) => l,
            Err(e) => {
                if !lost {
                    tracing::warn!(error = %e, "cannot LISTEN for work; retrying (polling meanwhile)");
                    lost = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = alive.changed() => return,
                }
                backoff = (backoff * 2).min(MAX);
                continue;
            }
        };
        if lost {
            tracing::info!("listening for work again");
        }
        backoff = MIN;
        wake.notify_one();
        loop {
            let next = tokio::select! {
                n = listener.try_recv() => n,
                _ = alive.changed() => return,
            };
            match next {
                Ok(Some(_)) => wake.notify_one(),
                Ok(None) => {
                    tracing::warn!("lost the LISTEN connection; reconnecting");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lost the LISTEN connection; reconnecting");
                    break;
                }
            }
        }
        lost = true;
        wake.notify_one();
    }
}
