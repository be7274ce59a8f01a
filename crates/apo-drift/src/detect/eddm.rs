//! The Early Drift Detection Method (river `drift.binary.EDDM`).

use super::{DriftDetector, check_value, out_of_range};
use crate::Result;

/// Parameters of [`Eddm`], named and defaulted as in river 0.26.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct EddmConfig {
    /// Values seen, and errors seen, before warnings and drifts can be signalled. Default: 30.
    pub warm_start: usize,
    /// Warning when the level falls below this. Default: 0.95.
    pub alpha: f64,
    /// Drift when the level falls below this (at most `alpha`). Default: 0.9.
    pub beta: f64,
}

impl EddmConfig {
    pub(crate) const PARAMS: &'static str = "warm_start, alpha, beta";
}

impl Default for EddmConfig {
    fn default() -> Self {
        EddmConfig {
            warm_start: 30,
            alpha: 0.95,
            beta: 0.9,
        }
    }
}

/// EDDM over a stream of error indicators (1 = error, 0 = correct): it follows the distance
/// between consecutive errors rather than the error rate, and signals when that distance
/// shrinks.
///
/// ```text
/// at each error: d = steps since the previous error; p', s' = running mean and standard
/// deviation (n − 1 divisor) of d; after warm_start values, track the maximum of p' + 2 s';
/// once more than warm_start errors were seen, level = (p' + 2 s') / max:
/// drift when level < beta, warning when level < alpha
/// ```
///
/// # Examples
/// ```
/// use apo_drift::{DriftDetector, Eddm, EddmConfig};
/// let mut eddm = Eddm::new(EddmConfig { alpha: 0.8, beta: 0.75, ..Default::default() })?;
/// // An error every 10 steps, then every other step.
/// let stream: Vec<f64> = (0..3000).map(|i| if i < 2000 { f64::from(i % 10 == 0) } else { f64::from(i % 2 == 0) }).collect();
/// let hits = eddm.detections(&stream)?;
/// assert_eq!(hits, [420, 2868]); // river 0.26's `drift_detected` indices on this stream
/// assert!(hits[1] > 2000);
/// assert!(eddm.update(2.0).is_err());
/// # Ok::<(), apo_drift::DriftError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Eddm {
    config: EddmConfig,
    /// Values seen.
    n: usize,
    /// Index (in values seen) of the last error.
    last_error: usize,
    /// Errors seen.
    n_errors: usize,
    /// Welford state of the distances between errors: count, mean, sum of squares.
    d_n: f64,
    d_mean: f64,
    d_s: f64,
    p2s_max: f64,
    warning: bool,
    drift: bool,
}

impl Eddm {
    /// A detector with `config`.
    ///
    /// # Errors
    /// [`crate::DriftError::OutOfRange`] for non-finite thresholds or `alpha < beta` (as river).
    pub fn new(config: EddmConfig) -> Result<Self> {
        for (name, v) in [("alpha", config.alpha), ("beta", config.beta)] {
            if !v.is_finite() {
                return Err(out_of_range(name, v, "a finite number"));
            }
        }
        if config.alpha < config.beta {
            return Err(out_of_range(
                "alpha",
                config.alpha,
                "at least beta (the warning level is above the drift level)",
            ));
        }
        let mut e = Eddm {
            config,
            n: 0,
            last_error: 0,
            n_errors: 0,
            d_n: 0.0,
            d_mean: 0.0,
            d_s: 0.0,
            p2s_max: -1.0,
            warning: false,
            drift: false,
        };
        e.reset();
        Ok(e)
    }
}

impl DriftDetector for Eddm {
    fn update(&mut self, x: f64) -> Result<bool> {
        if !(0.0..=1.0).contains(&x) {
            check_value(x)?;
            return Err(out_of_range("value", x, "an error indicator in [0, 1]"));
        }
        if self.drift {
            self.reset();
        }
        self.n += 1;
        if x == 1.0 {
            self.n_errors += 1;
            // river's stats.Var (ddof 1) of the distance since the previous error.
            let d = (self.n - self.last_error) as f64;
            let old = self.d_mean;
            self.d_n += 1.0;
            self.d_mean += (1.0 / self.d_n) * (d - self.d_mean);
            self.d_s += (d - old) * (d - self.d_mean);
            if self.n > self.config.warm_start {
                let var = if self.d_n > 1.0 {
                    self.d_s / (self.d_n - 1.0)
                } else {
                    0.0
                };
                let p2s = self.d_mean + 2.0 * var.sqrt();
                if p2s > self.p2s_max {
                    self.p2s_max = p2s;
                } else if self.n_errors > self.config.warm_start {
                    let level = p2s / self.p2s_max;
                    if level < self.config.beta {
                        self.drift = true;
                    } else {
                        self.warning = level < self.config.alpha;
                    }
                }
            }
            self.last_error = self.n;
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
        self.n = 0;
        self.last_error = 0;
        self.n_errors = 0;
        self.d_n = 0.0;
        self.d_mean = 0.0;
        self.d_s = 0.0;
        self.p2s_max = -1.0;
        self.warning = false;
        self.drift = false;
    }
}
