//! Work spread over the nodes: every event once, in contact order, and a request longer
//! than its lease not sent twice while its node lives.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_every_event_once_in_contact_order() {
    let Some(db) =
        Database::create("postgres_nodes::three_nodes_deliver_every_event_once_in_contact_order")
            .await
    else {
        return;
    };
    let rx = receiver().await;
    let nodes = start_nodes(db.url(), 3, &[]);
    create_hook(&nodes[0], &rx, &["contact.created", "contact.changed"]).await;
    const CONTACTS: usize = 100;
    const CHANGES: usize = 2;
    let started = Instant::now();
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let http = reqwest::Client::new();
    let unavailable = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(12));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CONTACTS {
        let (bases, http, gate, unavailable) = (
            bases.clone(),
            http.clone(),
            gate.clone(),
            unavailable.clone(),
        );
        tasks.spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            // Each change of a contact goes to another node than the one before.
            let node = |k: usize| bases[(i + k) % bases.len()].clone();
            let v = call(
                &http,
                &node(0),
                Method::POST,
                "/api/v1/Contact",
                json!({"Name": format!("c{i}")}),
                &unavailable,
            )
            .await;
            let id = v["ContactId"].as_i64().unwrap();
            for k in 1..=CHANGES {
                call(
                    &http,
                    &node(k),
                    Method::PATCH,
                    &format!("/api/v1/Contact/{id}"),
                    json!({"Department": format!("d{k}")}),
                    &unavailable,
                )
                .await;
            }
            id
        });
    }
    let mut ids = BTreeSet::new();
    while let Some(id) = tasks.join_next().await {
        ids.insert(id.unwrap());
    }
    let committed = started.elapsed();
    let expected = CONTACTS * (1 + CHANGES);
    let all = wait_until(
        || delivered(&rx).len() >= expected,
        Duration::from_secs(120),
    )
    .await;
    let done = started.elapsed();
    // Every attempt recorded: nothing is leased or pending any more, so whatever was sent twice
    // has arrived by now.
    let all_delivered = BTreeMap::from([(2, expected as i64)]);
    wait_for(
        || async { (db.delivery_statuses().await == all_delivered).then_some(()) },
        Duration::from_secs(30),
    )
    .await;
    let got = delivered(&rx);
    eprintln!(
        "{expected} events over 3 nodes: committed in {committed:?}, all delivered after {done:?}"
    );
    assert!(all, "delivered {} of {expected}", got.len());
    assert_eq!(got.len(), expected, "every event exactly once");
    let event_ids: HashSet<_> = got
        .iter()
        .map(|r| r.payload.as_ref().unwrap().event_id)
        .collect();
    assert_eq!(event_ids.len(), expected, "no EventId twice");
    let mut per_contact: BTreeMap<i64, Vec<&Received>> = BTreeMap::new();
    for r in &got {
        per_contact
            .entry(r.payload.as_ref().unwrap().primary_key)
            .or_default()
            .push(r);
    }
    assert_eq!(per_contact.keys().copied().collect::<BTreeSet<_>>(), ids);
    for (id, events) in &per_contact {
        let names: Vec<&str> = events
            .iter()
            .map(|r| r.payload.as_ref().unwrap().event.as_str())
            .collect();
        assert_eq!(
            names,
            ["contact.created", "contact.changed", "contact.changed"],
            "contact {id}"
        );
        let times: Vec<_> = events.iter().map(|r| updated(r)).collect();
        assert!(
            times.windows(2).all(|w| w[0] < w[1]),
            "contact {id}: updated values out of order: {times:?}"
        );
    }
    let statuses = db.delivery_statuses().await;
    assert_eq!(
        statuses,
        BTreeMap::from([(2, expected as i64)]),
        "all delivered"
    );
    drop(nodes);
    db.drop_database().await;
}

/// A node renews the leases of what it is sending: a request that takes longer than a lease is
/// not sent again by another node while its own node lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_longer_than_its_lease_is_not_sent_twice_while_its_node_lives() {
    let Some(db) = Database::create(
        "postgres_nodes::a_request_longer_than_its_lease_is_not_sent_twice_while_its_node_lives",
    )
    .await
    else {
        return;
    };
    let rx = receiver().await;
    let nodes = start_nodes(db.url(), 2, &[("CRMHOOKS_DELIVERY_LEASE_SECS", "1")]);
    create_hook(&nodes[0], &rx, &["contact.created"]).await;
    rx.set_delay(Duration::from_millis(2500));
    let http = reqwest::Client::new();
    let none = std::sync::atomic::AtomicUsize::new(0);
    for i in 0..3 {
        call(
            &http,
            &nodes[i % 2].base,
            Method::POST,
            "/api/v1/Contact",
            json!({"Name": format!("long {i}")}),
            &none,
        )
        .await;
    }
    let done = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if db.delivery_statuses().await == BTreeMap::from([(2, 3)]) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(done.await, "every delivery recorded");
    // Time for a node to have claimed a lease that ran out.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(delivered(&rx).len(), 3, "each sent once");
    assert_eq!(
        rx.duplicates(),
        0,
        "no lease ran out while its request was in flight"
    );
    drop(nodes);
    db.drop_database().await;
}
