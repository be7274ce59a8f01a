//! Closed-form golden values. Each case cites where its numbers come from.

use apo_loss::{Example, LossConfig, LossError, Objective, Reduction, Sequence, softplus};

use crate::{close, eval, example};

/// torchtune `tests/torchtune/rlhf/loss/test_dpo_loss.py` (`loss_inputs`): policy chosen
/// [-0.5, -10, -1], policy rejected [-0.1, -30, -21], reference chosen [-0.5, -10.1, -0.1],
/// reference rejected [-0.1, -20.1, -0.1], β = 0.1 ⇒ β·logits = [0, 1, 2] and
/// DPO losses `−logsigmoid([0, 1, 2])`, RSO (hinge) losses `relu(1 − [0, 1, 2]) = [1, 0, 0]`.
const TT_POLICY_CHOSEN: [f64; 3] = [-0.5, -10.0, -1.0];
const TT_POLICY_REJECTED: [f64; 3] = [-0.1, -30.0, -21.0];
const TT_REF_CHOSEN: [f64; 3] = [-0.5, -10.1, -0.1];
const TT_REF_REJECTED: [f64; 3] = [-0.1, -20.1, -0.1];

fn torchtune_case(i: usize) -> Example {
    example(
        (TT_POLICY_CHOSEN[i], TT_REF_CHOSEN[i]),
        &[(TT_POLICY_REJECTED[i], TT_REF_REJECTED[i])],
        1,
    )
}

#[test]
fn torchtune_dpo_goldens() {
    let scaled = [0.0, 1.0, 2.0];
    for (i, z) in scaled.into_iter().enumerate() {
        let want = softplus(-z);
        for objective in [Objective::PairwiseSigmoid, Objective::PlackettLuce] {
            let out = eval(&LossConfig::new(objective), &torchtune_case(i));
            assert!(
                close(out.loss, want, 1e-12),
                "{objective} case {i}: {} vs {want}",
                out.loss
            );
        }
    }
}

#[test]
fn torchtune_rso_hinge_goldens() {
    for (i, want) in [1.0, 0.0, 0.0].into_iter().enumerate() {
        let out = eval(&LossConfig::new(Objective::Hinge), &torchtune_case(i));
        assert!(close(out.loss, want, 1e-12), "case {i}: {}", out.loss);
    }
}

/// torchtune `test_simpo_loss`: average log-probs chosen [-0.5, -10, -1], rejected
/// [-0.1, -30, -21], β = 2, γ = 0.5 ⇒ scaled logits [-1.3, 39.5, 39.5] and losses
/// `−log(1 / (1 + exp([1.3, −39.5, −39.5])))`.
#[test]
fn torchtune_simpo_goldens() {
    let config = LossConfig::new(Objective::Simpo)
        .with_beta(2.0)
        .with_gamma(0.5);
    for (i, z) in [-1.3, 39.5, 39.5].into_iter().enumerate() {
        let ex = Example::new(
            Sequence::reference_free(TT_POLICY_CHOSEN[i]).with_tokens(1),
            vec![Sequence::reference_free(TT_POLICY_REJECTED[i]).with_tokens(1)],
        );
        let out = eval(&config, &ex);
        assert!(
            close(out.loss, softplus(-z), 1e-12),
            "case {i}: {}",
            out.loss
        );
    }
}

/// Hand-derived IPO value (Azar et al. 2023, Eq. 17, TRL `ipo`: per-token log-ratios):
/// chosen log-ratio (−4 − −6)/4 = 0.5, rejected (−9 − −8)/2 = −0.5, h = 1, τ = β = 0.25
/// ⇒ (1 − 1/(2·0.25))² = (1 − 2)² = 1; dL/dπ_chosen = 2(h − 2)/4 = −0.5.
#[test]
fn ipo_hand_derived() {
    let ex = Example::new(
        Sequence::new(-4.0, -6.0).with_tokens(4),
        vec![Sequence::new(-9.0, -8.0).with_tokens(2)],
    );
    let out = eval(&LossConfig::new(Objective::Ipo).with_beta(0.25), &ex);
    assert!(close(out.loss, 1.0, 1e-15));
    assert!(close(out.grad_chosen, -0.5, 1e-15));
    assert!(close(out.grad_rejected[0], 1.0, 1e-15));
}

/// Robust DPO (Chowdhury et al. 2024; TRL `robust`): with x = β·logits = 1 and ε = 0.2,
/// L = [(0.8·softplus(−1) − 0.2·softplus(1)] / 0.6.
#[test]
fn robust_hand_derived() {
    let ex = torchtune_case(1); // β·logits = 1 at β = 0.1
    let out = eval(
        &LossConfig::new(Objective::Robust).with_label_smoothing(0.2),
        &ex,
    );
    let want = (0.8 * softplus(-1.0) - 0.2 * softplus(1.0)) / 0.6;
    assert!(close(out.loss, want, 1e-14));
}

/// cDPO (Mitchell 2023; TRL ≤ 0.28 and ms-swift `sigmoid` with label smoothing):
/// L = 0.9·softplus(−x) + 0.1·softplus(x) at x = 2.
#[test]
fn cdpo_hand_derived() {
    let ex = torchtune_case(2);
    let out = eval(
        &LossConfig::new(Objective::PairwiseSigmoid).with_label_smoothing(0.1),
        &ex,
    );
    assert!(close(
        out.loss,
        0.9 * softplus(-2.0) + 0.1 * softplus(2.0),
        1e-14
    ));
}

/// TRL invariant: at step 0 (policy = reference) DPO's loss is ln 2; APO's is ln(N + 1)
/// with N = 7 teachers, gradient β(1/8 − 1) on the chosen and β/8 on each negative.
#[test]
fn step_zero_invariant() {
    let ex = example((-31.0, -31.0), &[(-50.0, -50.0); 7], 10);
    let out = eval(&LossConfig::default(), &ex);
    assert!(close(out.loss, 8f64.ln(), 1e-15));
    assert!(close(out.grad_chosen, 0.1 * (1.0 / 8.0 - 1.0), 1e-15));
    for g in &out.grad_rejected {
        assert!(close(*g, 0.1 / 8.0, 1e-15));
    }
    assert!(close(out.metrics.p_chosen, 1.0 / 8.0, 1e-15));
    assert_eq!(out.metrics.top1_accuracy, 0.0); // ties count as wrong
}

/// Metrics on a hand-checked case: scores s = β·(π − ρ) = [0.3, 0.1, 0.5, −0.2].
#[test]
fn metrics_hand_checked() {
    let ex = example(
        (-7.0, -10.0),
        &[(-9.0, -10.0), (-5.0, -10.0), (-12.0, -10.0)],
        3,
    );
    let out = eval(&LossConfig::default(), &ex);
    let m = &out.metrics;
    assert!(close(m.reward_chosen, 0.3, 1e-14));
    assert!(close(
        m.reward_rejected_mean,
        (0.1 + 0.5 - 0.2) / 3.0,
        1e-14
    ));
    assert!(close(m.margin_mean, 0.3 - 0.4 / 3.0, 1e-14));
    assert!(close(m.margin_max, -0.2, 1e-14));
    assert_eq!(m.top1_accuracy, 0.0);
    assert!(close(m.pairwise_accuracy, 2.0 / 3.0, 1e-15));
    let z: f64 = [0.3f64, 0.1, 0.5, -0.2].iter().map(|s| s.exp()).sum();
    assert!(close(m.p_chosen, 0.3f64.exp() / z, 1e-14));
    assert!(close(out.loss, -(0.3f64.exp() / z).ln(), 1e-14));
    assert!(close(m.nll_chosen.unwrap(), 7.0 / 3.0, 1e-15));
}

/// The SFT term adds α·(−π_chosen / tokens) and −α / tokens to the chosen gradient.
#[test]
fn sft_term() {
    let ex = example((-12.0, -12.0), &[(-20.0, -20.0)], 6);
    let base = eval(&LossConfig::default(), &ex);
    let rpo = eval(&LossConfig::default().with_sft_weight(0.5), &ex);
    assert!(close(rpo.loss - base.loss, 0.5 * 2.0, 1e-14));
    assert!(close(rpo.grad_chosen - base.grad_chosen, -0.5 / 6.0, 1e-14));
    assert_eq!(rpo.grad_rejected, base.grad_rejected);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let apo = LossConfig::default().init().unwrap();
    let chosen = Sequence::new(-1.0, -1.0);
    let err = |ex: &Example| apo.compute(ex).unwrap_err();

    assert_eq!(
        err(&Example::new(chosen, vec![])),
        LossError::NoNegatives { row: None }
    );
    let two = Example::new(chosen, vec![chosen, chosen]);
    assert!(matches!(
        err(&two.clone().with_weights(vec![1.0])),
        LossError::LengthMismatch {
            expected: 2,
            got: 1,
            ..
        }
    ));
    assert!(matches!(
        err(&two.clone().with_weights(vec![1.0, -1.0])),
        LossError::InvalidWeight { index: 1, .. }
    ));
    assert_eq!(
        err(&two.clone().with_weights(vec![0.0, 0.0])),
        LossError::NoActiveNegatives { row: None }
    );
    let nan = Example::new(chosen, vec![Sequence::new(f64::NAN, 0.0)]);
    match err(&nan) {
        LossError::NonFinite { what, .. } => assert_eq!(what, "rejected[0].policy"),
        e => panic!("unexpected {e}"),
    }
    let inf = Example::new(Sequence::new(0.0, f64::NEG_INFINITY), vec![chosen]);
    assert!(matches!(err(&inf), LossError::NonFinite { .. }));
    let no_ref = Example::new(chosen, vec![Sequence::reference_free(-2.0)]);
    assert!(matches!(err(&no_ref), LossError::MissingReference { .. }));

    let ipo = LossConfig::new(Objective::Ipo).init().unwrap();
    assert!(matches!(
        ipo.compute(&two),
        Err(LossError::MissingTokens { .. })
    ));
    let zero = Example::new(chosen.with_tokens(0), vec![chosen.with_tokens(3)]);
    assert!(matches!(
        ipo.compute(&zero),
        Err(LossError::ZeroTokens { .. })
    ));
    let rpo = LossConfig::default().with_sft_weight(1.0).init().unwrap();
    assert!(matches!(
        rpo.compute(&two),
        Err(LossError::MissingTokens { .. })
    ));
    // Messages name the offending sequence.
    assert_eq!(
        err(&no_ref).to_string(),
        "rejected[0] has no reference log-prob, which objective `plackett-luce` needs"
    );
}

/// Zero-weight negatives are excluded from the loss and from the metrics.
#[test]
fn zero_weight_is_removal() {
    let ex = example((-3.0, -4.0), &[(-6.0, -5.0), (-1.0, -9.0)], 2);
    let drop_second = example((-3.0, -4.0), &[(-6.0, -5.0)], 2);
    for config in crate::all_configs(0.3) {
        let weighted = eval(&config, &ex.clone().with_weights(vec![1.0, 0.0]));
        let removed = eval(&config, &drop_second);
        assert!(
            close(weighted.loss, removed.loss, 1e-14),
            "{}",
            config.objective
        );
        assert!(close(weighted.grad_chosen, removed.grad_chosen, 1e-14));
        assert_eq!(weighted.grad_rejected[1], 0.0);
        assert_eq!(
            weighted.metrics.top1_accuracy,
            removed.metrics.top1_accuracy
        );
        assert!(close(
            weighted.metrics.margin_max,
            removed.metrics.margin_max,
            1e-14
        ));
    }
}

/// At step 0 every score is 0, so each position of the ranking chooses uniformly among the
/// sequences left: `L = Σ_{k=0}^{N−1} ln(N + 1 − k) = ln((N + 1)!)`, and
/// `dL/ds_i = Σ_{k ≤ i} 1/(N + 1 − k) − 1` (every position `k ≤ i` gives sequence `i` the
/// probability `1/(N + 1 − k)`; the last sequence's sum includes its own certain choice).
#[test]
fn ranking_step_zero_is_ln_factorial() {
    let ex = example((-31.0, -31.0), &[(-50.0, -50.0); 7], 10);
    let out = eval(&LossConfig::new(Objective::PlackettLuceRanking), &ex);
    let ln_factorial: f64 = (1..=8).map(|k| f64::from(k).ln()).sum();
    assert!(close(out.loss, ln_factorial, 1e-15), "{}", out.loss);
    assert!(close(out.loss, 40320f64.ln(), 1e-15));
    let grads: Vec<f64> = std::iter::once(out.grad_chosen)
        .chain(out.grad_rejected.iter().copied())
        .collect();
    for (i, g) in grads.iter().enumerate() {
        let want: f64 = (0..=i).map(|k| 1.0 / (8 - k) as f64).sum::<f64>() - 1.0;
        assert!(
            close(*g, 0.1 * want, 1e-15),
            "seq {i}: {g} vs {}",
            0.1 * want
        );
    }
    assert!(close(grads[0], 0.1 * (1.0 / 8.0 - 1.0), 1e-15));
    // The top-1 probability is the first position's.
    assert!(close(out.metrics.p_chosen, 1.0 / 8.0, 1e-15));
}

/// A hand-computed ranking: strengths t = [0.3, 0.1 + ln 2, 0.5] (β = 0.1, weights [2, 1]).
#[test]
fn ranking_hand_checked() {
    let ex =
        example((-7.0, -10.0), &[(-9.0, -10.0), (-5.0, -10.0)], 3).with_weights(vec![2.0, 1.0]);
    let out = eval(&LossConfig::new(Objective::PlackettLuceRanking), &ex);
    let e = |x: f64| x.exp();
    let (t0, t1, t2) = (0.3, 0.1 + 2f64.ln(), 0.5);
    let want = -(e(t0) / (e(t0) + e(t1) + e(t2))).ln() - (e(t1) / (e(t1) + e(t2))).ln();
    assert!(close(out.loss, want, 1e-14), "{} vs {want}", out.loss);
    // Reversing the negatives changes the second position's term only.
    let rev =
        example((-7.0, -10.0), &[(-5.0, -10.0), (-9.0, -10.0)], 3).with_weights(vec![1.0, 2.0]);
    let back = eval(&LossConfig::new(Objective::PlackettLuceRanking), &rev);
    let want = -(e(t0) / (e(t0) + e(t1) + e(t2))).ln() - (e(t2) / (e(t1) + e(t2))).ln();
    assert!(close(back.loss, want, 1e-14));
}

/// InfoNCA at step 0: the model is uniform, so `L = ln(N + 1)` whatever the targets, and
/// `dL/ds_i = 1/(N + 1) − p_i` with `p = softmax(R / α)`.
#[test]
fn infonca_step_zero() {
    let rewards = vec![1.0, 0.9, 0.5, 0.2];
    let ex = example((-20.0, -20.0), &[(-30.0, -30.0); 3], 5).with_rewards(rewards.clone());
    let config = LossConfig::new(Objective::Infonca).with_temperature(0.25);
    let out = eval(&config, &ex);
    assert!(close(out.loss, 4f64.ln(), 1e-15), "{}", out.loss);
    let z: f64 = rewards.iter().map(|r| (r / 0.25).exp()).sum();
    let grads = std::iter::once(out.grad_chosen).chain(out.grad_rejected.iter().copied());
    for (g, r) in grads.zip(&rewards) {
        let p = (r / 0.25).exp() / z;
        assert!(
            close(g, 0.1 * (0.25 - p), 1e-15),
            "{g} vs {}",
            0.1 * (0.25 - p)
        );
    }
}

/// A hand-computed InfoNCA loss: scores s = [0.3, 0.1, 0.5], rewards [1, 0.5, 0] at α = 0.5,
/// so p ∝ [e², e, 1] and L = −Σ p_i ln softmax(s)_i.
#[test]
fn infonca_hand_checked() {
    let ex = example((-7.0, -10.0), &[(-9.0, -10.0), (-5.0, -10.0)], 3)
        .with_rewards(vec![1.0, 0.5, 0.0]);
    let config = LossConfig::new(Objective::Infonca).with_temperature(0.5);
    let out = eval(&config, &ex);
    let s = [0.3f64, 0.1, 0.5];
    let zq: f64 = s.iter().map(|x| x.exp()).sum();
    let pz = [2f64.exp(), 1f64.exp(), 1.0];
    let zp: f64 = pz.iter().sum();
    let want: f64 = (0..3).map(|i| -(pz[i] / zp) * (s[i].exp() / zq).ln()).sum();
    assert!(close(out.loss, want, 1e-14), "{} vs {want}", out.loss);
    // Without rewards, InfoNCA is the top-1 Plackett-Luce loss exactly.
    let plain = example((-7.0, -10.0), &[(-9.0, -10.0), (-5.0, -10.0)], 3);
    assert_eq!(eval(&config, &plain), eval(&LossConfig::default(), &plain));
}

/// Pairwise-sum with weights: `Σ_u w_u ℓ_u` (torchtune's DPO cases summed with weights 1, 2).
#[test]
fn pairwise_sum_hand_checked() {
    let ex =
        example((-10.0, -10.1), &[(-30.0, -20.1), (-21.0, -0.1)], 1).with_weights(vec![1.0, 2.0]);
    // β·(π − ρ) differences: x_1 = 0.01 + 0.99 = 1, x_2 = 0.01 + 2.09 = 2.1.
    let config = LossConfig::new(Objective::PairwiseSigmoid).with_reduction(Reduction::Sum);
    let out = eval(&config, &ex);
    let want = softplus(-1.0) + 2.0 * softplus(-2.1);
    assert!(close(out.loss, want, 1e-13), "{} vs {want}", out.loss);
    let mean = eval(&LossConfig::new(Objective::PairwiseSigmoid), &ex);
    assert!(close(out.loss, 3.0 * mean.loss, 1e-14));
}

#[test]
fn reward_errors_are_typed() {
    let nca = LossConfig::new(Objective::Infonca).init().unwrap();
    let ex = example((-1.0, -1.0), &[(-2.0, -2.0), (-3.0, -3.0)], 2);
    assert_eq!(
        nca.compute(&ex.clone().with_rewards(vec![1.0, 0.0]))
            .unwrap_err(),
        LossError::LengthMismatch {
            what: "rewards".to_owned(),
            expected: 3,
            got: 2
        }
    );
    let err = nca
        .compute(&ex.clone().with_rewards(vec![1.0, 0.0, f64::INFINITY]))
        .unwrap_err();
    assert_eq!(err.to_string(), "rewards[2] must be finite, got inf");
    for objective in Objective::ALL
        .into_iter()
        .filter(|&o| o != Objective::Infonca)
    {
        let err = LossConfig::new(objective)
            .init()
            .unwrap()
            .compute(&ex.clone().with_rewards(vec![1.0, 0.0, 0.0]))
            .unwrap_err();
        assert_eq!(
            err,
            LossError::UnsupportedOption {
                objective: objective.name(),
                option: "rewards"
            }
        );
    }
}
