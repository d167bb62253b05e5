//! One run: the supervisor that turns discovered hosts into workers, the workers that stream
//! variants through sessions, and the recorder that flushes handlers and appends the ledger.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use taskdist_handlers::{
    AttemptId, RunInfo, RunSummary, TimedEvent, VariantBad, VariantFinished, VariantStarted,
    VariantStopped,
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::fanout::{FanoutSender, Msg};
use super::{
    run_fingerprint, Config, DistributorError, Job, Ledger, Metrics, MetricsSnapshot, RangeSet,
    Take, TargetState, WorkQueue, Workload,
};
use crate::discovery::{HostChange, HostPool, Monitor, MonitorHandle};
use crate::protocol::{Session, TargetError};

/// After this long without any target, say so once.
const NO_TARGET_WARNING: std::time::Duration = std::time::Duration::from_secs(15);

/// How often the supervisor checks whether some target is healthy (give-up rule).
const HEALTH_CHECK: std::time::Duration = std::time::Duration::from_millis(500);

/// Shared state of one run.
struct RunCtx {
    cfg: Arc<Config>,
    workload: Workload,
    queue: WorkQueue,
    fanout: FanoutSender,
    metrics: Arc<Metrics>,
    /// Outcomes `(index, bad)` whose rows are not yet flushed and recorded in the ledger.
    unrecorded: Mutex<Vec<(u64, bool)>>,
    /// Binaries sent to each target since its last (assumed) boot.
    sent: Mutex<HashMap<SocketAddr, HashSet<String>>>,
    /// First fatal error (a handler failed); stops the run.
    fatal: Mutex<Option<DistributorError>>,
    cancel: CancellationToken,
}

impl RunCtx {
    fn fail(&self, e: DistributorError) {
        let mut f = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            tracing::error!(error = %e, "run stops");
            *f = Some(e);
        }
        self.cancel.cancel();
    }

    async fn send(&self, m: Msg) -> bool {
        match self.fanout.send(m).await {
            Ok(()) => true,
            Err(e) => {
                self.fail(e.into());
                false
            }
        }
    }

    /// The variant has its outcome and its rows were handed to the handlers.
    fn outcome(&self, index: u64, bad: bool) {
        self.unrecorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((index, bad));
        self.queue.complete(index);
    }
}

/// Start a run in the background.
pub(crate) fn launch(
    cfg: Arc<Config>,
    pool: HostPool,
    workload: Workload,
    fanout: FanoutSender,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) -> Result<tokio::task::JoinHandle<Result<RunSummary, DistributorError>>, DistributorError> {
    let source = &workload.source;
    let len = source.variant_count();
    let fp = run_fingerprint(&workload, cfg.selection);
    let (ledger, done) = match &cfg.ledger {
        None => (None, RangeSet::default()),
        Some(l) => {
            std::fs::create_dir_all(&l.dir).map_err(|e| {
                DistributorError::Config(format!("cannot create {}: {e}", l.dir.display()))
            })?;
            if l.resume {
                let (ledger, done) = Ledger::resume(&l.dir, &fp)?;
                (Some(ledger), done)
            } else {
                (Some(Ledger::create(&l.dir, &fp)?), RangeSet::default())
            }
        }
    };
    let planned = cfg.selection.planned(len);
    let already = done.count();
    metrics.reset_run(planned, already);
    let info = RunInfo {
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        spec_name: source.name(),
        spec_text: source.text(),
        seed: source.seed(),
        total_variants: len.map(u128::from),
        planned_variants: planned,
        dialect: cfg.session.dialect.to_string(),
        command: cfg.command.clone(),
        started_at: SystemTime::now(),
    };
    let ctx = Arc::new(RunCtx {
        queue: WorkQueue::new(len, cfg.selection, done),
        cfg,
        workload,
        fanout,
        metrics,
        unrecorded: Mutex::new(Vec::new()),
        sent: Mutex::new(HashMap::new()),
        fatal: Mutex::new(None),
        cancel,
    });
    if already > 0 {
        tracing::debug!(already, "resuming: variants with an outcome are skipped");
    }
    Ok(tokio::spawn(supervise(ctx, pool, info, ledger)))
}

async fn supervise(
    ctx: Arc<RunCtx>,
    pool: HostPool,
    info: RunInfo,
    ledger: Option<Ledger>,
) -> Result<RunSummary, DistributorError> {
    let started = Instant::now();
    let base = (
        ctx.metrics.done.load(Ordering::Relaxed),
        ctx.metrics.bad.load(Ordering::Relaxed),
        ctx.metrics.requeued.load(Ordering::Relaxed),
        ctx.metrics.events.load(Ordering::Relaxed),
    );
    ctx.send(Msg::RunStarted(Arc::new(info))).await;

    let recorder_stop = CancellationToken::new();
    let recorder = tokio::spawn(record(ctx.clone(), ledger, recorder_stop.clone()));

    let workers_cancel = ctx.cancel.child_token();
    let monitor_cancel = ctx.cancel.child_token();
    let prober = ctx.cfg.probe.prober(&ctx.cfg.session);
    let pool_len = pool.len();
    let (monitor, mut changes) = Monitor::spawn(
        pool,
        prober,
        ctx.cfg.monitor.clone(),
        monitor_cancel.clone(),
    );
    let mut workers: JoinSet<(SocketAddr, WorkerExit)> = JoinSet::new();
    let mut active: HashSet<SocketAddr> = HashSet::new();
    let mut side: JoinSet<()> = JoinSet::new();
    let mut monitor_open = true;

    let lonely = tokio::time::sleep(NO_TARGET_WARNING);
    tokio::pin!(lonely);
    let mut warned = false;
    let mut health = tokio::time::interval(HEALTH_CHECK);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unhealthy_since = Some(tokio::time::Instant::now());
    loop {
        tokio::select! {
            _ = &mut lonely, if !warned => {
                warned = true;
                warn_if_no_target(&ctx.metrics.snapshot(), pool_len);
            }
            _ = health.tick(), if ctx.cfg.give_up_after.is_some() => {
                let now = tokio::time::Instant::now();
                if ctx.metrics.has_healthy_target() {
                    unhealthy_since = None;
                } else {
                    let since = *unhealthy_since.get_or_insert(now);
                    if let Some(limit) = ctx.cfg.give_up_after {
                        if now.duration_since(since) >= limit {
                            ctx.fail(DistributorError::GaveUp { waited: limit });
                            break;
                        }
                    }
                }
            }
            _ = ctx.queue.wait_all_done() => break,
            _ = ctx.cancel.cancelled() => break,
            change = changes.recv(), if monitor_open => match change {
                Some(HostChange::Up(addr)) => {
                    if active.insert(addr) {
                        tracing::debug!(%addr, "target up");
                        workers.spawn(worker(addr, ctx.clone(), workers_cancel.clone()));
                    }
                }
                Some(HostChange::Down(addr)) => {
                    tracing::debug!(%addr, "host down");
                    // It may come back rebooted, without the binaries sent to it.
                    forget_binaries(&ctx, addr);
                }
                // The monitor ended (it is cancelled only at shutdown): no new targets.
                None => monitor_open = false,
            },
            Some(joined) = workers.join_next(), if !workers.is_empty() => {
                let Ok((addr, exit)) = joined else {
                    ctx.fail(DistributorError::Internal("a worker panicked".into()));
                    break;
                };
                active.remove(&addr);
                if let WorkerExit::Failed { consecutive, suspect, .. } = exit {
                    let quarantine = consecutive >= ctx.cfg.quarantine_after;
                    let state = if quarantine { TargetState::Quarantined } else { TargetState::Backoff };
                    ctx.metrics.set_state(addr, state);
                    side.spawn(return_to_pool(ctx.clone(), monitor.clone(), addr, suspect, quarantine));
                }
            }
        }
    }

    // Shut down: workers stop (requeueing what they hold), then the monitor.
    workers_cancel.cancel();
    while let Some(joined) = workers.join_next().await {
        if let Ok((addr, _)) = joined {
            ctx.metrics.set_state(addr, TargetState::Closed);
        }
    }
    monitor_cancel.cancel();
    side.abort_all();
    recorder_stop.cancel();
    let recorded = recorder
        .await
        .map_err(|e| DistributorError::Internal(format!("recorder: {e}")))?;
    if let Some(e) = ctx.fatal.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    recorded?;
    let m = &ctx.metrics;
    Ok(RunSummary {
        done: m.done.load(Ordering::Relaxed) - base.0,
        bad: m.bad.load(Ordering::Relaxed) - base.1,
        requeued: m.requeued.load(Ordering::Relaxed) - base.2,
        events: m.events.load(Ordering::Relaxed) - base.3,
        interrupted: !ctx.queue.all_done(),
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// Say once why no target works yet: no host answers the probe, or hosts answer but no
/// session can be opened.
fn warn_if_no_target(m: &MetricsSnapshot, pool_len: u128) {
    if m.done + m.bad > 0 || m.targets_up > 0 {
        return;
    }
    let secs = NO_TARGET_WARNING.as_secs();
    match m
        .targets
        .iter()
        .find_map(|(a, t)| t.last_error.as_ref().map(|e| (a, e)))
    {
        Some((addr, error)) => tracing::warn!(
            "after {secs} s no session could be opened: hosts answer the probe, but e.g. {addr} \
             fails with \"{error}\"; check --port, --dialect and that the dom0 server runs"
        ),
        None => tracing::warn!(
            "no host of the {pool_len} addresses has answered the probe after {secs} s; still \
             probing (check the addresses and --probe)"
        ),
    }
}

/// A failed target goes back to the discovery pool: after the recovery command if it
/// misbehaved during work, and after the quarantine hold if it failed too often in a row.
async fn return_to_pool(
    ctx: Arc<RunCtx>,
    monitor: MonitorHandle,
    addr: SocketAddr,
    suspect: bool,
    quarantine: bool,
) {
    if let (Some(cmd), true) = (&ctx.cfg.recovery_cmd, suspect) {
        // A recovered target may have rebooted: its binaries count as unsent.
        forget_binaries(&ctx, addr);
        recover(cmd, addr, &ctx.cancel).await;
    }
    if quarantine {
        tracing::warn!(%addr, hold_s = ctx.cfg.quarantine_for.as_secs(), "target quarantined after repeated faults");
        tokio::select! {
            _ = tokio::time::sleep(ctx.cfg.quarantine_for) => {}
            _ = ctx.cancel.cancelled() => return,
        }
    }
    monitor.report_failed(addr);
}

/// Periodically: flush every handler, then append the flushed outcomes to the ledger (with
/// its fsyncs on a blocking thread). A ledger error stops the run at once: results that
/// cannot be recorded must not pile up for hours.
async fn record(
    ctx: Arc<RunCtx>,
    mut ledger: Option<Ledger>,
    stop: CancellationToken,
) -> Result<(), DistributorError> {
    let mut tick = tokio::time::interval(ctx.cfg.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.cancelled() => true,
        };
        let mut batch =
            std::mem::take(&mut *ctx.unrecorded.lock().unwrap_or_else(|p| p.into_inner()));
        if !batch.is_empty() || last {
            // Every message about `batch` was sent before this flush request.
            if let Err(e) = ctx.fanout.flush().await {
                ctx.fail(e.into());
                return Ok(());
            }
            if let Some(mut l) = ledger.take() {
                let written = tokio::task::spawn_blocking(move || {
                    let r = l.append_outcomes(&mut batch).and_then(|()| {
                        if last {
                            l.sync()
                        } else {
                            Ok(())
                        }
                    });
                    (l, r)
                })
                .await;
                match written {
                    Ok((l, Ok(()))) => ledger = Some(l),
                    Ok((_, Err(e))) => {
                        ctx.fail(e.into());
                        return Ok(());
                    }
                    Err(e) => {
                        ctx.fail(DistributorError::Internal(format!("ledger writer: {e}")));
                        return Ok(());
                    }
                }
            }
        }
        if last {
            return Ok(());
        }
    }
}

/// The target may have rebooted: binaries sent to it count as unsent.
fn forget_binaries(ctx: &RunCtx, addr: SocketAddr) {
    ctx.sent
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&addr);
}

/// Why a worker ended.
#[derive(Debug)]
enum WorkerExit {
    /// Every variant has an outcome.
    AllDone,
    /// The run is stopping.
    Cancelled,
    /// The session failed; the host goes back to the pool. `consecutive` counts failed
    /// attempts in a row (quarantine); `suspect` is set when the target misbehaved during
    /// work (timeout, lost connection, protocol violation, fault), which calls for the
    /// recovery command. A session that could not be opened is neither: backoff alone.
    /// `rebooted` is set when the target may have rebooted (its binaries count as unsent).
    Failed {
        consecutive: u32,
        suspect: bool,
        rebooted: bool,
    },
}

async fn worker(
    addr: SocketAddr,
    ctx: Arc<RunCtx>,
    cancel: CancellationToken,
) -> (SocketAddr, WorkerExit) {
    ctx.metrics.set_state(addr, TargetState::Connecting);
    let connected = tokio::select! {
        r = Session::connect(addr, ctx.cfg.session.clone()) => r,
        _ = cancel.cancelled() => return (addr, WorkerExit::Cancelled),
    };
    let mut session = match connected {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%addr, error = %e, "cannot open a session");
            if matches!(e, TargetError::Refused) {
                // Nothing listens: dom0 is restarting, so the target may come back rebooted.
                forget_binaries(&ctx, addr);
            }
            ctx.metrics.connect_failed(addr, &e.to_string());
            return (
                addr,
                WorkerExit::Failed {
                    consecutive: 0,
                    suspect: false,
                    rebooted: false,
                },
            );
        }
    };
    let mut sent = ctx
        .sent
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&addr)
        .unwrap_or_default();
    let exit = loop {
        ctx.metrics.set_state(addr, TargetState::Idle);
        let take = tokio::select! {
            t = ctx.queue.take() => t,
            _ = cancel.cancelled() => break WorkerExit::Cancelled,
        };
        let mut job = match take {
            Take::Job(job) => job,
            Take::AllDone => break WorkerExit::AllDone,
        };
        if let Some(q) = job.queued_at.take() {
            ctx.metrics.queue_wait(q.elapsed());
        }
        match run_one(addr, &ctx, &mut session, &mut sent, &mut job, &cancel).await {
            Ok(()) => {}
            Err(exit) => break exit,
        }
    };
    // A target that may have rebooted has lost its binaries; after a fault on a live
    // connection they stay loaded (the recovery command, if it runs, forgets them).
    if !matches!(exit, WorkerExit::Failed { rebooted: true, .. }) {
        ctx.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr, sent);
    }
    session.close().await;
    if !matches!(exit, WorkerExit::Failed { .. }) {
        ctx.metrics.set_state(addr, TargetState::Closed);
    }
    (addr, exit)
}

/// Run one job on the session. `Err` ends the worker.
async fn run_one(
    addr: SocketAddr,
    ctx: &RunCtx,
    session: &mut Session,
    sent: &mut HashSet<String>,
    job: &mut Job,
    cancel: &CancellationToken,
) -> Result<(), WorkerExit> {
    let id = AttemptId {
        variant: job.index,
        attempt: job.attempt,
        target: addr,
    };
    let started_at = SystemTime::now();
    let first_started = *job.first_started.get_or_insert(started_at);
    let taskset = match ctx.workload.source.get(job.index) {
        Ok(t) => Arc::new(t),
        Err(reason) => {
            // No target can run a variant that cannot be built: bad at once.
            let reason = format!("variant cannot be built: {reason}");
            bad(
                ctx,
                id,
                Arc::new(taskdist_tasksets::TaskSet::default()),
                reason,
                first_started,
            )
            .await;
            return Ok(());
        }
    };
    if !ctx
        .send(Msg::Started(Arc::new(VariantStarted {
            id,
            taskset: taskset.clone(),
            started_at,
        })))
        .await
    {
        ctx.queue.requeue(job.clone());
        return Err(WorkerExit::Cancelled);
    }
    ctx.metrics.set_state(addr, TargetState::Running);
    let t0 = Instant::now();
    let fanout = ctx.fanout.clone();
    let metrics = ctx.metrics.clone();
    let mut on_events = move |events: &[TimedEvent]| {
        metrics.saw_events(addr);
        let missed = fanout.offer(Msg::Live(id, Arc::new(events.to_vec())));
        if missed > 0 {
            metrics
                .live_skipped
                .fetch_add(missed as u64, Ordering::Relaxed);
        }
    };
    let stale_before = session.stale_events();
    let result = session
        .run_taskset(
            &taskset,
            ctx.workload.admission.as_ref(),
            &ctx.cfg.binaries,
            sent,
            &mut on_events,
            cancel,
        )
        .await;
    // Stale events of this attempt, whether it finished or failed.
    ctx.metrics.stale_events.fetch_add(
        session.stale_events().saturating_sub(stale_before),
        Ordering::Relaxed,
    );
    match result {
        Ok(run) => {
            let n = run.events.len() as u64;
            ctx.metrics.completed(addr, t0.elapsed());
            let finished = VariantFinished {
                id,
                taskset,
                events: run.events,
                started_at,
                finished_at: SystemTime::now(),
            };
            if !ctx.send(Msg::Finished(Arc::new(finished))).await {
                ctx.queue.requeue(job.clone());
                return Err(WorkerExit::Cancelled);
            }
            ctx.metrics.events.fetch_add(n, Ordering::Relaxed);
            ctx.metrics.done.fetch_add(1, Ordering::Relaxed);
            ctx.outcome(job.index, false);
            Ok(())
        }
        Err(TargetError::Cancelled) => {
            ctx.queue.requeue(job.clone());
            ctx.metrics.requeued.fetch_add(1, Ordering::Relaxed);
            ctx.send(Msg::Stopped(Arc::new(VariantStopped {
                id,
                reason: "stopped".into(),
            })))
            .await;
            Err(WorkerExit::Cancelled)
        }
        Err(e) if !e.is_retryable() && !session.is_broken() => {
            // The variant itself cannot run (invalid task-set, a binary that is missing,
            // admission data the dialect cannot take): no retry helps and the target is fine.
            let reason = e.to_string();
            tracing::warn!(%addr, variant = job.index, error = %reason, "variant cannot run");
            bad(ctx, id, taskset, reason, first_started).await;
            Ok(())
        }
        Err(e) => {
            let reason = e.to_string();
            tracing::warn!(%addr, variant = job.index, attempt = job.attempt, error = %reason, "attempt failed");
            let consecutive = ctx.metrics.failed(addr, &reason);
            job.failures += 1;
            if !job.failed_on.contains(&addr) {
                job.failed_on.push(addr);
            }
            let (ok, failed) = ctx.metrics.attempts();
            // Laplace's rule: a fresh run counts as one failure in two attempts.
            let p_fail = (failed + 1) as f64 / (failed + ok + 2) as f64;
            if points_at_variant(job, ctx.cfg.attempts, p_fail) {
                let reason = format!(
                    "{reason} (failed {} times on {} targets)",
                    job.failures,
                    job.failed_on.len()
                );
                bad(ctx, id, taskset, reason, first_started).await;
            } else {
                ctx.queue.requeue(job.clone());
                ctx.metrics.requeued.fetch_add(1, Ordering::Relaxed);
                ctx.send(Msg::Stopped(Arc::new(VariantStopped { id, reason })))
                    .await;
            }
            Err(WorkerExit::Failed {
                consecutive,
                suspect: e.target_suspect(),
                rebooted: e.may_have_rebooted(),
            })
        }
    }
}

/// Below this chance that a healthy variant fails as often as it did by bad luck alone, its
/// failures count as evidence against the variant.
const BAD_LUCK: f64 = 1e-6;

/// Whether a variant's failures point at the variant rather than at the targets that ran it.
/// `p_fail` is the share of this run's attempts that failed. Either the variant failed at
/// least `attempts` times, on at least two different targets, and so often that bad luck is
/// unlikely (`p_fail ^ failures <= 1e-6`: with 0.5 % of attempts failing, 3 failures; with
/// 5 %, 5; with 7 %, 6), or it failed `3 × attempts` times in all, which also ends a pool of one target.
fn points_at_variant(job: &Job, attempts: u32, p_fail: f64) -> bool {
    let f = job.failures;
    if f >= attempts.saturating_mul(3) {
        return true;
    }
    f >= attempts
        && job.failed_on.len() >= 2
        && p_fail.clamp(0.0, 1.0).powi(f.min(64) as i32) <= BAD_LUCK
}

async fn bad(
    ctx: &RunCtx,
    id: AttemptId,
    taskset: Arc<taskdist_tasksets::TaskSet>,
    reason: String,
    started_at: SystemTime,
) {
    let sent = ctx
        .send(Msg::Bad(Arc::new(VariantBad {
            id,
            taskset,
            reason,
            started_at,
            finished_at: SystemTime::now(),
        })))
        .await;
    if sent {
        ctx.metrics.bad.fetch_add(1, Ordering::Relaxed);
        ctx.outcome(id.variant, true);
    }
}

/// Run the recovery command for a dead target, bounded by a timeout.
async fn recover(cmd: &str, addr: SocketAddr, cancel: &CancellationToken) {
    let text = cmd
        .replace("{addr}", &addr.to_string())
        .replace("{ip}", &addr.ip().to_string())
        .replace("{port}", &addr.port().to_string());
    tracing::info!(%addr, command = %text, "running recovery command");
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&text)
        .env("TASKDIST_TARGET", addr.to_string())
        .kill_on_drop(true)
        .status();
    tokio::select! {
        r = tokio::time::timeout(std::time::Duration::from_secs(300), child) => match r {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => tracing::warn!(%addr, %status, "recovery command failed"),
            Ok(Err(e)) => tracing::warn!(%addr, error = %e, "recovery command could not run"),
            Err(_) => tracing::warn!(%addr, "recovery command timed out after 300 s"),
        },
        _ = cancel.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(failed_on: &[u8], failures: u32) -> Job {
        Job {
            index: 0,
            attempt: failures,
            failures,
            failed_on: failed_on
                .iter()
                .map(|&i| SocketAddr::from(([127, 0, 0, i], 3001)))
                .collect(),
            first_started: None,
            queued_at: None,
        }
    }

    #[test]
    fn bad_needs_evidence_against_the_variant() {
        let rare = 0.005; // 0.5 % of attempts fail
                          // three failures on one target: the target's fault, not the variant's
        assert!(!points_at_variant(&job(&[2], 3), 3, rare));
        // on two targets, where failures are rare: the variant
        assert!(points_at_variant(&job(&[2, 3], 3), 3, rare));
        assert!(!points_at_variant(&job(&[2, 3], 2), 3, rare));
        // where 7 % of attempts fail, three failures are bad luck; six are not
        assert!(!points_at_variant(&job(&[2, 3, 4], 3), 3, 0.07));
        assert!(!points_at_variant(&job(&[2, 3], 5), 3, 0.07));
        assert!(points_at_variant(&job(&[2, 3], 6), 3, 0.07));
        // a pool of one, or a run where everything fails, still ends: 3 × attempts
        assert!(points_at_variant(&job(&[2], 9), 3, rare));
        assert!(points_at_variant(&job(&[2, 3], 9), 3, 1.0));
        assert!(!points_at_variant(&job(&[2], 1), 1, rare));
        assert!(points_at_variant(&job(&[2], 3), 1, rare));
    }
}
