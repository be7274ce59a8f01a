//! Accuracy of findings predictions against the ground-truth labels, as in the paper's
//! Table 1: per finding, the share of images whose prediction matches the label.

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

/// The difference in mean accuracy between two predictors scored on the same images, with a
/// paired bootstrap over images: every resample draws images with replacement and scores both
/// predictors on the same draw, so what the two get right or wrong together cancels.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PairedDifference {
    /// Mean accuracy of `a` minus that of `b` on all images (the same figures
    /// [`accuracy`] gives).
    pub difference: f64,
    /// The 2.5 % and 97.5 % percentiles of the resampled differences.
    pub ci95: [f64; 2],
    /// Share of resamples in which `a` scores higher than `b` (ties count half).
    pub share_a_higher: f64,
    /// Image-findings (definite labels, evaluated findings) that `a` gets right and `b`
    /// wrong.
    pub only_a_right: usize,
    /// Image-findings that `b` gets right and `a` wrong.
    pub only_b_right: usize,
    /// Resamples drawn.
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
    if resamples == 0 || labels.iter().all(Option::is_none) {
        return None;
    }
    // Per image and evaluated finding: (definite label, a right, b right).
    let cells: Vec<Vec<(bool, bool, bool)>> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            evaluated
                .iter()
                .map(|&f| match l.as_ref().and_then(|l| truth(l, f)) {
                    Some(t) => (true, a(i, f) == Some(t), b(i, f) == Some(t)),
                    None => (false, false, false),
                })
                .collect()
        })
        .collect();
    let k = evaluated.len();
    // Mean over findings with a definite label of ok/den, for a draw given as counts.
    let score = |weights: &dyn Fn(usize) -> usize| -> f64 {
        let (mut den, mut ok_a, mut ok_b) = (vec![0usize; k], vec![0usize; k], vec![0usize; k]);
        for (i, row) in cells.iter().enumerate() {
            let w = weights(i);
            if w == 0 {
                continue;
            }
            for (j, &(defined, ra, rb)) in row.iter().enumerate() {
                if defined {
                    den[j] += w;
                    ok_a[j] += w * usize::from(ra);
                    ok_b[j] += w * usize::from(rb);
                }
            }
        }
        let (mut sum, mut n) = (0.0, 0usize);
        for j in 0..k {
            if den[j] > 0 {
                sum += (ok_a[j] as f64 - ok_b[j] as f64) / den[j] as f64;
                n += 1;
            }
        }
        sum / n.max(1) as f64
    };
    let difference = score(&|_| 1);
    let mut rng = crate::rng::Rng::new(seed);
    let mut counts = vec![0usize; cells.len()];
    let mut draws = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        counts.iter_mut().for_each(|c| *c = 0);
        for _ in 0..cells.len() {
            counts[rng.below(cells.len())] += 1;
        }
        draws.push(score(&|i| counts[i]));
    }
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
        / resamples as f64;
    draws.sort_by(f64::total_cmp);
    let at = |q: f64| draws[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    let (mut only_a_right, mut only_b_right) = (0, 0);
    for &(defined, ra, rb) in cells.iter().flatten() {
        only_a_right += usize::from(defined && ra && !rb);
        only_b_right += usize::from(defined && rb && !ra);
    }
    Some(PairedDifference {
        difference,
        ci95: [at(0.025), at(0.975)],
        share_a_higher: higher,
        only_a_right,
        only_b_right,
        resamples,
    })
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
        assert_eq!((d.only_a_right, d.only_b_right), (12, 2));
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
}
