//! Schema-tolerant reading of CXR-MAX record files (JSON array, JSONL, CSV; Parquet with the
//! `parquet` feature) into samples: one image, its prompt and every teacher trajectory.
//!
//! - [`format`]: the file formats (by extension), opening `.gz`, and the JSON array, CSV and
//!   Parquet readers.
//! - [`jsonl`]: JSON Lines, read in blocks parsed in parallel, with the typed fast path.
//! - [`schema`]: schema tolerance: field names, the layouts (nested, wide, long) and
//!   [`FieldMapping`] for the ones nobody foresaw.
//! - [`group`]: grouping the records of one image into a [`Sample`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::Result;

mod format;
mod group;
mod jsonl;
mod schema;

pub use format::Format;
pub(crate) use format::open_text;
pub use schema::{FieldMapping, KNOWN_TEACHERS};

use group::Interpreter;
use schema::Parsed;

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

/// Reads a record file. Bad records are rejected with a reason (lenient); nothing is
/// silently dropped: `read = kept_records + rejected`.
///
/// # Errors
/// [`CxrError::Io`](crate::CxrError::Io) and [`CxrError::Schema`](crate::CxrError::Schema)
/// for files that cannot be read at all (including a truncated gzip stream, reported with
/// the line reached).
pub fn read_records(path: &Path, mapping: &FieldMapping) -> Result<RecordsRead> {
    let mut interpreter = Interpreter::new(mapping);
    format::read_rows(path, &mut |rows| interpreter.feed(rows))?;
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

#[cfg(test)]
mod tests {
    use super::*;

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

    fn bad_input(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/bad-inputs")
            .join(name)
    }

    /// A UTF-8 byte-order mark before the first record costs nothing: both records of the
    /// JSON Lines file and of the JSON array are kept.
    #[test]
    fn a_byte_order_mark_is_stripped() {
        for name in ["bom-records.jsonl", "bom-records.json"] {
            let r = read_records(&bad_input(name), &FieldMapping::default()).unwrap();
            assert!(r.rejected.is_empty(), "{name}: {:?}", r.rejected[0].reason);
            assert_eq!((r.read, r.kept_records), (2, 2), "{name}");
            let ids: Vec<&str> = r.samples.iter().map(|s| s.dicom_id.as_str()).collect();
            assert_eq!(ids, ["a", "b"], "{name}");
        }
    }

    /// A trajectory that is a number, an empty or a blank string is rejected with its line,
    /// on the fast path, the general path, the long layout and the object layout.
    #[test]
    fn trajectories_that_are_not_text_are_rejected() {
        let r = read_records(
            &bad_input("trajectory-not-text.jsonl"),
            &FieldMapping::default(),
        )
        .unwrap();
        let reasons: Vec<(usize, &str)> = r
            .rejected
            .iter()
            .map(|x| (x.source.line, x.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                (2, "trajectory 0 (A) is a number, not text"),
                (3, "trajectory 0 (A) is an empty string"),
                (4, "trajectory 0 (A) is blank (white space only)"),
                (5, "`response` is a number, not text"),
                (6, "trajectory of A is an empty string"),
            ]
        );
        assert_eq!((r.read, r.kept_records), (6, 1));
    }

    /// A trajectory longer than the documented limit is a rejected record with its line and
    /// size, not minutes of labelling (a 40 MB trajectory once stalled the consensus build).
    #[test]
    fn an_over_long_trajectory_is_rejected() {
        let path = bad_input("trajectory-over-limit.jsonl");
        let r = read_records(&path, &FieldMapping::default()).unwrap();
        assert_eq!((r.read, r.kept_records), (2, 1));
        assert_eq!(r.rejected[0].source.line, 2);
        assert!(
            r.rejected[0]
                .reason
                .contains("over the limit of 65536 bytes"),
            "{}",
            r.rejected[0].reason
        );
    }
}
