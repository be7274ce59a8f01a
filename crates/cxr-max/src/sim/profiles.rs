//! Teacher profiles: how each simulated teacher writes, how often it calls each finding
//! present when it is present (sensitivity) and absent when it is absent (specificity), and
//! how those rates drift along the stream.
//!
//! # Resolution of a teacher's rates
//! Per finding `f`, the sensitivity is the first of, in this order:
//! `sensitivity[f]` > `accuracy[f]` > `default_sensitivity` > `default_accuracy`,
//! and likewise the specificity (`specificity[f]` > `accuracy[f]` > `default_specificity` >
//! `default_accuracy`). A profile in the old format (only `accuracy` / `default_accuracy`)
//! therefore gives both rates equal to its accuracy.
//!
//! `[[teacher.drift]]` segments apply in order to positions at or after their `at`, with the
//! same precedence inside a segment: a segment's `sensitivity[f]` or `accuracy[f]` replaces the
//! rate; a segment's `default_sensitivity` (else `default_accuracy`) replaces it only for a
//! finding the base profile does not name (in `sensitivity` or `accuracy` for the
//! sensitivity, in `specificity` or `accuracy` for the specificity).
//!
//! The rates are those on clear images; the simulator lowers them on subtle images and on AP
//! films ([`SynthConfig`](crate::sim::SynthConfig)).

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

/// A teacher's error rates on one finding.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rates {
    /// Probability of stating the finding present when it is present.
    pub sensitivity: f64,
    /// Probability of stating the finding absent when it is absent.
    pub specificity: f64,
}

impl Rates {
    /// The mean of sensitivity and specificity.
    pub fn balanced_accuracy(self) -> f64 {
        (self.sensitivity + self.specificity) / 2.0
    }
}

/// A change of a teacher's rates from a point of the stream on.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftSegment {
    /// Fraction of the stream (0..1, in dataset order) where the segment starts.
    pub at: f64,
    /// New default accuracy (both rates), if it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_accuracy: Option<f64>,
    /// New default sensitivity, if it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_sensitivity: Option<f64>,
    /// New default specificity, if it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_specificity: Option<f64>,
    /// New accuracies (both rates) by finding name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub accuracy: BTreeMap<String, f64>,
    /// New sensitivities by finding name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sensitivity: BTreeMap<String, f64>,
    /// New specificities by finding name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub specificity: BTreeMap<String, f64>,
}

impl DriftSegment {
    /// The findings the segment names (in `accuracy`, `sensitivity` or `specificity`), each
    /// once, in name order.
    pub fn named_findings(&self) -> Vec<&str> {
        let mut names: std::collections::BTreeSet<&str> =
            self.accuracy.keys().map(String::as_str).collect();
        names.extend(self.sensitivity.keys().map(String::as_str));
        names.extend(self.specificity.keys().map(String::as_str));
        names.into_iter().collect()
    }
}

fn default_mention_rate() -> f64 {
    0.5
}

/// One simulated teacher (source model). See the [module documentation](self) for how its
/// rates resolve.
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
    /// Both rates for findings named nowhere else (the old single-accuracy format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_accuracy: Option<f64>,
    /// Sensitivity for findings not named in `sensitivity` or `accuracy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_sensitivity: Option<f64>,
    /// Specificity for findings not named in `specificity` or `accuracy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_specificity: Option<f64>,
    /// Probability of stating each finding outside the five of Table 1 (Support Devices
    /// included), independently of its truth; the five are always stated.
    #[serde(default = "default_mention_rate")]
    pub mention_rate: f64,
    /// Probability that a statement is contradicted or hedged earlier in the same trajectory
    /// (within-trajectory drift; the final statement keeps the rates).
    #[serde(default)]
    pub drift_rate: f64,
    /// Both rates by finding name (the old format).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub accuracy: BTreeMap<String, f64>,
    /// Sensitivity by finding name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sensitivity: BTreeMap<String, f64>,
    /// Specificity by finding name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub specificity: BTreeMap<String, f64>,
    /// Non-stationarity across the stream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<DriftSegment>,
}

/// Which rate is resolved.
#[derive(Clone, Copy)]
enum Which {
    Sensitivity,
    Specificity,
}

impl Which {
    fn field(self) -> &'static str {
        match self {
            Which::Sensitivity => "sensitivity",
            Which::Specificity => "specificity",
        }
    }
}

/// `specific[f]` > `accuracy[f]` > `default_specific` > `default_accuracy`.
fn pick(
    name: &str,
    specific: &BTreeMap<String, f64>,
    accuracy: &BTreeMap<String, f64>,
    default_specific: Option<f64>,
    default_accuracy: Option<f64>,
) -> (Option<f64>, Option<f64>) {
    let named = specific.get(name).or_else(|| accuracy.get(name)).copied();
    (named, default_specific.or(default_accuracy))
}

impl TeacherProfile {
    fn base(&self, which: Which, name: &str) -> (Option<f64>, Option<f64>) {
        match which {
            Which::Sensitivity => pick(
                name,
                &self.sensitivity,
                &self.accuracy,
                self.default_sensitivity,
                self.default_accuracy,
            ),
            Which::Specificity => pick(
                name,
                &self.specificity,
                &self.accuracy,
                self.default_specificity,
                self.default_accuracy,
            ),
        }
    }

    fn rate_at(&self, which: Which, finding: Finding, position: f64) -> Option<f64> {
        let name = finding.column_name();
        let (named, default) = self.base(which, name);
        let mut rate = named.or(default);
        for seg in self.drift.iter().filter(|s| position >= s.at) {
            let (seg_named, seg_default) = match which {
                Which::Sensitivity => pick(
                    name,
                    &seg.sensitivity,
                    &seg.accuracy,
                    seg.default_sensitivity,
                    seg.default_accuracy,
                ),
                Which::Specificity => pick(
                    name,
                    &seg.specificity,
                    &seg.accuracy,
                    seg.default_specificity,
                    seg.default_accuracy,
                ),
            };
            if let Some(r) = seg_named {
                rate = Some(r);
            } else if let Some(d) = seg_default
                && named.is_none()
            {
                rate = Some(d);
            }
        }
        rate
    }

    /// The sensitivity and specificity on `finding` at fraction `position` of the stream, on
    /// clear images (see the [module documentation](self) for the precedence).
    ///
    /// Profiles read through [`Profiles::parse`] have both rates for every finding; a
    /// hand-built profile lacking one gets `NaN` for it.
    ///
    /// # Examples
    /// ```
    /// use cxr_max::Finding;
    /// use cxr_max::sim::Profiles;
    /// let p = Profiles::parse(
    ///     "[[teacher]]\nname = \"A\"\nstyle = \"concise\"\ndefault_accuracy = 0.7\n\
    ///      [teacher.sensitivity]\n\"Edema\" = 0.4\n",
    ///     std::path::Path::new("a.toml"),
    /// )?;
    /// let r = p.teacher[0].rates_at(Finding::Edema, 0.0);
    /// assert_eq!((r.sensitivity, r.specificity), (0.4, 0.7));
    /// # Ok::<(), cxr_max::CxrError>(())
    /// ```
    pub fn rates_at(&self, finding: Finding, position: f64) -> Rates {
        Rates {
            sensitivity: self
                .rate_at(Which::Sensitivity, finding, position)
                .unwrap_or(f64::NAN),
            specificity: self
                .rate_at(Which::Specificity, finding, position)
                .unwrap_or(f64::NAN),
        }
    }
}

/// The set of teachers of a simulation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profiles {
    /// The teachers, in order.
    pub teacher: Vec<TeacherProfile>,
}

/// The embedded default: the paper's seven sources, rates mapped from Table 1 and §7.3.
pub const DEFAULT_PROFILES: &str = include_str!("default_teachers.toml");

/// Binary balanced accuracy from a 3-class MS-CXR-T top-1 accuracy (chance about 1/3):
/// `0.5 + 0.75 · max(0, acc3 − 1/3)`. Below chance is uninformative (0.5), never inverted.
///
/// # Examples
/// ```
/// use cxr_max::sim::balanced_accuracy_from_top1;
/// assert!((balanced_accuracy_from_top1(0.75) - 0.8125).abs() < 1e-12);
/// assert_eq!(balanced_accuracy_from_top1(0.15), 0.5);
/// ```
pub fn balanced_accuracy_from_top1(acc3: f64) -> f64 {
    0.5 + 0.75 * (acc3 - 1.0 / 3.0).max(0.0)
}

/// The specificity of a teacher with `precision` and `recall` (sensitivity) at `prevalence`:
/// `1 − recall · prevalence · (1 − precision) / (precision · (1 − prevalence))`.
///
/// # Examples
/// ```
/// use cxr_max::sim::specificity_from_precision_recall;
/// assert!((specificity_from_precision_recall(0.56, 0.21, 0.15) - 0.971).abs() < 1e-3);
/// assert!((specificity_from_precision_recall(0.35, 0.54, 0.15) - 0.823).abs() < 1e-3);
/// ```
pub fn specificity_from_precision_recall(precision: f64, recall: f64, prevalence: f64) -> f64 {
    1.0 - recall * prevalence * (1.0 - precision) / (precision * (1.0 - prevalence))
}

/// The tilt `d = (recall − specificity) / 2` of a teacher's errors (negative: it under-calls,
/// missing more positives than it invents), with the specificity from
/// [`specificity_from_precision_recall`].
///
/// # Examples
/// ```
/// use cxr_max::sim::tilt_from_precision_recall;
/// assert!((tilt_from_precision_recall(0.35, 0.54, 0.15) + 0.1415).abs() < 1e-3); // GPT-5
/// assert!((tilt_from_precision_recall(0.56, 0.21, 0.15) + 0.3805).abs() < 1e-3); // Grok-4
/// ```
pub fn tilt_from_precision_recall(precision: f64, recall: f64, prevalence: f64) -> f64 {
    (recall - specificity_from_precision_recall(precision, recall, prevalence)) / 2.0
}

/// Sensitivity `b + d` and specificity `b − d` from a balanced accuracy `b` and a tilt,
/// with `d` clamped to `[b − 0.99, 0.99 − b]` so that both rates stay in `[0.01, 0.99]` and
/// their mean stays `b`.
///
/// # Examples
/// ```
/// use cxr_max::sim::rates_from_balanced_accuracy;
/// let r = rates_from_balanced_accuracy(0.8, -0.1);
/// assert!((r.sensitivity - 0.7).abs() < 1e-12 && (r.specificity - 0.9).abs() < 1e-12);
/// let r = rates_from_balanced_accuracy(0.95, -0.3); // clamped to d = -0.04
/// assert!((r.specificity - 0.99).abs() < 1e-12 && (r.sensitivity - 0.91).abs() < 1e-12);
/// ```
pub fn rates_from_balanced_accuracy(balanced: f64, tilt: f64) -> Rates {
    let bound = (0.99 - balanced).max(0.0);
    let d = tilt.clamp(-bound, bound);
    Rates {
        sensitivity: balanced + d,
        specificity: balanced - d,
    }
}

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
    /// unknown finding names, duplicate teacher names, a finding without a sensitivity or a
    /// specificity).
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
            let prob = |what: &str, v: f64| -> Result<()> {
                if (0.0..=1.0).contains(&v) {
                    Ok(())
                } else {
                    Err(err(format!(
                        "teacher `{}`: {what} = {v} is not a probability in [0, 1]",
                        t.name
                    )))
                }
            };
            let opt = |what: &str, v: Option<f64>| v.map_or(Ok(()), |v| prob(what, v));
            let check_map = |what: &str, m: &BTreeMap<String, f64>| -> Result<()> {
                for (k, &v) in m {
                    k.parse::<Finding>().map_err(|_| {
                        err(format!(
                            "teacher `{}`: {what}: unknown finding `{k}`",
                            t.name
                        ))
                    })?;
                    prob(&format!("{what}[{k}]"), v)?;
                }
                Ok(())
            };
            prob("refusal_rate", t.refusal_rate)?;
            prob("mention_rate", t.mention_rate)?;
            prob("drift_rate", t.drift_rate)?;
            opt("default_accuracy", t.default_accuracy)?;
            opt("default_sensitivity", t.default_sensitivity)?;
            opt("default_specificity", t.default_specificity)?;
            check_map("accuracy", &t.accuracy)?;
            check_map("sensitivity", &t.sensitivity)?;
            check_map("specificity", &t.specificity)?;
            for which in [Which::Sensitivity, Which::Specificity] {
                if let Some(f) = Finding::ALL.into_iter().find(|f| {
                    let (named, default) = t.base(which, f.column_name());
                    named.or(default).is_none()
                }) {
                    let field = which.field();
                    return Err(err(format!(
                        "teacher `{}`: no {field} for `{f}`: set default_{field}, \
                         default_accuracy, or {field}.\"{f}\" / accuracy.\"{f}\"",
                        t.name
                    )));
                }
            }
            let mut last = -1.0;
            for seg in &t.drift {
                if !(0.0..1.0).contains(&seg.at) || seg.at <= last {
                    return Err(err(format!(
                        "teacher `{}`: drift segments need increasing `at` in [0, 1), got {}",
                        t.name, seg.at
                    )));
                }
                last = seg.at;
                check_map("drift.accuracy", &seg.accuracy)?;
                check_map("drift.sensitivity", &seg.sensitivity)?;
                check_map("drift.specificity", &seg.specificity)?;
                opt("drift.default_accuracy", seg.default_accuracy)?;
                opt("drift.default_sensitivity", seg.default_sensitivity)?;
                opt("drift.default_specificity", seg.default_specificity)?;
            }
        }
        Ok(profiles)
    }

    /// The same teachers with their drift shifted: a world to test generalisation in.
    ///
    /// Each teacher keeps its style, refusal and mention rates and its rates at the start of
    /// the stream, but its own drift segments are replaced by one change point at a seeded
    /// position in `[0.2, 0.8)` of the stream, from which its balanced accuracy on each Table 1
    /// finding moves by `shift` up or down (a seeded sign per teacher and finding; clamped to
    /// `[0.5, 0.98]`) with the tilt between sensitivity and specificity kept
    /// ([`rates_from_balanced_accuracy`]). `shift = 0` keeps every rate and only moves the
    /// drift away. The result is a function of `self`, `shift` and `seed`, and parses back
    /// through [`Profiles::parse`] (it is what `apo synth --shift-teachers` writes to
    /// `teachers.toml`).
    ///
    /// # Examples
    /// ```
    /// use cxr_max::Finding;
    /// use cxr_max::sim::Profiles;
    /// let base = Profiles::embedded();
    /// let shifted = base.shifted(0.1, 7);
    /// let t = &shifted.teacher[0];
    /// assert_eq!(t.drift.len(), 1);
    /// let at = t.drift[0].at;
    /// let (before, after) = (t.rates_at(Finding::Edema, 0.0), t.rates_at(Finding::Edema, at));
    /// assert_eq!(before, base.teacher[0].rates_at(Finding::Edema, 0.0));
    /// assert!((after.balanced_accuracy() - before.balanced_accuracy()).abs() > 0.05);
    /// ```
    pub fn shifted(&self, shift: f64, seed: u64) -> Profiles {
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        let teacher = self
            .teacher
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut rng = crate::rng::Rng::substream(seed ^ 0x5348_4946_5445_4400, i as u64);
                let at = round(rng.range(0.2, 0.8));
                let mut segment = DriftSegment {
                    at,
                    ..Default::default()
                };
                let mut base = t.clone();
                base.drift.clear();
                for f in Finding::TABLE1 {
                    let r = base.rates_at(f, 0.0);
                    let tilt = (r.sensitivity - r.specificity) / 2.0;
                    let sign = if rng.bernoulli(0.5) { 1.0 } else { -1.0 };
                    let b = (r.balanced_accuracy() + sign * shift).clamp(0.5, 0.98);
                    let moved = rates_from_balanced_accuracy(b, tilt);
                    let name = f.column_name().to_owned();
                    segment
                        .sensitivity
                        .insert(name.clone(), round(moved.sensitivity));
                    segment.specificity.insert(name, round(moved.specificity));
                }
                base.drift = vec![segment];
                base
            })
            .collect();
        Profiles { teacher }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The profiles of the single-accuracy simulator, in the old format.
    const OLD_FORMAT: &str = include_str!("testdata/old_format_teachers.toml");

    /// The paper's Table 1 (MS-CXR-T 3-class top-1 accuracy; Consolidation, Pleural Effusion,
    /// Pneumonia, Pneumothorax, Edema) and its drift figure (precision, recall), per source.
    const PAPER: [(&str, [f64; 5], (f64, f64)); 7] = [
        ("GPT-5", [0.75, 0.68, 0.89, 0.90, 0.52], (0.35, 0.54)),
        ("Gemini-2.5", [0.28, 0.61, 0.40, 0.94, 0.42], (0.35, 0.45)),
        ("Sonnet-4", [0.89, 0.69, 0.48, 0.15, 0.15], (0.35, 0.42)),
        ("Qwen-VL-Max", [0.54, 0.65, 0.40, 0.95, 0.64], (0.47, 0.33)),
        ("Grok-4", [0.43, 0.41, 0.36, 0.97, 0.61], (0.56, 0.21)),
        ("GLM-4.5V", [0.59, 0.67, 0.52, 0.96, 0.72], (0.31, 0.39)),
        ("Moonshot", [0.13, 0.46, 0.77, 0.88, 0.19], (0.27, 0.36)),
    ];

    fn assert_rounded(got: f64, want: f64, what: &str) {
        assert!(
            (got - want).abs() <= 0.0005 + 1e-9,
            "{what}: {got} in the file, {want} by the mapping"
        );
    }

    /// Every rate of the embedded file is the mapping of the paper's numbers, to 3 decimals.
    #[test]
    fn the_embedded_rates_are_the_mapping_of_table1_and_the_drift_figure() {
        let profiles = Profiles::embedded();
        assert_eq!(profiles.teacher.len(), PAPER.len());
        for (t, (name, acc3, (p, r))) in profiles.teacher.iter().zip(PAPER) {
            assert_eq!(t.name, name);
            let tilt = tilt_from_precision_recall(p, r, 0.15);
            assert!(tilt < 0.0, "{name} under-calls");
            let mean = acc3.iter().sum::<f64>() / 5.0;
            let default = rates_from_balanced_accuracy(balanced_accuracy_from_top1(mean), tilt);
            for f in Finding::ALL {
                let want = match Finding::TABLE1.iter().position(|&g| g == f) {
                    Some(k) => {
                        rates_from_balanced_accuracy(balanced_accuracy_from_top1(acc3[k]), tilt)
                    }
                    None if matches!(f, Finding::SupportDevices | Finding::NoFinding) => Rates {
                        sensitivity: 0.9,
                        specificity: 0.9,
                    },
                    None => default,
                };
                let got = t.rates_at(f, 0.0);
                assert_rounded(
                    got.sensitivity,
                    want.sensitivity,
                    &format!("{name} {f} sens"),
                );
                assert_rounded(
                    got.specificity,
                    want.specificity,
                    &format!("{name} {f} spec"),
                );
                assert!((0.01..=0.99).contains(&got.sensitivity));
                assert!((0.01..=0.99).contains(&got.specificity));
            }
        }
        // The drift segments: Gemini-2.5 pneumothorax 0.94 -> 0.45 at 0.5, Grok-4 pleural
        // effusion 0.41 -> 0.85 at 0.6.
        for (name, f, at, acc3) in [
            ("Gemini-2.5", Finding::Pneumothorax, 0.5, 0.45),
            ("Grok-4", Finding::PleuralEffusion, 0.6, 0.85),
        ] {
            let t = profiles.teacher.iter().find(|t| t.name == name).unwrap();
            let (_, _, (p, r)) = PAPER.iter().find(|x| x.0 == name).unwrap();
            let want = rates_from_balanced_accuracy(
                balanced_accuracy_from_top1(acc3),
                tilt_from_precision_recall(*p, *r, 0.15),
            );
            let got = t.rates_at(f, at);
            assert_rounded(got.sensitivity, want.sensitivity, name);
            assert_rounded(got.specificity, want.specificity, name);
            assert_ne!(t.rates_at(f, at - 0.01), got);
            assert_eq!(t.drift.len(), 1);
            assert_eq!(t.drift[0].at, at);
        }
        let others = profiles
            .teacher
            .iter()
            .filter(|t| !t.drift.is_empty())
            .count();
        assert_eq!(others, 2);
    }

    /// The §7.3 arithmetic: the worked example of the evaluation notes, and GPT-5 the least
    /// under-calling source.
    #[test]
    fn tilts_from_precision_and_recall() {
        assert!((specificity_from_precision_recall(0.56, 0.21, 0.15) - 0.971).abs() < 5e-4);
        assert!((specificity_from_precision_recall(0.35, 0.54, 0.15) - 0.823).abs() < 5e-4);
        let tilts: Vec<(f64, &str)> = PAPER
            .iter()
            .map(|(n, _, (p, r))| (tilt_from_precision_recall(*p, *r, 0.15), *n))
            .collect();
        let max = tilts
            .iter()
            .cloned()
            .fold((f64::MIN, ""), |a, b| if b.0 > a.0 { b } else { a });
        let min = tilts
            .iter()
            .cloned()
            .fold((f64::MAX, ""), |a, b| if b.0 < a.0 { b } else { a });
        assert_eq!(max.1, "GPT-5");
        assert!((max.0 + 0.14).abs() < 0.005, "{max:?}");
        assert_eq!(min.1, "Grok-4");
        assert!((min.0 + 0.38).abs() < 0.005, "{min:?}");
        let qwen = tilts.iter().find(|t| t.1 == "Qwen-VL-Max").unwrap().0;
        assert!((qwen + 0.30).abs() < 0.005, "{qwen}");
        // Below chance is uninformative, never inverted; the clamp keeps the mean.
        assert_eq!(balanced_accuracy_from_top1(0.13), 0.5);
        assert_eq!(balanced_accuracy_from_top1(1.0 / 3.0), 0.5);
        let r = rates_from_balanced_accuracy(0.5, -0.38);
        assert!((r.sensitivity - 0.12).abs() < 1e-12 && (r.specificity - 0.88).abs() < 1e-12);
        let r = rates_from_balanced_accuracy(0.9775, -0.38);
        assert!((r.balanced_accuracy() - 0.9775).abs() < 1e-12);
        assert!((r.specificity - 0.99).abs() < 1e-12);
    }

    /// The accuracy rule of the single-accuracy simulator, as it was.
    fn old_accuracy_at(t: &toml::Value, finding: Finding, position: f64) -> f64 {
        let name = finding.column_name();
        let named = |v: &toml::Value| {
            v.get("accuracy")
                .and_then(|a| a.get(name))
                .and_then(toml::Value::as_float)
        };
        let base_named = named(t);
        let mut acc = base_named.unwrap_or_else(|| t["default_accuracy"].as_float().unwrap());
        for seg in t
            .get("drift")
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
        {
            if position >= seg["at"].as_float().unwrap() {
                if let Some(a) = named(seg) {
                    acc = a;
                } else if let Some(d) = seg.get("default_accuracy").and_then(toml::Value::as_float)
                    && base_named.is_none()
                {
                    acc = d;
                }
            }
        }
        acc
    }

    /// An old-format file (only `accuracy` / `default_accuracy`) gives both rates equal to
    /// the accuracy the old rule gave, drift included. (The simulated data are not byte for
    /// byte those of the old simulator: which findings are stated changed, see docs/data.md.)
    #[test]
    fn old_format_profiles_keep_their_rates() {
        let with_segment_default = format!(
            "{OLD_FORMAT}\n[[teacher]]\nname = \"D\"\nstyle = \"bullet\"\ndefault_accuracy = 0.6\n\
             [teacher.accuracy]\n\"Edema\" = 0.7\n[[teacher.drift]]\nat = 0.3\ndefault_accuracy = 0.2\n\
             [[teacher.drift]]\nat = 0.6\n[teacher.drift.accuracy]\n\"Fracture\" = 0.95\n"
        );
        let profiles = Profiles::parse(&with_segment_default, Path::new("old.toml")).unwrap();
        let raw: toml::Value = toml::from_str(&with_segment_default).unwrap();
        let raw = raw["teacher"].as_array().unwrap();
        assert_eq!(profiles.teacher.len(), 8);
        let mut checked = 0;
        for (t, v) in profiles.teacher.iter().zip(raw) {
            assert_eq!(t.mention_rate, 0.5);
            for f in Finding::ALL {
                for at in [0.0, 0.35, 0.55, 0.65, 0.99] {
                    let want = old_accuracy_at(v, f, at);
                    let got = t.rates_at(f, at);
                    assert_eq!(
                        (got.sensitivity, got.specificity),
                        (want, want),
                        "{} {f} {at}",
                        t.name
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 8 * 14 * 5);
        let d = &profiles.teacher[7];
        assert_eq!(d.rates_at(Finding::Edema, 0.9).sensitivity, 0.7);
        assert_eq!(d.rates_at(Finding::Atelectasis, 0.4).sensitivity, 0.2);
        assert_eq!(d.rates_at(Finding::Fracture, 0.7).specificity, 0.95);
        assert_eq!(d.rates_at(Finding::Fracture, 0.5).specificity, 0.2);
    }

    /// The precedence: sensitivity[f] > accuracy[f] > default_sensitivity > default_accuracy,
    /// per rate, in the base profile and in drift segments.
    #[test]
    fn rates_resolve_by_precedence() {
        let text = r#"
[[teacher]]
name = "P"
style = "concise"
default_accuracy = 0.6
default_sensitivity = 0.3
[teacher.accuracy]
"Edema" = 0.8
"Fracture" = 0.7
[teacher.sensitivity]
"Edema" = 0.4
[teacher.specificity]
"Pneumonia" = 0.95
[[teacher.drift]]
at = 0.5
default_specificity = 0.55
[teacher.drift.sensitivity]
"Fracture" = 0.1
"#;
        let p = Profiles::parse(text, Path::new("p.toml")).unwrap();
        let t = &p.teacher[0];
        let r = |f, at| {
            let r = t.rates_at(f, at);
            (r.sensitivity, r.specificity)
        };
        assert_eq!(r(Finding::Edema, 0.0), (0.4, 0.8));
        assert_eq!(r(Finding::Fracture, 0.0), (0.7, 0.7));
        assert_eq!(r(Finding::Pneumonia, 0.0), (0.3, 0.95));
        assert_eq!(r(Finding::Atelectasis, 0.0), (0.3, 0.6));
        // The segment's default only reaches findings the base does not name.
        assert_eq!(r(Finding::Atelectasis, 0.5), (0.3, 0.55));
        assert_eq!(r(Finding::Pneumonia, 0.5), (0.3, 0.95));
        assert_eq!(r(Finding::Edema, 0.5), (0.4, 0.8));
        assert_eq!(r(Finding::Fracture, 0.5), (0.1, 0.7));
        assert_eq!(t.drift[0].named_findings(), vec!["Fracture"]);
    }

    /// `toml::to_string` (the data set's teachers.toml) reads back as the same profiles.
    #[test]
    fn profiles_round_trip_through_toml() {
        for text in [DEFAULT_PROFILES, OLD_FORMAT] {
            let p = Profiles::parse(text, Path::new("a.toml")).unwrap();
            let written = toml::to_string(&p).unwrap();
            assert_eq!(
                Profiles::parse(&written, Path::new("b.toml")).unwrap(),
                p,
                "{written}"
            );
            assert!(!written.contains("[teacher.drift.accuracy]") || text == OLD_FORMAT);
        }
    }

    #[test]
    fn invalid_profiles_are_config_errors() {
        let err = |text: &str| {
            Profiles::parse(text, Path::new("x.toml"))
                .unwrap_err()
                .to_string()
        };
        let head = "[[teacher]]\nname = \"A\"\nstyle = \"concise\"\n";
        for (body, says) in [
            (
                "default_accuracy = 1.5\n",
                "default_accuracy = 1.5 is not a probability",
            ),
            (
                "default_accuracy = 0.5\nmention_rate = -0.1\n",
                "mention_rate = -0.1",
            ),
            (
                "default_accuracy = 0.5\n[teacher.sensitivity]\n\"Edema\" = 2.0\n",
                "sensitivity[Edema] = 2",
            ),
            (
                "default_accuracy = 0.5\n[teacher.accuracy]\n\"Broken Heart\" = 0.5\n",
                "unknown finding `Broken Heart`",
            ),
            (
                "default_accuracy = 0.5\n[[teacher.drift]]\nat = 0.5\n[teacher.drift.specificity]\n\"Edema\" = 1.1\n",
                "drift.specificity[Edema] = 1.1",
            ),
            (
                "default_sensitivity = 0.5\n",
                "teacher `A`: no specificity for `Atelectasis`: set default_specificity",
            ),
            (
                "default_specificity = 0.5\n",
                "teacher `A`: no sensitivity for `Atelectasis`",
            ),
            (
                "default_accuracy = 0.5\nsensitivty = 0.5\n",
                "unknown field `sensitivty`",
            ),
            (
                "default_accuracy = 0.5\n[[teacher.drift]]\nat = 0.5\ndefault_sens = 0.5\n",
                "unknown field `default_sens`",
            ),
        ] {
            let e = err(&format!("{head}{body}"));
            assert!(e.contains(says), "{body}: {e}");
            assert!(e.starts_with("x.toml"), "{e}");
        }
        let dup = format!("{head}default_accuracy = 0.5\n{head}default_accuracy = 0.5\n");
        assert!(err(&dup).contains("twice"));
        assert!(err("teacher = 3").starts_with("x.toml"));
        // Every finding named in the tables is enough without a default.
        let mut full = format!("{head}[teacher.accuracy]\n");
        for f in Finding::ALL {
            full.push_str(&format!("\"{}\" = 0.7\n", f.column_name()));
        }
        assert!(Profiles::parse(&full, Path::new("x.toml")).is_ok());
    }

    /// `shifted`: one change point per teacher at its seeded position, the Table 1 rates
    /// moved by exactly `shift` in balanced accuracy (or to the clamp) with the tilt kept,
    /// every other rate and the stream's start unchanged; deterministic in the seed; written
    /// as TOML it parses back to itself.
    #[test]
    fn shifted_profiles_move_the_drift_and_parse_back() {
        let base = Profiles::embedded();
        let shifted = base.shifted(0.12, 3);
        assert_eq!(shifted, base.shifted(0.12, 3));
        assert_ne!(shifted, base.shifted(0.12, 4));
        let mut signs = [0usize; 2];
        for (t, b) in shifted.teacher.iter().zip(&base.teacher) {
            assert_eq!((&t.name, t.style), (&b.name, b.style));
            assert_eq!(t.drift.len(), 1);
            let at = t.drift[0].at;
            assert!((0.2..0.8).contains(&at), "{at}");
            for f in Finding::ALL {
                assert_eq!(t.rates_at(f, 0.0), b.rates_at(f, 0.0), "{} {f}", t.name);
                let (start, moved) = (t.rates_at(f, 0.0), t.rates_at(f, at));
                if !Finding::TABLE1.contains(&f) {
                    assert_eq!(moved, start, "{} {f}", t.name);
                    continue;
                }
                let (b, m) = (start.balanced_accuracy(), moved.balanced_accuracy());
                let near = |x: f64| (m - x.clamp(0.5, 0.98)).abs() < 1.5e-3;
                assert!(
                    near(b + 0.12) || near(b - 0.12),
                    "{} {f}: {start:?} -> {moved:?}",
                    t.name
                );
                let tilt = |r: Rates| r.sensitivity - r.specificity;
                if tilt(start).abs() < 2.0 * (0.99 - m) {
                    assert!((tilt(moved) - tilt(start)).abs() < 2e-3, "{} {f}", t.name);
                }
                if (m - b).abs() > 0.01 {
                    signs[usize::from(m > b)] += 1;
                }
                assert!((0.0..=1.0).contains(&moved.sensitivity));
                assert!((0.0..=1.0).contains(&moved.specificity));
            }
        }
        // Both directions occur among the 35 (teacher, finding) pairs.
        assert!(signs[0] > 5 && signs[1] > 5, "{signs:?}");
        let text = toml::to_string(&shifted).unwrap();
        assert_eq!(
            Profiles::parse(&text, Path::new("s.toml")).unwrap(),
            shifted
        );
        // No shift: the rates stay, only the drift moves.
        let still = base.shifted(0.0, 3);
        for (t, b) in still.teacher.iter().zip(&base.teacher) {
            for f in Finding::TABLE1 {
                let (r, s) = (t.rates_at(f, 0.9), b.rates_at(f, 0.0));
                assert!((r.sensitivity - s.sensitivity).abs() < 1e-3, "{}", t.name);
                assert!((r.specificity - s.specificity).abs() < 1e-3, "{}", t.name);
            }
        }
    }
}
