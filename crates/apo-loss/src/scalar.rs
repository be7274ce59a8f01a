//! The f64 scalar reference: one example, exact gradients, TRL-style metrics.

use crate::math::{logsumexp, sigmoid, softplus};
use crate::{Aggregation, LossError, Objective, PreferenceLoss, Reduction, Result};

/// One sequence of a preference example: its summed completion log-probs.
///
/// # Examples
/// ```
/// use apo_loss::Sequence;
/// let s = Sequence::new(-12.5, -13.0).with_tokens(20);
/// assert_eq!(s.reference, Some(-13.0));
/// let free = Sequence::reference_free(-12.5);
/// assert_eq!(free.reference, None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct Sequence {
    /// `log π_θ(y | x)`: the policy's summed log-prob of the completion tokens.
    pub policy: f64,
    /// `log π_ref(y | x)`: the reference model's summed log-prob (absent for reference-free
    /// objectives).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub reference: Option<f64>,
    /// Number of completion tokens scored (needed by `ipo`, `simpo`, `mean` aggregation and
    /// the SFT term).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub tokens: Option<u64>,
}

impl Sequence {
    /// A sequence with policy and reference log-probs.
    pub fn new(policy: f64, reference: f64) -> Self {
        Sequence {
            policy,
            reference: Some(reference),
            tokens: None,
        }
    }

    /// A sequence with a policy log-prob only (for `simpo`).
    pub fn reference_free(policy: f64) -> Self {
        Sequence {
            policy,
            reference: None,
            tokens: None,
        }
    }

    /// Sets the number of completion tokens.
    pub fn with_tokens(mut self, tokens: u64) -> Self {
        self.tokens = Some(tokens);
        self
    }
}

/// One preference example: a chosen sequence, N ≥ 1 rejected ones, optional weights and, for
/// `infonca`, optional rewards.
///
/// # Examples
/// ```
/// use apo_loss::{Example, Sequence};
/// let ex = Example::new(Sequence::new(-10.0, -11.0), vec![Sequence::new(-12.0, -11.5)]);
/// assert_eq!(ex.rejected.len(), 1);
/// let ex = ex.with_rewards(vec![1.0, 0.4]);
/// assert_eq!(ex.rewards.as_deref(), Some(&[1.0, 0.4][..]));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct Example {
    /// The preferred sequence (in APO, the consensus trajectory).
    pub chosen: Sequence,
    /// The rejected sequences (in APO, every teacher trajectory).
    pub rejected: Vec<Sequence>,
    /// Optional per-negative weights `w_u ≥ 0`; weight 0 removes a negative.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub weights: Option<Vec<f64>>,
    /// Optional explicit rewards `R_i`, one per sequence (index 0 the chosen one, then one per
    /// negative), from which `infonca` forms its soft targets `softmax(R / α)` (in APO, the
    /// agreement of each trajectory with the consensus). Only `infonca` reads them; without
    /// them its target is one-hot on the chosen sequence.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub rewards: Option<Vec<f64>>,
}

impl Example {
    /// An unweighted example.
    pub fn new(chosen: Sequence, rejected: Vec<Sequence>) -> Self {
        Example {
            chosen,
            rejected,
            weights: None,
            rewards: None,
        }
    }

    /// Sets per-negative weights.
    pub fn with_weights(mut self, weights: Vec<f64>) -> Self {
        self.weights = Some(weights);
        self
    }

    /// Sets the rewards (`N + 1` values, the chosen sequence's first).
    pub fn with_rewards(mut self, rewards: Vec<f64>) -> Self {
        self.rewards = Some(rewards);
        self
    }
}

/// The loss of one example, its gradient and its metrics.
///
/// # Examples
/// ```
/// use apo_loss::{Example, LossConfig, Sequence};
/// let ex = Example::new(Sequence::new(-3.0, -4.0), vec![Sequence::new(-5.0, -4.0); 3]);
/// let out = LossConfig::default().init()?.compute(&ex)?;
/// assert_eq!(out.grad_rejected.len(), 3);
/// // The preference gradients sum to zero (shift invariance).
/// let total = out.grad_chosen + out.grad_rejected.iter().sum::<f64>();
/// assert!(total.abs() < 1e-15);
/// # Ok::<(), apo_loss::LossError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LossOutput {
    /// The loss value (preference term plus the optional SFT term).
    pub loss: f64,
    /// `∂loss / ∂ log π_θ(chosen)`.
    pub grad_chosen: f64,
    /// `∂loss / ∂ log π_θ(rejected[u])`.
    pub grad_rejected: Vec<f64>,
    /// What TRL users read in their logs.
    pub metrics: Metrics,
}

/// Per-example metrics, computed from the scores `s_i` (rewards) of the active negatives.
///
/// # Examples
/// ```
/// use apo_loss::{Example, LossConfig, Sequence};
/// // Scores s = 0.1·(π − ρ): chosen 0.2, rejected 0.1 and 0.3.
/// let ex = Example::new(
///     Sequence::new(-8.0, -10.0),
///     vec![Sequence::new(-9.0, -10.0), Sequence::new(-7.0, -10.0)],
/// );
/// let m = LossConfig::default().init()?.compute(&ex)?.metrics;
/// assert!((m.reward_chosen - 0.2).abs() < 1e-12);
/// assert_eq!(m.top1_accuracy, 0.0);
/// assert_eq!(m.pairwise_accuracy, 0.5);
/// assert!((m.margin_mean - 0.0).abs() < 1e-12);
/// # Ok::<(), apo_loss::LossError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Metrics {
    /// The preference term alone (without the SFT term).
    pub preference_loss: f64,
    /// Implicit reward of the chosen sequence, `s_0`.
    pub reward_chosen: f64,
    /// Implicit reward of every negative, `s_u` (masked negatives included, as given).
    pub rewards_rejected: Vec<f64>,
    /// Mean reward of the active negatives.
    pub reward_rejected_mean: f64,
    /// `s_0 − mean_u s_u` over active negatives.
    pub margin_mean: f64,
    /// `s_0 − max_u s_u` over active negatives.
    pub margin_max: f64,
    /// `1[s_0 > max_u s_u]` (ties count as wrong, as in TRL).
    pub top1_accuracy: f64,
    /// `mean_u 1[s_0 > s_u]` over active negatives.
    pub pairwise_accuracy: f64,
    /// Plackett-Luce probability of the chosen sequence, `e^{s_0} / (e^{s_0} + Σ w_u e^{s_u})`.
    pub p_chosen: f64,
    /// Token-mean negative log-likelihood of the chosen sequence, when its token count is known.
    pub nll_chosen: Option<f64>,
}

/// Per-sequence score ingredients after validation.
struct Scored {
    /// Log-ratios `a_i = (log π_θ − log π_ref) / len_i`, index 0 = chosen; `s_i = β a_i`.
    log_ratios: Vec<f64>,
    /// Scores `s_i`, index 0 = chosen.
    scores: Vec<f64>,
    /// `∂s_i / ∂ log π_θ(y_i)`.
    dscore: Vec<f64>,
    /// `ln w_u` per negative (`−∞` for weight 0).
    log_weights: Vec<f64>,
    /// `w_u` per negative.
    weights: Vec<f64>,
    /// Validated rewards (`infonca` only), index 0 = chosen.
    rewards: Option<Vec<f64>>,
}

impl Scored {
    /// `ln w_i` of sequence `i` (index 0 = chosen, `w_0 = 1`).
    fn log_weight(&self, i: usize) -> f64 {
        if i == 0 { 0.0 } else { self.log_weights[i - 1] }
    }

    /// `t_i − t_k` for `t_i = s_i + ln w_i`, the difference of the log-ratios taken before the
    /// scaling by β (one rounding fewer).
    fn diff(&self, beta: f64, i: usize, k: usize) -> f64 {
        beta * (self.log_ratios[i] - self.log_ratios[k]) + self.log_weight(i) - self.log_weight(k)
    }
}

fn seq_name(i: usize) -> String {
    if i == 0 {
        "chosen".to_owned()
    } else {
        format!("rejected[{}]", i - 1)
    }
}

fn check_finite(what: impl FnOnce() -> String, value: f64) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(LossError::NonFinite {
            what: what(),
            value,
        })
    }
}

impl PreferenceLoss {
    /// Evaluates the objective on one example, returning the loss, its gradient with respect to
    /// every policy log-prob and the metrics.
    ///
    /// # Errors
    /// [`LossError::NoNegatives`], [`LossError::LengthMismatch`] (weights, rewards),
    /// [`LossError::NonFinite`] (log-probs, rewards), [`LossError::InvalidWeight`],
    /// [`LossError::NoActiveNegatives`], [`LossError::MissingReference`],
    /// [`LossError::MissingTokens`], [`LossError::ZeroTokens`], and
    /// [`LossError::UnsupportedOption`] for rewards given to an objective other than `infonca`.
    ///
    /// # Examples
    /// ```
    /// use apo_loss::{Example, LossConfig, Sequence};
    /// // Policy equal to reference: every score is 0 and the APO loss is ln(N + 1).
    /// let ex = Example::new(Sequence::new(-5.0, -5.0), vec![Sequence::new(-7.0, -7.0); 7]);
    /// let out = LossConfig::default().init()?.compute(&ex)?;
    /// assert!((out.loss - 8f64.ln()).abs() < 1e-12);
    /// assert!((out.grad_chosen - 0.1 * (1.0 / 8.0 - 1.0)).abs() < 1e-12);
    /// # Ok::<(), apo_loss::LossError>(())
    /// ```
    pub fn compute(&self, example: &Example) -> Result<LossOutput> {
        let cfg = &self.config;
        let scored = self.score(example)?;
        let n = example.rejected.len();
        let s0 = scored.scores[0];
        let sn = &scored.scores[1..];
        let a = &scored.log_ratios;
        let active: Vec<usize> = (0..n).filter(|&u| scored.weights[u] > 0.0).collect();

        // d_u = s_u + ln w_u − s_0 for the Plackett-Luce quantities; D = logsumexp_u d_u.
        // Differences are taken on log-ratios before scaling by β: one rounding fewer.
        let beta = cfg.beta;
        let d: Vec<f64> = (0..n)
            .map(|u| beta * (a[u + 1] - a[0]) + scored.log_weights[u])
            .collect();
        let big_d = logsumexp(&d);
        let log_norm = softplus(big_d); // ln(1 + Σ_u w_u e^{d_u})
        let p_chosen = (-log_norm).exp();

        // The active sequences in list order: the chosen one, then the negatives of weight > 0.
        let list: Vec<usize> = std::iter::once(0)
            .chain(active.iter().map(|&u| u + 1))
            .collect();

        // dL/ds_i for the preference term.
        let mut dl_ds = vec![0.0; n + 1];
        let preference_loss = match cfg.objective {
            Objective::PlackettLuce => {
                dl_ds[0] = -sigmoid(big_d);
                for u in 0..n {
                    dl_ds[u + 1] = (d[u] - log_norm).exp();
                }
                log_norm
            }
            Objective::PlackettLuceRanking => {
                // Σ_k softplus(D_k), D_k = logsumexp_{j after k} (t_j − t_k): the top-1 loss of
                // each position over the positions below it; the k = 0 term is `plackett-luce`.
                let mut loss = 0.0;
                for (pos, &k) in list.iter().enumerate() {
                    let rest = &list[pos + 1..];
                    if rest.is_empty() {
                        break;
                    }
                    let (dk, big_dk, term) = if k == 0 {
                        let dk: Vec<f64> = rest.iter().map(|&i| d[i - 1]).collect();
                        (dk, big_d, log_norm)
                    } else {
                        let dk: Vec<f64> = rest.iter().map(|&i| scored.diff(beta, i, k)).collect();
                        let big_dk = logsumexp(&dk);
                        (dk, big_dk, softplus(big_dk))
                    };
                    loss += term;
                    dl_ds[k] -= sigmoid(big_dk);
                    for (&i, &x) in rest.iter().zip(&dk) {
                        dl_ds[i] += (x - term).exp();
                    }
                }
                loss
            }
            Objective::Infonca => {
                // Model probabilities q = softmax(t): q_0 = σ(−D), q_u = e^{d_u − softplus(D)};
                // dL/ds_i = q_i − p_i, here first for the one-hot target (`plackett-luce`).
                dl_ds[0] = -sigmoid(big_d);
                for u in 0..n {
                    dl_ds[u + 1] = (d[u] - log_norm).exp();
                }
                match &scored.rewards {
                    None => log_norm,
                    Some(r) => {
                        // p = softmax(R / α) over the active sequences, from differences to R_0.
                        let alpha = cfg.temperature;
                        let z: Vec<f64> = list.iter().map(|&i| (r[i] - r[0]) / alpha).collect();
                        let lse = logsumexp(&z);
                        let p: Vec<f64> = z.iter().map(|&x| (x - lse).exp()).collect();
                        // L = Σ_i p_i (−ln q_i), −ln q_i the top-1 loss of i over the others.
                        let mut loss = p[0] * log_norm;
                        for (&i, &pi) in list.iter().zip(&p).skip(1) {
                            if pi > 0.0 {
                                let others: Vec<f64> = list
                                    .iter()
                                    .filter(|&&j| j != i)
                                    .map(|&j| scored.diff(beta, j, i))
                                    .collect();
                                loss += pi * softplus(logsumexp(&others));
                            }
                        }
                        // dL/ds_i = q_i − p_i. Where both are above ½ (at most one sequence),
                        // it is (1 − p_i) − (1 − q_i) from the others' probabilities, each
                        // small and accurate: the direct difference of two numbers near 1
                        // would lose every digit. For the chosen sequence, whose 1 − q_0 is
                        // σ(D), the same form serves whenever either is above ½.
                        let q0 = sigmoid(-big_d);
                        let q: Vec<f64> = list
                            .iter()
                            .map(|&i| if i == 0 { q0 } else { dl_ds[i] })
                            .collect();
                        let p_rejected: f64 = p[1..].iter().sum();
                        dl_ds[0] = if p[0] > 0.5 || q0 > 0.5 {
                            p_rejected - sigmoid(big_d)
                        } else {
                            q0 - p[0]
                        };
                        for (pos, &i) in list.iter().enumerate().skip(1) {
                            dl_ds[i] = if p[pos] > 0.5 && q[pos] > 0.5 {
                                let others = |v: &[f64]| -> f64 {
                                    (0..v.len()).filter(|&j| j != pos).map(|j| v[j]).sum()
                                };
                                others(&p) - others(&q)
                            } else {
                                q[pos] - p[pos]
                            };
                        }
                        loss
                    }
                }
            }
            objective => {
                let total_w: f64 = match cfg.reduction {
                    Reduction::Mean => scored.weights.iter().sum(),
                    Reduction::Sum => 1.0,
                };
                let mut loss = 0.0;
                for &u in &active {
                    let x = beta * (a[0] - a[u + 1]);
                    let (l, dl_dx) =
                        pairwise(objective, cfg.beta, cfg.label_smoothing, cfg.gamma, x);
                    let w = scored.weights[u] / total_w;
                    loss += w * l;
                    dl_ds[0] += w * dl_dx;
                    dl_ds[u + 1] -= w * dl_dx;
                }
                loss
            }
        };

        let pw = cfg.preference_weight;
        let mut loss = pw * preference_loss;
        let nll_chosen = example
            .chosen
            .tokens
            .map(|t| -example.chosen.policy / t as f64);
        let mut grad: Vec<f64> = (0..=n).map(|i| pw * dl_ds[i] * scored.dscore[i]).collect();
        if cfg.sft_weight > 0.0 {
            // Presence of the token count was checked in `score`.
            let t = example.chosen.tokens.unwrap_or(1) as f64;
            loss += cfg.sft_weight * (-example.chosen.policy / t);
            grad[0] -= cfg.sft_weight / t;
        }

        let k = active.len() as f64;
        let reward_rejected_mean = active.iter().map(|&u| sn[u]).sum::<f64>() / k;
        let max_rejected = active
            .iter()
            .map(|&u| sn[u])
            .fold(f64::NEG_INFINITY, f64::max);
        let metrics = Metrics {
            preference_loss,
            reward_chosen: s0,
            rewards_rejected: sn.to_vec(),
            reward_rejected_mean,
            margin_mean: s0 - reward_rejected_mean,
            margin_max: s0 - max_rejected,
            top1_accuracy: f64::from(u8::from(s0 > max_rejected)),
            pairwise_accuracy: active.iter().filter(|&&u| s0 > sn[u]).count() as f64 / k,
            p_chosen,
            nll_chosen,
        };
        let grad_chosen = grad[0];
        grad.remove(0);
        Ok(LossOutput {
            loss,
            grad_chosen,
            grad_rejected: grad,
            metrics,
        })
    }

    /// Validates an example and computes its scores.
    fn score(&self, example: &Example) -> Result<Scored> {
        let cfg = &self.config;
        let objective = cfg.objective;
        let n = example.rejected.len();
        if n == 0 {
            return Err(LossError::NoNegatives { row: None });
        }
        let weights = match &example.weights {
            None => vec![1.0; n],
            Some(w) if w.len() != n => {
                return Err(LossError::LengthMismatch {
                    what: "weights".to_owned(),
                    expected: n,
                    got: w.len(),
                });
            }
            Some(w) => {
                for (index, &value) in w.iter().enumerate() {
                    if !(value.is_finite() && value >= 0.0) {
                        return Err(LossError::InvalidWeight { index, value });
                    }
                }
                w.clone()
            }
        };
        if weights.iter().all(|&w| w == 0.0) {
            return Err(LossError::NoActiveNegatives { row: None });
        }
        let rewards = match &example.rewards {
            None => None,
            Some(_) if objective != Objective::Infonca => {
                return Err(LossError::UnsupportedOption {
                    objective: objective.name(),
                    option: "rewards",
                });
            }
            Some(r) if r.len() != n + 1 => {
                return Err(LossError::LengthMismatch {
                    what: "rewards".to_owned(),
                    expected: n + 1,
                    got: r.len(),
                });
            }
            Some(r) => {
                for (i, &value) in r.iter().enumerate() {
                    check_finite(|| format!("rewards[{i}]"), value)?;
                }
                Some(r.clone())
            }
        };
        let aggregation = cfg.effective_aggregation();
        let mut log_ratios = Vec::with_capacity(n + 1);
        let mut dscore = Vec::with_capacity(n + 1);
        let sequences = std::iter::once(&example.chosen).chain(&example.rejected);
        for (i, seq) in sequences.enumerate() {
            check_finite(|| format!("{}.policy", seq_name(i)), seq.policy)?;
            let reference = if objective.uses_reference() {
                match seq.reference {
                    Some(r) => {
                        check_finite(|| format!("{}.reference", seq_name(i)), r)?;
                        r
                    }
                    None => {
                        return Err(LossError::MissingReference {
                            sequence: seq_name(i),
                            objective: objective.name(),
                        });
                    }
                }
            } else {
                0.0
            };
            let length = match aggregation {
                Aggregation::Sum => 1.0,
                Aggregation::Mean => token_count(seq, i, || "aggregation `mean`".to_owned())?,
            };
            log_ratios.push((seq.policy - reference) / length);
            dscore.push(cfg.beta / length);
        }
        if cfg.sft_weight > 0.0 {
            token_count(&example.chosen, 0, || "sft_weight".to_owned())?;
        }
        let log_weights = weights.iter().map(|w| w.ln()).collect();
        let scores = log_ratios.iter().map(|a| cfg.beta * a).collect();
        Ok(Scored {
            log_ratios,
            scores,
            dscore,
            log_weights,
            weights,
            rewards,
        })
    }
}

fn token_count(seq: &Sequence, i: usize, needed_by: impl FnOnce() -> String) -> Result<f64> {
    match seq.tokens {
        None => Err(LossError::MissingTokens {
            sequence: seq_name(i),
            needed_by: needed_by(),
        }),
        Some(0) => Err(LossError::ZeroTokens {
            sequence: seq_name(i),
        }),
        Some(t) => Ok(t as f64),
    }
}

/// One pairwise term `ℓ(x)` and `dℓ/dx` for `x = s_0 − s_u`.
pub(crate) fn pairwise(
    objective: Objective,
    beta: f64,
    eps: f64,
    gamma: f64,
    x: f64,
) -> (f64, f64) {
    match objective {
        Objective::PairwiseSigmoid => smoothed_sigmoid(eps, x),
        Objective::Simpo => smoothed_sigmoid(eps, x - gamma),
        Objective::Robust => {
            let l = ((1.0 - eps) * softplus(-x) - eps * softplus(x)) / (1.0 - 2.0 * eps);
            let dl = (-(1.0 - eps) * sigmoid(-x) - eps * sigmoid(x)) / (1.0 - 2.0 * eps);
            (l, dl)
        }
        Objective::Hinge => {
            if x < 1.0 {
                (1.0 - x, -1.0)
            } else {
                (0.0, 0.0)
            }
        }
        Objective::Ipo => {
            let h = x / beta - 1.0 / (2.0 * beta);
            (h * h, 2.0 * h / beta)
        }
        Objective::PlackettLuce | Objective::PlackettLuceRanking | Objective::Infonca => {
            unreachable!("listwise objectives are not pairwise")
        }
    }
}

/// `−(1−ε) ln σ(x) − ε ln σ(−x)` and its derivative.
fn smoothed_sigmoid(eps: f64, x: f64) -> (f64, f64) {
    let l = (1.0 - eps) * softplus(-x) + eps * softplus(x);
    let dl = -(1.0 - eps) * sigmoid(-x) + eps * sigmoid(x);
    (l, dl)
}
