//! The [`EventHandler`] trait.

use async_trait::async_trait;

use crate::event::{
    AttemptId, RunInfo, RunSummary, TimedEvent, VariantBad, VariantFinished, VariantStarted,
    VariantStopped,
};

/// The cause of a [`HandlerError`] that comes from a library the handlers use (CSV, JSON,
/// SQLite). Boxed, so that a new major version of such a library does not change this API.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A handler failed; the run stops rather than lose results.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// File or directory I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing CSV failed. The cause keeps the CSV library's message and `source()` chain;
    /// its type is not part of this API.
    #[error("CSV output: {0}")]
    Csv(#[source] BoxError),
    /// Writing JSON failed (cause as for [`HandlerError::Csv`]).
    #[error("JSON output: {0}")]
    Json(#[source] BoxError),
    /// SQLite failed (cause as for [`HandlerError::Csv`]).
    #[error("SQLite output: {0}")]
    Sqlite(#[source] BoxError),
    /// A result file exists and the handler was not told to overwrite or resume it.
    #[error("{path}: result file exists; choose another directory, overwrite it, or resume")]
    Exists {
        /// The existing file.
        path: std::path::PathBuf,
    },
    /// A file being read back or repaired does not have the expected format.
    #[error("{path}, line {line}: {reason}")]
    Format {
        /// The file.
        path: std::path::PathBuf,
        /// 1-based line number (0 when the whole file is concerned).
        line: u64,
        /// What was found and what was expected.
        reason: String,
    },
    /// Anything else a custom handler wants to report.
    #[error("{0}")]
    Other(String),
}

impl HandlerError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        HandlerError::Io {
            path: path.into(),
            source,
        }
    }

    /// A CSV error on `path`; I/O causes keep their path.
    pub(crate) fn csv(path: impl Into<std::path::PathBuf>, err: csv::Error) -> Self {
        let path = path.into();
        let msg = err.to_string();
        match err.into_kind() {
            csv::ErrorKind::Io(source) => HandlerError::Io { path, source },
            _ => HandlerError::Other(format!("{}: CSV error: {msg}", path.display())),
        }
    }

    /// A SQLite error.
    pub(crate) fn sqlite(err: rusqlite::Error) -> Self {
        HandlerError::Sqlite(Box::new(err))
    }

    /// A JSON error.
    pub(crate) fn json(err: serde_json::Error) -> Self {
        HandlerError::Json(Box::new(err))
    }
}

/// Receives what happens in a run. Every method has a default that does nothing, so a handler
/// implements only what it needs. Calls arrive in order; a slow handler slows the run
/// (back-pressure) instead of losing events.
///
/// The distributor drives each handler on a dedicated thread with a current-thread Tokio
/// runtime, so a handler may do blocking file or database I/O in these methods without
/// stalling the sessions, and may still `.await` (timers, network clients).
#[async_trait]
pub trait EventHandler: Send {
    /// A run begins.
    async fn run_started(&mut self, _run: &RunInfo) -> Result<(), HandlerError> {
        Ok(())
    }
    /// An attempt at a variant begins.
    async fn taskset_started(&mut self, _v: &VariantStarted) -> Result<(), HandlerError> {
        Ok(())
    }
    /// Live events of a running attempt (monitoring only: the attempt may still fail).
    async fn events(
        &mut self,
        _id: &AttemptId,
        _events: &[TimedEvent],
    ) -> Result<(), HandlerError> {
        Ok(())
    }
    /// An attempt finished: the variant's result. Called exactly once per done variant.
    async fn taskset_finished(&mut self, _v: &VariantFinished) -> Result<(), HandlerError> {
        Ok(())
    }
    /// An attempt stopped or failed; the variant was requeued.
    async fn taskset_stopped(&mut self, _v: &VariantStopped) -> Result<(), HandlerError> {
        Ok(())
    }
    /// A variant is given up as bad. Called exactly once per bad variant.
    async fn taskset_bad(&mut self, _v: &VariantBad) -> Result<(), HandlerError> {
        Ok(())
    }
    /// The run ended; write the summary and flush everything.
    async fn run_finished(&mut self, _summary: &RunSummary) -> Result<(), HandlerError> {
        Ok(())
    }
    /// Make everything passed so far durable: when this returns `Ok`, every row of every call
    /// before it has been handed to the operating system (fsync is not required). The
    /// distributor records a variant as done in its resume ledger only after a flush, so a
    /// handler that buffers must write its buffers here.
    async fn flush(&mut self) -> Result<(), HandlerError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn foreign_causes_keep_message_and_source() {
        let e = HandlerError::sqlite(rusqlite::Error::InvalidQuery);
        assert!(matches!(e, HandlerError::Sqlite(_)));
        let source = e.source().expect("a source");
        assert!(source.downcast_ref::<rusqlite::Error>().is_some());
        assert_eq!(
            e.to_string(),
            format!("SQLite output: {}", rusqlite::Error::InvalidQuery)
        );

        let json = serde_json::from_str::<u32>("x").expect_err("not a number");
        let text = json.to_string();
        let e = HandlerError::json(json);
        assert_eq!(e.to_string(), format!("JSON output: {text}"));
        assert!(e.source().is_some());
    }
}
