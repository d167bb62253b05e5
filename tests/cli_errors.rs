//! A newcomer's mistakes get a clear message on stderr and exit code 2: bad host ranges, bad
//! spec files, unknown catalog names, bad `--shard` and `--simulate` values, and an output
//! directory that already holds results. `taskdist list tasksets` shows the catalog.
//!
//! Network rule: every run here uses `--simulate` (targets on 127.0.0.x) or fails while
//! parsing its arguments. The bad host range is a loopback range with an impossible prefix,
//! so even a parser that wrongly accepted it could only reach loopback.

use std::path::Path;
use std::process::{Command, Output};

use taskdist::tasksets::catalog;

/// Run `taskdist ARGS` in `dir` without colours; returns the output.
fn taskdist(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_taskdist"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .output()
        .expect("the taskdist binary runs")
}

/// Assert a usage/input error: exit code 2, a one-shot `error:` message containing every
/// `needle`, no panic. Returns stderr.
fn assert_usage_error(out: &Output, what: &str, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what}: expected exit code 2, got {}; stderr:\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains("error"),
        "{what}: stderr does not say `error`:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{what}: the binary panicked:\n{stderr}"
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{what}: the message does not mention {needle:?}:\n{stderr}"
        );
    }
    stderr
}

#[test]
fn bad_cidr_prefix_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["127.0.0.0/33", "127.0.0.1/abc", "127.0.0.300"] {
        let out = taskdist(
            dir.path(),
            &["run", "hey", bad, "--probe", "tcp", "--out", "out"],
        );
        assert_usage_error(&out, bad, &[bad, "CIDR"]);
    }
}

#[test]
fn spec_file_with_a_wrong_type_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wrong-type.toml"),
        "name = \"wrong\"\n\n[[task]]\npkg = \"hey\"\nnumberofjobs = \"three\"\n",
    )
    .unwrap();
    let out = taskdist(
        dir.path(),
        &["run", "wrong-type.toml", "--simulate", "1", "--out", "out"],
    );
    assert_usage_error(
        &out,
        "string for an integer",
        &["wrong-type.toml:5:", "numberofjobs"],
    );
}

#[test]
fn spec_file_with_an_unknown_key_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("typo.toml"),
        "name = \"typo\"\n\n[[task]]\npkg = \"hey\"\nperod_ms = 100\n",
    )
    .unwrap();
    let out = taskdist(
        dir.path(),
        &["run", "typo.toml", "--simulate", "1", "--out", "out"],
    );
    assert_usage_error(&out, "unknown key", &["typo.toml:5:", "perod_ms"]);
}

#[test]
fn missing_spec_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = taskdist(
        dir.path(),
        &[
            "run",
            "specs/missing.toml",
            "--simulate",
            "1",
            "--out",
            "out",
        ],
    );
    assert_usage_error(&out, "missing file", &["specs/missing.toml"]);
}

#[test]
fn unknown_catalog_name_lists_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let out = taskdist(
        dir.path(),
        &["run", "hey-prioritys", "--simulate", "1", "--out", "out"],
    );
    let names: Vec<&str> = catalog::entries().iter().map(|e| e.name).collect();
    let mut needles = vec!["hey-prioritys"];
    needles.extend(&names);
    assert_usage_error(&out, "unknown catalog name", &needles);
}

#[test]
fn shard_with_k_not_below_n_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["3/2", "2/2", "0/0", "1-4"] {
        let out = taskdist(
            dir.path(),
            &[
                "run",
                "hey",
                "--simulate",
                "1",
                "--shard",
                bad,
                "--out",
                "out",
            ],
        );
        assert_usage_error(&out, bad, &["--shard", bad]);
    }
}

#[test]
fn simulate_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = taskdist(
        dir.path(),
        &["run", "hey", "--simulate", "0", "--out", "out"],
    );
    assert_usage_error(&out, "--simulate 0", &["--simulate 0", "1 to 250"]);
}

#[test]
fn out_directory_with_results_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let first = taskdist(
        dir.path(),
        &["-q", "run", "hey", "--simulate", "2", "--out", "out"],
    );
    assert!(
        first.status.success(),
        "the first run failed: {}",
        String::from_utf8_lossy(&first.stderr)
    );
    let variants = dir.path().join("out").join("variants.csv");
    let before = std::fs::read(&variants).expect("the first run wrote variants.csv");

    let second = taskdist(
        dir.path(),
        &["run", "hey", "--simulate", "2", "--out", "out"],
    );
    assert_usage_error(&second, "existing results", &["out", "exists", "resume"]);
    assert_eq!(
        std::fs::read(&variants).unwrap(),
        before,
        "the refused run changed the earlier results"
    );
}

#[test]
fn list_tasksets_shows_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let out = taskdist(dir.path(), &["list", "tasksets"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for e in catalog::entries() {
        assert!(
            stdout
                .lines()
                .any(|l| l.split_whitespace().next() == Some(e.name) && l.contains(e.description)),
            "`taskdist list tasksets` lacks {} with its description:\n{stdout}",
            e.name
        );
    }
    assert!(stdout.lines().any(|l| l.trim_start().starts_with("hey ")));
}
