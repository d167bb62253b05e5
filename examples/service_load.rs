//! Load on a running `taskdist serve`: submit one experiment, poll its status from many
//! concurrent clients until it ends, and print the whole-run rate and the latency of the
//! status endpoint under that load. Used by `scripts/bench-service.sh`.
//!
//! ```sh
//! cargo run --release --example service_load -- http://127.0.0.1:7410 TOKEN huge 100000 100 1000
//! ```
//! The last argument is each client's pause between two polls in milliseconds (`taskdist status
//! --watch` polls once a second); 0 polls flat out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use taskdist::service::{Client, SubmitRequest};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, token, spec, limit, clients, interval] = args.as_slice() else {
        eprintln!("usage: service_load SERVER TOKEN SPEC LIMIT CLIENTS INTERVAL_MS");
        std::process::exit(2);
    };
    let interval = Duration::from_millis(interval.parse()?);
    let limit: u64 = limit.parse()?;
    let clients: usize = clients.parse()?;
    let client = Client::new(server, token)?;
    let mut req = SubmitRequest::catalog(spec);
    req.limit = Some(limit);
    let t0 = Instant::now();
    let id = client.submit(&req).await?.id;
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let mut pollers = Vec::new();
    for _ in 0..clients {
        let (c, stop, lat) = (client.clone(), stop.clone(), latencies.clone());
        pollers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            // Bounded: ends when the experiment ends (or after an hour at most).
            let end = Instant::now() + Duration::from_secs(3600);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                let t = Instant::now();
                if c.experiment(id).await.is_ok() {
                    mine.push(t.elapsed().as_secs_f64() * 1e3);
                }
                if !interval.is_zero() {
                    tokio::time::sleep(interval).await;
                }
            }
            lat.lock().unwrap().extend(mine);
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(3600);
    let last = loop {
        let e = client.experiment(id).await?;
        if e.state.is_final() || Instant::now() > deadline {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let wall = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for p in pollers {
        p.await?;
    }
    let mut l = std::mem::take(&mut *latencies.lock().unwrap());
    l.sort_by(f64::total_cmp);
    let q = |p: f64| {
        l.get(((l.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "service: {} variants ({}) in {wall:.2} s wall = {:.0} variants/s; {} status requests from {clients} clients, {} ms apart ({:.0}/s): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        last.done,
        last.state,
        last.done as f64 / wall,
        l.len(),
        interval.as_millis(),
        l.len() as f64 / wall,
        q(0.5),
        q(0.99),
        q(1.0)
    );
    Ok(())
}
