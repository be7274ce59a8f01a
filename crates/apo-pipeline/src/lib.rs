//! The whole APO method as a library: what `apo demo` and `apo run` do, callable from Rust.
//!
//! - [`labels`]: every trajectory read once with the `cxr-max` labeler ([`Labelled`]), the
//!   teachers' votes, the label consensus (majority, weighted, Dawid-Skene), and the one
//!   definition each of a vote, the majority vote and accuracy that every report uses.
//! - [`drift`]: the drift report ([`DriftReport::compute`], pure; `apo drift report` draws its
//!   plots from it).
//! - [`consensus`]: the consensus build: consensus trajectories and preference sets, exported
//!   for our trainer, TRL or ms-swift.
//! - [`table`]: the evaluation table as typed rows (teacher, aggregate, baseline, student)
//!   with paired-bootstrap comparisons.
//! - [`stages`]: the stage cache of a run folder and its resume keys.
//! - [`demo`]: the demo's presets; [`run()`]: every stage on a backend `B`.
//!
//! ```no_run
//! use apo_pipeline::{PipelineOptions, Quiet, run};
//! use apo_train::device::Cpu; // Autodiff<NdArray>, with apo-train's `ndarray` feature
//!
//! let options = PipelineOptions::new("data/sim".into(), "runs/x".into(), Default::default());
//! let result = run::<Cpu>(&options, &Default::default(), &mut Quiet)?;
//! println!("APO student: {:.3}", result.mean_accuracy.apo);
//! # Ok::<(), apo_pipeline::PipelineError>(())
//! ```
#![warn(missing_docs)]

pub mod config;
pub mod consensus;
pub mod counterfactual;
pub mod demo;
pub mod drift;
mod error;
pub mod io;
pub mod labels;
mod run;
pub mod sft_export;
pub mod stages;
pub mod table;

pub use config::{ConsensusSettings, PipelineConfig, PipelineOptions, Variant, VariantSettings};
pub use drift::{DriftOptions, DriftReport};
pub use error::{PipelineError, Result};
pub use labels::Labelled;
pub use run::{
    MARGIN_GROUPS, MeanAccuracy, Observer, PipelineResult, Quiet, STAGE2, generation, read_metrics,
    run, write_samples,
};
