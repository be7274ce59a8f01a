//! Training the APO student with Burn, generic over the backend.
//!
//! - [`Student`] ([`StudentConfig`]): a small vision-language model, an image encoder whose
//!   patches become prefix vectors of a transformer decoder, LoRA-ready.
//! - [`train::sft`]: stage 1, supervised bootstrapping on the union of all teacher
//!   trajectories (cross-entropy on trajectory tokens, AdamW, warm-up + cosine, clipping,
//!   accumulation).
//! - [`train::apo`]: stage 2, the policy initialised from stage 1 against the frozen stage-1
//!   reference (log-probs cached on disk), any `apo-loss` objective, optional LoRA.
//! - Checkpoints ([`checkpoint`]) written atomically; a resumed run ends bitwise identical to
//!   an uninterrupted one on the CPU backend.
//! - [`hf`]: a Hugging Face Qwen2-VL / Qwen2.5-VL student (`[student] hf = "DIR"`) trained
//!   with LoRA through both stages, adapters in PEFT's format.
//! - [`eval`]: generation and per-finding accuracy through the `cxr-max` labeler.
//! - [`train::sft_on`], [`train::apo_on`] and [`eval::evaluate_dir_on`] take data already
//!   opened (the data set's items, the parsed [`data::Preferences`]), for a pipeline that
//!   opened and labelled the data set once; [`train::sft`], [`train::apo`] and
//!   [`eval::evaluate_dir`] read them from the files the configuration names.
//!
//! The crate forwards burn's `ndarray` (default), `wgpu` and `cuda` features and never picks
//! a backend: every function takes a backend type and a device. The model runs on
//! `B: ApoKernels` ([`kernels`]: fused CPU kernels on NdArray, burn's composite graphs on
//! every other backend), the training stages on `B: TrainBackend` (an autodiff backend whose
//! inner backend has the kernels too).
#![warn(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod device;
mod error;
pub mod eval;
#[cfg(feature = "ndarray")]
mod fused;
pub mod hf;
pub mod kernels;
pub mod lock;
pub mod margin;
pub mod memory;
mod model;
pub mod parallel;
pub mod tokenizer;
pub mod train;

pub use config::RunConfig;
pub use error::{Result, TrainError};
pub use kernels::{ApoKernels, TrainBackend};
pub use model::{
    Activation, Block, ConceptAttention, ConceptPooling, DecodeCache, Dense, Lora, Rows, Student,
    StudentConfig,
};
