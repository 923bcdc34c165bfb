//! The flags of `crmhooks bench`.

use anyhow::bail;

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
    /// Server nodes sharing the database (PostgreSQL only): the load's clients are spread over
    /// them, and each delivers; the figures are of all of them together.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
}

impl BenchArgs {
    /// Refuses values the benchmark cannot run with.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
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
        if self.nodes == 0 {
            bail!("--nodes must be at least 1");
        }
        if self.nodes > 1
            && !self
                .database
                .as_deref()
                .is_some_and(|d| d.starts_with("postgres"))
        {
            bail!("--nodes above 1 needs --database postgres://…: several nodes share a PostgreSQL database (a SQLite file has one server)");
        }
        if self.nodes > 1 && self.backlog.is_some() {
            bail!(
                "--nodes and --backlog do not go together (the backlog mode drains with one node)"
            );
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
