//! Nodes that die or lose their database connections: their deliveries are taken over,
//! within the lease, and a node survives its connections being terminated.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_delivery_is_taken_over_after_its_lease() {
    let Some(db) = Database::create(
        "postgres_nodes::a_node_killed_mid_delivery_is_taken_over_after_its_lease",
    )
    .await
    else {
        return;
    };
    let rx = receiver().await;
    // At most 3 requests in flight for the webhook on each node: the queue outlasts the kill.
    let mut nodes = start_nodes(db.url(), 3, &[("CRMHOOKS_DELIVERY_MAX_PER_WEBHOOK", "3")]);
    create_hook(&nodes[0], &rx, &["contact.created"]).await;
    // Slow receiver: every node has requests in flight when one dies.
    rx.set_delay(Duration::from_millis(300));
    // Enough work that the moment with all three nodes busy lasts, even on a loaded machine.
    // The contacts go in through nodes 1 and 2 while the test watches, so that node 0 can be
    // killed whenever that moment comes, even before the last one is created (under a full
    // test run, creating them one by one could outlast the deliveries).
    // Four clients at once: faster than nodes 1 and 2 can deliver what they are handed at
    // commit, so that the rest waits for a claim, and node 0 claims some of it.
    let creating = {
        let bases = [nodes[1].base.clone(), nodes[2].base.clone()];
        let clients: Vec<_> = (0..4)
            .map(|c| {
                let base = bases[c % 2].clone();
                tokio::spawn(async move {
                    let http = reqwest::Client::new();
                    let none = std::sync::atomic::AtomicUsize::new(0);
                    let mut committed = BTreeSet::new();
                    for i in 0..75 {
                        let v = call(
                            &http,
                            &base,
                            Method::POST,
                            "/api/v1/Contact",
                            json!({"Name": format!("f{c}-{i}")}),
                            &none,
                        )
                        .await;
                        committed.insert(v["ContactId"].as_i64().unwrap());
                    }
                    committed
                })
            })
            .collect();
        async move {
            let mut all = BTreeSet::new();
            for c in clients {
                all.extend(c.await.expect("the contacts were created"));
            }
            all
        }
    };
    let keys = |rx: &Receiver| -> BTreeSet<i64> {
        delivered(rx)
            .iter()
            .map(|r| r.payload.as_ref().unwrap().primary_key)
            .collect()
    };
    // Kill node 0 once a few deliveries are done and every node holds a lease (so node 0 has
    // requests in flight), with most of the work still to go.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let delivered = db.delivery_statuses().await.get(&2).copied().unwrap_or(0);
        if delivered >= 5 && db.lease_owners().await == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "never saw all three nodes busy");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed_at = Instant::now();
    nodes[0].kill();
    let at_kill = db.delivery_statuses().await;
    eprintln!(
        "node 0 killed; deliveries by status (0 pending, 1 in flight, 2 delivered): {at_kill:?}"
    );
    let committed = creating.await;
    assert!(
        at_kill.get(&2).copied().unwrap_or(0) < committed.len() as i64,
        "the kill came too late"
    );
    // The survivors finish everything, including node 0's leased deliveries.
    let finished = async {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let s = db.delivery_statuses().await;
            if s == BTreeMap::from([(2, committed.len() as i64)]) {
                return true;
            }
            if Instant::now() > deadline {
                eprintln!("statuses: {s:?}");
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert!(
        finished.await,
        "the other nodes did not finish node 0's work"
    );
    eprintln!(
        "taken over {:?} after the kill; receiver saw {} requests, {} of them repeats",
        killed_at.elapsed(),
        rx.count(),
        rx.duplicates()
    );
    assert_eq!(keys(&rx), committed, "nothing lost");
    assert!(
        rx.duplicates() > 0,
        "node 0's requests in flight were sent again by the others"
    );
    drop(nodes);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_survives_its_database_connections_being_terminated() {
    let Some(db) = Database::create(
        "postgres_nodes::a_node_survives_its_database_connections_being_terminated",
    )
    .await
    else {
        return;
    };
    let rx = receiver().await;
    let nodes = start_nodes(db.url(), 1, &[]);
    let node = &nodes[0];
    create_hook(node, &rx, &["contact.created", "contact.changed"]).await;
    let unavailable = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let base = node.base.clone();
        let unavailable = unavailable.clone();
        let written = written.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut acknowledged = Vec::new();
            for i in 0..60 {
                let v = call(
                    &http,
                    &base,
                    Method::POST,
                    "/api/v1/Contact",
                    json!({"Name": format!("o{i}")}),
                    &unavailable,
                )
                .await;
                let id = v["ContactId"].as_i64().unwrap();
                call(
                    &http,
                    &base,
                    Method::PATCH,
                    &format!("/api/v1/Contact/{id}"),
                    json!({"Department": "after"}),
                    &unavailable,
                )
                .await;
                acknowledged.push(id);
                written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acknowledged
        })
    };
    // Four terminations spread over the writes (after every twelfth contact), each while the
    // node is busy writing and delivering.
    let mut terminated = 0;
    for round in 1..=4 {
        let progressed = wait_until(
            || written.load(std::sync::atomic::Ordering::Relaxed) >= 12 * round,
            Duration::from_secs(60),
        )
        .await;
        assert!(progressed, "the writes stalled before termination {round}");
        terminated += db.terminate_connections().await;
    }
    let acknowledged = writer.await.unwrap();
    eprintln!(
        "terminated {terminated} connections in 4 rounds; {} API answers were 503",
        unavailable.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert!(terminated >= 4, "the node had connections to terminate");
    // Every acknowledged change arrives, without restarting the node.
    let seen = |rx: &Receiver| -> BTreeSet<(i64, String)> {
        delivered(rx)
            .iter()
            .map(|r| {
                let p = r.payload.as_ref().unwrap();
                (p.primary_key, p.event.clone())
            })
            .collect()
    };
    let want: BTreeSet<(i64, String)> = acknowledged
        .iter()
        .flat_map(|id| {
            [
                (*id, "contact.created".to_owned()),
                (*id, "contact.changed".to_owned()),
            ]
        })
        .collect();
    let all = wait_until(|| want.is_subset(&seen(&rx)), Duration::from_secs(60)).await;
    assert!(
        all,
        "missing: {:?}",
        want.difference(&seen(&rx)).collect::<Vec<_>>()
    );
    // The node noticed, and listens for work from other nodes again.
    assert!(
        wait_until(
            || node.log_contains("listening for work again"),
            Duration::from_secs(10)
        )
        .await,
        "the LISTEN connection came back"
    );
    drop(nodes);
    db.drop_database().await;
}

/// A node that dies holding deliveries (its requests in flight) has them taken over by another
/// node once their leases run out: with the default 15 s lease, within about 15 s of its death.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_deliveries_are_taken_over_within_its_lease() {
    let Some(db) =
        Database::create("postgres_nodes::a_dead_nodes_deliveries_are_taken_over_within_its_lease")
            .await
    else {
        return;
    };
    let rx = receiver().await;
    let lease = [("CRMHOOKS_DELIVERY_LEASE_SECS", "15")];
    let mut first = start_nodes(db.url(), 1, &lease);
    create_hook(&first[0], &rx, &["contact.created"]).await;
    // The receiver hangs: what the node takes stays in flight until it dies.
    rx.set_delay(Duration::from_secs(3600));
    let http = reqwest::Client::new();
    let none = std::sync::atomic::AtomicUsize::new(0);
    let mut committed = BTreeSet::new();
    for i in 0..5 {
        let v = call(
            &http,
            &first[0].base,
            Method::POST,
            "/api/v1/Contact",
            json!({"Name": format!("held {i}")}),
            &none,
        )
        .await;
        committed.insert(v["ContactId"].as_i64().unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while db.delivery_statuses().await.get(&1).copied().unwrap_or(0) < 5 {
        assert!(
            Instant::now() < deadline,
            "the node never held its deliveries"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first[0].kill();
    let died = Instant::now();
    rx.set_delay(Duration::ZERO);
    let _second = start_nodes(db.url(), 1, &lease);
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if db.delivery_statuses().await == BTreeMap::from([(2, 5)]) {
            break;
        }
        assert!(Instant::now() < deadline, "never taken over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = died.elapsed();
    eprintln!("a dead node's deliveries were delivered {took:?} after its death (lease 15 s)");
    let keys: BTreeSet<i64> = delivered(&rx)
        .iter()
        .filter(|r| r.answered == 200)
        .map(|r| r.payload.as_ref().unwrap().primary_key)
        .collect();
    assert_eq!(keys, committed, "nothing lost");
    assert!(took <= Duration::from_secs(18), "took {took:?}");
    drop(first);
    db.drop_database().await;
}
