//! The phases of a run: the raw baseline, the relay floor, then the steady load or the backlog.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use crmhooks_client::{ContactBody, Transport as _};
use crmhooks_listen::counting::{unix_micros_now, CountingReceiver, Tally, RELAY_PREFIX};

use crate::args::BenchArgs;
use crate::children::{log_tail, Child, ServerChild};
use crate::database::BenchDatabase;
use crate::load::{run_clients, Api, LoadTally, Pacer};
use crate::machine::{proc_cpu_seconds, CpuMark};
use crate::progress::Progress;
use crate::raw::{raw_baseline, realistic_bodies, RawResult};
use crate::report::{kb_to_mb, percentile_ms, ratio, round, Report};

/// One run: the raw baseline, then the relay floor and the load, or the backlog.
pub(crate) async fn measure(
    args: &BenchArgs,
    db: &BenchDatabase,
    dir: &Path,
) -> anyhow::Result<Report> {
    let receiver = CountingReceiver::start().await?;
    // The backlog is contact.created events only; the load mixes one create with its changes.
    let changes = if args.backlog.is_some() {
        0
    } else {
        args.changes
    };
    let bodies = realistic_bodies(changes);
    let raw = if args.raw_seconds > 0.0 {
        if !args.json {
            eprintln!(
                "raw baseline: {} connections for {} s …",
                args.connections, args.raw_seconds
            );
        }
        raw_baseline(
            &receiver,
            &bodies,
            args.connections,
            Duration::from_secs_f64(args.raw_seconds),
        )
        .await?
    } else {
        RawResult::default()
    };
    let raw_body_bytes = round(
        bodies.iter().map(|b| b.body.len() as f64).sum::<f64>() / bodies.len() as f64,
        0,
    );
    let mut report = Report::new(args, db.kind(), &raw, raw_body_bytes);
    let key = format!("bench-{}", uuid::Uuid::new_v4().simple());
    match args.backlog {
        Some(m) => backlog_phase(args, m, db, dir, &key, &receiver, &mut report).await?,
        None => {
            if args.relay_seconds > 0.0 && args.rate.is_none() {
                if !args.json {
                    eprintln!(
                        "relay floor: {} clients for {} s …",
                        args.clients, args.relay_seconds
                    );
                }
                relay_floor(args, dir, &receiver, &mut report).await?;
            }
            load_phase(args, db, dir, &key, &receiver, &mut report).await?;
        }
    }
    Ok(report)
}

/// The steady load: clients create and change contacts for `--seconds`, then the drain.
async fn load_phase(
    args: &BenchArgs,
    db: &BenchDatabase,
    dir: &Path,
    key: &str,
    receiver: &CountingReceiver,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut servers = Vec::with_capacity(args.nodes);
    for node in 0..args.nodes {
        let log = if node == 0 {
            dir.join("server.log")
        } else {
            dir.join(format!("server-{node}.log"))
        };
        servers.push(ServerChild::spawn(&db.url, key, &log, false).await?);
    }
    report.server_start_seconds = round(servers[0].child.ready.as_secs_f64(), 3);
    let apis = servers
        .iter()
        .map(|s| Api::new(&s.child.base, key))
        .collect::<anyhow::Result<Vec<Api>>>()?;
    let mut setup = apis[0].connect();
    setup.create_webhooks(receiver, args.webhooks).await?;
    setup
        .create_idle_webhooks(receiver, args.idle_webhooks)
        .await?;
    if args.preload_contacts > 0 {
        if !args.json {
            eprintln!("storing {} contacts …", args.preload_contacts);
        }
        db.preload_contacts(args.preload_contacts).await?;
    }
    receiver.tally().reset();

    let cpu_before = servers
        .iter()
        .map(ServerChild::cpu_seconds)
        .sum::<Option<f64>>();
    let mark = CpuMark::now();
    let load = Arc::new(LoadTally::default());
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let pacer = args.rate.map(|r| Arc::new(Pacer::new(r)));
    let progress = Progress::start(
        (args.seconds * 1000.0) as u64,
        load.clone(),
        receiver.tally().clone(),
        args.webhooks as u64,
    );
    let started = Instant::now();
    run_clients(args, &apis, &load, deadline, pacer).await;
    let load_secs = started.elapsed().as_secs_f64();
    let load_end_us = unix_micros_now();
    let committed = load.committed.load(Ordering::SeqCst);
    let expected = committed * args.webhooks as u64;
    progress.draining(expected);

    let drain_timeout = Duration::from_secs_f64(args.drain_timeout);
    let drained = drain(receiver.tally(), expected, drain_timeout, &mut servers).await;
    let window_secs = started.elapsed().as_secs_f64();
    progress.finish();
    let mut ends = Vec::with_capacity(servers.len());
    for server in servers {
        ends.push(server.finish().await);
    }
    drained?;
    let end = crate::children::Finished::of_all(ends);

    let t = receiver.tally();
    let delivered = t.deliveries();
    let first_commit = t.first_commit_us();
    let last_delivery = t.last_delivery_us();
    let span = (last_delivery - first_commit) as f64 / 1e6;
    let deliveries_per_sec = (delivered > 0 && span > 0.0).then(|| delivered as f64 / span);
    let latencies = t.latencies();
    report.events_per_sec = round(committed as f64 / load_secs, 1);
    report.deliveries_per_sec = deliveries_per_sec.map(|v| round(v, 1));
    report.ratio = ratio(deliveries_per_sec, report.raw_posts_per_sec);
    report.of_relay = ratio(deliveries_per_sec, report.relay_deliveries_per_sec);
    report.p50_ms = percentile_ms(&latencies, 50.0);
    report.p99_ms = percentile_ms(&latencies, 99.0);
    report.max_ms = latencies.last().map(|&us| round(f64::from(us) / 1000.0, 3));
    report.peak_rss_mb = end.peak_rss_kb.map(kb_to_mb);
    report.cpu_seconds = (end.cpu_seconds)
        .zip(cpu_before)
        .map(|(a, b)| round(a - b, 2));
    report.cpu_us_per_event = report
        .cpu_seconds
        .filter(|_| committed > 0)
        .map(|c| round(c * 1e6 / committed as f64, 1));
    report.window_cpu(mark, end.mark);
    report.window_seconds = round(window_secs, 3);
    report.drain_seconds = if delivered > 0 {
        round(((last_delivery - load_end_us).max(0)) as f64 / 1e6, 3)
    } else {
        0.0
    };
    report.counts(committed, expected, &load, t);
    Ok(())
}

/// The relay floor: the load's clients, unpaced, against `crmhooks bench-relay` (a child
/// process, as the server is) for `--relay-seconds`; the receiver counts its deliveries.
async fn relay_floor(
    args: &BenchArgs,
    dir: &Path,
    receiver: &CountingReceiver,
    report: &mut Report,
) -> anyhow::Result<()> {
    let target = receiver.url(RELAY_PREFIX);
    let log = dir.join("relay.log");
    let child = Child::relay(&target, args.webhooks, args.changes, &log).await?;
    let pid = child.pid;
    let api = Api::new(&child.base, "relay")?;
    let tally = receiver.tally();
    tally.reset_relay();
    let load = Arc::new(LoadTally::default());
    let cpu_before = proc_cpu_seconds(pid);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.relay_seconds);
    run_clients(args, std::slice::from_ref(&api), &load, deadline, None).await;
    let load_secs = started.elapsed().as_secs_f64();
    let committed = load.committed.load(Ordering::SeqCst);
    let expected = committed * args.webhooks as u64;
    // The deliveries still in flight (a window's worth at most).
    let give_up = Instant::now() + Duration::from_secs(10);
    while tally.relay() < expected && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let span = started.elapsed().as_secs_f64();
    let delivered = tally.relay();
    let cpu_after = proc_cpu_seconds(pid);
    child.kill().await;
    if let Some(e) = load.first_error() {
        bail!("the relay floor's API calls failed: {e}");
    }
    if delivered < expected || committed == 0 {
        bail!("the relay floor delivered {delivered} of {expected} deliveries");
    }
    report.relay_events_per_sec = Some(round(committed as f64 / load_secs, 1));
    report.relay_deliveries_per_sec = Some(round(delivered as f64 / span, 1));
    report.relay_ratio = ratio(report.relay_deliveries_per_sec, report.raw_posts_per_sec);
    report.relay_cpu_us_per_event = cpu_after
        .zip(cpu_before)
        .map(|(a, b)| round((a - b) * 1e6 / committed as f64, 1));
    Ok(())
}

/// Backlog mode: fill on an API-only node, then time a normal node draining it.
async fn backlog_phase(
    args: &BenchArgs,
    backlog: u64,
    db: &BenchDatabase,
    dir: &Path,
    key: &str,
    receiver: &CountingReceiver,
    report: &mut Report,
) -> anyhow::Result<()> {
    let filler = ServerChild::spawn(&db.url, key, &dir.join("server-fill.log"), true).await?;
    let api = Api::new(&filler.child.base, key)?;
    api.connect()
        .create_webhooks(receiver, args.webhooks)
        .await?;
    let load = Arc::new(LoadTally::default());
    let next = Arc::new(AtomicU64::new(0));
    let progress = Progress::start_count(backlog, "queueing events on an API-only node");
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..args.clients {
        let (mut api, load, next, bar) =
            (api.connect(), load.clone(), next.clone(), progress.clone());
        clients.spawn(async move {
            while next.fetch_add(1, Ordering::SeqCst) < backlog {
                match api
                    .create_contact(&ContactBody::named(&format!("backlog {i}")))
                    .await
                {
                    Ok(_) => {
                        load.committed.fetch_add(1, Ordering::SeqCst);
                        bar.inc(1);
                    }
                    Err(e) => {
                        load.error(e);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    while clients.join_next().await.is_some() {}
    let fill_secs = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    filler.stop().await;
    let committed = load.committed.load(Ordering::SeqCst);
    let expected = committed * args.webhooks as u64;

    receiver.tally().reset();
    let spawned_us = unix_micros_now();
    let mark = CpuMark::now();
    let mut drainer =
        ServerChild::spawn(&db.url, key, &dir.join("server-drain.log"), false).await?;
    report.server_start_seconds = round(drainer.child.ready.as_secs_f64(), 3);
    let bar = Progress::start_count(expected, "draining the backlog");
    let tally = receiver.tally().clone();
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                bar.set_position(tally.deliveries());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let drain_timeout = Duration::from_secs_f64(args.drain_timeout);
    let drained = drain(
        receiver.tally(),
        expected,
        drain_timeout,
        std::slice::from_mut(&mut drainer),
    )
    .await;
    ticker.abort();
    bar.finish_and_clear();
    let window_secs = (unix_micros_now() - spawned_us) as f64 / 1e6;
    let end = drainer.finish().await;
    drained?;

    let t = receiver.tally();
    let delivered = t.deliveries();
    let last_delivery = t.last_delivery_us();
    let drain_secs = (last_delivery - spawned_us).max(0) as f64 / 1e6;
    let drain_per_sec = (delivered > 0 && drain_secs > 0.0).then(|| delivered as f64 / drain_secs);
    report.events_per_sec = round(committed as f64 / fill_secs, 1);
    report.deliveries_per_sec = drain_per_sec.map(|v| round(v, 1));
    report.drain_per_sec = report.deliveries_per_sec;
    report.ratio = ratio(drain_per_sec, report.raw_posts_per_sec);
    report.peak_rss_mb = end.peak_rss_kb.map(kb_to_mb);
    report.backlog_peak_rss_mb = report.peak_rss_mb;
    report.cpu_seconds = end.cpu_seconds.map(|c| round(c, 2));
    report.window_cpu(mark, end.mark);
    report.window_seconds = round(window_secs, 3);
    report.drain_seconds = round(drain_secs, 3);
    report.counts(committed, expected, &load, t);
    Ok(())
}

/// Waits until `n` deliveries arrived or `timeout` passed (missing deliveries are reported by
/// the caller); fails at once when the server exits.
async fn drain(
    tally: &Tally,
    n: u64,
    timeout: Duration,
    servers: &mut [ServerChild],
) -> anyhow::Result<()> {
    let until = Instant::now() + timeout;
    let mut checked = Instant::now();
    while tally.deliveries() < n && Instant::now() < until {
        if checked.elapsed() >= Duration::from_millis(100) {
            checked = Instant::now();
            for server in servers.iter_mut() {
                if let Some(status) = server.child.exited() {
                    bail!(
                        "a server child exited ({status}) with deliveries outstanding; its log:\n{}",
                        log_tail(&server.child.log)
                    );
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
