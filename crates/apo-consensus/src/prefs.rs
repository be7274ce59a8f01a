//! Preference sets: the consensus trajectory as the chosen response, teacher trajectories as
//! the rejected ones.

use crate::synth::{Polarity, Reading, Source, Synthesizer};
use crate::{ConsensusError, Result};

/// Which teacher trajectories become negatives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum NegativePolicy {
    /// Every teacher trajectory (the paper).
    All,
    /// Only trajectories that contradict or hedge at least one consensus finding.
    Dissenting,
    /// The `k` trajectories with the largest drift from the consensus (ties: teacher order).
    TopK(usize),
    /// Minimal pairs instead of teacher trajectories: up to `k` rewrites of the consensus
    /// itself, each with one finding's consensus flipped (present → absent or absent →
    /// present) and written by the same synthesizer, so that a negative differs from the
    /// positive in content, not in layout. The findings flipped are those most teachers
    /// contradict on the item (ties: topic order), then the rest in topic order. Each edit is
    /// named `edit:TOPIC:POLARITY` (the polarity it states) and has one contradiction.
    Edits(usize),
}

impl std::str::FromStr for NegativePolicy {
    type Err = ConsensusError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "all" => Ok(NegativePolicy::All),
            "dissenting" => Ok(NegativePolicy::Dissenting),
            other => {
                let count = |prefix: &str| {
                    other
                        .strip_prefix(prefix)
                        .and_then(|k| k.parse::<usize>().ok())
                        .filter(|&k| k > 0)
                };
                count("top-")
                    .map(NegativePolicy::TopK)
                    .or_else(|| count("edits-").map(NegativePolicy::Edits))
                    .ok_or_else(|| ConsensusError::UnknownOption {
                        name: "negatives",
                        value: other.to_owned(),
                        expected: "all, dissenting, top-K or edits-K (K >= 1, e.g. top-3)",
                    })
            }
        }
    }
}

/// Per-negative weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum NegativeWeighting {
    /// No weights (every negative counts the same, as in the paper).
    Uniform,
    /// Weight `∝ 0.1 + drift`, normalised to mean 1 over the group's negatives: a
    /// trajectory that drifts further from the consensus is a stronger constraint.
    Drift,
}

impl std::fmt::Display for NegativePolicy {
    /// The name [`std::str::FromStr`] reads: `all`, `dissenting`, `top-K`, `edits-K`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NegativePolicy::All => f.write_str("all"),
            NegativePolicy::Dissenting => f.write_str("dissenting"),
            NegativePolicy::TopK(k) => write!(f, "top-{k}"),
            NegativePolicy::Edits(k) => write!(f, "edits-{k}"),
        }
    }
}

impl std::fmt::Display for NegativeWeighting {
    /// The name [`std::str::FromStr`] reads: `uniform`, `drift`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NegativeWeighting::Uniform => "uniform",
            NegativeWeighting::Drift => "drift",
        })
    }
}

impl std::str::FromStr for NegativeWeighting {
    type Err = ConsensusError;

    /// `uniform` (or `none`) or `drift`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "uniform" | "none" => Ok(NegativeWeighting::Uniform),
            "drift" => Ok(NegativeWeighting::Drift),
            other => Err(ConsensusError::UnknownOption {
                name: "negative weights",
                value: other.to_owned(),
                expected: "uniform or drift",
            }),
        }
    }
}

/// Parameters of [`build_preference`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PreferenceConfig {
    /// Negative selection. Default: all.
    pub negatives: NegativePolicy,
    /// Negative weights. Default: uniform.
    pub weighting: NegativeWeighting,
    /// A finding whose consensus confidence is at most this has no consensus. Default: 0.5.
    pub min_confidence: f64,
    /// Items whose mean confidence over the findings with a consensus is below this are
    /// skipped. Default: 0.
    pub min_agreement: f64,
    /// Skip items whose consensus trajectory does not read back as the consensus.
    /// Default: true.
    pub require_verified: bool,
}

impl Default for PreferenceConfig {
    fn default() -> Self {
        PreferenceConfig {
            negatives: NegativePolicy::All,
            weighting: NegativeWeighting::Uniform,
            min_confidence: 0.5,
            min_agreement: 0.0,
            require_verified: true,
        }
    }
}

impl PreferenceConfig {
    /// Checks the thresholds: `min_confidence` and `min_agreement` are confidences, in
    /// `[0, 1]` (a threshold above 1 would skip every item and write an empty file).
    ///
    /// # Errors
    /// [`ConsensusError::OutOfRange`] naming the threshold.
    pub fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("min_confidence", self.min_confidence),
            ("min_agreement", self.min_agreement),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(ConsensusError::OutOfRange {
                    name,
                    value,
                    expected: "a confidence in [0, 1]",
                });
            }
        }
        Ok(())
    }
}

/// One item: its teacher trajectories, their final statements, and the label consensus.
#[derive(Debug, Clone, PartialEq)]
pub struct PreferenceInput<'a> {
    /// Item id.
    pub id: &'a str,
    /// Teacher trajectories.
    pub sources: &'a [Source<'a>],
    /// Per source, its final statement per topic (as the extractor reads it).
    pub finals: &'a [Vec<Option<Polarity>>],
    /// Consensus per topic (`Present`/`Absent`, or `None`).
    pub consensus: &'a [Option<Polarity>],
    /// Confidence of each topic's consensus (posterior or vote share).
    pub confidence: &'a [f64],
    /// Each source already read by the extractor (`None`: the synthesizer reads them).
    pub readings: Option<&'a [Reading]>,
}

/// A rejected trajectory.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Negative {
    /// Teacher.
    pub teacher: String,
    /// Trajectory.
    pub text: String,
    /// Consensus findings it states the opposite of.
    pub contradictions: usize,
    /// Consensus findings it hedges.
    pub hedges: usize,
    /// Consensus findings it does not state.
    pub omissions: usize,
    /// `(contradictions + (hedges + omissions) / 2) / consensus findings`, in `[0, 1]`.
    pub drift: f64,
    /// Weight, when weighting is on.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub weight: Option<f64>,
}

/// One preference group: the consensus trajectory over the selected negatives.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PreferenceSet {
    /// Item id.
    pub id: String,
    /// The chosen (consensus) trajectory.
    pub chosen: String,
    /// The rejected trajectories.
    pub rejected: Vec<Negative>,
    /// Consensus per topic.
    pub consensus: Vec<Option<Polarity>>,
    /// Mean confidence over the topics with a consensus.
    pub agreement: f64,
    /// Topics whose sentence was rendered rather than kept from a teacher.
    pub rendered: Vec<usize>,
    /// The teacher whose trajectory the chosen one is an edit of (`None` for a merged text).
    pub base: Option<String>,
    /// Negatives left out because their text is the chosen text (possible when the chosen
    /// trajectory is a teacher's own, `closest-teacher`): a pair with nothing to prefer, which
    /// ms-swift rejects and TRL trains on with zero gradient.
    #[cfg_attr(feature = "serde", serde(default))]
    pub identical_dropped: usize,
}

/// Why an item has no preference set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum SkipReason {
    /// No finding has a consensus.
    NoConsensus,
    /// Mean confidence below `min_agreement`.
    LowAgreement,
    /// The negative policy left no negative.
    NoNegatives,
    /// The consensus trajectory did not read back as the consensus.
    Unverified,
}

impl SkipReason {
    /// The kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            SkipReason::NoConsensus => "no-consensus",
            SkipReason::LowAgreement => "low-agreement",
            SkipReason::NoNegatives => "no-negatives",
            SkipReason::Unverified => "unverified",
        }
    }
}

/// The minimal-pair negatives of [`NegativePolicy::Edits`]: up to `k` rewrites of the
/// consensus with one decided Present/Absent topic flipped, the topics most sources contradict
/// first (ties: topic order). An edit that does not read back as its flipped consensus is
/// left out: it would not be a minimal pair.
fn minimal_pairs(
    input: &PreferenceInput<'_>,
    consensus: &[Option<Polarity>],
    decided: &[usize],
    k: usize,
    synthesize: &dyn Fn(&[Option<Polarity>]) -> Result<crate::Synthesis>,
) -> Result<Vec<Negative>> {
    let flip = |p: Polarity| match p {
        Polarity::Present => Some(Polarity::Absent),
        Polarity::Absent => Some(Polarity::Present),
        Polarity::Uncertain => None,
    };
    let mut topics: Vec<(usize, usize)> = decided
        .iter()
        .filter(|&&t| consensus[t].and_then(flip).is_some())
        .map(|&t| {
            let against = input
                .finals
                .iter()
                .filter(|f| {
                    f[t].is_some_and(|p| Some(p) != consensus[t] && p != Polarity::Uncertain)
                })
                .count();
            (t, against)
        })
        .collect();
    // Stable: equal counts keep topic order.
    topics.sort_by_key(|t| std::cmp::Reverse(t.1));
    let mut out = Vec::new();
    for (t, _) in topics {
        if out.len() == k {
            break;
        }
        let mut edited = consensus.to_vec();
        let to = consensus[t].and_then(flip);
        edited[t] = to;
        let synthesis = synthesize(&edited)?;
        if !synthesis.verified {
            continue;
        }
        let polarity = match to {
            Some(Polarity::Present) => "present",
            _ => "absent",
        };
        out.push(Negative {
            teacher: format!("edit:{t}:{polarity}"),
            text: synthesis.text,
            contradictions: 1,
            hedges: 0,
            omissions: 0,
            drift: 1.0 / decided.len() as f64,
            weight: None,
        });
    }
    Ok(out)
}

/// Builds the preference set of one item, or says why there is none.
///
/// # Errors
/// [`ConsensusError::OutOfRange`] when `finals`, `consensus` and `confidence` do not match the
/// sources and each other, or a threshold is out of range ([`PreferenceConfig::validate`]),
/// and whatever the synthesizer reports.
pub fn build_preference(
    input: &PreferenceInput<'_>,
    synthesizer: &dyn Synthesizer,
    config: &PreferenceConfig,
) -> Result<std::result::Result<PreferenceSet, SkipReason>> {
    config.validate()?;
    let topics = input.consensus.len();
    if input.finals.len() != input.sources.len()
        || input.confidence.len() != topics
        || input.finals.iter().any(|f| f.len() != topics)
    {
        return Err(ConsensusError::OutOfRange {
            name: "preference input lengths",
            value: input.finals.len() as f64,
            expected: "one finals row per source and one consensus and confidence per topic",
        });
    }
    let consensus: Vec<Option<Polarity>> = input
        .consensus
        .iter()
        .zip(input.confidence)
        .map(|(&c, &p)| c.filter(|_| p > config.min_confidence))
        .collect();
    let decided: Vec<usize> = (0..topics).filter(|&t| consensus[t].is_some()).collect();
    if decided.is_empty() {
        return Ok(Err(SkipReason::NoConsensus));
    }
    let agreement =
        decided.iter().map(|&t| input.confidence[t]).sum::<f64>() / decided.len() as f64;
    if agreement < config.min_agreement {
        return Ok(Err(SkipReason::LowAgreement));
    }
    let mut negatives: Vec<Negative> = input
        .sources
        .iter()
        .zip(input.finals)
        .map(|(s, finals)| {
            let (mut contradictions, mut hedges, mut omissions) = (0, 0, 0);
            for &t in &decided {
                match finals[t] {
                    None => omissions += 1,
                    Some(Polarity::Uncertain) => hedges += 1,
                    Some(p) if Some(p) != consensus[t] => contradictions += 1,
                    Some(_) => {}
                }
            }
            Negative {
                teacher: s.teacher.to_owned(),
                text: s.text.to_owned(),
                contradictions,
                hedges,
                omissions,
                drift: (contradictions as f64 + 0.5 * (hedges + omissions) as f64)
                    / decided.len() as f64,
                weight: None,
            }
        })
        .collect();
    let synthesize = |consensus: &[Option<Polarity>]| match input.readings {
        Some(readings) => synthesizer.synthesize_read(input.sources, readings, consensus),
        None => synthesizer.synthesize(input.sources, consensus),
    };
    match config.negatives {
        NegativePolicy::All => {}
        NegativePolicy::Dissenting => negatives.retain(|n| n.contradictions + n.hedges > 0),
        NegativePolicy::TopK(k) => {
            // Stable: equal drift keeps teacher order.
            negatives.sort_by(|a, b| b.drift.total_cmp(&a.drift));
            negatives.truncate(k);
        }
        NegativePolicy::Edits(_) => {}
    }
    if negatives.is_empty() {
        return Ok(Err(SkipReason::NoNegatives));
    }
    let synthesis = synthesize(&consensus)?;
    if config.require_verified && !synthesis.verified {
        return Ok(Err(SkipReason::Unverified));
    }
    if let NegativePolicy::Edits(k) = config.negatives {
        negatives = minimal_pairs(input, &consensus, &decided, k, &synthesize)?;
    }
    // A negative that says exactly what the chosen text says is no constraint.
    let before = negatives.len();
    let chosen = synthesis.text.trim();
    negatives.retain(|n| n.text.trim() != chosen);
    let identical_dropped = before - negatives.len();
    if negatives.is_empty() {
        return Ok(Err(SkipReason::NoNegatives));
    }
    if config.weighting == NegativeWeighting::Drift {
        let raw: Vec<f64> = negatives.iter().map(|n| 0.1 + n.drift).collect();
        let mean = raw.iter().sum::<f64>() / raw.len() as f64;
        for (n, r) in negatives.iter_mut().zip(raw) {
            n.weight = Some(r / mean);
        }
    }
    Ok(Ok(PreferenceSet {
        id: input.id.to_owned(),
        chosen: synthesis.text,
        rejected: negatives,
        consensus,
        agreement,
        rendered: synthesis.rendered,
        base: synthesis.base,
        identical_dropped,
    }))
}
