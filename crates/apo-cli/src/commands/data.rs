//! `apo data check`: read, join and validate a data set; report every problem.

use std::fmt::Write as _;
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
        false => render(&report),
    };
    out.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(report)
}

/// The report as text: counts per table, images, splits, trajectories per teacher, positive
/// labels per finding, and the first 20 problems.
fn render(r: &CheckReport) -> String {
    let c = |c: &cxr_max::dataset::Counts| {
        format!("{} read, {} kept, {} rejected", c.read, c.kept, c.rejected)
    };
    let mut s = format!(
        "records  {}: {}\nlabels   {}\nmetadata {}\nsplit    {}\nsamples  {} ({} studies)\n",
        r.records_file.display(),
        c(&r.records),
        c(&r.labels),
        c(&r.metadata),
        c(&r.split),
        c(&r.samples),
        r.studies
    );
    let _ = writeln!(
        s,
        "images   {} found, {} missing, {} unusable\nwithout labels {}, without split {}\n\
         splits   {:?}\ntrajectories per teacher:",
        r.images_found,
        r.images_missing,
        r.images_unusable,
        r.without_labels,
        r.without_split,
        r.per_split
    );
    for (t, n) in &r.trajectories_per_teacher {
        let _ = writeln!(s, "  {t:<24} {n}");
    }
    s.push_str("positive labels per finding:\n");
    for f in cxr_max::Finding::ALL {
        let _ = writeln!(s, "  {:<27} {}", f.column_name(), r.positives(f));
    }
    if !r.unknown_fields.is_empty() {
        let _ = writeln!(s, "fields not understood (ignored): {:?}", r.unknown_fields);
    }
    let n = r.problems.len();
    let _ = writeln!(
        s,
        "{n} problem(s){}",
        if n > 20 { "; first 20:" } else { ":" }
    );
    for p in r.problems.iter().take(20) {
        let id = p.record_id.as_deref().map(|i| format!(" [{i}]"));
        let (path, line) = (p.source.path.display(), p.source.line);
        let _ = writeln!(s, "  {path}:{line}{}: {}", id.unwrap_or_default(), p.reason);
    }
    s
}
