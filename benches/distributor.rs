//! Throughput of whole runs: task-sets/s through as-fast-as-possible simulated targets, with
//! the CSV handler writing every event. Prints one line per configuration.
//!
//! `cargo bench --bench distributor` (or with arguments: `-- TARGETS VARIANTS`).

use std::net::Ipv4Addr;
use std::time::Instant;

use taskdist::distributor::{Distributor, ProbeKind};
use taskdist::handlers::CsvHandler;
use taskdist::sim::{SimCluster, SimConfig};
use taskdist::tasksets::Spec;

/// Three tasks, two jobs each (3 × (2 START + 2 EXIT + JOBS_DONE) = 15 events per variant).
const SPEC: &str = r#"
name = "bench"
description = "3 hey tasks, 2 jobs each, period sweep"
[[task]]
pkg = "hey"
period_ms = { from = 10, to = 1000009 }
numberofjobs = 2
[[task]]
pkg = "hey"
period_ms = 20
numberofjobs = 2
[[task]]
pkg = "pi"
period_ms = 30
numberofjobs = 2
config = { arg1 = "1000" }
"#;

async fn run(targets: usize, variants: u64, csv: bool) -> (f64, u64) {
    let sim = SimCluster::start(
        targets,
        Ipv4Addr::new(127, 0, 40, 2),
        0,
        SimConfig::default(),
    )
    .await
    .expect("simulated targets start");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut b = Distributor::builder()
        .hosts(sim.addrs().iter().map(|a| a.to_string()))
        .expect("addresses")
        .probe(ProbeKind::Tcp)
        .limit(variants);
    if csv {
        b = b.handler(CsvHandler::create(dir.path()).expect("csv"));
    }
    let mut d = b.build().expect("distributor");
    let spec = Spec::from_toml_str(SPEC, "bench").expect("bench spec");
    let t0 = Instant::now();
    d.start(spec).await.expect("start");
    let s = d.wait().await.expect("run");
    d.close().await.expect("close");
    let secs = t0.elapsed().as_secs_f64();
    sim.shutdown().await;
    assert_eq!(s.done, variants);
    (secs, s.events)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let configs: Vec<(usize, u64)> = match (args.first(), args.get(1)) {
        (Some(t), Some(v)) => vec![(t.parse().expect("TARGETS"), v.parse().expect("VARIANTS"))],
        _ => vec![(1, 5_000), (4, 20_000), (16, 40_000), (64, 40_000)],
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("targets  variants  handler   seconds  task-sets/s    events/s");
    for (targets, variants) in configs {
        for csv in [false, true] {
            let (secs, events) = rt.block_on(run(targets, variants, csv));
            println!(
                "{targets:7}  {variants:8}  {:8}  {secs:7.2}  {:11.0}  {:10.0}",
                if csv { "csv" } else { "none" },
                variants as f64 / secs,
                events as f64 / secs
            );
        }
    }
}
