//! ConsoleHandler output and the sequential combinators.

mod common;

use common::*;
use taskdist_handlers::{
    reader, AttemptId, ConsoleHandler, CsvHandler, EventHandler, EventKind, Multi, TargetEvent,
    TimedEvent, VariantStopped,
};

#[tokio::test]
async fn console_prints_counts_histogram_and_reasons() {
    let capture = Capture::default();
    let mut h = ConsoleHandler::new(Box::new(capture.clone()));
    h.run_started(&run_info()).await.unwrap();
    assert_eq!(
        capture.text(),
        "run hey started: seed 42, dialect v3, 10 variants planned\n"
    );
    let mut v = finished(0, 1, 3, 10);
    v.events.push(TimedEvent {
        event: TargetEvent {
            kind: EventKind::Other("SURPRISE".into()),
            task_id: 0,
            time_ms: 5000,
        },
        host_time: host(T0_US),
    });
    h.taskset_finished(&v).await.unwrap();
    h.taskset_finished(&finished(1, 1, 3, 10)).await.unwrap();
    for _ in 0..2 {
        h.taskset_stopped(&VariantStopped {
            id: AttemptId {
                variant: 2,
                attempt: 1,
                target: target(),
            },
            reason: "timeout: no frame for 40 s\nmore detail".into(),
        })
        .await
        .unwrap();
    }
    h.taskset_bad(&bad(2, "timeout: no frame for 40 s"))
        .await
        .unwrap();
    h.run_finished(&summary(2, 1, 127)).await.unwrap();
    let text = capture.text();
    assert!(text.contains("run summary (hey)\n"), "{text}");
    assert!(
        text.contains("  variants: 2 done, 1 bad, 3 with an outcome\n"),
        "{text}"
    );
    assert!(text.contains("  attempts requeued: 2\n"), "{text}");
    assert!(
        text.contains("  finished attempts: 127 events, 60 jobs ended\n"),
        "{text}"
    );
    // 60 START of 127 events.
    assert!(
        text.contains("    START                      60  47.24%\n"),
        "{text}"
    );
    assert!(
        text.contains("    EXIT_CRITICAL               2   1.57%\n"),
        "{text}"
    );
    assert!(
        text.contains("    SURPRISE                    1   0.79%\n"),
        "{text}"
    );
    assert!(
        text.contains("  requeue reasons:\n           2x timeout: no frame for 40 s\n"),
        "{text}"
    );
    assert!(
        text.contains("  bad reasons:\n           1x timeout: no frame for 40 s\n"),
        "{text}"
    );
    assert!(text.contains("1.5 variants/s, 64 events/s"), "{text}");
    assert!(!text.contains("note:"), "{text}");
}

#[tokio::test]
async fn multi_and_vec_pass_every_call_to_every_handler() {
    let dir = tempfile::tempdir().unwrap();
    let capture = Capture::default();
    let mut multi = Multi::new();
    multi.push(CsvHandler::create(dir.path().join("a")).unwrap());
    multi.push(ConsoleHandler::new(Box::new(capture.clone())));
    let mut all: Vec<Box<dyn EventHandler>> = vec![
        Box::new(multi),
        Box::new(CsvHandler::create(dir.path().join("b")).unwrap()),
    ];
    all.run_started(&run_info()).await.unwrap();
    all.taskset_finished(&finished(0, 1, 2, 2)).await.unwrap();
    all.flush().await.unwrap();
    for sub in ["a", "b"] {
        let n = reader::read_events(dir.path().join(sub).join("events.csv"))
            .unwrap()
            .count();
        assert_eq!(n, 10, "{sub}");
    }
    all.run_finished(&summary(1, 0, 10)).await.unwrap();
    assert!(capture.text().contains("1 done, 0 bad"));
}
