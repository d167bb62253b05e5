//! The result directory from the command line: the lock, resume by indices, failed starts
//! that leave nothing behind, exit codes, and `--retry-bad`.
//!
//! Network rule: every run uses `--simulate` (targets on 127.0.0.x) or fails while checking its
//! arguments.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn cmd(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_taskdist"));
    c.args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG");
    c
}

fn taskdist(dir: &Path, args: &[&str]) -> Output {
    cmd(dir, args).output().expect("the taskdist binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `variant -> outcomes` from variants.csv (one entry per row).
fn variant_rows(dir: &Path) -> BTreeMap<u64, Vec<String>> {
    let text = std::fs::read_to_string(dir.join("variants.csv")).expect("variants.csv");
    let mut rows: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for line in text.lines().skip(1) {
        let mut f = line.split(',');
        let v: u64 = f.next().unwrap().parse().expect("variant index");
        let outcome = f.next().unwrap().to_owned();
        rows.entry(v).or_default().push(outcome);
    }
    rows
}

fn ledger_body(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("ledger"))
        .expect("ledger")
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect()
}

/// `(done, bad)` indices recorded in the ledger, each sorted.
fn ledger_indices(dir: &Path) -> (Vec<u64>, Vec<u64>) {
    let (mut done, mut bad) = (Vec::new(), Vec::new());
    for line in ledger_body(dir) {
        let (list, range) = match line.strip_prefix("b ") {
            Some(r) => (&mut bad, r.to_owned()),
            None => (&mut done, line),
        };
        let (s, e) = range.split_once('-').unwrap_or((&range, &range));
        list.extend(s.parse::<u64>().unwrap()..=e.parse::<u64>().unwrap());
    }
    done.sort_unstable();
    bad.sort_unstable();
    (done, bad)
}

#[test]
fn a_second_process_is_refused_while_a_run_holds_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    // A real-time target makes the first run last several seconds.
    let mut first = cmd(
        tmp.path(),
        &[
            "-q",
            "run",
            "hey",
            "--simulate",
            "1",
            "--sim-speed",
            "realtime",
            "--out",
            "out",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("first run starts");
    let pid = first.id();
    // Wait (bounded) until the first run holds the lock.
    let lock = tmp.path().join("out/lock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.contains(&format!("pid {pid}\n"))) {
        assert!(
            Instant::now() < deadline,
            "the first run never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for args in [
        &["run", "hey", "--simulate", "1", "--resume", "out"][..],
        &["run", "hey", "--simulate", "1", "--out", "out"][..],
    ] {
        let second = taskdist(tmp.path(), args);
        let msg = stderr(&second);
        assert_eq!(second.status.code(), Some(3), "{args:?}: {msg}");
        assert!(
            msg.contains(&format!("out is in use by pid {pid} on ")) && msg.contains(" since "),
            "{args:?}: the holder is not named: {msg}"
        );
    }
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first run ended before the second was refused; the test proves nothing"
    );
    let status = first.wait().unwrap();
    assert_eq!(status.code(), Some(0), "the first run failed");
    let rows = variant_rows(&tmp.path().join("out"));
    assert_eq!(rows.len(), 4);
    assert!(rows.values().all(|o| o == &["done"]), "{rows:?}");
    assert_eq!(
        ledger_indices(&tmp.path().join("out")),
        (vec![0, 1, 2, 3], vec![])
    );
}

#[test]
fn resume_compares_indices_not_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let args = |limit: &'static str, resume: bool| {
        let mut a = vec![
            "-q",
            "run",
            "hey-priorities",
            "--simulate",
            "2",
            "--limit",
            limit,
        ];
        a.extend(if resume {
            ["--resume", "out"]
        } else {
            ["--out", "out"]
        });
        a
    };
    let first = taskdist(tmp.path(), &args("13", false));
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    // As after a kill -9 while variant 10 was in flight: 12 outcomes, 10 missing.
    let ledger = std::fs::read_to_string(out.join("ledger")).unwrap();
    let header = ledger.lines().next().unwrap();
    std::fs::write(out.join("ledger"), format!("{header}\n0-9\n11-12\n")).unwrap();
    let resumed = taskdist(tmp.path(), &args("12", true));
    let msg = stderr(&resumed);
    assert_eq!(resumed.status.code(), Some(0), "{msg}");
    assert!(!msg.contains("nothing to do"), "{msg}");
    let rows = variant_rows(&out);
    assert_eq!(
        rows.keys().copied().collect::<Vec<_>>(),
        (0..=12).collect::<Vec<_>>(),
        "variant 10 must have run and 11, 12 kept"
    );
    assert!(rows.values().all(|o| o == &["done"]), "{rows:?}");
    // Now everything of limit 12 is there: nothing to do, exit 0.
    let again = taskdist(tmp.path(), &args("12", true));
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("nothing to do"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn a_failed_start_leaves_the_directory_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("adm.toml"),
        "goal = \"fairness\"\nquery_interval_ms = 100\n",
    )
    .unwrap();
    std::fs::create_dir(tmp.path().join("empty")).unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--attempts", "0"], "expected at least 1"),
        (&["--limit", "0"], "expected at least 1"),
        (&["--admission", "adm.toml"], "--dialect v1"),
        (
            &["--dialect", "v3", "--admission", "adm.toml"],
            "--dialect v1",
        ),
        (&["--binaries", "no-such-dir"], "no-such-dir"),
    ];
    for (extra, needle) in cases {
        for out in ["new/sub", "empty"] {
            let mut args = vec!["run", "hey", "--simulate", "1", "--out", out];
            args.extend_from_slice(extra);
            let res = taskdist(tmp.path(), &args);
            let msg = stderr(&res);
            assert_eq!(res.status.code(), Some(2), "{extra:?}: {msg}");
            assert!(msg.contains(needle), "{extra:?}: {msg}");
            assert!(!tmp.path().join("new").exists(), "{extra:?} left new/");
            assert_eq!(
                std::fs::read_dir(tmp.path().join("empty")).unwrap().count(),
                0,
                "{extra:?} left files in empty/"
            );
        }
    }
    // The corrected run is not refused.
    let ok = taskdist(
        tmp.path(),
        &["-q", "run", "hey", "--simulate", "1", "--out", "empty"],
    );
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    // With v1 the admission data is accepted.
    let v1 = taskdist(
        tmp.path(),
        &[
            "-q",
            "run",
            "hey",
            "--simulate",
            "1",
            "--dialect",
            "v1",
            "--admission",
            "adm.toml",
            "--out",
            "v1",
        ],
    );
    assert_eq!(v1.status.code(), Some(0), "{}", stderr(&v1));
}

#[test]
fn spec_that_is_not_a_regular_file_and_cidr_with_host_bits_are_input_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let res = taskdist(tmp.path(), &["run", "/dev/zero", "--simulate", "1"]);
    assert_eq!(res.status.code(), Some(2), "{}", stderr(&res));
    assert!(
        stderr(&res).contains("not a regular file"),
        "{}",
        stderr(&res)
    );
    let res = taskdist(
        tmp.path(),
        &["run", "hey", "127.0.4.0/20", "--probe", "tcp", "--out", "o"],
    );
    assert_eq!(res.status.code(), Some(2), "{}", stderr(&res));
    assert!(
        stderr(&res).contains("127.0.4.0/20 has host bits set; did you mean 127.0.0.0/20?"),
        "{}",
        stderr(&res)
    );
    assert!(!tmp.path().join("o").exists());
}

#[test]
fn bad_variants_give_exit_1_and_retry_bad_runs_them_again_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    // A binaries directory without `hey`: every variant is bad (no target can cure it).
    std::fs::create_dir(tmp.path().join("bins")).unwrap();
    std::fs::write(tmp.path().join("bins/other"), b"x").unwrap();
    let out = tmp.path().join("out");
    let broken = taskdist(
        tmp.path(),
        &[
            "-q",
            "run",
            "hey",
            "--simulate",
            "2",
            "--binaries",
            "bins",
            "--out",
            "out",
        ],
    );
    assert_eq!(broken.status.code(), Some(1), "{}", stderr(&broken));
    let rows = variant_rows(&out);
    assert_eq!(rows.len(), 4);
    assert!(rows.values().all(|o| o == &["bad"]), "{rows:?}");
    assert_eq!(ledger_indices(&out), (vec![], vec![0, 1, 2, 3]));

    // A plain resume finds nothing to do but reports the bad variants: exit 1.
    let resume = taskdist(
        tmp.path(),
        &["-q", "run", "hey", "--simulate", "2", "--resume", "out"],
    );
    assert_eq!(resume.status.code(), Some(1), "{}", stderr(&resume));
    assert!(
        stderr(&resume).contains("--retry-bad"),
        "{}",
        stderr(&resume)
    );

    // --retry-bad on healthy targets (synthetic binaries): every variant done, once.
    let retry = taskdist(
        tmp.path(),
        &[
            "-q",
            "run",
            "hey",
            "--simulate",
            "2",
            "--resume",
            "out",
            "--retry-bad",
        ],
    );
    assert_eq!(retry.status.code(), Some(0), "{}", stderr(&retry));
    let rows = variant_rows(&out);
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert!(
        rows.values().all(|o| o == &["done"]),
        "a bad row was left or a variant has two rows: {rows:?}"
    );
    assert_eq!(ledger_indices(&out), (vec![0, 1, 2, 3], vec![]));
    let jobs = std::fs::read_to_string(out.join("jobs.csv")).unwrap();
    assert!(jobs.lines().count() > 1, "the retried variants wrote jobs");

    // --retry-bad needs --resume.
    let usage = taskdist(
        tmp.path(),
        &["run", "hey", "--simulate", "1", "--retry-bad"],
    );
    assert_eq!(usage.status.code(), Some(2), "{}", stderr(&usage));
}
