//! Scoring findings predictions against the ground-truth labels.
//!
//! - The paper's Table 1 accuracy ([`accuracy`]): per finding, the share of images whose
//!   definite statement matches the label (no statement counts as wrong).
//! - Clinical-efficacy metrics in the CheXbert convention ([`scores`]): confusion counts,
//!   sensitivity, specificity, precision, F1, balanced accuracy, AUROC where a row has a
//!   score; summaries (mean balanced accuracy, macro-F1, micro-F1, mean accuracy) over the
//!   five Table 1 findings and over all 14. Predicted positive = a final "present" statement;
//!   absent, uncertain or no statement = predicted negative; truth positive = label 1.0,
//!   truth negative = 0.0 or blank; uncertain truth (-1.0) is left out.
//! - Paired bootstrap intervals of differences between two rows ([`paired_differences`]).
//!
//! docs/evaluation.md works an example through every formula.

use std::collections::BTreeMap;

use crate::{Finding, Findings, LabelStatus};

/// Accuracy of one labeller (a teacher, a consensus, a student) against the labels.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Accuracy {
    /// Per finding (column name): correct / images with a definite label (positive, or
    /// negative / not mentioned; uncertain labels are left out). An image without a prediction
    /// counts as wrong. `None` where no image has a definite label.
    pub per_finding: BTreeMap<String, Option<f64>>,
    /// Mean over the evaluated findings that have a value.
    pub mean: f64,
    /// Per finding: share of images with a prediction at all.
    pub coverage: BTreeMap<String, f64>,
}

/// The definite ground truth of `finding`: present (1.0), absent (0.0 or not mentioned), or
/// `None` for uncertain (-1.0).
pub fn truth(labels: &Findings, finding: Finding) -> Option<bool> {
    match labels.get(finding) {
        LabelStatus::Positive => Some(true),
        LabelStatus::Uncertain => None,
        LabelStatus::Negative | LabelStatus::NotMentioned => Some(false),
    }
}

/// A prediction read from a text's final statements: present, absent, or none (uncertain
/// and not mentioned).
pub fn prediction(findings: &Findings, finding: Finding) -> Option<bool> {
    match findings.get(finding) {
        LabelStatus::Positive => Some(true),
        LabelStatus::Negative => Some(false),
        _ => None,
    }
}

/// Accuracy of `predict(image, finding)` over the images whose labels are known (`labels[i]`);
/// `None` when no image has labels. `evaluated` names the findings averaged in the mean.
pub fn accuracy(
    labels: &[Option<Findings>],
    evaluated: &[Finding],
    predict: impl Fn(usize, Finding) -> Option<bool>,
) -> Option<Accuracy> {
    if labels.iter().all(Option::is_none) {
        return None;
    }
    let mut per_finding = BTreeMap::new();
    let mut coverage = BTreeMap::new();
    for f in Finding::ALL {
        let (mut ok, mut den, mut predicted) = (0usize, 0usize, 0usize);
        for (i, l) in labels.iter().enumerate() {
            let p = predict(i, f);
            predicted += usize::from(p.is_some());
            if let Some(t) = l.as_ref().and_then(|l| truth(l, f)) {
                den += 1;
                ok += usize::from(p == Some(t));
            }
        }
        per_finding.insert(
            f.column_name().to_owned(),
            (den > 0).then(|| ok as f64 / den as f64),
        );
        coverage.insert(
            f.column_name().to_owned(),
            predicted as f64 / labels.len().max(1) as f64,
        );
    }
    let values: Vec<f64> = evaluated
        .iter()
        .filter_map(|f| per_finding[f.column_name()])
        .collect();
    let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
    Some(Accuracy {
        per_finding,
        mean,
        coverage,
    })
}

/// What a row states about one finding on one image, as the probabilities of its final
/// statement: `present`, `absent`, and otherwise no definite statement (uncertain, or not
/// mentioned). A text, a teacher or a constant states deterministically (0 or 1); a random
/// guess states present with its probability, and every count of it is an expected count.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Call {
    /// Probability of a final "present" statement.
    pub present: f64,
    /// Probability of a final "absent" statement.
    pub absent: f64,
}

impl Call {
    /// A "present" statement.
    pub const PRESENT: Call = Call {
        present: 1.0,
        absent: 0.0,
    };
    /// An "absent" statement.
    pub const ABSENT: Call = Call {
        present: 0.0,
        absent: 1.0,
    };
    /// No definite statement (uncertain or not mentioned).
    pub const NONE: Call = Call {
        present: 0.0,
        absent: 0.0,
    };

    /// A guess that states present with probability `q`, absent otherwise.
    pub fn guess(q: f64) -> Call {
        Call {
            present: q,
            absent: 1.0 - q,
        }
    }

    /// Probability of no definite statement.
    pub fn none(self) -> f64 {
        (1.0 - self.present - self.absent).max(0.0)
    }
}

impl From<Option<bool>> for Call {
    fn from(p: Option<bool>) -> Call {
        match p {
            Some(true) => Call::PRESENT,
            Some(false) => Call::ABSENT,
            None => Call::NONE,
        }
    }
}

/// Confusion counts of one row on one finding, over the images with a definite label, in the
/// CheXbert convention: predicted positive = a final "present" statement; absent, uncertain
/// or no statement = predicted negative. Counts are sums of [`Call`] probabilities (whole
/// numbers for every row but a random guess, whose counts are expected values).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Counts {
    /// Label positive, stated present.
    pub tp: f64,
    /// Label negative, stated present.
    pub fp: f64,
    /// Label positive, not stated present.
    pub fn_: f64,
    /// Label negative, not stated present.
    pub tn: f64,
    /// Label positive, no definite statement (part of `fn_`).
    pub none_positive: f64,
    /// Label negative, no definite statement (part of `tn`).
    pub none_negative: f64,
}

impl Counts {
    /// Adds an image with definite label `truth` on which the row calls `call`, `weight` times.
    pub fn add(&mut self, truth: bool, call: Call, weight: f64) {
        let none = call.none() * weight;
        if truth {
            self.tp += call.present * weight;
            self.fn_ += (1.0 - call.present) * weight;
            self.none_positive += none;
        } else {
            self.fp += call.present * weight;
            self.tn += (1.0 - call.present) * weight;
            self.none_negative += none;
        }
    }

    /// The sum of two count sets.
    pub fn plus(self, o: Counts) -> Counts {
        Counts {
            tp: self.tp + o.tp,
            fp: self.fp + o.fp,
            fn_: self.fn_ + o.fn_,
            tn: self.tn + o.tn,
            none_positive: self.none_positive + o.none_positive,
            none_negative: self.none_negative + o.none_negative,
        }
    }

    /// Images with a definite label.
    pub fn labelled(&self) -> f64 {
        self.tp + self.fp + self.fn_ + self.tn
    }

    /// TP / (TP + FN); `None` without positive labels.
    pub fn sensitivity(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// TN / (TN + FP); `None` without negative labels.
    pub fn specificity(&self) -> Option<f64> {
        ratio(self.tn, self.tn + self.fp)
    }

    /// TP / (TP + FP); `None` when the row never states the finding present.
    pub fn precision(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fp)
    }

    /// 2 TP / (2 TP + FP + FN); `None` only when there is no positive label and no positive
    /// statement (sklearn's `zero_division` case), so a row that never states present on a
    /// finding with positives scores 0.
    pub fn f1(&self) -> Option<f64> {
        ratio(2.0 * self.tp, 2.0 * self.tp + self.fp + self.fn_)
    }

    /// (sensitivity + specificity) / 2; `None` unless both are defined. Every constant row
    /// scores exactly 0.5.
    pub fn balanced_accuracy(&self) -> Option<f64> {
        Some((self.sensitivity()? + self.specificity()?) / 2.0)
    }

    /// The paper's Table 1 accuracy: images whose definite statement matches the label over
    /// labelled images (no statement counts as wrong, as [`accuracy`] computes it).
    pub fn accuracy(&self) -> Option<f64> {
        ratio(self.tp + self.tn - self.none_negative, self.labelled())
    }
}

fn ratio(num: f64, den: f64) -> Option<f64> {
    (den > 0.0).then(|| num / den)
}

/// Writes a count as an integer when it is one (every row but a random guess).
mod count {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.fract() == 0.0 && *v >= 0.0 && *v < 9.0e15 {
            s.serialize_u64(*v as u64)
        } else {
            s.serialize_f64(*v)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        f64::deserialize(d)
    }
}

/// A row's metrics on one finding (a `results.json` row's `findings` entry).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FindingMetrics {
    /// Label positive, stated present.
    #[serde(with = "count")]
    pub tp: f64,
    /// Label negative, stated present.
    #[serde(with = "count")]
    pub fp: f64,
    /// Label positive, not stated present.
    #[serde(rename = "fn", with = "count")]
    pub fn_: f64,
    /// Label negative, not stated present.
    #[serde(with = "count")]
    pub tn: f64,
    /// Labelled images with no definite statement (uncertain or not mentioned).
    #[serde(with = "count")]
    pub none: f64,
    /// TP / (TP + FN).
    pub sensitivity: Option<f64>,
    /// TN / (TN + FP).
    pub specificity: Option<f64>,
    /// TP / (TP + FP).
    pub precision: Option<f64>,
    /// 2 TP / (2 TP + FP + FN).
    pub f1: Option<f64>,
    /// (sensitivity + specificity) / 2.
    pub balanced_accuracy: Option<f64>,
    /// The Table 1 accuracy (no statement = wrong).
    pub accuracy: Option<f64>,
    /// Area under the ROC curve of the row's score, where it has one.
    pub auroc: Option<f64>,
}

impl FindingMetrics {
    /// The metrics of `counts`, with `auroc` where the row has a score.
    pub fn new(counts: &Counts, auroc: Option<f64>) -> FindingMetrics {
        FindingMetrics {
            tp: counts.tp,
            fp: counts.fp,
            fn_: counts.fn_,
            tn: counts.tn,
            none: counts.none_positive + counts.none_negative,
            sensitivity: counts.sensitivity(),
            specificity: counts.specificity(),
            precision: counts.precision(),
            f1: counts.f1(),
            balanced_accuracy: counts.balanced_accuracy(),
            accuracy: counts.accuracy(),
            auroc,
        }
    }
}

/// The summary metrics a table reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Mean over findings of the balanced accuracy.
    BalancedAccuracy,
    /// Mean over findings of F1 (findings without positive labels or statements left out).
    MacroF1,
    /// F1 of the counts summed over findings.
    MicroF1,
    /// Mean over findings of the Table 1 accuracy.
    Accuracy,
}

impl Metric {
    /// The headline metrics, then the Table 1 one.
    pub const REPORTED: [Metric; 3] = [Metric::BalancedAccuracy, Metric::MacroF1, Metric::Accuracy];

    /// Its name in text (`balanced accuracy`, `macro-F1`, ...).
    pub fn label(self) -> &'static str {
        match self {
            Metric::BalancedAccuracy => "balanced accuracy",
            Metric::MacroF1 => "macro-F1",
            Metric::MicroF1 => "micro-F1",
            Metric::Accuracy => "accuracy",
        }
    }
}

/// A row's summary over a set of findings.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Mean balanced accuracy over the findings that have one.
    pub balanced_accuracy: Option<f64>,
    /// Mean F1 over the findings that have one.
    pub macro_f1: Option<f64>,
    /// 2 ΣTP / (2 ΣTP + ΣFP + ΣFN) over the findings.
    pub micro_f1: Option<f64>,
    /// Mean Table 1 accuracy over the findings that have one.
    pub accuracy: Option<f64>,
    /// Mean AUROC over the findings that have one (rows with a score only).
    pub auroc: Option<f64>,
}

impl Summary {
    /// The summary of per-finding counts (and AUROCs, `None` where the row has no score).
    pub fn of(counts: &[Counts], auroc: &[Option<f64>]) -> Summary {
        fn mean(v: impl Iterator<Item = Option<f64>>) -> Option<f64> {
            let (mut sum, mut n) = (0.0, 0usize);
            for x in v.flatten() {
                sum += x;
                n += 1;
            }
            (n > 0).then(|| sum / n as f64)
        }
        let total = counts.iter().fold(Counts::default(), |a, c| a.plus(*c));
        Summary {
            balanced_accuracy: mean(counts.iter().map(Counts::balanced_accuracy)),
            macro_f1: mean(counts.iter().map(Counts::f1)),
            micro_f1: total.f1(),
            accuracy: mean(counts.iter().map(Counts::accuracy)),
            auroc: mean(auroc.iter().copied()),
        }
    }

    /// The value of `metric`.
    pub fn get(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::BalancedAccuracy => self.balanced_accuracy,
            Metric::MacroF1 => self.macro_f1,
            Metric::MicroF1 => self.micro_f1,
            Metric::Accuracy => self.accuracy,
        }
    }
}

/// Every metric of one row: per finding (all 14, by column name), over the evaluated
/// findings, and over all 14.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scores {
    /// Per finding (CheXpert column name).
    pub findings: BTreeMap<String, FindingMetrics>,
    /// Over the evaluated findings (the paper's Table 1 five).
    pub summary: Summary,
    /// Over all 14 findings.
    pub summary_14: Summary,
    /// Per finding: share of all images (labelled or not) with a definite statement.
    pub coverage: BTreeMap<String, f64>,
    /// The findings of `summary`.
    pub evaluated: Vec<Finding>,
}

impl Scores {
    /// The Table 1 accuracy in [`accuracy`]'s form (the same figures).
    pub fn accuracy(&self) -> Accuracy {
        Accuracy {
            per_finding: self
                .findings
                .iter()
                .map(|(k, m)| (k.clone(), m.accuracy))
                .collect(),
            mean: self.summary.accuracy.unwrap_or(0.0),
            coverage: self.coverage.clone(),
        }
    }
}

/// Area under the ROC curve of `(label, score)` pairs (Mann-Whitney: the probability that a
/// positive scores above a negative, ties counting half; midranks); `None` without both a
/// positive and a negative.
pub fn auroc(pairs: &[(bool, f64)]) -> Option<f64> {
    let positives = pairs.iter().filter(|p| p.0).count();
    let negatives = pairs.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut sorted: Vec<(f64, bool)> = pairs.iter().map(|&(t, s)| (s, t)).collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1].0 == sorted[i].0 {
            j += 1;
        }
        // Ranks i + 1 ..= j + 1 share their mean.
        let mid = (i + j + 2) as f64 / 2.0;
        rank_sum += mid * sorted[i..=j].iter().filter(|x| x.1).count() as f64;
        i = j + 1;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// A row's score for AUROC per image and finding (`None`: no score for that image).
pub type ScoreFn<'a> = &'a dyn Fn(usize, Finding) -> Option<f64>;

/// Every metric of the row that calls `call(image, finding)` on the images with labels
/// `labels[i]`, with AUROC from `score` where given. `None` when no image has labels.
pub fn scores(
    labels: &[Option<Findings>],
    evaluated: &[Finding],
    call: impl Fn(usize, Finding) -> Call,
    score: Option<ScoreFn<'_>>,
) -> Option<Scores> {
    if labels.iter().all(Option::is_none) {
        return None;
    }
    let mut findings = BTreeMap::new();
    let mut coverage = BTreeMap::new();
    let mut all = Vec::with_capacity(14);
    for f in Finding::ALL {
        let mut counts = Counts::default();
        let mut pairs = Vec::new();
        let mut stated = 0.0;
        for (i, l) in labels.iter().enumerate() {
            let c = call(i, f);
            stated += c.present + c.absent;
            if let Some(t) = l.as_ref().and_then(|l| truth(l, f)) {
                counts.add(t, c, 1.0);
                if let Some(s) = score.and_then(|s| s(i, f)) {
                    pairs.push((t, s));
                }
            }
        }
        let au = score.and_then(|_| auroc(&pairs));
        findings.insert(f.column_name().to_owned(), FindingMetrics::new(&counts, au));
        coverage.insert(
            f.column_name().to_owned(),
            stated / labels.len().max(1) as f64,
        );
        all.push((f, counts, au));
    }
    let pick = |set: &[Finding]| -> Summary {
        let chosen: Vec<&(Finding, Counts, Option<f64>)> =
            all.iter().filter(|(f, _, _)| set.contains(f)).collect();
        let counts: Vec<Counts> = chosen.iter().map(|c| c.1).collect();
        let au: Vec<Option<f64>> = chosen.iter().map(|c| c.2).collect();
        Summary::of(&counts, &au)
    };
    Some(Scores {
        summary: pick(evaluated),
        summary_14: pick(&Finding::ALL),
        findings,
        coverage,
        evaluated: evaluated.to_vec(),
    })
}

/// The difference of one summary metric between two rows scored on the same images, with a
/// paired bootstrap over images: every resample draws images with replacement and scores both
/// rows on the same draw, so what the two get right or wrong together cancels.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PairedDifference {
    /// The metric of `a` minus that of `b` on all images (the figures [`scores`] gives).
    pub difference: f64,
    /// The 2.5 % and 97.5 % percentiles of the resampled differences.
    pub ci95: [f64; 2],
    /// Share of resamples in which `a` scores higher than `b` (ties count half).
    pub share_a_higher: f64,
    /// Image-findings (definite labels, evaluated findings) that `a` gets right and `b`
    /// wrong: for accuracy a definite statement matching the label; for the other metrics
    /// "stated present" matching "labelled positive".
    #[serde(with = "count")]
    pub only_a_right: f64,
    /// Image-findings that `b` gets right and `a` wrong.
    #[serde(with = "count")]
    pub only_b_right: f64,
    /// Resamples on which both metrics are defined (all of them but on tiny test sets).
    pub resamples: usize,
}

/// Mean accuracy of `a` minus that of `b` (each as [`accuracy`] computes it over `evaluated`)
/// with a paired percentile bootstrap over images: `resamples` draws from the seeded
/// generator. `None` when no image has labels or `resamples` is 0.
pub fn paired_difference(
    labels: &[Option<Findings>],
    evaluated: &[Finding],
    a: impl Fn(usize, Finding) -> Option<bool>,
    b: impl Fn(usize, Finding) -> Option<bool>,
    resamples: usize,
    seed: u64,
) -> Option<PairedDifference> {
    paired_differences(
        &[Metric::Accuracy],
        labels,
        evaluated,
        |i, f| Call::from(a(i, f)),
        |i, f| Call::from(b(i, f)),
        resamples,
        seed,
    )
    .pop()
    .flatten()
}

/// For each of `metrics`, the summary metric (over `evaluated`) of `a` minus that of `b`,
/// with a paired percentile bootstrap over images; every metric is scored on the same
/// `resamples` draws of the seeded generator. An entry is `None` when the metric is
/// undefined on all images for either row, when no image has labels or `resamples` is 0.
pub fn paired_differences(
    metrics: &[Metric],
    labels: &[Option<Findings>],
    evaluated: &[Finding],
    a: impl Fn(usize, Finding) -> Call,
    b: impl Fn(usize, Finding) -> Call,
    resamples: usize,
    seed: u64,
) -> Vec<Option<PairedDifference>> {
    if resamples == 0 || labels.iter().all(Option::is_none) {
        return vec![None; metrics.len()];
    }
    // Per image and evaluated finding: the definite label and both rows' calls.
    let cells: Vec<Vec<Option<(bool, Call, Call)>>> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            evaluated
                .iter()
                .map(|&f| {
                    l.as_ref()
                        .and_then(|l| truth(l, f))
                        .map(|t| (t, a(i, f), b(i, f)))
                })
                .collect()
        })
        .collect();
    let k = evaluated.len();
    // Both rows' summaries on a draw given as counts per image.
    let score = |weights: &dyn Fn(usize) -> usize| -> (Summary, Summary) {
        let (mut ca, mut cb) = (vec![Counts::default(); k], vec![Counts::default(); k]);
        for (i, row) in cells.iter().enumerate() {
            let w = weights(i);
            if w == 0 {
                continue;
            }
            for (j, cell) in row.iter().enumerate() {
                if let Some((t, x, y)) = *cell {
                    ca[j].add(t, x, w as f64);
                    cb[j].add(t, y, w as f64);
                }
            }
        }
        let none = vec![None; k];
        (Summary::of(&ca, &none), Summary::of(&cb, &none))
    };
    let diff = |m: Metric, s: &(Summary, Summary)| Some(s.0.get(m)? - s.1.get(m)?);
    let full = score(&|_| 1);
    let mut rng = crate::rng::Rng::new(seed);
    let mut counts = vec![0usize; cells.len()];
    let mut draws: Vec<Vec<f64>> = vec![Vec::with_capacity(resamples); metrics.len()];
    for _ in 0..resamples {
        counts.iter_mut().for_each(|c| *c = 0);
        for _ in 0..cells.len() {
            counts[rng.below(cells.len())] += 1;
        }
        let s = score(&|i| counts[i]);
        for (d, &m) in draws.iter_mut().zip(metrics) {
            if let Some(x) = diff(m, &s) {
                d.push(x);
            }
        }
    }
    metrics
        .iter()
        .zip(draws)
        .map(|(&m, mut draws)| {
            let difference = diff(m, &full)?;
            if draws.is_empty() {
                return None;
            }
            let n = draws.len();
            let higher = draws
                .iter()
                .map(|&d| {
                    if d > 0.0 {
                        1.0
                    } else if d == 0.0 {
                        0.5
                    } else {
                        0.0
                    }
                })
                .sum::<f64>()
                / n as f64;
            draws.sort_by(f64::total_cmp);
            let at = |q: f64| draws[((q * (n - 1) as f64).round() as usize).min(n - 1)];
            // Probability that a row's call on a cell is right.
            let right = |t: bool, c: Call| match (m, t) {
                (Metric::Accuracy, true) => c.present,
                (Metric::Accuracy, false) => c.absent,
                (_, true) => c.present,
                (_, false) => 1.0 - c.present,
            };
            let (mut only_a_right, mut only_b_right) = (0.0, 0.0);
            for &(t, x, y) in cells.iter().flatten().flatten() {
                let (ra, rb) = (right(t, x), right(t, y));
                only_a_right += ra * (1.0 - rb);
                only_b_right += rb * (1.0 - ra);
            }
            Some(PairedDifference {
                difference,
                ci95: [at(0.025), at(0.975)],
                share_a_higher: higher,
                only_a_right,
                only_b_right,
                resamples: n,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(present: &[bool]) -> Vec<Option<Findings>> {
        present
            .iter()
            .map(|&p| {
                let mut f = Findings::default();
                f.set(
                    Finding::Edema,
                    if p {
                        LabelStatus::Positive
                    } else {
                        LabelStatus::Negative
                    },
                );
                f.set(Finding::Pneumothorax, LabelStatus::Uncertain);
                Some(f)
            })
            .collect()
    }

    #[test]
    fn paired_difference_matches_accuracy_and_brackets_it() {
        let truth: Vec<bool> = (0..40).map(|i| i % 3 == 0).collect();
        let l = labels(&truth);
        let eval = [
            Finding::Edema,
            Finding::Pneumothorax,
            Finding::Consolidation,
        ];
        // a: right except on 4 images; b: always "absent".
        let a = |i: usize, f: Finding| match f {
            Finding::Edema => Some(if i < 4 { !truth[i] } else { truth[i] }),
            _ => Some(false),
        };
        let b = |_: usize, _: Finding| Some(false);
        let d = paired_difference(&l, &eval, a, b, 500, 7).unwrap();
        let acc_a = accuracy(&l, &eval, a).unwrap().mean;
        let acc_b = accuracy(&l, &eval, b).unwrap().mean;
        assert!((d.difference - (acc_a - acc_b)).abs() < 1e-12);
        // Edema: 14 present of 40; a gets 36 right, b 26; consolidation: both 40/40;
        // pneumothorax is uncertain everywhere and left out.
        assert!((d.difference - (36.0 - 26.0) / 40.0 / 2.0).abs() < 1e-12);
        assert_eq!((d.only_a_right, d.only_b_right), (12.0, 2.0));
        assert!(d.ci95[0] <= d.difference && d.difference <= d.ci95[1]);
        assert!(d.ci95[0] > 0.0, "{d:?}");
        assert!(d.share_a_higher > 0.97);
        assert_eq!(d.resamples, 500);
        // Seeded: the same draw twice; swapping the predictors negates everything.
        assert_eq!(d, paired_difference(&l, &eval, a, b, 500, 7).unwrap());
        let r = paired_difference(&l, &eval, b, a, 500, 7).unwrap();
        assert!((r.difference + d.difference).abs() < 1e-12);
        assert!((r.ci95[0] + d.ci95[1]).abs() < 1e-12 && (r.ci95[1] + d.ci95[0]).abs() < 1e-12);
        assert!((r.share_a_higher + d.share_a_higher - 1.0).abs() < 1e-12);
    }

    #[test]
    fn paired_difference_of_a_predictor_with_itself_is_zero() {
        let l = labels(&[true, false, false, true, false]);
        let p = |i: usize, _: Finding| Some(i.is_multiple_of(2));
        let d = paired_difference(&l, &[Finding::Edema], p, p, 100, 1).unwrap();
        assert_eq!(
            (d.difference, d.ci95, d.share_a_higher),
            (0.0, [0.0, 0.0], 0.5)
        );
        assert!(paired_difference(&l, &[Finding::Edema], p, p, 0, 1).is_none());
        assert!(paired_difference(&[None, None], &[Finding::Edema], p, p, 10, 1).is_none());
    }

    /// Every metric's point difference is the difference of the rows' summaries; a guess and
    /// the all-absent text both have balanced accuracy 0.5, so their difference is 0 on every
    /// resample.
    #[test]
    fn paired_differences_on_every_metric() {
        let truth: Vec<bool> = (0..60).map(|i: usize| i.is_multiple_of(5)).collect();
        let l = labels(&truth);
        let eval = [Finding::Edema, Finding::Consolidation];
        let a = |i: usize, f: Finding| match f {
            Finding::Edema if i.is_multiple_of(7) => Call::NONE,
            Finding::Edema => Call::from(Some(if i < 9 { !truth[i] } else { truth[i] })),
            _ => Call::ABSENT,
        };
        let absent = |_: usize, _: Finding| Call::ABSENT;
        let guess = |_: usize, _: Finding| Call::guess(0.2);
        let metrics = [
            Metric::BalancedAccuracy,
            Metric::MacroF1,
            Metric::MicroF1,
            Metric::Accuracy,
        ];
        let d = paired_differences(&metrics, &l, &eval, a, absent, 300, 5);
        let sa = scores(&l, &eval, a, None).unwrap().summary;
        let sb = scores(&l, &eval, absent, None).unwrap().summary;
        for (m, d) in metrics.iter().zip(&d) {
            let d = d.as_ref().unwrap();
            let want = sa.get(*m).unwrap() - sb.get(*m).unwrap();
            assert!((d.difference - want).abs() < 1e-12, "{m:?}");
            assert!(
                d.ci95[0] <= d.difference && d.difference <= d.ci95[1],
                "{m:?}"
            );
            assert_eq!(d.resamples, 300);
        }
        // Consolidation has no positive label: its balanced accuracy is undefined and left
        // out, so the mean is edema's alone.
        assert_eq!(
            sa.balanced_accuracy,
            scores(&l, &[Finding::Edema], a, None)
                .unwrap()
                .summary
                .balanced_accuracy
        );
        let floor = paired_differences(
            &[Metric::BalancedAccuracy],
            &l,
            &eval,
            guess,
            absent,
            200,
            1,
        );
        let f = floor[0].as_ref().unwrap();
        assert!(f.difference.abs() < 1e-12 && f.ci95[0].abs() < 1e-12 && f.ci95[1].abs() < 1e-12);
    }
}
