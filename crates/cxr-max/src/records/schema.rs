//! Schema tolerance: the names each field goes by, the layouts (trajectories nested in the
//! record, one column per teacher, one row per teacher) and [`FieldMapping`], the names of
//! layouts nobody foresaw.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{Map, Value};

use super::Trajectory;
use crate::{CxrError, Result};

/// Names for the fields of layouts nobody foresaw (a small TOML file, see `docs/data.md`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FieldMapping {
    /// Extra names of the image id field.
    pub dicom_id: Vec<String>,
    /// Extra names of the subject id field.
    pub subject_id: Vec<String>,
    /// Extra names of the study id field.
    pub study_id: Vec<String>,
    /// Extra names of the prompt field.
    pub prompt: Vec<String>,
    /// Extra names of a list-of-trajectories field.
    pub trajectories: Vec<String>,
    /// Extra names of the teacher key inside trajectory objects or long rows.
    pub teacher_key: Vec<String>,
    /// Extra names of the text key inside trajectory objects or long rows.
    pub text_key: Vec<String>,
    /// Wide layout: column name → teacher name.
    pub teacher_columns: BTreeMap<String, String>,
}

impl FieldMapping {
    /// Reads a mapping file.
    ///
    /// # Errors
    /// [`CxrError::Io`], [`CxrError::Config`].
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| CxrError::Io {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| CxrError::Config {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }
}

const DICOM: &[&str] = &["dicom_id", "dicom", "image_id", "image"];
const SUBJECT: &[&str] = &["subject_id", "pid", "patient_id"];
const STUDY: &[&str] = &["study_id", "sid"];
const PROMPT: &[&str] = &["prompt", "question", "instruction", "query"];
const REPORT: &[&str] = &["report", "findings_text"];
const DIAGNOSE: &[&str] = &["diagnose", "diagnosis", "labels", "label"];
const LISTS: &[&str] = &[
    "trajectories",
    "responses",
    "outputs",
    "answers",
    "teachers",
    "sources",
];
const TEACHER_KEYS: &[&str] = &["model", "teacher", "source", "model_name", "name"];
const TEXT_KEYS: &[&str] = &[
    "response",
    "trajectory",
    "text",
    "output",
    "content",
    "answer",
];

/// Teacher names recognised as columns of the wide layout (case-insensitive): the seven
/// CXR-MAX sources under the names the paper and the data set card use.
pub const KNOWN_TEACHERS: &[&str] = &[
    "GPT-5",
    "GPT-5-nano",
    "Gemini-2.5",
    "Gemini-2.5-flash-lite",
    "Sonnet-4",
    "Claude Sonnet-4",
    "Claude-Sonnet-4",
    "Qwen-VL-Max",
    "Qwen-VL(M)",
    "Grok-4",
    "GLM-4.5V",
    "Moonshot",
    "Moonshot-v1",
];

/// The first trajectory whose teacher already appears earlier in the same record.
pub(super) fn repeated_teacher(trajectories: &[Trajectory]) -> Option<&Trajectory> {
    trajectories
        .iter()
        .enumerate()
        .find(|(i, t)| trajectories[..*i].iter().any(|s| s.teacher == t.teacher))
        .map(|(_, t)| t)
}

pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn take_field<'a>(
    m: &'a Map<String, Value>,
    names: &[&str],
    extra: &[String],
    used: &mut BTreeSet<String>,
) -> Option<&'a Value> {
    for n in names
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
    {
        if let Some(v) = m.get(n) {
            used.insert(n.to_owned());
            if !v.is_null() {
                return Some(v);
            }
        }
    }
    None
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The longest trajectory accepted, in bytes. CXR-MAX's trajectories are a few kilobytes; a
/// record with a longer one is rejected (with its line and size) rather than costing the
/// labeler and the consensus build minutes.
pub const MAX_TRAJECTORY_BYTES: usize = 65_536;

/// A trajectory's text: a string with something other than white space, at most
/// [`MAX_TRAJECTORY_BYTES`] long. A number, an empty or blank string is not a trajectory (a
/// number is most often a column shifted by one).
fn trajectory_text(v: &Value) -> std::result::Result<String, String> {
    match v {
        Value::String(s) if s.len() > MAX_TRAJECTORY_BYTES => Err(format!(
            "{} bytes long, over the limit of {MAX_TRAJECTORY_BYTES} bytes",
            s.len()
        )),
        Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
        Value::String(s) if s.is_empty() => Err("an empty string".to_owned()),
        Value::String(_) => Err("blank (white space only)".to_owned()),
        other => Err(format!("{}, not text", kind(other))),
    }
}

fn as_id(v: &Value) -> std::result::Result<u64, String> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| format!("{n} is not a non-negative integer id")),
        Value::String(s) => {
            let t = s.trim().trim_start_matches(['p', 's']);
            t.parse::<u64>()
                .map_err(|_| format!("`{s}` is not an integer id"))
        }
        other => Err(format!("expected an integer id, found {}", kind(other))),
    }
}

/// What one record says, before grouping.
pub(crate) struct Parsed {
    pub(super) dicom_id: String,
    pub(super) subject_id: Option<u64>,
    pub(super) study_id: Option<u64>,
    pub(super) prompt: Option<String>,
    pub(super) report: Option<String>,
    pub(super) diagnose: Option<String>,
    pub(super) trajectories: Vec<Trajectory>,
}

pub(super) fn parse_object(
    m: &Map<String, Value>,
    mapping: &FieldMapping,
    unknown: &mut BTreeMap<String, usize>,
) -> std::result::Result<Parsed, (Option<String>, String)> {
    let mut used = BTreeSet::new();
    let dicom_id = take_field(m, DICOM, &mapping.dicom_id, &mut used)
        .and_then(as_text)
        .map(|s| s.trim().to_owned());
    let dicom_id = match dicom_id {
        Some(d) if !d.is_empty() => d,
        _ => {
            return Err((
                None,
                format!("missing image id (one of {})", DICOM.join(", ")),
            ));
        }
    };
    let id_err = |e: String| (Some(dicom_id.clone()), e);
    let subject_id = take_field(m, SUBJECT, &mapping.subject_id, &mut used)
        .map(as_id)
        .transpose()
        .map_err(|e| id_err(format!("subject id: {e}")))?;
    let study_id = take_field(m, STUDY, &mapping.study_id, &mut used)
        .map(as_id)
        .transpose()
        .map_err(|e| id_err(format!("study id: {e}")))?;
    let prompt = take_field(m, PROMPT, &mapping.prompt, &mut used).and_then(as_text);
    let report = take_field(m, REPORT, &[], &mut used).and_then(as_text);
    let diagnose = take_field(m, DIAGNOSE, &[], &mut used).map(|v| match v {
        Value::Array(a) => a.iter().filter_map(as_text).collect::<Vec<_>>().join(", "),
        other => as_text(other).unwrap_or_default(),
    });

    let teacher_keys: Vec<&str> = TEACHER_KEYS
        .iter()
        .copied()
        .chain(mapping.teacher_key.iter().map(String::as_str))
        .collect();
    let text_keys: Vec<&str> = TEXT_KEYS
        .iter()
        .copied()
        .chain(mapping.text_key.iter().map(String::as_str))
        .collect();
    let pick = |o: &Map<String, Value>, keys: &[&str]| {
        keys.iter().find_map(|k| o.get(*k).and_then(as_text))
    };

    let mut trajectories = Vec::new();
    let mut shape_found = false;
    // 1. A list of {teacher, text} objects (or a {teacher: text} object).
    if let Some(list) = take_field(m, LISTS, &mapping.trajectories, &mut used) {
        shape_found = true;
        match list {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let Value::Object(o) = item else {
                        return Err(id_err(format!(
                            "trajectory {i} is {}, not an object",
                            kind(item)
                        )));
                    };
                    let teacher = pick(o, &teacher_keys).ok_or_else(|| {
                        id_err(format!(
                            "trajectory {i} has no teacher name (one of {})",
                            teacher_keys.join(", ")
                        ))
                    })?;
                    let value = text_keys.iter().find_map(|k| o.get(*k)).ok_or_else(|| {
                        id_err(format!(
                            "trajectory {i} ({teacher}) has no text (one of {})",
                            text_keys.join(", ")
                        ))
                    })?;
                    let text = trajectory_text(value)
                        .map_err(|e| id_err(format!("trajectory {i} ({teacher}) is {e}")))?;
                    trajectories.push(Trajectory { teacher, text });
                }
            }
            Value::Object(o) => {
                for (teacher, v) in o {
                    let text = trajectory_text(v)
                        .map_err(|e| id_err(format!("trajectory of {teacher} is {e}")))?;
                    trajectories.push(Trajectory {
                        teacher: teacher.clone(),
                        text,
                    });
                }
            }
            other => {
                return Err(id_err(format!(
                    "the trajectory list is {}, not an array or object",
                    kind(other)
                )));
            }
        }
    }
    // 2. Long layout: teacher and text at the top level.
    if !shape_found
        && let (Some(tk), Some(xk)) = (
            teacher_keys.iter().find(|k| m.contains_key(**k)),
            text_keys.iter().find(|k| m.contains_key(**k)),
        )
    {
        shape_found = true;
        used.insert((*tk).to_owned());
        used.insert((*xk).to_owned());
        let teacher = as_text(&m[*tk]).ok_or_else(|| id_err(format!("`{tk}` is not text")))?;
        let text = trajectory_text(&m[*xk]).map_err(|e| id_err(format!("`{xk}` is {e}")))?;
        trajectories.push(Trajectory { teacher, text });
    }
    // 3. Wide layout: one column per teacher.
    if !shape_found {
        for (k, v) in m {
            let teacher = mapping.teacher_columns.get(k).cloned().or_else(|| {
                KNOWN_TEACHERS
                    .iter()
                    .find(|t| t.eq_ignore_ascii_case(k))
                    .map(|t| (*t).to_owned())
            });
            if let Some(teacher) = teacher {
                used.insert(k.clone());
                match v {
                    Value::Null => {}
                    Value::String(s) if s.is_empty() => {}
                    v => {
                        let text = trajectory_text(v).map_err(|e| {
                            id_err(format!("trajectory of {teacher} (column `{k}`) is {e}"))
                        })?;
                        trajectories.push(Trajectory { teacher, text });
                    }
                }
            }
        }
        shape_found = !trajectories.is_empty();
    }
    if !shape_found {
        return Err(id_err("no trajectories: not a list of {model, response} objects, not one row per teacher, and no teacher columns (add a mapping file for other layouts)".to_owned()));
    }
    for k in m.keys() {
        if !used.contains(k) {
            *unknown.entry(k.clone()).or_default() += 1;
        }
    }
    if let Some(t) = repeated_teacher(&trajectories) {
        return Err(id_err(format!(
            "teacher `{}` appears twice in the record",
            t.teacher
        )));
    }
    Ok(Parsed {
        dicom_id,
        subject_id,
        study_id,
        prompt,
        report,
        diagnose,
        trajectories,
    })
}
