//! Targets that misbehave on purpose (flood, runaway task, ghost task ids, a stale push before
//! GO_SEND, silence): every run ends by itself, the misbehaving target's attempts fail with a
//! named reason, healthy targets finish the work, no row names a task outside the task-set,
//! and memory stays small.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::spec_with;
use taskdist::distributor::{Distributor, DistributorError, ProbeKind};
use taskdist::handlers::reader::{read_events, read_jobs, read_variants, OutcomeKind};
use taskdist::handlers::CsvHandler;
use taskdist::sim::{FaultKind, FaultPlan, SimCluster, SimConfig};

/// Generous bound for runs that take well under a second on an idle machine.
const RUN_BOUND: Duration = Duration::from_secs(120);

async fn cluster(n: usize, first: [u8; 4], plans: Vec<FaultPlan>) -> SimCluster {
    let mut cfg = SimConfig::default();
    cfg.faults.plans = plans;
    SimCluster::start(n, Ipv4Addr::from(first), 0, cfg)
        .await
        .expect("simulated targets start on loopback")
}

fn every_run(host: usize, kind: FaultKind) -> FaultPlan {
    FaultPlan {
        host,
        kind,
        at_run: 0,
        repeat: true,
        pkg: None,
    }
}

/// A distributor over every host of `sim`, probed by TCP.
fn builder(sim: &SimCluster) -> taskdist::DistributorBuilder {
    Distributor::builder()
        .hosts(sim.addrs().iter().map(|a| a.to_string()))
        .unwrap()
        .probe(ProbeKind::Tcp)
}

/// Run `n` variants of `spec_with` to the end (bounded), close, and return the summary and
/// the final metrics.
async fn run_to_end(
    mut d: Distributor,
    n: u64,
) -> (
    taskdist::handlers::RunSummary,
    taskdist::distributor::MetricsSnapshot,
) {
    d.start(spec_with(n as u32)).await.unwrap();
    let summary = tokio::time::timeout(RUN_BOUND, d.wait())
        .await
        .expect("the run did not end by itself")
        .unwrap();
    let m = d.metrics();
    d.close().await.unwrap();
    (summary, m)
}

/// Peak resident memory of this process, from /proc.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// Run 30 variants on three targets, host 0 showing `kind` at every run; check the outcome.
async fn healthy_targets_finish(kind: FaultKind, first: [u8; 4], reason: &str) {
    const N: u64 = 30;
    let sim = cluster(3, first, vec![every_run(0, kind)]).await;
    let dir = tempfile::tempdir().unwrap();
    let d = builder(&sim)
        .quarantine(2, Duration::from_secs(3600))
        .handler(CsvHandler::create(dir.path()).unwrap())
        .build()
        .unwrap();
    let (summary, m) = run_to_end(d, N).await;
    let bad_host = sim.addrs()[0];
    sim.shutdown().await;

    assert_eq!((summary.done, summary.bad), (N, 0), "{kind}: {summary:?}");
    let (_, t0) = m
        .targets
        .iter()
        .find(|(a, _)| *a == bad_host)
        .unwrap_or_else(|| panic!("{kind}: host 0 was never used"));
    assert!(t0.failed >= 1, "{kind}: host 0 never failed: {t0:?}");
    assert_eq!(t0.completed, 0, "{kind}: host 0 completed work: {t0:?}");
    let err = t0.last_error.as_deref().unwrap_or_default();
    assert!(
        err.contains(reason),
        "{kind}: reason {err:?} lacks {reason:?}"
    );

    // Exactly one done row per variant, and no row for a task outside the task-set.
    let variants: Vec<_> = read_variants(dir.path().join("variants.csv"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(variants.len() as u64, N);
    assert!(variants.iter().all(|v| v.outcome == OutcomeKind::Done));
    assert!(variants.iter().all(|v| v.target != bad_host));
    for e in read_events(dir.path().join("events.csv")).unwrap() {
        let e = e.unwrap();
        assert!(e.task_id <= 1, "{kind}: event row for task {}", e.task_id);
    }
    for j in read_jobs(dir.path().join("jobs.csv")).unwrap() {
        let j = j.unwrap();
        assert!(j.task_id <= 1, "{kind}: job row for task {}", j.task_id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_target_fails_at_once_and_memory_stays_small() {
    healthy_targets_finish(FaultKind::Flood, [127, 0, 40, 2], "started 4 jobs").await;
    // A flood that was never cut off grows by about 170 MB/s; the attempt fails at the
    // first START beyond numberofjobs, so the whole test process stays small.
    let peak = peak_rss_kib();
    assert!(peak < 400 * 1024, "peak RSS {peak} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_task_fails_the_attempt() {
    healthy_targets_finish(FaultKind::Runaway, [127, 0, 41, 2], "started 4 jobs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghost_task_ids_fail_the_attempt_and_write_no_rows() {
    healthy_targets_finish(FaultKind::Ghost, [127, 0, 42, 2], "not in the task-set").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_target_fails_with_a_timeout() {
    // Freeze: no pushes and no echo after START. The liveness probe or the silence limit
    // ends each attempt on it (the margin is shortened so the test is quick).
    const N: u64 = 6;
    let sim = cluster(2, [127, 0, 43, 2], vec![every_run(0, FaultKind::Freeze)]).await;
    let session = taskdist::protocol::SessionConfig {
        silence_margin: Duration::from_millis(300),
        liveness_interval: Duration::from_millis(300),
        reply_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let d = builder(&sim)
        .session(session)
        .quarantine(3, Duration::from_secs(3600))
        .build()
        .unwrap();
    let (summary, m) = run_to_end(d, N).await;
    let silent = sim.addrs()[0];
    sim.shutdown().await;
    assert_eq!((summary.done, summary.bad), (N, 0), "{summary:?}");
    let (_, t0) = m.targets.iter().find(|(a, _)| *a == silent).unwrap();
    let err = t0.last_error.as_deref().unwrap_or_default();
    assert!(err.contains("timed out"), "{err}");
}

/// The stale push before GO_SEND: with it at every load, a healthy target still completes
/// every variant, and the leftover is counted as stale, not charged to the task-set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_push_before_go_send_is_not_charged_to_the_task_set() {
    const N: u64 = 12;
    let sim = cluster(1, [127, 0, 44, 2], vec![every_run(0, FaultKind::StalePush)]).await;
    let (summary, m) = run_to_end(builder(&sim).build().unwrap(), N).await;
    let stats = sim.stats(0).unwrap();
    sim.shutdown().await;
    assert_eq!((summary.done, summary.bad), (N, 0), "{summary:?}");
    assert_eq!(m.targets[0].1.failed, 0, "{:?}", m.targets[0]);
    assert_eq!(m.stale_events, N, "one leftover per task-set");
    // The binary was sent once: it stays loaded for the whole connection.
    assert_eq!(stats.binaries_received, 1);
}

/// A fault inside a task-set on a live connection does not make the binaries count as
/// unsent: after an EXIT_ERROR the next task-set on the same target sends none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binaries_are_not_resent_after_a_fault_on_a_live_connection() {
    const N: u64 = 8;
    let sim = cluster(
        1,
        [127, 0, 45, 2],
        vec![FaultPlan {
            host: 0,
            kind: FaultKind::ExitError,
            at_run: 2,
            repeat: false,
            pkg: None,
        }],
    )
    .await;
    let (summary, _) = run_to_end(builder(&sim).build().unwrap(), N).await;
    let stats = sim.stats(0).unwrap();
    sim.shutdown().await;
    assert_eq!((summary.done, summary.bad), (N, 0), "{summary:?}");
    assert_eq!(summary.requeued, 1);
    assert!(stats.connections >= 2, "the failed session was closed");
    assert_eq!(stats.binaries_received, 1, "{stats:?}");
}

/// A pool whose only target is broken: the run gives up after `give_up_after` instead of
/// waiting forever, and the variant is not recorded bad by one target's faults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_without_a_usable_target_gives_up() {
    let sim = cluster(1, [127, 0, 46, 2], vec![every_run(0, FaultKind::Garbage)]).await;
    let mut d = builder(&sim)
        .give_up_after(Some(Duration::from_secs(2)))
        .build()
        .unwrap();
    d.start(spec_with(4)).await.unwrap();
    let res = tokio::time::timeout(RUN_BOUND, d.wait())
        .await
        .expect("the run did not end by itself");
    match res {
        Err(DistributorError::GaveUp { waited }) => assert_eq!(waited, Duration::from_secs(2)),
        other => panic!("expected GaveUp, got {other:?}"),
    }
    let m = d.metrics();
    d.close().await.unwrap();
    sim.shutdown().await;
    assert_eq!(m.done, 0);
    assert_eq!(
        m.bad, 0,
        "one broken target is no evidence against a variant"
    );
}

/// A handler that fails on its first finished task-set.
struct Failing;

#[async_trait::async_trait]
impl taskdist::handlers::EventHandler for Failing {
    async fn taskset_finished(
        &mut self,
        _v: &taskdist::handlers::VariantFinished,
    ) -> Result<(), taskdist::handlers::HandlerError> {
        Err(taskdist::handlers::HandlerError::Other(
            "disk full (test)".into(),
        ))
    }
}

/// When one handler fails, the run stops with its error, and `close` still reports the end
/// to the other handlers, flushes and joins them before returning that error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_handler_stops_the_run_and_close_still_finishes_the_others() {
    let sim = cluster(1, [127, 0, 47, 2], Vec::new()).await;
    let rec = common::Recorder::default();
    let mut d = builder(&sim)
        .handler(Failing)
        .handler(rec.clone())
        .build()
        .unwrap();
    d.start(spec_with(50)).await.unwrap();
    // Once a variant is done, the failing handler has it (or will): the run's last flush
    // fails even if close() stops the run first.
    let deadline = std::time::Instant::now() + RUN_BOUND;
    while d.metrics().done == 0 {
        assert!(std::time::Instant::now() < deadline, "no variant was done");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let err = tokio::time::timeout(RUN_BOUND, d.close())
        .await
        .expect("close did not end by itself")
        .unwrap_err();
    sim.shutdown().await;
    assert!(err.to_string().contains("disk full"), "{err}");
    let seen = rec.seen();
    assert!(seen.summary.is_some(), "run_finished was not delivered");
    assert!(seen.flushes >= 1);
}
