//! The stage-1 training set for other trainers: one row per image and teacher trajectory that
//! states at least one finding (a refusal teaches nothing), in our layout, TRL's
//! conversational vision SFT layout or ms-swift's, image paths absolute (or relative to a
//! folder), every count reconciled.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cxr_max::LabelStatus;
use cxr_max::tables::Split;
use serde::Serialize;

use crate::consensus::relative_path;
use crate::error::{PipelineError, Result};
use crate::io::write_atomic;

/// The layout of the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SftFormat {
    /// `{"id", "teacher", "images", "prompt", "completion"}` (what `apo score` reads, plus the
    /// id and teacher).
    Ours,
    /// TRL `SFTTrainer`'s conversational vision layout: `messages` (a user turn with an image
    /// part and the prompt, an assistant turn with the trajectory) and `images`.
    Trl,
    /// ms-swift's `messages` (the user turn starting with `<image>`) and `images`.
    Swift,
}

impl std::str::FromStr for SftFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "ours" => Ok(SftFormat::Ours),
            "trl" => Ok(SftFormat::Trl),
            "swift" | "ms-swift" => Ok(SftFormat::Swift),
            other => Err(format!(
                "unknown format `{other}`; expected ours, trl or swift"
            )),
        }
    }
}

/// What [`export_sft`] reads and writes.
#[derive(Debug, Clone)]
pub struct SftExportOptions {
    /// The data set folder.
    pub dir: PathBuf,
    /// The output JSON Lines file.
    pub out: PathBuf,
    /// The layout.
    pub format: SftFormat,
    /// Only this split (every image when `None`).
    pub split: Option<Split>,
    /// Image paths relative to this folder; `None`: absolute.
    pub relative_to: Option<PathBuf>,
    /// The reader settings (records file, mapping, strict, quarantine).
    pub source: cxr_max::dataset::DataSource,
}

/// What an export did. `trajectories = rows + refusals` and `records_read = records_kept +
/// records_rejected`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SftExportSummary {
    /// Record lines read from the data set.
    pub records_read: usize,
    /// Records kept by the reader.
    pub records_kept: usize,
    /// Records the reader rejected (`apo data check` lists them with their line and reason).
    pub records_rejected: usize,
    /// Images of the split exported.
    pub images: usize,
    /// Their teacher trajectories.
    pub trajectories: usize,
    /// Rows written.
    pub rows: usize,
    /// Trajectories left out because they state no finding (refusals), per teacher.
    pub refusals: BTreeMap<String, usize>,
    /// The output file.
    pub out: PathBuf,
}

impl SftExportSummary {
    /// The summary as text.
    pub fn render(&self) -> String {
        let refused: usize = self.refusals.values().sum();
        format!(
            "{} records read ({} kept, {} rejected); {} images, {} trajectories: {} rows written to {}, {} refusals left out{}\n",
            self.records_read,
            self.records_kept,
            self.records_rejected,
            self.images,
            self.trajectories,
            self.rows,
            self.out.display(),
            refused,
            if refused == 0 {
                String::new()
            } else {
                format!(
                    " ({})",
                    self.refusals
                        .iter()
                        .map(|(t, n)| format!("{t} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        )
    }
}

/// Whether the labeler reads any finding from `text` (otherwise the trajectory is a refusal).
fn states_a_finding(text: &str) -> bool {
    cxr_max::findings::extract(text)
        .findings
        .iter()
        .any(|(_, s)| s != LabelStatus::NotMentioned)
}

/// Writes the stage-1 rows of the data set in `options.dir`.
///
/// # Errors
/// Data set and file errors; [`PipelineError::Empty`] when no row is left.
pub fn export_sft(options: &SftExportOptions) -> Result<SftExportSummary> {
    let (data, check) = options.source.open(&options.dir)?;
    let items: Vec<_> = data
        .items
        .iter()
        .filter(|i| options.split.is_none_or(|s| i.split == Some(s)))
        .collect();
    let mut refusals: BTreeMap<String, usize> = BTreeMap::new();
    let mut lines = Vec::new();
    let mut trajectories = 0usize;
    for item in &items {
        let image = match &options.relative_to {
            Some(base) => relative_path(&item.image, base)?,
            None => std::path::absolute(&item.image).map_err(PipelineError::io(&item.image))?,
        };
        let image = image.display().to_string();
        let prompt = item
            .sample
            .prompt
            .clone()
            .unwrap_or_else(|| cxr_max::sim::PROMPT.to_owned());
        for t in &item.sample.trajectories {
            trajectories += 1;
            if !states_a_finding(&t.text) {
                *refusals.entry(t.teacher.clone()).or_insert(0) += 1;
                continue;
            }
            let id = &item.sample.dicom_id;
            let row = match options.format {
                SftFormat::Ours => serde_json::json!({
                    "id": id, "teacher": t.teacher, "images": [image],
                    "prompt": prompt, "completion": t.text,
                }),
                SftFormat::Trl => serde_json::json!({
                    "id": id, "teacher": t.teacher, "images": [image],
                    "messages": [
                        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]},
                        {"role": "assistant", "content": [{"type": "text", "text": t.text}]},
                    ],
                }),
                SftFormat::Swift => serde_json::json!({
                    "id": id, "teacher": t.teacher, "images": [image],
                    "messages": [
                        {"role": "user", "content": format!("<image>{prompt}")},
                        {"role": "assistant", "content": t.text},
                    ],
                }),
            };
            lines.push(row.to_string());
        }
    }
    if lines.is_empty() {
        return Err(PipelineError::Empty {
            dir: options.dir.clone(),
            split: options.split.map(|s| s.name().to_owned()),
        });
    }
    write_atomic(&options.out, |w| {
        for l in &lines {
            writeln!(w, "{l}")?;
        }
        Ok(())
    })?;
    Ok(SftExportSummary {
        records_read: check.records.read,
        records_kept: check.records.kept,
        records_rejected: check.records.rejected,
        images: items.len(),
        trajectories,
        rows: lines.len(),
        refusals,
        out: options.out.clone(),
    })
}
