//! `apo loss` against an independent reference: 560 random cases (all objectives, N = 1..8,
//! β from 1e-3 to 1e2, log-probs down to −1e5, weights with zeros, label smoothing, SFT term,
//! both aggregations; from case 360 on, the listwise objectives with and without InfoNCA
//! rewards and temperatures, and the pairwise objectives summed over negatives) whose losses
//! and gradients were computed with mpmath at 80 digits, the gradients by numerical
//! differentiation (`fixtures/make_mp_reference.py`).

use apo_loss::cases::{LossOptions, run};

const CASES: &str = include_str!("../../fixtures/loss_cases.jsonl");
const EXPECTED: &str = include_str!("../../fixtures/loss_expected.jsonl");

/// Relative error of `got` against `want`. Values that are both below `floor` count as equal:
/// the reference's numerical derivatives resolve about 200 digits below the loss, and float64
/// underflows near 1e-308.
fn rel(got: f64, want: f64, floor: f64) -> f64 {
    if got.abs() < floor && want.abs() < floor {
        return 0.0;
    }
    (got - want).abs() / want.abs()
}

#[test]
fn matches_mpmath_reference_to_1e_9_relative() {
    let mut out = Vec::new();
    let summary = run(CASES.as_bytes(), &mut out, LossOptions::default()).unwrap();
    assert_eq!((summary.read, summary.failed), (560, 0));
    let got: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let want: Vec<serde_json::Value> = EXPECTED
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), want.len());
    let mut worst = (0.0f64, String::new());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g["id"], w["id"]);
        let mut pairs = vec![
            (
                "loss",
                g["loss"].as_f64().unwrap(),
                w["loss"].as_f64().unwrap(),
            ),
            (
                "grad_chosen",
                g["grad_chosen"].as_f64().unwrap(),
                w["grad_chosen"].as_f64().unwrap(),
            ),
        ];
        let gr = g["grad_rejected"].as_array().unwrap();
        let wr = w["grad_rejected"].as_array().unwrap();
        assert_eq!(gr.len(), wr.len());
        for (a, b) in gr.iter().zip(wr) {
            pairs.push(("grad_rejected", a.as_f64().unwrap(), b.as_f64().unwrap()));
        }
        let floor = 1e-150 * (1.0 + w["loss"].as_f64().unwrap().abs());
        for (what, a, b) in pairs {
            let e = rel(a, b, floor);
            if e > worst.0 {
                worst = (e, format!("case {} {what}: got {a:e}, want {b:e}", w["id"]));
            }
        }
    }
    eprintln!("worst relative error {:.3e} ({})", worst.0, worst.1);
    assert!(
        worst.0 <= 1e-9,
        "worst relative error {:.3e} at {}",
        worst.0,
        worst.1
    );
}
