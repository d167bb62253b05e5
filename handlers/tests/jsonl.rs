//! JsonlHandler end to end: records parse back, resume repair.

mod common;

use std::fs;
use std::io::Write;

use common::*;
use taskdist_handlers::reader::{self, JsonlRecord, OutcomeKind};
use taskdist_handlers::{EventHandler, EventKind, HandlerError, JsonlHandler};

fn records(path: &std::path::Path) -> Vec<JsonlRecord> {
    reader::read_jsonl(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn run_variants_and_summary_parse_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/results.jsonl");
    let mut h = JsonlHandler::create(&path).unwrap();
    let mut info = run_info();
    info.total_variants = Some(u128::from(u64::MAX) * 4);
    h.run_started(&info).await.unwrap();
    let v0 = finished(0, 1, 3, 10);
    h.events(&v0.id, &v0.events).await.unwrap();
    h.taskset_finished(&v0).await.unwrap();
    h.taskset_bad(&bad(1, "timeout\nno frame for 40 s"))
        .await
        .unwrap();
    h.run_finished(&summary(1, 1, 63)).await.unwrap();

    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 4);
    assert!(text.starts_with(r#"{"record":"run","#));
    let recs = records(&path);
    let JsonlRecord::Run(run) = &recs[0] else {
        panic!("expected run, got {:?}", recs[0]);
    };
    assert_eq!(run.total_variants, Some(u128::from(u64::MAX) * 4));
    assert_eq!(run.command, info.command);
    let JsonlRecord::Variant(v) = &recs[1] else {
        panic!("expected variant, got {:?}", recs[1]);
    };
    assert_eq!(v.variant, 0);
    assert_eq!(v.outcome, OutcomeKind::Done);
    assert_eq!(v.events.len(), 63);
    assert_eq!(v.jobs.len(), 30);
    assert_eq!(v.tasks, v0.taskset.tasks);
    assert_eq!(v.events[0].kind, EventKind::Start);
    assert_eq!(v.events[0].job, 1);
    assert_eq!(v.events[0].host_time_us, T0_US);
    assert_eq!(v.jobs[11].exit_type, Some(EventKind::ExitCritical));
    assert_eq!(v.jobs[11].duration_ms, Some(6));
    let JsonlRecord::Variant(b) = &recs[2] else {
        panic!("expected variant, got {:?}", recs[2]);
    };
    assert_eq!(b.outcome, OutcomeKind::Bad);
    assert_eq!(b.reason.as_deref(), Some("timeout\nno frame for 40 s"));
    assert!(b.events.is_empty());
    let JsonlRecord::Summary(s) = &recs[3] else {
        panic!("expected summary, got {:?}", recs[3]);
    };
    assert_eq!(s.summary, summary(1, 1, 63));

    assert!(matches!(
        JsonlHandler::create(&path),
        Err(HandlerError::Exists { .. })
    ));
}

#[tokio::test]
async fn resume_drops_not_done_variants_and_a_torn_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.jsonl");
    {
        let mut h = JsonlHandler::create(&path).unwrap();
        h.run_started(&run_info()).await.unwrap();
        for v in 0..4 {
            h.taskset_finished(&finished(v, 1, 2, 3)).await.unwrap();
        }
        h.flush().await.unwrap();
    }
    let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(br#"{"record":"variant","variant":4,"outcome":"do"#)
        .unwrap();
    drop(f);

    let mut h = JsonlHandler::resume(&path, &|v| v != 1).unwrap();
    h.run_started(&run_info()).await.unwrap();
    h.taskset_finished(&finished(1, 2, 2, 3)).await.unwrap();
    h.taskset_finished(&finished(4, 1, 2, 3)).await.unwrap();
    h.run_finished(&summary(2, 0, 26)).await.unwrap();

    let recs = records(&path);
    let variants: Vec<(u64, u32)> = recs
        .iter()
        .filter_map(|r| match r {
            JsonlRecord::Variant(v) => Some((v.variant, v.attempts)),
            _ => None,
        })
        .collect();
    assert_eq!(variants, vec![(0, 1), (2, 1), (3, 1), (1, 2), (4, 1)]);
    let runs: Vec<u32> = recs
        .iter()
        .filter_map(|r| match r {
            JsonlRecord::Run(r) => Some(r.resumed),
            _ => None,
        })
        .collect();
    assert_eq!(runs, vec![0, 1]);

    // A second resume continues the count.
    let mut h = JsonlHandler::resume(&path, &|_| true).unwrap();
    h.run_started(&run_info()).await.unwrap();
    h.flush().await.unwrap();
    let last_run = records(&path)
        .into_iter()
        .rev()
        .find_map(|r| match r {
            JsonlRecord::Run(r) => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(last_run.resumed, 2);
    assert_eq!(last_run.first_started_at_unix_us, T0_US);
}

#[test]
fn reader_names_the_line_of_a_broken_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.jsonl");
    fs::write(&path, "{\"record\":\"summary\",\"finished_at_unix_us\":1,\"done\":1,\"bad\":0,\"requeued\":0,\"events\":0,\"interrupted\":false,\"elapsed_s\":1.0}\n{\"record\":\"nope\"}\n").unwrap();
    let mut it = reader::read_jsonl(&path).unwrap();
    assert!(matches!(it.next(), Some(Ok(JsonlRecord::Summary(_)))));
    match it.next() {
        Some(Err(HandlerError::Format { line, reason, .. })) => {
            assert_eq!(line, 2);
            assert!(reason.contains("unknown record"), "{reason}");
        }
        other => panic!("expected a format error, got {other:?}"),
    }
}
