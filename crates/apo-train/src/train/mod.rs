//! The two training stages.
//!
//! - [`sft`] and [`apo`] read the data set (and stage 2's preference file) named by the run
//!   configuration; [`sft_on`] and [`apo_on`] take data already opened.
//! - [`preference_step`]: one stage-2 forward pass, for custom loops.

use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::tensor::activation::log_sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor, TensorData};
use cxr_max::dataset::Item;

use apo_loss::tensor::{PreferenceBatch, token_logprobs};

use crate::checkpoint::{self, fnv};
use crate::config::{ConceptTargets, Oversample, RunConfig};
use crate::data::{self, Batch, Images, Preferences};
use crate::error::io_err;
use crate::tokenizer::TextTokenizer;
use crate::{ApoKernels, Result, Student, StudentConfig, TrainBackend, TrainError};

mod metrics;
mod observer;
mod optim;
mod progress;
mod reference;
mod resume;
mod runner;

pub(crate) use metrics::{MetricsFile, StepTotals};
pub use metrics::{StageReport, StepMetrics};
pub use observer::{Observer, Quiet};
pub(crate) use optim::micro_seed;
pub use optim::{Adam, adamw, clip, optimizer};
pub use progress::{LINE_EVERY, TrainProgress, format_duration, plain_line};
pub use resume::{ResumeKey, json, stop_flag, stop_requested, without_steps};
pub(crate) use resume::{check_steps, pick};

use reference::reference_logprobs;
pub(crate) use reference::visited;
use runner::{MicroOut, Runner, share};
pub(crate) use runner::{StepEnd, check_shards, local_workers};

/// The run's tokenizer: `OUT/tokenizer.json` if present, else the configured file, else one
/// trained on the training trajectories; saved to `OUT/tokenizer.json`.
///
/// # Errors
/// Tokenizer and file errors.
pub fn tokenizer(config: &RunConfig, items: &[cxr_max::dataset::Item]) -> Result<TextTokenizer> {
    let path = config.run.out.join("tokenizer.json");
    if path.exists() {
        let tok = TextTokenizer::from_file(&path)?;
        check_run_tokenizer(config, &path, &tok)?;
        return Ok(tok);
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
    if config.tokenizer.file.is_none() {
        let vocab = trained_for(&path);
        std::fs::write(&vocab, format!("{}\n", config.tokenizer.vocab_size))
            .map_err(io_err(&vocab))?;
    }
    Ok(tok)
}

/// The file beside a trained `tokenizer.json` that holds the `tokenizer.vocab_size` it was
/// trained for (a trained vocabulary can be smaller than asked for).
fn trained_for(tokenizer: &Path) -> PathBuf {
    tokenizer.with_file_name("tokenizer.vocab_size")
}

/// A run folder's existing tokenizer must be the one the configuration would make: trained
/// for `tokenizer.vocab_size` (as recorded beside it; without the record, at most that
/// many entries), or of the configured file's size.
fn check_run_tokenizer(config: &RunConfig, path: &Path, tok: &TextTokenizer) -> Result<()> {
    let stale = |found: usize, expected: usize| TrainError::StaleTokenizer {
        path: path.to_owned(),
        found,
        expected,
    };
    match &config.tokenizer.file {
        Some(file) => {
            let wanted = TextTokenizer::from_file(file)?.vocab_size();
            if wanted != tok.vocab_size() {
                return Err(stale(tok.vocab_size(), wanted));
            }
        }
        None => {
            let expected = config.tokenizer.vocab_size;
            let recorded = std::fs::read_to_string(trained_for(path))
                .ok()
                .and_then(|t| t.trim().parse::<usize>().ok());
            match recorded {
                Some(found) if found != expected => return Err(stale(found, expected)),
                None if tok.vocab_size() > expected => {
                    return Err(stale(tok.vocab_size(), expected));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn image_paths(items: &[cxr_max::dataset::Item]) -> Vec<PathBuf> {
    items.iter().map(|i| i.image.clone()).collect()
}

/// Stage 1 on the data set of `config.data` (its `split`), and, when the concept head learns
/// the consensus, the preference file of `config.data.preferences`: [`sft_on`] on them.
///
/// # Errors
/// As [`sft_on`]; data set and preference-file errors.
pub fn sft<B: TrainBackend>(
    config: &RunConfig,
    device: &B::Device,
    resume: bool,
    observer: &mut dyn Observer,
) -> Result<StageReport> {
    config.validate()?;
    let items = data::open_config_items(config)?;
    let consensus_concepts = config.model.concept_weight > 0.0
        && config.model.concept_targets == ConceptTargets::Consensus;
    let prefs = match (
        consensus_concepts || config.data.oversample != Oversample::None,
        &config.data.preferences,
    ) {
        (true, Some(path)) => Some(Preferences::read(path)?),
        _ => None,
    };
    sft_on::<B>(config, &items, prefs.as_ref(), device, resume, observer)
}

/// Stage 1: supervised bootstrapping on the union of all teacher trajectories of `items`
/// (already opened; `prefs` the preference sets whose consensus the concept head learns,
/// needed only then). Writes `OUT/tokenizer.json` and
/// `OUT/sft/{model.bin, model.json, metrics.jsonl, checkpoints/}`.
///
/// # Errors
/// Configuration, data, tokenizer, checkpoint and file errors;
/// [`TrainError::Config`] when the concept head learns the consensus and `prefs` is `None`.
pub fn sft_on<B: TrainBackend>(
    config: &RunConfig,
    items: &[Item],
    prefs: Option<&Preferences>,
    device: &B::Device,
    resume: bool,
    observer: &mut dyn Observer,
) -> Result<StageReport> {
    config.validate()?;
    if items.is_empty() {
        return Err(TrainError::Empty("no image to train on".into()));
    }
    let _span = tracing::info_span!("sft").entered();
    let tok = tokenizer(config, items)?;
    let model_config = config.model.student(tok.vocab_size());
    model_config.validate()?;
    let groups = data::sft_groups(
        items,
        &tok,
        model_config.max_text_len,
        config.data.truncate,
        config.data.trajectories_per_group,
        config.run.seed,
    )?;
    if groups.is_empty() {
        return Err(TrainError::Empty("no trajectory to train on".into()));
    }
    let images = Images::load(&image_paths(items), model_config.image_size)?;
    let concept_weight = config.model.concept_weight;
    let concepts = if concept_weight > 0.0 {
        concept_table(config, items, prefs)?
    } else {
        Vec::new()
    };
    tracing::info!(
        images = items.len(),
        groups = groups.len(),
        vocab = tok.vocab_size(),
        "stage 1 data"
    );
    let fingerprint = ResumeKey::new(vec![
        ("stage", serde_json::json!("sft")),
        ("sft", without_steps(json(&config.sft))),
        ("data", json(&config.data)),
        ("seed", serde_json::json!(config.run.seed)),
        ("groups", serde_json::json!(groups.len())),
    ]);
    let group_images: Vec<usize> = groups.iter().map(|g| g.image).collect();
    let order = sampling_order(config, items, prefs, &group_images)?;
    let seen: Vec<usize> = order.iter().map(|&u| group_images[u]).collect();
    let balance = concept_balance(config, &concepts, Some(&seen));
    B::seed(device, config.run.seed);
    let model = model_config.init::<B>(device)?;
    let model = if config.pretrain.enabled() {
        pretrain(
            config,
            &model_config,
            model,
            &images,
            &concepts,
            concept_balance(config, &concepts, None).as_ref(),
            device,
            resume,
            observer,
        )?
    } else {
        model
    };
    let pad = tok.pad();
    let dir = config.run.out.join("sft");
    let runner = Runner {
        stage: "sft",
        dir: &dir,
        opt: &config.sft,
        peak_lr: config.sft.peak_lr(crate::config::SFT_LR),
        run: &config.run,
        model_config: &model_config,
        fingerprint: &fingerprint,
        units: order.len(),
        resume,
    };
    let has_targets = |g: usize| concepts.get(groups[g].image).is_some_and(Option::is_some);
    let (model, report) = runner.run(model, device, observer, |model, which, shard, device| {
        let which: Vec<usize> = which.iter().map(|&u| order[u]).collect();
        // The whole micro-batch's normalisers: this worker's share of the mean.
        let all_tokens: usize = which
            .iter()
            .flat_map(|&g| groups[g].sequences.iter().map(|q| q.completion_len()))
            .sum();
        let all_targets = which.iter().filter(|&&g| has_targets(g)).count();
        let which = &which[shard];
        let batch: Batch<B> = data::make_batch(&images, &groups, which, pad, device);
        let prefix = model.encode(batch.images);
        let concept_logits = model.concepts(&prefix);
        let logits = model.decode(prefix, batch.inputs);
        let lp = token_logprobs(logits, batch.targets, batch.mask)?;
        let tokens: usize = batch.tokens.iter().flatten().sum();
        let mut loss = lp.sum().neg().div_scalar(all_tokens.max(1) as f64);
        let mut concept = None;
        if let Some(x) = concept_logits {
            let rows: Vec<_> = which.iter().map(|&g| concepts[groups[g].image]).collect();
            if let Some(mut bce) = concept_bce(x, &rows, balance.as_ref(), device) {
                let mine = which.iter().filter(|&&g| has_targets(g)).count();
                if let Some(f) = share(mine, all_targets) {
                    bce = bce.mul_scalar(f);
                }
                concept = Some(bce.clone().into_scalar().elem());
                loss = loss + bce.mul_scalar(concept_weight);
            }
        }
        Ok(MicroOut {
            loss,
            tokens,
            extra: Vec::new(),
            concept,
        })
    })?;
    save_final(model.valid(), report, &dir, &model_config)
}

/// Stage 2 on the data set of `config.data` (its `split`) and the preference file of
/// `config.data.preferences`, each read once: [`apo_on`] on them.
///
/// # Errors
/// As [`apo_on`]; data set and preference-file errors.
pub fn apo<B: TrainBackend>(
    config: &RunConfig,
    name: &str,
    device: &B::Device,
    resume: bool,
    observer: &mut dyn Observer,
) -> Result<StageReport> {
    config.validate()?;
    let (items, prefs) = data::open_stage2(config)?;
    apo_on::<B>(config, name, &items, &prefs, device, resume, observer)
}

/// Stage 2: constraint-aware optimisation on `items` and the preference sets `prefs`, already
/// opened. The policy starts from the stage-1 model (with
/// LoRA adapters when `apo.lora_rank > 0`), the frozen stage-1 model is the reference, and
/// every step applies the configured `apo-loss` objective to the consensus and all negatives
/// of each group. Writes `OUT/NAME/{model.bin, model.json, metrics.jsonl, checkpoints/}`
/// (adapters merged into the saved model) and caches the reference log-probs in
/// `OUT/reference/KEY.json`.
///
/// # Errors
/// Configuration, data, checkpoint, loss and file errors.
pub fn apo_on<B: TrainBackend>(
    config: &RunConfig,
    name: &str,
    items: &[Item],
    prefs: &Preferences,
    device: &B::Device,
    resume: bool,
    observer: &mut dyn Observer,
) -> Result<StageReport> {
    config.validate()?;
    let _span = tracing::info_span!("apo", name).entered();
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
    let (mut groups, unmatched) = data::preference_groups(
        prefs,
        items,
        &tok,
        model_config.max_text_len,
        config.data.truncate,
    )?;
    tracing::info!(groups = groups.len(), unmatched, "stage 2 data");
    let images = Images::load(&image_paths(items), model_config.image_size)?;
    let dir = config.run.out.join(name);
    let read = |p: &Path| std::fs::read(p).map_err(io_err(p));
    let key = fnv(&[
        prefs.content(),
        &read(&tok_path)?,
        &read(&init_dir.join("model.bin"))?,
        serde_json::to_string(&config.data)
            .unwrap_or_default()
            .as_bytes(),
    ]);
    // Only the groups the run's micro-batches visit (200 steps of 4 groups visit about 800 of
    // 8,000): the reference pass is a full forward per sequence.
    let opt = &config.apo.optim;
    let group_images: Vec<usize> = groups.iter().map(|g| g.image).collect();
    let order = sampling_order(config, items, Some(prefs), &group_images)?;
    let mut needed: Vec<usize> = reference::visited(
        config.run.seed,
        order.len(),
        opt.batch_size,
        opt.steps * opt.grad_accum,
    )
    .into_iter()
    .map(|u| order[u])
    .collect();
    needed.dedup();
    let mut ref_lp = reference_logprobs::<B>(
        &config.run.out.join("reference"),
        &key,
        reference,
        &images,
        &groups,
        &needed,
        tok.pad(),
        config.apo.optim.batch_size,
        &config.run,
        device,
    )?;
    // The ranking's list: least drifting negative first (the reference pass and its cache
    // keep teacher order; the cached log-probs are reordered with the groups).
    if config.apo.loss.objective == apo_loss::Objective::PlackettLuceRanking {
        data::order_by_drift(&mut groups, &mut ref_lp)?;
    }
    let mut apo_settings = json(&config.apo);
    if let serde_json::Value::Object(m) = &mut apo_settings
        && let Some(o) = m.remove("optim")
    {
        m.insert("optim".into(), without_steps(o));
    }
    let fingerprint = ResumeKey::new(vec![
        ("stage", serde_json::json!(name)),
        ("inputs", serde_json::json!(key)),
        ("apo", apo_settings),
        ("seed", serde_json::json!(config.run.seed)),
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
        concept_table(config, items, Some(prefs))?
    } else {
        Vec::new()
    };
    let seen: Vec<usize> = order.iter().map(|&u| group_images[u]).collect();
    let balance = concept_balance(config, &concepts, Some(&seen));
    let pad = tok.pad();
    let runner = Runner {
        stage: name,
        dir: &dir,
        opt: &config.apo.optim,
        peak_lr: config.apo.optim.peak_lr(crate::config::APO_LR),
        run: &config.run,
        model_config: &model_config,
        fingerprint: &fingerprint,
        units: order.len(),
        resume,
    };
    let has_targets = |g: usize| concepts.get(groups[g].image).is_some_and(Option::is_some);
    let (model, report) = runner.run(policy, device, observer, |model, which, shard, device| {
        let which: Vec<usize> = which.iter().map(|&u| order[u]).collect();
        let all_groups = which.len();
        let all_targets = which.iter().filter(|&&g| has_targets(g)).count();
        let which = &which[shard];
        let batch: Batch<B> = data::make_batch(&images, &groups, which, pad, device);
        let reference: Vec<&[f32]> = which.iter().map(|&g| ref_lp[g].as_slice()).collect();
        if let Some(k) = which.iter().position(|&g| ref_lp[g].is_empty()) {
            return Err(TrainError::Empty(format!(
                "no reference log-probs for preference group {} (not in the visited set)",
                which[k]
            )));
        }
        let prefix = model.encode(batch.images.clone());
        let concept_loss = match model.concepts(&prefix) {
            Some(x) if !concepts.is_empty() => {
                let rows: Vec<_> = which.iter().map(|&g| concepts[groups[g].image]).collect();
                let mine = which.iter().filter(|&&g| has_targets(g)).count();
                concept_bce(x, &rows, balance.as_ref(), device).map(|b| {
                    match share(mine, all_targets) {
                        Some(f) => b.mul_scalar(f),
                        None => b,
                    }
                })
            }
            _ => None,
        };
        let (mut loss, metrics) =
            preference_step_on(model, prefix, &batch, &reference, &loss_fn, device)?;
        if let Some(f) = share(which.len(), all_groups) {
            loss = loss.mul_scalar(f);
        }
        let mut concept = None;
        if let Some(bce) = concept_loss {
            concept = Some(bce.clone().into_scalar().elem());
            loss = loss + bce.mul_scalar(concept_weight);
        }
        Ok(MicroOut {
            loss,
            tokens: batch.tokens.iter().flatten().sum(),
            extra: metrics,
            concept,
        })
    })?;
    let model = if model.has_lora() {
        model.merged()
    } else {
        model
    };
    save_final(model.valid(), report, &dir, &model_config)
}

/// Writes a stage's final model to `dir` and returns its report with the weights' digest.
fn save_final<B: Backend>(
    model: Student<B>,
    report: StageReport,
    dir: &Path,
    model_config: &StudentConfig,
) -> Result<StageReport> {
    let report = StageReport {
        weights_digest: model.weights_digest(),
        ..report
    };
    checkpoint::save_model(dir, model, model_config)?;
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
    let policy = model.sequence_logprobs_on(prefix, batch)?.reshape([g, s]);
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
    // InfoNCA's soft targets: the agreement `1 − drift` of each sequence with the consensus.
    if let (apo_loss::Objective::Infonca, Some(r)) = (loss_fn.objective(), batch.rewards.clone()) {
        pb = pb.with_rewards(r);
    }
    let out = loss_fn.forward_with_metrics(&pb)?;
    Ok((out.loss, out.metrics))
}

/// The concept targets of a run, one per item (`None`: no concept loss for that image).
///
/// # Errors
/// [`TrainError::Config`] when the targets are the consensus and there are no preferences.
fn concept_table(
    config: &RunConfig,
    items: &[Item],
    prefs: Option<&Preferences>,
) -> Result<Vec<Option<[f32; 14]>>> {
    match config.model.concept_targets {
        ConceptTargets::Teachers => {
            Ok(data::concept_targets(items).into_iter().map(Some).collect())
        }
        ConceptTargets::Consensus => match prefs {
            Some(prefs) => Ok(data::consensus_targets(prefs, items)),
            None => Err(TrainError::Config {
                field: "data.preferences".into(),
                value: "(none)".into(),
                expected: "the preference file whose consensus trajectories the concept head \
                           learns (or model.concept_targets = \"teachers\")"
                    .into(),
            }),
        },
    }
}

/// The stage's sampling order: unit `u` of the runner is group `order[u]`. Without
/// `data.oversample` every group once; with it, groups repeated by their image's weight
/// ([`data::oversampled_units`], from the consensus findings of `prefs`).
///
/// # Errors
/// [`TrainError::Config`] when oversampling is asked for without preference sets.
fn sampling_order(
    config: &RunConfig,
    items: &[Item],
    prefs: Option<&Preferences>,
    group_images: &[usize],
) -> Result<Vec<usize>> {
    let findings: &[cxr_max::Finding] = match config.data.oversample {
        Oversample::None => return Ok((0..group_images.len()).collect()),
        Oversample::Table1 => &cxr_max::Finding::TABLE1,
        Oversample::All => &cxr_max::Finding::ALL,
    };
    let prefs = prefs.ok_or_else(|| TrainError::Config {
        field: "data.oversample".into(),
        value: format!("{:?}", config.data.oversample).to_lowercase(),
        expected: "`none` unless data.preferences names the preference sets whose consensus                    findings are balanced"
            .into(),
    })?;
    let targets = data::consensus_targets(prefs, items);
    let order =
        data::oversampled_units(group_images, &targets, findings, config.data.oversample_max);
    tracing::info!(
        groups = group_images.len(),
        units = order.len(),
        "oversampled sampling order"
    );
    Ok(order)
}

/// Each finding's share of positive concept targets over the images that have targets,
/// clamped to [0.01, 0.99] (so no class weighs more than 50), when `model.concept_balance`
/// is set; `None` otherwise. `seen`: the image of every unit of the stage's sampling order
/// (repeats included), so that a stage that oversamples positives is balanced on what it
/// sees, not balanced twice; `None`: every image with targets once.
fn concept_balance(
    config: &RunConfig,
    concepts: &[Option<[f32; 14]>],
    seen: Option<&[usize]>,
) -> Option<[f32; 14]> {
    if !config.model.concept_balance {
        return None;
    }
    let rows: Vec<&[f32; 14]> = match seen {
        None => concepts.iter().flatten().collect(),
        Some(images) => images
            .iter()
            .filter_map(|&i| concepts.get(i).and_then(Option::as_ref))
            .collect(),
    };
    let mut pi = [0.5f32; 14];
    if !rows.is_empty() {
        for (k, p) in pi.iter_mut().enumerate() {
            let sum: f64 = rows.iter().map(|r| f64::from(r[k])).sum();
            *p = ((sum / rows.len() as f64) as f32).clamp(0.01, 0.99);
        }
    }
    Some(pi)
}

/// The encoder pretraining stage (`[pretrain]`): the image encoder and the concept head of
/// `model` learn the concept targets of the images that have them, `pretrain.optim.batch_size`
/// images per micro-batch, no text. Writes `OUT/pretrain/{model.bin, model.json,
/// metrics.jsonl, checkpoints/}` and returns the model stage 1 starts from.
#[allow(clippy::too_many_arguments)]
fn pretrain<B: TrainBackend>(
    config: &RunConfig,
    model_config: &StudentConfig,
    model: Student<B>,
    images: &Images,
    concepts: &[Option<[f32; 14]>],
    balance: Option<&[f32; 14]>,
    device: &B::Device,
    resume: bool,
    observer: &mut dyn Observer,
) -> Result<Student<B>> {
    let _span = tracing::info_span!("pretrain").entered();
    let units: Vec<usize> = (0..concepts.len())
        .filter(|&i| concepts[i].is_some())
        .collect();
    if units.is_empty() {
        return Err(TrainError::Empty(
            "pretrain: no training image has concept targets".into(),
        ));
    }
    let opt = &config.pretrain.optim;
    let fingerprint = ResumeKey::new(vec![
        ("stage", serde_json::json!("pretrain")),
        ("pretrain", without_steps(json(opt))),
        ("model", json(&config.model)),
        ("data", json(&config.data)),
        ("seed", serde_json::json!(config.run.seed)),
        ("units", serde_json::json!(units.len())),
    ]);
    let dir = config.run.out.join("pretrain");
    tracing::info!(images = units.len(), steps = opt.steps, "pretrain data");
    let runner = Runner {
        stage: "pretrain",
        dir: &dir,
        opt,
        peak_lr: opt.peak_lr(crate::config::SFT_LR),
        run: &config.run,
        model_config,
        fingerprint: &fingerprint,
        units: units.len(),
        resume,
    };
    let (model, report) = runner.run(model, device, observer, |model, which, shard, device| {
        let chosen: Vec<usize> = which[shard.clone()].iter().map(|&u| units[u]).collect();
        let prefix = model.encode(images.tensor(&chosen, device));
        let logits = model
            .concepts(&prefix)
            .ok_or_else(|| TrainError::Empty("pretrain: the model has no concept head".into()))?;
        let rows: Vec<_> = chosen.iter().map(|&i| concepts[i]).collect();
        let mut bce = concept_bce(logits, &rows, balance, device)
            .ok_or_else(|| TrainError::Empty("pretrain: a batch without targets".into()))?;
        if let Some(f) = share(shard.len(), which.len()) {
            bce = bce.mul_scalar(f);
        }
        Ok(MicroOut {
            concept: Some(bce.clone().into_scalar().elem()),
            loss: bce,
            tokens: 0,
            extra: Vec::new(),
        })
    })?;
    let report = save_final(model.clone().valid(), report, &dir, model_config)?;
    tracing::info!(
        first = report.first_loss,
        last = report.last_loss,
        seconds = report.seconds,
        "pretrain done"
    );
    Ok(model)
}

/// The mean binary cross-entropy of concept logits `[G, 14]` against `targets` (one row per
/// group; `None` rows are left out); `None` when no row has targets. With `balance` (each
/// finding's share of positive targets, [`concept_balance`]) the terms are class-balanced:
/// a target `t` of finding `k` weighs `t · ½/π_k + (1 − t) · ½/(1 − π_k)`, which averages 1
/// over the training targets, so the loss keeps its scale.
fn concept_bce<B: Backend>(
    logits: Tensor<B, 2>,
    targets: &[Option<[f32; 14]>],
    balance: Option<&[f32; 14]>,
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
        let row_t = row.unwrap_or([0.0; 14]);
        t.extend(row_t);
        match (row, balance) {
            (None, _) => m.extend([0f32; 14]),
            (Some(_), None) => m.extend([1f32; 14]),
            (Some(_), Some(pi)) => m.extend(
                row_t
                    .iter()
                    .zip(pi)
                    .map(|(&t, &p)| t * 0.5 / p + (1.0 - t) * 0.5 / (1.0 - p)),
            ),
        }
    }
    let t = Tensor::<B, 2>::from_data(TensorData::new(t, [targets.len(), k]), device);
    let m = Tensor::<B, 2>::from_data(TensorData::new(m, [targets.len(), k]), device);
    let ll = t.clone() * log_sigmoid(logits.clone())
        + t.neg().add_scalar(1.0) * log_sigmoid(logits.neg());
    Some((ll * m).sum().neg().div_scalar((present * k) as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The class-balanced concept loss: each finding's positive targets weigh `½/π`, its
    /// negative ones `½/(1 − π)`, with π the finding's share of positive targets over the
    /// training images; rows without targets count for nothing.
    #[cfg(feature = "ndarray")]
    #[test]
    fn balanced_concept_loss_weighs_each_class_by_its_share() {
        type Nd = burn::backend::NdArray;
        let device = Default::default();
        let mut pos = [0f32; 14];
        pos[2] = 1.0;
        let neg = [0f32; 14];
        let table = vec![Some(pos), Some(neg), Some(neg), Some(neg), None];
        let mut config = RunConfig::default();
        assert_eq!(concept_balance(&config, &table, None), None);
        config.model.concept_balance = true;
        let pi = concept_balance(&config, &table, None).unwrap();
        // Balanced on what a stage sees: image 0 twice and image 1 once give π = 2/3.
        let seen = concept_balance(&config, &table, Some(&[0, 0, 1, 4])).unwrap();
        assert!((seen[2] - 2.0 / 3.0).abs() < 1e-6, "{}", seen[2]);
        assert_eq!(pi[2], 0.25);
        assert_eq!(pi[0], 0.01, "a finding no image states is clamped");
        // Logits 0 everywhere: every term is ln 2 times its weight.
        let logits = Tensor::<Nd, 2>::zeros([5, 14], &device);
        let plain = concept_bce(logits.clone(), &table, None, &device).unwrap();
        let plain: f32 = plain.into_scalar();
        assert!((plain - 2f32.ln()).abs() < 1e-6, "{plain}");
        let balanced: f32 = concept_bce(logits, &table, Some(&pi), &device)
            .unwrap()
            .into_scalar();
        // Finding 2: one positive at ½/0.25 = 2, three negatives at ½/0.75; the other 13
        // findings: four negatives at ½/0.99 each. Mean over the 4 · 14 terms.
        let w = 2.0 + 3.0 * (0.5 / 0.75) + 13.0 * 4.0 * (0.5 / 0.99);
        let want = 2f32.ln() * w / 56.0;
        assert!((balanced - want).abs() < 1e-5, "{balanced} vs {want}");
    }

    /// A run folder's tokenizer trained for another `tokenizer.vocab_size` is an error that
    /// names the file and both sizes; the same configuration reuses it.
    #[test]
    fn a_stale_run_tokenizer_is_an_error() {
        let out = std::env::temp_dir().join(format!("apo-train-stale-tok-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let mut config = RunConfig::default();
        config.run.out = out.clone();
        config.tokenizer.vocab_size = 300;
        let first = tokenizer(&config, &[]).unwrap();
        let again = tokenizer(&config, &[]).unwrap();
        assert_eq!(again.vocab_size(), first.vocab_size());
        config.tokenizer.vocab_size = 512;
        match tokenizer(&config, &[]) {
            Err(e @ TrainError::StaleTokenizer { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("trained for vocab_size = 300, but the configuration asks for tokenizer.vocab_size = 512"),
                    "{text}"
                );
                assert!(text.contains("tokenizer.json"), "{text}");
            }
            other => panic!("{:?}", other.map(|t| t.vocab_size())),
        }
        std::fs::remove_dir_all(&out).ok();
    }
}
