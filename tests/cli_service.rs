//! The service from the command line: `taskdist serve` as a real process with simulated
//! targets, the client commands against it, and `kill -9` of the service mid-run followed by a
//! restart (every variant still has exactly one outcome).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn taskdist() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_taskdist"));
    c.env_remove("TASKDIST_SERVER").env_remove("TASKDIST_TOKEN");
    c
}

/// A running `taskdist serve` and its address.
struct Served {
    child: Child,
    url: String,
    token: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data: &Path) -> Served {
    let mut child = taskdist()
        .args([
            "-q",
            "serve",
            "--simulate",
            "4",
            "--listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("taskdist serve starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = loop {
        let l = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the service prints its address");
        if let Some(url) = l.strip_prefix("taskdist service on ") {
            break url.to_owned();
        }
    };
    // Keep draining the service's output.
    std::thread::spawn(move || while rx.recv().is_ok() {});
    let token = std::fs::read_to_string(data.join("token"))
        .unwrap()
        .trim()
        .to_owned();
    Served {
        child,
        url: line,
        token,
    }
}

fn client(s: &Served, args: &[&str]) -> Output {
    taskdist()
        .env("TASKDIST_SERVER", &s.url)
        .env("TASKDIST_TOKEN", &s.token)
        .args(args)
        .output()
        .unwrap()
}

fn status(s: &Served, id: &str) -> serde_json::Value {
    let out = client(s, &["status", id, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn client_commands_and_their_errors() {
    let data = tempfile::tempdir().unwrap();
    let s = serve(data.path());

    // Missing or wrong server and token: exit 2 or a clear error.
    let out = taskdist().args(["status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TASKDIST_SERVER"));
    let out = taskdist()
        .env("TASKDIST_SERVER", &s.url)
        .args(["status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TASKDIST_TOKEN"));
    let out = taskdist()
        .env("TASKDIST_SERVER", &s.url)
        .env("TASKDIST_TOKEN", "wrong")
        .args(["status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("401") && err.contains("TASKDIST_TOKEN"),
        "{err}"
    );

    // A bad spec file: exit 2 with line and column.
    let spec = data.path().join("bad.toml");
    std::fs::write(&spec, "[[task]]\npkg = \"hey\"\nperiod_ms = -5\n").unwrap();
    let out = client(&s, &["submit", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":3:"), "no line:column in {err}");
    let out = client(&s, &["submit", "no-such-spec"]);
    assert_eq!(out.status.code(), Some(2));

    // Submit two experiments, watch one to its end, download its results.
    let out = client(&s, &["submit", "hey-priorities", "--priority", "5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let out = client(
        &s,
        &["submit", "huge", "--name", "big", "--limit", "100000000"],
    );
    let big = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let out = client(&s, &["status", &id, "--watch"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("127 done, 0 bad"));
    let table = String::from_utf8_lossy(&client(&s, &["status"]).stdout).into_owned();
    assert!(
        table.contains("hey-priorities") && table.contains("big"),
        "{table}"
    );
    let dl = tempfile::tempdir().unwrap();
    let out = client(&s, &["results", &id, "--out", dl.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::assert_rows_exactly_once(dl.path(), 127);

    // Pause, resume, cancel; targets listed.
    let out = client(&s, &["pause", &big]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("paused"));
    let out = client(&s, &["resume", &big]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("running"));
    let out = client(&s, &["cancel", &big]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("cancelled"));
    let out = client(&s, &["pause", "999"]);
    assert_eq!(out.status.code(), Some(2));
    let targets = String::from_utf8_lossy(&client(&s, &["targets"]).stdout).into_owned();
    assert_eq!(
        targets
            .lines()
            .filter(|l| l.starts_with("127.0.0."))
            .count(),
        4,
        "{targets}"
    );
}

#[test]
fn kill_9_of_the_service_then_restart_keeps_every_variant_exactly_once() {
    let data = tempfile::tempdir().unwrap();
    let n: u64 = 20_000;
    let mut s = serve(data.path());
    let out = client(&s, &["submit", "huge", "--limit", &n.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    wait("a part of the run", || {
        status(&s, &id)["done"].as_u64().unwrap() >= 2_000
    });
    let before = status(&s, &id)["done"].as_u64().unwrap();
    assert!(before < n, "the run ended before the kill; raise n");
    // SIGKILL: no chance to clean up.
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    drop(s);

    let s = serve(data.path());
    let e = status(&s, &id);
    assert_eq!(e["state"], "running", "{e}");
    wait("the run to end", || status(&s, &id)["state"] == "done");
    let e = status(&s, &id);
    assert_eq!(
        (e["done"].as_u64(), e["bad"].as_u64()),
        (Some(n), Some(0)),
        "{e}"
    );
    common::assert_rows_exactly_once(&data.path().join("experiments").join(&id), n);
}
