//! Pretrained vision-language models from Hugging Face checkpoints on Burn: Qwen2-VL and
//! Qwen2.5-VL.
//!
//! A checkpoint folder as the hub or `save_pretrained` writes it (`config.json` flat or nested,
//! `model.safetensors` or shards, F32/F16/BF16) loads into [`Loaded`]; its tokenizer, chat template
//! and image processor come from the same folder. The model computes logits, TRL's completion
//! log-probabilities and greedy or sampled continuations; LoRA adapters attach, train, merge and
//! round-trip in PEFT's format ([`lora`]). Generic over the Burn backend; the training loops are
//! `apo-train`'s.

pub mod chat;
pub mod config;
pub mod error;
pub mod hf;
pub mod lora;
pub mod model;
pub mod nn;
pub mod processor;
pub mod rope;
pub mod text;
pub mod tokenizer;
pub mod vision;
pub mod weights;

pub use config::{Architecture, ModelConfig};
pub use error::{ModelError, Result};
pub use hf::{GenerateRow, Generated, HfModel, Score, ScoreRow};
pub use lora::{Adapter, LoraConfig, TargetModules};
pub use model::{GenerateOptions, Images, Loaded, QwenVl};
pub use vision::VisionInput;
pub use weights::Weights;
