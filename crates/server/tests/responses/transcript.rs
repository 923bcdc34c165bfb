//! A transcript: requests and their raw answers, masked where they change from run to run.

use std::fmt::Write as _;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::common::TestApp;

/// How long to wait for deliveries.
pub const T: Duration = Duration::from_secs(15);

/// Properties whose values the server takes from the clock or a random source.
const CLOCK_KEYS: [&str; 11] = [
    "Registered",
    "Updated",
    "CreatedDate",
    "UpdatedDate",
    "DeletedDate",
    "Created",
    "NextAttemptAt",
    "Completed",
    "AttemptedAt",
    "registeredDate",
    "updatedDate",
];

/// Requests and their raw answers, written down one after the other.
pub struct Transcript<'a> {
    app: &'a TestApp,
    rx: String,
    pub out: String,
}

impl<'a> Transcript<'a> {
    pub fn new(app: &'a TestApp, rx: &crmhooks_listen::Receiver) -> Self {
        Transcript {
            app,
            rx: rx.url("").trim_end_matches('/').to_owned(),
            out: String::new(),
        }
    }

    /// Sends `body` (raw text, `{rx}` standing for the receiver's address) with the test key.
    pub async fn send(&mut self, method: Method, path: &str, body: Option<&str>) -> Value {
        let key = self.app.key.clone();
        self.send_as(Some(&key), method, path, body).await
    }

    /// As [`Self::send`], writing `label` instead of a body too long to read.
    pub async fn send_long(&mut self, method: Method, path: &str, body: &str, label: &str) {
        let before = self.out.len();
        self.send(method.clone(), path, Some(body)).await;
        let written = self.out.split_off(before);
        self.out
            .push_str(&written.replacen(&format!("{body}\n"), &format!("({label})\n"), 1));
    }

    /// As [`Self::send`] with another key, or none.
    pub async fn send_as(
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
    pub fn note(&mut self, line: &str) {
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
pub async fn wait_delivered(app: &TestApp, hook: i64, n: usize) {
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

/// Compares `transcript` with its golden copy `name` in `tests/snapshots`.
pub fn assert_transcript(name: &str, transcript: &str) {
    insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!(format!("responses__{name}"), transcript);
    });
}
