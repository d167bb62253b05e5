//! `run.json`: what a result directory was produced by.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::event::{RunInfo, RunSummary};
use crate::handler::HandlerError;
use crate::rows::unix_us;

/// Name of the run description in a CSV result directory.
pub const RUN_FILE: &str = "run.json";

/// The content of `run.json` (also the `run` record of the JSON Lines file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFile {
    /// taskdist's version.
    pub tool_version: String,
    /// Name of the spec (catalog name or file path).
    pub spec_name: String,
    /// The spec's full text.
    pub spec_text: String,
    /// Seed of the random draws.
    pub seed: u64,
    /// Variants in the space; `null` for an unbounded space.
    pub total_variants: Option<u128>,
    /// Variants this run processes (after limit and shard); `null` if unbounded.
    pub planned_variants: Option<u64>,
    /// Protocol dialect.
    pub dialect: String,
    /// Command line.
    pub command: Vec<String>,
    /// Start of this run (or of this resumed part of it), Unix µs.
    pub started_at_unix_us: u64,
    /// Start of the first run that wrote this directory, Unix µs (equal to
    /// `started_at_unix_us` unless resumed).
    pub first_started_at_unix_us: u64,
    /// How many times this directory was resumed.
    pub resumed: u32,
    /// End of the run, Unix µs; `null` while running (or if the run was killed).
    pub finished_at_unix_us: Option<u64>,
    /// The run's summary; `null` while running. After a resume it covers the resumed part.
    pub summary: Option<RunSummary>,
}

impl RunFile {
    /// The description of a run that starts now; `previous` is the `run.json` found when
    /// resuming, if any.
    pub fn new(run: &RunInfo, previous: Option<&RunFile>, resuming: bool) -> Self {
        let started = unix_us(run.started_at);
        RunFile {
            tool_version: run.tool_version.clone(),
            spec_name: run.spec_name.clone(),
            spec_text: run.spec_text.clone(),
            seed: run.seed,
            total_variants: run.total_variants,
            planned_variants: run.planned_variants,
            dialect: run.dialect.clone(),
            command: run.command.clone(),
            started_at_unix_us: started,
            first_started_at_unix_us: previous.map_or(started, |p| p.first_started_at_unix_us),
            resumed: match (resuming, previous) {
                (false, _) => 0,
                (true, Some(p)) => p.resumed.saturating_add(1),
                (true, None) => 1,
            },
            finished_at_unix_us: None,
            summary: None,
        }
    }

    /// Read a `run.json`.
    pub fn read(path: &Path) -> Result<Self, HandlerError> {
        let text = fs::read(path).map_err(|e| HandlerError::io(path, e))?;
        serde_json::from_slice(&text).map_err(|e| HandlerError::Format {
            path: path.to_owned(),
            line: e.line() as u64,
            reason: format!("not a taskdist run description: {e}"),
        })
    }

    /// Write to `path` atomically (temporary file, then rename).
    pub fn write(&self, path: &Path) -> Result<(), HandlerError> {
        let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
        tmp_name.push(".tmp");
        let tmp = path.with_file_name(tmp_name);
        let mut text = serde_json::to_vec_pretty(self).map_err(HandlerError::json)?;
        text.push(b'\n');
        let mut f = fs::File::create(&tmp).map_err(|e| HandlerError::io(&tmp, e))?;
        f.write_all(&text).map_err(|e| HandlerError::io(&tmp, e))?;
        drop(f);
        fs::rename(&tmp, path).map_err(|e| HandlerError::io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn round_trip_with_u128_total() {
        let info = RunInfo {
            tool_version: "0.1.0".into(),
            spec_name: "hey".into(),
            spec_text: "a = 1\n".into(),
            seed: u64::MAX,
            total_variants: Some(u128::MAX),
            planned_variants: Some(10),
            dialect: "v3".into(),
            command: vec!["taskdist".into(), "run".into()],
            started_at: UNIX_EPOCH + Duration::from_micros(5),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RUN_FILE);
        let mut f = RunFile::new(&info, None, false);
        f.summary = Some(RunSummary {
            done: 3,
            ..RunSummary::default()
        });
        f.write(&path).unwrap();
        let back = RunFile::read(&path).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.total_variants, Some(u128::MAX));
        let resumed = RunFile::new(&info, Some(&back), true);
        assert_eq!(resumed.resumed, 1);
        assert_eq!(resumed.first_started_at_unix_us, 5);
    }
}
