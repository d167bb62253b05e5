//! Run a catalog spec on built-in simulated targets and write CSV results.
//!
//! This is the library equivalent of
//! `taskdist run hey-priorities --simulate 4 --out DIR`:
//!
//! 1. start a [`SimCluster`] of four simulated targets on `127.0.0.2` to `127.0.0.5` (one port
//!    free on all of them, loopback only);
//! 2. build a [`Distributor`] for their addresses with a [`CsvHandler`] writing `events.csv`,
//!    `jobs.csv`, `variants.csv`, `tasks.csv` and `run.json`, plus a [`ConsoleHandler`] that
//!    prints a summary on standard error;
//! 3. `start` the catalog spec `hey-priorities` (127 variants), `wait` until every variant
//!    has an outcome, `close` (handlers flushed);
//! 4. print the run summary and the distributor's metrics report (per-target counts).
//!
//! ```text
//! cargo run --example simulated_run            # results in a temporary directory
//! cargo run --example simulated_run -- out/    # results kept in out/ (must not hold results)
//! ```

use std::net::Ipv4Addr;
use std::path::PathBuf;

use taskdist::distributor::{Distributor, ProbeKind};
use taskdist::handlers::{reader, ConsoleHandler, CsvHandler};
use taskdist::sim::{SimCluster, SimConfig};
use taskdist::tasksets::Spec;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Where the CSV files go: the first argument, or a temporary directory removed at the end.
    let (out, _tmp) = match std::env::args_os().nth(1) {
        Some(dir) => (PathBuf::from(dir), None),
        None => {
            let tmp = tempfile::tempdir()?;
            (tmp.path().to_path_buf(), Some(tmp))
        }
    };

    // Four simulated v3 targets, as fast as possible (no real-time waiting).
    let cluster =
        SimCluster::start(4, Ipv4Addr::new(127, 0, 0, 2), 0, SimConfig::default()).await?;
    println!("simulated targets: {:?}", cluster.addrs());

    let spec = Spec::load("hey-priorities")?;
    println!("spec {}, {} variants", spec.name(), spec.len());

    let mut d = Distributor::builder()
        .hosts(cluster.addrs().iter().map(|a| a.to_string()))?
        // Simulated targets answer TCP connects; ICMP would need privileges.
        .probe(ProbeKind::Tcp)
        .handler(CsvHandler::create(&out)?)
        .handler(ConsoleHandler::stderr())
        .build()?;

    d.start(spec).await?; // returns at once; workers run in the background
    let summary = d.wait().await?; // until every variant has an outcome
    let metrics = d.metrics();
    d.close().await?; // run end reported to the handlers, files flushed
    cluster.shutdown().await;

    println!(
        "summary: {} done, {} bad, {} requeued attempts, {} events in {:.2} s",
        summary.done, summary.bad, summary.requeued, summary.events, summary.elapsed_s
    );
    print!("metrics: {}", metrics.report());

    // Read a result file back with the typed reader.
    let variants =
        reader::read_variants(out.join("variants.csv"))?.collect::<Result<Vec<_>, _>>()?;
    println!(
        "{} rows in {}",
        variants.len(),
        out.join("variants.csv").display()
    );
    if _tmp.is_some() {
        println!("(temporary directory; pass a directory as first argument to keep the files)");
    }
    if summary.bad > 0 {
        return Err(format!("{} variants were bad", summary.bad).into());
    }
    Ok(())
}
