//! Issue 23: the dashboard in a real browser. A real server on port 0 (SQLite), a real
//! receiver, Debian's chromedriver driving headless Chromium (through fantoccini): sign in,
//! create a webhook against the receiver, create and change a contact, see the deliveries in
//! the log, resend one, replay, stop and start the webhook, and keep screenshots at desktop and
//! phone width in `target/ui-screenshots/`.
//!
//! Without chromedriver and Chromium the test says so and passes, unless `CI` or
//! `CRMHOOKS_REQUIRE_BROWSER` is set (as `.ci/run` does): then it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;
mod driver;

use std::time::Duration;

use common::*;
use driver::Browser;

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_end_to_end_in_chromium() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let app = TestApp::start().await;
    let rx = receiver(None).await;
    let c = &browser.client;
    browser.size(1280, 900).await;

    // Sign in: a wrong key is refused next to the field, then the right one.
    c.goto(&format!("{}/ui", app.base)).await.unwrap();
    browser.fill("input[name=key]", "not-a-key").await;
    browser.click("form button[type=submit]").await;
    browser.wait_text(".field-error", "Unauthorized").await;
    browser.shot("signin-refused").await;
    browser.fill("input[name=key]", &app.key).await;
    browser.click("form button[type=submit]").await;
    browser.wait_text("main h1", "Webhooks").await;

    // Create a webhook: first against a target that refuses (the test-on-save answer shows
    // next to Target URL, and nothing typed is lost), then against the receiver.
    browser.click("a[href='#/webhooks/new']").await;
    browser.fill("input[name=Name]", "Browser hook").await;
    browser
        .fill("input[name=TargetUrl]", "http://127.0.0.1:9/hook")
        .await;
    browser.click("form button[type=submit]").await;
    browser.wait_text(".field-error", "test event").await;
    assert_eq!(browser.value("input[name=Name]").await, "Browser hook");
    browser.shot("webhook-test-on-save-refused").await;
    browser
        .fill("input[name=TargetUrl]", &rx.url("/hook"))
        .await;
    browser.click("form button[type=submit]").await;
    browser.wait_text(".outcome .result", "Test-on-save").await;
    browser.shot("webhook-created").await;
    let hooks = app.ok(reqwest::Method::GET, "/api/v1/Webhook", None).await;
    let hook = hooks[0]["WebhookId"].as_i64().unwrap();

    // A contact created, then changed: two deliveries.
    browser.click("nav a[href='#/contacts']").await;
    browser.wait_text("main h1", "Contacts").await;
    browser
        .fill("form input[name=Name]", "Browser Contact")
        .await;
    browser.fill("form input[name=Department]", "Sales").await;
    browser.click("form button.primary").await;
    browser.wait_text("table", "Browser Contact").await;
    browser.click("tbody tr a").await;
    browser.wait_text("main h1", "Contact #").await;
    browser.fill("input[name=Department]", "Support").await;
    browser.click("form button[type=submit]").await;
    browser.wait_text("form .result", "Saved").await;
    browser.shot("contact-edited").await;
    let got = wait_deliveries(&rx, 2, T).await;
    assert_eq!(got.len(), 2, "created and changed arrived");

    // The delivery log shows both delivered, with their attempts.
    c.goto(&format!("{}/ui/#/webhooks/{hook}", app.base))
        .await
        .unwrap();
    browser
        .wait_text("main h1", "Deliveries of Browser hook")
        .await;
    browser
        .until_count("tr.delivery .badge.ok", 2, "button:not([disabled])")
        .await;
    browser.click("tr.delivery button[aria-expanded]").await;
    browser.wait_text("tr.attempts", "200").await;
    browser.wait_text(".chart-summary", "2 deliveries").await;

    // Search by contact and by a wrong contact id (the error shows next to the field).
    browser.fill("input[name=PrimaryKey]", "abc").await;
    browser.click("form.filters button[type=submit]").await;
    browser.wait_text(".field-error", "PrimaryKey").await;
    browser.fill("input[name=PrimaryKey]", "").await;

    // Resend the newest delivery: a third request arrives, with a new EventId.
    browser.click("tr.delivery button.resend").await;
    browser.wait_text("#status", "resent as delivery").await;
    let got = wait_deliveries(&rx, 3, T).await;
    assert_eq!(got.len(), 3, "the resent delivery arrived");
    let ids: Vec<_> = got
        .iter()
        .map(|r| r.payload.as_ref().unwrap().event_id)
        .collect();
    assert_ne!(ids[2], ids[1]);

    // Replay the last hour: two events queued again, progress shown.
    browser
        .click("form[aria-labelledby=replay-title] button[type=submit]")
        .await;
    browser.wait_text("#replay-report", "Done").await;
    let got = wait_deliveries(&rx, 5, T).await;
    assert_eq!(got.len(), 5, "the replayed deliveries arrived");
    browser.size(1280, 1300).await;
    browser.click("button.refresh").await;
    browser
        .until_count("tr.delivery .badge.ok", 5, "button:not([disabled])")
        .await;
    browser.click("tr.delivery button[aria-expanded]").await;
    browser.wait_text("tr.attempts", "200").await;
    browser.shot("deliveries").await;
    browser.size(1280, 900).await;

    // Stop and start the webhook from the list.
    browser.click("nav a[href='#/webhooks']").await;
    browser.wait_text("tr[data-hook] .badge", "Active").await;
    browser.click("tr[data-hook] button.toggle").await;
    browser.wait_text("tr[data-hook] .badge", "Stopped").await;
    let state = app
        .ok(
            reqwest::Method::GET,
            &format!("/api/v1/Webhook/{hook}"),
            None,
        )
        .await;
    assert_eq!(state["State"], "Stopped");
    browser.click("tr[data-hook] button.toggle").await;
    browser.wait_text("tr[data-hook] .badge", "Active").await;
    // A second webhook whose receiver is down, so the list shows errors and a last error.
    let down = app.create_hook(&rx, &["contact.created"], None).await;
    app.activate_untested(down, "http://127.0.0.1:9/down").await;
    app.create_contact("Nobody home").await;
    let store = app.state.store.clone();
    crmhooks_testkit::wait_for(
        || async {
            let (tenant, hook) = (
                crmhooks_store::TenantId::new(1),
                crmhooks_store::WebhookId::new(down),
            );
            let u = store.webhook_usage(tenant, hook).await.ok()??;
            (u.consecutive_errors >= 2).then_some(())
        },
        T,
    )
    .await
    .expect("the failing webhook counted its errors");
    c.goto(&format!("{}/ui/#/contacts", app.base))
        .await
        .unwrap();
    c.goto(&format!("{}/ui/#/webhooks", app.base))
        .await
        .unwrap();
    browser.wait_text("tbody", "Connection refused").await;
    browser.shot("webhooks").await;

    // Phone width: the same screens, tables as cards.
    browser.size(390, 844).await;
    browser.shot("webhooks-phone").await;
    c.goto(&format!("{}/ui/#/webhooks/{hook}", app.base))
        .await
        .unwrap();
    browser
        .wait_text("main h1", "Deliveries of Browser hook")
        .await;
    browser
        .until_count("tr.delivery", 5, "button:not([disabled])")
        .await;
    browser.shot("deliveries-phone").await;
    browser.shot_at("deliveries-phone-log", "#log-title").await;

    // A contact to the recycle bin and back.
    browser.size(1280, 900).await;
    c.goto(&format!("{}/ui/#/contacts/1", app.base))
        .await
        .unwrap();
    browser.wait_text("main h1", "Contact #1").await;
    browser.click("form button.danger").await;
    browser.wait_text("main h1", "deleted").await;
    browser.click("main button.primary").await;
    browser.wait_text("main h1", "Contact #1").await;
    browser.wait_text("#status", "Restored").await;

    // Keyboard: Tab from the top of a freshly loaded page reaches the skip link, the brand
    // and the navigation.
    c.goto(&format!("{}/ui/#/webhooks", app.base))
        .await
        .unwrap();
    c.refresh().await.unwrap();
    browser.wait_text("main h1", "Webhooks").await;
    let focused = browser.tab_through(3).await;
    assert!(
        focused.iter().any(|f| f.contains("Webhooks")),
        "the navigation is reachable by Tab: {focused:?}"
    );

    browser.close().await;
    app.stop().await;
}

/// The dashboard's files: served without a key, under a strict CSP, and nothing else under
/// `/ui/` (a JSON 404).
#[tokio::test]
async fn dashboard_files_are_served_with_a_strict_policy() {
    let app = TestApp::start().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http.get(format!("{}/ui", app.base)).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.headers()["location"], "/ui/");
    for (path, kind) in [
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        let r = http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::OK, "{path}");
        let h = r.headers();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
    }
    let r = http
        .get(format!("{}/ui/secrets.txt", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::NOT_FOUND);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["ErrorType"], "NotFound");
    app.stop().await;
}
