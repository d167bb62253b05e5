//! # taskdist-handlers
//!
//! The event model of taskdist and the sinks that store it. A run reports what happens through
//! the [`EventHandler`] trait: run start, task-set start, live job events, task-set finished,
//! task-set stopped (requeued), task-set bad, run end, and flush.
//!
//! Exactly-once rule: result rows come only from [`EventHandler::taskset_finished`] (which
//! carries every event of the one attempt that finished) and [`EventHandler::taskset_bad`].
//! Live callbacks ([`EventHandler::events`]) are for monitoring only and write nothing to result
//! files. Every variant therefore ends with exactly one row in `variants.csv`.
//!
//! Module map:
//! - [`CsvHandler`]: `events.csv`, `jobs.csv`, `variants.csv`, `tasks.csv`, `run.json`.
//! - [`JsonlHandler`]: one JSON object per line per variant, with its tasks, events and jobs.
//! - [`SqliteHandler`]: the same tables as the CSV files, with keys and indexes.
//! - [`ConsoleHandler`]: a human summary at the end of a run.
//! - [`reader`]: read the CSV and JSON Lines files back into typed rows.
//! - [`JobTable`]: the job numbering shared by every file handler.
//!
//! Every file handler has a `resume(path, is_done)` constructor that drops rows of variants
//! the resume ledger does not know as done (and a torn last line) before appending.

#![warn(missing_docs)]

mod console;
mod csv_handler;
mod event;
mod handler;
mod jsonl;
mod multi;
pub mod reader;
mod repair;
mod rows;
mod run_file;
mod sqlite;

pub use console::ConsoleHandler;
pub use csv_handler::{CsvHandler, EVENTS_FILE, JOBS_FILE, TASKS_FILE, VARIANTS_FILE};
pub use event::{
    AttemptId, EventKind, Outcome, RunInfo, RunSummary, TargetEvent, TimedEvent, VariantBad,
    VariantFinished, VariantStarted, VariantStopped,
};
pub use handler::{BoxError, EventHandler, HandlerError};
pub use jsonl::{JsonlHandler, JSONL_FILE};
pub use multi::Multi;
pub use rows::{
    decode_config, duration_us, encode_config, one_line, unix_us, Job, JobTable, EVENTS_HEADER,
    JOBS_HEADER, TASKS_HEADER, VARIANTS_HEADER,
};
pub use run_file::{RunFile, RUN_FILE};
pub use sqlite::{SqliteHandler, SQLITE_FILE};
