//! The backends the student runs on, each with its kernels for attention and the linear
//! layer: a backend extension trait, burn's pattern for custom kernels.
//!
//! [`ApoKernels`]'s provided methods are the composite graphs (burn's tensor operations, on
//! the backend's own device). The `ndarray` feature implements fused CPU kernels with
//! hand-written backwards for `NdArray<f32>` and `Autodiff<NdArray<f32>, C>`
//! ([`ApoKernels::FUSED_LAYERS`] is true for them); `NdArray<f64>` and, with the `wgpu` and
//! `cuda` features, burn's `Wgpu` and `Cuda` backends and `Autodiff` over them use the
//! composite graphs. Another backend opts in with
//! `impl apo_loss::tensor::LossKernels for MyBackend {}` and
//! `impl apo_train::ApoKernels for MyBackend {}`.

use burn::nn::Dropout;
use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};

use apo_loss::tensor::LossKernels;

use crate::model::Rows;

/// The kernels of the student's layers on a backend (and, through [`LossKernels`], of the
/// completion log-probs).
pub trait ApoKernels: LossKernels {
    /// Whether [`ApoKernels::prefix_attention`] and [`ApoKernels::linear_layer`] are fused kernels rather
    /// than the composite graphs.
    const FUSED_LAYERS: bool = false;

    /// Prefix-LM attention without dropout over `rows` (see [`Rows`]) of the fused
    /// query-key-value matrix `qkv: [R, 3 d]` with `heads` heads: `[R, d]`.
    fn prefix_attention(qkv: Tensor<Self, 2>, rows: Rows, heads: usize) -> Tensor<Self, 2> {
        attention_composite(qkv, rows, heads, None)
    }

    /// `x W + b` for `x: [R, d_in]`, `W: [d_in, d_out]`, `b: [d_out]`.
    fn linear_layer(
        x: Tensor<Self, 2>,
        weight: Tensor<Self, 2>,
        bias: Tensor<Self, 1>,
    ) -> Tensor<Self, 2> {
        burn::tensor::module::linear(x, weight, Some(bias))
    }
}

/// An autodiff backend the training stages run on: its kernels, and those of the inner
/// backend the frozen reference and evaluation use.
pub trait TrainBackend: AutodiffBackend<InnerBackend: ApoKernels> + ApoKernels {}

impl<B> TrainBackend for B where B: AutodiffBackend<InnerBackend: ApoKernels> + ApoKernels {}

#[cfg(feature = "wgpu")]
impl ApoKernels for burn::backend::Wgpu {}
#[cfg(feature = "wgpu")]
impl<C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy> ApoKernels
    for burn::backend::Autodiff<burn::backend::Wgpu, C>
{
}

#[cfg(feature = "cuda")]
impl ApoKernels for burn::backend::Cuda {}
#[cfg(feature = "cuda")]
impl<C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy> ApoKernels
    for burn::backend::Autodiff<burn::backend::Cuda, C>
{
}

/// [`ApoKernels::prefix_attention`] from burn's tensor operations, on any backend, with `dropout`
/// on the attention weights when given.
pub fn attention_composite<B: Backend>(
    qkv: Tensor<B, 2>,
    rows: Rows,
    heads: usize,
    dropout: Option<&Dropout>,
) -> Tensor<B, 2> {
    let d = qkv.dims()[1] / 3;
    let Rows {
        groups: g,
        prefix: p,
        text: t,
        ..
    } = rows;
    let n = rows.sequences();
    let device = qkv.device();
    let [qp, kp, vp] = split_heads(
        qkv.clone().narrow(0, 0, g * p).reshape([g, p, 3 * d]),
        heads,
    );
    let op = attend(qp, kp.clone(), vp.clone(), None, dropout).reshape([g * p, d]);
    if n * t == 0 {
        return op;
    }
    let [qt, kt, vt] = split_heads(qkv.narrow(0, g * p, n * t).reshape([n, t, 3 * d]), heads);
    let (k, v) = shared_kv(rows, (kp, vp), (kt, vt));
    let ot = attend(qt, k, v, Some(text_bias::<B>(p, t, &device)), dropout).reshape([n * t, d]);
    Tensor::cat(vec![op, ot], 0)
}

/// Queries, keys and values `[N, H, L, d_h]` of a fused `qkv: [N, L, 3 d]`.
pub(crate) fn split_heads<B: Backend>(qkv: Tensor<B, 3>, heads: usize) -> [Tensor<B, 4>; 3] {
    let [n, l, d3] = qkv.dims();
    let d = d3 / 3;
    let dh = d / heads;
    let part = |i: usize| {
        qkv.clone()
            .narrow(2, i * d, d)
            .reshape([n, l, heads, dh])
            .swap_dims(1, 2)
    };
    [part(0), part(1), part(2)]
}

/// `softmax(q kᵀ / √d_h + bias) v`, heads merged back: `[N, L, d]`.
pub(crate) fn attend<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    bias: Option<Tensor<B, 2>>,
    dropout: Option<&Dropout>,
) -> Tensor<B, 3> {
    let [n, h, l, dh] = q.dims();
    let mut scores = q
        .matmul(k.swap_dims(2, 3))
        .mul_scalar(1.0 / (dh as f64).sqrt());
    if let Some(bias) = bias {
        scores = scores + bias.unsqueeze::<4>();
    }
    let mut attn = softmax(scores, 3);
    if let Some(dropout) = dropout {
        attn = dropout.forward(attn);
    }
    attn.matmul(v).swap_dims(1, 2).reshape([n, l, h * dh])
}

/// Each text sequence's keys and values `[G·S, H, P + T, d_h]`: its group's prefix
/// (`[G, H, P, d_h]`) repeated for the group's sequences, then its own text (`[G·S, H, T, d_h]`).
pub(crate) fn shared_kv<B: Backend>(
    rows: Rows,
    (kp, vp): (Tensor<B, 4>, Tensor<B, 4>),
    (kt, vt): (Tensor<B, 4>, Tensor<B, 4>),
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [g, h, p, dh] = kp.dims();
    let (s, n) = (rows.seqs, rows.sequences());
    let per_sequence = |x: Tensor<B, 4>| {
        x.unsqueeze_dim::<5>(1)
            .expand([g, s, h, p, dh])
            .reshape([n, h, p, dh])
    };
    (
        Tensor::cat(vec![per_sequence(kp), kt], 2),
        Tensor::cat(vec![per_sequence(vp), vt], 2),
    )
}

/// Additive attention bias of text rows `[T, P + T]`: 0 where text position `i` may attend
/// (every prefix column, text columns `j <= i`), a large negative number elsewhere.
fn text_bias<B: Backend>(p: usize, t: usize, device: &B::Device) -> Tensor<B, 2> {
    let n = p + t;
    let mut v = vec![0f32; t * n];
    for i in 0..t {
        for j in i + 1..t {
            v[i * n + p + j] = -1.0e9;
        }
    }
    Tensor::<B, 1>::from_floats(v.as_slice(), device).reshape([t, n])
}
