//! CPU and memory from `/proc`: of a process, and of the whole machine.

/// max(VmHWM, VmRSS) of a process from `/proc/PID/status`, kB.
pub(crate) fn proc_memory_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .filter(|l| l.starts_with("VmHWM:") || l.starts_with("VmRSS:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .max()
}

/// utime + stime of a process from `/proc/PID/stat`, in seconds (CLK_TCK taken as 100).
pub(crate) fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces; fields 14 and 15
    // (utime, stime) are the 12th and 13th after it.
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// The postmaster of the run's PostgreSQL server, when it runs on this machine (see
/// [`find_postmaster`]).
static POSTMASTER: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// The parent process of `pid` (field 4 of `/proc/PID/stat`).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Remembers the server whose backend has process id `backend` (`pg_backend_pid()` of a
/// connection to it): its postmaster is the backend's parent, when the backend is a local
/// `postgres` process. Only that server's processes are counted then, not another cluster's
/// that runs on the same machine.
pub(crate) fn find_postmaster(backend: u32) {
    let is_postgres = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
    };
    if let Some(parent) = parent_of(backend).filter(|p| is_postgres(backend) && is_postgres(*p)) {
        let _ = POSTMASTER.set(parent);
    }
}

/// CPU seconds of the run's PostgreSQL server (its postmaster and every process it started:
/// backends, WAL writer, checkpointer…), or None when it does not run on this machine. A
/// backend that ended during the window takes its CPU with it, so the run's own connections
/// (which live as long as the run) are what is measured.
pub(crate) fn postgres_cpu_seconds() -> Option<f64> {
    let postmaster = *POSTMASTER.get()?;
    let mut total = proc_cpu_seconds(postmaster)?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if parent_of(pid) == Some(postmaster) {
            total += proc_cpu_seconds(pid).unwrap_or(0.0);
        }
    }
    Some(total)
}

/// This process's CPU seconds, the local PostgreSQL server's and the machine's CPU time at one
/// moment, to difference over a window.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpuMark {
    pub(crate) bench: Option<f64>,
    pub(crate) machine: Option<MachineCpu>,
    /// The local PostgreSQL server's processes (when the run is on PostgreSQL).
    pub(crate) db: Option<f64>,
}

impl CpuMark {
    /// The counters now.
    pub(crate) fn now() -> Self {
        CpuMark {
            bench: proc_cpu_seconds(std::process::id()),
            machine: machine_cpu(),
            db: postgres_cpu_seconds(),
        }
    }
}

/// CPU time of the whole machine, all CPUs together, in seconds (USER_HZ taken as 100, as for
/// the processes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct MachineCpu {
    pub(crate) total: f64,
    /// idle and iowait.
    pub(crate) idle: f64,
    pub(crate) steal: f64,
}

impl MachineCpu {
    /// Time spent between `earlier` and this reading.
    pub(crate) fn since(self, earlier: MachineCpu) -> MachineCpu {
        MachineCpu {
            total: self.total - earlier.total,
            idle: self.idle - earlier.idle,
            steal: self.steal - earlier.steal,
        }
    }

    /// Time the CPUs ran something (neither idle nor taken by the hypervisor).
    pub(crate) fn busy(self) -> f64 {
        self.total - self.idle - self.steal
    }
}

/// The machine's CPU time now, from `/proc/stat`.
pub(crate) fn machine_cpu() -> Option<MachineCpu> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The first line of `/proc/stat`: `cpu user nice system idle iowait irq softirq steal guest
/// guest_nice` (guest time is counted in user time already).
pub(crate) fn parse_proc_stat(text: &str) -> Option<MachineCpu> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn the_parent_process_is_read_from_proc() {
        if std::path::Path::new("/proc/self/stat").exists() {
            assert_eq!(
                parent_of(std::process::id()),
                Some(std::os::unix::process::parent_id())
            );
        }
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
