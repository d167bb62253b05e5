//! Tests that need rights or features a machine may lack (raw ICMP sockets, network
//! namespaces, IPv6 on `::1`).
//!
//! Such a test asks [`need`] for what it lacks. What happens when it is missing depends on
//! the environment:
//!
//! - `TASKDIST_REQUIRE_PRIVILEGED=1` (CI sets it): the test fails with a message naming what
//!   is missing. A privileged test never passes by skipping there.
//! - otherwise the test is skipped, visibly: a `SKIP` line goes straight to the process's
//!   standard error (past the test harness's output capture), and when `TASKDIST_SKIP_LOG`
//!   names a file, the line is appended to it as well, so a script can count the skips.
//!
//! When the need is met and `TASKDIST_PRIVILEGED_LOG` names a file, `<test>\t<what>` is
//! appended to it, so CI can count the privileged tests that really ran.

use std::fmt::Display;
use std::io::Write;

/// Set to `1` to turn every skip into a failure.
pub const REQUIRE_ENV: &str = "TASKDIST_REQUIRE_PRIVILEGED";
/// A file that receives one line per skipped test.
pub const SKIP_LOG_ENV: &str = "TASKDIST_SKIP_LOG";
/// A file that receives one line per need that was met.
pub const RAN_LOG_ENV: &str = "TASKDIST_PRIVILEGED_LOG";

/// True when a missing right must fail the test.
pub fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v.trim() == "1")
}

fn append(env: &str, line: &str) {
    let Some(path) = std::env::var_os(env) else {
        return;
    };
    // One write of a short line in append mode: lines of parallel tests do not interleave.
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open {env}={}: {e}", path.to_string_lossy()));
    f.write_all(format!("{line}\n").as_bytes())
        .unwrap_or_else(|e| panic!("cannot write {env}={}: {e}", path.to_string_lossy()));
}

/// `got` is what `test` needs (`what` says what it is, e.g. "a raw ICMP socket"). Returns the
/// value if it is there; otherwise fails the test under `TASKDIST_REQUIRE_PRIVILEGED=1`, or
/// reports the skip and returns `None` (the test then returns without asserting anything).
pub fn need<T, E: Display>(test: &str, what: &str, got: Result<T, E>) -> Option<T> {
    match got {
        Ok(v) => {
            append(RAN_LOG_ENV, &format!("{test}\t{what}"));
            Some(v)
        }
        Err(e) => {
            let missing = format!("{test} needs {what}: {e}");
            if required() {
                panic!("{missing}\n({REQUIRE_ENV}=1: a privileged test must run, not skip)");
            }
            let line = format!("SKIP {missing}");
            // Straight to file descriptor 2: `eprintln!` would be captured and hidden.
            let _ = writeln!(
                std::io::stderr().lock(),
                "{line} (set {REQUIRE_ENV}=1 to make this a failure)"
            );
            append(SKIP_LOG_ENV, &line);
            None
        }
    }
}

/// Whether `::1` can be used here: `Err` only when the loopback really has no IPv6 (the
/// kernel has no IPv6, or it is disabled on `lo`), so a test can tell a missing feature from
/// a bug.
pub fn ipv6_loopback() -> Result<(), String> {
    match std::net::UdpSocket::bind("[::1]:0") {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL)
            ) =>
        {
            Err(format!("no IPv6 on the loopback ({e})"))
        }
        Err(e) => panic!("binding [::1]:0 failed for another reason than missing IPv6: {e}"),
    }
}
