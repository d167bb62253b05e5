//! What every file handler derives from a finished attempt: job numbers, job rows, time units,
//! header lines and the cleaning of free text.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::event::{EventKind, TimedEvent};

/// Header of `events.csv` (and columns of the SQLite table `events`).
pub const EVENTS_HEADER: [&str; 9] = [
    "variant",
    "attempt",
    "seq",
    "target",
    "task_id",
    "job",
    "type",
    "target_time_ms",
    "host_time_us",
];

/// Header of `jobs.csv` (and columns of the SQLite table `jobs`).
pub const JOBS_HEADER: [&str; 9] = [
    "variant",
    "attempt",
    "target",
    "task_id",
    "job",
    "start_ms",
    "end_ms",
    "exit_type",
    "duration_ms",
];

/// Header of `variants.csv` (and columns of the SQLite table `variants`).
pub const VARIANTS_HEADER: [&str; 10] = [
    "variant",
    "outcome",
    "attempts",
    "target",
    "started_host_us",
    "finished_host_us",
    "duration_us",
    "tasks",
    "events",
    "reason",
];

/// Header of `tasks.csv` (and columns of the SQLite table `tasks`).
pub const TASKS_HEADER: [&str; 15] = [
    "variant",
    "task_id",
    "executiontime_ms",
    "criticaltime_ms",
    "priority",
    "deadline_ms",
    "period_ms",
    "offset_ms",
    "numberofjobs",
    "quota_bytes",
    "caps",
    "cores",
    "coreoffset",
    "pkg",
    "config",
];

/// A wall-clock time as integer microseconds since the Unix epoch (times before 1970 become 0).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
/// assert_eq!(taskdist_handlers::unix_us(t), 1_700_000_000_123_456);
/// ```
pub fn unix_us(t: SystemTime) -> u64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
        Err(_) => 0,
    }
}

/// Microseconds from `from` to `to`, 0 if `to` is earlier.
pub fn duration_us(from: SystemTime, to: SystemTime) -> u64 {
    unix_us(to).saturating_sub(unix_us(from))
}

/// Free text made safe for line-based files: CR and LF become spaces, so that every record of
/// every result file is exactly one line (which is what makes resume repair line-based).
pub fn one_line(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b == b'\n' || b == b'\r') {
        Cow::Owned(s.replace(['\n', '\r'], " "))
    } else {
        Cow::Borrowed(s)
    }
}

/// Encode a task's config as `k=v;k=v`. A `\` or `;` inside a value is escaped with `\`
/// (keys are element names and cannot hold either); CR/LF become spaces.
///
/// ```
/// let cfg = vec![("arg1".to_string(), "10".to_string()), ("s".to_string(), "a;b".to_string())];
/// let text = taskdist_handlers::encode_config(&cfg);
/// assert_eq!(text, r"arg1=10;s=a\;b");
/// assert_eq!(taskdist_handlers::decode_config(&text), cfg);
/// ```
pub fn encode_config(config: &[(String, String)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in config.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        out.push_str(&one_line(k));
        out.push('=');
        for c in v.chars() {
            match c {
                '\\' | ';' => {
                    out.push('\\');
                    out.push(c);
                }
                '\n' | '\r' => out.push(' '),
                c => out.push(c),
            }
        }
    }
    out
}

/// Decode the `k=v;k=v` form written by [`encode_config`]. An entry without `=` becomes a key
/// with an empty value.
pub fn decode_config(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if text.is_empty() {
        return out;
    }
    let mut entry = String::new();
    let mut chars = text.chars();
    let mut push = |entry: &mut String| {
        let (k, v) = match entry.find('=') {
            Some(i) => (entry[..i].to_owned(), entry[i + 1..].to_owned()),
            None => (entry.clone(), String::new()),
        };
        out.push((k, v));
        entry.clear();
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    entry.push(n);
                }
            }
            ';' => push(&mut entry),
            c => entry.push(c),
        }
    }
    push(&mut entry);
    out
}

/// One job of an attempt, derived from its events by [`JobTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job {
    /// The task's id.
    pub task_id: u32,
    /// 1-based job number within the task in this attempt.
    pub job: u32,
    /// Index (in the attempt's event list) of the job's START; `None` for a job that ended
    /// without starting (e.g. NOT_SCHEDULED).
    pub start_event: Option<usize>,
    /// Index of the event that ended the job; `None` if the attempt holds no end for it.
    pub end_event: Option<usize>,
}

impl Job {
    /// Target time of the job's START in ms.
    pub fn start_ms(&self, events: &[TimedEvent]) -> Option<u64> {
        self.start_event
            .and_then(|i| events.get(i))
            .map(|e| e.event.time_ms)
    }

    /// Target time of the job's end in ms.
    pub fn end_ms(&self, events: &[TimedEvent]) -> Option<u64> {
        self.end_event
            .and_then(|i| events.get(i))
            .map(|e| e.event.time_ms)
    }

    /// The kind of event that ended the job.
    pub fn exit_kind<'a>(&self, events: &'a [TimedEvent]) -> Option<&'a EventKind> {
        self.end_event
            .and_then(|i| events.get(i))
            .map(|e| &e.event.kind)
    }

    /// End minus start in target ms, when both are known (0 if the end is earlier).
    pub fn duration_ms(&self, events: &[TimedEvent]) -> Option<u64> {
        Some(self.end_ms(events)?.saturating_sub(self.start_ms(events)?))
    }
}

#[derive(Debug, Default)]
struct TaskCursor {
    task_id: u32,
    /// Index into `JobTable::jobs` of job number k at position k-1.
    job_rows: Vec<usize>,
    /// Jobs 1..=ended are ended.
    ended: u32,
}

/// Numbers the jobs of one attempt and pairs their start and end events.
///
/// Rules (documented in the README): per task, the n-th START opens job n. An event that ends a
/// job ([`EventKind::ends_job`]) ends the oldest open job of its task; if none is open (a job
/// rejected before it started, e.g. NOT_SCHEDULED) it gets the next job number and has no start.
/// JOBS_DONE and unknown types belong to no job: their job number is 0. The table keeps its
/// allocations between attempts, so a handler reuses one.
///
/// ```
/// use std::time::SystemTime;
/// use taskdist_handlers::{EventKind, JobTable, TargetEvent, TimedEvent};
/// let ev = |kind, time_ms| TimedEvent {
///     event: TargetEvent { kind, task_id: 0, time_ms },
///     host_time: SystemTime::UNIX_EPOCH,
/// };
/// let events = [ev(EventKind::Start, 10), ev(EventKind::Exit, 15), ev(EventKind::JobsDone, 15)];
/// let mut table = JobTable::default();
/// table.compute(&events);
/// assert_eq!(table.event_jobs(), &[1, 1, 0]);
/// assert_eq!(table.jobs()[0].duration_ms(&events), Some(5));
/// ```
#[derive(Debug, Default)]
pub struct JobTable {
    event_jobs: Vec<u32>,
    jobs: Vec<Job>,
    tasks: Vec<TaskCursor>,
    active_tasks: usize,
}

impl JobTable {
    /// Derive job numbers and jobs from the events of one attempt, in arrival order.
    pub fn compute(&mut self, events: &[TimedEvent]) {
        self.event_jobs.clear();
        self.jobs.clear();
        self.active_tasks = 0;
        for (i, e) in events.iter().enumerate() {
            let kind = &e.event.kind;
            let job = if matches!(kind, EventKind::Start) {
                let slot = self.slot(e.event.task_id);
                let job_index = self.jobs.len();
                let cursor = &mut self.tasks[slot];
                cursor.job_rows.push(job_index);
                let job = u32::try_from(cursor.job_rows.len()).unwrap_or(u32::MAX);
                self.jobs.push(Job {
                    task_id: e.event.task_id,
                    job,
                    start_event: Some(i),
                    end_event: None,
                });
                job
            } else if kind.ends_job() {
                let slot = self.slot(e.event.task_id);
                let cursor = &mut self.tasks[slot];
                let started = u32::try_from(cursor.job_rows.len()).unwrap_or(u32::MAX);
                if cursor.ended < started {
                    cursor.ended += 1;
                    let job = cursor.ended;
                    if let Some(job_row) = cursor
                        .job_rows
                        .get(job as usize - 1)
                        .and_then(|&r| self.jobs.get_mut(r))
                    {
                        job_row.end_event = Some(i);
                    }
                    job
                } else {
                    let job_index = self.jobs.len();
                    cursor.job_rows.push(job_index);
                    let job = u32::try_from(cursor.job_rows.len()).unwrap_or(u32::MAX);
                    cursor.ended = job;
                    self.jobs.push(Job {
                        task_id: e.event.task_id,
                        job,
                        start_event: None,
                        end_event: Some(i),
                    });
                    job
                }
            } else {
                0
            };
            self.event_jobs.push(job);
        }
        self.jobs.sort_unstable_by_key(|j| (j.task_id, j.job));
    }

    fn slot(&mut self, task_id: u32) -> usize {
        if let Some(i) = self.tasks[..self.active_tasks]
            .iter()
            .position(|t| t.task_id == task_id)
        {
            return i;
        }
        let i = self.active_tasks;
        if i == self.tasks.len() {
            self.tasks.push(TaskCursor::default());
        }
        let cursor = &mut self.tasks[i];
        cursor.task_id = task_id;
        cursor.job_rows.clear();
        cursor.ended = 0;
        self.active_tasks += 1;
        i
    }

    /// Job number of each event, parallel to the events given to [`JobTable::compute`].
    pub fn event_jobs(&self) -> &[u32] {
        &self.event_jobs
    }

    /// The jobs, ordered by task id and job number.
    pub fn jobs(&self) -> &[Job] {
        &self.jobs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::TargetEvent;

    fn ev(kind: EventKind, task_id: u32, time_ms: u64) -> TimedEvent {
        TimedEvent {
            event: TargetEvent {
                kind,
                task_id,
                time_ms,
            },
            host_time: UNIX_EPOCH,
        }
    }

    #[test]
    fn interleaved_tasks_are_numbered_per_task() {
        let events = [
            ev(EventKind::Start, 0, 0),
            ev(EventKind::Start, 1, 1),
            ev(EventKind::Exit, 1, 3),
            ev(EventKind::ExitCritical, 0, 4),
            ev(EventKind::Start, 0, 10),
            ev(EventKind::Exit, 0, 12),
            ev(EventKind::JobsDone, 0, 12),
            ev(EventKind::JobsDone, 1, 12),
        ];
        let mut t = JobTable::default();
        t.compute(&events);
        assert_eq!(t.event_jobs(), &[1, 1, 1, 1, 2, 2, 0, 0]);
        let jobs = t.jobs();
        assert_eq!(jobs.len(), 3);
        assert_eq!((jobs[0].task_id, jobs[0].job), (0, 1));
        assert_eq!(jobs[0].exit_kind(&events), Some(&EventKind::ExitCritical));
        assert_eq!(jobs[0].duration_ms(&events), Some(4));
        assert_eq!((jobs[1].task_id, jobs[1].job), (0, 2));
        assert_eq!((jobs[2].task_id, jobs[2].job), (1, 1));
        assert_eq!(jobs[2].duration_ms(&events), Some(2));
    }

    #[test]
    fn end_without_start_and_start_without_end() {
        let events = [
            ev(EventKind::NotScheduled, 0, 5),
            ev(EventKind::Start, 0, 6),
            ev(EventKind::Other("WEIRD".into()), 0, 7),
        ];
        let mut t = JobTable::default();
        t.compute(&events);
        assert_eq!(t.event_jobs(), &[1, 2, 0]);
        let jobs = t.jobs();
        assert_eq!(jobs[0].start_event, None);
        assert_eq!(jobs[0].end_ms(&events), Some(5));
        assert_eq!(jobs[0].duration_ms(&events), None);
        assert_eq!(jobs[1].start_ms(&events), Some(6));
        assert_eq!(jobs[1].end_event, None);
        // Reuse keeps no state from the previous attempt.
        t.compute(&events[1..2]);
        assert_eq!(t.event_jobs(), &[1]);
        assert_eq!(t.jobs().len(), 1);
    }

    #[test]
    fn config_round_trip_with_escapes() {
        let cfg = vec![
            ("a".to_string(), r"x\y;z=w".to_string()),
            ("b".to_string(), String::new()),
        ];
        let text = encode_config(&cfg);
        assert_eq!(text, r"a=x\\y\;z=w;b=");
        assert_eq!(decode_config(&text), cfg);
        assert!(decode_config("").is_empty());
    }

    #[test]
    fn one_line_replaces_line_breaks() {
        assert_eq!(one_line("a\nb\r\nc"), "a b  c");
        assert!(matches!(one_line("plain"), Cow::Borrowed(_)));
    }
}
