//! Agreement between teachers: Fleiss' kappa, vote entropy, pairwise agreement, and
//! precision / recall / F1 against a consensus or a ground truth.

use ndarray::{Array2, ArrayView2};

use crate::{DriftError, Result};

/// Fleiss' kappa of a table `n[[item, category]]` = number of raters who put the item in the
/// category; every item must have the same number of raters `r ≥ 2`.
///
/// ```text
/// P_i = (Σ_k n_ik² − r) / (r (r − 1)),  P̄ = mean_i P_i,  p_k = Σ_i n_ik / (I r),
/// P̄_e = Σ_k p_k²,  κ = (P̄ − P̄_e) / (1 − P̄_e)
/// ```
/// When every rating falls in one category (`P̄_e = 1`), κ is 1 (perfect, degenerate agreement).
///
/// # Errors
/// [`DriftError::Empty`], [`DriftError::UnequalRaters`], [`DriftError::OutOfRange`] for fewer
/// than 2 raters or negative / non-integer counts.
///
/// # Examples
/// ```
/// use apo_drift::fleiss_kappa;
/// use ndarray::array;
/// // Three raters, perfect agreement on two categories.
/// assert_eq!(fleiss_kappa(array![[3.0, 0.0], [0.0, 3.0]].view())?, 1.0);
/// # Ok::<(), apo_drift::DriftError>(())
/// ```
pub fn fleiss_kappa(table: ArrayView2<'_, f64>) -> Result<f64> {
    let (items, cats) = table.dim();
    if items == 0 || cats == 0 {
        return Err(DriftError::Empty {
            what: "rating table".to_owned(),
        });
    }
    if let Some(&x) = table
        .iter()
        .find(|x| !(x.is_finite() && **x >= 0.0 && x.fract() == 0.0))
    {
        return Err(DriftError::OutOfRange {
            name: "count".to_owned(),
            value: x,
            expected: "a non-negative integer",
        });
    }
    let raters = table.row(0).sum();
    for (i, r) in table.rows().into_iter().enumerate() {
        if r.sum() != raters {
            return Err(DriftError::UnequalRaters {
                item: i,
                expected: raters as usize,
                got: r.sum() as usize,
            });
        }
    }
    if raters < 2.0 {
        return Err(DriftError::OutOfRange {
            name: "raters".to_owned(),
            value: raters,
            expected: "at least 2 raters per item",
        });
    }
    let p_bar = table
        .rows()
        .into_iter()
        .map(|r| (r.iter().map(|x| x * x).sum::<f64>() - raters) / (raters * (raters - 1.0)))
        .sum::<f64>()
        / items as f64;
    let total = items as f64 * raters;
    let p_e: f64 = table
        .columns()
        .into_iter()
        .map(|c| (c.sum() / total).powi(2))
        .sum();
    if (1.0 - p_e).abs() < 1e-15 {
        return Ok(1.0);
    }
    Ok((p_bar - p_e) / (1.0 - p_e))
}

/// Vote entropy of one item, `−Σ_k (v_k / V) ln(v_k / V)` in nats, from vote counts `v`.
///
/// # Errors
/// [`DriftError::Empty`] for no votes, [`DriftError::OutOfRange`] for negative counts.
///
/// # Examples
/// ```
/// use apo_drift::vote_entropy;
/// assert_eq!(vote_entropy(&[7.0, 0.0])?, 0.0);
/// assert!((vote_entropy(&[2.0, 2.0])? - 2f64.ln()).abs() < 1e-15);
/// # Ok::<(), apo_drift::DriftError>(())
/// ```
pub fn vote_entropy(votes: &[f64]) -> Result<f64> {
    if let Some(&x) = votes.iter().find(|x| !(x.is_finite() && **x >= 0.0)) {
        return Err(DriftError::OutOfRange {
            name: "votes".to_owned(),
            value: x,
            expected: "non-negative counts",
        });
    }
    let total: f64 = votes.iter().sum();
    if total == 0.0 {
        return Err(DriftError::Empty {
            what: "votes".to_owned(),
        });
    }
    Ok(-votes
        .iter()
        .filter(|&&v| v > 0.0)
        .map(|&v| (v / total) * (v / total).ln())
        .sum::<f64>())
}

/// Pairwise agreement of N teachers' labels on the same items: `out[[u, v]]` = fraction of
/// the items labelled by both on which they give the same label (NaN when they share none).
///
/// # Errors
/// [`DriftError::Empty`], [`DriftError::LengthMismatch`] when teachers label different
/// numbers of items.
///
/// # Examples
/// ```
/// use apo_drift::pairwise_agreement;
/// let a = vec![Some(1), Some(0), Some(1), None];
/// let b = vec![Some(1), Some(1), Some(1), Some(0)];
/// let m = pairwise_agreement(&[a, b])?;
/// assert!((m[[0, 1]] - 2.0 / 3.0).abs() < 1e-15);
/// assert_eq!(m[[0, 0]], 1.0);
/// # Ok::<(), apo_drift::DriftError>(())
/// ```
pub fn pairwise_agreement(labels: &[Vec<Option<usize>>]) -> Result<Array2<f64>> {
    let n = labels.len();
    if n == 0 {
        return Err(DriftError::Empty {
            what: "teachers".to_owned(),
        });
    }
    let items = labels[0].len();
    for l in labels {
        if l.len() != items {
            return Err(DriftError::LengthMismatch {
                what: "teacher labels".to_owned(),
                expected: items,
                got: l.len(),
            });
        }
    }
    let mut out = Array2::from_elem((n, n), f64::NAN);
    for u in 0..n {
        for v in u..n {
            let (mut both, mut same) = (0usize, 0usize);
            for (a, b) in labels[u].iter().zip(&labels[v]) {
                if let (Some(a), Some(b)) = (a, b) {
                    both += 1;
                    same += usize::from(a == b);
                }
            }
            let value = if both == 0 {
                f64::NAN
            } else {
                same as f64 / both as f64
            };
            out[[u, v]] = value;
            out[[v, u]] = value;
        }
    }
    Ok(out)
}

/// Binary classification scores of predictions against a reference (positive = `true`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BinaryScores {
    /// True positives.
    pub tp: usize,
    /// False positives.
    pub fp: usize,
    /// False negatives.
    pub fn_: usize,
    /// True negatives.
    pub tn: usize,
    /// `tp / (tp + fp)` (0 when there is no predicted positive).
    pub precision: f64,
    /// `tp / (tp + fn)` (0 when there is no reference positive).
    pub recall: f64,
    /// Harmonic mean of precision and recall (0 when both are 0).
    pub f1: f64,
    /// `(tp + tn) / compared`.
    pub accuracy: f64,
    /// Items where both prediction and reference are present.
    pub compared: usize,
}

/// Precision, recall, F1 and accuracy of `predicted` against `reference`; items missing on
/// either side are skipped.
///
/// # Errors
/// [`DriftError::LengthMismatch`].
///
/// # Examples
/// ```
/// use apo_drift::binary_scores;
/// let s = binary_scores(&[Some(true), Some(true), Some(false), None], &[Some(true), Some(false), Some(true), Some(true)])?;
/// assert_eq!((s.tp, s.fp, s.fn_, s.tn, s.compared), (1, 1, 1, 0, 3));
/// assert_eq!(s.precision, 0.5);
/// # Ok::<(), apo_drift::DriftError>(())
/// ```
pub fn binary_scores(
    predicted: &[Option<bool>],
    reference: &[Option<bool>],
) -> Result<BinaryScores> {
    if predicted.len() != reference.len() {
        return Err(DriftError::LengthMismatch {
            what: "predicted".to_owned(),
            expected: reference.len(),
            got: predicted.len(),
        });
    }
    let mut s = BinaryScores::default();
    for (p, r) in predicted.iter().zip(reference) {
        match (p, r) {
            (Some(true), Some(true)) => s.tp += 1,
            (Some(true), Some(false)) => s.fp += 1,
            (Some(false), Some(true)) => s.fn_ += 1,
            (Some(false), Some(false)) => s.tn += 1,
            _ => continue,
        }
        s.compared += 1;
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    s.precision = ratio(s.tp, s.tp + s.fp);
    s.recall = ratio(s.tp, s.tp + s.fn_);
    s.f1 = if s.precision + s.recall == 0.0 {
        0.0
    } else {
        2.0 * s.precision * s.recall / (s.precision + s.recall)
    };
    s.accuracy = ratio(s.tp + s.tn, s.compared);
    Ok(s)
}
