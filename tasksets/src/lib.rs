//! # taskdist-tasksets
//!
//! The pure model of taskdist: real-time tasks, task-sets, admission-control data and their XML
//! description as the Genode Taskloader reads it (see `PROTOCOL.md` of the project). This crate
//! has no networking and no async runtime, so it can be used on its own to generate and inspect
//! task-sets.
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
pub use spec::{Spec, SpecError};
pub use xml::XmlError;
