//! The give-up rule from the command line: a run whose only target is broken ends by itself
//! with exit code 4 and the resume command, and that command finishes the run once a healthy
//! target answers.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

fn taskdist() -> Command {
    Command::new(env!("CARGO_BIN_EXE_taskdist"))
}

/// A `taskdist sim` process with one host at `first`; returns it and its `addr:port`.
struct Sim(Child);

impl Sim {
    fn start(first: &str, extra: &[&str]) -> (Sim, String) {
        let mut child = taskdist()
            .args(["-q", "sim", "-n", "1", "--port", "0", "--first", first])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        assert!(addr.starts_with(first), "sim printed {line:?}");
        (Sim(child), addr)
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_run_without_a_usable_target_gives_up_with_exit_4_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (sim, addr) = Sim::start("127.0.0.60", &["--fault", "0=garbage@0+"]);
    let run = taskdist()
        .args([
            "-q",
            "run",
            "hey",
            &addr,
            "--probe",
            "tcp",
            "--give-up-after",
            "2s",
        ])
        .args(["--handler", "csv", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    drop(sim);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(4), "stderr: {stderr}");
    assert!(stderr.contains("gave up"), "{stderr}");
    let resume = format!("--resume {}", out.display());
    assert!(stderr.contains(&resume), "no resume command in {stderr}");

    // The same address, now healthy: the printed resume command completes the run.
    let (_sim, addr2) = Sim::start("127.0.0.60", &[]);
    let again = taskdist()
        .args([
            "-q",
            "run",
            "hey",
            &addr2,
            "--probe",
            "tcp",
            "--handler",
            "csv",
        ])
        .args(["--resume"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(0), "stderr: {stderr}");
    let variants = std::fs::read_to_string(out.join("variants.csv")).unwrap();
    let done = variants.lines().filter(|l| l.contains(",done,")).count();
    assert_eq!(done, 4, "{variants}");
    assert_eq!(variants.lines().count(), 5, "{variants}");
}

#[test]
fn give_up_after_rejects_a_bad_duration() {
    let out = taskdist()
        .args(["run", "hey", "--simulate", "1", "--give-up-after", "soon"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("\"soon\""), "{stderr}");
}
