//! The closest-teacher positive ([`super::PositiveStyle::ClosestTeacher`]): the teacher
//! trajectory that needs the fewest edits to state exactly the consensus, with those edits
//! made in place.

use super::claims::{Claim, ClaimExtractor, Polarity, Reading, agrees, misread, support};
use super::layout::{clean, list_marker, renumber, with_stop};
use super::{ClaimSynthesizer, Provenance, Source, Synthesis};

impl<E: ClaimExtractor> ClaimSynthesizer<E> {
    /// [`super::PositiveStyle::ClosestTeacher`]: the teachers' trajectories edited into the
    /// consensus, fewest edits first; the first that reads back as the consensus, or `None`.
    pub(super) fn edited(
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
        // Each sentence's claims, gathered in one pass (linear in the sentences).
        let mut per_sentence: Vec<Vec<&Claim>> = vec![Vec::new(); reading.sentences.len()];
        for c in &reading.claims {
            if let Some(v) = per_sentence.get_mut(c.sentence) {
                v.push(c);
            }
        }
        for claims in per_sentence {
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
