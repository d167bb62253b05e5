//! XML documents of the target protocol, read with quick-xml.
//!
//! - [`parse_profile`]: profile documents pushed by the server (one, many or no events; unknown
//!   event types kept; bytes after `</profile>` ignored).
//! - [`parse_live`]: the GET_LIVE document.
//! - [`parse_taskset`] and [`parse_optimize`]: what a server reads from SEND_DESCS and
//!   OPTIMIZE (used by the simulated target; the client writes these documents with
//!   [`TaskSet::to_xml`](taskdist_tasksets::TaskSet::to_xml) and
//!   [`AdmissionControl::to_xml`](taskdist_tasksets::AdmissionControl::to_xml)).
//! - [`TimeUnwrapper`]: undoes the 32-bit wrap of target time stamps.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use taskdist_handlers::EventKind;
use taskdist_tasksets::{AdmissionControl, Goal, Task};

/// A document that is not what the protocol promises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// quick-xml rejected the bytes (not well-formed XML).
    #[error("malformed {doc} document at byte {position}: {message}")]
    Malformed {
        /// Which document was parsed (`profile`, `live`, `taskset`, `optimize`).
        doc: &'static str,
        /// Byte offset where the reader stopped.
        position: u64,
        /// The reader's message.
        message: String,
    },
    /// The root element has the wrong name.
    #[error("expected a <{expected}> root element, found <{found}>")]
    WrongRoot {
        /// The expected root.
        expected: &'static str,
        /// The found root (lossy UTF-8, truncated to 40 bytes).
        found: String,
    },
    /// The document ended before its root element was closed, or had no root at all.
    #[error("{doc} document ends before its root element is closed")]
    Truncated {
        /// Which document.
        doc: &'static str,
    },
    /// An element lacks a required attribute or child.
    #[error("<{element}> lacks `{field}`")]
    Missing {
        /// The element.
        element: &'static str,
        /// The attribute or child element.
        field: &'static str,
    },
    /// A value is not what the field allows.
    #[error("`{field}` of <{element}> must be {expected}, got {value:?}")]
    BadValue {
        /// The element.
        element: &'static str,
        /// The attribute or child.
        field: &'static str,
        /// What was expected.
        expected: &'static str,
        /// The value found (lossy UTF-8, truncated to 40 bytes).
        value: String,
    },
}

fn lossy(b: &[u8]) -> String {
    let cut = &b[..b.len().min(40)];
    String::from_utf8_lossy(cut).into_owned()
}

fn malformed(doc: &'static str, r: &Reader<&[u8]>, e: impl std::fmt::Display) -> XmlError {
    XmlError::Malformed {
        doc,
        position: r.buffer_position(),
        message: e.to_string(),
    }
}

/// One event of a profile document, with the time stamp as sent (not yet unwrapped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    /// The `type` attribute.
    pub kind: EventKind,
    /// The `task-id` attribute.
    pub task_id: u32,
    /// The `time-stamp` attribute in ms, as sent (may have wrapped; see [`TimeUnwrapper`]).
    pub time_stamp_ms: u64,
}

fn parse_dec<T: std::str::FromStr>(
    v: &[u8],
    element: &'static str,
    field: &'static str,
    expected: &'static str,
) -> Result<T, XmlError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<T>().ok())
        .ok_or_else(|| XmlError::BadValue {
            element,
            field,
            expected,
            value: lossy(v),
        })
}

fn parse_event(e: &BytesStart<'_>, r: &Reader<&[u8]>) -> Result<RawEvent, XmlError> {
    let mut kind = None;
    let mut task_id = None;
    let mut time = None;
    for a in e.attributes() {
        let a = a.map_err(|err| malformed("profile", r, err))?;
        match a.key.as_ref() {
            b"type" => {
                let s = std::str::from_utf8(&a.value).map_err(|_| XmlError::BadValue {
                    element: "event",
                    field: "type",
                    expected: "ASCII text",
                    value: lossy(&a.value),
                })?;
                kind = Some(EventKind::from_wire(s));
            }
            b"task-id" => {
                task_id = Some(parse_dec::<u32>(
                    &a.value,
                    "event",
                    "task-id",
                    "a decimal u32",
                )?)
            }
            b"time-stamp" => {
                time = Some(parse_dec::<u64>(
                    &a.value,
                    "event",
                    "time-stamp",
                    "a decimal u64",
                )?)
            }
            _ => {}
        }
    }
    Ok(RawEvent {
        kind: kind.ok_or(XmlError::Missing {
            element: "event",
            field: "type",
        })?,
        task_id: task_id.ok_or(XmlError::Missing {
            element: "event",
            field: "task-id",
        })?,
        time_stamp_ms: time.ok_or(XmlError::Missing {
            element: "event",
            field: "time-stamp",
        })?,
    })
}

/// Parse a profile document and append its events to `out` in document order.
///
/// Bytes after the closing `</profile>` (the trailing `"\n\0"` or anything else) are ignored.
/// Returns the number of events appended. On error nothing is appended.
///
/// ```
/// use taskdist::protocol::xml::parse_profile_into;
/// let doc = b"<profile>\n\t<events>\n\t\t<event type=\"EXIT\" task-id=\"0\" time-stamp=\"31402\"/>\n\t</events>\n</profile>\n\0";
/// let mut out = Vec::new();
/// assert_eq!(parse_profile_into(doc, &mut out).unwrap(), 1);
/// assert_eq!(out[0].time_stamp_ms, 31402);
/// ```
pub fn parse_profile_into(doc: &[u8], out: &mut Vec<RawEvent>) -> Result<usize, XmlError> {
    let before = out.len();
    let res = parse_profile_inner(doc, out);
    if res.is_err() {
        out.truncate(before);
    }
    res.map(|()| out.len() - before)
}

fn parse_profile_inner(doc: &[u8], out: &mut Vec<RawEvent>) -> Result<(), XmlError> {
    let mut r = Reader::from_reader(doc);
    let mut depth = 0usize;
    loop {
        let ev = r.read_event().map_err(|e| malformed("profile", &r, e))?;
        match ev {
            Event::Start(e) => {
                if depth == 0 && e.name().as_ref() != b"profile" {
                    return Err(XmlError::WrongRoot {
                        expected: "profile",
                        found: lossy(e.name().as_ref()),
                    });
                }
                if e.name().as_ref() == b"event" {
                    out.push(parse_event(&e, &r)?);
                }
                depth += 1;
            }
            Event::Empty(e) => {
                if depth == 0 {
                    if e.name().as_ref() == b"profile" {
                        return Ok(());
                    }
                    return Err(XmlError::WrongRoot {
                        expected: "profile",
                        found: lossy(e.name().as_ref()),
                    });
                }
                if e.name().as_ref() == b"event" {
                    out.push(parse_event(&e, &r)?);
                }
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Ok(());
                }
            }
            Event::Eof => return Err(XmlError::Truncated { doc: "profile" }),
            _ => {}
        }
    }
}

/// Parse a profile document into a new vector (see [`parse_profile_into`]).
pub fn parse_profile(doc: &[u8]) -> Result<Vec<RawEvent>, XmlError> {
    let mut out = Vec::new();
    parse_profile_into(doc, &mut out)?;
    Ok(out)
}

/// Largest time stamp a wrapping target shows: a 32-bit microsecond counter in ms.
pub const WRAP_MS: u64 = 4_294_967;

/// Turns time stamps that wrap at [`WRAP_MS`] into 64-bit times.
///
/// A time stamp that is more than half a wrap period smaller than the previous one is taken as
/// a wrap and [`WRAP_MS`] is added from then on (the true period is 4,294,967.296 ms, so each
/// wrap may be off by one ms). Small steps backwards (events of different tasks logged out of
/// order) are kept as they are. Time stamps above [`WRAP_MS`] come from a target with 64-bit
/// time and never count as a wrap.
///
/// ```
/// use taskdist::protocol::xml::{TimeUnwrapper, WRAP_MS};
/// let mut u = TimeUnwrapper::default();
/// assert_eq!(u.unwrap(WRAP_MS - 10), WRAP_MS - 10);
/// assert_eq!(u.unwrap(5), WRAP_MS + 5);
/// assert_eq!(u.unwrap(3), WRAP_MS + 3);
/// ```
#[derive(Debug, Clone, Default)]
pub struct TimeUnwrapper {
    last_raw: Option<u64>,
    epoch_ms: u64,
}

impl TimeUnwrapper {
    /// The 64-bit time of a raw time stamp; call in arrival order.
    pub fn unwrap(&mut self, raw: u64) -> u64 {
        if let Some(last) = self.last_raw {
            if raw <= WRAP_MS && last <= WRAP_MS && last > raw && last - raw > WRAP_MS / 2 {
                self.epoch_ms += WRAP_MS;
            }
        }
        self.last_raw = Some(raw);
        raw + self.epoch_ms
    }

    /// How many ms the wraps seen so far add.
    pub fn epoch_ms(&self) -> u64 {
        self.epoch_ms
    }
}

/// One row of the GET_LIVE document. Every field is optional: rows describe all threads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveTask {
    /// `id`
    pub id: Option<u64>,
    /// `execution-time` in ms
    pub execution_time_ms: Option<u64>,
    /// `priority`
    pub priority: Option<u64>,
    /// `core`
    pub core: Option<u64>,
    /// `arrival-time` in ms
    pub arrival_time_ms: Option<u64>,
    /// `start-time` in ms
    pub start_time_ms: Option<u64>,
    /// `exit-time` in ms
    pub exit_time_ms: Option<u64>,
    /// `session` label, e.g. `init -> taskloader -> 01.hey`
    pub session: Option<String>,
    /// `thread` name
    pub thread: Option<String>,
    /// `ram_quota` in KiB
    pub ram_quota_kib: Option<u64>,
    /// `ram_used` in KiB
    pub ram_used_kib: Option<u64>,
}

impl LiveTask {
    /// The job's binary name if the session label ends in `taskloader -> NN.pkg`.
    pub fn job_pkg(&self) -> Option<&str> {
        let s = self.session.as_deref()?;
        let (_, tail) = s.rsplit_once("taskloader -> ")?;
        let (_, pkg) = tail.split_once('.')?;
        Some(pkg)
    }
}

fn parse_live_row(e: &BytesStart<'_>, r: &Reader<&[u8]>) -> Result<LiveTask, XmlError> {
    let mut t = LiveTask::default();
    for a in e.attributes() {
        let a = a.map_err(|err| malformed("live", r, err))?;
        let num = |field: &'static str| -> Result<Option<u64>, XmlError> {
            parse_dec::<u64>(&a.value, "task", field, "a decimal u64").map(Some)
        };
        match a.key.as_ref() {
            b"id" => t.id = num("id")?,
            b"execution-time" => t.execution_time_ms = num("execution-time")?,
            b"priority" => t.priority = num("priority")?,
            b"core" => t.core = num("core")?,
            b"arrival-time" => t.arrival_time_ms = num("arrival-time")?,
            b"start-time" => t.start_time_ms = num("start-time")?,
            b"exit-time" => t.exit_time_ms = num("exit-time")?,
            b"ram_quota" => t.ram_quota_kib = num("ram_quota")?,
            b"ram_used" => t.ram_used_kib = num("ram_used")?,
            b"session" => {
                t.session = Some(
                    a.unescape_value()
                        .map_err(|e| malformed("live", r, e))?
                        .into_owned(),
                )
            }
            b"thread" => {
                t.thread = Some(
                    a.unescape_value()
                        .map_err(|e| malformed("live", r, e))?
                        .into_owned(),
                )
            }
            _ => {}
        }
    }
    Ok(t)
}

/// Parse a GET_LIVE document: one [`LiveTask`] per `<task>` element.
pub fn parse_live(doc: &[u8]) -> Result<Vec<LiveTask>, XmlError> {
    let mut r = Reader::from_reader(doc);
    let mut depth = 0usize;
    let mut out = Vec::new();
    loop {
        match r.read_event().map_err(|e| malformed("live", &r, e))? {
            Event::Start(e) => {
                if depth == 0 && e.name().as_ref() != b"live" {
                    return Err(XmlError::WrongRoot {
                        expected: "live",
                        found: lossy(e.name().as_ref()),
                    });
                }
                if depth > 0 && e.name().as_ref() == b"task" {
                    out.push(parse_live_row(&e, &r)?);
                }
                depth += 1;
            }
            Event::Empty(e) => {
                if depth == 0 {
                    if e.name().as_ref() == b"live" {
                        return Ok(out);
                    }
                    return Err(XmlError::WrongRoot {
                        expected: "live",
                        found: lossy(e.name().as_ref()),
                    });
                }
                if e.name().as_ref() == b"task" {
                    out.push(parse_live_row(&e, &r)?);
                }
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Ok(out);
                }
            }
            Event::Eof => return Err(XmlError::Truncated { doc: "live" }),
            _ => {}
        }
    }
}

/// Parse a decimal number the way the target does: digits only, wrapping at 32 bits.
/// An empty value reads as 0.
fn target_u32(v: &[u8], field: &'static str) -> Result<u32, XmlError> {
    let mut n: u32 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return Err(XmlError::BadValue {
                element: "periodictask",
                field,
                expected: "decimal digits",
                value: lossy(v),
            });
        }
        n = n.wrapping_mul(10).wrapping_add(u32::from(b - b'0'));
    }
    Ok(n)
}

/// Parse a quota: decimal bytes with an optional `K`, `M` or `G` suffix.
pub fn parse_quota(v: &[u8]) -> Result<u64, XmlError> {
    let (digits, mult) = match v.last() {
        Some(b'K' | b'k') => (&v[..v.len() - 1], 1u64 << 10),
        Some(b'M' | b'm') => (&v[..v.len() - 1], 1 << 20),
        Some(b'G' | b'g') => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    let n = target_u32(digits, "quota")?;
    Ok(u64::from(n) * mult)
}

/// Read a task-set document as a server does (PROTOCOL.md, "Task-set XML").
///
/// The root's name is not checked; each `<periodictask>` child is one task and other children
/// are ignored; fields are child elements and attributes are ignored; numbers wrap silently at
/// 32 bits; missing numeric fields read as 0. `<config>` is required: its leaf children become
/// [`Task::config`] pairs. Priorities are kept as sent (no clamping; the simulator applies the
/// dialect's rules).
pub fn parse_taskset(doc: &[u8]) -> Result<Vec<Task>, XmlError> {
    let mut r = Reader::from_reader(doc);
    r.config_mut().trim_text(true);
    let mut depth = 0usize;
    let mut tasks = Vec::new();
    let mut cur: Option<(Task, bool)> = None;
    let mut field: Option<Vec<u8>> = None;
    let mut config_key: Option<String> = None;
    let mut in_config = false;
    loop {
        let ev = r.read_event().map_err(|e| malformed("taskset", &r, e))?;
        match ev {
            Event::Start(e) => {
                depth += 1;
                let name = e.name().as_ref().to_vec();
                match depth {
                    2 if name == b"periodictask" => {
                        let mut t = Task::new(0, "");
                        t.executiontime_ms = 0;
                        t.priority = 0;
                        t.period_ms = 0;
                        t.numberofjobs = 0;
                        t.quota_bytes = 0;
                        t.caps = 0;
                        t.cores = 0;
                        t.coreoffset = 0;
                        cur = Some((t, false));
                    }
                    3 if cur.is_some() => {
                        if name == b"config" {
                            in_config = true;
                            if let Some((_, seen)) = cur.as_mut() {
                                *seen = true;
                            }
                        }
                        field = Some(name);
                    }
                    4 if in_config => {
                        config_key = Some(String::from_utf8_lossy(&name).into_owned());
                    }
                    _ => {}
                }
            }
            Event::Empty(e) => {
                if depth == 0 {
                    return Ok(tasks);
                }
                if depth == 2 && e.name().as_ref() == b"config" {
                    if let Some((_, seen)) = cur.as_mut() {
                        *seen = true;
                    }
                } else if depth == 3 && in_config {
                    if let Some((t, _)) = cur.as_mut() {
                        let key = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                        t.config.push((key, String::new()));
                    }
                }
            }
            Event::Text(txt) => {
                let Some((t, _)) = cur.as_mut() else { continue };
                let value = txt.unescape().map_err(|e| malformed("taskset", &r, e))?;
                let v = value.as_bytes();
                if depth == 4 && in_config {
                    if let Some(k) = config_key.take() {
                        t.config.push((k, value.into_owned()));
                    }
                    continue;
                }
                if depth != 3 {
                    continue;
                }
                match field.as_deref() {
                    Some(b"id") => t.id = target_u32(v, "id")?,
                    Some(b"executiontime") => {
                        t.executiontime_ms = u64::from(target_u32(v, "executiontime")?)
                    }
                    Some(b"criticaltime") => {
                        t.criticaltime_ms = u64::from(target_u32(v, "criticaltime")?)
                    }
                    Some(b"priority") => t.priority = target_u32(v, "priority")?,
                    Some(b"deadline") => t.deadline_ms = u64::from(target_u32(v, "deadline")?),
                    Some(b"period") => t.period_ms = u64::from(target_u32(v, "period")?),
                    Some(b"offset") => t.offset_ms = u64::from(target_u32(v, "offset")?),
                    Some(b"numberofjobs") => t.numberofjobs = target_u32(v, "numberofjobs")?,
                    Some(b"quota") => t.quota_bytes = parse_quota(v)?,
                    Some(b"caps") => t.caps = target_u32(v, "caps")?,
                    Some(b"cores") => t.cores = target_u32(v, "cores")?,
                    Some(b"coreoffset") => t.coreoffset = target_u32(v, "coreoffset")?,
                    Some(b"pkg") => t.pkg = value.into_owned(),
                    _ => {}
                }
            }
            Event::End(_) => {
                match depth {
                    2 => {
                        if let Some((t, seen_config)) = cur.take() {
                            if !seen_config {
                                return Err(XmlError::Missing {
                                    element: "periodictask",
                                    field: "config",
                                });
                            }
                            tasks.push(t);
                        }
                    }
                    3 => {
                        in_config = false;
                        field = None;
                    }
                    4 => config_key = None,
                    _ => {}
                }
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Ok(tasks);
                }
            }
            Event::Eof => return Err(XmlError::Truncated { doc: "taskset" }),
            _ => {}
        }
    }
}

/// Read an `<optimize>` document (OPTIMIZE, v1): the goal is fairness if its `apply` is
/// non-zero, else utilization if non-zero, else none. A missing `query_interval` reads as 0.
pub fn parse_optimize(doc: &[u8]) -> Result<AdmissionControl, XmlError> {
    let mut r = Reader::from_reader(doc);
    r.config_mut().trim_text(true);
    let mut path: Vec<Vec<u8>> = Vec::new();
    let (mut fair, mut util, mut interval) = (0u32, 0u32, 0u32);
    let mut seen_root = false;
    loop {
        match r.read_event().map_err(|e| malformed("optimize", &r, e))? {
            Event::Start(e) => {
                if path.is_empty() {
                    if e.name().as_ref() != b"optimize" {
                        return Err(XmlError::WrongRoot {
                            expected: "optimize",
                            found: lossy(e.name().as_ref()),
                        });
                    }
                    seen_root = true;
                }
                path.push(e.name().as_ref().to_vec());
            }
            Event::Text(t) => {
                let p: Vec<&[u8]> = path.iter().map(Vec::as_slice).collect();
                let v = t.as_ref();
                let num = |field| parse_dec::<u32>(v, "optimize", field, "a decimal u32").map(Some);
                match p.as_slice() {
                    [_, b"goal", b"fairness", b"apply"] => fair = num("apply")?.unwrap_or(0),
                    [_, b"goal", b"utilization", b"apply"] => util = num("apply")?.unwrap_or(0),
                    [_, b"query_interval"] => interval = num("query_interval")?.unwrap_or(0),
                    _ => {}
                }
            }
            Event::End(_) => {
                path.pop();
                if path.is_empty() {
                    break;
                }
            }
            Event::Eof => {
                if !seen_root || !path.is_empty() {
                    return Err(XmlError::Truncated { doc: "optimize" });
                }
                break;
            }
            _ => {}
        }
    }
    let goal = if fair != 0 {
        Goal::Fairness
    } else if util != 0 {
        Goal::Utilization
    } else {
        Goal::None
    };
    Ok(AdmissionControl {
        goal,
        query_interval_ms: interval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskdist_tasksets::TaskSet;

    #[test]
    fn taskset_round_trip() {
        let mut a = Task::new(0, "hey");
        a.numberofjobs = 3;
        let mut b = Task::new(1, "pi");
        b.config.push(("arg1".into(), "100000".into()));
        b.offset_ms = 500;
        b.quota_bytes = 5 << 20;
        let set = TaskSet::new(vec![a, b]).unwrap();
        let parsed = parse_taskset(set.to_xml().as_bytes()).unwrap();
        assert_eq!(parsed, set.tasks);
    }

    #[test]
    fn taskset_numbers_wrap_and_config_required() {
        let doc =
            b"<x><periodictask><id>4294967297</id><pkg>a</pkg><config/></periodictask><other/></x>";
        let t = parse_taskset(doc).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].id, 1);
        let doc = b"<x><periodictask><id>1</id><pkg>a</pkg></periodictask></x>";
        assert!(matches!(
            parse_taskset(doc),
            Err(XmlError::Missing {
                field: "config",
                ..
            })
        ));
    }

    #[test]
    fn optimize_round_trip() {
        for goal in [Goal::Fairness, Goal::Utilization, Goal::None] {
            let ac = AdmissionControl {
                goal,
                query_interval_ms: 250,
            };
            assert_eq!(parse_optimize(ac.to_xml().as_bytes()).unwrap(), ac);
        }
    }

    #[test]
    fn wrap_detection_ignores_small_steps_back() {
        let mut u = TimeUnwrapper::default();
        assert_eq!(u.unwrap(1000), 1000);
        assert_eq!(u.unwrap(990), 990);
        assert_eq!(u.unwrap(WRAP_MS), WRAP_MS);
        assert_eq!(u.unwrap(1), WRAP_MS + 1);
        assert_eq!(u.unwrap(WRAP_MS - 1), 2 * WRAP_MS - 1);
        assert_eq!(u.unwrap(2), 2 * WRAP_MS + 2);
        let mut big = TimeUnwrapper::default();
        assert_eq!(big.unwrap(10_000_000_000), 10_000_000_000);
        assert_eq!(big.unwrap(5), 5);
    }
}
