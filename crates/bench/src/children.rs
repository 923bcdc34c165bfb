//! The child processes of the benchmark, both this same binary: `crmhooks serve` and
//! `crmhooks bench-relay`. Each prints its URL as its first line on stdout and writes its
//! stderr to a log file, whose tail is shown when it fails.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::io::AsyncBufReadExt as _;
use tokio::process::Command;

use crate::machine::{proc_cpu_seconds, proc_memory_kb, CpuMark};
use crate::BENCH_TENANT;

/// A child process of this binary that is listening.
pub(crate) struct Child {
    child: tokio::process::Child,
    pub(crate) pid: u32,
    /// Its URL, `http://IP:PORT`.
    pub(crate) base: String,
    /// From spawn to the listening line.
    pub(crate) ready: Duration,
    /// Its stderr.
    pub(crate) log: PathBuf,
}

/// This binary, to run with other arguments.
fn this_binary() -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("cannot find the crmhooks executable")?;
    Ok(Command::new(exe))
}

impl Child {
    /// Starts `cmd` with its stderr in `log` and waits for its first line on stdout,
    /// `{prefix}{URL}`.
    async fn start(
        mut cmd: Command,
        what: &str,
        prefix: &str,
        log: &Path,
    ) -> anyhow::Result<Child> {
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start the {what} child"))?;
        let pid = child
            .id()
            .with_context(|| format!("the {what} child exited at once"))?;
        let base = listening_at(&mut child, what, prefix, log).await?;
        Ok(Child {
            child,
            pid,
            base,
            ready: started.elapsed(),
            log: log.to_owned(),
        })
    }

    /// `crmhooks bench-relay` relaying each API call to `fanout` webhooks under `target`.
    pub(crate) async fn relay(
        target: &str,
        fanout: usize,
        changes: usize,
        log: &Path,
    ) -> anyhow::Result<Child> {
        let mut cmd = this_binary()?;
        cmd.args([
            "bench-relay",
            "--target",
            target,
            "--fanout",
            &fanout.to_string(),
            "--changes",
            &changes.to_string(),
        ]);
        Child::start(cmd, "relay", "bench-relay listening on ", log).await
    }

    /// Its exit status, once it has exited.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills it (SIGKILL) and waits for it.
    pub(crate) async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, then waits for a graceful exit (SIGKILL after 30 s).
    async fn stop(mut self) {
        let term = Command::new("kill")
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

/// What a server child's [`ServerChild::finish`] read.
pub(crate) struct Finished {
    pub(crate) cpu_seconds: Option<f64>,
    pub(crate) mark: CpuMark,
    pub(crate) peak_rss_kb: Option<u64>,
}

impl Finished {
    /// Several nodes as one: their CPU seconds summed, the largest peak memory of one, the
    /// marks of the last to stop.
    pub(crate) fn of_all(mut all: Vec<Finished>) -> Finished {
        let cpu_seconds = all.iter().map(|f| f.cpu_seconds).sum::<Option<f64>>();
        let peak_rss_kb = all.iter().filter_map(|f| f.peak_rss_kb).max();
        let mark = all.last().map_or_else(CpuMark::now, |f| f.mark);
        all.clear();
        Finished {
            cpu_seconds,
            mark,
            peak_rss_kb,
        }
    }
}

/// `crmhooks serve` as a child process, its memory sampled.
pub(crate) struct ServerChild {
    pub(crate) child: Child,
    /// Largest VmRSS sampled, kB.
    peak_kb: Arc<AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
}

impl ServerChild {
    /// Starts `crmhooks serve --dev` on port 0 with `key` for the benchmark's tenant and waits
    /// for its listening line. `api_only` starts a node that stores and queues events but
    /// delivers nothing.
    pub(crate) async fn spawn(
        db_url: &str,
        key: &str,
        log: &Path,
        api_only: bool,
    ) -> anyhow::Result<Self> {
        let log = &match std::env::var_os("CRMHOOKS_BENCH_KEEP_LOGS") {
            Some(dir) => Path::new(&dir).join(log.file_name().unwrap_or_default()),
            None => log.to_path_buf(),
        };
        let mut cmd = this_binary()?;
        cmd.args([
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--database",
            db_url,
        ])
        .env("CRMHOOKS_API_KEY", key)
        .env("CRMHOOKS_TENANT", BENCH_TENANT)
        // CRMHOOKS_BENCH_SERVER_LOG sets the server's RUST_LOG (e.g. sqlx=debug to see every
        // statement and its time); CRMHOOKS_BENCH_KEEP_LOGS=DIR keeps the logs there.
        .env(
            "RUST_LOG",
            std::env::var("CRMHOOKS_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .env(
            "CRMHOOKS_DELIVERY_ENABLED",
            if api_only { "false" } else { "true" },
        );
        if api_only {
            cmd.env("CRMHOOKS_TEST_ON_SAVE", "false");
        }
        let child = Child::start(cmd, "server", "crmhooks listening on ", log).await?;
        let pid = child.pid;
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
            peak_kb,
            sampler,
        })
    }

    /// Peak resident memory so far (VmHWM, or the largest VmRSS sampled), kB; None off Linux.
    pub(crate) fn peak_rss_kb(&self) -> Option<u64> {
        if let Some(kb) = proc_memory_kb(self.child.pid) {
            self.peak_kb.fetch_max(kb, Ordering::Relaxed);
        }
        Some(self.peak_kb.load(Ordering::Relaxed)).filter(|&kb| kb > 0)
    }

    /// User plus system CPU seconds so far.
    pub(crate) fn cpu_seconds(&self) -> Option<f64> {
        proc_cpu_seconds(self.child.pid)
    }

    /// Stops the server at the end of a measured window, reading first its CPU seconds, this
    /// process's and the machine's counters, and its peak memory.
    pub(crate) async fn finish(self) -> Finished {
        let finished = Finished {
            cpu_seconds: self.cpu_seconds(),
            mark: CpuMark::now(),
            peak_rss_kb: self.peak_rss_kb(),
        };
        self.stop().await;
        finished
    }

    /// SIGTERM, then waits for a graceful exit (SIGKILL after 30 s).
    pub(crate) async fn stop(self) {
        self.sampler.abort();
        self.child.stop().await;
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
pub(crate) fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    if tail.is_empty() {
        "(empty)".to_owned()
    } else {
        tail
    }
}
