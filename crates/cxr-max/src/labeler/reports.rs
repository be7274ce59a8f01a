//! The labeler over a file of reports: `apo label`. One CSV line out per report read, `id`
//! then the 14 CheXpert columns with `1.0` (present), `0.0` (absent), `-1.0` (uncertain) or
//! blank (not mentioned), as the CheXpert labeler writes them. Inputs:
//!
//! - JSON Lines, one `{"id": .., "text": ..}` object per line (the `samples-*.jsonl` files
//!   `apo eval` and the pipeline write; `id` may be a string or a number);
//! - CSV with a header: the report column named by [`LabelOptions::column`], or else the
//!   first of `Report Impression` (CheXbert's), `report`, `reports`, `text` (any case); the
//!   id column by [`LabelOptions::id_column`], or else the first of `id`, `dicom_id`,
//!   `study_id`, or else the 1-based row number;
//! - CSV without a header (the CheXpert labeler's `reports.csv`: one report per row, first
//!   column), ids the 1-based row numbers.
//!
//! A record that cannot be read (bad JSON, no text, a short CSV row) is rejected with its
//! line, never written as a blank row: `read = labelled + rejected`.

use std::io::{BufRead, Write};
use std::path::Path;

use super::Labeler;
use crate::{CxrError, Finding, Result};

/// The input's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    /// JSON Lines `{"id", "text"}`.
    Jsonl,
    /// CSV with a header row.
    Csv,
    /// CSV without a header: the first column is the report.
    CsvNoHeader,
}

impl ReportFormat {
    /// The format a file name implies: `.csv` is CSV with a header, anything else JSON Lines.
    pub fn from_path(path: &Path) -> ReportFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("csv") => ReportFormat::Csv,
            _ => ReportFormat::Jsonl,
        }
    }
}

/// How to read the input.
#[derive(Debug, Clone)]
pub struct LabelOptions {
    /// The input's format.
    pub format: ReportFormat,
    /// CSV: the report column.
    pub column: Option<String>,
    /// CSV: the id column.
    pub id_column: Option<String>,
}

/// A record that was not labelled.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RejectedReport {
    /// 1-based line of the input (for CSV, the row's line counting the header).
    pub line: usize,
    /// Why.
    pub reason: String,
}

/// What [`label_reports`] did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LabelSummary {
    /// Records read.
    pub read: usize,
    /// Records labelled (one CSV line each).
    pub labelled: usize,
    /// Records rejected, with their lines.
    pub rejected: Vec<RejectedReport>,
}

const REPORT_COLUMNS: [&str; 4] = ["report impression", "report", "reports", "text"];
const ID_COLUMNS: [&str; 3] = ["id", "dicom_id", "study_id"];

/// Labels every report of `input` (read from the file `source`, named in errors) with
/// `labeler` and writes the CSV to `out`.
///
/// # Errors
/// [`CxrError::Io`] reading or writing; [`CxrError::Schema`] for a CSV header without the
/// named (or any known) report column, or without a named id column. Bad records are not
/// errors: they are listed in the summary.
pub fn label_reports(
    input: impl BufRead,
    source: &Path,
    options: &LabelOptions,
    labeler: &Labeler,
    out: impl Write,
) -> Result<LabelSummary> {
    let io = |e: std::io::Error| CxrError::Io {
        path: source.to_owned(),
        source: e,
    };
    // A UTF-8 byte-order mark is not part of the first record (or the CSV header).
    let input = crate::output::skip_bom(input).map_err(io)?;
    let mut writer = csv::Writer::from_writer(out);
    let out_err = |e: csv::Error| CxrError::Io {
        path: "<output>".into(),
        source: std::io::Error::other(e),
    };
    let mut header = vec!["id".to_owned()];
    header.extend(Finding::ALL.iter().map(|f| f.column_name().to_owned()));
    writer.write_record(&header).map_err(out_err)?;
    let mut summary = LabelSummary::default();
    let emit = |id: &str, text: &str, writer: &mut csv::Writer<_>| -> Result<()> {
        let found = labeler.extract(text).findings;
        let mut row = vec![id.to_owned()];
        row.extend(
            Finding::ALL
                .iter()
                .map(|&f| found.get(f).to_csv().to_owned()),
        );
        writer.write_record(&row).map_err(out_err)
    };
    match options.format {
        ReportFormat::Jsonl => {
            for (n, line) in input.lines().enumerate() {
                let line = line.map_err(io)?;
                if line.trim().is_empty() {
                    continue;
                }
                summary.read += 1;
                match jsonl_record(&line) {
                    Ok((id, text)) => {
                        emit(&id, &text, &mut writer)?;
                        summary.labelled += 1;
                    }
                    Err(reason) => summary.rejected.push(RejectedReport {
                        line: n + 1,
                        reason,
                    }),
                }
            }
        }
        ReportFormat::Csv | ReportFormat::CsvNoHeader => {
            let headed = options.format == ReportFormat::Csv;
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(headed)
                .flexible(true)
                .from_reader(input);
            let schema = |reason: String| CxrError::Schema {
                path: source.to_owned(),
                reason,
            };
            let (text_at, id_at) = if headed {
                let names: Vec<String> = reader
                    .headers()
                    .map_err(|e| schema(e.to_string()))?
                    .iter()
                    .map(|h| h.trim().to_owned())
                    .collect();
                let find = |wanted: &str| names.iter().position(|h| h.eq_ignore_ascii_case(wanted));
                let text_at = match &options.column {
                    Some(c) => find(c)
                        .ok_or_else(|| schema(format!("no column `{c}` in {names:?}")))?,
                    None => REPORT_COLUMNS.iter().find_map(|c| find(c)).ok_or_else(|| {
                        schema(format!(
                            "no report column (one of `Report Impression`, `report`, `reports`, `text`, or name it with --column) in {names:?}"
                        ))
                    })?,
                };
                let id_at = match &options.id_column {
                    Some(c) => Some(
                        find(c)
                            .ok_or_else(|| schema(format!("no id column `{c}` in {names:?}")))?,
                    ),
                    None => ID_COLUMNS.iter().find_map(|c| find(c)),
                };
                (text_at, id_at)
            } else {
                (0, None)
            };
            for (n, record) in reader.records().enumerate() {
                summary.read += 1;
                // The line of the record: after the header when there is one.
                let line = n + 1 + usize::from(headed);
                let record = match record {
                    Ok(r) => r,
                    Err(e) => {
                        summary.rejected.push(RejectedReport {
                            line: e.position().map_or(line, |p| p.line() as usize),
                            reason: e.to_string(),
                        });
                        continue;
                    }
                };
                let line = record.position().map_or(line, |p| p.line() as usize);
                let Some(text) = record.get(text_at) else {
                    summary.rejected.push(RejectedReport {
                        line,
                        reason: format!("no report in column {}", text_at + 1),
                    });
                    continue;
                };
                let id = match id_at {
                    Some(k) => match record.get(k).filter(|s| !s.trim().is_empty()) {
                        Some(id) => id.trim().to_owned(),
                        None => {
                            summary.rejected.push(RejectedReport {
                                line,
                                reason: format!("no id in column {}", k + 1),
                            });
                            continue;
                        }
                    },
                    None => (n + 1).to_string(),
                };
                emit(&id, text, &mut writer)?;
                summary.labelled += 1;
            }
        }
    }
    writer.flush().map_err(|e| CxrError::Io {
        path: "<output>".into(),
        source: e,
    })?;
    Ok(summary)
}

/// The id and text of a JSON Lines record.
fn jsonl_record(line: &str) -> Result<(String, String), String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let id = match v.get("id") {
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(_) => return Err("`id` is not a non-empty string or a number".into()),
        None => return Err("no `id`".into()),
    };
    match v.get("text") {
        Some(serde_json::Value::String(s)) => Ok((id, s.clone())),
        Some(_) => Err("`text` is not a string".into()),
        None => Err("no `text`".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &str, format: ReportFormat) -> (LabelSummary, String) {
        let mut out = Vec::new();
        let options = LabelOptions {
            format,
            column: None,
            id_column: None,
        };
        let s = label_reports(
            input.as_bytes(),
            Path::new("in"),
            &options,
            &Labeler::default(),
            &mut out,
        )
        .unwrap();
        (s, String::from_utf8(out).unwrap())
    }

    #[test]
    fn jsonl_reports_are_labelled_and_bad_lines_rejected() {
        let input = "{\"id\": \"a\", \"text\": \"Small left pleural effusion. No pneumothorax. Possible edema.\"}\n\
                     not json\n\
                     \n\
                     {\"id\": 7, \"text\": \"\"}\n\
                     {\"text\": \"x\"}\n";
        let (s, csv) = run(input, ReportFormat::Jsonl);
        assert_eq!((s.read, s.labelled, s.rejected.len()), (4, 2, 2));
        assert_eq!(s.read, s.labelled + s.rejected.len());
        assert_eq!(s.rejected[0].line, 2);
        assert_eq!(s.rejected[1].line, 5);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("id,Atelectasis,Cardiomegaly,"));
        let cells: Vec<&str> = lines[1].split(',').collect();
        let col = |f: Finding| cells[1 + f.index()];
        assert_eq!(cells[0], "a");
        assert_eq!(col(Finding::PleuralEffusion), "1.0");
        assert_eq!(col(Finding::Pneumothorax), "0.0");
        assert_eq!(col(Finding::Edema), "-1.0");
        assert_eq!(col(Finding::Fracture), "");
        assert_eq!(lines[2], format!("7{}", ",".repeat(14)));
    }

    /// A UTF-8 byte-order mark costs neither the first JSON line nor the CSV header.
    #[test]
    fn a_byte_order_mark_is_stripped() {
        let (s, csv) = run(
            "\u{feff}{\"id\": \"a\", \"text\": \"Cardiomegaly.\"}\n",
            ReportFormat::Jsonl,
        );
        assert_eq!((s.read, s.labelled, s.rejected.len()), (1, 1, 0));
        assert!(csv.lines().nth(1).unwrap().starts_with("a,,1.0,"), "{csv}");
        let (s, csv) = run(
            "\u{feff}id,Report Impression\n11,Cardiomegaly.\n",
            ReportFormat::Csv,
        );
        assert_eq!((s.read, s.labelled), (1, 1));
        assert!(csv.lines().nth(1).unwrap().starts_with("11,,1.0,"), "{csv}");
    }

    #[test]
    fn csv_with_and_without_a_header() {
        let input =
            "study_id,Report Impression\n11,\"No pneumothorax, no effusion.\"\n12,Cardiomegaly.\n";
        let (s, csv) = run(input, ReportFormat::Csv);
        assert_eq!((s.read, s.labelled), (2, 2));
        let lines: Vec<&str> = csv.lines().collect();
        assert!(lines[1].starts_with("11,"));
        assert!(lines[2].starts_with("12,,1.0,"));
        let (s, csv) = run("Cardiomegaly.\n\"No edema.\"\n", ReportFormat::CsvNoHeader);
        assert_eq!(s.labelled, 2);
        assert!(csv.lines().nth(1).unwrap().starts_with("1,,1.0,"));
        assert!(csv.lines().nth(2).unwrap().starts_with("2,"));
        let mut out = Vec::new();
        let err = label_reports(
            "a,b\n1,2\n".as_bytes(),
            Path::new("reports.csv"),
            &LabelOptions {
                format: ReportFormat::Csv,
                column: None,
                id_column: None,
            },
            &Labeler::default(),
            &mut out,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("reports.csv") && err.to_string().contains("no report column")
        );
    }
}
