//! Events as they come from a target and as handlers receive them.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use taskdist_tasksets::TaskSet;

/// The type of a profile event (`type` attribute in PROTOCOL.md).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// A job was created.
    Start,
    /// The job exited normally.
    Exit,
    /// Killed at criticaltime.
    ExitCritical,
    /// Still running when its next period began, killed.
    ExitPeriod,
    /// Killed by STOP or CLEAR.
    ExitExternal,
    /// Exited with an unexpected code; the target is suspect.
    ExitError,
    /// The job asked for more RAM than its quota.
    OutOfQuota,
    /// The job asked for more capabilities than its quota.
    OutOfCaps,
    /// The admission controller rejected the job.
    NotScheduled,
    /// The task's last job has ended (exactly one per task).
    JobsDone,
    /// A type this version does not know; kept verbatim.
    Other(String),
}

impl EventKind {
    /// Parse the wire name; unknown names become [`EventKind::Other`].
    pub fn from_wire(s: &str) -> Self {
        match s {
            "START" => EventKind::Start,
            "EXIT" => EventKind::Exit,
            "EXIT_CRITICAL" => EventKind::ExitCritical,
            "EXIT_PERIOD" => EventKind::ExitPeriod,
            "EXIT_EXTERNAL" => EventKind::ExitExternal,
            "EXIT_ERROR" => EventKind::ExitError,
            "OUT_OF_QUOTA" => EventKind::OutOfQuota,
            "OUT_OF_CAPS" => EventKind::OutOfCaps,
            "NOT_SCHEDULED" => EventKind::NotScheduled,
            "JOBS_DONE" => EventKind::JobsDone,
            other => EventKind::Other(other.to_owned()),
        }
    }

    /// The wire name, as written in profile documents and result files.
    pub fn as_wire(&self) -> &str {
        match self {
            EventKind::Start => "START",
            EventKind::Exit => "EXIT",
            EventKind::ExitCritical => "EXIT_CRITICAL",
            EventKind::ExitPeriod => "EXIT_PERIOD",
            EventKind::ExitExternal => "EXIT_EXTERNAL",
            EventKind::ExitError => "EXIT_ERROR",
            EventKind::OutOfQuota => "OUT_OF_QUOTA",
            EventKind::OutOfCaps => "OUT_OF_CAPS",
            EventKind::NotScheduled => "NOT_SCHEDULED",
            EventKind::JobsDone => "JOBS_DONE",
            EventKind::Other(s) => s,
        }
    }

    /// True for every kind that ends a job (all EXIT_*, OUT_OF_*, NOT_SCHEDULED).
    pub fn ends_job(&self) -> bool {
        matches!(
            self,
            EventKind::Exit
                | EventKind::ExitCritical
                | EventKind::ExitPeriod
                | EventKind::ExitExternal
                | EventKind::ExitError
                | EventKind::OutOfQuota
                | EventKind::OutOfCaps
                | EventKind::NotScheduled
        )
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_wire())
    }
}

/// One event as the target reported it; `time_ms` is 64-bit target time (wraps undone).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TargetEvent {
    /// Event type.
    pub kind: EventKind,
    /// The task's id (`task-id`).
    pub task_id: u32,
    /// Milliseconds since the target's Taskloader started.
    pub time_ms: u64,
}

/// A target event with the host's wall-clock time of its arrival.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimedEvent {
    /// The event.
    pub event: TargetEvent,
    /// When the frame holding it arrived at the host.
    pub host_time: SystemTime,
}

/// Identifies one attempt at one variant on one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AttemptId {
    /// Index of the variant in its space.
    pub variant: u64,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub attempt: u32,
    /// The target the attempt ran on.
    pub target: SocketAddr,
}

/// A run begins.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    /// taskdist's version.
    pub tool_version: String,
    /// Name of the spec (catalog name or file path).
    pub spec_name: String,
    /// The spec's full text, so a result directory describes itself.
    pub spec_text: String,
    /// Seed of the random draws.
    pub seed: u64,
    /// Number of variants in the space; `None` for an unbounded space.
    pub total_variants: Option<u128>,
    /// Variants this run will process (after limit and shard); `None` if unbounded.
    pub planned_variants: Option<u64>,
    /// Protocol dialect (`v1`, `v2`, `v3`).
    pub dialect: String,
    /// The command line, if run from the CLI.
    pub command: Vec<String>,
    /// Wall-clock start.
    pub started_at: SystemTime,
}

/// An attempt at a variant begins on a target.
#[derive(Debug, Clone)]
pub struct VariantStarted {
    /// Which attempt.
    pub id: AttemptId,
    /// The task-set being run.
    pub taskset: Arc<TaskSet>,
    /// Wall-clock start of the attempt.
    pub started_at: SystemTime,
}

/// How a variant ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Every task sent JOBS_DONE with the expected job count.
    Done,
    /// The variant failed on every allowed attempt.
    Bad {
        /// The last failure.
        reason: String,
    },
}

/// An attempt finished; carries every event of that attempt (the only place results come from).
#[derive(Debug, Clone)]
pub struct VariantFinished {
    /// Which attempt.
    pub id: AttemptId,
    /// The task-set that ran.
    pub taskset: Arc<TaskSet>,
    /// Every event of the attempt, in arrival order.
    pub events: Vec<TimedEvent>,
    /// Wall-clock start of the attempt.
    pub started_at: SystemTime,
    /// Wall-clock end of the attempt.
    pub finished_at: SystemTime,
}

/// An attempt was stopped or failed and its variant went back to the queue.
#[derive(Debug, Clone)]
pub struct VariantStopped {
    /// Which attempt.
    pub id: AttemptId,
    /// Why (timeout, connection lost, target fault, user stop, ...).
    pub reason: String,
}

/// A variant failed on its last allowed attempt and is recorded as bad.
#[derive(Debug, Clone)]
pub struct VariantBad {
    /// The last attempt.
    pub id: AttemptId,
    /// The task-set.
    pub taskset: Arc<TaskSet>,
    /// The last failure.
    pub reason: String,
    /// Wall-clock start of the first attempt.
    pub started_at: SystemTime,
    /// Wall-clock time the variant was given up.
    pub finished_at: SystemTime,
}

/// A run ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Variants that finished.
    pub done: u64,
    /// Variants recorded as bad.
    pub bad: u64,
    /// Attempts that were stopped or failed and requeued.
    pub requeued: u64,
    /// Job events received in finished attempts.
    pub events: u64,
    /// Whether the run was stopped before all planned variants had an outcome.
    pub interrupted: bool,
    /// Wall-clock duration in seconds.
    pub elapsed_s: f64,
}
