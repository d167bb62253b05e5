//! `kill -9` in the middle of a CLI run, then `--resume`: no variant lost or repeated.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EVENTS_PER_VARIANT: usize = 12;

fn taskdist() -> Command {
    Command::new(env!("CARGO_BIN_EXE_taskdist"))
}

#[test]
fn kill_9_then_resume_keeps_every_variant_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let n: u32 = 20_000;
    let spec = dir.path().join("spec.toml");
    std::fs::write(&spec, common::spec_with(n).text()).unwrap();
    let out = dir.path().join("out");

    let mut child = taskdist()
        .args(["-q", "run"])
        .arg(&spec)
        .args(["--simulate", "4", "--handler", "csv", "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the ledger records some progress, then kill without warning.
    let ledger = out.join("ledger");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let lines = std::fs::read_to_string(&ledger)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if lines >= 3 {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before it could be killed; make it longer");
        }
        assert!(Instant::now() < deadline, "no progress in the ledger");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // Resuming with another spec is refused with a clear message and exit code 2.
    let other = taskdist()
        .args([
            "-q",
            "run",
            "hey",
            "--simulate",
            "1",
            "--handler",
            "csv",
            "--resume",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(other.status.code(), Some(2));
    let msg = String::from_utf8_lossy(&other.stderr);
    assert!(msg.contains("different spec"), "{msg}");

    let status = taskdist()
        .args(["-q", "run"])
        .arg(&spec)
        .args(["--simulate", "4", "--handler", "csv", "--resume"])
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "resumed run failed: {status}");

    common::assert_rows_exactly_once(&out, u64::from(n));
    let events = taskdist::handlers::reader::read_events(out.join("events.csv"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert_eq!(events.len(), n as usize * EVENTS_PER_VARIANT);
    let jobs = taskdist::handlers::reader::read_jobs(out.join("jobs.csv"))
        .unwrap()
        .count();
    assert_eq!(jobs, n as usize * 5);
}
