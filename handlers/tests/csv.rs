//! CsvHandler end to end: files, headers, rows, exactly-once, resume repair.

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::Write;

use common::*;
use taskdist_handlers::reader::{self, OutcomeKind};
use taskdist_handlers::{
    AttemptId, CsvHandler, EventHandler, EventKind, HandlerError, TargetEvent, TimedEvent,
    VariantStarted, VariantStopped,
};

fn first_line(path: &std::path::Path) -> String {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn headers_are_stable() {
    let dir = tempfile::tempdir().unwrap();
    let _h = CsvHandler::create(dir.path()).unwrap();
    // These exact lines are documented in handlers/README.md; changing them breaks users.
    assert_eq!(
        first_line(&dir.path().join("events.csv")),
        "variant,attempt,seq,target,task_id,job,type,target_time_ms,host_time_us"
    );
    assert_eq!(
        first_line(&dir.path().join("jobs.csv")),
        "variant,attempt,target,task_id,job,start_ms,end_ms,exit_type,duration_ms"
    );
    assert_eq!(
        first_line(&dir.path().join("variants.csv")),
        "variant,outcome,attempts,target,started_host_us,finished_host_us,duration_us,tasks,events,reason"
    );
    assert_eq!(
        first_line(&dir.path().join("tasks.csv")),
        "variant,task_id,executiontime_ms,criticaltime_ms,priority,deadline_ms,period_ms,offset_ms,numberofjobs,quota_bytes,caps,cores,coreoffset,pkg,config"
    );
}

#[tokio::test]
async fn full_run_writes_one_row_per_variant_and_only_finished_events() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut h = CsvHandler::create(&out).unwrap();
    h.run_started(&run_info()).await.unwrap();

    let v0 = finished(0, 2, 3, 10);
    // A first attempt that streamed live events and then failed: nothing of it is written.
    let first = AttemptId {
        variant: 0,
        attempt: 1,
        target: target(),
    };
    h.taskset_started(&VariantStarted {
        id: first,
        taskset: v0.taskset.clone(),
        started_at: host(T0_US),
    })
    .await
    .unwrap();
    h.events(&first, &v0.events[..5]).await.unwrap();
    h.taskset_stopped(&VariantStopped {
        id: first,
        reason: "timeout".into(),
    })
    .await
    .unwrap();
    // The second attempt finishes; its live events are also monitoring only.
    h.events(&v0.id, &v0.events).await.unwrap();
    h.taskset_finished(&v0).await.unwrap();
    h.taskset_bad(&bad(1, "connection lost\nafter 3 attempts"))
        .await
        .unwrap();
    h.flush().await.unwrap();

    let events: Vec<_> = reader::read_events(out.join("events.csv"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(events.len(), 63);
    assert!(events.iter().all(|e| e.variant == 0 && e.attempt == 2));
    assert_eq!(events[0].seq, 0);
    assert_eq!(events[62].seq, 62);
    assert_eq!(events[0].target, target());
    assert_eq!(events[0].kind, EventKind::Start);
    assert_eq!(events[0].target_time_ms, 1000);
    assert_eq!(events[0].host_time_us, T0_US);
    // Job numbers: the n-th START of a task opens job n, its EXIT carries the same number.
    let task1: Vec<(EventKind, u32)> = events
        .iter()
        .filter(|e| e.task_id == 1)
        .map(|e| (e.kind.clone(), e.job))
        .collect();
    assert_eq!(task1[0], (EventKind::Start, 1));
    assert_eq!(task1[1], (EventKind::Exit, 1));
    assert_eq!(task1[2], (EventKind::Start, 2));
    assert_eq!(task1[3], (EventKind::ExitCritical, 2));
    assert_eq!(task1[20], (EventKind::JobsDone, 0));

    let jobs: Vec<_> = reader::read_jobs(out.join("jobs.csv"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(jobs.len(), 30);
    let j = &jobs[11]; // task 1, job 2
    assert_eq!((j.task_id, j.job), (1, 2));
    assert_eq!(j.start_ms, Some(1101));
    assert_eq!(j.end_ms, Some(1107));
    assert_eq!(j.duration_ms, Some(6));
    assert_eq!(j.exit_type, Some(EventKind::ExitCritical));

    let variants: Vec<_> = reader::read_variants(out.join("variants.csv"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(variants.len(), 2);
    assert_eq!(variants[0].outcome, OutcomeKind::Done);
    assert_eq!(variants[0].attempts, 2);
    assert_eq!(variants[0].events, 63);
    assert_eq!(variants[0].tasks, 3);
    assert_eq!(variants[0].duration_us, 500_000);
    assert_eq!(variants[0].reason, None);
    assert_eq!(variants[1].outcome, OutcomeKind::Bad);
    assert_eq!(variants[1].target, "[::1]:3002".parse().unwrap());
    assert_eq!(variants[1].events, 0);
    assert_eq!(
        variants[1].reason.as_deref(),
        Some("connection lost after 3 attempts")
    );

    let tasks: Vec<_> = reader::read_tasks(out.join("tasks.csv"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(tasks.len(), 5);
    assert_eq!(tasks[1].to_task(), v0.taskset.tasks[1]);
    assert_eq!(tasks[1].config, "arg1=100000");
    assert_eq!(tasks[4].variant, 1);

    h.run_finished(&summary(1, 1, 63)).await.unwrap();
    let run = reader::read_run(&out).unwrap();
    assert_eq!(run.spec_name, "hey");
    assert_eq!(run.seed, 42);
    assert_eq!(run.resumed, 0);
    assert_eq!(run.summary, Some(summary(1, 1, 63)));
    assert!(run.finished_at_unix_us.is_some());
}

#[test]
fn create_refuses_existing_results_and_overwrite_truncates() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut h = CsvHandler::create(dir.path()).unwrap();
        h.write_finished(&finished(0, 1, 2, 2)).unwrap();
    }
    match CsvHandler::create(dir.path()) {
        Err(HandlerError::Exists { path }) => assert!(path.ends_with("events.csv")),
        other => panic!("expected Exists, got {other:?}"),
    }
    let _h = CsvHandler::create_overwrite(dir.path()).unwrap();
    assert_eq!(
        reader::read_events(dir.path().join("events.csv"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn unusual_text_stays_on_one_line_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = CsvHandler::create(dir.path()).unwrap();
    let mut v = finished(7, 1, 1, 1);
    v.events.insert(
        1,
        TimedEvent {
            event: TargetEvent {
                kind: EventKind::Other("ODD,\"TYPE\"\nX".into()),
                task_id: 0,
                time_ms: 1001,
            },
            host_time: host(T0_US),
        },
    );
    let mut ts = (*v.taskset).clone();
    ts.tasks[0].config = vec![("s".into(), r"a;b\c".into())];
    v.taskset = ts.into();
    h.write_finished(&v).unwrap();
    h.flush_files().unwrap();
    let text = fs::read_to_string(dir.path().join("events.csv")).unwrap();
    assert_eq!(text.lines().count(), 1 + 4);
    let events: Vec<_> = reader::read_events(dir.path().join("events.csv"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(events[1].kind, EventKind::Other("ODD,\"TYPE\" X".into()));
    assert_eq!(events[1].job, 0);
    let tasks: Vec<_> = reader::read_tasks(dir.path().join("tasks.csv"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        tasks[0].to_task().config,
        vec![("s".into(), r"a;b\c".into())]
    );
}

#[tokio::test]
async fn resume_keeps_done_variants_drops_the_rest_and_continues() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut h = CsvHandler::create(dir.path()).unwrap();
        h.run_started(&run_info()).await.unwrap();
        for v in 0..6 {
            h.taskset_finished(&finished(v, 1, 3, 10)).await.unwrap();
        }
        h.taskset_bad(&bad(6, "target fault")).await.unwrap();
        h.flush().await.unwrap();
        // Variants 2 and 6 were written but the ledger never recorded them (crash between
        // flush and ledger write); variant 7 was being written when the process died.
        h.taskset_finished(&finished(7, 1, 3, 10)).await.unwrap();
        h.flush().await.unwrap();
        // Dropping would flush; simulate kill -9 by leaving files as they are on disk.
        std::mem::forget(h);
    }
    for name in ["events.csv", "jobs.csv", "variants.csv", "tasks.csv"] {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(name))
            .unwrap();
        f.write_all(b"8,1,0,127.0.0.1:30").unwrap();
    }
    let done = |v: u64| v < 6 && v != 2;
    let mut h = CsvHandler::resume(dir.path(), &done).unwrap();
    for name in ["events.csv", "jobs.csv", "variants.csv", "tasks.csv"] {
        let text = fs::read_to_string(dir.path().join(name)).unwrap();
        assert!(text.ends_with('\n'), "{name} still has a torn line");
    }
    let variants: Vec<u64> = reader::read_variants(dir.path().join("variants.csv"))
        .unwrap()
        .map(|r| r.unwrap().variant)
        .collect();
    assert_eq!(variants, vec![0, 1, 3, 4, 5]);

    // The run continues: the dropped variants are redone.
    h.run_started(&run_info()).await.unwrap();
    for v in [2, 7, 8] {
        h.taskset_finished(&finished(v, 2, 3, 10)).await.unwrap();
    }
    h.taskset_bad(&bad(6, "target fault")).await.unwrap();
    h.run_finished(&summary(8, 1, 8 * 63)).await.unwrap();

    let mut per_variant: HashMap<u64, usize> = HashMap::new();
    for row in reader::read_variants(dir.path().join("variants.csv")).unwrap() {
        *per_variant.entry(row.unwrap().variant).or_default() += 1;
    }
    assert_eq!(per_variant.len(), 9);
    assert!(per_variant.values().all(|&n| n == 1), "{per_variant:?}");
    let mut events: HashMap<u64, Vec<u64>> = HashMap::new();
    for row in reader::read_events(dir.path().join("events.csv")).unwrap() {
        let row = row.unwrap();
        events.entry(row.variant).or_default().push(row.seq);
    }
    assert_eq!(events.len(), 8);
    for (v, seqs) in &events {
        assert_eq!(seqs, &(0..63).collect::<Vec<u64>>(), "variant {v}");
    }
    let jobs = reader::read_jobs(dir.path().join("jobs.csv"))
        .unwrap()
        .count();
    assert_eq!(jobs, 8 * 30);
    let tasks = reader::read_tasks(dir.path().join("tasks.csv"))
        .unwrap()
        .count();
    assert_eq!(tasks, 8 * 3 + 2);
    let run = reader::read_run(dir.path()).unwrap();
    assert_eq!(run.resumed, 1);
}

#[test]
fn resume_of_an_empty_or_missing_directory_starts_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("new");
    let mut h = CsvHandler::resume(&out, &|_| true).unwrap();
    h.write_finished(&finished(0, 1, 1, 1)).unwrap();
    h.flush_files().unwrap();
    assert_eq!(
        reader::read_events(out.join("events.csv")).unwrap().count(),
        3
    );
}

#[test]
fn resume_refuses_a_foreign_file_without_touching_anything() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut h = CsvHandler::create(dir.path()).unwrap();
        h.write_finished(&finished(0, 1, 1, 1)).unwrap();
    }
    fs::write(dir.path().join("jobs.csv"), "a,b\n1,2\n").unwrap();
    let before = fs::read(dir.path().join("events.csv")).unwrap();
    let err = CsvHandler::resume(dir.path(), &|_| false).unwrap_err();
    assert!(
        matches!(&err, HandlerError::Format { path, line: 1, .. } if path.ends_with("jobs.csv")),
        "{err}"
    );
    assert_eq!(fs::read(dir.path().join("events.csv")).unwrap(), before);
}
