//! Hugging Face students: a Qwen2-VL / Qwen2.5-VL checkpoint ([`apo_models`]) trained with
//! LoRA through both stages, from the same run configuration, data, schedule, metrics,
//! progress, checkpoints and resume as the small student.
//!
//! - Stage 1 ([`sft`]): every teacher trajectory of every image is one training row (the image
//!   and the record's prompt as the user turn, the trajectory as the assistant turn, rendered by
//!   the checkpoint's chat template); the loss is the mean NLL over the completion tokens of a
//!   micro-batch. The adapters start fresh (`student.lora`) or from `student.adapter`.
//! - Stage 2 ([`apo`]): each preference group (the consensus and every negative of one image)
//!   goes through the configured `apo-loss` objective. The policy starts from the stage-1
//!   adapter and keeps training it; the reference is the base with that adapter frozen, its
//!   log-probs computed once for the groups the run visits and cached in `OUT/reference/`.
//! - Only the adapters are trained: the base weights are frozen (no gradient, no optimiser
//!   state). Each stage writes `OUT/STAGE/adapter/` (a PEFT adapter folder that transformers,
//!   PEFT and vLLM load), `metrics.jsonl` and `checkpoints/step-N/` (the adapter, the optimiser
//!   state and `state.json`); resuming from a checkpoint continues bitwise on the CPU backend.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use apo_models::hf::HfModel;
use apo_models::lora::{self, Adapter};
use apo_models::{Images, QwenVl, VisionInput};
use burn::module::{AutodiffModule, Module};
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use cxr_max::dataset::Item;
use serde::{Deserialize, Serialize};

use crate::checkpoint::fnv;
use crate::config::{OptimConfig, RunConfig};
use crate::data::{self, Preferences};
use crate::error::io_err;
use crate::train::{
    MetricsFile, Observer, ResumeKey, StageReport, StepTotals, adamw, clip, json, micro_seed,
    without_steps,
};
use crate::{Result, TrainError};

/// The adapter folder of a finished stage: `OUT/STAGE/adapter`.
pub fn adapter_dir(out: &Path, stage: &str) -> PathBuf {
    out.join(stage).join("adapter")
}

/// Stage-1 peak learning rate of a LoRA student when none is configured (ms-swift's and
/// PEFT's usual LoRA SFT rate).
pub const HF_SFT_LR: f64 = 1e-4;
/// Stage-2 peak learning rate of a LoRA student when none is configured.
pub const HF_APO_LR: f64 = 5e-6;

/// What a checkpoint of a Hugging Face student records besides the adapter and the optimiser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HfState {
    /// `sft` or the stage-2 name.
    pub stage: String,
    /// Optimiser steps done.
    pub step: usize,
    /// The stage's configured step count when it was written.
    #[serde(default)]
    pub steps: usize,
    /// Micro-batches consumed.
    pub micro_batches: usize,
    /// The run seed.
    pub seed: u64,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Fingerprint of everything that must not change on resume.
    pub fingerprint: String,
    /// The settings behind the fingerprint (named parts), so a mismatch names the fields.
    #[serde(default)]
    pub identity: serde_json::Value,
    /// The base checkpoint folder.
    pub base: PathBuf,
    /// FNV-1a digest of each file of the checkpoint, checked before resuming.
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, String>,
}

fn base_dir(config: &RunConfig) -> Result<&Path> {
    config
        .student
        .hf
        .as_deref()
        .ok_or_else(|| TrainError::Config {
            field: "student.hf".into(),
            value: "(none)".into(),
            expected: "the Hugging Face checkpoint folder of the student".into(),
        })
}

/// A stable identity of a checkpoint folder without reading its weights: `config.json`, the
/// shard index and every safetensors file's name and size.
fn checkpoint_identity(dir: &Path) -> Result<String> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    for f in ["config.json", "model.safetensors.index.json"] {
        let p = dir.join(f);
        if p.exists() {
            parts.push(std::fs::read(&p).map_err(io_err(&p))?);
        }
    }
    let mut files: Vec<(String, u64)> = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".safetensors") {
            let len = e.metadata().map_err(io_err(&e.path()))?.len();
            files.push((name, len));
        }
    }
    files.sort();
    for (n, l) in files {
        parts.push(format!("{n}:{l}").into_bytes());
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    Ok(fnv(&refs))
}

fn adapter_bytes(dir: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for f in [lora::ADAPTER_CONFIG, lora::ADAPTER_WEIGHTS] {
        let p = dir.join(f);
        out.extend(std::fs::read(&p).map_err(io_err(&p))?);
    }
    Ok(out)
}

/// One training row: the image, the prompt, the completion, and the record it names in errors.
#[derive(Debug, Clone)]
struct Row {
    image: PathBuf,
    prompt: String,
    completions: Vec<String>,
    id: String,
}

/// Encodes a row's completions: `(ids, prompt length)` each (cut to `max_len` when `truncate`)
/// and the row's images once (every completion shows them).
fn encode<B: Backend>(
    hf: &HfModel<B>,
    row: &Row,
    max_len: usize,
    truncate: bool,
) -> Result<(Vec<apo_models::hf::Sequence>, Vec<VisionInput>)> {
    let completions: Vec<&str> = row.completions.iter().map(String::as_str).collect();
    let (mut seqs, images) = hf
        .completion_inputs(
            std::slice::from_ref(&row.image),
            &row.prompt,
            &completions,
            Path::new(""),
        )
        .map_err(|e| {
            TrainError::Model(apo_models::ModelError::Input(format!(
                "record `{}`: {e}",
                row.id
            )))
        })?;
    for (ids, prompt) in &mut seqs {
        if ids.len() > max_len {
            if truncate && *prompt < max_len {
                ids.truncate(max_len);
            } else {
                return Err(TrainError::TooLongForStudent {
                    what: if *prompt >= max_len {
                        "prompt"
                    } else {
                        "trajectory"
                    },
                    id: row.id.clone(),
                    tokens: ids.len(),
                    max: max_len,
                });
            }
        }
    }
    Ok((seqs, images.iter().map(VisionInput::from).collect()))
}

/// The chunks of `n` sequences one forward pass takes (`per_pass == 0`: all).
fn chunks(n: usize, per_pass: usize) -> Vec<std::ops::Range<usize>> {
    let step = if per_pass == 0 { n.max(1) } else { per_pass };
    (0..n).step_by(step).map(|s| s..(s + step).min(n)).collect()
}

/// The model, its processor and the settings the loop needs.
struct Student<B: Backend> {
    hf: HfModel<B>,
    max_len: usize,
}

fn open_student<B: AutodiffBackend>(
    config: &RunConfig,
    adapter: Option<&Path>,
    device: &B::Device,
) -> Result<Student<B>> {
    let base = base_dir(config)?;
    let hf = HfModel::<B>::open(base, device.clone())?;
    let HfModel {
        model: mut loaded,
        processor,
        device,
    } = hf;
    let lcfg = &config.student.lora;
    loaded.model = match adapter {
        Some(dir) => Adapter::read(dir)?.attach(loaded.model, lcfg.dropout, &device)?,
        None => lora::attach(loaded.model, lcfg, config.run.seed, &device)?,
    };
    let limit = loaded.config.text.max_position_embeddings;
    let max_len = match config.student.max_length {
        0 => limit,
        n => n.min(limit),
    };
    tracing::info!(
        base = %base.display(),
        adapter = adapter.map(|a| a.display().to_string()).unwrap_or_else(|| "fresh".into()),
        adapted = lora::adapted(&loaded.model).len(),
        "Hugging Face student"
    );
    Ok(Student {
        hf: HfModel {
            model: loaded,
            processor,
            device,
        },
        max_len,
    })
}

/// Replaces the student's modules (the loop's optimiser step returns new ones).
fn with_model<B: Backend>(s: Student<B>, f: impl FnOnce(QwenVl<B>) -> QwenVl<B>) -> Student<B> {
    let Student { hf, max_len } = s;
    let HfModel {
        model: mut loaded,
        processor,
        device,
    } = hf;
    loaded.model = f(loaded.model);
    Student {
        hf: HfModel {
            model: loaded,
            processor,
            device,
        },
        max_len,
    }
}

/// The log-probs of `seqs` without recording gradients (the inner backend).
fn logprobs_no_grad<B: AutodiffBackend>(
    model: &QwenVl<B>,
    config: &apo_models::ModelConfig,
    seqs: &[(Vec<u32>, usize)],
    images: &[VisionInput],
    device: &B::Device,
) -> Result<Vec<f64>> {
    let inner = apo_models::Loaded {
        model: model.valid(),
        config: config.clone(),
    };
    let lp = inner.completion_logprobs_with(seqs, Images::Shared(images), device)?;
    Ok(lp.into_iter().map(|(v, _)| v).collect())
}

/// The student of each local worker of a data-parallel run ([`crate::parallel::Copies`]):
/// the first worker's is the opened student, the others' its modules forked to their device
/// with a processor of their own.
fn worker_students<B: AutodiffBackend>(
    config: &RunConfig,
    student: Student<B>,
) -> Result<crate::parallel::Copies<Student<B>>> {
    let devices =
        crate::parallel::devices::<B>(&student.hf.device, crate::train::local_workers(&config.run));
    let base = base_dir(config)?;
    let mut others = Vec::new();
    for d in devices.iter().skip(1) {
        others.push(Student {
            hf: HfModel {
                model: apo_models::Loaded {
                    model: student.hf.model.model.clone().fork(d),
                    config: student.hf.model.config.clone(),
                },
                processor: apo_models::processor::Processor::from_dir(base)?,
                device: d.clone(),
            },
            max_len: student.max_len,
        });
    }
    Ok(crate::parallel::Copies::from_vec(
        std::iter::once(student).chain(others).collect(),
    ))
}

/// One worker's share of one micro-batch: its loss value (the share of the micro-batch's),
/// tokens, each group's metrics; gradients accumulated.
struct Micro {
    loss: f64,
    tokens: usize,
    metrics: Vec<apo_loss::Metrics>,
}

/// The loop both stages share, data-parallel on `config.run.devices` devices
/// ([`crate::parallel`]). `micro(student, worker, batch, shard, factor, accumulate)` computes
/// the share of the units at positions `shard` of the micro-batch `batch` and accumulates its
/// gradients (already multiplied by `factor = 1 / grad_accum`).
#[allow(clippy::too_many_arguments)] // the stage's settings, one each
fn run_loop<B, F>(
    stage: &str,
    dir: &Path,
    opt: &OptimConfig,
    peak_lr: f64,
    config: &RunConfig,
    fingerprint: &ResumeKey,
    units: usize,
    students: crate::parallel::Copies<Student<B>>,
    resume: bool,
    observer: &mut dyn Observer,
    micro: F,
) -> Result<(Student<B>, StageReport)>
where
    B: AutodiffBackend,
    F: Fn(
            &Student<B>,
            &crate::parallel::Worker<B>,
            &[usize],
            Range<usize>,
            f64,
            &mut GradientsAccumulator<QwenVl<B>>,
        ) -> Result<Micro>
        + Sync,
{
    let run = &config.run;
    let start_time = Instant::now();
    crate::train::check_shards(stage, opt, run)?;
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let _lock = crate::lock::StageLock::acquire(dir)?;
    let mut start = 0;
    let mut resumed_from = None;
    let mut from = None;
    let existing = crate::checkpoint::list(dir)?;
    if resume {
        if let Some(path) = crate::train::pick(dir, &existing, run.from_checkpoint)? {
            let state = read_state(&path, stage, fingerprint)?;
            crate::train::check_steps(stage, state.step, state.steps, opt.steps)?;
            start = state.step;
            resumed_from = Some(state.step);
            from = Some(path);
        }
    } else {
        for (_, path) in existing {
            std::fs::remove_dir_all(&path).map_err(io_err(&path))?;
        }
    }
    let stats_len = StepTotals::len(opt.grad_accum);
    let device = students.with(0, |s| Ok(s.hf.device.clone()))?;
    let student = crate::parallel::run::<B, _, _>(run, &device, observer, |w, observer| {
        let rec = BinFileRecorder::<FullPrecisionSettings>::new();
        let setup = (|| -> Result<_> {
            let mut student = students.take(w.local_index())?;
            let mut optim = adamw::<B, QwenVl<B>>(opt);
            if let Some(path) = &from {
                let adapter = Adapter::read(path)?;
                student = replace_adapters(student, &adapter, config.student.lora.dropout)?;
                let record =
                    Recorder::<B>::load(&rec, path.join("optim"), &w.device).map_err(|e| {
                        TrainError::CorruptCheckpoint {
                            path: path.join("optim.bin"),
                            message: e.to_string(),
                        }
                    })?;
                optim = optim.load_record(record);
                if w.is_first() {
                    tracing::info!(stage, step = start, checkpoint = %path.display(), "resumed");
                }
            }
            let metrics = MetricsFile::of_first(w, dir, start)?;
            Ok((student, optim, metrics))
        })();
        let (mut student, mut optim, metrics) = w.agree(setup)?;
        let mut pending: Option<TrainError> = None;
        for step in start..opt.steps {
            let t0 = Instant::now();
            let lr = opt.lr_at(step, peak_lr);
            let local = match pending.take() {
                Some(e) => Err(e),
                None => (|| -> Result<_> {
                    let mut acc = GradientsAccumulator::<QwenVl<B>>::new();
                    let mut totals = StepTotals::new(opt.grad_accum);
                    for a in 0..opt.grad_accum {
                        let m = step * opt.grad_accum + a;
                        let which = data::micro_batch(run.seed, units, opt.batch_size, m);
                        B::seed(&w.device, micro_seed(run.seed, m));
                        let shard = w.shard(which.len());
                        let factor = 1.0 / opt.grad_accum as f64;
                        let out = micro(&student, w, &which, shard, factor, &mut acc)?;
                        if !out.loss.is_finite() {
                            return Err(TrainError::Empty(format!(
                                "{stage} step {}: the loss is {}; lower the learning rate",
                                step + 1,
                                out.loss
                            )));
                        }
                        totals.add(a, out.loss, out.tokens, &out.metrics, None);
                    }
                    Ok((acc.grads(), totals.to_vec()))
                })(),
            };
            let synced = w.sync(&student.hf.model.model, local, stats_len)?;
            let mut grads = synced.grads;
            let grad_norm = clip(&student.hf.model.model, &mut grads, opt.grad_clip);
            student = with_model(student, |m| optim.step(lr, m, grads));
            let done = crate::train::StepEnd {
                stage,
                step: step + 1,
                opt,
                run,
                lr,
                grad_norm,
                seconds: t0.elapsed().as_secs_f64(),
            };
            done.finish(
                w,
                metrics.as_ref(),
                observer,
                &synced.stats,
                &mut pending,
                || {
                    let state = HfState {
                        stage: stage.to_owned(),
                        step: step + 1,
                        steps: opt.steps,
                        micro_batches: (step + 1) * opt.grad_accum,
                        seed: run.seed,
                        lr,
                        fingerprint: fingerprint.hash.clone(),
                        identity: fingerprint.fields.clone(),
                        base: base_dir(config)?.to_path_buf(),
                        files: Default::default(),
                    };
                    save_checkpoint(dir, config, &student, &optim, &state, &rec)
                },
            )?;
        }
        w.agree(pending.map_or(Ok(()), Err))?;
        Ok(student)
    })?;
    let (first_loss, last_loss) = MetricsFile::first_last_of(&dir.join("metrics.jsonl"))?;
    let report = StageReport {
        stage: stage.to_owned(),
        steps: opt.steps,
        resumed_from,
        first_loss,
        last_loss,
        groups: units,
        seconds: start_time.elapsed().as_secs_f64(),
        model_dir: adapter_dir(&config.run.out, stage),
        metrics: dir.join("metrics.jsonl"),
        weights_digest: String::new(),
    };
    Ok((student, report))
}

/// The student with its adapters replaced by `adapter` (a checkpoint's).
fn replace_adapters<B: Backend>(
    s: Student<B>,
    adapter: &Adapter,
    dropout: f64,
) -> Result<Student<B>> {
    let Student { hf, max_len } = s;
    let HfModel {
        model: mut loaded,
        processor,
        device,
    } = hf;
    loaded.model = adapter.attach(lora::remove(loaded.model), dropout, &device)?;
    Ok(Student {
        hf: HfModel {
            model: loaded,
            processor,
            device,
        },
        max_len,
    })
}

fn read_state(path: &Path, stage: &str, fingerprint: &ResumeKey) -> Result<HfState> {
    let file = path.join("state.json");
    let corrupt = |e: String| TrainError::CorruptCheckpoint {
        path: file.clone(),
        message: e,
    };
    let text = std::fs::read_to_string(&file).map_err(|e| corrupt(e.to_string()))?;
    let state: HfState = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    if state.stage != stage {
        return Err(TrainError::CheckpointMismatch {
            path: path.to_owned(),
            what: "stage",
            found: state.stage,
            expected: stage.to_owned(),
        });
    }
    if let Err((found, expected)) = fingerprint.check(&state.fingerprint, &state.identity) {
        return Err(TrainError::CheckpointMismatch {
            path: path.to_owned(),
            what: "run configuration",
            found,
            expected,
        });
    }
    crate::checkpoint::verify_files(path, &state.files)?;
    Ok(state)
}

fn save_checkpoint<B, O>(
    dir: &Path,
    config: &RunConfig,
    student: &Student<B>,
    optim: &O,
    state: &HfState,
    rec: &BinFileRecorder<FullPrecisionSettings>,
) -> Result<PathBuf>
where
    B: AutodiffBackend,
    O: Optimizer<QwenVl<B>, B>,
{
    let root = dir.join("checkpoints");
    std::fs::create_dir_all(&root).map_err(io_err(&root))?;
    let name = format!("step-{:06}", state.step);
    let tmp = root.join(format!("{name}.partial"));
    let done = root.join(&name);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    write_adapter(&tmp, config, student)?;
    Recorder::<B>::record(rec, optim.to_record(), tmp.join("optim")).map_err(|e| {
        TrainError::CorruptCheckpoint {
            path: tmp.clone(),
            message: e.to_string(),
        }
    })?;
    let state = HfState {
        files: crate::checkpoint::digest_files(
            &tmp,
            &[lora::ADAPTER_CONFIG, lora::ADAPTER_WEIGHTS, "optim.bin"],
        )?,
        ..state.clone()
    };
    let json =
        serde_json::to_string_pretty(&state).map_err(|e| TrainError::Empty(e.to_string()))?;
    std::fs::write(tmp.join("state.json"), json).map_err(io_err(&tmp))?;
    if done.exists() {
        std::fs::remove_dir_all(&done).map_err(io_err(&done))?;
    }
    std::fs::rename(&tmp, &done).map_err(io_err(&done))?;
    let mut all = crate::checkpoint::list(dir)?;
    while all.len() > config.run.keep_checkpoints.max(1) {
        let (_, old) = all.remove(0);
        std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
    }
    Ok(done)
}

fn write_adapter<B: Backend>(dir: &Path, config: &RunConfig, student: &Student<B>) -> Result<()> {
    let base = base_dir(config)?;
    let adapter = Adapter::from_model(
        &student.hf.model.model,
        &effective_lora(config, student),
        &base.display().to_string(),
    )?;
    adapter.write(dir, true)?;
    Ok(())
}

/// The LoRA settings that describe the student's adapters: the configured ones, with the rank
/// and scale of the adapters actually attached (an initial adapter may have its own).
fn effective_lora<B: Backend>(config: &RunConfig, student: &Student<B>) -> apo_models::LoraConfig {
    let mut c = config.student.lora.clone();
    if let Some((_, lin)) = student
        .hf
        .model
        .model
        .linears()
        .into_iter()
        .find(|(_, l)| l.lora.is_some())
        && let Some(l) = &lin.lora
    {
        c.r = l.rank();
        c.alpha = if c.use_rslora {
            l.scale * (c.r as f64).sqrt()
        } else {
            l.scale * c.r as f64
        };
    }
    c
}

/// Writes the stage's final adapter to `OUT/STAGE/adapter` (replacing a previous run's) and
/// returns the report with the adapter's digest.
fn save_final<B: Backend>(
    config: &RunConfig,
    stage: &str,
    student: &Student<B>,
    report: StageReport,
) -> Result<StageReport> {
    let dir = adapter_dir(&config.run.out, stage);
    write_adapter(&dir, config, student)?;
    let digest = fnv(&[&adapter_bytes(&dir)?]);
    Ok(StageReport {
        weights_digest: digest,
        ..report
    })
}

fn prompt_of(item: &Item) -> String {
    item.sample
        .prompt
        .clone()
        .unwrap_or_else(|| cxr_max::sim::PROMPT.to_owned())
}

/// Stage 1 of a Hugging Face student on the data set of `config.data`: [`sft_on`].
///
/// # Errors
/// As [`sft_on`]; data set errors.
pub fn sft<B: AutodiffBackend>(
    config: &RunConfig,
    device: &B::Device,
    resume: bool,
    observer: &mut dyn Observer,
) -> Result<StageReport> {
    config.validate()?;
    let items = data::open_config_items(config)?;
    sft_on::<B>(config, &items, device, resume, observer)
}

/// Stage 1 on `items`: every teacher trajectory is a row; mean completion-token NLL per
/// micro-batch of `sft.batch_size` rows. Writes `OUT/sft/{adapter/, metrics.jsonl,
/// checkpoints/}`.
///
/// # Errors
/// Configuration, checkpoint, adapter, model-input and file errors.
pub fn sft_on<B: AutodiffBackend>(
    config: &RunConfig,
    items: &[Item],
    device: &B::Device,
    resume: bool,
    observer: &mut dyn Observer,
) -> Result<StageReport> {
    config.validate()?;
    let _span = tracing::info_span!("sft", student = "hf").entered();
    let rows: Vec<Row> = items
        .iter()
        .flat_map(|it| {
            it.sample.trajectories.iter().map(move |t| Row {
                image: it.image.clone(),
                prompt: prompt_of(it),
                completions: vec![t.text.clone()],
                id: format!("{}/{}", it.sample.dicom_id, t.teacher),
            })
        })
        .collect();
    if rows.is_empty() {
        return Err(TrainError::Empty("no trajectory to train on".into()));
    }
    let student = open_student::<B>(config, config.student.adapter.as_deref(), device)?;
    let fingerprint = ResumeKey::new(vec![
        ("stage", serde_json::json!("hf-sft")),
        ("sft", without_steps(json(&config.sft))),
        ("data", json(&config.data)),
        ("student", json(&config.student)),
        (
            "checkpoint",
            serde_json::json!(checkpoint_identity(base_dir(config)?)?),
        ),
        ("seed", serde_json::json!(config.run.seed)),
        ("rows", serde_json::json!(rows.len())),
    ]);
    tracing::info!(images = items.len(), rows = rows.len(), "stage 1 data");
    let dir = config.run.out.join("sft");
    let per_pass = config.student.sequences_per_pass;
    let truncate = config.data.truncate;
    let (student, report) = run_loop(
        "sft",
        &dir,
        &config.sft,
        config.sft.peak_lr(HF_SFT_LR),
        config,
        &fingerprint,
        rows.len(),
        worker_students(config, student)?,
        resume,
        observer,
        |s, w, which, shard, factor, acc| {
            // One sequence per row; a row's images belong to its sequence.
            let encoded = (|| -> Result<_> {
                let mut seqs = Vec::new();
                let mut images: Vec<Vec<VisionInput>> = Vec::new();
                for &u in &which[shard] {
                    let (q, v) = encode(&s.hf, &rows[u], s.max_len, truncate)?;
                    seqs.extend(q);
                    images.push(v);
                }
                Ok((seqs, images))
            })();
            let mine = |seqs: &[(Vec<u32>, usize)]| -> usize {
                seqs.iter().map(|(ids, p)| ids.len() - p).sum()
            };
            // The mean is over the whole micro-batch's completion tokens: every worker adds
            // its count (a worker whose rows failed says so, and all stop here).
            let all = w.agree_sum(encoded.as_ref().ok().map(|(q, _)| mine(q) as f64));
            let (seqs, images) = encoded?;
            let all_tokens = all? as usize;
            let tokens = mine(&seqs);
            let mut total = 0.0;
            for r in chunks(seqs.len(), per_pass) {
                let these: Vec<VisionInput> = images[r.clone()].concat();
                let (lp, _) = s.hf.model.completion_logprobs_tensor(
                    &seqs[r.clone()],
                    &these,
                    &s.hf.device,
                )?;
                let loss = lp.sum().neg().div_scalar(all_tokens.max(1) as f64);
                let v: f64 = loss.clone().into_scalar().elem();
                total += v;
                let grads = loss.mul_scalar(factor).backward();
                acc.accumulate(
                    &s.hf.model.model,
                    GradientsParams::from_grads(grads, &s.hf.model.model),
                );
            }
            Ok(Micro {
                loss: total,
                tokens,
                metrics: Vec::new(),
            })
        },
    )?;
    save_final(config, "sft", &student, report)
}

/// Stage 2 of a Hugging Face student on `config.data` and `config.data.preferences`:
/// [`apo_on`].
///
/// # Errors
/// As [`apo_on`]; data set and preference-file errors.
pub fn apo<B: AutodiffBackend>(
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

/// The adapter stage 2 starts from: `apo.init` (a stage folder holding `adapter/`, or an
/// adapter folder itself), else this run's `sft/adapter` if it exists, else
/// `student.adapter`, else none (fresh adapters on the base).
fn stage2_init(config: &RunConfig) -> Option<PathBuf> {
    let is_adapter = |p: &Path| p.join(lora::ADAPTER_CONFIG).exists();
    if let Some(init) = &config.apo.init {
        let inner = init.join("adapter");
        return Some(if is_adapter(&inner) {
            inner
        } else {
            init.clone()
        });
    }
    let sft = adapter_dir(&config.run.out, "sft");
    if is_adapter(&sft) {
        return Some(sft);
    }
    config.student.adapter.clone()
}

#[derive(Debug, Serialize, Deserialize)]
struct ReferenceCache {
    key: String,
    /// Per group: the reference log-probs of its sequences (empty when not visited).
    logprobs: Vec<Vec<f64>>,
}

/// Stage 2 on `items` and `prefs`: the configured objective on the consensus and every
/// negative of each group, against the frozen start (base + stage-1 adapter). Writes
/// `OUT/NAME/{adapter/, metrics.jsonl, checkpoints/}` and `OUT/reference/KEY.json`.
///
/// # Errors
/// Configuration, data, checkpoint, adapter, loss, model-input and file errors.
#[allow(clippy::too_many_lines)] // the stage reads as one piece
pub fn apo_on<B: AutodiffBackend>(
    config: &RunConfig,
    name: &str,
    items: &[Item],
    prefs: &Preferences,
    device: &B::Device,
    resume: bool,
    observer: &mut dyn Observer,
) -> Result<StageReport> {
    config.validate()?;
    let _span = tracing::info_span!("apo", name, student = "hf").entered();
    let index: std::collections::HashMap<&str, usize> = items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.sample.dicom_id.as_str(), i))
        .collect();
    let mut groups: Vec<(Row, Option<Vec<f64>>, Vec<f64>)> = Vec::new();
    let mut unmatched = 0usize;
    for (line, row) in &prefs.rows {
        if row.rejected.is_empty() {
            return Err(TrainError::NoNegatives {
                source_file: prefs.source.clone(),
                line: *line,
                id: row.id.clone(),
            });
        }
        let Some(&i) = index.get(row.id.as_str()) else {
            unmatched += 1;
            continue;
        };
        let mut completions = vec![row.chosen.clone()];
        completions.extend(row.rejected.iter().map(|r| r.text.clone()));
        let weights = row.rejected.iter().all(|r| r.weight.is_some()).then(|| {
            row.rejected
                .iter()
                .map(|r| r.weight.unwrap_or(1.0))
                .collect()
        });
        let drift = row.rejected.iter().map(|r| r.drift).collect();
        groups.push((
            Row {
                image: items[i].image.clone(),
                prompt: row.prompt.clone(),
                completions,
                id: row.id.clone(),
            },
            weights,
            drift,
        ));
    }
    if groups.is_empty() {
        return Err(TrainError::Empty(format!(
            "{}: no preference group matches an image of the data set ({unmatched} rows unmatched)",
            prefs.source.display()
        )));
    }
    if config.apo.loss.objective == apo_loss::Objective::PlackettLuceRanking {
        // The ranking's list: least drifting negative first (stable).
        for (row, weights, drift) in &mut groups {
            let mut order: Vec<usize> = (0..drift.len()).collect();
            order.sort_by(|&a, &b| drift[a].total_cmp(&drift[b]));
            let negs: Vec<String> = order
                .iter()
                .map(|&k| row.completions[k + 1].clone())
                .collect();
            row.completions.truncate(1);
            row.completions.extend(negs);
            if let Some(w) = weights {
                *w = order.iter().map(|&k| w[k]).collect();
            }
            *drift = order.iter().map(|&k| drift[k]).collect();
        }
    }
    tracing::info!(groups = groups.len(), unmatched, "stage 2 data");
    let init = stage2_init(config);
    let student = open_student::<B>(config, init.as_deref(), device)?;
    let students = worker_students(config, student)?;
    let base = base_dir(config)?;
    let init_bytes = match &init {
        Some(d) => adapter_bytes(d)?,
        None => Vec::new(),
    };
    let key = fnv(&[
        prefs.content(),
        checkpoint_identity(base)?.as_bytes(),
        &init_bytes,
        serde_json::to_string(&config.data)
            .unwrap_or_default()
            .as_bytes(),
        serde_json::to_string(&config.student)
            .unwrap_or_default()
            .as_bytes(),
        if config.apo.loss.objective == apo_loss::Objective::PlackettLuceRanking {
            b"drift order"
        } else {
            b"file order "
        },
    ]);
    let opt = &config.apo.optim;
    let mut needed: Vec<usize> = crate::train::visited(
        config.run.seed,
        groups.len(),
        opt.batch_size,
        opt.steps * opt.grad_accum,
    );
    needed.sort_unstable();
    needed.dedup();
    let truncate = config.data.truncate;
    let per_pass = config.student.sequences_per_pass;
    let ref_dir = config.run.out.join("reference");
    let ref_path = ref_dir.join(format!("{key}.json"));
    let reference: Vec<Vec<f64>> = match std::fs::read_to_string(&ref_path)
        .ok()
        .and_then(|t| serde_json::from_str::<ReferenceCache>(&t).ok())
        .filter(|c| c.key == key && c.logprobs.len() == groups.len())
        .filter(|c| needed.iter().all(|&g| !c.logprobs[g].is_empty()))
    {
        Some(c) => {
            tracing::info!(path = %ref_path.display(), "reference log-probs from the cache");
            c.logprobs
        }
        None => {
            let t0 = Instant::now();
            let mut lps = vec![Vec::new(); groups.len()];
            // Each worker computes its share of the groups; one all-reduce gathers them.
            let lens: Vec<usize> = needed
                .iter()
                .map(|&g| groups[g].0.completions.len())
                .collect();
            let gathered = crate::parallel::run::<B, _, _>(
                &config.run,
                device,
                &mut crate::train::Quiet,
                |w, _| {
                    let mine = w.shard(needed.len());
                    let local = students.with(w.local_index(), |student| {
                        let mut out = Vec::new();
                        for &g in &needed[mine.clone()] {
                            let (seqs, images) =
                                encode(&student.hf, &groups[g].0, student.max_len, truncate)?;
                            let mut v = Vec::with_capacity(seqs.len());
                            for r in chunks(seqs.len(), per_pass) {
                                v.extend(logprobs_no_grad(
                                    &student.hf.model.model,
                                    &student.hf.model.config,
                                    &seqs[r],
                                    &images,
                                    &student.hf.device,
                                )?);
                            }
                            out.push(v.into_iter().map(|x| x as f32).collect());
                        }
                        Ok(out)
                    });
                    w.gather(&lens, mine, local)
                },
            )?;
            for (&g, v) in needed.iter().zip(gathered) {
                lps[g] = v.into_iter().map(f64::from).collect();
            }
            std::fs::create_dir_all(&ref_dir).map_err(io_err(&ref_dir))?;
            let cache = ReferenceCache {
                key: key.clone(),
                logprobs: lps,
            };
            let json =
                serde_json::to_string(&cache).map_err(|e| TrainError::Empty(e.to_string()))?;
            let tmp = ref_path.with_extension("json.partial");
            std::fs::write(&tmp, json).map_err(io_err(&tmp))?;
            std::fs::rename(&tmp, &ref_path).map_err(io_err(&ref_path))?;
            tracing::info!(
                groups = needed.len(),
                seconds = t0.elapsed().as_secs_f64(),
                "reference log-probs computed"
            );
            cache.logprobs
        }
    };
    let mut apo_settings = json(&config.apo);
    if let serde_json::Value::Object(m) = &mut apo_settings
        && let Some(o) = m.remove("optim")
    {
        m.insert("optim".into(), without_steps(o));
    }
    let fingerprint = ResumeKey::new(vec![
        ("stage", serde_json::json!(format!("hf-{name}"))),
        ("inputs", serde_json::json!(key)),
        ("apo", apo_settings),
        ("seed", serde_json::json!(config.run.seed)),
    ]);
    let loss_fn = config.apo.loss.init()?;
    let dir = config.run.out.join(name);
    let (student, report) = run_loop(
        name,
        &dir,
        opt,
        opt.peak_lr(HF_APO_LR),
        config,
        &fingerprint,
        groups.len(),
        students,
        resume,
        observer,
        |s, _, which, shard, factor, acc| {
            // The mean is over the whole micro-batch's groups.
            let g_count = which.len() as f64;
            let mut total = 0.0;
            let mut tokens = 0usize;
            let mut metrics = Vec::new();
            for &g in &which[shard] {
                let (row, weights, drift) = &groups[g];
                let refs = &reference[g];
                if refs.is_empty() {
                    return Err(TrainError::Empty(format!(
                        "no reference log-probs for preference group `{}`",
                        row.id
                    )));
                }
                let (seqs, images) = encode(&s.hf, row, s.max_len, truncate)?;
                let n = seqs.len();
                let counts: Vec<f32> = seqs.iter().map(|(ids, p)| (ids.len() - p) as f32).collect();
                tokens += counts.iter().map(|&c| c as usize).sum::<usize>();
                let dev = &s.hf.device;
                let batch = |policy: Tensor<B, 2>| {
                    let reference = Tensor::<B, 2>::from_data(
                        TensorData::new(refs.iter().map(|&v| v as f32).collect::<Vec<_>>(), [1, n]),
                        dev,
                    );
                    let tok =
                        Tensor::<B, 2>::from_data(TensorData::new(counts.clone(), [1, n]), dev);
                    let mut pb =
                        apo_loss::tensor::PreferenceBatch::new(policy, reference).with_tokens(tok);
                    if let Some(w) = weights {
                        let w: Vec<f32> = w.iter().map(|&x| x as f32).collect();
                        pb =
                            pb.with_weights(Tensor::from_data(TensorData::new(w, [1, n - 1]), dev));
                    }
                    if loss_fn.objective() == apo_loss::Objective::Infonca {
                        let mut r = vec![1f32];
                        r.extend(drift.iter().map(|&d| (1.0 - d) as f32));
                        pb = pb.with_rewards(Tensor::from_data(TensorData::new(r, [1, n]), dev));
                    }
                    pb
                };
                let parts = chunks(n, per_pass);
                if parts.len() == 1 {
                    let (lp, _) = s.hf.model.completion_logprobs_tensor_with(
                        &seqs,
                        Images::Shared(&images),
                        dev,
                    )?;
                    let out = loss_fn.forward_with_metrics(&batch(lp.reshape([1, n])))?;
                    let v: f64 = out.loss.clone().into_scalar().elem();
                    total += v / g_count;
                    metrics.extend(out.metrics);
                    let grads = out.loss.mul_scalar(factor / g_count).backward();
                    acc.accumulate(
                        &s.hf.model.model,
                        GradientsParams::from_grads(grads, &s.hf.model.model),
                    );
                } else {
                    // Pass 1 without gradients: the loss and its derivative in each log-prob.
                    let mut values = Vec::with_capacity(n);
                    for r in &parts {
                        values.extend(logprobs_no_grad(
                            &s.hf.model.model,
                            &s.hf.model.config,
                            &seqs[r.clone()],
                            &images,
                            dev,
                        )?);
                    }
                    let leaf = Tensor::<B, 2>::from_data(
                        TensorData::new(
                            values.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                            [1, n],
                        ),
                        dev,
                    )
                    .require_grad();
                    let out = loss_fn.forward_with_metrics(&batch(leaf.clone()))?;
                    let v: f64 = out.loss.clone().into_scalar().elem();
                    total += v / g_count;
                    metrics.extend(out.metrics);
                    let lgrads = out.loss.backward();
                    let dl: Vec<f32> = leaf
                        .grad(&lgrads)
                        .map(|t| {
                            t.into_data()
                                .convert::<f32>()
                                .into_vec::<f32>()
                                .unwrap_or_default()
                        })
                        .unwrap_or_default();
                    if dl.len() != n {
                        return Err(TrainError::Empty(format!(
                            "preference group `{}`: no gradient of the loss in the log-probs",
                            row.id
                        )));
                    }
                    // Pass 2 per chunk: Σ_i dL/dlp_i · lp_i has the loss's gradient.
                    for r in parts {
                        let (lp, _) = s.hf.model.completion_logprobs_tensor_with(
                            &seqs[r.clone()],
                            Images::Shared(&images),
                            dev,
                        )?;
                        let w = Tensor::<B, 1>::from_data(
                            TensorData::new(dl[r.clone()].to_vec(), [r.len()]),
                            dev,
                        );
                        let surrogate = lp.mul(w).sum().mul_scalar(factor / g_count);
                        let grads = surrogate.backward();
                        acc.accumulate(
                            &s.hf.model.model,
                            GradientsParams::from_grads(grads, &s.hf.model.model),
                        );
                    }
                }
            }
            Ok(Micro {
                loss: total,
                tokens,
                metrics,
            })
        },
    )?;
    save_final(config, name, &student, report)
}

/// Generates a trajectory for every item with the base checkpoint and the adapter in `adapter`
/// (none: the base alone), `settings.batch` images per left-padded batch (greedy, or sampled
/// with `settings.temperature` and a per-item seed), and scores the findings the labeler reads
/// back ([`crate::eval::report_from_texts`]).
///
/// # Errors
/// Checkpoint, adapter, image and generation errors, naming the item.
pub fn evaluate_adapter<B: Backend>(
    base: &Path,
    adapter: Option<&Path>,
    items: &[Item],
    settings: &crate::eval::Generation,
    evaluated: &[cxr_max::Finding],
    device: &B::Device,
) -> Result<crate::eval::EvalReport> {
    let hf = HfModel::<B>::open_with_adapter(base, adapter, device.clone())?;
    let t0 = Instant::now();
    let mut texts = Vec::with_capacity(items.len());
    let opts = apo_models::GenerateOptions {
        max_new_tokens: settings.max_new_tokens,
        temperature: settings.temperature,
        seed: settings.seed,
        stop: Vec::new(),
    };
    let batch = settings.batch.max(1);
    for (c, chunk) in items.chunks(batch).enumerate() {
        let rows: Vec<apo_models::hf::GenerateRow> = chunk
            .iter()
            .map(|item| apo_models::hf::GenerateRow {
                images: vec![item.image.clone()],
                prompt: prompt_of(item),
            })
            .collect();
        let seeds: Vec<u64> = (0..chunk.len())
            .map(|k| {
                let i = (c * batch + k) as u64;
                settings.seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            })
            .collect();
        let generated = match hf.generate_batch(&rows, Path::new(""), &opts, Some(&seeds)) {
            Ok(g) => g,
            Err(_) => {
                // Name the item that fails: one at a time.
                let mut g = Vec::with_capacity(rows.len());
                for ((row, item), &seed) in rows.iter().zip(chunk).zip(&seeds) {
                    let o = apo_models::GenerateOptions {
                        seed,
                        ..opts.clone()
                    };
                    g.push(hf.generate(row, Path::new(""), &o).map_err(|e| {
                        TrainError::Model(apo_models::ModelError::Input(format!(
                            "record `{}`: {e}",
                            item.sample.dicom_id
                        )))
                    })?);
                }
                g
            }
        };
        texts.extend(generated.into_iter().map(|g| g.text));
        tracing::info!(
            images = texts.len(),
            of = items.len(),
            seconds = t0.elapsed().as_secs_f64(),
            "generated"
        );
    }
    Ok(crate::eval::report_from_texts(
        items, texts, evaluated, None,
    ))
}

/// [`evaluate_adapter`] with the run's base checkpoint and the adapter of stage `stage`
/// (`OUT/STAGE/adapter`).
///
/// # Errors
/// As [`evaluate_adapter`]; [`TrainError::NoModel`] when the stage has no adapter.
pub fn evaluate_on<B: Backend>(
    config: &RunConfig,
    stage: &str,
    items: &[Item],
    settings: &crate::eval::Generation,
    evaluated: &[cxr_max::Finding],
    device: &B::Device,
) -> Result<crate::eval::EvalReport> {
    let dir = adapter_dir(&config.run.out, stage);
    if !dir.join(lora::ADAPTER_CONFIG).is_file() {
        return Err(TrainError::NoModel {
            path: dir,
            reason: format!("stage `{stage}` has no adapter; train it first"),
        });
    }
    evaluate_adapter::<B>(
        base_dir(config)?,
        Some(&dir),
        items,
        settings,
        evaluated,
        device,
    )
}
