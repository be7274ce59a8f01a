//! The two training stages.

use std::io::{IsTerminal, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::Instant;

use apo_loss::tensor::{PreferenceBatch, sequence_logprobs, token_logprobs};

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::activation::log_sigmoid;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, State, fnv};
use crate::config::{OptimConfig, RunConfig};
use crate::data::{self, Batch, Group, Images};
use crate::error::io_err;
use crate::tokenizer::TextTokenizer;
use crate::{ApoKernels, Result, Student, StudentConfig, TrainBackend, TrainError};

/// Metrics of one optimiser step (one line of `metrics.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StepMetrics {
    /// Stage name.
    pub stage: String,
    /// 1-based step.
    pub step: usize,
    /// Loss (stage 1: mean token NLL; stage 2: the preference objective).
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Completion tokens per second (all sequences of the step).
    pub tokens_per_s: f64,
    /// Stage 2: mean reward of the chosen sequence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reward_chosen: Option<f64>,
    /// Stage 2: mean reward of the negatives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reward_rejected: Option<f64>,
    /// Stage 2: chosen reward minus the mean negative reward.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
    /// Stage 2: chosen reward minus the largest negative reward.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub margin_max: Option<f64>,
    /// Stage 2: share of groups whose chosen reward beats every negative.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top1_accuracy: Option<f64>,
    /// Stage 2: share of (chosen, negative) pairs the chosen wins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pairwise_accuracy: Option<f64>,
    /// Stage 2: mean Plackett-Luce probability of the chosen ranking first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_chosen: Option<f64>,
    /// The concept head's binary cross-entropy (unweighted; `ln 2` at a head that knows
    /// nothing), when the model has one: whether the image encoder is learning the findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concept_loss: Option<f64>,
}

/// The outcome of a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    /// Stage name.
    pub stage: String,
    /// Steps run in total.
    pub steps: usize,
    /// The checkpoint step the run resumed from.
    pub resumed_from: Option<usize>,
    /// Loss of the stage's first step (read back from its metrics file, so also when this
    /// process resumed from a checkpoint).
    pub first_loss: f64,
    /// Loss of the last step.
    pub last_loss: f64,
    /// Groups (images) trained on.
    pub groups: usize,
    /// Seconds in this process.
    pub seconds: f64,
    /// The final model folder.
    pub model_dir: PathBuf,
    /// The metrics file.
    pub metrics: PathBuf,
    /// Digest of the final weights' bits ([`Student::weights_digest`]).
    pub weights_digest: String,
}

/// Something that watches steps (a progress bar, a test).
pub trait Observer {
    /// Called after every optimiser step.
    fn step(&mut self, total: usize, metrics: &StepMetrics);
}

/// A one-line progress bar on standard error, drawn only when it is a terminal.
#[derive(Debug, Default)]
pub struct ProgressBar {
    started: Option<Instant>,
}

impl Observer for ProgressBar {
    fn step(&mut self, total: usize, m: &StepMetrics) {
        let started = *self.started.get_or_insert_with(Instant::now);
        let mut err = std::io::stderr();
        if !err.is_terminal() {
            return;
        }
        let width = 30;
        let done = width * m.step / total.max(1);
        let elapsed = started.elapsed().as_secs_f64();
        let _ = write!(
            err,
            "\r[{}] [{}{}] {}/{} loss {:.4} lr {:.2e} {:.0} tok/s {:.0}s ",
            m.stage,
            "#".repeat(done),
            "-".repeat(width - done),
            m.step,
            total,
            m.loss,
            m.lr,
            m.tokens_per_s,
            elapsed
        );
        if m.step == total {
            let _ = writeln!(err);
        }
    }
}

/// Observes nothing.
#[derive(Debug, Default)]
pub struct Quiet;

impl Observer for Quiet {
    fn step(&mut self, _: usize, _: &StepMetrics) {}
}

/// The optimiser of both stages.
pub type Adam<B> = OptimizerAdaptor<AdamW, Student<B>, B>;

/// AdamW with the stage's β₁, β₂ and decoupled weight decay (ε = 1e-8).
pub fn optimizer<B: AutodiffBackend>(c: &OptimConfig) -> Adam<B> {
    AdamWConfig::new()
        .with_beta_1(c.beta1 as f32)
        .with_beta_2(c.beta2 as f32)
        .with_epsilon(1e-8)
        .with_weight_decay(c.weight_decay as f32)
        .init::<B, Student<B>>()
}

struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: f64,
    _b: PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let s: f64 = (g.clone() * g).sum().into_scalar().elem();
            self.total += s;
        }
    }
}

struct Scale<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    factor: f64,
    _b: PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// Global gradient norm, and clipping of all gradients together to `max_norm` (0 = off).
pub fn clip<B: AutodiffBackend>(
    model: &Student<B>,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let mut v = SquaredNorm::<B> {
        grads,
        total: 0.0,
        _b: PhantomData,
    };
    model.visit(&mut v);
    let norm = v.total.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let mut s = Scale::<B> {
            grads,
            factor: max_norm / (norm + 1e-6),
            _b: PhantomData,
        };
        model.visit(&mut s);
    }
    norm
}

/// The per-micro-batch backend seed: a function of the run seed and the data position, so a
/// resumed run draws the same dropout masks as an uninterrupted one.
fn micro_seed(seed: u64, m: usize) -> u64 {
    let mut x = seed ^ (m as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x.wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

/// The run's tokenizer: `OUT/tokenizer.json` if present, else the configured file, else one
/// trained on the training trajectories; saved to `OUT/tokenizer.json`.
///
/// # Errors
/// Tokenizer and file errors.
pub fn tokenizer(config: &RunConfig, items: &[cxr_max::dataset::Item]) -> Result<TextTokenizer> {
    let path = config.run.out.join("tokenizer.json");
    if path.exists() {
        return TextTokenizer::from_file(&path);
    }
    let tok = match &config.tokenizer.file {
        Some(file) => TextTokenizer::from_file(file)?,
        None => {
            let texts = items.iter().flat_map(|i| {
                i.sample
                    .trajectories
                    .iter()
                    .map(|t| t.text.as_str())
                    .chain(i.sample.prompt.as_deref())
            });
            TextTokenizer::train(
                texts.chain([cxr_max::sim::PROMPT]),
                config.tokenizer.vocab_size,
            )?
        }
    };
    std::fs::create_dir_all(&config.run.out).map_err(io_err(&config.run.out))?;
    tok.save(&path)?;
    Ok(tok)
}

struct Metrics {
    path: PathBuf,
}

impl Metrics {
    /// Opens the stage's metrics file, dropping lines beyond `keep_steps` (a resumed run
    /// rewrites the steps after its checkpoint).
    fn open(path: PathBuf, keep_steps: usize) -> Result<Self> {
        if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| {
                    serde_json::from_str::<StepMetrics>(l).is_ok_and(|m| m.step <= keep_steps)
                })
                .collect();
            let mut body = kept.join("\n");
            if !body.is_empty() {
                body.push('\n');
            }
            std::fs::write(&path, body).map_err(io_err(&path))?;
        } else {
            std::fs::write(&path, "").map_err(io_err(&path))?;
        }
        Ok(Metrics { path })
    }

    fn write(&self, m: &StepMetrics) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io_err(&self.path))?;
        let line = serde_json::to_string(m).map_err(|e| TrainError::Empty(e.to_string()))?;
        writeln!(f, "{line}").map_err(io_err(&self.path))
    }
}

/// What a stage's step function returns for one micro-batch.
struct MicroOut<B: AutodiffBackend> {
    loss: Tensor<B, 1>,
    tokens: usize,
    extra: Option<apo_loss::Metrics>,
    /// The concept head's binary cross-entropy (unweighted), when the batch had targets.
    concept: Option<f64>,
}

/// The shared loop: resume, micro-batches, accumulation, clipping, AdamW, schedule,
/// metrics, checkpoints, final model.
#[allow(clippy::too_many_arguments)]
fn run_stage<B, F>(
    stage: &str,
    dir: &Path,
    opt: &OptimConfig,
    peak_lr: f64,
    config: &RunConfig,
    model_config: &StudentConfig,
    fingerprint: &str,
    mut model: Student<B>,
    units: usize,
    resume: bool,
    device: &B::Device,
    observer: &mut dyn Observer,
    mut micro: F,
) -> Result<(Student<B>, StageReport)>
where
    B: AutodiffBackend,
    F: FnMut(&Student<B>, &[usize]) -> Result<MicroOut<B>>,
{
    let start_time = Instant::now();
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut optim = optimizer::<B>(opt);
    let mut start = 0;
    let mut resumed_from = None;
    let existing = checkpoint::list(dir)?;
    if resume {
        if let Some((_, path)) = existing.last() {
            let state = checkpoint::read_state(path, stage, fingerprint, model_config)?;
            let (m, o) = checkpoint::load(path, model, optim, device)?;
            model = m;
            optim = o;
            start = state.step;
            resumed_from = Some(state.step);
            tracing::info!(stage, step = start, checkpoint = %path.display(), "resumed");
        }
    } else {
        for (_, path) in existing {
            std::fs::remove_dir_all(&path).map_err(io_err(&path))?;
        }
    }
    let metrics = Metrics::open(dir.join("metrics.jsonl"), start)?;
    for step in start..opt.steps {
        let t0 = Instant::now();
        let lr = opt.lr_at(step, peak_lr);
        let mut accumulator = GradientsAccumulator::<Student<B>>::new();
        let (mut loss_sum, mut tokens) = (0.0, 0usize);
        let mut extras: Vec<apo_loss::Metrics> = Vec::new();
        let mut concept: Vec<f64> = Vec::new();
        for a in 0..opt.grad_accum {
            let m = step * opt.grad_accum + a;
            let which = data::micro_batch(config.run.seed, units, opt.batch_size, m);
            B::seed(device, micro_seed(config.run.seed, m));
            let out = micro(&model, &which)?;
            let value: f64 = out.loss.clone().into_scalar().elem();
            if !value.is_finite() {
                return Err(TrainError::Empty(format!(
                    "{stage} step {}: the loss is {value}; lower the learning rate",
                    step + 1
                )));
            }
            loss_sum += value;
            tokens += out.tokens;
            extras.extend(out.extra);
            concept.extend(out.concept);
            let loss = out.loss.div_scalar(opt.grad_accum as f64);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            accumulator.accumulate(&model, grads);
        }
        let mut grads = accumulator.grads();
        let grad_norm = clip(&model, &mut grads, opt.grad_clip);
        model = optim.step(lr, model, grads);
        let loss = loss_sum / opt.grad_accum as f64;
        let mean = |f: &dyn Fn(&apo_loss::Metrics) -> f64| {
            (!extras.is_empty()).then(|| extras.iter().map(f).sum::<f64>() / extras.len() as f64)
        };
        let m = StepMetrics {
            stage: stage.to_owned(),
            step: step + 1,
            loss,
            lr,
            grad_norm,
            tokens_per_s: tokens as f64 / t0.elapsed().as_secs_f64().max(1e-9),
            reward_chosen: mean(&|x| x.reward_chosen),
            reward_rejected: mean(&|x| x.reward_rejected_mean),
            margin: mean(&|x| x.margin_mean),
            margin_max: mean(&|x| x.margin_max),
            top1_accuracy: mean(&|x| x.top1_accuracy),
            pairwise_accuracy: mean(&|x| x.pairwise_accuracy),
            p_chosen: mean(&|x| x.p_chosen),
            concept_loss: (!concept.is_empty())
                .then(|| concept.iter().sum::<f64>() / concept.len() as f64),
        };
        metrics.write(&m)?;
        observer.step(opt.steps, &m);
        tracing::debug!(stage, step = step + 1, loss, lr, grad_norm, "step");
        let every = config.run.checkpoint_every;
        if (every > 0 && (step + 1) % every == 0) || step + 1 == opt.steps {
            let state = State {
                stage: stage.to_owned(),
                step: step + 1,
                micro_batches: (step + 1) * opt.grad_accum,
                seed: config.run.seed,
                lr,
                fingerprint: fingerprint.to_owned(),
                model: model_config.clone(),
            };
            checkpoint::save(dir, &model, &optim, &state, config.run.keep_checkpoints)?;
        }
    }
    // The whole stage's first and last losses, also when it resumed (the metrics file keeps
    // the steps before the checkpoint).
    let logged: Vec<StepMetrics> = std::fs::read_to_string(&metrics.path)
        .map_err(io_err(&metrics.path))?
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let first_loss = logged.first().map_or(f64::NAN, |m| m.loss);
    let last_loss = logged.last().map_or(f64::NAN, |m| m.loss);
    Ok((
        model,
        StageReport {
            stage: stage.to_owned(),
            steps: opt.steps,
            resumed_from,
            first_loss,
            last_loss,
            groups: units,
            seconds: start_time.elapsed().as_secs_f64(),
            model_dir: dir.to_owned(),
            metrics: dir.join("metrics.jsonl"),
            weights_digest: String::new(),
        },
    ))
}

fn image_paths(items: &[cxr_max::dataset::Item]) -> Vec<PathBuf> {
    items.iter().map(|i| i.image.clone()).collect()
}

/// Stage 1: supervised bootstrapping on the union of all teacher trajectories. Writes
/// `OUT/tokenizer.json` and `OUT/sft/{model.bin, model.json, metrics.jsonl, checkpoints/}`.
///
/// # Errors
/// Configuration, data, tokenizer, checkpoint and file errors.
pub fn sft<B: TrainBackend>(
    config: &RunConfig,
    device: &B::Device,
    resume: bool,
    observer: &mut dyn Observer,
) -> Result<StageReport> {
    config.validate()?;
    let _span = tracing::info_span!("sft").entered();
    let items = data::open_items(&config.data.dir, config.data.split.as_deref())?;
    let tok = tokenizer(config, &items)?;
    let model_config = config.model.student(tok.vocab_size());
    model_config.validate()?;
    let groups = data::sft_groups(
        &items,
        &tok,
        model_config.max_text_len,
        config.data.truncate,
        config.data.trajectories_per_group,
        config.run.seed,
    )?;
    if groups.is_empty() {
        return Err(TrainError::Empty("no trajectory to train on".into()));
    }
    let images = Images::load(&image_paths(&items), model_config.image_size)?;
    let concept_weight = config.model.concept_weight;
    let concepts = if concept_weight > 0.0 {
        concept_table(config, &items)?
    } else {
        Vec::new()
    };
    tracing::info!(
        images = items.len(),
        groups = groups.len(),
        vocab = tok.vocab_size(),
        "stage 1 data"
    );
    let fingerprint = fnv(&[
        b"sft",
        serde_json::to_string(&config.sft)
            .unwrap_or_default()
            .as_bytes(),
        serde_json::to_string(&config.data)
            .unwrap_or_default()
            .as_bytes(),
        &config.run.seed.to_le_bytes(),
        &(groups.len() as u64).to_le_bytes(),
    ]);
    B::seed(device, config.run.seed);
    let model = model_config.init::<B>(device)?;
    let pad = tok.pad();
    let dir = config.run.out.join("sft");
    let (model, report) = run_stage(
        "sft",
        &dir,
        &config.sft,
        config.sft.peak_lr(crate::config::SFT_LR),
        config,
        &model_config,
        &fingerprint,
        model,
        groups.len(),
        resume,
        device,
        observer,
        |model, which| {
            let batch: Batch<B> = data::make_batch(&images, &groups, which, pad, device);
            let prefix = model.encode(batch.images);
            let concept_logits = model.concepts(&prefix);
            let logits = model.decode(prefix, batch.inputs);
            let lp = token_logprobs(logits, batch.targets, batch.mask)?;
            let tokens: usize = batch.tokens.iter().flatten().sum();
            let mut loss = lp.sum().neg().div_scalar(tokens.max(1) as f64);
            let mut concept = None;
            if let Some(x) = concept_logits {
                let rows: Vec<_> = which.iter().map(|&g| concepts[groups[g].image]).collect();
                if let Some(bce) = concept_bce(x, &rows, device) {
                    concept = Some(bce.clone().into_scalar().elem());
                    loss = loss + bce.mul_scalar(concept_weight);
                }
            }
            Ok(MicroOut {
                loss,
                tokens,
                extra: None,
                concept,
            })
        },
    )?;
    let model = model.valid();
    let report = StageReport {
        weights_digest: model.weights_digest(),
        ..report
    };
    checkpoint::save_model(&dir, model, &model_config)?;
    Ok(report)
}

/// Reference log-probs `[group][sequence]`, computed once with the frozen reference and
/// cached in `dir/reference_logprobs.json`, keyed by the preference data, the tokenizer and
/// the reference weights: `dir/KEY.json`, shared by every stage-2 run of the run folder that
/// uses the same preferences, tokenizer, reference and data settings.
#[allow(clippy::too_many_arguments)]
fn reference_logprobs<B: ApoKernels>(
    dir: &Path,
    key: &str,
    reference: &Student<B>,
    images: &Images,
    groups: &[Group],
    pad: u32,
    batch: usize,
    device: &B::Device,
) -> Result<Vec<Vec<f32>>> {
    #[derive(Serialize, Deserialize)]
    struct Cache {
        key: String,
        logprobs: Vec<Vec<f32>>,
    }
    let path = dir.join(format!("{key}.json"));
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(cache) = serde_json::from_str::<Cache>(&text)
        && cache.key == key
        && cache.logprobs.len() == groups.len()
    {
        tracing::info!(file = %path.display(), "reference log-probs from cache");
        return Ok(cache.logprobs);
    }
    let _span = tracing::info_span!("reference log-probs", groups = groups.len()).entered();
    let mut out = Vec::with_capacity(groups.len());
    let all: Vec<usize> = (0..groups.len()).collect();
    for chunk in all.chunks(batch.max(1)) {
        let b: Batch<B> = data::make_batch(images, groups, chunk, pad, device);
        let prefix = reference.encode(b.images);
        let logits = reference.decode(prefix, b.inputs);
        let lp: Vec<f32> = sequence_logprobs(logits, b.targets, b.mask)?
            .into_data()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| TrainError::Empty(format!("{e:?}")))?;
        for (gi, &g) in chunk.iter().enumerate() {
            let n = groups[g].sequences.len();
            out.push(lp[gi * b.per_group..gi * b.per_group + n].to_vec());
        }
    }
    let text = serde_json::to_string(&Cache {
        key: key.to_owned(),
        logprobs: out.clone(),
    })
    .map_err(|e| TrainError::Empty(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, text).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    Ok(out)
}

/// Stage 2: constraint-aware optimisation. The policy starts from the stage-1 model (with
/// LoRA adapters when `apo.lora_rank > 0`), the frozen stage-1 model is the reference, and
/// every step applies the configured `apo-loss` objective to the consensus and all negatives
/// of each group. Writes `OUT/NAME/{model.bin, model.json, metrics.jsonl, checkpoints/}`
/// (adapters merged into the saved model) and caches the reference log-probs in
/// `OUT/reference/KEY.json`.
///
/// # Errors
/// Configuration, data, checkpoint, loss and file errors.
pub fn apo<B: TrainBackend>(
    config: &RunConfig,
    name: &str,
    device: &B::Device,
    resume: bool,
    observer: &mut dyn Observer,
) -> Result<StageReport> {
    config.validate()?;
    let _span = tracing::info_span!("apo", name).entered();
    let prefs = config
        .preferences("the preference file of `apo consensus build --export ours`")?
        .to_owned();
    let init_dir = config
        .apo
        .init
        .clone()
        .unwrap_or_else(|| config.run.out.join("sft"));
    let tok_path = config.run.out.join("tokenizer.json");
    let tok = if tok_path.exists() {
        TextTokenizer::from_file(&tok_path)?
    } else {
        let tok = match &config.tokenizer.file {
            Some(f) => TextTokenizer::from_file(f)?,
            None => TextTokenizer::from_file(&init_dir.join("../tokenizer.json"))?,
        };
        std::fs::create_dir_all(&config.run.out).map_err(io_err(&config.run.out))?;
        tok.save(&tok_path)?;
        tok
    };
    let (reference, model_config) = checkpoint::load_model::<B::InnerBackend>(&init_dir, device)?;
    if model_config.vocab_size != tok.vocab_size() {
        return Err(TrainError::CheckpointMismatch {
            path: init_dir.clone(),
            what: "vocabulary size",
            found: model_config.vocab_size.to_string(),
            expected: tok.vocab_size().to_string(),
        });
    }
    let items = data::open_items(&config.data.dir, config.data.split.as_deref())?;
    let (groups, unmatched) = data::preference_groups(
        &prefs,
        &items,
        &tok,
        model_config.max_text_len,
        config.data.truncate,
    )?;
    tracing::info!(groups = groups.len(), unmatched, "stage 2 data");
    let images = Images::load(&image_paths(&items), model_config.image_size)?;
    let dir = config.run.out.join(name);
    let read = |p: &Path| std::fs::read(p).map_err(io_err(p));
    let key = fnv(&[
        &read(&prefs)?,
        &read(&tok_path)?,
        &read(&init_dir.join("model.bin"))?,
        serde_json::to_string(&config.data)
            .unwrap_or_default()
            .as_bytes(),
    ]);
    let ref_lp = reference_logprobs(
        &config.run.out.join("reference"),
        &key,
        &reference,
        &images,
        &groups,
        tok.pad(),
        config.apo.optim.batch_size,
        device,
    )?;
    let fingerprint = fnv(&[
        name.as_bytes(),
        key.as_bytes(),
        serde_json::to_string(&config.apo)
            .unwrap_or_default()
            .as_bytes(),
        &config.run.seed.to_le_bytes(),
    ]);
    let (policy, _) = checkpoint::load_model::<B>(&init_dir, device)?;
    let policy = if config.apo.lora_rank > 0 {
        B::seed(device, config.run.seed ^ 0x10ba);
        policy.with_lora(config.apo.lora_rank, config.apo.lora_alpha, device)
    } else {
        policy
    };
    let loss_fn = config.apo.loss.init()?;
    let concept_weight = config.model.concept_weight;
    let concepts = if concept_weight > 0.0 && model_config.concept_head {
        concept_table(config, &items)?
    } else {
        Vec::new()
    };
    let pad = tok.pad();
    let (model, report) = run_stage(
        name,
        &dir,
        &config.apo.optim,
        config.apo.optim.peak_lr(crate::config::APO_LR),
        config,
        &model_config,
        &fingerprint,
        policy,
        groups.len(),
        resume,
        device,
        observer,
        |model, which| {
            let batch: Batch<B> = data::make_batch(&images, &groups, which, pad, device);
            let reference: Vec<&[f32]> = which.iter().map(|&g| ref_lp[g].as_slice()).collect();
            let prefix = model.encode(batch.images.clone());
            let concept_loss = match model.concepts(&prefix) {
                Some(x) if !concepts.is_empty() => {
                    let rows: Vec<_> = which.iter().map(|&g| concepts[groups[g].image]).collect();
                    concept_bce(x, &rows, device)
                }
                _ => None,
            };
            let (mut loss, metrics) =
                preference_step_on(model, prefix, &batch, &reference, &loss_fn, device)?;
            let mut concept = None;
            if let Some(bce) = concept_loss {
                concept = Some(bce.clone().into_scalar().elem());
                loss = loss + bce.mul_scalar(concept_weight);
            }
            Ok(MicroOut {
                loss,
                tokens: batch.tokens.iter().flatten().sum(),
                extra: average(&metrics),
                concept,
            })
        },
    )?;
    let model = if model.has_lora() {
        model.merged()
    } else {
        model
    };
    let model = model.valid();
    let report = StageReport {
        weights_digest: model.weights_digest(),
        ..report
    };
    checkpoint::save_model(&dir, model, &model_config)?;
    Ok(report)
}

/// One stage-2 forward pass: the policy's summed completion log-probs of every sequence of
/// every group (each image encoded once), against the cached reference log-probs
/// (`reference[group][sequence]`), through the objective. Returns the mean loss over the
/// groups and each group's metrics.
///
/// # Errors
/// [`TrainError::Loss`] (non-finite log-probs, bad weights).
pub fn preference_step<B: ApoKernels>(
    model: &Student<B>,
    batch: &Batch<B>,
    reference: &[&[f32]],
    loss_fn: &apo_loss::PreferenceLoss,
    device: &B::Device,
) -> Result<(Tensor<B, 1>, Vec<apo_loss::Metrics>)> {
    let prefix = model.encode(batch.images.clone());
    preference_step_on(model, prefix, batch, reference, loss_fn, device)
}

/// [`preference_step`] on the batch's image prefixes `[G, P, d]`, already encoded.
///
/// # Errors
/// As [`preference_step`].
pub fn preference_step_on<B: ApoKernels>(
    model: &Student<B>,
    prefix: Tensor<B, 3>,
    batch: &Batch<B>,
    reference: &[&[f32]],
    loss_fn: &apo_loss::PreferenceLoss,
    device: &B::Device,
) -> Result<(Tensor<B, 1>, Vec<apo_loss::Metrics>)> {
    let (g, s) = (batch.groups, batch.per_group);
    let logits = model.decode(prefix, batch.inputs.clone());
    let policy =
        sequence_logprobs(logits, batch.targets.clone(), batch.mask.clone())?.reshape([g, s]);
    let mut ref_flat = vec![0f32; g * s];
    let mut tokens = vec![1f32; g * s];
    for gi in 0..g {
        for (j, &lp) in reference[gi].iter().enumerate().take(s) {
            ref_flat[gi * s + j] = lp;
        }
        for (j, &n) in batch.tokens[gi].iter().enumerate() {
            tokens[gi * s + j] = n.max(1) as f32;
        }
    }
    let reference = Tensor::<B, 2>::from_data(TensorData::new(ref_flat, [g, s]), device);
    let tokens = Tensor::<B, 2>::from_data(TensorData::new(tokens, [g, s]), device);
    let mut pb = PreferenceBatch::new(policy, reference)
        .with_tokens(tokens)
        .with_mask(batch.present.clone());
    if let Some(w) = batch.weights.clone() {
        pb = pb.with_weights(w);
    }
    let out = loss_fn.forward_with_metrics(&pb)?;
    Ok((out.loss, out.metrics))
}

/// The concept targets of a run, one per item (`None`: no concept loss for that image).
///
/// # Errors
/// [`TrainError::Config`] when the targets are the consensus and `data.preferences` is not
/// set; the preference file's errors.
fn concept_table(
    config: &RunConfig,
    items: &[cxr_max::dataset::Item],
) -> Result<Vec<Option<[f32; 14]>>> {
    match config.model.concept_targets {
        crate::config::ConceptTargets::Teachers => {
            Ok(data::concept_targets(items).into_iter().map(Some).collect())
        }
        crate::config::ConceptTargets::Consensus => {
            let path = config.preferences(
                "the preference file whose consensus trajectories the concept head learns \
                 (or model.concept_targets = \"teachers\")",
            )?;
            data::consensus_targets(path, items)
        }
    }
}

/// The mean binary cross-entropy of concept logits `[G, 14]` against `targets` (one row per
/// group; `None` rows are left out); `None` when no row has targets.
fn concept_bce<B: Backend>(
    logits: Tensor<B, 2>,
    targets: &[Option<[f32; 14]>],
    device: &B::Device,
) -> Option<Tensor<B, 1>> {
    let k = cxr_max::Finding::ALL.len();
    let present = targets.iter().flatten().count();
    if present == 0 {
        return None;
    }
    let mut t = Vec::with_capacity(targets.len() * k);
    let mut m = Vec::with_capacity(targets.len() * k);
    for row in targets {
        t.extend(row.unwrap_or([0.0; 14]));
        m.extend([if row.is_some() { 1f32 } else { 0.0 }; 14]);
    }
    let t = Tensor::<B, 2>::from_data(TensorData::new(t, [targets.len(), k]), device);
    let m = Tensor::<B, 2>::from_data(TensorData::new(m, [targets.len(), k]), device);
    let ll = t.clone() * log_sigmoid(logits.clone())
        + t.neg().add_scalar(1.0) * log_sigmoid(logits.neg());
    Some((ll * m).sum().neg().div_scalar((present * k) as f64))
}

fn average(m: &[apo_loss::Metrics]) -> Option<apo_loss::Metrics> {
    let first = m.first()?.clone();
    let n = m.len() as f64;
    let avg = |f: &dyn Fn(&apo_loss::Metrics) -> f64| m.iter().map(f).sum::<f64>() / n;
    Some(apo_loss::Metrics {
        preference_loss: avg(&|x| x.preference_loss),
        reward_chosen: avg(&|x| x.reward_chosen),
        reward_rejected_mean: avg(&|x| x.reward_rejected_mean),
        margin_mean: avg(&|x| x.margin_mean),
        margin_max: avg(&|x| x.margin_max),
        top1_accuracy: avg(&|x| x.top1_accuracy),
        pairwise_accuracy: avg(&|x| x.pairwise_accuracy),
        p_chosen: avg(&|x| x.p_chosen),
        ..first
    })
}
