//! Trajectory text: sentence templates per finding, in three styles, that the findings
//! labeler reads back exactly.

use crate::rng::Rng;
use crate::sim::profiles::Style;
use crate::{Finding, LabelStatus};

/// One statement a teacher makes, in writing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Statement {
    pub finding: Finding,
    pub status: LabelStatus,
}

fn side(rng: &mut Rng) -> &'static str {
    if rng.bernoulli(0.5) { "left" } else { "right" }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next().map_or_else(String::new, |f| {
        f.to_uppercase().collect::<String>() + c.as_str()
    })
}

/// A sentence stating `status` of `finding`.
pub(crate) fn sentence(finding: Finding, status: LabelStatus, rng: &mut Rng) -> String {
    use Finding::*;
    let s = side(rng);
    match status {
        LabelStatus::Positive => match finding {
            Atelectasis => rng
                .pick(&[
                    format!("{} basilar atelectasis.", capitalised(s)),
                    format!("Linear atelectasis at the {s} base."),
                ])
                .clone(),
            Cardiomegaly => rng
                .pick(&[
                    "The cardiac silhouette is enlarged.".to_owned(),
                    "Cardiomegaly is present.".to_owned(),
                ])
                .clone(),
            Consolidation => rng
                .pick(&[
                    format!("Consolidation in the {s} lower lobe."),
                    format!("There is focal consolidation at the {s} base."),
                ])
                .clone(),
            Edema => rng
                .pick(&[
                    "Mild pulmonary edema.".to_owned(),
                    "Interstitial edema with vascular congestion.".to_owned(),
                ])
                .clone(),
            EnlargedCardiomediastinum => "The mediastinum is widened.".to_owned(),
            Fracture => format!("Fracture of a {s} rib."),
            LungLesion => format!("A rounded nodule in the {s} upper lobe."),
            LungOpacity => format!("Patchy opacity in the {s} lung."),
            NoFinding => "No acute cardiopulmonary process.".to_owned(),
            PleuralEffusion => rng
                .pick(&[
                    format!("Small {s} pleural effusion."),
                    format!("Blunting of the {s} costophrenic angle."),
                ])
                .clone(),
            PleuralOther => format!("Pleural thickening along the {s} apex."),
            Pneumonia => format!("Findings consistent with {s} lower lobe pneumonia."),
            Pneumothorax => format!(
                "{} apical pneumothorax with a visible pleural line.",
                capitalised(s)
            ),
            SupportDevices => rng
                .pick(&[
                    "A pacemaker with leads is in place.".to_owned(),
                    "Support lines and tubes are in place.".to_owned(),
                ])
                .clone(),
        },
        LabelStatus::Negative => match finding {
            Cardiomegaly => "Heart size is normal.".to_owned(),
            EnlargedCardiomediastinum => "Normal cardiomediastinal silhouette.".to_owned(),
            SupportDevices => "No lines or tubes.".to_owned(),
            NoFinding => "No acute cardiopulmonary process.".to_owned(),
            f => format!("No {}.", noun(f)),
        },
        LabelStatus::Uncertain => format!("Possible {}.", noun(finding)),
        LabelStatus::NotMentioned => String::new(),
    }
}

fn noun(f: Finding) -> &'static str {
    f.noun()
}

const REFUSALS: [&str; 3] = [
    "As an AI, I'm not capable of providing medical diagnoses. A chest X-ray should be reviewed by a qualified radiologist.",
    "I cannot interpret medical images with certainty. In general, radiologists look at the heart, the lungs and the bones on a chest radiograph.",
    "I am unable to provide a diagnosis from this image. Please consult a healthcare professional for an accurate interpretation.",
];

/// Writes a trajectory from its statements (the final statement per finding comes last).
pub(crate) fn trajectory(
    style: Style,
    statements: &[Statement],
    refusal: bool,
    rng: &mut Rng,
) -> String {
    if refusal {
        return rng.pick(&REFUSALS).to_string();
    }
    let sentences: Vec<String> = statements
        .iter()
        .map(|s| sentence(s.finding, s.status, rng))
        .collect();
    match style {
        Style::Concise => format!("Findings: {}", sentences.join(" ")),
        Style::Verbose => {
            let intro = rng.pick(&[
                "Based on the provided chest X-ray, here is the basis for the diagnosis.",
                "Looking carefully at this chest radiograph, several observations can be made.",
                "I will describe the relevant observations on this chest image.",
            ]);
            let outro = rng.pick(&[
                "These observations should be correlated with the clinical history.",
                "Comparison with prior studies would help confirm these impressions.",
            ]);
            format!("{intro} {} {outro}", sentences.join(" "))
        }
        Style::Bullet => {
            let mut out = String::from("Findings supporting the diagnosis:");
            for (i, s) in sentences.iter().enumerate() {
                out.push_str(&format!("\n{}. {s}", i + 1));
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings;

    #[test]
    fn every_template_reads_back() {
        let mut rng = Rng::new(3);
        for f in Finding::ALL {
            for status in [
                LabelStatus::Positive,
                LabelStatus::Negative,
                LabelStatus::Uncertain,
            ] {
                if f == Finding::NoFinding && status != LabelStatus::Positive {
                    continue;
                }
                for _ in 0..4 {
                    let s = sentence(f, status, &mut rng);
                    let got = findings::extract(&s).findings.get(f);
                    assert_eq!(got, status, "{f} {status:?}: {s}");
                    let others = findings::extract(&s)
                        .mentions
                        .iter()
                        .filter(|m| m.finding != f)
                        .count();
                    let allowed =
                        usize::from(f == Finding::Pneumothorax && status == LabelStatus::Positive);
                    assert!(others <= allowed, "{s} mentions other findings");
                }
            }
        }
    }
}
