//! A webhook receiver for SuperOffice-style integrations: it verifies signatures, records and
//! prints what arrives, flags duplicate `EventId`s, and answers a chosen status (or a script of
//! statuses) so retries can be exercised.
//!
//! It runs behind `crmhooks listen` ([`run`]) and, as a library ([`Receiver`]), in tests, demos and
//! benchmarks. The benchmark's own receiver, which only counts and times deliveries, is
//! [`counting::CountingReceiver`].
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use crmhooks_listen::{Receiver, ReceiverConfig, Verdict};
//!
//! let config = ReceiverConfig { secret: Some("s3cret".into()), ..ReceiverConfig::default() };
//! let receiver = Receiver::start("127.0.0.1:0".parse()?, config).await?;
//! receiver.script([500, 500]); // fail twice, then answer 200
//! // ... point a webhook at receiver.url("/hook") and trigger an event ...
//! let got = receiver.wait_for(3, Duration::from_secs(10)).await;
//! assert!(got.iter().all(|r| r.verdict == Verdict::Valid));
//! assert_eq!(got[2].retry(), Some(2));
//! receiver.shutdown().await;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod counting;
mod receiver;
mod record;

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;

pub use receiver::{Receiver, ReceiverConfig};
pub use record::{Received, Verdict};

/// `crmhooks listen`: receive webhooks, verify their signatures, print them, answer a status.
#[derive(clap::Args, Debug, Clone)]
pub struct ListenArgs {
    /// Port to listen on (0 = any free port; the first line printed says which).
    #[arg(long, default_value_t = 8088)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Shared secret to verify X-SuperOffice-Signature with; without it, signatures are not
    /// checked. With it, unsigned or badly signed requests are answered 401.
    #[arg(long, env = "CRMHOOKS_LISTEN_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Answer webhook calls with this status instead of 200 (also answers test calls).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(100..=599))]
    pub status: u16,
    /// Answer the first N webhook calls with 500, then --status (test calls are not failed,
    /// so a webhook can still be saved).
    #[arg(long, default_value_t = 0)]
    pub fail_first: u64,
    /// Append one JSON line per request to this file: received_at, method, path, headers, body,
    /// verdict, duplicate, status.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print only the "listening on" line, not each request.
    #[arg(long)]
    pub quiet: bool,
    /// Refuse bodies larger than this many bytes with 413.
    #[arg(long, default_value_t = 1_048_576)]
    pub max_body: usize,
}

impl ListenArgs {
    /// The receiver configuration these arguments describe.
    pub fn config(&self) -> ReceiverConfig {
        ReceiverConfig {
            secret: self.secret.clone(),
            status: self.status,
            fail_first: self.fail_first,
            out: self.out.clone(),
            print: !self.quiet,
            max_body: self.max_body,
        }
    }
}

/// Runs `crmhooks listen`: binds, prints `listening on http://HOST:PORT` as the first line of
/// stdout, then one line per request, until ctrl-c or SIGTERM.
pub async fn run(args: ListenArgs) -> anyhow::Result<()> {
    let addr = tokio::net::lookup_host((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot resolve --host {}", args.host))?
        .next()
        .with_context(|| format!("--host {} resolves to no address", args.host))?;
    let receiver = Receiver::start(addr, args.config()).await?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on http://{}", receiver.addr())?;
        stdout.flush()?;
    }
    if !args.quiet {
        let checking = match args.secret.as_deref() {
            Some(s) if !s.is_empty() => "signatures checked (401 when missing or wrong)",
            _ => "signatures not checked (no --secret)",
        };
        eprintln!(
            "crmhooks listen: {checking}; answering {}{}; ctrl-c to stop",
            args.status,
            if args.fail_first > 0 {
                format!(
                    " after failing the first {} calls with 500",
                    args.fail_first
                )
            } else {
                String::new()
            }
        );
    }
    shutdown_signal().await;
    let (count, duplicates) = (receiver.count(), receiver.duplicates());
    receiver.shutdown().await;
    if !args.quiet {
        eprintln!(
            "crmhooks listen: {count} requests received, {duplicates} with a repeated EventId"
        );
    }
    Ok(())
}

/// Resolves on ctrl-c or (on Unix) SIGTERM. If a handler cannot be installed, that signal is
/// simply not awaited.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
