//! The Hoeffding drift detection methods (river `drift.binary.HDDM_A` and `HDDM_W`).

use super::{DriftDetector, check_value, out_of_range};
use crate::Result;

/// Parameters of [`HddmA`], named and defaulted as in river 0.26.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct HddmAConfig {
    /// Confidence of the drift test. Default: 0.001.
    pub drift_confidence: f64,
    /// Confidence of the warning test. Default: 0.005.
    pub warning_confidence: f64,
    /// Also detect a falling mean. Default: false.
    pub two_sided_test: bool,
}

impl HddmAConfig {
    pub(crate) const PARAMS: &'static str = "drift_confidence, warning_confidence, two_sided_test";
}

impl Default for HddmAConfig {
    fn default() -> Self {
        HddmAConfig {
            drift_confidence: 0.001,
            warning_confidence: 0.005,
            two_sided_test: false,
        }
    }
}

/// Parameters of [`HddmW`], named and defaulted as in river 0.26.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct HddmWConfig {
    /// Confidence of the drift test. Default: 0.001.
    pub drift_confidence: f64,
    /// Confidence of the warning test. Default: 0.005.
    pub warning_confidence: f64,
    /// Weight λ of the newest value in the exponentially weighted means. Default: 0.05.
    pub lambda_val: f64,
    /// Also detect a falling mean. Default: false.
    pub two_sided_test: bool,
}

impl HddmWConfig {
    pub(crate) const PARAMS: &'static str =
        "drift_confidence, warning_confidence, lambda_val, two_sided_test";
}

impl Default for HddmWConfig {
    fn default() -> Self {
        HddmWConfig {
            drift_confidence: 0.001,
            warning_confidence: 0.005,
            lambda_val: 0.05,
            two_sided_test: false,
        }
    }
}

fn check_confidence(name: &str, v: f64) -> Result<()> {
    if v > 0.0 && v < 1.0 {
        Ok(())
    } else {
        Err(out_of_range(name, v, "in (0, 1)"))
    }
}

fn check_indicator(x: f64) -> Result<()> {
    if (0.0..=1.0).contains(&x) {
        Ok(())
    } else {
        check_value(x)?;
        Err(out_of_range("value", x, "an error indicator in [0, 1]"))
    }
}

/// A running mean (river's `stats.Mean`).
#[derive(Debug, Clone, Copy, Default)]
struct Mean {
    n: f64,
    mean: f64,
}

impl Mean {
    fn update(&mut self, x: f64) {
        self.n += 1.0;
        self.mean += (1.0 / self.n) * (x - self.mean);
    }
}

/// HDDM_A: Hoeffding's bound on moving averages. A cut point holds the running mean at its
/// lowest (upper-bounded) point; drift when the mean since then has risen by more than the
/// bound for `drift_confidence`, warning for `warning_confidence` (and the mirror test when
/// two-sided).
///
/// # Examples
/// ```
/// use apo_drift::{DriftDetector, HddmA, HddmAConfig};
/// let mut d = HddmA::new(HddmAConfig::default())?;
/// let stream: Vec<f64> = (0..2000).map(|i| if i < 1000 { f64::from(i % 10 == 0) } else { f64::from(i % 2 == 0) }).collect();
/// let hits = d.detections(&stream)?;
/// assert!(hits[0] > 1000 && hits[0] < 1100);
/// # Ok::<(), apo_drift::DriftError>(())
/// ```
#[derive(Debug, Clone)]
pub struct HddmA {
    config: HddmAConfig,
    x_min: Mean,
    x_max: Mean,
    z: Mean,
    warning: bool,
    drift: bool,
}

impl HddmA {
    /// A detector with `config`.
    ///
    /// # Errors
    /// [`crate::DriftError::OutOfRange`] for a confidence outside (0, 1).
    pub fn new(config: HddmAConfig) -> Result<Self> {
        check_confidence("drift_confidence", config.drift_confidence)?;
        check_confidence("warning_confidence", config.warning_confidence)?;
        Ok(HddmA {
            config,
            x_min: Mean::default(),
            x_max: Mean::default(),
            z: Mean::default(),
            warning: false,
            drift: false,
        })
    }

    fn hoeffding(&self, n: f64) -> f64 {
        (1.0 / (2.0 * n) * (1.0 / self.config.drift_confidence).ln()).sqrt()
    }

    fn mean_incr(&self, confidence: f64) -> bool {
        if self.x_min.n == self.z.n {
            return false;
        }
        let m = (self.z.n - self.x_min.n) / self.x_min.n * (1.0 / self.z.n);
        let eps = (m / 2.0 * (2.0 / confidence).ln()).sqrt();
        self.z.mean - self.x_min.mean >= eps
    }

    fn mean_decr(&self, confidence: f64) -> bool {
        if self.x_max.n == self.z.n {
            return false;
        }
        let m = (self.z.n - self.x_max.n) / self.x_max.n * (1.0 / self.z.n);
        let eps = (m / 2.0 * (2.0 / confidence).ln()).sqrt();
        self.x_max.mean - self.z.mean >= eps
    }
}

impl DriftDetector for HddmA {
    fn update(&mut self, x: f64) -> Result<bool> {
        check_indicator(x)?;
        if self.drift {
            self.reset();
        }
        self.z.update(x);
        if self.x_min.n == 0.0 {
            self.x_min = self.z;
        }
        if self.x_max.n == 0.0 {
            self.x_max = self.z;
        }
        let eps_z = self.hoeffding(self.z.n);
        let eps_x = self.hoeffding(self.x_min.n);
        if self.x_min.mean + eps_x >= self.z.mean + eps_z {
            self.x_min = self.z;
        }
        let eps_x = self.hoeffding(self.x_max.n);
        if self.x_max.mean - eps_x <= self.z.mean - eps_z {
            self.x_max = self.z;
        }
        if self.mean_incr(self.config.drift_confidence) {
            self.warning = false;
            self.drift = true;
        } else if self.mean_incr(self.config.warning_confidence) {
            self.warning = true;
            self.drift = false;
        } else {
            self.warning = false;
            self.drift = false;
        }
        if self.config.two_sided_test {
            if self.mean_decr(self.config.drift_confidence) {
                self.drift = true;
            } else if self.mean_decr(self.config.warning_confidence) {
                self.warning = true;
            }
        }
        Ok(self.drift)
    }

    fn drift_detected(&self) -> bool {
        self.drift
    }

    fn warning_detected(&self) -> bool {
        self.warning
    }

    fn reset(&mut self) {
        self.x_min = Mean::default();
        self.x_max = Mean::default();
        self.z = Mean::default();
        self.warning = false;
        self.drift = false;
    }
}

/// An exponentially weighted sample (river's `SampleInfo` of HDDM_W): the weighted mean
/// (river's `stats.EWMean`: the first value, then `λ x + (1 − λ) mean`) and its independent
/// bound condition.
#[derive(Debug, Clone, Copy)]
struct Sample {
    ewma: f64,
    seen: bool,
    ibc: f64,
}

impl Sample {
    fn new() -> Self {
        Sample {
            ewma: 0.0,
            seen: false,
            ibc: 1.0,
        }
    }

    fn update(&mut self, x: f64, lambda: f64) {
        self.ewma = if self.seen {
            lambda * x + (1.0 - lambda) * self.ewma
        } else {
            x
        };
        self.seen = true;
        self.ibc = lambda * lambda + (1.0 - lambda) * (1.0 - lambda) * self.ibc;
    }
}

/// HDDM_W: McDiarmid's bound on exponentially weighted moving averages, with the cut points of
/// [`HddmA`] (river's `drift.binary.HDDM_W`).
///
/// # Examples
/// ```
/// use apo_drift::{DriftDetector, HddmW, HddmWConfig};
/// let mut d = HddmW::new(HddmWConfig::default())?;
/// let stream: Vec<f64> = (0..2000).map(|i| if i < 1000 { f64::from(i % 10 == 0) } else { f64::from(i % 2 == 0) }).collect();
/// let hits = d.detections(&stream)?;
/// assert!(hits[0] > 1000 && hits[0] < 1100);
/// # Ok::<(), apo_drift::DriftError>(())
/// ```
#[derive(Debug, Clone)]
pub struct HddmW {
    config: HddmWConfig,
    total: Sample,
    s1_decr: Sample,
    s1_incr: Sample,
    s2_decr: Sample,
    s2_incr: Sample,
    incr_cutpoint: f64,
    decr_cutpoint: f64,
    warning: bool,
    drift: bool,
}

impl HddmW {
    /// A detector with `config`.
    ///
    /// # Errors
    /// [`crate::DriftError::OutOfRange`] for a confidence outside (0, 1) or `lambda_val`
    /// outside [0, 1].
    pub fn new(config: HddmWConfig) -> Result<Self> {
        check_confidence("drift_confidence", config.drift_confidence)?;
        check_confidence("warning_confidence", config.warning_confidence)?;
        if !(0.0..=1.0).contains(&config.lambda_val) {
            return Err(out_of_range("lambda_val", config.lambda_val, "in [0, 1]"));
        }
        let mut d = HddmW {
            config,
            total: Sample::new(),
            s1_decr: Sample::new(),
            s1_incr: Sample::new(),
            s2_decr: Sample::new(),
            s2_incr: Sample::new(),
            incr_cutpoint: f64::INFINITY,
            decr_cutpoint: f64::NEG_INFINITY,
            warning: false,
            drift: false,
        };
        d.reset();
        Ok(d)
    }

    fn bound(ibc: f64, confidence: f64) -> f64 {
        (ibc * (1.0 / confidence).ln() / 2.0).sqrt()
    }

    fn changed(s1: &Sample, s2: &Sample, confidence: f64) -> bool {
        if !(s1.seen && s2.seen) {
            return false;
        }
        s2.ewma - s1.ewma > Self::bound(s1.ibc + s2.ibc, confidence)
    }
}

impl DriftDetector for HddmW {
    fn update(&mut self, x: f64) -> Result<bool> {
        check_indicator(x)?;
        if self.drift {
            self.reset();
        }
        let lambda = self.config.lambda_val;
        let dc = self.config.drift_confidence;
        let wc = self.config.warning_confidence;
        self.total.update(x, lambda);
        // Increase statistics.
        let eps = Self::bound(self.total.ibc, dc);
        if self.total.ewma + eps < self.incr_cutpoint {
            self.incr_cutpoint = self.total.ewma + eps;
            self.s1_incr = self.total;
            self.s2_incr = Sample::new();
        } else {
            self.s2_incr.update(x, lambda);
        }
        if Self::changed(&self.s1_incr, &self.s2_incr, dc) {
            self.warning = false;
            self.drift = true;
        } else if Self::changed(&self.s1_incr, &self.s2_incr, wc) {
            self.warning = true;
            self.drift = false;
        } else {
            self.warning = false;
            self.drift = false;
        }
        // Decrease statistics.
        let eps = Self::bound(self.total.ibc, dc);
        if self.total.ewma - eps > self.decr_cutpoint {
            self.decr_cutpoint = self.total.ewma - eps;
            self.s1_decr = self.total;
            self.s2_decr = Sample::new();
        } else {
            self.s2_decr.update(x, lambda);
        }
        if self.config.two_sided_test {
            if Self::changed(&self.s2_decr, &self.s1_decr, dc) {
                self.drift = true;
            } else if Self::changed(&self.s2_decr, &self.s1_decr, wc) {
                self.warning = true;
            }
        }
        Ok(self.drift)
    }

    fn drift_detected(&self) -> bool {
        self.drift
    }

    fn warning_detected(&self) -> bool {
        self.warning
    }

    fn reset(&mut self) {
        self.total = Sample::new();
        self.s1_decr = Sample::new();
        self.s1_incr = Sample::new();
        self.s2_decr = Sample::new();
        self.s2_incr = Sample::new();
        self.incr_cutpoint = f64::INFINITY;
        self.decr_cutpoint = f64::NEG_INFINITY;
        self.warning = false;
        self.drift = false;
    }
}
