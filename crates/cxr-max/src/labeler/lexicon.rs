//! The labeler's lexicon as data: synonym phrases per finding and the cue phrases, read from
//! TOML (the built-in `lexicon.toml`, embedded at build time, or a user file in the same
//! format; `docs/data.md`, "The lexicon").

use std::collections::HashMap;
use std::sync::LazyLock;

use toml::Spanned;

use super::tokenize;
use crate::{Finding, LabelStatus};

/// A lexicon that cannot be read, with the line of the problem (1-based, in the TOML text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LabelerError {
    /// Not valid TOML, or not the shape of a lexicon (an unknown key, a wrong type, a
    /// missing `phrases`).
    #[error("lexicon line {line}: {reason}")]
    Toml {
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A finding name that is not one of the 14 CheXpert findings.
    #[error(
        "lexicon line {line}: unknown finding `{name}`; expected one of the 14 CheXpert findings, e.g. `Pleural Effusion`"
    )]
    UnknownFinding {
        /// 1-based line.
        line: usize,
        /// The name given.
        name: String,
    },
    /// A `status` other than `positive`, `negative` or `uncertain`.
    #[error(
        "lexicon line {line}: unknown status `{name}`; expected `positive`, `negative` or `uncertain`"
    )]
    UnknownStatus {
        /// 1-based line.
        line: usize,
        /// The status given.
        name: String,
    },
    /// A phrase the labeler could never match as written.
    #[error("lexicon line {line}: phrase `{phrase}`: {reason}")]
    Phrase {
        /// 1-based line.
        line: usize,
        /// The phrase.
        phrase: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A phrase and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    /// The words; for a gapped entry, the last word may follow the others after up to
    /// `gap` intervening words ("heart may be mildly enlarged").
    pub(super) words: Vec<String>,
    pub(super) gap: usize,
    pub(super) findings: Vec<Finding>,
    /// A status carried by the phrase itself (no cue analysis).
    pub(super) fixed: Option<LabelStatus>,
}

/// The phrases the findings labeler knows: synonyms per finding (some with a status of their
/// own, some claimed without a finding so that a shorter phrase inside them is not read) and
/// the negation and uncertainty cues.
///
/// [`Lexicon::builtin`] is the lexicon of [`super::extract`]; [`Lexicon::from_toml_str`] reads
/// one in the same format and [`Lexicon::extend`] adds one to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lexicon {
    /// Entries in listing order (what [`Lexicon::extend`] appends to).
    listed: Vec<Entry>,
    /// `listed`, longest phrase first (stable: equal lengths keep their listing order).
    pub(super) entries: Vec<Entry>,
    /// Indices into `entries` by first word, ascending (so longest phrases first).
    pub(super) by_first_word: HashMap<String, Vec<usize>>,
    pub(super) negation: Vec<Vec<String>>,
    pub(super) uncertainty: Vec<Vec<String>>,
    pub(super) not_negation: Vec<Vec<String>>,
    pub(super) post_negation: Vec<Vec<String>>,
    pub(super) post_uncertainty: Vec<Vec<String>>,
    pub(super) breakers: Vec<String>,
}

/// The built-in lexicon, parsed once.
static BUILTIN: LazyLock<Lexicon> = LazyLock::new(|| {
    // Not input: a test parses the embedded file.
    Lexicon::from_toml_str(include_str!("lexicon.toml")).expect("the built-in lexicon is valid")
});

/// The file: `[cues]` and `[[synonyms]]` tables.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LexiconFile {
    #[serde(default)]
    cues: CuesFile,
    #[serde(default)]
    synonyms: Vec<SynonymsFile>,
}

#[derive(Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct CuesFile {
    negation: Vec<Spanned<String>>,
    uncertainty: Vec<Spanned<String>>,
    not_negation: Vec<Spanned<String>>,
    post_negation: Vec<Spanned<String>>,
    post_uncertainty: Vec<Spanned<String>>,
    breakers: Vec<Spanned<String>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SynonymsFile {
    findings: Vec<Spanned<String>>,
    #[serde(default)]
    status: Option<Spanned<String>>,
    phrases: Vec<Spanned<String>>,
}

impl Lexicon {
    /// The built-in lexicon (`lexicon.toml` in this crate's sources): a copy to extend.
    pub fn builtin() -> Lexicon {
        BUILTIN.clone()
    }

    /// The built-in lexicon, shared.
    pub(super) fn builtin_ref() -> &'static Lexicon {
        &BUILTIN
    }

    /// Reads a lexicon from TOML text (format: `docs/data.md`, "The lexicon"). Every table
    /// and key is optional, so a file can add only synonyms or only cues.
    ///
    /// # Errors
    /// [`LabelerError`], naming the line: invalid TOML or an unknown key
    /// ([`LabelerError::Toml`]), an unknown finding or status, or a phrase that could never
    /// match (not lowercase words separated by single spaces, a malformed `~N` gap).
    ///
    /// # Examples
    /// ```
    /// use cxr_max::findings::{LabelerError, Lexicon};
    /// let err = Lexicon::from_toml_str("[[synonyms]]\nfindings = [\"Pleural Efusion\"]\nphrases = [\"fluid\"]\n");
    /// assert!(matches!(err, Err(LabelerError::UnknownFinding { line: 2, .. })));
    /// ```
    pub fn from_toml_str(text: &str) -> Result<Lexicon, LabelerError> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let file: LexiconFile = toml::from_str(text).map_err(|e| LabelerError::Toml {
            line: e.span().map_or(1, |s| line_of(s.start)),
            reason: e.message().trim().to_owned(),
        })?;
        let phrase_error = |p: &Spanned<String>, reason: &str| LabelerError::Phrase {
            line: line_of(p.span().start),
            phrase: p.get_ref().clone(),
            reason: reason.to_owned(),
        };
        let words_of = |p: &Spanned<String>| -> Result<Vec<String>, LabelerError> {
            phrase_words(p.get_ref()).map_err(|reason| phrase_error(p, reason))
        };
        let cues = |list: &[Spanned<String>]| -> Result<Vec<Vec<String>>, LabelerError> {
            list.iter().map(words_of).collect()
        };
        let mut listed = Vec::new();
        for group in &file.synonyms {
            let findings = group
                .findings
                .iter()
                .map(|f| {
                    f.get_ref()
                        .parse::<Finding>()
                        .map_err(|_| LabelerError::UnknownFinding {
                            line: line_of(f.span().start),
                            name: f.get_ref().clone(),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let fixed = match &group.status {
                None => None,
                Some(s) => Some(match s.get_ref().as_str() {
                    "positive" => LabelStatus::Positive,
                    "negative" => LabelStatus::Negative,
                    "uncertain" => LabelStatus::Uncertain,
                    other => {
                        return Err(LabelerError::UnknownStatus {
                            line: line_of(s.span().start),
                            name: other.to_owned(),
                        });
                    }
                }),
            };
            for p in &group.phrases {
                // `head ~N tail`: the tail word within N words after the head words.
                let (words, gap) = match p.get_ref().split_once(" ~") {
                    Some((head, rest)) => {
                        let bad_gap = || phrase_error(p, "a gap is written `head words ~N tail`");
                        let (n, tail) = rest.split_once(' ').ok_or_else(bad_gap)?;
                        let gap = n.parse::<usize>().map_err(|_| bad_gap())?;
                        let mut words = phrase_words(head).map_err(|r| phrase_error(p, r))?;
                        match phrase_words(tail)
                            .map_err(|r| phrase_error(p, r))?
                            .as_slice()
                        {
                            [tail] => words.push(tail.clone()),
                            _ => return Err(phrase_error(p, "the tail of a gap is one word")),
                        }
                        (words, gap)
                    }
                    None => (words_of(p)?, 0),
                };
                listed.push(Entry {
                    words,
                    gap,
                    findings: findings.clone(),
                    fixed,
                });
            }
        }
        let breakers = file
            .cues
            .breakers
            .iter()
            .map(|b| match words_of(b)?.as_slice() {
                [word] => Ok(word.clone()),
                _ => Err(phrase_error(b, "a clause breaker is one word")),
            })
            .collect::<Result<_, _>>()?;
        let mut lexicon = Lexicon {
            listed,
            entries: Vec::new(),
            by_first_word: HashMap::new(),
            negation: cues(&file.cues.negation)?,
            uncertainty: cues(&file.cues.uncertainty)?,
            not_negation: cues(&file.cues.not_negation)?,
            post_negation: cues(&file.cues.post_negation)?,
            post_uncertainty: cues(&file.cues.post_uncertainty)?,
            breakers,
        };
        lexicon.index();
        Ok(lexicon)
    }

    /// Adds `other`'s synonyms after this lexicon's (a longer phrase still wins; at equal
    /// length this lexicon's phrases come first) and its cues to this lexicon's.
    pub fn extend(&mut self, other: Lexicon) {
        self.listed.extend(other.listed);
        self.negation.extend(other.negation);
        self.uncertainty.extend(other.uncertainty);
        self.not_negation.extend(other.not_negation);
        self.post_negation.extend(other.post_negation);
        self.post_uncertainty.extend(other.post_uncertainty);
        self.breakers.extend(other.breakers);
        self.index();
    }

    /// The number of synonym phrases (exclusions included).
    pub fn phrases(&self) -> usize {
        self.listed.len()
    }

    /// Orders the entries longest phrase first and indexes them by first word.
    fn index(&mut self) {
        let mut entries = self.listed.clone();
        entries.sort_by_key(|e| std::cmp::Reverse(e.words.len()));
        let mut by_first_word: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            by_first_word.entry(e.words[0].clone()).or_default().push(i);
        }
        self.entries = entries;
        self.by_first_word = by_first_word;
    }
}

/// The words of a phrase: lowercase words (as the tokenizer writes them) separated by single
/// spaces.
fn phrase_words(phrase: &str) -> Result<Vec<String>, &'static str> {
    if phrase.trim().is_empty() {
        return Err("a phrase has at least one word");
    }
    phrase
        .split(' ')
        .map(|w| match tokenize(w).as_slice() {
            [t] if t == w => Ok(w.to_owned()),
            _ => Err(
                "a phrase is lowercase letters and digits in words separated by single spaces \
                 (hyphens and punctuation separate words in the text read)",
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_lexicon_parses() {
        let lex = Lexicon::builtin();
        assert_eq!(lex.phrases(), 238);
        assert_eq!(lex.entries.len(), 238);
        assert_eq!(
            (
                lex.negation.len(),
                lex.uncertainty.len(),
                lex.not_negation.len(),
                lex.post_negation.len(),
                lex.post_uncertainty.len(),
                lex.breakers.len()
            ),
            (21, 48, 9, 29, 21, 8)
        );
        // The longest phrase comes first; a gapped one keeps its gap.
        assert_eq!(
            lex.entries[0].words.join(" "),
            "heart size and cardiomediastinal silhouette are within normal limits"
        );
        let gapped = lex.listed.iter().find(|e| e.gap > 0).unwrap();
        assert_eq!(
            (gapped.words.join(" "), gapped.gap),
            ("heart enlarged".into(), 4)
        );
        // Extending by nothing changes nothing.
        let mut same = lex.clone();
        same.extend(Lexicon::from_toml_str("").unwrap());
        assert_eq!(same, lex);
    }

    #[test]
    fn malformed_lexicons_name_the_line_and_the_problem() {
        let err = |text: &str| Lexicon::from_toml_str(text).unwrap_err();
        assert_eq!(
            err("[[synonyms]]\nfindings = [\"Edema\"]\nphrases = [\"wet lungs\"\n"),
            LabelerError::Toml {
                line: 3,
                reason: "unclosed array, expected `]`".into()
            }
        );
        assert!(matches!(
            err("[[synonyms]]\nfindings = [\"Edema\"]\nwords = [\"wet\"]\n"),
            LabelerError::Toml { line: 3, ref reason } if reason.contains("unknown field `words`")
        ));
        assert_eq!(
            err("[[synonyms]]\nfindings = [\"Edema\", \"Lung Edema\"]\nphrases = [\"wet\"]\n"),
            LabelerError::UnknownFinding {
                line: 2,
                name: "Lung Edema".into()
            }
        );
        assert_eq!(
            err("[[synonyms]]\nfindings = []\nstatus = \"absent\"\nphrases = [\"wet\"]\n"),
            LabelerError::UnknownStatus {
                line: 3,
                name: "absent".into()
            }
        );
        for (phrase, reason) in [
            ("Wet Lungs", "lowercase"),
            ("wet  lungs", "lowercase"),
            ("fluid-filled", "lowercase"),
            ("", "at least one word"),
            ("heart ~x enlarged", "`head words ~N tail`"),
            ("heart ~4 very enlarged", "one word"),
        ] {
            let text = format!(
                "[[synonyms]]\nfindings = [\"Edema\"]\nphrases = [\n  \"ok\",\n  \"{phrase}\",\n]\n"
            );
            match err(&text) {
                LabelerError::Phrase {
                    line,
                    phrase: p,
                    reason: r,
                } => {
                    assert_eq!((line, p.as_str()), (5, phrase));
                    assert!(r.contains(reason), "{phrase}: {r}");
                }
                other => panic!("{phrase}: {other:?}"),
            }
        }
        assert!(matches!(
            err("[cues]\nbreakers = [\"but\", \"even so\"]\n"),
            LabelerError::Phrase { line: 2, .. }
        ));
        assert_eq!(
            err("[cues]\nnegation = [\"no\"]\n\n[cues]\n").to_string(),
            "lexicon line 4: duplicate key"
        );
    }
}
