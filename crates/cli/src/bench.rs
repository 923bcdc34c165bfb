//! `crmhooks bench`: end-to-end throughput and commit-to-delivery latency of a real server, with
//! a raw HTTP baseline measured in the same run against the same receiver.
//!
//! The server runs as a child process of this binary (`crmhooks serve`), so its memory and CPU
//! are its own and can be read from `/proc`. The receiver is a bare hyper server inside this
//! process; it reads the commit time from each body's `Timestamp` without parsing the JSON. The
//! raw baseline POSTs bodies of the same shapes and sizes with hyper's own connection-level
//! client (the fastest stack here) over as many keep-alive connections as the dispatcher may
//! open to one webhook, so `ratio` says how
//! close the whole server (API, store, outbox, dispatcher) comes to what the loopback, the
//! receiver and this machine allow.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use crmhooks_payload::{
    headers, sign, ContactEvent, ContactFieldValues, NetDateTime, WebhookPayload, CONTACT_ENTITY,
};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::json;
use tokio::io::AsyncBufReadExt as _;

/// Flags of `bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Seconds of load: clients create contacts and change each a few times.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Concurrent API clients (as many as the raw baseline's connections: with fewer, each
    /// waiting for its commit's fsync, the load left part of the machine idle).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Changes (PATCH) after each created contact; each create and each change is one event.
    #[arg(long, default_value_t = 3)]
    pub changes: usize,
    /// Webhooks subscribed to contact.created and contact.changed; every event goes to each.
    #[arg(long, default_value_t = 1)]
    pub webhooks: usize,
    /// Pace the load to this many events per second in total, to measure latency at a given load
    /// (default: as fast as the clients go).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Keep-alive connections of the raw baseline.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds of the raw baseline (0 skips it).
    #[arg(long, default_value_t = 3.0)]
    pub raw_seconds: f64,
    /// Seconds of the relay floor (0 skips it): the same clients and load through a bare hyper
    /// relay that makes the same HTTP exchanges per event as the server (the API answer and
    /// `--webhooks` deliveries) and nothing else, in its own process. The most events per
    /// second this machine carries with this load's HTTP alone. Steady load only.
    #[arg(long, default_value_t = 3.0)]
    pub relay_seconds: f64,
    /// Backlog mode: queue this many contact events on an API-only node (nothing delivers), then
    /// start a normal node on the same database and measure only how fast it drains them.
    #[arg(long)]
    pub backlog: Option<u64>,
    /// Seconds to wait for outstanding deliveries (after the load, or for the whole backlog).
    #[arg(long, default_value_t = 60.0)]
    pub drain_timeout: f64,
    /// `sqlite://PATH` of a new file, or a `postgres://…` admin URL (a database
    /// `crmhooks_bench_<uuid>` is created there and dropped at the end). Default: a temporary
    /// SQLite file.
    #[arg(long)]
    pub database: Option<String>,
    /// Print exactly one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Store this many contacts before the load (written straight into the database), to
    /// measure whether the cost per event grows with the size of the data.
    #[arg(long, default_value_t = 0)]
    pub preload_contacts: u64,
    /// Also define this many Active webhooks subscribed only to `contact.deleted` (the load
    /// fires none), so the server holds many definitions while each event still goes to
    /// `--webhooks` of them.
    #[arg(long, default_value_t = 0)]
    pub idle_webhooks: usize,
    /// Run the whole measurement (raw baseline, then load or backlog) this many times, each on
    /// a new database, and report the median of each figure (the worst for max latency and
    /// memory) beside every run's own: on a noisy machine one run says little.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
}

impl BenchArgs {
    fn validate(&self) -> anyhow::Result<()> {
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "--{name} must be a positive number, not {v}"
                ))
            }
        };
        if self.backlog.is_none() {
            positive("seconds", self.seconds)?;
        }
        if !(self.raw_seconds.is_finite() && self.raw_seconds >= 0.0) {
            bail!("--raw-seconds must be 0 or more, not {}", self.raw_seconds);
        }
        if !(self.relay_seconds.is_finite() && self.relay_seconds >= 0.0) {
            bail!(
                "--relay-seconds must be 0 or more, not {}",
                self.relay_seconds
            );
        }
        positive("drain-timeout", self.drain_timeout)?;
        if let Some(rate) = self.rate {
            positive("rate", rate)?;
        }
        if self.clients == 0 || self.connections == 0 || self.webhooks == 0 {
            bail!("--clients, --connections and --webhooks must be at least 1");
        }
        if self.backlog == Some(0) {
            bail!("--backlog must be at least 1");
        }
        if self.repeat == 0 {
            bail!("--repeat must be at least 1");
        }
        if self.repeat > 1
            && self
                .database
                .as_deref()
                .is_some_and(|d| d.starts_with("sqlite:"))
        {
            bail!("--repeat needs a new database for every run: leave --database out (a temporary SQLite file each time) or give a postgres:// admin URL");
        }
        Ok(())
    }
}

/// Runs the benchmark and prints its figures; fails when deliveries went missing or API calls
/// failed (after printing what was measured).
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    args.validate()?;
    let mut runs = Vec::with_capacity(args.repeat);
    for i in 1..=args.repeat {
        if args.repeat > 1 && !args.json {
            eprintln!("run {i} of {}", args.repeat);
        }
        let dir = tempfile::Builder::new()
            .prefix("crmhooks-bench-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let db = BenchDatabase::prepare(args.database.as_deref(), dir.path()).await?;
        let result = measure(&args, &db, dir.path()).await;
        if let Err(e) = db.cleanup().await {
            eprintln!("warning: {e:#}");
        }
        runs.push(result?);
    }
    let report = Report::median(runs)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        report.print();
    }
    report.verdict()
}

/// Everything measured, with the parameters; the `--json` object.
#[derive(Debug, Serialize)]
struct Report {
    mode: &'static str,
    database: &'static str,
    clients: usize,
    changes_per_contact: usize,
    webhooks: usize,
    seconds: f64,
    rate: Option<f64>,
    connections: usize,
    raw_seconds: f64,
    drain_timeout: f64,
    backlog: Option<u64>,
    /// Events committed per second of load (backlog mode: of the pre-fill).
    events_per_sec: f64,
    deliveries_per_sec: Option<f64>,
    raw_posts_per_sec: Option<f64>,
    ratio: Option<f64>,
    /// The relay floor (`--relay-seconds`): events and deliveries per second of the same load
    /// through the bare relay, its deliveries' ratio to the raw baseline, the relay's CPU per
    /// event, and the server's deliveries as a share of the relay's.
    relay_seconds: f64,
    relay_events_per_sec: Option<f64>,
    relay_deliveries_per_sec: Option<f64>,
    relay_ratio: Option<f64>,
    relay_cpu_us_per_event: Option<f64>,
    of_relay: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    peak_rss_mb: Option<f64>,
    cpu_seconds: Option<f64>,
    /// Server CPU per committed event, microseconds (load plus drain).
    cpu_us_per_event: Option<f64>,
    /// Contacts stored before the load, and idle webhook definitions.
    preload_contacts: u64,
    idle_webhooks: usize,
    /// Seconds the CPU figure covers (load plus drain, or the backlog drain).
    window_seconds: f64,
    /// CPU seconds of this process (clients and receiver) over the same window: both share the
    /// machine with the server.
    bench_cpu_seconds: Option<f64>,
    /// The whole machine over the same window (`/proc/stat`): the share of its CPU time left
    /// idle, the share the hypervisor took (steal), and the CPU seconds of every process but
    /// the server and this one (PostgreSQL's backends, for one).
    machine_idle_share: Option<f64>,
    machine_steal_share: Option<f64>,
    other_cpu_seconds: Option<f64>,
    drain_seconds: f64,
    drain_per_sec: Option<f64>,
    backlog_peak_rss_mb: Option<f64>,
    committed: u64,
    api_errors: u64,
    first_api_error: Option<String>,
    delivered: u64,
    expected: u64,
    raw_posts: u64,
    raw_errors: u64,
    raw_body_bytes: f64,
    delivery_body_bytes: Option<f64>,
    server_start_seconds: f64,
    /// With `--repeat`: how many runs the figures above are the medians of, and each run's.
    repeat: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    runs: Vec<RunFigures>,
}

/// The main figures of one run of several (`--repeat`).
#[derive(Clone, Debug, Serialize)]
struct RunFigures {
    events_per_sec: f64,
    deliveries_per_sec: Option<f64>,
    drain_per_sec: Option<f64>,
    raw_posts_per_sec: Option<f64>,
    ratio: Option<f64>,
    relay_deliveries_per_sec: Option<f64>,
    relay_ratio: Option<f64>,
    of_relay: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    peak_rss_mb: Option<f64>,
    cpu_us_per_event: Option<f64>,
}

/// The median of some figures (the mean of the middle two for an even count); `None` when
/// none has one.
fn median(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let mut v: Vec<f64> = values.flatten().collect();
    v.sort_by(f64::total_cmp);
    let upper = *v.get(v.len() / 2)?;
    Some(if v.len().is_multiple_of(2) {
        (v[v.len() / 2 - 1] + upper) / 2.0
    } else {
        upper
    })
}

/// The largest of some figures.
fn worst(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    values.flatten().max_by(f64::total_cmp)
}

impl Report {
    /// A report of the parameters and the raw baseline, before the load or the backlog.
    fn new(
        args: &BenchArgs,
        database: &'static str,
        raw: &RawResult,
        raw_body_bytes: f64,
    ) -> Report {
        Report {
            mode: if args.backlog.is_some() {
                "backlog drain"
            } else {
                "steady load"
            },
            database,
            clients: args.clients,
            changes_per_contact: args.changes,
            webhooks: args.webhooks,
            seconds: args.seconds,
            rate: args.rate,
            connections: args.connections,
            raw_seconds: args.raw_seconds,
            drain_timeout: args.drain_timeout,
            backlog: args.backlog,
            events_per_sec: 0.0,
            deliveries_per_sec: None,
            raw_posts_per_sec: raw.posts_per_sec,
            ratio: None,
            relay_seconds: args.relay_seconds,
            relay_events_per_sec: None,
            relay_deliveries_per_sec: None,
            relay_ratio: None,
            relay_cpu_us_per_event: None,
            of_relay: None,
            p50_ms: None,
            p99_ms: None,
            max_ms: None,
            peak_rss_mb: None,
            cpu_seconds: None,
            cpu_us_per_event: None,
            preload_contacts: args.preload_contacts,
            idle_webhooks: args.idle_webhooks,
            window_seconds: 0.0,
            bench_cpu_seconds: None,
            machine_idle_share: None,
            machine_steal_share: None,
            other_cpu_seconds: None,
            drain_seconds: 0.0,
            drain_per_sec: None,
            backlog_peak_rss_mb: None,
            committed: 0,
            api_errors: 0,
            first_api_error: None,
            delivered: 0,
            expected: 0,
            raw_posts: raw.ok,
            raw_errors: raw.failed,
            raw_body_bytes,
            delivery_body_bytes: None,
            server_start_seconds: 0.0,
            repeat: 1,
            runs: Vec::new(),
        }
    }

    /// One report for several runs: the median of each rate, latency percentile and cost, the
    /// worst max latency and memory, the counts summed (the verdict holds for all runs), and
    /// every run's figures in `runs`. A single run is returned as it is.
    fn median(mut runs: Vec<Report>) -> anyhow::Result<Report> {
        if runs.len() <= 1 {
            return runs.pop().context("no run was measured");
        }
        let figures: Vec<RunFigures> = runs
            .iter()
            .map(|r| RunFigures {
                events_per_sec: r.events_per_sec,
                deliveries_per_sec: r.deliveries_per_sec,
                drain_per_sec: r.drain_per_sec,
                raw_posts_per_sec: r.raw_posts_per_sec,
                ratio: r.ratio,
                relay_deliveries_per_sec: r.relay_deliveries_per_sec,
                relay_ratio: r.relay_ratio,
                of_relay: r.of_relay,
                p50_ms: r.p50_ms,
                p99_ms: r.p99_ms,
                peak_rss_mb: r.peak_rss_mb,
                cpu_us_per_event: r.cpu_us_per_event,
            })
            .collect();
        macro_rules! med {
            ($f:ident) => {
                median(runs.iter().map(|r| r.$f))
            };
        }
        macro_rules! med0 {
            ($f:ident) => {
                median(runs.iter().map(|r| Some(r.$f))).unwrap_or_default()
            };
        }
        macro_rules! sum {
            ($f:ident) => {
                runs.iter().map(|r| r.$f).sum()
            };
        }
        let n = runs.len();
        let first_api_error = runs.iter().find_map(|r| r.first_api_error.clone());
        Ok(Report {
            events_per_sec: med0!(events_per_sec),
            deliveries_per_sec: med!(deliveries_per_sec),
            raw_posts_per_sec: med!(raw_posts_per_sec),
            ratio: med!(ratio),
            relay_events_per_sec: med!(relay_events_per_sec),
            relay_deliveries_per_sec: med!(relay_deliveries_per_sec),
            relay_ratio: med!(relay_ratio),
            relay_cpu_us_per_event: med!(relay_cpu_us_per_event),
            of_relay: med!(of_relay),
            p50_ms: med!(p50_ms),
            p99_ms: med!(p99_ms),
            max_ms: worst(runs.iter().map(|r| r.max_ms)),
            peak_rss_mb: worst(runs.iter().map(|r| r.peak_rss_mb)),
            cpu_seconds: med!(cpu_seconds),
            cpu_us_per_event: med!(cpu_us_per_event),
            window_seconds: med0!(window_seconds),
            bench_cpu_seconds: med!(bench_cpu_seconds),
            machine_idle_share: med!(machine_idle_share),
            machine_steal_share: med!(machine_steal_share),
            other_cpu_seconds: med!(other_cpu_seconds),
            drain_seconds: med0!(drain_seconds),
            drain_per_sec: med!(drain_per_sec),
            backlog_peak_rss_mb: worst(runs.iter().map(|r| r.backlog_peak_rss_mb)),
            committed: sum!(committed),
            api_errors: sum!(api_errors),
            delivered: sum!(delivered),
            expected: sum!(expected),
            raw_posts: sum!(raw_posts),
            raw_errors: sum!(raw_errors),
            delivery_body_bytes: med!(delivery_body_bytes),
            server_start_seconds: med0!(server_start_seconds),
            first_api_error,
            repeat: n,
            runs: figures,
            ..runs.swap_remove(0)
        })
    }

    /// The machine's figures from two readings of `/proc/stat` around the window, with the
    /// server's and this process's CPU already set.
    fn machine(&mut self, before: Option<MachineCpu>, after: Option<MachineCpu>) {
        let Some(d) = after.zip(before).map(|(a, b)| a.since(b)) else {
            return;
        };
        if d.total <= 0.0 {
            return;
        }
        self.machine_idle_share = Some(round(d.idle / d.total, 3));
        self.machine_steal_share = Some(round(d.steal / d.total, 3));
        let ours = self.cpu_seconds.unwrap_or(0.0) + self.bench_cpu_seconds.unwrap_or(0.0);
        self.other_cpu_seconds = Some(round((d.busy() - ours).max(0.0), 2));
    }

    /// The counts of a run: events committed, deliveries expected and received, failed API
    /// calls, and the average delivery body.
    fn counts(&mut self, committed: u64, expected: u64, load: &LoadTally, t: &Tally) {
        let delivered = t.deliveries.load(Ordering::SeqCst);
        self.committed = committed;
        self.api_errors = load.errors.load(Ordering::SeqCst);
        self.first_api_error = load.first_error();
        self.delivered = delivered;
        self.expected = expected;
        self.delivery_body_bytes = (delivered > 0).then(|| {
            round(
                t.delivery_bytes.load(Ordering::SeqCst) as f64 / delivered as f64,
                0,
            )
        });
    }

    fn print(&self) {
        let per = |v: Option<f64>| shown(v, 0, "/s");
        let ms = |v: Option<f64>| shown(v, 1, " ms");
        let mb = |v: Option<f64>| shown(v, 1, " MB");
        let ratio = shown(self.ratio, 3, "");
        let raw = per(self.raw_posts_per_sec);
        println!(
            "crmhooks bench: {} on {}, {} webhook(s), {} client(s){}{}",
            self.mode,
            self.database,
            self.webhooks,
            self.clients,
            self.rate
                .map(|r| format!(", paced to {r}/s"))
                .unwrap_or_default(),
            if self.repeat > 1 {
                format!(
                    ", median of {} runs (worst max latency and RSS, counts summed)",
                    self.repeat
                )
            } else {
                String::new()
            }
        );
        println!();
        for (i, r) in self.runs.iter().enumerate() {
            let rate = if self.backlog.is_some() {
                format!("drain {}", per(r.drain_per_sec))
            } else {
                format!(
                    "events {}, deliveries {}",
                    per(Some(r.events_per_sec)),
                    per(r.deliveries_per_sec)
                )
            };
            let relay = r
                .relay_ratio
                .map(|v| format!(" (relay {v:.3})"))
                .unwrap_or_default();
            println!(
                "  run {:<2}  {rate}, raw {}, ratio {}{relay}, p50 {}, p99 {}, RSS {}, {} µs/event",
                i + 1,
                per(r.raw_posts_per_sec),
                shown(r.ratio, 3, ""),
                ms(r.p50_ms),
                ms(r.p99_ms),
                mb(r.peak_rss_mb),
                shown(r.cpu_us_per_event, 0, "")
            );
        }
        if !self.runs.is_empty() {
            println!();
        }
        println!(
            "  raw baseline       {raw:>10}   bare hyper, {} keep-alive connections, {:.1} s, {} posts ({} failed), {:.0} B bodies",
            self.connections, self.raw_seconds, self.raw_posts, self.raw_errors, self.raw_body_bytes
        );
        if let Some(backlog) = self.backlog {
            println!(
                "  backlog fill       {:>10}   {} contact events queued on an API-only node",
                per(Some(self.events_per_sec)),
                self.committed
            );
            println!(
                "  drain              {:>10}   ratio {ratio} of the raw baseline ({raw}); {} of {} deliveries in {:.2} s (from the node's start, {:.2} s of which starting)",
                per(self.drain_per_sec),
                self.delivered,
                self.expected,
                self.drain_seconds,
                self.server_start_seconds
            );
            println!(
                "  server (drain)     peak RSS {}, CPU {}",
                mb(self.backlog_peak_rss_mb),
                shown(self.cpu_seconds, 2, " s"),
            );
            self.print_machine();
            println!("  (backlog mode measures only the drain: {backlog} events, no steady load, no latency)");
        } else {
            println!(
                "  events             {:>10}   {} committed in {}{:.1} s ({} per contact), {} API errors",
                per(Some(self.events_per_sec)),
                self.committed,
                if self.repeat > 1 {
                    format!("{} runs of ", self.repeat)
                } else {
                    String::new()
                },
                self.seconds,
                1 + self.changes_per_contact,
                self.api_errors
            );
            println!(
                "  deliveries         {:>10}   ratio {ratio} of the raw baseline ({raw}); {} of {} delivered",
                per(self.deliveries_per_sec),
                self.delivered,
                self.expected
            );
            if let Some(relay) = self.relay_deliveries_per_sec {
                println!(
                    "  relay floor        {:>10}   ratio {} of the raw baseline: the same load through a bare hyper relay (its API answers and deliveries, no database, no JSON, no signing), {} events/s, {} µs of relay CPU per event; the server delivered {} of it",
                    per(Some(relay)),
                    shown(self.relay_ratio, 3, ""),
                    shown(self.relay_events_per_sec, 0, ""),
                    shown(self.relay_cpu_us_per_event, 0, ""),
                    shown(self.of_relay, 3, ""),
                );
            }
            println!(
                "  commit → delivery  p50 {}   p99 {}   max {}",
                ms(self.p50_ms),
                ms(self.p99_ms),
                ms(self.max_ms)
            );
            println!(
                "  drain              {:.2} s after the load ended",
                self.drain_seconds
            );
            println!(
                "  server             peak RSS {}, CPU {} over {:.1} s of load and drain{}",
                mb(self.peak_rss_mb),
                shown(self.cpu_seconds, 2, " s"),
                self.window_seconds,
                self.cpu_seconds
                    .filter(|_| self.window_seconds > 0.0)
                    .map(|c| format!(" ({:.2} cores)", c / self.window_seconds))
                    .unwrap_or_default()
            );
            if let Some(c) = self.cpu_us_per_event {
                println!(
                    "  cost               {c:.0} µs of server CPU per event ({} stored contacts before the load, {} idle webhooks)",
                    self.preload_contacts, self.idle_webhooks
                );
            }
            if let Some(c) = self.bench_cpu_seconds {
                println!("  bench process      CPU {c:.2} s over the same window (clients and receiver share the machine)");
            }
            self.print_machine();
            if let Some(b) = self.delivery_body_bytes {
                println!("  bodies             deliveries {b:.0} B on average");
            }
        }
        if let Some(e) = &self.first_api_error {
            println!("  first API error    {e}");
        }
    }

    /// The machine's line: how its CPU time was spent over the window.
    fn print_machine(&self) {
        if let (Some(idle), Some(steal)) = (self.machine_idle_share, self.machine_steal_share) {
            let other = self
                .other_cpu_seconds
                .map(|c| format!("other processes {c:.2} s of CPU, "))
                .unwrap_or_default();
            println!(
                "  machine            {other}{:.0} % idle, {:.0} % stolen by the hypervisor",
                idle * 100.0,
                steal * 100.0
            );
        }
    }

    /// Ok when every expected delivery arrived and every API call succeeded.
    fn verdict(&self) -> anyhow::Result<()> {
        if self.delivered < self.expected {
            bail!(
                "{} of {} deliveries did not arrive within --drain-timeout {} s",
                self.expected - self.delivered,
                self.expected,
                self.drain_timeout
            );
        }
        if self.api_errors > 0 {
            bail!(
                "{} API calls failed; the first: {}",
                self.api_errors,
                self.first_api_error.as_deref().unwrap_or("?")
            );
        }
        Ok(())
    }
}

async fn measure(args: &BenchArgs, db: &BenchDatabase, dir: &Path) -> anyhow::Result<Report> {
    let receiver = Receiver::start().await?;
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
    receiver: &Receiver,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut server = ServerChild::spawn(&db.url, key, &dir.join("server.log"), false).await?;
    report.server_start_seconds = round(server.ready.as_secs_f64(), 3);
    let api = Api::new(&server.base, key)?;
    let mut setup = api.connect();
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
    receiver.tally.reset();

    let cpu_before = server.cpu_seconds();
    let bench_cpu_before = proc_cpu_seconds(std::process::id());
    let machine_before = machine_cpu();
    let load = Arc::new(LoadTally::default());
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let pacer = args.rate.map(|r| Arc::new(Pacer::new(r)));
    let progress = Progress::start(
        (args.seconds * 1000.0) as u64,
        load.clone(),
        receiver.tally.clone(),
        args.webhooks as u64,
    );
    let started = Instant::now();
    run_clients(args, &api, &load, deadline, pacer).await;
    let load_secs = started.elapsed().as_secs_f64();
    let load_end_us = unix_micros_now();
    let committed = load.committed.load(Ordering::SeqCst);
    let expected = committed * args.webhooks as u64;
    progress.draining(expected);

    let drain_timeout = Duration::from_secs_f64(args.drain_timeout);
    let drained = drain(&receiver.tally, expected, drain_timeout, &mut server).await;
    let window_secs = started.elapsed().as_secs_f64();
    progress.finish();
    let cpu_after = server.cpu_seconds();
    let bench_cpu_after = proc_cpu_seconds(std::process::id());
    let machine_after = machine_cpu();
    let peak_kb = server.peak_rss_kb();
    server.stop().await;
    drained?;

    let t = &receiver.tally;
    let delivered = t.deliveries.load(Ordering::SeqCst);
    let first_commit = t.first_commit_us.load(Ordering::SeqCst);
    let last_delivery = t.last_delivery_us.load(Ordering::SeqCst);
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
    report.peak_rss_mb = peak_kb.map(kb_to_mb);
    report.cpu_seconds = cpu_after.zip(cpu_before).map(|(a, b)| round(a - b, 2));
    report.cpu_us_per_event = report
        .cpu_seconds
        .filter(|_| committed > 0)
        .map(|c| round(c * 1e6 / committed as f64, 1));
    report.bench_cpu_seconds = bench_cpu_after
        .zip(bench_cpu_before)
        .map(|(a, b)| round(a - b, 2));
    report.machine(machine_before, machine_after);
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
    receiver: &Receiver,
    report: &mut Report,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the crmhooks executable")?;
    let log = dir.join("relay.log");
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut child = tokio::process::Command::new(exe)
        .args([
            "bench-relay",
            "--target",
            &receiver.url("/relay"),
            "--fanout",
            &args.webhooks.to_string(),
            "--changes",
            &args.changes.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the relay child")?;
    let pid = child.id().context("the relay child exited at once")?;
    let base = listening_at(&mut child, "relay", "bench-relay listening on ", &log).await?;
    let api = Api::new(&base, "relay")?;
    let tally = &receiver.tally;
    tally.relay.store(0, Ordering::SeqCst);
    let load = Arc::new(LoadTally::default());
    let cpu_before = proc_cpu_seconds(pid);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.relay_seconds);
    run_clients(args, &api, &load, deadline, None).await;
    let load_secs = started.elapsed().as_secs_f64();
    let committed = load.committed.load(Ordering::SeqCst);
    let expected = committed * args.webhooks as u64;
    // The deliveries still in flight (a window's worth at most).
    let give_up = Instant::now() + Duration::from_secs(10);
    while tally.relay.load(Ordering::SeqCst) < expected && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let span = started.elapsed().as_secs_f64();
    let delivered = tally.relay.load(Ordering::SeqCst);
    let cpu_after = proc_cpu_seconds(pid);
    let _ = child.kill().await;
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
    receiver: &Receiver,
    report: &mut Report,
) -> anyhow::Result<()> {
    let filler = ServerChild::spawn(&db.url, key, &dir.join("server-fill.log"), true).await?;
    let api = Api::new(&filler.base, key)?;
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
                match api.create_contact(&format!("backlog {i}")).await {
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

    receiver.tally.reset();
    let spawned_us = unix_micros_now();
    let bench_cpu_before = proc_cpu_seconds(std::process::id());
    let machine_before = machine_cpu();
    let mut drainer =
        ServerChild::spawn(&db.url, key, &dir.join("server-drain.log"), false).await?;
    report.server_start_seconds = round(drainer.ready.as_secs_f64(), 3);
    let bar = Progress::start_count(expected, "draining the backlog");
    let tally = receiver.tally.clone();
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                bar.set_position(tally.deliveries.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let drain_timeout = Duration::from_secs_f64(args.drain_timeout);
    let drained = drain(&receiver.tally, expected, drain_timeout, &mut drainer).await;
    ticker.abort();
    bar.finish_and_clear();
    let window_secs = (unix_micros_now() - spawned_us) as f64 / 1e6;
    let cpu = drainer.cpu_seconds();
    let bench_cpu_after = proc_cpu_seconds(std::process::id());
    let machine_after = machine_cpu();
    let peak_kb = drainer.peak_rss_kb();
    drainer.stop().await;
    drained?;

    let t = &receiver.tally;
    let delivered = t.deliveries.load(Ordering::SeqCst);
    let last_delivery = t.last_delivery_us.load(Ordering::SeqCst);
    let drain_secs = (last_delivery - spawned_us).max(0) as f64 / 1e6;
    let drain_per_sec = (delivered > 0 && drain_secs > 0.0).then(|| delivered as f64 / drain_secs);
    report.events_per_sec = round(committed as f64 / fill_secs, 1);
    report.deliveries_per_sec = drain_per_sec.map(|v| round(v, 1));
    report.drain_per_sec = report.deliveries_per_sec;
    report.ratio = ratio(drain_per_sec, report.raw_posts_per_sec);
    report.peak_rss_mb = peak_kb.map(kb_to_mb);
    report.backlog_peak_rss_mb = report.peak_rss_mb;
    report.cpu_seconds = cpu.map(|c| round(c, 2));
    report.bench_cpu_seconds = bench_cpu_after
        .zip(bench_cpu_before)
        .map(|(a, b)| round(a - b, 2));
    report.machine(machine_before, machine_after);
    report.window_seconds = round(window_secs, 3);
    report.drain_seconds = round(drain_secs, 3);
    report.counts(committed, expected, &load, t);
    Ok(())
}

/// A figure as the table prints it: `decimals` after the point and `unit`, or "-" when it was
/// not measured.
fn shown(v: Option<f64>, decimals: usize, unit: &str) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}{unit}"))
}

fn ratio(measured: Option<f64>, raw: Option<f64>) -> Option<f64> {
    measured
        .zip(raw)
        .filter(|(_, r)| *r > 0.0)
        .map(|(m, r)| round(m / r, 4))
}

fn round(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}

fn kb_to_mb(kb: u64) -> f64 {
    round(kb as f64 / 1024.0, 1)
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
fn percentile_ms(sorted_us: &[u32], p: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted_us.len()) - 1;
    Some(round(f64::from(sorted_us[i]) / 1000.0, 3))
}

/// Microseconds since the Unix epoch, from the wall clock (the server's `Timestamp` is too).
fn unix_micros_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

// ─── the receiver ────────────────────────────────────────────────────────────────────────────

/// What the receiver counted.
pub(crate) struct Tally {
    /// Requests of the raw baseline (paths under `/raw`).
    raw: AtomicU64,
    /// Deliveries of the relay floor (paths under `/relay`).
    pub(crate) relay: AtomicU64,
    /// Deliveries (webhook paths), test events excluded.
    pub(crate) deliveries: AtomicU64,
    /// `X-Hook-Test: true` requests, not counted as deliveries.
    tests: AtomicU64,
    delivery_bytes: AtomicU64,
    /// Earliest `Timestamp` seen in a delivery, µs since the epoch.
    first_commit_us: AtomicI64,
    /// Wall clock of the latest delivery, µs since the epoch.
    last_delivery_us: AtomicI64,
    /// Commit-to-delivery latency of each delivery, µs.
    latencies_us: Mutex<Vec<u32>>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            raw: AtomicU64::new(0),
            relay: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            tests: AtomicU64::new(0),
            delivery_bytes: AtomicU64::new(0),
            first_commit_us: AtomicI64::new(i64::MAX),
            last_delivery_us: AtomicI64::new(0),
            latencies_us: Mutex::new(Vec::with_capacity(1 << 16)),
        }
    }

    /// Forgets deliveries and latencies (between phases; raw and test counts are kept).
    fn reset(&self) {
        if let Ok(mut l) = self.latencies_us.lock() {
            l.clear();
        }
        self.deliveries.store(0, Ordering::SeqCst);
        self.delivery_bytes.store(0, Ordering::SeqCst);
        self.first_commit_us.store(i64::MAX, Ordering::SeqCst);
        self.last_delivery_us.store(0, Ordering::SeqCst);
    }

    fn record_delivery(&self, body: &[u8], now_us: i64) {
        if let Some(committed) = find_timestamp(body).and_then(parse_utc_micros) {
            self.first_commit_us.fetch_min(committed, Ordering::SeqCst);
            let latency = u32::try_from((now_us - committed).max(0)).unwrap_or(u32::MAX);
            if let Ok(mut l) = self.latencies_us.lock() {
                l.push(latency);
            }
        }
        self.last_delivery_us.fetch_max(now_us, Ordering::SeqCst);
        self.delivery_bytes
            .fetch_add(body.len() as u64, Ordering::SeqCst);
        // Counted last, so whoever sees the count also sees this delivery's latency.
        self.deliveries.fetch_add(1, Ordering::SeqCst);
    }

    /// The latencies so far, sorted.
    fn latencies(&self) -> Vec<u32> {
        let mut v = self
            .latencies_us
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        v.sort_unstable();
        v
    }
}

/// Waits until `n` deliveries arrived or `timeout` passed (missing deliveries are reported by
/// the caller); fails at once when the server exits.
async fn drain(
    tally: &Tally,
    n: u64,
    timeout: Duration,
    server: &mut ServerChild,
) -> anyhow::Result<()> {
    let until = Instant::now() + timeout;
    let mut checked = Instant::now();
    while tally.deliveries.load(Ordering::SeqCst) < n && Instant::now() < until {
        if checked.elapsed() >= Duration::from_millis(100) {
            checked = Instant::now();
            if let Ok(Some(status)) = server.child.try_wait() {
                bail!(
                    "the server child exited ({status}) with deliveries outstanding; its log:\n{}",
                    log_tail(&server.log)
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// The value of `"Timestamp":"…"` in a body, found without parsing the JSON.
fn find_timestamp(body: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = b"\"Timestamp\":\"";
    let start = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = body[start..].iter().position(|&b| b == b'"')?;
    Some(&body[start..start + len])
}

/// `YYYY-MM-DDTHH:MM:SS[.f…]Z` (UTC, any number of fraction digits) as µs since the epoch.
fn parse_utc_micros(s: &[u8]) -> Option<i64> {
    fn num(s: &[u8]) -> Option<i64> {
        s.iter().try_fold(0i64, |acc, &b| {
            if b.is_ascii_digit() {
                acc.checked_mul(10)?.checked_add(i64::from(b - b'0'))
            } else {
                None
            }
        })
    }
    let (head, rest) = (s.get(..19)?, s.get(19..)?);
    if head[4] != b'-'
        || head[7] != b'-'
        || head[10] != b'T'
        || head[13] != b':'
        || head[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(&head[..4])?, num(&head[5..7])?, num(&head[8..10])?);
    let (hour, minute, second) = (
        num(&head[11..13])?,
        num(&head[14..16])?,
        num(&head[17..19])?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let micros = match rest {
        [b'Z'] => 0,
        [b'.', fraction @ .., b'Z']
            if !fraction.is_empty() && fraction.iter().all(u8::is_ascii_digit) =>
        {
            // Microseconds: the first six digits; .NET writes seven, the rest is truncated.
            let digits = &fraction[..fraction.len().min(6)];
            num(digits)? * 10i64.pow(6 - digits.len() as u32)
        }
        _ => return None,
    };
    // Days from the civil date (H. Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hour) * 60 + minute) * 60_000_000 + second * 1_000_000 + micros)
}

/// An HTTP/1.1 keep-alive receiver answering 200 with an empty body.
pub(crate) struct Receiver {
    pub(crate) addr: SocketAddr,
    pub(crate) tally: Arc<Tally>,
    accept: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind the receiver")?;
        let addr = listener.local_addr()?;
        let tally = Arc::new(Tally::new());
        let t = tally.clone();
        let accept = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // Out of descriptors, usually: let connections close, then go on.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let t = t.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| receive(t.clone(), req));
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Receiver {
            addr,
            tally,
            accept,
        })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn receive(
    tally: Arc<Tally>,
    req: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    let raw = req.uri().path().starts_with("/raw");
    let relay = req.uri().path().starts_with("/relay");
    let test = req
        .headers()
        .get(headers::HOOK_TEST)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let mut resp = Response::new(Empty::new());
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            return Ok(resp);
        }
    };
    let now = unix_micros_now();
    if raw {
        tally.raw.fetch_add(1, Ordering::Relaxed);
    } else if relay {
        tally.relay.fetch_add(1, Ordering::Relaxed);
    } else if test {
        tally.tests.fetch_add(1, Ordering::Relaxed);
    } else {
        tally.record_delivery(&body, now);
    }
    Ok(Response::new(Empty::new()))
}

// ─── the raw baseline ────────────────────────────────────────────────────────────────────────

/// A body and the headers that go with it, as the dispatcher would send them.
pub(crate) struct RawBody {
    body: Bytes,
    event: &'static str,
    signature: String,
}

/// One `contact.created` and `changes` × `contact.changed` bodies: the mix the load produces,
/// with the same shapes (Changes, FieldValues) and so the same sizes as real deliveries.
pub(crate) fn realistic_bodies(changes: usize) -> Vec<RawBody> {
    let now = time::OffsetDateTime::now_utc();
    let field_values = ContactFieldValues {
        active_interests: 0,
        associate_id: 1,
        business_idx: 0,
        category_idx: 0,
        country_id: 0,
        deleted: 0,
        deleted_date: NetDateTime::MIN,
        registered: NetDateTime::unspecified(time::PrimitiveDateTime::new(now.date(), now.time())),
        registered_associate_id: 1,
        source: 0,
        updated: NetDateTime::local(now),
        userdef2_id: 0,
        userdef_id: 0,
    };
    let payload = |event: ContactEvent, changes: Vec<String>| WebhookPayload {
        event_id: uuid::Uuid::new_v4(),
        timestamp: NetDateTime::utc(now),
        changes,
        values: None,
        event: event.to_string(),
        primary_key: 123_456,
        entity: CONTACT_ENTITY.to_owned(),
        context_identifier: "Default".to_owned(),
        changed_by_associate_id: 1,
        webhook_name: "bench 1".to_owned(),
        field_values: Some(field_values.to_map()),
        properties: None,
    };
    let created = payload(
        ContactEvent::Created,
        crmhooks_store::contact::CONTACT.created_changes(),
    );
    let changed = payload(
        ContactEvent::Changed,
        [
            "contact_id",
            "department",
            "updated_associate_id",
            "updated",
            "updatedCount",
        ]
        .map(str::to_owned)
        .to_vec(),
    );
    let raw = |event: ContactEvent, p: &WebhookPayload| {
        let body = p.to_bytes();
        RawBody {
            signature: sign(BENCH_SECRET, &body),
            body: Bytes::from(body),
            event: event.as_str(),
        }
    };
    let mut bodies = vec![raw(ContactEvent::Created, &created)];
    for _ in 0..changes {
        bodies.push(raw(ContactEvent::Changed, &changed));
    }
    bodies
}

/// A POST of one body with the headers the dispatcher sends with it.
#[derive(Clone)]
pub(crate) struct RawRequest {
    body: Bytes,
    headers: Arc<[(&'static str, String); 6]>,
}

impl RawRequest {
    /// The request to `uri`.
    pub(crate) fn to(&self, uri: hyper::Uri) -> Result<Request<Full<Bytes>>, hyper::http::Error> {
        let mut req = Request::post(uri);
        for (k, v) in self.headers.iter() {
            req = req.header(*k, v.as_str());
        }
        req.body(Full::new(self.body.clone()))
    }
}

/// The address and path of `http://IP:PORT[/PATH]`, as the server child, the relay child and
/// the receiver print their URLs (no names to resolve).
pub(crate) fn loopback_url(url: &str) -> anyhow::Result<(SocketAddr, &str)> {
    url.strip_prefix("http://")
        .and_then(|rest| {
            let (addr, path) = rest.split_once('/').unwrap_or((rest, ""));
            Some((addr.parse::<SocketAddr>().ok()?, path))
        })
        .with_context(|| format!("{url:?} is not http://IP:PORT[/PATH]"))
}

/// One HTTP/1.1 keep-alive connection of hyper's own client (`client::conn::http1`): no pool
/// and no checkout, the cheapest way hyper sends a request (the pooled client of hyper-util,
/// which the raw baseline used before, made 12-29 % fewer POSTs per second here). The raw
/// baseline, the load's API clients and the relay's deliveries use it, so that the baseline is
/// the fastest stack on this machine and the load generator takes as little of the shared cores
/// as it can.
pub(crate) struct Conn {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: hyper::header::HeaderValue,
}

impl Conn {
    /// Connects to `addr` (no delay on small writes).
    pub(crate) async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP/1.1 handshake with {addr}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            send,
            host: hyper::header::HeaderValue::from_str(&addr.to_string())?,
        })
    }

    /// The server closed the connection (or it failed): open another.
    pub(crate) fn is_closed(&self) -> bool {
        self.send.is_closed()
    }

    /// The connection in `slot` while it is open, else a new one to `addr` put there.
    pub(crate) async fn in_slot(
        slot: &mut Option<Conn>,
        addr: SocketAddr,
    ) -> anyhow::Result<&mut Conn> {
        if slot.as_ref().is_some_and(Conn::is_closed) {
            *slot = None;
        }
        match slot {
            Some(conn) => Ok(conn),
            None => Ok(slot.insert(Conn::open(addr).await?)),
        }
    }

    /// Sends `req` (a path as its URI; the Host header is added) and reads the whole answer.
    pub(crate) async fn send(
        &mut self,
        mut req: Request<Full<Bytes>>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        req.headers_mut()
            .insert(hyper::header::HOST, self.host.clone());
        self.send.ready().await?;
        let resp = self.send.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// The bodies with their headers, as the raw baseline and the relay send them.
pub(crate) fn raw_requests(bodies: &[RawBody]) -> Vec<RawRequest> {
    let user_agent = format!(
        "{}/{}.0",
        headers::USER_AGENT_PRODUCT,
        env!("CARGO_PKG_VERSION")
    );
    bodies
        .iter()
        .map(|b| RawRequest {
            body: b.body.clone(),
            headers: Arc::new([
                ("content-type", headers::CONTENT_TYPE_JSON.to_owned()),
                ("user-agent", user_agent.clone()),
                ("x-superoffice-event", b.event.to_owned()),
                ("x-superoffice-eventid", uuid::Uuid::new_v4().to_string()),
                ("x-superoffice-signature", b.signature.clone()),
                ("x-superoffice-retry", "0".to_owned()),
            ]),
        })
        .collect()
}

/// What the relay answers an API call with: a contact's JSON as the server answers it (the
/// same fields and about the same size, 937 bytes for a new one), with `id` as its ContactId.
pub(crate) fn contact_answer(id: u64) -> Bytes {
    const REST: &str = r#","Name":"bench 1-1","Department":"","OrgNr":"","Number1":"","Number2":"","Kananame":"","CreatedDate":"2026-11-27T17:54:44+00:00","UpdatedDate":"2026-11-27T17:54:44.6720612+00:00","CreatedBy":{"AssociateId":1,"Name":"","FullName":""},"UpdatedBy":{"AssociateId":1,"Name":"","FullName":""},"Associate":{"AssociateId":0,"Name":"","FullName":""},"Business":{"Id":0,"Value":"","Tooltip":""},"Category":{"Id":0,"Value":"","Tooltip":""},"Country":{"CountryId":0,"Name":""},"NoMailing":false,"Xstop":false,"GroupId":0,"Deleted":0,"DeletedDate":null,"Source":0,"ActiveInterests":0,"ActiveErpLinks":0,"DbiAgentId":0,"DbiKey":"","DbiLastSyncronized":null,"DbiLastModified":null,"SupportAssociateId":0,"SupportPersonId":0,"SupportLanguageId":0,"TicketPriorityId":0,"TzLocationId":0,"MotherId":0,"UserdefId":0,"Userdef2Id":0,"_Links":{"Self":"http://127.0.0.1:18080/api/v1/Contact/1","Archive":"http://127.0.0.1:18080/api/v1/Contact/1"}}"#;
    Bytes::from(format!("{{\"ContactId\":{id}{REST}"))
}

#[derive(Default)]
struct RawResult {
    ok: u64,
    failed: u64,
    posts_per_sec: Option<f64>,
}

/// POSTs the bodies to the receiver over `connections` keep-alive connections (one client, so
/// one pooled connection, per worker) for `duration`.
async fn raw_baseline(
    receiver: &Receiver,
    bodies: &[RawBody],
    connections: usize,
    duration: Duration,
) -> anyhow::Result<RawResult> {
    let uri: hyper::Uri = "/raw".parse()?;
    let requests = Arc::new(raw_requests(bodies));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..connections {
        let (uri, requests, ok, failed) =
            (uri.clone(), requests.clone(), ok.clone(), failed.clone());
        let addr = receiver.addr;
        workers.spawn(async move {
            let mut conn: Option<Conn> = None;
            let mut n = w;
            while Instant::now() < deadline {
                let request = &requests[n % requests.len()];
                n += 1;
                let Ok(req) = request.to(uri.clone()) else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    break;
                };
                let c = match Conn::in_slot(&mut conn, addr).await {
                    Ok(c) => c,
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                };
                match c.send(req).await {
                    Ok((StatusCode::OK, _)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        conn = None;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let ok = ok.load(Ordering::SeqCst);
    let received = receiver.tally.raw.load(Ordering::SeqCst);
    if ok == 0 {
        bail!("the raw baseline got no 200 from its own receiver ({received} requests arrived)");
    }
    Ok(RawResult {
        ok,
        failed: failed.load(Ordering::SeqCst),
        posts_per_sec: Some(round(ok as f64 / elapsed, 1)),
    })
}

// ─── the server child and its API ────────────────────────────────────────────────────────────

/// The webhooks' secret, so deliveries are signed as in production.
const BENCH_SECRET: &str = "crmhooks-bench-secret";

/// `crmhooks serve` as a child process.
struct ServerChild {
    child: tokio::process::Child,
    pid: u32,
    base: String,
    /// From spawn to the listening line.
    ready: Duration,
    /// Its stderr.
    log: PathBuf,
    /// Largest VmRSS sampled, kB.
    peak_kb: Arc<AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
}

impl ServerChild {
    /// Starts `crmhooks serve --dev` on port 0 and waits for its listening line. `api_only`
    /// starts a node that stores and queues events but delivers nothing.
    async fn spawn(db_url: &str, key: &str, log: &Path, api_only: bool) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the crmhooks executable")?;
        let log = &match std::env::var_os("CRMHOOKS_BENCH_KEEP_LOGS") {
            Some(dir) => std::path::Path::new(&dir).join(log.file_name().unwrap_or_default()),
            None => log.to_path_buf(),
        };
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.args([
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--database",
            db_url,
        ])
        .env("CRMHOOKS_API_KEY", key)
        // CRMHOOKS_BENCH_SERVER_LOG sets the server's RUST_LOG (e.g. sqlx=debug to see every
        // statement and its time); CRMHOOKS_BENCH_KEEP_LOGS=DIR keeps the logs there.
        .env(
            "RUST_LOG",
            std::env::var("CRMHOOKS_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .env(
            "CRMHOOKS_DELIVERY_ENABLED",
            if api_only { "false" } else { "true" },
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true);
        if api_only {
            cmd.env("CRMHOOKS_TEST_ON_SAVE", "false");
        }
        let started = Instant::now();
        let mut child = cmd.spawn().context("cannot start the server child")?;
        let pid = child.id().context("the server child exited at once")?;
        let base = listening_at(&mut child, "server", "crmhooks listening on ", log).await?;
        let ready = started.elapsed();
        let peak_kb = Arc::new(AtomicU64::new(0));
        let peak = peak_kb.clone();
        let sampler = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                match proc_memory_kb(pid) {
                    Some(kb) => {
                        peak.fetch_max(kb, Ordering::Relaxed);
                    }
                    None => break,
                }
            }
        });
        Ok(ServerChild {
            child,
            pid,
            base,
            ready,
            log: log.to_owned(),
            peak_kb,
            sampler,
        })
    }

    /// Peak resident memory so far (VmHWM, or the largest VmRSS sampled), kB; None off Linux.
    fn peak_rss_kb(&self) -> Option<u64> {
        if let Some(kb) = proc_memory_kb(self.pid) {
            self.peak_kb.fetch_max(kb, Ordering::Relaxed);
        }
        Some(self.peak_kb.load(Ordering::Relaxed)).filter(|&kb| kb > 0)
    }

    /// User plus system CPU seconds so far.
    fn cpu_seconds(&self) -> Option<f64> {
        proc_cpu_seconds(self.pid)
    }

    /// SIGTERM, then waits for a graceful exit (SIGKILL after 30 s).
    async fn stop(mut self) {
        self.sampler.abort();
        let term = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        if !term.is_ok_and(|s| s.success()) {
            let _ = self.child.start_kill();
        }
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Waits for a child's first line on stdout, `{prefix}{base URL}`; its base URL. Goes on
/// reading the rest, so that a chatty child never blocks on a full pipe.
async fn listening_at(
    child: &mut tokio::process::Child,
    what: &str,
    prefix: &str,
    log: &Path,
) -> anyhow::Result<String> {
    let stdout = child
        .stdout
        .take()
        .with_context(|| format!("no stdout from the {what} child"))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = match tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await {
        Ok(Ok(Some(line))) => line,
        Ok(_) => bail!(
            "the {what} child exited before it listened; its log:\n{}",
            log_tail(log)
        ),
        Err(_) => bail!(
            "the {what} child did not listen within 60 s; its log:\n{}",
            log_tail(log)
        ),
    };
    let base = line
        .strip_prefix(prefix)
        .with_context(|| format!("unexpected first line from the {what} child: {line:?}"))?
        .trim()
        .to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(base)
}

/// The last lines of a log file, for error messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    if tail.is_empty() {
        "(empty)".to_owned()
    } else {
        tail
    }
}

/// max(VmHWM, VmRSS) of a process from `/proc/PID/status`, kB.
fn proc_memory_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .filter(|l| l.starts_with("VmHWM:") || l.starts_with("VmRSS:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .max()
}

/// utime + stime of a process from `/proc/PID/stat`, in seconds (CLK_TCK taken as 100).
fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces; fields 14 and 15
    // (utime, stime) are the 12th and 13th after it.
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// CPU time of the whole machine, all CPUs together, in seconds (USER_HZ taken as 100, as for
/// the processes).
#[derive(Clone, Copy, Debug, PartialEq)]
struct MachineCpu {
    total: f64,
    /// idle and iowait.
    idle: f64,
    steal: f64,
}

impl MachineCpu {
    /// Time spent between `earlier` and this reading.
    fn since(self, earlier: MachineCpu) -> MachineCpu {
        MachineCpu {
            total: self.total - earlier.total,
            idle: self.idle - earlier.idle,
            steal: self.steal - earlier.steal,
        }
    }

    /// Time the CPUs ran something (neither idle nor taken by the hypervisor).
    fn busy(self) -> f64 {
        self.total - self.idle - self.steal
    }
}

/// The machine's CPU time now, from `/proc/stat`.
fn machine_cpu() -> Option<MachineCpu> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The first line of `/proc/stat`: `cpu user nice system idle iowait irq softirq steal guest
/// guest_nice` (guest time is counted in user time already).
fn parse_proc_stat(text: &str) -> Option<MachineCpu> {
    let line = text.lines().next()?;
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = fields
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let [user, nice, system, idle, iowait, irq, softirq, steal] = v[..] else {
        return None;
    };
    let s = |j: u64| j as f64 / 100.0;
    Some(MachineCpu {
        total: s(user + nice + system + idle + iowait + irq + softirq + steal),
        idle: s(idle + iowait),
        steal: s(steal),
    })
}

/// The server's API, as the load's clients see it: where it listens and the key. Each client
/// talks to it over a connection of its own ([`Api::connect`]).
#[derive(Clone)]
pub(crate) struct Api {
    addr: SocketAddr,
    bearer: hyper::header::HeaderValue,
}

/// One API client: the API and its keep-alive connection, opened at the first call and again
/// after a failed one.
pub(crate) struct ApiConn {
    api: Api,
    conn: Option<Conn>,
}

/// The part of a created contact the load needs.
#[derive(serde::Deserialize)]
struct CreatedContact {
    #[serde(rename = "ContactId")]
    contact_id: i64,
}

impl Api {
    /// The API at `base` (`http://IP:PORT`, as the server child prints it) with `key`.
    pub(crate) fn new(base: &str, key: &str) -> anyhow::Result<Self> {
        let (addr, _) = loopback_url(base)?;
        Ok(Api {
            addr,
            bearer: hyper::header::HeaderValue::from_str(&format!("Bearer {key}"))
                .context("the API key is not a valid header value")?,
        })
    }

    /// A client of its own (connected at its first call).
    pub(crate) fn connect(&self) -> ApiConn {
        ApiConn {
            api: self.clone(),
            conn: None,
        }
    }
}

impl ApiConn {
    /// One JSON call; the response body.
    async fn call(
        &mut self,
        method: hyper::Method,
        path: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<Bytes> {
        let req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(hyper::header::AUTHORIZATION, self.api.bearer.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .with_context(|| format!("{method} {path}"))?;
        let conn = Conn::in_slot(&mut self.conn, self.api.addr).await?;
        let answer = tokio::time::timeout(Duration::from_secs(60), conn.send(req))
            .await
            .with_context(|| format!("{method} {path}: no answer in 60 s"))
            .and_then(|a| a.with_context(|| format!("{method} {path}")));
        let (status, text) = match answer {
            Ok(answer) => answer,
            Err(e) => {
                // The connection may be mid-answer: the next call opens another.
                self.conn = None;
                return Err(e);
            }
        };
        if !status.is_success() {
            bail!(
                "{method} {path} answered {status}: {}",
                String::from_utf8_lossy(&text)
            );
        }
        Ok(text)
    }

    /// The load's webhooks: subscribed to what the load fires, each its own path, signed.
    async fn create_webhooks(&mut self, receiver: &Receiver, n: usize) -> anyhow::Result<()> {
        self.define_webhooks(
            receiver,
            n,
            ("bench", "hook"),
            &["contact.created", "contact.changed"],
            true,
        )
        .await
        .context("cannot create the benchmark's webhooks")
    }

    /// Webhooks that exist but receive nothing from the load.
    async fn create_idle_webhooks(&mut self, receiver: &Receiver, n: usize) -> anyhow::Result<()> {
        self.define_webhooks(receiver, n, ("idle", "idle"), &["contact.deleted"], false)
            .await
            .context("cannot create the idle webhooks")
    }

    /// Defines `n` Active webhooks named `{name} k` at `/{path}/k` on the receiver, k = 1..n.
    async fn define_webhooks(
        &mut self,
        receiver: &Receiver,
        n: usize,
        (name, path): (&str, &str),
        events: &[&str],
        signed: bool,
    ) -> anyhow::Result<()> {
        for k in 1..=n {
            let mut body = json!({
                "Name": format!("{name} {k}"),
                "Events": events,
                "TargetUrl": receiver.url(&format!("/{path}/{k}")),
            });
            if signed {
                body["Secret"] = json!(BENCH_SECRET);
            }
            self.call(
                hyper::Method::POST,
                "/api/v1/Webhook",
                serde_json::to_vec(&body)?,
            )
            .await?;
        }
        Ok(())
    }

    /// Creates a contact; its id.
    pub(crate) async fn create_contact(&mut self, name: &str) -> anyhow::Result<i64> {
        let body = serde_json::to_vec(&json!({ "Name": name }))?;
        let answer = self
            .call(hyper::Method::POST, "/api/v1/Contact", body)
            .await?;
        let contact: CreatedContact = serde_json::from_slice(&answer)
            .context("POST /api/v1/Contact answered no JSON with a ContactId")?;
        Ok(contact.contact_id)
    }

    pub(crate) async fn change_department(
        &mut self,
        id: i64,
        department: &str,
    ) -> anyhow::Result<()> {
        let body = serde_json::to_vec(&json!({ "Department": department }))?;
        self.call(hyper::Method::PATCH, &format!("/api/v1/Contact/{id}"), body)
            .await
            .map(drop)
    }
}

/// Committed events and failed calls of the load.
#[derive(Default)]
struct LoadTally {
    committed: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl LoadTally {
    fn error(&self, e: anyhow::Error) {
        self.errors.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert_with(|| format!("{e:#}"));
        }
    }

    fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|f| f.clone())
    }
}

/// Spaces requests evenly at `rate` per second in total: each request takes the next slot.
struct Pacer {
    start: tokio::time::Instant,
    rate: f64,
    next: AtomicU64,
}

impl Pacer {
    fn new(rate: f64) -> Self {
        Pacer {
            start: tokio::time::Instant::now(),
            rate,
            next: AtomicU64::new(0),
        }
    }

    async fn wait(&self) {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let at = self.start + Duration::from_secs_f64(n as f64 / self.rate);
        tokio::time::sleep_until(at).await;
    }
}

/// Runs `--clients` API clients until `deadline`.
async fn run_clients(
    args: &BenchArgs,
    api: &Api,
    load: &Arc<LoadTally>,
    deadline: Instant,
    pacer: Option<Arc<Pacer>>,
) {
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..args.clients {
        clients.spawn(client_loop(
            api.clone(),
            load.clone(),
            i,
            deadline,
            pacer.clone(),
            args.changes,
        ));
    }
    while clients.join_next().await.is_some() {}
}

/// One API client: create a contact, change it `changes` times, repeat until `deadline`.
async fn client_loop(
    api: Api,
    load: Arc<LoadTally>,
    client: usize,
    deadline: Instant,
    pacer: Option<Arc<Pacer>>,
    changes: usize,
) {
    let pace = || async {
        if let Some(p) = &pacer {
            p.wait().await;
        }
        Instant::now() < deadline
    };
    let mut api = api.connect();
    let mut n = 0u64;
    while pace().await {
        n += 1;
        let id = match api.create_contact(&format!("bench {client}-{n}")).await {
            Ok(id) => {
                load.committed.fetch_add(1, Ordering::SeqCst);
                id
            }
            Err(e) => {
                load.error(e);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        for j in 0..changes {
            if !pace().await {
                return;
            }
            match api.change_department(id, &format!("d{j}")).await {
                Ok(()) => {
                    load.committed.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => {
                    load.error(e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

/// The progress bar on stderr (indicatif hides it when stderr is not a terminal).
struct Progress {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
    expected: Arc<AtomicU64>,
}

impl Progress {
    /// A bar over the load's milliseconds, with events and deliveries so far.
    fn start(total_ms: u64, load: Arc<LoadTally>, tally: Arc<Tally>, webhooks: u64) -> Self {
        let bar = ProgressBar::new(total_ms);
        if let Ok(style) = ProgressStyle::with_template("{spinner} [{bar:30}] {elapsed:>4} {msg}") {
            bar.set_style(style.progress_chars("=> "));
        }
        let expected = Arc::new(AtomicU64::new(0));
        let (b, exp) = (bar.clone(), expected.clone());
        let started = Instant::now();
        let ticker = tokio::spawn(async move {
            loop {
                let committed = load.committed.load(Ordering::Relaxed);
                let delivered = tally.deliveries.load(Ordering::Relaxed);
                let expected = exp.load(Ordering::Relaxed);
                if expected == 0 {
                    b.set_position((started.elapsed().as_millis() as u64).min(total_ms));
                    b.set_message(format!(
                        "load: {committed} events committed, {delivered} of {} delivered",
                        committed * webhooks
                    ));
                } else {
                    b.set_message(format!("drain: {delivered} of {expected} delivered"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Progress {
            bar,
            ticker,
            expected,
        }
    }

    /// A plain counting bar.
    fn start_count(total: u64, what: &str) -> ProgressBar {
        let bar = ProgressBar::new(total);
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {per_sec} {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_owned());
        bar
    }

    fn draining(&self, expected: u64) {
        self.bar.set_position(self.bar.length().unwrap_or(0));
        self.expected.store(expected.max(1), Ordering::Relaxed);
    }

    fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

// ─── the database ────────────────────────────────────────────────────────────────────────────

/// The database the server children use.
struct BenchDatabase {
    url: String,
    /// PostgreSQL: the admin URL and the created database, dropped at the end.
    postgres: Option<(String, String)>,
    /// A SQLite file the user named (kept); None for the temporary one.
    user_file: Option<PathBuf>,
}

impl BenchDatabase {
    async fn prepare(url: Option<&str>, dir: &Path) -> anyhow::Result<Self> {
        let Some(url) = url else {
            return Ok(BenchDatabase {
                url: format!("sqlite://{}", dir.join("bench.db").display()),
                postgres: None,
                user_file: None,
            });
        };
        if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.trim_start_matches("//");
            let path = PathBuf::from(path.split('?').next().unwrap_or(path));
            if path.exists() {
                bail!(
                    "{} exists: bench needs a new database file (or none, for a temporary one)",
                    path.display()
                );
            }
            return Ok(BenchDatabase {
                url: url.to_owned(),
                postgres: None,
                user_file: Some(path),
            });
        }
        if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            use sqlx::Connection as _;
            let name = format!("crmhooks_bench_{}", uuid::Uuid::new_v4().simple());
            let mut conn = sqlx::PgConnection::connect(url)
                .await
                .context("cannot connect to the PostgreSQL admin URL")?;
            sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
                .execute(&mut conn)
                .await
                .with_context(|| format!("cannot create database {name}"))?;
            let _ = conn.close().await;
            let mut bench_url = url::Url::parse(url).context("not a valid postgres:// URL")?;
            bench_url.set_path(&format!("/{name}"));
            return Ok(BenchDatabase {
                url: bench_url.to_string(),
                postgres: Some((url.to_owned(), name)),
                user_file: None,
            });
        }
        bail!("unsupported --database {url:?}: use sqlite://PATH or postgres://…")
    }

    /// Stores `n` contacts of the benchmark's tenant in one statement (no events: this is data
    /// that was there before).
    async fn preload_contacts(&self, n: u64) -> anyhow::Result<()> {
        use sqlx::Connection as _;
        let n = i64::try_from(n).context("--preload-contacts is too large")?;
        let now = crmhooks_store::now_ticks();
        let cols = "tenant_id, name, business_idx, category_idx, country_id, registered_associate_id, registered, updated_associate_id, updated, \"updatedCount\", department";
        if self.postgres.is_some() {
            let mut conn = sqlx::PgConnection::connect(&self.url).await?;
            sqlx::query(&format!(
                "INSERT INTO contact ({cols}) SELECT (SELECT MIN(tenant_id) FROM api_key), 'Stored ' || i, 0, 0, 0, 1, $1, 1, $1, 0, 'Sales' \
                 FROM generate_series(1, $2) AS i"
            ))
            .bind(now)
            .bind(n)
            .execute(&mut conn)
            .await
            .context("cannot store the preloaded contacts")?;
            let _ = sqlx::query("ANALYZE").execute(&mut conn).await;
            let _ = conn.close().await;
        } else {
            let mut conn = sqlx::SqliteConnection::connect(&self.url).await?;
            sqlx::query(&format!(
                "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?2) \
                 INSERT INTO contact ({cols}) SELECT (SELECT MIN(tenant_id) FROM api_key), 'Stored ' || i, 0, 0, 0, 1, ?1, 1, ?1, 0, 'Sales' FROM seq"
            ))
            .bind(now)
            .bind(n)
            .execute(&mut conn)
            .await
            .context("cannot store the preloaded contacts")?;
            // Copy them into the database file now, not during the measurement.
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut conn)
                .await
                .context("cannot checkpoint the preloaded contacts")?;
            let _ = conn.close().await;
        }
        Ok(())
    }

    fn kind(&self) -> &'static str {
        match (&self.postgres, &self.user_file) {
            (Some(_), _) => "PostgreSQL",
            (None, Some(_)) => "SQLite",
            (None, None) => "SQLite (temporary file)",
        }
    }

    /// Drops the PostgreSQL database this run created.
    async fn cleanup(&self) -> anyhow::Result<()> {
        use sqlx::Connection as _;
        let Some((admin, name)) = &self.postgres else {
            return Ok(());
        };
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .with_context(|| format!("cannot connect to drop database {name}"))?;
        // FORCE (PostgreSQL 13+) ends connections a killed child may have left behind.
        let forced = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut conn)
            .await;
        if forced.is_err() {
            sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\""))
                .execute(&mut conn)
                .await
                .with_context(|| format!("cannot drop database {name}"))?;
        }
        let _ = conn.close().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    /// A run with these figures.
    fn run(events: f64, raw: f64, p99: f64, max: f64, rss: f64, delivered: u64) -> Report {
        let args = Cli::parse_from(["bench", "--repeat", "3"]).bench;
        let raw_result = RawResult {
            ok: 10,
            failed: 0,
            posts_per_sec: Some(raw),
        };
        let mut r = Report::new(&args, "SQLite", &raw_result, 744.0);
        r.events_per_sec = events;
        r.deliveries_per_sec = Some(events);
        r.ratio = Some(events / raw);
        r.p99_ms = Some(p99);
        r.max_ms = Some(max);
        r.peak_rss_mb = Some(rss);
        r.delivered = delivered;
        r.expected = 100;
        r
    }

    /// Several runs: medians of rates, ratios (each run's own) and percentiles, the worst max
    /// latency and RSS, counts summed, and each run kept; one run stays as it is.
    #[test]
    fn repeated_runs_report_medians() {
        let runs = vec![
            run(5_000.0, 50_000.0, 30.0, 50.0, 44.0, 100),
            run(9_000.0, 45_000.0, 20.0, 90.0, 41.0, 100),
            run(6_000.0, 40_000.0, 25.0, 40.0, 43.0, 99),
        ];
        let m = Report::median(runs).unwrap();
        assert_eq!(m.repeat, 3);
        assert_eq!(m.runs.len(), 3);
        assert_eq!(m.events_per_sec, 6_000.0);
        assert_eq!(m.raw_posts_per_sec, Some(45_000.0));
        // 0.1, 0.2, 0.15: the median ratio, not 6,000 / 45,000.
        assert_eq!(m.ratio, Some(0.15));
        assert_eq!(m.p99_ms, Some(25.0));
        assert_eq!(m.max_ms, Some(90.0));
        assert_eq!(m.peak_rss_mb, Some(44.0));
        assert_eq!((m.delivered, m.expected), (299, 300));
        assert!(
            m.verdict().is_err(),
            "a delivery missing in one run fails the whole"
        );
        let two = Report::median(vec![
            run(5_000.0, 50_000.0, 30.0, 50.0, 44.0, 100),
            run(7_000.0, 50_000.0, 20.0, 50.0, 44.0, 100),
        ])
        .unwrap();
        assert_eq!((two.events_per_sec, two.p99_ms), (6_000.0, Some(25.0)));
        let one = Report::median(vec![run(5_000.0, 50_000.0, 30.0, 50.0, 44.0, 100)]).unwrap();
        assert_eq!((one.repeat, one.runs.len(), one.ratio), (1, 0, Some(0.1)));
        assert!(Report::median(Vec::new()).is_err());
    }

    #[test]
    fn timestamps_parse_like_the_time_crate() {
        for s in [
            "2018-04-24T07:50:50.6812131Z",
            "2026-02-28T23:59:59.9999999Z",
            "2024-02-29T00:00:00Z",
            "1970-01-01T00:00:00.1Z",
            "2000-03-01T12:34:56.123456789Z",
        ] {
            let want =
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                    .map(|t| (t.unix_timestamp_nanos() / 1000) as i64)
                    .ok();
            assert_eq!(parse_utc_micros(s.as_bytes()), want, "{s}");
        }
        for bad in [
            "2018-04-24T07:50:50",
            "2018-13-24T07:50:50Z",
            "2018-04-24 07:50:50Z",
            "x",
            "2018-04-24T07:50:50.Z",
        ] {
            assert_eq!(parse_utc_micros(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn the_timestamp_is_found_in_a_real_body() {
        let bodies = realistic_bodies(1);
        assert_eq!(bodies.len(), 2);
        for b in &bodies {
            let ts = find_timestamp(&b.body).and_then(parse_utc_micros);
            let now = unix_micros_now();
            assert!(ts.is_some_and(|t| (now - t).abs() < 60_000_000));
            assert!(b.body.len() > 500, "{} bytes", b.body.len());
        }
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&v, 50.0), Some(50.0));
        assert_eq!(percentile_ms(&v, 99.0), Some(99.0));
        assert_eq!(percentile_ms(&[7000], 99.0), Some(7.0));
        assert_eq!(percentile_ms(&[], 50.0), None);
    }

    #[test]
    fn the_machine_cpu_line_is_parsed_and_differenced() {
        let a =
            parse_proc_stat("cpu  100 5 50 800 20 3 2 10 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n").unwrap();
        assert_eq!(
            a,
            MachineCpu {
                total: 9.9,
                idle: 8.2,
                steal: 0.1
            }
        );
        let b = parse_proc_stat("cpu  300 5 150 900 20 3 2 30 0 0").unwrap();
        let d = b.since(a);
        assert!((d.total - 4.2).abs() < 1e-9, "{d:?}");
        assert!((d.idle - 1.0).abs() < 1e-9, "{d:?}");
        assert!((d.steal - 0.2).abs() < 1e-9, "{d:?}");
        assert!((d.busy() - 3.0).abs() < 1e-9, "{d:?}");
        assert_eq!(parse_proc_stat("intr 1 2 3"), None);
        assert_eq!(parse_proc_stat("cpu 1 2 x 4 5 6 7 8"), None);
        assert_eq!(parse_proc_stat("cpu 1 2 3"), None);
        let mut r = run(100.0, 1000.0, 1.0, 2.0, 30.0, 100);
        r.cpu_seconds = Some(1.5);
        r.bench_cpu_seconds = Some(0.5);
        r.machine(Some(a), Some(b));
        assert_eq!(r.machine_idle_share, Some(0.238));
        assert_eq!(r.machine_steal_share, Some(0.048));
        assert_eq!(r.other_cpu_seconds, Some(1.0));
    }

    #[test]
    fn cpu_and_memory_of_this_process_are_readable() {
        let pid = std::process::id();
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(proc_cpu_seconds(pid).is_some());
            assert!(machine_cpu().is_some_and(|m| m.total > 0.0 && m.idle >= 0.0));
            assert!(proc_memory_kb(pid).is_some_and(|kb| kb > 0));
        }
    }
}
