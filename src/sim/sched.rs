//! Scheduling of a task-set in virtual time, and the admission test.
//!
//! Model: every task runs on one core (partitioned scheduling). Task `i` starts at
//! `start + offset_0 + ... + offset_i` (offsets add up, as on real targets) and releases job
//! `k` (0-based) one period later than job `k-1`, the first one period after its start. On
//! each core, jobs are scheduled preemptively: EDF jobs (earliest absolute deadline first)
//! above fixed-priority jobs (0 highest); ties go to the earlier release, then task order. A
//! job ends with EXIT when its demand is served, EXIT_CRITICAL at `release + criticaltime`
//! (if non-zero), EXIT_PERIOD at its next release. JOBS_DONE follows the task's last job.

use taskdist_handlers::EventKind;

/// One task as the scheduler sees it (all times in µs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimTask {
    /// Task id for the events.
    pub id: u32,
    /// Core the task runs on.
    pub core: u32,
    /// Fixed priority (0 highest), used when `edf_deadline_us` is `None`.
    pub priority: u32,
    /// Relative deadline if scheduled by EDF.
    pub edf_deadline_us: Option<u64>,
    /// Period.
    pub period_us: u64,
    /// Offset (added to the offsets of earlier tasks).
    pub offset_us: u64,
    /// Number of jobs.
    pub jobs: u32,
    /// Kill a job this long after its release; `None` = never.
    pub critical_us: Option<u64>,
    /// Demand per job; `None` = never ends by itself.
    pub demand_us: Option<u64>,
    /// If set, each job is created and ends at once with this kind (OUT_OF_CAPS,
    /// OUT_OF_QUOTA, EXIT_ERROR for a missing binary).
    pub fails_with: Option<EventKind>,
    /// False if the admission test rejected the task: its jobs end with NOT_SCHEDULED
    /// (without START).
    pub admitted: bool,
}

/// One event of the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedEvent {
    /// When, in µs since the simulated boot.
    pub time_us: u64,
    /// The task's id.
    pub task_id: u32,
    /// What happened.
    pub kind: EventKind,
    /// Release time of the job this event belongs to (for JOBS_DONE: the last job's).
    pub release_us: u64,
}

struct Job {
    task: usize,
    release: u64,
    kill_at: u64,
    kill_kind: EventKind,
    remaining: u64,
    key: (u8, u64),
}

/// Compute every event of `tasks` started at `start_us`, in time order (stable: at equal
/// times, job ends come before releases). `max_jobs` bounds the total number of jobs; returns
/// `None` if the task-set has more.
pub fn schedule(tasks: &[SimTask], start_us: u64, max_jobs: u64) -> Option<Vec<SchedEvent>> {
    let total: u64 = tasks.iter().map(|t| u64::from(t.jobs)).sum();
    if total > max_jobs {
        return None;
    }
    let mut bases = Vec::with_capacity(tasks.len());
    let mut acc = start_us;
    for t in tasks {
        acc = acc.saturating_add(t.offset_us);
        bases.push(acc);
    }
    let mut cores: Vec<u32> = tasks.iter().map(|t| t.core).collect();
    cores.sort_unstable();
    cores.dedup();
    let mut out = Vec::with_capacity((total as usize * 2 + tasks.len()).min(1 << 16));
    for core in cores {
        let idx: Vec<usize> = (0..tasks.len())
            .filter(|&i| tasks[i].core == core)
            .collect();
        run_core(tasks, &idx, &bases, &mut out);
    }
    out.sort_by_key(|e| e.time_us);
    Some(out)
}

fn release_of(t: &SimTask, base: u64, k: u32) -> u64 {
    base.saturating_add(t.period_us.saturating_mul(u64::from(k) + 1))
}

fn run_core(tasks: &[SimTask], idx: &[usize], bases: &[u64], out: &mut Vec<SchedEvent>) {
    let mut next_job = vec![0u32; tasks.len()];
    let mut ended = vec![0u32; tasks.len()];
    let mut active: Vec<Job> = Vec::new();
    let mut t: u64 = 0;
    let end = |out: &mut Vec<SchedEvent>, ended: &mut [u32], ti: usize, time, kind, release| {
        let task = &tasks[ti];
        out.push(SchedEvent {
            time_us: time,
            task_id: task.id,
            kind,
            release_us: release,
        });
        ended[ti] += 1;
        if ended[ti] == task.jobs {
            out.push(SchedEvent {
                time_us: time,
                task_id: task.id,
                kind: EventKind::JobsDone,
                release_us: release,
            });
        }
    };
    loop {
        let next_release = idx
            .iter()
            .filter(|&&i| next_job[i] < tasks[i].jobs)
            .map(|&i| release_of(&tasks[i], bases[i], next_job[i]))
            .min();
        let running = active
            .iter()
            .enumerate()
            .min_by_key(|(_, j)| (j.key, j.release, j.task))
            .map(|(i, _)| i);
        let completion = running.and_then(|i| {
            let r = active[i].remaining;
            (r != u64::MAX).then(|| t.saturating_add(r))
        });
        let next_kill = active.iter().map(|j| j.kill_at).min();
        let Some(tn) = [next_release, completion, next_kill]
            .into_iter()
            .flatten()
            .min()
        else {
            break;
        };
        if let Some(i) = running {
            let j = &mut active[i];
            if j.remaining != u64::MAX {
                j.remaining -= tn.saturating_sub(t).min(j.remaining);
            }
        }
        t = tn;
        if let Some(i) = running {
            if active[i].remaining == 0 {
                let j = active.swap_remove(i);
                end(out, &mut ended, j.task, t, EventKind::Exit, j.release);
            }
        }
        let mut k = 0;
        while k < active.len() {
            if active[k].kill_at <= t {
                let j = active.swap_remove(k);
                end(out, &mut ended, j.task, t, j.kill_kind, j.release);
            } else {
                k += 1;
            }
        }
        for &i in idx {
            let task = &tasks[i];
            while next_job[i] < task.jobs && release_of(task, bases[i], next_job[i]) <= t {
                let release = release_of(task, bases[i], next_job[i]);
                next_job[i] += 1;
                if !task.admitted {
                    end(out, &mut ended, i, t, EventKind::NotScheduled, release);
                    continue;
                }
                out.push(SchedEvent {
                    time_us: t,
                    task_id: task.id,
                    kind: EventKind::Start,
                    release_us: release,
                });
                if let Some(kind) = &task.fails_with {
                    end(out, &mut ended, i, t, kind.clone(), release);
                    continue;
                }
                let period_kill = release.saturating_add(task.period_us);
                let (kill_at, kill_kind) = match task.critical_us {
                    Some(c) if release.saturating_add(c) <= period_kill => {
                        (release.saturating_add(c), EventKind::ExitCritical)
                    }
                    _ => (period_kill, EventKind::ExitPeriod),
                };
                let remaining = task.demand_us.unwrap_or(u64::MAX);
                if remaining == 0 {
                    end(out, &mut ended, i, t, EventKind::Exit, release);
                    continue;
                }
                let key = match task.edf_deadline_us {
                    Some(d) => (0, release.saturating_add(d)),
                    None => (1, u64::from(task.priority)),
                };
                active.push(Job {
                    task: i,
                    release,
                    kill_at,
                    kill_kind,
                    remaining,
                    key,
                });
            }
        }
    }
}

/// Admission test: marks tasks `admitted = false` that the test rejects. Per core, EDF tasks
/// are admitted while their density `sum(C / min(D, T))` stays at most 1; then fixed-priority
/// tasks in priority order are admitted if their response time (RTA with the admitted EDF
/// tasks and higher-priority FP tasks as interference) is at most their deadline (or period).
/// Tasks with unbounded demand are rejected.
pub fn admission_test(tasks: &mut [SimTask]) {
    let mut cores: Vec<u32> = tasks.iter().map(|t| t.core).collect();
    cores.sort_unstable();
    cores.dedup();
    for core in cores {
        let mut edf: Vec<usize> = (0..tasks.len())
            .filter(|&i| tasks[i].core == core && tasks[i].edf_deadline_us.is_some())
            .collect();
        edf.sort_by_key(|&i| (tasks[i].edf_deadline_us, i));
        let mut fp: Vec<usize> = (0..tasks.len())
            .filter(|&i| tasks[i].core == core && tasks[i].edf_deadline_us.is_none())
            .collect();
        fp.sort_by_key(|&i| (tasks[i].priority, i));
        let mut admitted: Vec<usize> = Vec::new();
        let mut density = 0.0f64;
        for i in edf {
            let t = &tasks[i];
            let ok = match t.demand_us {
                Some(c) if t.period_us > 0 => {
                    let d = t
                        .edf_deadline_us
                        .unwrap_or(t.period_us)
                        .min(t.period_us)
                        .max(1);
                    let nd = density + c as f64 / d as f64;
                    if nd <= 1.0 + 1e-12 {
                        density = nd;
                        true
                    } else {
                        false
                    }
                }
                _ => false,
            };
            tasks[i].admitted = ok;
            if ok {
                admitted.push(i);
            }
        }
        for i in fp {
            let t = &tasks[i];
            let ok = match t.demand_us {
                Some(c) if t.period_us > 0 => {
                    let d = t.period_us;
                    response_time(c, d, admitted.iter().map(|&j| &tasks[j])).is_some()
                }
                _ => false,
            };
            tasks[i].admitted = ok;
            if ok {
                admitted.push(i);
            }
        }
    }
}

/// Response time of a job with demand `c` under interference from `hp` (each with its
/// demand and period), if it is at most `deadline`.
fn response_time<'a>(
    c: u64,
    deadline: u64,
    hp: impl Iterator<Item = &'a SimTask> + Clone,
) -> Option<u64> {
    let mut r = c;
    loop {
        let mut next = c;
        for h in hp.clone() {
            let hc = h.demand_us?;
            let hp_period = h.period_us.max(1);
            next = next.saturating_add(r.div_ceil(hp_period).saturating_mul(hc));
        }
        if next > deadline {
            return None;
        }
        if next == r {
            return Some(r);
        }
        r = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: u32, prio: u32, period: u64, demand: Option<u64>, jobs: u32) -> SimTask {
        SimTask {
            id,
            core: 0,
            priority: prio,
            edf_deadline_us: None,
            period_us: period,
            offset_us: 0,
            jobs,
            critical_us: None,
            demand_us: demand,
            fails_with: None,
            admitted: true,
        }
    }

    fn kinds(ev: &[SchedEvent], id: u32) -> Vec<(u64, EventKind)> {
        ev.iter()
            .filter(|e| e.task_id == id)
            .map(|e| (e.time_us, e.kind.clone()))
            .collect()
    }

    #[test]
    fn preemption_by_higher_priority() {
        // low: period 100, demand 30, released at 100; high: period 50, demand 20,
        // released at 50 and 100 -> low runs 120..150 after high's second job.
        let low = task(0, 5, 100, Some(30), 1);
        let high = task(1, 1, 50, Some(20), 2);
        let ev = schedule(&[low, high], 0, 100).unwrap();
        assert_eq!(
            kinds(&ev, 1),
            vec![
                (50, EventKind::Start),
                (70, EventKind::Exit),
                (100, EventKind::Start),
                (120, EventKind::Exit),
                (120, EventKind::JobsDone)
            ]
        );
        assert_eq!(
            kinds(&ev, 0),
            vec![
                (100, EventKind::Start),
                (150, EventKind::Exit),
                (150, EventKind::JobsDone)
            ]
        );
    }

    #[test]
    fn kills_and_offsets_add_up() {
        let mut a = task(0, 1, 100, None, 2);
        a.offset_us = 10;
        let mut b = task(1, 0, 100, Some(500), 1);
        b.offset_us = 20;
        b.critical_us = Some(40);
        b.core = 1;
        let ev = schedule(&[a, b], 1000, 100).unwrap();
        assert_eq!(
            kinds(&ev, 0),
            vec![
                (1110, EventKind::Start),
                (1210, EventKind::ExitPeriod),
                (1210, EventKind::Start),
                (1310, EventKind::ExitPeriod),
                (1310, EventKind::JobsDone)
            ]
        );
        // b starts at 1000 + 10 + 20, first release one period later
        assert_eq!(
            kinds(&ev, 1),
            vec![
                (1130, EventKind::Start),
                (1170, EventKind::ExitCritical),
                (1170, EventKind::JobsDone)
            ]
        );
        assert!(schedule(&[task(0, 0, 1, Some(1), 1000)], 0, 999).is_none());
    }

    #[test]
    fn edf_orders_by_deadline() {
        let mut a = task(0, 0, 100, Some(40), 1);
        a.edf_deadline_us = Some(90);
        let mut b = task(1, 0, 100, Some(40), 1);
        b.edf_deadline_us = Some(50);
        let ev = schedule(&[a, b], 0, 10).unwrap();
        assert_eq!(kinds(&ev, 1)[1], (140, EventKind::Exit));
        assert_eq!(kinds(&ev, 0)[1], (180, EventKind::Exit));
    }

    #[test]
    fn admission_rta_and_utilisation() {
        let mut ts = vec![
            task(0, 0, 10, Some(5), 1),
            task(1, 1, 20, Some(8), 1),
            task(2, 2, 40, Some(10), 1),
            task(3, 3, 100, None, 1),
        ];
        admission_test(&mut ts);
        // R1: 8 -> 13 -> 18 = 18 <= 20 ok; R2: 10 -> 23 -> 41 > 40 rejected; idle unbounded
        assert_eq!(
            ts.iter().map(|t| t.admitted).collect::<Vec<_>>(),
            vec![true, true, false, false]
        );
        let mut e = vec![
            task(0, 0, 10, Some(6), 1),
            task(1, 0, 10, Some(5), 1),
            task(2, 0, 10, Some(4), 1),
        ];
        for t in &mut e {
            t.edf_deadline_us = Some(10);
        }
        admission_test(&mut e);
        assert_eq!(
            e.iter().map(|t| t.admitted).collect::<Vec<_>>(),
            vec![true, false, true]
        );
        let ev = schedule(&e, 0, 10).unwrap();
        assert_eq!(kinds(&ev, 1)[0], (10, EventKind::NotScheduled));
    }
}
