//! A CXR-MAX data set on disk, read, joined with the MIMIC-CXR-JPG tables and validated.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::images::{ImageLoader, ImageLoaderConfig};
use crate::records::{FieldMapping, Location, RecordsRead, Rejected, Sample, read_records};
use crate::tables::{self, ImageMeta, Split};
use crate::{CxrError, Finding, Findings, LabelStatus, Result};

/// How to open a data set.
#[derive(Debug, Clone, Default)]
pub struct DatasetOptions {
    /// The records file; default: the one CXR-MAX file in the folder (`*.jsonl`, `*.json`,
    /// `*.csv`, `*.parquet`, optionally gzipped, other than the MIMIC tables).
    pub records: Option<PathBuf>,
    /// Field names for layouts nobody foresaw.
    pub mapping: FieldMapping,
    /// Decode every image (slower) instead of reading headers only.
    pub decode_images: bool,
    /// Stop at the first problem with an error instead of quarantining it.
    pub strict: bool,
    /// Image limits used when checking images.
    pub images: ImageLoaderConfig,
}

/// Where a command's records come from and what it does with rejected ones: the settings every
/// command that reads a data set accepts (`--records`, `--mapping`, `--strict`,
/// `--quarantine`; the same fields in `[data]` of a run configuration and in `pipeline.toml`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSource {
    /// The records file, when the folder has several candidates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<PathBuf>,
    /// A TOML file naming the fields of an unforeseen layout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mapping: Option<PathBuf>,
    /// Stop at the first rejected record or table row instead of leaving it out.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub strict: bool,
    /// Write every rejected record, with its file, line and reason, to this JSON Lines file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<PathBuf>,
}

impl DataSource {
    /// The reader options these settings ask for (the mapping file read).
    ///
    /// # Errors
    /// The mapping file's read or parse error.
    pub fn options(&self) -> Result<DatasetOptions> {
        let mapping = match &self.mapping {
            Some(p) => FieldMapping::from_file(p)?,
            None => FieldMapping::default(),
        };
        Ok(DatasetOptions {
            records: self.records.clone(),
            mapping,
            strict: self.strict,
            ..Default::default()
        })
    }

    /// Opens the data set in `dir`: writes the quarantine file when asked, and says how many
    /// records were read, kept and rejected (a warning naming the first problem when any was
    /// rejected, so nothing is dropped silently).
    ///
    /// # Errors
    /// As [`Dataset::open`]; the quarantine file's write error.
    pub fn open(&self, dir: &Path) -> Result<(Dataset, CheckReport)> {
        let (data, report) = Dataset::open(dir, &self.options()?)?;
        if let Some(q) = &self.quarantine {
            report.write_quarantine(q)?;
        }
        let c = &report.records;
        if report.problems.is_empty() {
            tracing::info!(
                dir = %dir.display(),
                read = c.read,
                kept = c.kept,
                rejected = c.rejected,
                "records"
            );
        } else {
            let first = &report.problems[0];
            tracing::warn!(
                dir = %dir.display(),
                read = c.read,
                kept = c.kept,
                rejected = c.rejected,
                problems = report.problems.len(),
                first = %format!(
                    "{} line {}: {}",
                    first.source.path.display(),
                    first.source.line,
                    first.reason
                ),
                "records and rows were left out; `apo data check` lists them, --quarantine FILE writes them, --strict stops at the first"
            );
        }
        Ok((data, report))
    }
}

/// One usable sample: record, labels, split and image path joined.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Item {
    /// The record.
    pub sample: Sample,
    /// Patient.
    pub subject_id: Option<u64>,
    /// Study.
    pub study_id: Option<u64>,
    /// Ground-truth labels of the study, when the label table has it.
    pub labels: Option<Findings>,
    /// Split, when the split table has it.
    pub split: Option<Split>,
    /// View position, when the metadata has it.
    pub view_position: Option<String>,
    /// The image file.
    pub image: PathBuf,
}

/// A data set: the items that passed validation.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Root folder.
    pub root: PathBuf,
    /// Usable items, in record order.
    pub items: Vec<Item>,
}

/// One problem found, with where it is.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// `record`, `table` or `image`.
    pub kind: String,
    /// The file and line.
    pub source: Location,
    /// Record id (image or study id), when known.
    pub record_id: Option<String>,
    /// What is wrong.
    pub reason: String,
    /// Raw text of the record, when there is one.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub raw: String,
}

/// Counts that reconcile: `read = kept + rejected` at every level.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Read.
    pub read: usize,
    /// Kept.
    pub kept: usize,
    /// Rejected (quarantined).
    pub rejected: usize,
}

/// What `apo data check` reports.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckReport {
    /// The records file.
    pub records_file: PathBuf,
    /// Record lines / rows.
    pub records: Counts,
    /// Label table rows.
    pub labels: Counts,
    /// Metadata rows.
    pub metadata: Counts,
    /// Split rows.
    pub split: Counts,
    /// Samples (images with their trajectories) formed from the kept records.
    pub samples: Counts,
    /// Distinct studies among kept samples.
    pub studies: usize,
    /// Images found and missing among samples.
    pub images_found: usize,
    /// Images missing.
    pub images_missing: usize,
    /// Images present but unusable (empty, corrupt, too large).
    pub images_unusable: usize,
    /// Kept samples without a label row for their study.
    pub without_labels: usize,
    /// Kept samples without a split.
    pub without_split: usize,
    /// Trajectories per teacher among kept samples.
    pub trajectories_per_teacher: BTreeMap<String, usize>,
    /// Kept samples per split.
    pub per_split: BTreeMap<String, usize>,
    /// Label distribution among kept samples: finding → status → count.
    pub label_distribution: BTreeMap<String, BTreeMap<String, usize>>,
    /// Record fields present but not understood, with counts.
    pub unknown_fields: BTreeMap<String, usize>,
    /// Every problem, in the order found.
    pub problems: Vec<Problem>,
}

fn from_rejected(kind: &str, r: Rejected) -> Problem {
    Problem {
        kind: kind.to_owned(),
        source: r.source,
        record_id: r.record_id,
        reason: r.reason,
        raw: r.raw,
    }
}

/// Finds the CXR-MAX records file in `root`.
///
/// # Errors
/// [`CxrError::Schema`] when there is none or more than one candidate.
pub fn find_records(root: &Path) -> Result<PathBuf> {
    let entries = std::fs::read_dir(root).map_err(|source| CxrError::Io {
        path: root.to_owned(),
        source,
    })?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_ascii_lowercase();
            !name.starts_with("mimic-cxr-")
                && !name.contains("quarantine")
                && [
                    ".jsonl",
                    ".ndjson",
                    ".json",
                    ".csv",
                    ".parquet",
                    ".jsonl.gz",
                    ".json.gz",
                    ".csv.gz",
                ]
                .iter()
                .any(|e| name.ends_with(e))
        })
        .collect();
    found.sort();
    // Several candidates: a file named like the data set wins.
    if found.len() > 1 {
        let named: Vec<PathBuf> = found
            .iter()
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.to_ascii_lowercase().starts_with("cxr-max")
                        || n.to_ascii_lowercase().starts_with("cxr_max")
                })
            })
            .cloned()
            .collect();
        if named.len() == 1 {
            return Ok(named[0].clone());
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(CxrError::Schema {
            path: root.to_owned(),
            reason: "no CXR-MAX records file (*.jsonl, *.json, *.csv, *.parquet) in this folder"
                .to_owned(),
        }),
        _ => Err(CxrError::Schema {
            path: root.to_owned(),
            reason: format!(
                "several candidate records files ({}); name one explicitly",
                found
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// Resolves an image: the MIMIC-CXR-JPG layout `files/p{xx}/p{subject}/s{study}/{dicom}.jpg`,
/// then a flat `{dicom}.jpg` (or `.png`) in the root or in `images/`.
pub fn resolve_image(
    root: &Path,
    subject_id: Option<u64>,
    study_id: Option<u64>,
    dicom_id: &str,
) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let (Some(su), Some(st)) = (subject_id, study_id) {
        candidates.push(root.join(crate::sim::image_path(su, st, dicom_id)));
    }
    for dir in [root.to_owned(), root.join("images")] {
        for ext in ["jpg", "jpeg", "png"] {
            candidates.push(dir.join(format!("{dicom_id}.{ext}")));
        }
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// The raw inputs of a data set, each read but not yet joined.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The records file.
    pub records: RecordsRead,
    /// The label table (`chexpert`, else `negbio`), when the folder has one.
    pub labels: Option<tables::Table<u64, Findings>>,
    /// The metadata table, when the folder has one.
    pub metadata: Option<tables::Table<String, ImageMeta>>,
    /// The split table, when the folder has one.
    pub split: Option<tables::Table<String, Split>>,
}

/// Reads the records file and the MIMIC tables of `root`; the tables are read beside the
/// records (rayon tasks) while the records are read and parsed.
///
/// # Errors
/// The first file that cannot be read at all, the records file first.
pub fn read_sources(root: &Path, records_file: &Path, mapping: &FieldMapping) -> Result<Sources> {
    let labels = || {
        tables::find_table(root, "chexpert")
            .or_else(|| tables::find_table(root, "negbio"))
            .map(|p| tables::read_labels(&p))
            .transpose()
    };
    let split = || {
        tables::find_table(root, "split")
            .map(|p| tables::read_split(&p))
            .transpose()
    };
    let metadata = || {
        tables::find_table(root, "metadata")
            .map(|p| tables::read_metadata(&p))
            .transpose()
    };
    let (records, (labels, (metadata, split))) = rayon::join(
        || read_records(records_file, mapping),
        || rayon::join(labels, || rayon::join(metadata, split)),
    );
    Ok(Sources {
        records: records?,
        labels: labels?,
        metadata: metadata?,
        split: split?,
    })
}

impl Dataset {
    /// Reads, joins and validates the data set in `root`.
    ///
    /// # Errors
    /// Files that cannot be read at all ([`CxrError::Io`], [`CxrError::Schema`], a truncated
    /// gzip as [`CxrError::Record`]); in strict mode, the first problem of any kind.
    ///
    /// # Examples
    /// ```
    /// use cxr_max::dataset::{Dataset, DatasetOptions};
    /// use cxr_max::sim::{SynthConfig, synthesize};
    /// let dir = std::env::temp_dir().join("cxr-max-doc-dataset");
    /// synthesize(&dir, &SynthConfig { studies: 12, image_size: 32, ..Default::default() })?;
    /// let (data, report) = Dataset::open(&dir, &DatasetOptions::default())?;
    /// assert_eq!(data.items.len(), 12);
    /// assert_eq!(report.records.read, report.records.kept + report.records.rejected);
    /// assert!(report.problems.is_empty());
    /// # std::fs::remove_dir_all(&dir).ok();
    /// # Ok::<(), cxr_max::CxrError>(())
    /// ```
    pub fn open(root: &Path, options: &DatasetOptions) -> Result<(Dataset, CheckReport)> {
        let records_file = match &options.records {
            Some(p) => p.clone(),
            None => find_records(root)?,
        };
        let mut report = CheckReport {
            records_file: records_file.clone(),
            ..Default::default()
        };
        let strict = |p: &Problem| -> Result<()> {
            if options.strict {
                Err(CxrError::Record {
                    path: p.source.path.clone(),
                    line: p.source.line,
                    reason: p.reason.clone(),
                })
            } else {
                Ok(())
            }
        };

        let Sources {
            records: read,
            labels,
            metadata,
            split,
        } = read_sources(root, &records_file, &options.mapping)?;
        report.records = Counts {
            read: read.read,
            kept: read.kept_records,
            rejected: read.rejected.len(),
        };
        report.unknown_fields = read.unknown_fields.clone();
        for r in read.rejected {
            let p = from_rejected("record", r);
            strict(&p)?;
            report.problems.push(p);
        }
        macro_rules! table_counts {
            ($t:expr, $field:ident) => {
                if let Some(t) = &$t {
                    report.$field = Counts {
                        read: t.read,
                        kept: t.rows.len(),
                        rejected: t.rejected.len(),
                    };
                    for r in &t.rejected {
                        let p = from_rejected("table", r.clone());
                        strict(&p)?;
                        report.problems.push(p);
                    }
                }
            };
        }
        table_counts!(labels, labels);
        table_counts!(metadata, metadata);
        table_counts!(split, split);

        let loader = ImageLoader::new(options.images.clone());
        let mut items = Vec::new();
        let mut studies = std::collections::HashSet::new();
        report.samples.read = read.samples.len();
        for sample in read.samples {
            let meta: Option<&ImageMeta> =
                metadata.as_ref().and_then(|m| m.rows.get(&sample.dicom_id));
            let subject_id = sample.subject_id.or(meta.map(|m| m.subject_id));
            let study_id = sample.study_id.or(meta.map(|m| m.study_id));
            let reject = |reason: String, report: &mut CheckReport| -> Result<()> {
                let p = Problem {
                    kind: "image".to_owned(),
                    source: sample.source.clone(),
                    record_id: Some(sample.dicom_id.clone()),
                    reason,
                    raw: String::new(),
                };
                strict(&p)?;
                report.problems.push(p);
                report.samples.rejected += 1;
                Ok(())
            };
            let Some(image) = resolve_image(root, subject_id, study_id, &sample.dicom_id) else {
                report.images_missing += 1;
                let expected = match (subject_id, study_id) {
                    (Some(su), Some(st)) => root
                        .join(crate::sim::image_path(su, st, &sample.dicom_id))
                        .display()
                        .to_string(),
                    _ => root
                        .join(format!("{}.jpg", sample.dicom_id))
                        .display()
                        .to_string(),
                };
                reject(
                    format!(
                        "image {} not found (looked for {expected} and flat {0}.jpg/.png)",
                        sample.dicom_id
                    ),
                    &mut report,
                )?;
                continue;
            };
            report.images_found += 1;
            let usable = if options.decode_images {
                loader.load(&image).map(|_| ())
            } else {
                loader.probe(&image).map(|_| ())
            };
            if let Err(e) = usable {
                report.images_unusable += 1;
                reject(format!("image unusable: {e}"), &mut report)?;
                continue;
            }
            let labels =
                study_id.and_then(|s| labels.as_ref().and_then(|t| t.rows.get(&s).copied()));
            let split = split
                .as_ref()
                .and_then(|t| t.rows.get(&sample.dicom_id).copied());
            report.without_labels += usize::from(labels.is_none());
            report.without_split += usize::from(split.is_none());
            *report
                .per_split
                .entry(split.map_or("none", Split::name).to_owned())
                .or_default() += 1;
            for t in &sample.trajectories {
                *report
                    .trajectories_per_teacher
                    .entry(t.teacher.clone())
                    .or_default() += 1;
            }
            if let Some(l) = &labels {
                for f in Finding::ALL {
                    *report
                        .label_distribution
                        .entry(f.column_name().to_owned())
                        .or_default()
                        .entry(l.get(f).name().to_owned())
                        .or_default() += 1;
                }
            }
            if let Some(s) = study_id {
                studies.insert(s);
            }
            report.samples.kept += 1;
            items.push(Item {
                subject_id,
                study_id,
                labels,
                split,
                view_position: meta.map(|m| m.view_position.clone()),
                image,
                sample,
            });
        }
        report.studies = studies.len();
        Ok((
            Dataset {
                root: root.to_owned(),
                items,
            },
            report,
        ))
    }
}

impl CheckReport {
    /// The report as text: counts per table, images, splits, trajectories per teacher, positive
    /// labels per finding, and the first 20 problems.
    pub fn render(&self) -> String {
        let r = self;
        let c = |c: &Counts| format!("{} read, {} kept, {} rejected", c.read, c.kept, c.rejected);
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
        for f in crate::Finding::ALL {
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

    /// Writes every problem as one JSON line to `path` (the quarantine file).
    ///
    /// # Errors
    /// [`CxrError::Io`].
    pub fn write_quarantine(&self, path: &Path) -> Result<()> {
        let mut text = String::new();
        for p in &self.problems {
            text.push_str(&serde_json::to_string(p).unwrap_or_default());
            text.push('\n');
        }
        std::fs::write(path, text).map_err(|source| CxrError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Whether every count reconciles (`read = kept + rejected` at each level).
    pub fn reconciles(&self) -> bool {
        [
            &self.records,
            &self.labels,
            &self.metadata,
            &self.split,
            &self.samples,
        ]
        .iter()
        .all(|c| c.read == c.kept + c.rejected)
    }

    /// Positive labels among kept samples for `finding`.
    pub fn positives(&self, finding: Finding) -> usize {
        self.label_distribution
            .get(finding.column_name())
            .and_then(|m| m.get(LabelStatus::Positive.name()))
            .copied()
            .unwrap_or(0)
    }
}
