//! XML reading (and a reference writer) for task-set and admission-control documents.
//!
//! The fast writer used on the hot path is [`crate::TaskSet::write_xml`]. This module holds a
//! second writer built on quick-xml's `Writer`, [`write_taskset_reference`], which the tests use
//! as the reference the fast writer must match byte for byte, and the readers
//! [`parse_taskset`] and [`parse_admission`] (quick-xml `Reader`), used for round-trip tests and
//! for reading task-sets back from files.

use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use quick_xml::{Reader, Writer};

use crate::admission::{AdmissionControl, Goal};
use crate::model::{parse_quota, quota_text, Task, TaskSet, ValidationError};

/// A task-set or admission-control document could not be read.
#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    /// The document is not well-formed XML.
    #[error("XML syntax error at byte {position}: {source}")]
    Syntax {
        /// Byte offset where the reader stopped.
        position: u64,
        /// The reader's error (boxed: the XML library's type is not part of this API).
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The document is well-formed but not shaped as expected.
    #[error("XML structure: {0}")]
    Structure(String),
    /// A `<periodictask>` lacks a required element.
    #[error("task #{task} (in document order): missing element <{field}>")]
    MissingField {
        /// Position of the task in the document (0-based).
        task: usize,
        /// The missing element.
        field: &'static str,
    },
    /// An element holds text that is not a value of the expected kind.
    #[error("element <{field}>: {value:?} is not {expected}")]
    BadValue {
        /// The element.
        field: String,
        /// Its text.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// The parsed task-set violates the target's limits.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

/// Write a task-set with quick-xml's `Writer` (the reference for [`TaskSet::write_xml`]).
pub fn write_taskset_reference(set: &TaskSet) -> String {
    let mut w = Writer::new(Vec::with_capacity(512 * set.tasks.len() + 32));
    // Writing into a Vec<u8> cannot fail; errors are only I/O errors of the sink.
    let _ = write_ref_inner(&mut w, set);
    // quick-xml escapes text and we only write `&str` tags, so the output is UTF-8.
    String::from_utf8(w.into_inner()).unwrap_or_default()
}

fn write_ref_inner(w: &mut Writer<Vec<u8>>, set: &TaskSet) -> std::io::Result<()> {
    fn leaf(w: &mut Writer<Vec<u8>>, name: &str, text: &str) -> std::io::Result<()> {
        w.write_event(Event::Start(BytesStart::new(name)))?;
        w.write_event(Event::Text(BytesText::new(text)))?;
        w.write_event(Event::End(BytesEnd::new(name)))
    }
    w.write_event(Event::Start(BytesStart::new("taskset")))?;
    for t in &set.tasks {
        w.write_event(Event::Start(BytesStart::new("periodictask")))?;
        leaf(w, "id", &t.id.to_string())?;
        leaf(w, "executiontime", &t.executiontime_ms.to_string())?;
        leaf(w, "criticaltime", &t.criticaltime_ms.to_string())?;
        leaf(w, "priority", &t.priority.to_string())?;
        leaf(w, "deadline", &t.deadline_ms.to_string())?;
        leaf(w, "period", &t.period_ms.to_string())?;
        leaf(w, "offset", &t.offset_ms.to_string())?;
        leaf(w, "numberofjobs", &t.numberofjobs.to_string())?;
        leaf(w, "quota", &quota_text(t.quota_bytes))?;
        leaf(w, "caps", &t.caps.to_string())?;
        leaf(w, "cores", &t.cores.to_string())?;
        leaf(w, "coreoffset", &t.coreoffset.to_string())?;
        leaf(w, "pkg", &t.pkg)?;
        w.write_event(Event::Start(BytesStart::new("config")))?;
        for (k, v) in &t.config {
            leaf(w, k, v)?;
        }
        w.write_event(Event::End(BytesEnd::new("config")))?;
        w.write_event(Event::End(BytesEnd::new("periodictask")))?;
    }
    w.write_event(Event::End(BytesEnd::new("taskset")))
}

/// Walk a document and call `leaf(path, text)` for every element without child elements, and
/// `open(path)` / `close(path)` for every element. `path` holds the element names from the root.
fn walk(
    xml: &str,
    mut open: impl FnMut(&[String]) -> Result<(), XmlError>,
    mut leaf: impl FnMut(&[String], &str) -> Result<(), XmlError>,
    mut close: impl FnMut(&[String]) -> Result<(), XmlError>,
) -> Result<(), XmlError> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    reader.config_mut().expand_empty_elements = true;
    let mut path: Vec<String> = Vec::new();
    // Per open element: accumulated text, whether it has child elements.
    let mut frames: Vec<(String, bool)> = Vec::new();
    let mut seen_root = false;
    let syntax = |reader: &Reader<&[u8]>, source: quick_xml::Error| XmlError::Syntax {
        position: reader.buffer_position(),
        source: Box::new(source),
    };
    loop {
        let ev = reader.read_event().map_err(|e| syntax(&reader, e))?;
        match ev {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                if path.is_empty() {
                    if seen_root {
                        return Err(XmlError::Structure("more than one root element".into()));
                    }
                    seen_root = true;
                }
                if let Some(parent) = frames.last_mut() {
                    parent.1 = true;
                }
                path.push(name);
                frames.push((String::new(), false));
                open(&path)?;
            }
            Event::End(_) => {
                let (text, has_children) = frames
                    .pop()
                    .ok_or_else(|| XmlError::Structure("unbalanced end tag".into()))?;
                if !has_children {
                    leaf(&path, &text)?;
                }
                close(&path)?;
                path.pop();
            }
            Event::Text(t) => {
                let text = t.unescape().map_err(|e| syntax(&reader, e))?;
                match frames.last_mut() {
                    Some(frame) => frame.0.push_str(&text),
                    None => {
                        return Err(XmlError::Structure(format!(
                            "text {text:?} outside the root element"
                        )))
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !path.is_empty() {
        return Err(XmlError::Structure(format!(
            "document ends inside <{}>",
            path.join("><")
        )));
    }
    if !seen_root {
        return Err(XmlError::Structure("document has no root element".into()));
    }
    Ok(())
}

fn num<T: std::str::FromStr>(field: &str, text: &str) -> Result<T, XmlError> {
    text.parse::<T>().map_err(|_| XmlError::BadValue {
        field: field.to_string(),
        value: text.to_string(),
        expected: "a decimal number in range",
    })
}

/// Which `<periodictask>` children were present.
#[derive(Default)]
struct Seen {
    bits: u16,
}

const TASK_FIELDS: [&str; 14] = [
    "id",
    "executiontime",
    "criticaltime",
    "priority",
    "deadline",
    "period",
    "offset",
    "numberofjobs",
    "quota",
    "caps",
    "cores",
    "coreoffset",
    "pkg",
    "config",
];

/// Read a task-set document as the target would: any root element name, one task per
/// `<periodictask>` child, other children ignored, every field a child element. Unlike the
/// target, every field including `<config>` is required, unknown task children are errors, and
/// the result is validated ([`TaskSet::validate`]).
///
/// ```
/// use taskdist_tasksets::{xml::parse_taskset, Task, TaskSet};
/// let set = TaskSet::new(vec![Task::new(0, "hey")]).unwrap();
/// assert_eq!(parse_taskset(&set.to_xml()).unwrap(), set);
/// ```
pub fn parse_taskset(xml: &str) -> Result<TaskSet, XmlError> {
    let tasks: std::cell::RefCell<Vec<(Task, Seen)>> = Default::default();
    walk(
        xml,
        |path| {
            if path.len() == 2 && path[1] == "periodictask" {
                tasks
                    .borrow_mut()
                    .push((Task::new(0, String::new()), Seen::default()));
            } else if path.len() == 3 && path[1] == "periodictask" && path[2] == "config" {
                if let Some((_, seen)) = tasks.borrow_mut().last_mut() {
                    if seen.bits & (1 << 13) != 0 {
                        return Err(XmlError::Structure(
                            "element <config> appears twice in one <periodictask>".into(),
                        ));
                    }
                    seen.bits |= 1 << 13;
                }
            }
            Ok(())
        },
        |path, text| {
            if path.len() < 3 || path[1] != "periodictask" {
                return Ok(());
            }
            let mut tasks = tasks.borrow_mut();
            let Some((task, seen)) = tasks.last_mut() else {
                return Ok(());
            };
            if path.len() == 4 && path[2] == "config" {
                task.config.push((path[3].clone(), text.to_string()));
                return Ok(());
            }
            if path.len() != 3 {
                return Err(XmlError::Structure(format!(
                    "unexpected element <{}> inside <periodictask>",
                    path[2..].join("><")
                )));
            }
            let field = path[2].as_str();
            if field == "config" {
                // An empty <config></config>; counted when it was opened.
                return Ok(());
            }
            let pos = TASK_FIELDS
                .iter()
                .position(|f| *f == field)
                .ok_or_else(|| {
                    XmlError::Structure(format!("unknown element <{field}> in <periodictask>"))
                })?;
            if seen.bits & (1 << pos) != 0 {
                return Err(XmlError::Structure(format!(
                    "element <{field}> appears twice in one <periodictask>"
                )));
            }
            seen.bits |= 1 << pos;
            match field {
                "id" => task.id = num(field, text)?,
                "executiontime" => task.executiontime_ms = num(field, text)?,
                "criticaltime" => task.criticaltime_ms = num(field, text)?,
                "priority" => task.priority = num(field, text)?,
                "deadline" => task.deadline_ms = num(field, text)?,
                "period" => task.period_ms = num(field, text)?,
                "offset" => task.offset_ms = num(field, text)?,
                "numberofjobs" => task.numberofjobs = num(field, text)?,
                "quota" => {
                    task.quota_bytes = parse_quota(text).ok_or_else(|| XmlError::BadValue {
                        field: field.into(),
                        value: text.into(),
                        expected: "bytes with an optional K/M/G suffix",
                    })?
                }
                "caps" => task.caps = num(field, text)?,
                "cores" => task.cores = num(field, text)?,
                "coreoffset" => task.coreoffset = num(field, text)?,
                "pkg" => task.pkg = text.to_string(),
                // An empty <config></config> is a leaf.
                _ => {}
            }
            Ok(())
        },
        |_| Ok(()),
    )?;
    let mut out = Vec::new();
    for (i, (task, seen)) in tasks.into_inner().into_iter().enumerate() {
        if let Some(pos) = (0..TASK_FIELDS.len()).find(|p| seen.bits & (1 << p) == 0) {
            return Err(XmlError::MissingField {
                task: i,
                field: TASK_FIELDS[pos],
            });
        }
        out.push(task);
    }
    Ok(TaskSet::new(out)?)
}

/// Read an `<optimize>` admission-control document. The goal is fairness if its `apply` is
/// non-zero, else utilization if non-zero, else none; `query_interval` is required.
pub fn parse_admission(xml: &str) -> Result<AdmissionControl, XmlError> {
    let mut fairness = 0u32;
    let mut utilization = 0u32;
    let mut interval: Option<u32> = None;
    let mut root_ok = true;
    walk(
        xml,
        |path| {
            if path.len() == 1 && path[0] != "optimize" {
                root_ok = false;
            }
            Ok(())
        },
        |path, text| {
            let p: Vec<&str> = path.iter().map(String::as_str).collect();
            match p.as_slice() {
                ["optimize", "goal", "fairness", "apply"] => fairness = num("apply", text)?,
                ["optimize", "goal", "utilization", "apply"] => utilization = num("apply", text)?,
                ["optimize", "query_interval"] => interval = Some(num("query_interval", text)?),
                _ => {}
            }
            Ok(())
        },
        |_| Ok(()),
    )?;
    if !root_ok {
        return Err(XmlError::Structure(
            "admission-control root element must be <optimize>".into(),
        ));
    }
    let query_interval_ms = interval.ok_or_else(|| {
        XmlError::Structure("<optimize> lacks its <query_interval> element".into())
    })?;
    let goal = if fairness != 0 {
        Goal::Fairness
    } else if utilization != 0 {
        Goal::Utilization
    } else {
        Goal::None
    };
    Ok(AdmissionControl {
        goal,
        query_interval_ms,
    })
}
