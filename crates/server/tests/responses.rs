//! Golden transcripts of the API's answers, byte for byte: webhook and contact carriers in and
//! out, the `default` and list routes, the delivery log and every kind of error. Clients (and
//! SuperOffice receivers' tooling) parse these bytes, so property order, null against absent,
//! number and date formats are part of the contract.
//!
//! A transcript masks only what changes from run to run: the server's and the receiver's
//! addresses, the clock (dates the server stamps, keeping their format), random `EventId`s,
//! durations and the receiver's `date:` header. Both backends write the same transcript.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fmt::Write as _;
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::Value;

const T: Duration = Duration::from_secs(15);

/// Properties whose values the server takes from the clock or a random source.
const CLOCK_KEYS: [&str; 9] = [
    "Registered",
    "Updated",
    "CreatedDate",
    "UpdatedDate",
    "DeletedDate",
    "Created",
    "NextAttemptAt",
    "Completed",
    "AttemptedAt",
];

/// Requests and their raw answers, written down one after the other.
struct Transcript<'a> {
    app: &'a TestApp,
    rx: String,
    out: String,
}

impl<'a> Transcript<'a> {
    fn new(app: &'a TestApp, rx: &crmhooks_listen::Receiver) -> Self {
        Transcript {
            app,
            rx: rx.url("").trim_end_matches('/').to_owned(),
            out: String::new(),
        }
    }

    /// Sends `body` (raw text, `{rx}` standing for the receiver's address) with the test key.
    async fn send(&mut self, method: Method, path: &str, body: Option<&str>) -> Value {
        let key = self.app.key.clone();
        self.send_as(Some(&key), method, path, body).await
    }

    /// As [`Self::send`] with another key, or none.
    async fn send_as(
        &mut self,
        key: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> Value {
        let mut req = self
            .app
            .http
            .request(method.clone(), format!("{}{path}", self.app.base));
        match key.map(|k| (k, k.strip_prefix("raw:"))) {
            Some((_, Some(raw))) => req = req.header("authorization", raw),
            Some((k, None)) => req = req.bearer_auth(k),
            None => {}
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.replace("{rx}", &self.rx));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = resp.text().await.unwrap();
        let _ = writeln!(self.out, ">>> {method} {path}");
        if let Some(b) = body {
            let _ = writeln!(self.out, "{b}");
        }
        let _ = writeln!(self.out, "<<< {status} {content_type}");
        let _ = writeln!(self.out, "{}\n", self.mask(&text));
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Writes a line of commentary.
    fn note(&mut self, line: &str) {
        let _ = writeln!(self.out, "## {line}\n");
    }

    fn mask(&self, text: &str) -> String {
        let text = text
            .replace(&self.app.base, "{base}")
            .replace(&self.rx, "{rx}");
        mask_json(&mask_http_dates(&text))
    }
}

/// Replaces the receiver's `date: Tue, 01 Jan 2030 00:00:00 GMT` header inside excerpts.
fn mask_http_dates(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("date: ") {
        let start = i + "date: ".len();
        let end = rest[start..]
            .find(" GMT")
            .map_or(start, |j| start + j + " GMT".len());
        out.push_str(&rest[..start]);
        out.push_str("[http-date]");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Masks the values of [`CLOCK_KEYS`] (keeping the date's format: `[date]` stands for
/// `yyyy-MM-ddTHH:mm:ss` and its fraction, the offset stays), non-nil `EventId`s and
/// `DurationMs` numbers. A small scanner over the JSON text, so that everything else stays
/// exactly as sent.
fn mask_json(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut last_key = String::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                let content = &text[i + 1..j.min(b.len())];
                let is_key = text[j + 1..].trim_start().starts_with(':');
                if is_key {
                    last_key = content.to_owned();
                    out.push_str(&text[i..=j]);
                } else {
                    out.push('"');
                    out.push_str(&mask_string(&last_key, content));
                    out.push('"');
                }
                i = j + 1;
            }
            b'0'..=b'9' | b'-' if last_key == "DurationMs" => {
                let mut j = i;
                while j < b.len() && matches!(b[j], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    j += 1;
                }
                let number = &text[i..j];
                out.push_str(if number.contains(['.', 'e']) {
                    "[float]"
                } else {
                    "[int]"
                });
                i = j;
            }
            c => {
                out.push(c as char);
                i += 1;
            }
        }
    }
    out
}

fn mask_string(key: &str, s: &str) -> String {
    if CLOCK_KEYS.contains(&key) && !s.starts_with("0001-01-01T00:00:00") {
        let b = s.as_bytes();
        let shaped = b.len() >= 19
            && b[..19].iter().enumerate().all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                10 => *c == b'T',
                13 | 16 => *c == b':',
                _ => c.is_ascii_digit(),
            });
        if !shaped {
            return format!("[not a date: {s}]");
        }
        let mut rest = &s[19..];
        if let Some(frac) = rest.strip_prefix('.') {
            rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
        }
        return format!("[date]{rest}");
    }
    if key == "EventId" && s.len() == 36 && s != "00000000-0000-0000-0000-000000000000" {
        return "[uuid]".into();
    }
    s.to_owned()
}

/// Waits until the delivery log of `hook` shows `n` deliveries, all delivered.
async fn wait_delivered(app: &TestApp, hook: i64, n: usize) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let (_, v) = app
            .call(
                Method::GET,
                &format!("/api/v1/Webhook/{hook}/Deliveries"),
                None,
            )
            .await;
        let done = v
            .as_array()
            .is_some_and(|l| l.len() == n && l.iter().all(|d| d["Status"] == "delivered"));
        if done || tokio::time::Instant::now() >= deadline {
            assert!(done, "deliveries of webhook {hook}: {v}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn webhook_responses() {
    let app = TestApp::start().await;
    let rx = receiver(None).await;
    let mut t = Transcript::new(&app, &rx);
    t.note("the default carrier and an empty list");
    t.send(Method::GET, "/api/v1/Webhook/default", None).await;
    t.send(Method::GET, "/api/v1/Webhook", None).await;
    t.note("POST with every property, then with the required ones only");
    t.send(
        Method::POST,
        "/api/v1/Webhook",
        Some(
            r#"{"Name":"Full","Events":["contact.created"," contact.changed "],"TargetUrl":"{rx}/full","Secret":"s3cret","State":"Active","Type":"webhook","Headers":{"X-Custom":"v","X-Other":"w"},"Properties":{"a":1,"b":{"c":[true,null,1.5]}},"ErrorsEmail":"ops@example.com","RetryPolicy":"superoffice","SuccessStatus":"2xx"}"#,
        ),
    )
    .await;
    t.send(
        Method::POST,
        "/api/v1/Webhook",
        Some(r#"{"name":"Minimal","events":["contact.deleted"],"targeturl":"{rx}/min"}"#),
    )
    .await;
    t.send(
        Method::POST,
        "/api/v1/Webhook",
        Some(r#"{"Name":"Stopped","Events":["contact.created"],"TargetUrl":"{rx}/stopped","State":2,"Headers":{},"Properties":null,"ErrorsEmail":"","RetryPolicy":null,"SuccessStatus":"200"}"#),
    )
    .await;
    t.note("reads: one, the list, the filters");
    t.send(Method::GET, "/api/v1/Webhook/1", None).await;
    t.send(Method::GET, "/Default/api/v1/Webhook/2", None).await;
    t.send(Method::GET, "/api/v1/Webhook", None).await;
    t.send(Method::GET, "/api/v1/Webhook?nameFilter=Minimal", None)
        .await;
    t.send(
        Method::GET,
        "/api/v1/Webhook?eventFilter=contact.changed&statusFilter=Active",
        None,
    )
    .await;
    t.send(Method::GET, "/api/v1/Webhook?statusFilter=Stopped", None)
        .await;
    t.send(Method::GET, "/api/v1/Webhook?statusFilter=", None)
        .await;
    t.note("PUT replaces: absent properties take their defaults, an absent Secret is kept");
    t.send(
        Method::PUT,
        "/api/v1/Webhook/1",
        Some(r#"{"Name":"Full, put","Events":["contact.created"],"TargetUrl":"{rx}/full","Headers":{"X-Custom":"v2"}}"#),
    )
    .await;
    t.note("PATCH: Merge Patch, JSON Patch, a failed test");
    t.send(
        Method::PATCH,
        "/api/v1/Webhook/1",
        Some(r#"{"state":"Stopped","Properties":{"k":"v"},"Headers":null}"#),
    )
    .await;
    t.send(
        Method::PATCH,
        "/api/v1/Webhook/1",
        Some(r#"[{"op":"replace","path":"/Name","value":"Patched"},{"op":"add","path":"/Properties/n","value":2},{"op":"test","path":"/state","value":"Stopped"},{"op":"replace","path":"State","value":"Active"}]"#),
    )
    .await;
    t.send(
        Method::PATCH,
        "/api/v1/Webhook/1",
        Some(r#"[{"op":"test","path":"/Name","value":"Other"}]"#),
    )
    .await;
    t.send(
        Method::PATCH,
        "/api/v1/Webhook/1",
        Some(r#"{"Secret":"new"}"#),
    )
    .await;
    t.note("test and signal");
    t.send(
        Method::POST,
        "/api/v1/Webhook/Test",
        Some(r#"{"Events":["contact.created"],"TargetUrl":"{rx}/test"}"#),
    )
    .await;
    t.send(
        Method::POST,
        "/api/v1/Webhook/Test",
        Some(r#"{"Name":"x","Events":["contact.created"],"TargetUrl":"ftp://nowhere"}"#),
    )
    .await;
    t.send(
        Method::POST,
        "/api/v1/Webhook/custom.thing/5",
        Some(r#"{"a":1}"#),
    )
    .await;
    t.send(Method::POST, "/api/v1/Webhook/custom.thing/6", None)
        .await;
    t.note("delete");
    t.send(Method::DELETE, "/api/v1/Webhook/3", None).await;
    t.send(Method::DELETE, "/api/v1/Webhook/3", None).await;
    t.send(Method::GET, "/api/v1/Webhook", None).await;
    insta::assert_snapshot!("webhook", t.out);
    app.stop().await;
}

/// What the stored secret became after each kind of save (the API never shows it).
async fn webhook_secret_semantics() {
    let app = TestApp::start().await;
    let rx = receiver(None).await;
    let secret = |app: &TestApp| {
        let store = app.state.store.clone();
        async move { store.get_webhook(1, 1).await.unwrap().unwrap().secret }
    };
    let url = rx.url("/s");
    let put = |body: Value| {
        let app = &app;
        async move { app.ok(Method::PUT, "/api/v1/Webhook/1", Some(body)).await }
    };
    app.ok(
        Method::POST,
        "/api/v1/Webhook",
        Some(serde_json::json!({"Name": "s", "Events": ["contact.created"], "TargetUrl": url, "Secret": "one"})),
    )
    .await;
    assert_eq!(secret(&app).await.as_deref(), Some("one"));
    let v = put(serde_json::json!({"Name": "s", "Events": ["contact.created"], "TargetUrl": url}))
        .await;
    assert_eq!(v["Secret"], Value::Null);
    assert_eq!(
        secret(&app).await.as_deref(),
        Some("one"),
        "PUT without Secret keeps it"
    );
    put(serde_json::json!({"Name": "s", "Events": ["contact.created"], "TargetUrl": url, "Secret": "two"}))
        .await;
    assert_eq!(secret(&app).await.as_deref(), Some("two"));
    app.ok(
        Method::PATCH,
        "/api/v1/Webhook/1",
        Some(serde_json::json!({"Name": "s2"})),
    )
    .await;
    assert_eq!(
        secret(&app).await.as_deref(),
        Some("two"),
        "PATCH without Secret keeps it"
    );
    put(serde_json::json!({"Name": "s", "Events": ["contact.created"], "TargetUrl": url, "Secret": null}))
        .await;
    assert_eq!(secret(&app).await, None, "an explicit null removes it");
    put(serde_json::json!({"Name": "s", "Events": ["contact.created"], "TargetUrl": url, "Secret": "three"}))
        .await;
    put(serde_json::json!({"Name": "s", "Events": ["contact.created"], "TargetUrl": url, "Secret": ""}))
        .await;
    assert_eq!(secret(&app).await, None, "an empty string removes it");
    app.stop().await;
}

async fn delivery_log_responses() {
    let app = TestApp::start().await;
    let rx = receiver(None).await;
    let hook = app.create_hook(&rx, &["contact.created"], Some("k")).await;
    let mut t = Transcript::new(&app, &rx);
    t.send(
        Method::POST,
        "/api/v1/Contact",
        Some(r#"{"Name":"Delivered"}"#),
    )
    .await;
    wait_delivered(&app, hook, 1).await;
    t.send(Method::GET, "/api/v1/Webhook/1/Deliveries", None)
        .await;
    t.send(
        Method::GET,
        "/api/v1/Webhook/1/Deliveries?status=delivered&since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00%2B01:00&limit=5",
        None,
    )
    .await;
    t.send(
        Method::GET,
        "/api/v1/Webhook/1/Deliveries?status=failed",
        None,
    )
    .await;
    t.send(Method::GET, "/api/v1/Webhook/1/Deliveries/1", None)
        .await;
    t.send(Method::GET, "/api/v1/Webhook/1/Usage", None).await;
    t.send(Method::GET, "/api/v1/Webhook/1/LastError", None)
        .await;
    t.send(
        Method::POST,
        "/api/v1/Webhook/1/Replay",
        Some(r#"{"since":"2000-01-01T00:00:00Z","onlyFailed":true}"#),
    )
    .await;
    t.send(
        Method::POST,
        "/api/v1/Webhook/1/Replay",
        Some(r#"{"since":"2000-01-01T00:00:00","until":"2999-01-01T00:00:00Z","limit":10}"#),
    )
    .await;
    wait_delivered(&app, hook, 2).await;
    t.send(Method::GET, "/api/v1/Webhook/1/Deliveries?limit=1", None)
        .await;
    t.send(Method::GET, "/api/v1/Webhook/1/Deliveries?before=2", None)
        .await;
    t.note("a failed attempt, then a successful one");
    let flaky = crmhooks_listen::Receiver::start(
        ([127, 0, 0, 1], 0).into(),
        crmhooks_listen::ReceiverConfig {
            fail_first: 1,
            ..crmhooks_listen::ReceiverConfig::default()
        },
    )
    .await
    .unwrap();
    let flaky_hook = app.create_hook(&flaky, &["contact.changed"], None).await;
    t.send(
        Method::PATCH,
        "/api/v1/Contact/1",
        Some(r#"{"Department":"retried"}"#),
    )
    .await;
    wait_delivered(&app, flaky_hook, 1).await;
    let flaky_base = flaky.url("").trim_end_matches('/').to_owned();
    let from = t.out.len();
    t.send(Method::GET, "/api/v1/Webhook/2/Deliveries/3", None)
        .await;
    t.send(Method::GET, "/api/v1/Webhook/2/Usage", None).await;
    t.send(Method::GET, "/api/v1/Webhook/2/LastError", None)
        .await;
    let tail = t.out.split_off(from).replace(&flaky_base, "{flaky}");
    t.out.push_str(&tail);
    insta::assert_snapshot!("delivery_log", t.out);
    app.stop().await;
}

/// A node that does not deliver: the delivery stays pending, with its next attempt.
async fn pending_delivery_responses() {
    let app = TestApp::start_with(|t| {
        if let Some(d) = t.get_mut("delivery").and_then(|d| d.as_table_mut()) {
            d.insert("enabled".into(), false.into());
        }
    })
    .await;
    let rx = receiver(None).await;
    app.create_hook(&rx, &["contact.created"], None).await;
    app.create_contact("pending").await;
    let mut t = Transcript::new(&app, &rx);
    t.send(Method::GET, "/api/v1/Webhook/1/Deliveries", None)
        .await;
    t.send(
        Method::GET,
        "/api/v1/Webhook/1/Deliveries?status=pending",
        None,
    )
    .await;
    t.send(Method::GET, "/api/v1/Webhook/1/Deliveries/1", None)
        .await;
    t.send(
        Method::POST,
        "/api/v1/Webhook/1/Replay",
        Some(r#"{"since":"2000-01-01T00:00:00Z"}"#),
    )
    .await;
    insta::assert_snapshot!("pending_delivery", t.out);
    app.stop().await;
}

async fn contact_responses() {
    let app = TestApp::start().await;
    let rx = receiver(None).await;
    let mut t = Transcript::new(&app, &rx);
    t.send(Method::GET, "/api/v1/Contact/default", None).await;
    t.note("POST with every writable property (and some read-only and unknown ones)");
    t.send(
        Method::POST,
        "/api/v1/Contact",
        Some(
            r#"{"ContactId":99,"Name":"Full AS","Department":"Sales","OrgNr":"123","Number1":"n1","Number2":"n2","Kananame":"kana","CreatedDate":"2001-01-01T00:00:00","Associate":{"AssociateId":7,"Name":"ignored"},"Business":{"Id":3,"Value":"x","Tooltip":"y"},"Category":4,"Country":{"CountryId":578},"NoMailing":true,"Xstop":false,"GroupId":2,"Deleted":1,"Source":9,"ActiveInterests":1,"ActiveErpLinks":2,"DbiAgentId":3,"DbiKey":"k","DbiLastSyncronized":"2024-02-29T13:45:10.1234567","DbiLastModified":"2024-02-29T13:45:10+02:00","SupportAssociateId":4,"SupportPersonId":5,"SupportLanguageId":6,"TicketPriorityId":7,"TzLocationId":8,"MotherId":9,"UserdefId":10,"Userdef2Id":11,"Emails":[{"Value":"a@b"}]}"#,
        ),
    )
    .await;
    t.send(
        Method::POST,
        "/api/v1/Contact",
        Some(r#"{"name":"minimal","associate":null,"business":{"id":null},"country":{},"dbiLastModified":"0001-01-01T00:00:00"}"#),
    )
    .await;
    t.send(Method::GET, "/api/v1/Contact/1", None).await;
    t.send(Method::GET, "/Default/api/v1/Contact/2", None).await;
    t.note("PUT replaces: absent or null properties take their defaults");
    t.send(
        Method::PUT,
        "/api/v1/Contact/1",
        Some(r#"{"Name":"Full, put","Department":null,"Associate":{"associateid":8},"Category":{"Id":5},"DbiLastModified":"2024-03-01T00:00:00Z"}"#),
    )
    .await;
    t.note("PATCH: scalar Merge Patch (the direct route), Merge Patch with null and carriers, JSON Patch, a failed test");
    t.send(
        Method::PATCH,
        "/api/v1/Contact/1",
        Some(r#"{"department":"Support","Source":3,"Xstop":true,"name":"first","NAME":"last"}"#),
    )
    .await;
    t.send(
        Method::PATCH,
        "/api/v1/Contact/1",
        Some(r#"{"Department":null,"Country":{"CountryId":47},"Business":{"Value":"kept id"}}"#),
    )
    .await;
    t.send(
        Method::PATCH,
        "/api/v1/Contact/1",
        Some(r#"[{"op":"replace","path":"/OrgNr","value":"999"},{"op":"remove","path":"/Number1"},{"op":"test","path":"/country/countryid","value":47},{"op":"replace","path":"/Associate/AssociateId","value":9}]"#),
    )
    .await;
    t.send(
        Method::PATCH,
        "/api/v1/Contact/1",
        Some(r#"[{"op":"test","path":"/Name","value":"nope"}]"#),
    )
    .await;
    t.note("soft delete, restore, permanent delete");
    t.send(Method::DELETE, "/api/v1/Contact/2", None).await;
    t.send(Method::GET, "/api/v1/Contact/2", None).await;
    t.send(Method::PUT, "/api/v1/Contact/2", Some(r#"{"Name":"x"}"#))
        .await;
    t.send(Method::PATCH, "/api/v1/Contact/2", Some(r#"{"Name":"x"}"#))
        .await;
    t.send(Method::DELETE, "/api/v1/Contact/2", None).await;
    let restored = t
        .send(Method::POST, "/api/v1/Contact/2/Restore", None)
        .await;
    assert_eq!(restored["DeletedDate"], Value::Null);
    t.send(Method::POST, "/api/v1/Contact/2/Restore", None)
        .await;
    t.send(Method::DELETE, "/api/v1/Contact/2?permanent=true", None)
        .await;
    t.send(Method::POST, "/api/v1/Contact/2/Restore", None)
        .await;
    t.send(Method::DELETE, "/api/v1/Contact/1?permanent", None)
        .await;
    t.send(Method::DELETE, "/api/v1/Contact/1?permanent=1", None)
        .await;
    insta::assert_snapshot!("contact", t.out);
    app.stop().await;
}

async fn error_responses() {
    let app = TestApp::start_with(|t| {
        t.insert("max_body_bytes".into(), 4096.into());
    })
    .await;
    let rx = receiver(None).await;
    let mut t = Transcript::new(&app, &rx);
    t.note("authentication and routing");
    t.send_as(None, Method::GET, "/api/v1/Webhook", None).await;
    t.send_as(Some("wrong"), Method::GET, "/api/v1/Webhook", None)
        .await;
    t.send_as(Some("raw:Basic abc"), Method::GET, "/api/v1/Webhook", None)
        .await;
    t.send_as(Some("raw:Bearer  "), Method::GET, "/api/v1/Webhook", None)
        .await;
    let other = app.add_key("Cust2", 7).await;
    t.send_as(Some(&other), Method::GET, "/Default/api/v1/Webhook", None)
        .await;
    t.send(Method::GET, "/api/v2/nothing", None).await;
    t.send(Method::DELETE, "/api/v1/Contact", None).await;
    t.send(Method::GET, "/api/v1/Webhook/1/Deliveries/notanumber", None)
        .await;
    t.send(Method::GET, "/api/v1/Webhook/1/Deliveries?limit=many", None)
        .await;
    t.note("bodies");
    t.send(Method::POST, "/api/v1/Contact", Some("  ")).await;
    t.send(Method::POST, "/api/v1/Contact", Some("{not json"))
        .await;
    t.send(Method::POST, "/api/v1/Contact", Some("[1]")).await;
    t.send(Method::POST, "/api/v1/Webhook", Some("\"text\""))
        .await;
    let big = format!(r#"{{"Name":"{}"}}"#, "x".repeat(5000));
    let resp = app
        .http
        .post(format!("{}/api/v1/Contact", app.base))
        .bearer_auth(&app.key)
        .body(big)
        .send()
        .await
        .unwrap();
    let _ = writeln!(
        t.out,
        ">>> POST /api/v1/Contact (5 KB)\n<<< {}\n{}\n",
        resp.status(),
        resp.text().await.unwrap()
    );
    t.note("ids and queries");
    t.send(Method::GET, "/api/v1/Contact/abc", None).await;
    t.send(Method::GET, "/api/v1/Contact/3000000000", None)
        .await;
    t.send(Method::GET, "/api/v1/Contact/999", None).await;
    t.send(Method::GET, "/api/v1/Webhook/x", None).await;
    t.send(Method::GET, "/api/v1/Webhook/999", None).await;
    t.send(Method::DELETE, "/api/v1/Webhook/999", None).await;
    t.send(Method::GET, "/api/v1/Webhook/999/Usage", None).await;
    t.send(Method::GET, "/api/v1/Webhook/999/LastError", None)
        .await;
    t.send(Method::GET, "/api/v1/Webhook/999/Deliveries", None)
        .await;
    t.send(Method::GET, "/api/v1/Webhook?statusFilter=Sleeping", None)
        .await;
    t.send(Method::DELETE, "/api/v1/Contact/1?permanent=maybe", None)
        .await;
    t.note("contact fields");
    for body in [
        r#"{"Department":"no name"}"#,
        r#"{"Name":5}"#,
        r#"{"Name":"a","Source":"x"}"#,
        r#"{"Name":"a","Source":1.5}"#,
        r#"{"Name":"a","Xstop":1}"#,
        r#"{"Name":"a","DbiLastModified":5}"#,
        r#"{"Name":"a","DbiLastModified":"yesterday"}"#,
        r#"{"Name":"a","Business":{"Id":"two"}}"#,
        r#"{"Name":"a","Business":"two"}"#,
        r#"{"Name":"a","Country":{"countryid":1.5}}"#,
        r#"{"Name":"a","Associate":[1]}"#,
        r#"{"Name":"a","Associate":{"AssociateId":true}}"#,
        r#"{"Name":"a","Source":70000}"#,
        r#"{"Name":"a","OrgNr":"12345678901234567890123456789012345678901234567890"}"#,
        r#"{"Xstop":"no","Name":7,"Source":"x"}"#,
        r#"{"name":"first wins","Name":5}"#,
    ] {
        t.send(Method::POST, "/api/v1/Contact", Some(body)).await;
    }
    let c = app.create_contact("target").await;
    for body in [
        r#"{"Source":"x"}"#,
        r#"{"Source":null,"Xstop":"x"}"#,
        r#"[{"op":"move","from":"/Name","path":"/Department"}]"#,
        r#"[{"op":"replace","path":"/Name"}]"#,
        r#"[{"path":"/Name"}]"#,
        r#"[{"op":"replace","path":"//","value":1}]"#,
        r#"[{"op":"replace","path":"/Name/x","value":1}]"#,
        r#"[{"op":"replace","path":"/Country","value":"x"}]"#,
        r#"[{"op":"remove","path":"/Name"}]"#,
        r#""text""#,
        r#"[{"op":"replace","path":"/Name","value":["a"]}]"#,
    ] {
        t.send(Method::PATCH, &format!("/api/v1/Contact/{c}"), Some(body))
            .await;
    }
    t.send(
        Method::PUT,
        &format!("/api/v1/Contact/{c}"),
        Some(r#"{"Name":"a","MotherId":"x"}"#),
    )
    .await;
    t.send(Method::PUT, &format!("/api/v1/Contact/{c}"), Some("[]"))
        .await;
    t.send(Method::PUT, "/api/v1/Contact/999", Some(r#"{"Name":"a"}"#))
        .await;
    t.send(
        Method::PATCH,
        "/api/v1/Contact/999",
        Some(r#"{"Name":"a"}"#),
    )
    .await;
    t.send(Method::DELETE, "/api/v1/Contact/999", None).await;
    t.send(Method::POST, "/api/v1/Contact/999/Restore", None)
        .await;
    t.note("webhook fields");
    for body in [
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"ftp://x"}"#,
        r#"{"Name":"h","Events":"contact.created","TargetUrl":"{rx}/"}"#,
        r#"{"Name":"h","Events":[5],"TargetUrl":"{rx}/"}"#,
        r#"{"Name":"h","Events":["a,b"],"TargetUrl":"{rx}/"}"#,
        r#"{"Name":"h","Events":[" "],"TargetUrl":"{rx}/"}"#,
        r#"{"Name":"h","Events":[],"TargetUrl":"{rx}/"}"#,
        r#"{"Name":"","Events":["contact.created"],"TargetUrl":"{rx}/"}"#,
        r#"{"Name":5,"Events":["contact.created"],"TargetUrl":"{rx}/"}"#,
        r#"{"Events":["contact.created"],"TargetUrl":"{rx}/"}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","State":"Sleeping"}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","State":0}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","State":"Unknown"}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","State":true}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","Type":"email"}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","Headers":{"X-SuperOffice-Event":"x"}}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","Headers":{"X-A":5}}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","Headers":{"bad name":"v"}}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","Headers":[]}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","Properties":"x"}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","ErrorsEmail":"nobody"}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","RetryPolicy":"never"}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","SuccessStatus":"201"}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","Secret":5}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":5}"#,
        format!(
            r#"{{"Name":"{}","Events":["contact.created"],"TargetUrl":"{{rx}}/"}}"#,
            "n".repeat(401)
        )
        .as_str(),
        format!(
            r#"{{"Name":"h","Events":["{}"],"TargetUrl":"{{rx}}/"}}"#,
            "e".repeat(256)
        )
        .as_str(),
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","Headers":{"X-A":"line\nbreak"}}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","Type":null,"State":"Sleeping"}"#,
    ] {
        t.send(Method::POST, "/api/v1/Webhook", Some(body)).await;
    }
    rx.set_status(500);
    t.send(
        Method::POST,
        "/api/v1/Webhook",
        Some(r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/"}"#),
    )
    .await;
    rx.set_status(200);
    t.send(
        Method::POST,
        "/api/v1/Webhook",
        Some(r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","State":"Stopped"}"#),
    )
    .await;
    for body in [
        r#"[{"op":"replace","path":"/Events","value":"x"}]"#,
        r#"{"Name":null}"#,
        r#"7"#,
    ] {
        t.send(Method::PATCH, "/api/v1/Webhook/1", Some(body)).await;
    }
    t.send(Method::PUT, "/api/v1/Webhook/1", Some(r#"{"Name":"h"}"#))
        .await;
    for body in [
        r#"{}"#,
        r#"{"since":"yesterday"}"#,
        r#"{"since":"2000-01-01T00:00:00Z","until":"later"}"#,
        r#"{"since":"2000-01-01T00:00:00Z","extra":1}"#,
    ] {
        t.send(Method::POST, "/api/v1/Webhook/1/Replay", Some(body))
            .await;
    }
    t.send(
        Method::GET,
        "/api/v1/Webhook/1/Deliveries?status=lost",
        None,
    )
    .await;
    t.send(Method::GET, "/api/v1/Webhook/1/Deliveries?since=soon", None)
        .await;
    t.send(Method::GET, "/api/v1/Webhook/1/Deliveries/999", None)
        .await;
    t.note("signal");
    t.send(Method::POST, "/api/v1/Webhook/a,b/1", None).await;
    t.send(Method::POST, "/api/v1/Webhook/x.y/abc", None).await;
    t.send(Method::POST, "/api/v1/Webhook/x.y/1", Some("{bad"))
        .await;
    t.send(Method::POST, "/api/v1/Webhook/x.y/1", Some("[1]"))
        .await;
    insta::assert_snapshot!("errors", t.out);
    app.stop().await;
}

both_backends!(
    webhook_responses,
    webhook_secret_semantics,
    delivery_log_responses,
    pending_delivery_responses,
    contact_responses,
    error_responses,
);
