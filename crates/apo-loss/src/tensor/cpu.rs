//! Fused log-softmax + gather for the NdArray CPU backend, with a hand-written backward.
//!
//! The composite graph (`max`, `sub`, `exp`, `sum`, `log`, `gather` and their autodiff
//! backward) makes about a dozen passes over the `[B, T, V]` logits on NdArray. This kernel
//! reads the logits in place (no copy), makes two passes over each scored row in the forward
//! (max, then Σ exp) and one in the backward (`g · (onehot − softmax)`), skips masked rows
//! entirely, and splits rows across the available cores.
//!
//! It is used for `NdArray` (f32) and `Autodiff<NdArray>` tensors, selected at run time by
//! type; every other backend runs the composite graph on its own device.

use std::any::Any;
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ndarray::NdArrayTensor;
use burn::backend::{Autodiff, NdArray};
use burn::prelude::{Backend, Tensor};
use burn::tensor::{DType, TensorPrimitive};

type Cpu = NdArray<f32>;
type CpuAutodiff = Autodiff<NdArray<f32>, NoCheckpointing>;

/// Moves `value` into `U` when `T` and `U` are the same type.
fn same_type<T: 'static, U: 'static>(value: T) -> Result<U, T> {
    let mut slot = Some(value);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<U>>() {
        Some(u) => Ok(u.take().expect("slot is filled")),
        None => Err(slot.expect("slot is filled")),
    }
}

/// Runs the fused kernel when `B` is `NdArray<f32>` or `Autodiff<NdArray<f32>>` and the logits
/// are f32; otherwise hands the logits back.
///
/// `targets` and `mask` are the host copies of the `[B, T]` inputs; masked targets are 0.
pub(crate) fn token_logprobs<B: Backend>(
    logits: Tensor<B, 3>,
    targets: &[i64],
    mask: &[bool],
) -> Result<Tensor<B, 2>, Tensor<B, 3>> {
    if logits.dtype() != DType::F32 {
        return Err(logits);
    }
    let logits = match same_type::<Tensor<B, 3>, Tensor<CpuAutodiff, 3>>(logits) {
        Ok(l) => {
            let out = autodiff_forward(l, targets, mask);
            return Ok(same_type(out).unwrap_or_else(|_| unreachable!("B is CpuAutodiff")));
        }
        Err(l) => l,
    };
    match same_type::<Tensor<B, 3>, Tensor<Cpu, 3>>(logits) {
        Ok(l) => {
            let [b, t, v] = l.dims();
            let host = HostLogits::new(l.into_primitive().tensor(), v);
            let (out, _) = forward(&host, targets, mask);
            let out =
                Tensor::<Cpu, 2>::from_primitive(TensorPrimitive::Float(to_ndarray(out, &[b, t])));
            Ok(same_type(out).unwrap_or_else(|_| unreachable!("B is Cpu")))
        }
        Err(l) => Err(l),
    }
}

fn autodiff_forward(
    logits: Tensor<CpuAutodiff, 3>,
    targets: &[i64],
    mask: &[bool],
) -> Tensor<CpuAutodiff, 2> {
    let [b, t, v] = logits.dims();
    let primitive = logits.into_primitive().tensor();
    let host = HostLogits::new(primitive.primitive.clone(), v);
    let (out, lse) = forward(&host, targets, mask);
    let out = to_ndarray(out, &[b, t]);
    let output = match FusedLogSoftmaxGather
        .prepare::<NoCheckpointing>([primitive.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = Arc::new(FusedState {
                logits: host,
                lse,
                targets: targets.to_vec(),
                mask: mask.to_vec(),
                shape: [b, t, v],
            });
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive(TensorPrimitive::Float(output))
}

/// The logits of the forward pass, kept for the backward without a copy when contiguous.
#[derive(Debug)]
struct HostLogits {
    tensor: NdArrayTensor,
    /// A contiguous copy, only when the tensor's layout is not standard.
    copy: Option<Vec<f32>>,
    vocab: usize,
}

impl HostLogits {
    fn new(tensor: NdArrayTensor, vocab: usize) -> Self {
        let copy = match &tensor {
            NdArrayTensor::F32(storage) => {
                let view = storage.view();
                if view.as_slice().is_some() {
                    None
                } else {
                    Some(view.iter().copied().collect())
                }
            }
            _ => unreachable!("f32 logits checked by the caller"),
        };
        HostLogits {
            tensor,
            copy,
            vocab,
        }
    }

    fn with_slice<R>(&self, f: impl FnOnce(&[f32]) -> R) -> R {
        if let Some(copy) = &self.copy {
            return f(copy);
        }
        match &self.tensor {
            NdArrayTensor::F32(storage) => {
                let view = storage.view();
                f(view.as_slice().expect("standard layout checked in new"))
            }
            _ => unreachable!("f32 logits checked by the caller"),
        }
    }
}

#[derive(Debug)]
struct FusedState {
    logits: HostLogits,
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
        let g: Vec<f32> = Tensor::<Cpu, 2>::from_primitive(TensorPrimitive::Float(grad_out))
            .into_data()
            .convert::<f32>()
            .into_vec()
            .expect("converted to f32");
        let grad = backward(&state, &g);
        grads.register::<Cpu>(parent.id, to_ndarray(grad, &state.shape));
    }
}

fn to_ndarray(values: Vec<f32>, shape: &[usize]) -> NdArrayTensor {
    let array = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(shape), values)
        .expect("length matches the shape")
        .into_shared();
    NdArrayTensor::from(array)
}

fn threads(rows: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(rows.max(1))
}

/// Per-row `logits[y] − logsumexp(logits)` for scored rows (0 elsewhere), and the row lse.
fn forward(host: &HostLogits, targets: &[i64], mask: &[bool]) -> (Vec<f32>, Vec<f32>) {
    let rows = targets.len();
    let v = host.vocab;
    let mut out = vec![0.0f32; rows];
    let mut lse = vec![0.0f32; rows];
    host.with_slice(|logits| {
        let chunk = rows.div_ceil(threads(rows));
        std::thread::scope(|scope| {
            for (k, (out, lse)) in out.chunks_mut(chunk).zip(lse.chunks_mut(chunk)).enumerate() {
                let start = k * chunk;
                scope.spawn(move || {
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
    state.logits.with_slice(|logits| {
        let chunk = rows.div_ceil(threads(rows));
        std::thread::scope(|scope| {
            for (k, grad) in grad.chunks_mut(chunk * v).enumerate() {
                let start = k * chunk;
                scope.spawn(move || {
                    for (i, out) in grad.chunks_mut(v).enumerate() {
                        let r = start + i;
                        let gr = g[r];
                        if !state.mask[r] || gr == 0.0 {
                            continue;
                        }
                        let row = &logits[r * v..(r + 1) * v];
                        let l = state.lse[r];
                        for (o, &x) in out.iter_mut().zip(row) {
                            *o = -gr * exp_nonpositive(x - l);
                        }
                        out[state.targets[r] as usize] += gr;
                    }
                });
            }
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
