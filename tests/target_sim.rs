//! The client session against the simulated target, for each dialect and each fault.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use taskdist::handlers::{EventKind, TimedEvent};
use taskdist::protocol::{
    probe_available, Binaries, Dialect, ErrorKind, Session, SessionConfig, TargetError, TasksetRun,
};
use taskdist::sim::{FaultKind, FaultPlan, SimCluster, SimConfig, Speed};
use taskdist::{AdmissionControl, Goal, Task, TaskSet};
use tokio_util::sync::CancellationToken;

fn task(id: u32, pkg: &str, period: u64, jobs: u32) -> Task {
    let mut t = Task::new(id, pkg);
    t.period_ms = period;
    t.numberofjobs = jobs;
    t
}

fn sample_set() -> TaskSet {
    let mut a = task(0, "hey", 100, 3);
    a.priority = 10;
    let mut b = task(1, "pi", 200, 2);
    b.offset_ms = 50;
    b.priority = 20;
    b.config.push(("arg1".into(), "100000".into()));
    let mut c = task(2, "idle", 50, 2);
    c.criticaltime_ms = 20;
    TaskSet::new(vec![a, b, c]).unwrap()
}

/// Short intervals so the tests run fast, but timeouts that a loaded machine does not hit by
/// accident: a test that expects a timeout sets its own short one, against a fault that
/// delays far longer.
fn fast_cfg(dialect: Dialect) -> SessionConfig {
    SessionConfig {
        dialect,
        connect_timeout: Duration::from_secs(10),
        reply_timeout: Duration::from_secs(5),
        drain_window: Duration::from_millis(30),
        liveness_interval: Duration::from_millis(100),
        silence_margin: Duration::from_secs(10),
        poll_interval: Duration::from_millis(20),
        ..SessionConfig::default()
    }
}

async fn cluster(n: usize, first: u8, cfg: SimConfig) -> SimCluster {
    SimCluster::start(n, Ipv4Addr::new(127, 0, 0, first), 0, cfg)
        .await
        .expect("simulated cluster starts")
}

async fn run(
    s: &mut Session,
    set: &TaskSet,
    ac: Option<&AdmissionControl>,
    sent: &mut HashSet<String>,
) -> Result<TasksetRun, TargetError> {
    let mut live = 0usize;
    let r = s
        .run_taskset(
            set,
            ac,
            &Binaries::synthetic(),
            sent,
            &mut |ev: &[TimedEvent]| live += ev.len(),
            &CancellationToken::new(),
        )
        .await;
    if let Ok(run) = &r {
        assert_eq!(live, run.events.len(), "live callback saw every event");
    }
    r
}

fn kinds_of(run: &TasksetRun, id: u32) -> Vec<EventKind> {
    run.events
        .iter()
        .filter(|e| e.event.task_id == id)
        .map(|e| e.event.kind.clone())
        .collect()
}

async fn dialect_round_trip(dialect: Dialect, first: u8) {
    let sim = cluster(
        1,
        first,
        SimConfig {
            dialect,
            ..SimConfig::default()
        },
    )
    .await;
    let addr = sim.addrs()[0];
    let mut s = Session::connect(addr, fast_cfg(dialect)).await.unwrap();
    let mut sent = HashSet::new();
    let set = sample_set();
    let mut last_time = 0;
    for round in 0..3 {
        let r = run(&mut s, &set, None, &mut sent).await.unwrap();
        if round == 0 {
            assert_eq!(r.binaries_sent, vec!["hey", "pi", "idle"]);
        } else {
            assert!(r.binaries_sent.is_empty());
        }
        for c in &r.counts {
            assert!(c.done);
            assert_eq!(c.ended, c.expected_jobs);
        }
        assert_eq!(
            kinds_of(&r, 0),
            [
                EventKind::Start,
                EventKind::Exit,
                EventKind::Start,
                EventKind::Exit,
                EventKind::Start,
                EventKind::Exit,
                EventKind::JobsDone
            ]
        );
        assert_eq!(
            kinds_of(&r, 2),
            [
                EventKind::Start,
                EventKind::ExitCritical,
                EventKind::Start,
                EventKind::ExitCritical,
                EventKind::JobsDone
            ]
        );
        // time stamps are monotonic across task-sets
        let first_t = r.events[0].event.time_ms;
        assert!(first_t >= last_time, "{first_t} < {last_time}");
        last_time = r.events.iter().map(|e| e.event.time_ms).max().unwrap();
    }
    assert_eq!(sim.stats(0).unwrap().binaries_received, 3);
    assert_eq!(sim.stats(0).unwrap().runs, 3);
    s.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn v3_runs_task_sets_in_a_row() {
    dialect_round_trip(Dialect::V3, 10).await;
}

#[tokio::test]
async fn v2_runs_task_sets_in_a_row() {
    dialect_round_trip(Dialect::V2, 20).await;
}

#[tokio::test]
async fn v1_runs_task_sets_in_a_row() {
    dialect_round_trip(Dialect::V1, 30).await;
}

#[tokio::test]
async fn v1_admission_control_rejects_overload() {
    let sim = cluster(
        1,
        40,
        SimConfig {
            dialect: Dialect::V1,
            ..SimConfig::default()
        },
    )
    .await;
    let mut s = Session::connect(sim.addrs()[0], fast_cfg(Dialect::V1))
        .await
        .unwrap();
    // two tasks of 60 ms each per 100 ms on one core: the lower priority one fails RTA
    let mut a = task(0, "hey", 100, 2);
    a.executiontime_ms = 60;
    a.priority = 1;
    let mut b = task(1, "hey", 100, 2);
    b.executiontime_ms = 60;
    b.priority = 2;
    let set = TaskSet::new(vec![a, b]).unwrap();
    let ac = AdmissionControl {
        goal: Goal::Utilization,
        query_interval_ms: 1000,
    };
    let mut sent = HashSet::new();
    let r = run(&mut s, &set, Some(&ac), &mut sent).await.unwrap();
    assert_eq!(
        kinds_of(&r, 1),
        [
            EventKind::NotScheduled,
            EventKind::NotScheduled,
            EventKind::JobsDone
        ]
    );
    assert_eq!(kinds_of(&r, 0).first(), Some(&EventKind::Start));
    // without admission data both run, the second one is killed at its period
    let r = run(&mut s, &set, None, &mut sent).await.unwrap();
    assert!(kinds_of(&r, 1).contains(&EventKind::ExitPeriod));
    sim.shutdown().await;
}

#[tokio::test]
async fn admission_data_is_refused_for_v2_and_v3_before_sending() {
    for (dialect, first) in [(Dialect::V2, 41), (Dialect::V3, 42)] {
        let sim = cluster(
            1,
            first,
            SimConfig {
                dialect,
                ..SimConfig::default()
            },
        )
        .await;
        let mut s = Session::connect(sim.addrs()[0], fast_cfg(dialect))
            .await
            .unwrap();
        let ac = AdmissionControl {
            goal: Goal::Fairness,
            query_interval_ms: 10,
        };
        let mut sent = HashSet::new();
        let e = run(&mut s, &sample_set(), Some(&ac), &mut sent)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(sent.is_empty());
        // the session is still usable and nothing reached the target
        run(&mut s, &sample_set(), None, &mut sent).await.unwrap();
        assert_eq!(sim.stats(0).unwrap().runs, 1);
        sim.shutdown().await;
    }
}

async fn faulty(kind: FaultKind, first: u8, cfg_mod: impl FnOnce(&mut SimConfig)) -> SimCluster {
    let mut cfg = SimConfig::default();
    cfg.faults.plans.push(FaultPlan {
        host: 0,
        kind,
        at_run: 1,
        repeat: false,
        pkg: None,
    });
    cfg_mod(&mut cfg);
    cluster(1, first, cfg).await
}

/// Runs a good task-set (run 0), then the faulty one (run 1); returns the error.
async fn second_run_error(sim: &SimCluster, cfg: SessionConfig) -> TargetError {
    let mut s = Session::connect(sim.addrs()[0], cfg).await.unwrap();
    let mut sent = HashSet::new();
    run(&mut s, &sample_set(), None, &mut sent).await.unwrap();
    let e = run(&mut s, &sample_set(), None, &mut sent)
        .await
        .unwrap_err();
    assert!(s.is_broken() || e.kind() == ErrorKind::TargetFault);
    e
}

#[tokio::test]
async fn fault_freeze_times_out_through_liveness_probe() {
    let sim = faulty(FaultKind::Freeze, 50, |_| {}).await;
    let mut cfg = fast_cfg(Dialect::V3);
    cfg.silence_margin = Duration::from_secs(3600);
    // A frozen target never answers: any reply timeout ends in a timeout.
    cfg.reply_timeout = Duration::from_millis(500);
    let e = second_run_error(&sim, cfg).await;
    match e {
        TargetError::Timeout { waiting_for, .. } => assert!(waiting_for.contains("AVAILABLE")),
        other => panic!("expected a timeout, got {other}"),
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn fault_freeze_times_out_by_silence_limit_on_v2() {
    let sim = faulty(FaultKind::Freeze, 51, |c| c.dialect = Dialect::V2).await;
    let mut cfg = fast_cfg(Dialect::V2);
    cfg.silence_margin = Duration::from_millis(200);
    let e = second_run_error(&sim, cfg).await;
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    sim.shutdown().await;
}

#[tokio::test]
async fn fault_drop_is_connection_lost() {
    let sim = faulty(FaultKind::Drop, 52, |_| {}).await;
    let e = second_run_error(&sim, fast_cfg(Dialect::V3)).await;
    assert_eq!(e.kind(), ErrorKind::ConnectionLost, "{e}");
    assert!(e.target_suspect());
    sim.shutdown().await;
}

#[tokio::test]
async fn fault_garbage_is_protocol_error() {
    let sim = faulty(FaultKind::Garbage, 53, |_| {}).await;
    let e = second_run_error(&sim, fast_cfg(Dialect::V3)).await;
    assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
    sim.shutdown().await;
}

#[tokio::test]
async fn fault_oversized_is_protocol_error() {
    let sim = faulty(FaultKind::Oversized, 54, |_| {}).await;
    let e = second_run_error(&sim, fast_cfg(Dialect::V3)).await;
    match &e {
        TargetError::Protocol { detail, .. } => assert!(detail.contains("cap"), "{detail}"),
        other => panic!("expected protocol error, got {other}"),
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn fault_exit_error_is_target_fault() {
    let sim = faulty(FaultKind::ExitError, 55, |_| {}).await;
    let e = second_run_error(&sim, fast_cfg(Dialect::V3)).await;
    assert_eq!(e.kind(), ErrorKind::TargetFault, "{e}");
    assert!(e.to_string().contains("EXIT_ERROR"));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_fault_filtered_by_binary_hits_only_task_sets_using_it() {
    let mut cfg = SimConfig::default();
    // Every run with a `pi` task fails, from the second such run on.
    cfg.faults
        .plans
        .push("0=exit-error@1+/pkg=pi".parse().unwrap());
    let sim = cluster(1, 67, cfg).await;
    let mut s = Session::connect(sim.addrs()[0], fast_cfg(Dialect::V3))
        .await
        .unwrap();
    let mut sent = HashSet::new();
    let with_pi = sample_set();
    let without = TaskSet::new(vec![task(0, "hey", 100, 3), task(1, "idle", 50, 2)]).unwrap();
    // pi run 0: not hit yet.
    run(&mut s, &with_pi, None, &mut sent).await.unwrap();
    for round in 0..3 {
        let e = run(&mut s, &with_pi, None, &mut sent)
            .await
            .expect_err("a task-set using pi fails");
        assert_eq!(e.kind(), ErrorKind::TargetFault, "round {round}: {e}");
        assert!(e.to_string().contains("EXIT_ERROR"), "{e}");
        if s.is_broken() {
            s = Session::connect(sim.addrs()[0], fast_cfg(Dialect::V3))
                .await
                .unwrap();
        }
        // The same host runs a task-set without pi cleanly.
        let r = run(&mut s, &without, None, &mut sent).await.unwrap();
        assert!(r
            .counts
            .iter()
            .all(|c| c.done && c.ended == c.expected_jobs));
    }
    let stats = sim.stats(0).unwrap();
    assert_eq!((stats.runs, stats.faults), (7, 3));
    sim.shutdown().await;
}

#[tokio::test]
async fn fault_slow_answer_times_out_or_succeeds_by_reply_timeout() {
    let sim = faulty(FaultKind::Slow, 56, |c| {
        c.faults.slow_delay = Duration::from_millis(300);
        c.faults.plans[0].at_run = 0;
        c.faults.plans[0].repeat = true;
    })
    .await;
    let mut cfg = fast_cfg(Dialect::V3);
    cfg.reply_timeout = Duration::from_millis(100);
    let e = probe_available(sim.addrs()[0], &cfg).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    cfg.reply_timeout = Duration::from_secs(3);
    cfg.liveness_interval = Duration::from_secs(1);
    probe_available(sim.addrs()[0], &cfg).await.unwrap();
    let mut s = Session::connect(sim.addrs()[0], cfg).await.unwrap();
    let mut sent = HashSet::new();
    run(&mut s, &sample_set(), None, &mut sent).await.unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn fault_refuse_is_refused() {
    let mut cfg = SimConfig::default();
    cfg.faults.plans.push("1=refuse".parse().unwrap());
    let sim = cluster(2, 57, cfg).await;
    assert!(sim.is_refusing(1));
    let e = Session::connect(sim.addrs()[1], fast_cfg(Dialect::V3))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused);
    assert!(e.is_retryable());
    probe_available(sim.addrs()[0], &fast_cfg(Dialect::V3))
        .await
        .unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn fault_reboot_forgets_binaries() {
    let sim = faulty(FaultKind::Reboot, 59, |_| {}).await;
    let addr = sim.addrs()[0];
    let mut sent = HashSet::new();
    let e = {
        let mut s = Session::connect(addr, fast_cfg(Dialect::V3)).await.unwrap();
        run(&mut s, &sample_set(), None, &mut sent).await.unwrap();
        run(&mut s, &sample_set(), None, &mut sent)
            .await
            .unwrap_err()
    };
    assert_eq!(e.kind(), ErrorKind::ConnectionLost, "{e}");
    // a client that still believes its binaries are loaded gets EXIT_ERROR
    let mut s = Session::connect(addr, fast_cfg(Dialect::V3)).await.unwrap();
    let e = run(&mut s, &sample_set(), None, &mut sent)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TargetFault, "{e}");
    // forgetting what was sent fixes it, on the same session
    sent.clear();
    let r = run(&mut s, &sample_set(), None, &mut sent).await.unwrap();
    assert_eq!(r.binaries_sent.len(), 3);
    assert_eq!(sim.stats(0).unwrap().reboots, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn second_connection_waits_until_first_closes() {
    let sim = cluster(1, 60, SimConfig::default()).await;
    let addr = sim.addrs()[0];
    let mut cfg = fast_cfg(Dialect::V3);
    let mut first = Session::connect(addr, cfg.clone()).await.unwrap();
    first.check_alive().await.unwrap();
    cfg.reply_timeout = Duration::from_millis(150);
    let e = probe_available(addr, &cfg).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    // the stalled probe connection is closed; once the first session closes, probes pass
    first.close().await;
    cfg.reply_timeout = Duration::from_secs(2);
    probe_available(addr, &cfg).await.unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn long_periods_on_a_healthy_target_survive_via_liveness() {
    // 400 ms periods at speed factor 4 = 100 ms real; liveness probes every 20 ms
    let sim = cluster(
        1,
        61,
        SimConfig {
            speed: Speed::Factor(4.0),
            clear_block: Duration::from_millis(40),
            ..SimConfig::default()
        },
    )
    .await;
    let mut cfg = fast_cfg(Dialect::V3);
    cfg.liveness_interval = Duration::from_millis(20);
    cfg.reply_timeout = Duration::from_secs(2);
    let mut s = Session::connect(sim.addrs()[0], cfg).await.unwrap();
    let set = TaskSet::new(vec![task(0, "hey", 400, 2), task(1, "idle", 300, 1)]).unwrap();
    let mut sent = HashSet::new();
    let r = run(&mut s, &set, None, &mut sent).await.unwrap();
    assert_eq!(
        kinds_of(&r, 1),
        [EventKind::Start, EventKind::ExitPeriod, EventKind::JobsDone]
    );
    // the probes were answered: more commands than the plain cycle needs
    assert!(sim.stats(0).unwrap().commands > 8);
    sim.shutdown().await;
}

#[tokio::test]
async fn cancel_stops_and_clears() {
    let sim = cluster(
        1,
        62,
        SimConfig {
            speed: Speed::RealTime,
            clear_block: Duration::from_millis(10),
            ..SimConfig::default()
        },
    )
    .await;
    let mut s = Session::connect(sim.addrs()[0], fast_cfg(Dialect::V3))
        .await
        .unwrap();
    let set = TaskSet::new(vec![task(0, "idle", 60_000, 5)]).unwrap();
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c2.cancel();
    });
    let mut sent = HashSet::new();
    let e = s
        .run_taskset(
            &set,
            None,
            &Binaries::synthetic(),
            &mut sent,
            &mut |_| {},
            &cancel,
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    assert!(!s.is_broken());
    // the target is clear again: a new short task-set runs on the same session
    let quick = TaskSet::new(vec![task(0, "hey", 5, 1)]).unwrap();
    let r = run(&mut s, &quick, None, &mut sent).await.unwrap();
    assert_eq!(r.counts[0].ended, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn real_time_clear_pushes_exit_external_before_the_fence() {
    let sim = cluster(
        1,
        63,
        SimConfig {
            speed: Speed::Factor(10.0),
            clear_block: Duration::from_millis(100),
            ..SimConfig::default()
        },
    )
    .await;
    let mut s = Session::connect(sim.addrs()[0], fast_cfg(Dialect::V3))
        .await
        .unwrap();
    let mut sent = HashSet::new();
    // load and start a long task by hand, then let run_taskset's CLEAR kill it
    s.clear().await.unwrap();
    // 5000 jobs of 200 ms: 100 s of real time at factor 10, still running at the CLEAR however
    // slow this machine is.
    let long = TaskSet::new(vec![task(0, "idle", 200, 5000)]).unwrap();
    s.load(&long, None, &Binaries::synthetic(), &mut sent)
        .await
        .unwrap();
    s.start().await.unwrap();
    let first = s.next_events(Duration::from_secs(2)).await.unwrap();
    assert!(!first.is_empty());
    let quick = TaskSet::new(vec![task(0, "hey", 10, 2)]).unwrap();
    let r = run(&mut s, &quick, None, &mut sent).await.unwrap();
    assert!(r
        .drained
        .iter()
        .any(|e| e.event.kind == EventKind::ExitExternal));
    assert!(r
        .events
        .iter()
        .all(|e| e.event.kind != EventKind::ExitExternal));
    assert_eq!(r.counts[0].ended, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn wrapped_time_stamps_are_unwrapped() {
    let sim = cluster(
        1,
        64,
        SimConfig {
            wrap_time_stamps: true,
            ..SimConfig::default()
        },
    )
    .await;
    let mut s = Session::connect(sim.addrs()[0], fast_cfg(Dialect::V3))
        .await
        .unwrap();
    let set = TaskSet::new(vec![task(0, "hey", 1_000_000, 6)]).unwrap();
    let mut sent = HashSet::new();
    let r = run(&mut s, &set, None, &mut sent).await.unwrap();
    let times: Vec<u64> = r.events.iter().map(|e| e.event.time_ms).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(*times.last().unwrap() > 5_000_000);
    sim.shutdown().await;
}

#[tokio::test]
async fn get_live_reports_loaded_tasks() {
    let sim = cluster(1, 65, SimConfig::default()).await;
    let mut s = Session::connect(sim.addrs()[0], fast_cfg(Dialect::V3))
        .await
        .unwrap();
    let mut sent = HashSet::new();
    s.clear().await.unwrap();
    s.load(&sample_set(), None, &Binaries::synthetic(), &mut sent)
        .await
        .unwrap();
    let rows = s.get_live().await.unwrap().unwrap();
    let jobs: Vec<_> = rows.iter().filter_map(|r| r.job_pkg()).collect();
    assert_eq!(jobs.len(), 3, "{rows:?}");
    assert_eq!(jobs[1], "pi");
    sim.shutdown().await;
}

#[tokio::test]
async fn invalid_inputs_are_rejected_before_sending() {
    let sim = cluster(1, 66, SimConfig::default()).await;
    let mut s = Session::connect(sim.addrs()[0], fast_cfg(Dialect::V3))
        .await
        .unwrap();
    let mut sent = HashSet::new();
    let set = sample_set();
    let e = s
        .run_taskset(
            &set,
            None,
            &Binaries::new(),
            &mut sent,
            &mut |_| {},
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(!e.is_retryable());
    let mut bad = task(0, "hey", 10, 1);
    bad.numberofjobs = 0;
    let e = run(&mut s, &TaskSet { tasks: vec![bad] }, None, &mut sent)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert_eq!(sim.stats(0).unwrap().commands, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn liveness_probe_allows_for_the_start_block() {
    // offsets add up to 3 s simulated = 1.5 s real at factor 2; START blocks that long, so
    // the echo of a probe sent meanwhile comes late. Probes every 20 ms, reply timeout 500 ms:
    // three times shorter than the block, with room for a loaded machine's latency.
    let sim = cluster(
        1,
        67,
        SimConfig {
            speed: Speed::Factor(2.0),
            clear_block: Duration::from_millis(10),
            ..SimConfig::default()
        },
    )
    .await;
    let mut cfg = fast_cfg(Dialect::V3);
    cfg.liveness_interval = Duration::from_millis(20);
    cfg.reply_timeout = Duration::from_millis(500);
    let mut s = Session::connect(sim.addrs()[0], cfg).await.unwrap();
    let mut a = task(0, "hey", 100, 1);
    a.offset_ms = 1500;
    let mut b = task(1, "hey", 100, 1);
    b.offset_ms = 1500;
    let set = TaskSet::new(vec![a, b]).unwrap();
    let mut sent = HashSet::new();
    let r = run(&mut s, &set, None, &mut sent).await.unwrap();
    // b starts after both offsets: its first release is 1500 + 1500 + 100 ms after START
    let t = |id: u32| {
        r.events
            .iter()
            .find(|e| e.event.task_id == id && e.event.kind == EventKind::Start)
            .unwrap()
            .event
            .time_ms
    };
    assert!(t(1) >= t(0) + 1500, "{} vs {}", t(1), t(0));
    sim.shutdown().await;
}
