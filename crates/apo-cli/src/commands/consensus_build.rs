//! `apo consensus build`: label consensus, consensus trajectories and preference sets of a
//! data set, exported for our trainer, TRL or ms-swift.
//!
//! Every trajectory is read with the `cxr-max` labeler; per image and finding a teacher votes
//! present or absent (hedges, omissions and refusals abstain). Each finding is aggregated
//! over the images (majority, reliability-weighted or Dawid-Skene, the 14 findings on all
//! cores). Dawid-Skene's label orientation is fixed by the fact that every finding is absent
//! in most images (see [`apo_consensus::DawidSkeneConfig::majority_label`]), and EM starts
//! from each teacher's votes and from [`DS_RANDOM_STARTS`] seeded random posteriors as well as
//! the majority vote, keeping the best fit
//! ([`apo_consensus::DawidSkeneConfig::worker_starts`]). A finding has a consensus on an image
//! when at least `min_votes` teachers voted and
//! the consensus confidence exceeds `min_confidence`; No Finding is kept only as a positive
//! when no pathology is present. The claim synthesizer then writes the consensus trajectory
//! (teacher sentences that several teachers support, templates from the labeler otherwise),
//! and the teacher trajectories become the negatives.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use apo_consensus::export::{self, Export, ItemContext};
use apo_consensus::{
    ClaimConfig, ClaimExtractor, ClaimSynthesizer, DawidSkeneConfig, NegativePolicy,
    NegativeWeighting, Polarity, PreferenceConfig, PreferenceInput, PreferenceSet, Reading,
    SkipReason, Source, Votes, dawid_skene, majority_vote, reliability_weights, weighted_vote,
};
use cxr_max::dataset::{Dataset, DatasetOptions, Item};
use cxr_max::tables::Split;
use cxr_max::{Finding, LabelStatus, findings};
use serde::Serialize;

use super::consensus::Method;

/// The chest X-ray claim extractor: `cxr-max`'s labeler and sentence templates.
#[derive(Debug, Clone, Copy, Default)]
pub struct CxrClaims;

fn polarity(s: LabelStatus) -> Option<Polarity> {
    match s {
        LabelStatus::Positive => Some(Polarity::Present),
        LabelStatus::Negative => Some(Polarity::Absent),
        LabelStatus::Uncertain => Some(Polarity::Uncertain),
        LabelStatus::NotMentioned => None,
    }
}

fn status(p: Polarity) -> LabelStatus {
    match p {
        Polarity::Present => LabelStatus::Positive,
        Polarity::Absent => LabelStatus::Negative,
        Polarity::Uncertain => LabelStatus::Uncertain,
    }
}

impl ClaimExtractor for CxrClaims {
    fn topics(&self) -> usize {
        Finding::ALL.len()
    }

    fn read(&self, text: &str) -> Reading {
        let e = findings::extract(text);
        let sentences = findings::split_sentences(text);
        Reading {
            claims: e
                .mentions
                .iter()
                .filter_map(|m| {
                    polarity(m.status).map(|p| apo_consensus::Claim {
                        sentence: m.sentence,
                        topic: m.finding.index(),
                        polarity: p,
                    })
                })
                .collect(),
            finals: Finding::ALL
                .iter()
                .map(|&f| polarity(e.findings.get(f)))
                .collect(),
            sentences,
        }
    }

    fn render(&self, topic: usize, polarity: Polarity) -> String {
        findings::statement(Finding::ALL[topic], status(polarity))
    }

    fn impression(&self, consensus: &[Option<Polarity>]) -> Option<String> {
        let positives: Vec<&str> = Finding::ALL
            .iter()
            .filter(|f| f.is_pathology() && consensus[f.index()] == Some(Polarity::Present))
            .map(|f| f.noun())
            .collect();
        if !positives.is_empty() {
            return Some(format!("Impression: {}.", join_and(&positives)));
        }
        (consensus[Finding::NoFinding.index()] == Some(Polarity::Present))
            .then(|| "Impression: no acute cardiopulmonary process.".to_owned())
    }
}

fn join_and(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// How teacher weights are obtained for `--method weighted`.
#[derive(Debug, Clone, PartialEq)]
pub enum Weights {
    /// Per finding, each teacher's leave-one-out agreement log-odds
    /// ([`apo_consensus::reliability_weights`]).
    Reliability,
    /// Static weights per teacher name (missing teachers weigh 1).
    Static(Vec<(String, f64)>),
}

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
        }
    }
}

pub use cxr_max::eval::Accuracy;

/// The summary of a build.
#[derive(Debug, Clone, Serialize)]
pub struct BuildSummary {
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

/// Per image of one finding: the consensus and its confidence.
type FindingConsensus = Vec<(Option<Polarity>, f64)>;

/// Per image: teacher × finding final statements.
pub type Finals = Vec<Vec<Option<Polarity>>>;

/// Per image and finding: the consensus and its confidence.
#[derive(Debug, Clone)]
pub struct LabelConsensus {
    /// `labels[item][finding]`.
    pub labels: Vec<Vec<Option<Polarity>>>,
    /// `confidence[item][finding]`.
    pub confidence: Vec<Vec<f64>>,
}

/// Reads every trajectory of every item (on all cores): `finals[item][source]`.
pub fn read_finals(items: &[&Item]) -> Vec<Finals> {
    let read = |item: &&Item| -> Finals {
        item.sample
            .trajectories
            .iter()
            .map(|t| CxrClaims.read(&t.text).finals)
            .collect()
    };
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = items.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(read).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("labelling worker"))
            .collect()
    })
}

/// Aggregates the teachers' votes per finding (the 14 findings on all cores).
///
/// # Errors
/// Consensus errors (bad weights), as text.
pub fn label_consensus(
    items: &[&Item],
    finals: &[Finals],
    teachers: &[String],
    method: Method,
    weights: &Weights,
    min_votes: usize,
) -> Result<LabelConsensus, String> {
    const LABELS: [&str; 2] = ["absent", "present"];
    let n = items.len();
    let one = |f: usize| -> Result<FindingConsensus, String> {
        let mut entries = Vec::new();
        let mut voters = vec![0usize; n];
        for (i, item) in items.iter().enumerate() {
            for (s, t) in item.sample.trajectories.iter().enumerate() {
                let l = match finals[i][s][f] {
                    Some(Polarity::Absent) => 0,
                    Some(Polarity::Present) => 1,
                    _ => continue,
                };
                let w = teachers
                    .iter()
                    .position(|x| *x == t.teacher)
                    .expect("listed");
                entries.push((i, w, l));
                voters[i] += 1;
            }
        }
        if entries.is_empty() {
            return Ok(vec![(None, 0.0); n]);
        }
        let votes = Votes::from_indices(
            items.iter().map(|it| it.sample.dicom_id.clone()).collect(),
            teachers.to_vec(),
            LABELS.iter().map(|s| (*s).to_owned()).collect(),
            entries,
        )
        .map_err(|e| format!("{}: {e}", Finding::ALL[f]))?;
        let result = match method {
            Method::Majority => majority_vote(&votes),
            Method::Weighted => {
                let w = match weights {
                    Weights::Reliability => reliability_weights(&votes),
                    Weights::Static(w) => w.clone(),
                };
                let w: Vec<(&str, f64)> = w
                    .iter()
                    .filter(|(name, _)| votes.workers().contains(name))
                    .map(|(name, x)| (name.as_str(), *x))
                    .collect();
                weighted_vote(&votes, &w).map_err(|e| e.to_string())?
            }
            Method::DawidSkene => {
                // Every finding is absent in most images (true of all 14 in MIMIC-CXR): this
                // fixes Dawid-Skene's label orientation when most teachers are worse than
                // chance on a finding. When most teachers share a bias (stating a finding on
                // most images), EM from the majority vote can settle on a fit whose latent
                // class follows the bias; EM from each teacher's labels and from seeded
                // random posteriors too, keeping the best-fitting, finds the truth's.
                let config = DawidSkeneConfig {
                    majority_label: Some(0),
                    worker_starts: true,
                    random_starts: DS_RANDOM_STARTS,
                    ..DawidSkeneConfig::default()
                };
                dawid_skene(&votes, &config)
                    .map_err(|e| e.to_string())?
                    .consensus
            }
        };
        Ok(result
            .iter()
            .map(|c| {
                if voters[c.task] < min_votes.max(1) {
                    (None, 0.0)
                } else {
                    let p = [Polarity::Absent, Polarity::Present][c.label];
                    (Some(p), c.confidence)
                }
            })
            .collect())
    };
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut per_finding: Vec<Option<Result<FindingConsensus, String>>> =
        (0..Finding::ALL.len()).map(|_| None).collect();
    let results = std::sync::Mutex::new(&mut per_finding);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let f = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if f >= Finding::ALL.len() {
                        break;
                    }
                    let r = one(f);
                    results.lock().expect("results")[f] = Some(r);
                }
            });
        }
    });
    let mut labels = vec![vec![None; Finding::ALL.len()]; n];
    let mut confidence = vec![vec![0.0; Finding::ALL.len()]; n];
    for (f, r) in per_finding.into_iter().enumerate() {
        for (i, (l, c)) in r
            .expect("every finding aggregated")?
            .into_iter()
            .enumerate()
        {
            labels[i][f] = l;
            confidence[i][f] = c;
        }
    }
    // No Finding only as a positive, and only without a present pathology.
    let nf = Finding::NoFinding.index();
    for (l, c) in labels.iter_mut().zip(&mut confidence) {
        let pathology = Finding::ALL
            .iter()
            .any(|f| f.is_pathology() && l[f.index()] == Some(Polarity::Present));
        if pathology || l[nf] != Some(Polarity::Present) {
            l[nf] = None;
            c[nf] = 0.0;
        }
    }
    Ok(LabelConsensus { labels, confidence })
}

/// Dawid-Skene EM starts from seeded random posteriors, besides the majority vote and one
/// per teacher: on the default simulation's train splits (seeds 0-4), 16 and 32 starts find
/// the same fits.
pub const DS_RANDOM_STARTS: usize = 16;

/// Accuracy of `predict(item, finding)` against the ground truth; `None` without any.
pub fn accuracy(
    items: &[&Item],
    evaluated: &[Finding],
    predict: impl Fn(usize, Finding) -> Option<Polarity>,
) -> Option<Accuracy> {
    let labels: Vec<_> = items.iter().map(|i| i.labels).collect();
    cxr_max::eval::accuracy(&labels, evaluated, |i, f| match predict(i, f) {
        Some(Polarity::Present) => Some(true),
        Some(Polarity::Absent) => Some(false),
        _ => None,
    })
}

/// A teacher's vote on a finding of an item: its final statement, present or absent (hedges,
/// omissions and missing trajectories give none).
pub fn teacher_vote(item: &Item, finals: &Finals, teacher: &str, f: Finding) -> Option<Polarity> {
    item.sample
        .trajectories
        .iter()
        .position(|t| t.teacher == teacher)
        .and_then(|s| finals[s][f.index()])
        .filter(|p| *p != Polarity::Uncertain)
}

/// Teachers in order of first appearance.
pub fn teachers_of(items: &[&Item]) -> Vec<String> {
    let mut teachers: Vec<String> = Vec::new();
    for item in items {
        for t in &item.sample.trajectories {
            if !teachers.contains(&t.teacher) {
                teachers.push(t.teacher.clone());
            }
        }
    }
    teachers
}

/// The preference sets of `items` (on all cores), in item order, or why each was skipped.
///
/// # Errors
/// Synthesizer errors, as text.
pub fn preference_sets(
    items: &[&Item],
    finals: &[Finals],
    consensus: &LabelConsensus,
    claims: &ClaimConfig,
    config: &PreferenceConfig,
) -> Result<Vec<Result<PreferenceSet, SkipReason>>, String> {
    let synthesizer =
        ClaimSynthesizer::new(CxrClaims, claims.clone()).map_err(|e| e.to_string())?;
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
        };
        apo_consensus::build_preference(&input, &synthesizer, config)
            .map_err(|e| format!("{}: {e}", item.sample.dicom_id))
    };
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = items.len().div_ceil(threads).max(1);
    let idx: Vec<usize> = (0..items.len()).collect();
    let parts: Vec<Vec<_>> = std::thread::scope(|s| {
        let handles: Vec<_> = idx
            .chunks(chunk)
            .map(|part| {
                let one = &one;
                s.spawn(move || part.iter().map(|&i| one(i)).collect::<Vec<_>>())
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("synthesis worker"))
            .collect()
    });
    parts.into_iter().flatten().collect()
}

/// Writes `lines` to `path` atomically (a temporary file in the same folder, then a rename).
///
/// # Errors
/// File errors, as text.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    let tmp = path.with_extension("partial");
    {
        let file = std::fs::File::create(&tmp).map_err(err)?;
        let mut w = std::io::BufWriter::new(file);
        write(&mut w).map_err(err)?;
        w.flush().map_err(err)?;
        w.get_ref().sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)
}

/// Runs the build: reads the data set, aggregates, synthesizes, writes the export and returns
/// the summary.
///
/// # Errors
/// Data set, consensus and file errors, as text.
pub fn build(options: &BuildOptions) -> Result<BuildSummary, String> {
    let start = std::time::Instant::now();
    let (data, _) =
        Dataset::open(&options.dir, &DatasetOptions::default()).map_err(|e| e.to_string())?;
    let items: Vec<&Item> = data
        .items
        .iter()
        .filter(|i| options.split.is_none_or(|s| i.split == Some(s)))
        .collect();
    if items.is_empty() {
        return Err(format!(
            "{}: no usable sample{}",
            options.dir.display(),
            options
                .split
                .map(|s| format!(" in split `{}`", s.name()))
                .unwrap_or_default()
        ));
    }
    let teachers = teachers_of(&items);
    let _span = tracing::info_span!("consensus build", items = items.len()).entered();
    let finals = read_finals(&items);
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
    let sets = preference_sets(
        &items,
        &finals,
        &consensus,
        &options.claims,
        &options.preference,
    )?;
    let topics: Vec<String> = Finding::ALL
        .iter()
        .map(|f| f.column_name().to_owned())
        .collect();
    let prompts: Vec<String> = items
        .iter()
        .map(|i| {
            i.sample
                .prompt
                .clone()
                .unwrap_or_else(|| cxr_max::sim::PROMPT.to_owned())
        })
        .collect();
    let images: Vec<Vec<String>> = items
        .iter()
        .map(|i| vec![i.image.display().to_string()])
        .collect();
    let mut rows = 0usize;
    write_atomic(&options.out, |w| {
        for (i, set) in sets.iter().enumerate() {
            let Ok(set) = set else { continue };
            let ctx = ItemContext {
                prompt: &prompts[i],
                images: &images[i],
                topics: &topics,
            };
            let lines: Vec<String> = match options.export {
                Export::Ours => vec![serde_json::to_string(&export::ours_row(set, &ctx))?],
                Export::Trl => export::trl_rows(set, &ctx)
                    .iter()
                    .map(serde_json::to_string)
                    .collect::<Result<_, _>>()?,
                Export::Swift => export::swift_rows(set, &ctx)
                    .iter()
                    .map(serde_json::to_string)
                    .collect::<Result<_, _>>()?,
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
    let mut positive_bases: BTreeMap<String, usize> = BTreeMap::new();
    for s in &sets {
        match s {
            Ok(set) => {
                if let Some(b) = &set.base {
                    *positive_bases.entry(b.clone()).or_insert(0) += 1;
                }
                written += 1;
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
        items: items.len(),
        consensus_found: written,
        skipped,
        negatives_mean: neg_total as f64 / written.max(1) as f64,
        negatives_min: if written == 0 { 0 } else { neg_min },
        negatives_max: neg_max,
        rows,
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

/// Parses `--negatives` and `--negative-weights`.
///
/// # Errors
/// Unknown names, as text.
pub fn parse_negatives(
    negatives: &str,
    weighting: &str,
) -> Result<(NegativePolicy, NegativeWeighting), String> {
    let policy: NegativePolicy = negatives
        .parse()
        .map_err(|e: apo_consensus::ConsensusError| e.to_string())?;
    let weighting = match weighting {
        "uniform" | "none" => NegativeWeighting::Uniform,
        "drift" => NegativeWeighting::Drift,
        other => {
            return Err(format!(
                "negative weights `{other}` is not known; expected uniform or drift"
            ));
        }
    };
    Ok((policy, weighting))
}

/// The summary as a table: per finding, the consensus, the majority vote and every teacher.
pub fn render_summary(s: &BuildSummary) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
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
