//! The resume ledger: which variant indices have an outcome (done or bad), kept compact as
//! ranges in a text file in the output directory.
//!
//! Format (`DIR/ledger`):
//! ```text
//! taskdist-ledger 1 <fingerprint>
//! 0-4095
//! 4097
//! ```
//! The first line names the format and a fingerprint of the spec text, seed and shard; every
//! further line is an inclusive range `start-end` or a single index, appended after the result
//! handlers have flushed the rows of those variants. A torn last line (no newline, as after
//! `kill -9`) is ignored.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use super::RangeSet;

/// File name of the ledger inside the output directory.
pub const LEDGER_FILE: &str = "ledger";
const MAGIC: &str = "taskdist-ledger 1";

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
    /// A line could not be read.
    #[error("{path}:{line}: expected `start-end` or an index, found {text:?}")]
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

/// An open ledger, appending outcomes.
#[derive(Debug)]
pub struct Ledger {
    file: File,
    path: PathBuf,
    line: String,
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
        Ok(Ledger {
            file,
            path,
            line: String::new(),
        })
    }

    /// Open the ledger in `dir` for resuming; returns it with the indices already done.
    pub fn resume(dir: &Path, fingerprint: &str) -> Result<(Ledger, RangeSet), LedgerError> {
        let path = dir.join(LEDGER_FILE);
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
        let mut done = RangeSet::default();
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
                let found = text.strip_prefix(MAGIC).map(str::trim);
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
                match (parse_range(text), complete) {
                    (Some((s, e)), true) => {
                        done.insert_range(s, e);
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
        let file = OpenOptions::new().write(true).open(&path).map_err(io)?;
        // Cut a torn tail so that appends start on a fresh line.
        file.set_len(valid_len).map_err(io)?;
        let mut ledger = Ledger {
            file,
            path: path.clone(),
            line: String::new(),
        };
        use std::io::Seek;
        ledger
            .file
            .seek(std::io::SeekFrom::End(0))
            .map_err(|source| LedgerError::Io { path, source })?;
        Ok((ledger, done))
    }

    /// Append the given indices (any order) as compact ranges, in one write.
    pub fn append(&mut self, indices: &mut [u64]) -> Result<(), LedgerError> {
        if indices.is_empty() {
            return Ok(());
        }
        indices.sort_unstable();
        self.line.clear();
        let mut i = 0;
        while i < indices.len() {
            let start = indices[i];
            let mut end = start;
            while i + 1 < indices.len() && indices[i + 1] <= end.saturating_add(1) {
                i += 1;
                end = end.max(indices[i]);
            }
            use std::fmt::Write as _;
            let _ = if start == end {
                writeln!(self.line, "{start}")
            } else {
                writeln!(self.line, "{start}-{end}")
            };
            i += 1;
        }
        self.file
            .write_all(self.line.as_bytes())
            .map_err(|source| LedgerError::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// Flush to stable storage.
    pub fn sync(&mut self) -> Result<(), LedgerError> {
        self.file.sync_data().map_err(|source| LedgerError::Io {
            path: self.path.clone(),
            source,
        })
    }
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
