//! Fused log-softmax + gather for the NdArray CPU backend, with a hand-written backward.
//!
//! The composite graph (`max`, `sub`, `exp`, `sum`, `log`, `gather` and their autodiff
//! backward) makes about a dozen passes over the `[B, T, V]` logits on NdArray. This kernel
//! reads the logits in place (no copy), makes two passes over each scored row in the forward
//! (max, then Σ exp) and one in the backward (`g · (onehot − softmax)`), skips masked rows
//! entirely, and splits rows across rayon's threads (each row computed alone, so the result
//! does not depend on their number).
//!
//! It is [`LossKernels`]'s implementation for `NdArray<f32>` and `Autodiff<NdArray<f32>>`;
//! every other backend runs the composite graph ([`token_logprobs_composite`]) on its own
//! device.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, NdArray};
use burn::prelude::{Bool, Int, Tensor};
use burn::tensor::{DType, TensorPrimitive};
use rayon::prelude::*;

use super::{LossKernels, token_logprobs_composite};
use crate::host::{Cpu, HostTensor, to_ndarray, to_tensor};

impl LossKernels for NdArray<f32> {
    const FUSED_LOGPROBS: bool = true;

    fn token_logprobs_kernel(
        logits: Tensor<Self, 3>,
        targets: Tensor<Self, 2, Int>,
        mask: Tensor<Self, 2, Bool>,
        host_targets: &[i64],
        host_mask: &[bool],
    ) -> Tensor<Self, 2> {
        if logits.dtype() != DType::F32 {
            return token_logprobs_composite(logits, targets, mask);
        }
        let [b, t, v] = logits.dims();
        let Some(host) = HostTensor::from_tensor(logits.clone()) else {
            return token_logprobs_composite(logits, targets, mask);
        };
        let (out, _) = forward(&host, v, host_targets, host_mask);
        to_tensor(out, [b, t])
    }
}

/// The composite graph on f64 (the fused kernel is f32).
impl LossKernels for NdArray<f64> {}

/// The composite graph on f64 (the fused kernel is f32).
impl<C: CheckpointStrategy> LossKernels for Autodiff<NdArray<f64>, C> {}

impl<C: CheckpointStrategy> LossKernels for Autodiff<NdArray<f32>, C> {
    const FUSED_LOGPROBS: bool = true;

    fn token_logprobs_kernel(
        logits: Tensor<Self, 3>,
        targets: Tensor<Self, 2, Int>,
        mask: Tensor<Self, 2, Bool>,
        host_targets: &[i64],
        host_mask: &[bool],
    ) -> Tensor<Self, 2> {
        if logits.dtype() != DType::F32 {
            return token_logprobs_composite(logits, targets, mask);
        }
        let [b, t, v] = logits.dims();
        let primitive = logits.clone().into_primitive().tensor();
        let Some(host) = HostTensor::new(primitive.primitive.clone()) else {
            return token_logprobs_composite(logits, targets, mask);
        };
        let (out, lse) = forward(&host, v, host_targets, host_mask);
        let out = to_ndarray(out, &[b, t]);
        let output = match FusedLogSoftmaxGather
            .prepare::<C>([primitive.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let state = Arc::new(FusedState {
                    logits: host,
                    lse,
                    targets: host_targets.to_vec(),
                    mask: host_mask.to_vec(),
                    shape: [b, t, v],
                });
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        Tensor::from_primitive(TensorPrimitive::Float(output))
    }
}

#[derive(Debug)]
struct FusedState {
    logits: HostTensor,
    lse: Vec<f32>,
    targets: Vec<i64>,
    mask: Vec<bool>,
    shape: [usize; 3],
}

#[derive(Debug)]
struct FusedLogSoftmaxGather;

impl Backward<Cpu, 1> for FusedLogSoftmaxGather {
    type State = Arc<FusedState>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad_out = grads.consume::<Cpu>(&ops.node);
        let Some(parent) = parent else { return };
        let state = ops.state;
        let g = match HostTensor::new(grad_out) {
            Some(g) => g.to_vec(),
            None => return,
        };
        let grad = backward(&state, &g);
        grads.register::<Cpu>(parent.id, to_ndarray(grad, &state.shape));
    }
}

/// Rows per parallel task: a fixed split (not one per thread), so the work of a task, and
/// the result, does not depend on the number of threads.
const ROWS_PER_TASK: usize = 16;

/// Per-row `logits[y] − logsumexp(logits)` for scored rows (0 elsewhere), and the row lse.
fn forward(host: &HostTensor, v: usize, targets: &[i64], mask: &[bool]) -> (Vec<f32>, Vec<f32>) {
    let rows = targets.len();
    let mut out = vec![0.0f32; rows];
    let mut lse = vec![0.0f32; rows];
    host.with_slice(|logits| {
        out.par_chunks_mut(ROWS_PER_TASK)
            .zip(lse.par_chunks_mut(ROWS_PER_TASK))
            .enumerate()
            .for_each(|(k, (out, lse))| {
                let start = k * ROWS_PER_TASK;
                for (i, (o, l)) in out.iter_mut().zip(lse.iter_mut()).enumerate() {
                    let r = start + i;
                    if !mask[r] {
                        continue;
                    }
                    let row = &logits[r * v..(r + 1) * v];
                    let value = row_lse(row);
                    *l = value;
                    *o = row[targets[r] as usize] - value;
                }
            });
    });
    (out, lse)
}

/// `∂L/∂logits[r, j] = g_r · (1[j = y_r] − softmax(logits[r])_j)` for scored rows, 0 elsewhere.
fn backward(state: &FusedState, g: &[f32]) -> Vec<f32> {
    let [b, t, v] = state.shape;
    let rows = b * t;
    let mut grad = vec![0.0f32; rows * v];
    if v == 0 {
        return grad;
    }
    state.logits.with_slice(|logits| {
        grad.par_chunks_mut(v)
            .enumerate()
            .with_min_len(ROWS_PER_TASK)
            .for_each(|(r, out)| {
                let gr = g[r];
                if !state.mask[r] || gr == 0.0 {
                    return;
                }
                let row = &logits[r * v..(r + 1) * v];
                let l = state.lse[r];
                for (o, &x) in out.iter_mut().zip(row) {
                    *o = -gr * exp_nonpositive(x - l);
                }
                out[state.targets[r] as usize] += gr;
            });
    });
    grad
}

/// `max(row) + ln Σ exp(row − max)`, accumulated in 8 lanes so it vectorises.
fn row_lse(row: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut m = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for k in 0..LANES {
            m[k] = m[k].max(c[k]);
        }
    }
    let max = tail.iter().fold(
        m.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        |a, &b| a.max(b),
    );
    if !max.is_finite() {
        return max;
    }
    let mut s = [0.0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    for c in chunks {
        for k in 0..LANES {
            s[k] += exp_nonpositive(c[k] - max);
        }
    }
    let tail_sum: f32 = tail.iter().map(|&x| exp_nonpositive(x - max)).sum();
    max + (s.iter().sum::<f32>() + tail_sum).ln()
}

/// `e^x` for `x ≤ 0`, within 2 ulp, branch-free so that loops over it vectorise.
///
/// Range reduction `x = n ln 2 + r`, `|r| ≤ ln 2 / 2`, a degree-6 Taylor polynomial for `e^r`
/// (truncation error below 1.3e-7 relative), and `2^n` assembled from its exponent bits.
/// Inputs below −87.3 return about 1.2e-38 (the smallest normal range), negligible against
/// the row sums this kernel forms (the row maximum contributes exactly 1).
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to the nearest integer
    let x = x.clamp(-87.3, 0.0);
    let shifted = x * LOG2E + MAGIC;
    let n = shifted - MAGIC;
    let n_int = shifted.to_bits() as i32 - 0x4B40_0000;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((n_int + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_on_the_nonpositive_axis() {
        let mut worst = 0.0f64;
        for i in 0..=87_000 {
            let x = -(i as f32) / 1000.0;
            let got = f64::from(exp_nonpositive(x));
            let want = f64::from(x).exp();
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-1e30) < 2e-38);
    }

    /// The forward and backward are bitwise the same on one thread and on several.
    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let (b, t, v) = (3, 23, 19);
        let logits: Vec<f32> = (0..b * t * v)
            .map(|i| ((i * 7919 % 113) as f32 - 56.0) / 7.0)
            .collect();
        let targets: Vec<i64> = (0..b * t).map(|i| ((i * 5 + 1) % v) as i64).collect();
        let mask: Vec<bool> = (0..b * t).map(|i| i % 7 != 3).collect();
        let g: Vec<f32> = (0..b * t).map(|i| 1.0 + (i % 3) as f32).collect();
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("a thread pool")
                .install(|| {
                    let host = HostTensor::new(to_ndarray(logits.clone(), &[b, t, v]))
                        .expect("f32 logits");
                    let (out, lse) = forward(&host, v, &targets, &mask);
                    let state = FusedState {
                        logits: host,
                        lse,
                        targets: targets.clone(),
                        mask: mask.clone(),
                        shape: [b, t, v],
                    };
                    (out, backward(&state, &g))
                })
        };
        let (out1, grad1) = run(1);
        let (out4, grad4) = run(4);
        assert!(out1.iter().any(|&x| x != 0.0) && grad1.iter().any(|&x| x != 0.0));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&out1), bits(&out4));
        assert_eq!(bits(&grad1), bits(&grad4));
    }

    #[test]
    fn row_lse_matches_f64() {
        let row: Vec<f32> = (0..1001)
            .map(|i| ((i * 7919 % 113) as f32 - 56.0) / 7.0)
            .collect();
        let want = {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            m + row
                .iter()
                .map(|&x| (f64::from(x) - m).exp())
                .sum::<f64>()
                .ln()
        };
        assert!((f64::from(row_lse(&row)) - want).abs() < 1e-5);
    }
}
