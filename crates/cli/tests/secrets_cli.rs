//! Secrets through the real binary: a started server's log holds no password, master key,
//! webhook secret or header value; `secrets generate-key` and `secrets rotate`; a server
//! started with only the old key after a rotation is refused, naming the key it lacks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crmhooks_store::{Keyring, OpenOptions};
use serde_json::{json, Value};

const API_KEY: &str = "secrets-cli-test-key-0123456789abcdefghij";
const SECRET: &str = "s3cret-signing-value-4711";
const HEADER: &str = "receiver-password-0815";
const DB_PASSWORD: &str = "hunter2-database-password";

fn crmhooks() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crmhooks"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CRMHOOKS_") {
            cmd.env_remove(k);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

fn generate_key(kid: &str) -> String {
    let out = crmhooks()
        .args(["secrets", "generate-key", "--kid", kid])
        .output()
        .unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(line.starts_with(&format!("{kid}:")), "{line}");
    Keyring::parse(&line).expect("a usable key line");
    line
}

/// A running `crmhooks serve`; its stderr (the log) is collected when it stops.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(database: &str, master_key: &str, key_file: &std::path::Path) -> Server {
        let mut child = crmhooks()
            .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
            .args(["--database", database])
            .arg("--api-key-file")
            .arg(key_file)
            .env("CRMHOOKS_MASTER_KEY", master_key)
            .env("CRMHOOKS_TEST_ON_SAVE", "false")
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("crmhooks listening on ") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let Ok(base) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let mut log = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut log);
            panic!("the server did not start: {log}");
        };
        Server { child, base }
    }

    /// Stops the server; its log.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let mut log = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        let _ = self.child.wait();
        log
    }
}

/// Creates a signed webhook with a custom header; checks that a GET masks the header value.
async fn create_webhook(base: &str) -> i64 {
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{base}/api/v1/Webhook"))
        .bearer_auth(API_KEY)
        .json(&json!({"Name": "signed", "Events": ["contact.created"],
            "TargetUrl": "http://127.0.0.1:9/hook", "State": "Stopped",
            "Secret": SECRET, "Headers": {"X-Api-Key": HEADER}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["WebhookId"].as_i64().expect("created");
    assert_eq!(created["Secret"], Value::Null);
    assert_eq!(created["Headers"]["X-Api-Key"], "********", "{created}");
    id
}

fn key_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("api.key");
    std::fs::write(&path, format!("{API_KEY}\n")).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_server_logs_no_password_key_or_secret() {
    let Some(admin) =
        crmhooks_testkit::postgres::admin_or_skip("secrets_cli::a_started_server_logs_no_password")
            .await
    else {
        return;
    };
    let db = crmhooks_testkit::postgres::PgDatabase::create(&admin).await;
    let mut url = url::Url::parse(db.url()).unwrap();
    // The test server trusts local connections, so any password is taken.
    url.set_password(Some(DB_PASSWORD)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let master = generate_key("k1");
    let material = master[3..].to_owned();
    let (database, keys) = (url.to_string(), key_file(dir.path()));
    let server = tokio::task::spawn_blocking(move || Server::start(&database, &master, &keys))
        .await
        .unwrap();
    create_webhook(&server.base).await;
    let log = server.stop();
    assert!(log.contains("crmhooks serving"), "{log}");
    assert!(log.contains(":***@"), "the URL is logged redacted: {log}");
    for (what, text) in [
        ("database password", DB_PASSWORD),
        ("API key", API_KEY),
        ("webhook secret", SECRET),
        ("header value", HEADER),
    ] {
        assert!(!log.contains(text), "the {what} is in the log: {log}");
    }
    assert!(
        !log.contains(&material),
        "the master key is in the log: {log}"
    );
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_through_the_binary_leaves_the_old_key_unneeded() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("rot.db").display());
    let (k1, k2) = (generate_key("k1"), generate_key("k2"));
    let keys = key_file(dir.path());
    let (d, m, f) = (database.clone(), k1.clone(), keys.clone());
    let server = tokio::task::spawn_blocking(move || Server::start(&d, &m, &f))
        .await
        .unwrap();
    let id = create_webhook(&server.base).await;
    let log = server.stop();
    assert!(!log.contains(&k1), "{log}");

    let out = crmhooks()
        .args(["secrets", "rotate", "--database", &database])
        .env("CRMHOOKS_MASTER_KEY", &k1)
        .env("CRMHOOKS_NEW_MASTER_KEY", &k2)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("2 value(s) re-encrypted"), "{said}");

    // The old key alone no longer opens the database: the server says which key it lacks.
    let out = crmhooks()
        .args(["serve", "--listen", "127.0.0.1:0", "--database", &database])
        .env("CRMHOOKS_MASTER_KEY", &k1)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("\"k2\"") && err.contains("Nothing was changed"),
        "{err}"
    );

    // The new key alone does.
    let store = crmhooks_store::open(
        &database,
        &OpenOptions {
            keyring: Keyring::parse(&k2).unwrap(),
            ..OpenOptions::default()
        },
    )
    .await
    .unwrap();
    let tenant = store.ensure_tenant("Default").await.unwrap();
    let hook = store
        .get_webhook(tenant, crmhooks_store::WebhookId::new(id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hook.secret.as_deref(), Some(SECRET));
}
