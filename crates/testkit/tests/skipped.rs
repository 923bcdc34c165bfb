//! The closing report on the run's skipped tests (see `crmhooks_testkit::skips`). No harness:
//! what this prints is never captured. It fails nothing; a skip is not a failure, but it is
//! said where nobody misses it, at the end of the run.

fn main() {
    println!(
        "{}",
        crmhooks_testkit::skips::report(&crmhooks_testkit::skips::take())
    );
}
