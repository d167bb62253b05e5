//! Distribution strategies: rules that let a target take, wait for, or skip an experiment's
//! next variant.
//!
//! The scheduler asks the strategy once per experiment that the target could serve (see
//! [`Offer`]). Strategies combine: `fastest,specialization` applies both rules; a target
//! takes the variant when every rule lets it, skips the experiment when one rule says skip,
//! and otherwise waits. Credits (affinity) add up.
//!
//! | name | rule | worth it when |
//! |---|---|---|
//! | `greedy` | an idle target takes the next variant | targets are alike |
//! | `round-robin` | a target takes a variant only when no available target of the experiment has had fewer | targets must see equal numbers of variants (per-board comparisons) |
//! | `fastest` | as greedy, but in the experiment's tail (fewer variants queued than available targets) only the targets expected to finish soonest take them | targets differ in speed: slow boards no longer finish last |
//! | `affinity` | within a priority level, prefer the experiment whose binaries the target holds and where it succeeded | binaries are large and links slow (real boards) |
//! | `specialization` | a target that failed an experiment twice in a row skips it (for 10 min) and serves other experiments, while another target can serve it | boards differ and some experiments fail on some of them |
//!
//! The default is `fastest,specialization` (see the README for the measurement).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use super::sched::{Offer, PairStats, Peer};

/// How long a target skips an experiment it failed (specialization).
pub const SPECIALIZATION_HOLD: Duration = Duration::from_secs(600);

/// Failures in a row after which a target skips an experiment (specialization).
pub const SPECIALIZATION_FAILURES: u32 = 2;

/// A strategy's answer for one experiment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Take a variant. `credit` is subtracted from the experiment's target time when the
    /// scheduler compares experiments of one priority level (a preference).
    Take {
        /// Preference for this experiment on this target.
        credit: Duration,
    },
    /// Take nothing now, and nothing of a lower priority either: another target should run
    /// the experiment's next variant, or this one later.
    Wait,
    /// This target is not for this experiment now: look at the others.
    Skip,
}

impl Verdict {
    /// Take without preference.
    pub const TAKE: Verdict = Verdict::Take {
        credit: Duration::ZERO,
    };
}

/// A distribution strategy.
pub trait Strategy: Send + Sync + fmt::Debug {
    /// Its name, as given to `--strategy`.
    fn name(&self) -> String;
    /// Whether the target of `offer` takes, waits for or skips the offered experiment.
    fn decide(&self, offer: &Offer<'_>) -> Verdict;
}

/// An idle target takes the next variant.
#[derive(Debug, Clone, Copy, Default)]
pub struct Greedy;

impl Strategy for Greedy {
    fn name(&self) -> String {
        "greedy".into()
    }
    fn decide(&self, _: &Offer<'_>) -> Verdict {
        Verdict::TAKE
    }
}

/// Variants spread evenly: a target takes one only when no available target of the
/// experiment has had fewer turns (counts stay within one of each other).
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundRobin;

impl Strategy for RoundRobin {
    fn name(&self) -> String {
        "round-robin".into()
    }
    fn decide(&self, offer: &Offer<'_>) -> Verdict {
        let mine = offer.stats().turns;
        // A target that keeps failing the experiment does not hold the others back.
        let behind = offer.peers().any(|p| {
            p.stats.turns < mine && p.stats.consecutive_failures == 0 && p.addr != offer.target()
        });
        if behind {
            Verdict::Wait
        } else {
            Verdict::TAKE
        }
    }
}

/// Predictive: in the experiment's tail, a variant goes to a target expected to finish it
/// soonest (moving average of its task-set times, plus the time until it is free).
#[derive(Debug, Clone, Copy, Default)]
pub struct Fastest;

impl Strategy for Fastest {
    fn name(&self) -> String {
        "fastest".into()
    }
    fn decide(&self, offer: &Offer<'_>) -> Verdict {
        let queued = offer.queued();
        let me = offer.target();
        let Some(mine) = offer.estimate(me) else {
            return Verdict::TAKE;
        };
        // A cheap bound first: even if every target were as fast as the fastest, the others
        // need at least queued × fastest / targets to run what is queued.
        let fastest = offer.fastest_estimate().unwrap_or(mine).as_secs_f64();
        let n = offer.eligible_targets().max(1) as f64;
        if queued > TAIL_LIMIT || queued as f64 * fastest / n >= mine.as_secs_f64() {
            return Verdict::TAKE;
        }
        // The other available targets: when each is free, and its time per task-set.
        let mut others: Vec<(Duration, Duration)> = Vec::new();
        let mut rate = 0.0;
        for p in offer.peers() {
            if p.addr == me {
                continue;
            }
            let est = offer
                .estimate(p.addr)
                .unwrap_or(mine)
                .max(Duration::from_micros(1));
            rate += 1.0 / est.as_secs_f64();
            others.push((p.free_in, est));
        }
        if others.is_empty() {
            return Verdict::TAKE;
        }
        // Without this target the others need at least queued / rate to run what is queued;
        // if that is longer than this target needs for one variant, taking it cannot delay
        // the end.
        if queued as f64 / rate >= mine.as_secs_f64() || queued > TAIL_LIMIT {
            return Verdict::TAKE;
        }
        let end = |n: u64| -> Duration {
            let mut free: std::collections::BinaryHeap<std::cmp::Reverse<(Duration, Duration)>> =
                others.iter().map(|&x| std::cmp::Reverse(x)).collect();
            let mut last = others.iter().map(|o| o.0).max().unwrap_or_default();
            for _ in 0..n {
                let Some(std::cmp::Reverse((at, est))) = free.pop() else {
                    break;
                };
                last = last.max(at + est);
                free.push(std::cmp::Reverse((at + est, est)));
            }
            last
        };
        let with_me = mine.max(end(queued.saturating_sub(1)));
        if with_me <= end(queued) {
            Verdict::TAKE
        } else {
            Verdict::Wait
        }
    }
}

/// Above this many queued variants `fastest` does not look for the tail.
const TAIL_LIMIT: u64 = 100_000;

/// Prefer the experiment whose binaries the target holds, and one where it succeeded.
#[derive(Debug, Clone, Copy, Default)]
pub struct Affinity;

impl Strategy for Affinity {
    fn name(&self) -> String {
        "affinity".into()
    }
    fn decide(&self, offer: &Offer<'_>) -> Verdict {
        let unit = offer
            .estimate(offer.target())
            .unwrap_or(Duration::from_millis(1));
        let s = offer.stats();
        let mut credit = Duration::ZERO;
        if offer.holds_binaries() {
            credit += unit;
        }
        if s.completed > 0 && s.consecutive_failures == 0 {
            credit += unit;
        }
        Verdict::Take { credit }
    }
}

/// A target that failed an experiment [`SPECIALIZATION_FAILURES`] times in a row skips it for
/// [`SPECIALIZATION_HOLD`] and serves other experiments, as long as another target can serve
/// the experiment and another experiment has work for the target. A target that fails
/// everything it is given is left to the pool's quarantine.
#[derive(Debug, Clone, Copy, Default)]
pub struct Specialization;

impl Strategy for Specialization {
    fn name(&self) -> String {
        "specialization".into()
    }
    fn decide(&self, offer: &Offer<'_>) -> Verdict {
        let avoided = |s: &PairStats| {
            s.consecutive_failures >= SPECIALIZATION_FAILURES
                && s.last_failure
                    .is_some_and(|t| offer.now().saturating_duration_since(t) < SPECIALIZATION_HOLD)
        };
        if !avoided(offer.stats()) || !offer.other_work(SPECIALIZATION_FAILURES) {
            return Verdict::TAKE;
        }
        let someone_else = offer
            .peers()
            .any(|p| p.addr != offer.target() && !avoided(p.stats));
        if someone_else {
            Verdict::Skip
        } else {
            Verdict::TAKE
        }
    }
}

/// Several rules at once: skip if one skips, wait if one waits, credits add up.
#[derive(Debug, Clone)]
pub struct Combined(Vec<Arc<dyn Strategy>>);

impl Combined {
    /// The rules, applied together.
    pub fn new(rules: Vec<Arc<dyn Strategy>>) -> Self {
        Combined(rules)
    }
}

impl Strategy for Combined {
    fn name(&self) -> String {
        self.0
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(",")
    }
    fn decide(&self, offer: &Offer<'_>) -> Verdict {
        let mut credit = Duration::ZERO;
        let mut wait = false;
        for s in &self.0 {
            match s.decide(offer) {
                Verdict::Skip => return Verdict::Skip,
                Verdict::Wait => wait = true,
                Verdict::Take { credit: c } => credit += c,
            }
        }
        if wait {
            Verdict::Wait
        } else {
            Verdict::Take { credit }
        }
    }
}

/// The strategies by name, with a one-line description (for `taskdist list strategies`).
pub const STRATEGIES: [(&str, &str); 5] = [
    ("greedy", "an idle target takes the next variant"),
    (
        "round-robin",
        "variants spread evenly over targets (counts within one of each other)",
    ),
    (
        "fastest",
        "in an experiment's tail, variants go to the targets expected to finish them soonest",
    ),
    (
        "affinity",
        "prefer experiments whose binaries a target holds and where it succeeded",
    ),
    (
        "specialization",
        "a target that fails an experiment twice in a row skips it while others can serve it",
    ),
];

/// The default strategy's name.
pub const DEFAULT_STRATEGY: &str = "fastest,specialization";

/// A strategy name that is not known.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown strategy {0:?}: expected one or more of greedy, round-robin, fastest, affinity, specialization, separated by commas")]
pub struct UnknownStrategy(pub String);

/// The strategy named `name`: one of [`STRATEGIES`], or several separated by commas.
pub fn by_name(name: &str) -> Result<Arc<dyn Strategy>, UnknownStrategy> {
    let mut rules: Vec<Arc<dyn Strategy>> = Vec::new();
    for part in name.split(',') {
        let rule: Arc<dyn Strategy> = match part.trim() {
            "greedy" => Arc::new(Greedy),
            "round-robin" => Arc::new(RoundRobin),
            "fastest" => Arc::new(Fastest),
            "affinity" => Arc::new(Affinity),
            "specialization" => Arc::new(Specialization),
            _ => return Err(UnknownStrategy(name.to_owned())),
        };
        rules.push(rule);
    }
    Ok(match rules.len() {
        1 => rules.remove(0),
        _ => Arc::new(Combined::new(rules)),
    })
}

/// The default strategy ([`DEFAULT_STRATEGY`]).
pub fn default_strategy() -> Arc<dyn Strategy> {
    Arc::new(Combined::new(vec![
        Arc::new(Fastest),
        Arc::new(Specialization),
    ]))
}
