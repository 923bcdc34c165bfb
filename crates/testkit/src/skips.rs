//! Skipped tests, counted over a whole `cargo test` run.
//!
//! Each test binary is its own process and libtest has no hook at its end, so the count lives
//! in a file: a skip appends a line to `<target>/<profile>/crmhooks-test-skips/run-<pid>.txt`,
//! where `<pid>` is the parent process, the `cargo test` that runs every test binary of the run
//! one after the other. Cargo runs the test binaries in package order and
//! `crmhooks-testkit` sorts last, so its `skipped` test (no harness: its output is not
//! captured) runs after all the others and prints [`report`] of that file, then removes it.
//!
//! A skip is also printed the moment it happens, to the process's stderr directly: the test
//! harness captures what `eprintln!` prints and shows it only for a failing test.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Files of runs that ended without a report (a `cargo test -p` of one package) are removed
/// after this long.
const STALE: Duration = Duration::from_secs(24 * 3600);

/// The directory of the skip files: beside the test binaries' `deps` directory, in the target
/// directory of the build (whatever `CARGO_TARGET_DIR` says).
fn dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let bin_dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    let profile_dir = if bin_dir.file_name().is_some_and(|n| n == "deps") {
        bin_dir.parent().map(PathBuf::from).unwrap_or(bin_dir)
    } else {
        bin_dir
    };
    profile_dir.join("crmhooks-test-skips")
}

/// The id of this `cargo test` run: the process that started this test binary.
fn run_id() -> u32 {
    #[cfg(unix)]
    {
        std::os::unix::process::parent_id()
    }
    #[cfg(not(unix))]
    {
        0
    }
}

fn run_file() -> PathBuf {
    dir().join(format!("run-{}.txt", run_id()))
}

/// One skipped test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skip {
    /// The test's path, `binary::test::variant`.
    pub test: String,
    /// Why it could not run.
    pub why: String,
}

/// Records that `test` was skipped and why: printed now, and counted for the run's [`report`].
pub fn record(test: &str, why: &str) {
    // Straight to the file descriptor, not through eprintln!, which the harness captures.
    let _ = std::io::stderr().write_all(format!("SKIPPED {test}: {why}\n").as_bytes());
    let dir = dir();
    let _ = std::fs::create_dir_all(&dir);
    if let Err(e) = append(&run_file(), test, why) {
        let _ = std::io::stderr()
            .write_all(format!("cannot count the skip in {}: {e}\n", dir.display()).as_bytes());
    }
}

/// Appends one skip to `file`. One write of one short line in append mode: the lines of tests
/// skipped at the same moment, in this process or another, do not interleave.
fn append(file: &Path, test: &str, why: &str) -> std::io::Result<()> {
    let line = format!("{test}\t{}\n", why.replace(['\t', '\n'], " "));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?
        .write_all(line.as_bytes())
}

/// The skips in `file`, which is removed.
fn read_and_remove(file: &Path) -> Vec<Skip> {
    let skips = std::fs::read_to_string(file)
        .map(|s| {
            s.lines()
                .filter_map(|l| l.split_once('\t'))
                .map(|(test, why)| Skip {
                    test: test.to_owned(),
                    why: why.to_owned(),
                })
                .collect()
        })
        .unwrap_or_default();
    let _ = std::fs::remove_file(file);
    skips
}

/// The skips of this `cargo test` run; removes the run's file (and those of runs long gone) so
/// that the next run starts from nothing.
pub fn take() -> Vec<Skip> {
    let skips = read_and_remove(&run_file());
    if let Ok(entries) = std::fs::read_dir(dir()) {
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > STALE);
            if old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    skips
}

/// The closing words on the run's skips: the count, then each reason once with its tests.
pub fn report(skips: &[Skip]) -> String {
    if skips.is_empty() {
        return "crmhooks tests: no test was skipped in this run.".to_owned();
    }
    let mut by_reason: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for s in skips {
        by_reason.entry(&s.why).or_default().push(&s.test);
    }
    let mut out = format!(
        "crmhooks tests: {} SKIPPED in this run (they did not run, so they did not pass):\n",
        skips.len()
    );
    for (why, tests) in &mut by_reason {
        tests.sort_unstable();
        out.push_str(&format!("  {} because {why}:\n", tests.len()));
        for t in tests.iter() {
            out.push_str(&format!("    {t}\n"));
        }
    }
    out.push_str(&format!(
        "To run the PostgreSQL variants, start PostgreSQL on 127.0.0.1:5432 (user postgres, \
         trust authentication) or set {} to an admin URL.",
        crate::postgres::ENV
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_counts_the_skips_and_names_each_reason_once() {
        let skip = |test: &str, why: &str| Skip {
            test: test.into(),
            why: why.into(),
        };
        let r = report(&[
            skip("b::postgres", "no server"),
            skip("a::postgres", "no server"),
            skip("c::postgres", "login refused"),
        ]);
        assert!(r.starts_with("crmhooks tests: 3 SKIPPED"), "{r}");
        assert!(
            r.contains("\n  2 because no server:\n    a::postgres\n    b::postgres\n"),
            "{r}"
        );
        assert!(
            r.contains("\n  1 because login refused:\n    c::postgres\n"),
            "{r}"
        );
        assert!(report(&[]).contains("no test was skipped"));
    }

    #[test]
    fn skips_appended_from_several_threads_are_read_back_whole_and_the_file_removed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("run-1.txt");
        std::thread::scope(|scope| {
            for i in 0..8 {
                let file = &file;
                scope.spawn(move || {
                    append(file, &format!("t{i}::postgres"), "no\tserver\n").unwrap()
                });
            }
        });
        let mut skips = read_and_remove(&file);
        skips.sort_by(|a, b| a.test.cmp(&b.test));
        assert_eq!(skips.len(), 8);
        assert_eq!(skips[3].test, "t3::postgres");
        assert!(skips.iter().all(|s| s.why == "no server "), "{skips:?}");
        assert!(!file.exists());
        assert!(read_and_remove(&file).is_empty());
    }
}
