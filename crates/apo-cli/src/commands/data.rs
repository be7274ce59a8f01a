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
    let io = |e: std::io::Error| e.to_string();
    if options.json {
        serde_json::to_writer(&mut out, &report).map_err(|e| e.to_string())?;
        writeln!(out).map_err(io)?;
        return Ok(report);
    }
    let c = |c: &cxr_max::dataset::Counts| {
        format!("{} read, {} kept, {} rejected", c.read, c.kept, c.rejected)
    };
    writeln!(
        out,
        "records  {}: {}",
        report.records_file.display(),
        c(&report.records)
    )
    .map_err(io)?;
    writeln!(out, "labels   {}", c(&report.labels)).map_err(io)?;
    writeln!(out, "metadata {}", c(&report.metadata)).map_err(io)?;
    writeln!(out, "split    {}", c(&report.split)).map_err(io)?;
    writeln!(
        out,
        "samples  {} ({} studies)",
        c(&report.samples),
        report.studies
    )
    .map_err(io)?;
    writeln!(
        out,
        "images   {} found, {} missing, {} unusable",
        report.images_found, report.images_missing, report.images_unusable
    )
    .map_err(io)?;
    writeln!(
        out,
        "without labels {}, without split {}",
        report.without_labels, report.without_split
    )
    .map_err(io)?;
    writeln!(out, "splits   {:?}", report.per_split).map_err(io)?;
    writeln!(out, "trajectories per teacher:").map_err(io)?;
    for (t, n) in &report.trajectories_per_teacher {
        writeln!(out, "  {t:<24} {n}").map_err(io)?;
    }
    writeln!(out, "positive labels per finding:").map_err(io)?;
    for f in cxr_max::Finding::ALL {
        writeln!(out, "  {:<27} {}", f.column_name(), report.positives(f)).map_err(io)?;
    }
    if !report.unknown_fields.is_empty() {
        writeln!(
            out,
            "fields not understood (ignored): {:?}",
            report.unknown_fields
        )
        .map_err(io)?;
    }
    writeln!(
        out,
        "{} problem(s){}",
        report.problems.len(),
        if report.problems.len() > 20 {
            "; first 20:"
        } else {
            ":"
        }
    )
    .map_err(io)?;
    for p in report.problems.iter().take(20) {
        let id = p
            .record_id
            .as_deref()
            .map(|i| format!(" [{i}]"))
            .unwrap_or_default();
        writeln!(
            out,
            "  {}:{}{id}: {}",
            p.source.path.display(),
            p.source.line,
            p.reason
        )
        .map_err(io)?;
    }
    Ok(report)
}
