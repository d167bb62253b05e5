//! Helpers shared by the distributor tests: an in-memory handler that checks the
//! exactly-once rules, and small specs.

#![allow(dead_code)]

pub mod privileged;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use taskdist::handlers::{
    EventHandler, HandlerError, RunInfo, RunSummary, VariantBad, VariantFinished, VariantStarted,
    VariantStopped,
};

/// What a [`Recorder`] saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub runs: u32,
    pub started: u64,
    pub stopped: Vec<(u64, String)>,
    /// variant -> (attempt, event count)
    pub finished: BTreeMap<u64, Vec<(u32, usize)>>,
    /// variant -> NOT_SCHEDULED events of each finished attempt (same order as `finished`)
    pub not_scheduled: BTreeMap<u64, Vec<usize>>,
    /// variant -> reasons
    pub bad: BTreeMap<u64, Vec<String>>,
    pub summary: Option<RunSummary>,
    pub flushes: u64,
    /// Every attempt's start: (variant, target, start time).
    pub starts: Vec<(u64, std::net::SocketAddr, std::time::SystemTime)>,
    /// Target of each finished attempt.
    pub finished_on: Vec<std::net::SocketAddr>,
}

impl Seen {
    /// Every variant in `0..n` has exactly one outcome, and no other variant has one.
    pub fn assert_exactly_once(&self, n: u64) {
        for i in 0..n {
            let f = self.finished.get(&i).map_or(0, Vec::len);
            let b = self.bad.get(&i).map_or(0, Vec::len);
            assert_eq!(f + b, 1, "variant {i}: {f} finished and {b} bad outcomes");
        }
        let extra: Vec<_> = self
            .finished
            .keys()
            .chain(self.bad.keys())
            .filter(|&&k| k >= n)
            .collect();
        assert!(
            extra.is_empty(),
            "outcomes for unselected variants {extra:?}"
        );
    }
}

/// An in-memory handler.
#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Seen>>);

impl Recorder {
    pub fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.0.lock().unwrap()
    }
}

#[async_trait]
impl EventHandler for Recorder {
    async fn run_started(&mut self, _run: &RunInfo) -> Result<(), HandlerError> {
        self.seen().runs += 1;
        Ok(())
    }
    async fn taskset_started(&mut self, v: &VariantStarted) -> Result<(), HandlerError> {
        let mut seen = self.seen();
        seen.started += 1;
        seen.starts.push((v.id.variant, v.id.target, v.started_at));
        Ok(())
    }
    async fn taskset_finished(&mut self, v: &VariantFinished) -> Result<(), HandlerError> {
        // Each (task, time, type) appears once: no duplicated event within an attempt.
        let mut keys = HashSet::new();
        for e in &v.events {
            let k = (e.event.task_id, e.event.time_ms, e.event.kind.clone());
            assert!(
                keys.insert(k.clone()) || matches!(k.2, taskdist::handlers::EventKind::Start),
                "duplicated event {k:?} in variant {}",
                v.id.variant
            );
        }
        let rejected = v
            .events
            .iter()
            .filter(|e| e.event.kind == taskdist::handlers::EventKind::NotScheduled)
            .count();
        let mut seen = self.seen();
        seen.finished_on.push(v.id.target);
        seen.finished
            .entry(v.id.variant)
            .or_default()
            .push((v.id.attempt, v.events.len()));
        seen.not_scheduled
            .entry(v.id.variant)
            .or_default()
            .push(rejected);
        Ok(())
    }
    async fn taskset_stopped(&mut self, v: &VariantStopped) -> Result<(), HandlerError> {
        self.seen().stopped.push((v.id.variant, v.reason.clone()));
        Ok(())
    }
    async fn taskset_bad(&mut self, v: &VariantBad) -> Result<(), HandlerError> {
        self.seen()
            .bad
            .entry(v.id.variant)
            .or_default()
            .push(v.reason.clone());
        Ok(())
    }
    async fn flush(&mut self) -> Result<(), HandlerError> {
        self.seen().flushes += 1;
        Ok(())
    }
    async fn run_finished(&mut self, s: &RunSummary) -> Result<(), HandlerError> {
        self.seen().summary = Some(s.clone());
        Ok(())
    }
}

/// A spec with `n` variants of two short tasks (priority sweep).
pub fn spec_with(n: u32) -> taskdist::tasksets::Spec {
    spec_named("test", "hey", n)
}

/// Like [`spec_with`], named `name`, with binary `pkg`.
pub fn spec_named(name: &str, pkg: &str, n: u32) -> taskdist::tasksets::Spec {
    let last = 100 + n - 1;
    let text = format!(
        r#"
name = "{name}"
description = "two short tasks, {n} period variants"
seed = 7

[[task]]
pkg = "{pkg}"
period_ms = {{ from = 100, to = {last} }}
numberofjobs = 3
priority = 3

[[task]]
pkg = "{pkg}"
period_ms = 50
offset_ms = 10
numberofjobs = 2
priority = 5
"#
    );
    taskdist::tasksets::Spec::from_toml_str(&text, "test-spec").expect("test spec parses")
}

/// `DIR/variants.csv` has exactly one row for each variant in `0..n` and none other.
pub fn assert_rows_exactly_once(dir: &std::path::Path, n: u64) {
    let rows = taskdist::handlers::reader::read_variants(dir.join("variants.csv"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let mut count = vec![0u32; usize::try_from(n).unwrap()];
    for r in &rows {
        assert!(
            r.variant < n,
            "unselected variant {} in {}",
            r.variant,
            dir.display()
        );
        count[usize::try_from(r.variant).unwrap()] += 1;
    }
    let wrong: Vec<_> = count
        .iter()
        .enumerate()
        .filter(|(_, &c)| c != 1)
        .take(5)
        .collect();
    assert!(
        wrong.is_empty(),
        "{}: variants without exactly one row: {wrong:?}",
        dir.display()
    );
}

/// Debian's Chromium, headless, with the flags that keep it off the network (this machine has
/// none) and a fresh profile, which lives as long as the returned directory.
pub fn headless_chromium(
    path: &std::path::Path,
) -> std::io::Result<(std::process::Command, tempfile::TempDir)> {
    let profile = tempfile::tempdir()?;
    let mut c = std::process::Command::new(path);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    Ok((c, profile))
}
