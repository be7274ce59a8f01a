//! The loop both stages share: resume, micro-batches, accumulation, clipping, AdamW,
//! schedule, metrics, checkpoints.

use std::path::Path;
use std::time::Instant;

use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};

use super::metrics::MetricsFile;
use super::optim::{clip, micro_seed, optimizer};
use super::{Observer, StageReport, StepMetrics};
use crate::checkpoint::{self, State};
use crate::config::{OptimConfig, RunSettings};
use crate::data;
use crate::error::io_err;
use crate::{Result, Student, StudentConfig, TrainError};

/// What a stage's step function returns for one micro-batch.
pub(super) struct MicroOut<B: AutodiffBackend> {
    pub(super) loss: Tensor<B, 1>,
    pub(super) tokens: usize,
    pub(super) extra: Option<apo_loss::Metrics>,
    /// The concept head's binary cross-entropy (unweighted), when the batch had targets.
    pub(super) concept: Option<f64>,
}

/// One stage's settings for the shared loop ([`Runner::run`]).
pub(super) struct Runner<'a> {
    /// Stage name (`sft` or the stage-2 name): checkpoints and metrics carry it.
    pub(super) stage: &'a str,
    /// The stage folder (checkpoints, `metrics.jsonl`).
    pub(super) dir: &'a Path,
    /// Optimiser and schedule.
    pub(super) opt: &'a OptimConfig,
    /// Peak learning rate.
    pub(super) peak_lr: f64,
    /// Seed, checkpoint cadence and how many to keep.
    pub(super) run: &'a RunSettings,
    /// The architecture (checked on resume).
    pub(super) model_config: &'a StudentConfig,
    /// Everything that must not change on resume.
    pub(super) fingerprint: &'a super::ResumeKey,
    /// Training units (groups) the micro-batches draw from.
    pub(super) units: usize,
    /// Resume from the newest checkpoint.
    pub(super) resume: bool,
}

impl Runner<'_> {
    /// The shared loop: resume, micro-batches, accumulation, clipping, AdamW, schedule,
    /// metrics, checkpoints. `micro` computes one micro-batch's loss for the units it is
    /// given; returns the trained model and the stage's report.
    pub(super) fn run<B, F>(
        &self,
        mut model: Student<B>,
        device: &B::Device,
        observer: &mut dyn Observer,
        mut micro: F,
    ) -> Result<(Student<B>, StageReport)>
    where
        B: AutodiffBackend,
        F: FnMut(&Student<B>, &[usize]) -> Result<MicroOut<B>>,
    {
        let Runner {
            stage,
            dir,
            opt,
            peak_lr,
            run,
            model_config,
            fingerprint,
            units,
            resume,
        } = *self;
        let start_time = Instant::now();
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let _lock = crate::lock::StageLock::acquire(dir)?;
        let mut optim = optimizer::<B>(opt);
        let mut start = 0;
        let mut resumed_from = None;
        let existing = checkpoint::list(dir)?;
        if resume {
            if let Some(path) = super::pick(dir, &existing, run.from_checkpoint)? {
                let state = checkpoint::read_state(&path, stage, fingerprint, model_config)?;
                super::check_steps(stage, state.step, state.steps, opt.steps)?;
                let (m, o) = checkpoint::load(&path, model, optim, device)?;
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
        let metrics = MetricsFile::open(dir.join("metrics.jsonl"), start)?;
        for step in start..opt.steps {
            let t0 = Instant::now();
            let lr = opt.lr_at(step, peak_lr);
            let mut accumulator = GradientsAccumulator::<Student<B>>::new();
            let (mut loss_sum, mut tokens) = (0.0, 0usize);
            let mut extras: Vec<apo_loss::Metrics> = Vec::new();
            let mut concept: Vec<f64> = Vec::new();
            for a in 0..opt.grad_accum {
                let m = step * opt.grad_accum + a;
                let which = data::micro_batch(run.seed, units, opt.batch_size, m);
                B::seed(device, micro_seed(run.seed, m));
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
            let tokens_per_s = tokens as f64 / t0.elapsed().as_secs_f64().max(1e-9);
            let m = StepMetrics::of_step(
                stage,
                step + 1,
                loss,
                lr,
                grad_norm,
                tokens_per_s,
                &extras,
                &concept,
            );
            metrics.write(&m)?;
            observer.step(opt.steps, &m);
            tracing::debug!(stage, step = step + 1, loss, lr, grad_norm, "step");
            let stop = super::stop_requested() && step + 1 < opt.steps;
            if super::metrics::checkpoint_due(run.checkpoint_every, step + 1, opt.steps, stop) {
                let state = State {
                    stage: stage.to_owned(),
                    step: step + 1,
                    steps: opt.steps,
                    micro_batches: (step + 1) * opt.grad_accum,
                    seed: run.seed,
                    lr,
                    fingerprint: fingerprint.hash.clone(),
                    identity: fingerprint.fields.clone(),
                    model: model_config.clone(),
                    files: Default::default(),
                };
                let saved = checkpoint::save(dir, &model, &optim, &state, run.keep_checkpoints)?;
                if stop {
                    return Err(TrainError::Interrupted {
                        stage: stage.to_owned(),
                        step: step + 1,
                        checkpoint: saved,
                    });
                }
            }
        }
        // The whole stage's first and last losses, also when it resumed (the metrics file keeps
        // the steps before the checkpoint).
        let (first_loss, last_loss) = metrics.first_last_loss()?;
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
}
