//! Issue 4: failure handling with a real receiver scripted to fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const T: Duration = Duration::from_secs(15);

fn retry_headers(got: &[crmhooks_listen::Received]) -> Vec<String> {
    got.iter()
        .map(|r| r.header("x-superoffice-retry").unwrap_or("-").to_owned())
        .collect()
}

/// The time between request `i - 1` and request `i`, checked to lie in `[min_ms, max_ms)`.
fn assert_gap(got: &[crmhooks_listen::Received], i: usize, min_ms: u64, max_ms: u64) {
    let gap = got[i].at.duration_since(got[i - 1].at);
    assert!(
        gap >= Duration::from_millis(min_ms) && gap < Duration::from_millis(max_ms),
        "gap {i}: {gap:?}"
    );
}

fn event_ids(got: &[crmhooks_listen::Received]) -> Vec<String> {
    got.iter()
        .map(|r| r.payload.as_ref().unwrap().event_id.to_string())
        .collect()
}

/// With polling all but off, a retry still goes out at its time: the dispatcher sleeps until
/// the earliest due time it knows, and it knows the retries it scheduled itself even while it
/// reuses a recent answer of the store's `next_due` (which it reads at most every 100 ms under
/// load). Forgetting them would make each retry wait for the 30 s poll.
async fn retries_are_on_time_without_polling() {
    let app = TestApp::start_with(|t| {
        let d = t.get_mut("delivery").unwrap().as_table_mut().unwrap();
        d.insert("poll_ms".into(), 30_000.into());
        d.insert(
            "superoffice_delays_ms".into(),
            toml::Value::Array(vec![300.into(), 600.into()]),
        );
    })
    .await;
    let rx = receiver(None).await;
    app.create_hook(&rx, &["contact.created"], None).await;
    rx.script([500, 500, 200]);
    app.create_contact("A").await;
    let got = wait_deliveries(&rx, 3, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 3, "the retries did not come in time");
    assert_gap(&got, 1, 280, 1500);
    assert_gap(&got, 2, 580, 1800);
    assert_eq!(retry_headers(&got), ["0", "1", "2"]);
}

/// A SuperOffice cycle on the running dispatcher: attempts spaced by the configured delays, one
/// EventId for the cycle, and a failed cycle queued again at once under a new EventId. The
/// delays are the tests' (100 ms, 400 ms: `test_config`), the real ones (1 s, 4 s, the defaults
/// held by the config tests) scaled down ten times.
async fn superoffice_cycle_keeps_its_delays_and_event_id_then_a_new_one() {
    let app = TestApp::start().await;
    let rx = receiver(None).await;
    let hook = app.create_hook(&rx, &["contact.created"], None).await;
    rx.script([500, 500, 500, 200]);
    app.create_contact("A").await;
    let got = wait_deliveries(&rx, 4, T).await;
    assert_eq!(got.len(), 4);
    assert_gap(&got, 1, 95, 1100);
    assert_gap(&got, 2, 395, 1400);
    let gap3 = got[3].at.duration_since(got[2].at);
    assert!(
        gap3 < Duration::from_millis(1000),
        "a failed cycle is re-queued at once: {gap3:?}"
    );
    assert_eq!(retry_headers(&got), ["0", "1", "2", "0"]);
    let ids = event_ids(&got);
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[1], ids[2]);
    assert_ne!(ids[2], ids[3], "a new cycle gets a new EventId");
    // The last success is recorded a moment after the receiver answered.
    app.wait_idle().await;
    let usage = app
        .ok(Method::GET, &format!("/api/v1/Webhook/{hook}/Usage"), None)
        .await;
    assert_eq!(usage["total_calls"], 4);
    assert_eq!(usage["total_errors"], 3);
    assert_eq!(usage["consecutive_errors"], 0, "reset by the success");
    app.stop().await;
}

async fn nine_failures_make_too_many_errors_fire_the_state_event_and_mail() {
    let smtp = SmtpSink::start().await;
    let port = smtp.port;
    let app = TestApp::stepped_with(move |t| {
        let mut s = toml::value::Table::new();
        s.insert("host".into(), "127.0.0.1".into());
        s.insert("port".into(), i64::from(port).into());
        s.insert("from".into(), "crmhooks@example.com".into());
        t.insert("smtp".into(), s.into());
    })
    .await;
    let failing = receiver(None).await;
    let watcher = receiver(None).await;
    let hook = app
        .create_hook_as(
            &app.key.clone(),
            &failing,
            &["contact.created"],
            None,
            json!({"ErrorsEmail": "ops@example.com", "Name": "Failing hook"}),
        )
        .await;
    let watch_events = [
        format!("webhook{hook}.errors"),
        format!("webhook{hook}.started"),
        format!("webhook{hook}.stopped"),
    ];
    let watch_refs: Vec<&str> = watch_events.iter().map(String::as_str).collect();
    app.create_hook_as(
        &app.key.clone(),
        &watcher,
        &watch_refs,
        None,
        json!({"Name": "Watcher"}),
    )
    .await;
    failing.set_status(500);
    app.create_contact("A").await;
    // Every round until nothing is left: nothing is sent after TooManyErrors.
    app.deliver().await;
    let got = deliveries(&failing);
    assert_eq!(
        got.len(),
        9,
        "nine attempts, then nothing after TooManyErrors"
    );
    let state_events = deliveries(&watcher);
    assert_eq!(state_events.len(), 1, "one state event");
    assert_eq!(
        retry_headers(&got),
        ["0", "1", "2", "0", "1", "2", "0", "1", "2"]
    );
    let ids = event_ids(&got);
    assert!(ids[0] == ids[2] && ids[3] == ids[5] && ids[6] == ids[8]);
    assert!(ids[0] != ids[3] && ids[3] != ids[6]);
    let v = app
        .ok(Method::GET, &format!("/api/v1/Webhook/{hook}"), None)
        .await;
    assert_eq!(v["State"], "TooManyErrors");
    let usage = app
        .ok(Method::GET, &format!("/api/v1/Webhook/{hook}/Usage"), None)
        .await;
    assert_eq!(
        (
            usage["total_calls"].as_i64(),
            usage["total_errors"].as_i64(),
            usage["consecutive_errors"].as_i64()
        ),
        (Some(9), Some(9), Some(9))
    );
    let last = app.last_error(hook).await;
    assert!(last.starts_with("HTTP/1.1 500"), "{last}");
    // The state event as SuperOffice documents it: the subscribed name in the header, body
    // `Event` `webhook.errors` and no `Entity`; state 3, system associate.
    let se = &state_events[0];
    let p = se.payload.as_ref().unwrap();
    assert_eq!(p.event, "webhook.errors");
    assert_eq!(
        se.header("x-superoffice-event"),
        Some(format!("webhook{hook}.errors").as_str())
    );
    assert_eq!(p.entity, "");
    assert_eq!(
        keys(&se.body),
        [
            "EventId",
            "Timestamp",
            "Changes",
            "Event",
            "PrimaryKey",
            "ContextIdentifier",
            "ChangedByAssociateId",
            "WebhookName",
            "FieldValues"
        ]
    );
    assert_eq!(p.primary_key, hook);
    assert_eq!(p.changed_by_associate_id, 0);
    assert_eq!(p.webhook_name, "Watcher");
    assert!(p.changes.is_empty());
    let fv = p.field_values.as_ref().unwrap();
    assert_eq!(fv["state"], 3);
    assert_eq!(fv["events"], 9);
    let keys: Vec<&str> = fv.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "events",
            "registered",
            "registered_associate_id",
            "state",
            "updated",
            "updated_associate_id"
        ]
    );
    // The mail.
    let mail = smtp.wait_mail(T).await.expect("an errors mail");
    assert!(mail.contains("ops@example.com"), "{mail}");
    assert!(mail.contains("Failing hook"), "{mail}");
    // Reactivating fires .started, resets the counter, and the parked delivery goes out.
    failing.set_status(200);
    app.ok(
        Method::PATCH,
        &format!("/api/v1/Webhook/{hook}"),
        Some(json!({"State": "Active"})),
    )
    .await;
    let after = app.delivered(&failing).await;
    assert_eq!(
        after.len(),
        10,
        "the parked event is delivered after reactivation"
    );
    let started = deliveries(&watcher);
    assert_eq!(started.len(), 2);
    assert_eq!(
        started[1].payload.as_ref().unwrap().event,
        "webhook.started"
    );
    assert_eq!(
        started[1].header("x-superoffice-event"),
        Some(format!("webhook{hook}.started").as_str())
    );
    assert_eq!(
        started[1]
            .payload
            .as_ref()
            .unwrap()
            .field_values
            .as_ref()
            .unwrap()["state"],
        1
    );
    app.stop().await;
}

async fn gone_410_disables_at_once() {
    let app = TestApp::stepped().await;
    let rx = receiver(None).await;
    let hook = app
        .create_hook(&rx, &["contact.created", "contact.changed"], None)
        .await;
    rx.set_status(410);
    // Two events of one contact, both committed while the webhook is Active, before the
    // dispatcher runs: the second waits for the first (per-contact order), so it is still
    // queued when the 410 disables the webhook.
    let a = app.create_contact("A").await;
    app.ok(
        Method::PATCH,
        &format!("/api/v1/Contact/{a}"),
        Some(json!({"Name": "A2"})),
    )
    .await;
    let got = app.delivered(&rx).await;
    assert_eq!(
        got.len(),
        1,
        "one call, then disabled: {:?}",
        retry_headers(&got)
    );
    let v = app
        .ok(Method::GET, &format!("/api/v1/Webhook/{hook}"), None)
        .await;
    assert_eq!(v["State"], "TooManyErrors");
    let failed = app
        .ok(
            Method::GET,
            &format!("/api/v1/Webhook/{hook}/Deliveries?status=failed"),
            None,
        )
        .await;
    assert_eq!(failed.as_array().unwrap().len(), 1);
    let pending = app
        .ok(
            Method::GET,
            &format!("/api/v1/Webhook/{hook}/Deliveries?status=pending"),
            None,
        )
        .await;
    assert_eq!(
        pending.as_array().unwrap().len(),
        1,
        "the other event waits, it is not lost"
    );
    app.stop().await;
}

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

async fn refused_connections_are_failures_with_a_readable_error() {
    let app = TestApp::stepped().await;
    let rx = receiver(None).await;
    let hook = app.create_hook(&rx, &["contact.created"], None).await;
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}/hook", dead.local_addr().unwrap());
    drop(dead);
    app.activate_untested(hook, &dead_url).await;
    app.create_contact("A").await;
    // Two rounds: the first attempt, then its retry (due at once in a stepped test).
    assert_eq!(app.step().await, 1);
    assert_eq!(app.step().await, 1);
    let last = app.last_error(hook).await;
    assert!(last.contains("connect"), "{last}");
    let list = app
        .ok(
            Method::GET,
            &format!("/api/v1/Webhook/{hook}/Deliveries"),
            None,
        )
        .await;
    let d = &list[0];
    let detail = app
        .ok(
            Method::GET,
            &format!("/api/v1/Webhook/{hook}/Deliveries/{}", d["DeliveryId"]),
            None,
        )
        .await;
    let attempts = detail["AttemptLog"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{detail}");
    assert!(attempts[0]["StatusCode"].is_null());
    assert!(attempts[0]["Error"].as_str().unwrap().contains("connect"));
    assert_eq!(attempts[0]["Retry"], 0);
    assert_eq!(attempts[1]["Retry"], 1);
    app.stop().await;
}

async fn test_endpoint_and_signal_event() {
    let app = TestApp::stepped().await;
    let rx = receiver(Some("k")).await;
    let (s, v) = app
        .call(
            Method::POST,
            "/api/v1/Webhook/Test",
            Some(
                json!({"Name": "try", "TargetUrl": rx.url("/t"), "Secret": "k", "Events": ["x.y"]}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["Success"], true, "{v}");
    assert!(v["Message"].as_str().unwrap().starts_with("HTTP/1.1 200"));
    let t = rx.received();
    assert_eq!(t.len(), 1);
    assert!(t[0].is_test() && t[0].verdict.is_valid());
    assert_eq!(t[0].header("x-hook-test"), Some("true"));
    let p = t[0].payload.as_ref().unwrap();
    assert_eq!(
        (p.event.as_str(), p.entity.as_str(), p.primary_key),
        ("test", "test", 0)
    );
    rx.set_status(503);
    let (_, v) = app
        .call(
            Method::POST,
            "/api/v1/Webhook/Test",
            Some(json!({"TargetUrl": rx.url("/t"), "Secret": "k", "Events": ["x.y"]})),
        )
        .await;
    assert_eq!(v["Success"], false);
    assert!(v["Message"].as_str().unwrap().contains("503"));
    rx.set_status(200);
    // SignalEvent: every webhook subscribed to that exact name.
    app.create_hook(&rx, &["window.closed"], Some("k")).await;
    let (s, _) = app
        .call(
            Method::POST,
            "/api/v1/Webhook/window.closed/42",
            Some(json!({"width": 3, "title": "x"})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app
        .call(Method::POST, "/api/v1/Webhook/window.opened/42", None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let got = app.delivered(&rx).await;
    assert_eq!(got.len(), 1);
    let p = got[0].payload.as_ref().unwrap();
    assert_eq!(p.event, "window.closed");
    assert_eq!(p.entity, "window");
    assert_eq!(p.primary_key, 42);
    assert_eq!(p.changes, ["width", "title"]);
    assert_eq!(p.field_values.as_ref().unwrap()["width"], 3);
    assert_eq!(p.changed_by_associate_id, 1);
    let (s, _) = app
        .call(
            Method::POST,
            "/api/v1/Webhook/window.closed/notanumber",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    app.stop().await;
}

async fn replay_delivers_exactly_the_missed_events() {
    let app = TestApp::stepped().await;
    let rx = receiver(None).await;
    let hook = app.create_hook(&rx, &["contact.created"], None).await;
    let since = time::OffsetDateTime::now_utc() - time::Duration::seconds(5);
    let first = app.create_contact("delivered").await;
    app.deliver().await;
    // Stopped: events happen but the hook gets no deliveries.
    app.ok(
        Method::PATCH,
        &format!("/api/v1/Webhook/{hook}"),
        Some(json!({"State": "Stopped"})),
    )
    .await;
    let mut missed = Vec::new();
    for i in 0..3 {
        missed.push(app.create_contact(&format!("missed {i}")).await);
    }
    app.ok(
        Method::PATCH,
        &format!("/api/v1/Webhook/{hook}"),
        Some(json!({"State": "Active"})),
    )
    .await;
    assert_eq!(app.delivered(&rx).await.len(), 1);
    let since_s = since
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let report = app
        .ok(
            Method::POST,
            &format!("/api/v1/Webhook/{hook}/Replay"),
            Some(json!({"since": since_s, "onlyFailed": true})),
        )
        .await;
    assert_eq!(
        (
            &report["status"],
            &report["matched"],
            &report["queued"],
            &report["skipped"]
        ),
        (&json!("Done"), &json!(4), &json!(3), &json!(1)),
        "{report}"
    );
    // The job can be read back, done; another webhook's path does not find it.
    let job = app
        .ok(
            Method::GET,
            &format!("/api/v1/Webhook/{hook}/Replay/{}", report["replayId"]),
            None,
        )
        .await;
    assert_eq!(job, report);
    let (s, _) = app
        .call(
            Method::GET,
            &format!("/api/v1/Webhook/{hook}/Replay/999999"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let got = app.delivered(&rx).await;
    assert_eq!(got.len(), 4);
    let pks: Vec<i64> = got[1..]
        .iter()
        .map(|r| r.payload.as_ref().unwrap().primary_key)
        .collect();
    assert_eq!(pks, missed);
    assert_eq!(got[0].payload.as_ref().unwrap().primary_key, first);
    // Idempotent per request: a second identical replay queues nothing new.
    let again = app
        .ok(
            Method::POST,
            &format!("/api/v1/Webhook/{hook}/Replay"),
            Some(json!({"since": since_s, "onlyFailed": true})),
        )
        .await;
    assert_eq!(again["queued"], 0, "{again}");
    // Without onlyFailed everything in the window is sent again.
    let all = app
        .ok(
            Method::POST,
            &format!("/api/v1/Webhook/{hook}/Replay"),
            Some(json!({"since": since_s})),
        )
        .await;
    assert_eq!(all["queued"], 4, "{all}");
    let (s, v) = app
        .call(
            Method::POST,
            &format!("/api/v1/Webhook/{hook}/Replay"),
            Some(json!({"since": "yesterday"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    app.stop().await;
}

async fn exponential_policy_grows_delays_and_accepts_2xx() {
    let app = TestApp::start_with(|t| {
        let d = t.get_mut("delivery").unwrap().as_table_mut().unwrap();
        d.insert("exponential_base_ms".into(), 200.into());
        d.insert("exponential_jitter".into(), 0.0.into());
    })
    .await;
    let rx = receiver(None).await;
    app.create_hook_as(
        &app.key.clone(),
        &rx,
        &["contact.created"],
        None,
        json!({"RetryPolicy": "exponential", "SuccessStatus": "2xx"}),
    )
    .await;
    rx.script([500, 500, 204]);
    app.create_contact("A").await;
    let got = wait_deliveries(&rx, 3, T).await;
    assert_eq!(got.len(), 3);
    let g1 = got[1].at.duration_since(got[0].at);
    let g2 = got[2].at.duration_since(got[1].at);
    assert!(
        g1 >= Duration::from_millis(195) && g2 >= Duration::from_millis(395),
        "{g1:?} {g2:?}"
    );
    // (lower bounds only: a loaded machine can only make gaps longer)
    app.wait_idle().await;
    assert_eq!(
        deliveries(&rx).len(),
        3,
        "204 counts as success with SuccessStatus 2xx"
    );
    app.stop().await;
}

/// A tiny SMTP server that accepts one conversation at a time and keeps each message.
struct SmtpSink {
    port: u16,
    mails: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl SmtpSink {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mails = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let m = mails.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let m = m.clone();
                tokio::spawn(async move {
                    let (r, mut w) = sock.into_split();
                    let mut r = BufReader::new(r);
                    w.write_all(b"220 sink ESMTP\r\n").await.ok();
                    let mut line = String::new();
                    let mut mail = String::new();
                    let mut in_data = false;
                    loop {
                        line.clear();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            break;
                        }
                        if in_data {
                            if line == ".\r\n" {
                                in_data = false;
                                m.lock().unwrap().push(std::mem::take(&mut mail));
                                w.write_all(b"250 queued\r\n").await.ok();
                            } else {
                                mail.push_str(&line);
                            }
                            continue;
                        }
                        let cmd = line.to_ascii_uppercase();
                        let reply: &[u8] = if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
                            b"250 sink\r\n"
                        } else if cmd.starts_with("DATA") {
                            in_data = true;
                            b"354 go ahead\r\n"
                        } else if cmd.starts_with("QUIT") {
                            w.write_all(b"221 bye\r\n").await.ok();
                            break;
                        } else {
                            if cmd.starts_with("RCPT") {
                                mail.push_str(&line);
                            }
                            b"250 ok\r\n"
                        };
                        w.write_all(reply).await.ok();
                    }
                });
            }
        });
        SmtpSink { port, mails }
    }

    async fn wait_mail(&self, timeout: Duration) -> Option<String> {
        crmhooks_testkit::wait_for(
            || async { self.mails.lock().unwrap().first().cloned() },
            timeout,
        )
        .await
    }
}

both_backends!(
    superoffice_cycle_keeps_its_delays_and_event_id_then_a_new_one,
    retries_are_on_time_without_polling,
    nine_failures_make_too_many_errors_fire_the_state_event_and_mail,
    gone_410_disables_at_once,
    per_contact_order_holds_while_one_contact_is_failing,
    a_hanging_target_does_not_block_other_webhooks,
    refused_connections_are_failures_with_a_readable_error,
    test_endpoint_and_signal_event,
    replay_delivers_exactly_the_missed_events,
    exponential_policy_grows_delays_and_accepts_2xx,
    handed_and_claimed_deliveries_share_few_slots_without_losing_any,
);
