//! Multi-stream drift: per-teacher, per-step label distributions and the quantities built on
//! them (see `docs/math/drift.md` for the definitions).

use ndarray::{Array1, Array2, Array3, ArrayView2, Axis};

use crate::divergence::{Divergence, smoothed};
use crate::{DriftError, Result};

/// Label counts per teacher (stream) `u`, step `j` and label `k`: `counts[[u, j, k]]`.
///
/// # Examples
/// ```
/// use apo_drift::StreamCounts;
/// let mut c = StreamCounts::new(2, 3, 2)?;
/// c.observe(0, 1, 1)?;
/// assert_eq!(c.counts()[[0, 1, 1]], 1.0);
/// assert!(c.observe(2, 0, 0).is_err());
/// # Ok::<(), apo_drift::DriftError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StreamCounts {
    counts: Array3<f64>,
}

impl StreamCounts {
    /// Zero counts for `n_teachers × n_steps × n_labels`.
    ///
    /// # Errors
    /// [`DriftError::Empty`] when a dimension is 0.
    pub fn new(n_teachers: usize, n_steps: usize, n_labels: usize) -> Result<Self> {
        for (what, n) in [
            ("teachers", n_teachers),
            ("steps", n_steps),
            ("labels", n_labels),
        ] {
            if n == 0 {
                return Err(DriftError::Empty {
                    what: what.to_owned(),
                });
            }
        }
        Ok(StreamCounts {
            counts: Array3::zeros((n_teachers, n_steps, n_labels)),
        })
    }

    /// Counts one observation of `label` by `teacher` at `step`.
    ///
    /// # Errors
    /// [`DriftError::IndexOutOfRange`].
    pub fn observe(&mut self, teacher: usize, step: usize, label: usize) -> Result<()> {
        self.add(teacher, step, label, 1.0)
    }

    /// Adds `weight ≥ 0` to a cell.
    ///
    /// # Errors
    /// [`DriftError::IndexOutOfRange`], [`DriftError::NonFinite`] or negative weight.
    pub fn add(&mut self, teacher: usize, step: usize, label: usize, weight: f64) -> Result<()> {
        let (n, j, k) = self.counts.dim();
        for (what, index, len) in [
            ("teacher", teacher, n),
            ("step", step, j),
            ("label", label, k),
        ] {
            if index >= len {
                return Err(DriftError::IndexOutOfRange { what, index, len });
            }
        }
        if !(weight.is_finite() && weight >= 0.0) {
            return Err(DriftError::NonFinite {
                what: "weight".to_owned(),
                value: weight,
            });
        }
        self.counts[[teacher, step, label]] += weight;
        Ok(())
    }

    /// The raw counts `[N, J, K]`.
    pub fn counts(&self) -> &Array3<f64> {
        &self.counts
    }

    /// `(teachers, steps, labels)`.
    pub fn dims(&self) -> (usize, usize, usize) {
        self.counts.dim()
    }

    /// Per-teacher, per-step distributions `P_{u,j}` with additive smoothing α.
    ///
    /// # Errors
    /// With α = 0, a teacher with no observation at a step ([`DriftError::NotADistribution`]
    /// naming both).
    pub fn distributions(&self, smoothing: f64) -> Result<Array3<f64>> {
        let (n, j, k) = self.counts.dim();
        let mut out = Array3::zeros((n, j, k));
        for u in 0..n {
            for s in 0..j {
                let row: Vec<f64> = self.counts.slice(ndarray::s![u, s, ..]).to_vec();
                let p = smoothed(&row, smoothing).map_err(|e| match e {
                    DriftError::NotADistribution { reason, .. } => DriftError::NotADistribution {
                        what: format!("teacher {u} at step {s}"),
                        reason,
                    },
                    other => other,
                })?;
                for (kk, v) in p.into_iter().enumerate() {
                    out[[u, s, kk]] = v;
                }
            }
        }
        Ok(out)
    }
}

fn row(d: &Array3<f64>, u: usize, j: usize) -> Vec<f64> {
    d.slice(ndarray::s![u, j, ..]).to_vec()
}

/// Teacher × teacher divergence at every step: `out[[j, u, v]] = D(P_{u,j}, P_{v,j})`.
///
/// # Errors
/// As the divergence (e.g. KL with zero probabilities: smooth first).
pub fn teacher_divergence(dists: &Array3<f64>, divergence: Divergence) -> Result<Array3<f64>> {
    let (n, j, _) = dists.dim();
    let mut out = Array3::zeros((j, n, n));
    for s in 0..j {
        for u in 0..n {
            for v in 0..n {
                if u != v {
                    out[[s, u, v]] = divergence.eval(&row(dists, u, s), &row(dists, v, s))?;
                }
            }
        }
    }
    Ok(out)
}

/// Per-teacher non-stationarity: `out[[u, j]] = D(P_{u,j}, P_{u,j+Δ})` for `j < J − Δ`.
///
/// # Errors
/// [`DriftError::OutOfRange`] for Δ = 0 or Δ ≥ J; errors of the divergence.
pub fn step_shift(dists: &Array3<f64>, lag: usize, divergence: Divergence) -> Result<Array2<f64>> {
    let (n, j, _) = dists.dim();
    check_lag(lag, j)?;
    let mut out = Array2::zeros((n, j - lag));
    for u in 0..n {
        for s in 0..j - lag {
            out[[u, s]] = divergence.eval(&row(dists, u, s), &row(dists, u, s + lag))?;
        }
    }
    Ok(out)
}

fn check_lag(lag: usize, steps: usize) -> Result<()> {
    if lag == 0 || lag >= steps {
        return Err(DriftError::OutOfRange {
            name: "lag".to_owned(),
            value: lag as f64,
            expected: "1 <= lag < number of steps",
        });
    }
    Ok(())
}

/// Non-stationarity of the collective state `S_j = (s^1_j, …, s^N_j)` under the paper's
/// factorisation (teachers conditionally independent): the KL divergence between the product
/// distributions at steps j and j + Δ, which is exactly `Σ_u KL(P_{u,j} ‖ P_{u,j+Δ})`.
///
/// # Errors
/// As [`step_shift`] with KL (smooth first).
pub fn collective_shift(dists: &Array3<f64>, lag: usize) -> Result<Array1<f64>> {
    Ok(step_shift(dists, lag, Divergence::KullbackLeibler)?.sum_axis(Axis(0)))
}

/// The cross-teacher mean distribution at each step, `C_j = (1/N) Σ_u P_{u,j}` → `[J, K]`.
pub fn mean_distribution(dists: &Array3<f64>) -> Array2<f64> {
    dists.mean_axis(Axis(0)).expect("at least one teacher")
}

/// Instantaneous drift of every teacher at every step, `I_{u,j} = D(P_{u,j} ‖ C_j)`, against
/// a given consensus `C` (`[J, K]`) or, when `None`, the cross-teacher mean.
///
/// # Errors
/// [`DriftError::LengthMismatch`] for a consensus of the wrong shape; errors of the divergence.
pub fn instantaneous_drift(
    dists: &Array3<f64>,
    consensus: Option<ArrayView2<'_, f64>>,
    divergence: Divergence,
) -> Result<Array2<f64>> {
    let (n, j, k) = dists.dim();
    let mean;
    let c = match consensus {
        Some(c) => {
            if c.dim() != (j, k) {
                return Err(DriftError::LengthMismatch {
                    what: "consensus (steps × labels)".to_owned(),
                    expected: j * k,
                    got: c.len(),
                });
            }
            c
        }
        None => {
            mean = mean_distribution(dists);
            mean.view()
        }
    };
    let mut out = Array2::zeros((n, j));
    for u in 0..n {
        for s in 0..j {
            out[[u, s]] = divergence.eval(&row(dists, u, s), &c.row(s).to_vec())?;
        }
    }
    Ok(out)
}

/// Cumulative historical deviation: `H_{u,j} = Σ_{i ≤ j} λ^{j−i} I_{u,i}`
/// (`H_{u,j} = λ H_{u,j−1} + I_{u,j}`), with decay λ ∈ (0, 1]; λ = 1 is the plain prefix sum.
///
/// # Errors
/// [`DriftError::OutOfRange`] for λ outside (0, 1].
///
/// # Examples
/// ```
/// use apo_drift::cumulative_deviation;
/// use ndarray::array;
/// let h = cumulative_deviation(&array![[1.0, 1.0, 1.0]], 0.5)?;
/// assert_eq!(h, array![[1.0, 1.5, 1.75]]);
/// # Ok::<(), apo_drift::DriftError>(())
/// ```
pub fn cumulative_deviation(instant: &Array2<f64>, decay: f64) -> Result<Array2<f64>> {
    if !(decay > 0.0 && decay <= 1.0) {
        return Err(DriftError::OutOfRange {
            name: "decay".to_owned(),
            value: decay,
            expected: "0 < decay <= 1",
        });
    }
    let mut out = instant.clone();
    for mut r in out.rows_mut() {
        for s in 1..r.len() {
            r[s] += decay * r[s - 1];
        }
    }
    Ok(out)
}
