//! What a run measured: the report, the medians of several runs, and the verdict.

use std::sync::atomic::Ordering;

use anyhow::{bail, Context as _};
use crmhooks_listen::counting::Tally;
use serde::Serialize;

use crate::args::BenchArgs;
use crate::load::LoadTally;
use crate::machine::CpuMark;
use crate::raw::RawResult;

/// Everything measured, with the parameters; the `--json` object.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) mode: &'static str,
    pub(crate) database: &'static str,
    pub(crate) clients: usize,
    pub(crate) changes_per_contact: usize,
    pub(crate) webhooks: usize,
    pub(crate) seconds: f64,
    pub(crate) rate: Option<f64>,
    pub(crate) connections: usize,
    pub(crate) raw_seconds: f64,
    pub(crate) drain_timeout: f64,
    pub(crate) backlog: Option<u64>,
    /// Events committed per second of load (backlog mode: of the pre-fill).
    pub(crate) events_per_sec: f64,
    pub(crate) deliveries_per_sec: Option<f64>,
    pub(crate) raw_posts_per_sec: Option<f64>,
    pub(crate) ratio: Option<f64>,
    /// The relay floor (`--relay-seconds`): events and deliveries per second of the same load
    /// through the bare relay, its deliveries' ratio to the raw baseline, the relay's CPU per
    /// event, and the server's deliveries as a share of the relay's.
    pub(crate) relay_seconds: f64,
    pub(crate) relay_events_per_sec: Option<f64>,
    pub(crate) relay_deliveries_per_sec: Option<f64>,
    pub(crate) relay_ratio: Option<f64>,
    pub(crate) relay_cpu_us_per_event: Option<f64>,
    pub(crate) of_relay: Option<f64>,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) max_ms: Option<f64>,
    pub(crate) peak_rss_mb: Option<f64>,
    pub(crate) cpu_seconds: Option<f64>,
    /// Server CPU per committed event, microseconds (load plus drain).
    pub(crate) cpu_us_per_event: Option<f64>,
    /// Contacts stored before the load, and idle webhook definitions.
    pub(crate) preload_contacts: u64,
    pub(crate) idle_webhooks: usize,
    /// Seconds the CPU figure covers (load plus drain, or the backlog drain).
    pub(crate) window_seconds: f64,
    /// CPU seconds of this process (clients and receiver) over the same window: both share the
    /// machine with the server.
    pub(crate) bench_cpu_seconds: Option<f64>,
    /// The whole machine over the same window (`/proc/stat`): the share of its CPU time left
    /// idle, the share the hypervisor took (steal), and the CPU seconds of every process but
    /// the server and this one (PostgreSQL's backends, for one).
    pub(crate) machine_idle_share: Option<f64>,
    pub(crate) machine_steal_share: Option<f64>,
    pub(crate) other_cpu_seconds: Option<f64>,
    /// On PostgreSQL: the CPU seconds of the local database server's processes over the same
    /// window, and per committed event, microseconds (what the database costs an event).
    pub(crate) db_cpu_seconds: Option<f64>,
    pub(crate) db_cpu_us_per_event: Option<f64>,
    /// Server nodes sharing the database (`--nodes`).
    pub(crate) nodes: usize,
    pub(crate) drain_seconds: f64,
    pub(crate) drain_per_sec: Option<f64>,
    pub(crate) backlog_peak_rss_mb: Option<f64>,
    pub(crate) committed: u64,
    pub(crate) api_errors: u64,
    pub(crate) first_api_error: Option<String>,
    pub(crate) delivered: u64,
    pub(crate) expected: u64,
    pub(crate) raw_posts: u64,
    pub(crate) raw_errors: u64,
    pub(crate) raw_body_bytes: f64,
    pub(crate) delivery_body_bytes: Option<f64>,
    pub(crate) server_start_seconds: f64,
    /// With `--repeat`: how many runs the figures above are the medians of, and each run's.
    pub(crate) repeat: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) runs: Vec<RunFigures>,
}

/// The main figures of one run of several (`--repeat`).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct RunFigures {
    pub(crate) events_per_sec: f64,
    pub(crate) deliveries_per_sec: Option<f64>,
    pub(crate) drain_per_sec: Option<f64>,
    pub(crate) raw_posts_per_sec: Option<f64>,
    pub(crate) ratio: Option<f64>,
    pub(crate) relay_deliveries_per_sec: Option<f64>,
    pub(crate) relay_ratio: Option<f64>,
    pub(crate) of_relay: Option<f64>,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) peak_rss_mb: Option<f64>,
    pub(crate) cpu_us_per_event: Option<f64>,
    pub(crate) db_cpu_us_per_event: Option<f64>,
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
    pub(crate) fn new(
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
            db_cpu_seconds: None,
            db_cpu_us_per_event: None,
            nodes: args.nodes,
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
    pub(crate) fn median(mut runs: Vec<Report>) -> anyhow::Result<Report> {
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
                db_cpu_us_per_event: r.db_cpu_us_per_event,
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
            db_cpu_seconds: med!(db_cpu_seconds),
            db_cpu_us_per_event: med!(db_cpu_us_per_event),
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

    /// This process's and the machine's figures over a window from two marks around it, with
    /// the server's CPU already set.
    pub(crate) fn window_cpu(&mut self, before: CpuMark, after: CpuMark) {
        self.bench_cpu_seconds = after.bench.zip(before.bench).map(|(a, b)| round(a - b, 2));
        let Some(d) = after.machine.zip(before.machine).map(|(a, b)| a.since(b)) else {
            return;
        };
        if d.total <= 0.0 {
            return;
        }
        self.machine_idle_share = Some(round(d.idle / d.total, 3));
        self.machine_steal_share = Some(round(d.steal / d.total, 3));
        let ours = self.cpu_seconds.unwrap_or(0.0) + self.bench_cpu_seconds.unwrap_or(0.0);
        self.other_cpu_seconds = Some(round((d.busy() - ours).max(0.0), 2));
        if self.database == "PostgreSQL" {
            self.db_cpu_seconds = after.db.zip(before.db).map(|(a, b)| round(a - b, 2));
        }
    }

    /// The counts of a run: events committed, deliveries expected and received, failed API
    /// calls, and the average delivery body.
    pub(crate) fn counts(&mut self, committed: u64, expected: u64, load: &LoadTally, t: &Tally) {
        let delivered = t.deliveries();
        self.db_cpu_us_per_event = self
            .db_cpu_seconds
            .filter(|_| committed > 0)
            .map(|c| round(c * 1e6 / committed as f64, 1));
        self.committed = committed;
        self.api_errors = load.errors.load(Ordering::SeqCst);
        self.first_api_error = load.first_error();
        self.delivered = delivered;
        self.expected = expected;
        self.delivery_body_bytes =
            (delivered > 0).then(|| round(t.delivery_bytes() as f64 / delivered as f64, 0));
    }

    /// Ok when every expected delivery arrived and every API call succeeded.
    pub(crate) fn verdict(&self) -> anyhow::Result<()> {
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

/// `measured` as a share of `raw`.
pub(crate) fn ratio(measured: Option<f64>, raw: Option<f64>) -> Option<f64> {
    measured
        .zip(raw)
        .filter(|(_, r)| *r > 0.0)
        .map(|(m, r)| round(m / r, 4))
}

/// `v` rounded to `decimals` after the point.
pub(crate) fn round(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}

/// kB as MB, one decimal.
pub(crate) fn kb_to_mb(kb: u64) -> f64 {
    round(kb as f64 / 1024.0, 1)
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
pub(crate) fn percentile_ms(sorted_us: &[u32], p: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted_us.len()) - 1;
    Some(round(f64::from(sorted_us[i]) / 1000.0, 3))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::machine::MachineCpu;

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
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&v, 50.0), Some(50.0));
        assert_eq!(percentile_ms(&v, 99.0), Some(99.0));
        assert_eq!(percentile_ms(&[7000], 99.0), Some(7.0));
        assert_eq!(percentile_ms(&[], 50.0), None);
    }

    /// This process's CPU and the machine's shares come from two marks; the other processes'
    /// CPU is what the machine spent beyond the server and this process.
    #[test]
    fn the_machine_figures_of_a_window() {
        let a = MachineCpu {
            total: 9.9,
            idle: 8.2,
            steal: 0.1,
        };
        let b = MachineCpu {
            total: 14.1,
            idle: 9.2,
            steal: 0.3,
        };
        let mut r = run(100.0, 1000.0, 1.0, 2.0, 30.0, 100);
        r.cpu_seconds = Some(1.5);
        let mark = |bench, machine| CpuMark {
            bench,
            machine,
            db: None,
        };
        r.window_cpu(mark(Some(2.0), Some(a)), mark(Some(2.5), None));
        assert_eq!(r.bench_cpu_seconds, Some(0.5));
        assert_eq!(r.machine_idle_share, None);
        r.window_cpu(mark(Some(2.0), Some(a)), mark(Some(2.5), Some(b)));
        assert_eq!(r.machine_idle_share, Some(0.238));
        assert_eq!(r.machine_steal_share, Some(0.048));
        assert_eq!(r.other_cpu_seconds, Some(1.0));
    }
}
