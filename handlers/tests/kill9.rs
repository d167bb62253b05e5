//! A real `kill -9` in the middle of writing, then resume: no variant lost, none repeated.
//!
//! The test re-runs its own binary as a child (`child_writer`, ignored in normal runs) that
//! writes variants through the CSV, JSON Lines and SQLite handlers and, after every flush,
//! appends the flushed variant indices to a ledger file (as the distributor does). The parent
//! kills it with SIGKILL while it writes, resumes all three outputs from the ledger, writes the
//! remaining variants and checks that every variant has exactly one result with all its events.
//!
//! The child paces itself (a pause in the middle of every batch, after some rows were written
//! and before they were flushed and recorded), so the whole run takes seconds and the kill
//! lands while it still has work to do; the test checks that it did.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use taskdist_handlers::reader::{self, JsonlRecord};
use taskdist_handlers::{CsvHandler, JsonlHandler, SqliteHandler};

const DIR_VAR: &str = "TASKDIST_KILL9_DIR";
const VARIANTS: u64 = 600;
const BATCH: u64 = 7;
/// The child's pause in the middle of each batch: 86 batches take at least 2.5 s.
const PAUSE: Duration = Duration::from_millis(30);
/// The parent kills the child once the ledger holds this many variants.
const KILL_AFTER: usize = 100;

fn ledger_path(dir: &Path) -> PathBuf {
    dir.join("ledger.txt")
}

/// Variants whose completion the ledger recorded (complete lines only).
fn ledger(dir: &Path) -> BTreeSet<u64> {
    let text = fs::read_to_string(ledger_path(dir)).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete.lines().map(|l| l.parse().unwrap()).collect()
}

/// Every ledger line (complete lines only), in order, repeats included.
fn ledger_lines(dir: &Path) -> Vec<u64> {
    let text = fs::read_to_string(ledger_path(dir)).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete.lines().map(|l| l.parse().unwrap()).collect()
}

/// Write `range` through the three handlers, flushing and recording every `BATCH` variants;
/// with `pause`, waits that long in the middle of each batch (rows written, not yet flushed).
fn write_variants(
    dir: &Path,
    csv: &mut CsvHandler,
    jsonl: &mut JsonlHandler,
    db: &mut SqliteHandler,
    variants: impl Iterator<Item = u64>,
    attempt: u32,
    pause: Option<Duration>,
) {
    let mut ledger = OpenOptions::new()
        .append(true)
        .create(true)
        .open(ledger_path(dir))
        .unwrap();
    let mut pending = Vec::new();
    for v in variants {
        if v % 11 == 5 {
            let b = bad(v, "target fault");
            csv.write_bad(&b).unwrap();
            jsonl.write_bad(&b).unwrap();
            db.write_bad(&b).unwrap();
        } else {
            let f = finished(v, attempt, 3, 10);
            csv.write_finished(&f).unwrap();
            jsonl.write_finished(&f).unwrap();
            db.write_finished(&f).unwrap();
        }
        pending.push(v);
        if let Some(p) = pause.filter(|_| pending.len() as u64 == BATCH / 2) {
            std::thread::sleep(p);
        }
        if pending.len() as u64 == BATCH {
            csv.flush_files().unwrap();
            jsonl.flush_file().unwrap();
            db.commit().unwrap();
            let text: String = pending.drain(..).map(|v| format!("{v}\n")).collect();
            ledger.write_all(text.as_bytes()).unwrap();
        }
    }
    csv.flush_files().unwrap();
    jsonl.flush_file().unwrap();
    db.commit().unwrap();
    let text: String = pending.drain(..).map(|v| format!("{v}\n")).collect();
    ledger.write_all(text.as_bytes()).unwrap();
}

#[test]
#[ignore = "run by kill9_then_resume_keeps_every_variant_exactly_once as its child"]
fn child_writer() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let mut csv = CsvHandler::create(dir.join("csv")).unwrap();
    let mut jsonl = JsonlHandler::create(dir.join("results.jsonl")).unwrap();
    let mut db = SqliteHandler::create(dir.join("results.sqlite")).unwrap();
    write_variants(
        &dir,
        &mut csv,
        &mut jsonl,
        &mut db,
        0..VARIANTS,
        1,
        Some(PAUSE),
    );
}

#[test]
fn kill9_then_resume_keeps_every_variant_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_writer", "--exact", "--ignored", "--test-threads=1"])
        .env(DIR_VAR, dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait (bounded) until some batches are recorded, then kill the writer mid-stream.
    for _ in 0..6000 {
        if ledger(dir).len() >= KILL_AFTER || child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // The child must still be writing when it is killed, or the test proves nothing.
    let early = child.try_wait().unwrap();
    assert!(
        early.is_none(),
        "the child ended before the kill: {early:?}"
    );
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "not ended by SIGKILL: {status:?}");

    let done = ledger(dir);
    assert!(
        done.len() >= KILL_AFTER,
        "the ledger lost lines: {}",
        done.len()
    );
    assert!(
        (done.len() as u64) < VARIANTS,
        "the kill interrupted nothing: all {VARIANTS} variants were recorded"
    );
    assert_eq!(
        ledger_lines(dir).len(),
        done.len(),
        "the child recorded a variant twice"
    );
    let is_done = |v: u64| done.contains(&v);
    let mut csv = CsvHandler::resume(dir.join("csv"), &is_done).unwrap();
    let mut jsonl = JsonlHandler::resume(dir.join("results.jsonl"), &is_done).unwrap();
    let mut db = SqliteHandler::resume(dir.join("results.sqlite"), &is_done).unwrap();
    let todo: Vec<u64> = (0..VARIANTS).filter(|v| !done.contains(v)).collect();
    let todo_count = todo.len();
    eprintln!(
        "kill9: ledger had {} variants, {todo_count} redone",
        done.len()
    );
    assert!(todo_count > 0);
    write_variants(
        dir,
        &mut csv,
        &mut jsonl,
        &mut db,
        todo.into_iter(),
        2,
        None,
    );

    // The ledger now names every variant exactly once, like the outputs below.
    let mut all = ledger_lines(dir);
    all.sort_unstable();
    assert_eq!(
        all,
        (0..VARIANTS).collect::<Vec<_>>(),
        "ledger not exactly once"
    );

    // CSV: one variants.csv row per variant, 63 events with seq 0..62 per done variant.
    let mut rows: HashMap<u64, u32> = HashMap::new();
    for r in reader::read_variants(dir.join("csv/variants.csv")).unwrap() {
        *rows.entry(r.unwrap().variant).or_default() += 1;
    }
    assert_eq!(rows.len() as u64, VARIANTS);
    assert!(rows.values().all(|&n| n == 1));
    assert!(rows.keys().all(|v| *v < VARIANTS));
    // Attempt 1 rows are exactly the variants the ledger had before the kill; the rest were
    // written again after the resume (attempt 2).
    let mut first_attempt = BTreeSet::new();
    for r in reader::read_variants(dir.join("csv/variants.csv")).unwrap() {
        let r = r.unwrap();
        if r.attempts == 1 {
            first_attempt.insert(r.variant);
        }
    }
    let done_finished: BTreeSet<u64> = done.iter().copied().filter(|v| v % 11 != 5).collect();
    assert_eq!(first_attempt, done_finished);
    let mut seqs: HashMap<u64, u64> = HashMap::new();
    let mut expected_seq: HashMap<u64, u64> = HashMap::new();
    for r in reader::read_events(dir.join("csv/events.csv")).unwrap() {
        let r = r.unwrap();
        let next = expected_seq.entry(r.variant).or_default();
        assert_eq!(r.seq, *next, "variant {} events out of order", r.variant);
        *next += 1;
        *seqs.entry(r.variant).or_default() += 1;
    }
    let bad_count = (0..VARIANTS).filter(|v| v % 11 == 5).count() as u64;
    assert_eq!(seqs.len() as u64, VARIANTS - bad_count);
    assert!(seqs.values().all(|&n| n == 63));
    let jobs = reader::read_jobs(dir.join("csv/jobs.csv")).unwrap().count() as u64;
    assert_eq!(jobs, (VARIANTS - bad_count) * 30);

    // JSON Lines: one variant record per variant.
    let mut seen = BTreeSet::new();
    for r in reader::read_jsonl(dir.join("results.jsonl")).unwrap() {
        if let JsonlRecord::Variant(v) = r.unwrap() {
            assert!(seen.insert(v.variant), "variant {} twice", v.variant);
        }
    }
    assert_eq!(seen.len() as u64, VARIANTS);

    // SQLite: the same counts.
    let c = db.connection();
    let n: i64 = c
        .query_row("SELECT count(*) FROM variants", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n as u64, VARIANTS);
    let n: i64 = c
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n as u64, (VARIANTS - bad_count) * 63);
    let n: i64 = c
        .query_row("SELECT count(DISTINCT variant) FROM variants", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(n as u64, VARIANTS);
}
