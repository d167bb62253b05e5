//! Fixtures shared by the handler tests and the benchmark.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use taskdist_handlers::{
    AttemptId, EventKind, RunInfo, RunSummary, TargetEvent, TimedEvent, VariantBad, VariantFinished,
};
use taskdist_tasksets::{Task, TaskSet};

/// 2023-11-14T22:13:20Z in Unix µs: the host time of the first event.
pub const T0_US: u64 = 1_700_000_000_000_000;

pub fn target() -> SocketAddr {
    "127.0.0.1:3001".parse().unwrap()
}

pub fn host(us: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us)
}

pub fn taskset(tasks: u32, jobs: u32) -> Arc<TaskSet> {
    let tasks = (0..tasks)
        .map(|id| {
            let mut t = Task::new(id, if id % 2 == 0 { "hey" } else { "pi" });
            t.numberofjobs = jobs;
            t.period_ms = 100;
            t.priority = 10 + id;
            if id % 2 == 1 {
                t.config = vec![("arg1".into(), "100000".into())];
            }
            t
        })
        .collect();
    Arc::new(TaskSet { tasks })
}

/// A finished attempt of `tasks` tasks with `jobs` jobs each: per job round, every task
/// STARTs and then EXITs (task 1 is killed at its critical time in round 2), then one
/// JOBS_DONE per task. `tasks * (2 * jobs + 1)` events.
pub fn finished(variant: u64, attempt: u32, tasks: u32, jobs: u32) -> VariantFinished {
    let mut events = Vec::new();
    let mut seq = 0u64;
    let mut push = |kind: EventKind, task_id: u32, time_ms: u64| {
        events.push(TimedEvent {
            event: TargetEvent {
                kind,
                task_id,
                time_ms,
            },
            host_time: host(T0_US + variant * 1_000_000 + seq),
        });
        seq += 1;
    };
    for j in 0..u64::from(jobs) {
        for t in 0..tasks {
            push(EventKind::Start, t, 1000 + j * 100 + u64::from(t));
        }
        for t in 0..tasks {
            let kind = if t == 1 && j == 1 {
                EventKind::ExitCritical
            } else {
                EventKind::Exit
            };
            push(kind, t, 1000 + j * 100 + u64::from(t) + 5 + u64::from(t));
        }
    }
    for t in 0..tasks {
        push(EventKind::JobsDone, t, 1000 + u64::from(jobs) * 100);
    }
    VariantFinished {
        id: AttemptId {
            variant,
            attempt,
            target: target(),
        },
        taskset: taskset(tasks, jobs),
        events,
        started_at: host(T0_US + variant * 1_000_000),
        finished_at: host(T0_US + variant * 1_000_000 + 500_000),
    }
}

pub fn bad(variant: u64, reason: &str) -> VariantBad {
    VariantBad {
        id: AttemptId {
            variant,
            attempt: 3,
            target: "[::1]:3002".parse().unwrap(),
        },
        taskset: taskset(2, 1),
        reason: reason.to_owned(),
        started_at: host(T0_US),
        finished_at: host(T0_US + 2_000_000),
    }
}

pub fn run_info() -> RunInfo {
    RunInfo {
        tool_version: "0.1.0".into(),
        spec_name: "hey".into(),
        spec_text: "name = \"hey\"\n".into(),
        seed: 42,
        total_variants: Some(1000),
        planned_variants: Some(10),
        dialect: "v3".into(),
        command: vec!["taskdist".into(), "run".into(), "hey".into()],
        started_at: host(T0_US),
    }
}

pub fn summary(done: u64, bad: u64, events: u64) -> RunSummary {
    RunSummary {
        done,
        bad,
        requeued: 1,
        events,
        interrupted: false,
        elapsed_s: 2.0,
    }
}

/// A `Write` whose bytes the test can read afterwards.
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}
