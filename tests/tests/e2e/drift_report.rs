//! The drift report on the simulator's default data: it must find the drift the profiles
//! inject, and its pairwise disagreement must be the one the profiles predict. (The plots
//! `apo drift report` draws from it are checked in apo-cli's binary tests.)
#![allow(clippy::needless_range_loop)] // teacher indices address several matrices at once

use apo_drift::DetectorConfig;
use apo_pipeline::drift::{DriftOptions, report_dir};
use cxr_max::Finding;
use cxr_max::sim::{Profiles, SynthConfig, synthesize};

#[test]
fn report_finds_injected_drift_and_profile_divergence() {
    let root = std::env::temp_dir().join(format!("apo-e2e-drift-{}", std::process::id()));
    let data = root.join("data");
    synthesize(
        &data,
        &SynthConfig {
            studies: 3000,
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
    assert_eq!(r.items, 3000);
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
            .all(|s| s.compared > 3000 && s.f1 > 0.0 && s.f1 < 1.0)
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
    // Grok-4's pleural effusion drift (balanced accuracy 0.56 -> 0.89) moves its agreement
    // with the majority vote by only about 0.04, since the majority itself misses most
    // effusions on subtle images and over-calls them on AP films: too small for ADWIN
    // (delta 0.002) over 1,800 / 1,200 items. The shift is in the signal the detector reads.
    let (opened, _) = cxr_max::dataset::Dataset::open(&data, &Default::default()).unwrap();
    {
        use apo_pipeline::labels::{Labelled, present, teacher_vote};
        let labelled = Labelled::read(&opened.items);
        let majority = apo_pipeline::drift::majority(&opened.items, &labelled).unwrap();
        let f = Finding::PleuralEffusion;
        let n = opened.items.len();
        let mut agree = [(0usize, 0usize); 2];
        for (i, item) in opened.items.iter().enumerate() {
            let (Some(v), Some(c)) = (
                present(teacher_vote(item, &labelled.finals[i], "Grok-4", f)),
                present(majority.labels[i][f.index()]),
            ) else {
                continue;
            };
            let half = usize::from(i as f64 / n as f64 >= 0.6);
            agree[half].0 += usize::from(v == c);
            agree[half].1 += 1;
        }
        let rate = |(a, n): (usize, usize)| a as f64 / n as f64;
        let (before, after) = (rate(agree[0]), rate(agree[1]));
        assert!(after - before > 0.02, "{before} -> {after}");
    }
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

    // Pairwise disagreement follows the profiles: per Table 1 finding, the disagreement of
    // each pair of teachers the profiles predict on these images (their truth and view; the
    // subtle images in expectation) against the one measured.
    let profiles = Profiles::embedded();
    let cfg = SynthConfig::default();
    let rates = |t: &str, f: Finding, i: usize| {
        let p = profiles.teacher.iter().find(|p| p.name == t).unwrap();
        p.rates_at(f, i as f64 / opened.items.len() as f64)
    };
    let differ = |x: f64, y: f64| x * (1.0 - y) + (1.0 - x) * y;
    for f in Finding::TABLE1 {
        let m = &r.pairwise_disagreement_by_finding[f.column_name()];
        let mut pairs = Vec::new();
        for a in 0..r.teachers.len() {
            for b in a + 1..r.teachers.len() {
                let (ta, tb) = (&r.teachers[a], &r.teachers[b]);
                let mut expected = 0.0;
                for (i, item) in opened.items.iter().enumerate() {
                    let (ra, rb) = (rates(ta, f, i), rates(tb, f, i));
                    let ap = item.view_position.as_deref() == Some("AP")
                        && cxr_max::sim::CONFOUNDED.contains(&f);
                    let fp = |r: cxr_max::sim::Rates| {
                        let fp = 1.0 - r.specificity;
                        if ap {
                            (fp * cfg.confounder_fp).min(0.95).max(fp)
                        } else {
                            fp
                        }
                    };
                    let positive = item.labels.unwrap().get(f) == cxr_max::LabelStatus::Positive;
                    expected += if positive {
                        let k = cfg.subtle_sensitivity;
                        (1.0 - cfg.subtle_rate) * differ(ra.sensitivity, rb.sensitivity)
                            + cfg.subtle_rate * differ(k * ra.sensitivity, k * rb.sensitivity)
                    } else {
                        differ(fp(ra), fp(rb))
                    };
                }
                expected /= opened.items.len() as f64;
                pairs.push((m[a][b], expected, a, b));
            }
        }
        // Measured within sampling error (3,000 images: one standard error is below 0.01).
        for p in &pairs {
            assert!(
                (p.0 - p.1).abs() < 0.04,
                "{f}: {} vs {} disagree on {:.3}, the profiles predict {:.3}",
                r.teachers[p.2],
                r.teachers[p.3],
                p.0,
                p.1
            );
        }
        // The pair the profiles make disagree most is among the three most divergent pairs.
        let top = pairs
            .iter()
            .cloned()
            .fold(pairs[0], |w, p| if p.1 > w.1 { p } else { w });
        let mut by_measured = pairs.clone();
        by_measured.sort_by(|x, y| y.0.total_cmp(&x.0));
        let rank = by_measured
            .iter()
            .position(|p| (p.2, p.3) == (top.2, top.3))
            .unwrap();
        assert!(
            rank < 3,
            "{f}: {} vs {} ranks {rank} by disagreement",
            r.teachers[top.2],
            r.teachers[top.3]
        );
    }
    std::fs::remove_dir_all(&root).ok();
}
