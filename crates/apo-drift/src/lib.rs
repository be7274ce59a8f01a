//! Multi-stream drift statistics and online drift detectors.
//!
//! APO's teachers are N streams of reasoning whose states drift within a trajectory and
//! across the data stream. This crate makes that drift measurable. It is generic: teachers are
//! stream indices and labels are category indices; the chest X-ray words live in `cxr-max`.
//!
//! - **Divergences** between categorical distributions: [`js_divergence`], [`kl_divergence`],
//!   [`total_variation`], [`hellinger`], with additive smoothing ([`smoothed`]).
//! - **Multi-stream statistics** on per-teacher, per-step label counts ([`StreamCounts`]):
//!   teacher × teacher divergence per step, per-teacher and collective non-stationarity
//!   between steps j and j + Δ, the paper's factorisation made concrete as an instantaneous
//!   drift term ([`instantaneous_drift`]) and a cumulative historical deviation
//!   ([`cumulative_deviation`]).
//! - **Agreement**: [`fleiss_kappa`], [`vote_entropy`], [`pairwise_agreement`],
//!   [`binary_scores`] (precision, recall, F1 against a consensus or ground truth).
//! - **Online detectors** with river 0.26's parameter names, defaults and detection indices:
//!   [`Adwin`], [`PageHinkley`], [`Ddm`], and a seeded [`Kswin`]; [`MultiStreamMonitor`] runs
//!   one per teacher.
//!
//! - **Streams of numbers** read from text, one per line, and run through a detector named by
//!   `NAME=VALUE` parameters: [`stream`].
//!
//! Every quantity is defined in `docs/math/drift.md`.
//!
//! # Examples
//! ```
//! use apo_drift::{Divergence, StreamCounts, instantaneous_drift};
//!
//! // Two teachers, one step, labels {absent, present}: teacher 0 says "present" 9 times in
//! // 10, teacher 1 once in 10.
//! let mut counts = StreamCounts::new(2, 1, 2)?;
//! for i in 0..10 {
//!     counts.observe(0, 0, usize::from(i < 9))?;
//!     counts.observe(1, 0, usize::from(i < 1))?;
//! }
//! let p = counts.distributions(0.0)?;
//! let drift = instantaneous_drift(&p, None, Divergence::JensenShannon)?;
//! assert!((drift[[0, 0]] - drift[[1, 0]]).abs() < 1e-15); // symmetric around the mean
//! # Ok::<(), apo_drift::DriftError>(())
//! ```
//!
//! # Feature flags
//! - `serde`: `Serialize`/`Deserialize` for configs, counts and scores.
#![warn(missing_docs)]

mod agreement;
mod detect;
mod divergence;
mod error;
mod monitor;
pub mod stream;
mod streams;

pub use agreement::{BinaryScores, binary_scores, fleiss_kappa, pairwise_agreement, vote_entropy};
pub use detect::{
    Adwin, AdwinConfig, Ddm, DdmConfig, DetectorConfig, DriftDetector, Eddm, EddmConfig, Fhddm,
    FhddmConfig, HddmA, HddmAConfig, HddmW, HddmWConfig, Kswin, KswinConfig, PageHinkley,
    PageHinkleyConfig, PageHinkleyMode, ks_2samp,
};
pub use divergence::{
    Divergence, check_distribution, hellinger, js_divergence, kl_divergence, smoothed,
    total_variation,
};
pub use error::{DriftError, Result};
pub use monitor::MultiStreamMonitor;
pub use streams::{
    StreamCounts, collective_shift, cumulative_deviation, instantaneous_drift, mean_distribution,
    step_shift, teacher_divergence,
};

pub(crate) use error::check_finite;
