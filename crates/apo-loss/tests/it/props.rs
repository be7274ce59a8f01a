//! Property tests of the scalar reference (anchors.md §3.2).

use apo_loss::{Example, LossConfig, Objective, Reduction, Sequence, logsumexp, softplus};
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
        // Every objective but `plackett-luce-ranking`, whose list order is its input.
        let mut order: Vec<usize> = (0..ex.rejected.len()).collect();
        // Deterministic shuffle from the seed.
        let mut state = seed | 1;
        for i in (1..order.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            order.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let permuted = Example::new(ex.chosen, order.iter().map(|&u| ex.rejected[u]).collect());
        for config in all_configs(beta) {
            if config.objective == Objective::PlackettLuceRanking {
                continue;
            }
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
            if config.objective == Objective::PlackettLuceRanking {
                continue; // k copies take k positions of the ranking; weight k is one strength
            }
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

    #[test]
    fn ranking_is_at_least_top1(ex in listwise_example(), beta in beta()) {
        let ex = without_rewards(ex);
        let ranking = eval(&LossConfig::new(Objective::PlackettLuceRanking).with_beta(beta), &ex);
        let top1 = eval(&LossConfig::new(Objective::PlackettLuce).with_beta(beta), &ex);
        prop_assert!(ranking.loss >= top1.loss, "{} < {}", ranking.loss, top1.loss);
        prop_assert_eq!(ranking.metrics.p_chosen, top1.metrics.p_chosen);
    }

    #[test]
    fn ranking_with_one_negative_is_top1(ex in moderate_example(), beta in beta(), w in 0.1..3.0f64) {
        let ex = Example::new(ex.chosen, vec![ex.rejected[0]]).with_weights(vec![w]);
        let ranking = eval(&LossConfig::new(Objective::PlackettLuceRanking).with_beta(beta), &ex);
        let top1 = eval(&LossConfig::new(Objective::PlackettLuce).with_beta(beta), &ex);
        prop_assert_eq!(ranking.loss, top1.loss);
        prop_assert_eq!(ranking.grad_chosen, top1.grad_chosen);
        prop_assert_eq!(ranking.grad_rejected, top1.grad_rejected);
    }

    /// The ranking and InfoNCA against their direct definitions (log-softmax over suffixes,
    /// cross-entropy against softmax targets) on moderate scores.
    #[test]
    fn listwise_match_their_definitions(ex in listwise_example(), beta in beta(), alpha in temperature()) {
        let (t, list) = strengths(beta, &ex);
        let ranking = eval(&LossConfig::new(Objective::PlackettLuceRanking).with_beta(beta), &without_rewards(ex.clone()));
        let want: f64 = (0..list.len()).map(|k| logsumexp(&t[k..]) - t[k]).sum();
        prop_assert!(close(ranking.loss, want, 1e-10), "ranking {} vs {want}", ranking.loss);

        let nca = eval(&LossConfig::new(Objective::Infonca).with_beta(beta).with_temperature(alpha), &ex);
        let p: Vec<f64> = match &ex.rewards {
            Some(r) => {
                let z: Vec<f64> = list.iter().map(|&i| r[i] / alpha).collect();
                let lse = logsumexp(&z);
                z.iter().map(|x| (x - lse).exp()).collect()
            }
            None => (0..list.len()).map(|k| if k == 0 { 1.0 } else { 0.0 }).collect(),
        };
        let lse = logsumexp(&t);
        let want: f64 = p.iter().zip(&t).map(|(p, t)| p * (lse - t)).sum();
        prop_assert!(close(nca.loss, want, 1e-10), "infonca {} vs {want}", nca.loss);
        // dL/ds_i = q_i − p_i.
        let beta_grads = grads(&nca);
        for (k, &i) in list.iter().enumerate() {
            let q = (t[k] - lse).exp();
            prop_assert!(close(beta_grads[i], beta * (q - p[k]), 1e-10));
        }
    }

    #[test]
    fn listwise_gradients_sum_to_zero(ex in listwise_example(), beta in beta(), alpha in temperature()) {
        for config in listwise_configs(beta, alpha) {
            let ex = fit_rewards(&config, ex.clone());
            let out = eval(&config, &ex);
            let g = grads(&out);
            let total: f64 = g.iter().sum();
            let scale: f64 = g.iter().map(|x| x.abs()).sum();
            prop_assert!(total.abs() <= 1e-12 * (beta + scale), "{}: {total}", config.objective);
        }
    }

    #[test]
    fn listwise_gradients_match_central_differences(
        ex in listwise_example(), beta in beta(), alpha in temperature(), sft in 0.0..2.0f64,
    ) {
        for config in listwise_configs(beta, alpha) {
            let config = config.with_sft_weight(sft);
            let ex = fit_rewards(&config, ex.clone());
            let out = eval(&config, &ex);
            for (i, &g) in grads(&out).iter().enumerate() {
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
    fn infonca_without_rewards_is_plackett_luce(ex in listwise_example(), beta in beta(), alpha in temperature()) {
        let ex = without_rewards(ex);
        let pl = eval(&LossConfig::new(Objective::PlackettLuce).with_beta(beta), &ex);
        let nca = eval(&LossConfig::new(Objective::Infonca).with_beta(beta).with_temperature(alpha), &ex);
        prop_assert_eq!(&nca, &pl);
        // Rewards so far below the chosen one's that the target is exactly one-hot in f64.
        let mut r = vec![-1e6; ex.rejected.len() + 1];
        r[0] = 0.0;
        let one_hot = eval(&LossConfig::new(Objective::Infonca).with_beta(beta), &ex.with_rewards(r));
        prop_assert_eq!(one_hot, pl);
    }

    #[test]
    fn infonca_ignores_a_reward_offset(ex in listwise_example(), beta in beta(), alpha in temperature(), c in -100.0..100.0f64) {
        let n = ex.rejected.len();
        let r = ex.rewards.clone().unwrap_or_else(|| (0..=n).map(|i| 1.0 - i as f64 / 8.0).collect());
        let config = LossConfig::new(Objective::Infonca).with_beta(beta).with_temperature(alpha);
        let a = eval(&config, &ex.clone().with_rewards(r.clone()));
        let b = eval(&config, &ex.with_rewards(r.iter().map(|x| x + c).collect()));
        // (R_i + c) − (R_0 + c) is R_i − R_0 up to the rounding of the shifted rewards.
        let tol = 1e-12 * (1.0 + c.abs()) / alpha;
        prop_assert!(close(a.loss, b.loss, tol), "{} vs {}", a.loss, b.loss);
        for (x, y) in grads(&a).iter().zip(&grads(&b)) {
            prop_assert!(close(*x, *y, tol));
        }
    }

    #[test]
    fn pairwise_sum_is_n_times_mean(ex in moderate_example(), beta in beta()) {
        let n = ex.rejected.len() as f64;
        for config in all_configs(beta).into_iter().filter(|c| c.objective.is_pairwise()) {
            let mean = eval(&config, &ex);
            let sum = eval(&config.clone().with_reduction(Reduction::Sum), &ex);
            prop_assert!(close(sum.loss, n * mean.loss, 1e-13), "{}", config.objective);
            for (x, y) in grads(&sum).iter().zip(&grads(&mean)) {
                prop_assert!(close(*x, n * y, 1e-13));
            }
        }
    }

    #[test]
    fn zero_weight_is_removal_for_listwise(ex in listwise_example(), beta in beta(), alpha in temperature(), pick in any::<prop::sample::Index>()) {
        let n = ex.rejected.len();
        prop_assume!(n >= 2);
        let u = pick.index(n);
        let mut w = ex.weights.clone().unwrap_or_else(|| vec![1.0; n]);
        w[u] = 0.0;
        prop_assume!(w.iter().any(|&x| x > 0.0));
        let zeroed = Example { weights: Some(w.clone()), ..ex.clone() };
        let mut removed = zeroed.clone();
        removed.rejected.remove(u);
        removed.weights.as_mut().unwrap().remove(u);
        if let Some(r) = removed.rewards.as_mut() {
            r.remove(u + 1);
        }
        for config in listwise_configs(beta, alpha) {
            let a = eval(&config, &fit_rewards(&config, zeroed.clone()));
            let b = eval(&config, &fit_rewards(&config, removed.clone()));
            prop_assert!(close(a.loss, b.loss, 1e-13), "{}: {} vs {}", config.objective, a.loss, b.loss);
            prop_assert_eq!(a.grad_rejected[u], 0.0);
            let mut ga = grads(&a);
            ga.remove(u + 1);
            for (x, y) in ga.iter().zip(&grads(&b)) {
                prop_assert!(close(*x, *y, 1e-13), "{}: {x} vs {y}", config.objective);
            }
        }
    }
}

/// A moderate example with, at random, per-negative weights (some 0, at least one positive)
/// and rewards in `[−1, 2]`.
fn listwise_example() -> impl Strategy<Value = Example> {
    let weight = prop_oneof![1 => Just(0.0), 3 => 0.1..3.0f64];
    (
        moderate_example(),
        prop::collection::vec(weight, 8),
        prop::collection::vec(-1.0..2.0f64, 9),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(mut ex, w, r, weighted, rewarded)| {
            let n = ex.rejected.len();
            if weighted {
                let mut w = w[..n].to_vec();
                if w.iter().all(|&x| x == 0.0) {
                    w[n - 1] = 1.0;
                }
                ex = ex.with_weights(w);
            }
            if rewarded {
                ex = ex.with_rewards(r[..=n].to_vec());
            }
            ex
        })
}

fn temperature() -> impl Strategy<Value = f64> {
    (-1.5..0.5f64).prop_map(|e| 10f64.powf(e))
}

/// The new objectives: the ranking, InfoNCA, and the pairwise ones summed over negatives.
fn listwise_configs(beta: f64, alpha: f64) -> Vec<LossConfig> {
    let mut configs = vec![
        LossConfig::new(Objective::PlackettLuceRanking).with_beta(beta),
        LossConfig::new(Objective::Infonca)
            .with_beta(beta)
            .with_temperature(alpha),
    ];
    for config in all_configs(beta) {
        if config.objective.is_pairwise()
            && config.objective != Objective::Simpo
            && config.objective != Objective::Ipo
        {
            configs.push(config.with_reduction(Reduction::Sum));
        }
    }
    configs
}

fn without_rewards(mut ex: Example) -> Example {
    ex.rewards = None;
    ex
}

/// Rewards only for `infonca` (any other objective rejects them).
fn fit_rewards(config: &LossConfig, ex: Example) -> Example {
    if config.objective == Objective::Infonca {
        ex
    } else {
        without_rewards(ex)
    }
}

/// `[grad_chosen, grad_rejected…]`.
fn grads(out: &apo_loss::LossOutput) -> Vec<f64> {
    std::iter::once(out.grad_chosen)
        .chain(out.grad_rejected.iter().copied())
        .collect()
}

/// The strengths `t_i = s_i + ln w_i` of the active sequences in list order, and their
/// sequence indices (0 = chosen).
fn strengths(beta: f64, ex: &Example) -> (Vec<f64>, Vec<usize>) {
    let s = scores(beta, ex);
    let n = ex.rejected.len();
    let w = ex.weights.clone().unwrap_or_else(|| vec![1.0; n]);
    let list: Vec<usize> = std::iter::once(0)
        .chain((1..=n).filter(|&i| w[i - 1] > 0.0))
        .collect();
    let t = list
        .iter()
        .map(|&i| if i == 0 { s[0] } else { s[i] + w[i - 1].ln() })
        .collect();
    (t, list)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// `preference_weight = w` scales the preference term and its gradient by `w` and leaves
    /// the NLL term alone; `w = 0` is the NLL-only control (no gradient on the negatives).
    #[test]
    fn preference_weight_scales_the_preference_term(
        ex in moderate_example(), beta in beta(), w in 0.0..4.0f64, alpha in 0.1..2.0f64,
    ) {
        for objective in [Objective::PlackettLuce, Objective::PairwiseSigmoid] {
            let base = LossConfig::new(objective).with_beta(beta).with_sft_weight(alpha);
            let one = eval(&base, &ex);
            let weighted = eval(&base.clone().with_preference_weight(w), &ex);
            let nll = alpha * one.metrics.nll_chosen.unwrap();
            let pref = one.metrics.preference_loss;
            prop_assert!(close(weighted.loss, w * pref + nll, 1e-12));
            prop_assert!(close(weighted.metrics.preference_loss, pref, 1e-15));
            let t = ex.chosen.tokens.unwrap() as f64;
            let g0 = (one.grad_chosen + alpha / t) * w - alpha / t;
            prop_assert!(close(weighted.grad_chosen, g0, 1e-10));
            for (a, b) in weighted.grad_rejected.iter().zip(&one.grad_rejected) {
                prop_assert!(close(*a, w * b, 1e-12));
            }
            if w == 0.0 {
                prop_assert!(weighted.grad_rejected.iter().all(|g| *g == 0.0));
            }
        }
    }
}

/// A preference weight that is negative, not finite, or 0 without an SFT term is an error.
#[test]
fn preference_weight_is_validated() {
    let cfg = LossConfig::default();
    for w in [-1.0, f64::NAN, f64::INFINITY, 0.0] {
        assert!(cfg.clone().with_preference_weight(w).init().is_err(), "{w}");
    }
    assert!(
        cfg.with_sft_weight(1.0)
            .with_preference_weight(0.0)
            .init()
            .is_ok()
    );
}
