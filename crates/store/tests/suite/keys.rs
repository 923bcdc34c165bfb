//! Keys as operators manage them, the bootstrap key, and the audit log (both backends).

use crmhooks_store::{
    generate_key, now_ticks, Actor, KeyScope, NewAudit, NewKey, TenantId, TICKS_PER_SECOND,
};

use crate::common::Ctx;

both_backends!(
    keys_are_created_listed_and_revoked,
    expired_keys_are_refused,
    a_changed_bootstrap_key_revokes_the_previous_one,
    last_use_is_written_at_most_once_a_minute,
    the_audit_log_is_per_tenant_newest_first_and_pruned,
);

fn new_key(tenant: &str, associate_id: i64, scope: KeyScope) -> NewKey {
    NewKey {
        tenant: tenant.into(),
        associate_id,
        name: format!("{tenant} integration"),
        scope,
        expires: None,
    }
}

async fn keys_are_created_listed_and_revoked(ctx: &Ctx) {
    let s = &ctx.store;
    let before = s.list_tenants().await.unwrap().len();
    let plain = generate_key();
    let k = s
        .create_key(&new_key("Newco", 7, KeyScope::Admin), &plain)
        .await
        .unwrap();
    assert_eq!((k.tenant.as_str(), k.associate_id), ("Newco", 7));
    assert_eq!(k.scope, KeyScope::Admin);
    assert_eq!(k.name, "Newco integration");
    assert!(k.revoked.is_none() && k.last_used.is_none() && k.expires.is_none());
    let tenants = s.list_tenants().await.unwrap();
    assert_eq!(tenants.len(), before + 1, "the key created its tenant");
    assert!(tenants
        .iter()
        .any(|(id, n)| *id == k.tenant_id && n == "Newco"));
    assert_eq!(
        s.actor_for_key(&plain).await.unwrap(),
        Some(Actor {
            tenant_id: k.tenant_id,
            tenant: "Newco".into(),
            associate_id: 7
        })
    );
    let other = generate_key();
    let t = s
        .create_key(&new_key("Newco", 8, KeyScope::Tenant), &other)
        .await
        .unwrap();
    s.create_key(&new_key("Elsewhere", 1, KeyScope::Tenant), &generate_key())
        .await
        .unwrap();
    let listed = s.list_keys(Some("Newco")).await.unwrap();
    assert_eq!(
        listed.iter().map(|k| k.id).collect::<Vec<_>>(),
        vec![k.id, t.id]
    );
    assert_eq!(listed[0], k);
    assert!(s.list_keys(None).await.unwrap().len() >= 3);
    assert!(s.list_keys(Some("Nobody")).await.unwrap().is_empty());

    // Revoked on one node, refused on another.
    let revoked = s.revoke_key(k.id).await.unwrap().unwrap();
    let at = revoked.revoked.expect("revoked");
    let node = ctx.second_node().await;
    assert!(node.actor_for_key(&plain).await.unwrap().is_none());
    let found = node.find_key(&plain).await.unwrap().unwrap();
    assert_eq!(found.revoked, Some(at));
    assert!(!found.valid_at(now_ticks()));
    assert!(
        node.actor_for_key(&other).await.unwrap().is_some(),
        "the other key stays"
    );
    // Again: keeps its time. Unknown: None.
    assert_eq!(s.revoke_key(k.id).await.unwrap().unwrap().revoked, Some(at));
    assert!(s.revoke_key(999_999).await.unwrap().is_none());
    assert!(s.find_key("crmh_nothing").await.unwrap().is_none());
}

async fn expired_keys_are_refused(ctx: &Ctx) {
    let s = &ctx.store;
    let now = now_ticks();
    let (old, fresh) = (generate_key(), generate_key());
    let mut nk = new_key("Acme", 1, KeyScope::Tenant);
    nk.expires = Some(now - TICKS_PER_SECOND);
    let k = s.create_key(&nk, &old).await.unwrap();
    assert_eq!(k.expires, nk.expires);
    assert!(s.actor_for_key(&old).await.unwrap().is_none());
    nk.expires = Some(now + 3600 * TICKS_PER_SECOND);
    s.create_key(&nk, &fresh).await.unwrap();
    assert!(s.actor_for_key(&fresh).await.unwrap().is_some());
}

async fn a_changed_bootstrap_key_revokes_the_previous_one(ctx: &Ctx) {
    let s = &ctx.store;
    let first = "first-bootstrap-key-of-32-characters";
    let b1 = s.bootstrap_key("Default", 1, first).await.unwrap();
    assert!(!b1.revoked);
    assert_eq!(b1.revoked_others, 0);
    let k = s.find_key(first).await.unwrap().unwrap();
    assert_eq!((k.scope, k.name.as_str()), (KeyScope::Admin, "bootstrap"));
    // The same key at the next start: nothing changes.
    let again = s.bootstrap_key("Default", 1, first).await.unwrap();
    assert_eq!((again.id, again.revoked_others), (b1.id, 0));
    // A tenant key named by hand is not a bootstrap key.
    let tenant_key = generate_key();
    s.create_key(&new_key("Default", 2, KeyScope::Tenant), &tenant_key)
        .await
        .unwrap();
    // CRMHOOKS_API_KEY changed.
    let second = "second-bootstrap-key-of-32-chars!";
    let b2 = s.bootstrap_key("Default", 1, second).await.unwrap();
    assert_ne!(b2.id, b1.id);
    assert_eq!(b2.revoked_others, 1);
    assert!(s.actor_for_key(first).await.unwrap().is_none());
    assert!(s.actor_for_key(second).await.unwrap().is_some());
    assert!(s.actor_for_key(&tenant_key).await.unwrap().is_some());
    // A revoked bootstrap key stays revoked across restarts with the same variable.
    s.revoke_key(b2.id).await.unwrap();
    let b3 = s.bootstrap_key("Default", 1, second).await.unwrap();
    assert!(b3.revoked);
    assert!(s.actor_for_key(second).await.unwrap().is_none());
}

async fn last_use_is_written_at_most_once_a_minute(ctx: &Ctx) {
    let s = &ctx.store;
    let plain = generate_key();
    let k = s
        .create_key(&new_key("Acme", 1, KeyScope::Tenant), &plain)
        .await
        .unwrap();
    let now = now_ticks();
    assert!(s.touch_key(k.id, now).await.unwrap());
    assert!(!s.touch_key(k.id, now + TICKS_PER_SECOND).await.unwrap());
    assert!(!s
        .touch_key(k.id, now + 59 * TICKS_PER_SECOND)
        .await
        .unwrap());
    let k1 = s.find_key(&plain).await.unwrap().unwrap();
    assert_eq!(k1.last_used, Some(now));
    assert!(s
        .touch_key(k.id, now + 61 * TICKS_PER_SECOND)
        .await
        .unwrap());
    let k2 = s.find_key(&plain).await.unwrap().unwrap();
    assert_eq!(k2.last_used, Some(now + 61 * TICKS_PER_SECOND));
}

async fn the_audit_log_is_per_tenant_newest_first_and_pruned(ctx: &Ctx) {
    let s = &ctx.store;
    let a = s.ensure_tenant("Acme").await.unwrap();
    let b = s.ensure_tenant("Beta").await.unwrap();
    let entry = |tenant_id: TenantId, i: i64| NewAudit {
        tenant_id,
        key_id: Some(i),
        associate_id: 3,
        action: "webhook.changed".into(),
        target: format!("webhook/{i}"),
        summary: format!("Name, State (call {i})"),
    };
    for i in 1..=5 {
        s.record_audit(&entry(a, i)).await.unwrap();
    }
    s.record_audit(&entry(b, 99)).await.unwrap();
    let all = s.list_audit(a, None, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(),
        [
            "webhook/5",
            "webhook/4",
            "webhook/3",
            "webhook/2",
            "webhook/1"
        ]
    );
    assert!(all.iter().all(|e| e.tenant_id == a && e.associate_id == 3));
    assert_eq!(all[0].key_id, Some(5));
    assert_eq!(all[0].summary, "Name, State (call 5)");
    let page = s.list_audit(a, None, 2).await.unwrap();
    assert_eq!(page.len(), 2);
    let next = s.list_audit(a, Some(page[1].id), 2).await.unwrap();
    assert_eq!(next[0].target, "webhook/3");
    assert_eq!(s.list_audit(b, None, 100).await.unwrap().len(), 1);
    // Retention.
    assert_eq!(s.prune_audit(all[4].at).await.unwrap(), 0);
    let pruned = s.prune_audit(now_ticks() + 1).await.unwrap();
    assert_eq!(pruned, 6);
    assert!(s.list_audit(a, None, 100).await.unwrap().is_empty());
}
