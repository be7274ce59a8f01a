//! Consensus trajectories: one text per item that keeps what several teachers support.
//!
//! - [`claims`]: the claim vocabulary a domain reader speaks ([`Claim`], [`Reading`],
//!   [`ClaimExtractor`]) and what the synthesizer asks of readings.
//! - [`merged`]: [`PositiveStyle::Merged`], one text in the synthesizer's own layout.
//! - [`closest`]: [`PositiveStyle::ClosestTeacher`], the teacher needing the fewest edits,
//!   edited in place.
//! - [`layout`]: list markers, numbering and the merged layout.

use crate::{ConsensusError, Result};

mod claims;
mod closest;
mod layout;
mod merged;

pub use claims::{Claim, ClaimExtractor, Polarity, Reading};
pub use merged::similarity;

/// One teacher trajectory of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source<'a> {
    /// Teacher name.
    pub teacher: &'a str,
    /// Trajectory text.
    pub text: &'a str,
}

/// Where a sentence of a consensus trajectory came from.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Provenance {
    /// The sentence as written in the consensus.
    pub text: String,
    /// Topics it states.
    pub topics: Vec<usize>,
    /// Teachers whose near-duplicate sentence it merges (empty for a rendered sentence).
    pub teachers: Vec<String>,
    /// Teachers whose final statement supports every claim of the sentence.
    pub support: usize,
}

/// A consensus trajectory.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Synthesis {
    /// The text.
    pub text: String,
    /// Its sentences, in order (the impression, when present, is the last).
    pub sentences: Vec<Provenance>,
    /// Topics stated by a rendered sentence because no teacher sentence could be kept.
    pub rendered: Vec<usize>,
    /// Teacher sentences dropped: they contradict the consensus, state a topic without
    /// consensus, are hedged, were revised later by their own teacher, or lack support.
    pub dropped: usize,
    /// Whether reading the text back gives exactly the consensus.
    pub verified: bool,
    /// The teacher whose trajectory was edited into the consensus
    /// ([`PositiveStyle::ClosestTeacher`]); `None` for a merged text.
    pub base: Option<String>,
}

/// Writes the positive of a preference group from the teachers' trajectories and the label
/// consensus (`consensus[topic]`: `Some(Present | Absent)` or `None` for no consensus).
///
/// Implemented here by [`ClaimSynthesizer`]; a model-based synthesizer (the bootstrapped
/// student reading all trajectories, as in the paper) implements the same trait.
pub trait Synthesizer {
    /// The consensus trajectory of one item.
    ///
    /// # Errors
    /// Implementation-defined; [`ClaimSynthesizer`] reports [`ConsensusError::OutOfRange`] for
    /// a consensus of the wrong length or an uncertain consensus.
    fn synthesize(
        &self,
        sources: &[Source<'_>],
        consensus: &[Option<Polarity>],
    ) -> Result<Synthesis>;

    /// The same, with each source already read (`readings[i]` is `sources[i]`'s), for a caller
    /// that read every trajectory once. The default reads nothing new: it ignores `readings`
    /// and calls [`Synthesizer::synthesize`].
    ///
    /// # Errors
    /// As [`Synthesizer::synthesize`]; [`ClaimSynthesizer`] also reports
    /// [`ConsensusError::OutOfRange`] when the readings do not match the sources.
    fn synthesize_read(
        &self,
        sources: &[Source<'_>],
        readings: &[Reading],
        consensus: &[Option<Polarity>],
    ) -> Result<Synthesis> {
        let _ = readings;
        self.synthesize(sources, consensus)
    }
}

/// Parameters of [`ClaimSynthesizer`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ClaimConfig {
    /// A teacher sentence is kept only if at least this many teachers' final statements
    /// support each of its claims. Default: 2.
    pub min_support: usize,
    /// Sentences whose word-set Jaccard similarity reaches this are near-duplicates and are
    /// merged. Default: 0.6.
    pub similarity: f64,
    /// Add the extractor's impression at the end (merged texts only). Default: true.
    pub impression: bool,
    /// How the consensus text is written. Default: [`PositiveStyle::Merged`].
    pub style: PositiveStyle,
}

impl Default for ClaimConfig {
    fn default() -> Self {
        ClaimConfig {
            min_support: 2,
            similarity: 0.6,
            impression: true,
            style: PositiveStyle::Merged,
        }
    }
}

/// How [`ClaimSynthesizer`] writes the consensus trajectory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum PositiveStyle {
    /// One text in the synthesizer's own layout (`Findings: ...`, then the impression): the
    /// best-supported teacher sentence per consensus topic, rendered sentences for the rest.
    /// Its layout is that of no teacher, so every teacher trajectory differs from it in form
    /// as well as in content.
    #[default]
    Merged,
    /// The trajectory of the teacher that needs the fewest edits to state exactly the
    /// consensus, with those edits made in place: its sentences that contradict the consensus,
    /// state a topic without consensus, hedge, or are revised later are replaced by a
    /// consensus sentence for the same topics (the merged text's sentence, keeping the
    /// teacher's list marker or header) or removed; consensus topics it does not state are
    /// added after its last finding sentence, in its list layout. Its opening, closing and
    /// layout are the teacher's, so the positive differs from that teacher's negative only
    /// where the content is wrong, and from the other negatives in form as much as they
    /// differ from each other — as a consensus written by the bootstrapped student (the
    /// paper's), in the teachers' own styles, does. Falls back to [`PositiveStyle::Merged`]
    /// when the edited text does not read back as the consensus.
    ClosestTeacher,
}

impl PositiveStyle {
    /// The kebab-case name (`merged`, `closest-teacher`).
    pub fn name(self) -> &'static str {
        match self {
            PositiveStyle::Merged => "merged",
            PositiveStyle::ClosestTeacher => "closest-teacher",
        }
    }
}

impl std::str::FromStr for PositiveStyle {
    type Err = ConsensusError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "merged" => Ok(PositiveStyle::Merged),
            "closest-teacher" => Ok(PositiveStyle::ClosestTeacher),
            other => Err(ConsensusError::UnknownOption {
                name: "positive style",
                value: other.to_owned(),
                expected: "merged or closest-teacher",
            }),
        }
    }
}

/// The claim-level synthesizer: split every trajectory into sentences, read each sentence's
/// claims with the caller's [`ClaimExtractor`], keep sentences whose every claim agrees with
/// the label consensus, is its own teacher's final word, and is supported by at least
/// `min_support` teachers; merge near-duplicates (word-set Jaccard similarity); state each
/// consensus topic once, choosing the sentence that the most teachers wrote (then the
/// shortest); render a sentence for topics no kept sentence states; order by topic, then the
/// impression; read the text back and replace any sentence that does not read as intended.
#[derive(Debug, Clone)]
pub struct ClaimSynthesizer<E> {
    extractor: E,
    config: ClaimConfig,
}

impl<E: ClaimExtractor> ClaimSynthesizer<E> {
    /// A synthesizer with `extractor` and `config`.
    ///
    /// # Errors
    /// [`ConsensusError::OutOfRange`] for a similarity outside `(0, 1]`.
    pub fn new(extractor: E, config: ClaimConfig) -> Result<Self> {
        if !(config.similarity > 0.0 && config.similarity <= 1.0) {
            return Err(ConsensusError::OutOfRange {
                name: "similarity",
                value: config.similarity,
                expected: "in (0, 1]",
            });
        }
        Ok(ClaimSynthesizer { extractor, config })
    }

    /// The extractor.
    pub fn extractor(&self) -> &E {
        &self.extractor
    }
}

impl<E: ClaimExtractor> Synthesizer for ClaimSynthesizer<E> {
    fn synthesize(
        &self,
        sources: &[Source<'_>],
        consensus: &[Option<Polarity>],
    ) -> Result<Synthesis> {
        let readings: Vec<Reading> = sources
            .iter()
            .map(|s| self.extractor.read(s.text))
            .collect();
        self.synthesize_read(sources, &readings, consensus)
    }

    fn synthesize_read(
        &self,
        sources: &[Source<'_>],
        readings: &[Reading],
        consensus: &[Option<Polarity>],
    ) -> Result<Synthesis> {
        let n_topics = self.extractor.topics();
        if readings.len() != sources.len() || readings.iter().any(|r| r.finals.len() != n_topics) {
            return Err(ConsensusError::OutOfRange {
                name: "readings",
                value: readings.len() as f64,
                expected: "one reading per source, with one final statement per topic",
            });
        }
        if consensus.len() != n_topics {
            return Err(ConsensusError::OutOfRange {
                name: "consensus length",
                value: consensus.len() as f64,
                expected: "the extractor's number of topics",
            });
        }
        if consensus.contains(&Some(Polarity::Uncertain)) {
            return Err(ConsensusError::OutOfRange {
                name: "uncertain consensus",
                value: 1.0,
                expected: "a consensus of present, absent or none per topic",
            });
        }
        let merged = self.merged(sources, readings, consensus);
        Ok(match self.config.style {
            PositiveStyle::Merged => merged,
            PositiveStyle::ClosestTeacher => self
                .edited(sources, readings, consensus, &merged)
                .unwrap_or(merged),
        })
    }
}

impl<E: ClaimExtractor> ClaimSynthesizer<E> {
    fn rendered(&self, topic: usize, polarity: Polarity) -> Provenance {
        Provenance {
            text: self.extractor.render(topic, polarity),
            topics: vec![topic],
            teachers: Vec::new(),
            support: 0,
        }
    }
}
