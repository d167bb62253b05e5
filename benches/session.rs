//! Throughput of the client session against one as-fast-as-possible simulated target
//! (task-sets/s), and of the profile parser (events/s).
//!
//! `cargo bench --bench session`

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use taskdist::protocol::frame;
use taskdist::protocol::xml;
use taskdist::protocol::{Binaries, Session, SessionConfig};
use taskdist::sim::{SimCluster, SimConfig};
use taskdist::{Task, TaskSet};
use tokio_util::sync::CancellationToken;

fn taskset(n: u32, jobs: u32) -> TaskSet {
    let pkgs = ["hey", "pi", "tumatmul", "namaste"];
    let tasks = (0..n)
        .map(|i| {
            let mut t = Task::new(i, pkgs[i as usize % pkgs.len()]);
            t.period_ms = 100 + 50 * u64::from(i);
            t.priority = 10 + i;
            t.numberofjobs = jobs;
            if t.pkg == "pi" {
                t.config.push(("arg1".into(), "100000".into()));
            }
            t
        })
        .collect();
    TaskSet::new(tasks).expect("valid task-set")
}

fn bench_session(c: &mut Criterion) {
    let mut group = c.benchmark_group("session");
    group.measurement_time(Duration::from_secs(8));
    for (flavour, rt) in [
        (
            "current_thread",
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        ),
        (
            "multi_thread_2",
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime"),
        ),
    ] {
        let sim = rt
            .block_on(SimCluster::start(
                1,
                Ipv4Addr::new(127, 0, 0, 2),
                0,
                SimConfig::default(),
            ))
            .expect("simulated target");
        let mut session = rt
            .block_on(Session::connect(sim.addrs()[0], SessionConfig::default()))
            .expect("connect");
        let binaries = Binaries::synthetic();
        let mut sent = HashSet::new();
        let cancel = CancellationToken::new();
        for (tasks, jobs) in [(3u32, 1u32), (5, 3)] {
            let set = taskset(tasks, jobs);
            group.throughput(Throughput::Elements(1));
            group.bench_function(
                BenchmarkId::new(format!("tasksets_{flavour}"), format!("{tasks}x{jobs}")),
                |b| {
                    b.iter_custom(|iters| {
                        rt.block_on(async {
                            let start = Instant::now();
                            for _ in 0..iters {
                                let run = session
                                    .run_taskset(
                                        &set,
                                        None,
                                        &binaries,
                                        &mut sent,
                                        &mut |_| {},
                                        &cancel,
                                    )
                                    .await
                                    .expect("task-set runs");
                                assert_eq!(run.counts.len(), tasks as usize);
                            }
                            start.elapsed()
                        })
                    })
                },
            );
        }
        rt.block_on(async {
            session.close().await;
            sim.shutdown().await;
        });
    }
    group.finish();
}

/// 64 sessions against 64 as-fast-as-possible simulated hosts on a 2-worker runtime: the
/// shape of a distributor run on a 2-core machine.
fn bench_cluster(c: &mut Criterion) {
    const HOSTS: usize = 64;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let sim = rt
        .block_on(SimCluster::start(
            HOSTS,
            Ipv4Addr::new(127, 0, 0, 2),
            0,
            SimConfig::default(),
        ))
        .expect("simulated targets");
    let mut sessions: Vec<(Session, HashSet<String>)> = rt.block_on(async {
        let mut v = Vec::with_capacity(HOSTS);
        for a in sim.addrs() {
            let s = Session::connect(*a, SessionConfig::default())
                .await
                .expect("connect");
            v.push((s, HashSet::new()));
        }
        v
    });
    let set = std::sync::Arc::new(taskset(5, 3));
    let mut group = c.benchmark_group("cluster");
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(1));
    group.bench_function(
        BenchmarkId::new("tasksets_64_targets_2_workers", "5x3"),
        |b| {
            b.iter_custom(|iters| {
                let per = iters.div_ceil(HOSTS as u64);
                let elapsed = rt.block_on(async {
                    let start = Instant::now();
                    let mut js = tokio::task::JoinSet::new();
                    for (mut s, mut sent) in sessions.drain(..) {
                        let set = set.clone();
                        js.spawn(async move {
                            let binaries = Binaries::synthetic();
                            let cancel = CancellationToken::new();
                            for _ in 0..per {
                                s.run_taskset(
                                    &set,
                                    None,
                                    &binaries,
                                    &mut sent,
                                    &mut |_| {},
                                    &cancel,
                                )
                                .await
                                .expect("task-set runs");
                            }
                            (s, sent)
                        });
                    }
                    while let Some(r) = js.join_next().await {
                        sessions.push(r.expect("worker"));
                    }
                    start.elapsed()
                });
                // `per * HOSTS` task-sets ran; scale to `iters`.
                elapsed.mul_f64(iters as f64 / (per * HOSTS as u64) as f64)
            })
        },
    );
    group.finish();
    rt.block_on(async {
        for (s, _) in sessions.drain(..) {
            s.close().await;
        }
        sim.shutdown().await;
    });
}

fn bench_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for n in [1usize, 100, 1000] {
        let mut doc = String::from("<profile>\n\t<events>\n");
        for i in 0..n {
            let kind = ["START", "EXIT", "JOBS_DONE"][i % 3];
            doc.push_str(&format!(
                "\t\t<event type=\"{kind}\" task-id=\"{}\" time-stamp=\"{}\"/>\n",
                i % 7,
                31337 + i
            ));
        }
        doc.push_str("\t</events>\n</profile>");
        let framed = frame::encode_frame_vec(doc.as_bytes());
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("profile_events", n), |b| {
            let mut out = Vec::with_capacity(n);
            b.iter(|| {
                out.clear();
                let (msg, _) = frame::decode_server(&framed, frame::Expect::Frames, 1 << 20)
                    .expect("valid frame")
                    .expect("whole frame");
                if let frame::ServerMsg::Frame(d) = msg {
                    xml::parse_profile_into(d, &mut out).expect("valid profile");
                }
                assert_eq!(out.len(), n);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_session, bench_cluster, bench_parse);
criterion_main!(benches);
