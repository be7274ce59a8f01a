//! Batched tensor implementation on any Burn backend (feature `burn`).
//!
//! The functions here compute the same numbers as the scalar reference
//! ([`PreferenceLoss::compute`]) on batches of examples, with gradients through any
//! `B: AutodiffBackend`. Reference log-probs are always detached.
//!
//! Layout: a batch of `B` examples with up to `N` negatives each is a `[B, 1 + N]` tensor of
//! summed log-probs, column 0 the chosen sequence, columns `1..=N` the rejected ones. Ragged
//! `N` is expressed with a `[B, N]` boolean mask (true = the negative exists); a masked
//! negative is a negative of weight 0 (left out of every objective, dropped from the
//! `plackett-luce-ranking` list, target 0 in `infonca`).

use burn::prelude::{Backend, Bool, Int, Tensor};
use burn::tensor::{TensorData, activation};

mod backends;
#[cfg(feature = "ndarray")]
mod cpu;

use crate::{
    Aggregation, Example, LossError, Metrics, Objective, PreferenceLoss, Reduction, Result,
    Sequence,
};

/// The finite stand-in for `ln 0 = −∞` of inactive entries in the listwise objectives: far
/// below any score, `e^{FILL − m}` is exactly 0 in f32, and unlike `−∞` it never meets `−∞`
/// or `+∞` in a difference (no NaN, forward or backward).
const FILL: f64 = -1e30;

/// Inputs of a batched preference objective.
///
/// # Shapes
/// - `policy`: `[B, 1 + N]`, summed completion log-probs under the policy (column 0 chosen)
/// - `reference`: `[B, 1 + N]`, the same under the reference (detached; omit for `simpo`)
/// - `tokens`: `[B, 1 + N]`, completion token counts as floats (for `mean` aggregation, `ipo`,
///   `simpo` and the SFT term)
/// - `mask`: `[B, N]`, true where a negative exists (all true when omitted)
/// - `weights`: `[B, N]`, per-negative weights ≥ 0 (all one when omitted)
/// - `rewards`: `[B, 1 + N]`, explicit rewards for `infonca`'s soft targets (column 0 chosen;
///   detached)
///
/// # Examples
/// ```
/// use apo_loss::tensor::PreferenceBatch;
/// use burn::backend::NdArray;
/// use burn::tensor::{Bool, Tensor, TensorData};
///
/// let device = Default::default();
/// // Two groups; the second has only one of its two negatives.
/// let policy = Tensor::<NdArray, 2>::from_floats([[-5.0, -7.0, -9.0], [-4.0, -6.0, 0.0]], &device);
/// let mask = Tensor::<NdArray, 2, Bool>::from_data(TensorData::from([[true, true], [true, false]]), &device);
/// let batch = PreferenceBatch::new(policy.clone(), policy).with_mask(mask);
/// assert_eq!(batch.dims(), (2, 2));
/// assert_eq!(batch.to_examples()[1].weights, Some(vec![1.0, 0.0]));
/// ```
#[derive(Debug, Clone)]
pub struct PreferenceBatch<B: Backend> {
    /// Policy log-probs `[B, 1 + N]`.
    pub policy: Tensor<B, 2>,
    /// Reference log-probs `[B, 1 + N]`.
    pub reference: Option<Tensor<B, 2>>,
    /// Token counts `[B, 1 + N]`.
    pub tokens: Option<Tensor<B, 2>>,
    /// Negative mask `[B, N]`.
    pub mask: Option<Tensor<B, 2, Bool>>,
    /// Per-negative weights `[B, N]`.
    pub weights: Option<Tensor<B, 2>>,
    /// Rewards `[B, 1 + N]` (`infonca` only).
    pub rewards: Option<Tensor<B, 2>>,
}

impl<B: Backend> PreferenceBatch<B> {
    /// A batch with policy and reference log-probs.
    pub fn new(policy: Tensor<B, 2>, reference: Tensor<B, 2>) -> Self {
        PreferenceBatch {
            policy,
            reference: Some(reference),
            tokens: None,
            mask: None,
            weights: None,
            rewards: None,
        }
    }

    /// A batch without reference log-probs (for `simpo`).
    pub fn reference_free(policy: Tensor<B, 2>) -> Self {
        PreferenceBatch {
            policy,
            reference: None,
            tokens: None,
            mask: None,
            weights: None,
            rewards: None,
        }
    }

    /// Sets the token counts.
    pub fn with_tokens(mut self, tokens: Tensor<B, 2>) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// Sets the negative mask.
    pub fn with_mask(mut self, mask: Tensor<B, 2, Bool>) -> Self {
        self.mask = Some(mask);
        self
    }

    /// Sets the per-negative weights.
    pub fn with_weights(mut self, weights: Tensor<B, 2>) -> Self {
        self.weights = Some(weights);
        self
    }

    /// Sets the rewards of `infonca`'s soft targets.
    pub fn with_rewards(mut self, rewards: Tensor<B, 2>) -> Self {
        self.rewards = Some(rewards);
        self
    }

    /// Batch size `B` and number of negative columns `N`.
    pub fn dims(&self) -> (usize, usize) {
        let [b, k] = self.policy.dims();
        (b, k.saturating_sub(1))
    }

    /// Reads the batch back to the host as scalar [`Example`]s (masked negatives get weight 0).
    pub fn to_examples(&self) -> Vec<Example> {
        let (b, n) = self.dims();
        let read = |t: &Tensor<B, 2>| host_f64(t.clone().into_data());
        let policy = read(&self.policy);
        let reference = self.reference.as_ref().map(read);
        let tokens = self.tokens.as_ref().map(read);
        let weights = self.weights.as_ref().map(read);
        let rewards = self.rewards.as_ref().map(read);
        let mask = self
            .mask
            .as_ref()
            .map(|m| m.clone().into_data().iter::<bool>().collect::<Vec<_>>());
        (0..b)
            .map(|row| {
                let seq = |i: usize| Sequence {
                    policy: policy[row * (n + 1) + i],
                    reference: reference.as_ref().map(|r| r[row * (n + 1) + i]),
                    tokens: tokens
                        .as_ref()
                        .map(|t| t[row * (n + 1) + i].round().max(0.0) as u64),
                };
                let has_weights = weights.is_some() || mask.is_some();
                let w = has_weights.then(|| {
                    (0..n)
                        .map(|u| {
                            let present = mask.as_ref().is_none_or(|m| m[row * n + u]);
                            let w = weights.as_ref().map_or(1.0, |w| w[row * n + u]);
                            if present { w } else { 0.0 }
                        })
                        .collect()
                });
                Example {
                    chosen: seq(0),
                    rejected: (1..=n).map(seq).collect(),
                    weights: w,
                    rewards: rewards
                        .as_ref()
                        .map(|r| r[row * (n + 1)..(row + 1) * (n + 1)].to_vec()),
                }
            })
            .collect()
    }
}

/// The result of [`PreferenceLoss::forward_with_metrics`].
///
/// # Examples
/// ```
/// use apo_loss::LossConfig;
/// use apo_loss::tensor::PreferenceBatch;
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
///
/// let device = Default::default();
/// let policy = Tensor::<NdArray, 2>::from_floats([[-5.0, -7.0], [-4.0, -6.0]], &device);
/// let reference = Tensor::<NdArray, 2>::from_floats([[-6.0, -6.0], [-4.0, -6.0]], &device);
/// let out = LossConfig::default().init()?.forward_with_metrics(&PreferenceBatch::new(policy, reference))?;
/// assert_eq!(out.metrics.len(), 2);
/// assert_eq!(out.metrics[0].top1_accuracy, 1.0);
/// assert!((out.metrics[1].p_chosen - 0.5).abs() < 1e-6);
/// # Ok::<(), apo_loss::LossError>(())
/// ```
#[derive(Debug, Clone)]
pub struct BatchOutput<B: Backend> {
    /// Mean loss over the batch, `[1]`, differentiable.
    pub loss: Tensor<B, 1>,
    /// Per-example losses `[B]`, differentiable.
    pub per_example: Tensor<B, 1>,
    /// Per-example metrics from the scalar reference, in batch order.
    pub metrics: Vec<Metrics>,
}

impl PreferenceLoss {
    /// The mean loss over the batch, `[1]`.
    ///
    /// # Errors
    /// As [`PreferenceLoss::forward_no_reduction`].
    ///
    /// # Examples
    /// ```
    /// use apo_loss::LossConfig;
    /// use apo_loss::tensor::PreferenceBatch;
    /// use burn::backend::NdArray;
    /// use burn::tensor::Tensor;
    ///
    /// let device = Default::default();
    /// let policy = Tensor::<NdArray, 2>::from_floats([[-5.0, -7.0, -9.0]], &device);
    /// let batch = PreferenceBatch::new(policy.clone(), policy);
    /// let loss = LossConfig::default().init()?.forward(&batch)?;
    /// let value: f32 = loss.into_scalar();
    /// assert!((value - 3f32.ln()).abs() < 1e-6);
    /// # Ok::<(), apo_loss::LossError>(())
    /// ```
    pub fn forward<B: Backend>(&self, batch: &PreferenceBatch<B>) -> Result<Tensor<B, 1>> {
        Ok(self.forward_no_reduction(batch)?.mean())
    }

    /// Per-example losses `[B]`.
    ///
    /// The inputs are validated first (shapes on the device; finiteness, token counts and
    /// weights after one read of the small `[B, 1 + N]` inputs to the host).
    ///
    /// # Errors
    /// [`LossError::Shape`] for inconsistent shapes, [`LossError::NoNegatives`] when `N = 0`,
    /// and every error [`PreferenceLoss::compute`] reports for a row (non-finite log-probs,
    /// missing reference or token counts, invalid weights, rows without an active negative).
    pub fn forward_no_reduction<B: Backend>(
        &self,
        batch: &PreferenceBatch<B>,
    ) -> Result<Tensor<B, 1>> {
        self.check_shapes(batch)?;
        self.check_rows(batch)?;
        Ok(self.per_example(batch))
    }

    /// Loss, per-example losses and per-example metrics in one call (one read to the host).
    ///
    /// # Errors
    /// As [`PreferenceLoss::forward_no_reduction`].
    pub fn forward_with_metrics<B: Backend>(
        &self,
        batch: &PreferenceBatch<B>,
    ) -> Result<BatchOutput<B>> {
        self.check_shapes(batch)?;
        let metrics = self.check_rows(batch)?;
        let per_example = self.per_example(batch);
        Ok(BatchOutput {
            loss: per_example.clone().mean(),
            per_example,
            metrics,
        })
    }

    fn check_shapes<B: Backend>(&self, batch: &PreferenceBatch<B>) -> Result<()> {
        let [b, k] = batch.policy.dims();
        if k < 2 {
            return Err(LossError::NoNegatives { row: None });
        }
        let n = k - 1;
        let same = |op: &'static str, dims: [usize; 2], expected: [usize; 2]| {
            if dims == expected {
                Ok(())
            } else {
                Err(LossError::Shape {
                    op,
                    expected: format!("{expected:?}"),
                    got: format!("{dims:?}"),
                })
            }
        };
        if let Some(r) = &batch.reference {
            same("reference", r.dims(), [b, k])?;
        }
        if let Some(t) = &batch.tokens {
            same("tokens", t.dims(), [b, k])?;
        }
        if let Some(m) = &batch.mask {
            same("mask", m.dims(), [b, n])?;
        }
        if let Some(w) = &batch.weights {
            same("weights", w.dims(), [b, n])?;
        }
        if let Some(r) = &batch.rewards {
            same("rewards", r.dims(), [b, k])?;
        }
        Ok(())
    }

    /// Runs the scalar validation on every row; returns the rows' metrics.
    fn check_rows<B: Backend>(&self, batch: &PreferenceBatch<B>) -> Result<Vec<Metrics>> {
        batch
            .to_examples()
            .iter()
            .enumerate()
            .map(|(row, ex)| {
                self.compute(ex)
                    .map(|o| o.metrics)
                    .map_err(|e| with_row(e, row))
            })
            .collect()
    }

    fn per_example<B: Backend>(&self, batch: &PreferenceBatch<B>) -> Tensor<B, 1> {
        let cfg = &self.config;
        let [b, k] = batch.policy.dims();
        let n = k - 1;
        let device = batch.policy.device();

        let mut log_ratio = batch.policy.clone();
        if let (true, Some(r)) = (cfg.objective.uses_reference(), &batch.reference) {
            log_ratio = log_ratio - r.clone().detach();
        }
        let tokens = batch.tokens.clone().map(|t| t.detach());
        let mut scores = log_ratio.mul_scalar(cfg.beta);
        if let (Aggregation::Mean, Some(t)) = (cfg.effective_aggregation(), &tokens) {
            scores = scores / t.clone();
        }
        let s0 = scores.clone().slice_dim(1, 0..1); // [B, 1]
        let sn = scores.slice_dim(1, 1..k); // [B, N]

        let mut weights = batch
            .weights
            .clone()
            .unwrap_or_else(|| Tensor::ones([b, n], &device));
        if let Some(m) = &batch.mask {
            weights = weights.mask_fill(m.clone().bool_not(), 0.0);
        }

        let loss: Tensor<B, 1> = match cfg.objective {
            Objective::PlackettLuce => {
                // L = logsumexp(0, d_1, …, d_N), d_u = s_u + ln w_u − s_0.
                let d = sn - s0 + weights.log();
                let a = Tensor::cat(vec![Tensor::zeros([b, 1], &device), d], 1);
                logsumexp_rows(a)
            }
            Objective::PlackettLuceRanking => {
                // Σ_k softplus(logsumexp_{j > k} (t_j − t_k)) over the active positions k: the
                // suffix logsumexp of every position, one masked logsumexp per position.
                let inactive = weights.clone().lower_equal_elem(0.0); // [B, N]
                let t = Tensor::cat(vec![s0, sn + finite_log(weights, inactive.clone())], 1);
                let mut loss = Tensor::<B, 1>::zeros([b], &device);
                for k in 0..n {
                    let lead = t.clone().slice_dim(1, k..k + 1); // [B, 1]
                    let below = t.clone().slice_dim(1, k + 1..n + 1); // [B, N − k]
                    let masked = inactive.clone().slice_dim(1, k..n);
                    let diff = (below - lead).mask_fill(masked, FILL);
                    let mut term = softplus(logsumexp_rows(diff));
                    if k > 0 {
                        // A masked position leads no term (and its tail is empty).
                        let off: Tensor<B, 1, Bool> =
                            inactive.clone().slice_dim(1, k - 1..k).squeeze_dim(1);
                        term = term.mask_fill(off, 0.0);
                    }
                    loss = loss + term;
                }
                loss
            }
            Objective::Infonca => match &batch.rewards {
                // One-hot target: the top-1 loss, as `plackett-luce`.
                None => {
                    let d = sn - s0 + weights.log();
                    logsumexp_rows(Tensor::cat(vec![Tensor::zeros([b, 1], &device), d], 1))
                }
                Some(r) => {
                    // L = Σ_i p_i (−ln q_i) with −ln q_i = softplus(logsumexp_{j≠i} (t_j − t_i))
                    // (a [B, 1 + N, 1 + N] matrix of differences; the diagonal and the inactive
                    // entries set to FILL), a sum of non-negative terms without cancellation.
                    let inactive = weights.clone().lower_equal_elem(0.0); // [B, N]
                    let off = Tensor::cat(
                        vec![
                            Tensor::<B, 2, Bool>::zeros([b, 1], &device),
                            inactive.clone(),
                        ],
                        1,
                    ); // [B, 1 + N]
                    let t = Tensor::cat(vec![s0, sn + finite_log(weights, inactive)], 1);
                    let diff = t.clone().unsqueeze_dim::<3>(1).expand([b, k, k])
                        - t.unsqueeze_dim::<3>(2).expand([b, k, k]); // [b, i, j] = t_j − t_i
                    let diagonal = Tensor::<B, 2, Bool>::diag_mask([k, k], 0, &device)
                        .bool_not()
                        .unsqueeze_dim::<3>(0)
                        .expand([b, k, k]);
                    let skip = off
                        .clone()
                        .unsqueeze_dim::<3>(1)
                        .expand([b, k, k])
                        .bool_or(diagonal);
                    let diff = diff.mask_fill(skip, FILL);
                    let m = diff.clone().detach().max_dim(2); // [B, 1 + N, 1]
                    let lse: Tensor<B, 2> =
                        ((diff - m.clone()).exp().sum_dim(2).log() + m).squeeze_dim(2);
                    // Targets p = softmax((R − R_0) / α) over the active sequences (detached).
                    let r = r.clone().detach();
                    let z = (r.clone() - r.slice_dim(1, 0..1))
                        .div_scalar(cfg.temperature)
                        .mask_fill(off, FILL);
                    let e = (z.clone() - z.max_dim(1)).exp();
                    let p = e.clone() / e.sum_dim(1);
                    (p * softplus(lse)).sum_dim(1).squeeze_dim(1)
                }
            },
            objective => {
                let x = s0 - sn; // [B, N]
                let eps = cfg.label_smoothing;
                let l = match objective {
                    Objective::PairwiseSigmoid => smoothed_sigmoid(x, eps),
                    Objective::Simpo => smoothed_sigmoid(x.sub_scalar(cfg.gamma), eps),
                    Objective::Robust => (softplus(x.clone().neg()).mul_scalar(1.0 - eps)
                        - softplus(x).mul_scalar(eps))
                    .div_scalar(1.0 - 2.0 * eps),
                    Objective::Hinge => activation::relu(x.neg().add_scalar(1.0)),
                    Objective::Ipo => {
                        let h = x.div_scalar(cfg.beta).sub_scalar(1.0 / (2.0 * cfg.beta));
                        h.clone() * h
                    }
                    Objective::PlackettLuce
                    | Objective::PlackettLuceRanking
                    | Objective::Infonca => unreachable!("handled above"),
                };
                let weighted = (l * weights.clone()).sum_dim(1); // [B, 1]
                match cfg.reduction {
                    Reduction::Mean => (weighted / weights.sum_dim(1)).squeeze_dim(1),
                    Reduction::Sum => weighted.squeeze_dim(1),
                }
            }
        };
        let loss = if cfg.preference_weight == 1.0 {
            loss
        } else {
            loss.mul_scalar(cfg.preference_weight)
        };
        match (cfg.sft_weight > 0.0, &tokens) {
            (true, Some(t)) => {
                let chosen_policy = batch.policy.clone().slice_dim(1, 0..1);
                let chosen_tokens = t.clone().slice_dim(1, 0..1);
                let nll = (chosen_policy.neg() / chosen_tokens).squeeze_dim(1);
                loss + nll.mul_scalar(cfg.sft_weight)
            }
            _ => loss,
        }
    }
}

fn with_row(error: LossError, row: usize) -> LossError {
    match error {
        LossError::NoNegatives { .. } => LossError::NoNegatives { row: Some(row) },
        LossError::NoActiveNegatives { .. } => LossError::NoActiveNegatives { row: Some(row) },
        LossError::NonFinite { what, value } => LossError::NonFinite {
            what: format!("row {row}: {what}"),
            value,
        },
        LossError::MissingReference {
            sequence,
            objective,
        } => LossError::MissingReference {
            sequence: format!("row {row}: {sequence}"),
            objective,
        },
        LossError::MissingTokens {
            sequence,
            needed_by,
        } => LossError::MissingTokens {
            sequence: format!("row {row}: {sequence}"),
            needed_by,
        },
        LossError::ZeroTokens { sequence } => LossError::ZeroTokens {
            sequence: format!("row {row}: {sequence}"),
        },
        other => other,
    }
}

fn host_f64(data: TensorData) -> Vec<f64> {
    data.convert::<f64>().iter::<f64>().collect()
}

/// Row-wise `logsumexp` of `[B, K]` → `[B]`, with the detached row maximum subtracted first.
///
/// # Examples
/// ```
/// use apo_loss::tensor::logsumexp_rows;
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
///
/// let x = Tensor::<NdArray, 2>::from_floats([[1000.0, 1000.0]], &Default::default());
/// let v: f32 = logsumexp_rows(x).into_scalar();
/// assert!((v - (1000.0 + 2f32.ln())).abs() < 1e-3);
/// ```
pub fn logsumexp_rows<B: Backend>(a: Tensor<B, 2>) -> Tensor<B, 1> {
    let m = a.clone().detach().max_dim(1); // [B, 1]
    ((a - m.clone()).exp().sum_dim(1).log() + m).squeeze_dim(1)
}

/// `ln w` where `inactive` is false and [`FILL`] where it is true, with no `ln 0` anywhere in
/// the graph.
fn finite_log<B: Backend>(weights: Tensor<B, 2>, inactive: Tensor<B, 2, Bool>) -> Tensor<B, 2> {
    weights
        .mask_fill(inactive.clone(), 1.0)
        .log()
        .mask_fill(inactive, FILL)
}

/// Element-wise `softplus(x) = ln(1 + e^x)`, stable for any `x` and with the exact gradient
/// `σ(x)` everywhere (computed as a two-term logsumexp with a detached maximum).
///
/// # Examples
/// ```
/// use apo_loss::tensor::softplus;
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
///
/// let x = Tensor::<NdArray, 1>::from_floats([-200.0, 0.0, 200.0], &Default::default());
/// let v: Vec<f32> = softplus(x).into_data().to_vec().unwrap();
/// assert_eq!(v[0], 0.0);
/// assert!((v[1] - 2f32.ln()).abs() < 1e-7);
/// assert_eq!(v[2], 200.0);
/// ```
pub fn softplus<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let m = x.clone().detach().clamp_min(0.0);
    let terms = m.clone().neg().exp() + (x - m.clone()).exp();
    terms.log() + m
}

/// `−(1−ε) ln σ(x) − ε ln σ(−x)`.
fn smoothed_sigmoid<B: Backend, const D: usize>(x: Tensor<B, D>, eps: f64) -> Tensor<B, D> {
    if eps == 0.0 {
        return softplus(x.neg());
    }
    softplus(x.clone().neg()).mul_scalar(1.0 - eps) + softplus(x).mul_scalar(eps)
}

/// Per-token log-probs of `targets` under `logits`, zero where `mask` is false.
///
/// `logits[b, t]` must score `targets[b, t]`: for a causal language model, shift first
/// (logits of positions `0..T−1` against input ids `1..T`). Targets at masked positions are
/// never read, so padding may hold any id (e.g. −100).
///
/// # Shapes
/// - `logits`: `[B, T, V]`
/// - `targets`: `[B, T]`
/// - `mask`: `[B, T]`, true for completion tokens
/// - output: `[B, T]`
///
/// # Errors
/// [`LossError::Shape`] when the shapes disagree, [`LossError::TargetOutOfRange`] when a scored
/// target id is not in `0..V`.
///
/// # Examples
/// ```
/// # #[cfg(feature = "ndarray")] {
/// use apo_loss::tensor::token_logprobs;
/// use burn::backend::NdArray;
/// use burn::tensor::{Bool, Int, Tensor, TensorData};
///
/// let device = Default::default();
/// let logits = Tensor::<NdArray, 3>::from_floats([[[0.0, 2f32.ln()], [5.0, 5.0]]], &device);
/// let targets = Tensor::<NdArray, 2, Int>::from_ints([[1, 0]], &device);
/// let mask = Tensor::<NdArray, 2, Bool>::from_data(TensorData::from([[true, false]]), &device);
/// let lp: Vec<f32> = token_logprobs(logits, targets, mask)?.into_data().to_vec().unwrap();
/// assert!((lp[0] - (2.0f32 / 3.0).ln()).abs() < 1e-6); // p = 2 / (1 + 2)
/// assert_eq!(lp[1], 0.0); // masked
/// # }
/// # Ok::<(), apo_loss::LossError>(())
/// ```
pub fn token_logprobs<B: LossKernels>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    mask: Tensor<B, 2, Bool>,
) -> Result<Tensor<B, 2>> {
    let [b, t, v] = logits.dims();
    for (op, dims) in [("targets", targets.dims()), ("mask", mask.dims())] {
        if dims != [b, t] {
            return Err(LossError::Shape {
                op,
                expected: format!("[{b}, {t}] to match logits [{b}, {t}, {v}]"),
                got: format!("{dims:?}"),
            });
        }
    }
    let targets = targets.mask_fill(mask.clone().bool_not(), 0);
    // One read of the small `[B, T]` inputs: range check, and the host kernel's inputs.
    let host_targets: Vec<i64> = targets.to_data().convert::<i64>().iter::<i64>().collect();
    let host_mask: Vec<bool> = mask.to_data().iter::<bool>().collect();
    if let Some(&id) = host_targets.iter().find(|&&id| id < 0 || id >= v as i64) {
        return Err(LossError::TargetOutOfRange { id, vocab: v });
    }
    Ok(B::token_logprobs_kernel(
        logits,
        targets,
        mask,
        &host_targets,
        &host_mask,
    ))
}

/// The backends [`token_logprobs`] runs on, each with its kernel for the log-softmax and
/// gather of the `[B, T, V]` logits (burn's pattern for custom kernels: a backend extension
/// trait).
///
/// The provided method is the composite graph ([`token_logprobs_composite`]) on the
/// backend's own device. The `ndarray` feature implements a fused CPU kernel with a
/// hand-written backward for `NdArray<f32>` and `Autodiff<NdArray<f32>, C>`
/// ([`LossKernels::FUSED_LOGPROBS`] is true for them); `NdArray<f64>` and, with the `wgpu` and
/// `cuda` features, burn's `Wgpu` and `Cuda` backends (and `Autodiff` over them) use the
/// composite graph. Another backend `MyBackend` opts in with `impl LossKernels for MyBackend {}`.
pub trait LossKernels: Backend {
    /// Whether [`LossKernels::token_logprobs_kernel`] is a fused kernel rather than the
    /// composite graph.
    const FUSED_LOGPROBS: bool = false;

    /// Per-token log-probs `[B, T]` of `targets` under `logits` (`[B, T, V]`), zero where
    /// `mask` is false; `host_targets` and `host_mask` are the same `[B, T]` inputs read to
    /// the host (masked targets set to 0, every target checked to be in `0..V`).
    fn token_logprobs_kernel(
        logits: Tensor<Self, 3>,
        targets: Tensor<Self, 2, Int>,
        mask: Tensor<Self, 2, Bool>,
        host_targets: &[i64],
        host_mask: &[bool],
    ) -> Tensor<Self, 2> {
        let _ = (host_targets, host_mask);
        token_logprobs_composite(logits, targets, mask)
    }
}

/// [`token_logprobs`] as burn's tensor operations on any backend (what
/// [`LossKernels::token_logprobs_kernel`] runs by default), without the input checks:
/// `targets` must be in `0..V` where `mask` is true (other positions are set to 0 first).
pub fn token_logprobs_composite<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    mask: Tensor<B, 2, Bool>,
) -> Tensor<B, 2> {
    let targets = targets.mask_fill(mask.clone().bool_not(), 0);
    let m = logits.clone().detach().max_dim(2); // [B, T, 1]
    let lse = (logits.clone() - m.clone()).exp().sum_dim(2).log() + m; // [B, T, 1]
    let picked = logits.gather(2, targets.unsqueeze_dim(2)); // [B, T, 1]
    let lp: Tensor<B, 2> = (picked - lse).squeeze_dim(2);
    lp.mask_fill(mask.bool_not(), 0.0)
}

/// Summed log-probs of the completion tokens of every sequence.
///
/// # Shapes
/// - `logits`: `[B, T, V]`
/// - `targets`: `[B, T]`
/// - `mask`: `[B, T]`, true for completion tokens (prompt and padding false)
/// - output: `[B]`
///
/// # Errors
/// As [`token_logprobs`].
///
/// # Examples
/// ```
/// # #[cfg(feature = "ndarray")] {
/// use apo_loss::tensor::sequence_logprobs;
/// use burn::backend::NdArray;
/// use burn::tensor::{Bool, Int, Tensor};
///
/// let device = Default::default();
/// // Uniform logits over 4 tokens: every scored token has log-prob ln(1/4).
/// let logits = Tensor::<NdArray, 3>::zeros([1, 3, 4], &device);
/// let targets = Tensor::<NdArray, 2, Int>::from_ints([[1, 2, -100]], &device);
/// let mask = Tensor::<NdArray, 2, Bool>::from_bool([[true, true, false]].into(), &device);
/// let lp: f32 = sequence_logprobs(logits, targets, mask)?.into_scalar();
/// assert!((lp - 2.0 * 0.25f32.ln()).abs() < 1e-6);
/// # }
/// # Ok::<(), apo_loss::LossError>(())
/// ```
pub fn sequence_logprobs<B: LossKernels>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    mask: Tensor<B, 2, Bool>,
) -> Result<Tensor<B, 1>> {
    Ok(token_logprobs(logits, targets, mask)?
        .sum_dim(1)
        .squeeze_dim(1))
}
