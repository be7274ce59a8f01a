//! The drift report: multi-stream drift of a data set's teachers ([`DriftReport::compute`],
//! pure: data in, a typed report out; `apo drift report` draws its plots from it).
//!
//! Every trajectory is read sentence by sentence with the `cxr-max` labeler
//! ([`Labelled`]). Per image and finding, a teacher votes present (positive statement),
//! absent (negative) or abstains (uncertain, not mentioned, refusal); the consensus is the
//! majority vote of [`crate::labels`] (a tie goes to absent; fewer than two votes, none),
//! and accuracy is [`cxr_max::eval::accuracy`]'s, the same definitions as the pipeline's
//! table. From these:
//! - disagreement of each teacher with the consensus per finding (and accuracy against the
//!   ground-truth labels when the data set has them), Fleiss' kappa and vote entropy per
//!   finding, pairwise agreement between teachers;
//! - step statistics: the distribution of statement statuses per teacher and sentence index
//!   j, its instantaneous drift from the cross-teacher mean, the cumulative deviation, the
//!   lag-1 shift per teacher and the collective (product-KL) shift;
//! - change points: a detector per (teacher, finding) over the teacher's agreement with the
//!   consensus in dataset order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use apo_consensus::Method;
use apo_drift::{
    BinaryScores, DetectorConfig, Divergence, MultiStreamMonitor, StreamCounts, binary_scores,
    collective_shift, cumulative_deviation, fleiss_kappa, instantaneous_drift, step_shift,
    vote_entropy,
};
use cxr_max::dataset::Item;
use cxr_max::{Finding, LabelStatus};
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::error::{PipelineError, Result};
use crate::labels::{LabelConsensus, Labelled, Weights, label_consensus, present, teacher_vote};

/// Injected drift positions (fractions of the stream) by (teacher, finding column name).
pub type ExpectedDrift = BTreeMap<(String, String), Vec<f64>>;

/// Options of the drift report.
#[derive(Debug, Clone)]
pub struct DriftOptions {
    /// The change-point detector.
    pub detector: DetectorConfig,
    /// Sentence steps kept (later sentences are pooled into the last step).
    pub max_steps: usize,
    /// Injected drifts to mark on the change-point streams ([`expected_drift`]).
    pub expected: ExpectedDrift,
}

impl DriftOptions {
    /// ADWIN with river's defaults, 12 sentence steps, no expected drift.
    ///
    /// # Errors
    /// None in practice (the default detector is known).
    pub fn new() -> Result<Self> {
        Ok(DriftOptions {
            detector: DetectorConfig::default_for("adwin")?,
            max_steps: 12,
            expected: ExpectedDrift::new(),
        })
    }
}

/// The change points of one teacher and finding, with the injected drifts, in image indices:
/// what the change-point plot draws.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChangePointStream {
    /// Teacher.
    pub teacher: String,
    /// Finding (column name).
    pub finding: String,
    /// Images (dataset order) at which the detector signalled a change.
    pub changes: Vec<usize>,
    /// Images at which the data set's profiles inject a drift (simulated data).
    pub expected: Vec<usize>,
}

/// One change point.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChangePoint {
    /// Teacher.
    pub teacher: String,
    /// Finding whose agreement signal changed.
    pub finding: String,
    /// Index of the image in dataset order.
    pub item: usize,
    /// `item / items`.
    pub fraction: f64,
}

/// Step statistics (rows = teachers).
#[derive(Debug, Clone, Serialize)]
pub struct StepStats {
    /// Steps (sentence indices; the last pools the rest).
    pub steps: usize,
    /// Status categories.
    pub statuses: Vec<String>,
    /// `JS(P_{u,j} ‖ mean_u P_{u,j})`.
    pub instantaneous_js: Vec<Vec<f64>>,
    /// Cumulative deviation (λ = 1) of the instantaneous drift.
    pub cumulative: Vec<Vec<f64>>,
    /// `JS(P_{u,j}, P_{u,j+1})`.
    pub shift_js: Vec<Vec<f64>>,
    /// `Σ_u KL(P_{u,j} ‖ P_{u,j+1})`.
    pub collective_kl: Vec<f64>,
}

/// The report (NaN, where a rate has no pair to count, is written as JSON `null`).
#[derive(Debug, Clone, Serialize)]
pub struct DriftReport {
    /// Images analysed.
    pub items: usize,
    /// Teachers, in order of first appearance.
    pub teachers: Vec<String>,
    /// The 14 findings.
    pub findings: Vec<String>,
    /// Teacher × finding rate of votes that differ from the consensus (NaN: no pair).
    pub disagreement: Vec<Vec<f64>>,
    /// Teacher × finding share of images on which the teacher voted.
    pub coverage: Vec<Vec<f64>>,
    /// Teacher × finding accuracy against the labels, when present ([`cxr_max::eval::accuracy`]:
    /// an image the teacher did not vote on counts as wrong; NaN: no definite label).
    pub accuracy_vs_truth: Option<Vec<Vec<f64>>>,
    /// Per-finding accuracy of the consensus against the labels, when present.
    pub consensus_accuracy: Option<Vec<f64>>,
    /// Per teacher, precision / recall / F1 of its present votes against the consensus, over
    /// every (image, finding) pair where both exist (the bars of the paper's drift figure).
    pub scores_vs_consensus: BTreeMap<String, BinaryScores>,
    /// The same against the ground-truth labels, when present.
    pub scores_vs_truth: Option<BTreeMap<String, BinaryScores>>,
    /// Per-finding Fleiss' kappa over {present, absent, abstain}.
    pub fleiss_kappa: Vec<f64>,
    /// Per-finding mean vote entropy (nats) over images with at least one vote.
    pub vote_entropy: Vec<f64>,
    /// Teacher × teacher agreement over (image, finding) pairs both voted on.
    pub pairwise_agreement: Vec<Vec<f64>>,
    /// Per finding, teacher × teacher rate of disagreement over images both voted on.
    pub pairwise_disagreement_by_finding: BTreeMap<String, Vec<Vec<f64>>>,
    /// Sentence-step statistics.
    pub steps: StepStats,
    /// The detector.
    pub detector: String,
    /// Change points per (teacher, finding), for the five findings of the paper's Table 1.
    pub change_points: Vec<ChangePoint>,
    /// The same per (teacher, finding) stream, with the injected drifts.
    pub streams: Vec<ChangePointStream>,
    /// Data set problems (quarantined records), counted.
    pub problems: usize,
    /// Files written.
    pub files: Vec<PathBuf>,
}

const STATUSES: [LabelStatus; 3] = [
    LabelStatus::Positive,
    LabelStatus::Negative,
    LabelStatus::Uncertain,
];

fn rate(num: usize, den: usize) -> f64 {
    if den == 0 {
        f64::NAN
    } else {
        num as f64 / den as f64
    }
}

/// Opens the data set of `dir`, reads every trajectory and computes the report
/// ([`DriftReport::compute`]) with the injected drifts of its `teachers.toml`, if any.
///
/// # Errors
/// Data set and drift statistic errors; [`PipelineError::Empty`] without a usable sample.
pub fn report_dir(dir: &Path, options: &DriftOptions) -> Result<DriftReport> {
    report_dir_from(dir, &cxr_max::dataset::DataSource::default(), options)
}

/// [`report_dir`] with the reader settings of `source` (records file, mapping, strict,
/// quarantine).
///
/// # Errors
/// As [`report_dir`]; the mapping and quarantine files' errors.
pub fn report_dir_from(
    dir: &Path,
    source: &cxr_max::dataset::DataSource,
    options: &DriftOptions,
) -> Result<DriftReport> {
    let (data, check) = source.open(dir)?;
    if data.items.is_empty() {
        return Err(PipelineError::Empty {
            dir: dir.to_path_buf(),
            split: None,
        });
    }
    let labelled = Labelled::read(&data.items);
    let majority = majority(&data.items, &labelled)?;
    let mut options = options.clone();
    if options.expected.is_empty() {
        options.expected = expected_drift(dir);
    }
    let mut report = DriftReport::compute(&data.items, &labelled, &majority, &options)?;
    report.problems = check.problems.len();
    Ok(report)
}

/// The majority vote of every item ([`crate::labels`]'s definition: ties to absent, at least
/// two votes).
///
/// # Errors
/// Consensus errors.
pub fn majority(items: &[Item], labelled: &Labelled) -> Result<LabelConsensus> {
    let refs: Vec<&Item> = items.iter().collect();
    label_consensus(
        &refs,
        &labelled.finals,
        &labelled.teachers,
        Method::Majority,
        &Weights::Reliability,
        2,
    )
}

impl DriftReport {
    /// Computes the report from the items, their labelled trajectories and their majority
    /// vote ([`majority`]). Writes nothing; `problems` is left 0 and `files` empty.
    ///
    /// # Errors
    /// [`PipelineError::Empty`] without items; drift statistic errors.
    pub fn compute(
        items: &[Item],
        labelled: &Labelled,
        majority: &LabelConsensus,
        options: &DriftOptions,
    ) -> Result<DriftReport> {
        compute(items, labelled, majority, options)
    }

    /// The report as text: images and teachers, each teacher's precision / recall / F1
    /// against the labels (when the data set has them), and every change point.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "drift report over {} images, {} teachers\n",
            self.items,
            self.teachers.len()
        );
        if let Some(scores) = &self.scores_vs_truth {
            let _ = writeln!(
                out,
                "{:<14} {:>9} {:>7} {:>6}  (votes vs ground truth, all findings)",
                "teacher", "precision", "recall", "F1"
            );
            for (t, s) in scores {
                let (p, r, f1) = (s.precision, s.recall, s.f1);
                let _ = writeln!(out, "{t:<14} {p:>9.3} {r:>7.3} {f1:>6.3}");
            }
        }
        out.push_str("change points (teacher, finding, position in the stream):\n");
        for cp in &self.change_points {
            let _ = writeln!(
                out,
                "  {:<14} {:<18} image {:>6} ({:.2})",
                cp.teacher, cp.finding, cp.item, cp.fraction
            );
        }
        out
    }

    /// Writes the report as pretty JSON to `path`.
    ///
    /// # Errors
    /// [`PipelineError::Io`].
    pub fn write_json(&self, path: &Path) -> Result<()> {
        crate::io::write_json(path, self)
    }
}

fn compute(
    items: &[Item],
    labelled: &Labelled,
    majority: &LabelConsensus,
    options: &DriftOptions,
) -> Result<DriftReport> {
    if items.is_empty() {
        return Err(PipelineError::Empty {
            dir: PathBuf::new(),
            split: None,
        });
    }
    let teachers = labelled.teachers.clone();
    let (n, f) = (teachers.len(), Finding::ALL.len());
    let j_max = options.max_steps.max(2);
    let mut counts = StreamCounts::new(n, j_max, STATUSES.len())?;
    for statements in &labelled.statements {
        for st in statements {
            if let Some(k) = STATUSES.iter().position(|s| *s == st.status) {
                counts.observe(st.teacher, st.sentence.min(j_max - 1), k)?;
            }
        }
    }
    // votes[item][teacher][finding]
    let votes: Vec<Vec<[Option<bool>; 14]>> = items
        .iter()
        .zip(&labelled.finals)
        .map(|(item, finals)| {
            teachers
                .iter()
                .map(|t| {
                    let mut v = [None; 14];
                    for fi in Finding::ALL {
                        v[fi.index()] = present(teacher_vote(item, finals, t, fi));
                    }
                    v
                })
                .collect()
        })
        .collect();
    let consensus: Vec<[Option<bool>; 14]> = majority
        .labels
        .iter()
        .map(|l| {
            let mut c = [None; 14];
            for k in 0..f {
                c[k] = present(l[k]);
            }
            c
        })
        .collect();

    let mut disagreement = vec![vec![f64::NAN; f]; n];
    let mut coverage = vec![vec![0.0; f]; n];
    for u in 0..n {
        for k in 0..f {
            let (mut diff, mut both, mut voted) = (0, 0, 0);
            for (i, per) in votes.iter().enumerate() {
                if let Some(v) = per[u][k] {
                    voted += 1;
                    if let Some(c) = consensus[i][k] {
                        both += 1;
                        diff += usize::from(v != c);
                    }
                }
            }
            disagreement[u][k] = rate(diff, both);
            coverage[u][k] = voted as f64 / votes.len() as f64;
        }
    }
    let truth: Vec<Option<[Option<bool>; 14]>> = items
        .iter()
        .map(|it| {
            it.labels.map(|l| {
                let mut t = [None; 14];
                for fi in Finding::ALL {
                    t[fi.index()] = cxr_max::eval::truth(&l, fi);
                }
                t
            })
        })
        .collect();
    let has_truth = truth.iter().any(Option::is_some);
    let labels: Vec<_> = items.iter().map(|i| i.labels).collect();
    let accuracy = |pick: &dyn Fn(usize, Finding) -> Option<bool>| -> Vec<f64> {
        cxr_max::eval::accuracy(&labels, &Finding::ALL, pick).map_or_else(
            || vec![f64::NAN; f],
            |a| {
                Finding::ALL
                    .iter()
                    .map(|fi| a.per_finding[fi.column_name()].unwrap_or(f64::NAN))
                    .collect()
            },
        )
    };
    let accuracy_vs_truth = has_truth.then(|| {
        (0..n)
            .map(|u| accuracy(&|i, fi| votes[i][u][fi.index()]))
            .collect()
    });
    let consensus_accuracy = has_truth.then(|| accuracy(&|i, fi| consensus[i][fi.index()]));

    let mut scores_vs_consensus = BTreeMap::new();
    let mut scores_vs_truth = BTreeMap::new();
    for u in 0..n {
        let predicted: Vec<Option<bool>> = votes
            .iter()
            .flat_map(|per| per[u].iter().copied())
            .collect();
        let reference: Vec<Option<bool>> =
            consensus.iter().flat_map(|c| c.iter().copied()).collect();
        scores_vs_consensus.insert(teachers[u].clone(), binary_scores(&predicted, &reference)?);
        if has_truth {
            let reference: Vec<Option<bool>> = truth
                .iter()
                .flat_map(|t| t.map_or([None; 14], |t| t).into_iter())
                .collect();
            scores_vs_truth.insert(teachers[u].clone(), binary_scores(&predicted, &reference)?);
        }
    }

    let mut kappa = Vec::with_capacity(f);
    let mut entropy = Vec::with_capacity(f);
    for k in 0..f {
        let table = Array2::from_shape_fn((votes.len(), 3), |(i, c)| {
            votes[i]
                .iter()
                .filter(|v| match c {
                    0 => v[k] == Some(true),
                    1 => v[k] == Some(false),
                    _ => v[k].is_none(),
                })
                .count() as f64
        });
        kappa.push(if n >= 2 {
            fleiss_kappa(table.view()).unwrap_or(f64::NAN)
        } else {
            f64::NAN
        });
        let ents: Vec<f64> = (0..votes.len())
            .filter_map(|i| vote_entropy(&[table[[i, 0]], table[[i, 1]]]).ok())
            .collect();
        entropy.push(if ents.is_empty() {
            f64::NAN
        } else {
            ents.iter().sum::<f64>() / ents.len() as f64
        });
    }
    // One pass over the votes: (disagreeing, both voted) per finding and teacher pair; the
    // all-findings agreement is the sum over findings.
    let mut pair_counts = vec![vec![vec![(0usize, 0usize); n]; n]; f];
    for per in &votes {
        for k in 0..f {
            for a in 0..n {
                let Some(x) = per[a][k] else { continue };
                for b in 0..n {
                    if let Some(y) = per[b][k] {
                        let cell = &mut pair_counts[k][a][b];
                        cell.0 += usize::from(x != y);
                        cell.1 += 1;
                    }
                }
            }
        }
    }
    let pairwise: Vec<Vec<f64>> = (0..n)
        .map(|a| {
            (0..n)
                .map(|b| {
                    let (diff, both) = (0..f).fold((0, 0), |(d, t), k| {
                        (d + pair_counts[k][a][b].0, t + pair_counts[k][a][b].1)
                    });
                    rate(both - diff, both)
                })
                .collect()
        })
        .collect();
    let by_finding: BTreeMap<String, Vec<Vec<f64>>> = Finding::ALL
        .iter()
        .map(|fi| {
            let m = &pair_counts[fi.index()];
            (
                fi.column_name().to_owned(),
                m.iter()
                    .map(|row| row.iter().map(|&(d, t)| rate(d, t)).collect())
                    .collect(),
            )
        })
        .collect();

    let dists = counts.distributions(1.0)?;
    let inst = instantaneous_drift(&dists, None, Divergence::JensenShannon)?;
    let cum = cumulative_deviation(&inst, 1.0)?;
    let shift = step_shift(&dists, 1, Divergence::JensenShannon)?;
    let coll = collective_shift(&dists, 1)?;
    let rows = |a: &Array2<f64>| a.rows().into_iter().map(|r| r.to_vec()).collect::<Vec<_>>();
    let steps = StepStats {
        steps: j_max,
        statuses: STATUSES.iter().map(|s| s.name().to_owned()).collect(),
        instantaneous_js: rows(&inst),
        cumulative: rows(&cum),
        shift_js: rows(&shift),
        collective_kl: coll.to_vec(),
    };

    // Change points per (teacher, finding) on the agreement-with-consensus signal.
    let mut change_points = Vec::new();
    let mut streams = Vec::new();
    for fi in Finding::TABLE1 {
        let k = fi.index();
        let mut monitor = MultiStreamMonitor::new(&options.detector, n)?;
        let mut item_of: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, per) in votes.iter().enumerate() {
            let Some(c) = consensus[i][k] else { continue };
            for u in 0..n {
                if let Some(v) = per[u][k] {
                    monitor.update(u, f64::from(u8::from(v == c)))?;
                    item_of[u].push(i);
                }
            }
        }
        for u in 0..n {
            let items: Vec<usize> = monitor.change_points()[u]
                .iter()
                .map(|&p| item_of[u][p])
                .collect();
            for &i in &items {
                change_points.push(ChangePoint {
                    teacher: teachers[u].clone(),
                    finding: fi.column_name().to_owned(),
                    item: i,
                    fraction: i as f64 / votes.len() as f64,
                });
            }
            let expected = options
                .expected
                .get(&(teachers[u].clone(), fi.column_name().to_owned()))
                .map(|ats| {
                    ats.iter()
                        .map(|a| (a * votes.len() as f64) as usize)
                        .collect()
                })
                .unwrap_or_default();
            streams.push(ChangePointStream {
                teacher: teachers[u].clone(),
                finding: fi.column_name().to_owned(),
                changes: items,
                expected,
            });
        }
    }

    Ok(DriftReport {
        items: votes.len(),
        teachers,
        findings: Finding::ALL
            .iter()
            .map(|f| f.column_name().to_owned())
            .collect(),
        disagreement,
        coverage,
        accuracy_vs_truth,
        consensus_accuracy,
        scores_vs_consensus,
        scores_vs_truth: has_truth.then_some(scores_vs_truth),
        fleiss_kappa: kappa,
        vote_entropy: entropy,
        pairwise_agreement: pairwise,
        pairwise_disagreement_by_finding: by_finding,
        steps,
        detector: options.detector.name().to_owned(),
        change_points,
        streams,
        problems: 0,
        files: Vec::new(),
    })
}

/// Injected drift positions from the data set's `teachers.toml` (simulated data sets), by
/// (teacher, finding); empty for a data set without one.
pub fn expected_drift(dir: &Path) -> ExpectedDrift {
    let mut out = BTreeMap::new();
    let Ok(profiles) = cxr_max::sim::Profiles::from_file(&dir.join(cxr_max::sim::files::PROFILES))
    else {
        return out;
    };
    for t in profiles.teacher {
        for seg in t.drift {
            for name in seg.named_findings() {
                out.entry((t.name.clone(), name.to_owned()))
                    .or_insert_with(Vec::new)
                    .push(seg.at);
            }
        }
    }
    out
}
