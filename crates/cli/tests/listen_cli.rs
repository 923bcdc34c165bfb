//! `crmhooks listen` as a user runs it: the real binary, a real port, real requests.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crmhooks_payload::{headers, sign, NetDateTime, WebhookPayload};

const SECRET: &str = "S";

/// Kills the child even when an assertion fails.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn payload() -> WebhookPayload {
    let mut p = WebhookPayload::test_event(
        "4b5ce038-50f2-4796-bdb2-f96908cf31c2".parse().unwrap(),
        NetDateTime::now_utc(),
        "Default",
        316,
        "cli test",
    );
    p.event = "contact.changed".into();
    p.entity = "contact".into();
    p.primary_key = 42;
    p.changes = vec!["contact_id".into(), "name".into()];
    p
}

#[tokio::test]
async fn listen_verifies_answers_and_writes_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("requests.jsonl");
    let child = Command::new(env!("CARGO_BIN_EXE_crmhooks"))
        .args(["listen", "--port", "0", "--secret", SECRET, "--out"])
        .arg(&out)
        .env_remove("CRMHOOKS_LISTEN_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let mut stdout = BufReader::new(child.0.stdout.take().unwrap());

    // The first line names the bound port.
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        (line, stdout)
    });
    let (line, mut stdout) = tokio::time::timeout(Duration::from_secs(30), first)
        .await
        .expect("no 'listening on' line within 30 s")
        .unwrap();
    let base = line
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(port, 0);
    assert_eq!(base, format!("http://127.0.0.1:{port}"));

    let client = reqwest::Client::new();
    let p = payload();
    let body = p.to_bytes();
    let post = |sig: Option<String>, body: Vec<u8>| {
        let mut req = client
            .post(format!("{base}/hook"))
            .header("content-type", headers::CONTENT_TYPE_JSON)
            .header(headers::EVENT, "contact.changed")
            .header(headers::EVENT_ID, p.event_id.to_string())
            .header(headers::RETRY, "0");
        if let Some(sig) = sig {
            req = req.header(headers::SIGNATURE, sig);
        }
        req.body(body).send()
    };

    let good = post(Some(sign(SECRET, &body)), body.clone()).await.unwrap();
    assert_eq!(good.status(), 200);

    let tampered_body = String::from_utf8(body.clone())
        .unwrap()
        .replace("42", "43")
        .into_bytes();
    let tampered = post(Some(sign(SECRET, &body)), tampered_body)
        .await
        .unwrap();
    assert_eq!(tampered.status(), 401);
    let err: serde_json::Value = tampered.json().await.unwrap();
    assert_eq!(err["ErrorType"], "SignatureMismatch");

    let unsigned = post(None, body.clone()).await.unwrap();
    assert_eq!(unsigned.status(), 401);
    let err: serde_json::Value = unsigned.json().await.unwrap();
    assert_eq!(err["ErrorType"], "SignatureMissing");

    // The same event again: still accepted, flagged as a duplicate.
    let again = post(Some(sign(SECRET, &body)), body.clone()).await.unwrap();
    assert_eq!(again.status(), 200);

    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{text}");
    let summary: Vec<_> = lines
        .iter()
        .map(|l| {
            (
                l["status"].as_u64().unwrap(),
                l["verdict"].as_str().unwrap().to_owned(),
                l["duplicate"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (200, "valid".to_owned(), false),
            (401, "invalid".to_owned(), false),
            (401, "unsigned".to_owned(), false),
            (200, "valid".to_owned(), true),
        ]
    );
    assert_eq!(lines[0]["path"], "/hook");
    assert_eq!(lines[0]["body"]["PrimaryKey"], 42);
    assert_eq!(
        lines[0]["headers"]["x-superoffice-event"],
        "contact.changed"
    );

    // The readable log: one line per request (plus indented notes).
    child.0.kill().unwrap();
    let printed = tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut rest);
        rest
    })
    .await
    .unwrap();
    let requests: Vec<&str> = printed.lines().filter(|l| !l.starts_with("    ")).collect();
    assert_eq!(requests.len(), 4, "{printed}");
    assert!(
        requests[0].contains("contact.changed") && requests[0].contains("signature ok"),
        "{printed}"
    );
    assert!(
        requests[0].contains("pk=42") && requests[0].contains("retry 0"),
        "{printed}"
    );
    assert!(requests[1].contains("signature BAD"), "{printed}");
    assert!(requests[2].contains("signature unsigned"), "{printed}");
    assert!(requests[3].contains("DUPLICATE"), "{printed}");
}
