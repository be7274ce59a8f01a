//! Online drift detectors with the parameter names, defaults and detection semantics of
//! river 0.26 (`river.drift.ADWIN`, `river.drift.PageHinkley`, `river.drift.KSWIN`, and
//! `river.drift.binary.DDM`, `EDDM`, `FHDDM`, `HDDMA`, `HDDMW`), warning zones included.
//!
//! Semantics shared by every detector, as in river: [`DriftDetector::update`] feeds one value
//! and returns whether drift is detected *at* that value; the detector resets itself on the
//! next update after a detection. The detection indices of a stream are therefore the
//! 0-based positions at which river's `drift_detected` turns true.

mod adwin;
mod ddm;
mod eddm;
mod fhddm;
mod hddm;
mod kswin;
mod page_hinkley;

use std::fmt;
use std::str::FromStr;

pub use adwin::{Adwin, AdwinConfig};
pub use ddm::{Ddm, DdmConfig};
pub use eddm::{Eddm, EddmConfig};
pub use fhddm::{Fhddm, FhddmConfig};
pub use hddm::{HddmA, HddmAConfig, HddmW, HddmWConfig};
pub use kswin::ks_2samp;
pub use kswin::{Kswin, KswinConfig};
pub use page_hinkley::{PageHinkley, PageHinkleyConfig, PageHinkleyMode};

use crate::{DriftError, Result};

/// An online change detector over a univariate stream.
///
/// # Examples
/// ```
/// use apo_drift::{DriftDetector, PageHinkley, PageHinkleyConfig};
/// let mut ph = PageHinkley::new(PageHinkleyConfig::default())?;
/// let stream: Vec<f64> = (0..2000).map(|i| if i < 1000 { 0.0 } else { 5.0 }).collect();
/// let hits = ph.detections(&stream)?;
/// assert!(!hits.is_empty() && hits[0] >= 1000);
/// # Ok::<(), apo_drift::DriftError>(())
/// ```
pub trait DriftDetector: fmt::Debug + Send {
    /// Feeds one value; returns whether drift is detected at this value.
    ///
    /// # Errors
    /// [`DriftError::NonFinite`] for NaN or infinite values, [`DriftError::OutOfRange`] for
    /// values a detector cannot take (DDM takes error indicators in [0, 1]).
    fn update(&mut self, x: f64) -> Result<bool>;

    /// Whether the last update detected drift.
    fn drift_detected(&self) -> bool;

    /// Whether the detector is in its warning zone after the last update (river's
    /// `warning_detected`: DDM, EDDM, HDDM_A, HDDM_W; always false for ADWIN, Page-Hinkley,
    /// KSWIN and FHDDM, which have none).
    fn warning_detected(&self) -> bool {
        false
    }

    /// Clears all state, as after construction.
    fn reset(&mut self);

    /// The 0-based indices of `stream` at which drift is detected, continuing from the
    /// detector's current state.
    ///
    /// # Errors
    /// The first error of [`DriftDetector::update`], with the value's index.
    fn detections(&mut self, stream: &[f64]) -> Result<Vec<usize>> {
        let mut hits = Vec::new();
        for (i, &x) in stream.iter().enumerate() {
            if self.update(x).map_err(|e| at_index(e, i))? {
                hits.push(i);
            }
        }
        Ok(hits)
    }
}

/// [`DriftError`] of the value at index `i` (the stream position in the message).
pub(crate) fn at_index_pub(error: DriftError, i: usize) -> DriftError {
    at_index(error, i)
}

fn at_index(error: DriftError, i: usize) -> DriftError {
    match error {
        DriftError::NonFinite { value, .. } => DriftError::NonFinite {
            what: format!("stream[{i}]"),
            value,
        },
        DriftError::OutOfRange {
            value, expected, ..
        } => DriftError::OutOfRange {
            name: format!("stream[{i}]"),
            value,
            expected,
        },
        other => other,
    }
}

pub(crate) fn check_value(x: f64) -> Result<()> {
    if x.is_finite() {
        Ok(())
    } else {
        Err(DriftError::NonFinite {
            what: "value".to_owned(),
            value: x,
        })
    }
}

/// Which detector, with its parameters: the serialisable description of a detector.
///
/// # Examples
/// ```
/// use apo_drift::DetectorConfig;
/// let cfg = DetectorConfig::from_params("adwin", &[("delta", "0.01"), ("clock", "16")])?;
/// assert_eq!(cfg.name(), "adwin");
/// let mut detector = cfg.build()?;
/// assert!(!detector.update(0.5)?);
/// # Ok::<(), apo_drift::DriftError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "detector", rename_all = "kebab-case"))]
pub enum DetectorConfig {
    /// ADaptive WINdowing.
    Adwin(AdwinConfig),
    /// Page-Hinkley test.
    PageHinkley(PageHinkleyConfig),
    /// Drift Detection Method (binary error stream).
    Ddm(DdmConfig),
    /// Kolmogorov-Smirnov windowing.
    Kswin(KswinConfig),
    /// Early Drift Detection Method (river `drift.binary.EDDM`).
    Eddm(EddmConfig),
    /// Fast Hoeffding Drift Detection Method (river `drift.binary.FHDDM`).
    Fhddm(FhddmConfig),
    /// Hoeffding's bound on moving averages (river `drift.binary.HDDM_A`).
    HddmA(HddmAConfig),
    /// McDiarmid's bound on weighted moving averages (river `drift.binary.HDDM_W`).
    HddmW(HddmWConfig),
}

impl DetectorConfig {
    /// The kebab-case detector name.
    pub fn name(&self) -> &'static str {
        match self {
            DetectorConfig::Adwin(_) => "adwin",
            DetectorConfig::PageHinkley(_) => "page-hinkley",
            DetectorConfig::Ddm(_) => "ddm",
            DetectorConfig::Kswin(_) => "kswin",
            DetectorConfig::Eddm(_) => "eddm",
            DetectorConfig::Fhddm(_) => "fhddm",
            DetectorConfig::HddmA(_) => "hddm-a",
            DetectorConfig::HddmW(_) => "hddm-w",
        }
    }

    /// The default configuration of the named detector.
    ///
    /// # Errors
    /// [`DriftError::UnknownDetector`].
    pub fn default_for(name: &str) -> Result<Self> {
        Ok(match name {
            "adwin" => DetectorConfig::Adwin(AdwinConfig::default()),
            "page-hinkley" | "pagehinkley" | "ph" => {
                DetectorConfig::PageHinkley(PageHinkleyConfig::default())
            }
            "ddm" => DetectorConfig::Ddm(DdmConfig::default()),
            "kswin" => DetectorConfig::Kswin(KswinConfig::default()),
            "eddm" => DetectorConfig::Eddm(EddmConfig::default()),
            "fhddm" => DetectorConfig::Fhddm(FhddmConfig::default()),
            "hddm-a" | "hddm_a" => DetectorConfig::HddmA(HddmAConfig::default()),
            "hddm-w" | "hddm_w" => DetectorConfig::HddmW(HddmWConfig::default()),
            other => return Err(DriftError::UnknownDetector(other.to_owned())),
        })
    }

    /// The named detector with river's parameter names set from `NAME=VALUE` pairs.
    ///
    /// # Errors
    /// [`DriftError::UnknownDetector`], [`DriftError::UnknownParameter`], and
    /// [`DriftError::BadValue`] for values that do not parse.
    pub fn from_params(name: &str, params: &[(&str, &str)]) -> Result<Self> {
        let mut cfg = Self::default_for(name)?;
        for &(key, value) in params {
            cfg.set(key, value)?;
        }
        Ok(cfg)
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let num = |v: &str| -> Result<f64> {
            v.trim().parse::<f64>().map_err(|_| DriftError::BadValue {
                name: key.to_owned(),
                value: v.to_owned(),
                expected: "a number",
            })
        };
        let int = |v: &str| -> Result<usize> {
            v.trim().parse::<usize>().map_err(|_| DriftError::BadValue {
                name: key.to_owned(),
                value: v.to_owned(),
                expected: "a non-negative integer",
            })
        };
        match self {
            DetectorConfig::Adwin(c) => match key {
                "delta" => c.delta = num(value)?,
                "clock" => c.clock = int(value)?,
                "max_buckets" => c.max_buckets = int(value)?,
                "min_window_length" => c.min_window_length = int(value)?,
                "grace_period" => c.grace_period = int(value)?,
                _ => return Err(unknown("adwin", key, AdwinConfig::PARAMS)),
            },
            DetectorConfig::PageHinkley(c) => match key {
                "min_instances" => c.min_instances = int(value)?,
                "delta" => c.delta = num(value)?,
                "threshold" => c.threshold = num(value)?,
                "alpha" => c.alpha = num(value)?,
                "mode" => c.mode = value.trim().parse()?,
                _ => return Err(unknown("page-hinkley", key, PageHinkleyConfig::PARAMS)),
            },
            DetectorConfig::Ddm(c) => match key {
                "warm_start" => c.warm_start = int(value)?,
                "warning_threshold" => c.warning_threshold = num(value)?,
                "drift_threshold" => c.drift_threshold = num(value)?,
                _ => return Err(unknown("ddm", key, DdmConfig::PARAMS)),
            },
            DetectorConfig::Kswin(c) => match key {
                "alpha" => c.alpha = num(value)?,
                "window_size" => c.window_size = int(value)?,
                "stat_size" => c.stat_size = int(value)?,
                "seed" => c.seed = int(value)? as u64,
                _ => return Err(unknown("kswin", key, KswinConfig::PARAMS)),
            },
            DetectorConfig::Eddm(c) => match key {
                "warm_start" => c.warm_start = int(value)?,
                "alpha" => c.alpha = num(value)?,
                "beta" => c.beta = num(value)?,
                _ => return Err(unknown("eddm", key, EddmConfig::PARAMS)),
            },
            DetectorConfig::Fhddm(c) => match key {
                "sliding_window_size" => c.sliding_window_size = int(value)?,
                "confidence_level" => c.confidence_level = num(value)?,
                "short_window_size" => {
                    c.short_window_size = match value.trim() {
                        "None" | "none" | "" => None,
                        v => Some(int(v)?),
                    }
                }
                _ => return Err(unknown("fhddm", key, FhddmConfig::PARAMS)),
            },
            DetectorConfig::HddmA(c) => match key {
                "drift_confidence" => c.drift_confidence = num(value)?,
                "warning_confidence" => c.warning_confidence = num(value)?,
                "two_sided_test" => c.two_sided_test = boolean(key, value)?,
                _ => return Err(unknown("hddm-a", key, HddmAConfig::PARAMS)),
            },
            DetectorConfig::HddmW(c) => match key {
                "drift_confidence" => c.drift_confidence = num(value)?,
                "warning_confidence" => c.warning_confidence = num(value)?,
                "lambda_val" => c.lambda_val = num(value)?,
                "two_sided_test" => c.two_sided_test = boolean(key, value)?,
                _ => return Err(unknown("hddm-w", key, HddmWConfig::PARAMS)),
            },
        }
        Ok(())
    }

    /// Builds the detector.
    ///
    /// # Errors
    /// [`DriftError::OutOfRange`] for invalid parameters.
    pub fn build(&self) -> Result<Box<dyn DriftDetector>> {
        Ok(match self {
            DetectorConfig::Adwin(c) => Box::new(Adwin::new(c.clone())?),
            DetectorConfig::PageHinkley(c) => Box::new(PageHinkley::new(c.clone())?),
            DetectorConfig::Ddm(c) => Box::new(Ddm::new(c.clone())?),
            DetectorConfig::Kswin(c) => Box::new(Kswin::new(c.clone())?),
            DetectorConfig::Eddm(c) => Box::new(Eddm::new(c.clone())?),
            DetectorConfig::Fhddm(c) => Box::new(Fhddm::new(c.clone())?),
            DetectorConfig::HddmA(c) => Box::new(HddmA::new(c.clone())?),
            DetectorConfig::HddmW(c) => Box::new(HddmW::new(c.clone())?),
        })
    }
}

/// `true`/`false` (also Python's `True`/`False`, as river's parameters are written).
fn boolean(key: &str, value: &str) -> Result<bool> {
    match value.trim() {
        "true" | "True" | "1" => Ok(true),
        "false" | "False" | "0" => Ok(false),
        v => Err(DriftError::BadValue {
            name: key.to_owned(),
            value: v.to_owned(),
            expected: "true or false",
        }),
    }
}

fn unknown(detector: &'static str, key: &str, expected: &'static str) -> DriftError {
    DriftError::UnknownParameter {
        detector,
        name: key.to_owned(),
        expected,
    }
}

impl FromStr for PageHinkleyMode {
    type Err = DriftError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "up" => Ok(PageHinkleyMode::Up),
            "down" => Ok(PageHinkleyMode::Down),
            "both" => Ok(PageHinkleyMode::Both),
            _ => Err(DriftError::BadValue {
                name: "mode".to_owned(),
                value: s.to_owned(),
                expected: "one of up, down, both",
            }),
        }
    }
}

pub(crate) fn out_of_range(name: &str, value: f64, expected: &'static str) -> DriftError {
    DriftError::OutOfRange {
        name: name.to_owned(),
        value,
        expected,
    }
}
