//! The loop both stages share: resume, micro-batches, accumulation, clipping, AdamW,
//! schedule, metrics, checkpoints.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;

use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};

use super::metrics::{MetricsFile, StepTotals};
use super::optim::{clip, micro_seed, optimizer};
use super::{Observer, StageReport};
use crate::checkpoint::{self, State};
use crate::config::{OptimConfig, RunSettings};
use crate::data;
use crate::error::io_err;
use crate::{Result, Student, StudentConfig, TrainError};

/// What a stage's step function returns for its shard of one micro-batch (the whole
/// micro-batch on one device). The loss and concept loss are the shard's share of the
/// micro-batch's: normalised by the whole micro-batch's token, group or target count, so that
/// the shares of all workers add up to the single-device values.
pub(super) struct MicroOut<B: AutodiffBackend> {
    pub(super) loss: Tensor<B, 1>,
    pub(super) tokens: usize,
    /// The preference metrics of each group of the shard (stage 2).
    pub(super) extra: Vec<apo_loss::Metrics>,
    /// The concept head's binary cross-entropy (unweighted, the shard's share), when the
    /// shard had targets.
    pub(super) concept: Option<f64>,
}

/// `part / whole` as a loss factor, `None` when the part is the whole (one device: no
/// multiplication, so a single-device run computes exactly what it did before).
pub(super) fn share(part: usize, whole: usize) -> Option<f64> {
    (part != whole).then(|| part as f64 / whole.max(1) as f64)
}

/// A finished optimiser step, for [`StepEnd::finish`].
pub(crate) struct StepEnd<'a> {
    pub(crate) stage: &'a str,
    /// 1-based.
    pub(crate) step: usize,
    pub(crate) opt: &'a OptimConfig,
    pub(crate) run: &'a RunSettings,
    pub(crate) lr: f64,
    pub(crate) grad_norm: f64,
    pub(crate) seconds: f64,
}

impl StepEnd<'_> {
    /// What both training loops do after a step's update: the first worker logs it (the
    /// metrics file, `observer`; a write error waits in `pending` for the next exchange);
    /// every worker learns whether a stop was asked for anywhere; at a checkpoint step the
    /// first worker runs `save` and all agree on its outcome.
    ///
    /// # Errors
    /// [`TrainError::Interrupted`] after the checkpoint of a stop; the save's error (on every
    /// worker); collective errors.
    pub(crate) fn finish<B: AutodiffBackend>(
        &self,
        w: &crate::parallel::Worker<B>,
        metrics: Option<&MetricsFile>,
        observer: &mut dyn Observer,
        stats: &[f64],
        pending: &mut Option<TrainError>,
        save: impl FnOnce() -> Result<PathBuf>,
    ) -> Result<()> {
        let StepEnd {
            stage,
            step,
            opt,
            run,
            lr,
            grad_norm,
            seconds,
        } = *self;
        if let Some(metrics) = metrics {
            let m = StepTotals::from_vec(stats).metrics(stage, step, lr, grad_norm, seconds);
            if let Err(e) = metrics.write(&m) {
                *pending = Some(e);
            }
            observer.step(opt.steps, &m);
            tracing::debug!(stage, step, loss = m.loss, lr, grad_norm, "step");
        }
        // A stop asked for on any worker (read after the step): all stop here.
        let stop = w.any(super::stop_requested())? && step < opt.steps;
        if !super::metrics::checkpoint_due(run.checkpoint_every, step, opt.steps, stop) {
            return Ok(());
        }
        let saved = match (w.is_first(), pending.take()) {
            (_, Some(e)) => Err(e),
            (false, None) => Ok(PathBuf::new()),
            (true, None) => save(),
        };
        let saved = w.agree(saved)?;
        if stop {
            return Err(TrainError::Interrupted {
                stage: stage.to_owned(),
                step,
                checkpoint: saved,
            });
        }
        Ok(())
    }
}

/// A stage's micro-batches can be split over the run's workers: at least one unit each.
///
/// # Errors
/// [`TrainError::Config`] naming `STAGE.batch_size`; invalid data-parallel settings.
pub(crate) fn check_shards(stage: &str, opt: &OptimConfig, run: &RunSettings) -> Result<()> {
    run.validate_parallel()?;
    if opt.batch_size < run.world() {
        return Err(TrainError::Config {
            field: format!("{stage}.batch_size"),
            value: opt.batch_size.to_string(),
            expected: format!(
                "at least the number of workers ({}): each worker takes a part of every micro-batch",
                run.world()
            ),
        });
    }
    Ok(())
}

/// The workers on this machine: `run.devices` in a data-parallel run, else 1.
pub(crate) fn local_workers(run: &RunSettings) -> usize {
    if run.world() > 1 { run.devices } else { 1 }
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
    /// Seed, checkpoint cadence, how many to keep, devices.
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
    /// metrics, checkpoints; on `run.devices` devices, data-parallel ([`crate::parallel`]).
    /// `micro(model, batch, shard, device)` computes the share of the micro-batch `batch`
    /// (unit indices) of the units at positions `shard`; returns the trained model and the
    /// stage's report.
    pub(super) fn run<B, F>(
        &self,
        model: Student<B>,
        device: &B::Device,
        observer: &mut dyn Observer,
        micro: F,
    ) -> Result<(Student<B>, StageReport)>
    where
        B: AutodiffBackend,
        F: Fn(&Student<B>, &[usize], Range<usize>, &B::Device) -> Result<MicroOut<B>> + Sync,
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
        check_shards(stage, opt, run)?;
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let _lock = crate::lock::StageLock::acquire(dir)?;
        let mut start = 0;
        let mut resumed_from = None;
        let existing = checkpoint::list(dir)?;
        let mut from = None;
        if resume {
            if let Some(path) = super::pick(dir, &existing, run.from_checkpoint)? {
                let state = checkpoint::read_state(&path, stage, fingerprint, model_config)?;
                super::check_steps(stage, state.step, state.steps, opt.steps)?;
                start = state.step;
                resumed_from = Some(state.step);
                from = Some(path);
            }
        } else {
            for (_, path) in existing {
                std::fs::remove_dir_all(&path).map_err(io_err(&path))?;
            }
        }
        // Each worker's copy: the first takes the model, the others a detached copy on their
        // device (their own autodiff leaves).
        let local_devices = crate::parallel::devices::<B>(device, local_workers(run));
        let copies = crate::parallel::Copies::new(model, &local_devices, |m, d| m.clone().fork(d));
        let stats_len = StepTotals::len(opt.grad_accum);
        let model = crate::parallel::run::<B, _, _>(run, device, observer, |w, observer| {
            let dev = &w.device;
            let setup = (|| -> Result<_> {
                let model = copies.take(w.local_index())?;
                let optim = optimizer::<B>(opt);
                let (model, optim) = match &from {
                    Some(path) => {
                        let (m, o) = checkpoint::load(path, model, optim, dev)?;
                        if w.is_first() {
                            tracing::info!(stage, step = start, checkpoint = %path.display(), "resumed");
                        }
                        (m, o)
                    }
                    None => (model, optim),
                };
                let metrics = MetricsFile::of_first(w, dir, start)?;
                Ok((model, optim, metrics))
            })();
            let (mut model, mut optim, metrics) = w.agree(setup)?;
            // An error of the first worker's bookkeeping (metrics, checkpoint), reported to the
            // others at the next exchange.
            let mut pending: Option<TrainError> = None;
            for step in start..opt.steps {
                let t0 = Instant::now();
                let lr = opt.lr_at(step, peak_lr);
                let local_step = match pending.take() {
                    Some(e) => Err(e),
                    None => (|| -> Result<_> {
                        let mut accumulator = GradientsAccumulator::<Student<B>>::new();
                        let mut totals = StepTotals::new(opt.grad_accum);
                        for a in 0..opt.grad_accum {
                            let m = step * opt.grad_accum + a;
                            let which = data::micro_batch(run.seed, units, opt.batch_size, m);
                            B::seed(dev, micro_seed(run.seed, m));
                            let shard = w.shard(which.len());
                            let out = micro(&model, &which, shard, dev)?;
                            let value: f64 = out.loss.clone().into_scalar().elem();
                            if !value.is_finite() {
                                return Err(TrainError::Empty(format!(
                                    "{stage} step {}: the loss is {value}; lower the learning rate",
                                    step + 1
                                )));
                            }
                            totals.add(a, value, out.tokens, &out.extra, out.concept);
                            let loss = out.loss.div_scalar(opt.grad_accum as f64);
                            let grads = GradientsParams::from_grads(loss.backward(), &model);
                            accumulator.accumulate(&model, grads);
                        }
                        Ok((accumulator.grads(), totals.to_vec()))
                    })(),
                };
                let synced = w.sync(&model, local_step, stats_len)?;
                let mut grads = synced.grads;
                let grad_norm = clip(&model, &mut grads, opt.grad_clip);
                model = optim.step(lr, model, grads);
                let done = StepEnd {
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
                        checkpoint::save(dir, &model, &optim, &state, run.keep_checkpoints)
                    },
                )?;
            }
            w.agree(pending.map_or(Ok(()), Err))?;
            Ok(model)
        })?;
        // The whole stage's first and last losses, also when it resumed (the metrics file keeps
        // the steps before the checkpoint).
        let (first_loss, last_loss) = MetricsFile::first_last_of(&dir.join("metrics.jsonl"))?;
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
