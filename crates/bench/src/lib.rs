//! `crmhooks bench`: end-to-end throughput and commit-to-delivery latency of a real server, with
//! a raw HTTP baseline measured in the same run against the same receiver.
//!
//! The server runs as a child process of the running binary (`crmhooks serve`), so its memory
//! and CPU are its own and can be read from `/proc`. The receiver is the bare hyper
//! [`CountingReceiver`](crmhooks_listen::counting::CountingReceiver) inside this process; it
//! reads the commit time from each body's `Timestamp` without parsing the JSON. The raw baseline
//! POSTs bodies of the same shapes and sizes with hyper's own connection-level client (the
//! fastest stack here) over as many keep-alive connections as the dispatcher may open to one
//! webhook, so `ratio` says how close the whole server (API, store, outbox, dispatcher) comes to
//! what the loopback, the receiver and this machine allow. The relay floor
//! (`crmhooks bench-relay`, [`run_relay`]) is the same load through a bare relay that makes the
//! same HTTP exchanges and nothing else: the most this load's HTTP alone allows.
//!
//! The modules, in the order a run uses them: `args` (the flags), `database` (a new database
//! per run), `raw` (the baseline) over `conn` (one hyper connection), `children` (the server and
//! relay processes), `load` (the API clients, through `crmhooks_client`'s routes), `phases` (the
//! relay floor, the steady load, the backlog), `machine` (`/proc`), `report` and `table`.

mod args;
mod children;
mod conn;
mod database;
mod load;
mod machine;
mod phases;
mod progress;
mod raw;
mod relay;
mod report;
mod table;

use anyhow::Context as _;

pub use args::BenchArgs;
pub use relay::{run as run_relay, RelayArgs};

use database::BenchDatabase;
use report::Report;

/// The webhooks' secret, so deliveries are signed as in production.
const BENCH_SECRET: &str = "crmhooks-bench-secret";

/// The tenant of the benchmark's API key (the server child is told so): its contacts are
/// preloaded there, and the raw baseline's bodies name it.
const BENCH_TENANT: &str = "Default";

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
        let result = phases::measure(&args, &db, dir.path()).await;
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
