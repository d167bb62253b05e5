//! Resume repair of line-based result files (CSV and JSON Lines).
//!
//! After a crash or `kill -9` a result file may end in a torn line and may hold rows of
//! variants whose completion the resume ledger did not record (they were written after the last
//! flush that the ledger saw). [`repair_file`] keeps exactly the rows of done variants: it scans
//! the file once, and only if something must go, writes the kept lines to a temporary file that
//! replaces the original by rename (the original stays intact until then, so a crash during
//! repair loses nothing). The unchanged prefix is copied in one call, which the kernel can do
//! without moving the bytes through user space.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::handler::HandlerError;

/// What a line is, as far as repair is concerned.
pub(crate) enum LineKey {
    /// A row of this variant: kept only if the variant is done.
    Variant(u64),
    /// A line that belongs to no variant (run information): always kept.
    Keep,
}

/// What [`repair_file`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RepairStats {
    /// Complete rows kept.
    pub kept: u64,
    /// Complete rows dropped because their variant is not done.
    pub dropped: u64,
    /// Whether a torn (unterminated) final line was dropped.
    pub torn: bool,
    /// Whether the file was missing or empty (or had only a torn header): the caller must
    /// write the header.
    pub needs_header: bool,
}

/// Keep only the lines of done variants in `path`, dropping a torn final line. `header` is the
/// expected first line without its newline (for CSV); `key` classifies each complete line
/// (without its newline) or returns `Err(reason)` for a line that is not a valid row.
pub(crate) fn repair_file(
    path: &Path,
    header: Option<&[u8]>,
    key: impl Fn(&[u8]) -> Result<LineKey, String>,
    is_done: &dyn Fn(u64) -> bool,
) -> Result<RepairStats, HandlerError> {
    let ioe = |e| HandlerError::io(path, e);
    let mut stats = RepairStats::default();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            stats.needs_header = header.is_some();
            return Ok(stats);
        }
        Err(e) => return Err(ioe(e)),
    };
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::with_capacity(256);
    let mut offset: u64 = 0;
    let mut line_no: u64 = 0;
    // Once a line must go, kept lines go to `out` (a temporary file).
    let mut out: Option<(PathBuf, BufWriter<File>)> = None;
    let mut last: Option<(u64, bool)> = None;

    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(ioe)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let start = offset;
        offset += n as u64;
        let complete = line.last() == Some(&b'\n');
        let keep = if !complete {
            stats.torn = true;
            false
        } else {
            let body = trim_newline(&line);
            if line_no == 1 && header.is_some() {
                if Some(body) != header {
                    return Err(HandlerError::Format {
                        path: path.to_owned(),
                        line: 1,
                        reason: format!(
                            "header {:?} differs from the expected {:?}: the file was written \
                             by another version or is not a taskdist result file",
                            String::from_utf8_lossy(body),
                            String::from_utf8_lossy(header.unwrap_or_default())
                        ),
                    });
                }
                true
            } else {
                match key(body) {
                    Ok(LineKey::Keep) => true,
                    Ok(LineKey::Variant(v)) => {
                        // Rows of one variant are adjacent: ask the ledger once per run of rows.
                        let keep = match last {
                            Some((lv, done)) if lv == v => done,
                            _ => {
                                let done = is_done(v);
                                last = Some((v, done));
                                done
                            }
                        };
                        if keep {
                            stats.kept += 1;
                        } else {
                            stats.dropped += 1;
                        }
                        keep
                    }
                    Err(reason) => {
                        return Err(HandlerError::Format {
                            path: path.to_owned(),
                            line: line_no,
                            reason,
                        })
                    }
                }
            }
        };
        match (&mut out, keep) {
            (Some((_, w)), true) => w.write_all(&line).map_err(ioe)?,
            (None, false) => out = Some(start_rewrite(path, start)?),
            _ => {}
        }
    }
    if offset == 0 || (line_no == 1 && stats.torn && header.is_some()) {
        stats.needs_header = header.is_some();
    }
    if let Some((tmp, w)) = out {
        let file = w
            .into_inner()
            .map_err(|e| HandlerError::io(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| HandlerError::io(&tmp, e))?;
        drop(file);
        fs::rename(&tmp, path).map_err(ioe)?;
        tracing::info!(
            path = %path.display(),
            kept = stats.kept,
            dropped = stats.dropped,
            torn = stats.torn,
            "repaired result file for resume"
        );
    }
    Ok(stats)
}

/// Check that `path`, if it exists and has a complete first line, starts with `header`;
/// changes nothing. Lets a caller refuse a foreign directory before repairing any file.
pub(crate) fn check_header(path: &Path, header: &[u8]) -> Result<(), HandlerError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(HandlerError::io(path, e)),
    };
    let mut first = Vec::new();
    BufReader::new(file)
        .take(64 * 1024)
        .read_until(b'\n', &mut first)
        .map_err(|e| HandlerError::io(path, e))?;
    if first.last() == Some(&b'\n') && trim_newline(&first) != header {
        return Err(HandlerError::Format {
            path: path.to_owned(),
            line: 1,
            reason: format!(
                "header {:?} differs from the expected {:?}: the file was written by another \
                 version or is not a taskdist result file",
                String::from_utf8_lossy(trim_newline(&first)),
                String::from_utf8_lossy(header)
            ),
        });
    }
    Ok(())
}

/// Create the temporary file and copy the first `prefix_len` bytes of `path` into it.
fn start_rewrite(path: &Path, prefix_len: u64) -> Result<(PathBuf, BufWriter<File>), HandlerError> {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".repair");
    let tmp = path.with_file_name(name);
    let mut dst = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| HandlerError::io(&tmp, e))?;
    let mut src = File::open(path).map_err(|e| HandlerError::io(path, e))?;
    src.seek(SeekFrom::Start(0))
        .map_err(|e| HandlerError::io(path, e))?;
    let copied =
        io::copy(&mut src.take(prefix_len), &mut dst).map_err(|e| HandlerError::io(&tmp, e))?;
    if copied != prefix_len {
        return Err(HandlerError::Format {
            path: path.to_owned(),
            line: 0,
            reason: format!("file shrank while being repaired ({copied} of {prefix_len} bytes)"),
        });
    }
    Ok((tmp, BufWriter::with_capacity(1 << 20, dst)))
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Parse a decimal u64 that makes up all of `bytes`.
pub(crate) fn parse_u64(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// Key of a CSV row: the variant index in the first column.
pub(crate) fn csv_key(line: &[u8]) -> Result<LineKey, String> {
    let first = line.split(|&b| b == b',').next().unwrap_or_default();
    parse_u64(first).map(LineKey::Variant).ok_or_else(|| {
        format!(
            "expected a variant index in the first column, found {:?}",
            String::from_utf8_lossy(first)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_u64_rejects_junk_and_overflow() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"1a"), None);
        assert_eq!(parse_u64(b"-1"), None);
    }

    #[test]
    fn repair_drops_not_done_and_torn_and_keeps_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        fs::write(&path, "h,x\n1,a\n2,b\n3,c\n4,d\n5,tor").unwrap();
        let stats = repair_file(&path, Some(b"h,x"), csv_key, &|v| v != 2 && v != 4).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "h,x\n1,a\n3,c\n");
        assert_eq!(
            stats,
            RepairStats {
                kept: 2,
                dropped: 2,
                torn: true,
                needs_header: false
            }
        );
        assert!(!dir.path().join("x.csv.repair").exists());
    }

    #[test]
    fn clean_file_is_not_rewritten_and_header_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        fs::write(&path, "h,x\n1,a\n").unwrap();
        let stats = repair_file(&path, Some(b"h,x"), csv_key, &|_| true).unwrap();
        assert_eq!(stats.kept, 1);
        assert!(!stats.torn && !stats.needs_header);
        let err = repair_file(&path, Some(b"h,y"), csv_key, &|_| true).unwrap_err();
        assert!(
            err.to_string().contains("differs from the expected"),
            "{err}"
        );
        fs::write(&path, "h,x\nzz,a\n").unwrap();
        let err = repair_file(&path, Some(b"h,x"), csv_key, &|_| true).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn missing_empty_and_torn_header_need_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        assert!(
            repair_file(&path, Some(b"h,x"), csv_key, &|_| true)
                .unwrap()
                .needs_header
        );
        fs::write(&path, "").unwrap();
        assert!(
            repair_file(&path, Some(b"h,x"), csv_key, &|_| true)
                .unwrap()
                .needs_header
        );
        fs::write(&path, "h,").unwrap();
        let stats = repair_file(&path, Some(b"h,x"), csv_key, &|_| true).unwrap();
        assert!(stats.needs_header && stats.torn);
        assert_eq!(fs::read_to_string(&path).unwrap(), "");
    }
}
