//! Clinical-efficacy metrics against scikit-learn 1.7.2 on seeded random cases
//! (`fixtures/make_metrics_reference.py`): confusion counts, sensitivity, specificity,
//! precision, F1, balanced accuracy, the Table 1 accuracy and AUROC per finding, and the
//! summaries over the five Table 1 findings and over all 14.

use cxr_max::eval::{Call, FindingMetrics, Summary, scores};
use cxr_max::{Finding, Findings, LabelStatus};
use serde_json::Value;

const REFERENCE: &str = include_str!("../fixtures/metrics_reference.json");

fn close(got: Option<f64>, want: &Value, what: &str) {
    match (got, want.as_f64()) {
        (None, None) => {}
        (Some(g), Some(w)) => assert!((g - w).abs() < 1e-12, "{what}: {g} vs {w}"),
        (g, _) => panic!("{what}: {g:?} vs {want}"),
    }
}

fn check_summary(got: &Summary, want: &Value, what: &str) {
    close(got.balanced_accuracy, &want["balanced_accuracy"], what);
    close(got.macro_f1, &want["macro_f1"], what);
    close(got.micro_f1, &want["micro_f1"], what);
    close(got.accuracy, &want["accuracy"], what);
    close(got.auroc, &want["auroc"], what);
}

#[test]
fn metrics_match_scikit_learn() {
    let reference: Value = serde_json::from_str(REFERENCE).unwrap();
    let columns: Vec<Finding> = reference["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(columns, Finding::ALL);
    let cases = reference["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for (n, case) in cases.iter().enumerate() {
        let rows = |key: &str| -> Vec<Vec<Value>> {
            case[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_array().unwrap().clone())
                .collect()
        };
        let labels: Vec<Option<Findings>> = rows("labels")
            .iter()
            .map(|r| {
                let mut f = Findings::default();
                for (j, cell) in r.iter().enumerate() {
                    f.set(
                        Finding::ALL[j],
                        LabelStatus::from_csv(cell.as_str().unwrap()).unwrap(),
                    );
                }
                Some(f)
            })
            .collect();
        let calls: Vec<Vec<Call>> = rows("calls")
            .iter()
            .map(|r| {
                r.iter()
                    .map(|c| match c.as_str().unwrap() {
                        "present" => Call::PRESENT,
                        "absent" => Call::ABSENT,
                        _ => Call::NONE,
                    })
                    .collect()
            })
            .collect();
        let score_rows = rows("scores");
        let score = |i: usize, f: Finding| score_rows[i][f.index()].as_f64();
        let got = scores(
            &labels,
            &Finding::TABLE1,
            |i, f| calls[i][f.index()],
            Some(&score),
        )
        .unwrap();
        let want = &case["expected"];
        for f in Finding::ALL {
            let name = f.column_name();
            let g: &FindingMetrics = &got.findings[name];
            let w = &want["findings"][name];
            let what = format!("case {n} {name}");
            for (key, v) in [
                ("tp", g.tp),
                ("fp", g.fp),
                ("fn", g.fn_),
                ("tn", g.tn),
                ("none", g.none),
            ] {
                assert_eq!(v, w[key].as_f64().unwrap(), "{what} {key}");
            }
            close(
                g.sensitivity,
                &w["sensitivity"],
                &format!("{what} sensitivity"),
            );
            close(
                g.specificity,
                &w["specificity"],
                &format!("{what} specificity"),
            );
            close(g.precision, &w["precision"], &format!("{what} precision"));
            close(g.f1, &w["f1"], &format!("{what} f1"));
            close(
                g.balanced_accuracy,
                &w["balanced_accuracy"],
                &format!("{what} balanced accuracy"),
            );
            close(g.accuracy, &w["accuracy"], &format!("{what} accuracy"));
            close(g.auroc, &w["auroc"], &format!("{what} auroc"));
            // The JSON form has every field of the issue's `results.json` shape.
            let json = serde_json::to_value(g).unwrap();
            assert_eq!(json["fn"], w["fn"], "{what}: counts written as integers");
        }
        check_summary(&got.summary, &want["summary"], &format!("case {n} summary"));
        check_summary(
            &got.summary_14,
            &want["summary_14"],
            &format!("case {n} summary_14"),
        );
    }
}

/// A row that states every finding absent: balanced accuracy exactly 0.5, F1 0 wherever a
/// finding has positives; a prevalence-matched guess: balanced accuracy 0.5, F1 = the
/// prevalence when guessing at the test prevalence.
#[test]
fn constant_and_random_rows() {
    let labels: Vec<Option<Findings>> = (0..20)
        .map(|i| {
            let mut f = Findings::default();
            if i % 4 == 0 {
                f.set(Finding::Edema, LabelStatus::Positive);
            }
            Some(f)
        })
        .collect();
    let absent = scores(&labels, &[Finding::Edema], |_, _| Call::ABSENT, None).unwrap();
    let e = &absent.findings["Edema"];
    assert_eq!(
        (e.tp, e.fp, e.fn_, e.tn, e.none),
        (0.0, 0.0, 5.0, 15.0, 0.0)
    );
    assert_eq!(e.balanced_accuracy, Some(0.5));
    assert_eq!(e.f1, Some(0.0));
    assert_eq!(e.precision, None);
    assert_eq!(e.accuracy, Some(0.75));
    assert_eq!(absent.summary.macro_f1, Some(0.0));
    assert_eq!(absent.summary.auroc, None);
    let guess = scores(&labels, &[Finding::Edema], |_, _| Call::guess(0.25), None).unwrap();
    let g = &guess.findings["Edema"];
    assert_eq!((g.tp, g.fp, g.fn_, g.tn), (1.25, 3.75, 3.75, 11.25));
    assert_eq!(g.balanced_accuracy, Some(0.5));
    assert!((g.f1.unwrap() - 0.25).abs() < 1e-12);
    let json = serde_json::to_value(g).unwrap();
    assert_eq!(json["tp"], 1.25);
}
