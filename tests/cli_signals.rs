//! Ctrl-C (SIGINT) and SIGTERM through the `taskdist` binary: the run stops gracefully with
//! exit code 130, prints the exact command that continues it, and that command completes the
//! run with every variant exactly once.

mod common;

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Events of one variant of `common::spec_with` (see tests/cli_resume.rs).
const EVENTS_PER_VARIANT: usize = 12;
/// Variants of the run. At `--sim-speed 20` a variant takes 15–30 ms of wall time on one of
/// two targets, so the run lasts a few seconds: long enough to be caught while running.
const VARIANTS: u32 = 300;

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Waits (bounded) for the child to end.
fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("taskdist did not end within {limit:?} of the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The command between backticks on the line of `stderr` that mentions `--resume`.
fn resume_command(stderr: &str) -> String {
    let line = stderr
        .lines()
        .find(|l| l.contains("--resume"))
        .unwrap_or_else(|| panic!("no resume command printed:\n{stderr}"));
    let start = line.find('`').map_or(0, |i| i + 1);
    let end = line[start..].find('`').map_or(line.len(), |i| start + i);
    line[start..end].trim().to_owned()
}

fn interrupt_then_resume(signal: libc::c_int) {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.toml");
    std::fs::write(&spec, common::spec_with(VARIANTS).text()).unwrap();
    let out = dir.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskdist"))
        .args(["-q", "run"])
        .arg(&spec)
        .args(["--simulate", "2", "--sim-speed", "20", "--handler", "csv"])
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Still running: the ledger shows progress (so the signal handlers are installed) and the
    // process has not ended.
    let ledger = out.join("ledger");
    let deadline = Instant::now() + Duration::from_secs(120);
    while lines(&ledger) < 3 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before the signal; make it longer");
        }
        assert!(Instant::now() < deadline, "no progress in the ledger");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(child.try_wait().unwrap().is_none(), "the run already ended");
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) with the id of our own child, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill failed");

    let status = wait_bounded(&mut child, Duration::from_secs(120));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}, stderr:\n{stderr}");
    let done_at_stop = lines(&ledger);
    let rows_at_stop = taskdist::handlers::reader::read_variants(out.join("variants.csv"))
        .unwrap()
        .count();
    assert!(
        rows_at_stop < VARIANTS as usize,
        "the signal interrupted nothing: {rows_at_stop} rows"
    );

    // The printed command: this run's arguments with `--out DIR` replaced by `--resume DIR`.
    let cmd = resume_command(&stderr);
    assert!(!cmd.contains('\''), "unexpected quoting in `{cmd}`");
    let words: Vec<&str> = cmd.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"taskdist"), "`{cmd}`");
    let out_text = out.display().to_string();
    assert!(
        words
            .windows(2)
            .any(|w| w == ["--resume", out_text.as_str()]),
        "`{cmd}` does not resume {out_text}"
    );
    assert!(!words.contains(&"--out"), "`{cmd}` still names --out");
    assert!(
        words.contains(&spec.display().to_string().as_str()),
        "`{cmd}` lost the spec"
    );

    // Running exactly that command completes the run.
    let resumed = Command::new(env!("CARGO_BIN_EXE_taskdist"))
        .args(&words[1..])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "`{cmd}` failed: {:?}\n{}",
        resumed.status,
        String::from_utf8_lossy(&resumed.stderr)
    );
    check_exactly_once(&out, done_at_stop);
}

fn check_exactly_once(out: &Path, ledger_at_stop: usize) {
    let rows = taskdist::handlers::reader::read_variants(out.join("variants.csv"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    common::assert_rows_exactly_once(out, VARIANTS as u64);
    assert!(rows
        .iter()
        .all(|r| r.outcome == taskdist::handlers::reader::OutcomeKind::Done));
    let events = taskdist::handlers::reader::read_events(out.join("events.csv"))
        .unwrap()
        .count();
    assert_eq!(events, VARIANTS as usize * EVENTS_PER_VARIANT);
    assert!(
        lines(&out.join("ledger")) > ledger_at_stop,
        "the resume recorded nothing"
    );
}

#[test]
fn sigint_stops_with_130_and_the_printed_command_resumes() {
    interrupt_then_resume(libc::SIGINT);
}

#[test]
fn sigterm_stops_with_130_and_the_printed_command_resumes() {
    interrupt_then_resume(libc::SIGTERM);
}
