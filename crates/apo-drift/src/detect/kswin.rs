//! Kolmogorov-Smirnov windowing (river `drift.KSWIN`; Raab et al. 2020).

use std::collections::VecDeque;

use rand::{RngCore, SeedableRng};
use rand_xoshiro::SplitMix64;

use super::{DriftDetector, check_value, out_of_range};
use crate::Result;

/// Parameters of [`Kswin`], named and defaulted as in river 0.26.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct KswinConfig {
    /// Significance level of the KS test. Default: 0.005.
    pub alpha: f64,
    /// Size of the sliding window. Default: 100.
    pub window_size: usize,
    /// Size of the recent sample and of the reference sample drawn from the older part of
    /// the window. Default: 30.
    pub stat_size: usize,
    /// Seed of the sampler. Default: 42.
    pub seed: u64,
}

impl KswinConfig {
    pub(crate) const PARAMS: &'static str = "alpha, window_size, stat_size, seed";
}

impl Default for KswinConfig {
    fn default() -> Self {
        KswinConfig {
            alpha: 0.005,
            window_size: 100,
            stat_size: 30,
            seed: 42,
        }
    }
}

/// KSWIN: once the window is full, compares its `stat_size` most recent values with
/// `stat_size` values drawn without replacement from the older part, by a two-sample
/// Kolmogorov-Smirnov test; drift when `p ≤ alpha` and the statistic exceeds 0.1.
///
/// The p-value is exact (the probability that a uniformly random lattice path leaves the band
/// `|i/n − j/m| < D`) for `n + m ≤ 1000`, the asymptotic Kolmogorov distribution beyond.
/// Sampling uses SplitMix64 (`rand_xoshiro`) seeded with `seed`, so detections are
/// deterministic for a seed but not index-identical to river's (which draws from Python's
/// Mersenne Twister).
///
/// # Examples
/// ```
/// use apo_drift::{DriftDetector, Kswin, KswinConfig};
/// let mut kswin = Kswin::new(KswinConfig { seed: 7, ..Default::default() })?;
/// let stream: Vec<f64> = (0..600).map(|i| if i < 300 { (i % 10) as f64 } else { 20.0 + (i % 10) as f64 }).collect();
/// let hits = kswin.detections(&stream)?;
/// assert!(hits[0] >= 300 && hits[0] < 330);
/// # Ok::<(), apo_drift::DriftError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Kswin {
    config: KswinConfig,
    window: VecDeque<f64>,
    rng: SplitMix64,
    p_value: f64,
    drift: bool,
    scratch: Vec<usize>,
}

impl Kswin {
    /// A detector with `config`.
    ///
    /// # Errors
    /// [`crate::DriftError::OutOfRange`] for `alpha` outside [0, 1], or a `stat_size` of 0 or
    /// above `window_size / 2` (the reference sample is drawn from the older
    /// `window_size − stat_size` values).
    pub fn new(config: KswinConfig) -> Result<Self> {
        if !(0.0..=1.0).contains(&config.alpha) {
            return Err(out_of_range("alpha", config.alpha, "0 <= alpha <= 1"));
        }
        if config.stat_size == 0 || config.stat_size * 2 > config.window_size {
            return Err(out_of_range(
                "stat_size",
                config.stat_size as f64,
                "0 < stat_size <= window_size / 2 (the reference sample is drawn from the older part)",
            ));
        }
        let rng = SplitMix64::seed_from_u64(config.seed);
        Ok(Kswin {
            window: VecDeque::with_capacity(config.window_size),
            rng,
            p_value: 1.0,
            drift: false,
            scratch: Vec::new(),
            config,
        })
    }

    /// p-value of the last test (1 before the window is full).
    pub fn p_value(&self) -> f64 {
        self.p_value
    }
}

impl DriftDetector for Kswin {
    fn update(&mut self, x: f64) -> Result<bool> {
        check_value(x)?;
        if self.drift {
            self.reset();
        }
        let (w, s) = (self.config.window_size, self.config.stat_size);
        if self.window.len() == w {
            self.window.pop_front();
        }
        self.window.push_back(x);
        if self.window.len() < w {
            self.drift = false;
            return Ok(false);
        }
        // Reference sample: `s` distinct positions of the older `w − s` values.
        let older = w - s;
        self.scratch.clear();
        self.scratch.extend(0..older);
        for i in 0..s {
            let j = i + (self.rng.next_u64() % (older - i) as u64) as usize;
            self.scratch.swap(i, j);
        }
        let mut reference: Vec<f64> = self.scratch[..s].iter().map(|&i| self.window[i]).collect();
        let mut recent: Vec<f64> = self.window.iter().skip(older).copied().collect();
        let (d, p) = ks_2samp(&mut reference, &mut recent);
        self.p_value = p;
        self.drift = p <= self.config.alpha && d > 0.1;
        Ok(self.drift)
    }

    fn drift_detected(&self) -> bool {
        self.drift
    }

    fn reset(&mut self) {
        self.window.clear();
        self.rng = SplitMix64::seed_from_u64(self.config.seed);
        self.p_value = 1.0;
        self.drift = false;
    }
}

/// Two-sample Kolmogorov-Smirnov test: the statistic `D = sup |F_a − F_b|` and the two-sided
/// p-value `P(D_{n,m} ≥ D)`. Sorts its inputs.
pub fn ks_2samp(a: &mut [f64], b: &mut [f64]) -> (f64, f64) {
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (n, m) = (a.len(), b.len());
    if n == 0 || m == 0 {
        return (0.0, 1.0);
    }
    // D·n·m as an integer: the largest |i·m − j·n| over the merged order, ties stepped together.
    let (mut i, mut j, mut dmax) = (0usize, 0usize, 0i64);
    while i < n && j < m {
        let x = if a[i] <= b[j] { a[i] } else { b[j] };
        while i < n && a[i] <= x {
            i += 1;
        }
        while j < m && b[j] <= x {
            j += 1;
        }
        dmax = dmax.max((i as i64 * m as i64 - j as i64 * n as i64).abs());
    }
    let d = dmax as f64 / (n * m) as f64;
    let p = if n + m <= 1000 {
        exact_two_sided(n, m, dmax)
    } else {
        asymptotic_two_sided(n, m, d)
    };
    (d, p.clamp(0.0, 1.0))
}

/// `P(max |i m − j n| ≥ dmax)` over uniformly random lattice paths from (0, 0) to (n, m).
fn exact_two_sided(n: usize, m: usize, dmax: i64) -> f64 {
    if dmax == 0 {
        return 1.0;
    }
    let inside = |i: usize, j: usize| (i as i64 * m as i64 - j as i64 * n as i64).abs() < dmax;
    // prob[j] = probability of reaching (i, j) without leaving the band; the walk steps right
    // (an `a` value) with probability (n − i)/(n − i + m − j).
    let mut prob = vec![0.0f64; m + 1];
    prob[0] = 1.0;
    for j in 1..=m {
        prob[j] = if inside(0, j) {
            prob[j - 1] * ((m - j + 1) as f64 / (n + m - j + 1) as f64)
        } else {
            0.0
        };
    }
    for i in 1..=n {
        let mut next = vec![0.0f64; m + 1];
        for j in 0..=m {
            if !inside(i, j) {
                continue;
            }
            let rest = (n - (i - 1)) + (m - j);
            let from_left = prob[j] * ((n - (i - 1)) as f64 / rest as f64);
            let from_below = if j > 0 {
                let rest = (n - i) + (m - (j - 1));
                next[j - 1] * ((m - (j - 1)) as f64 / rest as f64)
            } else {
                0.0
            };
            next[j] = from_left + from_below;
        }
        prob = next;
    }
    1.0 - prob[m]
}

/// Asymptotic Kolmogorov survival function at `sqrt(n m / (n + m)) · d`.
fn asymptotic_two_sided(n: usize, m: usize, d: f64) -> f64 {
    let en = ((n * m) as f64 / (n + m) as f64).sqrt();
    let lambda = en * d;
    if lambda < 1e-3 {
        return 1.0;
    }
    let mut sum = 0.0;
    for k in 1..=100 {
        let k = k as f64;
        let term = (-2.0 * k * k * lambda * lambda).exp();
        sum += if k as i64 % 2 == 1 { term } else { -term };
        if term < 1e-17 {
            break;
        }
    }
    2.0 * sum
}

#[cfg(test)]
mod tests {
    /// The generator's stream is that of the hand-written SplitMix64 KSWIN used before
    /// (values computed by that code), so detections are unchanged.
    #[test]
    fn the_sampling_stream_is_the_old_splitmix64() {
        use rand::{RngCore, SeedableRng};
        let mut r = rand_xoshiro::SplitMix64::seed_from_u64(7);
        assert_eq!(
            [r.next_u64(), r.next_u64()],
            [0x63cb_e1e4_5932_0dd7, 0x044c_3cd7_f43c_661c]
        );
        let mut r = rand_xoshiro::SplitMix64::seed_from_u64(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
    }

    use super::*;

    #[test]
    fn ks_identical_samples() {
        let mut a: Vec<f64> = (0..30).map(f64::from).collect();
        let mut b = a.clone();
        let (d, p) = ks_2samp(&mut a, &mut b);
        assert_eq!(d, 0.0);
        assert_eq!(p, 1.0);
    }

    #[test]
    fn ks_disjoint_samples_have_the_smallest_p_value() {
        // All of a below all of b: only 2 of C(n+m, n) paths reach D = 1.
        let (n, m) = (5usize, 4usize);
        let mut a: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let mut b: Vec<f64> = (0..m).map(|i| 100.0 + i as f64).collect();
        let (d, p) = ks_2samp(&mut a, &mut b);
        assert_eq!(d, 1.0);
        let total = 126.0; // C(9, 4)
        assert!((p - 2.0 / total).abs() < 1e-15, "{p}");
    }

    #[test]
    fn ks_exact_small_case() {
        // scipy.stats.ks_2samp([1, 2, 3], [2.5, 4, 5], method="exact") = (2/3, 0.6).
        let (d, p) = ks_2samp(&mut [1.0, 2.0, 3.0], &mut [2.5, 4.0, 5.0]);
        assert!((d - 2.0 / 3.0).abs() < 1e-15);
        assert!((p - 0.6).abs() < 1e-12, "{p}");
    }
}
