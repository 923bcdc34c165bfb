//! The contact events on the wire: the four verbs, what fires and what does not, the
//! recycle bin, and tenants kept apart.

use super::*;

both_backends!(
    four_contact_events_arrive_once_with_the_superoffice_wire_format,
    name_change_lists_soundex_and_a_put_that_changes_nothing_fires_nothing,
    unsubscribed_events_and_stopped_hooks_get_nothing,
    restore_fires_changed_and_the_recycle_bin_hides_the_contact,
    tenants_do_not_see_each_other,
);

fn is_utc_timestamp(s: &str) -> bool {
    // yyyy-MM-ddTHH:mm:ss[.F{1,7}]Z
    let Some(body) = s.strip_suffix('Z') else {
        return false;
    };
    let (main, frac) = body.split_once('.').unwrap_or((body, ""));
    main.len() == 19
        && frac.len() <= 7
        && frac.chars().all(|c| c.is_ascii_digit())
        && !frac.ends_with('0')
}

const ORDER: [&str; 11] = [
    "EventId",
    "Timestamp",
    "Changes",
    "Event",
    "PrimaryKey",
    "Entity",
    "ContextIdentifier",
    "ChangedByAssociateId",
    "WebhookName",
    "FieldValues",
    "",
];

async fn four_contact_events_arrive_once_with_the_superoffice_wire_format() {
    let app = TestApp::stepped().await;
    let rx = receiver(Some("s3cret")).await;
    let events = [
        "contact.created",
        "contact.changed",
        "contact.softdeleted",
        "contact.deleted",
    ];
    app.create_hook(&rx, &events, Some("s3cret")).await;
    let id = app.create_contact("Acme").await;
    app.ok(
        Method::PATCH,
        &format!("/api/v1/Contact/{id}"),
        Some(json!({"Department": "Sales", "Associate": {"AssociateId": 12}})),
    )
    .await;
    let (s, _) = app
        .call(Method::DELETE, &format!("/api/v1/Contact/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app
        .call(
            Method::DELETE,
            &format!("/api/v1/Contact/{id}?permanent=true"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    let got = app.delivered(&rx).await;
    assert_eq!(app.deliver().await, 0, "nothing left to send");
    let got_after = deliveries(&rx);
    assert_eq!(got.len(), 4, "exactly four deliveries");
    assert_eq!(got_after.len(), 4, "no duplicates afterwards");
    let names: Vec<String> = got
        .iter()
        .map(|r| r.payload.as_ref().unwrap().event.clone())
        .collect();
    assert_eq!(names, events, "commit order for one contact");

    for r in &got {
        let p = r.payload.as_ref().unwrap();
        // Headers of spec 2.
        assert_eq!(
            r.header("content-type"),
            Some("application/json; charset=utf-8")
        );
        let ua = r.header("user-agent").unwrap();
        let version = ua.strip_prefix("NetServer-Webhook/").expect("user agent");
        assert_eq!(version.split('.').count(), 4, "{ua}");
        assert!(version.split('.').all(|n| n.parse::<u32>().is_ok()), "{ua}");
        assert_eq!(r.header("x-superoffice-event"), Some(p.event.as_str()));
        assert_eq!(
            r.header("x-superoffice-eventid"),
            Some(p.event_id.to_string().as_str())
        );
        assert_eq!(r.header("x-superoffice-retry"), Some("0"));
        assert!(r.header("x-hook-test").is_none());
        assert_eq!(
            verify("s3cret", &r.body, r.header("x-superoffice-signature")),
            Ok(())
        );
        assert!(r.verdict.is_valid());
        // Property order of spec 1.1, absent properties left out.
        let k = keys(&r.body);
        let mut want: Vec<&str> = ORDER.iter().copied().filter(|s| !s.is_empty()).collect();
        if p.event == "contact.deleted" {
            want.insert(3, "Values");
        }
        assert_eq!(k, want, "{}", p.event);
        assert_eq!(p.entity, "contact");
        assert_eq!(p.primary_key, id);
        assert_eq!(p.context_identifier, "Default");
        assert_eq!(p.changed_by_associate_id, 1);
        assert_eq!(p.webhook_name, "Test hook");
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert!(
            is_utc_timestamp(body["Timestamp"].as_str().unwrap()),
            "{}",
            body["Timestamp"]
        );
        let fv = body["FieldValues"].as_object().unwrap();
        let fkeys: Vec<&str> = fv.keys().map(String::as_str).collect();
        assert_eq!(
            fkeys, CONTACT_FIELD_VALUE_KEYS,
            "13 FieldValues keys in order"
        );
        let registered = fv["registered"].as_str().unwrap();
        assert_eq!(
            registered.len(),
            19,
            "registered has no fraction and no offset: {registered}"
        );
        let updated = fv["updated"].as_str().unwrap();
        assert!(
            updated.ends_with("+00:00"),
            "updated is local kind with offset: {updated}"
        );
        assert!(fv["associate_id"].is_number() && fv["deleted"].is_number());
    }
    let created = got[0].payload.as_ref().unwrap();
    assert_eq!(created.changes.len(), 37);
    assert_eq!(created.changes[0], "contact_id");
    assert!(!created.changes.contains(&"DeletedDate".to_owned()));
    assert_eq!(
        created.field_values.as_ref().unwrap()["DeletedDate"],
        "0001-01-01T00:00:00"
    );

    let changed = got[1].payload.as_ref().unwrap();
    assert_eq!(
        changed.changes,
        [
            "contact_id",
            "associate_id",
            "department",
            "updated_associate_id",
            "updated",
            "updatedCount"
        ]
    );
    assert_eq!(changed.field_values.as_ref().unwrap()["associate_id"], 12);

    let soft = got[2].payload.as_ref().unwrap();
    assert_eq!(
        soft.changes,
        [
            "contact_id",
            "deleted",
            "DeletedDate",
            "updated_associate_id",
            "updated",
            "updatedCount"
        ]
    );
    let sfv = soft.field_values.as_ref().unwrap();
    assert_eq!(sfv["deleted"], 1);
    assert_ne!(sfv["DeletedDate"], "0001-01-01T00:00:00");

    let deleted = got[3].payload.as_ref().unwrap();
    assert!(deleted.changes.is_empty());
    assert_eq!(
        deleted.values.as_ref().unwrap(),
        json!({"associate_id": 12, "contact_id": id})
            .as_object()
            .unwrap()
    );
    app.stop().await;
}

async fn name_change_lists_soundex_and_a_put_that_changes_nothing_fires_nothing() {
    let app = TestApp::stepped().await;
    let rx = receiver(None).await;
    app.create_hook(&rx, &["contact.changed"], None).await;
    let id = app.create_contact("Robert").await;
    let entity = app
        .ok(Method::GET, &format!("/api/v1/Contact/{id}"), None)
        .await;
    // The same entity back: nothing changes, nothing fires.
    let same = app
        .ok(
            Method::PUT,
            &format!("/api/v1/Contact/{id}"),
            Some(entity.clone()),
        )
        .await;
    assert_eq!(same, entity);
    // GET, one edit, PUT: exactly that edit.
    let mut edited = entity.clone();
    edited["Name"] = json!("Rupert Inc");
    app.ok(Method::PUT, &format!("/api/v1/Contact/{id}"), Some(edited))
        .await;
    let got = app.delivered(&rx).await;
    assert_eq!(got.len(), 1);
    let p = got[0].payload.as_ref().unwrap();
    assert_eq!(
        p.changes,
        [
            "contact_id",
            "name",
            "soundEx",
            "updated_associate_id",
            "updated",
            "updatedCount"
        ]
    );
    // Without a secret there is no signature header.
    assert!(got[0].header("x-superoffice-signature").is_none());
    let after = app
        .ok(Method::GET, &format!("/api/v1/Contact/{id}"), None)
        .await;
    assert_eq!(after["Name"], "Rupert Inc");
    assert_eq!(after["Department"], entity["Department"]);
    app.stop().await;
}

async fn unsubscribed_events_and_stopped_hooks_get_nothing() {
    let app = TestApp::stepped().await;
    let created_only = receiver(None).await;
    let stopped = receiver(None).await;
    app.create_hook(&created_only, &["contact.created"], None)
        .await;
    let sid = app
        .create_hook(&stopped, &["contact.created", "contact.changed"], None)
        .await;
    app.ok(
        Method::PATCH,
        &format!("/api/v1/Webhook/{sid}"),
        Some(json!({"State": "Stopped"})),
    )
    .await;
    let id = app.create_contact("A").await;
    app.ok(
        Method::PATCH,
        &format!("/api/v1/Contact/{id}"),
        Some(json!({"Name": "B"})),
    )
    .await;
    let got = app.delivered(&created_only).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload.as_ref().unwrap().event, "contact.created");
    assert!(
        deliveries(&stopped).is_empty(),
        "a Stopped hook receives nothing"
    );
    app.stop().await;
}

async fn restore_fires_changed_and_the_recycle_bin_hides_the_contact() {
    let app = TestApp::stepped().await;
    let rx = receiver(None).await;
    app.create_hook(&rx, &["contact.changed", "contact.softdeleted"], None)
        .await;
    let id = app.create_contact("A").await;
    app.call(Method::DELETE, &format!("/api/v1/Contact/{id}"), None)
        .await;
    let (s, _) = app
        .call(Method::GET, &format!("/api/v1/Contact/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let restored = app
        .ok(Method::POST, &format!("/api/v1/Contact/{id}/Restore"), None)
        .await;
    assert_eq!(restored["Deleted"], 0);
    let got = app.delivered(&rx).await;
    assert_eq!(got.len(), 2);
    let p = got[1].payload.as_ref().unwrap();
    assert_eq!(p.event, "contact.changed");
    assert_eq!(
        p.changes,
        [
            "contact_id",
            "deleted",
            "DeletedDate",
            "updated_associate_id",
            "updated",
            "updatedCount"
        ]
    );
    let (s, _) = app
        .call(Method::POST, &format!("/api/v1/Contact/{id}/Restore"), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    app.stop().await;
}

async fn tenants_do_not_see_each_other() {
    let app = TestApp::stepped().await;
    let other = app.add_key("Cust2", 7).await;
    let rx_a = receiver(None).await;
    let rx_b = receiver(None).await;
    let hook_a = app.create_hook(&rx_a, &["contact.created"], None).await;
    app.create_hook_as(&other, &rx_b, &["contact.created"], None, json!({}))
        .await;
    let id = app.create_contact("Default's contact").await;
    // The other tenant cannot read, change or delete it, nor see the webhook.
    for (m, p) in [
        (Method::GET, format!("/api/v1/Contact/{id}")),
        (Method::DELETE, format!("/api/v1/Contact/{id}")),
        (Method::GET, format!("/api/v1/Webhook/{hook_a}")),
        (Method::GET, format!("/api/v1/Webhook/{hook_a}/Deliveries")),
    ] {
        let (s, _) = app.call_as(&other, m, &p, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{p}");
    }
    let (s, list) = app
        .call_as(&other, Method::GET, "/api/v1/Webhook", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);
    // Tenant prefix must match the key.
    let (s, v) = app
        .call_as(&other, Method::GET, "/Default/api/v1/Webhook", None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, _) = app
        .call_as(&other, Method::GET, "/Cust2/api/v1/Webhook", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    // Only tenant A's receiver gets A's event, with A's ContextIdentifier.
    let got = app.delivered(&rx_a).await;
    assert_eq!(
        got[0].payload.as_ref().unwrap().context_identifier,
        "Default"
    );
    let other_id = app
        .call_as(
            &other,
            Method::POST,
            "/api/v1/Contact",
            Some(json!({"Name": "B"})),
        )
        .await
        .1["ContactId"]
        .as_i64()
        .unwrap();
    let got_b = app.delivered(&rx_b).await;
    let pb = got_b[0].payload.as_ref().unwrap();
    assert_eq!(pb.context_identifier, "Cust2");
    assert_eq!(pb.changed_by_associate_id, 7);
    assert_eq!(pb.primary_key, other_id);
    assert_eq!(deliveries(&rx_a).len(), 1);
    assert_eq!(deliveries(&rx_b).len(), 1);
    app.stop().await;
}
