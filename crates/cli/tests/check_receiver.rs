//! `crmhooks check-receiver` as a user runs it: the real binary against `crmhooks listen`
//! (which must pass), against receivers broken on purpose (which must fail the right checks),
//! and `crmhooks contact list` against a real server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

/// Kills the child even when an assertion fails.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `crmhooks listen --port 0 ARGS`, and the URL it listens on.
async fn listen(args: &[&str]) -> (Killed, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_crmhooks"))
        .args(["listen", "--port", "0"])
        .args(args)
        .env_remove("CRMHOOKS_LISTEN_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        // Keep reading so that the receiver never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while stdout.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        line
    });
    let line = tokio::time::timeout(Duration::from_secs(30), first)
        .await
        .expect("no 'listening on' line within 30 s")
        .unwrap();
    let base = line
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, format!("{base}/hook"))
}

/// `crmhooks check-receiver URL --secret S FLAGS`.
async fn check_receiver(url: &str, flags: &[&str]) -> Output {
    let mut args: Vec<String> = vec![url.to_owned(), "--secret".into(), "S".into()];
    args.extend(flags.iter().map(|f| (*f).to_owned()));
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_crmhooks"))
            .arg("check-receiver")
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// The JSON report of a --dev run against `url`, and its grades.
async fn report(url: &str) -> (Output, Value, Vec<(String, String)>) {
    let out = check_receiver(url, &["--dev", "--json"]).await;
    let (report, grades) = grades(&out);
    (out, report, grades)
}

/// The JSON report, and the grade of each check by name.
fn grades(out: &Output) -> (Value, Vec<(String, String)>) {
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let grades = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["grade"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (report, grades)
}

fn grade<'a>(grades: &'a [(String, String)], name: &str) -> &'a str {
    grades
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, g)| g.as_str())
        .unwrap_or_else(|| panic!("no check {name}"))
}

const ALL: [&str; 8] = [
    "test-event",
    "signed-event",
    "retry-same-eventid",
    "tampered-body",
    "unsigned",
    "timestamps",
    "large-body",
    "answer-time",
];

#[tokio::test]
async fn crmhooks_listen_passes_every_check() {
    let (_rx, url) = listen(&["--secret", "S"]).await;
    let (out, report, grades) = report(&url).await;
    assert!(out.status.success(), "{report:#}");
    assert_eq!(report["passed"], true);
    let names: Vec<&str> = grades.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ALL);
    for (name, g) in &grades {
        assert_eq!(g, "pass", "{name}: {report:#}");
    }
}

/// A receiver without a secret takes anything: the tampered and the unsigned request are
/// accepted, which fails those two checks (and the run).
#[tokio::test]
async fn a_receiver_that_accepts_unsigned_requests_fails_the_signature_checks() {
    let (_rx, url) = listen(&[]).await;
    let (out, report, grades) = report(&url).await;
    assert!(!out.status.success(), "{report:#}");
    assert_eq!(report["passed"], false);
    assert_eq!(grade(&grades, "unsigned"), "fail", "{report:#}");
    assert_eq!(grade(&grades, "tampered-body"), "fail", "{report:#}");
    assert_eq!(grade(&grades, "signed-event"), "pass", "{report:#}");
    assert_eq!(grade(&grades, "test-event"), "pass", "{report:#}");
}

/// A receiver that answers 500 fails every check that needs a 200, and passes the refusals.
#[tokio::test]
async fn a_receiver_that_answers_500_fails_the_delivery_checks() {
    let (_rx, url) = listen(&["--secret", "S", "--status", "500"]).await;
    let (out, report, grades) = report(&url).await;
    assert!(!out.status.success());
    for name in [
        "test-event",
        "signed-event",
        "retry-same-eventid",
        "timestamps",
        "large-body",
        "answer-time",
    ] {
        assert_eq!(grade(&grades, name), "fail", "{name}: {report:#}");
    }
    assert_eq!(grade(&grades, "unsigned"), "pass");
}

/// Loopback targets need --dev, like the server's target policy; the plain report names each
/// check with its grade.
#[tokio::test]
async fn loopback_needs_dev_and_the_plain_report_lists_the_checks() {
    let (_rx, url) = listen(&["--secret", "S"]).await;
    let out = check_receiver(&url, &[]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--dev"), "{err}");
    let out = check_receiver(&url, &["--dev"]).await;
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ALL {
        assert!(
            text.lines()
                .any(|l| l.starts_with("PASS") && l.contains(name)),
            "{name}: {text}"
        );
    }
}

#[tokio::test]
async fn contact_list_prints_a_page() {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = toml::value::Table::new();
    flags.insert(
        "database".into(),
        format!("sqlite://{}", dir.path().join("t.db").display()).into(),
    );
    flags.insert("dev".into(), true.into());
    flags.insert(
        "api_key".into(),
        "cli-key-0123456789abcdef0123456789".into(),
    );
    let config = crmhooks_server::Config::load(None, flags).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = crmhooks_server::Server::build(config, Some(listener))
        .await
        .unwrap();
    let base = format!("http://{}", server.addr());
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(server.run(rx));
    let http = reqwest::Client::new();
    for name in ["Alpha", "Beta", "Gamma"] {
        let resp = http
            .post(format!("{base}/api/v1/Contact"))
            .bearer_auth("cli-key-0123456789abcdef0123456789")
            .json(&serde_json::json!({"Name": name}))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }
    let run = |args: &'static [&'static str]| {
        let base = base.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_crmhooks"))
                .args(["contact", "list", "--url", &base])
                .args(args)
                .env("CRMHOOKS_API_KEY", "cli-key-0123456789abcdef0123456789")
                .output()
                .unwrap()
        })
    };
    let out = run(&["--top", "2", "--order-by", "name desc"])
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("ID"), "{text}");
    assert!(
        lines[1].contains("Gamma") && lines[2].contains("Beta"),
        "{text}"
    );
    assert!(text.contains("--skip 2"), "{text}");
    let out = run(&["--filter", "name begins 'a'", "--json"])
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["value"].as_array().unwrap().len(), 1);
    let out = run(&["--filter", "city begins 'a'"]).await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("city"));
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}
