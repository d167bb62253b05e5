//! Admission-control data (the `<optimize>` document of PROTOCOL.md).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// What the target's admission controller optimises for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Goal {
    /// Fair share between tasks.
    Fairness,
    /// Highest utilisation.
    Utilization,
    /// No optimisation goal.
    #[default]
    None,
}

/// Admission-control data handed to v1 targets with OPTIMIZE.
///
/// ```
/// use taskdist_tasksets::{AdmissionControl, Goal};
/// let ac = AdmissionControl { goal: Goal::Fairness, query_interval_ms: 1000 };
/// assert_eq!(ac.to_xml(), "<optimize><goal><fairness><apply>1</apply></fairness>\
/// <utilization><apply>0</apply></utilization></goal><query_interval>1000</query_interval></optimize>");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AdmissionControl {
    /// Optimisation goal.
    pub goal: Goal,
    /// How often the controller queries the system, in ms.
    pub query_interval_ms: u32,
}

impl AdmissionControl {
    /// The `<optimize>` document sent with OPTIMIZE.
    pub fn to_xml(&self) -> String {
        let (f, u) = match self.goal {
            Goal::Fairness => (1, 0),
            Goal::Utilization => (0, 1),
            Goal::None => (0, 0),
        };
        let mut out = String::with_capacity(160);
        let _ = write!(
            out,
            "<optimize><goal><fairness><apply>{f}</apply></fairness><utilization><apply>{u}</apply></utilization></goal><query_interval>{}</query_interval></optimize>",
            self.query_interval_ms
        );
        out
    }

    /// Read an `<optimize>` document (the inverse of [`AdmissionControl::to_xml`]).
    ///
    /// ```
    /// use taskdist_tasksets::{AdmissionControl, Goal};
    /// let ac = AdmissionControl { goal: Goal::Utilization, query_interval_ms: 250 };
    /// assert_eq!(AdmissionControl::from_xml(&ac.to_xml()).unwrap(), ac);
    /// ```
    pub fn from_xml(xml: &str) -> Result<Self, crate::xml::XmlError> {
        crate::xml::parse_admission(xml)
    }
}
