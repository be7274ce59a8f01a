//! Preference objectives evaluated on cases given as JSON lines (what `apo loss` runs): a
//! parity tool against TRL, ms-swift or any other implementation.
//!
//! Each input line is one case:
//!
//! ```text
//! {"objective":"plackett-luce", "beta":0.1,
//!  "chosen":{"policy":-12.5,"reference":-13.0},
//!  "rejected":[{"policy":-14.0,"reference":-13.5}, ...]}
//! ```
//!
//! with the optional keys `id` (echoed back), `label_smoothing`, `gamma`, `sft_weight`,
//! `preference_weight` (default 1; 0 with `sft_weight` > 0 is the NLL-only control),
//! `aggregation` (`sum` | `mean`), `reduction` (`mean` | `sum`, pairwise objectives),
//! `temperature` (`infonca`), `weights` (one per negative), `rewards` (`infonca`: one per
//! sequence, the chosen one's first) and, per sequence, `tokens`. Any other key is an error.
//! Each case yields one output line, in order: `{"loss":…,"grad_chosen":…,"grad_rejected":[…]}`
//! (gradients are d loss / d policy log-prob), plus `"metrics"` when asked. A line that cannot be
//! evaluated yields `{"line":N,"error":"…"}` and the remaining lines are still answered.

use std::io::{BufRead, Write};

use crate::{
    Aggregation, Example, LossConfig, LossOutput, Metrics, Objective, Reduction, Sequence,
};
use serde::{Deserialize, Serialize};

/// One input case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Free-form identifier, echoed in the output.
    #[serde(default)]
    pub id: Option<serde_json::Value>,
    /// The objective (default `plackett-luce`).
    #[serde(default)]
    pub objective: Objective,
    /// β (default 0.1).
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// Label smoothing ε (default 0).
    #[serde(default)]
    pub label_smoothing: f64,
    /// SimPO margin γ (default 0.5).
    #[serde(default = "default_gamma")]
    pub gamma: f64,
    /// Weight of the NLL term on the chosen sequence (default 0).
    #[serde(default)]
    pub sft_weight: f64,
    /// Log-prob aggregation (default: the objective's).
    #[serde(default)]
    pub aggregation: Option<Aggregation>,
    /// InfoNCA temperature α (default 0.1).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Reduction of the pairwise objectives over negatives (default `mean`).
    #[serde(default)]
    pub reduction: Reduction,
    /// Weight of the preference term (default 1).
    #[serde(default = "default_preference_weight")]
    pub preference_weight: f64,
    /// The chosen sequence.
    pub chosen: Sequence,
    /// The rejected sequences.
    pub rejected: Vec<Sequence>,
    /// Optional per-negative weights.
    #[serde(default)]
    pub weights: Option<Vec<f64>>,
    /// Optional rewards for `infonca`'s soft targets, one per sequence (chosen first).
    #[serde(default)]
    pub rewards: Option<Vec<f64>>,
}

fn default_beta() -> f64 {
    LossConfig::default().beta
}

fn default_gamma() -> f64 {
    LossConfig::default().gamma
}

fn default_preference_weight() -> f64 {
    1.0
}

fn default_temperature() -> f64 {
    LossConfig::default().temperature
}

impl Case {
    /// The loss configuration of this case.
    pub fn config(&self) -> LossConfig {
        LossConfig {
            objective: self.objective,
            beta: self.beta,
            label_smoothing: self.label_smoothing,
            gamma: self.gamma,
            sft_weight: self.sft_weight,
            aggregation: self.aggregation,
            temperature: self.temperature,
            reduction: self.reduction,
            preference_weight: self.preference_weight,
        }
    }

    /// The example of this case.
    pub fn example(&self) -> Example {
        Example {
            chosen: self.chosen,
            rejected: self.rejected.clone(),
            weights: self.weights.clone(),
            rewards: self.rewards.clone(),
        }
    }

    /// Evaluates the case.
    ///
    /// # Errors
    /// Any [`crate::LossError`] of the configuration or the example.
    pub fn evaluate(&self) -> crate::Result<LossOutput> {
        self.config().init()?.compute(&self.example())
    }
}

#[derive(Serialize)]
struct Answer<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a serde_json::Value>,
    loss: f64,
    grad_chosen: f64,
    grad_rejected: &'a [f64],
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: Option<&'a Metrics>,
}

#[derive(Serialize)]
struct Failure<'a> {
    line: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a serde_json::Value>,
    error: String,
}

/// Options of `apo loss`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LossOptions {
    /// Add the per-case metrics to every answer.
    pub metrics: bool,
}

/// What `apo loss` read and answered. `read = answered + failed`; blank lines are not cases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LossSummary {
    /// Non-blank input lines.
    pub read: usize,
    /// Lines answered with a loss.
    pub answered: usize,
    /// Lines answered with an error.
    pub failed: usize,
}

/// Reads cases from `input` and writes one answer line per case to `output`.
///
/// # Errors
/// Only I/O errors of `input` or `output`; a bad case is reported in the output and counted in
/// [`LossSummary::failed`].
pub fn run(
    input: impl BufRead,
    mut output: impl Write,
    options: LossOptions,
) -> std::io::Result<LossSummary> {
    let mut summary = LossSummary::default();
    for (index, line) in input.lines().enumerate() {
        let line = line?;
        // A UTF-8 byte-order mark is not part of the first case.
        let line = match index {
            0 => line.strip_prefix('\u{feff}').unwrap_or(&line),
            _ => &line,
        };
        if line.trim().is_empty() {
            continue;
        }
        summary.read += 1;
        let line_no = index + 1;
        let case: Case = match serde_json::from_str(line) {
            Ok(case) => case,
            Err(e) => {
                let failure = Failure {
                    line: line_no,
                    id: None,
                    error: format!("invalid case: {e}"),
                };
                write_json(&mut output, &failure)?;
                summary.failed += 1;
                continue;
            }
        };
        match case.evaluate() {
            Ok(out) if all_finite(&out) => {
                let answer = Answer {
                    id: case.id.as_ref(),
                    loss: out.loss,
                    grad_chosen: out.grad_chosen,
                    grad_rejected: &out.grad_rejected,
                    metrics: options.metrics.then_some(&out.metrics),
                };
                write_json(&mut output, &answer)?;
                summary.answered += 1;
            }
            Ok(out) => {
                let error = format!("result is not finite (loss {})", out.loss);
                write_json(
                    &mut output,
                    &Failure {
                        line: line_no,
                        id: case.id.as_ref(),
                        error,
                    },
                )?;
                summary.failed += 1;
            }
            Err(e) => {
                let failure = Failure {
                    line: line_no,
                    id: case.id.as_ref(),
                    error: e.to_string(),
                };
                write_json(&mut output, &failure)?;
                summary.failed += 1;
            }
        }
    }
    output.flush()?;
    Ok(summary)
}

fn all_finite(out: &LossOutput) -> bool {
    out.loss.is_finite()
        && out.grad_chosen.is_finite()
        && out.grad_rejected.iter().all(|g| g.is_finite())
}

fn write_json(output: &mut impl Write, value: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *output, value)?;
    output.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(input: &str) -> (Vec<serde_json::Value>, LossSummary) {
        let mut out = Vec::new();
        let summary = run(input.as_bytes(), &mut out, LossOptions::default()).unwrap();
        let lines = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (lines, summary)
    }

    #[test]
    fn answers_every_line_in_order() {
        let input = r#"{"beta":0.1,"chosen":{"policy":-5,"reference":-5},"rejected":[{"policy":-7,"reference":-7},{"policy":-1,"reference":-1}]}

{"objective":"dpo","chosen":{"policy":-5,"reference":-5},"rejected":[]}
not json
{"objective":"pairwise-sigmoid","chosen":{"policy":-5,"reference":-5},"rejected":[]}
{"id":"x","objective":"pairwise-sigmoid","chosen":{"policy":-5,"reference":-6},"rejected":[{"policy":-7,"reference":-7}]}
"#;
        let (lines, summary) = answer(input);
        assert_eq!(
            summary,
            LossSummary {
                read: 5,
                answered: 2,
                failed: 3
            }
        );
        assert_eq!(lines.len(), 5);
        assert!((lines[0]["loss"].as_f64().unwrap() - 3f64.ln()).abs() < 1e-15);
        assert_eq!(lines[0]["grad_rejected"].as_array().unwrap().len(), 2);
        assert_eq!(lines[1]["line"], 3);
        assert!(
            lines[1]["error"]
                .as_str()
                .unwrap()
                .contains("unknown variant `dpo`")
        );
        assert_eq!(lines[2]["line"], 4);
        assert_eq!(lines[3]["line"], 5);
        assert!(
            lines[3]["error"]
                .as_str()
                .unwrap()
                .contains("no rejected sequences")
        );
        assert_eq!(lines[4]["id"], "x");
        let want = crate::softplus(-0.1);
        assert!((lines[4]["loss"].as_f64().unwrap() - want).abs() < 1e-15);
    }

    /// A UTF-8 byte-order mark before the first case costs nothing.
    #[test]
    fn a_byte_order_mark_is_stripped() {
        let (lines, summary) = answer(
            "\u{feff}{\"chosen\":{\"policy\":-1,\"reference\":-1},\"rejected\":[{\"policy\":-2,\"reference\":-2}]}\n",
        );
        assert_eq!(summary.failed, 0, "{lines:?}");
        assert!((lines[0]["loss"].as_f64().unwrap() - 2f64.ln()).abs() < 1e-15);
    }

    /// The listwise and reduction keys reach the objective: InfoNCA with rewards and a
    /// temperature, a summed pairwise loss, and rewards where they do not belong.
    #[test]
    fn listwise_keys_are_read() {
        let seqs = r#""chosen":{"policy":-5,"reference":-6},"rejected":[{"policy":-7,"reference":-7},{"policy":-6,"reference":-6}]"#;
        let input = [
            format!(r#"{{"objective":"infonca","temperature":0.5,"rewards":[1,0.5,0.25],{seqs}}}"#),
            format!(r#"{{"objective":"pairwise-sigmoid","reduction":"sum",{seqs}}}"#),
            format!(r#"{{"objective":"pairwise-sigmoid",{seqs}}}"#),
            format!(r#"{{"objective":"plackett-luce-ranking",{seqs}}}"#),
            format!(r#"{{"objective":"plackett-luce","rewards":[1,0,0],{seqs}}}"#),
            format!(r#"{{"objective":"infonca","rewards":[1,0],{seqs}}}"#),
            format!(r#"{{"objective":"infonca","reduction":"max",{seqs}}}"#),
        ]
        .join("\n");
        let (lines, summary) = answer(&input);
        assert_eq!((summary.answered, summary.failed), (4, 3), "{lines:?}");
        let ex = Example::new(
            Sequence::new(-5.0, -6.0),
            vec![Sequence::new(-7.0, -7.0), Sequence::new(-6.0, -6.0)],
        );
        let want = LossConfig::new(Objective::Infonca)
            .with_temperature(0.5)
            .init()
            .unwrap()
            .compute(&ex.clone().with_rewards(vec![1.0, 0.5, 0.25]))
            .unwrap();
        assert_eq!(lines[0]["loss"].as_f64().unwrap(), want.loss);
        let (sum, mean) = (
            lines[1]["loss"].as_f64().unwrap(),
            lines[2]["loss"].as_f64().unwrap(),
        );
        assert!((sum - 2.0 * mean).abs() < 1e-15);
        let ranking = LossConfig::new(Objective::PlackettLuceRanking)
            .init()
            .unwrap()
            .compute(&ex)
            .unwrap();
        assert_eq!(lines[3]["loss"].as_f64().unwrap(), ranking.loss);
        let error = |i: usize| lines[i]["error"].as_str().unwrap().to_owned();
        assert_eq!(
            error(4),
            "objective `plackett-luce` does not use `rewards`; remove it or pick another objective"
        );
        assert!(
            error(5).contains("rewards has 2 entries but 3"),
            "{}",
            error(5)
        );
        assert!(error(6).contains("unknown variant `max`"), "{}", error(6));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let (lines, summary) = answer(
            r#"{"betta":0.2,"chosen":{"policy":-5,"reference":-5},"rejected":[{"policy":-1,"reference":-1}]}"#,
        );
        assert_eq!(summary.failed, 1);
        assert!(
            lines[0]["error"]
                .as_str()
                .unwrap()
                .contains("unknown field `betta`")
        );
    }
}
