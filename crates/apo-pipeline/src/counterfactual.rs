//! Counterfactual renders: does the student's statement of a finding follow the finding in
//! the image? The simulator draws some test images again with one Table 1 finding toggled and
//! nothing else changed (`apo synth --counterfactuals`, [`cxr_max::sim::Counterfactual`]);
//! a student that reads the image changes its statement of that finding between the two.

use std::collections::BTreeMap;
use std::path::Path;

use apo_train::eval::EvalReport;
use cxr_max::dataset::Item;
use cxr_max::eval::prediction;
use cxr_max::sim::Counterfactual;
use cxr_max::{Finding, Sample};
use serde::{Deserialize, Serialize};

/// Test images whose counterfactual renders the pipeline scores (all five renders of each of
/// the first this many test images that have them).
pub const COUNTERFACTUAL_IMAGES: usize = 200;

/// One finding's renders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlipCounts {
    /// The finding (CheXpert column name).
    pub finding: String,
    /// Renders scored (one per image).
    pub renders: usize,
    /// Renders on which the student states the finding present where it did not on the
    /// original image, or the other way round.
    pub flipped: usize,
    /// Renders on which the statement matches the render (present where the finding is
    /// drawn, not present where it is removed).
    pub followed: usize,
    /// `flipped / renders`.
    pub flip_rate: f64,
    /// `followed / renders`.
    pub follow_rate: f64,
}

/// The counterfactual check of one student.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CounterfactualReport {
    /// The student's stage.
    pub stage: String,
    /// Original images whose renders were scored.
    pub images: usize,
    /// Per Table 1 finding.
    pub findings: Vec<FlipCounts>,
    /// Flipped renders over all renders.
    pub flip_rate: f64,
    /// Followed renders over all renders.
    pub follow_rate: f64,
}

/// The renders to score: for the first `max_images` images of `test` that have renders in
/// `renders`, one item per render (the original's record with the render's image and the id
/// `DICOM/slug`), and what each render is (the original's index in `test`, the finding, its
/// state in the render).
pub fn items(
    data: &Path,
    test: &[Item],
    renders: &[Counterfactual],
    max_images: usize,
) -> (Vec<Item>, Vec<(usize, Finding, bool)>) {
    let index: BTreeMap<&str, usize> = test
        .iter()
        .enumerate()
        .map(|(k, item)| (item.sample.dicom_id.as_str(), k))
        .collect();
    let mut by_image: BTreeMap<usize, Vec<&Counterfactual>> = BTreeMap::new();
    for r in renders {
        if let Some(&k) = index.get(r.dicom_id.as_str()) {
            by_image.entry(k).or_default().push(r);
        }
    }
    let mut out = Vec::new();
    let mut what = Vec::new();
    for (&k, list) in by_image.iter().take(max_images) {
        let original = &test[k];
        for r in list {
            out.push(Item {
                sample: Sample {
                    dicom_id: format!(
                        "{}/{}",
                        original.sample.dicom_id,
                        cxr_max::sim::slug(r.finding)
                    ),
                    ..original.sample.clone()
                },
                image: data.join(&r.path),
                ..original.clone()
            });
            what.push((k, r.finding, r.present));
        }
    }
    (out, what)
}

/// Flip and follow counts of the renders' samples (`renders`, in [`items`] order) against the
/// samples of the original images (`original`, keyed by DICOM id).
pub fn report(
    stage: &str,
    test: &[Item],
    original: &EvalReport,
    renders: &EvalReport,
    what: &[(usize, Finding, bool)],
) -> CounterfactualReport {
    let stated = |text: &str, f: Finding| {
        prediction(&cxr_max::findings::extract(text).findings, f) == Some(true)
    };
    let by_id: BTreeMap<&str, &str> = original
        .samples
        .iter()
        .map(|s| (s.id.as_str(), s.text.as_str()))
        .collect();
    let mut counts: BTreeMap<Finding, (usize, usize, usize)> = BTreeMap::new();
    let mut images = std::collections::BTreeSet::new();
    for (sample, &(k, f, present)) in renders.samples.iter().zip(what) {
        let Some(before) = by_id.get(test[k].sample.dicom_id.as_str()) else {
            continue;
        };
        images.insert(k);
        let after = stated(&sample.text, f);
        let c = counts.entry(f).or_default();
        c.0 += 1;
        c.1 += usize::from(after != stated(before, f));
        c.2 += usize::from(after == present);
    }
    let rate = |a: usize, n: usize| if n == 0 { 0.0 } else { a as f64 / n as f64 };
    let findings: Vec<FlipCounts> = Finding::TABLE1
        .iter()
        .filter_map(|f| counts.get(f).map(|c| (f, c)))
        .map(|(f, &(renders, flipped, followed))| FlipCounts {
            finding: f.column_name().to_owned(),
            renders,
            flipped,
            followed,
            flip_rate: rate(flipped, renders),
            follow_rate: rate(followed, renders),
        })
        .collect();
    let total: usize = findings.iter().map(|c| c.renders).sum();
    CounterfactualReport {
        stage: stage.to_owned(),
        images: images.len(),
        flip_rate: rate(findings.iter().map(|c| c.flipped).sum(), total),
        follow_rate: rate(findings.iter().map(|c| c.followed).sum(), total),
        findings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apo_train::eval::EvalSample;

    fn item(id: &str) -> Item {
        Item {
            sample: Sample {
                dicom_id: id.into(),
                subject_id: None,
                study_id: None,
                prompt: None,
                report: None,
                diagnose: None,
                trajectories: Vec::new(),
                source: cxr_max::Location {
                    path: "r.jsonl".into(),
                    line: 1,
                },
            },
            subject_id: None,
            study_id: None,
            labels: None,
            split: None,
            view_position: None,
            image: format!("{id}.jpg").into(),
        }
    }

    fn eval(samples: &[(&str, &str)]) -> EvalReport {
        EvalReport {
            images: samples.len(),
            accuracy: None,
            samples: samples
                .iter()
                .map(|(id, text)| EvalSample {
                    id: (*id).into(),
                    text: (*text).into(),
                })
                .collect(),
            scores: None,
            concepts: None,
        }
    }

    /// A render counts as flipped when the statement of its finding changes, and as
    /// followed when the statement matches the render.
    #[test]
    fn flips_and_follows_are_counted_per_finding() {
        let test = vec![item("a"), item("b"), item("c")];
        let cf = |id: &str, f: Finding, present: bool| Counterfactual {
            dicom_id: id.into(),
            finding: f,
            present,
            path: format!("counterfactuals/{id}/{}.jpg", cxr_max::sim::slug(f)).into(),
        };
        let renders = vec![
            cf("a", Finding::Edema, true),
            cf("b", Finding::Edema, false),
            cf("b", Finding::Pneumothorax, true),
            cf("zzz", Finding::Edema, true),
        ];
        let (items, what) = items(Path::new("D"), &test, &renders, 10);
        assert_eq!(
            items.len(),
            3,
            "a render of an image outside the test set is left out"
        );
        assert_eq!(items[0].sample.dicom_id, "a/edema");
        assert_eq!(items[0].image, Path::new("D/counterfactuals/a/edema.jpg"));
        assert_eq!(what[2], (1, Finding::Pneumothorax, true));
        let (only_one, _) = super::items(Path::new("D"), &test, &renders, 1);
        assert_eq!(only_one.len(), 1);

        let original = eval(&[
            ("a", "No pulmonary edema."),
            ("b", "Mild pulmonary edema. No pneumothorax."),
            ("c", "No pulmonary edema."),
        ]);
        // a: edema drawn, stated: flipped and followed. b: edema removed, still stated: not
        // flipped, not followed. b: pneumothorax drawn, not stated: neither.
        let after = eval(&[
            ("a/edema", "Mild pulmonary edema."),
            ("b/edema", "Mild pulmonary edema."),
            ("b/pneumothorax", "No pneumothorax."),
        ]);
        let r = report("apo", &test, &original, &after, &what);
        assert_eq!(r.images, 2);
        let edema = r.findings.iter().find(|c| c.finding == "Edema").unwrap();
        assert_eq!((edema.renders, edema.flipped, edema.followed), (2, 1, 1));
        assert_eq!(edema.flip_rate, 0.5);
        let px = r
            .findings
            .iter()
            .find(|c| c.finding == "Pneumothorax")
            .unwrap();
        assert_eq!((px.renders, px.flipped, px.followed), (1, 0, 0));
        assert!((r.flip_rate - 1.0 / 3.0).abs() < 1e-12);
        assert!((r.follow_rate - 1.0 / 3.0).abs() < 1e-12);
    }
}
