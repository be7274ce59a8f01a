//! `apo drift report`: multi-stream drift of a data set's teachers, as JSON and PNG plots.
//!
//! Every trajectory is read sentence by sentence with the `cxr-max` labeler. Per image and
//! finding, a teacher votes present (positive statement), absent (negative) or abstains
//! (uncertain, not mentioned, refusal); the consensus is the majority of the votes cast (no
//! consensus on a tie). From these:
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

use apo_drift::{
    BinaryScores, DetectorConfig, Divergence, MultiStreamMonitor, StreamCounts, binary_scores,
    collective_shift, cumulative_deviation, fleiss_kappa, instantaneous_drift, step_shift,
    vote_entropy,
};
use cxr_max::dataset::{Dataset, DatasetOptions};
use cxr_max::{Finding, LabelStatus, findings};
use ndarray::Array2;
use serde::Serialize;

use crate::plot;

/// Options of `apo drift report`.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// The data set folder.
    pub dir: PathBuf,
    /// Output folder for `drift.json` and the plots.
    pub out: PathBuf,
    /// The change-point detector.
    pub detector: DetectorConfig,
    /// Sentence steps kept (later sentences are pooled into the last step).
    pub max_steps: usize,
}

/// One change point.
#[derive(Debug, Clone, Serialize, PartialEq)]
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

/// The report.
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
    /// Teacher × finding accuracy of the votes against the labels, when present.
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

fn vote(s: LabelStatus) -> Option<bool> {
    match s {
        LabelStatus::Positive => Some(true),
        LabelStatus::Negative => Some(false),
        _ => None,
    }
}

fn rate(num: usize, den: usize) -> f64 {
    if den == 0 {
        f64::NAN
    } else {
        num as f64 / den as f64
    }
}

/// Builds the report and writes `drift.json` and the plots to `options.out`.
///
/// # Errors
/// Data set errors, drift statistic errors and file errors, as text.
pub fn report(options: &ReportOptions) -> Result<DriftReport, String> {
    let (data, check) =
        Dataset::open(&options.dir, &DatasetOptions::default()).map_err(|e| e.to_string())?;
    if data.items.is_empty() {
        return Err(format!("{}: no usable sample", options.dir.display()));
    }
    let mut teachers: Vec<String> = Vec::new();
    for item in &data.items {
        for t in &item.sample.trajectories {
            if !teachers.contains(&t.teacher) {
                teachers.push(t.teacher.clone());
            }
        }
    }
    let (n, f) = (teachers.len(), Finding::ALL.len());
    let j_max = options.max_steps.max(2);
    let mut counts = StreamCounts::new(n, j_max, STATUSES.len()).map_err(|e| e.to_string())?;
    // votes[item][teacher][finding], and every statement as (teacher, step, status index);
    // trajectories are labelled on all cores.
    type Labelled = (Vec<[Option<bool>; 14]>, Vec<(usize, usize, usize)>);
    let label_item = |item: &cxr_max::dataset::Item| -> Labelled {
        let mut per = vec![[None; 14]; n];
        let mut statements = Vec::new();
        for t in &item.sample.trajectories {
            let u = teachers
                .iter()
                .position(|x| x == &t.teacher)
                .expect("teacher listed");
            let e = findings::extract(&t.text);
            for m in &e.mentions {
                if let Some(k) = STATUSES.iter().position(|s| *s == m.status) {
                    statements.push((u, m.sentence.min(j_max - 1), k));
                }
            }
            for fi in Finding::ALL {
                per[u][fi.index()] = vote(e.findings.get(fi));
            }
        }
        (per, statements)
    };
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let chunk = data.items.len().div_ceil(threads).max(1);
    let t0 = std::time::Instant::now();
    let labelled: Vec<Labelled> = std::thread::scope(|scope| {
        let handles: Vec<_> = data
            .items
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(label_item).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("labelling worker"))
            .collect()
    });
    tracing::debug!(seconds = t0.elapsed().as_secs_f64(), "labelled");
    let mut votes: Vec<Vec<[Option<bool>; 14]>> = Vec::with_capacity(labelled.len());
    for (per, statements) in labelled {
        for (u, j, k) in statements {
            counts.observe(u, j, k).map_err(|e| e.to_string())?;
        }
        votes.push(per);
    }
    let consensus: Vec<[Option<bool>; 14]> = votes
        .iter()
        .map(|per| {
            let mut c = [None; 14];
            for k in 0..f {
                let yes = per.iter().filter(|v| v[k] == Some(true)).count();
                let no = per.iter().filter(|v| v[k] == Some(false)).count();
                c[k] = if yes > no {
                    Some(true)
                } else if no > yes {
                    Some(false)
                } else {
                    None
                };
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
    let truth: Vec<Option<[Option<bool>; 14]>> = data
        .items
        .iter()
        .map(|it| {
            it.labels.map(|l| {
                let mut t = [None; 14];
                for fi in Finding::ALL {
                    t[fi.index()] = match l.get(fi) {
                        LabelStatus::Positive => Some(true),
                        LabelStatus::Uncertain => None,
                        _ => Some(false),
                    };
                }
                t
            })
        })
        .collect();
    let has_truth = truth.iter().any(Option::is_some);
    let accuracy = |pick: &dyn Fn(usize) -> Option<bool>, k: usize| {
        let (mut ok, mut den) = (0, 0);
        for (i, t) in truth.iter().enumerate() {
            if let (Some(t), Some(v)) = (t.as_ref().and_then(|t| t[k]), pick(i)) {
                den += 1;
                ok += usize::from(t == v);
            }
        }
        rate(ok, den)
    };
    let accuracy_vs_truth = has_truth.then(|| {
        (0..n)
            .map(|u| (0..f).map(|k| accuracy(&|i| votes[i][u][k], k)).collect())
            .collect()
    });
    let consensus_accuracy =
        has_truth.then(|| (0..f).map(|k| accuracy(&|i| consensus[i][k], k)).collect());

    let mut scores_vs_consensus = BTreeMap::new();
    let mut scores_vs_truth = BTreeMap::new();
    for u in 0..n {
        let predicted: Vec<Option<bool>> = votes
            .iter()
            .flat_map(|per| per[u].iter().copied())
            .collect();
        let reference: Vec<Option<bool>> =
            consensus.iter().flat_map(|c| c.iter().copied()).collect();
        scores_vs_consensus.insert(
            teachers[u].clone(),
            binary_scores(&predicted, &reference).map_err(|e| e.to_string())?,
        );
        if has_truth {
            let reference: Vec<Option<bool>> = truth
                .iter()
                .flat_map(|t| t.map_or([None; 14], |t| t).into_iter())
                .collect();
            scores_vs_truth.insert(
                teachers[u].clone(),
                binary_scores(&predicted, &reference).map_err(|e| e.to_string())?,
            );
        }
    }

    tracing::debug!(seconds = t0.elapsed().as_secs_f64(), "scores");
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

    tracing::debug!(seconds = t0.elapsed().as_secs_f64(), "agreement");
    let dists = counts.distributions(1.0).map_err(|e| e.to_string())?;
    let inst =
        instantaneous_drift(&dists, None, Divergence::JensenShannon).map_err(|e| e.to_string())?;
    let cum = cumulative_deviation(&inst, 1.0).map_err(|e| e.to_string())?;
    let shift = step_shift(&dists, 1, Divergence::JensenShannon).map_err(|e| e.to_string())?;
    let coll = collective_shift(&dists, 1).map_err(|e| e.to_string())?;
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
    let mut strip_names = Vec::new();
    let mut strip_events = Vec::new();
    let mut strip_expected = Vec::new();
    let expected = expected_drift(&options.dir);
    for fi in Finding::TABLE1 {
        let k = fi.index();
        let mut monitor =
            MultiStreamMonitor::new(&options.detector, n).map_err(|e| e.to_string())?;
        let mut item_of: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, per) in votes.iter().enumerate() {
            let Some(c) = consensus[i][k] else { continue };
            for u in 0..n {
                if let Some(v) = per[u][k] {
                    monitor
                        .update(u, f64::from(u8::from(v == c)))
                        .map_err(|e| e.to_string())?;
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
            strip_names.push(format!("{} {}", short(&teachers[u]), short_finding(fi)));
            strip_events.push(items);
            strip_expected.push(
                expected
                    .get(&(teachers[u].clone(), fi.column_name().to_owned()))
                    .map(|ats| {
                        ats.iter()
                            .map(|a| (a * votes.len() as f64) as usize)
                            .collect()
                    })
                    .unwrap_or_default(),
            );
        }
    }

    tracing::debug!(seconds = t0.elapsed().as_secs_f64(), "change points");
    std::fs::create_dir_all(&options.out).map_err(|e| format!("{}: {e}", options.out.display()))?;
    let mut files = Vec::new();
    let finding_names: Vec<String> = Finding::ALL.iter().map(|f| short_finding(*f)).collect();
    let heat_path = options.out.join("disagreement_heatmap.png");
    plot::heatmap(
        "DISAGREEMENT WITH CONSENSUS (TEACHER X FINDING)",
        &teachers,
        &finding_names,
        &disagreement,
        &heat_path,
    )?;
    files.push(heat_path);
    let steps_path = options.out.join("step_drift.png");
    plot::lines(
        "INSTANTANEOUS DRIFT JS(P_UJ || MEAN) BY SENTENCE STEP",
        "SENTENCE STEP J",
        &teachers,
        &steps.instantaneous_js,
        &steps_path,
    )?;
    files.push(steps_path);
    let cp_path = options.out.join("change_points.png");
    plot::events(
        "CHANGE POINTS OF AGREEMENT WITH CONSENSUS",
        &strip_names,
        &strip_events,
        &strip_expected,
        votes.len(),
        &cp_path,
    )?;
    files.push(cp_path);

    let report = DriftReport {
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
        problems: check.problems.len(),
        files: files.clone(),
    };
    let json_path = options.out.join("drift.json");
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(&json_path, text).map_err(|e| format!("{}: {e}", json_path.display()))?;
    let mut report = report;
    report.files.push(json_path);
    Ok(report)
}

/// Injected drift positions from the data set's `teachers.toml` (simulated data sets), by
/// (teacher, finding).
fn expected_drift(dir: &Path) -> BTreeMap<(String, String), Vec<f64>> {
    let mut out = BTreeMap::new();
    let Ok(profiles) = cxr_max::sim::Profiles::from_file(&dir.join(cxr_max::sim::files::PROFILES))
    else {
        return out;
    };
    for t in profiles.teacher {
        for seg in t.drift {
            for name in seg.accuracy.keys() {
                out.entry((t.name.clone(), name.clone()))
                    .or_insert_with(Vec::new)
                    .push(seg.at);
            }
        }
    }
    out
}

fn short(name: &str) -> String {
    name.chars().take(11).collect()
}

fn short_finding(f: Finding) -> String {
    match f {
        Finding::Atelectasis => "ATEL",
        Finding::Cardiomegaly => "CARD",
        Finding::Consolidation => "CONS",
        Finding::Edema => "EDEMA",
        Finding::EnlargedCardiomediastinum => "ECM",
        Finding::Fracture => "FRACT",
        Finding::LungLesion => "LESION",
        Finding::LungOpacity => "OPAC",
        Finding::NoFinding => "NOFIND",
        Finding::PleuralEffusion => "EFFUS",
        Finding::PleuralOther => "PLOTH",
        Finding::Pneumonia => "PNEUM",
        Finding::Pneumothorax => "PTX",
        Finding::SupportDevices => "DEVICE",
    }
    .to_owned()
}
