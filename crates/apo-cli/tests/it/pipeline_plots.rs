//! The plots `apo demo` and `apo run` draw from the pipeline's results.

use std::collections::BTreeMap;

use apo_pipeline::Observer as _;
use apo_pipeline::table::{RowKind, Table, TestSet};
use cxr_max::eval::Call;
use cxr_max::{Findings, LabelStatus};

use std::path::Path;

use apo_cli::commands::pipeline::CliObserver;
use apo_pipeline::{PipelineResult, read_metrics};
use cxr_max::Finding;

fn png_size(path: &Path) -> (u32, u32) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (img.width(), img.height())
}

#[test]
fn results_plots_are_drawn_from_the_table_and_the_metrics() {
    let dir = std::env::temp_dir().join(format!("apo-cli-plots-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    let metrics = dir.join("train/apo");
    std::fs::create_dir_all(&metrics).unwrap();
    let line = |step: usize, loss: f64| {
        format!(
            "{{\"stage\":\"apo\",\"step\":{step},\"loss\":{loss},\"lr\":0.001,\"grad_norm\":1.0,\"tokens_per_s\":10.0,\"margin\":0.5,\"top1_accuracy\":0.5,\"pairwise_accuracy\":0.7}}\n"
        )
    };
    std::fs::write(metrics.join("metrics.jsonl"), line(1, 2.0) + &line(2, 1.5)).unwrap();
    assert_eq!(read_metrics(&metrics.join("metrics.jsonl")).len(), 2);
    let evaluated = Finding::TABLE1.to_vec();
    // Two labelled test images; the row states every finding present on the first only.
    let labels: Vec<Option<Findings>> = (0..2)
        .map(|i| {
            let mut f = Findings::default();
            if i == 0 {
                f.set(Finding::Edema, LabelStatus::Positive);
            }
            Some(f)
        })
        .collect();
    let predictions: Vec<Vec<Call>> = (0..2)
        .map(|i| vec![if i == 0 { Call::PRESENT } else { Call::ABSENT }; 14])
        .collect();
    let mut table = Table {
        evaluated,
        rows: Vec::new(),
        test: TestSet {
            ids: vec!["a".into(), "b".into()],
            labels,
        },
    };
    table.push("apo student".into(), RowKind::Student, predictions, None);
    let row = &table.rows[0];
    // Edema is the only finding with both a positive and a negative label.
    assert_eq!(row.scores.summary.balanced_accuracy, Some(1.0));
    assert_eq!(row.scores.findings["Edema"].balanced_accuracy, Some(1.0));
    let result = empty_result();
    let files = CliObserver::new(false)
        .results(&result, &table, &dir)
        .unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "curves_loss.png",
            "curves_margin.png",
            "curves_accuracy.png",
            "balanced_accuracy.png",
            "accuracy.png"
        ]
    );
    for f in &files {
        let (w, h) = png_size(f);
        assert!(w > 500 && h > 300, "{}: {w} x {h}", f.display());
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn empty_result() -> PipelineResult {
    PipelineResult {
        mean_accuracy: apo_pipeline::MeanAccuracy {
            teachers: BTreeMap::new(),
            majority_vote: 0.0,
            consensus: 0.0,
            all_absent: 0.0,
            sft: 0.0,
            pairwise: 0.0,
            apo: 0.0,
            variants: BTreeMap::new(),
        },
        per_finding: BTreeMap::new(),
        rows: Vec::new(),
        evaluated: Vec::new(),
        eval_split: "test".into(),
        counterfactuals: None,
        test_images: 0,
        train_images: 0,
        preference_sets: 0,
        stages: Vec::new(),
        comparisons: Vec::new(),
        margins: BTreeMap::new(),
        generalisation: None,
        phases: BTreeMap::new(),
        seconds: 0.0,
        files: Vec::new(),
    }
}
