//! Opening a store: an unreachable server, a SQLite file already served, a missing
//! directory, a restart.

use crmhooks_store::{now_ticks, open, OpenOptions, StoreError};

use crate::common::*;

#[tokio::test]
async fn postgres_unreachable_is_unavailable() {
    // Nothing listens on port 1.
    match open(
        "postgres://postgres@127.0.0.1:1/nothing",
        &OpenOptions::default(),
    )
    .await
    {
        Err(StoreError::Unavailable(_)) => {}
        Err(e) => panic!("expected Unavailable, got {e}"),
        Ok(_) => panic!("connected to port 1?"),
    }
}

/// One process serves a SQLite file: a second serving store is refused with a message that
/// names the file and says what to do, while a short command's store opens beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_second_server_on_one_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one.db");
    let url = format!("sqlite://{}", path.display());
    let first = open(&url, &OpenOptions::default()).await.unwrap();
    let second = open(&url, &OpenOptions::default()).await;
    let Err(err) = second else {
        panic!("a second serving store opened on the same file");
    };
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("in use by another crmhooks server"), "{msg}");
    assert!(
        msg.contains(&format!("process {}", std::process::id())),
        "{msg}"
    );
    let short = open(
        &url,
        &OpenOptions {
            serving: false,
            ..OpenOptions::default()
        },
    )
    .await
    .unwrap();
    let me = actor(&short, "Default", 1).await;
    assert!(first.actor_for_key("key-Default-1").await.unwrap() == Some(me));
    drop(first);
    open(&url, &OpenOptions::default())
        .await
        .expect("the file is free once its server is gone");
}

/// A missing directory is named, with what to do, once.
#[tokio::test]
async fn sqlite_a_missing_directory_is_said_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("no/such/dir/x.db").display());
    let Err(err) = open(&url, &OpenOptions::default()).await else {
        panic!("opened a database in a directory that does not exist");
    };
    let msg = err.to_string();
    assert!(msg.contains("no/such/dir/x.db"), "{msg}");
    assert!(msg.contains("the directory"), "{msg}");
    assert!(msg.contains("does not exist"), "{msg}");
    assert_eq!(msg.matches("unable to open").count(), 0, "{msg}");
}

/// A server restarted on its SQLite file takes back the leases of the process before it at
/// once (no other process can hold one), instead of waiting for them to run out; a delivery
/// that waited behind another of its chain stays behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_restarted_server_takes_back_its_leases_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("restart.db").display());
    let s = open(&url, &OpenOptions::default()).await.unwrap();
    let me = actor(&s, "Default", 1).await;
    hook(&s, &me, &["contact.created", "contact.changed"]).await;
    let (c1, _) = create(&s, &me, "Acme").await;
    set_department(&s, &me, c1, "d1").await.unwrap();
    // Leased for two minutes to a node that then dies.
    let leased = s.claim(&req("dead", now_ticks(), 10)).await.unwrap();
    assert_eq!(leased.len(), 1, "the head of the chain");
    drop(s);
    let s = open(&url, &OpenOptions::default()).await.unwrap();
    let first = s.claim(&req("n2", now_ticks(), 10)).await.unwrap();
    assert_eq!(first.len(), 1, "taken back at once, not in two minutes");
    assert_eq!(first[0].delivery_id, leased[0].delivery_id);
    assert_eq!(first[0].event.event, "contact.created");
    deliver_all(&s, &first).await;
    let second = s.claim(&req("n2", now_ticks(), 10)).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].event.event, "contact.changed", "in order");
}
