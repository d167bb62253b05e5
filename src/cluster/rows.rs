//! Result rows of one variant as they go to PostgreSQL, and the batched inserts.

use taskdist_handlers::{
    duration_us, encode_config, unix_us, JobTable, VariantBad, VariantFinished,
};
use tokio_postgres::Transaction;

/// Every row of one variant's outcome.
#[derive(Debug, Default)]
pub(crate) struct VariantRows {
    pub variant: i64,
    pub bad: bool,
    pub attempts: i64,
    pub target: String,
    pub started_us: i64,
    pub finished_us: i64,
    pub duration_us: i64,
    pub tasks: Vec<TaskRow>,
    pub events: Vec<EventRow>,
    pub jobs: Vec<JobRow>,
    pub reason: Option<String>,
}

#[derive(Debug)]
pub(crate) struct TaskRow {
    pub id: i64,
    pub executiontime_ms: i64,
    pub criticaltime_ms: i64,
    pub priority: i64,
    pub deadline_ms: i64,
    pub period_ms: i64,
    pub offset_ms: i64,
    pub numberofjobs: i64,
    pub quota_bytes: i64,
    pub caps: i64,
    pub cores: i64,
    pub coreoffset: i64,
    pub pkg: String,
    pub config: String,
}

#[derive(Debug)]
pub(crate) struct EventRow {
    pub task_id: i64,
    pub job: i64,
    pub kind: String,
    pub target_time_ms: i64,
    pub host_time_us: i64,
}

#[derive(Debug)]
pub(crate) struct JobRow {
    pub task_id: i64,
    pub job: i64,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub exit_type: Option<String>,
    pub duration_ms: Option<i64>,
}

/// Values beyond `i64` (not produced by real targets) are clamped rather than wrapped.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn tasks_of(ts: &taskdist_tasksets::TaskSet) -> Vec<TaskRow> {
    ts.tasks
        .iter()
        .map(|t| TaskRow {
            id: t.id.into(),
            executiontime_ms: int(t.executiontime_ms),
            criticaltime_ms: int(t.criticaltime_ms),
            priority: t.priority.into(),
            deadline_ms: int(t.deadline_ms),
            period_ms: int(t.period_ms),
            offset_ms: int(t.offset_ms),
            numberofjobs: t.numberofjobs.into(),
            quota_bytes: int(t.quota_bytes),
            caps: t.caps.into(),
            cores: t.cores.into(),
            coreoffset: t.coreoffset.into(),
            pkg: t.pkg.clone(),
            config: encode_config(&t.config),
        })
        .collect()
}

impl VariantRows {
    /// The rows of a done variant (jobs derived with `table`, as the SQLite handler does).
    pub fn finished(v: &VariantFinished, table: &mut JobTable) -> Self {
        table.compute(&v.events);
        let events = v
            .events
            .iter()
            .zip(table.event_jobs())
            .map(|(e, &job)| EventRow {
                task_id: e.event.task_id.into(),
                job: job.into(),
                kind: e.event.kind.as_wire().to_owned(),
                target_time_ms: int(e.event.time_ms),
                host_time_us: int(unix_us(e.host_time)),
            })
            .collect();
        let jobs = table
            .jobs()
            .iter()
            .map(|j| JobRow {
                task_id: j.task_id.into(),
                job: j.job.into(),
                start_ms: j.start_ms(&v.events).map(int),
                end_ms: j.end_ms(&v.events).map(int),
                exit_type: j.exit_kind(&v.events).map(|k| k.as_wire().to_owned()),
                duration_ms: j.duration_ms(&v.events).map(int),
            })
            .collect();
        VariantRows {
            variant: int(v.id.variant),
            bad: false,
            attempts: v.id.attempt.into(),
            target: v.id.target.to_string(),
            started_us: int(unix_us(v.started_at)),
            finished_us: int(unix_us(v.finished_at)),
            duration_us: int(duration_us(v.started_at, v.finished_at)),
            tasks: tasks_of(&v.taskset),
            events,
            jobs,
            reason: None,
        }
    }

    /// The rows of a variant given up as bad.
    pub fn bad(v: &VariantBad) -> Self {
        VariantRows {
            variant: int(v.id.variant),
            bad: true,
            attempts: v.id.attempt.into(),
            target: v.id.target.to_string(),
            started_us: int(unix_us(v.started_at)),
            finished_us: int(unix_us(v.finished_at)),
            duration_us: int(duration_us(v.started_at, v.finished_at)),
            tasks: tasks_of(&v.taskset),
            events: Vec::new(),
            jobs: Vec::new(),
            reason: Some(v.reason.clone()),
        }
    }
}

/// Insert the rows of `batch` in four statements (one per table, columns as arrays), each
/// ignoring rows already there. Returns the variants whose `variants` row is new.
pub(crate) async fn insert(
    tx: &Transaction<'_>,
    experiment: &str,
    distributor: &str,
    batch: &[&VariantRows],
) -> Result<Vec<i64>, tokio_postgres::Error> {
    let (mut v_id, mut v_out, mut v_att, mut v_tgt) = (vec![], vec![], vec![], vec![]);
    let (mut v_s, mut v_f, mut v_d, mut v_nt, mut v_ne, mut v_r) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for r in batch {
        v_id.push(r.variant);
        v_out.push(if r.bad { "bad" } else { "done" });
        v_att.push(r.attempts);
        v_tgt.push(r.target.as_str());
        v_s.push(r.started_us);
        v_f.push(r.finished_us);
        v_d.push(r.duration_us);
        v_nt.push(r.tasks.len() as i64);
        v_ne.push(r.events.len() as i64);
        v_r.push(r.reason.as_deref());
    }
    let new: Vec<i64> = tx
        .query(
            "INSERT INTO taskdist.variants SELECT $1, v.*, $12 FROM unnest($2::bigint[], \
             $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::bigint[], $8::bigint[], \
             $9::bigint[], $10::bigint[], $11::text[]) AS v ON CONFLICT DO NOTHING RETURNING variant",
            &[
                &experiment,
                &v_id,
                &v_out,
                &v_att,
                &v_tgt,
                &v_s,
                &v_f,
                &v_d,
                &v_nt,
                &v_ne,
                &v_r,
                &distributor,
            ],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();

    let mut e = (
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
    );
    let mut j = (
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
    );
    let mut t = TaskCols::default();
    for r in batch {
        for (seq, ev) in r.events.iter().enumerate() {
            e.0.push(r.variant);
            e.1.push(r.attempts);
            e.2.push(seq as i64);
            e.3.push(r.target.as_str());
            e.4.push(ev.task_id);
            e.5.push(ev.job);
            e.6.push(ev.kind.as_str());
            e.7.push(ev.target_time_ms);
            e.8.push(ev.host_time_us);
        }
        for jb in &r.jobs {
            j.0.push(r.variant);
            j.1.push(r.attempts);
            j.2.push(r.target.as_str());
            j.3.push(jb.task_id);
            j.4.push(jb.job);
            j.5.push(jb.start_ms);
            j.6.push(jb.end_ms);
            j.7.push(jb.exit_type.as_deref());
            j.8.push(jb.duration_ms);
        }
        for tk in &r.tasks {
            t.variant.push(r.variant);
            t.id.push(tk.id);
            t.executiontime.push(tk.executiontime_ms);
            t.criticaltime.push(tk.criticaltime_ms);
            t.priority.push(tk.priority);
            t.deadline.push(tk.deadline_ms);
            t.period.push(tk.period_ms);
            t.offset.push(tk.offset_ms);
            t.jobs.push(tk.numberofjobs);
            t.quota.push(tk.quota_bytes);
            t.caps.push(tk.caps);
            t.cores.push(tk.cores);
            t.coreoffset.push(tk.coreoffset);
            t.pkg.push(tk.pkg.as_str());
            t.config.push(tk.config.as_str());
        }
    }
    if !e.0.is_empty() {
        tx.execute(
            "INSERT INTO taskdist.events SELECT $1, e.* FROM unnest($2::bigint[], $3::bigint[], \
             $4::bigint[], $5::text[], $6::bigint[], $7::bigint[], $8::text[], $9::bigint[], \
             $10::bigint[]) AS e ON CONFLICT DO NOTHING",
            &[
                &experiment,
                &e.0,
                &e.1,
                &e.2,
                &e.3,
                &e.4,
                &e.5,
                &e.6,
                &e.7,
                &e.8,
            ],
        )
        .await?;
    }
    if !j.0.is_empty() {
        tx.execute(
            "INSERT INTO taskdist.jobs SELECT $1, j.* FROM unnest($2::bigint[], $3::bigint[], \
             $4::text[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::text[], \
             $10::bigint[]) AS j ON CONFLICT DO NOTHING",
            &[
                &experiment,
                &j.0,
                &j.1,
                &j.2,
                &j.3,
                &j.4,
                &j.5,
                &j.6,
                &j.7,
                &j.8,
            ],
        )
        .await?;
    }
    if !t.variant.is_empty() {
        tx.execute(
            "INSERT INTO taskdist.tasks SELECT $1, t.* FROM unnest($2::bigint[], $3::bigint[], \
             $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], \
             $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[], \
             $15::text[], $16::text[]) AS t ON CONFLICT DO NOTHING",
            &[
                &experiment,
                &t.variant,
                &t.id,
                &t.executiontime,
                &t.criticaltime,
                &t.priority,
                &t.deadline,
                &t.period,
                &t.offset,
                &t.jobs,
                &t.quota,
                &t.caps,
                &t.cores,
                &t.coreoffset,
                &t.pkg,
                &t.config,
            ],
        )
        .await?;
    }
    Ok(new)
}

/// The `tasks` rows of a batch, column by column.
#[derive(Default)]
struct TaskCols<'a> {
    variant: Vec<i64>,
    id: Vec<i64>,
    executiontime: Vec<i64>,
    criticaltime: Vec<i64>,
    priority: Vec<i64>,
    deadline: Vec<i64>,
    period: Vec<i64>,
    offset: Vec<i64>,
    jobs: Vec<i64>,
    quota: Vec<i64>,
    caps: Vec<i64>,
    cores: Vec<i64>,
    coreoffset: Vec<i64>,
    pkg: Vec<&'a str>,
    config: Vec<&'a str>,
}
