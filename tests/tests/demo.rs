//! A tiny `apo demo` (a few dozen studies, a few steps per stage) on the CPU backend: every
//! artefact is written and well-formed.

use apo_cli::commands::demo::{DemoOptions, full};

#[test]
fn tiny_demo_writes_every_artefact() {
    let out = std::env::temp_dir().join(format!("apo-e2e-demo-{}", std::process::id()));
    std::fs::remove_dir_all(&out).ok();
    let options = DemoOptions {
        seed: 1,
        studies: 40,
        teachers: None,
        out: out.clone(),
        device: apo_train::device::DeviceKind::Cpu,
        sft_steps: 3,
        apo_steps: 2,
        verbose: false,
    };
    let r = full(&options).unwrap();
    for f in [
        "report.md",
        "results.json",
        "table.txt",
        "accuracy.png",
        "curves_loss.png",
        "curves_margin.png",
        "curves_accuracy.png",
        "prefs.jsonl",
        "data-check.json",
        "drift/drift.json",
        "drift/disagreement_heatmap.png",
        "train/tokenizer.json",
        "train/sft/model.bin",
        "train/sft/metrics.jsonl",
        "train/apo/metrics.jsonl",
        "train/pairwise/metrics.jsonl",
        "samples-apo.jsonl",
    ] {
        assert!(out.join(f).is_file(), "{f} written");
    }
    for png in ["accuracy.png", "curves_loss.png"] {
        let img = image::open(out.join(png)).unwrap();
        assert!(img.width() > 500 && img.height() > 300);
    }
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let mean = &results["mean_accuracy"];
    assert_eq!(mean["teachers"].as_object().unwrap().len(), 7);
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
