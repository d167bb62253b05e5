//! Tasks and task-sets, their validation and their XML description.

use serde::{Deserialize, Serialize};

/// Longest binary name the target accepts (16-byte name field, last byte NUL).
pub const MAX_PKG_LEN: usize = 15;

/// Lowest fixed priority (0 is highest); v3 targets turn larger values into 0.
pub const MAX_PRIORITY: u32 = 127;

/// One periodic real-time task, with the fields of the Taskloader's `<periodictask>`.
///
/// Times are milliseconds; the unit is part of each field name. Values are 64-bit here and are
/// checked against the 32-bit range the target parses by [`Task::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Task {
    /// Task id, echoed as `task-id` in events. Use 0..n-1 in order.
    pub id: u32,
    /// Worst-case execution time used by admission tests (ignored by v3 targets).
    pub executiontime_ms: u64,
    /// Kill a job this long after it starts (EXIT_CRITICAL); 0 means never.
    pub criticaltime_ms: u64,
    /// Fixed priority, 0 highest .. 127 lowest.
    pub priority: u32,
    /// Relative deadline for EDF; 0 selects fixed-priority scheduling.
    pub deadline_ms: u64,
    /// Time between job releases.
    pub period_ms: u64,
    /// Delay before the task's first release.
    pub offset_ms: u64,
    /// Number of jobs to run, at least 1.
    pub numberofjobs: u32,
    /// RAM for each job in bytes; written with a K/M/G suffix where exact.
    pub quota_bytes: u64,
    /// Capability quota (v3); 235 is known to work.
    pub caps: u32,
    /// CPU affinity space width (v3).
    pub cores: u32,
    /// CPU affinity space position (v3).
    pub coreoffset: u32,
    /// Binary name, at most 15 bytes; must match a binary sent to the target.
    pub pkg: String,
    /// Ordered key/value children of `<config>`, such as `("arg1", "100000")`.
    pub config: Vec<(String, String)>,
}

impl Task {
    /// A task with the given id and binary and the defaults of the Python taskgen tool:
    /// executiontime 99999999 ms, no critical time, priority 10, period 1000 ms, one job,
    /// 1 MiB quota, 235 caps, 2 cores at offset 1, empty config.
    pub fn new(id: u32, pkg: impl Into<String>) -> Self {
        Task {
            id,
            executiontime_ms: 99_999_999,
            criticaltime_ms: 0,
            priority: 10,
            deadline_ms: 0,
            period_ms: 1000,
            offset_ms: 0,
            numberofjobs: 1,
            quota_bytes: 1 << 20,
            caps: 235,
            cores: 2,
            coreoffset: 1,
            pkg: pkg.into(),
            config: Vec::new(),
        }
    }

    /// Look up a config value by key.
    pub fn config_value(&self, key: &str) -> Option<&str> {
        self.config
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Check the task against what the target can parse. The error names the task and field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let err = |field: &'static str, reason: String| ValidationError {
            task: self.id,
            field,
            reason,
        };
        if self.pkg.is_empty() || self.pkg.len() > MAX_PKG_LEN {
            return Err(err(
                "pkg",
                format!(
                    "binary name {:?} must be 1 to {MAX_PKG_LEN} bytes, it has {}",
                    self.pkg,
                    self.pkg.len()
                ),
            ));
        }
        if !self
            .pkg
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'&' | b'/'))
        {
            return Err(err(
                "pkg",
                format!(
                    "binary name {:?} may hold only printable ASCII without <>&/",
                    self.pkg
                ),
            ));
        }
        if self.numberofjobs == 0 {
            return Err(err(
                "numberofjobs",
                "must be at least 1, or the task never finishes".into(),
            ));
        }
        if self.priority > MAX_PRIORITY {
            return Err(err(
                "priority",
                format!("{} is out of range 0..={MAX_PRIORITY}", self.priority),
            ));
        }
        for (field, value) in [
            ("executiontime", self.executiontime_ms),
            ("criticaltime", self.criticaltime_ms),
            ("deadline", self.deadline_ms),
            ("period", self.period_ms),
            ("offset", self.offset_ms),
            ("quota", self.quota_bytes),
        ] {
            if value > u64::from(u32::MAX) {
                return Err(err(
                    field,
                    format!("{value} does not fit the target's 32-bit range"),
                ));
            }
        }
        if self.period_ms == 0 {
            return Err(err("period", "must be at least 1 ms".into()));
        }
        for (k, v) in &self.config {
            let name_ok = !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                && !k.as_bytes()[0].is_ascii_digit();
            if !name_ok {
                return Err(err(
                    "config",
                    format!("key {k:?} is not a valid XML element name"),
                ));
            }
            if v.bytes().any(|b| b.is_ascii_whitespace()) {
                return Err(err(
                    "config",
                    format!("value {v:?} of {k} must not contain whitespace"),
                ));
            }
        }
        Ok(())
    }

    /// Append this task's `<periodictask>` element to `out`.
    ///
    /// This is the hot-path writer: static tag runs are copied in one piece and numbers are
    /// formatted with `itoa`. Its output is byte-identical to the quick-xml based
    /// [`crate::xml::write_taskset_reference`]; a property test checks this on arbitrary tasks.
    pub fn write_xml(&self, out: &mut String) {
        let mut buf = itoa::Buffer::new();
        out.push_str("<periodictask><id>");
        out.push_str(buf.format(self.id));
        out.push_str("</id><executiontime>");
        out.push_str(buf.format(self.executiontime_ms));
        out.push_str("</executiontime><criticaltime>");
        out.push_str(buf.format(self.criticaltime_ms));
        out.push_str("</criticaltime><priority>");
        out.push_str(buf.format(self.priority));
        out.push_str("</priority><deadline>");
        out.push_str(buf.format(self.deadline_ms));
        out.push_str("</deadline><period>");
        out.push_str(buf.format(self.period_ms));
        out.push_str("</period><offset>");
        out.push_str(buf.format(self.offset_ms));
        out.push_str("</offset><numberofjobs>");
        out.push_str(buf.format(self.numberofjobs));
        out.push_str("</numberofjobs><quota>");
        write_quota(out, &mut buf, self.quota_bytes);
        out.push_str("</quota><caps>");
        out.push_str(buf.format(self.caps));
        out.push_str("</caps><cores>");
        out.push_str(buf.format(self.cores));
        out.push_str("</cores><coreoffset>");
        out.push_str(buf.format(self.coreoffset));
        out.push_str("</coreoffset><pkg>");
        push_escaped(out, &self.pkg);
        out.push_str("</pkg><config>");
        for (k, v) in &self.config {
            out.push('<');
            out.push_str(k);
            out.push('>');
            push_escaped(out, v);
            out.push_str("</");
            out.push_str(k);
            out.push('>');
        }
        out.push_str("</config></periodictask>");
    }
}

/// The text of a `<quota>` element: bytes with a K/M/G suffix where the value is an exact
/// multiple, plain bytes otherwise (0 is written as `0`).
pub fn quota_text(bytes: u64) -> String {
    let mut out = String::new();
    write_quota(&mut out, &mut itoa::Buffer::new(), bytes);
    out
}

/// Parse a `<quota>` text: decimal bytes with an optional `K`, `M` or `G` suffix (binary
/// multiples, as the target reads them). Returns `None` for anything else or on overflow.
pub fn parse_quota(text: &str) -> Option<u64> {
    let (digits, mult) = match text.as_bytes().last()? {
        b'K' | b'k' => (&text[..text.len() - 1], 1u64 << 10),
        b'M' | b'm' => (&text[..text.len() - 1], 1u64 << 20),
        b'G' | b'g' => (&text[..text.len() - 1], 1u64 << 30),
        _ => (text, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

fn write_quota(out: &mut String, buf: &mut itoa::Buffer, bytes: u64) {
    const G: u64 = 1 << 30;
    const M: u64 = 1 << 20;
    const K: u64 = 1 << 10;
    if bytes != 0 && bytes % G == 0 {
        out.push_str(buf.format(bytes / G));
        out.push('G');
    } else if bytes != 0 && bytes % M == 0 {
        out.push_str(buf.format(bytes / M));
        out.push('M');
    } else if bytes != 0 && bytes % K == 0 {
        out.push_str(buf.format(bytes / K));
        out.push('K');
    } else {
        out.push_str(buf.format(bytes));
    }
}

/// Escape like quick-xml's `escape` (`<>&'"`), without allocating when nothing needs it.
fn push_escaped(out: &mut String, s: &str) {
    if s.bytes()
        .any(|b| matches!(b, b'<' | b'>' | b'&' | b'\'' | b'"'))
    {
        out.push_str(&quick_xml::escape::escape(s));
    } else {
        out.push_str(s);
    }
}

/// A task is invalid for the target; names the task, the field and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task {task}: field `{field}`: {reason}")]
pub struct ValidationError {
    /// Id of the offending task.
    pub task: u32,
    /// Name of the offending field as written in the XML.
    pub field: &'static str,
    /// What was wrong and what was expected.
    pub reason: String,
}

/// An ordered set of tasks, sent to a target as one unit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskSet {
    /// The tasks; ids should be 0..n-1 in order.
    pub tasks: Vec<Task>,
}

impl TaskSet {
    /// Build a task-set and validate every task.
    pub fn new(tasks: Vec<Task>) -> Result<Self, ValidationError> {
        let set = TaskSet { tasks };
        set.validate()?;
        Ok(set)
    }

    /// Validate every task and check that ids are unique.
    pub fn validate(&self) -> Result<(), ValidationError> {
        for (i, t) in self.tasks.iter().enumerate() {
            t.validate()?;
            if self.tasks[..i].iter().any(|o| o.id == t.id) {
                return Err(ValidationError {
                    task: t.id,
                    field: "id",
                    reason: "task ids must be unique within a task-set".into(),
                });
            }
        }
        Ok(())
    }

    /// The distinct binary names the task-set needs, in first-use order.
    pub fn binaries(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for t in &self.tasks {
            if !out.contains(&t.pkg.as_str()) {
                out.push(&t.pkg);
            }
        }
        out
    }

    /// The XML description sent with SEND_DESCS (element form, no declaration).
    pub fn to_xml(&self) -> String {
        let mut out = String::with_capacity(64 + 400 * self.tasks.len());
        self.write_xml(&mut out);
        out
    }

    /// Append the XML description to `out`, reusing its allocation.
    pub fn write_xml(&self, out: &mut String) {
        out.push_str("<taskset>");
        for t in &self.tasks {
            t.write_xml(out);
        }
        out.push_str("</taskset>");
    }
}

impl TaskSet {
    /// Read a task-set document back (see [`crate::xml::parse_taskset`]).
    pub fn from_xml(xml: &str) -> Result<Self, crate::xml::XmlError> {
        crate::xml::parse_taskset(xml)
    }
}
