//! The Fast Hoeffding Drift Detection Method (river `drift.binary.FHDDM`).

use std::collections::VecDeque;

use super::{DriftDetector, check_value, out_of_range};
use crate::Result;

/// Parameters of [`Fhddm`], named and defaulted as in river 0.26.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct FhddmConfig {
    /// The sliding window's length. Default: 100.
    pub sliding_window_size: usize,
    /// δ of the Hoeffding bound `ε = √(ln(1/δ) / (2 n))`. Default: 1e-6.
    pub confidence_level: f64,
    /// A second, shorter window at the end of the sliding one (Stacking FHDDM); none by
    /// default.
    pub short_window_size: Option<usize>,
}

impl FhddmConfig {
    pub(crate) const PARAMS: &'static str =
        "sliding_window_size, confidence_level, short_window_size";
}

impl Default for FhddmConfig {
    fn default() -> Self {
        FhddmConfig {
            sliding_window_size: 100,
            confidence_level: 1e-6,
            short_window_size: None,
        }
    }
}

/// FHDDM over a stream of indicators (1 = correct, 0 = error, as river reads them): the
/// mean `u` over the last `sliding_window_size` values is compared with its running maximum;
/// drift when `u_max − u > ε` (and likewise for the short window when there is one).
///
/// # Examples
/// ```
/// use apo_drift::{DriftDetector, Fhddm, FhddmConfig};
/// let mut d = Fhddm::new(FhddmConfig::default())?;
/// // 90 % correct, then 50 %.
/// let stream: Vec<f64> = (0..2000).map(|i| if i < 1000 { f64::from(i % 10 != 0) } else { f64::from(i % 2 == 0) }).collect();
/// let hits = d.detections(&stream)?;
/// assert!(hits[0] >= 1000 && hits[0] < 1100);
/// # Ok::<(), apo_drift::DriftError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Fhddm {
    config: FhddmConfig,
    window: VecDeque<f64>,
    n_one: f64,
    u_max: f64,
    u_short_max: f64,
    epsilon: f64,
    epsilon_s: f64,
    drift: bool,
}

impl Fhddm {
    /// A detector with `config`.
    ///
    /// # Errors
    /// [`crate::DriftError::OutOfRange`] for a zero window, a short window longer than the
    /// sliding one, or a confidence level outside (0, 1).
    pub fn new(config: FhddmConfig) -> Result<Self> {
        if config.sliding_window_size == 0 {
            return Err(out_of_range("sliding_window_size", 0.0, "at least 1"));
        }
        if !(config.confidence_level > 0.0 && config.confidence_level < 1.0) {
            return Err(out_of_range(
                "confidence_level",
                config.confidence_level,
                "in (0, 1)",
            ));
        }
        if let Some(s) = config.short_window_size
            && (s == 0 || s > config.sliding_window_size)
        {
            return Err(out_of_range(
                "short_window_size",
                s as f64,
                "in [1, sliding_window_size]",
            ));
        }
        let mut d = Fhddm {
            window: VecDeque::with_capacity(config.sliding_window_size),
            config,
            n_one: 0.0,
            u_max: 0.0,
            u_short_max: 0.0,
            epsilon: 0.0,
            epsilon_s: 0.0,
            drift: false,
        };
        d.reset();
        Ok(d)
    }
}

impl DriftDetector for Fhddm {
    fn update(&mut self, x: f64) -> Result<bool> {
        if !(0.0..=1.0).contains(&x) {
            check_value(x)?;
            return Err(out_of_range("value", x, "an indicator in [0, 1]"));
        }
        if self.drift {
            self.reset();
        }
        let w = self.config.sliding_window_size;
        self.window.push_back(x);
        self.n_one += x;
        if self.window.len() == w {
            let u = self.n_one / w as f64;
            if self.u_max < u {
                self.u_max = u;
            }
            let mut short = false;
            if let Some(s) = self.config.short_window_size {
                let u_s = self.window.iter().skip(w - s).sum::<f64>() / s as f64;
                if self.u_short_max < u_s {
                    self.u_short_max = u_s;
                }
                short = self.u_short_max - u_s > self.epsilon_s;
            }
            self.drift = self.u_max - u > self.epsilon || short;
            self.n_one -= self.window.pop_front().unwrap_or(0.0);
        }
        Ok(self.drift)
    }

    fn drift_detected(&self) -> bool {
        self.drift
    }

    fn reset(&mut self) {
        let w = self.config.sliding_window_size as f64;
        self.window.clear();
        self.n_one = 0.0;
        self.u_max = 0.0;
        self.u_short_max = 0.0;
        let ln = (1.0 / self.config.confidence_level).ln();
        self.epsilon = (ln / (2.0 * w)).sqrt();
        self.epsilon_s = self
            .config
            .short_window_size
            .map_or(0.0, |s| (ln / (2.0 * s as f64)).sqrt());
        self.drift = false;
    }
}
