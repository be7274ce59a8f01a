//! The Page-Hinkley test (river `drift.PageHinkley`).

use super::{DriftDetector, check_value, out_of_range};
use crate::Result;

/// Which changes of the mean Page-Hinkley reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum PageHinkleyMode {
    /// Increases only.
    Up,
    /// Decreases only.
    Down,
    /// Both (default).
    #[default]
    Both,
}

/// Parameters of [`PageHinkley`], named and defaulted as in river 0.26.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct PageHinkleyConfig {
    /// Minimum number of values before a change can be signalled. Default: 30.
    pub min_instances: usize,
    /// Magnitude of change tolerated. Default: 0.005.
    pub delta: f64,
    /// Detection threshold λ. Default: 50.
    pub threshold: f64,
    /// Forgetting factor of the cumulative sums. Default: 1 − 1e-4.
    pub alpha: f64,
    /// Direction of the changes detected. Default: both.
    pub mode: PageHinkleyMode,
}

impl PageHinkleyConfig {
    pub(crate) const PARAMS: &'static str = "min_instances, delta, threshold, alpha, mode";
}

impl Default for PageHinkleyConfig {
    fn default() -> Self {
        PageHinkleyConfig {
            min_instances: 30,
            delta: 0.005,
            threshold: 50.0,
            alpha: 1.0 - 0.0001,
            mode: PageHinkleyMode::Both,
        }
    }
}

/// Page-Hinkley change detector.
///
/// ```text
/// m_t = running mean;  d_t = x_t − m_t
/// U_t = α U_{t−1} + d_t − δ      L_t = α L_{t−1} + d_t + δ
/// drift when t ≥ min_instances and (U_t − min U > λ  or  max L − L_t > λ)
/// ```
/// (`max L` starts at −1, as in river.)
///
/// # Examples
/// ```
/// use apo_drift::{DriftDetector, PageHinkley, PageHinkleyConfig, PageHinkleyMode};
/// let cfg = PageHinkleyConfig { mode: PageHinkleyMode::Up, ..Default::default() };
/// let mut ph = PageHinkley::new(cfg)?;
/// let falling: Vec<f64> = (0..3000).map(|i| if i < 1000 { 5.0 } else { 0.0 }).collect();
/// assert!(ph.detections(&falling)?.is_empty()); // a decrease is not an increase
/// # Ok::<(), apo_drift::DriftError>(())
/// ```
#[derive(Debug, Clone)]
pub struct PageHinkley {
    config: PageHinkleyConfig,
    n: f64,
    mean: f64,
    sum_increase: f64,
    sum_decrease: f64,
    min_increase: f64,
    max_decrease: f64,
    drift: bool,
}

impl PageHinkley {
    /// A detector with `config`.
    ///
    /// # Errors
    /// [`crate::DriftError::OutOfRange`] for a non-finite or negative `delta` or `threshold`, or
    /// `alpha` outside (0, 1].
    pub fn new(config: PageHinkleyConfig) -> Result<Self> {
        if !(config.delta.is_finite() && config.delta >= 0.0) {
            return Err(out_of_range("delta", config.delta, "a finite number >= 0"));
        }
        if !(config.threshold.is_finite() && config.threshold >= 0.0) {
            return Err(out_of_range(
                "threshold",
                config.threshold,
                "a finite number >= 0",
            ));
        }
        if !(config.alpha > 0.0 && config.alpha <= 1.0) {
            return Err(out_of_range("alpha", config.alpha, "0 < alpha <= 1"));
        }
        let mut ph = PageHinkley {
            config,
            n: 0.0,
            mean: 0.0,
            sum_increase: 0.0,
            sum_decrease: 0.0,
            min_increase: f64::INFINITY,
            max_decrease: -1.0,
            drift: false,
        };
        ph.reset();
        Ok(ph)
    }
}

impl DriftDetector for PageHinkley {
    fn update(&mut self, x: f64) -> Result<bool> {
        check_value(x)?;
        if self.drift {
            self.reset();
        }
        self.n += 1.0;
        self.mean += (1.0 / self.n) * (x - self.mean);
        let dev = x - self.mean;
        let c = &self.config;
        self.sum_increase = c.alpha * self.sum_increase + dev - c.delta;
        self.sum_decrease = c.alpha * self.sum_decrease + dev + c.delta;
        if self.sum_increase < self.min_increase {
            self.min_increase = self.sum_increase;
        }
        if self.sum_decrease > self.max_decrease {
            self.max_decrease = self.sum_decrease;
        }
        if self.n >= c.min_instances as f64 {
            let up = self.sum_increase - self.min_increase > c.threshold;
            let down = self.max_decrease - self.sum_decrease > c.threshold;
            self.drift = match c.mode {
                PageHinkleyMode::Up => up,
                PageHinkleyMode::Down => down,
                PageHinkleyMode::Both => up || down,
            };
        }
        Ok(self.drift)
    }

    fn drift_detected(&self) -> bool {
        self.drift
    }

    fn reset(&mut self) {
        self.n = 0.0;
        self.mean = 0.0;
        self.sum_increase = 0.0;
        self.sum_decrease = 0.0;
        self.min_increase = f64::INFINITY;
        self.max_decrease = -1.0;
        self.drift = false;
    }
}
