//! Objectives, their hyperparameters and validation.

use std::fmt;
use std::str::FromStr;

use crate::{LossError, Result};

/// The preference objective applied to one chosen and N rejected sequences.
///
/// With scores `s_i = β (log π_θ(y_i) − log π_ref(y_i))` (per token when the aggregation is
/// `mean`), `s_0` for the chosen sequence and `s_u`, `u = 1..N`, for the rejected ones, and
/// `x_u = s_0 − s_u`:
///
/// ```text
/// plackett-luce     L = logsumexp(s_0, s_1 + ln w_1, …, s_N + ln w_N) − s_0
/// pairwise-sigmoid  ℓ_u = −(1−ε) ln σ(x_u) − ε ln σ(−x_u)              (DPO; cDPO for ε > 0)
/// ipo               ℓ_u = (x_u / β − 1/(2β))²                          (per-token log-ratios)
/// hinge             ℓ_u = max(0, 1 − x_u)                               (SLiC / RSO)
/// robust            ℓ_u = [−(1−ε) ln σ(x_u) + ε ln σ(−x_u)] / (1 − 2ε)   (rDPO)
/// simpo             ℓ_u = −(1−ε) ln σ(x_u − γ) − ε ln σ(γ − x_u),  s_i = β log π_θ(y_i) / |y_i|
/// plackett-luce-ranking
///                   L = Σ_{k=0..N−1} [logsumexp_{j≥k}(t_j) − t_k],  t_i = s_i + ln w_i, w_0 = 1
/// infonca           L = −Σ_i p_i ln softmax(t)_i,  p = softmax(R / α)   (soft targets)
/// ```
///
/// The pairwise objectives average over negatives with the per-negative weights,
/// `L = Σ_u w_u ℓ_u / Σ_u w_u` (`reduction = mean`, the default), which for integer weights is
/// the same as repeating a negative `w_u` times, or sum them, `L = Σ_u w_u ℓ_u`
/// (`reduction = sum`). `plackett-luce` is the APO objective of the paper; `pairwise-sigmoid` is
/// what the authors' released ms-swift recipe optimises once every negative is flattened into
/// its own pair. With N = 1 both are standard DPO.
///
/// The listwise objectives extend `plackett-luce`. `plackett-luce-ranking` is the full
/// Plackett-Luce likelihood of the list `chosen, rejected[0], rejected[1], …` in that order
/// (the caller orders the negatives by drift, least drifting first); its `k = 0` term is
/// `plackett-luce`. `infonca` (Noise Contrastive Alignment, Chen et al. 2024) is the
/// cross-entropy of the Plackett-Luce choice probabilities against soft targets from explicit
/// rewards `R` ([`crate::Example::rewards`], index 0 the chosen sequence) at temperature
/// `α` ([`LossConfig::temperature`]); without rewards the target is one-hot on the chosen
/// sequence and `infonca` is `plackett-luce`. Negatives of weight 0 are left out of both
/// (dropped from the ranking, target 0).
///
/// # Examples
/// ```
/// use apo_loss::Objective;
/// let o: Objective = "pairwise-sigmoid".parse()?;
/// assert_eq!(o, Objective::PairwiseSigmoid);
/// assert_eq!(Objective::default().name(), "plackett-luce");
/// assert!(!Objective::Simpo.uses_reference());
/// # Ok::<(), apo_loss::LossError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum Objective {
    /// Top-1 Plackett-Luce over the chosen sequence and all negatives (the APO loss).
    #[default]
    PlackettLuce,
    /// Mean over negatives of the DPO sigmoid loss (with optional cDPO label smoothing).
    PairwiseSigmoid,
    /// Identity preference optimisation on per-token log-ratios.
    Ipo,
    /// Hinge loss on the reward margin.
    Hinge,
    /// Robust DPO, unbiased under preference flips with probability `label_smoothing`.
    Robust,
    /// Reference-free, length-normalised SimPO with target margin `gamma`.
    Simpo,
    /// The full Plackett-Luce ranking of the chosen sequence over the negatives in the order
    /// given (least drifting first).
    PlackettLuceRanking,
    /// InfoNCA: cross-entropy against soft targets `softmax(rewards / temperature)`.
    Infonca,
}

impl Objective {
    /// Every objective, in documentation order.
    pub const ALL: [Objective; 8] = [
        Objective::PlackettLuce,
        Objective::PairwiseSigmoid,
        Objective::Ipo,
        Objective::Hinge,
        Objective::Robust,
        Objective::Simpo,
        Objective::PlackettLuceRanking,
        Objective::Infonca,
    ];

    const NAMES: &'static str = "plackett-luce, pairwise-sigmoid, ipo, hinge, robust, simpo, \
                                 plackett-luce-ranking, infonca";

    /// The kebab-case name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Objective::PlackettLuce => "plackett-luce",
            Objective::PairwiseSigmoid => "pairwise-sigmoid",
            Objective::Ipo => "ipo",
            Objective::Hinge => "hinge",
            Objective::Robust => "robust",
            Objective::Simpo => "simpo",
            Objective::PlackettLuceRanking => "plackett-luce-ranking",
            Objective::Infonca => "infonca",
        }
    }

    /// Whether the objective is a weighted combination of per-negative pairwise terms
    /// (`pairwise-sigmoid`, `ipo`, `hinge`, `robust`, `simpo`), the objectives
    /// [`LossConfig::reduction`] applies to.
    pub fn is_pairwise(self) -> bool {
        !matches!(
            self,
            Objective::PlackettLuce | Objective::PlackettLuceRanking | Objective::Infonca
        )
    }

    /// Whether the objective compares the policy with a reference model.
    pub fn uses_reference(self) -> bool {
        !matches!(self, Objective::Simpo)
    }

    /// The log-prob aggregation used when the config does not name one
    /// (`mean` for `ipo` and `simpo`, as in TRL; `sum` otherwise).
    pub fn default_aggregation(self) -> Aggregation {
        match self {
            Objective::Ipo | Objective::Simpo => Aggregation::Mean,
            _ => Aggregation::Sum,
        }
    }

    fn uses_label_smoothing(self) -> bool {
        matches!(
            self,
            Objective::PairwiseSigmoid | Objective::Robust | Objective::Simpo
        )
    }
}

impl fmt::Display for Objective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Objective {
    type Err = LossError;

    fn from_str(s: &str) -> Result<Self> {
        Objective::ALL
            .into_iter()
            .find(|o| o.name() == s)
            .ok_or_else(|| LossError::UnknownName {
                kind: "objective",
                name: s.to_owned(),
                expected: Objective::NAMES,
            })
    }
}

/// How token log-probs are combined into a sequence score.
///
/// # Examples
/// ```
/// use apo_loss::{Aggregation, LossConfig, Objective};
/// assert_eq!(LossConfig::new(Objective::Ipo).effective_aggregation(), Aggregation::Mean);
/// let cfg = LossConfig::default().with_aggregation("mean".parse()?);
/// assert_eq!(cfg.effective_aggregation(), Aggregation::Mean);
/// # Ok::<(), apo_loss::LossError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum Aggregation {
    /// The sum over completion tokens (DPO, TRL and ms-swift default).
    Sum,
    /// The sum divided by the number of completion tokens (length-normalised).
    Mean,
}

impl Aggregation {
    /// The kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            Aggregation::Sum => "sum",
            Aggregation::Mean => "mean",
        }
    }
}

impl fmt::Display for Aggregation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Aggregation {
    type Err = LossError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sum" => Ok(Aggregation::Sum),
            "mean" => Ok(Aggregation::Mean),
            _ => Err(LossError::UnknownName {
                kind: "aggregation",
                name: s.to_owned(),
                expected: "sum, mean",
            }),
        }
    }
}

/// How the pairwise objectives combine their per-negative terms `ℓ_u` with the weights `w_u`.
///
/// # Examples
/// ```
/// use apo_loss::{Example, LossConfig, Objective, Reduction, Sequence};
/// let ex = Example::new(Sequence::new(-3.0, -3.0), vec![Sequence::new(-4.0, -4.0); 3]);
/// let mean = LossConfig::new(Objective::PairwiseSigmoid).init()?.compute(&ex)?;
/// let sum = LossConfig::new(Objective::PairwiseSigmoid)
///     .with_reduction("sum".parse()?)
///     .init()?
///     .compute(&ex)?;
/// assert_eq!(Reduction::default(), Reduction::Mean);
/// assert!((sum.loss - 3.0 * mean.loss).abs() < 1e-15);
/// # Ok::<(), apo_loss::LossError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum Reduction {
    /// The weighted mean `Σ_u w_u ℓ_u / Σ_u w_u` (TRL and ms-swift with flattened pairs).
    #[default]
    Mean,
    /// The weighted sum `Σ_u w_u ℓ_u`: every negative is a constraint of its own, so a group
    /// with more negatives weighs more.
    Sum,
}

impl Reduction {
    /// The kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            Reduction::Mean => "mean",
            Reduction::Sum => "sum",
        }
    }
}

impl fmt::Display for Reduction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Reduction {
    type Err = LossError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mean" => Ok(Reduction::Mean),
            "sum" => Ok(Reduction::Sum),
            _ => Err(LossError::UnknownName {
                kind: "reduction",
                name: s.to_owned(),
                expected: "mean, sum",
            }),
        }
    }
}

/// The default InfoNCA temperature α.
const DEFAULT_TEMPERATURE: f64 = 0.1;

/// Serialisation skips `temperature` and `reduction` at their defaults, so configurations (and
/// the keys hashed from them) that do not use them read as they did before the fields existed.
#[cfg(feature = "serde")]
fn is_default_temperature(t: &f64) -> bool {
    *t == DEFAULT_TEMPERATURE
}

#[cfg(feature = "serde")]
fn is_default_reduction(r: &Reduction) -> bool {
    *r == Reduction::Mean
}

#[cfg(feature = "serde")]
fn is_one(w: &f64) -> bool {
    *w == 1.0
}

#[cfg(feature = "serde")]
fn one() -> f64 {
    1.0
}

/// Hyperparameters of a preference objective.
///
/// Build one with [`LossConfig::new`] and the `with_*` setters, then call
/// [`LossConfig::init`] to validate it into a [`PreferenceLoss`].
///
/// # Examples
/// ```
/// use apo_loss::{LossConfig, Objective};
/// let loss = LossConfig::new(Objective::PairwiseSigmoid).with_beta(0.2).init()?;
/// assert_eq!(loss.config().beta, 0.2);
/// # Ok::<(), apo_loss::LossError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct LossConfig {
    /// The objective. Default: `plackett-luce`.
    pub objective: Objective,
    /// Inverse temperature β of the implicit reward (for `ipo`, τ = β). Default: 0.1.
    pub beta: f64,
    /// Label smoothing ε ∈ [0, 0.5) for `pairwise-sigmoid`, `robust` and `simpo`. Default: 0.
    pub label_smoothing: f64,
    /// SimPO target margin γ (used by `simpo` only). Default: 0.5.
    pub gamma: f64,
    /// Weight α ≥ 0 of the token-mean NLL of the chosen sequence added to the loss
    /// (RPO / MPO style). Default: 0.
    pub sft_weight: f64,
    /// Log-prob aggregation; `None` picks [`Objective::default_aggregation`]. Default: `None`.
    pub aggregation: Option<Aggregation>,
    /// Temperature α > 0 of the soft targets `softmax(R / α)` of `infonca` (used by `infonca`
    /// only). Default: 0.1.
    #[cfg_attr(
        feature = "serde",
        serde(skip_serializing_if = "is_default_temperature")
    )]
    pub temperature: f64,
    /// How the pairwise objectives combine their per-negative terms (`mean` or `sum`; the
    /// listwise objectives accept only `mean`). Default: `mean`.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "is_default_reduction"))]
    pub reduction: Reduction,
    /// Weight `w ≥ 0` of the preference term: the loss is `w · L_pref + α · NLL(chosen)`.
    /// `0` with `sft_weight > 0` is the NLL-only control (supervised fine-tuning on the
    /// chosen sequences, the preference term's metrics still reported). Default: 1.
    #[cfg_attr(
        feature = "serde",
        serde(default = "one", skip_serializing_if = "is_one")
    )]
    pub preference_weight: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig::new(Objective::PlackettLuce)
    }
}

impl LossConfig {
    /// The defaults for `objective`.
    pub fn new(objective: Objective) -> Self {
        LossConfig {
            objective,
            beta: 0.1,
            label_smoothing: 0.0,
            gamma: 0.5,
            sft_weight: 0.0,
            aggregation: None,
            temperature: DEFAULT_TEMPERATURE,
            reduction: Reduction::Mean,
            preference_weight: 1.0,
        }
    }

    /// Sets the weight of the preference term (0 with an SFT weight: the NLL-only control).
    pub fn with_preference_weight(mut self, preference_weight: f64) -> Self {
        self.preference_weight = preference_weight;
        self
    }

    /// Sets β.
    pub fn with_beta(mut self, beta: f64) -> Self {
        self.beta = beta;
        self
    }

    /// Sets the label smoothing ε.
    pub fn with_label_smoothing(mut self, label_smoothing: f64) -> Self {
        self.label_smoothing = label_smoothing;
        self
    }

    /// Sets the SimPO margin γ.
    pub fn with_gamma(mut self, gamma: f64) -> Self {
        self.gamma = gamma;
        self
    }

    /// Sets the weight α of the NLL term on the chosen sequence.
    pub fn with_sft_weight(mut self, sft_weight: f64) -> Self {
        self.sft_weight = sft_weight;
        self
    }

    /// Sets the log-prob aggregation.
    pub fn with_aggregation(mut self, aggregation: Aggregation) -> Self {
        self.aggregation = Some(aggregation);
        self
    }

    /// Sets the InfoNCA temperature α.
    pub fn with_temperature(mut self, temperature: f64) -> Self {
        self.temperature = temperature;
        self
    }

    /// Sets the reduction of the pairwise objectives.
    pub fn with_reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// The aggregation in effect: the configured one or the objective's default.
    pub fn effective_aggregation(&self) -> Aggregation {
        self.aggregation
            .unwrap_or_else(|| self.objective.default_aggregation())
    }

    /// Validates the hyperparameters.
    ///
    /// # Errors
    /// [`LossError::InvalidBeta`] for β ≤ 0 or non-finite, [`LossError::OutOfRange`] for ε
    /// outside [0, 0.5), a non-finite γ, a negative SFT weight or a temperature that is not a
    /// finite number > 0, and [`LossError::UnsupportedOption`] when ε is set for an objective
    /// that has no label smoothing, γ is changed for an objective other than `simpo`, the
    /// temperature for one other than `infonca`, or the reduction is `sum` for one that is
    /// not pairwise.
    pub fn init(&self) -> Result<PreferenceLoss> {
        self.validate()?;
        Ok(PreferenceLoss {
            config: self.clone(),
        })
    }

    fn validate(&self) -> Result<()> {
        if !(self.beta.is_finite() && self.beta > 0.0) {
            return Err(LossError::InvalidBeta(self.beta));
        }
        let eps = self.label_smoothing;
        if !(eps.is_finite() && (0.0..0.5).contains(&eps)) {
            return Err(LossError::OutOfRange {
                name: "label_smoothing",
                value: eps,
                expected: "0 <= label_smoothing < 0.5",
            });
        }
        if eps != 0.0 && !self.objective.uses_label_smoothing() {
            return Err(LossError::UnsupportedOption {
                objective: self.objective.name(),
                option: "label_smoothing",
            });
        }
        if !self.gamma.is_finite() {
            return Err(LossError::OutOfRange {
                name: "gamma",
                value: self.gamma,
                expected: "a finite number",
            });
        }
        if self.gamma != 0.5 && self.objective != Objective::Simpo {
            return Err(LossError::UnsupportedOption {
                objective: self.objective.name(),
                option: "gamma",
            });
        }
        if !(self.sft_weight.is_finite() && self.sft_weight >= 0.0) {
            return Err(LossError::OutOfRange {
                name: "sft_weight",
                value: self.sft_weight,
                expected: "a finite number >= 0",
            });
        }
        if !(self.preference_weight.is_finite() && self.preference_weight >= 0.0) {
            return Err(LossError::OutOfRange {
                name: "preference_weight",
                value: self.preference_weight,
                expected: "a finite number >= 0",
            });
        }
        if self.preference_weight == 0.0 && self.sft_weight == 0.0 {
            return Err(LossError::OutOfRange {
                name: "preference_weight",
                value: 0.0,
                expected: "> 0 unless sft_weight > 0 (both 0 leave no loss)",
            });
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(LossError::OutOfRange {
                name: "temperature",
                value: self.temperature,
                expected: "a finite number > 0",
            });
        }
        if self.temperature != DEFAULT_TEMPERATURE && self.objective != Objective::Infonca {
            return Err(LossError::UnsupportedOption {
                objective: self.objective.name(),
                option: "temperature",
            });
        }
        if self.reduction != Reduction::Mean && !self.objective.is_pairwise() {
            return Err(LossError::UnsupportedOption {
                objective: self.objective.name(),
                option: "reduction",
            });
        }
        Ok(())
    }
}

/// A validated preference objective, ready to evaluate examples
/// ([`PreferenceLoss::compute`]) or, with the `burn` feature, batches of tensors.
///
/// # Examples
/// ```
/// use apo_loss::{Example, LossConfig, Objective, Sequence};
/// let dpo = LossConfig::new(Objective::PairwiseSigmoid).init()?;
/// assert_eq!(dpo.objective(), Objective::PairwiseSigmoid);
/// let ex = Example::new(Sequence::new(-3.0, -3.0), vec![Sequence::new(-4.0, -4.0)]);
/// assert!((dpo.compute(&ex)?.loss - 2f64.ln()).abs() < 1e-15);
/// # Ok::<(), apo_loss::LossError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PreferenceLoss {
    pub(crate) config: LossConfig,
}

impl PreferenceLoss {
    /// The validated configuration.
    pub fn config(&self) -> &LossConfig {
        &self.config
    }

    /// The objective.
    pub fn objective(&self) -> Objective {
        self.config.objective
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for o in Objective::ALL {
            assert_eq!(o.name().parse::<Objective>().unwrap(), o);
        }
        assert!(matches!(
            "dpo".parse::<Objective>(),
            Err(LossError::UnknownName { .. })
        ));
        assert_eq!("mean".parse::<Aggregation>().unwrap(), Aggregation::Mean);
        for r in [Reduction::Mean, Reduction::Sum] {
            assert_eq!(r.to_string().parse::<Reduction>().unwrap(), r);
        }
        assert!(matches!(
            "max".parse::<Reduction>(),
            Err(LossError::UnknownName {
                kind: "reduction",
                ..
            })
        ));
        assert_eq!(
            "plackett-luce-ranking".parse::<Objective>().unwrap(),
            Objective::PlackettLuceRanking
        );
        assert_eq!("infonca".parse::<Objective>().unwrap(), Objective::Infonca);
    }

    /// Configurations that leave `temperature` and `reduction` at their defaults serialise
    /// as before those fields existed (run fingerprints and cache keys hash them); set, they
    /// round-trip.
    #[cfg(feature = "serde")]
    #[test]
    fn new_fields_serialise_only_when_set() {
        let json = serde_json::to_string(&LossConfig::default()).unwrap();
        assert_eq!(
            json,
            r#"{"objective":"plackett-luce","beta":0.1,"label_smoothing":0.0,"gamma":0.5,"sft_weight":0.0,"aggregation":null}"#
        );
        let set = [
            LossConfig::new(Objective::Infonca).with_temperature(0.5),
            LossConfig::new(Objective::Hinge).with_reduction(Reduction::Sum),
        ];
        for config in set {
            let json = serde_json::to_string(&config).unwrap();
            assert!(json.contains("temperature") || json.contains(r#""reduction":"sum""#));
            assert_eq!(serde_json::from_str::<LossConfig>(&json).unwrap(), config);
        }
        let read: LossConfig =
            serde_json::from_str(r#"{"objective":"plackett-luce-ranking"}"#).unwrap();
        assert_eq!(read, LossConfig::new(Objective::PlackettLuceRanking));
    }

    #[test]
    fn listwise_options_are_validated() {
        let nca = LossConfig::new(Objective::Infonca);
        assert!(nca.clone().with_temperature(0.5).init().is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                nca.clone().with_temperature(bad).init(),
                Err(LossError::OutOfRange {
                    name: "temperature",
                    ..
                })
            ));
        }
        assert_eq!(
            LossConfig::new(Objective::PlackettLuce)
                .with_temperature(0.5)
                .init(),
            Err(LossError::UnsupportedOption {
                objective: "plackett-luce",
                option: "temperature",
            })
        );
        for objective in [
            Objective::PlackettLuce,
            Objective::PlackettLuceRanking,
            Objective::Infonca,
        ] {
            assert!(!objective.is_pairwise());
            assert_eq!(
                LossConfig::new(objective)
                    .with_reduction(Reduction::Sum)
                    .init(),
                Err(LossError::UnsupportedOption {
                    objective: objective.name(),
                    option: "reduction",
                })
            );
        }
        for objective in Objective::ALL.into_iter().filter(|o| o.is_pairwise()) {
            assert!(
                LossConfig::new(objective)
                    .with_reduction(Reduction::Sum)
                    .init()
                    .is_ok()
            );
        }
    }

    #[test]
    fn validation_rejects_bad_hyperparameters() {
        let pl = LossConfig::new(Objective::PlackettLuce);
        assert_eq!(
            pl.clone().with_beta(0.0).init(),
            Err(LossError::InvalidBeta(0.0))
        );
        assert!(matches!(
            pl.clone().with_beta(f64::NAN).init(),
            Err(LossError::InvalidBeta(_))
        ));
        assert!(matches!(
            pl.clone().with_label_smoothing(0.1).init(),
            Err(LossError::UnsupportedOption {
                option: "label_smoothing",
                ..
            })
        ));
        assert!(matches!(
            LossConfig::new(Objective::Robust)
                .with_label_smoothing(0.5)
                .init(),
            Err(LossError::OutOfRange {
                name: "label_smoothing",
                ..
            })
        ));
        assert!(matches!(
            pl.clone().with_sft_weight(-1.0).init(),
            Err(LossError::OutOfRange {
                name: "sft_weight",
                ..
            })
        ));
        assert!(matches!(
            pl.with_gamma(1.0).init(),
            Err(LossError::UnsupportedOption {
                option: "gamma",
                ..
            })
        ));
        assert!(
            LossConfig::new(Objective::Simpo)
                .with_gamma(1.0)
                .init()
                .is_ok()
        );
    }
}
