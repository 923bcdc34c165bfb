//! Deliveries in flight: slots shared by handed and claimed deliveries, order per contact
//! while one fails, and a hanging target that blocks no other webhook.

use super::*;

both_backends!(
    per_contact_order_holds_while_one_contact_is_failing,
    a_hanging_target_does_not_block_other_webhooks,
    handed_and_claimed_deliveries_share_few_slots_without_losing_any,
);

/// Deliveries handed over at commit and deliveries claimed share the same slots. With few
/// slots and many webhooks, the two paths race for them all the time; a claimed delivery must
/// never find its slot taken (it would sit leased and unsent until its lease of two minutes
/// ran out), and every event must reach every webhook in commit order per contact, at once.
async fn handed_and_claimed_deliveries_share_few_slots_without_losing_any() {
    let app = TestApp::start_with(|t| {
        let d = t.get_mut("delivery").unwrap().as_table_mut().unwrap();
        d.insert("max_in_flight".into(), 8.into());
        d.insert("max_per_webhook".into(), 2.into());
        d.insert("batch".into(), 4.into());
    })
    .await;
    let rx = receiver(None).await;
    // Slow answers, so that requests pile up: six webhooks of two requests each could have
    // twelve in flight, and the node holds up to sixteen deliveries; only eight may be sent
    // at once.
    rx.set_delay(Duration::from_millis(5));
    let hooks = 6;
    for k in 0..hooks {
        let key = app.key.clone();
        app.create_hook_as(
            &key,
            &rx,
            &["contact.created", "contact.changed"],
            None,
            json!({"Name": format!("hook {k}")}),
        )
        .await;
    }
    // Eight clients, each creating contacts and changing each twice, so that commits (which
    // hand deliveries over) keep coming while claims are on their way.
    let (workers, per_worker, changes) = (8, 8, 2);
    let contacts = workers * per_worker;
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_worker {
                let id = app.create_contact(&format!("C{w}-{i}")).await;
                for j in 0..changes {
                    let (s, v) = app
                        .call(
                            Method::PATCH,
                            &format!("/api/v1/Contact/{id}"),
                            Some(json!({"Department": format!("d{j}")})),
                        )
                        .await;
                    assert_eq!(s, StatusCode::OK, "{v}");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let app = std::sync::Arc::into_inner(app).expect("every client task has ended");
    let want = hooks * contacts * (1 + changes);
    let got = wait_deliveries(&rx, want, Duration::from_secs(20)).await;
    assert_eq!(
        got.len(),
        want,
        "deliveries missing (left leased without a slot?)"
    );
    assert!(
        rx.peak_in_flight() <= 8,
        "max_in_flight is 8, the receiver saw {} at once",
        rx.peak_in_flight()
    );
    assert!(rx.peak_in_flight() >= 2, "the load never overlapped");
    // Per webhook and contact: created, then the changes in commit order.
    let mut seen: std::collections::BTreeMap<(String, i64), Vec<(String, String)>> =
        Default::default();
    for r in &got {
        let p = r.payload.as_ref().unwrap();
        let updated = p.field_values.as_ref().unwrap()["updated"].to_string();
        seen.entry((p.webhook_name.clone(), p.primary_key))
            .or_default()
            .push((updated, p.event.clone()));
    }
    assert_eq!(seen.len(), hooks * contacts);
    for ((hook, pk), calls) in &seen {
        assert_eq!(calls.len(), 1 + changes, "{hook} {pk}: {calls:?}");
        assert_eq!(calls[0].1, "contact.created", "{hook} {pk}: {calls:?}");
        let mut sorted = calls.clone();
        sorted.sort();
        sorted.dedup_by(|a, b| a.0 == b.0);
        assert_eq!(&sorted, calls, "{hook} {pk}: out of order or twice");
    }
    app.stop().await;
}

async fn per_contact_order_holds_while_one_contact_is_failing() {
    let app = TestApp::stepped().await;
    let rx = receiver(None).await;
    app.create_hook(&rx, &["contact.created", "contact.changed"], None)
        .await;
    let a = app.create_contact("A").await;
    app.deliver().await;
    // Contact A's next event fails a whole cycle and more; meanwhile B flows, and A's later
    // change waits for the failing one.
    rx.script_primary_key(a, [500, 500, 500, 500]);
    app.ok(
        Method::PATCH,
        &format!("/api/v1/Contact/{a}"),
        Some(json!({"Department": "1"})),
    )
    .await;
    app.ok(
        Method::PATCH,
        &format!("/api/v1/Contact/{a}"),
        Some(json!({"Department": "2"})),
    )
    .await;
    let b = app.create_contact("B").await;
    let got = app.delivered(&rx).await;
    assert_eq!(got.len(), 8, "1 created + 4 failures + 2 changes + B");
    let seq: Vec<(i64, String, u16)> = got[1..]
        .iter()
        .map(|r| {
            let p = r.payload.as_ref().unwrap();
            (p.primary_key, p.event.clone(), r.answered)
        })
        .collect();
    // B arrives (and succeeds) while A is still failing.
    let b_at = seq.iter().position(|(pk, _, _)| *pk == b).unwrap();
    let a_first_ok = seq
        .iter()
        .position(|(pk, _, st)| *pk == a && *st == 200)
        .unwrap();
    assert!(b_at < a_first_ok, "B flows while A retries: {seq:?}");
    // A's attempts: 4 failures of change 1 (a cycle of 3, then a new cycle), then change 1
    // succeeds, then change 2: never change 2 before change 1 succeeded.
    let a_calls: Vec<&crmhooks_listen::Received> = got[1..]
        .iter()
        .filter(|r| r.payload.as_ref().unwrap().primary_key == a)
        .collect();
    assert_eq!(a_calls.len(), 6, "{seq:?}");
    let updated: Vec<String> = a_calls
        .iter()
        .map(|r| r.payload.as_ref().unwrap().field_values.as_ref().unwrap()["updated"].to_string())
        .collect();
    assert!(
        updated[..5].iter().all(|u| *u == updated[0]),
        "the first five calls all carry change 1: {updated:?}"
    );
    assert!(updated[5] > updated[0], "change 2 comes last: {updated:?}");
    assert_eq!(
        a_calls.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [500, 500, 500, 500, 200, 200]
    );
    assert_eq!(
        retry_headers(&a_calls.iter().map(|r| (*r).clone()).collect::<Vec<_>>()),
        ["0", "1", "2", "0", "1", "0"]
    );
    app.stop().await;
}

async fn a_hanging_target_does_not_block_other_webhooks() {
    let app = TestApp::start_with(|t| {
        let d = t.get_mut("delivery").unwrap().as_table_mut().unwrap();
        d.insert("timeout_ms".into(), 1000.into());
    })
    .await;
    let slow = receiver(None).await;
    let fast = receiver(None).await;
    let slow_hook = app.create_hook(&slow, &["contact.created"], None).await;
    app.create_hook(&fast, &["contact.created"], None).await;
    slow.set_delay(Duration::from_secs(10));
    let start = Instant::now();
    for i in 0..20 {
        app.create_contact(&format!("c{i}")).await;
    }
    let got = wait_deliveries(&fast, 20, T).await;
    assert_eq!(got.len(), 20);
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "fast receiver served in {:?}",
        start.elapsed()
    );
    // The slow one times out (after 1 s) and says so.
    let last = crmhooks_testkit::wait_for(
        || async {
            let last = app.last_error(slow_hook).await;
            (!last.is_empty()).then_some(last)
        },
        T,
    )
    .await
    .unwrap_or_default();
    assert!(last.contains("timeout"), "{last}");
    app.stop().await;
}
