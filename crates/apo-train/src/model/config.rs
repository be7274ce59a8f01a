//! The student's architecture ([`StudentConfig`]) and its MLP activation.

use burn::config::Config;
use burn::module::Param;
use burn::nn::conv::Conv2dConfig;
use burn::nn::{EmbeddingConfig, Initializer, LayerNormConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::{gelu, relu, sigmoid};
use burn::tensor::backend::Backend;

use super::{Block, ConceptAttention, Dense, Student};
use crate::{Result, TrainError};

/// The student's architecture.
#[derive(Config, Debug, PartialEq)]
pub struct StudentConfig {
    /// Text vocabulary (the tokenizer's size).
    pub vocab_size: usize,
    /// Image width and height in pixels.
    #[config(default = 64)]
    pub image_size: usize,
    /// Patch width and height (the image size must be a multiple).
    #[config(default = 8)]
    pub patch_size: usize,
    /// Model width.
    #[config(default = 128)]
    pub d_model: usize,
    /// Attention heads (must divide `d_model`).
    #[config(default = 4)]
    pub n_heads: usize,
    /// Image encoder layers.
    #[config(default = 2)]
    pub encoder_layers: usize,
    /// Decoder layers.
    #[config(default = 2)]
    pub decoder_layers: usize,
    /// MLP width as a multiple of `d_model`.
    #[config(default = 4)]
    pub mlp_ratio: usize,
    /// Longest text (prompt and completion with their special tokens).
    #[config(default = 192)]
    pub max_text_len: usize,
    /// Dropout probability (0 for deterministic training).
    #[config(default = 0.0)]
    pub dropout: f64,
    /// The MLP activation.
    #[config(default = "Activation::Relu")]
    pub activation: Activation,
    /// Add a projection of the mean prefix vector to every text embedding (a direct path
    /// from the image to each token, besides attention to the prefix). Without it a model
    /// trained from scratch takes several times more steps before its text depends on the
    /// image.
    #[config(default = true)]
    pub image_summary: bool,
    /// A linear head from the mean image vector to `n_concepts` logits (the training stages'
    /// auxiliary concept loss, one logit per finding; read when generating only with
    /// `concept_input`).
    #[config(default = false)]
    pub concept_head: bool,
    /// Feed the concept head's probabilities (`σ` of its `n_concepts` logits) through an
    /// `n_concepts → d` projection into every text embedding, next to the image summary: a
    /// low-dimensional, explicitly supervised path from what the image shows to the text.
    /// Needs `concept_head`.
    #[config(default = false)]
    pub concept_input: bool,
    /// How the concept head pools the image's prefix vectors: `mean` (a linear head on their
    /// mean) or `attention` (one learned query per concept, [`ConceptAttention`]).
    #[config(default = "ConceptPooling::Mean")]
    pub concept_pooling: ConceptPooling,
    /// Outputs of the concept head (the training stages use one per `cxr-max` finding, 14;
    /// a `model.json` written before this field existed loads with 14).
    #[config(default = 14)]
    pub n_concepts: usize,
}

/// How the concept head pools the image's prefix vectors (`model.concept_pooling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ConceptPooling {
    /// A linear head on the mean prefix vector (a `model.json` written before this field
    /// existed loads with it).
    #[default]
    Mean,
    /// Per-concept attention pooling ([`ConceptAttention`]).
    Attention,
}

/// The MLP activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// `x · σ(1.702 x)` (CLIP's GELU approximation).
    QuickGelu,
    /// The exact GELU `x · Φ(x)` (erf-based; several times slower on the CPU backend).
    Gelu,
    /// `max(0, x)`: the default, by far the cheapest on the CPU backend (on the stage-2
    /// reference step, burn's erf-based `gelu` cost 0.27 s more per step, `quick-gelu` 0.2 s).
    #[default]
    Relu,
}

impl Activation {
    pub(super) fn apply<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Activation::QuickGelu => x.clone() * sigmoid(x.mul_scalar(1.702)),
            Activation::Gelu => gelu(x),
            Activation::Relu => relu(x),
        }
    }
}

impl StudentConfig {
    /// Checks the ranges.
    ///
    /// # Errors
    /// [`TrainError::Config`] naming the field and what it must be.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, value: String, expected: &str| {
            Err(TrainError::Config {
                field: format!("model.{field}"),
                value,
                expected: expected.into(),
            })
        };
        if self.vocab_size < 8 {
            return bad("vocab_size", self.vocab_size.to_string(), "at least 8");
        }
        if self.patch_size == 0
            || self.image_size == 0
            || !self.image_size.is_multiple_of(self.patch_size)
        {
            return bad(
                "patch_size",
                self.patch_size.to_string(),
                &format!("a positive divisor of image_size = {}", self.image_size),
            );
        }
        if self.d_model == 0 || self.n_heads == 0 || !self.d_model.is_multiple_of(self.n_heads) {
            return bad(
                "n_heads",
                self.n_heads.to_string(),
                &format!("a positive divisor of d_model = {}", self.d_model),
            );
        }
        if self.decoder_layers == 0 {
            return bad("decoder_layers", "0".into(), "at least 1");
        }
        if self.mlp_ratio == 0 {
            return bad("mlp_ratio", "0".into(), "at least 1");
        }
        if self.concept_input && !self.concept_head {
            return bad(
                "concept_input",
                "true".into(),
                "false unless the model has a concept head (model.concept_weight > 0)",
            );
        }
        if self.concept_head && self.n_concepts == 0 {
            return bad("n_concepts", "0".into(), "at least 1 with a concept head");
        }
        if self.max_text_len < 4 {
            return bad("max_text_len", self.max_text_len.to_string(), "at least 4");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", self.dropout.to_string(), "in [0, 1)");
        }
        Ok(())
    }

    /// Prefix vectors per image.
    pub fn patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    /// A fresh student.
    ///
    /// # Errors
    /// As [`StudentConfig::validate`].
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<Student<B>> {
        self.validate()?;
        let d = self.d_model;
        let block = || Block::new(self, device);
        Ok(Student {
            patch: Conv2dConfig::new([1, d], [self.patch_size, self.patch_size])
                .with_stride([self.patch_size, self.patch_size])
                .init(device),
            image_pos: Param::from_tensor(Tensor::random(
                [1, self.patches(), d],
                burn::tensor::Distribution::Normal(0.0, 0.02),
                device,
            )),
            encoder: (0..self.encoder_layers).map(|_| block()).collect(),
            encoder_norm: LayerNormConfig::new(d).init(device),
            token_embedding: EmbeddingConfig::new(self.vocab_size, d)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                })
                .init(device),
            text_pos: EmbeddingConfig::new(self.max_text_len, d)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                })
                .init(device),
            decoder: (0..self.decoder_layers).map(|_| block()).collect(),
            norm: LayerNormConfig::new(d).init(device),
            head: Dense::new(d, self.vocab_size, device),
            summary: self.image_summary.then(|| Dense::new(d, d, device)),
            concepts: (self.concept_head && self.concept_pooling == ConceptPooling::Mean)
                .then(|| Dense::new(d, self.n_concepts, device)),
            concept_attention: (self.concept_head
                && self.concept_pooling == ConceptPooling::Attention)
                .then(|| ConceptAttention::new(self.n_concepts, d, device)),
            concept_input: self
                .concept_input
                .then(|| Dense::new(self.n_concepts, d, device)),
            patches: self.patches(),
            max_text_len: self.max_text_len,
        }
        .materialised())
    }
}
