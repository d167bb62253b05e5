//! What a run distributes: a source of task-set variants and optional admission-control data.

use std::sync::Arc;

use taskdist_tasksets::{AdmissionControl, TaskSet};

/// An index-addressable source of task-set variants.
///
/// Implemented for a single [`TaskSet`] (one variant) and for spec files' variant spaces.
pub trait VariantSource: Send + Sync + 'static {
    /// Number of variants; `None` for an unbounded (random) stream. Larger spaces report
    /// `u64::MAX`: indices are 64-bit.
    fn variant_count(&self) -> Option<u64>;
    /// Build variant `index`. An error makes the variant `bad` at once (no retry helps).
    fn get(&self, index: u64) -> Result<TaskSet, String>;
    /// A name for logs and `run.json`.
    fn name(&self) -> String;
    /// The text that defines the variants (spec TOML or XML), stored in `run.json` and used
    /// for the resume fingerprint.
    fn text(&self) -> String;
    /// Seed of random draws (0 if none).
    fn seed(&self) -> u64 {
        0
    }
}

impl VariantSource for TaskSet {
    fn variant_count(&self) -> Option<u64> {
        Some(1)
    }
    fn get(&self, index: u64) -> Result<TaskSet, String> {
        if index == 0 {
            Ok(self.clone())
        } else {
            Err(format!("a single task-set has only variant 0, not {index}"))
        }
    }
    fn name(&self) -> String {
        format!("task-set of {} tasks", self.tasks.len())
    }
    fn text(&self) -> String {
        self.to_xml()
    }
}

/// A source plus the admission-control data to deliver with every variant.
#[derive(Clone)]
pub struct Workload {
    /// The variants.
    pub source: Arc<dyn VariantSource>,
    /// Admission-control data (only v1 targets accept it).
    pub admission: Option<AdmissionControl>,
}

impl Workload {
    /// A workload without admission-control data.
    pub fn new(source: impl VariantSource) -> Self {
        Workload {
            source: Arc::new(source),
            admission: None,
        }
    }

    /// The same workload with admission-control data.
    pub fn with_admission(mut self, admission: AdmissionControl) -> Self {
        self.admission = Some(admission);
        self
    }
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload")
            .field("source", &self.source.name())
            .field("variants", &self.source.variant_count())
            .field("admission", &self.admission)
            .finish()
    }
}

impl From<TaskSet> for Workload {
    fn from(t: TaskSet) -> Self {
        Workload::new(t)
    }
}

impl VariantSource for taskdist_tasksets::Spec {
    fn variant_count(&self) -> Option<u64> {
        match taskdist_tasksets::Spec::len(self) {
            taskdist_tasksets::SpaceLen::Finite(n) => Some(u64::try_from(n).unwrap_or(u64::MAX)),
            taskdist_tasksets::SpaceLen::Unbounded => None,
        }
    }
    fn get(&self, index: u64) -> Result<TaskSet, String> {
        self.space().get(index).map_err(|e| e.to_string())
    }
    fn name(&self) -> String {
        self.name().to_owned()
    }
    fn text(&self) -> String {
        self.text().to_owned()
    }
    fn seed(&self) -> u64 {
        taskdist_tasksets::Spec::seed(self)
    }
}

impl From<taskdist_tasksets::Spec> for Workload {
    /// The spec's variants with the spec's admission-control data, if any.
    fn from(spec: taskdist_tasksets::Spec) -> Self {
        let admission = spec.admission();
        Workload {
            source: Arc::new(spec),
            admission,
        }
    }
}
