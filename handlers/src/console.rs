//! [`ConsoleHandler`]: a human summary of a run.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write;

use async_trait::async_trait;

use crate::event::{EventKind, RunInfo, RunSummary, VariantBad, VariantFinished, VariantStopped};
use crate::handler::{EventHandler, HandlerError};

/// How many distinct bad/requeue reasons the summary lists.
const TOP_REASONS: usize = 5;

/// Prints a one-line header when a run starts and a summary when it ends: variants per
/// outcome, requeued attempts, events and jobs of finished attempts, a histogram of event
/// types, and the most frequent reasons for requeues and bad variants.
///
/// ```
/// # tokio_test_block_on(async {
/// use taskdist_handlers::{ConsoleHandler, EventHandler, RunSummary};
/// let mut console = ConsoleHandler::new(Box::new(Vec::<u8>::new()));
/// console.run_finished(&RunSummary::default()).await.unwrap();
/// assert!(console.summary_text(&RunSummary::default()).contains("0 done, 0 bad"));
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
pub struct ConsoleHandler {
    out: Box<dyn Write + Send>,
    spec: Option<String>,
    done: u64,
    bad: u64,
    requeued: u64,
    events: u64,
    jobs: u64,
    kinds: [u64; KNOWN_KINDS.len()],
    other_kinds: BTreeMap<String, u64>,
    bad_reasons: HashMap<String, u64>,
    requeue_reasons: HashMap<String, u64>,
}

const KNOWN_KINDS: [EventKind; 10] = [
    EventKind::Start,
    EventKind::Exit,
    EventKind::ExitCritical,
    EventKind::ExitPeriod,
    EventKind::ExitExternal,
    EventKind::ExitError,
    EventKind::OutOfQuota,
    EventKind::OutOfCaps,
    EventKind::NotScheduled,
    EventKind::JobsDone,
];

fn kind_index(k: &EventKind) -> Option<usize> {
    Some(match k {
        EventKind::Start => 0,
        EventKind::Exit => 1,
        EventKind::ExitCritical => 2,
        EventKind::ExitPeriod => 3,
        EventKind::ExitExternal => 4,
        EventKind::ExitError => 5,
        EventKind::OutOfQuota => 6,
        EventKind::OutOfCaps => 7,
        EventKind::NotScheduled => 8,
        EventKind::JobsDone => 9,
        EventKind::Other(_) => return None,
    })
}

impl std::fmt::Debug for ConsoleHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleHandler")
            .field("done", &self.done)
            .field("bad", &self.bad)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl ConsoleHandler {
    /// A console handler that writes to `out` (e.g. `Box::new(std::io::stderr())`, or a
    /// buffer in tests).
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        ConsoleHandler {
            out,
            spec: None,
            done: 0,
            bad: 0,
            requeued: 0,
            events: 0,
            jobs: 0,
            kinds: [0; KNOWN_KINDS.len()],
            other_kinds: BTreeMap::new(),
            bad_reasons: HashMap::new(),
            requeue_reasons: HashMap::new(),
        }
    }

    /// A console handler that writes to standard error (standard output stays free for data).
    pub fn stderr() -> Self {
        Self::new(Box::new(std::io::stderr()))
    }

    fn write(&mut self, text: &str) -> Result<(), HandlerError> {
        self.out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush())
            .map_err(|e| HandlerError::io("<console>", e))
    }

    /// The summary that [`EventHandler::run_finished`] prints, from what this handler saw and
    /// from the distributor's `summary` (elapsed time, interruption).
    pub fn summary_text(&self, summary: &RunSummary) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "run summary{}",
            self.spec
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            s,
            "  variants: {} done, {} bad, {} with an outcome{}",
            self.done,
            self.bad,
            self.done + self.bad,
            if summary.interrupted {
                " (interrupted before all planned variants had an outcome)"
            } else {
                ""
            }
        );
        let _ = writeln!(s, "  attempts requeued: {}", self.requeued);
        let rate = if summary.elapsed_s > 0.0 {
            format!(
                ", {:.1} variants/s, {:.0} events/s",
                (self.done + self.bad) as f64 / summary.elapsed_s,
                self.events as f64 / summary.elapsed_s
            )
        } else {
            String::new()
        };
        let _ = writeln!(s, "  elapsed: {:.3} s{rate}", summary.elapsed_s);
        let _ = writeln!(
            s,
            "  finished attempts: {} events, {} jobs ended",
            self.events, self.jobs
        );
        let mut hist: Vec<(&str, u64)> = KNOWN_KINDS
            .iter()
            .zip(self.kinds)
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k.as_wire(), n))
            .chain(self.other_kinds.iter().map(|(k, &n)| (k.as_str(), n)))
            .collect();
        if !hist.is_empty() {
            hist.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            let _ = writeln!(s, "  event types:");
            for (k, n) in hist {
                let pct = 100.0 * n as f64 / self.events.max(1) as f64;
                let _ = writeln!(s, "    {k:<16} {n:>12} {pct:>6.2}%");
            }
        }
        for (title, reasons) in [
            ("requeue reasons", &self.requeue_reasons),
            ("bad reasons", &self.bad_reasons),
        ] {
            if reasons.is_empty() {
                continue;
            }
            let mut top: Vec<(&String, &u64)> = reasons.iter().collect();
            top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let _ = writeln!(s, "  {title}:");
            for (reason, n) in top.iter().take(TOP_REASONS) {
                let _ = writeln!(s, "    {n:>8}x {reason}");
            }
            if top.len() > TOP_REASONS {
                let _ = writeln!(s, "    ... and {} other reasons", top.len() - TOP_REASONS);
            }
        }
        if summary.done != self.done || summary.bad != self.bad {
            let _ = writeln!(
                s,
                "  note: the distributor counted {} done and {} bad",
                summary.done, summary.bad
            );
        }
        s
    }
}

fn short_reason(reason: &str) -> String {
    let line = reason.lines().next().unwrap_or_default();
    let mut r: String = line.chars().take(120).collect();
    if r.len() < line.len() {
        r.push('…');
    }
    r
}

#[async_trait]
impl EventHandler for ConsoleHandler {
    async fn run_started(&mut self, run: &RunInfo) -> Result<(), HandlerError> {
        self.spec = Some(run.spec_name.clone());
        let planned = run
            .planned_variants
            .map_or_else(|| "unbounded".to_owned(), |n| n.to_string());
        let line = format!(
            "run {} started: seed {}, dialect {}, {} variants planned\n",
            run.spec_name, run.seed, run.dialect, planned
        );
        self.write(&line)
    }

    async fn taskset_finished(&mut self, v: &VariantFinished) -> Result<(), HandlerError> {
        self.done += 1;
        self.events += v.events.len() as u64;
        for e in &v.events {
            let k = &e.event.kind;
            if k.ends_job() {
                self.jobs += 1;
            }
            match kind_index(k) {
                Some(i) => self.kinds[i] += 1,
                None => *self.other_kinds.entry(k.as_wire().to_owned()).or_default() += 1,
            }
        }
        Ok(())
    }

    async fn taskset_stopped(&mut self, v: &VariantStopped) -> Result<(), HandlerError> {
        self.requeued += 1;
        *self
            .requeue_reasons
            .entry(short_reason(&v.reason))
            .or_default() += 1;
        Ok(())
    }

    async fn taskset_bad(&mut self, v: &VariantBad) -> Result<(), HandlerError> {
        self.bad += 1;
        *self.bad_reasons.entry(short_reason(&v.reason)).or_default() += 1;
        Ok(())
    }

    async fn run_finished(&mut self, summary: &RunSummary) -> Result<(), HandlerError> {
        let text = self.summary_text(summary);
        self.write(&text)
    }

    async fn flush(&mut self) -> Result<(), HandlerError> {
        self.out
            .flush()
            .map_err(|e| HandlerError::io("<console>", e))
    }
}
