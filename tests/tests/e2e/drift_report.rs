//! The drift report on the simulator's default data: it must find the drift the profiles
//! inject, and the teachers whose Table 1 accuracies differ most must diverge most. (The
//! plots `apo drift report` draws from it are checked in apo-cli's binary tests.)
#![allow(clippy::needless_range_loop)] // teacher indices address several matrices at once

use apo_drift::DetectorConfig;
use apo_pipeline::drift::{DriftOptions, report_dir};
use cxr_max::Finding;
use cxr_max::sim::{Profiles, SynthConfig, synthesize};

#[test]
fn report_finds_injected_drift_and_table1_divergence() {
    let root = std::env::temp_dir().join(format!("apo-e2e-drift-{}", std::process::id()));
    let data = root.join("data");
    synthesize(
        &data,
        &SynthConfig {
            studies: 1000,
            image_size: 16,
            seed: 7,
            ..Default::default()
        },
    )
    .unwrap();
    let options = DriftOptions {
        detector: DetectorConfig::default_for("adwin").unwrap(),
        max_steps: 12,
        expected: Default::default(),
    };
    let r = report_dir(&data, &options).unwrap();
    assert_eq!(r.items, 1000);
    // The injected drifts from the data set's teachers.toml mark their streams.
    let marked: Vec<_> = r
        .streams
        .iter()
        .filter(|s| !s.expected.is_empty())
        .collect();
    assert_eq!(marked.len(), 2, "{marked:?}");
    assert_eq!(r.streams.len(), 7 * 5);
    // drift.json holds the change points as computed.
    let json = root.join("drift.json");
    r.write_json(&json).unwrap();
    let back: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let back: Vec<apo_pipeline::drift::ChangePoint> =
        serde_json::from_value(back["change_points"].clone()).unwrap();
    assert_eq!(back, r.change_points);

    // Precision / recall / F1 per teacher against the consensus and the labels.
    let truth = r
        .scores_vs_truth
        .as_ref()
        .expect("simulated data has labels");
    assert_eq!(truth.len(), 7);
    assert!(
        truth
            .values()
            .all(|s| s.compared > 1000 && s.f1 > 0.0 && s.f1 < 1.0)
    );
    assert!(truth["GPT-5"].f1 > truth["Moonshot"].f1, "{truth:?}");
    assert_eq!(r.scores_vs_consensus.len(), 7);

    // Injected: Gemini-2.5 pneumothorax at 0.5, Grok-4 pleural effusion at 0.6.
    let near = |teacher: &str, finding: &str, at: f64| {
        r.change_points.iter().any(|c| {
            c.teacher == teacher
                && c.finding == finding
                && c.fraction >= at - 0.02
                && c.fraction <= at + 0.25
        })
    };
    assert!(
        near("Gemini-2.5", "Pneumothorax", 0.5),
        "{:?}",
        r.change_points
    );
    assert!(
        near("Grok-4", "Pleural Effusion", 0.6),
        "{:?}",
        r.change_points
    );
    // Few false alarms among the other 33 (teacher, finding) streams.
    let others = r
        .change_points
        .iter()
        .filter(|c| {
            !(c.teacher == "Gemini-2.5" && c.finding == "Pneumothorax"
                || c.teacher == "Grok-4" && c.finding == "Pleural Effusion")
        })
        .count();
    assert!(others <= 3, "{:?}", r.change_points);

    // The pair of teachers whose Table 1 accuracies differ most is among the three most
    // divergent pairs, for the findings with a wide Table 1 spread.
    let profiles = Profiles::embedded();
    let acc = |t: &str, f: Finding| {
        profiles
            .teacher
            .iter()
            .find(|p| p.name == t)
            .unwrap()
            .accuracy_at(f, 0.0)
    };
    for f in [
        Finding::Consolidation,
        Finding::Pneumothorax,
        Finding::Edema,
        Finding::Pneumonia,
    ] {
        let m = &r.pairwise_disagreement_by_finding[f.column_name()];
        let mut pairs = Vec::new();
        for a in 0..r.teachers.len() {
            for b in a + 1..r.teachers.len() {
                let gap = (acc(&r.teachers[a], f) - acc(&r.teachers[b], f)).abs();
                pairs.push((m[a][b], gap, a, b));
            }
        }
        let widest = pairs
            .iter()
            .cloned()
            .fold((0.0, -1.0, 0, 0), |w, p| if p.1 > w.1 { p } else { w });
        pairs.sort_by(|x, y| y.0.total_cmp(&x.0));
        let rank = pairs
            .iter()
            .position(|p| (p.2, p.3) == (widest.2, widest.3))
            .unwrap();
        assert!(
            rank < 3,
            "{f}: widest Table 1 gap {} vs {} ranks {rank} by disagreement",
            r.teachers[widest.2],
            r.teachers[widest.3]
        );
    }
    std::fs::remove_dir_all(&root).ok();
}
