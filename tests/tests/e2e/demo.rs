//! A tiny demo pipeline (a few dozen studies, a few steps per stage) from the library on the
//! CPU backend: every artefact is written and well-formed, and the observer sees each stage.
//! (The plots `apo demo` draws through its observer are checked in apo-cli's binary tests.)

use std::path::{Path, PathBuf};

use apo_pipeline::demo::{DemoOptions, run};
use apo_pipeline::table::{RowKind, Table};
use apo_pipeline::{DriftReport, PipelineResult};
use apo_train::device::Cpu;

/// Records what the pipeline shows an observer.
#[derive(Default)]
struct Recorder {
    messages: Vec<String>,
    steps: usize,
    drift: usize,
    results: usize,
}

impl apo_pipeline::Observer for Recorder {
    fn message(&mut self, line: &str) {
        self.messages.push(line.to_owned());
    }
    fn step(&mut self, _total: usize, _m: &apo_train::train::StepMetrics) {
        self.steps += 1;
    }
    fn drift_report(&mut self, r: &DriftReport, _dir: &Path) -> apo_pipeline::Result<Vec<PathBuf>> {
        assert_eq!(r.teachers.len(), 7);
        self.drift += 1;
        Ok(Vec::new())
    }
    fn results(
        &mut self,
        _r: &PipelineResult,
        table: &Table,
        _dir: &Path,
    ) -> apo_pipeline::Result<Vec<PathBuf>> {
        assert_eq!(table.of_kind(RowKind::Teacher).count(), 7);
        assert_eq!(table.of_kind(RowKind::Student).count(), 3);
        assert_eq!(table.of_kind(RowKind::Baseline).count(), 1);
        self.results += 1;
        Ok(Vec::new())
    }
}

#[test]
fn tiny_demo_writes_every_artefact() {
    let out = std::env::temp_dir().join(format!("apo-e2e-demo-{}", std::process::id()));
    std::fs::remove_dir_all(&out).ok();
    let options = DemoOptions {
        seed: 1,
        studies: 40,
        teachers: None,
        out: out.clone(),
        sft_steps: 3,
        apo_steps: 2,
    };
    let mut seen = Recorder::default();
    let r = run::<Cpu>(&options, &Default::default(), &mut seen).unwrap();
    assert_eq!((seen.drift, seen.results), (1, 1));
    assert_eq!(seen.steps, 3 + 2 + 2, "every optimiser step is observed");
    assert!(seen.messages.iter().any(|m| m.starts_with("stage 1")));
    for f in [
        "report.md",
        "results.json",
        "table.txt",
        "prefs.jsonl",
        "data-check.json",
        "drift/drift.json",
        "train/tokenizer.json",
        "train/sft/model.bin",
        "train/sft/metrics.jsonl",
        "train/apo/metrics.jsonl",
        "train/pairwise/metrics.jsonl",
        "samples-apo.jsonl",
    ] {
        assert!(out.join(f).is_file(), "{f} written");
    }
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let mean = &results["mean_accuracy"];
    assert_eq!(mean["teachers"].as_object().unwrap().len(), 7);
    // Typed rows: 7 teachers, 2 aggregates, 1 baseline, 3 students, each with its kind.
    let rows = results["rows"].as_array().unwrap();
    let kinds: Vec<&str> = rows.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    for (kind, n) in [
        ("teacher", 7),
        ("aggregate", 2),
        ("baseline", 1),
        ("student", 3),
    ] {
        assert_eq!(kinds.iter().filter(|k| **k == kind).count(), n, "{kind}");
    }
    for row in rows {
        let name = row["name"].as_str().unwrap();
        let mean_of_row = row["summary"]["accuracy"].as_f64().unwrap();
        let listed = &results["per_finding"][name];
        for (finding, v) in row["findings"].as_object().unwrap() {
            assert_eq!(v["accuracy"], listed[finding], "{name} {finding}");
        }
        if let Some(m) = results["mean_accuracy"]["teachers"].get(name) {
            assert_eq!(m.as_f64().unwrap(), mean_of_row);
        }
    }
    for row in [
        "majority_vote",
        "consensus",
        "all_absent",
        "sft",
        "pairwise",
        "apo",
    ] {
        let v = mean[row].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{row} = {v}");
    }
    // The all-absent row is the share of test images without each finding, averaged.
    let absent = results["per_finding"]["all absent"].as_object().unwrap();
    let values: Vec<f64> = absent.values().filter_map(|v| v.as_f64()).collect();
    let avg = values.iter().sum::<f64>() / values.len() as f64;
    assert!((avg - mean["all_absent"].as_f64().unwrap()).abs() < 1e-12);
    assert_eq!(r.stages.len(), 3);
    // The APO student against the other rows: the point difference is the difference of the
    // table's means, and sits inside its bootstrap interval.
    let versus: Vec<&str> = r.comparisons.iter().map(|c| c.versus.as_str()).collect();
    assert_eq!(versus.len(), 4, "{versus:?}");
    assert_eq!(
        (versus[0], versus[1], versus[3]),
        ("pairwise student", "sft student", "all absent")
    );
    let best = mean["teachers"]
        .as_object()
        .unwrap()
        .iter()
        .max_by(|a, b| a.1.as_f64().unwrap().total_cmp(&b.1.as_f64().unwrap()))
        .unwrap();
    assert_eq!(versus[2], best.0);
    for (c, row) in
        r.comparisons
            .iter()
            .zip([&mean["pairwise"], &mean["sft"], best.1, &mean["all_absent"]])
    {
        let d = &c.difference;
        let expected = mean["apo"].as_f64().unwrap() - row.as_f64().unwrap();
        assert!((d.difference - expected).abs() < 1e-12, "{}", c.versus);
        assert!(d.ci95[0] <= d.difference + 1e-12 && d.difference <= d.ci95[1] + 1e-12);
        assert_eq!(d.resamples, 2000);
    }
    assert_eq!(
        results["comparisons"].as_array().unwrap().len(),
        4,
        "comparisons in results.json"
    );
    // Stage 2 starts from the reference: every implicit reward is 0, so the Plackett-Luce
    // probability of the consensus is 1 / (N + 1) with N = 7 negatives, and the loss is
    // ln(N + 1) plus the consensus NLL term (weight 1 in the demo).
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(out.join("train/apo/metrics.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert!((first["p_chosen"].as_f64().unwrap() - 0.125).abs() < 1e-4);
    assert!(first["reward_chosen"].as_f64().unwrap().abs() < 1e-4);
    assert!(
        r.stages[1].first_loss > 8f64.ln() + 0.1,
        "{}",
        r.stages[1].first_loss
    );
    assert!(r.test_images > 0);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| apo student |") && report.contains("GPT-5"));
    assert!(report.contains("| APO student vs |") && report.contains("| pairwise student |"));
    std::fs::remove_dir_all(&out).ok();
}
