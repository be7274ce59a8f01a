//! Preference objectives for multi-teacher distillation.
//!
//! `apo-loss` implements the objective of APO (Autonomous Preference Optimization, "Turning
//! Drift into Constraint", ICML 2026): a top-1 Plackett-Luce extension of DPO in which a
//! consensus trajectory is preferred over every drifting teacher trajectory at once,
//!
//! ```text
//! s_i = β (log π_θ(y_i | x) − log π_ref(y_i | x))          i = 0 (chosen), 1..N (rejected)
//! L   = −ln( e^{s_0} / Σ_{i=0..N} e^{s_i} ) = softplus( logsumexp_u (s_u − s_0) )
//! ```
//!
//! together with the pairwise DPO family beside it (`pairwise-sigmoid`, `ipo`, `hinge`,
//! `robust`, `simpo`, each averaged or summed over negatives), the listwise objectives
//! (`plackett-luce-ranking`, the full Plackett-Luce ranking of a drift-ordered list, and
//! `infonca`, soft targets from explicit rewards), optional per-negative weights, an optional
//! SFT term on the chosen sequence, and sum or per-token-mean aggregation. See [`Objective`]
//! for every formula and `docs/math/plackett-luce.md` for the derivation of the stable forms
//! and the gradients.
//!
//! Two implementations compute the same numbers:
//! - an `f64` scalar reference with exact gradients and metrics ([`PreferenceLoss::compute`]),
//!   with no dependency but `thiserror`;
//! - a batched tensor implementation on any Burn backend (feature `burn`), with
//!   [`tensor::sequence_logprobs`] for the log-probs of completion tokens.
//!
//! # Examples
//! ```
//! use apo_loss::{Example, LossConfig, Objective, Sequence};
//!
//! // A consensus trajectory and three teacher trajectories, as summed log-probs under the
//! // policy and the frozen reference.
//! let example = Example::new(
//!     Sequence::new(-40.0, -42.0),
//!     vec![Sequence::new(-55.0, -54.0), Sequence::new(-48.0, -49.0), Sequence::new(-61.0, -60.0)],
//! );
//! let apo = LossConfig::new(Objective::PlackettLuce).with_beta(0.1).init()?;
//! let out = apo.compute(&example)?;
//! assert!(out.loss > 0.0 && out.loss < 4f64.ln());
//! assert_eq!(out.metrics.top1_accuracy, 1.0);
//! # Ok::<(), apo_loss::LossError>(())
//! ```
//!
//! # Feature flags
//! - `serde`: `Serialize`/`Deserialize` for configs, examples and outputs.
//! - `burn`: the [`tensor`] module, generic over `B: Backend` (gradients through
//!   `B: AutodiffBackend`; the log-probs of completion tokens over
//!   `B: tensor::LossKernels`). Enables `serde`; picks no backend.
//! - `ndarray`: burn's NdArray CPU backend with a fused log-softmax + gather kernel
//!   (`tensor::LossKernels` for `NdArray<f32>` and `Autodiff<NdArray<f32>>`), and the `host`
//!   bridge between NdArray tensors and host slices that the CPU kernels share.
//! - `wgpu`, `cuda`: `tensor::LossKernels` (the composite graph) for burn's `Wgpu` and `Cuda`
//!   backends and `Autodiff` over them.
#![warn(missing_docs)]

#[cfg(feature = "json")]
pub mod cases;
mod config;
mod error;
#[cfg(feature = "ndarray")]
pub mod host;
mod math;
mod scalar;
#[cfg(feature = "burn")]
pub mod tensor;

pub use config::{Aggregation, LossConfig, Objective, PreferenceLoss, Reduction};
pub use error::{LossError, Result};
pub use math::{log_sigmoid, logsumexp, sigmoid, softplus};
pub use scalar::{Example, LossOutput, Metrics, Sequence};
