//! `crmhooks serve` as an operator gets it wrong: the real binary, each mistake answered with
//! one line on stderr that says what is wrong and what to do, and a failing exit code.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `crmhooks serve` with `args` and `env` in a fresh directory; returns its stderr once
/// it has exited (it must exit by itself, and fail).
fn serve_fails(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crmhooks"));
    cmd.arg("serve")
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("CRMHOOKS_") {
            cmd.env_remove(k);
        }
    }
    // A valid master key unless the test says otherwise: the mistakes below come after it.
    cmd.env("CRMHOOKS_MASTER_KEY", MASTER_KEY);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("crmhooks serve {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!status.success(), "{args:?} started: {stderr}");
    stderr
}

const MASTER_KEY: &str = "t:Y3JtaG9va3MtdGVzdC1tYXN0ZXIta2V5LTMyYnl0ZXM=";

/// The one line, which must say each of `words`.
fn one_line(stderr: &str, words: &[&str]) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line, not: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for w in words {
        assert!(lines[0].contains(w), "{w:?} missing in: {stderr}");
    }
}

#[test]
fn bad_configuration_values_name_the_key() {
    one_line(
        &serve_fails(&[], &[("CRMHOOKS_HTTP_MAX_CONNECTIONS", "0")]),
        &["http.max_connections", "at least 1"],
    );
    one_line(
        &serve_fails(&[], &[("CRMHOOKS_HTTP_IDLE_TIMEOUT_SECS", "soon")]),
        &["http.idle_timeout_secs", "expected f64"],
    );
    one_line(
        &serve_fails(&[], &[("CRMHOOKS_MAX_BODY_BYTES", "10")]),
        &["max_body_bytes", "at least 1024"],
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nmax_body_bytes = \n").unwrap();
    one_line(
        &serve_fails(&["--config", file.to_str().unwrap()], &[]),
        &["bad.toml", "line 2, column 18"],
    );
    std::fs::write(&file, "[http]\nmax_conections = 5\n").unwrap();
    one_line(
        &serve_fails(&["--config", file.to_str().unwrap()], &[]),
        &["http: unknown field `max_conections`", "max_connections"],
    );
    one_line(
        &serve_fails(&["--config", "/no/such/file.toml"], &[]),
        &["cannot read /no/such/file.toml"],
    );
}

#[test]
fn an_address_in_use_or_malformed_says_so() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    one_line(
        &serve_fails(&["--listen", &addr], &[]),
        &[&addr, "in use", "--listen"],
    );
    one_line(
        &serve_fails(&["--listen", "localhost"], &[]),
        &["cannot listen on localhost", "HOST:PORT"],
    );
}

#[test]
fn a_bad_or_unreachable_database_names_it_and_what_to_do() {
    one_line(
        &serve_fails(&["--database", "mysql://db/x"], &[]),
        &["mysql://db/x", "sqlite://PATH or postgres://"],
    );
    one_line(
        &serve_fails(&["--database", "postgres://u:secret@db:port/x"], &[]),
        &["URL does not parse", "invalid port number"],
    );
    // Port 1 on this machine: nothing listens there.
    let refused = serve_fails(&["--database", "postgres://u:secret@127.0.0.1:1/x"], &[]);
    one_line(
        &refused,
        &["127.0.0.1:1", "Connection refused", "--database"],
    );
    assert!(!refused.contains("secret"), "the password is never echoed");
    one_line(
        &serve_fails(&["--database", "sqlite:///no/such/dir/x.db"], &[]),
        &["/no/such/dir", "does not exist"],
    );
}

#[tokio::test]
async fn a_database_that_does_not_exist_is_named() {
    let Some(admin) =
        crmhooks_testkit::postgres::admin_or_skip("startup_errors::a_database_that_does_not_exist")
            .await
    else {
        return;
    };
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    let url = format!("{base}/crmhooks_no_such_database");
    let stderr = tokio::task::spawn_blocking(move || serve_fails(&["--database", &url], &[]))
        .await
        .unwrap();
    one_line(
        &stderr,
        &["no database \"crmhooks_no_such_database\"", "createdb"],
    );
}

#[test]
fn a_short_bootstrap_key_is_refused() {
    let stderr = serve_fails(&[], &[("CRMHOOKS_API_KEY", "secret-but-short")]);
    one_line(&stderr, &["api_key", "16 characters", "at least 32"]);
    assert!(
        !stderr.contains("secret-but-short"),
        "the key is never echoed"
    );
    one_line(
        &serve_fails(&["--api-key", "also-short"], &[]),
        &["CRMHOOKS_API_KEY or --api-key", "10 characters"],
    );
}

#[test]
fn no_master_key_or_a_malformed_one_says_how_to_give_one() {
    one_line(
        &serve_fails(&[], &[("CRMHOOKS_MASTER_KEY", "")]),
        &[
            "no master key",
            "CRMHOOKS_MASTER_KEY",
            "--master-key-file",
            "generate-key",
        ],
    );
    let bad = serve_fails(&[], &[("CRMHOOKS_MASTER_KEY", "k1:c2VjcmV0")]);
    one_line(&bad, &["CRMHOOKS_MASTER_KEY", "\"k1\"", "32 bytes"]);
    assert!(!bad.contains("c2VjcmV0"), "the key is never echoed: {bad}");
    one_line(
        &serve_fails(
            &["--master-key-file", "/no/such/key"],
            &[("CRMHOOKS_MASTER_KEY", "")],
        ),
        &["/no/such/key"],
    );
}
