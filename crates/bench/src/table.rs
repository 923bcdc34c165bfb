//! The report as a table on stdout.

use crate::report::Report;

impl Report {
    /// Prints the table: the parameters, each run's figures (with `--repeat`), then the medians.
    pub(crate) fn print(&self) {
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
            if let (Some(c), Some(per)) = (self.db_cpu_seconds, self.db_cpu_us_per_event) {
                println!(
                    "  database           PostgreSQL's processes {c:.2} s of CPU, {per:.0} µs per event{}",
                    if self.nodes > 1 {
                        format!(" ({} nodes)", self.nodes)
                    } else {
                        String::new()
                    }
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
}

/// A figure as the table prints it: `decimals` after the point and `unit`, or "-" when it was
/// not measured.
fn shown(v: Option<f64>, decimals: usize, unit: &str) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}{unit}"))
}
