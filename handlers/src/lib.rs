//! # taskdist-handlers
//!
//! The event model of taskdist and the sinks that store it. A run reports what happens through
//! the [`EventHandler`] trait: run start, task-set start, live job events, task-set finished,
//! task-set stopped (requeued), task-set bad, run end.
//!
//! Exactly-once rule: the events of an attempt are written to result files only when that
//! attempt finished, through [`EventHandler::taskset_finished`], which carries every event of the
//! attempt. Live callbacks ([`EventHandler::events`]) are for monitoring only.

mod event;
mod handler;

pub use event::{
    AttemptId, EventKind, Outcome, RunInfo, RunSummary, TargetEvent, TimedEvent, VariantBad,
    VariantFinished, VariantStarted, VariantStopped,
};
pub use handler::{EventHandler, HandlerError};
