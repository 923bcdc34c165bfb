//! Chain heads on PostgreSQL (migration 0010): the claim walks only the deliveries marked as
//! the head of their chain, so a head whose mark was lost must get it back. (SQLite marks its
//! heads in its one writer, and again when it opens.)

use crmhooks_store::{now_ticks, Actor};
use crmhooks_testkit::Backend;
use sqlx::Connection as _;

use crate::common::*;

both_backends!(
    heads_that_lost_their_mark_are_claimed,
    a_delivery_behind_one_closed_unseen_is_claimed_within_seconds,
);

/// On PostgreSQL (the marks are its own), an actor with a webhook for created and changed
/// contacts; `None` on SQLite.
async fn pg_with_a_hook(ctx: &Ctx) -> Option<Actor> {
    if !matches!(ctx.backend, Backend::Postgres) {
        return None;
    }
    let me = actor(&ctx.store, "Default", 1).await;
    hook(&ctx.store, &me, &["contact.created", "contact.changed"]).await;
    Some(me)
}

/// Runs `sql` on the test's PostgreSQL database.
async fn pg(ctx: &Ctx, sql: &str) {
    let mut conn = sqlx::PgConnection::connect(&ctx.url).await.unwrap();
    sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
}

/// Every mark gone (as a node that died between its commits and its looks for heads could
/// leave some): the first claim of a node marks the heads again, and only the heads.
async fn heads_that_lost_their_mark_are_claimed(ctx: &Ctx) {
    let Some(me) = pg_with_a_hook(ctx).await else {
        return;
    };
    let s = &ctx.store;
    let (c1, _) = create(s, &me, "One").await;
    let (c2, _) = create(s, &me, "Two").await;
    set_department(s, &me, c1, "a").await.unwrap();
    pg(ctx, "UPDATE delivery SET head = false").await;
    let claimed = s.claim(&req("n1", now_ticks(), 100)).await.unwrap();
    assert_eq!(
        keys(&claimed),
        vec![
            (c1, "contact.created".into()),
            (c2, "contact.created".into())
        ]
    );
    deliver_all(s, &claimed).await;
    let next = s.claim(&req("n1", now_ticks(), 100)).await.unwrap();
    assert_eq!(keys(&next), vec![(c1, "contact.changed".into())]);
}

/// A change queued its delivery behind one in flight, and that one was closed by a record
/// whose look for the next heads did not see the change (they ran side by side) and whose look
/// after its commit never came (its node died): the claims mark the waiting delivery within a
/// few seconds.
async fn a_delivery_behind_one_closed_unseen_is_claimed_within_seconds(ctx: &Ctx) {
    let Some(me) = pg_with_a_hook(ctx).await else {
        return;
    };
    let s = &ctx.store;
    let (c1, _) = create(s, &me, "One").await;
    let first = s.claim(&req("n1", now_ticks(), 100)).await.unwrap();
    assert_eq!(keys(&first), vec![(c1, "contact.created".into())]);
    set_department(s, &me, c1, "a").await.unwrap();
    pg(
        ctx,
        &format!(
            "UPDATE delivery SET status = 2, lease_until = NULL, lease_owner = NULL WHERE delivery_id = {}",
            first[0].delivery_id
        ),
    )
    .await;
    let started = std::time::Instant::now();
    let mut next = Vec::new();
    while next.is_empty() && started.elapsed() < std::time::Duration::from_secs(10) {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        next = s.claim(&req("n1", now_ticks(), 100)).await.unwrap();
    }
    assert_eq!(keys(&next), vec![(c1, "contact.changed".into())]);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
