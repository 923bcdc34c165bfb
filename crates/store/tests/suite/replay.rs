//! Replays: what they queue, their batches, and changes made beside a large one.

use crmhooks_store::{
    now_ticks, DeliveryId, ReplayRequest, ReplayStatus, StoreError, Verdict, WebhookId,
    REPLAY_BATCH,
};
use crmhooks_testkit::Backend;

use crate::common::*;

both_backends!(
    replay_reports_and_queues,
    a_replay_runs_in_batches_and_shows_its_progress,
    a_large_replay_drains_without_fresh_statistics,
    changes_made_during_a_large_replay_are_not_held_back,
    fan_out_to_many_webhooks_and_replays_keep_ids_unique,
);

async fn replay_reports_and_queues(ctx: &Ctx) {
    let s = &ctx.store;
    let me = actor(s, "Default", 1).await;
    let h = hook(s, &me, &["contact.created"]).await;
    let since = now_ticks() - SEC;
    for i in 0..3 {
        create(s, &me, &format!("c{i}")).await;
    }
    let now = now_ticks();
    let c = s.claim(&req("n1", now, 10)).await.unwrap();
    let mut outs: Vec<_> = c.iter().map(|c| outcome(c, Verdict::Delivered)).collect();
    outs.sort_by_key(|o| o.delivery_id);
    // Two delivered, one cancelled by... a Gone would disable the hook, so leave it pending.
    s.complete(&outs[..2], now, 9).await.unwrap();
    let all = |only_failed| ReplayRequest {
        since,
        until: None,
        only_failed,
        limit: 100,
    };
    let r = s.replay(me.tenant_id, h.id, &all(true)).await.unwrap();
    assert_eq!((r.matched, r.queued, r.skipped), (3, 0, 3));
    let r = s.replay(me.tenant_id, h.id, &all(false)).await.unwrap();
    assert_eq!(
        (r.matched, r.queued, r.skipped),
        (3, 2, 1),
        "delivered ones again, the pending one is skipped"
    );
    let log = s
        .list_deliveries(me.tenant_id, h.id, &filter())
        .await
        .unwrap();
    assert_eq!(log.len(), 5);
    assert_eq!(log.iter().filter(|d| d.replay_of.is_some()).count(), 2);
    // A webhook added later gets the logged events it subscribes to.
    let late = hook(s, &me, &["contact.created", "contact.changed"]).await;
    let r = s.replay(me.tenant_id, late.id, &all(true)).await.unwrap();
    assert_eq!((r.matched, r.queued, r.skipped), (3, 3, 0));
    // The window and the limit apply.
    let r = s
        .replay(
            me.tenant_id,
            late.id,
            &ReplayRequest {
                since,
                until: Some(since + 1),
                only_failed: false,
                limit: 100,
            },
        )
        .await
        .unwrap();
    assert_eq!(r.matched, 0);
    let r = s
        .replay(
            me.tenant_id,
            late.id,
            &ReplayRequest {
                limit: 2,
                ..all(false)
            },
        )
        .await
        .unwrap();
    assert_eq!((r.matched, r.skipped), (2, 2));
    assert!(matches!(
        s.replay(me.tenant_id, WebhookId::new(999_999), &all(false))
            .await,
        Err(StoreError::NotFound)
    ));
}

/// A replay is a job: each batch handles at most so many events in a transaction of its own,
/// and its progress can be read between batches.
async fn a_replay_runs_in_batches_and_shows_its_progress(ctx: &Ctx) {
    let s = &ctx.store;
    let me = actor(s, "Default", 1).await;
    let h = hook(s, &me, &["contact.created"]).await;
    for i in 0..5 {
        create(s, &me, &format!("r{i}")).await;
    }
    let req = ReplayRequest {
        since: 0,
        until: None,
        only_failed: false,
        limit: 100,
    };
    let job = s.start_replay(me.tenant_id, h.id, &req).await.unwrap();
    assert_eq!(job.status, ReplayStatus::Running);
    let mut seen = Vec::new();
    let mut last = job;
    while last.status == ReplayStatus::Running {
        last = s.replay_step(last.id, 2).await.unwrap();
        let read = s
            .get_replay(me.tenant_id, h.id, last.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read, last, "the progress read back is the batch's");
        seen.push(last.report.matched);
        assert!(seen.len() <= 4, "{seen:?}");
    }
    assert_eq!(seen, vec![2, 4, 5], "two events a batch");
    assert_eq!(last.status, ReplayStatus::Done);
    // The originals are still pending: all skipped, nothing queued twice.
    assert_eq!((last.report.queued, last.report.skipped), (0, 5));
    assert!(last.finished.is_some());
    // Another tenant does not see it; a webhook of another tenant cannot be replayed.
    let other = actor(s, "Other", 1).await;
    assert!(s
        .get_replay(other.tenant_id, h.id, last.id)
        .await
        .unwrap()
        .is_none());
    assert!(matches!(
        s.start_replay(other.tenant_id, h.id, &req).await,
        Err(StoreError::NotFound)
    ));
    // A job stopped halfway (its node died) is found stale, and goes on from its cursor.
    let job = s.start_replay(me.tenant_id, h.id, &req).await.unwrap();
    let half = s.replay_step(job.id, 3).await.unwrap();
    assert_eq!(half.report.matched, 3);
    assert_eq!(
        s.stale_replays(now_ticks() + SEC).await.unwrap(),
        vec![job.id]
    );
    assert!(s.stale_replays(half.updated).await.unwrap().is_empty());
    let rest = s.replay_step(job.id, 100).await.unwrap();
    assert_eq!((rest.report.matched, rest.status), (5, ReplayStatus::Done));
}

/// A large replay, and the claims and records that drain it, keep their plans when the
/// database's statistics are stale: on PostgreSQL with autovacuum off (this test turns it off
/// for its tables; a queue's statistics go stale between autovacuum's runs anyway) a replay of
/// 30,000 events took minutes and a claim over nine minutes before the claim, the bookkeeping
/// and the group commit chose their plans whatever the statistics say.
async fn a_large_replay_drains_without_fresh_statistics(ctx: &Ctx) {
    const EVENTS: i64 = 20_000;
    let s = &ctx.store;
    let me = actor(s, "Default", 1).await;
    let h = hook(s, &me, &["contact.created"]).await;
    // Statistics taken while the tables were nearly empty, and never again: the estimates
    // say a queue of a few rows, whatever it holds by now.
    log_events(ctx, me.tenant_id.get(), EVENTS, true).await;
    let started = std::time::Instant::now();
    let req = ReplayRequest {
        since: 0,
        until: None,
        only_failed: false,
        limit: EVENTS,
    };
    let report = s.replay(me.tenant_id, h.id, &req).await.unwrap();
    let replayed = started.elapsed();
    assert_eq!(report.queued, EVENTS as u64);
    let started = std::time::Instant::now();
    // Ten events a contact: 2,000 chains. What a record hands over (the next delivery of each
    // chain it closes) is delivered next; the rest is claimed.
    let intake = RoomIntake::new(&[(h.id, EVENTS as usize)]);
    s.set_intake(Some(intake.clone()));
    let (mut delivered, mut slowest) = (0, std::time::Duration::ZERO);
    loop {
        let mut work = intake.taken();
        if work.is_empty() {
            let claiming = std::time::Instant::now();
            work = s.claim(&req_of("n1", now_ticks(), 256)).await.unwrap();
            slowest = slowest.max(claiming.elapsed());
        }
        if work.is_empty() {
            break;
        }
        delivered += work.len();
        let recording = std::time::Instant::now();
        deliver_all(s, &work).await;
        slowest = slowest.max(recording.elapsed());
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "draining stalled"
        );
    }
    s.set_intake(None);
    eprintln!(
        "{:?}: replay of {EVENTS} events {replayed:?}, drained in {:?}, slowest claim or record {slowest:?}",
        ctx.backend,
        started.elapsed()
    );
    assert_eq!(delivered, EVENTS as usize);
    assert!(
        replayed < std::time::Duration::from_secs(60),
        "replay took {replayed:?}"
    );
    assert!(
        slowest < std::time::Duration::from_secs(2),
        "a claim took {slowest:?}"
    );
}

/// Writes `n` `contact.created` events of tenant `tenant` straight into the log (setup only:
/// what `n` changes of 2,000 contacts would leave). `stale_statistics` (PostgreSQL): statistics
/// of the nearly empty tables taken first, and autovacuum off for them.
async fn log_events(ctx: &Ctx, tenant: i64, n: i64, stale_statistics: bool) {
    let insert = "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < $2) \
        INSERT INTO event (tenant_id, event, entity, primary_key, changes, field_values, changed_by, occurred) \
        SELECT $1, 'contact.created', 'contact', i % 2000, '[]', '{}', 1, $3 FROM seq";
    match ctx.backend {
        Backend::Postgres => {
            use sqlx::Connection as _;
            let mut conn = sqlx::PgConnection::connect(&ctx.url).await.unwrap();
            for table in ["delivery", "event", "attempt", "replay"] {
                if !stale_statistics {
                    break;
                }
                sqlx::query(&format!(
                    "ALTER TABLE {table} SET (autovacuum_enabled = false)"
                ))
                .execute(&mut conn)
                .await
                .unwrap();
                sqlx::query(&format!("ANALYZE {table}"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
            sqlx::query(insert)
                .bind(tenant)
                .bind(n)
                .bind(now_ticks())
                .execute(&mut conn)
                .await
                .unwrap();
        }
        Backend::Sqlite => {
            use sqlx::Connection as _;
            let mut conn = sqlx::SqliteConnection::connect(&ctx.url).await.unwrap();
            sqlx::query(&insert.replace('$', "?"))
                .bind(tenant)
                .bind(n)
                .bind(now_ticks())
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}

/// A replay job runs in batches, each a short transaction of its own: another tenant's changes
/// made while it runs wait at most about one batch, not for the whole replay (on SQLite a
/// replay once held the write gate while it inserted 100,000 rows).
async fn changes_made_during_a_large_replay_are_not_held_back(ctx: &Ctx) {
    const EVENTS: i64 = 20_000;
    let s = &ctx.store;
    let me = actor(s, "Default", 1).await;
    let other = actor(s, "Other", 1).await;
    let h = hook(s, &me, &["contact.created"]).await;
    hook(s, &other, &["contact.created"]).await;
    log_events(ctx, me.tenant_id.get(), EVENTS, false).await;
    let req = ReplayRequest {
        since: 0,
        until: None,
        only_failed: false,
        limit: EVENTS,
    };
    let job = s.start_replay(me.tenant_id, h.id, &req).await.unwrap();
    let replaying = {
        let s = s.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let (mut batches, mut slowest_batch) = (0, std::time::Duration::ZERO);
            let mut last = job;
            while last.status == ReplayStatus::Running {
                let batch = std::time::Instant::now();
                last = s.replay_step(last.id, REPLAY_BATCH).await.unwrap();
                slowest_batch = slowest_batch.max(batch.elapsed());
                batches += 1;
            }
            (last, batches, slowest_batch, started.elapsed())
        })
    };
    // The other tenant's changes, one after another, while the replay runs.
    let mut waits = Vec::new();
    while !replaying.is_finished() {
        let t = std::time::Instant::now();
        create(s, &other, "during the replay").await;
        waits.push(t.elapsed());
    }
    let (last, batches, slowest_batch, took) = replaying.await.unwrap();
    assert_eq!(last.status, ReplayStatus::Done);
    assert_eq!(last.report.queued, EVENTS as u64);
    waits.sort();
    let slowest_change = waits.last().copied().unwrap_or_default();
    eprintln!(
        "{:?}: replay of {EVENTS} events in {batches} batches, {took:?} (slowest batch {slowest_batch:?}); \
         {} changes meanwhile, median {:?}, slowest {slowest_change:?}",
        ctx.backend,
        waits.len(),
        waits[waits.len() / 2],
    );
    assert!(batches >= EVENTS / REPLAY_BATCH, "{batches} batches");
    assert!(
        waits.len() >= 5,
        "only {} changes during the replay",
        waits.len()
    );
    // A change may wait for the batch in progress (and its own commit), never for the replay.
    assert!(
        slowest_change < slowest_batch * 3 + std::time::Duration::from_millis(200)
            && slowest_change < took / 4,
        "a change waited {slowest_change:?}; batches took at most {slowest_batch:?}, the replay {took:?}"
    );
}

/// An event goes to every one of 40 webhooks (more than one multi-row INSERT holds on
/// SQLite), and delivery ids stay unique and rising when replays (written by another
/// connection on SQLite) come between events.
async fn fan_out_to_many_webhooks_and_replays_keep_ids_unique(ctx: &Ctx) {
    let s = &ctx.store;
    let me = actor(s, "Default", 1).await;
    let since = now_ticks() - SEC;
    let mut hooks = Vec::new();
    for _ in 0..40 {
        hooks.push(hook(s, &me, &["contact.created"]).await);
    }
    let mut last = DeliveryId::new(0);
    for round in 0..3 {
        create(s, &me, &format!("c{round}")).await;
        // Everything delivered, so that the replay queues each event again.
        let claimed = s.claim(&req("n1", now_ticks(), 500)).await.unwrap();
        assert!(
            claimed.len() >= 40,
            "round {round}: claimed {}",
            claimed.len()
        );
        let mut keys: Vec<(WebhookId, i64, i64)> = claimed
            .iter()
            .map(|c| (c.webhook.id, c.event.primary_key, c.event.seq))
            .collect();
        let n = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(
            keys.len(),
            n,
            "round {round}: one delivery per webhook and event"
        );
        deliver_all(s, &claimed).await;
        let r = s
            .replay(
                me.tenant_id,
                hooks[round].id,
                &ReplayRequest {
                    since,
                    until: None,
                    only_failed: false,
                    limit: 100,
                },
            )
            .await
            .unwrap();
        assert_eq!(r.queued, round as u64 + 1, "round {round}");
        let mut ids = Vec::new();
        for h in &hooks {
            let log = s
                .list_deliveries(me.tenant_id, h.id, &filter())
                .await
                .unwrap();
            ids.extend(log.iter().map(|d| d.delivery_id));
        }
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "round {round}: no delivery id twice");
        assert_eq!(
            ids.iter().filter(|&&id| id > last).count(),
            40 + round + 1,
            "round {round}: the event's 40 and the replay's"
        );
        last = ids.last().copied().unwrap_or(last);
    }
}
