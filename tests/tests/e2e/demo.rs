//! A tiny demo pipeline (a few dozen studies, a few steps per stage) from the library on the
//! CPU backend: every artefact is written and well-formed, and the observer sees each stage.
//! (The plots `apo demo` draws through its observer are checked in apo-cli's binary tests.)

use std::path::{Path, PathBuf};

use cxr_max::Finding;
use cxr_max::findings::{LabelOptions, Labeler, ReportFormat, label_reports};

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
        // All absent, the random guess, the APO student's concept head as a template, the
        // APO student on shuffled images.
        assert_eq!(table.of_kind(RowKind::Baseline).count(), 4);
        self.results += 1;
        Ok(Vec::new())
    }
}

#[test]
fn tiny_demo_writes_every_artefact() {
    let _training = crate::training();
    let out = std::env::temp_dir().join(format!("apo-e2e-demo-{}", std::process::id()));
    std::fs::remove_dir_all(&out).ok();
    let options = DemoOptions {
        seed: 1,
        studies: 40,
        teachers: None,
        out: out.clone(),
        sft_steps: 3,
        apo_steps: 2,
        pretrain_steps: 2,
        generalisation: true,
        ..DemoOptions::default()
    };
    let mut seen = Recorder::default();
    let r = run::<Cpu>(&options, &Default::default(), &mut seen).unwrap();
    assert_eq!((seen.drift, seen.results), (1, 1));
    assert_eq!(
        seen.steps,
        2 + 3 + 2 + 2,
        "every optimiser step is observed"
    );
    assert!(seen.messages.iter().any(|m| m.starts_with("stage 1")));
    for f in [
        "report.md",
        "results.json",
        "table.txt",
        "prefs.jsonl",
        "data-check.json",
        "drift/drift.json",
        "train/tokenizer.json",
        "train/pretrain/model.bin",
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
    // Typed rows: 7 teachers, 2 aggregates, 4 floors, 3 students, each with its kind.
    let rows = results["rows"].as_array().unwrap();
    let kinds: Vec<&str> = rows.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    for (kind, n) in [
        ("teacher", 7),
        ("aggregate", 2),
        ("baseline", 4),
        ("student", 3),
    ] {
        assert_eq!(kinds.iter().filter(|k| **k == kind).count(), n, "{kind}");
    }
    assert_eq!(results["eval_split"], "test");
    // Chain-of-thought inconsistency: a share for every row that writes text, none for the
    // aggregates and floors.
    for row in rows {
        let share = &row["inconsistent"];
        match row["kind"].as_str().unwrap() {
            "teacher" | "student" => {
                let v = share.as_f64().unwrap();
                assert!((0.0..=1.0).contains(&v), "{}: {v}", row["name"]);
            }
            _ => assert!(share.is_null(), "{}", row["name"]),
        }
    }
    // The concept head's template row states each finding from the head's probability.
    assert!(
        rows.iter()
            .any(|r| r["name"] == "apo concept head -> template" && r["kind"] == "baseline")
    );
    // The demo simulates counterfactual renders: five per scored test image.
    let cf = &r
        .counterfactuals
        .as_ref()
        .expect("counterfactual renders scored");
    assert_eq!(cf.images, r.test_images.min(200));
    let renders: usize = cf.findings.iter().map(|c| c.renders).sum();
    assert_eq!(renders, 5 * cf.images);
    for c in &cf.findings {
        assert!(c.flipped <= c.renders && c.followed <= c.renders);
    }
    let fields = [
        "tp",
        "fp",
        "fn",
        "tn",
        "none",
        "sensitivity",
        "specificity",
        "precision",
        "f1",
        "balanced_accuracy",
        "accuracy",
        "auroc",
    ];
    for row in rows {
        let name = row["name"].as_str().unwrap();
        let findings = row["findings"].as_object().unwrap();
        assert_eq!(findings.len(), 14, "{name}: every CheXpert column");
        for (finding, v) in findings {
            for f in fields {
                assert!(v.get(f).is_some(), "{name} {finding}: {f}");
            }
            if let Some(listed) = results["per_finding"][name].get(finding) {
                assert_eq!(&v["accuracy"], listed, "{name} {finding}");
            }
        }
        for summary in ["summary", "summary_14"] {
            for f in ["balanced_accuracy", "macro_f1", "micro_f1", "accuracy"] {
                assert!(row[summary].get(f).is_some(), "{name} {summary} {f}");
            }
        }
        if let Some(m) = results["mean_accuracy"]["teachers"].get(name) {
            assert_eq!(m, &row["summary"]["accuracy"]);
        }
    }
    let row = |name: &str| rows.iter().find(|r| r["name"] == name).unwrap();
    // The all-absent floor: balanced accuracy exactly 0.5 and F1 0 wherever a finding has
    // positives; the random guess: balanced accuracy 0.5.
    for (finding, v) in row("all absent")["findings"].as_object().unwrap() {
        if v["tp"].as_f64().unwrap() + v["fn"].as_f64().unwrap() > 0.0
            && v["tn"].as_f64().unwrap() + v["fp"].as_f64().unwrap() > 0.0
        {
            assert_eq!(v["balanced_accuracy"], 0.5, "{finding}");
            assert_eq!(v["f1"], 0.0, "{finding}");
        }
    }
    let guess = row("random guess")["summary"]["balanced_accuracy"]
        .as_f64()
        .unwrap();
    assert!((guess - 0.5).abs() < 1e-12, "{guess}");
    // The students have a concept head: AUROC from its probabilities.
    assert!(row("apo student")["summary"]["auroc"].as_f64().is_some());
    assert!(row("GPT-5")["summary"]["auroc"].is_null());
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
    // The all-absent row's accuracy is the share of test images without each finding,
    // averaged.
    let absent = results["per_finding"]["all absent"].as_object().unwrap();
    let values: Vec<f64> = absent.values().filter_map(|v| v.as_f64()).collect();
    let avg = values.iter().sum::<f64>() / values.len() as f64;
    assert!((avg - mean["all_absent"].as_f64().unwrap()).abs() < 1e-12);
    assert_eq!(r.stages.len(), 3);
    // The APO student against every other row on three metrics: the point difference is the
    // difference of the rows' summaries, and sits inside its bootstrap interval.
    let others = rows.len() - 1;
    assert_eq!(r.comparisons.len(), others * 3);
    assert_eq!(
        (
            r.comparisons[0].versus.as_str(),
            r.comparisons[3].versus.as_str()
        ),
        ("pairwise student", "sft student")
    );
    let apo = row("apo student");
    for c in &r.comparisons {
        let key = serde_json::to_value(c.metric).unwrap();
        let key = key.as_str().unwrap();
        let d = &c.difference;
        let expected = apo["summary"][key].as_f64().unwrap()
            - row(&c.versus)["summary"][key].as_f64().unwrap();
        assert!(
            (d.difference - expected).abs() < 1e-12,
            "{} {key}",
            c.versus
        );
        assert!(d.ci95[0] <= d.difference + 1e-12 && d.difference <= d.ci95[1] + 1e-12);
        // Accuracy is defined on every resample; on this tiny test split a resample can lack
        // a finding's positives, where balanced accuracy and F1 are undefined (left out).
        if key == "accuracy" {
            assert_eq!(d.resamples, 2000);
        } else {
            assert!(d.resamples > 1000 && d.resamples <= 2000, "{}", d.resamples);
        }
    }
    assert_eq!(
        results["comparisons"].as_array().unwrap().len(),
        others * 3,
        "comparisons in results.json"
    );
    // `apo label`'s library function on the samples recounts the student rows exactly.
    let data = out.join("data");
    recount(&data, &out, row("apo student"), "samples-apo.jsonl");
    recount(
        &data,
        &out,
        row("apo, shuffled images"),
        "samples-apo-shuffled.jsonl",
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
    assert!(report.contains("Balanced accuracy") && report.contains("| apo, shuffled images |"));
    // Generalisation: the three students and the seven teachers on the test split of the
    // shifted data set, each student's counts recounted from its samples against that data
    // set's labels; its teachers carry one change point each, as `Profiles::shifted` draws it.
    let g = r.generalisation.as_ref().expect("generalisation scored");
    let shifted = out.join("data-shifted");
    assert_eq!(g.data, shifted);
    assert_eq!(g.images, test_labels(&shifted).len());
    assert!(g.images > 0);
    let grows = results["generalisation"]["rows"].as_array().unwrap();
    let gkinds: Vec<&str> = grows.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    for (kind, n) in [
        ("teacher", 7),
        ("aggregate", 2),
        ("baseline", 3),
        ("student", 3),
    ] {
        assert_eq!(gkinds.iter().filter(|k| **k == kind).count(), n, "{kind}");
    }
    assert_eq!(g.comparisons.len(), (grows.len() - 1) * 3);
    let grow = |name: &str| grows.iter().find(|r| r["name"] == name).unwrap();
    let gdir = out.join("generalisation");
    for stage in ["sft", "pairwise", "apo"] {
        recount(
            &shifted,
            &gdir,
            grow(&format!("{stage} student")),
            &format!("samples-{stage}.jsonl"),
        );
    }
    let profiles = cxr_max::sim::Profiles::from_file(&shifted.join("teachers.toml")).unwrap();
    assert_eq!(
        profiles,
        cxr_max::sim::Profiles::embedded().shifted(
            apo_pipeline::demo::GENERALISATION_SHIFT,
            1 + apo_pipeline::demo::GENERALISATION_SEED_OFFSET
        )
    );
    assert!(report.contains("## Generalisation") && report.contains("data-shifted"));
    std::fs::remove_dir_all(&out).ok();
}

/// Labels a samples file as `apo label` does and recounts TP, FP, FN, TN and the statement-less
/// images of `row` on every finding against the data set's test labels.
fn recount(data: &Path, out: &Path, row: &serde_json::Value, samples: &str) {
    let path = out.join(samples);
    let input = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
    let mut csv = Vec::new();
    let options = LabelOptions {
        format: ReportFormat::Jsonl,
        column: None,
        id_column: None,
    };
    let summary = label_reports(input, &path, &options, &Labeler::default(), &mut csv).unwrap();
    assert!(summary.rejected.is_empty() && summary.labelled > 0);
    let labels = test_labels(data);
    let text = String::from_utf8(csv).unwrap();
    for f in Finding::ALL {
        let (mut tp, mut fp, mut fn_, mut tn, mut none) = (0, 0, 0, 0, 0);
        for line in text.lines().skip(1) {
            let cells: Vec<&str> = line.split(',').collect();
            let Some(truth) = labels[cells[0]].and_then(|l| cxr_max::eval::truth(&l, f)) else {
                continue;
            };
            let stated = cells[1 + f.index()];
            let present = stated == "1.0";
            none += usize::from(stated != "1.0" && stated != "0.0");
            match (truth, present) {
                (true, true) => tp += 1,
                (false, true) => fp += 1,
                (true, false) => fn_ += 1,
                (false, false) => tn += 1,
            }
        }
        let v = &row["findings"][f.column_name()];
        let got = [tp, fp, fn_, tn, none].map(|x| serde_json::json!(x));
        let want = ["tp", "fp", "fn", "tn", "none"].map(|k| v[k].clone());
        assert_eq!(got, want, "{samples} {f}");
    }
}

/// The test split's labels by DICOM id.
fn test_labels(data: &Path) -> std::collections::BTreeMap<String, Option<cxr_max::Findings>> {
    let (ds, _) = cxr_max::dataset::Dataset::open(data, &Default::default()).unwrap();
    ds.items
        .into_iter()
        .filter(|i| i.split == Some(cxr_max::tables::Split::Test))
        .map(|i| (i.sample.dicom_id, i.labels))
        .collect()
}
