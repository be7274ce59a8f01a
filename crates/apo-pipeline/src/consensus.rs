//! The consensus build: label consensus, consensus trajectories and preference sets of a
//! data set, exported for our trainer, TRL or ms-swift (`apo consensus build`, and the
//! pipeline's consensus stage).
//!
//! Per image and finding the teachers' votes ([`crate::labels`]) are aggregated over the
//! images (majority, reliability-weighted or Dawid-Skene; [`label_consensus`]). A finding
//! has a consensus on an image when at least `min_votes` teachers voted and the consensus
//! confidence exceeds `min_confidence`. The claim synthesizer then writes the consensus
//! trajectory (teacher sentences that several teachers support, templates from the labeler
//! otherwise), and the teacher trajectories become the negatives.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use apo_consensus::export::{self, Export, ItemContext};
use apo_consensus::{
    ClaimConfig, ClaimSynthesizer, Method, PreferenceConfig, PreferenceInput, PreferenceSet,
    Reading, SkipReason, Source,
};
use cxr_max::Finding;
use cxr_max::dataset::Item;
use cxr_max::tables::Split;
use rayon::prelude::*;
use serde::Serialize;

pub use cxr_max::eval::Accuracy;

use crate::error::{PipelineError, Result};
use crate::io::write_atomic;
use crate::labels::{
    CxrClaims, Finals, LabelConsensus, Labelled, Weights, accuracy, label_consensus, teacher_vote,
    teachers_of,
};

/// Options of `apo consensus build`.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The data set folder.
    pub dir: PathBuf,
    /// Output JSONL file.
    pub out: PathBuf,
    /// Label aggregation.
    pub method: Method,
    /// Teacher weights for the weighted vote.
    pub weights: Weights,
    /// Negative selection and weights, thresholds.
    pub preference: PreferenceConfig,
    /// Claim synthesizer parameters.
    pub claims: ClaimConfig,
    /// A finding needs at least this many teacher votes on an image to have a consensus.
    pub min_votes: usize,
    /// Export layout.
    pub export: Export,
    /// Restrict to one split (all items when `None`).
    pub split: Option<Split>,
    /// Findings averaged in the summary's mean accuracy.
    pub evaluated: Vec<Finding>,
    /// Write image paths relative to this folder (a portable set); `None`: absolute paths,
    /// which resolve from any working folder.
    pub relative_to: Option<PathBuf>,
    /// The reader settings (records file, mapping, strict, quarantine).
    pub source: cxr_max::dataset::DataSource,
}

impl BuildOptions {
    /// Defaults: Dawid-Skene, every negative, our format, all splits, the five findings of the
    /// paper's Table 1 evaluated.
    pub fn new(dir: PathBuf, out: PathBuf) -> Self {
        BuildOptions {
            dir,
            out,
            method: Method::DawidSkene,
            weights: Weights::Reliability,
            preference: PreferenceConfig::default(),
            claims: ClaimConfig::default(),
            min_votes: 2,
            export: Export::Ours,
            split: None,
            evaluated: Finding::TABLE1.to_vec(),
            relative_to: None,
            source: Default::default(),
        }
    }
}

/// `path` as an absolute path (against the working folder when relative), without resolving
/// links.
fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(PipelineError::io(path))
}

/// `path` relative to folder `base` (both made absolute first): the common prefix removed and
/// one `..` per remaining component of `base`.
pub fn relative_path(path: &Path, base: &Path) -> Result<PathBuf> {
    use std::path::Component;
    let path = absolute(path)?;
    let base = absolute(base)?;
    let p: Vec<Component<'_>> = path.components().collect();
    let b: Vec<Component<'_>> = base.components().collect();
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &p[common..] {
        out.push(c.as_os_str());
    }
    Ok(out)
}

/// The summary of a build.
#[derive(Debug, Clone, Serialize)]
pub struct BuildSummary {
    /// Record lines read, kept and rejected by the reader (`apo data check` lists the
    /// rejected ones; `--quarantine FILE` writes them).
    pub records: cxr_max::dataset::Counts,
    /// Images considered.
    pub items: usize,
    /// Images with a preference set written.
    pub consensus_found: usize,
    /// Images skipped, by reason.
    pub skipped: BTreeMap<String, usize>,
    /// Negatives per written image: mean, min, max.
    pub negatives_mean: f64,
    /// Fewest negatives.
    pub negatives_min: usize,
    /// Most negatives.
    pub negatives_max: usize,
    /// Rows written (one per image for `ours`, one per negative otherwise).
    pub rows: usize,
    /// Negatives left out because their text is the chosen text (no constraint: ms-swift
    /// rejects such a pair, TRL trains on it with zero gradient).
    pub negatives_identical_dropped: usize,
    /// Share of consensus sentences rendered from templates rather than kept from a teacher.
    pub rendered_share: f64,
    /// How the consensus trajectories were written (`merged`, `closest-teacher`).
    pub positive: String,
    /// With `closest-teacher`: per teacher, the consensus trajectories edited from its
    /// trajectory (the rest fell back to a merged text).
    pub positive_bases: BTreeMap<String, usize>,
    /// Aggregation method.
    pub method: String,
    /// Findings averaged in the means.
    pub evaluated: Vec<String>,
    /// Accuracy of the consensus labels (when the data set has ground truth).
    pub consensus: Option<Accuracy>,
    /// Accuracy of the plain majority vote, for comparison.
    pub majority_vote: Option<Accuracy>,
    /// Accuracy of each teacher's final statements.
    pub teachers: BTreeMap<String, Accuracy>,
    /// The output file.
    pub out: PathBuf,
    /// Seconds taken.
    pub seconds: f64,
}

/// The preference sets of `items` (on all cores), in item order, or why each was skipped.
///
/// # Errors
/// Synthesizer errors, naming the image.
/// `readings[i]`, when given, is item `i`'s trajectories already read ([`Labelled`]), so the
/// synthesizer does not read them again.
pub fn preference_sets(
    items: &[&Item],
    finals: &[Finals],
    readings: Option<&[&[Reading]]>,
    consensus: &LabelConsensus,
    claims: &ClaimConfig,
    config: &PreferenceConfig,
) -> Result<Vec<std::result::Result<PreferenceSet, SkipReason>>> {
    let synthesizer = ClaimSynthesizer::new(CxrClaims, claims.clone())?;
    let one = |i: usize| {
        let item = items[i];
        let sources: Vec<Source<'_>> = item
            .sample
            .trajectories
            .iter()
            .map(|t| Source {
                teacher: &t.teacher,
                text: &t.text,
            })
            .collect();
        let input = PreferenceInput {
            id: &item.sample.dicom_id,
            sources: &sources,
            finals: &finals[i],
            consensus: &consensus.labels[i],
            confidence: &consensus.confidence[i],
            readings: readings.map(|r| r[i]),
        };
        apo_consensus::build_preference(&input, &synthesizer, config).map_err(|source| {
            PipelineError::Consensus {
                context: item.sample.dicom_id.clone(),
                source,
            }
        })
    };
    let sets: Vec<Result<_>> = (0..items.len()).into_par_iter().map(one).collect();
    sets.into_iter().collect()
}

/// Opens the data set of `options.dir`, reads every trajectory and runs the build
/// ([`build_on`]).
///
/// # Errors
/// Data set, consensus and file errors.
pub fn build(options: &BuildOptions) -> Result<BuildSummary> {
    let (data, check) = options.source.open(&options.dir)?;
    let labelled = Labelled::read(&data.items);
    let summary = build_on(&data.items, &labelled, options)?;
    Ok(BuildSummary {
        records: check.records,
        ..summary
    })
}

/// The build on a data set already opened and read: aggregates the split's votes,
/// synthesizes the consensus trajectories, writes the export to `options.out` and returns
/// the summary.
///
/// # Errors
/// [`PipelineError::Empty`] when the split has no sample; consensus and file errors.
pub fn build_on(
    items: &[Item],
    labelled: &Labelled,
    options: &BuildOptions,
) -> Result<BuildSummary> {
    let start = std::time::Instant::now();
    // Thresholds outside [0, 1] would skip every item and write an empty file.
    options
        .preference
        .validate()
        .map_err(|source| PipelineError::Consensus {
            context: "options".to_owned(),
            source,
        })?;
    let picked: Vec<usize> = (0..items.len())
        .filter(|&i| options.split.is_none_or(|s| items[i].split == Some(s)))
        .collect();
    if picked.is_empty() {
        return Err(PipelineError::Empty {
            dir: options.dir.clone(),
            split: options.split.map(|s| s.name().to_owned()),
        });
    }
    let items: Vec<&Item> = picked.iter().map(|&i| &items[i]).collect();
    let finals = labelled.finals_of(&picked);
    let teachers = teachers_of(&items);
    if options.method == Method::Weighted
        && let Weights::Static(w) = &options.weights
    {
        let pairs: Vec<(&str, f64)> = w.iter().map(|(n, x)| (n.as_str(), *x)).collect();
        apo_consensus::check_weights(&teachers, &pairs).map_err(|source| {
            PipelineError::Consensus {
                context: "--weights".to_owned(),
                source,
            }
        })?;
    }
    let _span = tracing::info_span!("consensus build", items = items.len()).entered();
    let consensus = label_consensus(
        &items,
        &finals,
        &teachers,
        options.method,
        &options.weights,
        options.min_votes,
    )?;
    let majority = label_consensus(
        &items,
        &finals,
        &teachers,
        Method::Majority,
        &options.weights,
        options.min_votes,
    )?;
    let readings: Vec<&[Reading]> = picked
        .iter()
        .map(|&i| labelled.readings[i].as_slice())
        .collect();
    let sets = preference_sets(
        &items,
        &finals,
        Some(&readings),
        &consensus,
        &options.claims,
        &options.preference,
    )?;
    let topics: Vec<String> = Finding::ALL
        .iter()
        .map(|f| f.column_name().to_owned())
        .collect();
    // Absolute (from any working folder) or relative to `relative_to`.
    let image_paths: Vec<String> = items
        .iter()
        .map(|it| {
            let p = match &options.relative_to {
                Some(base) => relative_path(&it.image, base)?,
                None => absolute(&it.image)?,
            };
            Ok(p.display().to_string())
        })
        .collect::<Result<_>>()?;
    let mut rows = 0usize;
    write_atomic(&options.out, |w| {
        for (i, set) in sets.iter().enumerate() {
            let Ok(set) = set else { continue };
            let prompt = items[i]
                .sample
                .prompt
                .clone()
                .unwrap_or_else(|| cxr_max::sim::PROMPT.to_owned());
            let images = vec![image_paths[i].clone()];
            let ctx = ItemContext {
                prompt: &prompt,
                images: &images,
                topics: &topics,
            };
            let lines: Vec<String> = match options.export {
                Export::Ours => vec![serde_json::to_string(&export::ours_row(set, &ctx))?],
                Export::Trl => export::trl_rows(set, &ctx)
                    .iter()
                    .map(serde_json::to_string)
                    .collect::<std::result::Result<_, _>>()?,
                Export::Swift => export::swift_rows(set, &ctx)
                    .iter()
                    .map(serde_json::to_string)
                    .collect::<std::result::Result<_, _>>()?,
            };
            for l in lines {
                writeln!(w, "{l}")?;
                rows += 1;
            }
        }
        Ok(())
    })?;
    let mut skipped = BTreeMap::new();
    let (mut written, mut neg_total, mut neg_min, mut neg_max) = (0, 0, usize::MAX, 0);
    let (mut sentences, mut rendered) = (0usize, 0usize);
    let mut identical = 0usize;
    let mut positive_bases: BTreeMap<String, usize> = BTreeMap::new();
    for s in &sets {
        match s {
            Ok(set) => {
                if let Some(b) = &set.base {
                    *positive_bases.entry(b.clone()).or_insert(0) += 1;
                }
                written += 1;
                identical += set.identical_dropped;
                neg_total += set.rejected.len();
                neg_min = neg_min.min(set.rejected.len());
                neg_max = neg_max.max(set.rejected.len());
                sentences += set.consensus.iter().flatten().count();
                rendered += set.rendered.len();
            }
            Err(reason) => *skipped.entry(reason.name().to_owned()).or_insert(0) += 1,
        }
    }
    let evaluated = &options.evaluated;
    let teacher_accuracy: BTreeMap<String, Accuracy> = teachers
        .iter()
        .filter_map(|name| {
            accuracy(&items, evaluated, |i, f| {
                teacher_vote(items[i], &finals[i], name, f)
            })
            .map(|a| (name.clone(), a))
        })
        .collect();
    Ok(BuildSummary {
        // Set by `build` (the caller of `build_on` opened the data set and holds the counts).
        records: cxr_max::dataset::Counts {
            read: items.len(),
            kept: items.len(),
            rejected: 0,
        },
        items: items.len(),
        consensus_found: written,
        skipped,
        negatives_mean: neg_total as f64 / written.max(1) as f64,
        negatives_min: if written == 0 { 0 } else { neg_min },
        negatives_max: neg_max,
        rows,
        negatives_identical_dropped: identical,
        rendered_share: rendered as f64 / sentences.max(1) as f64,
        positive: options.claims.style.name().to_owned(),
        positive_bases,
        method: options.method.name().to_owned(),
        evaluated: evaluated
            .iter()
            .map(|f| f.column_name().to_owned())
            .collect(),
        consensus: accuracy(&items, evaluated, |i, f| consensus.labels[i][f.index()]),
        majority_vote: accuracy(&items, evaluated, |i, f| majority.labels[i][f.index()]),
        teachers: teacher_accuracy,
        out: options.out.clone(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

impl BuildSummary {
    /// The summary as text: counts, then per finding the consensus, the majority vote and every
    /// teacher.
    pub fn render(&self) -> String {
        let s = self;
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} records read: {} kept, {} rejected",
            s.records.read, s.records.kept, s.records.rejected
        );
        let _ = writeln!(
            out,
            "{} images: {} preference sets written ({} rows to {}), skipped {}",
            s.items,
            s.consensus_found,
            s.rows,
            s.out.display(),
            if s.skipped.is_empty() {
                "none".to_owned()
            } else {
                s.skipped
                    .iter()
                    .map(|(k, v)| format!("{v} {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        let _ = writeln!(
            out,
            "negatives per image: mean {:.2}, min {}, max {}; {:.1}% of consensus sentences rendered from templates",
            s.negatives_mean,
            s.negatives_min,
            s.negatives_max,
            100.0 * s.rendered_share
        );
        if s.negatives_identical_dropped > 0 {
            let _ = writeln!(
                out,
                "negatives left out because they equal the chosen text: {}",
                s.negatives_identical_dropped
            );
        }
        if !s.positive_bases.is_empty() {
            let edited: usize = s.positive_bases.values().sum();
            let _ = writeln!(
                out,
                "positives edited from a teacher's trajectory: {edited} ({}), {} merged",
                s.positive_bases
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                s.consensus_found.saturating_sub(edited)
            );
        }
        let Some(consensus) = &s.consensus else {
            return out;
        };
        let mut rows: Vec<(String, &Accuracy)> =
            s.teachers.iter().map(|(k, v)| (k.clone(), v)).collect();
        if let Some(m) = &s.majority_vote {
            rows.push(("majority vote".to_owned(), m));
        }
        rows.push((format!("consensus ({})", s.method), consensus));
        let short: Vec<String> = s
            .evaluated
            .iter()
            .map(|f| f.chars().take(12).collect())
            .collect();
        let _ = write!(out, "{:<26}", "accuracy vs labels");
        for f in &short {
            let _ = write!(out, " {f:>12}");
        }
        let _ = writeln!(out, " {:>8}", "mean");
        for (name, acc) in rows {
            let _ = write!(out, "{name:<26}");
            for f in &s.evaluated {
                match acc.per_finding.get(f).copied().flatten() {
                    Some(v) => {
                        let _ = write!(out, " {v:>12.3}");
                    }
                    None => {
                        let _ = write!(out, " {:>12}", "-");
                    }
                }
            }
            let _ = writeln!(out, " {:>8.3}", acc.mean);
        }
        out
    }
}
