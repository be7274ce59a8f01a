//! Public-API tests of `apo-loss`: closed-form goldens, property tests of the scalar
//! reference, and parity of the Burn tensor implementation with it.

mod golden;
mod props;
#[cfg(feature = "burn")]
mod tensor;

use apo_loss::{Example, LossConfig, LossOutput, Objective, Sequence};

/// Evaluates `config` on `example`, panicking with the error on invalid input.
pub fn eval(config: &LossConfig, example: &Example) -> LossOutput {
    config
        .init()
        .expect("valid config")
        .compute(example)
        .expect("valid example")
}

/// An example from raw (policy, reference) pairs with `tokens` tokens per sequence.
pub fn example(chosen: (f64, f64), rejected: &[(f64, f64)], tokens: u64) -> Example {
    let seq = |(p, r): (f64, f64)| Sequence::new(p, r).with_tokens(tokens);
    Example::new(seq(chosen), rejected.iter().copied().map(seq).collect())
}

/// Relative-or-absolute closeness.
pub fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
}

/// Every objective with a config that runs on examples carrying reference and token counts.
pub fn all_configs(beta: f64) -> Vec<LossConfig> {
    Objective::ALL
        .into_iter()
        .map(|o| {
            let c = LossConfig::new(o).with_beta(beta);
            match o {
                Objective::Robust | Objective::PairwiseSigmoid => c.with_label_smoothing(0.1),
                _ => c,
            }
        })
        .collect()
}
