//! A result directory: the files of one run (result files, resume ledger, metrics), owned by
//! one process at a time.
//!
//! [`ResultDir::create`] starts a new run in a directory and [`ResultDir::resume`] continues
//! the run recorded there; both take an exclusive lock for as long as the `ResultDir` (or a
//! distributor built with [`DistributorBuilder::result_dir`]) lives. A resume checks that the
//! directory holds a run of the same spec, seed and shard, reads the ledger and repairs every
//! result file so that it holds exactly the rows of the variants the ledger records.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use taskdist::distributor::{Distributor, Selection, Workload};
//! use taskdist::tasksets::Spec;
//! use taskdist::{HandlerKind, ResultDir, ResumeOptions};
//!
//! let workload = Workload::new(Spec::load("hey-priorities")?);
//! let selection = Selection { limit: Some(100), shard: None };
//! let mut dir = if std::path::Path::new("results/ledger").exists() {
//!     ResultDir::resume("results", &workload, selection, ResumeOptions::default())?
//! } else {
//!     ResultDir::create("results", &workload, selection)?
//! };
//! let mut d = Distributor::builder()
//!     .hosts(["127.0.0.2"])?
//!     .selection(selection)
//!     .result_dir(&mut dir, &[HandlerKind::Csv])?
//!     .build()?;
//! d.start(workload).await?;
//! d.wait().await?;
//! let metrics = d.metrics();
//! d.close().await?;
//! dir.write_metrics(&metrics)?;
//! # Ok(()) }
//! ```

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use taskdist_handlers::{
    ConsoleHandler, CsvHandler, EventHandler, HandlerError, JsonlHandler, SqliteHandler,
    EVENTS_FILE, JOBS_FILE, JSONL_FILE, SQLITE_FILE, TASKS_FILE, VARIANTS_FILE,
};

use crate::distributor::{
    run_fingerprint, DistributorBuilder, Ledger, LedgerError, MetricsSnapshot, Outcomes, Selection,
    Workload, LEDGER_FILE,
};

/// File name of the lock file inside a result directory.
pub const LOCK_FILE: &str = "lock";
/// File name of the metrics written at the end of a run.
pub const METRICS_FILE: &str = "metrics.json";
/// File name of the run description the CSV handler writes.
const RUN_FILE: &str = "run.json";

/// Files whose presence means a directory holds a run.
const RESULT_FILES: &[&str] = &[
    LEDGER_FILE,
    EVENTS_FILE,
    VARIANTS_FILE,
    JOBS_FILE,
    TASKS_FILE,
    JSONL_FILE,
    SQLITE_FILE,
];

/// Result handlers a [`ResultDir`] can set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandlerKind {
    /// `events.csv`, `jobs.csv`, `variants.csv`, `tasks.csv` and `run.json`.
    Csv,
    /// `results.jsonl`: one JSON object per variant.
    Jsonl,
    /// `results.sqlite`.
    Sqlite,
    /// A summary on standard error at the end (no file).
    Console,
}

impl HandlerKind {
    /// The files this handler writes in the directory (SQLite's journal files included).
    fn files(self) -> &'static [&'static str] {
        match self {
            HandlerKind::Csv => &[EVENTS_FILE, JOBS_FILE, VARIANTS_FILE, TASKS_FILE, RUN_FILE],
            HandlerKind::Jsonl => &[JSONL_FILE],
            HandlerKind::Sqlite => &[
                SQLITE_FILE,
                "results.sqlite-wal",
                "results.sqlite-shm",
                "results.sqlite-journal",
            ],
            HandlerKind::Console => &[],
        }
    }
}

/// Options of [`ResultDir::resume`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResumeOptions {
    /// Run the variants recorded as bad again: they are removed from the ledger (atomically)
    /// and their rows from the result files, so each ends with exactly one outcome.
    pub retry_bad: bool,
}

impl ResumeOptions {
    /// Resume and run the bad variants again.
    pub fn retry_bad() -> Self {
        ResumeOptions { retry_bad: true }
    }
}

/// Result-directory failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResultDirError {
    /// Another process holds the directory's lock.
    #[error("{} is in use by {holder}; wait for that run to end or use another directory", path.display())]
    Locked {
        /// The directory.
        path: PathBuf,
        /// Who holds it: `pid N on HOST since T`, as far as known.
        holder: String,
    },
    /// A new run would overwrite results of an earlier one.
    #[error(
        "{} already holds results of an earlier run ({} exists): choose another directory, \
         or continue that run with --resume {}",
        path.display(), found.display(), path.display()
    )]
    Exists {
        /// The directory.
        path: PathBuf,
        /// The result file found.
        found: PathBuf,
    },
    /// Nothing to resume: the directory does not exist.
    #[error("{} does not exist: nothing to resume", path.display())]
    Missing {
        /// The directory.
        path: PathBuf,
    },
    /// File or directory I/O failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The ledger could not be created, read or rewritten.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A result file could not be created or repaired.
    #[error(transparent)]
    Handler(#[from] HandlerError),
}

impl ResultDirError {
    fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ResultDirError::Io {
            path: path.into(),
            source,
        }
    }
}

/// The exclusive lock of a result directory (an `flock` on `DIR/lock`), released when the
/// last holder drops it.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Take the lock of `dir` or report who holds it. Returns the lock and whether the lock
    /// file was created by this call.
    pub(crate) fn acquire(dir: &Path) -> Result<(DirLock, bool), ResultDirError> {
        let path = dir.join(LOCK_FILE);
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| ResultDirError::io(&path, e))?;
        try_lock(&file).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                ResultDirError::Locked {
                    path: dir.to_path_buf(),
                    holder: describe_holder(&text),
                }
            } else {
                ResultDirError::io(&path, e)
            }
        })?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let record = format!(
            "pid {}\nhost {}\nsince {}\n",
            std::process::id(),
            hostname(),
            utc(now)
        );
        let written = file
            .set_len(0)
            .and_then(|()| file.write_all(record.as_bytes()));
        written.map_err(|e| ResultDirError::io(&path, e))?;
        Ok((DirLock { _file: file }, !existed))
    }
}

#[cfg(unix)]
fn try_lock(file: &File) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a descriptor this `File` owns; no memory is passed.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(unix))]
fn try_lock(_file: &File) -> std::io::Result<()> {
    Ok(())
}

/// `pid N on HOST since T` from the lock file's text.
fn describe_holder(text: &str) -> String {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
    };
    match (field("pid "), field("host "), field("since ")) {
        (Some(pid), Some(host), Some(since)) => format!("pid {pid} on {host} since {since}"),
        _ => "another process".to_owned(),
    }
}

fn hostname() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
        let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if r == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            let name = String::from_utf8_lossy(&buf[..end]).into_owned();
            if !name.is_empty() {
                return name;
            }
        }
    }
    "unknown host".to_owned()
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch.
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Keeps the directory lock alive while the distributor's handlers live.
struct LockKeeper(#[allow(dead_code)] Arc<DirLock>);

#[async_trait]
impl EventHandler for LockKeeper {}

/// What a new run created, so that a failed start can remove it again.
#[derive(Debug, Default)]
struct Created {
    /// Directories created (deepest first).
    dirs: Vec<PathBuf>,
    /// Files created.
    files: Vec<PathBuf>,
}

/// A result directory: the files of one run (result files, resume ledger, metrics), owned by
/// one process at a time.
///
/// [`ResultDir::create`] starts a new run in a directory and [`ResultDir::resume`] continues
/// the run recorded there; both take an exclusive lock for as long as the `ResultDir` (or a
/// distributor built with [`DistributorBuilder::result_dir`]) lives. A resume checks that the
/// directory holds a run of the same spec, seed and shard, reads the ledger and repairs every
/// result file so that it holds exactly the rows of the variants the ledger records.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use taskdist::distributor::{Distributor, Selection, Workload};
/// use taskdist::tasksets::Spec;
/// use taskdist::{HandlerKind, ResultDir, ResumeOptions};
///
/// let workload = Workload::new(Spec::load("hey-priorities")?);
/// let selection = Selection { limit: Some(100), shard: None };
/// let mut dir = if std::path::Path::new("results/ledger").exists() {
///     ResultDir::resume("results", &workload, selection, ResumeOptions::default())?
/// } else {
///     ResultDir::create("results", &workload, selection)?
/// };
/// let mut d = Distributor::builder()
///     .hosts(["127.0.0.2"])?
///     .selection(selection)
///     .result_dir(&mut dir, &[HandlerKind::Csv])?
///     .build()?;
/// d.start(workload).await?;
/// d.wait().await?;
/// let metrics = d.metrics();
/// d.close().await?;
/// dir.write_metrics(&metrics)?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ResultDir {
    path: PathBuf,
    fingerprint: String,
    selection: Selection,
    variant_count: Option<u64>,
    outcomes: Outcomes,
    resumed: bool,
    /// `Some` for a new run until it is known to have started.
    created: Option<Created>,
    lock: Arc<DirLock>,
}

impl ResultDir {
    /// Start a new run of `workload` (with `selection`) in `path`: create the directory if
    /// needed, lock it, refuse it if it holds results of an earlier run, and write an empty
    /// ledger. If any step fails, what this call created is removed again.
    pub fn create(
        path: impl AsRef<Path>,
        workload: &Workload,
        selection: Selection,
    ) -> Result<ResultDir, ResultDirError> {
        let path = path.as_ref().to_path_buf();
        let mut created = Created::default();
        // The directories that do not exist yet, deepest first.
        let mut missing = Vec::new();
        for a in path.ancestors() {
            if a.as_os_str().is_empty() || a.exists() {
                break;
            }
            missing.push(a.to_path_buf());
        }
        std::fs::create_dir_all(&path).map_err(|e| ResultDirError::io(&path, e))?;
        created.dirs = missing;
        let fingerprint = run_fingerprint(workload, selection);
        let result = (|| {
            let (lock, new_lock) = DirLock::acquire(&path)?;
            if new_lock {
                created.files.push(path.join(LOCK_FILE));
            }
            if let Some(found) = RESULT_FILES
                .iter()
                .map(|n| path.join(n))
                .find(|p| p.exists())
            {
                return Err(ResultDirError::Exists {
                    path: path.clone(),
                    found,
                });
            }
            Ledger::create(&path, &fingerprint)?;
            created.files.push(path.join(LEDGER_FILE));
            Ok(lock)
        })();
        match result {
            Ok(lock) => Ok(ResultDir {
                path,
                fingerprint,
                selection,
                variant_count: workload.source.variant_count(),
                outcomes: Outcomes::default(),
                resumed: false,
                created: Some(created),
                lock: Arc::new(lock),
            }),
            Err(e) => {
                remove_created(&created);
                Err(e)
            }
        }
    }

    /// Continue the run in `path`: lock it, check that it is a run of the same spec, seed and
    /// shard, and read its ledger. With [`ResumeOptions::retry_bad`] the bad variants are
    /// taken out of the ledger (a new ledger is written and renamed over the old one), so
    /// they run again.
    pub fn resume(
        path: impl AsRef<Path>,
        workload: &Workload,
        selection: Selection,
        options: ResumeOptions,
    ) -> Result<ResultDir, ResultDirError> {
        let path = path.as_ref().to_path_buf();
        if !path.is_dir() {
            return Err(ResultDirError::Missing { path });
        }
        let fingerprint = run_fingerprint(workload, selection);
        let (lock, _) = DirLock::acquire(&path)?;
        let mut outcomes = Ledger::read(&path, &fingerprint)?;
        if options.retry_bad && outcomes.bad.count() > 0 {
            tracing::info!(
                bad = outcomes.bad.count(),
                "bad variants are run again: removed from the ledger"
            );
            outcomes.bad = Default::default();
            Ledger::rewrite(&path, &fingerprint, &outcomes)?;
        }
        Ok(ResultDir {
            path,
            fingerprint,
            selection,
            variant_count: workload.source.variant_count(),
            outcomes,
            resumed: true,
            created: None,
            lock: Arc::new(lock),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this continues an earlier run.
    pub fn is_resumed(&self) -> bool {
        self.resumed
    }

    /// The run's fingerprint (spec text, seed, shard, admission data).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The outcomes recorded when the directory was opened.
    pub fn outcomes(&self) -> &Outcomes {
        &self.outcomes
    }

    /// The first selected variant without an outcome, if any: `None` means there is nothing
    /// left to do. Compares indices, not counts.
    pub fn first_missing(&self) -> Option<u64> {
        let (k, n) = self.selection.shard.unwrap_or((0, 1));
        let last = match self.selection.planned(self.variant_count) {
            Some(0) => return None,
            Some(p) => (p - 1).checked_mul(n).and_then(|x| x.checked_add(k)),
            None => None,
        }
        .unwrap_or(u64::MAX);
        let mut c = k;
        for (s, e) in self.outcomes.recorded().ranges() {
            if e < c {
                continue;
            }
            if s > c {
                break;
            }
            // c is inside [s, e]: the next index of the shard after e.
            c = align_up(e.checked_add(1)?, k, n)?;
            if c > last {
                return None;
            }
        }
        (c <= last).then_some(c)
    }

    /// Whether any selected variant is recorded as bad.
    pub fn has_bad(&self) -> bool {
        let (k, n) = self.selection.shard.unwrap_or((0, 1));
        let last = self
            .selection
            .planned(self.variant_count)
            .and_then(|p| p.checked_sub(1))
            .map(|p| p.saturating_mul(n).saturating_add(k));
        if self.selection.planned(self.variant_count) == Some(0) {
            return false;
        }
        self.outcomes.bad.ranges().any(|(s, e)| {
            align_up(s, k, n).is_some_and(|first| first <= e && last.is_none_or(|l| first <= l))
        })
    }

    /// The handlers of `kinds` for this directory (each kind once): created for a new run;
    /// for a resumed run reopened and repaired, so that each result file holds exactly the
    /// rows of the variants the ledger records.
    pub fn handlers(
        &mut self,
        kinds: &[HandlerKind],
    ) -> Result<Vec<Box<dyn EventHandler>>, ResultDirError> {
        let mut seen: Vec<HandlerKind> = Vec::new();
        let mut out: Vec<Box<dyn EventHandler>> = Vec::new();
        let recorded = self.outcomes.recorded();
        let is_done = |i: u64| recorded.contains(i);
        let dir = &self.path;
        for &kind in kinds {
            if seen.contains(&kind) {
                continue;
            }
            seen.push(kind);
            if let Some(created) = &mut self.created {
                for f in kind.files() {
                    let p = dir.join(f);
                    if !p.exists() {
                        created.files.push(p);
                    }
                }
            }
            let h: Box<dyn EventHandler> = match (kind, self.resumed) {
                (HandlerKind::Csv, false) => Box::new(CsvHandler::create(dir)?),
                (HandlerKind::Csv, true) => Box::new(CsvHandler::resume(dir, &is_done)?),
                (HandlerKind::Jsonl, false) => {
                    Box::new(JsonlHandler::create(dir.join(JSONL_FILE))?)
                }
                (HandlerKind::Jsonl, true) => {
                    Box::new(JsonlHandler::resume(dir.join(JSONL_FILE), &is_done)?)
                }
                (HandlerKind::Sqlite, false) => {
                    Box::new(SqliteHandler::create(dir.join(SQLITE_FILE))?)
                }
                (HandlerKind::Sqlite, true) => {
                    Box::new(SqliteHandler::resume(dir.join(SQLITE_FILE), &is_done)?)
                }
                (HandlerKind::Console, _) => Box::new(ConsoleHandler::stderr()),
            };
            out.push(h);
        }
        Ok(out)
    }

    /// The run has started: a later failure no longer removes the directory's files.
    pub fn keep(&mut self) {
        self.created = None;
    }

    /// Give up a start that failed before the run began: for a new run, remove every file
    /// and directory this start created (the directory is left as it was); for a resumed run,
    /// only release the lock.
    pub fn abandon(self) {
        if let Some(created) = &self.created {
            remove_created(created);
        }
    }

    /// Write `metrics.json` (pretty JSON of `snapshot`).
    pub fn write_metrics(&self, snapshot: &MetricsSnapshot) -> Result<(), ResultDirError> {
        let path = self.path.join(METRICS_FILE);
        let json = serde_json::to_string_pretty(snapshot)
            .map_err(|e| ResultDirError::io(&path, std::io::Error::other(e)))?;
        std::fs::write(&path, json + "\n").map_err(|e| ResultDirError::io(&path, e))
    }
}

/// The smallest index `>= x` with `index % n == k` (None on overflow).
fn align_up(x: u64, k: u64, n: u64) -> Option<u64> {
    let n128 = u128::from(n.max(1));
    let add = (u128::from(k) + n128 - u128::from(x) % n128) % n128;
    x.checked_add(u64::try_from(add).ok()?)
}

/// Remove files, the lock file last (while it exists no other process can take the
/// directory and open the files being removed), then the directories (deepest first; only
/// if empty).
fn remove_created(created: &Created) {
    let is_lock = |f: &&PathBuf| f.file_name().is_some_and(|n| n == LOCK_FILE);
    for f in created.files.iter().filter(|f| !is_lock(f)) {
        let _ = std::fs::remove_file(f);
    }
    for f in created.files.iter().filter(is_lock) {
        let _ = std::fs::remove_file(f);
    }
    for d in &created.dirs {
        let _ = std::fs::remove_dir(d);
    }
}

impl DistributorBuilder {
    /// Write the run's results to `dir`: the handlers of `kinds` (created, or repaired on a
    /// resume; see [`ResultDir::handlers`]) and the directory's ledger. The directory stays
    /// locked until the distributor is closed, even if `dir` is dropped earlier.
    pub fn result_dir(
        self,
        dir: &mut ResultDir,
        kinds: &[HandlerKind],
    ) -> Result<DistributorBuilder, ResultDirError> {
        let (ledger, handlers) = dir.attach(kinds)?;
        let mut b = self.ledger(ledger, true);
        for h in handlers {
            b = b.boxed_handler(h);
        }
        Ok(b)
    }
}

impl ResultDir {
    /// The ledger directory and the handlers of `kinds` for a run writing here; the last
    /// handler keeps the directory locked until the run's handlers are closed.
    pub(crate) fn attach(
        &mut self,
        kinds: &[HandlerKind],
    ) -> Result<(PathBuf, Vec<Box<dyn EventHandler>>), ResultDirError> {
        let mut handlers = self.handlers(kinds)?;
        handlers.push(Box::new(LockKeeper(self.lock.clone())));
        Ok((self.path.clone(), handlers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn holder_is_described() {
        assert_eq!(
            describe_holder("pid 7\nhost box\nsince 2023-11-14T22:13:20Z\n"),
            "pid 7 on box since 2023-11-14T22:13:20Z"
        );
        assert_eq!(describe_holder(""), "another process");
    }

    fn workload() -> Workload {
        Workload::new(crate::tasksets::Spec::load("hey-priorities").unwrap())
    }

    #[test]
    fn second_open_is_refused_naming_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let w = workload();
        let sel = Selection::default();
        let first = ResultDir::create(&dir, &w, sel).unwrap();
        let err = ResultDir::resume(&dir, &w, sel, ResumeOptions::default()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ResultDirError::Locked { .. }), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())) && msg.contains(" since "),
            "{msg}"
        );
        drop(first);
        ResultDir::resume(&dir, &w, sel, ResumeOptions::default()).unwrap();
    }

    #[test]
    fn abandon_leaves_the_directory_as_it_was() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        let w = workload();
        let mut d = ResultDir::create(&dir, &w, Selection::default()).unwrap();
        d.handlers(&[HandlerKind::Csv, HandlerKind::Jsonl]).unwrap();
        d.abandon();
        assert!(!tmp.path().join("a").exists());
        // An existing directory with a file of the user's stays, with only that file.
        std::fs::create_dir(tmp.path().join("c")).unwrap();
        std::fs::write(tmp.path().join("c/notes"), "x").unwrap();
        let d = ResultDir::create(tmp.path().join("c"), &w, Selection::default()).unwrap();
        d.abandon();
        let names: Vec<_> = std::fs::read_dir(tmp.path().join("c"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("notes")]);
    }

    #[test]
    fn first_missing_compares_indices_not_counts() {
        let tmp = tempfile::tempdir().unwrap();
        let w = workload();
        let sel = Selection {
            limit: Some(12),
            shard: None,
        };
        let d = ResultDir::create(tmp.path(), &w, sel).unwrap();
        let fp = d.fingerprint().to_owned();
        drop(d);
        // 12 outcomes, but index 10 is missing (13 was done instead).
        let mut l = Ledger::resume(tmp.path(), &fp).unwrap().0;
        l.append_outcomes(
            &mut (0..10)
                .chain([11, 12, 13])
                .map(|i| (i, i == 3))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        drop(l);
        let d = ResultDir::resume(tmp.path(), &w, sel, ResumeOptions::default()).unwrap();
        assert_eq!(d.outcomes().count(), 13);
        assert_eq!(d.first_missing(), Some(10));
        assert!(d.has_bad());
        drop(d);
        // Shard 1/2 with limit 5 selects 1, 3, 5, 7, 9: all recorded.
        let sharded = Selection {
            limit: Some(5),
            shard: Some((1, 2)),
        };
        let w2 = workload();
        let fp2 = run_fingerprint(&w2, sharded);
        let tmp2 = tempfile::tempdir().unwrap();
        let mut l = Ledger::create(tmp2.path(), &fp2).unwrap();
        l.append(&mut [1, 3, 5, 7, 9]).unwrap();
        drop(l);
        let d = ResultDir::resume(tmp2.path(), &w2, sharded, ResumeOptions::default()).unwrap();
        assert_eq!(d.first_missing(), None);
        assert!(!d.has_bad());
    }
}
