//! Divergences between categorical distributions (natural logarithms throughout).

use crate::{DriftError, Result};

/// Tolerance on `Σ p = 1`.
const SUM_TOLERANCE: f64 = 1e-9;

fn check_pair(p: &[f64], q: &[f64]) -> Result<()> {
    if p.is_empty() {
        return Err(DriftError::Empty {
            what: "distribution".to_owned(),
        });
    }
    if p.len() != q.len() {
        return Err(DriftError::LengthMismatch {
            what: "q".to_owned(),
            expected: p.len(),
            got: q.len(),
        });
    }
    check_distribution("p", p)?;
    check_distribution("q", q)
}

/// Checks that `p` is a probability vector: finite, non-negative, summing to 1 (± 1e-9).
///
/// # Errors
/// [`DriftError::NotADistribution`], [`DriftError::Empty`].
///
/// # Examples
/// ```
/// use apo_drift::check_distribution;
/// assert!(check_distribution("p", &[0.25, 0.75]).is_ok());
/// assert!(check_distribution("p", &[0.5, 0.6]).is_err());
/// ```
pub fn check_distribution(what: &str, p: &[f64]) -> Result<()> {
    if p.is_empty() {
        return Err(DriftError::Empty {
            what: what.to_owned(),
        });
    }
    if let Some((i, &x)) = p
        .iter()
        .enumerate()
        .find(|(_, x)| !(x.is_finite() && **x >= 0.0))
    {
        return Err(DriftError::NotADistribution {
            what: what.to_owned(),
            reason: format!("entry {i} is {x}"),
        });
    }
    let sum: f64 = p.iter().sum();
    if (sum - 1.0).abs() > SUM_TOLERANCE {
        return Err(DriftError::NotADistribution {
            what: what.to_owned(),
            reason: format!("entries sum to {sum}"),
        });
    }
    Ok(())
}

/// Normalises counts with additive (Laplace) smoothing: `(c_k + α) / (Σ c + K α)`.
///
/// # Errors
/// [`DriftError::Empty`], [`DriftError::NonFinite`] or negative counts
/// ([`DriftError::NotADistribution`]), [`DriftError::OutOfRange`] for α < 0, and a zero total
/// with α = 0.
///
/// # Examples
/// ```
/// use apo_drift::smoothed;
/// assert_eq!(smoothed(&[3.0, 1.0], 0.0)?, vec![0.75, 0.25]);
/// assert_eq!(smoothed(&[0.0, 0.0], 1.0)?, vec![0.5, 0.5]);
/// # Ok::<(), apo_drift::DriftError>(())
/// ```
pub fn smoothed(counts: &[f64], alpha: f64) -> Result<Vec<f64>> {
    if counts.is_empty() {
        return Err(DriftError::Empty {
            what: "counts".to_owned(),
        });
    }
    if !(alpha.is_finite() && alpha >= 0.0) {
        return Err(DriftError::OutOfRange {
            name: "smoothing".to_owned(),
            value: alpha,
            expected: "a finite number >= 0",
        });
    }
    if let Some((i, &c)) = counts
        .iter()
        .enumerate()
        .find(|(_, c)| !(c.is_finite() && **c >= 0.0))
    {
        return Err(DriftError::NotADistribution {
            what: "counts".to_owned(),
            reason: format!("count {i} is {c}"),
        });
    }
    let total: f64 = counts.iter().sum::<f64>() + alpha * counts.len() as f64;
    if total == 0.0 {
        return Err(DriftError::NotADistribution {
            what: "counts".to_owned(),
            reason: "all counts are zero and smoothing is 0".to_owned(),
        });
    }
    Ok(counts.iter().map(|&c| (c + alpha) / total).collect())
}

/// Kullback-Leibler divergence `KL(p ‖ q) = Σ p_k ln(p_k / q_k)` (0 ln 0 = 0).
///
/// # Errors
/// [`DriftError::ZeroProbability`] where `q_k = 0 < p_k` (smooth `q` first), and the checks of
/// [`check_distribution`].
///
/// # Examples
/// ```
/// use apo_drift::kl_divergence;
/// let kl = kl_divergence(&[0.5, 0.5], &[0.25, 0.75])?;
/// assert!((kl - (0.5 * 2f64.ln() + 0.5 * (2.0f64 / 3.0).ln())).abs() < 1e-15);
/// # Ok::<(), apo_drift::DriftError>(())
/// ```
pub fn kl_divergence(p: &[f64], q: &[f64]) -> Result<f64> {
    check_pair(p, q)?;
    let mut kl = 0.0;
    for (k, (&pk, &qk)) in p.iter().zip(q).enumerate() {
        if pk == 0.0 {
            continue;
        }
        if qk == 0.0 {
            return Err(DriftError::ZeroProbability { index: k, p: pk });
        }
        kl += pk * (pk / qk).ln();
    }
    Ok(kl.max(0.0))
}

/// Jensen-Shannon divergence `JS(p, q) = ½ KL(p ‖ m) + ½ KL(q ‖ m)`, `m = (p + q)/2`;
/// symmetric, bounded by `ln 2`, defined without smoothing.
///
/// # Errors
/// The checks of [`check_distribution`].
///
/// # Examples
/// ```
/// use apo_drift::js_divergence;
/// assert!((js_divergence(&[1.0, 0.0], &[0.0, 1.0])? - 2f64.ln()).abs() < 1e-15);
/// assert_eq!(js_divergence(&[0.3, 0.7], &[0.3, 0.7])?, 0.0);
/// # Ok::<(), apo_drift::DriftError>(())
/// ```
pub fn js_divergence(p: &[f64], q: &[f64]) -> Result<f64> {
    check_pair(p, q)?;
    Ok(js_unchecked(p, q))
}

pub(crate) fn js_unchecked(p: &[f64], q: &[f64]) -> f64 {
    let mut js = 0.0;
    for (&pk, &qk) in p.iter().zip(q) {
        let m = 0.5 * (pk + qk);
        if pk > 0.0 {
            js += 0.5 * pk * (pk / m).ln();
        }
        if qk > 0.0 {
            js += 0.5 * qk * (qk / m).ln();
        }
    }
    js.clamp(0.0, std::f64::consts::LN_2)
}

/// Total variation distance `½ Σ |p_k − q_k|` ∈ [0, 1].
///
/// # Errors
/// The checks of [`check_distribution`].
///
/// # Examples
/// ```
/// use apo_drift::total_variation;
/// assert!((total_variation(&[0.5, 0.5], &[0.9, 0.1])? - 0.4).abs() < 1e-15);
/// # Ok::<(), apo_drift::DriftError>(())
/// ```
pub fn total_variation(p: &[f64], q: &[f64]) -> Result<f64> {
    check_pair(p, q)?;
    Ok(0.5 * p.iter().zip(q).map(|(a, b)| (a - b).abs()).sum::<f64>())
}

/// Hellinger distance `sqrt(½ Σ (√p_k − √q_k)²)` ∈ [0, 1].
///
/// # Errors
/// The checks of [`check_distribution`].
///
/// # Examples
/// ```
/// use apo_drift::hellinger;
/// assert!((hellinger(&[1.0, 0.0], &[0.0, 1.0])? - 1.0).abs() < 1e-15);
/// # Ok::<(), apo_drift::DriftError>(())
/// ```
pub fn hellinger(p: &[f64], q: &[f64]) -> Result<f64> {
    check_pair(p, q)?;
    let s: f64 = p
        .iter()
        .zip(q)
        .map(|(a, b)| (a.sqrt() - b.sqrt()).powi(2))
        .sum();
    Ok((0.5 * s).sqrt().min(1.0))
}

/// A divergence, selectable by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum Divergence {
    /// Jensen-Shannon (default).
    #[default]
    JensenShannon,
    /// Kullback-Leibler `KL(p ‖ q)`.
    KullbackLeibler,
    /// Total variation.
    TotalVariation,
    /// Hellinger.
    Hellinger,
}

impl Divergence {
    /// Evaluates the divergence.
    ///
    /// # Errors
    /// As the underlying function.
    ///
    /// # Examples
    /// ```
    /// use apo_drift::Divergence;
    /// let d = Divergence::TotalVariation.eval(&[1.0, 0.0], &[0.5, 0.5])?;
    /// assert!((d - 0.5).abs() < 1e-15);
    /// # Ok::<(), apo_drift::DriftError>(())
    /// ```
    pub fn eval(self, p: &[f64], q: &[f64]) -> Result<f64> {
        match self {
            Divergence::JensenShannon => js_divergence(p, q),
            Divergence::KullbackLeibler => kl_divergence(p, q),
            Divergence::TotalVariation => total_variation(p, q),
            Divergence::Hellinger => hellinger(p, q),
        }
    }
}
