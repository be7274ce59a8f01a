//! The Burn tensor implementation against the scalar reference (NdArray, f32).

use apo_loss::tensor::PreferenceBatch;
#[cfg(feature = "ndarray")]
use apo_loss::tensor::{LossKernels, sequence_logprobs, token_logprobs, token_logprobs_composite};
use apo_loss::{Example, LossConfig, LossError, Objective, Reduction, Sequence};
use burn::backend::{Autodiff, NdArray};
#[cfg(feature = "ndarray")]
use burn::tensor::Int;
use burn::tensor::{Bool, Tensor, TensorData};
use proptest::prelude::*;

use crate::{all_configs, eval};

type TB = NdArray;
type AB = Autodiff<NdArray>;

/// burn's autodiff graphs are process-wide: tests that run a backward pass take this lock so
/// that two of them never record or free graph nodes at the same time (a rare `grad()` of
/// `None` was seen when they did).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A batch of examples with the same number of negatives, as `[B, 1 + N]` tensors with a
/// mask for the negatives beyond each row's own count (rows are padded with copies).
fn to_batch(
    examples: &[Example],
    device: &burn::backend::ndarray::NdArrayDevice,
) -> (PreferenceBatch<AB>, Tensor<AB, 2>) {
    let n = examples.iter().map(|e| e.rejected.len()).max().unwrap();
    let b = examples.len();
    let (mut pol, mut refs, mut toks, mut mask, mut w) = (vec![], vec![], vec![], vec![], vec![]);
    for ex in examples {
        let seqs: Vec<Sequence> = std::iter::once(ex.chosen)
            .chain((0..n).map(|u| *ex.rejected.get(u).unwrap_or(&ex.rejected[0])))
            .collect();
        for s in &seqs {
            pol.push(s.policy as f32);
            refs.push(s.reference.unwrap() as f32);
            toks.push(s.tokens.unwrap() as f32);
        }
        for u in 0..n {
            mask.push(u < ex.rejected.len());
            w.push(
                ex.weights
                    .as_ref()
                    .map_or(1.0, |w| w.get(u).copied().unwrap_or(1.0)) as f32,
            );
        }
    }
    let policy =
        Tensor::<AB, 2>::from_data(TensorData::new(pol, [b, n + 1]), device).require_grad();
    // Rewards when every example has them (padding columns repeat the first negative's).
    let rewards = examples.iter().all(|e| e.rewards.is_some()).then(|| {
        let r: Vec<f32> = examples
            .iter()
            .flat_map(|e| {
                let r = e.rewards.as_ref().expect("rewards");
                (0..=n).map(move |i| *r.get(i).unwrap_or(&r[1]) as f32)
            })
            .collect();
        Tensor::<AB, 2>::from_data(TensorData::new(r, [b, n + 1]), device)
    });
    let batch = PreferenceBatch::new(
        policy.clone(),
        Tensor::from_data(TensorData::new(refs, [b, n + 1]), device),
    )
    .with_tokens(Tensor::from_data(TensorData::new(toks, [b, n + 1]), device))
    .with_mask(Tensor::<AB, 2, Bool>::from_data(
        TensorData::new(mask, [b, n]),
        device,
    ))
    .with_weights(Tensor::from_data(TensorData::new(w, [b, n]), device));
    let batch = match rewards {
        Some(r) => batch.with_rewards(r),
        None => batch,
    };
    (batch, policy)
}

/// The tensor loss of every row and its autodiff gradient against the scalar reference,
/// within f32 tolerance.
fn check_parity(config: &LossConfig, examples: &[Example]) -> Result<(), TestCaseError> {
    let _serial = serial();
    let device = Default::default();
    let loss = config.init().unwrap();
    let (batch, policy) = to_batch(examples, &device);
    let out = loss.forward_with_metrics(&batch).unwrap();
    let per: Vec<f32> = out.per_example.clone().into_data().to_vec().unwrap();
    let grads = out.loss.backward();
    let g: Vec<f32> = policy.grad(&grads).unwrap().into_data().to_vec().unwrap();
    let n = examples.iter().map(|e| e.rejected.len()).max().unwrap();
    let b = examples.len() as f64;
    for (row, ex) in examples.iter().enumerate() {
        let want = eval(config, ex);
        let tol = 2e-5 * (1.0 + want.loss.abs());
        prop_assert!(
            (f64::from(per[row]) - want.loss).abs() <= tol,
            "{} row {row}: tensor {} vs scalar {}",
            config.objective,
            per[row],
            want.loss
        );
        // The metrics are the scalar reference's on the batch read back (f32 inputs).
        let (m, w) = (
            out.metrics[row].preference_loss,
            want.metrics.preference_loss,
        );
        prop_assert!(
            (m - w).abs() <= 1e-6 * (1.0 + w.abs()),
            "metrics {m} vs {w}"
        );
        let all = std::iter::once(want.grad_chosen)
            .chain((0..n).map(|u| want.grad_rejected.get(u).copied().unwrap_or(0.0)));
        for (i, want_g) in all.enumerate() {
            // Gradient of the batch mean: scalar gradient / B.
            let want_g = want_g / b;
            let got = f64::from(g[row * (n + 1) + i]);
            prop_assert!(
                (got - want_g).abs() <= 2e-5 * (1.0 + want_g.abs()),
                "{} row {row} grad {i}: {got} vs {want_g}",
                config.objective
            );
        }
    }
    Ok(())
}

/// [`f32_friendly_example`] with some negatives of weight 0 (at least one positive) and
/// rewards in `[−1, 2]`, all rounded to f32.
fn listwise_f32_example() -> impl Strategy<Value = Example> {
    (
        f32_friendly_example(),
        prop::collection::vec(any::<bool>(), 7),
        prop::collection::vec(-1.0..2.0f64, 8),
    )
        .prop_map(|(mut ex, zero, r)| {
            let n = ex.rejected.len();
            let w = ex.weights.as_mut().expect("weights");
            for u in 0..n {
                if zero[u] && u + 1 < n {
                    w[u] = 0.0;
                }
            }
            ex.rewards = Some(r[..=n].iter().map(|&x| f64::from(x as f32)).collect());
            ex
        })
}

/// Values chosen so that f32 rounding of the inputs stays far below the tolerance.
fn f32_friendly_example() -> impl Strategy<Value = Example> {
    let seq = (-60.0..0.0f64, -60.0..0.0f64, 1u64..40).prop_map(|(p, r, t)| {
        Sequence::new(f64::from(p as f32), f64::from(r as f32)).with_tokens(t)
    });
    (
        seq.clone(),
        prop::collection::vec(seq, 1..=7),
        prop::collection::vec(0.0..3.0f64, 7),
    )
        .prop_map(|(c, r, w)| {
            let n = r.len();
            let mut w: Vec<f64> = w.into_iter().take(n).map(|x| f64::from(x as f32)).collect();
            w[0] += 0.5; // keep at least one active negative
            Example::new(c, r).with_weights(w)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn tensor_matches_scalar_reference(
        examples in prop::collection::vec(f32_friendly_example(), 1..5),
        beta in 0.05..1.0f64,
        alpha in 0.0..1.0f64,
    ) {
        let _serial = serial();
        let device = Default::default();
        for config in all_configs(beta) {
            let config = config.with_sft_weight(alpha);
            let loss = config.init().unwrap();
            let (batch, policy) = to_batch(&examples, &device);
            let out = loss.forward_with_metrics(&batch).unwrap();
            let per: Vec<f32> = out.per_example.clone().into_data().to_vec().unwrap();
            let grads = out.loss.backward();
            let g: Vec<f32> = policy.grad(&grads).unwrap().into_data().to_vec().unwrap();
            let n = examples.iter().map(|e| e.rejected.len()).max().unwrap();
            let b = examples.len() as f64;
            for (row, ex) in examples.iter().enumerate() {
                let want = eval(&config, ex);
                let tol = 2e-5 * (1.0 + want.loss.abs());
                prop_assert!((f64::from(per[row]) - want.loss).abs() <= tol,
                    "{} row {row}: tensor {} vs scalar {}", config.objective, per[row], want.loss);
                prop_assert!((out.metrics[row].p_chosen - want.metrics.p_chosen).abs() < 1e-5);
                // Gradient of the batch mean: scalar gradient / B.
                let gtol = 2e-5 * (1.0 + want.grad_chosen.abs());
                prop_assert!((f64::from(g[row * (n + 1)]) - want.grad_chosen / b).abs() <= gtol,
                    "{} row {row} grad chosen: {} vs {}", config.objective, g[row * (n + 1)], want.grad_chosen / b);
                for u in 0..n {
                    let want_g = want.grad_rejected.get(u).copied().unwrap_or(0.0) / b;
                    let got = f64::from(g[row * (n + 1) + u + 1]);
                    prop_assert!((got - want_g).abs() <= 2e-5 * (1.0 + want_g.abs()),
                        "{} row {row} grad rejected {u}: {got} vs {want_g}", config.objective);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The ranking, InfoNCA with rewards and the summed pairwise objectives, with weight-0 and
    /// masked negatives, on NdArray f32 with autodiff.
    #[test]
    fn listwise_tensor_matches_scalar_reference(
        examples in prop::collection::vec(listwise_f32_example(), 1..5),
        beta in 0.05..1.0f64,
        alpha in 0.1..2.0f64,
        sft in 0.0..1.0f64,
    ) {
        let without: Vec<Example> = examples
            .iter()
            .map(|e| Example { rewards: None, ..e.clone() })
            .collect();
        let ranking = LossConfig::new(Objective::PlackettLuceRanking).with_beta(beta).with_sft_weight(sft);
        check_parity(&ranking, &without)?;
        let nca = LossConfig::new(Objective::Infonca).with_beta(beta).with_temperature(alpha).with_sft_weight(sft);
        check_parity(&nca, &examples)?;
        check_parity(&nca, &without)?;
        for config in all_configs(beta).into_iter().filter(|c| c.objective.is_pairwise()) {
            check_parity(&config.with_reduction(Reduction::Sum).with_sft_weight(sft), &without)?;
        }
    }
}

/// A fully masked tail (and a weight-0 negative in the middle): the ranking drops those
/// positions, InfoNCA gives them target 0, nothing is NaN, and the values and gradients are
/// the scalar reference's, also at extreme scores.
#[test]
fn masked_tails_are_dropped_without_nan() {
    let _serial = serial();
    let device = Default::default();
    for scale in [1.0f32, 1e3] {
        let policy = Tensor::<AB, 2>::from_floats(
            [
                [-5.0 * scale, -7.0 * scale, -scale, -2.0],
                [-4.0 * scale, -6.0, -3.0 * scale, -9.0 * scale],
            ],
            &device,
        )
        .require_grad();
        let reference = Tensor::<AB, 2>::from_floats(
            [[-6.0, -6.0, -3.0, -1.0], [-4.0, -5.0, -2.0, -8.0]],
            &device,
        );
        let mask = Tensor::<AB, 2, Bool>::from_bool(
            TensorData::from([[true, false, false], [true, true, true]]),
            &device,
        );
        let weights = Tensor::<AB, 2>::from_floats([[2.0, 1.0, 1.0], [1.0, 0.0, 0.5]], &device);
        let rewards = Tensor::<AB, 2>::from_floats(
            [[1.0, 0.2, f32::MAX, 0.3], [1.0, 0.7, 0.9, 0.4]],
            &device,
        );
        for (objective, with_rewards) in [
            (Objective::PlackettLuceRanking, false),
            (Objective::Infonca, false),
            (Objective::Infonca, true),
        ] {
            let mut batch = PreferenceBatch::new(policy.clone(), reference.clone())
                .with_mask(mask.clone())
                .with_weights(weights.clone());
            if with_rewards {
                batch = batch.with_rewards(rewards.clone());
            }
            let config = LossConfig::new(objective).with_beta(2.0);
            let loss = config.init().unwrap();
            let per: Vec<f32> = loss
                .forward_no_reduction(&batch)
                .unwrap()
                .into_data()
                .to_vec()
                .unwrap();
            let total = loss.forward(&batch).unwrap();
            let g: Vec<f32> = policy
                .grad(&total.backward())
                .unwrap()
                .into_data()
                .to_vec()
                .unwrap();
            assert!(g.iter().all(|x| x.is_finite()), "{objective}: {g:?}");
            for (row, ex) in batch.to_examples().iter().enumerate() {
                let want = eval(&config, ex);
                let what = format!("{objective} rewards {with_rewards} scale {scale} row {row}");
                assert!(
                    (f64::from(per[row]) - want.loss).abs() <= 1e-5 * (1.0 + want.loss.abs()),
                    "{what}: {} vs {}",
                    per[row],
                    want.loss
                );
                let want_g = std::iter::once(want.grad_chosen).chain(want.grad_rejected);
                for (i, w) in want_g.enumerate() {
                    let got = f64::from(g[row * 4 + i]);
                    assert!(
                        (got - w / 2.0).abs() <= 1e-5 * (1.0 + w.abs()),
                        "{what} grad {i}: {got} vs {}",
                        w / 2.0
                    );
                }
            }
            // The masked and weight-0 negatives get no gradient.
            assert_eq!((g[2], g[3], g[6]), (0.0, 0.0, 0.0), "{objective}");
        }
    }
}

#[test]
fn rewards_are_carried_and_checked() {
    let device = Default::default();
    let p = Tensor::<TB, 2>::from_floats([[-1.0, -2.0, -3.0], [-2.0, -2.0, -1.0]], &device);
    let r = Tensor::<TB, 2>::from_floats([[1.0, 0.5, 0.25], [1.0, 0.0, 0.0]], &device);
    let batch = PreferenceBatch::new(p.clone(), p.clone()).with_rewards(r);
    assert_eq!(batch.to_examples()[0].rewards, Some(vec![1.0, 0.5, 0.25]));
    let nca = LossConfig::new(Objective::Infonca).init().unwrap();
    assert!(nca.forward(&batch).is_ok());
    assert_eq!(
        LossConfig::default()
            .init()
            .unwrap()
            .forward(&batch)
            .unwrap_err(),
        LossError::UnsupportedOption {
            objective: "plackett-luce",
            option: "rewards"
        }
    );
    let short = Tensor::<TB, 2>::zeros([2, 2], &device);
    assert!(matches!(
        nca.forward(&PreferenceBatch::new(p.clone(), p.clone()).with_rewards(short)),
        Err(LossError::Shape { op: "rewards", .. })
    ));
    let nan = Tensor::<TB, 2>::from_floats([[1.0, 0.5, 0.25], [1.0, f32::NAN, 0.0]], &device);
    match nca
        .forward(&PreferenceBatch::new(p.clone(), p).with_rewards(nan))
        .unwrap_err()
    {
        LossError::NonFinite { what, .. } => assert_eq!(what, "row 1: rewards[1]"),
        e => panic!("unexpected {e}"),
    }
}

#[test]
fn step_zero_tensor_loss_is_ln_n_plus_one() {
    let device = Default::default();
    let policy = Tensor::<TB, 2>::from_floats(
        [[-30.0, -50.0, -41.0, -12.0, -60.0, -33.0, -45.0, -52.0]],
        &device,
    );
    let batch = PreferenceBatch::new(policy.clone(), policy);
    let loss: f32 = LossConfig::default()
        .init()
        .unwrap()
        .forward(&batch)
        .unwrap()
        .into_scalar();
    assert!((loss - 8f32.ln()).abs() < 1e-6);
}

#[test]
fn tensor_extreme_values_stay_finite() {
    let _serial = serial();
    let device = Default::default();
    let policy = Tensor::<AB, 2>::from_floats([[-1e5, 0.0, -3.0], [0.0, -1e5, -1e5]], &device)
        .require_grad();
    let reference = Tensor::<AB, 2>::from_floats([[0.0, -1e5, 0.0], [-1e5, 0.0, 0.0]], &device);
    for config in all_configs(100.0) {
        if config.objective == Objective::Simpo || config.objective == Objective::Ipo {
            continue; // need token counts; covered by the parity test
        }
        let batch = PreferenceBatch::new(policy.clone(), reference.clone());
        let loss = config.init().unwrap().forward(&batch).unwrap();
        let v: f32 = loss.clone().into_scalar();
        assert!(v.is_finite(), "{}: {v}", config.objective);
        let g = policy.grad(&loss.backward()).unwrap();
        let g: Vec<f32> = g.into_data().to_vec().unwrap();
        assert!(
            g.iter().all(|x| x.is_finite()),
            "{}: {g:?}",
            config.objective
        );
    }
}

#[test]
fn tensor_bad_inputs_are_typed_errors() {
    let device = Default::default();
    let loss = LossConfig::default().init().unwrap();
    let one_col = Tensor::<TB, 2>::zeros([2, 1], &device);
    assert_eq!(
        loss.forward(&PreferenceBatch::new(one_col.clone(), one_col))
            .unwrap_err(),
        LossError::NoNegatives { row: None }
    );
    let p = Tensor::<TB, 2>::zeros([2, 3], &device);
    let bad_ref = Tensor::<TB, 2>::zeros([2, 4], &device);
    assert!(matches!(
        loss.forward(&PreferenceBatch::new(p.clone(), bad_ref)),
        Err(LossError::Shape {
            op: "reference",
            ..
        })
    ));
    let mask =
        Tensor::<TB, 2, Bool>::from_bool(TensorData::from([[true, true], [false, false]]), &device);
    assert_eq!(
        loss.forward(&PreferenceBatch::new(p.clone(), p.clone()).with_mask(mask))
            .unwrap_err(),
        LossError::NoActiveNegatives { row: Some(1) }
    );
    let nan = Tensor::<TB, 2>::from_floats([[0.0, 0.0, 0.0], [0.0, f32::NAN, 0.0]], &device);
    match loss
        .forward(&PreferenceBatch::new(nan, p.clone()))
        .unwrap_err()
    {
        LossError::NonFinite { what, .. } => assert_eq!(what, "row 1: rejected[0].policy"),
        e => panic!("unexpected {e}"),
    }
    let ipo = LossConfig::new(Objective::Ipo).init().unwrap();
    assert!(matches!(
        ipo.forward(&PreferenceBatch::new(p.clone(), p)),
        Err(LossError::MissingTokens { .. })
    ));
}

/// Log-softmax + gather against a direct f64 computation, on a small random case.
#[cfg(feature = "ndarray")]
#[test]
fn token_logprobs_match_f64() {
    let device = Default::default();
    let (b, t, v) = (2, 5, 7);
    let mut state = 12345u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64) * 20.0 - 10.0
    };
    let logits: Vec<f64> = (0..b * t * v).map(|_| next()).collect();
    let targets: Vec<i64> = (0..b * t).map(|i| ((i * 3 + 1) % v) as i64).collect();
    let lt = Tensor::<TB, 3>::from_data(
        TensorData::new(logits.iter().map(|&x| x as f32).collect(), [b, t, v]),
        &device,
    );
    let tt = Tensor::<TB, 2, Int>::from_data(TensorData::new(targets.clone(), [b, t]), &device);
    let mt = Tensor::<TB, 2, Bool>::from_data(TensorData::new(vec![true; b * t], [b, t]), &device);
    let got: Vec<f32> = token_logprobs(lt, tt, mt)
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    for pos in 0..b * t {
        let row = &logits[pos * v..(pos + 1) * v];
        let lse = apo_loss::logsumexp(row);
        let want = row[targets[pos] as usize] - lse;
        assert!(
            (f64::from(got[pos]) - want).abs() < 1e-5,
            "pos {pos}: {} vs {want}",
            got[pos]
        );
    }
}

/// Masking invariance: prompt and padding positions never change the sequence log-prob or
/// its gradient, whatever their logits and target ids.
#[cfg(feature = "ndarray")]
#[test]
fn masked_positions_do_not_matter() {
    let _serial = serial();
    let device = Default::default();
    let (b, t, v) = (3, 6, 5);
    let mask_rows = [
        [false, false, true, true, true, false], // prompt, completion, padding
        [false, true, true, true, true, true],
        [true, true, false, false, false, false],
    ];
    let mask: Vec<bool> = mask_rows.iter().flatten().copied().collect();
    let base: Vec<f32> = (0..b * t * v)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) / 3.0)
        .collect();
    let targets: Vec<i64> = (0..b * t).map(|i| (i % v) as i64).collect();
    // Change every masked position: logits shifted, targets set to an ignore id.
    let mut noisy = base.clone();
    let mut noisy_targets = targets.clone();
    for pos in 0..b * t {
        if !mask[pos] {
            noisy_targets[pos] = -100;
            for k in 0..v {
                noisy[pos * v + k] += 50.0 * (k as f32 - 2.0);
            }
        }
    }
    let run = |logits: &[f32], targets: &[i64]| {
        let lt = Tensor::<AB, 3>::from_data(TensorData::new(logits.to_vec(), [b, t, v]), &device)
            .require_grad();
        let tt =
            Tensor::<AB, 2, Int>::from_data(TensorData::new(targets.to_vec(), [b, t]), &device);
        let mt = Tensor::<AB, 2, Bool>::from_data(TensorData::new(mask.clone(), [b, t]), &device);
        let lp = sequence_logprobs(lt.clone(), tt, mt).unwrap();
        let values: Vec<f32> = lp.clone().into_data().to_vec().unwrap();
        let grads = lp.sum().backward();
        let g: Vec<f32> = lt.grad(&grads).unwrap().into_data().to_vec().unwrap();
        (values, g)
    };
    let (va, ga) = run(&base, &targets);
    let (vb, gb) = run(&noisy, &noisy_targets);
    for i in 0..b {
        assert!(
            (va[i] - vb[i]).abs() < 1e-5,
            "row {i}: {} vs {}",
            va[i],
            vb[i]
        );
    }
    for pos in 0..b * t {
        for k in 0..v {
            let (x, y) = (ga[pos * v + k], gb[pos * v + k]);
            if mask[pos] {
                assert!((x - y).abs() < 1e-6);
            } else {
                assert_eq!((x, y), (0.0, 0.0), "masked position {pos} has a gradient");
            }
        }
    }
    // And appending extra padding does not change the result either.
    let lt = Tensor::<TB, 3>::from_data(TensorData::new(base.clone(), [b, t, v]), &device);
    let padded = Tensor::cat(vec![lt, Tensor::<TB, 3>::ones([b, 2, v], &device)], 1);
    let mut tp: Vec<i64> = Vec::new();
    let mut mp: Vec<bool> = Vec::new();
    for row in 0..b {
        tp.extend_from_slice(&targets[row * t..(row + 1) * t]);
        tp.extend_from_slice(&[-100, -100]);
        mp.extend_from_slice(&mask[row * t..(row + 1) * t]);
        mp.extend_from_slice(&[false, false]);
    }
    let lp: Vec<f32> = sequence_logprobs(
        padded,
        Tensor::from_data(TensorData::new(tp, [b, t + 2]), &device),
        Tensor::from_data(TensorData::new(mp, [b, t + 2]), &device),
    )
    .unwrap()
    .into_data()
    .to_vec()
    .unwrap();
    for i in 0..b {
        assert!((va[i] - lp[i]).abs() < 1e-5);
    }
}

#[cfg(feature = "ndarray")]
#[test]
fn out_of_range_targets_are_errors() {
    let device = Default::default();
    let logits = Tensor::<TB, 3>::zeros([1, 2, 4], &device);
    let mask = Tensor::<TB, 2, Bool>::from_bool(TensorData::from([[true, true]]), &device);
    let targets = Tensor::<TB, 2, Int>::from_ints([[1, 4]], &device);
    assert_eq!(
        sequence_logprobs(logits.clone(), targets, mask.clone()).unwrap_err(),
        LossError::TargetOutOfRange { id: 4, vocab: 4 }
    );
    let short = Tensor::<TB, 2, Int>::from_ints([[1]], &device);
    assert!(matches!(
        sequence_logprobs(logits, short, mask),
        Err(LossError::Shape { op: "targets", .. })
    ));
}

/// The fused CPU kernel (`LossKernels` of f32 NdArray) against the composite graph, both the
/// one `NdArray<f64>` runs and [`token_logprobs_composite`] called on the f32 backend: values
/// and gradients, with a ragged mask and a non-trivial upstream gradient.
#[cfg(feature = "ndarray")]
#[test]
fn fused_cpu_kernel_matches_composite_graph() {
    let _serial = serial();
    type Fused = Autodiff<NdArray<f32>>;
    type Composite = Autodiff<NdArray<f64>>;
    let device = Default::default();
    let (b, t, v) = (3, 9, 37);
    let mut state = 7u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64) * 30.0 - 15.0
    };
    let logits: Vec<f64> = (0..b * t * v).map(|_| next()).collect();
    let targets: Vec<i64> = (0..b * t).map(|i| ((i * 11 + 3) % v) as i64).collect();
    let mask: Vec<bool> = (0..b * t)
        .map(|i| i % t >= 2 && i % t < 2 + 3 * (i / t) + 3)
        .collect();
    let weights: Vec<f64> = (0..b).map(|i| 1.0 + i as f64).collect();

    let fused = {
        let lt = Tensor::<Fused, 3>::from_data(
            TensorData::new(logits.iter().map(|&x| x as f32).collect(), [b, t, v]),
            &device,
        )
        .require_grad();
        let tt =
            Tensor::<Fused, 2, Int>::from_data(TensorData::new(targets.clone(), [b, t]), &device);
        let mt =
            Tensor::<Fused, 2, Bool>::from_data(TensorData::new(mask.clone(), [b, t]), &device);
        let lp = sequence_logprobs(lt.clone(), tt, mt).unwrap();
        let w = Tensor::<Fused, 1>::from_data(
            TensorData::new(weights.iter().map(|&x| x as f32).collect(), [b]),
            &device,
        );
        let values: Vec<f64> = lp.clone().into_data().convert::<f64>().to_vec().unwrap();
        let g = lt.grad(&(lp * w).sum().backward()).unwrap();
        (
            values,
            g.into_data().convert::<f64>().to_vec::<f64>().unwrap(),
        )
    };
    let composite = {
        let lt =
            Tensor::<Composite, 3>::from_data(TensorData::new(logits.clone(), [b, t, v]), &device)
                .require_grad();
        let tt = Tensor::<Composite, 2, Int>::from_data(
            TensorData::new(targets.clone(), [b, t]),
            &device,
        );
        let mt =
            Tensor::<Composite, 2, Bool>::from_data(TensorData::new(mask.clone(), [b, t]), &device);
        let lp = sequence_logprobs(lt.clone(), tt, mt).unwrap();
        let w = Tensor::<Composite, 1>::from_data(TensorData::new(weights.clone(), [b]), &device);
        let values: Vec<f64> = lp.clone().into_data().convert::<f64>().to_vec().unwrap();
        let g = lt.grad(&(lp * w).sum().backward()).unwrap();
        (
            values,
            g.into_data().convert::<f64>().to_vec::<f64>().unwrap(),
        )
    };
    // The composite graph on the fused kernel's own backend (f32), called explicitly.
    let composite_f32 = {
        let lt = Tensor::<Fused, 3>::from_data(
            TensorData::new(logits.iter().map(|&x| x as f32).collect(), [b, t, v]),
            &device,
        )
        .require_grad();
        let tt =
            Tensor::<Fused, 2, Int>::from_data(TensorData::new(targets.clone(), [b, t]), &device);
        let mt =
            Tensor::<Fused, 2, Bool>::from_data(TensorData::new(mask.clone(), [b, t]), &device);
        let lp = token_logprobs_composite(lt.clone(), tt, mt)
            .sum_dim(1)
            .squeeze_dim::<1>(1);
        let w = Tensor::<Fused, 1>::from_data(
            TensorData::new(weights.iter().map(|&x| x as f32).collect(), [b]),
            &device,
        );
        let values: Vec<f64> = lp.clone().into_data().convert::<f64>().to_vec().unwrap();
        let g = lt.grad(&(lp * w).sum().backward()).unwrap();
        (
            values,
            g.into_data().convert::<f64>().to_vec::<f64>().unwrap(),
        )
    };
    for i in 0..b {
        assert!(
            (fused.0[i] - composite.0[i]).abs() < 1e-4 * (1.0 + composite.0[i].abs()),
            "row {i}"
        );
        assert!(
            (fused.0[i] - composite_f32.0[i]).abs() < 1e-4 * (1.0 + composite_f32.0[i].abs()),
            "row {i} (f32 composite)"
        );
    }
    for (k, (x, y)) in fused.1.iter().zip(&composite_f32.1).enumerate() {
        assert!(
            (x - y).abs() < 1e-5,
            "gradient {k}: fused {x} vs f32 composite {y}"
        );
    }
    let mut nonzero = 0;
    for (k, (x, y)) in fused.1.iter().zip(&composite.1).enumerate() {
        assert!(
            (x - y).abs() < 1e-5,
            "gradient {k}: fused {x} vs composite {y}"
        );
        nonzero += usize::from(*y != 0.0);
    }
    assert!(
        nonzero > b * v,
        "the comparison covers real gradients ({nonzero} non-zero)"
    );
}

/// The CPU backends take the fused kernel (so the comparison above compares two different
/// implementations), and `NdArray<f64>` the composite graph.
#[cfg(feature = "ndarray")]
#[test]
fn cpu_backends_take_the_fused_kernel() {
    const {
        assert!(<NdArray as LossKernels>::FUSED_LOGPROBS);
        assert!(<Autodiff<NdArray> as LossKernels>::FUSED_LOGPROBS);
        assert!(!<NdArray<f64> as LossKernels>::FUSED_LOGPROBS);
        assert!(!<Autodiff<NdArray<f64>> as LossKernels>::FUSED_LOGPROBS);
    }
}
