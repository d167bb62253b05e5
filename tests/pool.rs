//! Several experiments on one pool of simulated targets (127.0.0.x): priorities, weights,
//! label requirements, mixed dialects with admission data, per-experiment failures.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{spec_named, spec_with, Recorder};
use taskdist::distributor::{ProbeKind, Selection};
use taskdist::pool::{Experiment, Labels, Pool, PoolConfig, Selector, TargetGroup};
use taskdist::protocol::Dialect;
use taskdist::sim::{FaultPlan, SimCluster, SimConfig};
use taskdist::{AdmissionControl, Goal};

async fn group(
    n: usize,
    first: [u8; 4],
    dialect: Dialect,
    labels: &str,
    cfg: SimConfig,
) -> (SimCluster, TargetGroup) {
    let cfg = SimConfig { dialect, ..cfg };
    let sim = SimCluster::start(n, Ipv4Addr::from(first), 0, cfg)
        .await
        .expect("simulated targets start on loopback");
    let g = TargetGroup {
        name: labels.to_owned(),
        hosts: sim.addrs().iter().map(|a| a.to_string()).collect(),
        port: sim.addrs()[0].port(),
        dialect,
        labels: if labels.is_empty() {
            Labels::new()
        } else {
            Labels::parse_pairs(labels).unwrap()
        },
        launch: None,
        health: None,
    };
    (sim, g)
}

fn pool(groups: Vec<TargetGroup>, strategy: Option<&str>) -> Pool {
    let mut cfg = PoolConfig::default();
    cfg.groups = groups;
    cfg.probe = ProbeKind::Tcp;
    cfg.monitor.failed_backoff =
        taskdist::discovery::Backoff::new(Duration::from_millis(50), Duration::from_millis(200));
    if let Some(s) = strategy {
        cfg.strategy = taskdist::pool::strategy::by_name(s).unwrap();
    }
    Pool::start(cfg).unwrap()
}

fn limit(n: u64) -> Selection {
    Selection {
        limit: Some(n),
        shard: None,
    }
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_low_priority_variant_starts_while_high_priority_ones_are_queued() {
    let (sim, g) = group(8, [127, 0, 40, 2], Dialect::V3, "", SimConfig::default()).await;
    let p = pool(vec![g], None);
    let (high, low) = (Recorder::default(), Recorder::default());
    let h = p
        .submit(
            Experiment::new(spec_named("high", "hey", 300))
                .priority(10)
                .handler(high.clone()),
        )
        .unwrap();
    let l = p
        .submit(
            Experiment::new(spec_named("low", "hey", 300))
                .priority(1)
                .handler(low.clone()),
        )
        .unwrap();
    let hs = h.close().await.unwrap();
    let ls = l.close().await.unwrap();
    p.shutdown().await;
    sim.shutdown().await;
    assert_eq!((hs.done, ls.done), (300, 300));
    high.seen().assert_exactly_once(300);
    low.seen().assert_exactly_once(300);
    let last_high = high.seen().starts.iter().map(|s| s.2).max().unwrap();
    let first_low = low.seen().starts.iter().map(|s| s.2).min().unwrap();
    assert!(
        first_low >= last_high,
        "a priority-1 variant started {:?} before the last priority-10 one",
        last_high.duration_since(first_low).unwrap_or_default()
    );
    // All 8 targets served the high-priority experiment.
    let used: std::collections::HashSet<SocketAddr> =
        high.seen().finished_on.iter().copied().collect();
    assert_eq!(used.len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_priorities_share_target_time_by_weight() {
    let (sim, g) = group(8, [127, 0, 41, 2], Dialect::V3, "", SimConfig::default()).await;
    let p = pool(vec![g], None);
    let a = p
        .submit(Experiment::new(spec_named("a", "hey", 1_000_000)).weight(3.0))
        .unwrap();
    let b = p
        .submit(Experiment::new(spec_named("b", "hey", 1_000_000)).weight(1.0))
        .unwrap();
    // Both have far more work than they can finish: measure while both run.
    wait_until("a few thousand task-sets", || {
        a.metrics().done + b.metrics().done >= 3000
    })
    .await;
    let (ta, tb) = {
        let s = p.snapshot();
        let t = |name: &str| {
            s.experiments
                .iter()
                .find(|e| e.name == name)
                .map(|e| e.target_time_s)
                .unwrap()
        };
        (t("a"), t("b"))
    };
    a.stop();
    b.stop();
    let (sa, sb) = (a.close().await.unwrap(), b.close().await.unwrap());
    p.shutdown().await;
    sim.shutdown().await;
    assert!(sa.interrupted && sb.interrupted);
    let ratio = ta / tb;
    assert!(
        (2.7..=3.3).contains(&ratio),
        "target time {ta:.2} s : {tb:.2} s = {ratio:.2}, expected 3 ± 10 %"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requirement_keeps_an_experiment_on_matching_targets() {
    let (sa, ga) = group(
        3,
        [127, 0, 42, 2],
        Dialect::V3,
        "board=a,cores=4",
        SimConfig::default(),
    )
    .await;
    let (sb, gb) = group(
        2,
        [127, 0, 42, 10],
        Dialect::V3,
        "board=b,cores=2",
        SimConfig::default(),
    )
    .await;
    let b_addrs: Vec<SocketAddr> = sb.addrs().to_vec();
    let p = pool(vec![ga, gb], None);
    let (on_b, anywhere, big) = (
        Recorder::default(),
        Recorder::default(),
        Recorder::default(),
    );
    let e1 = p
        .submit(
            Experiment::new(spec_named("on-b", "hey", 80))
                .requires(Selector::from_clauses(["board=b"]).unwrap())
                .handler(on_b.clone()),
        )
        .unwrap();
    let e2 = p
        .submit(Experiment::new(spec_named("anywhere", "hey", 80)).handler(anywhere.clone()))
        .unwrap();
    let e3 = p
        .submit(
            Experiment::new(spec_named("big", "hey", 80))
                .requires(Selector::from_clauses(["cores >= 3"]).unwrap())
                .handler(big.clone()),
        )
        .unwrap();
    assert_eq!(e1.close().await.unwrap().done, 80);
    assert_eq!(e2.close().await.unwrap().done, 80);
    assert_eq!(e3.close().await.unwrap().done, 80);
    p.shutdown().await;
    sa.shutdown().await;
    sb.shutdown().await;
    assert!(on_b.seen().starts.iter().all(|s| b_addrs.contains(&s.1)));
    assert!(big.seen().starts.iter().all(|s| !b_addrs.contains(&s.1)));
    on_b.seen().assert_exactly_once(80);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_experiment_without_matching_targets_waits_without_blocking_others() {
    let (sa, ga) = group(
        2,
        [127, 0, 43, 2],
        Dialect::V3,
        "board=a",
        SimConfig::default(),
    )
    .await;
    let p = pool(vec![ga], None);
    let waiting = p
        .submit(
            Experiment::new(spec_named("on-b", "hey", 10))
                .priority(10)
                .requires(Selector::from_clauses(["board=b"]).unwrap()),
        )
        .unwrap();
    let other = p
        .submit(Experiment::new(spec_named("other", "hey", 50)))
        .unwrap();
    assert_eq!(other.close().await.unwrap().done, 50);
    assert!(waiting.is_running());
    assert_eq!(waiting.metrics().done, 0);
    waiting.stop();
    let s = waiting.close().await.unwrap();
    assert!(s.interrupted);
    assert_eq!(s.done, 0);
    p.shutdown().await;
    sa.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_data_reaches_only_v1_targets_of_a_mixed_pool() {
    let (s1, g1) = group(
        2,
        [127, 0, 44, 2],
        Dialect::V1,
        "gen=2017",
        SimConfig::default(),
    )
    .await;
    let (s3, g3) = group(
        2,
        [127, 0, 44, 10],
        Dialect::V3,
        "gen=2018",
        SimConfig::default(),
    )
    .await;
    let v1: Vec<SocketAddr> = s1.addrs().to_vec();
    let v3: Vec<SocketAddr> = s3.addrs().to_vec();
    let p = pool(vec![g1, g3], None);
    let (adm, plain) = (Recorder::default(), Recorder::default());
    let admission = AdmissionControl {
        goal: Goal::Fairness,
        query_interval_ms: 100,
    };
    let e1 = p
        .submit(
            Experiment::new(
                taskdist::distributor::Workload::new(spec_named("adm", "hey", 30))
                    .with_admission(admission),
            )
            .handler(adm.clone()),
        )
        .unwrap();
    let e2 = p
        .submit(
            Experiment::new(spec_named("plain", "hey", 200))
                .selection(limit(200))
                .handler(plain.clone()),
        )
        .unwrap();
    let r1 = e1.close().await.unwrap();
    let r2 = e2.close().await.unwrap();
    p.shutdown().await;
    assert_eq!((r1.done, r1.bad), (30, 0));
    assert_eq!((r2.done, r2.bad), (200, 0));
    assert!(adm.seen().starts.iter().all(|s| v1.contains(&s.1)));
    // Both generations served the experiment without admission data.
    let on = plain.seen().finished_on.clone();
    assert!(on.iter().any(|a| v3.contains(a)) && on.iter().any(|a| v1.contains(a)));
    s1.shutdown().await;
    s3.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_failing_one_experiment_keeps_serving_the_other() {
    // Host 0 fails every task-set that uses the binary "alpha".
    let mut cfg = SimConfig::default();
    cfg.faults
        .plans
        .push("0=exit-error@0+/pkg=alpha".parse::<FaultPlan>().unwrap());
    let (sim, g) = group(3, [127, 0, 45, 2], Dialect::V3, "", cfg).await;
    let bad_host = sim.addrs()[0];
    let p = pool(vec![g], None);
    let (alpha, beta) = (Recorder::default(), Recorder::default());
    let a = p
        .submit(Experiment::new(spec_named("alpha", "alpha", 60)).handler(alpha.clone()))
        .unwrap();
    let b = p
        .submit(Experiment::new(spec_named("beta", "beta", 1_000_000)).handler(beta.clone()))
        .unwrap();
    let ra = a.close().await.unwrap();
    assert_eq!((ra.done, ra.bad), (60, 0));
    // After alpha is done, the host still serves beta (it was never quarantined).
    let before = beta
        .seen()
        .finished_on
        .iter()
        .filter(|t| **t == bad_host)
        .count();
    wait_until("beta variants on the host that fails alpha", || {
        beta.seen()
            .finished_on
            .iter()
            .filter(|t| **t == bad_host)
            .count()
            >= before + 20
    })
    .await;
    let snap = p.snapshot();
    let host = snap.targets.iter().find(|t| t.target == bad_host).unwrap();
    assert!(host.stats.failed >= 1);
    assert!(
        host.stats.failed <= 3,
        "{} failures: the host kept getting alpha",
        host.stats.failed
    );
    b.stop();
    b.close().await.unwrap();
    p.shutdown().await;
    sim.shutdown().await;
    alpha.seen().assert_exactly_once(60);
    assert!(alpha.seen().finished_on.iter().all(|t| *t != bad_host));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_variants_evenly() {
    let (sim, g) = group(4, [127, 0, 46, 2], Dialect::V3, "", SimConfig::default()).await;
    let p = pool(vec![g], Some("round-robin"));
    let rec = Recorder::default();
    // Wait until all four targets are up, so every one takes part from the start.
    let e = p
        .submit(Experiment::new(spec_with(1)).handler(Recorder::default()))
        .unwrap();
    e.close().await.unwrap();
    wait_until("four targets up", || p.snapshot().targets_up() == 4).await;
    let e = p
        .submit(Experiment::new(spec_with(202)).handler(rec.clone()))
        .unwrap();
    assert_eq!(e.close().await.unwrap().done, 202);
    p.shutdown().await;
    sim.shutdown().await;
    let mut counts = std::collections::HashMap::new();
    for t in &rec.seen().finished_on {
        *counts.entry(*t).or_insert(0u32) += 1;
    }
    let (lo, hi) = (
        counts.values().min().unwrap(),
        counts.values().max().unwrap(),
    );
    assert_eq!(counts.len(), 4);
    assert!(hi - lo <= 1, "{counts:?}");
}

/// Wall time of a 2,000-variant experiment on 7 targets plus one 5× slower, per strategy.
/// A measurement, run by `scripts/bench-pool.sh`:
/// `cargo test --release --test pool strategies_with_a_slow_target -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run by scripts/bench-pool.sh"]
async fn strategies_with_a_slow_target() {
    use taskdist::sim::Speed;
    let n: u32 = std::env::var("TASKDIST_BENCH_VARIANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    for (i, name) in ["round-robin", "greedy", "fastest", "fastest,specialization"]
        .iter()
        .enumerate()
    {
        let fast = SimConfig {
            speed: Speed::Factor(200.0),
            ..SimConfig::default()
        };
        let slow = SimConfig {
            speed: Speed::Factor(40.0),
            ..SimConfig::default()
        };
        let base = 60 + i as u8;
        let (s1, g1) = group(7, [127, 0, base, 2], Dialect::V3, "speed=fast", fast).await;
        let (s2, g2) = group(1, [127, 0, base, 20], Dialect::V3, "speed=slow", slow).await;
        let slow_addr = s2.addrs()[0];
        let p = pool(vec![g1, g2], Some(name));
        wait_until("8 targets up", || p.snapshot().targets_up() == 8).await;
        let rec = Recorder::default();
        let t0 = Instant::now();
        let e = p
            .submit(Experiment::new(spec_with(n)).handler(rec.clone()))
            .unwrap();
        let m = e.metrics_handle();
        let s = e.close().await.unwrap();
        let wall = t0.elapsed();
        assert_eq!(s.done, u64::from(n));
        let snap = m.snapshot();
        let mean = |slow: bool| {
            let ts: Vec<_> = snap
                .targets
                .iter()
                .filter(|(a, _)| (*a == slow_addr) == slow)
                .filter_map(|(_, t)| t.mean_taskset_time())
                .collect();
            ts.iter().map(|d| d.as_secs_f64()).sum::<f64>() / ts.len().max(1) as f64 * 1e3
        };
        let on_slow = rec
            .seen()
            .finished_on
            .iter()
            .filter(|a| **a == slow_addr)
            .count();
        println!(
            "strategy {name:24} {n} variants: {:>6.2} s wall; slow target ran {on_slow:>4} ({:.1} ms/set vs {:.1} ms/set on the others)",
            wall.as_secs_f64(),
            mean(true),
            mean(false)
        );
        p.shutdown().await;
        s1.shutdown().await;
        s2.shutdown().await;
    }
}

/// The README's pool file, scheduling fields and experiments file are what the code reads.
#[test]
fn readme_pool_examples_parse() {
    let readme = include_str!("../README.md");
    let mut blocks = Vec::new();
    let mut cur: Option<String> = None;
    for line in readme.lines() {
        match (&mut cur, line.trim_start()) {
            (None, l) if l.starts_with("```toml") => cur = Some(String::new()),
            (Some(_), l) if l.starts_with("```") => blocks.extend(cur.take()),
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    let pool = blocks.iter().find(|b| b.contains("[[group]]")).unwrap();
    let f = taskdist::pool::PoolFile::parse(pool, "README").unwrap();
    assert_eq!(f.groups.len(), 2);
    assert_eq!(f.groups[1].dialect, Dialect::V1);
    let fields = blocks.iter().find(|b| b.contains("[requires]")).unwrap();
    let spec = format!("name = \"x\"\n{fields}\n[[task]]\npkg = \"hey\"\n")
        .replace("[requires]", "[[task]]\npkg = \"hey\"\n[requires]");
    let spec = taskdist::tasksets::Spec::from_toml_str(&spec, "README").unwrap();
    assert_eq!((spec.priority(), spec.weight()), (Some(10), Some(3.0)));
    let sel = Selector::from_toml(spec.requires().unwrap()).unwrap();
    assert!(sel.matches(&Labels::parse_pairs("board=rpi4,cores=4,site=lab2").unwrap()));
    assert!(blocks.iter().any(|b| b.contains("[[experiment]]")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_controls_drain_quarantine_release_pause_and_groups() {
    use taskdist::distributor::TargetState;
    let (sim, g) = group(2, [127, 0, 47, 2], Dialect::V3, "", SimConfig::default()).await;
    let (a0, a1) = (sim.addrs()[0], sim.addrs()[1]);
    let p = pool(vec![g], None);
    let rec = Recorder::default();
    let h = p
        .submit(Experiment::new(spec_named("long", "hey", 1_000_000)).handler(rec.clone()))
        .unwrap();
    wait_until("both targets at work", || {
        let s = rec.seen();
        s.finished_on.contains(&a0) && s.finished_on.contains(&a1)
    })
    .await;

    // Drain a0: it takes no new work; its state says so.
    p.drain(a0).unwrap();
    wait_until("a0 drained", || {
        p.snapshot()
            .targets
            .iter()
            .any(|t| t.target == a0 && t.stats.state == TargetState::Drained)
    })
    .await;
    let on_a0 = rec.seen().finished_on.iter().filter(|t| **t == a0).count();
    let total = rec.seen().finished_on.len();
    wait_until("more variants on a1", || {
        rec.seen().finished_on.len() >= total + 20
    })
    .await;
    assert_eq!(
        rec.seen().finished_on.iter().filter(|t| **t == a0).count(),
        on_a0,
        "a drained target took work"
    );
    let snap = p.snapshot();
    let t0 = snap.targets.iter().find(|t| t.target == a0).unwrap();
    assert_eq!(t0.hold.as_deref(), Some("drained"));

    // Release: it works again.
    assert!(p.release(a0));
    wait_until("a0 back at work", || {
        rec.seen().finished_on.iter().filter(|t| **t == a0).count() > on_a0
    })
    .await;

    // Quarantine a1 with a reason: visible, and it stops at once.
    p.quarantine(a1, "wrong events").unwrap();
    wait_until("a1 quarantined", || {
        p.snapshot().targets.iter().any(|t| {
            t.target == a1
                && t.stats.state == TargetState::Quarantined
                && t.hold.as_deref() == Some("quarantined: wrong events")
        })
    })
    .await;
    let on_a1 = rec.seen().finished_on.iter().filter(|t| **t == a1).count();
    let total = rec.seen().finished_on.len();
    wait_until("more variants on a0", || {
        rec.seen().finished_on.len() >= total + 20
    })
    .await;
    assert_eq!(
        rec.seen().finished_on.iter().filter(|t| **t == a1).count(),
        on_a1
    );
    assert!(p.quarantine("127.9.9.9:1".parse().unwrap(), "x").is_err());

    // Pause: nothing new finishes after the running attempts end; resume: it goes on.
    h.pause();
    assert!(h.is_paused());
    // Attempts started before the pause end (finished or stopped); then nothing moves.
    // An attempt taken just before the pause may not have reported its start yet: wait until
    // the experiment itself runs nothing, then until the handler saw every end.
    wait_until("the attempts running at the pause to end", || {
        let s = rec.seen();
        h.metrics().running == 0 && s.starts.len() == s.finished_on.len() + s.stopped.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    wait_until("the handler to see the last ends", || {
        let s = rec.seen();
        s.starts.len() == s.finished_on.len() + s.stopped.len()
    })
    .await;
    let paused_at = rec.seen().finished_on.len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rec.seen().finished_on.len(),
        paused_at,
        "a paused experiment ran"
    );
    h.resume();
    wait_until("progress after resume", || {
        rec.seen().finished_on.len() > paused_at + 5
    })
    .await;

    // A group added while the pool runs gets work; removed, it leaves.
    let (sim2, mut g2) = group(1, [127, 0, 47, 10], Dialect::V3, "", SimConfig::default()).await;
    g2.name = "late".into();
    let late = sim2.addrs()[0];
    p.add_group(g2.clone()).unwrap();
    assert!(
        p.add_group(g2.clone()).is_err(),
        "a second group with the same name"
    );
    wait_until("the added target at work", || {
        rec.seen().finished_on.contains(&late)
    })
    .await;
    assert!(p.remove_group("late"));
    wait_until("the removed target gone", || {
        p.snapshot().targets.iter().all(|t| t.target != late)
    })
    .await;
    let on_late = rec
        .seen()
        .finished_on
        .iter()
        .filter(|t| **t == late)
        .count();
    let total = rec.seen().finished_on.len();
    wait_until("more variants", || {
        rec.seen().finished_on.len() >= total + 20
    })
    .await;
    assert_eq!(
        rec.seen()
            .finished_on
            .iter()
            .filter(|t| **t == late)
            .count(),
        on_late
    );

    h.stop();
    h.close().await.unwrap();
    p.shutdown().await;
    sim.shutdown().await;
    sim2.shutdown().await;
    let s = rec.seen();
    assert!(
        s.finished.values().all(|a| a.len() == 1),
        "a variant finished twice"
    );
}
