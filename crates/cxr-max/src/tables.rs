//! The MIMIC-CXR-JPG tables: CheXpert (or NegBio) labels per study, metadata and split per
//! image. Gzipped or plain CSV; bad rows are rejected with their line, never dropped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::records::{Location, Rejected, open_text};
use crate::{CxrError, Finding, Findings, LabelStatus, Result};

/// The split of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training.
    Train,
    /// Validation.
    Validate,
    /// Test.
    Test,
}

impl Split {
    /// The name used in `split.csv`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validate => "validate",
            Split::Test => "test",
        }
    }
}

/// A split name that is not `train`, `validate` or `test`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown split `{0}`; expected train, validate or test")]
pub struct UnknownSplit(pub String);

impl std::str::FromStr for Split {
    type Err = UnknownSplit;

    /// `train`, `validate` (or `valid`, `validation`), `test`.
    fn from_str(s: &str) -> Result<Self, UnknownSplit> {
        match s.trim() {
            "train" => Ok(Split::Train),
            "validate" | "valid" | "validation" => Ok(Split::Validate),
            "test" => Ok(Split::Test),
            other => Err(UnknownSplit(other.to_owned())),
        }
    }
}

/// Per-image metadata.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageMeta {
    /// Patient.
    pub subject_id: u64,
    /// Study.
    pub study_id: u64,
    /// View position (`PA`, `AP`, `LATERAL`, ...), as written.
    pub view_position: String,
    /// Image height in pixels, when given.
    pub rows: Option<u32>,
    /// Image width in pixels, when given.
    pub columns: Option<u32>,
}

/// The hash of the tables' and records' id maps: FNV-1a over 8-byte words, then a final mix.
/// Several times faster than the default SipHash on image ids; the ids come from the data set,
/// not from an adversary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdHash;

/// The hasher of [`IdHash`].
#[derive(Debug, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            self.0 = (self.0 ^ w)
                .wrapping_mul(0x0000_0100_0000_01b3)
                .rotate_left(23);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }
}

/// A table read from CSV, with its rejected rows.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Table<K: std::hash::Hash + Eq, V> {
    /// Rows kept, by key.
    pub rows: HashMap<K, V, IdHash>,
    /// Rows rejected, with reasons.
    pub rejected: Vec<Rejected>,
    /// Data rows read (`read = rows.len() + rejected.len()`).
    pub read: usize,
}

/// Finds a MIMIC table in `dir`: `mimic-cxr-2.0.0-{name}.csv.gz` or `.csv`.
pub fn find_table(dir: &Path, name: &str) -> Option<PathBuf> {
    ["csv.gz", "csv"]
        .iter()
        .map(|ext| dir.join(format!("mimic-cxr-2.0.0-{name}.{ext}")))
        .find(|p| p.is_file())
}

struct Rows {
    path: PathBuf,
    headers: Vec<String>,
    reader: csv::Reader<Box<dyn std::io::BufRead + Send>>,
}

impl Rows {
    fn open(path: &Path, required: &[&str]) -> Result<Self> {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(open_text(path)?);
        let headers: Vec<String> = reader
            .headers()
            .map_err(|e| CxrError::Schema {
                path: path.to_owned(),
                reason: format!("cannot read the header: {e}"),
            })?
            .iter()
            .map(|h| h.trim().to_owned())
            .collect();
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|r| !headers.iter().any(|h| h == r))
            .collect();
        if !missing.is_empty() {
            return Err(CxrError::Schema {
                path: path.to_owned(),
                reason: format!(
                    "wrong header: missing column(s) {}; found {}",
                    missing.join(", "),
                    headers.join(",")
                ),
            });
        }
        Ok(Rows {
            path: path.to_owned(),
            headers,
            reader,
        })
    }

    fn col(&self, name: &str) -> usize {
        self.headers
            .iter()
            .position(|h| h == name)
            .expect("checked in open")
    }

    /// Visits every data row: `f(line, fields) -> Ok(kept) | Err(reason)`.
    fn each(
        mut self,
        mut f: impl FnMut(
            usize,
            &csv::StringRecord,
        ) -> std::result::Result<(), (Option<String>, String)>,
    ) -> Result<(usize, Vec<Rejected>)> {
        let mut rejected = Vec::new();
        let mut read = 0;
        let n = self.headers.len();
        let mut rec = csv::StringRecord::new();
        loop {
            let line = read + 2;
            let loc = |path: &PathBuf| Location {
                path: path.clone(),
                line,
            };
            match self.reader.read_record(&mut rec) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) if e.is_io_error() => {
                    return Err(CxrError::Record {
                        path: self.path.clone(),
                        line,
                        reason: format!("cannot read further (truncated or corrupt file?): {e}"),
                    });
                }
                Err(e) => {
                    read += 1;
                    rejected.push(Rejected {
                        source: loc(&self.path),
                        record_id: None,
                        reason: format!("malformed CSV row: {e}"),
                        raw: String::new(),
                    });
                    continue;
                }
            }
            read += 1;
            let raw = |rec: &csv::StringRecord| rec.iter().collect::<Vec<_>>().join(",");
            if rec.len() != n {
                rejected.push(Rejected {
                    source: loc(&self.path),
                    record_id: None,
                    reason: format!("row has {} fields but the header has {n}", rec.len()),
                    raw: raw(&rec),
                });
                continue;
            }
            if let Err((record_id, reason)) = f(line, &rec) {
                rejected.push(Rejected {
                    source: loc(&self.path),
                    record_id,
                    reason,
                    raw: raw(&rec),
                });
            }
        }
        Ok((read, rejected))
    }
}

/// What a row parser returns: the row's key and value, or the record id and the reason.
type RowResult<K, V> = std::result::Result<(K, V), (Option<String>, String)>;

impl Rows {
    /// Reads every row into a table keyed by `what` (a duplicate key is a rejected row).
    fn keyed<K, V>(
        self,
        what: &str,
        mut parse: impl FnMut(&csv::StringRecord) -> RowResult<K, V>,
    ) -> Result<Table<K, V>>
    where
        K: std::hash::Hash + Eq + std::fmt::Display,
    {
        let mut rows = HashMap::with_hasher(IdHash);
        let (read, rejected) = self.each(|_, rec| {
            let (key, value) = parse(rec)?;
            match rows.entry(key) {
                std::collections::hash_map::Entry::Occupied(e) => Err((
                    Some(e.key().to_string()),
                    format!("duplicate {what} {}", e.key()),
                )),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(value);
                    Ok(())
                }
            }
        })?;
        Ok(Table {
            rows,
            rejected,
            read,
        })
    }
}

fn id(field: &str, what: &str) -> std::result::Result<u64, (Option<String>, String)> {
    field
        .trim()
        .parse::<u64>()
        .map_err(|_| (None, format!("{what} `{field}` is not an integer")))
}

/// Reads `mimic-cxr-2.0.0-chexpert.csv(.gz)` or `-negbio`: labels per `study_id`.
///
/// # Errors
/// [`CxrError::Schema`] for a header without `subject_id`, `study_id` and the 14 findings;
/// [`CxrError::Io`] / [`CxrError::Record`] for unreadable or truncated files.
pub fn read_labels(path: &Path) -> Result<Table<u64, Findings>> {
    let mut required = vec!["subject_id", "study_id"];
    required.extend(Finding::ALL.iter().map(|f| f.column_name()));
    let rows = Rows::open(path, &required)?;
    let study_col = rows.col("study_id");
    let subject_col = rows.col("subject_id");
    let cols: Vec<usize> = Finding::ALL
        .iter()
        .map(|f| rows.col(f.column_name()))
        .collect();
    rows.keyed("study_id", |rec| {
        id(&rec[subject_col], "subject_id")?;
        let study = id(&rec[study_col], "study_id")?;
        let mut f = Findings::default();
        for (k, &c) in cols.iter().enumerate() {
            let status = LabelStatus::from_csv(&rec[c]).map_err(|_| {
                (
                    Some(study.to_string()),
                    format!(
                        "{}: label value `{}` is not one of 1.0, 0.0, -1.0 or blank",
                        Finding::ALL[k],
                        &rec[c]
                    ),
                )
            })?;
            f.set(Finding::ALL[k], status);
        }
        Ok((study, f))
    })
}

/// Reads `mimic-cxr-2.0.0-metadata.csv(.gz)`: metadata per `dicom_id`.
///
/// # Errors
/// As [`read_labels`], for columns `dicom_id`, `subject_id`, `study_id`, `ViewPosition`.
pub fn read_metadata(path: &Path) -> Result<Table<String, ImageMeta>> {
    let rows = Rows::open(
        path,
        &["dicom_id", "subject_id", "study_id", "ViewPosition"],
    )?;
    let (d, su, st, v) = (
        rows.col("dicom_id"),
        rows.col("subject_id"),
        rows.col("study_id"),
        rows.col("ViewPosition"),
    );
    let (r, c) = (
        rows.headers.iter().position(|h| h == "Rows"),
        rows.headers.iter().position(|h| h == "Columns"),
    );
    rows.keyed("dicom_id", |rec| {
        let dicom = rec[d].trim().to_owned();
        if dicom.is_empty() {
            return Err((None, "missing dicom_id".to_owned()));
        }
        let meta = ImageMeta {
            subject_id: id(&rec[su], "subject_id").map_err(|(_, e)| (Some(dicom.clone()), e))?,
            study_id: id(&rec[st], "study_id").map_err(|(_, e)| (Some(dicom.clone()), e))?,
            view_position: rec[v].trim().to_owned(),
            rows: r.and_then(|i| rec[i].trim().parse().ok()),
            columns: c.and_then(|i| rec[i].trim().parse().ok()),
        };
        Ok((dicom, meta))
    })
}

/// Reads `mimic-cxr-2.0.0-split.csv(.gz)`: split per `dicom_id`.
///
/// # Errors
/// As [`read_labels`], for columns `dicom_id`, `study_id`, `subject_id`, `split`.
pub fn read_split(path: &Path) -> Result<Table<String, Split>> {
    let rows = Rows::open(path, &["dicom_id", "study_id", "subject_id", "split"])?;
    let (d, s) = (rows.col("dicom_id"), rows.col("split"));
    rows.keyed("dicom_id", |rec| {
        let dicom = rec[d].trim().to_owned();
        if dicom.is_empty() {
            return Err((None, "missing dicom_id".to_owned()));
        }
        let split = match rec[s].trim() {
            "train" => Split::Train,
            "validate" | "valid" | "validation" => Split::Validate,
            "test" => Split::Test,
            other => {
                return Err((
                    Some(dicom),
                    format!("split `{other}` is not train, validate or test"),
                ));
            }
        };
        Ok((dicom, split))
    })
}
