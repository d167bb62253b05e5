//! Properties of the job numbering for arbitrary event sequences.

use std::collections::HashSet;
use std::time::UNIX_EPOCH;

use proptest::prelude::*;
use taskdist_handlers::{EventKind, JobTable, TargetEvent, TimedEvent};

fn kind() -> impl Strategy<Value = EventKind> {
    prop_oneof![
        4 => Just(EventKind::Start),
        3 => Just(EventKind::Exit),
        1 => Just(EventKind::ExitPeriod),
        1 => Just(EventKind::NotScheduled),
        1 => Just(EventKind::JobsDone),
        1 => Just(EventKind::Other("X".into())),
    ]
}

proptest! {
    #[test]
    fn every_job_is_numbered_once_and_consistently(
        raw in proptest::collection::vec((kind(), 0u32..4), 0..200)
    ) {
        let events: Vec<TimedEvent> = raw
            .into_iter()
            .enumerate()
            .map(|(i, (kind, task_id))| TimedEvent {
                event: TargetEvent { kind, task_id, time_ms: i as u64 },
                host_time: UNIX_EPOCH,
            })
            .collect();
        let mut table = JobTable::default();
        table.compute(&events);
        let numbers = table.event_jobs();
        prop_assert_eq!(numbers.len(), events.len());

        let mut pairs = HashSet::new();
        let mut last_start = [0u32; 4];
        for (e, &job) in events.iter().zip(numbers) {
            let k = &e.event.kind;
            if matches!(k, EventKind::Start) || k.ends_job() {
                prop_assert!(job >= 1);
                pairs.insert((e.event.task_id, job));
            } else {
                prop_assert_eq!(job, 0);
            }
            if matches!(k, EventKind::Start) {
                // START numbers grow strictly within a task.
                let t = e.event.task_id as usize;
                prop_assert!(job > last_start[t]);
                last_start[t] = job;
            }
        }
        let jobs = table.jobs();
        prop_assert_eq!(jobs.len(), pairs.len());
        for w in jobs.windows(2) {
            prop_assert!((w[0].task_id, w[0].job) < (w[1].task_id, w[1].job));
        }
        for j in jobs {
            if let Some(s) = j.start_event {
                prop_assert_eq!(&events[s].event.kind, &EventKind::Start);
                prop_assert_eq!(events[s].event.task_id, j.task_id);
                prop_assert_eq!(numbers[s], j.job);
            }
            if let Some(x) = j.end_event {
                prop_assert!(events[x].event.kind.ends_job());
                prop_assert_eq!(events[x].event.task_id, j.task_id);
                prop_assert_eq!(numbers[x], j.job);
                if let Some(s) = j.start_event {
                    prop_assert!(x > s);
                }
            }
            prop_assert!(j.start_event.is_some() || j.end_event.is_some());
        }
    }
}
