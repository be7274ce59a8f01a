//! Property tests of the scalar reference (anchors.md §3.2).

use apo_loss::{Example, LossConfig, Objective, Sequence, logsumexp, softplus};
use proptest::prelude::*;

use crate::{all_configs, close, eval};

/// Moderate log-probs: a chosen sequence and 1..=7 negatives, with token counts.
fn moderate_example() -> impl Strategy<Value = Example> {
    let seq = (-300.0..0.0f64, -300.0..0.0f64, 1u64..200)
        .prop_map(|(p, r, t)| Sequence::new(p, r).with_tokens(t));
    (seq.clone(), prop::collection::vec(seq, 1..=7)).prop_map(|(c, r)| Example::new(c, r))
}

fn beta() -> impl Strategy<Value = f64> {
    (-2.0..0.5f64).prop_map(|e| 10f64.powf(e))
}

/// Scores `s_i = β(π_i − ρ_i)` (sum aggregation).
fn scores(beta: f64, ex: &Example) -> Vec<f64> {
    std::iter::once(&ex.chosen)
        .chain(&ex.rejected)
        .map(|s| beta * (s.policy - s.reference.unwrap()))
        .collect()
}

fn with_policy(ex: &Example, i: usize, delta: f64) -> Example {
    let mut ex = ex.clone();
    if i == 0 {
        ex.chosen.policy += delta;
    } else {
        ex.rejected[i - 1].policy += delta;
    }
    ex
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn pl_with_one_negative_is_dpo(ex in moderate_example(), beta in beta()) {
        let ex = Example::new(ex.chosen, vec![ex.rejected[0]]);
        let pl = eval(&LossConfig::new(Objective::PlackettLuce).with_beta(beta), &ex);
        let dpo = eval(&LossConfig::new(Objective::PairwiseSigmoid).with_beta(beta), &ex);
        prop_assert!(close(pl.loss, dpo.loss, 1e-13));
        prop_assert!(close(pl.grad_chosen, dpo.grad_chosen, 1e-13));
        prop_assert!(close(pl.grad_rejected[0], dpo.grad_rejected[0], 1e-13));
        // Symmetry: L(s0, s1) − L(s1, s0) = −(s0 − s1).
        let s = scores(beta, &ex);
        let swapped = Example::new(ex.rejected[0], vec![ex.chosen]);
        let back = eval(&LossConfig::new(Objective::PlackettLuce).with_beta(beta), &swapped);
        prop_assert!(close(pl.loss - back.loss, -(s[0] - s[1]), 1e-10));
    }

    #[test]
    fn equal_scores_give_ln_n_plus_one(
        n in 1usize..=16, base in -1e4..0.0f64, offset in -50.0..50.0f64, beta in beta(),
    ) {
        // Every sequence has the same log-ratio `offset`, so every score is β·offset.
        let seq = Sequence::new(base + offset, base);
        let ex = Example::new(seq, vec![Sequence::new(base * 0.5 + offset, base * 0.5); n]);
        let out = eval(&LossConfig::new(Objective::PlackettLuce).with_beta(beta), &ex);
        prop_assert!(close(out.loss, ((n + 1) as f64).ln(), 1e-12), "{}", out.loss);
    }

    #[test]
    fn shift_invariance(ex in moderate_example(), beta in beta(), c in -1e3..1e3f64) {
        let config = LossConfig::new(Objective::PlackettLuce).with_beta(beta);
        let shifted = {
            let mut e = ex.clone();
            e.chosen.policy += c;
            for r in &mut e.rejected { r.policy += c; }
            e
        };
        let a = eval(&config, &ex);
        let b = eval(&config, &shifted);
        // Shifting every log-ratio by c shifts every score by βc; the tolerance covers the
        // rounding of the shifted inputs (|c| ≤ 1e3 against scores of order β·300).
        prop_assert!(close(a.loss, b.loss, 1e-9), "{} vs {}", a.loss, b.loss);
    }

    #[test]
    fn permutation_invariance(ex in moderate_example(), beta in beta(), seed in any::<u64>()) {
        let mut order: Vec<usize> = (0..ex.rejected.len()).collect();
        // Deterministic shuffle from the seed.
        let mut state = seed | 1;
        for i in (1..order.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            order.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let permuted = Example::new(ex.chosen, order.iter().map(|&u| ex.rejected[u]).collect());
        for config in all_configs(beta) {
            let a = eval(&config, &ex);
            let b = eval(&config, &permuted);
            prop_assert!(close(a.loss, b.loss, 1e-12), "{}", config.objective);
            prop_assert!(close(a.grad_chosen, b.grad_chosen, 1e-12));
            for (k, &u) in order.iter().enumerate() {
                prop_assert!(close(a.grad_rejected[u], b.grad_rejected[k], 1e-12));
            }
        }
    }

    #[test]
    fn duplicating_a_negative_is_weight_k(ex in moderate_example(), beta in beta(), k in 2usize..5) {
        let n = ex.rejected.len();
        let mut dup = ex.clone();
        for _ in 1..k { dup.rejected.push(ex.rejected[0]); }
        let mut w = vec![1.0; n];
        w[0] = k as f64;
        let weighted = ex.clone().with_weights(w);
        for config in all_configs(beta) {
            let a = eval(&config, &dup);
            let b = eval(&config, &weighted);
            prop_assert!(close(a.loss, b.loss, 1e-12), "{}: {} vs {}", config.objective, a.loss, b.loss);
            prop_assert!(close(a.grad_chosen, b.grad_chosen, 1e-12));
            // The weighted negative's gradient is the sum over its copies.
            let copies: f64 = std::iter::once(a.grad_rejected[0])
                .chain(a.grad_rejected[n..].iter().copied())
                .sum();
            prop_assert!(close(copies, b.grad_rejected[0], 1e-12));
        }
        // In Plackett-Luce, weight k is the same as adding ln k to that negative's score.
        let shifted = {
            let mut e = ex.clone();
            e.rejected[0].policy += (k as f64).ln() / beta;
            e
        };
        let pl = LossConfig::new(Objective::PlackettLuce).with_beta(beta);
        prop_assert!(close(eval(&pl, &dup).loss, eval(&pl, &shifted).loss, 1e-10));
    }

    #[test]
    fn adding_a_negative_never_lowers_pl(ex in moderate_example(), beta in beta(), p in -300.0..0.0f64, r in -300.0..0.0f64) {
        let config = LossConfig::new(Objective::PlackettLuce).with_beta(beta);
        let mut more = ex.clone();
        more.rejected.push(Sequence::new(p, r).with_tokens(1));
        prop_assert!(eval(&config, &more).loss >= eval(&config, &ex).loss);
    }

    #[test]
    fn pl_sandwich_bounds(ex in moderate_example(), beta in beta()) {
        let s = scores(beta, &ex);
        let d: Vec<f64> = s[1..].iter().map(|su| su - s[0]).collect();
        let n = d.len() as f64;
        let pl = eval(&LossConfig::new(Objective::PlackettLuce).with_beta(beta), &ex).loss;
        let sp: Vec<f64> = d.iter().map(|&x| softplus(x)).collect();
        let mean = sp.iter().sum::<f64>() / n;
        let max = sp.iter().copied().fold(0.0, f64::max);
        let sum: f64 = sp.iter().sum();
        let tol = 1e-12 * (1.0 + sum);
        prop_assert!(mean <= max + tol && max <= pl + tol && pl <= sum + tol,
            "mean {mean} max {max} pl {pl} sum {sum}");
        let dmax = d.iter().copied().fold(f64::NEG_INFINITY, f64::max).max(0.0);
        prop_assert!(dmax <= pl + tol && pl <= (n + 1.0).ln() + dmax + tol);
        prop_assert!(pl > 0.0 || dmax == 0.0 && pl >= 0.0);
        // Identity with the S-DPO form −ln σ(−ln Σ_u e^{d_u}).
        prop_assert!(close(pl, softplus(logsumexp(&d)), 1e-12));
    }

    #[test]
    fn gradients_match_central_differences(ex in moderate_example(), beta in beta(), alpha in 0.0..2.0f64) {
        for config in all_configs(beta) {
            let config = config.with_sft_weight(alpha);
            let out = eval(&config, &ex);
            let grads: Vec<f64> = std::iter::once(out.grad_chosen).chain(out.grad_rejected.iter().copied()).collect();
            for (i, &g) in grads.iter().enumerate() {
                let h = 1e-4;
                let up = eval(&config, &with_policy(&ex, i, h));
                let down = eval(&config, &with_policy(&ex, i, -h));
                if config.objective == Objective::Hinge && (up.grad_chosen != down.grad_chosen) {
                    continue; // ±h crosses a kink of max(0, 1 − x)
                }
                let fd = (up.loss - down.loss) / (2.0 * h);
                prop_assert!((fd - g).abs() <= 1e-6 * (1.0 + g.abs()) + 1e-9 * out.loss.abs(),
                    "{} seq {i}: analytic {g} vs fd {fd}", config.objective);
            }
        }
    }

    #[test]
    fn preference_gradients_sum_to_zero(ex in moderate_example(), beta in beta()) {
        for config in all_configs(beta) {
            if config.objective == Objective::Simpo || config.objective == Objective::Ipo {
                continue; // length-normalised: dL/dπ_i = (β/|y_i|)·dL/ds_i, checked below
            }
            let out = eval(&config, &ex);
            let total: f64 = out.grad_chosen + out.grad_rejected.iter().sum::<f64>();
            prop_assert!(total.abs() <= 1e-12 * beta * (1.0 + out.grad_chosen.abs()), "{}: {total}", config.objective);
        }
        for objective in [Objective::Simpo, Objective::Ipo] {
            let config = LossConfig::new(objective).with_beta(beta);
            let out = eval(&config, &ex);
            let len = |s: &Sequence| s.tokens.unwrap() as f64;
            let total: f64 = out.grad_chosen * len(&ex.chosen)
                + out.grad_rejected.iter().zip(&ex.rejected).map(|(g, s)| g * len(s)).sum::<f64>();
            prop_assert!(total.abs() <= 1e-10 * (1.0 + out.grad_chosen.abs() * len(&ex.chosen)));
        }
    }

    #[test]
    fn extreme_inputs_stay_finite(
        chosen in (-1e5..1e5f64, -1e5..1e5f64),
        rejected in prop::collection::vec((-1e5..1e5f64, -1e5..1e5f64), 1..=8),
        beta_exp in -3.0..2.0f64,
    ) {
        let beta = 10f64.powf(beta_exp);
        let seq = |(p, r): (f64, f64)| Sequence::new(p, r).with_tokens(7);
        let ex = Example::new(seq(chosen), rejected.into_iter().map(seq).collect());
        for config in all_configs(beta) {
            let out = eval(&config, &ex.clone());
            prop_assert!(out.loss.is_finite() && out.loss >= -1e-12 * (1.0 + out.loss.abs()) || config.objective == Objective::Robust,
                "{}: {}", config.objective, out.loss);
            prop_assert!(out.loss.is_finite());
            prop_assert!(out.grad_chosen.is_finite());
            prop_assert!(out.grad_rejected.iter().all(|g| g.is_finite()));
            prop_assert!(out.metrics.p_chosen.is_finite());
        }
    }
}
