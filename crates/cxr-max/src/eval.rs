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
