//! Schema-tolerant reading of CXR-MAX record files (JSON array, JSONL, CSV; Parquet with the
//! `parquet` feature) into samples: one image, its prompt and every teacher trajectory.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::{CxrError, Result};

/// One teacher's trajectory for one image.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Trajectory {
    /// Teacher (source model) name.
    pub teacher: String,
    /// The trajectory text.
    pub text: String,
}

/// One image with its prompt and all its teacher trajectories.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// MIMIC-CXR `dicom_id` (the image).
    pub dicom_id: String,
    /// MIMIC-CXR `subject_id` (patient), when the record has it.
    pub subject_id: Option<u64>,
    /// MIMIC-CXR `study_id`, when the record has it.
    pub study_id: Option<u64>,
    /// The prompt the teachers answered.
    pub prompt: Option<String>,
    /// The radiology report, when present.
    pub report: Option<String>,
    /// The diagnosis string of the record (authors' `diagnose` field), when present.
    pub diagnose: Option<String>,
    /// Trajectories, one per teacher, in file order.
    pub trajectories: Vec<Trajectory>,
    /// Where the record is: file and 1-based line (JSONL, CSV) or record index (JSON, Parquet).
    pub source: Location,
}

/// A file position.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Location {
    /// The file.
    pub path: PathBuf,
    /// 1-based line (JSONL, CSV counting the header) or 1-based record number (JSON array).
    pub line: usize,
}

/// A record that was read but not kept, with the reason.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rejected {
    /// Where it is.
    pub source: Location,
    /// Its id, when one could be read.
    pub record_id: Option<String>,
    /// Why it was rejected.
    pub reason: String,
    /// The raw text of the record (possibly truncated to 2000 characters).
    pub raw: String,
}

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

/// The result of reading a record file.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecordsRead {
    /// Samples kept, grouped by image.
    pub samples: Vec<Sample>,
    /// Records rejected, with reasons.
    pub rejected: Vec<Rejected>,
    /// Records (lines, array items, rows) read: `read = kept_records + rejected.len()`.
    pub read: usize,
    /// Records that went into a sample (several in the long layout make one sample).
    pub kept_records: usize,
    /// Fields that were present but not understood, with how many records had each.
    pub unknown_fields: BTreeMap<String, usize>,
}

/// The format of a record file, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line (`.jsonl`, `.ndjson`).
    JsonLines,
    /// A JSON array of objects (`.json`).
    JsonArray,
    /// CSV with a header (`.csv`).
    Csv,
    /// Apache Parquet (`.parquet`, feature `parquet`).
    Parquet,
}

impl Format {
    /// The format of `path` from its extension (a trailing `.gz` is allowed for text formats).
    ///
    /// # Errors
    /// [`CxrError::Schema`] for an unknown extension.
    pub fn of(path: &Path) -> Result<Self> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
            Ok(Format::JsonLines)
        } else if name.ends_with(".json") {
            Ok(Format::JsonArray)
        } else if name.ends_with(".csv") {
            Ok(Format::Csv)
        } else if name.ends_with(".parquet") {
            Ok(Format::Parquet)
        } else {
            Err(CxrError::Schema {
                path: path.to_owned(),
                reason: "unknown record format; expected .jsonl, .json, .csv or .parquet (optionally .gz)".to_owned(),
            })
        }
    }
}

/// Opens a file for reading, decompressing `.gz`.
pub(crate) fn open_text(path: &Path) -> Result<Box<dyn BufRead>> {
    let file = std::fs::File::open(path).map_err(|source| CxrError::Io {
        path: path.to_owned(),
        source,
    })?;
    let is_gz = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    Ok(if is_gz {
        Box::new(std::io::BufReader::with_capacity(
            1 << 20,
            flate2::read::MultiGzDecoder::new(file),
        ))
    } else {
        Box::new(std::io::BufReader::with_capacity(1 << 20, file))
    })
}

fn raw_text(v: &str) -> String {
    v.chars().take(2000).collect()
}

/// Reads a record file. Bad records are rejected with a reason (lenient); nothing is
/// silently dropped: `read = kept_records + rejected`.
///
/// # Errors
/// [`CxrError::Io`] and [`CxrError::Schema`] for files that cannot be read at all (including
/// a truncated gzip stream, reported with the line reached).
pub fn read_records(path: &Path, mapping: &FieldMapping) -> Result<RecordsRead> {
    let mut interpreter = Interpreter::new(mapping);
    read_rows(path, &mut |rows| interpreter.feed(rows))?;
    Ok(interpreter.finish())
}

/// One raw record: its location, its object (or why it is not one) and its text.
pub(crate) struct RawRow {
    pub(crate) source: Location,
    pub(crate) object: std::result::Result<Map<String, Value>, String>,
    pub(crate) raw: String,
    /// Already interpreted by the typed fast path (then `object` is unused).
    pub(crate) parsed: Option<Parsed>,
}

/// The common CXR-MAX shape, parsed without building a JSON tree. Anything else (other
/// names, extra fields, other types) falls back to the general interpretation.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FastRecord {
    dicom_id: String,
    #[serde(default)]
    subject_id: Option<u64>,
    #[serde(default)]
    study_id: Option<u64>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    report: Option<String>,
    #[serde(default)]
    diagnose: Option<String>,
    trajectories: Vec<FastTrajectory>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FastTrajectory {
    #[serde(alias = "teacher")]
    model: String,
    #[serde(alias = "trajectory", alias = "text")]
    response: String,
}

fn fast_parse(line: &str) -> Option<Parsed> {
    let r: FastRecord = serde_json::from_str(line).ok()?;
    if r.dicom_id.trim().is_empty() || r.dicom_id.trim() != r.dicom_id {
        return None;
    }
    let parsed = Parsed {
        dicom_id: r.dicom_id,
        subject_id: r.subject_id,
        study_id: r.study_id,
        prompt: r.prompt,
        report: r.report,
        diagnose: r.diagnose,
        trajectories: r
            .trajectories
            .into_iter()
            .map(|t| Trajectory {
                teacher: t.model,
                text: t.response,
            })
            .collect(),
    };
    // A teacher twice in one record: the general path rejects it with its reason.
    repeated_teacher(&parsed.trajectories)
        .is_none()
        .then_some(parsed)
}

/// The first trajectory whose teacher already appears earlier in the same record.
fn repeated_teacher(trajectories: &[Trajectory]) -> Option<&Trajectory> {
    trajectories
        .iter()
        .enumerate()
        .find(|(i, t)| trajectories[..*i].iter().any(|s| s.teacher == t.teacher))
        .map(|(_, t)| t)
}

/// Parses one JSON line: the typed fast path, or the general JSON tree.
fn parse_line(source: Location, line: &str) -> RawRow {
    if let Some(parsed) = fast_parse(line) {
        return RawRow {
            source,
            object: Err(String::new()),
            raw: String::new(),
            parsed: Some(parsed),
        };
    }
    let object = match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!("expected a JSON object, found {}", kind(&other))),
        Err(e) => Err(format!("invalid JSON: {e}")),
    };
    RawRow {
        source,
        object,
        raw: raw_text(line),
        parsed: None,
    }
}

/// Bytes per block handed to a parsing thread (a block ends at a line end).
const BLOCK: usize = 1 << 20;

/// Splits one block of whole JSON Lines into rows, numbering lines from 1 within the block;
/// also returns the number of line ends in the block.
fn parse_block(path: &Path, block: &[u8]) -> (Vec<RawRow>, usize) {
    let mut rows = Vec::new();
    let mut start = 0;
    let mut line = 0;
    let unterminated = block.last().is_some_and(|&b| b != b'\n');
    let ends = memchr::memchr_iter(b'\n', block).chain(unterminated.then_some(block.len()));
    for end in ends {
        line += 1;
        let bytes = &block[start..end];
        start = end + 1;
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let source = Location {
            path: path.to_owned(),
            line,
        };
        rows.push(match std::str::from_utf8(bytes) {
            Ok(text) => parse_line(source, text),
            Err(e) => RawRow {
                source,
                object: Err(format!(
                    "invalid UTF-8 at byte {} of the line",
                    e.valid_up_to() + 1
                )),
                raw: raw_text(&String::from_utf8_lossy(bytes)),
                parsed: None,
            },
        });
    }
    (rows, line - usize::from(unterminated))
}

/// Reads `input` into `buf` until it holds at least `block` bytes and a line end past that
/// mark, or the input ends. Returns whether the input ended.
fn fill_block(input: &mut dyn Read, buf: &mut Vec<u8>, block: usize) -> std::io::Result<bool> {
    let mut scanned = 0;
    let step = (block / 64).clamp(1, 1 << 16);
    loop {
        if buf.len() >= block && memchr::memchr(b'\n', &buf[scanned.max(block)..]).is_some() {
            return Ok(false);
        }
        scanned = buf.len();
        let want = (block + step).saturating_sub(buf.len()).max(step);
        let n = Read::take(&mut *input, want as u64).read_to_end(buf)?;
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads JSON Lines in blocks of about `block_size` bytes, parsed on all cores, and hands the
/// rows of each block to `sink` in file order (on this thread, while later blocks are parsed).
fn read_json_lines_in_blocks(
    path: &Path,
    block_size: usize,
    sink: &mut dyn FnMut(Vec<RawRow>),
) -> Result<()> {
    use std::sync::{Arc, Mutex, mpsc};
    type Done = (usize, (Vec<RawRow>, usize), Vec<u8>);

    /// Parsed blocks waiting for the ones before them, and the next block to hand on.
    struct InOrder {
        waiting: std::collections::BTreeMap<usize, (Vec<RawRow>, usize)>,
        next: usize,
        lines: usize,
        spare: Vec<Vec<u8>>,
    }
    impl InOrder {
        fn take(&mut self, (index, part, block): Done, sink: &mut dyn FnMut(Vec<RawRow>)) {
            self.waiting.insert(index, part);
            self.spare.push(block);
            while let Some((mut rows, lines)) = self.waiting.remove(&self.next) {
                for row in &mut rows {
                    row.source.line += self.lines;
                }
                self.lines += lines;
                self.next += 1;
                sink(rows);
            }
        }
    }

    let mut input = open_text(path)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        let (work_tx, work_rx) = mpsc::sync_channel::<(usize, Vec<u8>)>(threads);
        let work_rx = Arc::new(Mutex::new(work_rx));
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        for _ in 0..threads {
            let work_rx = Arc::clone(&work_rx);
            let done_tx = done_tx.clone();
            scope.spawn(move || {
                loop {
                    let job = match work_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((index, block)) = job else {
                        return;
                    };
                    let rows = parse_block(path, &block);
                    if done_tx.send((index, rows, block)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        let mut order = InOrder {
            waiting: std::collections::BTreeMap::new(),
            next: 0,
            lines: 0,
            spare: Vec::new(),
        };
        let mut carry: Vec<u8> = Vec::new();
        let mut index = 0;
        loop {
            for done in done_rx.try_iter() {
                order.take(done, sink);
            }
            let mut block = order.spare.pop().unwrap_or_default();
            block.clear();
            block.append(&mut carry);
            let ended = match fill_block(&mut input, &mut block, block_size) {
                Ok(ended) => ended,
                Err(e) => {
                    drop(work_tx);
                    for done in done_rx.iter() {
                        order.take(done, sink);
                    }
                    return Err(CxrError::Record {
                        path: path.to_owned(),
                        line: order.lines + memchr::memchr_iter(b'\n', &block).count() + 1,
                        reason: format!("cannot read further (truncated or corrupt file?): {e}"),
                    });
                }
            };
            if !ended && let Some(end) = memchr::memrchr(b'\n', &block) {
                carry.extend_from_slice(&block[end + 1..]);
                block.truncate(end + 1);
            }
            if !block.is_empty() {
                // While every parser is busy, hand on the blocks parsed so far.
                let mut job = (index, block);
                loop {
                    match work_tx.try_send(job) {
                        Ok(()) => break,
                        Err(mpsc::TrySendError::Full(back)) => {
                            job = back;
                            if let Ok(done) =
                                done_rx.recv_timeout(std::time::Duration::from_millis(1))
                            {
                                order.take(done, sink);
                            }
                        }
                        // Every parser is gone; the check below reports it.
                        Err(mpsc::TrySendError::Disconnected(_)) => break,
                    }
                }
                index += 1;
            }
            if ended {
                break;
            }
        }
        drop(work_tx);
        for done in done_rx.iter() {
            order.take(done, sink);
        }
        if order.next != index {
            return Err(CxrError::Schema {
                path: path.to_owned(),
                reason: "a record parser stopped early".to_owned(),
            });
        }
        Ok(())
    })
}

/// Reads the raw records of `path` and hands them to `sink` in file order: JSON Lines block
/// by block, the other formats at once.
fn read_rows(path: &Path, sink: &mut dyn FnMut(Vec<RawRow>)) -> Result<()> {
    let loc = |line: usize| Location {
        path: path.to_owned(),
        line,
    };
    let rows: Result<Vec<RawRow>> = match Format::of(path)? {
        Format::JsonLines => return read_json_lines_in_blocks(path, BLOCK, sink),
        Format::JsonArray => {
            let mut text = String::new();
            open_text(path)?
                .read_to_string(&mut text)
                .map_err(|source| CxrError::Io {
                    path: path.to_owned(),
                    source,
                })?;
            let value: Value = serde_json::from_str(&text).map_err(|e| CxrError::Record {
                path: path.to_owned(),
                line: e.line(),
                reason: format!("invalid JSON: {e}"),
            })?;
            let items = match value {
                Value::Array(items) => items,
                other => {
                    return Err(CxrError::Schema {
                        path: path.to_owned(),
                        reason: format!("expected a JSON array of records, found {}", kind(&other)),
                    });
                }
            };
            Ok(items
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    let raw = raw_text(&v.to_string());
                    let object = match v {
                        Value::Object(m) => Ok(m),
                        other => Err(format!("expected a JSON object, found {}", kind(&other))),
                    };
                    RawRow {
                        source: loc(i + 1),
                        object,
                        raw,
                        parsed: None,
                    }
                })
                .collect())
        }
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .flexible(true)
                .from_reader(open_text(path)?);
            let headers = reader
                .headers()
                .map_err(|e| CxrError::Schema {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?
                .clone();
            let mut rows = Vec::new();
            for (i, rec) in reader.records().enumerate() {
                let line = i + 2;
                let rec = match rec {
                    Ok(r) => r,
                    Err(e) if e.is_io_error() => {
                        return Err(CxrError::Record {
                            path: path.to_owned(),
                            line,
                            reason: format!("cannot read further: {e}"),
                        });
                    }
                    Err(e) => {
                        rows.push(RawRow {
                            source: loc(line),
                            object: Err(format!("malformed CSV row: {e}")),
                            raw: String::new(),
                            parsed: None,
                        });
                        continue;
                    }
                };
                let raw = raw_text(&rec.iter().collect::<Vec<_>>().join(","));
                let object = if rec.len() != headers.len() {
                    Err(format!(
                        "row has {} fields but the header has {}",
                        rec.len(),
                        headers.len()
                    ))
                } else {
                    Ok(headers
                        .iter()
                        .zip(rec.iter())
                        .filter(|(_, v)| !v.is_empty())
                        .map(|(h, v)| (h.to_owned(), Value::String(v.to_owned())))
                        .collect())
                };
                rows.push(RawRow {
                    source: loc(line),
                    object,
                    raw,
                    parsed: None,
                });
            }
            Ok(rows)
        }
        Format::Parquet => read_parquet(path),
    };
    sink(rows?);
    Ok(())
}

#[cfg(not(feature = "parquet"))]
fn read_parquet(path: &Path) -> Result<Vec<RawRow>> {
    Err(CxrError::Schema {
        path: path.to_owned(),
        reason: "Parquet support is not compiled in; build cxr-max with the `parquet` feature"
            .to_owned(),
    })
}

#[cfg(feature = "parquet")]
fn read_parquet(path: &Path) -> Result<Vec<RawRow>> {
    crate::parquet::read_rows(path)
}

fn kind(v: &Value) -> &'static str {
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
    dicom_id: String,
    subject_id: Option<u64>,
    study_id: Option<u64>,
    prompt: Option<String>,
    report: Option<String>,
    diagnose: Option<String>,
    trajectories: Vec<Trajectory>,
}

fn parse_object(
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
                    let text = pick(o, &text_keys).ok_or_else(|| {
                        id_err(format!(
                            "trajectory {i} ({teacher}) has no text (one of {})",
                            text_keys.join(", ")
                        ))
                    })?;
                    trajectories.push(Trajectory { teacher, text });
                }
            }
            Value::Object(o) => {
                for (teacher, v) in o {
                    let text = as_text(v).ok_or_else(|| {
                        id_err(format!("trajectory of {teacher} is {}, not text", kind(v)))
                    })?;
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
        let text = as_text(&m[*xk]).ok_or_else(|| id_err(format!("`{xk}` is not text")))?;
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
                if let Some(text) = as_text(v) {
                    trajectories.push(Trajectory { teacher, text });
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

/// Groups rows, fed in file order, into samples.
pub(crate) struct Interpreter<'m> {
    mapping: &'m FieldMapping,
    out: RecordsRead,
    index: std::collections::HashMap<String, usize, crate::tables::IdHash>,
}

impl<'m> Interpreter<'m> {
    pub(crate) fn new(mapping: &'m FieldMapping) -> Self {
        Interpreter {
            mapping,
            out: RecordsRead::default(),
            index: std::collections::HashMap::with_hasher(crate::tables::IdHash),
        }
    }

    pub(crate) fn finish(self) -> RecordsRead {
        self.out
    }

    /// Takes the next rows of the file.
    pub(crate) fn feed(&mut self, rows: Vec<RawRow>) {
        self.out.read += rows.len();
        self.out.samples.reserve(rows.len());
        self.index.reserve(rows.len());
        for row in rows {
            match self.take(row) {
                Ok(()) => self.out.kept_records += 1,
                Err(rejected) => self.out.rejected.push(rejected),
            }
        }
    }

    /// Adds one row to its image's sample (a new one for an unseen image).
    fn take(&mut self, row: RawRow) -> std::result::Result<(), Rejected> {
        let reject = |record_id, reason| Rejected {
            source: row.source.clone(),
            record_id,
            reason,
            raw: row.raw.clone(),
        };
        let p = match (row.parsed, &row.object) {
            (Some(p), _) => p,
            (None, Err(reason)) => return Err(reject(None, reason.clone())),
            (None, Ok(m)) => parse_object(m, self.mapping, &mut self.out.unknown_fields)
                .map_err(|(id, reason)| reject(id, reason))?,
        };
        let Some(&i) = self.index.get(&p.dicom_id) else {
            self.index
                .insert(p.dicom_id.clone(), self.out.samples.len());
            self.out.samples.push(Sample {
                dicom_id: p.dicom_id,
                subject_id: p.subject_id,
                study_id: p.study_id,
                prompt: p.prompt,
                report: p.report,
                diagnose: p.diagnose,
                trajectories: p.trajectories,
                source: row.source,
            });
            return Ok(());
        };
        let sample = &mut self.out.samples[i];
        let dup = p
            .trajectories
            .iter()
            .find(|t| sample.trajectories.iter().any(|s| s.teacher == t.teacher));
        if let Some(t) = dup {
            let reason = format!(
                "duplicate trajectory of teacher `{}` for image {} (first at line {})",
                t.teacher, p.dicom_id, sample.source.line
            );
            return Err(reject(Some(p.dicom_id.clone()), reason));
        }
        sample.trajectories.extend(p.trajectories);
        sample.subject_id = sample.subject_id.or(p.subject_id);
        sample.study_id = sample.study_id.or(p.study_id);
        sample.prompt = sample.prompt.take().or(p.prompt);
        sample.report = sample.report.take().or(p.report);
        sample.diagnose = sample.diagnose.take().or(p.diagnose);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a row says, for comparing two reads.
    fn summary(rows: &[RawRow]) -> Vec<(usize, String)> {
        rows.iter()
            .map(|r| {
                let what = match (&r.parsed, &r.object) {
                    (Some(p), _) => format!("fast {} {}", p.dicom_id, p.trajectories.len()),
                    (None, Ok(m)) => format!("object {}", m.len()),
                    (None, Err(e)) => format!("error {e} / {}", r.raw),
                };
                (r.source.line, what)
            })
            .collect()
    }

    fn record(i: usize, text_len: usize) -> String {
        format!(
            r#"{{"dicom_id":"d{i}","study_id":{i},"trajectories":[{{"model":"A","response":"{}"}},{{"model":"B","response":"x\"y"}}]}}"#,
            "z".repeat(text_len)
        )
    }

    /// Every block size gives the rows of a plain line-by-line read, with the same line
    /// numbers: blank, CRLF, invalid UTF-8, malformed and over-long lines, no final newline.
    #[test]
    fn blocks_read_like_one_pass() {
        let dir = std::env::temp_dir().join(format!("cxr-max-blocks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut bytes = Vec::new();
        for i in 0..30 {
            match i % 10 {
                3 => bytes.extend_from_slice(b"\n   \n"),
                4 => bytes.extend_from_slice(format!("{}\r\n", record(i, 5)).as_bytes()),
                5 => bytes.extend_from_slice(b"{\"dicom_id\":\"bad\xff\xfe\"}\n"),
                6 => bytes.extend_from_slice(b"{\"dicom_id\": \"cut\n"),
                7 => bytes.extend_from_slice(format!("{}\n", record(i, 700)).as_bytes()),
                8 => bytes
                    .extend_from_slice(b"{\"dicom_id\":\"g\",\"model\":\"A\",\"text\":\"t\"}\n"),
                _ => bytes.extend_from_slice(format!("{}\n", record(i, i)).as_bytes()),
            }
        }
        bytes.extend_from_slice(record(99, 3).as_bytes()); // no final newline
        let path = dir.join("r.jsonl");
        std::fs::write(&path, &bytes).unwrap();
        let gz = dir.join("r.jsonl.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &bytes).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();

        // The reference: split on line ends, one line after another.
        let reference: Vec<RawRow> = bytes
            .split(|&b| b == b'\n')
            .enumerate()
            .filter_map(|(i, l)| {
                let l = l.strip_suffix(b"\r").unwrap_or(l);
                let loc = Location {
                    path: path.clone(),
                    line: i + 1,
                };
                if l.iter().all(u8::is_ascii_whitespace) {
                    None
                } else if let Ok(t) = std::str::from_utf8(l) {
                    Some(parse_line(loc, t))
                } else {
                    Some(RawRow {
                        source: loc,
                        object: Err("invalid UTF-8 at byte 17 of the line".to_owned()),
                        raw: raw_text(&String::from_utf8_lossy(l)),
                        parsed: None,
                    })
                }
            })
            .collect();
        let want = summary(&reference);
        assert_eq!(want.len(), 28);
        assert_eq!(want.last().unwrap().0, 34);
        assert_eq!(
            want.iter().filter(|(_, w)| w.starts_with("fast")).count(),
            19
        );
        for block in (1..120).chain([500, 701, 4096, 1 << 20]) {
            for file in [&path, &gz] {
                let mut rows = Vec::new();
                read_json_lines_in_blocks(file, block, &mut |part| rows.extend(part)).unwrap();
                assert_eq!(summary(&rows), want, "block {block}, {}", file.display());
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A teacher twice in one record is rejected with its line, on the typed fast path and on
    /// the general one (an unknown field forces the latter); a teacher of an image seen on an
    /// earlier line is a duplicate of that line.
    #[test]
    fn repeated_teachers_are_rejected() {
        let dir = std::env::temp_dir().join(format!("cxr-max-twice-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let twice = r#"{"dicom_id":"a","trajectories":[{"model":"A","response":"x"},{"model":"A","response":"y"}]}"#;
        let general = r#"{"dicom_id":"b","note":1,"trajectories":[{"model":"B","response":"x"},{"model":"B","response":"y"}]}"#;
        let first = r#"{"dicom_id":"c","trajectories":[{"model":"C","response":"x"}]}"#;
        let path = dir.join("r.jsonl");
        std::fs::write(&path, format!("{twice}\n{general}\n{first}\n{first}\n")).unwrap();
        let r = read_records(&path, &FieldMapping::default()).unwrap();
        let reasons: Vec<(usize, &str)> = r
            .rejected
            .iter()
            .map(|x| (x.source.line, x.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                (1, "teacher `A` appears twice in the record"),
                (2, "teacher `B` appears twice in the record"),
                (
                    4,
                    "duplicate trajectory of teacher `C` for image c (first at line 3)"
                ),
            ]
        );
        assert_eq!((r.read, r.kept_records, r.samples.len()), (4, 1, 1));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A gzip stream cut short is an error naming the line reached, at any block size.
    #[test]
    fn truncated_gzip_names_the_line_reached() {
        let dir = std::env::temp_dir().join(format!("cxr-max-trunc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text: String = (0..400).map(|i| record(i, 40) + "\n").collect();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut enc, text.as_bytes()).unwrap();
        let gz = enc.finish().unwrap();
        let path = dir.join("t.jsonl.gz");
        std::fs::write(&path, &gz[..gz.len() / 2]).unwrap();
        for block in [64, 4096, BLOCK] {
            match read_json_lines_in_blocks(&path, block, &mut |_| {}) {
                Err(CxrError::Record { line, reason, .. }) => {
                    assert!((2..=400).contains(&line), "line {line}");
                    assert!(reason.contains("truncated"), "{reason}");
                }
                Err(e) => panic!("unexpected error {e}"),
                Ok(_) => panic!("a truncated stream was read without error"),
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
