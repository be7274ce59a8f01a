//! Numerically stable scalar primitives (f64).
//!
//! Every objective in this crate is written with these functions, so no raw score is ever
//! exponentiated: `softplus` and `log_sigmoid` use `ln_1p(exp(-|x|))`, `logsumexp` subtracts
//! the maximum first.

/// `ln(1 + e^x)`, exact to the last bit for large |x| and never overflowing.
///
/// # Examples
/// ```
/// use apo_loss::softplus;
/// assert!((softplus(0.0) - 2f64.ln()).abs() < 1e-15);
/// assert_eq!(softplus(1e6), 1e6);
/// assert!(softplus(-800.0) >= 0.0);
/// ```
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `ln σ(x) = −softplus(−x)`.
///
/// # Examples
/// ```
/// use apo_loss::log_sigmoid;
/// assert!((log_sigmoid(0.0) + 2f64.ln()).abs() < 1e-15);
/// assert_eq!(log_sigmoid(-1e6), -1e6);
/// ```
pub fn log_sigmoid(x: f64) -> f64 {
    -softplus(-x)
}

/// The logistic function `σ(x) = 1 / (1 + e^{−x})`, evaluated without overflow.
///
/// # Examples
/// ```
/// use apo_loss::sigmoid;
/// assert_eq!(sigmoid(0.0), 0.5);
/// assert_eq!(sigmoid(-1e4), 0.0);
/// assert_eq!(sigmoid(1e4), 1.0);
/// ```
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `ln Σ e^{x_i}` computed as `m + ln Σ e^{x_i − m}` with `m = max x_i`.
///
/// Returns `−∞` for an empty slice or a slice of `−∞` (the log of an empty sum).
///
/// # Examples
/// ```
/// use apo_loss::logsumexp;
/// assert!((logsumexp(&[0.0, 0.0]) - 2f64.ln()).abs() < 1e-15);
/// assert!((logsumexp(&[1e5, 1e5]) - (1e5 + 2f64.ln())).abs() < 1e-9);
/// assert_eq!(logsumexp(&[]), f64::NEG_INFINITY);
/// ```
pub fn logsumexp(xs: &[f64]) -> f64 {
    let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY || m.is_nan() {
        return m;
    }
    if m == f64::INFINITY {
        return m;
    }
    m + xs.iter().map(|&x| (x - m).exp()).sum::<f64>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softplus_matches_series() {
        // ln(1 + e^x) = Σ_k (−1)^{k+1} e^{kx} / k for x < 0, and x + softplus(−x) for x > 0.
        let series = |x: f64| -> f64 {
            (1..200)
                .map(|k| (if k % 2 == 1 { 1.0 } else { -1.0 }) * (k as f64 * x).exp() / k as f64)
                .sum()
        };
        for i in -300..=300 {
            let x = f64::from(i) / 10.0;
            let want = if x < -0.5 {
                series(x)
            } else if x > 0.5 {
                x + series(-x)
            } else {
                (1.0 + x.exp()).ln()
            };
            assert!(
                (softplus(x) - want).abs() <= 4.0 * f64::EPSILON * want,
                "x = {x}"
            );
        }
    }

    #[test]
    fn softplus_is_accurate_for_tiny_outputs() {
        // softplus(-40) = ln(1 + e^-40) = e^-40 - e^-80/2 + ...
        let x = -40.0f64;
        let expected = x.exp() - (2.0 * x).exp() / 2.0;
        assert!(((softplus(x) - expected) / expected).abs() < 1e-15);
    }

    #[test]
    fn sigmoid_complements() {
        for i in -50..=50 {
            let x = f64::from(i) * 0.7;
            assert!((sigmoid(x) + sigmoid(-x) - 1.0).abs() < 1e-15);
        }
    }

    #[test]
    fn logsumexp_handles_neg_infinity_entries() {
        let v = logsumexp(&[f64::NEG_INFINITY, 0.0]);
        assert_eq!(v, 0.0);
        assert_eq!(logsumexp(&[f64::NEG_INFINITY]), f64::NEG_INFINITY);
    }
}
