//! ADaptive WINdowing (river `drift.ADWIN`; Bifet & Gavaldà 2007).

use super::{DriftDetector, check_value, out_of_range};
use crate::Result;

/// Parameters of [`Adwin`], named and defaulted as in river 0.26.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct AdwinConfig {
    /// Confidence δ of the cut test. Default: 0.002.
    pub delta: f64,
    /// Cut points are checked every `clock` values. Default: 32.
    pub clock: usize,
    /// Buckets kept per size before two are merged. Default: 5.
    pub max_buckets: usize,
    /// Minimum length of each sub-window at a cut. Default: 5.
    pub min_window_length: usize,
    /// Values seen before the first check. Default: 10.
    pub grace_period: usize,
}

impl AdwinConfig {
    pub(crate) const PARAMS: &'static str =
        "delta, clock, max_buckets, min_window_length, grace_period";
}

impl Default for AdwinConfig {
    fn default() -> Self {
        AdwinConfig {
            delta: 0.002,
            clock: 32,
            max_buckets: 5,
            min_window_length: 5,
            grace_period: 10,
        }
    }
}

/// One row of the exponential histogram: summaries of `2^row` values each, oldest first.
#[derive(Debug, Clone, Default)]
struct Row {
    totals: Vec<f64>,
    variances: Vec<f64>,
}

/// ADWIN keeps a window of recent values in an exponential histogram and drops its oldest
/// part whenever two sub-windows have means that differ by more than
///
/// ```text
/// ε = sqrt(2 m σ²_W δ') + (2/3) δ' m,   m = 1/(n0 − L + 1) + 1/(n1 − L + 1),
/// δ' = ln(2 ln|W| / δ),   L = min_window_length
/// ```
///
/// The arithmetic follows river's implementation operation by operation, so that detection
/// indices agree with river's on the same stream (checked against fixtures made with river).
///
/// # Examples
/// ```
/// use apo_drift::{Adwin, AdwinConfig, DriftDetector};
/// let mut adwin = Adwin::new(AdwinConfig::default())?;
/// let stream: Vec<f64> = (0..2000).map(|i| if i < 1000 { 0.2 } else { 0.8 }).collect();
/// let hits = adwin.detections(&stream)?;
/// assert!(hits[0] >= 1000 && hits[0] < 1100);
/// # Ok::<(), apo_drift::DriftError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Adwin {
    config: AdwinConfig,
    rows: Vec<Row>,
    total: f64,
    variance: f64,
    width: f64,
    tick: usize,
    drift: bool,
}

impl Adwin {
    /// A detector with `config`.
    ///
    /// # Errors
    /// [`crate::DriftError::OutOfRange`] for δ outside (0, 1), `clock` or `max_buckets` of 0.
    pub fn new(config: AdwinConfig) -> Result<Self> {
        if !(config.delta > 0.0 && config.delta < 1.0) {
            return Err(out_of_range("delta", config.delta, "0 < delta < 1"));
        }
        if config.clock == 0 {
            return Err(out_of_range("clock", 0.0, "clock >= 1"));
        }
        if config.max_buckets == 0 {
            return Err(out_of_range("max_buckets", 0.0, "max_buckets >= 1"));
        }
        let mut adwin = Adwin {
            config,
            rows: Vec::new(),
            total: 0.0,
            variance: 0.0,
            width: 0.0,
            tick: 0,
            drift: false,
        };
        adwin.reset();
        Ok(adwin)
    }

    /// Number of values in the current window.
    pub fn width(&self) -> usize {
        self.width as usize
    }

    /// Mean of the current window (0 when empty).
    pub fn estimation(&self) -> f64 {
        if self.width == 0.0 {
            0.0
        } else {
            self.total / self.width
        }
    }

    fn insert(&mut self, value: f64) {
        self.rows[0].totals.push(value);
        self.rows[0].variances.push(0.0);
        self.width += 1.0;
        let mut increment = 0.0;
        if self.width > 1.0 {
            let d = value - self.total / (self.width - 1.0);
            increment = (self.width - 1.0) * d * d / self.width;
        }
        self.variance += increment;
        self.total += value;
        self.merge_full_rows();
    }

    /// Merges the two oldest summaries of every row that holds `max_buckets + 1` of them.
    fn merge_full_rows(&mut self) {
        let cap = self.config.max_buckets;
        let mut row = 0;
        while self.rows[row].totals.len() == cap + 1 {
            let size = (1u64 << row) as f64;
            let (t0, t1) = (self.rows[row].totals[0], self.rows[row].totals[1]);
            let (v0, v1) = (self.rows[row].variances[0], self.rows[row].variances[1]);
            let (m0, m1) = (t0 / size, t1 / size);
            let merged_variance = v0 + v1 + size * 0.5 * (m0 - m1) * (m0 - m1);
            if row + 1 == self.rows.len() {
                self.rows.push(Row::default());
            }
            self.rows[row + 1].totals.push(t0 + t1);
            self.rows[row + 1].variances.push(merged_variance);
            self.rows[row].totals.drain(..2);
            self.rows[row].variances.drain(..2);
            if self.rows[row + 1].totals.len() <= cap {
                break;
            }
            row += 1;
        }
    }

    /// Drops the oldest summary (the first of the last row).
    fn drop_oldest(&mut self) {
        let last = self.rows.len() - 1;
        let size = (1u64 << last) as f64;
        let (u, v) = (self.rows[last].totals[0], self.rows[last].variances[0]);
        let mean = u / size;
        self.width -= size;
        self.total -= u;
        let window_mean = self.total / self.width;
        let d = mean - window_mean;
        self.variance -= v + size * self.width * d * d / (size + self.width);
        self.rows[last].totals.remove(0);
        self.rows[last].variances.remove(0);
        if self.rows[last].totals.is_empty() {
            self.rows.pop();
        }
    }

    fn cut_exceeds(&self, n0: f64, n1: f64, mean_gap: f64) -> bool {
        let l = self.config.min_window_length as f64;
        let delta_prime = (2.0 * self.width.ln() / self.config.delta).ln();
        let m = 1.0 / (n0 - l + 1.0) + 1.0 / (n1 - l + 1.0);
        let epsilon = (2.0 * m * (self.variance / self.width) * delta_prime).sqrt()
            + 2.0 / 3.0 * delta_prime * m;
        mean_gap.abs() > epsilon
    }

    fn check_cuts(&mut self) -> bool {
        self.tick += 1;
        let mut detected = false;
        if !self.tick.is_multiple_of(self.config.clock)
            || self.width <= self.config.grace_period as f64
        {
            return false;
        }
        let l = self.config.min_window_length as f64;
        loop {
            let (mut n0, mut n1, mut u0, mut u1) = (0.0, self.width, 0.0, self.total);
            let mut cut = false;
            'scan: for row in (0..self.rows.len()).rev() {
                let size = (1u64 << row) as f64;
                let len = self.rows[row].totals.len();
                for k in 0..len {
                    let t = self.rows[row].totals[k];
                    n0 += size;
                    n1 -= size;
                    u0 += t;
                    u1 -= t;
                    if row == 0 && k + 1 == len {
                        break 'scan;
                    }
                    if n1 >= l && n0 >= l && self.cut_exceeds(n0, n1, u0 / n0 - u1 / n1) {
                        detected = true;
                        if self.width > 0.0 {
                            self.drop_oldest();
                            cut = true;
                            break 'scan;
                        }
                    }
                }
            }
            if !cut {
                break;
            }
        }
        detected
    }
}

impl DriftDetector for Adwin {
    fn update(&mut self, x: f64) -> Result<bool> {
        check_value(x)?;
        if self.drift {
            self.reset();
        }
        self.insert(x);
        self.drift = self.check_cuts();
        Ok(self.drift)
    }

    fn drift_detected(&self) -> bool {
        self.drift
    }

    fn reset(&mut self) {
        self.rows = vec![Row::default()];
        self.total = 0.0;
        self.variance = 0.0;
        self.width = 0.0;
        self.tick = 0;
        self.drift = false;
    }
}
