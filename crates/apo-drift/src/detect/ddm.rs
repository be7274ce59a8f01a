//! The Drift Detection Method (river `drift.binary.DDM`).

use super::{DriftDetector, check_value, out_of_range};
use crate::Result;

/// Parameters of [`Ddm`], named and defaulted as in river 0.26.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct DdmConfig {
    /// Values seen before warnings and drifts can be signalled. Default: 30.
    pub warm_start: usize,
    /// Warning level, in standard deviations. Default: 2.
    pub warning_threshold: f64,
    /// Drift level, in standard deviations. Default: 3.
    pub drift_threshold: f64,
}

impl DdmConfig {
    pub(crate) const PARAMS: &'static str = "warm_start, warning_threshold, drift_threshold";
}

impl Default for DdmConfig {
    fn default() -> Self {
        DdmConfig {
            warm_start: 30,
            warning_threshold: 2.0,
            drift_threshold: 3.0,
        }
    }
}

/// DDM over a stream of error indicators in [0, 1] (1 = error, e.g. a teacher disagreeing
/// with the consensus).
///
/// ```text
/// p_i = mean error rate, s_i = sqrt(p_i (1 − p_i) / i)
/// after warm_start: track the minimum of p_i + s_i as (p_min, s_min);
/// warning when p_i + s_i > p_min + 2 s_min, drift when p_i + s_i > p_min + 3 s_min
/// ```
///
/// # Examples
/// ```
/// use apo_drift::{Ddm, DdmConfig, DriftDetector};
/// let mut ddm = Ddm::new(DdmConfig::default())?;
/// // 5% errors, then 50% errors.
/// let stream: Vec<f64> = (0..2000).map(|i| if i < 1000 { f64::from(i % 20 == 0) } else { f64::from(i % 2 == 0) }).collect();
/// let hits = ddm.detections(&stream)?;
/// assert!(hits[0] > 1000 && hits[0] < 1100);
/// assert!(ddm.update(2.0).is_err()); // not an error indicator
/// # Ok::<(), apo_drift::DriftError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Ddm {
    config: DdmConfig,
    n: f64,
    p: f64,
    p_min: f64,
    s_min: f64,
    ps_min: f64,
    warning: bool,
    drift: bool,
}

impl Ddm {
    /// A detector with `config`.
    ///
    /// # Errors
    /// [`crate::DriftError::OutOfRange`] for non-finite or negative thresholds.
    pub fn new(config: DdmConfig) -> Result<Self> {
        for (name, v) in [
            ("warning_threshold", config.warning_threshold),
            ("drift_threshold", config.drift_threshold),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(out_of_range(name, v, "a finite number >= 0"));
            }
        }
        let mut ddm = Ddm {
            config,
            n: 0.0,
            p: 0.0,
            p_min: f64::NAN,
            s_min: f64::NAN,
            ps_min: f64::INFINITY,
            warning: false,
            drift: false,
        };
        ddm.reset();
        Ok(ddm)
    }

    /// Whether the last update signalled a warning.
    pub fn warning_detected(&self) -> bool {
        self.warning
    }
}

impl DriftDetector for Ddm {
    fn update(&mut self, x: f64) -> Result<bool> {
        // One comparison rejects NaN, infinities and values outside [0, 1].
        if !(0.0..=1.0).contains(&x) {
            check_value(x)?;
            return Err(out_of_range("value", x, "an error indicator in [0, 1]"));
        }
        if self.drift {
            self.reset();
        }
        self.n += 1.0;
        self.p += (1.0 / self.n) * (x - self.p);
        if self.n > self.config.warm_start as f64 {
            let p = self.p;
            let s = (p * (1.0 - p) / self.n).sqrt();
            if p + s <= self.ps_min {
                self.p_min = p;
                self.s_min = s;
                self.ps_min = self.p_min + self.s_min;
            }
            self.warning = p + s > self.p_min + self.config.warning_threshold * self.s_min;
            if p + s > self.p_min + self.config.drift_threshold * self.s_min {
                self.drift = true;
                self.warning = false;
            }
        }
        Ok(self.drift)
    }

    fn warning_detected(&self) -> bool {
        self.warning
    }

    fn drift_detected(&self) -> bool {
        self.drift
    }

    /// Same results as calling [`DriftDetector::update`] on each value, with the state kept in
    /// registers: the stream is validated first, and a bad value stops the run after the
    /// values before it have been processed, as with `update`.
    fn detections(&mut self, stream: &[f64]) -> Result<Vec<usize>> {
        let bad = stream.iter().position(|x| !(0.0..=1.0).contains(x));
        let good = &stream[..bad.unwrap_or(stream.len())];
        let mut hits = Vec::new();
        let warm = self.config.warm_start as f64;
        let (warn_k, drift_k) = (self.config.warning_threshold, self.config.drift_threshold);
        let (mut n, mut p, mut p_min, mut s_min, mut ps_min) =
            (self.n, self.p, self.p_min, self.s_min, self.ps_min);
        let (mut warning, mut drift) = (self.warning, self.drift);
        for (i, &x) in good.iter().enumerate() {
            if drift {
                (n, p, p_min, s_min, ps_min, warning, drift) =
                    (0.0, 0.0, f64::NAN, f64::NAN, f64::INFINITY, false, false);
            }
            n += 1.0;
            p += (1.0 / n) * (x - p);
            if n > warm {
                let s = (p * (1.0 - p) / n).sqrt();
                if p + s <= ps_min {
                    p_min = p;
                    s_min = s;
                    ps_min = p_min + s_min;
                }
                warning = p + s > p_min + warn_k * s_min;
                if p + s > p_min + drift_k * s_min {
                    drift = true;
                    warning = false;
                    hits.push(i);
                }
            }
        }
        (self.n, self.p, self.p_min, self.s_min, self.ps_min) = (n, p, p_min, s_min, ps_min);
        (self.warning, self.drift) = (warning, drift);
        match bad {
            None => Ok(hits),
            Some(i) => Err(super::at_index(
                self.update(stream[i]).expect_err("value is out of range"),
                i,
            )),
        }
    }

    fn reset(&mut self) {
        self.n = 0.0;
        self.p = 0.0;
        self.p_min = f64::NAN;
        self.s_min = f64::NAN;
        self.ps_min = f64::INFINITY;
        self.warning = false;
        self.drift = false;
    }
}
