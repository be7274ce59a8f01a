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

impl StepMetrics {
    /// A step's metrics: the preference metrics averaged over the groups of the step
    /// (`extras`; none for stage 1), the concept loss over the micro-batches that had one.
    #[allow(clippy::too_many_arguments)] // the fields of one line of metrics.jsonl
    pub(crate) fn of_step(
        stage: &str,
        step: usize,
        loss: f64,
        lr: f64,
        grad_norm: f64,
        tokens_per_s: f64,
        extras: &[apo_loss::Metrics],
        concept: &[f64],
    ) -> Self {
        let mean = |f: &dyn Fn(&apo_loss::Metrics) -> f64| {
            (!extras.is_empty()).then(|| extras.iter().map(f).sum::<f64>() / extras.len() as f64)
        };
        StepMetrics {
            stage: stage.to_owned(),
            step,
            loss,
            lr,
            grad_norm,
            tokens_per_s,
            reward_chosen: mean(&|x| x.reward_chosen),
            reward_rejected: mean(&|x| x.reward_rejected_mean),
            margin: mean(&|x| x.margin_mean),
            margin_max: mean(&|x| x.margin_max),
            top1_accuracy: mean(&|x| x.top1_accuracy),
            pairwise_accuracy: mean(&|x| x.pairwise_accuracy),
            p_chosen: mean(&|x| x.p_chosen),
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

    /// The first and last logged losses (the whole stage's, also across a resume).
    pub(crate) fn first_last_loss(&self) -> Result<(f64, f64)> {
        let logged: Vec<StepMetrics> = std::fs::read_to_string(&self.path)
            .map_err(io_err(&self.path))?
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
