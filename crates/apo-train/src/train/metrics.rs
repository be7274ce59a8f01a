//! What a stage reports: per-step metrics (`metrics.jsonl`) and the stage's outcome.

use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::io_err;
use crate::{Result, TrainError};

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

/// One step's metric sums: over its micro-batches and, in a data-parallel run, over the
/// workers (each adds its shard's share; [`StepTotals::to_vec`] is what the workers sum).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StepTotals {
    /// Σ over micro-batches of the micro-batch's loss.
    pub loss: f64,
    /// Completion tokens of the step.
    pub tokens: f64,
    /// Per micro-batch: [concept present, concept loss, groups, then the sums over the groups
    /// of the 7 preference metrics of [`StepMetrics`]].
    pub micro: Vec<[f64; MICRO_FIELDS]>,
}

const MICRO_FIELDS: usize = 10;

impl StepTotals {
    /// Zero totals for `grad_accum` micro-batches.
    pub fn new(grad_accum: usize) -> Self {
        StepTotals {
            loss: 0.0,
            tokens: 0.0,
            micro: vec![[0.0; MICRO_FIELDS]; grad_accum],
        }
    }

    /// The length of [`StepTotals::to_vec`] for `grad_accum` micro-batches.
    pub fn len(grad_accum: usize) -> usize {
        2 + MICRO_FIELDS * grad_accum
    }

    /// Adds micro-batch `a`'s part: its loss, tokens, per-group preference metrics and
    /// concept loss.
    pub fn add(
        &mut self,
        a: usize,
        loss: f64,
        tokens: usize,
        groups: &[apo_loss::Metrics],
        concept: Option<f64>,
    ) {
        self.loss += loss;
        self.tokens += tokens as f64;
        let m = &mut self.micro[a];
        if let Some(c) = concept {
            m[0] += 1.0;
            m[1] += c;
        }
        m[2] += groups.len() as f64;
        for g in groups {
            for (k, v) in [
                g.reward_chosen,
                g.reward_rejected_mean,
                g.margin_mean,
                g.margin_max,
                g.top1_accuracy,
                g.pairwise_accuracy,
                g.p_chosen,
            ]
            .into_iter()
            .enumerate()
            {
                m[3 + k] += v;
            }
        }
    }

    /// The totals as one vector (what the workers of a data-parallel run sum).
    pub fn to_vec(&self) -> Vec<f64> {
        let mut v = vec![self.loss, self.tokens];
        for m in &self.micro {
            v.extend_from_slice(m);
        }
        v
    }

    /// [`StepTotals::to_vec`] read back.
    pub fn from_vec(v: &[f64]) -> Self {
        let micro = v[2..]
            .chunks_exact(MICRO_FIELDS)
            .map(|c| {
                let mut m = [0.0; MICRO_FIELDS];
                m.copy_from_slice(c);
                m
            })
            .collect();
        StepTotals {
            loss: v[0],
            tokens: v[1],
            micro,
        }
    }

    /// The step's metrics: the mean loss over the micro-batches, each preference metric
    /// averaged over a micro-batch's groups and then over the micro-batches that had groups,
    /// the concept loss over the micro-batches that had one.
    pub fn metrics(
        &self,
        stage: &str,
        step: usize,
        lr: f64,
        grad_norm: f64,
        seconds: f64,
    ) -> StepMetrics {
        let with_groups: Vec<&[f64; MICRO_FIELDS]> =
            self.micro.iter().filter(|m| m[2] > 0.0).collect();
        let mean = |k: usize| {
            (!with_groups.is_empty()).then(|| {
                with_groups.iter().map(|m| m[3 + k] / m[2]).sum::<f64>() / with_groups.len() as f64
            })
        };
        let concept: Vec<f64> = self
            .micro
            .iter()
            .filter(|m| m[0] > 0.0)
            .map(|m| m[1])
            .collect();
        StepMetrics {
            stage: stage.to_owned(),
            step,
            loss: self.loss / self.micro.len().max(1) as f64,
            lr,
            grad_norm,
            tokens_per_s: self.tokens / seconds.max(1e-9),
            reward_chosen: mean(0),
            reward_rejected: mean(1),
            margin: mean(2),
            margin_max: mean(3),
            top1_accuracy: mean(4),
            pairwise_accuracy: mean(5),
            p_chosen: mean(6),
            concept_loss: (!concept.is_empty())
                .then(|| concept.iter().sum::<f64>() / concept.len() as f64),
        }
    }
}

/// Whether step `step` (1-based) of `steps` writes a checkpoint: every `every` steps
/// (0: never in between), at the last step, and at a requested stop.
pub(crate) fn checkpoint_due(every: usize, step: usize, steps: usize, stop: bool) -> bool {
    (every > 0 && step.is_multiple_of(every)) || step == steps || stop
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
    /// Digest of the final weights' bits ([`crate::Student::weights_digest`]).
    pub weights_digest: String,
}

/// A stage's `metrics.jsonl`, one [`StepMetrics`] line per step.
pub(crate) struct MetricsFile {
    pub(crate) path: PathBuf,
}

impl MetricsFile {
    /// Opens the stage's metrics file, dropping lines beyond `keep_steps` (a resumed run
    /// rewrites the steps after its checkpoint).
    pub(crate) fn open(path: PathBuf, keep_steps: usize) -> Result<Self> {
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
        Ok(MetricsFile { path })
    }

    /// `DIR/metrics.jsonl` opened at `start` for the worker that writes the run's files (the
    /// first); `None` for every other worker.
    ///
    /// # Errors
    /// As [`MetricsFile::open`].
    pub(crate) fn of_first<B: burn::tensor::backend::AutodiffBackend>(
        w: &crate::parallel::Worker<B>,
        dir: &std::path::Path,
        start: usize,
    ) -> Result<Option<Self>> {
        if !w.is_first() {
            return Ok(None);
        }
        Self::open(dir.join("metrics.jsonl"), start).map(Some)
    }

    /// The first and last losses logged in the metrics file at `path` (the whole stage's, also
    /// across a resume); NaN for both when it does not
    /// exist (a worker on another node than the one that writes the metrics).
    pub(crate) fn first_last_of(path: &std::path::Path) -> Result<(f64, f64)> {
        if !path.exists() {
            return Ok((f64::NAN, f64::NAN));
        }
        let logged: Vec<StepMetrics> = std::fs::read_to_string(path)
            .map_err(io_err(path))?
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        Ok((
            logged.first().map_or(f64::NAN, |m| m.loss),
            logged.last().map_or(f64::NAN, |m| m.loss),
        ))
    }

    pub(crate) fn write(&self, m: &StepMetrics) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io_err(&self.path))?;
        let line = serde_json::to_string(m).map_err(|e| TrainError::Empty(e.to_string()))?;
        writeln!(f, "{line}").map_err(io_err(&self.path))
    }
}
