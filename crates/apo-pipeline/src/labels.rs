//! The teachers' statements, read once, and the label consensus built on them.
//!
//! Every trajectory is read with the `cxr-max` labeler exactly once per run
//! ([`Labelled::read`]): its final statement per finding (what a teacher votes) and every
//! statement with its sentence index (what the drift statistics count). Per image and finding
//! a teacher votes present or absent; hedges, omissions and refusals abstain.
//!
//! The definitions every report shares:
//! - a teacher's vote: [`teacher_vote`] (its final statement, present or absent);
//! - the majority vote: [`label_consensus`] with [`Method::Majority`] — the label most
//!   teachers voted for, a tie going to *absent* (the label that sorts first, as crowd-kit's
//!   `MajorityVote`), no label on an image with fewer than `min_votes` votes;
//! - accuracy: [`cxr_max::eval::accuracy`] — per finding, the share of images with a definite
//!   label whose prediction matches it, an image without a prediction counting as wrong.

use cxr_max::dataset::Item;
use cxr_max::{Finding, LabelStatus, findings};
use rayon::prelude::*;

use apo_consensus::{
    ClaimExtractor, DawidSkeneConfig, Method, Polarity, Reading, Votes, dawid_skene, majority_vote,
    reliability_weights, weighted_vote,
};

use crate::error::{PipelineError, Result};

/// The chest X-ray claim extractor: `cxr-max`'s labeler and sentence templates.
#[derive(Debug, Clone, Copy, Default)]
pub struct CxrClaims;

/// The polarity of a labeler status (`None`: not mentioned).
pub fn polarity(s: LabelStatus) -> Option<Polarity> {
    match s {
        LabelStatus::Positive => Some(Polarity::Present),
        LabelStatus::Negative => Some(Polarity::Absent),
        LabelStatus::Uncertain => Some(Polarity::Uncertain),
        LabelStatus::NotMentioned => None,
    }
}

fn status(p: Polarity) -> LabelStatus {
    match p {
        Polarity::Present => LabelStatus::Positive,
        Polarity::Absent => LabelStatus::Negative,
        Polarity::Uncertain => LabelStatus::Uncertain,
    }
}

fn finals_of(e: &findings::Extraction) -> Vec<Option<Polarity>> {
    Finding::ALL
        .iter()
        .map(|&f| polarity(e.findings.get(f)))
        .collect()
}

/// The byte ranges of the sentences of `text` that state at least one of the 14 findings
/// (present, absent or uncertain), as the findings labeler reads them, without their leading
/// layout (a list marker such as `1.`, `-` or `*`, and a header of up to three words ending
/// in `:` such as `Findings:`): the "finding" tokens of the reward-margin breakdown
/// ([`apo_train::margin`]); everything else is layout.
pub fn finding_spans(text: &str) -> Vec<(usize, usize)> {
    let lead = |(a, b): (usize, usize)| -> (usize, usize) {
        let mut a = a;
        let skip_space = |a: usize| a + (text[a..b].len() - text[a..b].trim_start().len());
        let piece = &text[a..b];
        let digits = piece.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && matches!(piece.as_bytes().get(digits), Some(b'.' | b')')) {
            a = skip_space(a + digits + 1);
        } else if piece.starts_with(['-', '*', '\u{2022}']) {
            a = skip_space(a + piece.chars().next().map_or(1, char::len_utf8));
        }
        let piece = &text[a..b];
        if let Some(colon) = piece.find(':') {
            let header = &piece[..colon];
            let words = header.split_whitespace().count();
            if (1..=3).contains(&words) && header.chars().all(|c| c.is_alphabetic() || c == ' ') {
                a = skip_space(a + colon + 1);
            }
        }
        (a, b)
    };
    let r = CxrClaims.read(text);
    let mut stated = vec![false; r.sentences.len()];
    for c in &r.claims {
        if let Some(s) = stated.get_mut(c.sentence) {
            *s = true;
        }
    }
    r.sentences
        .iter()
        .zip(stated)
        .filter(|(_, s)| *s)
        .map(|(&span, _)| lead(span))
        .filter(|(a, b)| a < b)
        .collect()
}

impl ClaimExtractor for CxrClaims {
    fn topics(&self) -> usize {
        Finding::ALL.len()
    }

    fn read(&self, text: &str) -> Reading {
        let e = findings::extract(text);
        let sentences = findings::split_sentences(text);
        Reading {
            claims: e
                .mentions
                .iter()
                .filter_map(|m| {
                    polarity(m.status).map(|p| apo_consensus::Claim {
                        sentence: m.sentence,
                        topic: m.finding.index(),
                        polarity: p,
                    })
                })
                .collect(),
            finals: finals_of(&e),
            sentences,
        }
    }

    fn render(&self, topic: usize, polarity: Polarity) -> String {
        findings::statement(Finding::ALL[topic], status(polarity))
    }

    fn impression(&self, consensus: &[Option<Polarity>]) -> Option<String> {
        let positives: Vec<&str> = Finding::ALL
            .iter()
            .filter(|f| f.is_pathology() && consensus[f.index()] == Some(Polarity::Present))
            .map(|f| f.noun())
            .collect();
        if !positives.is_empty() {
            return Some(format!("Impression: {}.", join_and(&positives)));
        }
        (consensus[Finding::NoFinding.index()] == Some(Polarity::Present))
            .then(|| "Impression: no acute cardiopulmonary process.".to_owned())
    }
}

fn join_and(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Per image: trajectory × finding final statements.
pub type Finals = Vec<Vec<Option<Polarity>>>;

/// One statement of a trajectory, as the drift statistics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statement {
    /// The teacher (index into [`Labelled::teachers`]).
    pub teacher: usize,
    /// The 0-based sentence index.
    pub sentence: usize,
    /// What the sentence says of its finding.
    pub status: LabelStatus,
}

/// Every trajectory of a data set read once with the labeler.
#[derive(Debug, Clone, Default)]
pub struct Labelled {
    /// Teachers in order of first appearance.
    pub teachers: Vec<String>,
    /// `readings[image][trajectory]`: sentences, claims and final statements, as the claim
    /// synthesizer reads them ([`CxrClaims`]).
    pub readings: Vec<Vec<Reading>>,
    /// `finals[image][trajectory][finding]` (the readings' final statements).
    pub finals: Vec<Finals>,
    /// `statements[image]`: every statement of every trajectory, in reading order.
    pub statements: Vec<Vec<Statement>>,
}

impl Labelled {
    /// Reads every trajectory of every item (on all cores; the result does not depend on the
    /// number of threads).
    pub fn read(items: &[Item]) -> Labelled {
        let refs: Vec<&Item> = items.iter().collect();
        let teachers = teachers_of(&refs);
        let readings: Vec<Vec<Reading>> = items
            .par_iter()
            .map(|item| {
                let texts = item.sample.trajectories.iter();
                texts.map(|t| CxrClaims.read(&t.text)).collect()
            })
            .collect();
        let mut finals = Vec::with_capacity(items.len());
        let mut statements = Vec::with_capacity(items.len());
        for (item, read) in items.iter().zip(&readings) {
            finals.push(read.iter().map(|r| r.finals.clone()).collect());
            let mut said = Vec::new();
            for (t, r) in item.sample.trajectories.iter().zip(read) {
                let u = teachers
                    .iter()
                    .position(|x| x == &t.teacher)
                    .unwrap_or_default();
                said.extend(r.claims.iter().map(|c| Statement {
                    teacher: u,
                    sentence: c.sentence,
                    status: status(c.polarity),
                }));
            }
            statements.push(said);
        }
        Labelled {
            teachers,
            readings,
            finals,
            statements,
        }
    }

    /// The finals of the items at `indices`, in that order.
    pub fn finals_of(&self, indices: &[usize]) -> Vec<Finals> {
        indices.iter().map(|&i| self.finals[i].clone()).collect()
    }
}

/// Teachers in order of first appearance.
pub fn teachers_of(items: &[&Item]) -> Vec<String> {
    let mut teachers: Vec<String> = Vec::new();
    for item in items {
        for t in &item.sample.trajectories {
            if !teachers.contains(&t.teacher) {
                teachers.push(t.teacher.clone());
            }
        }
    }
    teachers
}

/// A teacher's vote on a finding of an item: its final statement, present or absent (hedges,
/// omissions and missing trajectories give none).
pub fn teacher_vote(item: &Item, finals: &Finals, teacher: &str, f: Finding) -> Option<Polarity> {
    item.sample
        .trajectories
        .iter()
        .position(|t| t.teacher == teacher)
        .and_then(|s| finals[s][f.index()])
        .filter(|p| *p != Polarity::Uncertain)
}

/// `Some(true)` for present, `Some(false)` for absent, `None` otherwise: a prediction as
/// [`cxr_max::eval`] scores it.
pub fn present(p: Option<Polarity>) -> Option<bool> {
    match p {
        Some(Polarity::Present) => Some(true),
        Some(Polarity::Absent) => Some(false),
        _ => None,
    }
}

/// How teacher weights are obtained for [`Method::Weighted`].
#[derive(Debug, Clone, PartialEq)]
pub enum Weights {
    /// Per finding, each teacher's leave-one-out agreement log-odds
    /// ([`apo_consensus::reliability_weights`]).
    Reliability,
    /// Static weights per teacher name (missing teachers weigh 1).
    Static(Vec<(String, f64)>),
}

/// Per image and finding: the consensus and its confidence.
#[derive(Debug, Clone)]
pub struct LabelConsensus {
    /// `labels[item][finding]`.
    pub labels: Vec<Vec<Option<Polarity>>>,
    /// `confidence[item][finding]`.
    pub confidence: Vec<Vec<f64>>,
}

/// Dawid-Skene EM starts from seeded random posteriors, besides the majority vote and one
/// per teacher: on the default simulation's train splits (seeds 0-4), 16 and 32 starts find
/// the same fits.
pub const DS_RANDOM_STARTS: usize = 16;

/// Per image of one finding: the consensus and its confidence.
type FindingConsensus = Vec<(Option<Polarity>, f64)>;

/// Aggregates the teachers' votes per finding (the 14 findings on all cores).
///
/// Dawid-Skene's label orientation is fixed by the fact that every finding is absent in most
/// images (see [`DawidSkeneConfig::majority_label`]), and EM starts from each teacher's votes
/// and from [`DS_RANDOM_STARTS`] seeded random posteriors as well as the majority vote,
/// keeping the best fit. A finding has a consensus on an image when at least `min_votes`
/// teachers voted; No Finding is kept only as a positive when no pathology is present.
///
/// # Errors
/// Consensus errors (bad weights), naming the finding.
pub fn label_consensus(
    items: &[&Item],
    finals: &[Finals],
    teachers: &[String],
    method: Method,
    weights: &Weights,
    min_votes: usize,
) -> Result<LabelConsensus> {
    const LABELS: [&str; 2] = ["absent", "present"];
    let n = items.len();
    let one = |f: usize| -> Result<FindingConsensus> {
        let context = |source| PipelineError::Consensus {
            context: Finding::ALL[f].column_name().to_owned(),
            source,
        };
        let mut entries = Vec::new();
        let mut voters = vec![0usize; n];
        for (i, item) in items.iter().enumerate() {
            for (s, t) in item.sample.trajectories.iter().enumerate() {
                let l = match finals[i][s][f] {
                    Some(Polarity::Absent) => 0,
                    Some(Polarity::Present) => 1,
                    _ => continue,
                };
                let Some(w) = teachers.iter().position(|x| *x == t.teacher) else {
                    continue;
                };
                entries.push((i, w, l));
                voters[i] += 1;
            }
        }
        if entries.is_empty() {
            return Ok(vec![(None, 0.0); n]);
        }
        let votes = Votes::from_indices(
            items.iter().map(|it| it.sample.dicom_id.clone()).collect(),
            teachers.to_vec(),
            LABELS.iter().map(|s| (*s).to_owned()).collect(),
            entries,
        )
        .map_err(context)?;
        let result = match method {
            Method::Majority => majority_vote(&votes),
            Method::Weighted => {
                let w = match weights {
                    Weights::Reliability => reliability_weights(&votes),
                    Weights::Static(w) => w.clone(),
                };
                let w: Vec<(&str, f64)> = w
                    .iter()
                    .filter(|(name, _)| votes.workers().contains(name))
                    .map(|(name, x)| (name.as_str(), *x))
                    .collect();
                weighted_vote(&votes, &w).map_err(context)?
            }
            Method::DawidSkene => {
                // Every finding is absent in most images (true of all 14 in MIMIC-CXR): this
                // fixes Dawid-Skene's label orientation when most teachers are worse than
                // chance on a finding. When most teachers share a bias (stating a finding on
                // most images), EM from the majority vote can settle on a fit whose latent
                // class follows the bias; EM from each teacher's labels and from seeded
                // random posteriors too, keeping the best-fitting, finds the truth's.
                let config = DawidSkeneConfig {
                    majority_label: Some(0),
                    worker_starts: true,
                    random_starts: DS_RANDOM_STARTS,
                    ..DawidSkeneConfig::default()
                };
                dawid_skene(&votes, &config).map_err(context)?.consensus
            }
            Method::OneCoinDawidSkene => {
                // The same starts and orientation as Dawid-Skene's, one skill per teacher.
                let config = DawidSkeneConfig {
                    majority_label: Some(0),
                    worker_starts: true,
                    random_starts: DS_RANDOM_STARTS,
                    ..DawidSkeneConfig::default()
                };
                apo_consensus::one_coin_dawid_skene(&votes, &config)
                    .map_err(context)?
                    .consensus
            }
            Method::Wawa => apo_consensus::wawa(&votes).0,
            Method::Mace | Method::MacePublished => {
                let config = apo_consensus::MaceConfig {
                    crowdkit_indexing: method == Method::Mace,
                    ..apo_consensus::MaceConfig::default()
                };
                apo_consensus::mace(&votes, &config)
                    .map_err(context)?
                    .consensus
            }
            Method::Glad => {
                apo_consensus::glad(&votes, &apo_consensus::GladConfig::default())
                    .map_err(context)?
                    .consensus
            }
        };
        Ok(result
            .iter()
            .map(|c| {
                if voters[c.task] < min_votes.max(1) {
                    (None, 0.0)
                } else {
                    let p = [Polarity::Absent, Polarity::Present][c.label];
                    (Some(p), c.confidence)
                }
            })
            .collect())
    };
    // Collected in finding order, so the error reported is the first finding's.
    let per_finding: Vec<Result<FindingConsensus>> =
        (0..Finding::ALL.len()).into_par_iter().map(one).collect();
    let per_finding: Vec<FindingConsensus> = per_finding.into_iter().collect::<Result<_>>()?;
    let mut labels = vec![vec![None; Finding::ALL.len()]; n];
    let mut confidence = vec![vec![0.0; Finding::ALL.len()]; n];
    for (f, r) in per_finding.into_iter().enumerate() {
        for (i, (l, c)) in r.into_iter().enumerate() {
            labels[i][f] = l;
            confidence[i][f] = c;
        }
    }
    // No Finding only as a positive, and only without a present pathology.
    let nf = Finding::NoFinding.index();
    for (l, c) in labels.iter_mut().zip(&mut confidence) {
        let pathology = Finding::ALL
            .iter()
            .any(|f| f.is_pathology() && l[f.index()] == Some(Polarity::Present));
        if pathology || l[nf] != Some(Polarity::Present) {
            l[nf] = None;
            c[nf] = 0.0;
        }
    }
    Ok(LabelConsensus { labels, confidence })
}

/// Accuracy of `predict(item, finding)` against the ground truth ([`cxr_max::eval::accuracy`]);
/// `None` without any.
pub fn accuracy(
    items: &[&Item],
    evaluated: &[Finding],
    predict: impl Fn(usize, Finding) -> Option<Polarity>,
) -> Option<cxr_max::eval::Accuracy> {
    let labels: Vec<_> = items.iter().map(|i| i.labels).collect();
    cxr_max::eval::accuracy(&labels, evaluated, |i, f| present(predict(i, f)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finding sentences without their list markers and headers; sentences without a
    /// finding are left out.
    #[test]
    fn finding_spans_leave_markers_headers_and_other_sentences_to_layout() {
        let text = "Technique: PA view.\nFindings:\n1. Small left pleural effusion.\n- No \
                    pneumothorax.\nImpression: pleural effusion.";
        let spans: Vec<&str> = finding_spans(text)
            .iter()
            .map(|&(a, b)| &text[a..b])
            .collect();
        assert_eq!(
            spans,
            [
                "Small left pleural effusion.",
                "No pneumothorax.",
                "pleural effusion."
            ]
        );
        assert!(finding_spans("Technique: PA view.").is_empty());
        assert!(finding_spans("").is_empty());
    }
}
