//! `apo loss` end to end: cases written as JSON lines, answered through `apo_loss::cases`,
//! checked against the `apo-loss` scalar reference and against closed forms.

use apo_loss::cases::{LossOptions, run};
use apo_loss::{Example, LossConfig, Objective, Sequence, softplus};

#[test]
fn every_objective_round_trips_through_json_lines() {
    let example = Example::new(
        Sequence::new(-20.0, -22.0).with_tokens(10),
        vec![
            Sequence::new(-25.0, -24.0).with_tokens(12),
            Sequence::new(-19.0, -21.5).with_tokens(9),
        ],
    );
    let mut input = String::new();
    for objective in Objective::ALL {
        let case = serde_json::json!({
            "objective": objective.name(),
            "beta": 0.3,
            "chosen": example.chosen,
            "rejected": example.rejected,
        });
        input.push_str(&case.to_string());
        input.push('\n');
    }
    let mut out = Vec::new();
    let summary = run(input.as_bytes(), &mut out, LossOptions { metrics: true }).unwrap();
    let n = Objective::ALL.len();
    assert_eq!((summary.read, summary.answered, summary.failed), (n, n, 0));
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (objective, line) in Objective::ALL.into_iter().zip(&lines) {
        let want = LossConfig::new(objective)
            .with_beta(0.3)
            .init()
            .unwrap()
            .compute(&example)
            .unwrap();
        // JSON numbers round-trip f64 exactly.
        assert_eq!(line["loss"].as_f64().unwrap(), want.loss, "{objective}");
        assert_eq!(line["grad_chosen"].as_f64().unwrap(), want.grad_chosen);
        let g: Vec<f64> = line["grad_rejected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(g, want.grad_rejected);
        assert_eq!(
            line["metrics"]["p_chosen"].as_f64().unwrap(),
            want.metrics.p_chosen
        );
    }
    // Closed form for pairwise-sigmoid: mean of softplus(−x_u), x = s_0 − s_u, s = β(π − ρ).
    let s0 = 0.3 * 2.0;
    let want = 0.5 * (softplus(-(s0 + 0.3)) + softplus(-(s0 - 0.3 * 2.5)));
    assert!((lines[1]["loss"].as_f64().unwrap() - want).abs() < 1e-15);
}
