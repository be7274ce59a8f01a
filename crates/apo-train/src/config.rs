//! Run configuration (TOML or JSON), with defaults for every field.

use std::path::{Path, PathBuf};

use apo_loss::LossConfig;
use serde::{Deserialize, Serialize};

use crate::{Result, TrainError};

/// Everything a training run needs. Every field has a default; a TOML file sets only what
/// it changes. See `docs/training.md` for each field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Where the data is.
    pub data: DataConfig,
    /// The tokenizer.
    pub tokenizer: TokenizerConfig,
    /// The student's architecture (the vocabulary comes from the tokenizer).
    pub model: ModelConfig,
    /// A Hugging Face student instead of the small one: `[student] hf = "DIR"`.
    pub student: StudentSection,
    /// Before stage 1: the image encoder and the concept head learn the concept targets
    /// alone (off unless `pretrain.optim.steps > 0`).
    pub pretrain: PretrainConfig,
    /// Stage 1, supervised bootstrapping.
    pub sft: OptimConfig,
    /// Stage 2, constraint-aware optimisation.
    pub apo: ApoConfig,
    /// Run folder, seed, checkpoints, logging.
    pub run: RunSettings,
}

/// `[student]`: a Hugging Face Qwen2-VL / Qwen2.5-VL checkpoint trained with LoRA through both
/// stages ([`crate::hf`]). Without `hf` the small student of `[model]` is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct StudentSection {
    /// The checkpoint folder (config.json, safetensors, tokenizer, chat template, processor
    /// config), e.g. a download of `Qwen/Qwen2.5-VL-7B-Instruct`.
    pub hf: Option<PathBuf>,
    /// A PEFT adapter stage 1 starts from (otherwise fresh adapters per `lora`).
    pub adapter: Option<PathBuf>,
    /// The adapters stage 1 attaches (rank, α, dropout, target modules, rsLoRA, vision).
    pub lora: apo_models::LoraConfig,
    /// Sequences per forward pass (0: all of a micro-batch's sequences, or all 1 + N of a
    /// preference group, at once). Smaller bounds the activation memory; stage 2 then runs one
    /// pass without gradients to get the group's loss, and one with gradients per chunk,
    /// weighted by the loss's derivative (the same gradient).
    pub sequences_per_pass: usize,
    /// Burn's balanced activation checkpointing (`apo train`): memory-bound operations
    /// (element-wise, normalisation, activation) are recomputed in the backward pass instead of
    /// keeping their outputs; matrix products keep theirs. The same gradients.
    pub checkpointing: bool,
    /// Longest sequence in tokens (prompt, image tokens and completion); 0: the model's
    /// `max_position_embeddings`. Longer completions are cut when `data.truncate`, else an
    /// error naming the record.
    pub max_length: usize,
}

/// Data sources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// The data set folder (CXR-MAX records + MIMIC-CXR-JPG tables and images).
    pub dir: PathBuf,
    /// The preference sets of stage 2 (`apo consensus build --export ours`).
    pub preferences: Option<PathBuf>,
    /// Train on this split only (`train`); `all` or `None` trains on every image.
    pub split: Option<String>,
    /// Cut sequences longer than `model.max_text_len` instead of reporting them.
    pub truncate: bool,
    /// Stage 1: teacher trajectories per training unit. Each image's trajectories are
    /// shuffled (seeded) and split into units of this many, which share one image encoding;
    /// 0 keeps all of an image's trajectories in one unit. Small units put more distinct
    /// images in a micro-batch of the same size (1 = one row per image and teacher, as
    /// ms-swift trains).
    pub trajectories_per_group: usize,
    /// Oversample the training images whose consensus trajectory (in `data.preferences`)
    /// states a finding, in every stage: `none` (default), `table1` (the five findings of the
    /// paper's Table 1) or `all` (the 14). An image is repeated in each epoch's order
    /// `min(oversample_max, round((1 − π) / π))` times for the rarest such finding it has
    /// (π: the finding's share of images whose consensus states it), so that a rare finding's
    /// positive images are seen about as often as its negatives.
    pub oversample: Oversample,
    /// The most times one image is repeated by `oversample`.
    pub oversample_max: usize,
    /// The records file, when the folder has several candidates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<PathBuf>,
    /// A TOML file naming the fields of an unforeseen record layout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mapping: Option<PathBuf>,
    /// Stop at the first rejected record instead of leaving it out (and counting it).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub strict: bool,
    /// Write every rejected record, with its file, line and reason, to this JSON Lines file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<PathBuf>,
}

impl DataConfig {
    /// The reader settings of `[data]`.
    pub fn source(&self) -> cxr_max::dataset::DataSource {
        cxr_max::dataset::DataSource {
            records: self.records.clone(),
            mapping: self.mapping.clone(),
            strict: self.strict,
            quarantine: self.quarantine.clone(),
        }
    }
}

/// Which findings [`DataConfig::oversample`] balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Oversample {
    /// Every image once per epoch.
    #[default]
    None,
    /// The five findings of the paper's Table 1 (`cxr_max::Finding::TABLE1`).
    Table1,
    /// All 14 findings.
    All,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dir: PathBuf::from("data"),
            preferences: None,
            split: Some("train".into()),
            truncate: false,
            trajectories_per_group: 0,
            oversample: Oversample::None,
            oversample_max: 8,
            records: None,
            mapping: None,
            strict: false,
            quarantine: None,
        }
    }
}

/// Tokenizer settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenizerConfig {
    /// Use this `tokenizer.json` instead of training one.
    pub file: Option<PathBuf>,
    /// Vocabulary size of a trained tokenizer.
    pub vocab_size: usize,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        TokenizerConfig {
            file: None,
            vocab_size: 1024,
        }
    }
}

/// Architecture (see [`crate::StudentConfig`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Image size in pixels.
    pub image_size: usize,
    /// Patch size in pixels.
    pub patch_size: usize,
    /// Width.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Image encoder layers.
    pub encoder_layers: usize,
    /// Decoder layers.
    pub decoder_layers: usize,
    /// MLP width multiple.
    pub mlp_ratio: usize,
    /// Longest text in tokens.
    pub max_text_len: usize,
    /// Dropout.
    pub dropout: f64,
    /// MLP activation: `quick-gelu`, `gelu` or `relu`.
    pub activation: crate::Activation,
    /// Add a projection of the mean image vector to every text embedding.
    pub image_summary: bool,
    /// Weight of the auxiliary concept loss (0 = no concept head): a linear head on the mean
    /// image vector predicts, for each of the 14 findings, the `concept_targets` (binary
    /// cross-entropy), in stage 1 and in stage 2. It teaches the image encoder the concepts
    /// the texts talk about, from the teachers alone (no ground truth).
    pub concept_weight: f64,
    /// What the concept head learns: `consensus` (default; the findings of the image's
    /// consensus trajectory in `data.preferences`, images without one carry no concept loss)
    /// or `teachers` (the fraction of the image's teachers whose trajectory ends positive).
    pub concept_targets: ConceptTargets,
    /// Feed the concept head's 14 probabilities back into every text embedding (needs
    /// `concept_weight > 0`): the text reads what the image shows through a path the concept
    /// loss supervises, instead of discovering it in the mean image vector on its own.
    pub concept_input: bool,
    /// How the concept head pools the image: `mean` (a linear head on the mean image vector)
    /// or `attention` (one learned query per finding attends over the image patches).
    pub concept_pooling: crate::ConceptPooling,
    /// Weigh the concept loss so that, for each finding, the images whose target states it
    /// and those whose target does not count the same in total (class-balanced binary
    /// cross-entropy, the weights counted on the training images' targets). The head's
    /// probability 0.5 then sits where a balanced-accuracy decision does, not at the
    /// finding's prevalence.
    pub concept_balance: bool,
}

/// The encoder pretraining stage (`[pretrain]`): before stage 1, the image encoder and the
/// concept head learn `model.concept_targets` from the training images alone (no text), so
/// that stage 1 starts from an encoder that already sees the findings. Needs a concept head
/// (`model.concept_weight > 0`). Writes `OUT/pretrain/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainConfig {
    /// Optimiser and schedule; `steps = 0` (the default) skips the stage, `batch_size` counts
    /// images. Default peak learning rate: 1e-3.
    pub optim: OptimConfig,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        PretrainConfig {
            optim: OptimConfig {
                steps: 0,
                batch_size: 32,
                ..OptimConfig::default()
            },
        }
    }
}

impl PretrainConfig {
    /// Whether the stage runs.
    pub fn enabled(&self) -> bool {
        self.optim.steps > 0
    }
}

impl Default for ModelConfig {
    /// The architecture defaults of [`crate::StudentConfig`] (their one source), no concept
    /// head.
    fn default() -> Self {
        let student = crate::StudentConfig::new(0);
        ModelConfig {
            image_size: student.image_size,
            patch_size: student.patch_size,
            d_model: student.d_model,
            n_heads: student.n_heads,
            encoder_layers: student.encoder_layers,
            decoder_layers: student.decoder_layers,
            mlp_ratio: student.mlp_ratio,
            max_text_len: student.max_text_len,
            dropout: student.dropout,
            activation: student.activation,
            image_summary: student.image_summary,
            concept_weight: 0.0,
            concept_targets: ConceptTargets::Consensus,
            concept_input: student.concept_input,
            concept_pooling: student.concept_pooling,
            concept_balance: false,
        }
    }
}

/// The targets of the concept head (`model.concept_targets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ConceptTargets {
    /// The findings stated by the image's consensus trajectory (the `chosen` text of its row
    /// in `data.preferences`): Dawid-Skene weighs each teacher by how reliable it is, so a
    /// teacher that states a finding more often when it is absent counts against it.
    #[default]
    Consensus,
    /// The fraction of the image's teachers whose trajectory ends positive on each finding.
    Teachers,
}

impl ModelConfig {
    /// The burn config for a vocabulary.
    pub fn student(&self, vocab_size: usize) -> crate::StudentConfig {
        crate::StudentConfig::new(vocab_size)
            .with_image_size(self.image_size)
            .with_patch_size(self.patch_size)
            .with_d_model(self.d_model)
            .with_n_heads(self.n_heads)
            .with_encoder_layers(self.encoder_layers)
            .with_decoder_layers(self.decoder_layers)
            .with_mlp_ratio(self.mlp_ratio)
            .with_max_text_len(self.max_text_len)
            .with_dropout(self.dropout)
            .with_activation(self.activation)
            .with_image_summary(self.image_summary)
            .with_concept_head(self.concept_weight > 0.0)
            .with_concept_input(self.concept_input)
            .with_concept_pooling(self.concept_pooling)
            .with_n_concepts(cxr_max::Finding::ALL.len())
    }
}

/// Optimiser and schedule of one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    /// Optimiser steps.
    pub steps: usize,
    /// Images (stage 1: each with all its trajectories) or preference groups (stage 2) per
    /// micro-batch.
    pub batch_size: usize,
    /// Micro-batches whose gradients are accumulated into one step.
    pub grad_accum: usize,
    /// Peak learning rate. Default: 1e-3 for stage 1, 2e-4 for stage 2.
    pub learning_rate: Option<f64>,
    /// Share of the steps spent warming up linearly from 0.
    pub warmup_ratio: f64,
    /// The cosine decays to `learning_rate · min_lr_ratio`.
    pub min_lr_ratio: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0 = off).
    pub grad_clip: f64,
    /// AdamW β₁.
    pub beta1: f64,
    /// AdamW β₂.
    pub beta2: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            steps: 200,
            batch_size: 4,
            grad_accum: 1,
            learning_rate: None,
            warmup_ratio: 0.05,
            min_lr_ratio: 0.1,
            weight_decay: 0.01,
            grad_clip: 1.0,
            beta1: 0.9,
            beta2: 0.999,
        }
    }
}

/// Stage 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApoConfig {
    /// Optimiser and schedule.
    pub optim: OptimConfig,
    /// The objective (`apo-loss`): Plackett-Luce by default.
    pub loss: LossConfig,
    /// The stage-1 run folder whose final model is both the initial policy and the frozen
    /// reference; default: this run's `sft/`.
    pub init: Option<PathBuf>,
    /// LoRA rank on every linear layer (0 = full fine-tuning).
    pub lora_rank: usize,
    /// LoRA α (the update is scaled by α / rank).
    pub lora_alpha: f64,
}

impl Default for ApoConfig {
    fn default() -> Self {
        ApoConfig {
            optim: OptimConfig::default(),
            loss: LossConfig::default(),
            init: None,
            lora_rank: 0,
            lora_alpha: 16.0,
        }
    }
}

/// Run folder and bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSettings {
    /// The run folder (tokenizer, stage folders with checkpoints, metrics and final models).
    pub out: PathBuf,
    /// Seed of initialisation, data order and sampling.
    pub seed: u64,
    /// Write a checkpoint every this many steps (0 = only at the end).
    pub checkpoint_every: usize,
    /// Checkpoints kept (older ones are deleted).
    pub keep_checkpoints: usize,
    /// Longest generated completion in tokens (evaluation).
    pub max_new_tokens: usize,
    /// Sampling temperature for evaluation (0 = greedy).
    pub temperature: f64,
    /// Resume from this checkpoint step instead of the newest (`apo train --from-checkpoint`;
    /// not read from configuration files).
    #[serde(skip)]
    pub from_checkpoint: Option<usize>,
    /// Data parallelism: devices of the chosen kind on this machine, one worker thread each
    /// (`apo train --devices N`). Each micro-batch is split across the workers and their
    /// gradients are summed with burn's collective all-reduce before the optimiser step.
    pub devices: usize,
    /// Machines taking part (`--nodes`), each running the same command with its own
    /// `node_rank`; more than 1 needs `orchestrator`, `node_address` and `data_port`.
    pub nodes: u32,
    /// This machine's index among the `nodes` (`--node-rank`, 0-based).
    pub node_rank: u32,
    /// The address of burn's global collective orchestrator (`ws://HOST:PORT`, started with
    /// `apo collective orchestrator --port PORT`).
    pub orchestrator: Option<String>,
    /// This machine's address as the other nodes reach it (`ws://HOST:PORT`).
    pub node_address: Option<String>,
    /// The port this machine serves tensors on to the other nodes.
    pub data_port: Option<u16>,
    /// How the workers of one machine sum the gradient bucket: burn-collective (`collective`,
    /// every backend) or NCCL (`nccl`: CUDA in a build with the `distributed` feature; one
    /// machine).
    pub all_reduce: AllReduce,
}

/// The gradient all-reduce of a data-parallel run ([`RunSettings::all_reduce`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AllReduce {
    /// burn-collective's all-reduce (tree within a machine, ring between machines).
    #[default]
    Collective,
    /// burn's NCCL all-reduce (`distributed` feature, CUDA, one machine).
    Nccl,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            out: PathBuf::from("runs/train"),
            seed: 0,
            checkpoint_every: 50,
            keep_checkpoints: 2,
            max_new_tokens: 160,
            temperature: 0.0,
            from_checkpoint: None,
            devices: 1,
            nodes: 1,
            node_rank: 0,
            orchestrator: None,
            node_address: None,
            data_port: None,
            all_reduce: AllReduce::Collective,
        }
    }
}

impl RunSettings {
    /// The number of workers of the run: `devices` on each of `nodes` machines.
    pub fn world(&self) -> usize {
        self.devices.max(1) * self.nodes.max(1) as usize
    }

    /// Checks the data-parallel settings.
    ///
    /// # Errors
    /// [`TrainError::Config`].
    pub fn validate_parallel(&self) -> Result<()> {
        if self.devices == 0 {
            return Err(bad("run.devices", 0, "at least 1"));
        }
        if self.nodes == 0 {
            return Err(bad("run.nodes", 0, "at least 1"));
        }
        if self.node_rank >= self.nodes {
            return Err(bad(
                "run.node_rank",
                self.node_rank,
                &format!("below run.nodes = {}", self.nodes),
            ));
        }
        let global = [
            ("run.orchestrator", self.orchestrator.is_some()),
            ("run.node_address", self.node_address.is_some()),
            ("run.data_port", self.data_port.is_some()),
        ];
        if self.nodes > 1
            && let Some((field, _)) = global.iter().find(|(_, set)| !set)
        {
            return Err(bad(
                field,
                "(none)",
                "set for a run over several nodes (run.nodes > 1), with run.orchestrator, \
                 run.node_address and run.data_port together (docs/training.md)",
            ));
        }
        if self.nodes > 1 && self.all_reduce == AllReduce::Nccl {
            return Err(bad(
                "run.all_reduce",
                "nccl",
                "`collective` for a run over several nodes (burn's NCCL all-reduce is within one machine)",
            ));
        }
        if self.nodes == 1
            && let Some((field, _)) = global.iter().find(|(_, set)| *set)
        {
            return Err(bad(
                field,
                "(set)",
                "only with run.nodes > 1 (one machine needs no orchestrator)",
            ));
        }
        Ok(())
    }
}

fn bad(field: &str, value: impl ToString, expected: &str) -> TrainError {
    TrainError::Config {
        field: field.into(),
        value: value.to_string(),
        expected: expected.into(),
    }
}

/// Stage-1 peak learning rate when none is configured.
pub const SFT_LR: f64 = 1e-3;
/// Stage-2 peak learning rate when none is configured.
pub const APO_LR: f64 = 2e-4;

impl OptimConfig {
    /// The peak learning rate: the configured one, or `default`.
    pub fn peak_lr(&self, default: f64) -> f64 {
        self.learning_rate.unwrap_or(default)
    }

    /// Checks the ranges; `stage` prefixes the field names.
    ///
    /// # Errors
    /// [`TrainError::Config`].
    pub fn validate(&self, stage: &str) -> Result<()> {
        let f = |name: &str| format!("{stage}.{name}");
        if self.steps == 0 {
            return Err(bad(&f("steps"), 0, "at least 1"));
        }
        if self.batch_size == 0 {
            return Err(bad(&f("batch_size"), 0, "at least 1"));
        }
        if self.grad_accum == 0 {
            return Err(bad(&f("grad_accum"), 0, "at least 1"));
        }
        if let Some(lr) = self.learning_rate
            && !(lr.is_finite() && lr > 0.0)
        {
            return Err(bad(&f("learning_rate"), lr, "a finite number > 0"));
        }
        for (name, v) in [
            ("warmup_ratio", self.warmup_ratio),
            ("min_lr_ratio", self.min_lr_ratio),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(bad(&f(name), v, "in [0, 1]"));
            }
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(bad(
                &f("weight_decay"),
                self.weight_decay,
                "a finite number >= 0",
            ));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            return Err(bad(
                &f("grad_clip"),
                self.grad_clip,
                ">= 0 (0 turns clipping off)",
            ));
        }
        for (name, v) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(bad(&f(name), v, "in [0, 1)"));
            }
        }
        Ok(())
    }

    /// The learning rate at optimiser step `step` (0-based) for peak `peak`: linear warm-up
    /// over `ceil(warmup_ratio · steps)` steps, then a cosine from the peak to
    /// `min_lr_ratio · peak` at the last step.
    pub fn lr_at(&self, step: usize, peak: f64) -> f64 {
        let warmup = (self.warmup_ratio * self.steps as f64).ceil() as usize;
        if step < warmup {
            return peak * (step + 1) as f64 / warmup as f64;
        }
        let span = (self.steps - warmup).max(1) as f64;
        let progress = ((step - warmup) as f64 / span).min(1.0);
        let floor = peak * self.min_lr_ratio;
        floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

impl RunConfig {
    /// Reads a TOML (or, by extension, JSON) file; unknown fields are errors.
    ///
    /// # Errors
    /// [`TrainError::ConfigFile`] with the parser's message, then [`RunConfig::validate`]'s.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(crate::error::io_err(path))?;
        let config: RunConfig = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| TrainError::ConfigFile {
                path: path.to_owned(),
                message: e.to_string(),
            })?
        } else {
            toml::from_str(&text).map_err(|e| TrainError::ConfigFile {
                path: path.to_owned(),
                message: e.to_string(),
            })?
        };
        config.validate()?;
        Ok(config)
    }

    /// `data.preferences`, or [`TrainError::Config`] saying what the file is `for_what`.
    ///
    /// # Errors
    /// [`TrainError::Config`] when `data.preferences` is not set.
    pub fn preferences(&self, for_what: &str) -> Result<&Path> {
        self.data
            .preferences
            .as_deref()
            .ok_or_else(|| TrainError::Config {
                field: "data.preferences".into(),
                value: "(none)".into(),
                expected: for_what.into(),
            })
    }

    /// Checks every range.
    ///
    /// # Errors
    /// [`TrainError::Config`] naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        self.sft.validate("sft")?;
        if self.student.hf.is_some() {
            self.student.lora.validate().map_err(|e| {
                bad(
                    "student.lora",
                    serde_json::to_string(&self.student.lora).unwrap_or_default(),
                    &e.to_string(),
                )
            })?;
            if self.pretrain.enabled() {
                return Err(bad(
                    "pretrain.optim.steps",
                    self.pretrain.optim.steps,
                    "0 with a Hugging Face student (encoder pretraining is the small student's)",
                ));
            }
        } else if self.student.adapter.is_some() {
            return Err(bad(
                "student.adapter",
                self.student
                    .adapter
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                "set only with student.hf (the base model the adapter belongs to)",
            ));
        }
        if self.data.oversample != Oversample::None && self.data.oversample_max == 0 {
            return Err(bad("data.oversample_max", 0, "at least 1"));
        }
        if self.pretrain.enabled() {
            self.pretrain.optim.validate("pretrain.optim")?;
            if self.model.concept_weight <= 0.0 {
                return Err(bad(
                    "pretrain.optim.steps",
                    self.pretrain.optim.steps,
                    "0 unless the model has a concept head (model.concept_weight > 0)",
                ));
            }
        }
        self.apo.optim.validate("apo.optim")?;
        self.model
            .student(self.tokenizer.vocab_size.max(8))
            .validate()?;
        if self.tokenizer.file.is_none() && self.tokenizer.vocab_size < 300 {
            return Err(bad(
                "tokenizer.vocab_size",
                self.tokenizer.vocab_size,
                "at least 300",
            ));
        }
        if !(self.apo.lora_alpha.is_finite() && self.apo.lora_alpha > 0.0) {
            return Err(bad(
                "apo.lora_alpha",
                self.apo.lora_alpha,
                "a finite number > 0",
            ));
        }
        self.run.validate_parallel()?;
        if self.run.keep_checkpoints == 0 {
            return Err(bad("run.keep_checkpoints", 0, "at least 1"));
        }
        if !(self.run.temperature.is_finite() && self.run.temperature >= 0.0) {
            return Err(bad(
                "run.temperature",
                self.run.temperature,
                ">= 0 (0 = greedy)",
            ));
        }
        if let Some(s) = &self.data.split
            && s != "all"
        {
            s.parse::<cxr_max::tables::Split>()
                .map_err(|e| bad("data.split", s, &format!("{e} (or `all`)")))?;
        }
        self.apo.loss.init().map_err(|e| {
            let objective = format!("objective `{}`", self.apo.loss.objective);
            bad("apo.loss", objective, &e.to_string())
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bad loss setting is reported as a sentence naming the setting, not as the
    /// configuration struct.
    #[test]
    fn a_bad_loss_setting_is_a_sentence() {
        let mut c = RunConfig::default();
        c.apo.loss.beta = -1.0;
        let text = c.validate().unwrap_err().to_string();
        assert_eq!(
            text,
            "config: `apo.loss` = objective `plackett-luce` is out of range; beta must be finite and > 0, got -1"
        );
    }

    /// The run configuration's model section takes its architecture defaults from
    /// `StudentConfig`, and its student has one concept output per finding.
    #[test]
    fn model_defaults_are_the_student_defaults() {
        let student = ModelConfig::default().student(500);
        assert_eq!(student, crate::StudentConfig::new(500));
        assert_eq!(student.n_concepts, cxr_max::Finding::ALL.len());
        let with_head = ModelConfig {
            concept_weight: 0.5,
            ..ModelConfig::default()
        }
        .student(500);
        assert_eq!(
            with_head,
            crate::StudentConfig::new(500).with_concept_head(true)
        );
    }
}
