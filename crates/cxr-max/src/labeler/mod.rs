//! A rule-based findings labeler for radiology-style text, in the spirit of the CheXpert
//! labeler and NegBio: synonym phrases per finding, negation and uncertainty cues with a
//! clause-limited scope, and later statements overriding earlier ones.
//!
//! Rules (documented in `docs/data.md`):
//! 1. Text is split into sentences at `.`, `!`, `?`, `;` and line breaks (not inside numbers
//!    such as `1.5`, nor after list markers such as `1.`). Sentence indices start at 0.
//! 2. Each sentence is tokenised into lowercase words (hyphens separate words), and every
//!    synonym phrase of every finding is matched on whole words.
//! 3. A mention's status comes from the nearest cue before it in its clause (clauses end at
//!    `but`, `however`, `although`, `though`, `whereas`, `while`, `except`, `yet`): a
//!    negation cue (`no`, `without`, `free of`, `negative for`, `resolution of`, ...) makes it
//!    negative, an uncertainty cue (`possible`, `may represent`, `cannot exclude`, `likely`,
//!    `suggestive of`, ...) uncertain. `no change`, `unchanged` and similar are not negations.
//!    Without a cue before it, a cue right after it in the clause (`is not seen`, `has
//!    resolved`, `cannot be excluded`, `is suspected`, ...) applies. Otherwise it is positive.
//! 4. Some phrases carry their status: `normal heart size` is a negative Cardiomegaly
//!    statement, `no acute cardiopulmonary process` a positive No Finding statement.
//! 5. The status of a finding is that of its last mention. No Finding is dropped when any
//!    pathology is positive or uncertain.
//!
//! The phrases and cues are data: [`Lexicon`], read from `lexicon.toml` (embedded at build
//! time) and extendable with a user file in the same format ([`Lexicon::from_toml_str`],
//! [`Lexicon::extend`], [`Labeler::with_lexicon`]).

mod lexicon;
pub mod reports;

pub use lexicon::{LabelerError, Lexicon};

use crate::{Finding, Findings, LabelStatus};
use lexicon::Entry;

/// One statement about a finding.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mention {
    /// The finding.
    pub finding: Finding,
    /// What the statement says.
    pub status: LabelStatus,
    /// 0-based sentence index (the step `j` of the drift statistics).
    pub sentence: usize,
    /// Byte range of the sentence in the input.
    pub span: (usize, usize),
}

/// The labeler's reading of a text.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Extraction {
    /// The final status of every finding (last statement wins).
    pub findings: Findings,
    /// Every statement, in reading order.
    pub mentions: Vec<Mention>,
    /// Number of sentences.
    pub sentences: usize,
}

/// How a text's earlier statements sit with its final ones (the paper's chain-of-thought
/// consistency): per finding, whether an earlier statement contradicts the final one (present
/// against absent) or hedges it (uncertain against a definite final statement, or a definite
/// earlier statement left uncertain at the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Consistency {
    /// Findings with an earlier statement that contradicts the final one.
    pub contradictions: usize,
    /// Findings with an earlier statement that hedges the final one (and none that
    /// contradicts it).
    pub hedges: usize,
}

impl Consistency {
    /// Whether any finding's earlier statements contradict or hedge its final one.
    pub fn inconsistent(self) -> bool {
        self.contradictions + self.hedges > 0
    }
}

impl Extraction {
    /// Contradictions and hedges of the earlier statements against the final ones.
    ///
    /// # Examples
    /// ```
    /// use cxr_max::findings;
    /// let e = findings::extract("Small left pleural effusion. No pleural effusion. Possible edema. Mild pulmonary edema.");
    /// let c = e.consistency();
    /// assert_eq!((c.contradictions, c.hedges), (1, 1));
    /// assert!(!findings::extract("No pneumothorax. No pneumothorax.").consistency().inconsistent());
    /// ```
    pub fn consistency(&self) -> Consistency {
        use LabelStatus::{Negative, Positive, Uncertain};
        let mut out = Consistency::default();
        for finding in Finding::ALL {
            let Some(last) = self.mentions.iter().rposition(|m| m.finding == finding) else {
                continue;
            };
            let end = self.mentions[last].status;
            let earlier = self.mentions[..last]
                .iter()
                .filter(|m| m.finding == finding);
            let (mut contradicts, mut hedges) = (false, false);
            for m in earlier {
                match (m.status, end) {
                    (Positive, Negative) | (Negative, Positive) => contradicts = true,
                    (Uncertain, Positive | Negative) | (Positive | Negative, Uncertain) => {
                        hedges = true;
                    }
                    _ => {}
                }
            }
            if contradicts {
                out.contradictions += 1;
            } else if hedges {
                out.hedges += 1;
            }
        }
        out
    }

    /// The status of `finding` after the first `steps` sentences (last statement wins within
    /// the prefix): the per-step state of a trajectory.
    pub fn status_at(&self, finding: Finding, steps: usize) -> LabelStatus {
        self.mentions
            .iter()
            .rfind(|m| m.finding == finding && m.sentence < steps)
            .map_or(LabelStatus::NotMentioned, |m| m.status)
    }
}

/// Reads the status of each of the 14 findings from `text`, with the built-in lexicon
/// (the same as `Labeler::default().extract(text)`).
///
/// # Examples
/// ```
/// use cxr_max::{Finding, LabelStatus, findings};
/// let e = findings::extract("Small left pleural effusion. No pneumothorax. Possible atelectasis.");
/// assert_eq!(e.findings.get(Finding::PleuralEffusion), LabelStatus::Positive);
/// assert_eq!(e.findings.get(Finding::Pneumothorax), LabelStatus::Negative);
/// assert_eq!(e.findings.get(Finding::Atelectasis), LabelStatus::Uncertain);
/// assert_eq!(e.mentions[2].sentence, 2);
/// ```
pub fn extract(text: &str) -> Extraction {
    extract_with(text, Lexicon::builtin_ref())
}

/// The findings labeler with its lexicon: the built-in one ([`Labeler::default`]) or one a
/// user extended or wrote ([`Labeler::with_lexicon`]).
///
/// # Examples
/// ```
/// use cxr_max::{Finding, LabelStatus, findings::{Labeler, Lexicon}};
/// let mut lexicon = Lexicon::builtin();
/// lexicon.extend(Lexicon::from_toml_str(r#"
/// [[synonyms]]
/// findings = ["Pneumothorax"]
/// phrases = ["air in the pleural space"]
/// "#)?);
/// let labeler = Labeler::with_lexicon(lexicon);
/// let e = labeler.extract("No air in the pleural space.");
/// assert_eq!(e.findings.get(Finding::Pneumothorax), LabelStatus::Negative);
/// # Ok::<(), cxr_max::findings::LabelerError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Labeler {
    /// `None`: the built-in lexicon (shared, parsed once).
    lexicon: Option<Box<Lexicon>>,
}

impl Labeler {
    /// A labeler reading with `lexicon`.
    pub fn with_lexicon(lexicon: Lexicon) -> Self {
        Labeler {
            lexicon: Some(Box::new(lexicon)),
        }
    }

    /// The lexicon this labeler reads with.
    pub fn lexicon(&self) -> &Lexicon {
        match &self.lexicon {
            Some(lexicon) => lexicon,
            None => Lexicon::builtin_ref(),
        }
    }

    /// Reads the status of each of the 14 findings from `text` (rules: the module
    /// documentation).
    pub fn extract(&self, text: &str) -> Extraction {
        extract_with(text, self.lexicon())
    }
}

fn extract_with(text: &str, lexicon: &Lexicon) -> Extraction {
    let sentences = split_sentences(text);
    let mut mentions = Vec::new();
    for (index, &(start, end)) in sentences.iter().enumerate() {
        let tokens = tokenize(&text[start..end]);
        for (finding, status) in label_sentence(&tokens, lexicon) {
            mentions.push(Mention {
                finding,
                status,
                sentence: index,
                span: (start, end),
            });
        }
    }
    let mut findings = Findings::default();
    for m in &mentions {
        findings.set(m.finding, m.status);
    }
    let pathology = Finding::ALL
        .into_iter()
        .filter(|f| f.is_pathology())
        .any(|f| {
            matches!(
                findings.get(f),
                LabelStatus::Positive | LabelStatus::Uncertain
            )
        });
    if pathology {
        findings.set(Finding::NoFinding, LabelStatus::NotMentioned);
    }
    Extraction {
        findings,
        mentions,
        sentences: sentences.len(),
    }
}

/// One plain sentence stating `status` of `finding`, which [`extract`] reads back as exactly
/// that status of that finding and nothing else: the template a consensus trajectory uses
/// when no teacher sentence can be kept. `NotMentioned` gives an empty string; No Finding has
/// only a positive statement ("No acute cardiopulmonary process."), so its negative and
/// uncertain forms are empty too.
///
/// # Examples
/// ```
/// use cxr_max::{Finding, LabelStatus, findings};
/// let s = findings::statement(Finding::PleuralEffusion, LabelStatus::Negative);
/// assert_eq!(s, "No pleural effusion.");
/// assert_eq!(findings::extract(&s).findings.get(Finding::PleuralEffusion), LabelStatus::Negative);
/// ```
pub fn statement(finding: Finding, status: LabelStatus) -> String {
    let noun = finding.noun();
    let capital = || {
        let mut c = noun.chars();
        c.next()
            .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
            .unwrap_or_default()
    };
    match (finding, status) {
        (_, LabelStatus::NotMentioned) => String::new(),
        (Finding::NoFinding, LabelStatus::Positive) => "No acute cardiopulmonary process.".into(),
        (Finding::NoFinding, _) => String::new(),
        (Finding::SupportDevices, LabelStatus::Positive) => "Support devices are present.".into(),
        (Finding::SupportDevices, LabelStatus::Negative) => "No lines or tubes.".into(),
        (Finding::Cardiomegaly, LabelStatus::Negative) => "Heart size is normal.".into(),
        (Finding::EnlargedCardiomediastinum, LabelStatus::Negative) => {
            "Normal cardiomediastinal silhouette.".into()
        }
        (_, LabelStatus::Positive) => format!("{} is present.", capital()),
        (_, LabelStatus::Negative) => format!("No {noun}."),
        (_, LabelStatus::Uncertain) => format!("Possible {noun}."),
    }
}

/// Byte ranges of the sentences of `text` (trimmed, non-empty).
pub fn split_sentences(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let push = |out: &mut Vec<(usize, usize)>, s: usize, e: usize| {
        let piece = &text[s..e];
        let lead = piece.len() - piece.trim_start().len();
        let trimmed = piece.trim();
        if trimmed.chars().any(char::is_alphanumeric) {
            out.push((s + lead, s + lead + trimmed.len()));
        }
    };
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        let boundary = match c {
            b'\n' => true,
            b'!' | b'?' | b';' => true,
            b'.' => {
                let after_ok = next.is_none_or(|n| n.is_ascii_whitespace());
                let prev_digit = i > 0 && bytes[i - 1].is_ascii_digit();
                // A list marker: the digits before the dot start the line or the text.
                let list_marker = prev_digit && {
                    let mut k = i;
                    while k > 0 && bytes[k - 1].is_ascii_digit() {
                        k -= 1;
                    }
                    let before = text[..k].trim_end_matches([' ', '\t']);
                    before.is_empty() || before.ends_with('\n') || before.ends_with(':')
                };
                after_ok && !list_marker
            }
            _ => false,
        };
        if boundary {
            push(&mut out, start, i + 1);
            start = i + 1;
        }
        i += 1;
    }
    push(&mut out, start, text.len());
    out
}

/// Lowercase words: hyphens and punctuation separate words, apostrophes are dropped.
pub(crate) fn tokenize(sentence: &str) -> Vec<String> {
    sentence
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase().replace('\'', ""))
        .collect()
}

fn matches_at(tokens: &[String], i: usize, phrase: &[String]) -> bool {
    i + phrase.len() <= tokens.len() && phrase.iter().zip(&tokens[i..]).all(|(p, t)| p == t)
}

/// The end (exclusive) of `entry` matched at `i`, if it matches there.
fn entry_end(tokens: &[String], i: usize, entry: &Entry) -> Option<usize> {
    if entry.gap == 0 {
        return matches_at(tokens, i, &entry.words).then_some(i + entry.words.len());
    }
    let (head, tail) = entry.words.split_at(entry.words.len() - 1);
    if !matches_at(tokens, i, head) {
        return None;
    }
    let from = i + head.len();
    (from..(from + entry.gap + 1).min(tokens.len()))
        .find(|&k| tokens[k] == tail[0])
        .map(|k| k + 1)
}

/// `(finding, status)` for each mention in a tokenised sentence, in order.
fn label_sentence(tokens: &[String], lex: &Lexicon) -> Vec<(Finding, LabelStatus)> {
    // Longest phrase first at each position; a matched span is not matched again.
    // Exclusions (e.g. "pericardial effusion") are entries without findings: they claim
    // their words like any phrase, so a longer phrase still wins over them.
    let mut covered = vec![false; tokens.len()];
    let mut found: Vec<(usize, usize, &Entry)> = Vec::new();
    // Only entries whose first word occurs in the sentence can match; visiting them in
    // entry order keeps the longest-first rule.
    let mut candidates: Vec<usize> = tokens
        .iter()
        .filter_map(|t| lex.by_first_word.get(t.as_str()))
        .flatten()
        .copied()
        .collect();
    candidates.sort_unstable();
    candidates.dedup();
    for entry in candidates.into_iter().map(|i| &lex.entries[i]) {
        for i in 0..tokens.len() {
            if covered[i] {
                continue;
            }
            if let Some(end) = entry_end(tokens, i, entry) {
                // A gapped match claims its head and tail; the words between stay free for cues.
                let claimed: Vec<usize> = if entry.gap == 0 {
                    (i..end).collect()
                } else {
                    (i..i + entry.words.len() - 1)
                        .chain(std::iter::once(end - 1))
                        .collect()
                };
                if claimed.iter().all(|&k| !covered[k]) {
                    claimed.iter().for_each(|&k| covered[k] = true);
                    found.push((i, end, entry));
                }
            }
        }
    }
    found.sort_by_key(|&(s, _, _)| s);
    let mut out = Vec::new();
    for (start, end, entry) in found {
        if entry.findings.is_empty() {
            continue;
        }
        // For a gapped phrase, cues between its head and tail count ("heart may be enlarged").
        let anchor = if entry.gap > 0 { end - 1 } else { start };
        let status = entry
            .fixed
            .unwrap_or_else(|| cue_status(tokens, anchor, end, lex, &covered));
        for &f in &entry.findings {
            out.push((f, status));
        }
    }
    out
}

/// The status of the mention `tokens[start..end]` from the cues of its clause.
fn cue_status(
    tokens: &[String],
    start: usize,
    end: usize,
    lex: &Lexicon,
    covered: &[bool],
) -> LabelStatus {
    let clause_start = (0..start)
        .rev()
        .find(|&i| lex.breakers.contains(&tokens[i]))
        .map_or(0, |i| i + 1);
    let clause_end = (end..tokens.len())
        .find(|&i| lex.breakers.contains(&tokens[i]))
        .unwrap_or(tokens.len());

    // Nearest cue before the mention: the cue whose last word is closest.
    let mut best: Option<(usize, LabelStatus)> = None;
    let consider = |phrases: &Vec<Vec<String>>,
                    status: LabelStatus,
                    best: &mut Option<(usize, LabelStatus)>| {
        for p in phrases {
            for i in clause_start..start {
                if i + p.len() <= start && matches_at(tokens, i, p) {
                    let last = i + p.len();
                    // Cue words that are part of a finding phrase do not count.
                    if covered[i..last].iter().any(|&c| c) {
                        continue;
                    }
                    if best.is_none_or(|(b, _)| last > b) {
                        *best = Some((last, status));
                    }
                }
            }
        }
    };
    consider(&lex.negation, LabelStatus::Negative, &mut best);
    // Uncertainty wins ties: its phrases contain negation words ("cannot exclude").
    let mut unc: Option<(usize, LabelStatus)> = None;
    consider(&lex.uncertainty, LabelStatus::Uncertain, &mut unc);
    if let Some((u, _)) = unc
        && best.is_none_or(|(b, _)| u >= b)
    {
        best = unc;
    }
    // "No change in the effusion" is not a negation.
    if let Some((b, LabelStatus::Negative)) = best {
        let neutralised = lex.not_negation.iter().any(|p| {
            (clause_start..start).any(|i| matches_at(tokens, i, p) && i < b && b <= i + p.len())
        });
        if neutralised {
            best = None;
        }
    }
    if let Some((_, status)) = best {
        return status;
    }
    // Cues right after the mention (within six words, in the clause).
    let window_end = (end + 6).min(clause_end);
    let after = |phrases: &Vec<Vec<String>>| {
        (end..window_end).any(|i| {
            phrases
                .iter()
                .any(|p| i + p.len() <= clause_end && matches_at(tokens, i, p))
        })
    };
    if after(&lex.post_uncertainty) {
        return LabelStatus::Uncertain;
    }
    if after(&lex.post_negation) {
        return LabelStatus::Negative;
    }
    LabelStatus::Positive
}
