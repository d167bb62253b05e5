//! How much CPU time a simulated job needs: per-binary demand models.

use std::collections::HashMap;

use taskdist_tasksets::Task;

/// `executiontime` value that the taskgen tool writes when the WCET is unknown.
pub const UNKNOWN_EXECUTIONTIME_MS: u64 = 99_999_999;

/// Execution demand of one job of a binary when the task's `executiontime` is unknown.
#[derive(Debug, Clone, PartialEq)]
pub enum Demand {
    /// A fixed demand in ms.
    Fixed {
        /// Demand in ms.
        ms: f64,
    },
    /// `base_ms + ms_per_unit * arg1^exponent`, with `arg1` from the task's config (0 if
    /// absent or not a number). pi is linear in its step count; linpack cubic in N.
    Arg1 {
        /// Constant part in ms.
        base_ms: f64,
        /// Factor in ms.
        ms_per_unit: f64,
        /// Exponent of arg1.
        exponent: f64,
    },
    /// Ends after `ms` if `arg1` equals `value`, else never (like cond_42).
    UntilArg1Equals {
        /// The value that makes the job stop.
        value: i64,
        /// Demand in ms when it stops.
        ms: f64,
    },
    /// Never ends by itself (like idle): killed at criticaltime or at the next period.
    Never,
}

/// The simulated behaviour of one binary.
#[derive(Debug, Clone, PartialEq)]
pub struct BinaryModel {
    /// Demand when `executiontime` is unknown (0 or 99999999).
    pub unknown: Demand,
    /// If set, a known `executiontime` is scaled by `arg1 / reference` (e.g. a pi task whose
    /// WCET was measured for `arg1 = reference`). `None`: a known executiontime is used as is.
    pub scale_known_by_arg1: Option<f64>,
    /// RAM a job needs; a smaller `quota` ends the job with OUT_OF_QUOTA.
    pub ram_bytes: u64,
}

impl BinaryModel {
    /// A model with a demand, no scaling and 64 KiB RAM.
    pub fn new(unknown: Demand) -> Self {
        BinaryModel {
            unknown,
            scale_known_by_arg1: None,
            ram_bytes: 64 * 1024,
        }
    }
}

/// Demand models by binary name, with a fallback for unknown names.
#[derive(Debug, Clone, PartialEq)]
pub struct DemandModel {
    /// Models by `pkg` name.
    pub binaries: HashMap<String, BinaryModel>,
    /// Model of binaries not in the map.
    pub fallback: BinaryModel,
}

impl Default for DemandModel {
    /// The testbed's binaries: hey and namaste 1 ms; pi 0.5 ms + 0.1 µs per step (arg1 =
    /// 100000 gives 10.5 ms); tumatmul 40 ms; linpack 1 ms + 5e-6 ms * N³ (N = 100 gives
    /// 6 ms); cond_42 1 ms if arg1 = 42, else never ends; cond_mod 5 ms; idle never ends.
    /// Any other binary: 10 ms. All need 64 KiB RAM.
    fn default() -> Self {
        let mut b = HashMap::new();
        let mut put = |n: &str, d| {
            b.insert(n.to_owned(), BinaryModel::new(d));
        };
        put("hey", Demand::Fixed { ms: 1.0 });
        put("namaste", Demand::Fixed { ms: 1.0 });
        put(
            "pi",
            Demand::Arg1 {
                base_ms: 0.5,
                ms_per_unit: 1e-4,
                exponent: 1.0,
            },
        );
        put("tumatmul", Demand::Fixed { ms: 40.0 });
        put(
            "linpack",
            Demand::Arg1 {
                base_ms: 1.0,
                ms_per_unit: 5e-6,
                exponent: 3.0,
            },
        );
        put("cond_42", Demand::UntilArg1Equals { value: 42, ms: 1.0 });
        put("cond_mod", Demand::Fixed { ms: 5.0 });
        put("idle", Demand::Never);
        DemandModel {
            binaries: b,
            fallback: BinaryModel::new(Demand::Fixed { ms: 10.0 }),
        }
    }
}

fn arg1(task: &Task) -> Option<f64> {
    task.config_value("arg1")?.parse::<f64>().ok()
}

fn ms_to_us(ms: f64) -> Option<u64> {
    if !ms.is_finite() {
        return None;
    }
    Some((ms.max(0.0) * 1000.0).round().min(u64::MAX as f64 / 2.0) as u64)
}

impl DemandModel {
    /// The model of a binary.
    pub fn model(&self, pkg: &str) -> &BinaryModel {
        self.binaries.get(pkg).unwrap_or(&self.fallback)
    }

    /// Demand of one job of `task` in µs; `None` means the job never ends by itself.
    pub fn demand_us(&self, task: &Task) -> Option<u64> {
        let m = self.model(&task.pkg);
        let known = task.executiontime_ms != 0 && task.executiontime_ms != UNKNOWN_EXECUTIONTIME_MS;
        if known {
            let mut ms = task.executiontime_ms as f64;
            if let (Some(reference), Some(a)) = (m.scale_known_by_arg1, arg1(task)) {
                if reference > 0.0 {
                    ms *= a / reference;
                }
            }
            return ms_to_us(ms);
        }
        match &m.unknown {
            Demand::Fixed { ms } => ms_to_us(*ms),
            Demand::Arg1 {
                base_ms,
                ms_per_unit,
                exponent,
            } => {
                let a = arg1(task).unwrap_or(0.0).max(0.0);
                ms_to_us(base_ms + ms_per_unit * a.powf(*exponent))
            }
            Demand::UntilArg1Equals { value, ms } => {
                let hit = task
                    .config_value("arg1")
                    .and_then(|v| v.parse::<i64>().ok())
                    == Some(*value);
                if hit {
                    ms_to_us(*ms)
                } else {
                    None
                }
            }
            Demand::Never => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let m = DemandModel::default();
        let mut t = Task::new(0, "pi");
        t.config.push(("arg1".into(), "100000".into()));
        assert_eq!(m.demand_us(&t), Some(10_500));
        t.executiontime_ms = 7;
        assert_eq!(m.demand_us(&t), Some(7_000));
        let idle = Task::new(1, "idle");
        assert_eq!(m.demand_us(&idle), None);
        let mut c = Task::new(2, "cond_42");
        assert_eq!(m.demand_us(&c), None);
        c.config.push(("arg1".into(), "42".into()));
        assert_eq!(m.demand_us(&c), Some(1000));
        assert_eq!(m.demand_us(&Task::new(3, "other")), Some(10_000));
    }
}
