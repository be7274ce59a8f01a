//! Consensus trajectories: one text per item that keeps what several teachers support.

use std::collections::BTreeSet;

use crate::{ConsensusError, Result};

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

/// Lowercase alphanumeric words.
fn words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Word-set Jaccard similarity of two texts (1 for two texts without words).
pub fn similarity(a: &str, b: &str) -> f64 {
    let (a, b) = (words(a), words(b));
    let union = a.union(&b).count();
    if union == 0 {
        return 1.0;
    }
    a.intersection(&b).count() as f64 / union as f64
}

/// A sentence without a leading list marker (`1.`, `2)`, `-`, `*`, `•`) or section header
/// (`Findings:`; up to four words before a colon).
fn clean(sentence: &str) -> &str {
    let mut s = sentence.trim();
    if let Some(digits) = item_number(s) {
        s = s[digits + 1..].trim_start();
    }
    for marker in ["- ", "* ", "• "] {
        if let Some(rest) = s.strip_prefix(marker) {
            s = rest.trim_start();
        }
    }
    if let Some(i) = s.find(':') {
        let head = &s[..i];
        if head.split_whitespace().count() <= 4 && !s[i + 1..].trim().is_empty() {
            s = s[i + 1..].trim_start();
        }
    }
    s
}

struct Candidate {
    text: String,
    topics: Vec<usize>,
    teachers: BTreeSet<usize>,
    support: usize,
}

impl<E: ClaimExtractor> Synthesizer for ClaimSynthesizer<E> {
    fn synthesize(
        &self,
        sources: &[Source<'_>],
        consensus: &[Option<Polarity>],
    ) -> Result<Synthesis> {
        let n_topics = self.extractor.topics();
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
        let readings: Vec<Reading> = sources
            .iter()
            .map(|s| self.extractor.read(s.text))
            .collect();
        let merged = self.merged(sources, &readings, consensus);
        Ok(match self.config.style {
            PositiveStyle::Merged => merged,
            PositiveStyle::ClosestTeacher => self
                .edited(sources, &readings, consensus, &merged)
                .unwrap_or(merged),
        })
    }
}

impl<E: ClaimExtractor> ClaimSynthesizer<E> {
    fn merged(
        &self,
        sources: &[Source<'_>],
        readings: &[Reading],
        consensus: &[Option<Polarity>],
    ) -> Synthesis {
        let n_topics = self.extractor.topics();
        let support = |topic: usize, polarity: Polarity| support(readings, topic, polarity);
        let mut candidates: Vec<Candidate> = Vec::new();
        let mut dropped = 0;
        for (u, (source, reading)) in sources.iter().zip(readings).enumerate() {
            for (j, &(start, end)) in reading.sentences.iter().enumerate() {
                let claims: Vec<&Claim> =
                    reading.claims.iter().filter(|c| c.sentence == j).collect();
                if claims.is_empty() {
                    continue;
                }
                let keep = claims.iter().all(|c| {
                    agrees(reading, c, consensus)
                        && support(c.topic, c.polarity) >= self.config.min_support
                });
                if !keep {
                    dropped += 1;
                    continue;
                }
                let text = clean(&source.text[start..end]).to_owned();
                let mut topics: Vec<usize> = claims.iter().map(|c| c.topic).collect();
                topics.sort_unstable();
                topics.dedup();
                let s = topics
                    .iter()
                    .map(|&t| support(t, consensus[t].expect("kept claims have consensus")))
                    .min()
                    .unwrap_or(0);
                match candidates.iter_mut().find(|c| {
                    c.topics == topics && similarity(&c.text, &text) >= self.config.similarity
                }) {
                    Some(c) => {
                        c.teachers.insert(u);
                        if text.len() < c.text.len() {
                            c.text = text;
                        }
                    }
                    None => candidates.push(Candidate {
                        text,
                        topics,
                        teachers: BTreeSet::from([u]),
                        support: s,
                    }),
                }
            }
        }
        // Most teachers first, then the highest support, then the shortest text.
        candidates.sort_by(|a, b| {
            b.teachers
                .len()
                .cmp(&a.teachers.len())
                .then(b.support.cmp(&a.support))
                .then(a.text.len().cmp(&b.text.len()))
                .then(a.text.cmp(&b.text))
        });
        let mut covered = vec![false; n_topics];
        let mut chosen: Vec<Provenance> = Vec::new();
        for c in candidates {
            if c.topics.iter().all(|&t| !covered[t]) {
                c.topics.iter().for_each(|&t| covered[t] = true);
                chosen.push(Provenance {
                    text: c.text,
                    topics: c.topics,
                    teachers: c
                        .teachers
                        .iter()
                        .map(|&u| sources[u].teacher.to_owned())
                        .collect(),
                    support: c.support,
                });
            } else {
                dropped += c.teachers.len();
            }
        }
        let mut rendered = Vec::new();
        for (t, p) in consensus.iter().enumerate() {
            if let (Some(p), false) = (p, covered[t]) {
                chosen.push(self.rendered(t, *p));
                rendered.push(t);
            }
        }
        chosen.sort_by_key(|p| p.topics.first().copied().unwrap_or(usize::MAX));
        // Read back; a sentence that does not read as intended in context is replaced by
        // rendered ones, and a failing impression is dropped.
        let mut impression = if self.config.impression {
            self.extractor.impression(consensus)
        } else {
            None
        };
        for _ in 0..=n_topics {
            let text = compose(&chosen, impression.as_deref());
            let wrong = misread(&self.extractor.read(&text), consensus);
            if wrong.is_empty() {
                let mut sentences = chosen;
                if let Some(i) = impression {
                    sentences.push(Provenance {
                        text: i,
                        topics: Vec::new(),
                        teachers: Vec::new(),
                        support: 0,
                    });
                }
                return Synthesis {
                    text,
                    sentences,
                    rendered,
                    dropped,
                    verified: true,
                    base: None,
                };
            }
            if impression.take().is_some() {
                continue;
            }
            let before = chosen.len();
            let mut replaced = Vec::new();
            chosen.retain(|p| {
                let bad = p.topics.iter().any(|t| wrong.contains(t)) && !p.teachers.is_empty();
                if bad {
                    replaced.extend(p.topics.iter().copied());
                }
                !bad
            });
            if chosen.len() == before {
                break;
            }
            dropped += before - chosen.len();
            for t in replaced {
                if let Some(p) = consensus[t] {
                    chosen.push(self.rendered(t, p));
                    rendered.push(t);
                }
            }
            chosen.sort_by_key(|p| p.topics.first().copied().unwrap_or(usize::MAX));
        }
        rendered.sort_unstable();
        rendered.dedup();
        Synthesis {
            text: compose(&chosen, None),
            sentences: chosen,
            rendered,
            dropped,
            verified: false,
            base: None,
        }
    }

    /// [`PositiveStyle::ClosestTeacher`]: the teachers' trajectories edited into the
    /// consensus, fewest edits first; the first that reads back as the consensus, or `None`.
    fn edited(
        &self,
        sources: &[Source<'_>],
        readings: &[Reading],
        consensus: &[Option<Polarity>],
        merged: &Synthesis,
    ) -> Option<Synthesis> {
        let plans: Vec<Plan> = readings.iter().map(|r| Plan::new(r, consensus)).collect();
        let mut order: Vec<usize> = (0..sources.len()).collect();
        order.sort_by_key(|&u| (plans[u].edits, u));
        order.into_iter().find_map(|u| {
            let s = self.edit(sources, readings, consensus, merged, u, &plans[u]);
            misread(&self.extractor.read(&s.text), consensus)
                .is_empty()
                .then_some(s)
        })
    }

    /// Teacher `u`'s trajectory with the edits of `plan` made.
    fn edit(
        &self,
        sources: &[Source<'_>],
        readings: &[Reading],
        consensus: &[Option<Polarity>],
        merged: &Synthesis,
        u: usize,
        plan: &Plan,
    ) -> Synthesis {
        let support = |topic: usize| consensus[topic].map_or(0, |p| support(readings, topic, p));
        let text = sources[u].text;
        let mut covered = plan.covered.clone();
        let mut rendered = Vec::new();
        // A consensus sentence for `topic`: the merged text's (when all its topics are still
        // open), else a rendered one.
        let mut replacement = |topic: usize, covered: &mut Vec<bool>| -> Provenance {
            let p = merged
                .sentences
                .iter()
                .find(|p| p.topics.contains(&topic) && p.topics.iter().all(|&t| !covered[t]))
                .cloned()
                .unwrap_or_else(|| {
                    self.rendered(topic, consensus[topic].expect("open topics have consensus"))
                });
            if p.teachers.is_empty() {
                rendered.extend(p.topics.iter().copied());
            }
            p.topics.iter().for_each(|&t| covered[t] = true);
            p
        };
        let mut out = String::new();
        let mut sentences = Vec::new();
        let mut cursor = 0;
        let mut header = String::new();
        // Where missing topics go (after the last finding sentence) and that sentence's
        // list marker.
        let mut insert: Option<(usize, &str)> = None;
        let mut dropped = 0;
        for (j, &(start, end)) in readings[u].sentences.iter().enumerate() {
            let raw = &text[start..end];
            let prefix = &raw[..raw.len() - clean(raw).len()];
            let topics = &plan.topics[j];
            let written = if plan.keep[j] {
                if !topics.is_empty() {
                    sentences.push(Provenance {
                        text: clean(raw).to_owned(),
                        topics: topics.clone(),
                        teachers: vec![sources[u].teacher.to_owned()],
                        support: topics.iter().map(|&t| support(t)).min().unwrap_or(0),
                    });
                }
                Some(raw.to_owned())
            } else {
                dropped += 1;
                let mut parts = Vec::new();
                for &t in topics {
                    if consensus[t].is_some() && !covered[t] {
                        let p = replacement(t, &mut covered);
                        parts.push(with_stop(&p.text));
                        sentences.push(p);
                    }
                }
                if parts.is_empty() {
                    if prefix.contains(':') {
                        header = prefix.to_owned();
                    }
                    None
                } else {
                    Some(format!("{prefix}{}", parts.join(" ")))
                }
            };
            if let Some(w) = written {
                out.push_str(&text[cursor..start]);
                if !header.is_empty() && !prefix.contains(':') {
                    out.push_str(&header);
                }
                header.clear();
                out.push_str(&w);
                if !topics.is_empty() {
                    insert = Some((out.len(), list_marker(prefix)));
                }
            }
            cursor = end;
        }
        out.push_str(&text[cursor..]);
        let missing: Vec<usize> = (0..consensus.len())
            .filter(|&t| consensus[t].is_some() && !covered[t])
            .collect();
        let (at, marker) = insert.unwrap_or((out.trim_end().len(), ""));
        let mut added = String::new();
        for t in missing {
            if covered[t] {
                continue;
            }
            let p = replacement(t, &mut covered);
            match marker {
                "" => added.push(' '),
                "#" => added.push_str("\n0. "),
                m => {
                    added.push('\n');
                    added.push_str(m);
                }
            }
            added.push_str(&with_stop(&p.text));
            sentences.push(p);
        }
        out.insert_str(at, &added);
        let numbered = readings[u]
            .sentences
            .iter()
            .any(|&(s, e)| list_marker(&text[s..e]) == "#");
        let mut text = out.trim().to_owned();
        if numbered {
            text = renumber(&text);
        }
        rendered.sort_unstable();
        rendered.dedup();
        Synthesis {
            text,
            sentences,
            rendered,
            dropped,
            verified: true,
            base: Some(sources[u].teacher.to_owned()),
        }
    }

    fn rendered(&self, topic: usize, polarity: Polarity) -> Provenance {
        Provenance {
            text: self.extractor.render(topic, polarity),
            topics: vec![topic],
            teachers: Vec::new(),
            support: 0,
        }
    }
}

/// Teachers whose final statement on `topic` is `polarity`.
fn support(readings: &[Reading], topic: usize, polarity: Polarity) -> usize {
    readings
        .iter()
        .filter(|r| r.finals.get(topic).copied().flatten() == Some(polarity))
        .count()
}

/// Whether `claim` of `reading` states the consensus and is its teacher's final word.
fn agrees(reading: &Reading, claim: &Claim, consensus: &[Option<Polarity>]) -> bool {
    consensus.get(claim.topic).copied().flatten() == Some(claim.polarity)
        && reading.finals.get(claim.topic).copied().flatten() == Some(claim.polarity)
}

/// The topics whose final statement in `back` is not the consensus.
fn misread(back: &Reading, consensus: &[Option<Polarity>]) -> Vec<usize> {
    (0..consensus.len())
        .filter(|&t| back.finals.get(t).copied().flatten() != consensus[t])
        .collect()
}

/// Per sentence of one teacher's trajectory: whether it stays, its claims' topics; the
/// consensus topics the kept sentences state, and the edits (sentences removed or replaced,
/// topics added) that make the trajectory state exactly the consensus.
struct Plan {
    keep: Vec<bool>,
    topics: Vec<Vec<usize>>,
    covered: Vec<bool>,
    edits: usize,
}

impl Plan {
    fn new(reading: &Reading, consensus: &[Option<Polarity>]) -> Plan {
        let mut covered = vec![false; consensus.len()];
        let mut keep = Vec::with_capacity(reading.sentences.len());
        let mut topics = Vec::with_capacity(reading.sentences.len());
        let mut edits = 0;
        for j in 0..reading.sentences.len() {
            let claims: Vec<&Claim> = reading.claims.iter().filter(|c| c.sentence == j).collect();
            let ok = claims.iter().all(|c| agrees(reading, c, consensus));
            let mut t: Vec<usize> = claims.iter().map(|c| c.topic).collect();
            t.sort_unstable();
            t.dedup();
            if ok {
                t.iter().for_each(|&x| covered[x] = true);
            } else {
                edits += 1;
            }
            keep.push(ok);
            topics.push(t);
        }
        edits += (0..consensus.len())
            .filter(|&t| consensus[t].is_some() && !covered[t])
            .count();
        Plan {
            keep,
            topics,
            covered,
            edits,
        }
    }
}

/// The number of digits of the item number `s` starts with (`12.` or `12)`), if it does.
fn item_number(s: &str) -> Option<usize> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    (digits > 0 && matches!(s.as_bytes().get(digits), Some(b'.' | b')'))).then_some(digits)
}

/// The list marker a sentence starts with: `#` for a numbered item (`1.`, `2)`), the bullet
/// with its space (`- `, `* `, `• `), or `""`.
fn list_marker(sentence: &str) -> &'static str {
    let s = sentence.trim_start();
    if item_number(s).is_some() {
        return "#";
    }
    ["- ", "* ", "• "]
        .into_iter()
        .find(|m| s.starts_with(m))
        .unwrap_or("")
}

/// Numbers the numbered lines of `text` 1, 2, 3, ... in order.
fn renumber(text: &str) -> String {
    let mut n = 0;
    text.split('\n')
        .map(|line| {
            let body = line.trim_start();
            if let Some(digits) = item_number(body) {
                n += 1;
                let indent = &line[..line.len() - body.len()];
                format!("{indent}{n}{}", &body[digits..])
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `sentence` ending in a full stop (or its own `!`/`?`).
fn with_stop(sentence: &str) -> String {
    if sentence.ends_with(['.', '!', '?']) {
        sentence.to_owned()
    } else {
        format!("{sentence}.")
    }
}

fn compose(sentences: &[Provenance], impression: Option<&str>) -> String {
    let mut out = String::from("Findings:");
    for s in sentences {
        out.push(' ');
        out.push_str(&s.text);
        if !s.text.ends_with(['.', '!', '?']) {
            out.push('.');
        }
    }
    if let Some(i) = impression {
        out.push('\n');
        out.push_str(i);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{list_marker, renumber};

    #[test]
    fn list_markers_and_renumbering() {
        assert_eq!(list_marker("3. No pneumothorax."), "#");
        assert_eq!(list_marker("12) Edema."), "#");
        assert_eq!(list_marker("- Edema."), "- ");
        assert_eq!(list_marker("• Edema."), "• ");
        assert_eq!(list_marker("Findings: edema."), "");
        assert_eq!(list_marker("2 ribs are fractured."), "");
        assert_eq!(
            renumber("Findings:\n1. A.\n3. B.\n0. C.\nDone. 7. not a line start"),
            "Findings:\n1. A.\n2. B.\n3. C.\nDone. 7. not a line start"
        );
    }
}
