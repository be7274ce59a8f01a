//! `apo data check`: read, join and validate a data set; report every problem.

use std::io::Write;
use std::path::PathBuf;

use cxr_max::dataset::{CheckReport, Dataset, DatasetOptions};

/// Options of `apo data check`.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// The data set folder.
    pub dir: PathBuf,
    /// Explicit records file.
    pub records: Option<PathBuf>,
    /// Field mapping file.
    pub mapping: Option<PathBuf>,
    /// Stop at the first problem.
    pub strict: bool,
    /// Where to write rejected records (JSONL).
    pub quarantine: Option<PathBuf>,
    /// Decode every image.
    pub decode_images: bool,
    /// JSON output.
    pub json: bool,
}

/// Runs the check and writes the report; returns it.
///
/// # Errors
/// Fatal read errors and, in strict mode, the first problem.
pub fn check(options: &CheckOptions, mut out: impl Write) -> Result<CheckReport, String> {
    let mapping = match &options.mapping {
        Some(p) => cxr_max::FieldMapping::from_file(p).map_err(|e| e.to_string())?,
        None => cxr_max::FieldMapping::default(),
    };
    let ds_options = DatasetOptions {
        records: options.records.clone(),
        mapping,
        decode_images: options.decode_images,
        strict: options.strict,
        ..Default::default()
    };
    let (_, report) = Dataset::open(&options.dir, &ds_options).map_err(|e| e.to_string())?;
    if let Some(q) = &options.quarantine {
        report.write_quarantine(q).map_err(|e| e.to_string())?;
    }
    let text = match options.json {
        true => serde_json::to_string(&report).map_err(|e| e.to_string())? + "\n",
        false => report.render(),
    };
    out.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(report)
}
