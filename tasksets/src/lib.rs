//! # taskdist-tasksets
//!
//! The pure model of taskdist: real-time tasks, task-sets, admission-control data and their XML
//! description as the Genode Taskloader reads it (see `PROTOCOL.md` of the project), plus the
//! variant engine that turns a spec file into a lazy, index-addressable space of task-sets.
//! This crate has no networking and no async runtime, so it can be used on its own to generate
//! and inspect task-sets.
//!
//! Module map:
//! - [`Task`], [`TaskSet`] (model), [`AdmissionControl`]: the values sent to a target, their
//!   validation against the target's limits and their XML ([`TaskSet::write_xml`]).
//! - [`xml`]: reading task-set and admission-control documents back (quick-xml), and the
//!   quick-xml reference writer the fast writer is tested against.
//! - [`spec`]: TOML spec files ([`Spec`]) with errors that carry file, line and column.
//! - [`space`]: [`VariantSpace`], the lazy cartesian product; `get(i)` builds variant `i`.
//! - [`generate`]: UUniFast, RandFixedSum and deadline classes; [`rng`]: the index-addressable
//!   SplitMix64 draws every random value comes from.
//! - [`catalog`]: the ready-made specs embedded from `tasksets/catalog/*.toml`.
//!
//! ```
//! use taskdist_tasksets::{Task, TaskSet};
//!
//! let mut task = Task::new(0, "hey");
//! task.period_ms = 1000;
//! task.numberofjobs = 3;
//! let set = TaskSet::new(vec![task]).unwrap();
//! assert!(set.to_xml().starts_with("<taskset><periodictask><id>0</id>"));
//! ```
//!
//! ```
//! use taskdist_tasksets::{Spec, SpaceLen};
//!
//! let spec = Spec::load("hey").unwrap();
//! assert_eq!(spec.space().len(), SpaceLen::Finite(4));
//! let variant = spec.space().get(3).unwrap();
//! assert_eq!(variant.tasks[0].pkg, "hey");
//! ```

#![warn(missing_docs)]

mod admission;
pub mod catalog;
pub mod generate;
mod model;
pub mod rng;
pub mod space;
pub mod spec;
pub mod xml;

pub use admission::{AdmissionControl, Goal};
pub use catalog::CatalogEntry;
pub use model::{
    parse_quota, quota_text, Task, TaskSet, ValidationError, MAX_PKG_LEN, MAX_PRIORITY,
};
pub use space::{SpaceLen, VariantError, VariantSpace, Variants};
pub use spec::{Spec, SpecError, MAX_SPEC_BYTES};
pub use xml::XmlError;
