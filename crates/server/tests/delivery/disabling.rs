//! A webhook that keeps failing: too many errors (the state event and the mail), and 410 Gone.

use super::*;

both_backends!(
    nine_failures_make_too_many_errors_fire_the_state_event_and_mail,
    gone_410_disables_at_once,
);

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
