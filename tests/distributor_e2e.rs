//! End-to-end runs of the distributor against simulated targets on 127.0.0.x.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::{spec_with, Recorder};
use taskdist::distributor::{Distributor, DistributorError, ProbeKind};
use taskdist::handlers::CsvHandler;
use taskdist::protocol::Dialect;
use taskdist::sim::{SimCluster, SimConfig};
use taskdist::{AdmissionControl, Goal};

/// Events of one variant of `spec_with`: task 0 runs 3 jobs, task 1 runs 2 jobs; each job has
/// START and an exit event, each task one JOBS_DONE.
const EVENTS_PER_VARIANT: usize = 3 * 2 + 1 + 2 * 2 + 1;

async fn cluster(n: usize, first: [u8; 4], cfg: SimConfig) -> SimCluster {
    SimCluster::start(n, Ipv4Addr::from(first), 0, cfg)
        .await
        .expect("simulated targets start on loopback")
}

fn builder(sim: &SimCluster) -> taskdist::distributor::DistributorBuilder {
    Distributor::builder()
        .hosts(sim.addrs().iter().map(|a| a.to_string()))
        .expect("loopback addresses parse")
        .probe(ProbeKind::Tcp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_run_gives_every_variant_exactly_one_outcome() {
    let sim = cluster(4, [127, 0, 10, 2], SimConfig::default()).await;
    let rec = Recorder::default();
    let mut d = builder(&sim).handler(rec.clone()).build().unwrap();
    d.start(spec_with(40)).await.unwrap();
    let summary = d.wait().await.unwrap();
    assert_eq!((summary.done, summary.bad), (40, 0));
    assert!(!summary.interrupted);
    let m = d.metrics();
    assert_eq!(m.done, 40);
    assert!(m.targets.iter().map(|(_, t)| t.completed).sum::<u64>() == 40);
    d.close().await.unwrap();
    sim.shutdown().await;

    let seen = rec.seen();
    seen.assert_exactly_once(40);
    for (v, outcomes) in &seen.finished {
        assert_eq!(outcomes[0].1, EVENTS_PER_VARIANT, "variant {v}");
    }
    assert_eq!(seen.runs, 1);
    assert!(seen.summary.as_ref().is_some_and(|s| s.done == 40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_taskset_through_the_api() {
    let sim = cluster(2, [127, 0, 11, 2], SimConfig::default()).await;
    let rec = Recorder::default();
    let mut d = builder(&sim).handler(rec.clone()).build().unwrap();
    let mut t = taskdist::Task::new(0, "hey");
    t.numberofjobs = 4;
    t.period_ms = 10;
    d.start(taskdist::TaskSet::new(vec![t]).unwrap())
        .await
        .unwrap();
    let s = d.wait().await.unwrap();
    assert_eq!(s.done, 1);
    d.close().await.unwrap();
    sim.shutdown().await;
    assert_eq!(rec.seen().finished[&0][0].1, 4 * 2 + 1);
}

/// Six variants of a task that needs 150 ms per 100 ms period, next to a light one: the v1
/// admission test rejects the heavy task (its jobs end NOT_SCHEDULED) only when the target got
/// admission-control data.
fn overloaded_spec() -> taskdist::tasksets::Spec {
    let text = r#"
name = "overload"
description = "a task the admission test must reject"
seed = 7

[[task]]
pkg = "hey"
period_ms = { from = 100, to = 105 }
numberofjobs = 3
priority = 3

[[task]]
pkg = "hey"
period_ms = 100
executiontime_ms = 150
numberofjobs = 2
priority = 5
"#;
    taskdist::tasksets::Spec::from_toml_str(text, "overload-spec").expect("test spec parses")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_data_is_refused_for_v3_and_delivered_to_v1() {
    let ac = AdmissionControl {
        goal: Goal::Fairness,
        query_interval_ms: 1000,
    };
    let sim = cluster(1, [127, 0, 12, 2], SimConfig::default()).await;
    let mut d = builder(&sim).build().unwrap();
    let err = d.start_with(spec_with(2), ac).await.unwrap_err();
    assert!(matches!(err, DistributorError::Config(_)), "{err}");
    assert!(err.to_string().contains("v1"), "{err}");
    d.close().await.unwrap();
    sim.shutdown().await;

    let cfg = SimConfig {
        dialect: Dialect::V1,
        ..SimConfig::default()
    };
    let sim = cluster(2, [127, 0, 12, 10], cfg).await;

    // Without admission data, a v1 target runs the heavy task (no NOT_SCHEDULED).
    let plain = Recorder::default();
    let mut d = builder(&sim)
        .dialect(Dialect::V1)
        .handler(plain.clone())
        .build()
        .unwrap();
    d.start(overloaded_spec()).await.unwrap();
    let s = d.wait().await.unwrap();
    d.close().await.unwrap();
    assert_eq!((s.done, s.bad), (6, 0), "{s:?}");
    {
        let seen = plain.seen();
        seen.assert_exactly_once(6);
        let rejected: usize = seen.not_scheduled.values().flatten().sum();
        assert_eq!(rejected, 0, "admission test ran without admission data");
    }

    // Start, stop, and start again with admission-control data: the targets apply it.
    let rec = Recorder::default();
    let mut d = builder(&sim)
        .dialect(Dialect::V1)
        .handler(rec.clone())
        .build()
        .unwrap();
    d.start(overloaded_spec()).await.unwrap();
    let first = d.stop().await.unwrap();
    d.start_with(overloaded_spec(), ac).await.unwrap();
    let second = d.wait().await.unwrap();
    d.close().await.unwrap();
    sim.shutdown().await;
    assert_eq!((second.done, second.bad), (6, 0), "first run: {first:?}");
    let seen = rec.seen();
    assert_eq!(seen.runs, 2);
    for v in 0..6 {
        // The last outcome of each variant is the second run's.
        let rejected = *seen.not_scheduled[&v].last().unwrap();
        assert_eq!(
            rejected, 2,
            "variant {v}: both jobs of the heavy task must be NOT_SCHEDULED"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_then_resume_from_the_ledger_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let n = 300;
    // The first run is slowed down (a variant takes tens of ms) so that it is certainly still
    // going when it is stopped; the resume runs on a fast cluster.
    let slow = SimConfig {
        speed: taskdist::sim::Speed::Factor(20.0),
        ..SimConfig::default()
    };
    let sim = cluster(3, [127, 0, 13, 2], slow).await;

    let mut d = builder(&sim)
        .handler(CsvHandler::create(&out).unwrap())
        .ledger(&out, false)
        .build()
        .unwrap();
    d.start(spec_with(n)).await.unwrap();
    // Let part of the run happen, then stop it.
    let metrics = d.metrics_handle();
    for _ in 0..6000 {
        if metrics.snapshot().done >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first = d.stop().await.unwrap();
    d.close().await.unwrap();
    sim.shutdown().await;
    assert!(first.interrupted, "the stop did not interrupt: {first:?}");
    assert!(
        first.done >= 20 && first.done < u64::from(n),
        "the first run must be cut in the middle: {first:?}"
    );
    let sim = cluster(3, [127, 0, 13, 2], SimConfig::default()).await;

    // A fresh distributor resumes the same directory.
    let (_, done) = taskdist::distributor::Ledger::resume(
        &out,
        &taskdist::distributor::run_fingerprint(
            &spec_with(n).into(),
            taskdist::distributor::Selection::default(),
        ),
    )
    .unwrap();
    let mut d = builder(&sim)
        .handler(CsvHandler::resume(&out, &|i| done.contains(i)).unwrap())
        .ledger(&out, true)
        .build()
        .unwrap();
    d.start(spec_with(n)).await.unwrap();
    let second = d.wait().await.unwrap();
    d.close().await.unwrap();
    assert_eq!(
        first.done + second.done,
        u64::from(n),
        "{first:?} {second:?}"
    );
    assert!(!second.interrupted, "{second:?}");

    let rows = taskdist::handlers::reader::read_variants(out.join("variants.csv"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let mut seen = vec![0u32; n as usize];
    for r in &rows {
        seen[r.variant as usize] += 1;
    }
    assert!(
        seen.iter().all(|&c| c == 1),
        "variant rows not exactly once"
    );
    let events = taskdist::handlers::reader::read_events(out.join("events.csv"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert_eq!(events.len(), n as usize * EVENTS_PER_VARIANT);

    // Resuming with another spec is refused.
    let err = builder(&sim)
        .ledger(&out, true)
        .build()
        .unwrap()
        .start(spec_with(n + 1))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("different spec"), "{err}");
    sim.shutdown().await;
}

/// A fault that delays replies delays them this long: far beyond the reply timeout of
/// [`fast_failing_builder`], so it is always detected, however loaded the machine.
const SLOW_DELAY: Duration = Duration::from_secs(6);

/// Detects faults within seconds, with timeouts that a healthy target on a loaded machine
/// still meets (a spurious failure would only requeue, but could quarantine a healthy host).
fn fast_failing_builder(sim: &SimCluster) -> taskdist::distributor::DistributorBuilder {
    use taskdist::discovery::{Backoff, MonitorConfig};
    use taskdist::protocol::SessionConfig;
    let session = SessionConfig {
        connect_timeout: Duration::from_secs(2),
        reply_timeout: Duration::from_secs(2),
        liveness_interval: Duration::from_millis(200),
        silence_margin: Duration::from_secs(2),
        ..SessionConfig::default()
    };
    let monitor = MonitorConfig {
        failed_backoff: Backoff::new(Duration::from_millis(20), Duration::from_millis(200)),
        round_backoff: Backoff::new(Duration::from_millis(20), Duration::from_millis(200)),
        ..MonitorConfig::default()
    };
    builder(sim)
        .session(session)
        .monitor(monitor)
        .quarantine(4, Duration::from_millis(100))
}

/// One host shows `kind` at its first run; the variant must still finish (elsewhere or after
/// the host recovers) and the failure must be reported as a requeue.
async fn single_fault(kind: taskdist::sim::FaultKind, first: [u8; 4]) {
    use taskdist::sim::{FaultConfig, FaultPlan};
    let cfg = SimConfig {
        faults: FaultConfig {
            plans: vec![FaultPlan {
                host: 0,
                kind,
                at_run: 0,
                repeat: false,
                pkg: None,
            }],
            slow_delay: SLOW_DELAY,
            ..FaultConfig::default()
        },
        ..SimConfig::default()
    };
    let sim = cluster(2, first, cfg).await;
    let rec = Recorder::default();
    let mut d = fast_failing_builder(&sim)
        .handler(rec.clone())
        .build()
        .unwrap();
    d.start(spec_with(12)).await.unwrap();
    let s = d.wait().await.unwrap();
    d.close().await.unwrap();
    sim.shutdown().await;
    let seen = rec.seen();
    seen.assert_exactly_once(12);
    assert_eq!(s.done, 12, "{kind:?}: {s:?}");
    use taskdist::sim::FaultKind;
    if kind == FaultKind::StalePush {
        // A leftover push is no fault of the target: nothing is requeued.
        assert_eq!(s.requeued, 0, "{kind:?}: {s:?}");
    } else if kind != FaultKind::Refuse {
        assert!(
            s.requeued >= 1,
            "{kind:?}: the faulty attempt was not requeued: {s:?}"
        );
        assert!(!seen.stopped.is_empty());
    }
    for outcomes in seen.finished.values() {
        assert_eq!(outcomes[0].1, EVENTS_PER_VARIANT, "{kind:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_injected_fault_is_survived() {
    use taskdist::sim::FaultKind;
    for (i, kind) in FaultKind::ALL.into_iter().enumerate() {
        single_fault(kind, [127, 0, 20 + i as u8, 2]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_run_every_variant_exactly_once() {
    use taskdist::sim::{FaultConfig, FaultRates};
    let n = 600;
    let cfg = SimConfig {
        seed: 42,
        faults: FaultConfig {
            rates: FaultRates {
                freeze: 0.005,
                drop: 0.02,
                garbage: 0.01,
                oversized: 0.01,
                slow: 0.005,
                exit_error: 0.02,
                reboot: 0.01,
                refuse: 0.0,
                ..FaultRates::default()
            },
            slow_delay: SLOW_DELAY,
            ..FaultConfig::default()
        },
        ..SimConfig::default()
    };
    let sim = cluster(16, [127, 0, 30, 2], cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::default();
    let mut d = fast_failing_builder(&sim)
        .handler(rec.clone())
        .handler(CsvHandler::create(dir.path()).unwrap())
        .build()
        .unwrap();
    d.start(spec_with(n)).await.unwrap();
    let s = d.wait().await.unwrap();
    d.close().await.unwrap();
    sim.shutdown().await;
    let seen = rec.seen();
    seen.assert_exactly_once(u64::from(n));
    assert_eq!(s.done + s.bad, u64::from(n));
    assert!(
        s.requeued > 0,
        "the fault rates should have caused requeues: {s:?}"
    );
    // The CSV files agree: one variant row each, events of finished attempts only.
    let rows = taskdist::handlers::reader::read_variants(dir.path().join("variants.csv"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert_eq!(rows.len(), n as usize);
    let events = taskdist::handlers::reader::read_events(dir.path().join("events.csv"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let expected: usize = seen.finished.values().map(|o| o[0].1).sum();
    assert_eq!(events.len(), expected);
    let mut keys = std::collections::HashSet::new();
    for e in &events {
        assert!(
            keys.insert((e.variant, e.seq)),
            "duplicated event row {e:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_variant_needing_a_missing_binary_is_bad_at_once_and_the_target_stays() {
    use taskdist::protocol::binaries::synthetic_image;
    use taskdist::protocol::Binaries;
    let sim = cluster(1, [127, 0, 14, 2], SimConfig::default()).await;
    let mut bins = Binaries::new();
    bins.insert("hey", synthetic_image("hey"));
    let rec = Recorder::default();
    let mut d = builder(&sim)
        .binaries(bins)
        .handler(rec.clone())
        .build()
        .unwrap();
    let mut t = taskdist::Task::new(0, "pi");
    t.numberofjobs = 1;
    d.start(taskdist::TaskSet::new(vec![t]).unwrap())
        .await
        .unwrap();
    let s = d.wait().await.unwrap();
    assert_eq!((s.done, s.bad, s.requeued), (0, 1, 0));
    let m = d.metrics();
    assert_eq!(m.targets[0].1.failed, 0, "the target is not to blame");
    d.close().await.unwrap();
    sim.shutdown().await;
    let seen = rec.seen();
    assert!(seen.bad[&0][0].contains("pi"), "{:?}", seen.bad);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_command_runs_and_a_faulty_target_is_quarantined() {
    use taskdist::distributor::TargetState;
    use taskdist::sim::{FaultConfig, FaultKind, FaultPlan};
    // Host 0 drops every connection at START; host 1 is healthy.
    let cfg = SimConfig {
        faults: FaultConfig {
            plans: vec![FaultPlan {
                host: 0,
                kind: FaultKind::Drop,
                at_run: 0,
                repeat: true,
                pkg: None,
            }],
            ..FaultConfig::default()
        },
        ..SimConfig::default()
    };
    let sim = cluster(2, [127, 0, 15, 2], cfg).await;
    let bad_host = sim.addrs()[0];
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("recovered.txt");
    let rec = Recorder::default();
    let mut d = fast_failing_builder(&sim)
        .quarantine(3, Duration::from_secs(3600))
        .recovery_cmd(format!(
            "echo {{addr}} $TASKDIST_TARGET >> {}",
            log.display()
        ))
        .handler(rec.clone())
        .build()
        .unwrap();
    // More work than the test needs; it stops once host 0 is quarantined, however fast the
    // healthy host is.
    d.start(spec_with(100_000)).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let quarantined = d
            .metrics()
            .targets
            .iter()
            .any(|(a, t)| *a == bad_host && t.state == TargetState::Quarantined);
        if quarantined {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "host 0 was never quarantined"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = d.stop().await.unwrap();
    let m = d.metrics();
    d.close().await.unwrap();
    sim.shutdown().await;

    let seen = rec.seen();
    assert!(seen.bad.is_empty(), "{:?}", seen.bad);
    assert!(seen.finished.values().all(|o| o.len() == 1));
    assert_eq!(seen.finished.len() as u64, s.done, "{s:?}");
    let stats = &m.targets.iter().find(|(a, _)| *a == bad_host).unwrap().1;
    assert_eq!(stats.completed, 0);
    // Quarantined after its third failure in a row, and not tried again.
    assert_eq!(stats.failed, 3, "{stats:?}");
    assert_eq!(stats.state, TargetState::Quarantined);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 3, "one recovery per failure: {text}");
    assert!(lines.iter().all(|l| *l == format!("{bad_host} {bad_host}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_refuses_sessions_is_backed_off_not_quarantined_or_recovered() {
    use taskdist::discovery::{IcmpConfig, IcmpProber};
    use taskdist::distributor::TargetState;
    use taskdist::sim::{FaultConfig, FaultKind, FaultPlan};
    // The host must answer the probe but refuse the session: ICMP on loopback does that.
    if common::privileged::need(
        "a_host_that_refuses_sessions_is_backed_off_not_quarantined_or_recovered",
        "an ICMP socket",
        IcmpProber::open(IcmpConfig::default()).map(drop),
    )
    .is_none()
    {
        return;
    }
    let cfg = SimConfig {
        faults: FaultConfig {
            plans: vec![FaultPlan {
                host: 0,
                kind: FaultKind::Refuse,
                at_run: 0,
                repeat: true,
                pkg: None,
            }],
            ..FaultConfig::default()
        },
        ..SimConfig::default()
    };
    let sim = cluster(2, [127, 0, 16, 2], cfg).await;
    let refusing = sim.addrs()[0];
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("recovered.txt");
    let mut d = fast_failing_builder(&sim)
        .probe(ProbeKind::Icmp)
        .quarantine(1, Duration::from_secs(3600))
        .recovery_cmd(format!("echo {{addr}} >> {}", log.display()))
        .build()
        .unwrap();
    d.start(spec_with(300)).await.unwrap();
    let s = d.wait().await.unwrap();
    let m = d.metrics();
    d.close().await.unwrap();
    sim.shutdown().await;
    assert_eq!(s.done, 300);
    let stats = &m.targets.iter().find(|(a, _)| *a == refusing).unwrap().1;
    assert_eq!((stats.completed, stats.failed), (0, 0), "{stats:?}");
    assert_eq!(stats.state, TargetState::Backoff);
    assert!(stats
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("refused")));
    assert!(
        !log.exists(),
        "no recovery for a host that only refuses sessions"
    );
}
