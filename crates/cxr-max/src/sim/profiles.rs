//! Teacher profiles: how each simulated teacher writes and how accurate it is, with drift.

use std::collections::BTreeMap;
use std::path::Path;

use crate::{CxrError, Finding, Result};

/// How a teacher writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Style {
    /// Short declarative sentences.
    Concise,
    /// A preamble, explanations and a summary.
    Verbose,
    /// A numbered list of findings.
    Bullet,
}

/// A change of a teacher's accuracies from a point of the stream on.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftSegment {
    /// Fraction of the stream (0..1, in dataset order) where the segment starts.
    pub at: f64,
    /// New default accuracy, if it changes.
    #[serde(default)]
    pub default_accuracy: Option<f64>,
    /// New accuracies by finding name.
    #[serde(default)]
    pub accuracy: BTreeMap<String, f64>,
}

/// One simulated teacher (source model).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherProfile {
    /// Name, e.g. `GPT-5`.
    pub name: String,
    /// Writing style.
    pub style: Style,
    /// Probability of refusing to diagnose (a generic text without findings statements).
    #[serde(default)]
    pub refusal_rate: f64,
    /// Accuracy for findings not listed in `accuracy`.
    pub default_accuracy: f64,
    /// Probability that the teacher's final statement on a finding matches the truth.
    #[serde(default)]
    pub accuracy: BTreeMap<String, f64>,
    /// Probability that a statement is contradicted or hedged earlier in the same trajectory
    /// (within-trajectory drift; the final statement keeps the accuracy above).
    #[serde(default)]
    pub drift_rate: f64,
    /// Non-stationarity across the stream.
    #[serde(default)]
    pub drift: Vec<DriftSegment>,
}

impl TeacherProfile {
    /// The accuracy on `finding` at fraction `position` of the stream.
    pub fn accuracy_at(&self, finding: Finding, position: f64) -> f64 {
        let mut acc = self
            .accuracy
            .get(finding.column_name())
            .copied()
            .unwrap_or(self.default_accuracy);
        for seg in &self.drift {
            if position >= seg.at {
                if let Some(a) = seg.accuracy.get(finding.column_name()) {
                    acc = *a;
                } else if let Some(d) = seg.default_accuracy
                    && !self.accuracy.contains_key(finding.column_name())
                {
                    acc = d;
                }
            }
        }
        acc
    }
}

/// The set of teachers of a simulation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profiles {
    /// The teachers, in order.
    pub teacher: Vec<TeacherProfile>,
}

/// The embedded default: the paper's seven sources with Table 1 accuracies.
pub const DEFAULT_PROFILES: &str = include_str!("default_teachers.toml");

impl Profiles {
    /// The embedded default profiles.
    ///
    /// # Examples
    /// ```
    /// use cxr_max::sim::Profiles;
    /// let p = Profiles::embedded();
    /// assert_eq!(p.teacher.len(), 7);
    /// assert_eq!(p.teacher[0].name, "GPT-5");
    /// ```
    pub fn embedded() -> Self {
        Profiles::parse(
            DEFAULT_PROFILES,
            Path::new("<embedded default_teachers.toml>"),
        )
        .expect("the embedded profiles are valid")
    }

    /// Reads profiles from a TOML file.
    ///
    /// # Errors
    /// [`CxrError::Io`], [`CxrError::Config`] (syntax, unknown keys, out-of-range values,
    /// unknown finding names, duplicate teacher names).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| CxrError::Io {
            path: path.to_owned(),
            source,
        })?;
        Profiles::parse(&text, path)
    }

    /// Parses and validates profiles.
    ///
    /// # Errors
    /// As [`Profiles::from_file`].
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let err = |reason: String| CxrError::Config {
            path: path.to_owned(),
            reason,
        };
        let profiles: Profiles = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        if profiles.teacher.is_empty() {
            return Err(err("no [[teacher]] defined".to_owned()));
        }
        let mut names = std::collections::BTreeSet::new();
        for t in &profiles.teacher {
            if !names.insert(t.name.as_str()) {
                return Err(err(format!("teacher `{}` is defined twice", t.name)));
            }
            let prob = |what: String, v: f64| -> Result<()> {
                if (0.0..=1.0).contains(&v) {
                    Ok(())
                } else {
                    Err(err(format!(
                        "teacher `{}`: {what} = {v} is not a probability in [0, 1]",
                        t.name
                    )))
                }
            };
            prob("refusal_rate".into(), t.refusal_rate)?;
            prob("default_accuracy".into(), t.default_accuracy)?;
            prob("drift_rate".into(), t.drift_rate)?;
            let check_map = |m: &BTreeMap<String, f64>| -> Result<()> {
                for (k, &v) in m {
                    k.parse::<Finding>()
                        .map_err(|_| err(format!("teacher `{}`: unknown finding `{k}`", t.name)))?;
                    prob(format!("accuracy[{k}]"), v)?;
                }
                Ok(())
            };
            check_map(&t.accuracy)?;
            let mut last = -1.0;
            for seg in &t.drift {
                if !(0.0..1.0).contains(&seg.at) || seg.at <= last {
                    return Err(err(format!(
                        "teacher `{}`: drift segments need increasing `at` in [0, 1), got {}",
                        t.name, seg.at
                    )));
                }
                last = seg.at;
                check_map(&seg.accuracy)?;
                if let Some(d) = seg.default_accuracy {
                    prob("drift.default_accuracy".into(), d)?;
                }
            }
        }
        Ok(profiles)
    }
}
