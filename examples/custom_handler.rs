//! A user-written [`EventHandler`]: response times and deadline misses per task.
//!
//! The handler receives every event of the one attempt that finished a variant in
//! [`EventHandler::taskset_finished`] (live events and failed attempts are ignored, so each
//! variant is counted exactly once). It pairs each job's START with the event that ended it
//! (the oldest open START of the same task, the rule the CSV handler uses for `jobs.csv`),
//! and per task position keeps:
//!
//! - the response time (end minus START, target milliseconds) of jobs that ended with EXIT;
//! - the number of deadline misses: jobs killed at their criticaltime (EXIT_CRITICAL) or
//!   still running when their next period began (EXIT_PERIOD).
//!
//! At [`EventHandler::run_finished`] it prints a table. The run uses the catalog spec
//! `util-uunifast` (3 tasks, total utilisation 0.1 to 0.9 split by UUniFast, 90 variants) on
//! eight simulated targets on `127.0.0.x`, so higher utilisations show some misses.
//!
//! ```text
//! cargo run --example custom_handler
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use taskdist::distributor::{Distributor, ProbeKind};
use taskdist::handlers::{
    EventHandler, EventKind, HandlerError, RunInfo, RunSummary, VariantBad, VariantFinished,
};
use taskdist::sim::{SimCluster, SimConfig};
use taskdist::tasksets::Spec;

/// Statistics of one task position (task id) over all variants.
#[derive(Debug, Default, Clone)]
struct TaskStats {
    /// Jobs that ended with EXIT.
    exited: u64,
    /// Sum, minimum and maximum response time of those jobs, in target ms.
    response_sum_ms: u64,
    response_min_ms: Option<u64>,
    response_max_ms: u64,
    /// EXIT_CRITICAL: killed at criticaltime.
    exit_critical: u64,
    /// EXIT_PERIOD: still running at the next release.
    exit_period: u64,
    /// Any other end (NOT_SCHEDULED, OUT_OF_QUOTA, EXIT_ERROR, ...).
    other_ends: u64,
}

impl TaskStats {
    fn misses(&self) -> u64 {
        self.exit_critical + self.exit_period
    }
}

/// Everything the handler gathered; shared so `main` can read it after the run, too.
#[derive(Debug, Default)]
struct Report {
    spec: String,
    variants: u64,
    variants_with_miss: u64,
    bad: u64,
    tasks: BTreeMap<u32, TaskStats>,
}

impl Report {
    fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{}: {} variants finished ({} with at least one deadline miss), {} bad",
            self.spec, self.variants, self.variants_with_miss, self.bad
        );
        let _ = writeln!(
            s,
            "{:>4} {:>8} {:>10} {:>8} {:>8} {:>13} {:>11} {:>6}",
            "task",
            "exited",
            "mean ms",
            "min ms",
            "max ms",
            "EXIT_CRITICAL",
            "EXIT_PERIOD",
            "other"
        );
        for (id, t) in &self.tasks {
            let mean = if t.exited > 0 {
                format!("{:.2}", t.response_sum_ms as f64 / t.exited as f64)
            } else {
                "-".into()
            };
            let min = t
                .response_min_ms
                .map(|m| m.to_string())
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                s,
                "{id:>4} {:>8} {mean:>10} {min:>8} {:>8} {:>13} {:>11} {:>6}",
                t.exited, t.response_max_ms, t.exit_critical, t.exit_period, t.other_ends
            );
        }
        s
    }
}

/// The handler. Cloning shares the report.
#[derive(Debug, Default, Clone)]
struct ResponseTimes {
    report: Arc<Mutex<Report>>,
}

impl ResponseTimes {
    fn report(&self) -> std::sync::MutexGuard<'_, Report> {
        // A poisoned lock only means another thread panicked while holding it; the data is
        // still the best we have.
        self.report.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl EventHandler for ResponseTimes {
    async fn run_started(&mut self, run: &RunInfo) -> Result<(), HandlerError> {
        self.report().spec = run.spec_name.clone();
        Ok(())
    }

    async fn taskset_finished(&mut self, v: &VariantFinished) -> Result<(), HandlerError> {
        // Open STARTs per task, oldest first.
        let mut open: HashMap<u32, VecDeque<u64>> = HashMap::new();
        let mut report = self.report();
        let mut missed = false;
        for e in &v.events {
            let ev = &e.event;
            if ev.kind == EventKind::Start {
                open.entry(ev.task_id).or_default().push_back(ev.time_ms);
                continue;
            }
            if !ev.kind.ends_job() {
                continue; // JOBS_DONE and unknown types end no job
            }
            let started = open.get_mut(&ev.task_id).and_then(VecDeque::pop_front);
            let t = report.tasks.entry(ev.task_id).or_default();
            match (&ev.kind, started) {
                (EventKind::Exit, Some(start)) => {
                    let rt = ev.time_ms.saturating_sub(start);
                    t.exited += 1;
                    t.response_sum_ms += rt;
                    t.response_max_ms = t.response_max_ms.max(rt);
                    t.response_min_ms = Some(t.response_min_ms.map_or(rt, |m| m.min(rt)));
                }
                (EventKind::ExitCritical, _) => {
                    t.exit_critical += 1;
                    missed = true;
                }
                (EventKind::ExitPeriod, _) => {
                    t.exit_period += 1;
                    missed = true;
                }
                _ => t.other_ends += 1,
            }
        }
        report.variants += 1;
        report.variants_with_miss += u64::from(missed);
        Ok(())
    }

    async fn taskset_bad(&mut self, _v: &VariantBad) -> Result<(), HandlerError> {
        self.report().bad += 1;
        Ok(())
    }

    async fn run_finished(&mut self, _summary: &RunSummary) -> Result<(), HandlerError> {
        print!("{}", self.report().table());
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cluster =
        SimCluster::start(8, Ipv4Addr::new(127, 0, 0, 2), 0, SimConfig::default()).await?;
    let handler = ResponseTimes::default();

    let mut d = Distributor::builder()
        .hosts(cluster.addrs().iter().map(|a| a.to_string()))?
        .probe(ProbeKind::Tcp)
        .handler(handler.clone())
        .build()?;
    d.start(Spec::load("util-uunifast")?).await?;
    let summary = d.wait().await?;
    // close() reports the run end: the handler prints its table here.
    d.close().await?;
    cluster.shutdown().await;

    let report = handler.report();
    let misses: u64 = report.tasks.values().map(TaskStats::misses).sum();
    println!(
        "distributor: {} done, {} bad; handler: {} variants, {misses} deadline misses",
        summary.done, summary.bad, report.variants
    );
    if report.variants != summary.done {
        return Err(format!(
            "the handler saw {} finished variants, the distributor {}",
            report.variants, summary.done
        )
        .into());
    }
    Ok(())
}
