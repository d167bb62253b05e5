//! The resume ledger: which variant indices have an outcome, done or bad, kept compact as
//! ranges in a text file in the output directory.
//!
//! Format (`DIR/ledger`, version 2):
//! ```text
//! taskdist-ledger 2 <fingerprint>
//! 0-4095
//! 4097
//! b 4096
//! ```
//! The first line names the format and a fingerprint of the spec text, seed and shard; every
//! further line is an inclusive range `start-end` or a single index of variants that are done,
//! or the same prefixed with `b ` for variants recorded as bad. Lines are appended after the
//! result handlers have flushed the rows of those variants. A torn last line (no newline, as
//! after `kill -9`) is ignored. Version 1 ledgers (no `b ` lines; every outcome counts as done,
//! since version 1 did not tell them apart) are still read.
//!
//! Durability: before a batch is appended, the result files in the directory (`events.csv`,
//! `jobs.csv`, `variants.csv`, `tasks.csv`, `results.jsonl`, `results.sqlite` and its WAL) are
//! synced to stable storage, then the batch is written and the ledger itself is synced. So
//! after a power loss the ledger never records a variant whose rows are not on disk. The
//! distributor appends at most once per flush interval (200 ms by default), so this costs a
//! handful of `fsync` calls per interval, not per variant.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use super::RangeSet;

/// File name of the ledger inside the output directory.
pub const LEDGER_FILE: &str = "ledger";
const MAGIC_PREFIX: &str = "taskdist-ledger ";
const MAGIC: &str = "taskdist-ledger 2";
/// Prefix of a line recording bad variants.
const BAD_PREFIX: &str = "b ";

/// Result files synced before every ledger append (those that exist).
const SYNCED_FILES: &[&str] = &[
    taskdist_handlers::EVENTS_FILE,
    taskdist_handlers::JOBS_FILE,
    taskdist_handlers::VARIANTS_FILE,
    taskdist_handlers::TASKS_FILE,
    taskdist_handlers::JSONL_FILE,
    taskdist_handlers::SQLITE_FILE,
    "results.sqlite-wal",
];

/// The outcomes a ledger records: which variants are done and which are bad (disjoint).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// Variants whose result was written.
    pub done: RangeSet,
    /// Variants given up as bad.
    pub bad: RangeSet,
}

impl Outcomes {
    /// Every index with an outcome, done or bad.
    pub fn recorded(&self) -> RangeSet {
        let mut all = self.done.clone();
        for (s, e) in self.bad.ranges() {
            all.insert_range(s, e);
        }
        all
    }

    /// Whether `i` has an outcome.
    pub fn contains(&self, i: u64) -> bool {
        self.done.contains(i) || self.bad.contains(i)
    }

    /// Number of indices with an outcome.
    pub fn count(&self) -> u64 {
        self.done.count() + self.bad.count()
    }
}

/// Ledger failures.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// I/O on the ledger file failed.
    #[error("ledger {path}: {source}")]
    Io {
        /// The ledger's path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A new run would overwrite results of an earlier one.
    #[error("{path} already exists: the directory holds an earlier run; use --resume to continue it or choose another --out directory")]
    Exists {
        /// The ledger's path.
        path: PathBuf,
    },
    /// Nothing to resume.
    #[error("{path} not found: nothing to resume in this directory (expected a ledger written by `taskdist run --out`)")]
    Missing {
        /// The ledger's path.
        path: PathBuf,
    },
    /// The directory belongs to a run of another spec, seed or shard.
    #[error("{path}: this directory holds a run of a different spec, seed or shard (fingerprint {found}, this run has {expected}); resume it with the same spec or use another --out directory")]
    Mismatch {
        /// The ledger's path.
        path: PathBuf,
        /// Fingerprint stored in the ledger.
        found: String,
        /// Fingerprint of this run.
        expected: String,
    },
    /// A shared result store failed.
    #[error("result store: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A line could not be read.
    #[error(
        "{path}:{line}: expected `start-end` or an index, optionally after `b `, found {text:?}"
    )]
    Corrupt {
        /// The ledger's path.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The offending text.
        text: String,
    },
}

/// Stable 64-bit FNV-1a fingerprint of the parts that define a run's variant set.
///
/// ```
/// use taskdist::distributor::fingerprint;
/// assert_eq!(fingerprint(&["a", "b"]), fingerprint(&["a", "b"]));
/// assert_ne!(fingerprint(&["a", "b"]), fingerprint(&["ab", ""]));
/// ```
pub fn fingerprint(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Where a run records which variants have an outcome, once their rows are flushed: the
/// ledger file of a result directory, or a shared store
/// ([`cluster`](crate::cluster), with the `postgres` feature).
#[async_trait::async_trait]
pub trait OutcomeLog: Send + 'static {
    /// Record the outcomes `(index, bad)` of `batch`, whose rows every handler has flushed;
    /// `last` is the run's final call. Called once per flush interval, also with an empty
    /// batch (a log may retry what it could not write earlier).
    async fn record(&mut self, batch: Vec<(u64, bool)>, last: bool) -> Result<(), LedgerError>;
}

/// A ledger file as an [`OutcomeLog`]: its writes and fsyncs run on a blocking thread.
pub(crate) struct FileLog(pub(crate) Option<Ledger>);

#[async_trait::async_trait]
impl OutcomeLog for FileLog {
    async fn record(&mut self, mut batch: Vec<(u64, bool)>, last: bool) -> Result<(), LedgerError> {
        if batch.is_empty() && !last {
            return Ok(());
        }
        let Some(mut l) = self.0.take() else {
            return Err(LedgerError::Store("the ledger failed earlier".into()));
        };
        let written = tokio::task::spawn_blocking(move || {
            let r = l
                .append_outcomes(&mut batch)
                .and_then(|()| if last { l.sync() } else { Ok(()) });
            (l, r)
        })
        .await
        .map_err(|e| LedgerError::Store(format!("ledger writer: {e}").into()))?;
        self.0 = Some(written.0);
        written.1
    }
}

/// An open ledger, appending outcomes.
#[derive(Debug)]
pub struct Ledger {
    file: File,
    path: PathBuf,
    line: String,
    /// Result files opened for syncing before each append, by name.
    synced: Vec<(&'static str, Option<File>)>,
}

impl Ledger {
    /// Start a new ledger in `dir`; fails if one exists.
    pub fn create(dir: &Path, fingerprint: &str) -> Result<Ledger, LedgerError> {
        let path = dir.join(LEDGER_FILE);
        let io = |source| LedgerError::Io {
            path: path.clone(),
            source,
        };
        let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(LedgerError::Exists { path })
            }
            Err(e) => return Err(io(e)),
        };
        writeln!(file, "{MAGIC} {fingerprint}").map_err(io)?;
        file.sync_all().map_err(io)?;
        sync_dir(dir);
        Ok(Ledger::with_file(file, path))
    }

    fn with_file(file: File, path: PathBuf) -> Ledger {
        Ledger {
            file,
            path,
            line: String::new(),
            synced: SYNCED_FILES.iter().map(|n| (*n, None)).collect(),
        }
    }

    /// Read the outcomes recorded in the ledger in `dir` without opening it for appending.
    pub fn read(dir: &Path, fingerprint: &str) -> Result<Outcomes, LedgerError> {
        read_ledger(&dir.join(LEDGER_FILE), fingerprint).map(|(o, _)| o)
    }

    /// Replace the ledger in `dir` with one holding exactly `outcomes`, atomically: a new file
    /// is written and synced, then renamed over the old one.
    pub fn rewrite(dir: &Path, fingerprint: &str, outcomes: &Outcomes) -> Result<(), LedgerError> {
        let path = dir.join(LEDGER_FILE);
        let tmp = dir.join(format!("{LEDGER_FILE}.new"));
        let io = |source| LedgerError::Io {
            path: tmp.clone(),
            source,
        };
        let mut text = format!("{MAGIC} {fingerprint}\n");
        for (set, prefix) in [(&outcomes.done, ""), (&outcomes.bad, BAD_PREFIX)] {
            for (s, e) in set.ranges() {
                push_range(&mut text, prefix, s, e);
            }
        }
        let mut file = File::create(&tmp).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(|source| LedgerError::Io {
            path: path.clone(),
            source,
        })?;
        sync_dir(dir);
        Ok(())
    }

    /// Open the ledger in `dir` for resuming; returns it with every index that already has an
    /// outcome (done or bad; see [`Ledger::read`] to tell them apart).
    pub fn resume(dir: &Path, fingerprint: &str) -> Result<(Ledger, RangeSet), LedgerError> {
        let path = dir.join(LEDGER_FILE);
        let (outcomes, valid_len) = read_ledger(&path, fingerprint)?;
        let io = |source| LedgerError::Io {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new().write(true).open(&path).map_err(io)?;
        // Cut a torn tail so that appends start on a fresh line.
        file.set_len(valid_len).map_err(io)?;
        let mut ledger = Ledger::with_file(file, path.clone());
        use std::io::Seek;
        ledger
            .file
            .seek(std::io::SeekFrom::End(0))
            .map_err(|source| LedgerError::Io { path, source })?;
        Ok((ledger, outcomes.recorded()))
    }

    /// Append the given indices (any order) as done, in one write (see [`Ledger::append_outcomes`]).
    pub fn append(&mut self, indices: &mut [u64]) -> Result<(), LedgerError> {
        let mut batch: Vec<(u64, bool)> = indices.iter().map(|&i| (i, false)).collect();
        self.append_outcomes(&mut batch)
    }

    /// Append outcomes `(index, bad)` (any order) as compact ranges, in one write. First the
    /// result files in the directory are synced, then the lines are written and the ledger is
    /// synced (see the module docs for this durability policy).
    pub fn append_outcomes(&mut self, batch: &mut [(u64, bool)]) -> Result<(), LedgerError> {
        if batch.is_empty() {
            return Ok(());
        }
        batch.sort_unstable_by_key(|&(i, bad)| (bad, i));
        self.line.clear();
        for bad in [false, true] {
            let prefix = if bad { BAD_PREFIX } else { "" };
            let mut it = batch.iter().filter(|o| o.1 == bad).map(|o| o.0).peekable();
            while let Some(start) = it.next() {
                let mut end = start;
                while let Some(&next) = it.peek() {
                    if next > end.saturating_add(1) {
                        break;
                    }
                    end = end.max(next);
                    it.next();
                }
                push_range(&mut self.line, prefix, start, end);
            }
        }
        self.sync_result_files()?;
        let io = |source| LedgerError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(self.line.as_bytes()).map_err(io)?;
        self.file.sync_data().map_err(io)
    }

    /// Sync the result files next to the ledger, so that no ledger line can reach the disk
    /// before the rows it vouches for.
    fn sync_result_files(&mut self) -> Result<(), LedgerError> {
        let Some(dir) = self.path.parent().map(Path::to_path_buf) else {
            return Ok(());
        };
        for (name, file) in &mut self.synced {
            let path = dir.join(*name);
            if file.is_none() {
                // Files not there (handlers not in use) are skipped; they are looked for again
                // at the next append.
                *file = File::open(&path).ok();
            }
            if let Some(f) = file {
                f.sync_data()
                    .map_err(|source| LedgerError::Io { path, source })?;
            }
        }
        Ok(())
    }

    /// Flush to stable storage.
    pub fn sync(&mut self) -> Result<(), LedgerError> {
        self.file.sync_data().map_err(|source| LedgerError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

fn push_range(out: &mut String, prefix: &str, start: u64, end: u64) {
    use std::fmt::Write as _;
    let _ = if start == end {
        writeln!(out, "{prefix}{start}")
    } else {
        writeln!(out, "{prefix}{start}-{end}")
    };
}

/// Sync a directory so that a file created or renamed in it survives a power loss (best
/// effort: not every file system allows opening a directory).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Read and check the ledger at `path`; returns the outcomes and the length of the valid part
/// (without a torn last line).
fn read_ledger(path: &Path, fingerprint: &str) -> Result<(Outcomes, u64), LedgerError> {
    let path = path.to_path_buf();
    let io = |source| LedgerError::Io {
        path: path.clone(),
        source,
    };
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(LedgerError::Missing { path })
        }
        Err(e) => return Err(io(e)),
    };
    let mut reader = BufReader::new(file);
    let mut out = Outcomes::default();
    let mut buf = String::new();
    let mut line_no = 0;
    let mut valid_len: u64 = 0;
    loop {
        buf.clear();
        let n = reader.read_line(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let complete = buf.ends_with('\n');
        let text = buf.trim_end_matches('\n');
        if line_no == 1 {
            let found = text
                .strip_prefix(MAGIC_PREFIX)
                .and_then(|rest| rest.split_once(' '))
                .filter(|(version, _)| *version == "1" || *version == "2")
                .map(|(_, fp)| fp.trim());
            match found {
                Some(f) if f == fingerprint && complete => {}
                Some(f) if complete => {
                    return Err(LedgerError::Mismatch {
                        path,
                        found: f.to_owned(),
                        expected: fingerprint.to_owned(),
                    })
                }
                _ => {
                    return Err(LedgerError::Corrupt {
                        path,
                        line: 1,
                        text: text.to_owned(),
                    })
                }
            }
        } else {
            let (set, range) = match text.strip_prefix(BAD_PREFIX) {
                Some(rest) => (&mut out.bad, parse_range(rest)),
                None => (&mut out.done, parse_range(text)),
            };
            match (range, complete) {
                (Some((s, e)), true) => {
                    set.insert_range(s, e);
                }
                // A torn last line: written partly before a crash. Drop it.
                (_, false) => break,
                (None, true) => {
                    return Err(LedgerError::Corrupt {
                        path,
                        line: line_no,
                        text: text.to_owned(),
                    })
                }
            }
        }
        valid_len += n as u64;
    }
    Ok((out, valid_len))
}

fn parse_range(text: &str) -> Option<(u64, u64)> {
    match text.split_once('-') {
        Some((a, b)) => {
            let (s, e) = (a.parse().ok()?, b.parse().ok()?);
            (s <= e).then_some((s, e))
        }
        None => text.parse().ok().map(|i| (i, i)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_are_kept_apart_and_v1_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let fp = fingerprint(&["s"]);
        let mut l = Ledger::create(dir.path(), &fp).unwrap();
        l.append_outcomes(&mut [(5, true), (1, false), (2, false), (6, true), (9, true)])
            .unwrap();
        drop(l);
        let text = std::fs::read_to_string(dir.path().join(LEDGER_FILE)).unwrap();
        assert_eq!(text, format!("{MAGIC} {fp}\n1-2\nb 5-6\nb 9\n"));
        let o = Ledger::read(dir.path(), &fp).unwrap();
        assert_eq!(o.done.ranges().collect::<Vec<_>>(), vec![(1, 2)]);
        assert_eq!(o.bad.ranges().collect::<Vec<_>>(), vec![(5, 6), (9, 9)]);
        let (_, all) = Ledger::resume(dir.path(), &fp).unwrap();
        assert_eq!(all.count(), 5);
        // Rewrite without the bad ones.
        let kept = Outcomes {
            done: o.done.clone(),
            bad: RangeSet::default(),
        };
        Ledger::rewrite(dir.path(), &fp, &kept).unwrap();
        assert_eq!(Ledger::read(dir.path(), &fp).unwrap(), kept);
        assert!(!dir.path().join("ledger.new").exists());
        // A version 1 ledger: every outcome counts as done.
        std::fs::write(
            dir.path().join(LEDGER_FILE),
            format!("taskdist-ledger 1 {fp}\n0-3\n7\n"),
        )
        .unwrap();
        let o = Ledger::read(dir.path(), &fp).unwrap();
        assert_eq!(o.done.count(), 5);
        assert_eq!(o.bad.count(), 0);
    }

    #[test]
    fn create_append_resume() {
        let dir = tempfile::tempdir().unwrap();
        let fp = fingerprint(&["spec", "1"]);
        let mut l = Ledger::create(dir.path(), &fp).unwrap();
        l.append(&mut [3, 1, 2, 7]).unwrap();
        l.append(&mut [4]).unwrap();
        drop(l);
        assert!(matches!(
            Ledger::create(dir.path(), &fp),
            Err(LedgerError::Exists { .. })
        ));
        let text = std::fs::read_to_string(dir.path().join(LEDGER_FILE)).unwrap();
        assert_eq!(text, format!("{MAGIC} {fp}\n1-3\n7\n4\n"));
        let (_, done) = Ledger::resume(dir.path(), &fp).unwrap();
        assert_eq!(done.ranges().collect::<Vec<_>>(), vec![(1, 4), (7, 7)]);
    }

    #[test]
    fn torn_tail_is_dropped_and_cut() {
        let dir = tempfile::tempdir().unwrap();
        let fp = fingerprint(&["x"]);
        let path = dir.path().join(LEDGER_FILE);
        std::fs::write(&path, format!("{MAGIC} {fp}\n0-9\n12-1")).unwrap();
        let (mut l, done) = Ledger::resume(dir.path(), &fp).unwrap();
        assert_eq!(done.count(), 10);
        l.append(&mut [10]).unwrap();
        drop(l);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{MAGIC} {fp}\n0-9\n10\n"));
    }

    #[test]
    fn mismatch_and_corrupt_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        Ledger::create(dir.path(), "aaaa").unwrap();
        let err = Ledger::resume(dir.path(), "bbbb").unwrap_err();
        assert!(err.to_string().contains("different spec"), "{err}");
        std::fs::write(dir.path().join(LEDGER_FILE), format!("{MAGIC} aaaa\nxyz\n")).unwrap();
        let err = Ledger::resume(dir.path(), "aaaa").unwrap_err();
        assert!(matches!(err, LedgerError::Corrupt { line: 2, .. }), "{err}");
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            Ledger::resume(empty.path(), "aaaa"),
            Err(LedgerError::Missing { .. })
        ));
    }
}
