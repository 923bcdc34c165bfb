//! Tenants, API keys and webhook definitions: who a change fans out to.

use crmhooks_store::contact::CONTACT;
use crmhooks_store::{
    now_ticks, Actor, ContactId, ReplayRequest, RetryPolicy, StoreError, SuccessRule, WebhookState,
    WebhookType,
};
use crmhooks_testkit::Backend;

use crate::common::*;

both_backends!(
    tenants_and_keys,
    fan_out_only_to_active_subscribed_webhooks_of_the_tenant,
    tenants_are_isolated,
    delete_webhook_cancels_its_deliveries,
    stored_type_policy_and_rule_are_read_once_and_checked,
);

async fn tenants_and_keys(ctx: &Ctx) {
    let s = &ctx.store;
    let a = s.ensure_tenant("Acme").await.unwrap();
    assert_eq!(s.ensure_tenant("Acme").await.unwrap(), a, "idempotent");
    let b = s.ensure_tenant("Beta").await.unwrap();
    assert_ne!(a, b);
    s.add_api_key("Acme", 7, "k1", "first").await.unwrap();
    let who = s.actor_for_key("k1").await.unwrap().unwrap();
    assert_eq!(
        who,
        Actor {
            tenant_id: a,
            tenant: "Acme".into(),
            associate_id: 7
        }
    );
    assert!(s.actor_for_key("nope").await.unwrap().is_none());
    // Re-adding a key moves it.
    s.add_api_key("Beta", 9, "k1", "moved").await.unwrap();
    let who = s.actor_for_key("k1").await.unwrap().unwrap();
    assert_eq!((who.tenant_id, who.associate_id), (b, 9));
    // A new tenant through add_api_key.
    s.add_api_key("Gamma", 1, "k2", "").await.unwrap();
    let g = s.actor_for_key("k2").await.unwrap().unwrap();
    assert_eq!(g.tenant, "Gamma");
    assert_eq!(s.ensure_tenant("Gamma").await.unwrap(), g.tenant_id);
}

async fn fan_out_only_to_active_subscribed_webhooks_of_the_tenant(ctx: &Ctx) {
    let s = &ctx.store;
    let a = actor(s, "A", 1).await;
    let b = actor(s, "B", 1).await;
    let both = hook(s, &a, &["contact.created", "contact.changed"]).await;
    let changed_only = hook(s, &a, &["contact.changed"]).await;
    let stopped = hook_with(
        s,
        &a,
        &["contact.created", "contact.changed"],
        WebhookState::Stopped,
        "webhook",
    )
    .await;
    let script = hook_with(
        s,
        &a,
        &["contact.created"],
        WebhookState::Active,
        "crmscript",
    )
    .await;
    let other_tenant = hook(s, &b, &["contact.created", "contact.changed"]).await;

    let (pk, created) = create(s, &a, "Acme").await;
    assert_eq!(created.committed.deliveries, 1);
    let changed = set_department(s, &a, pk, "Sales").await.unwrap();
    assert_eq!(changed.committed.deliveries, 2);
    let n = |id| {
        let s = s.clone();
        let tenant = if id == other_tenant.id {
            b.tenant_id
        } else {
            a.tenant_id
        };
        async move {
            s.list_deliveries(tenant, id, &filter())
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(n(both.id).await, 2);
    assert_eq!(n(changed_only.id).await, 1);
    assert_eq!(n(stopped.id).await, 0);
    assert_eq!(n(script.id).await, 0);
    assert_eq!(n(other_tenant.id).await, 0);
    // Tenant B's own change goes to B's webhook only.
    let (_, b_created) = create(s, &b, "Beta").await;
    assert_eq!(b_created.committed.deliveries, 1);
    assert_eq!(n(other_tenant.id).await, 1);
    assert_eq!(n(both.id).await, 2);
}

async fn tenants_are_isolated(ctx: &Ctx) {
    let s = &ctx.store;
    let a = actor(s, "A", 1).await;
    let b = actor(s, "B", 1).await;
    let h = hook(s, &a, &["contact.created"]).await;
    let (pk, _) = create(s, &a, "Acme").await;
    assert!(s
        .get_row(b.tenant_id, &CONTACT, ContactId::new(pk), true)
        .await
        .unwrap()
        .is_none());
    assert!(matches!(
        set_department(s, &b, pk, "x").await,
        Err(StoreError::NotFound)
    ));
    assert!(s.get_webhook(b.tenant_id, h.id).await.unwrap().is_none());
    assert!(s.get_webhook(a.tenant_id, h.id).await.unwrap().is_some());
    assert!(s
        .list_webhooks(b.tenant_id, &Default::default())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        s.list_webhooks(a.tenant_id, &Default::default())
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(s.webhook_usage(b.tenant_id, h.id).await.unwrap().is_none());
    assert!(s
        .list_deliveries(b.tenant_id, h.id, &filter())
        .await
        .unwrap()
        .is_empty());
    let d = s
        .list_deliveries(a.tenant_id, h.id, &filter())
        .await
        .unwrap();
    assert_eq!(d.len(), 1);
    assert!(s
        .get_delivery(b.tenant_id, h.id, d[0].delivery_id)
        .await
        .unwrap()
        .is_none());
    let replay = ReplayRequest {
        since: 0,
        until: None,
        only_failed: false,
        limit: 100,
    };
    assert!(matches!(
        s.replay(b.tenant_id, h.id, &replay).await,
        Err(StoreError::NotFound)
    ));
    let mut stolen = h.clone();
    stolen.name = "mine now".into();
    assert!(matches!(
        s.save_webhook(&b, stolen).await,
        Err(StoreError::NotFound)
    ));
    assert!(!s.delete_webhook(b.tenant_id, h.id).await.unwrap());
    assert!(s.delete_webhook(a.tenant_id, h.id).await.unwrap());
}

async fn delete_webhook_cancels_its_deliveries(ctx: &Ctx) {
    let s = &ctx.store;
    let me = actor(s, "Default", 1).await;
    let h = hook(s, &me, &["contact.created"]).await;
    let keep = hook(s, &me, &["contact.created"]).await;
    for i in 0..3 {
        create(s, &me, &format!("c{i}")).await;
    }
    let mut r = req("n1", now_ticks(), 1);
    r.skip_webhooks = vec![keep.id];
    assert_eq!(s.claim(&r).await.unwrap().len(), 1);
    assert!(s.delete_webhook(me.tenant_id, h.id).await.unwrap());
    assert!(!s.delete_webhook(me.tenant_id, h.id).await.unwrap());
    let c = counts(s).await;
    assert_eq!(c.get("cancelled"), Some(&3));
    assert_eq!(c.get("pending"), Some(&3));
    assert!(s.webhook_usage(me.tenant_id, h.id).await.unwrap().is_none());
    let claimed = s.claim(&req("n1", now_ticks(), 10)).await.unwrap();
    assert_eq!(claimed.len(), 3);
    assert!(claimed.iter().all(|c| c.webhook.id == keep.id));
}

/// Sets `column` of every webhook to `value` behind the store's back.
async fn set_column(ctx: &Ctx, column: &str, value: &str) {
    use sqlx::Connection as _;
    let sql = format!("UPDATE webhook SET {column} = $1");
    match ctx.backend {
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&ctx.url).await.unwrap();
            sqlx::query(&sql)
                .bind(value)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&ctx.url).await.unwrap();
            sqlx::query(&sql.replace('$', "?"))
                .bind(value)
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}

/// A definition's Type, RetryPolicy and SuccessStatus are stored as their names and read back
/// as such; a spelling an earlier version kept (`2XX`) still reads, and a value no version
/// writes is an error naming the webhook, not a default.
async fn stored_type_policy_and_rule_are_read_once_and_checked(ctx: &Ctx) {
    let s = &ctx.store;
    let me = actor(s, "Default", 1).await;
    let mut w = hook(s, &me, &["contact.created"]).await;
    w.retry_policy = Some(RetryPolicy::Exponential);
    w.success_status = Some(SuccessRule::Any2xx);
    let (saved, _) = s.save_webhook(&me, w).await.unwrap();
    let read = s
        .get_webhook(me.tenant_id, saved.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.kind, WebhookType::Webhook);
    assert_eq!(read.retry_policy, Some(RetryPolicy::Exponential));
    assert_eq!(read.success_status, Some(SuccessRule::Any2xx));
    set_column(ctx, "success_status", " 2XX").await;
    let read = s
        .get_webhook(me.tenant_id, saved.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.success_status, Some(SuccessRule::Any2xx));
    for (column, value) in [("retry_policy", "linear"), ("type", "email")] {
        set_column(ctx, column, value).await;
        match s.get_webhook(me.tenant_id, saved.id).await {
            Err(StoreError::Corrupt(m)) => {
                assert!(m.contains(&format!("webhook {}", saved.id)), "{m}");
                assert!(m.contains(value), "{m}");
            }
            other => panic!("{column} {value:?}: expected a corrupt row, got {other:?}"),
        }
        let restore = if column == "type" {
            "webhook"
        } else {
            "superoffice"
        };
        set_column(ctx, column, restore).await;
    }
}
