//! The scheduler: which experiment an idle target serves next.
//!
//! Pure bookkeeping under one lock, no I/O: targets register when their session opens,
//! experiments when they are submitted; [`Scheduler::take`] answers "what should this target run
//! now", [`Scheduler::finish`] records how it went. The rules, in order:
//!
//! 1. Only experiments the target can serve: its labels satisfy the experiment's selector, and
//!    its dialect can take the experiment's admission-control data (v1 only).
//! 2. Strict priority: the highest priority level with queued work the target can serve. The
//!    strategy may make the target skip an experiment (then it looks further, lower levels
//!    included) or wait for it (then it takes nothing of a lower level).
//! 3. Within a level, weighted fair share of target time: the experiment with the least
//!    target time per unit of weight (finished attempts plus the running ones so far, minus the
//!    strategy's credit for this target).
//! 4. The experiment's own queue gives the variant: requeued attempts first.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::labels::{Labels, Selector};
use super::strategy::{Strategy, Verdict};
use crate::distributor::{Job, Take, WorkQueue};
use crate::protocol::Dialect;

/// Identifies an experiment within a pool.
pub(crate) type ExpId = u64;

/// Weight of the newest task-set time in the moving average of a (target, experiment) pair.
const EWMA_ALPHA: f64 = 0.2;

/// How one target has done with one experiment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairStats {
    /// Variants handed to the target for the experiment.
    pub assigned: u64,
    /// Round-robin turns: `assigned`, counted from the lowest count among the experiment's
    /// targets when this target joined (so a late target does not get a backlog of turns).
    pub turns: u64,
    /// Task-sets completed.
    pub completed: u64,
    /// Failed attempts.
    pub failures: u64,
    /// Failed attempts in a row (reset by a completion).
    pub consecutive_failures: u32,
    /// When the last attempt failed.
    pub last_failure: Option<Instant>,
    /// Moving average of the wall time per completed task-set.
    pub ewma: Option<Duration>,
    /// Target time spent on the experiment (finished attempts, failed ones included).
    pub busy: Duration,
}

/// A target as the scheduler sees it.
#[derive(Debug)]
struct TargetEntry {
    labels: Arc<Labels>,
    dialect: Dialect,
    /// The attempt it runs: experiment and start.
    running: Option<(ExpId, Instant)>,
    /// Binaries identity last loaded by a completed task-set (affinity).
    binaries: Option<u64>,
}

/// What the scheduler needs to know about an experiment.
#[derive(Debug)]
pub(crate) struct ExpSpec {
    /// Higher first.
    pub priority: i64,
    /// Share among equal priorities.
    pub weight: f64,
    /// Targets it may run on.
    pub selector: Selector,
    /// Admission-control data: v1 targets only.
    pub needs_optimize: bool,
    /// Identity of its binaries (0: the synthetic images, the same for every experiment).
    pub binaries_id: u64,
    /// Its variants.
    pub queue: Arc<WorkQueue>,
    /// Starts paused: no attempts until resumed.
    pub paused: bool,
}

#[derive(Debug)]
struct ExpEntry {
    id: ExpId,
    spec: ExpSpec,
    /// No new attempts (done or stopping).
    closed: bool,
    /// No new attempts until resumed; running ones finish.
    paused: bool,
    /// Target time of finished attempts.
    charged: Duration,
    /// Attempts running and the sum of their start times (seconds since `epoch`).
    running: u64,
    running_since_sum: f64,
    /// Moving average over all targets.
    ewma: Option<Duration>,
    /// The smallest moving average of a target (refreshed when a task-set completes).
    fastest: Option<Duration>,
    /// One entry per registered target that can serve the experiment.
    pairs: HashMap<SocketAddr, PairStats>,
}

impl ExpEntry {
    fn can_use(&self, t: &TargetEntry) -> bool {
        self.spec.selector.matches(&t.labels)
            && (!self.spec.needs_optimize || t.dialect.has_optimize())
    }

    fn target_time(&self, now_s: f64) -> f64 {
        self.charged.as_secs_f64() + (self.running as f64 * now_s - self.running_since_sum).max(0.0)
    }
}

/// How an attempt ended, for the books.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The task-set completed.
    Done,
    /// The attempt failed (requeued or bad).
    Failed,
    /// Stopped, or the variant was bad without a target fault: no verdict on the target.
    Neutral,
}

/// The scheduler of a pool.
#[derive(Debug)]
pub(crate) struct Scheduler {
    strategy: Arc<dyn Strategy>,
    epoch: Instant,
    next_id: ExpId,
    /// Ordered by priority (highest first), then by submission.
    exps: Vec<ExpEntry>,
    targets: HashMap<SocketAddr, TargetEntry>,
}

/// What a strategy sees when a target asks for work of one experiment.
#[derive(Debug)]
pub struct Offer<'a> {
    exp: &'a ExpEntry,
    all: &'a [ExpEntry],
    targets: &'a HashMap<SocketAddr, TargetEntry>,
    target: SocketAddr,
    pair: &'a PairStats,
    now: Instant,
}

/// Another target that can serve the experiment of an [`Offer`].
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    /// Its address.
    pub addr: SocketAddr,
    /// How it has done with the experiment.
    pub stats: &'a PairStats,
    /// Whether it is running an attempt of this experiment (`false`: idle).
    pub running: bool,
    /// Estimated time until its current attempt of this experiment ends (zero when idle).
    pub free_in: Duration,
}

impl<'a> Offer<'a> {
    /// The target asking for work.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// How the target has done with this experiment.
    pub fn stats(&self) -> &PairStats {
        self.pair
    }

    /// Variants of the experiment waiting for a target (requeued ones included).
    pub fn queued(&self) -> u64 {
        self.exp.spec.queue.queued()
    }

    /// Estimated wall time of one task-set of the experiment on `addr`: its own moving
    /// average, else the experiment's over all targets, else unknown.
    pub fn estimate(&self, addr: SocketAddr) -> Option<Duration> {
        self.exp
            .pairs
            .get(&addr)
            .and_then(|p| p.ewma)
            .or(self.exp.ewma)
    }

    /// The smallest per-target estimate of the experiment (None before a completion).
    pub fn fastest_estimate(&self) -> Option<Duration> {
        self.exp.fastest.or(self.exp.ewma)
    }

    /// Number of targets registered that can serve the experiment (an upper bound on
    /// [`Offer::peers`]).
    pub fn eligible_targets(&self) -> usize {
        self.exp.pairs.len()
    }

    /// Whether the target's last completed task-set loaded the same binaries as this
    /// experiment uses (so nothing needs to be transferred).
    pub fn holds_binaries(&self) -> bool {
        self.targets
            .get(&self.target)
            .is_some_and(|t| t.binaries == Some(self.exp.spec.binaries_id))
    }

    /// The targets available to the experiment, this one included: registered, able to
    /// serve it, and idle or running one of its attempts (a target busy with another
    /// experiment is not counted).
    pub fn peers(&self) -> impl Iterator<Item = Peer<'a>> + '_ {
        let now = self.now;
        let id = self.exp.id;
        self.exp.pairs.iter().filter_map(move |(addr, stats)| {
            let t = self.targets.get(addr)?;
            match t.running {
                None => Some(Peer {
                    addr: *addr,
                    stats,
                    running: false,
                    free_in: Duration::ZERO,
                }),
                Some((e, since)) if e == id => {
                    let est = stats.ewma.or(self.exp.ewma).unwrap_or(Duration::ZERO);
                    Some(Peer {
                        addr: *addr,
                        stats,
                        running: true,
                        free_in: est.saturating_sub(now.saturating_duration_since(since)),
                    })
                }
                Some(_) => None,
            }
        })
    }

    /// The time of this decision.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Whether another experiment with queued variants could use the target, one it has not
    /// failed `failures` times in a row.
    pub fn other_work(&self, failures: u32) -> bool {
        self.all.iter().any(|e| {
            e.id != self.exp.id
                && !e.closed
                && e.pairs
                    .get(&self.target)
                    .is_some_and(|p| p.consecutive_failures < failures)
                && e.spec.queue.queued() > 0
        })
    }
}

/// A target's next work.
#[derive(Debug)]
pub(crate) struct Assignment {
    pub exp: ExpId,
    pub job: Job,
}

/// Experiment figures for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ExpFigures {
    /// Attempts running.
    pub running: u64,
    /// Target time used (finished and running attempts).
    pub target_time: Duration,
    /// Share of the pool's target time used by all experiments.
    pub share: f64,
}

impl Scheduler {
    /// A scheduler deciding with `strategy`.
    pub fn new(strategy: Arc<dyn Strategy>) -> Self {
        Scheduler {
            strategy,
            epoch: Instant::now(),
            next_id: 1,
            exps: Vec::new(),
            targets: HashMap::new(),
        }
    }

    fn secs(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.epoch).as_secs_f64()
    }

    /// Add an experiment; it is served from now on.
    #[cfg(test)]
    pub fn add_experiment(&mut self, spec: ExpSpec) -> ExpId {
        let id = self.reserve_id();
        self.add_experiment_as(id, spec);
        id
    }

    /// An id for an experiment added later with [`Scheduler::add_experiment_as`].
    pub fn reserve_id(&mut self) -> ExpId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Add an experiment under a reserved id.
    pub fn add_experiment_as(&mut self, id: ExpId, spec: ExpSpec) {
        let mut e = ExpEntry {
            id,
            paused: spec.paused,
            spec,
            closed: false,
            charged: Duration::ZERO,
            running: 0,
            running_since_sum: 0.0,
            ewma: None,
            fastest: None,
            pairs: HashMap::new(),
        };
        for (addr, t) in &self.targets {
            if e.can_use(t) {
                e.pairs.insert(*addr, PairStats::default());
            }
        }
        let pos = self
            .exps
            .iter()
            .position(|x| x.spec.priority < e.spec.priority)
            .unwrap_or(self.exps.len());
        self.exps.insert(pos, e);
    }

    /// No new attempts for the experiment (done or stopping); running ones finish.
    pub fn close_experiment(&mut self, id: ExpId) {
        if let Some(e) = self.exps.iter_mut().find(|e| e.id == id) {
            e.closed = true;
        }
    }

    /// Pause (no new attempts; running ones finish) or resume the experiment.
    pub fn set_paused(&mut self, id: ExpId, paused: bool) {
        if let Some(e) = self.exps.iter_mut().find(|e| e.id == id) {
            e.paused = paused;
        }
    }

    /// Attempts of the experiment still running.
    pub fn running(&self, id: ExpId) -> u64 {
        self.exps
            .iter()
            .find(|e| e.id == id)
            .map_or(0, |e| e.running)
    }

    /// Forget a closed experiment whose attempts all ended.
    pub fn remove_experiment(&mut self, id: ExpId) {
        self.exps
            .retain(|e| e.id != id || e.running > 0 || !e.closed);
    }

    /// Registered targets that can serve the experiment.
    pub fn eligible(&self, id: ExpId) -> Vec<SocketAddr> {
        self.exps
            .iter()
            .find(|e| e.id == id)
            .map(|e| {
                e.pairs
                    .keys()
                    .filter(|a| self.targets.contains_key(a))
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A target whose session is open joins.
    pub fn add_target(&mut self, addr: SocketAddr, labels: Arc<Labels>, dialect: Dialect) {
        let t = TargetEntry {
            labels,
            dialect,
            running: None,
            binaries: None,
        };
        for e in &mut self.exps {
            if e.can_use(&t) {
                let turns = e
                    .pairs
                    .iter()
                    .filter(|(a, _)| self.targets.contains_key(a))
                    .map(|(_, p)| p.turns)
                    .min()
                    .unwrap_or(0);
                let p = e.pairs.entry(addr).or_default();
                p.turns = p.turns.max(turns);
            }
        }
        self.targets.insert(addr, t);
    }

    /// A target's session ended; it holds no binaries any more if it may have rebooted.
    pub fn remove_target(&mut self, addr: SocketAddr) {
        if let Some(t) = self.targets.remove(&addr) {
            if let Some((id, since)) = t.running {
                // Not finished through `finish` (the worker ended): close the books.
                self.end_attempt(id, addr, since, Instant::now(), Outcome::Neutral);
            }
        }
        // Pair statistics stay (a returning target keeps its record); `peers` and `take`
        // only consider registered targets.
    }

    /// The next work for `target`, or `None` when it should wait.
    pub fn take(&mut self, target: SocketAddr, now: Instant) -> Option<Assignment> {
        let t = self.targets.get(&target)?;
        if t.running.is_some() {
            return None;
        }
        let now_s = self.secs(now);
        let mut i = 0;
        while i < self.exps.len() {
            let level = self.exps[i].spec.priority;
            let end = self.exps[i..]
                .iter()
                .position(|e| e.spec.priority != level)
                .map_or(self.exps.len(), |n| i + n);
            // Candidates of this level: (index, key); a Wait holds the target at this level.
            let mut candidates: Vec<(usize, f64)> = Vec::new();
            let mut wait = false;
            for (j, e) in self.exps[i..end].iter().enumerate() {
                if e.closed || e.paused {
                    continue;
                }
                if e.spec.queue.queued() == 0 {
                    // A shared store's experiment between two chunks keeps its level: the
                    // target waits for the grant instead of going to a lower priority.
                    if e.pairs.contains_key(&target) && e.spec.queue.awaiting_grant() {
                        wait = true;
                    }
                    continue;
                }
                let Some(pair) = e.pairs.get(&target) else {
                    continue;
                };
                let offer = Offer {
                    exp: e,
                    all: &self.exps,
                    targets: &self.targets,
                    target,
                    pair,
                    now,
                };
                match self.strategy.decide(&offer) {
                    Verdict::Take { credit } => {
                        let key = (e.target_time(now_s) - credit.as_secs_f64()) / e.spec.weight;
                        candidates.push((i + j, key));
                    }
                    Verdict::Wait => wait = true,
                    Verdict::Skip => {}
                }
            }
            candidates.sort_by(|a, b| a.1.total_cmp(&b.1));
            for (k, _) in candidates {
                let mut job = match self.exps[k].spec.queue.try_take() {
                    Some(Take::Job(job)) => job,
                    _ => continue,
                };
                job.dispatched = Some(std::time::SystemTime::now());
                let id = self.exps[k].id;
                self.begin_attempt(k, target, now, now_s);
                return Some(Assignment { exp: id, job });
            }
            if wait {
                return None;
            }
            i = end;
        }
        None
    }

    fn begin_attempt(&mut self, k: usize, target: SocketAddr, now: Instant, now_s: f64) {
        let e = &mut self.exps[k];
        e.running += 1;
        e.running_since_sum += now_s;
        if let Some(p) = e.pairs.get_mut(&target) {
            p.assigned += 1;
            p.turns += 1;
        }
        let id = e.id;
        if let Some(t) = self.targets.get_mut(&target) {
            t.running = Some((id, now));
        }
    }

    /// The attempt of `id` on `target` ended.
    pub fn finish(
        &mut self,
        id: ExpId,
        target: SocketAddr,
        outcome: Outcome,
        binaries: bool,
        now: Instant,
    ) {
        let Some(t) = self.targets.get_mut(&target) else {
            return;
        };
        let Some((running, since)) = t.running else {
            return;
        };
        if running != id {
            return;
        }
        t.running = None;
        if outcome == Outcome::Done && binaries {
            t.binaries = self
                .exps
                .iter()
                .find(|e| e.id == id)
                .map(|e| e.spec.binaries_id);
        }
        self.end_attempt(id, target, since, now, outcome);
    }

    /// The target may have rebooted: it holds no binaries.
    pub fn forget_binaries(&mut self, target: SocketAddr) {
        if let Some(t) = self.targets.get_mut(&target) {
            t.binaries = None;
        }
    }

    fn end_attempt(
        &mut self,
        id: ExpId,
        target: SocketAddr,
        since: Instant,
        now: Instant,
        outcome: Outcome,
    ) {
        let since_s = self.secs(since);
        let Some(e) = self.exps.iter_mut().find(|e| e.id == id) else {
            return;
        };
        let took = now.saturating_duration_since(since);
        e.running = e.running.saturating_sub(1);
        e.running_since_sum -= since_s;
        if e.running == 0 {
            e.running_since_sum = 0.0;
        }
        e.charged += took;
        if outcome == Outcome::Done {
            e.ewma = Some(ewma(e.ewma, took));
        }
        let Some(p) = e.pairs.get_mut(&target) else {
            return;
        };
        p.busy += took;
        match outcome {
            Outcome::Done => {
                p.completed += 1;
                p.consecutive_failures = 0;
                let new = ewma(p.ewma, took);
                let old = p.ewma.replace(new);
                // Keep the fastest average current: a rising average of the fastest pair
                // needs a scan, anything else a comparison.
                if old.is_some_and(|o| Some(o) == e.fastest && new > o) {
                    e.fastest = e.pairs.values().filter_map(|p| p.ewma).min();
                } else {
                    e.fastest = Some(e.fastest.map_or(new, |f| f.min(new)));
                }
            }
            Outcome::Failed => {
                p.failures += 1;
                p.consecutive_failures += 1;
                p.last_failure = Some(now);
            }
            Outcome::Neutral => {}
        }
    }

    /// Figures of every experiment, by id.
    pub fn figures(&self) -> HashMap<ExpId, ExpFigures> {
        let now_s = self.secs(Instant::now());
        let total: f64 = self.exps.iter().map(|e| e.target_time(now_s)).sum();
        self.exps
            .iter()
            .map(|e| {
                let tt = e.target_time(now_s);
                (
                    e.id,
                    ExpFigures {
                        running: e.running,
                        target_time: Duration::from_secs_f64(tt.max(0.0)),
                        share: if total > 0.0 { tt / total } else { 0.0 },
                    },
                )
            })
            .collect()
    }

    /// Per-target statistics of one experiment.
    pub fn pair_stats(&self, id: ExpId) -> Vec<(SocketAddr, PairStats)> {
        self.exps
            .iter()
            .find(|e| e.id == id)
            .map(|e| e.pairs.iter().map(|(a, p)| (*a, p.clone())).collect())
            .unwrap_or_default()
    }
}

fn ewma(old: Option<Duration>, new: Duration) -> Duration {
    match old {
        None => new,
        Some(o) => Duration::from_secs_f64(
            o.as_secs_f64() * (1.0 - EWMA_ALPHA) + new.as_secs_f64() * EWMA_ALPHA,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributor::{RangeSet, Selection};
    use crate::pool::strategy::{self, Greedy};

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, i], 3001))
    }

    fn queue(n: u64) -> Arc<WorkQueue> {
        Arc::new(WorkQueue::new(
            Some(n),
            Selection::default(),
            RangeSet::default(),
        ))
    }

    fn spec(name: &str, priority: i64, weight: f64, requires: &[&str], n: u64) -> ExpSpec {
        let _ = name;
        ExpSpec {
            priority,
            weight,
            selector: Selector::from_clauses(requires.iter().copied()).unwrap(),
            needs_optimize: false,
            binaries_id: 0,
            queue: queue(n),
            paused: false,
        }
    }

    fn labels(s: &str) -> Arc<Labels> {
        Arc::new(if s.is_empty() {
            Labels::new()
        } else {
            Labels::parse_pairs(s).unwrap()
        })
    }

    /// Run every target until nothing is left, each task-set of experiment `e` on target `t`
    /// taking `took(t, e)`; returns the per-experiment list of (target, start) in start order.
    fn simulate(
        s: &mut Scheduler,
        targets: &[SocketAddr],
        took: impl Fn(SocketAddr, ExpId) -> Duration,
    ) -> Vec<(ExpId, SocketAddr, Duration)> {
        let t0 = s.epoch;
        let mut now = t0;
        // (free at, target)
        let mut busy: Vec<(Instant, SocketAddr, ExpId, u64)> = Vec::new();
        let mut log = Vec::new();
        for _ in 0..100_000 {
            let mut progressed = false;
            for &t in targets {
                if busy.iter().any(|b| b.1 == t) {
                    continue;
                }
                if let Some(a) = s.take(t, now) {
                    log.push((a.exp, t, now - t0));
                    busy.push((now + took(t, a.exp), t, a.exp, a.job.index));
                    progressed = true;
                }
            }
            if progressed {
                continue;
            }
            // Advance to the next completion.
            busy.sort_by_key(|b| b.0);
            if busy.is_empty() {
                break;
            }
            let (at, t, e, index) = busy.remove(0);
            now = at;
            s.finish(e, t, Outcome::Done, true, now);
            let q = s
                .exps
                .iter()
                .find(|x| x.id == e)
                .unwrap()
                .spec
                .queue
                .clone();
            q.complete(index);
        }
        log
    }

    #[test]
    fn strict_priority_then_lower_levels() {
        let mut s = Scheduler::new(Arc::new(Greedy));
        let low = s.add_experiment(spec("low", 1, 1.0, &[], 5));
        let high = s.add_experiment(spec("high", 10, 1.0, &[], 5));
        for i in 2..6 {
            s.add_target(addr(i), labels(""), Dialect::V3);
        }
        let ts: Vec<_> = (2..6).map(addr).collect();
        let log = simulate(&mut s, &ts, |_, _| Duration::from_millis(10));
        let last_high = log.iter().rposition(|l| l.0 == high).unwrap();
        let first_low = log.iter().position(|l| l.0 == low).unwrap();
        assert!(first_low > last_high, "{log:?}");
        assert_eq!(log.len(), 10);
    }

    #[test]
    fn a_store_experiment_between_chunks_keeps_its_level() {
        let mut s = Scheduler::new(Arc::new(Greedy));
        let low = s.add_experiment(spec("low", 1, 1.0, &[], 5));
        let gated = Arc::new(WorkQueue::gated(Arc::new(tokio::sync::Notify::new())));
        let mut high_spec = spec("high", 10, 1.0, &[], 0);
        high_spec.queue = gated.clone();
        let high = s.add_experiment(high_spec);
        s.add_target(addr(2), labels(""), Dialect::V3);
        let now = s.epoch;
        // No grant yet, but one is expected: the target waits instead of taking `low`.
        assert!(s.take(addr(2), now).is_none());
        gated.grant(0, 1, &RangeSet::default());
        let a = s.take(addr(2), now).expect("the granted variant");
        assert_eq!(a.exp, high);
        s.finish(high, addr(2), Outcome::Done, true, now);
        gated.complete(a.job.index);
        // The store had nothing more to claim: the lower level may have the target.
        gated.set_awaiting(false);
        assert_eq!(s.take(addr(2), now).map(|a| a.exp), Some(low));
    }

    #[test]
    fn a_paused_experiment_gets_no_attempts_until_resumed() {
        let mut s = Scheduler::new(Arc::new(Greedy));
        let high = s.add_experiment(spec("high", 10, 1.0, &[], 5));
        let low = s.add_experiment(spec("low", 0, 1.0, &[], 5));
        s.add_target(addr(2), labels(""), Dialect::V3);
        s.set_paused(high, true);
        let a = s.take(addr(2), Instant::now()).unwrap();
        assert_eq!(
            a.exp, low,
            "the paused experiment must yield to the lower one"
        );
        s.finish(low, addr(2), Outcome::Done, true, Instant::now());
        s.set_paused(high, false);
        let a = s.take(addr(2), Instant::now()).unwrap();
        assert_eq!(a.exp, high);
    }

    #[test]
    fn weights_share_target_time() {
        let mut s = Scheduler::new(Arc::new(Greedy));
        let a = s.add_experiment(spec("a", 0, 3.0, &[], 10_000));
        let b = s.add_experiment(spec("b", 0, 1.0, &[], 10_000));
        let ts: Vec<_> = (2..10).map(addr).collect();
        for &t in &ts {
            s.add_target(t, labels(""), Dialect::V3);
        }
        // b's task-sets take twice as long: shares are of time, not of counts.
        let log = simulate(&mut s, &ts, |_, e| {
            Duration::from_millis(if e == b { 20 } else { 10 })
        });
        // Look at the first 4000 starts, while both have plenty of work.
        let (mut ta, mut tb) = (0.0, 0.0);
        for l in &log[..4000] {
            if l.0 == a {
                ta += 10.0;
            } else {
                tb += 20.0;
            }
        }
        let ratio = ta / tb;
        assert!((2.7..=3.3).contains(&ratio), "ratio {ratio}");
    }

    #[test]
    fn requirements_and_admission_pick_targets() {
        let mut s = Scheduler::new(Arc::new(Greedy));
        let b_only = s.add_experiment(spec("b", 0, 1.0, &["board=b"], 50));
        let mut adm = spec("adm", 0, 1.0, &[], 50);
        adm.needs_optimize = true;
        let adm = s.add_experiment(adm);
        s.add_target(addr(2), labels("board=a"), Dialect::V3);
        s.add_target(addr(3), labels("board=b"), Dialect::V3);
        s.add_target(addr(4), labels("board=a"), Dialect::V1);
        let ts: Vec<_> = (2..5).map(addr).collect();
        let log = simulate(&mut s, &ts, |_, _| Duration::from_millis(5));
        assert_eq!(log.len(), 100);
        for (e, t, _) in &log {
            if *e == b_only {
                assert_eq!(*t, addr(3));
            }
            if *e == adm {
                assert_eq!(*t, addr(4));
            }
        }
        // The target that can serve neither waits.
        assert!(log.iter().all(|l| l.1 != addr(2)));
    }

    #[test]
    fn round_robin_keeps_counts_within_one() {
        let mut s = Scheduler::new(strategy::by_name("round-robin").unwrap());
        let e = s.add_experiment(spec("e", 0, 1.0, &[], 101));
        let ts: Vec<_> = (2..6).map(addr).collect();
        for &t in &ts {
            s.add_target(t, labels(""), Dialect::V3);
        }
        let log = simulate(&mut s, &ts, |t, _| {
            Duration::from_millis(if t == addr(2) { 50 } else { 10 })
        });
        let counts: Vec<usize> = ts
            .iter()
            .map(|t| log.iter().filter(|l| l.1 == *t && l.0 == e).count())
            .collect();
        let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(hi - lo <= 1, "{counts:?}");
    }

    fn makespan(strategy: &str) -> Duration {
        let mut s = Scheduler::new(strategy::by_name(strategy).unwrap());
        s.add_experiment(spec("e", 0, 1.0, &[], 200));
        let ts: Vec<_> = (2..10).map(addr).collect();
        for &t in &ts {
            s.add_target(t, labels(""), Dialect::V3);
        }
        let slow = |t: SocketAddr| t == addr(2);
        let took = |t: SocketAddr, _| Duration::from_millis(if slow(t) { 50 } else { 10 });
        let log = simulate(&mut s, &ts, took);
        log.iter()
            .map(|(e, t, at)| *at + took(*t, *e))
            .max()
            .unwrap()
    }

    #[test]
    fn fastest_keeps_the_slow_target_off_the_tail() {
        let rr = makespan("round-robin");
        let greedy = makespan("greedy");
        let fastest = makespan("fastest");
        // 200 variants, 7 targets at 10 ms and one at 50 ms: the ideal is about 277 ms.
        assert!(fastest <= greedy, "fastest {fastest:?} greedy {greedy:?}");
        assert!(fastest < Duration::from_millis(300), "{fastest:?}");
        assert!(rr >= Duration::from_millis(1200), "{rr:?}");
    }

    #[test]
    fn specialization_skips_only_the_failing_experiment() {
        let mut s = Scheduler::new(strategy::by_name("specialization").unwrap());
        let a = s.add_experiment(spec("a", 5, 1.0, &[], 100));
        let b = s.add_experiment(spec("b", 1, 1.0, &[], 100));
        s.add_target(addr(2), labels(""), Dialect::V3);
        s.add_target(addr(3), labels(""), Dialect::V3);
        let now = s.epoch;
        // Target 2 fails `a` twice.
        for _ in 0..2 {
            let got = s.take(addr(2), now).unwrap();
            assert_eq!(got.exp, a);
            s.finish(a, addr(2), Outcome::Failed, false, now);
            s.exps[0].spec.queue.requeue(got.job);
        }
        // Now it serves `b` although `a` (higher priority) has work, since target 3 can run `a`.
        let got = s.take(addr(2), now).unwrap();
        assert_eq!(got.exp, b);
        let other = s.take(addr(3), now).unwrap();
        assert_eq!(other.exp, a);
    }

    /// Scheduler decisions per second with 1,000 targets and 100 experiments (10 priority
    /// levels, labels on half the experiments). Run by `scripts/bench-pool.sh`:
    /// `cargo test --release --lib decisions_per_second -- --ignored --nocapture`.
    #[test]
    #[ignore = "measurement; run by scripts/bench-pool.sh"]
    fn decisions_per_second() {
        for name in [
            "greedy",
            "fastest,specialization",
            "round-robin",
            "affinity",
        ] {
            let mut s = Scheduler::new(strategy::by_name(name).unwrap());
            let mut ids = Vec::new();
            for e in 0..100u8 {
                let requires: Vec<String> = if e % 2 == 0 {
                    vec![format!(
                        "board={}",
                        ["a", "b", "c", "d"][usize::from(e / 2) % 4]
                    )]
                } else {
                    Vec::new()
                };
                let r: Vec<&str> = requires.iter().map(String::as_str).collect();
                ids.push(s.add_experiment(spec(
                    &format!("e{e}"),
                    i64::from(e % 10),
                    1.0 + f64::from(e % 3),
                    &r,
                    u64::MAX / 2,
                )));
            }
            let targets: Vec<SocketAddr> = (0..1000u32)
                .map(|i| SocketAddr::from((std::net::Ipv4Addr::from(0x7f00_0000 + 2 + i), 3001)))
                .collect();
            for (i, t) in targets.iter().enumerate() {
                let board = ["a", "b", "c", "d"][i % 4];
                s.add_target(
                    *t,
                    labels(&format!("board={board},cores={}", i % 8)),
                    Dialect::V3,
                );
            }
            let t0 = Instant::now();
            let mut now = s.epoch;
            let mut decisions = 0u64;
            let mut taken = 0u64;
            // Every target takes, then finishes, in turn: one decision per take.
            while t0.elapsed() < Duration::from_secs(2) {
                for &t in &targets {
                    now += Duration::from_micros(50);
                    decisions += 1;
                    if let Some(a) = s.take(t, now) {
                        taken += 1;
                        let outcome = if taken % 50 == 0 {
                            Outcome::Failed
                        } else {
                            Outcome::Done
                        };
                        s.finish(a.exp, t, outcome, true, now + Duration::from_millis(5));
                    }
                }
            }
            let secs = t0.elapsed().as_secs_f64();
            println!(
                "scheduler {name:24} 1000 targets x 100 experiments: {:>9.0} decisions/s ({taken} of {decisions} gave work) [wall time, one thread]",
                decisions as f64 / secs
            );
        }
    }
}
