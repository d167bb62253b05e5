//! `taskdist export`: an experiment's rows in the store written out as a local run's files.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use taskdist_handlers::{
    AttemptId, EventHandler, EventKind, RunInfo, RunSummary, TargetEvent, TimedEvent, VariantBad,
    VariantFinished,
};

use super::{Inner, StoreError};
use crate::distributor::{run_fingerprint, Ledger, Selection, Workload};
use crate::ResultDir;

/// Variants read from the database per page.
const PAGE: i64 = 2_000;

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// Variants written as done.
    pub done: u64,
    /// Variants written as bad.
    pub bad: u64,
    /// Variants selected (None: endless).
    pub planned: Option<u64>,
}

fn time(us: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us.max(0) as u64)
}

/// The workload of a stored experiment: a spec (TOML) or a single task-set (XML).
fn workload(
    id: &str,
    text: &str,
    seed: &str,
    admission: Option<&str>,
) -> Result<Workload, StoreError> {
    let bad = |reason: String| {
        StoreError::Invalid(format!(
            "experiment {id}: the stored spec cannot be read: {reason}"
        ))
    };
    let seed: u64 = seed
        .parse()
        .map_err(|_| bad(format!("seed {seed:?} is not a number")))?;
    let mut w = if text.trim_start().starts_with('<') {
        Workload::new(taskdist_tasksets::TaskSet::from_xml(text).map_err(|e| bad(e.to_string()))?)
    } else {
        let spec = taskdist_tasksets::Spec::from_toml_str(text, id)
            .and_then(|s| s.with_seed(seed))
            .map_err(|e| bad(e.to_string()))?;
        Workload::new(spec)
    };
    if let Some(a) = admission {
        w = w.with_admission(
            taskdist_tasksets::AdmissionControl::from_xml(a).map_err(|e| bad(e.to_string()))?,
        );
    }
    Ok(w)
}

pub(super) async fn export(
    store: &Inner,
    id: &str,
    out: &Path,
    kinds: &[crate::HandlerKind],
) -> Result<ExportSummary, StoreError> {
    let client = store.connect().await?;
    let row = client
        .query_opt(
            "SELECT spec_text, seed, admission, variant_limit, planned, run_info \
             FROM taskdist.experiments WHERE id = $1",
            &[&id],
        )
        .await?
        .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
    let text: String = row.get(0);
    let seed: String = row.get(1);
    let admission: Option<String> = row.get(2);
    let limit: Option<i64> = row.get(3);
    let planned: Option<i64> = row.get(4);
    let run_info: String = row.get(5);
    let workload = workload(id, &text, &seed, admission.as_deref())?;
    let selection = Selection {
        limit: limit.map(|l| l as u64),
        shard: None,
    };
    let info: RunInfo = serde_json::from_str(&run_info).map_err(|e| {
        StoreError::Invalid(format!(
            "experiment {id}: stored run information unreadable: {e}"
        ))
    })?;

    let mut dir = ResultDir::create(out, &workload, selection)?;
    let (ledger_dir, mut handlers) = match dir.attach(kinds) {
        Ok(x) => x,
        Err(e) => {
            dir.abandon();
            return Err(e.into());
        }
    };
    let fp = run_fingerprint(&workload, selection);
    let written = write_all(
        &client,
        id,
        &workload,
        &info,
        &mut handlers,
        &ledger_dir,
        &fp,
    )
    .await;
    match written {
        Ok((done, bad)) => {
            dir.keep();
            Ok(ExportSummary {
                done,
                bad,
                planned: planned.map(|p| p as u64),
            })
        }
        Err(e) => {
            drop(handlers);
            dir.abandon();
            Err(e)
        }
    }
}

async fn write_all(
    client: &tokio_postgres::Client,
    id: &str,
    workload: &Workload,
    info: &RunInfo,
    handlers: &mut [Box<dyn EventHandler>],
    ledger_dir: &Path,
    fp: &str,
) -> Result<(u64, u64), StoreError> {
    let (mut ledger, _) = Ledger::resume(ledger_dir, fp)?;
    for h in handlers.iter_mut() {
        h.run_started(info).await?;
    }
    let (mut done, mut bad, mut events_n) = (0u64, 0u64, 0u64);
    let (mut first_us, mut last_us) = (i64::MAX, i64::MIN);
    let mut from: i64 = 0;
    loop {
        let variants = client
            .query(
                "SELECT variant, outcome, attempts, target, started_host_us, finished_host_us, reason \
                 FROM taskdist.variants WHERE experiment = $1 AND variant >= $2 \
                 ORDER BY variant LIMIT $3",
                &[&id, &from, &PAGE],
            )
            .await?;
        let Some(last) = variants.last() else { break };
        let last_variant: i64 = last.get(0);
        let events = client
            .query(
                "SELECT variant, task_id, type, target_time_ms, host_time_us FROM taskdist.events \
                 WHERE experiment = $1 AND variant >= $2 AND variant <= $3 ORDER BY variant, seq",
                &[&id, &from, &last_variant],
            )
            .await?;
        let mut ev = events.iter().peekable();
        let mut batch: Vec<(u64, bool)> = Vec::with_capacity(variants.len());
        for v in &variants {
            let variant: i64 = v.get(0);
            let outcome: &str = v.get(1);
            let attempts: i64 = v.get(2);
            let target: &str = v.get(3);
            let started: i64 = v.get(4);
            let finished: i64 = v.get(5);
            first_us = first_us.min(started);
            last_us = last_us.max(finished);
            let target: SocketAddr = target.parse().map_err(|_| {
                StoreError::Invalid(format!(
                    "experiment {id}, variant {variant}: target {target:?} is not an address"
                ))
            })?;
            let aid = AttemptId {
                variant: variant as u64,
                attempt: u32::try_from(attempts).unwrap_or(u32::MAX),
                target,
            };
            let taskset = Arc::new(workload.source.get(variant as u64).map_err(|e| {
                StoreError::Invalid(format!("experiment {id}, variant {variant}: {e}"))
            })?);
            let mut list = Vec::new();
            while let Some(e) = ev.next_if(|e| e.get::<_, i64>(0) == variant) {
                list.push(TimedEvent {
                    event: TargetEvent {
                        kind: EventKind::from_wire(e.get(2)),
                        task_id: u32::try_from(e.get::<_, i64>(1)).unwrap_or(u32::MAX),
                        time_ms: e.get::<_, i64>(3).max(0) as u64,
                    },
                    host_time: time(e.get(4)),
                });
            }
            // Events of variants without a variants row (none are written so) are skipped.
            while ev.next_if(|e| e.get::<_, i64>(0) < variant).is_some() {}
            if outcome == "bad" {
                let b = VariantBad {
                    id: aid,
                    taskset,
                    reason: v.get::<_, Option<String>>(6).unwrap_or_default(),
                    started_at: time(started),
                    finished_at: time(finished),
                };
                for h in handlers.iter_mut() {
                    h.taskset_bad(&b).await?;
                }
                bad += 1;
            } else {
                events_n += list.len() as u64;
                let f = VariantFinished {
                    id: aid,
                    taskset,
                    events: list,
                    started_at: time(started),
                    finished_at: time(finished),
                };
                for h in handlers.iter_mut() {
                    h.taskset_finished(&f).await?;
                }
                done += 1;
            }
            batch.push((variant as u64, outcome == "bad"));
        }
        for h in handlers.iter_mut() {
            h.flush().await?;
        }
        ledger = tokio::task::spawn_blocking(move || {
            let r = ledger.append_outcomes(&mut batch);
            (ledger, r)
        })
        .await
        .map_err(|e| StoreError::Invalid(format!("ledger writer: {e}")))
        .and_then(|(l, r)| r.map(|()| l).map_err(StoreError::from))?;
        from = last_variant + 1;
    }
    let summary = RunSummary {
        done,
        bad,
        requeued: 0,
        events: events_n,
        interrupted: false,
        elapsed_s: if last_us > first_us {
            (last_us - first_us) as f64 / 1e6
        } else {
            0.0
        },
    };
    for h in handlers.iter_mut() {
        h.run_finished(&summary).await?;
        h.flush().await?;
    }
    tokio::task::spawn_blocking(move || ledger.sync())
        .await
        .map_err(|e| StoreError::Invalid(format!("ledger writer: {e}")))??;
    Ok((done, bad))
}
