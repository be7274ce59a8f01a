//! The claim vocabulary: what a domain reader says about a text (sentences, claims, each
//! topic's final statement), and the questions the synthesizer asks of readings.

/// What a claim says about its topic (a finding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Polarity {
    /// The finding is present.
    Present,
    /// The finding is absent.
    Absent,
    /// The finding is hedged (possible, cannot exclude, ...).
    Uncertain,
}

/// One claim: a sentence's statement about a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// 0-based sentence index.
    pub sentence: usize,
    /// Topic index.
    pub topic: usize,
    /// What the sentence says about it.
    pub polarity: Polarity,
}

/// A domain reader's view of one text.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reading {
    /// Byte ranges of the sentences.
    pub sentences: Vec<(usize, usize)>,
    /// Every claim, in reading order.
    pub claims: Vec<Claim>,
    /// The final statement per topic (later statements override earlier ones); `None` = not
    /// stated.
    pub finals: Vec<Option<Polarity>>,
}

/// The domain knowledge a claim-level synthesizer needs: how to read a text into claims, and
/// how to state a topic when no teacher sentence can be kept. `cxr-max`'s findings labeler
/// and sentence templates provide it for chest X-rays (the glue lives with the caller, so this
/// crate stays domain-free).
pub trait ClaimExtractor {
    /// The number of topics.
    fn topics(&self) -> usize;
    /// Sentences, claims and final statements of `text`.
    fn read(&self, text: &str) -> Reading;
    /// One sentence stating `polarity` of `topic`, which [`ClaimExtractor::read`] reads back
    /// as exactly that claim.
    fn render(&self, topic: usize, polarity: Polarity) -> String;
    /// A closing impression for the consensus, if the domain has one (must read back as
    /// consistent with `consensus`; a synthesizer drops it otherwise).
    fn impression(&self, consensus: &[Option<Polarity>]) -> Option<String> {
        let _ = consensus;
        None
    }
}

/// Teachers whose final statement on `topic` is `polarity`.
pub(super) fn support(readings: &[Reading], topic: usize, polarity: Polarity) -> usize {
    readings
        .iter()
        .filter(|r| r.finals.get(topic).copied().flatten() == Some(polarity))
        .count()
}

/// Whether `claim` of `reading` states the consensus and is its teacher's final word.
pub(super) fn agrees(reading: &Reading, claim: &Claim, consensus: &[Option<Polarity>]) -> bool {
    consensus.get(claim.topic).copied().flatten() == Some(claim.polarity)
        && reading.finals.get(claim.topic).copied().flatten() == Some(claim.polarity)
}

/// The topics whose final statement in `back` is not the consensus.
pub(super) fn misread(back: &Reading, consensus: &[Option<Polarity>]) -> Vec<usize> {
    (0..consensus.len())
        .filter(|&t| back.finals.get(t).copied().flatten() != consensus[t])
        .collect()
}
