//! The merged positive ([`super::PositiveStyle::Merged`]): the best-supported teacher sentence
//! per consensus topic, in the synthesizer's own layout.

use std::collections::BTreeSet;

use super::claims::{Claim, ClaimExtractor, Polarity, Reading, agrees, misread, support};
use super::layout::{clean, compose};
use super::{ClaimSynthesizer, Provenance, Source, Synthesis};

/// Lowercase alphanumeric words.
fn words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Word-set Jaccard similarity of two texts (1 for two texts without words).
pub fn similarity(a: &str, b: &str) -> f64 {
    jaccard(&words(a), &words(b))
}

fn jaccard(a: &BTreeSet<String>, b: &BTreeSet<String>) -> f64 {
    let union = a.union(b).count();
    if union == 0 {
        return 1.0;
    }
    a.intersection(b).count() as f64 / union as f64
}

struct Candidate {
    text: String,
    /// `words(text)`, kept with it.
    words: BTreeSet<String>,
    topics: Vec<usize>,
    teachers: BTreeSet<usize>,
    support: usize,
}

impl<E: ClaimExtractor> ClaimSynthesizer<E> {
    pub(super) fn merged(
        &self,
        sources: &[Source<'_>],
        readings: &[Reading],
        consensus: &[Option<Polarity>],
    ) -> Synthesis {
        let n_topics = self.extractor.topics();
        let support = |topic: usize, polarity: Polarity| support(readings, topic, polarity);
        let mut candidates: Vec<Candidate> = Vec::new();
        // The candidates of each topic set, in creation order: a sentence is only compared
        // with those (linear in the sentences when their topic sets differ).
        let mut by_topics: std::collections::HashMap<Vec<usize>, Vec<usize>> =
            std::collections::HashMap::new();
        let mut dropped = 0;
        for (u, (source, reading)) in sources.iter().zip(readings).enumerate() {
            // Each sentence's claims, gathered in one pass over the claims.
            let mut per_sentence: Vec<Vec<&Claim>> = vec![Vec::new(); reading.sentences.len()];
            for c in &reading.claims {
                if let Some(v) = per_sentence.get_mut(c.sentence) {
                    v.push(c);
                }
            }
            for (j, &(start, end)) in reading.sentences.iter().enumerate() {
                let claims = &per_sentence[j];
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
                let w = words(&text);
                let group = by_topics.entry(topics.clone()).or_default();
                match group
                    .iter()
                    .copied()
                    .find(|&k| jaccard(&candidates[k].words, &w) >= self.config.similarity)
                {
                    Some(k) => {
                        let c = &mut candidates[k];
                        c.teachers.insert(u);
                        if text.len() < c.text.len() {
                            c.text = text;
                            c.words = w;
                        }
                    }
                    None => {
                        group.push(candidates.len());
                        candidates.push(Candidate {
                            text,
                            words: w,
                            topics,
                            teachers: BTreeSet::from([u]),
                            support: s,
                        });
                    }
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
}
