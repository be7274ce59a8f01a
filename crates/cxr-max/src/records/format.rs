//! Record file formats: the format of a path from its extension, opening (`.gz` included),
//! and reading JSON arrays, CSV and Parquet into raw rows (JSON Lines: [`super::jsonl`]).

use std::io::{BufRead, Read};
use std::path::Path;

use serde_json::Value;

use super::schema::kind;
use super::{Location, RawRow};
use crate::{CxrError, Result};

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

/// Opens a file for reading, decompressing `.gz` and skipping a UTF-8 byte-order mark.
pub(crate) fn open_text(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    let file = std::fs::File::open(path).map_err(|source| CxrError::Io {
        path: path.to_owned(),
        source,
    })?;
    let is_gz = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    let input: Box<dyn BufRead + Send> = if is_gz {
        Box::new(std::io::BufReader::with_capacity(
            1 << 20,
            flate2::read::MultiGzDecoder::new(file),
        ))
    } else {
        Box::new(std::io::BufReader::with_capacity(1 << 20, file))
    };
    // A UTF-8 byte-order mark (as some Windows editors write) is not part of the first record.
    let input = crate::output::skip_bom(input).map_err(|source| CxrError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(Box::new(input))
}

pub(super) fn raw_text(v: &str) -> String {
    v.chars().take(2000).collect()
}

/// Reads the raw records of `path` and hands them to `sink` in file order: JSON Lines block
/// by block, the other formats at once.
pub(super) fn read_rows(path: &Path, sink: &mut (dyn FnMut(Vec<RawRow>) + Send)) -> Result<()> {
    let loc = |line: usize| Location {
        path: path.to_owned(),
        line,
    };
    let rows: Result<Vec<RawRow>> = match Format::of(path)? {
        Format::JsonLines => {
            return super::jsonl::read_json_lines_in_blocks(path, super::jsonl::BLOCK, sink);
        }
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
