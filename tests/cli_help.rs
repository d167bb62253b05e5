//! Snapshot tests of the command line's help texts: `taskdist --help` and `taskdist SUB --help`
//! for `run`, `list`, `discover` and `sim`.
//!
//! The expected texts live in `tests/snapshots/help*.txt`. The binary runs with an empty
//! environment plus `COLUMNS=100` and `NO_COLOR=1`, with no terminal attached, so the wrapping
//! and the absence of colour do not depend on who runs the test.
//!
//! When a help text changes on purpose (a new flag, better wording), regenerate the snapshots
//! and review the change like any other:
//!
//! ```text
//! UPDATE_SNAPSHOTS=1 cargo test --test cli_help
//! git diff tests/snapshots/
//! ```
//!
//! Without `UPDATE_SNAPSHOTS=1` a difference fails the test with a line diff (`-` expected,
//! `+` actual).

use std::path::PathBuf;
use std::process::Command;

/// Run `taskdist ARGS` and return its standard output; it must exit 0 with nothing on stderr.
fn help_text(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_taskdist"))
        .args(args)
        .env_clear()
        .env("COLUMNS", "100")
        .env("NO_COLOR", "1")
        .env("CLICOLOR", "0")
        .env("TERM", "dumb")
        .output()
        .expect("the taskdist binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "taskdist {args:?} exited with {}: {stderr}",
        out.status
    );
    assert!(
        stderr.is_empty(),
        "taskdist {args:?} wrote to stderr: {stderr}"
    );
    String::from_utf8(out.stdout).expect("help text is UTF-8")
}

/// A line diff of `expected` and `actual` (longest common subsequence), with `-` for lines
/// only in `expected`, `+` for lines only in `actual` and two spaces for common lines.
fn line_diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    // lcs[i][j]: length of the LCS of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = String::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!("  {}\n", a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("- {}\n", a[i]));
            i += 1;
        } else {
            out.push_str(&format!("+ {}\n", b[j]));
            j += 1;
        }
    }
    if expected.ends_with('\n') != actual.ends_with('\n') {
        out.push_str("(the texts differ in their final newline)\n");
    }
    out
}

/// Compare `actual` with `tests/snapshots/NAME.txt`, or rewrite that file when
/// `UPDATE_SNAPSHOTS=1`.
fn check_snapshot(name: &str, actual: &str) {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "snapshots"]
        .iter()
        .collect::<PathBuf>()
        .join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("snapshot path has a parent"))
            .expect("create tests/snapshots");
        std::fs::write(&path, actual).expect("write the snapshot");
        return;
    }
    let expected = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => panic!(
            "cannot read snapshot {}: {e}\ncreate it with UPDATE_SNAPSHOTS=1 cargo test --test cli_help",
            path.display()
        ),
    };
    if expected != actual {
        panic!(
            "help text differs from {} (- expected, + actual):\n{}\nIf the change is intended, \
             run UPDATE_SNAPSHOTS=1 cargo test --test cli_help and review git diff tests/snapshots/",
            path.display(),
            line_diff(&expected, actual)
        );
    }
}

#[test]
fn top_level_help() {
    let text = help_text(&["--help"]);
    for sub in ["run", "list", "discover", "sim", "report", "show"] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("{sub} "))),
            "`taskdist --help` does not list the {sub} subcommand:\n{text}"
        );
    }
    check_snapshot("help", &text);
}

#[test]
fn run_help() {
    let text = help_text(&["run", "--help"]);
    for flag in [
        "--port",
        "--out",
        "--handler",
        "--admission",
        "--dialect",
        "--binaries",
        "--probe",
        "--attempts",
        "--resume",
        "--limit",
        "--shard",
        "--simulate",
        "--verbose",
        "--quiet",
    ] {
        assert!(
            text.contains(flag),
            "`taskdist run --help` lacks {flag}:\n{text}"
        );
    }
    check_snapshot("help_run", &text);
}

#[test]
fn list_help() {
    let text = help_text(&["list", "--help"]);
    for what in ["tasksets", "handlers", "dialects"] {
        assert!(
            text.contains(what),
            "`taskdist list --help` lacks {what}:\n{text}"
        );
    }
    check_snapshot("help_list", &text);
}

#[test]
fn discover_help() {
    check_snapshot("help_discover", &help_text(&["discover", "--help"]));
}

#[test]
fn sim_help() {
    check_snapshot("help_sim", &help_text(&["sim", "--help"]));
}

#[test]
fn report_help() {
    let text = help_text(&["report", "--help"]);
    for flag in ["--out", "--variant", "--by", "--bin-width", "--format"] {
        assert!(
            text.contains(flag),
            "`taskdist report --help` lacks {flag}:\n{text}"
        );
    }
    check_snapshot("help_report", &text);
}

#[test]
fn show_help() {
    let text = help_text(&["show", "--help"]);
    assert!(text.contains("--variant"), "{text}");
    check_snapshot("help_show", &text);
}

#[test]
fn help_subcommand_matches_help_flag() {
    // `taskdist help run` prints the same text as `taskdist run --help`.
    assert_eq!(
        help_text(&["help", "run"]),
        help_text(&["run", "--help"]),
        "`taskdist help run` and `taskdist run --help` differ"
    );
}

#[test]
fn line_diff_marks_changes() {
    let d = line_diff("a\nb\nc\n", "a\nx\nc\n");
    assert_eq!(d, "  a\n- b\n+ x\n  c\n");
    let d = line_diff("a\n", "a\nb\n");
    assert_eq!(d, "  a\n+ b\n");
}
