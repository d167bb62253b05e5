//! `taskdist run` from the command line on simulated targets: slices, handlers, exit codes.

use std::process::Command;

fn taskdist() -> Command {
    Command::new(env!("CARGO_BIN_EXE_taskdist"))
}

#[test]
fn limit_and_shard_select_the_documented_variants() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let status = taskdist()
        .args([
            "-q",
            "run",
            "hey-priorities",
            "--simulate",
            "2",
            "--limit",
            "5",
        ])
        .args([
            "--shard",
            "1/3",
            "--handler",
            "csv",
            "--handler",
            "jsonl",
            "--handler",
            "sqlite",
        ])
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let mut got: Vec<u64> = taskdist::handlers::reader::read_variants(out.join("variants.csv"))
        .unwrap()
        .map(|r| r.unwrap().variant)
        .collect();
    got.sort_unstable();
    assert_eq!(got, vec![1, 4, 7, 10, 13]);
    // The other handlers wrote the same variants.
    let jsonl = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    assert_eq!(jsonl.matches("\"record\":\"variant\"").count(), 5);
    // SQLite holds the same variants, and as many event and job rows as the CSV files.
    let db = rusqlite::Connection::open_with_flags(
        out.join("results.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let count = |sql: &str| -> u64 {
        db.query_row(sql, [], |r| r.get::<_, i64>(0))
            .unwrap()
            .try_into()
            .unwrap()
    };
    let mut db_variants: Vec<u64> = db
        .prepare("SELECT variant FROM variants ORDER BY variant")
        .unwrap()
        .query_map([], |r| r.get::<_, i64>(0))
        .unwrap()
        .map(|v| v.unwrap().try_into().unwrap())
        .collect();
    db_variants.dedup();
    assert_eq!(db_variants, vec![1, 4, 7, 10, 13]);
    assert_eq!(count("SELECT count(*) FROM variants"), 5);
    let csv_events = taskdist::handlers::reader::read_events(out.join("events.csv"))
        .unwrap()
        .count() as u64;
    assert!(csv_events > 0);
    assert_eq!(count("SELECT count(*) FROM events"), csv_events);
    let csv_jobs = taskdist::handlers::reader::read_jobs(out.join("jobs.csv"))
        .unwrap()
        .count() as u64;
    assert!(csv_jobs > 0);
    assert_eq!(count("SELECT count(*) FROM jobs"), csv_jobs);
    let csv_tasks = taskdist::handlers::reader::read_tasks(out.join("tasks.csv"))
        .unwrap()
        .count() as u64;
    assert!(csv_tasks >= 5, "every variant has a task: {csv_tasks}");
    assert_eq!(count("SELECT count(*) FROM tasks"), csv_tasks);
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["planned_variants"], 5);
    assert_eq!(run["spec_name"], "hey-priorities");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["done"], 5);
    let per_target: u64 = metrics["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["completed"].as_u64().unwrap())
        .sum();
    assert_eq!(per_target, 5);
}

#[test]
fn bad_variants_give_exit_code_1() {
    // A binaries directory without `hey`: every variant is bad at once.
    let dir = tempfile::tempdir().unwrap();
    let bins = dir.path().join("bins");
    std::fs::create_dir(&bins).unwrap();
    std::fs::write(bins.join("pi"), b"\x7fELF not really").unwrap();
    let out = dir.path().join("o");
    let res = taskdist()
        .args([
            "-q",
            "run",
            "hey",
            "--simulate",
            "1",
            "--handler",
            "csv",
            "--binaries",
        ])
        .arg(&bins)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(
        res.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let rows: Vec<_> = taskdist::handlers::reader::read_variants(out.join("variants.csv"))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(
        |r| r.outcome == taskdist::handlers::reader::OutcomeKind::Bad
            && r.reason.as_deref().is_some_and(|s| s.contains("hey"))
    ));
}
