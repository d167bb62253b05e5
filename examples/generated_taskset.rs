//! Task-sets built in code, and the `start` / `stop` / `start_with` life cycle.
//!
//! Three parts, all on simulated targets on `127.0.0.x`:
//!
//! 1. A single hand-built [`TaskSet`] of two `hey` tasks, run with [`Distributor::start`]
//!    (a `TaskSet` is a one-variant workload).
//! 2. A hand-written [`VariantSource`]: a utilisation sweep whose variant `i` is computed on
//!    demand. Each variant splits a total utilisation over four tasks with UUniFast
//!    ([`generate::uunifast`]), draws log-uniform periods, sets
//!    `executiontime = share x period` and implicit deadlines, and assigns rate-monotonic
//!    priorities (shorter period, higher priority; 0 is highest). Every random draw comes
//!    from [`draw_key`]`(seed, index, position)`, so variant `i` is the same whenever and
//!    wherever it is built: a requeued or resumed variant is the same task-set. Totals above
//!    1 overload the single core, so jobs miss deadlines (EXIT_PERIOD).
//! 3. The same sweep on targets of the v1 dialect, the only one that takes admission-control
//!    data: `start` then at once `stop` (in-flight variants go back to the queue, nothing is
//!    lost), then `start_with` the same sweep and [`AdmissionControl`] data, after which the
//!    targets reject jobs their admission test refuses (NOT_SCHEDULED) instead of running
//!    them late.
//!
//! ```text
//! cargo run --example generated_taskset
//! ```

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use taskdist::distributor::{Distributor, DistributorBuilder, ProbeKind, VariantSource, Workload};
use taskdist::handlers::{EventHandler, EventKind, HandlerError, VariantFinished};
use taskdist::protocol::{Dialect, SessionConfig};
use taskdist::sim::{SimCluster, SimConfig};
use taskdist::tasksets::generate::{execution_ms, uunifast};
use taskdist::tasksets::rng::{draw_key, SplitMix64};
use taskdist::{AdmissionControl, Goal, Task, TaskSet};

/// Rate-monotonic UUniFast task-sets: `samples` variants per total utilisation.
#[derive(Debug, Clone)]
struct UtilisationSweep {
    tasks: usize,
    totals: Vec<f64>,
    samples: u64,
    period_ms: (u64, u64),
    jobs: u32,
    seed: u64,
}

impl UtilisationSweep {
    /// Draw positions: one stream for the split, one per task for its period.
    const SPLIT: u64 = 0;
    const PERIOD: u64 = 1;
}

impl VariantSource for UtilisationSweep {
    fn variant_count(&self) -> Option<u64> {
        Some(self.totals.len() as u64 * self.samples)
    }

    fn get(&self, index: u64) -> Result<TaskSet, String> {
        let total = usize::try_from(index / self.samples)
            .ok()
            .and_then(|i| self.totals.get(i))
            .copied()
            .ok_or_else(|| {
                format!(
                    "variant {index} is out of range 0..{:?}",
                    self.variant_count()
                )
            })?;
        let mut shares = Vec::with_capacity(self.tasks);
        uunifast(
            &mut SplitMix64::new(draw_key(self.seed, index, Self::SPLIT)),
            self.tasks,
            total,
            &mut shares,
        );
        let mut tasks: Vec<Task> = shares
            .iter()
            .enumerate()
            .map(|(i, &u)| {
                let position = Self::PERIOD + i as u64;
                let mut rng = SplitMix64::new(draw_key(self.seed, index, position));
                let mut t = Task::new(i as u32, "hey");
                t.period_ms = rng.log_uniform_u64(self.period_ms.0, self.period_ms.1);
                t.executiontime_ms = execution_ms(u, t.period_ms);
                t.deadline_ms = t.period_ms;
                t.numberofjobs = self.jobs;
                t
            })
            .collect();
        // Rate-monotonic: rank by period, the shortest gets priority 1.
        let mut order: Vec<usize> = (0..tasks.len()).collect();
        order.sort_by_key(|&i| (tasks[i].period_ms, i));
        for (rank, &i) in order.iter().enumerate() {
            tasks[i].priority = rank as u32 + 1;
        }
        TaskSet::new(tasks).map_err(|e| e.to_string())
    }

    fn name(&self) -> String {
        format!("rate-monotonic UUniFast sweep of {} tasks", self.tasks)
    }

    fn text(&self) -> String {
        // Identifies the variants (stored in run.json, part of the resume fingerprint).
        format!("{self:?}")
    }

    fn seed(&self) -> u64 {
        self.seed
    }
}

/// Counts job ends by kind in finished variants: how many missed, how many were rejected.
#[derive(Debug, Default, Clone)]
struct Ends {
    exit: Arc<AtomicU64>,
    missed: Arc<AtomicU64>,
    not_scheduled: Arc<AtomicU64>,
}

impl Ends {
    /// The counts so far, and reset them.
    fn take(&self) -> String {
        let t = |a: &AtomicU64| a.swap(0, Ordering::Relaxed);
        format!(
            "jobs: {} EXIT, {} deadline misses (EXIT_PERIOD/EXIT_CRITICAL), {} NOT_SCHEDULED",
            t(&self.exit),
            t(&self.missed),
            t(&self.not_scheduled)
        )
    }
}

#[async_trait]
impl EventHandler for Ends {
    async fn taskset_finished(&mut self, v: &VariantFinished) -> Result<(), HandlerError> {
        for e in &v.events {
            let counter = match e.event.kind {
                EventKind::Exit => &self.exit,
                EventKind::ExitPeriod | EventKind::ExitCritical => &self.missed,
                EventKind::NotScheduled => &self.not_scheduled,
                _ => continue,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

fn builder(cluster: &SimCluster) -> Result<DistributorBuilder, Box<dyn std::error::Error>> {
    Ok(Distributor::builder()
        .hosts(cluster.addrs().iter().map(|a| a.to_string()))?
        .probe(ProbeKind::Tcp))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sweep = Workload::new(UtilisationSweep {
        tasks: 4,
        totals: vec![0.4, 0.8, 1.2, 1.6],
        samples: 5,
        period_ms: (10, 200),
        jobs: 5,
        seed: 42,
    });
    println!(
        "{}, {} variants; the last one:",
        sweep.source.name(),
        sweep.source.variant_count().unwrap_or_default()
    );
    let last = sweep
        .source
        .get(sweep.source.variant_count().unwrap_or(1) - 1)?;
    for t in &last.tasks {
        println!(
            "  task {}: period {} ms, executiontime {} ms, priority {}",
            t.id, t.period_ms, t.executiontime_ms, t.priority
        );
    }

    // Parts 1 and 2: v3 targets (the default dialect).
    let v3 = SimCluster::start(4, Ipv4Addr::new(127, 0, 0, 2), 0, SimConfig::default()).await?;
    let ends = Ends::default();
    let mut d = builder(&v3)?.handler(ends.clone()).build()?;

    let mut fast = Task::new(0, "hey");
    fast.period_ms = 20;
    fast.numberofjobs = 10;
    fast.priority = 1;
    let mut slow = Task::new(1, "hey");
    slow.period_ms = 50;
    slow.offset_ms = 5;
    slow.numberofjobs = 4;
    slow.priority = 2;
    d.start(TaskSet::new(vec![fast, slow])?).await?;
    let s = d.wait().await?;
    println!(
        "hand-built task-set: {} done, {} events; {}",
        s.done,
        s.events,
        ends.take()
    );

    d.start(sweep.clone()).await?;
    let s = d.wait().await?;
    println!(
        "sweep on v3, no admission control: {} done, {} bad; {}",
        s.done,
        s.bad,
        ends.take()
    );
    d.close().await?;
    v3.shutdown().await;

    // Part 3: v1 targets, stop and start again with admission-control data.
    let cfg = SimConfig {
        dialect: Dialect::V1,
        ..SimConfig::default()
    };
    let v1 = SimCluster::start(4, Ipv4Addr::new(127, 0, 0, 2), 0, cfg).await?;
    // v1 and v2 have no AVAILABLE fence, so after CLEAR a session collects late frames for a
    // drain window (1.5 s by default, needed on real targets). Simulated targets in fast mode
    // send nothing late, so a short window keeps this part quick.
    let session = SessionConfig {
        drain_window: Duration::from_millis(50),
        ..SessionConfig::for_dialect(Dialect::V1)
    };
    let mut d = builder(&v1)?
        .session(session)
        .handler(ends.clone())
        .build()?;
    d.start(sweep.clone()).await?;
    let s = d.stop().await?; // targets stop; in-flight variants are requeued, not lost
    println!(
        "sweep on v1, stopped at once: {} done, {} requeued, interrupted: {}; {}",
        s.done,
        s.requeued,
        s.interrupted,
        ends.take()
    );
    let admission = AdmissionControl {
        goal: Goal::Utilization,
        query_interval_ms: 1000,
    };
    d.start_with(sweep.clone(), admission).await?;
    let s = d.wait().await?;
    println!(
        "sweep on v1 with admission control: {} done, {} bad; {}",
        s.done,
        s.bad,
        ends.take()
    );
    let totals = d.close().await?;
    v1.shutdown().await;
    println!(
        "all runs of the v1 distributor: {} done, {} bad, {} events",
        totals.done, totals.bad, totals.events
    );
    Ok(())
}
