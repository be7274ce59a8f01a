//! CPU kernels for the NdArray backend, with hand-written backwards: prefix-LM attention
//! ([`attention`]) and the linear layer ([`linear`]).
//!
//! The composite graph of [`crate::model`]'s attention on NdArray copies the queries, keys
//! and values several times (head split, prefix repeated for every sequence of a group,
//! concatenation, transposes before each matrix product), runs the softmax as five passes,
//! and replays all of it in the backward. The attention kernel reads the fused `[rows, 3 d]`
//! query-key-value matrix in place and, for each group and head, forms the scores with
//! strided matrix products (ndarray's `general_mat_mul` on views, no copies), the softmax in
//! one pass per row, and the output into the `[rows, d]` result; the group's prefix keys and
//! values are read once for all its sequences, and their gradients are accumulated across
//! them. Groups × heads run in parallel on rayon's threads, each into its own buffers
//! (combined in task order), so the result does not depend on the number of threads.
//!
//! Both are [`ApoKernels`]'s implementation for `NdArray<f32>` and `Autodiff<NdArray<f32>, C>`;
//! every other backend runs the composite graphs on its own device.

use std::sync::Arc;

use apo_loss::host::{Cpu, HostTensor, to_ndarray, to_tensor};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, NdArray};
use burn::tensor::{DType, Tensor, TensorPrimitive};
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder};
use rayon::prelude::*;

use crate::kernels::{ApoKernels, attention_composite};
use crate::model::Rows;

impl ApoKernels for NdArray<f32> {
    const FUSED_LAYERS: bool = true;

    fn prefix_attention(qkv: Tensor<Self, 2>, rows: Rows, heads: usize) -> Tensor<Self, 2> {
        let [r, d3] = qkv.dims();
        let shape = Shape::new(rows, d3 / 3, heads);
        debug_assert_eq!(r, rows.total());
        let host = match qkv.dtype() {
            DType::F32 => HostTensor::from_tensor(qkv.clone()),
            _ => None,
        };
        let Some(host) = host else {
            return attention_composite(qkv, rows, heads, None);
        };
        let out = host.with_slice(|qkv| forward(qkv, &shape)).out;
        to_tensor(out, [r, shape.d])
    }

    fn linear_layer(x: Tensor<Self, 2>, w: Tensor<Self, 2>, b: Tensor<Self, 1>) -> Tensor<Self, 2> {
        let [r, i] = x.dims();
        let o = w.dims()[1];
        let hosts = match [x.dtype(), w.dtype(), b.dtype()] == [DType::F32; 3] {
            true => (
                HostTensor::from_tensor(x.clone()),
                HostTensor::from_tensor(w.clone()),
                HostTensor::from_tensor(b.clone()),
            ),
            false => (None, None, None),
        };
        let (Some(xh), Some(wh), Some(bh)) = hosts else {
            return burn::tensor::module::linear(x, w, Some(b));
        };
        to_tensor(linear_forward(&xh, &wh, &bh, [r, i, o]), [r, o])
    }
}

/// The composite graphs on f64 (the fused kernels are f32).
impl ApoKernels for NdArray<f64> {}

/// The composite graphs on f64 (the fused kernels are f32).
impl<C: CheckpointStrategy> ApoKernels for Autodiff<NdArray<f64>, C> {}

impl<C: CheckpointStrategy> ApoKernels for Autodiff<NdArray<f32>, C> {
    const FUSED_LAYERS: bool = true;

    fn prefix_attention(qkv: Tensor<Self, 2>, rows: Rows, heads: usize) -> Tensor<Self, 2> {
        let [r, d3] = qkv.dims();
        let shape = Shape::new(rows, d3 / 3, heads);
        debug_assert_eq!(r, rows.total());
        let primitive = qkv.clone().into_primitive().tensor();
        let host = match qkv.dtype() {
            DType::F32 => HostTensor::new(primitive.primitive.clone()),
            _ => None,
        };
        let Some(host) = host else {
            return attention_composite(qkv, rows, heads, None);
        };
        let fwd = host.with_slice(|qkv| forward(qkv, &shape));
        let out = to_ndarray(fwd.out, &[r, shape.d]);
        let output = match PrefixAttention
            .prepare::<C>([primitive.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(
                Arc::new(State {
                    qkv: host,
                    probs_prefix: fwd.probs_prefix,
                    probs_text: fwd.probs_text,
                    shape,
                }),
                out,
            ),
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        Tensor::from_primitive(TensorPrimitive::Float(output))
    }

    /// `x W + b`: one matrix product on the tensors in place (burn's default linear
    /// reshapes, and so copies, both operands of every product on NdArray), and in the
    /// backward `dx = dy Wᵀ`, `dW = xᵀ dy` on transposed views and `db` as column sums, each
    /// only for the operands that need a gradient.
    fn linear_layer(x: Tensor<Self, 2>, w: Tensor<Self, 2>, b: Tensor<Self, 1>) -> Tensor<Self, 2> {
        let [r, i] = x.dims();
        let o = w.dims()[1];
        let dims = [r, i, o];
        let f32s = [x.dtype(), w.dtype(), b.dtype()] == [DType::F32; 3];
        let (xp, wp, bp) = (
            x.clone().into_primitive().tensor(),
            w.clone().into_primitive().tensor(),
            b.clone().into_primitive().tensor(),
        );
        let hosts = match f32s {
            true => (
                HostTensor::new(xp.primitive.clone()),
                HostTensor::new(wp.primitive.clone()),
                HostTensor::new(bp.primitive.clone()),
            ),
            false => (None, None, None),
        };
        let (Some(xh), Some(wh), Some(bh)) = hosts else {
            return burn::tensor::module::linear(x, w, Some(b));
        };
        let y = to_ndarray(linear_forward(&xh, &wh, &bh, dims), &[r, o]);
        let out = match LinearOp
            .prepare::<C>([xp.node.clone(), wp.node.clone(), bp.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(Arc::new(LinearState { x: xh, w: wh, dims }), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }
}

fn linear_forward(
    x: &HostTensor,
    w: &HostTensor,
    b: &HostTensor,
    [r, i, o]: [usize; 3],
) -> Vec<f32> {
    let mut y = Vec::with_capacity(r * o);
    b.with_slice(|b| {
        for _ in 0..r {
            y.extend_from_slice(b);
        }
    });
    x.with_slice(|x| {
        w.with_slice(|w| {
            let mut yv = view_mut(&mut y, 0, (r, o), (o, 1));
            general_mat_mul(
                1.0,
                &view(x, 0, (r, i), (i, 1)),
                &view(w, 0, (i, o), (o, 1)),
                1.0,
                &mut yv,
            );
        })
    });
    y
}

#[derive(Debug)]
struct LinearState {
    x: HostTensor,
    w: HostTensor,
    dims: [usize; 3],
}

#[derive(Debug)]
struct LinearOp;

impl Backward<Cpu, 3> for LinearOp {
    type State = Arc<LinearState>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pw, pb] = ops.parents;
        let Some(dy) = HostTensor::new(grads.consume::<Cpu>(&ops.node)) else {
            return;
        };
        let state = ops.state;
        let [r, i, o] = state.dims;
        dy.with_slice(|dy| {
            let dyv = view(dy, 0, (r, o), (o, 1));
            if let Some(px) = px {
                let dx = state
                    .w
                    .with_slice(|w| product(&dyv, &view(w, 0, (o, i), (1, o))));
                grads.register::<Cpu>(px.id, to_ndarray(dx, &[r, i]));
            }
            if let Some(pw) = pw {
                let dw = state
                    .x
                    .with_slice(|x| product(&view(x, 0, (i, r), (1, i)), &dyv));
                grads.register::<Cpu>(pw.id, to_ndarray(dw, &[i, o]));
            }
            if let Some(pb) = pb {
                let mut db = vec![0.0f32; o];
                for row in dy.chunks(o) {
                    for (acc, &g) in db.iter_mut().zip(row) {
                        *acc += g;
                    }
                }
                grads.register::<Cpu>(pb.id, to_ndarray(db, &[o]));
            }
        });
    }
}

#[derive(Debug)]
struct State {
    qkv: HostTensor,
    probs_prefix: Vec<f32>,
    probs_text: Vec<f32>,
    shape: Shape,
}

#[derive(Debug)]
struct PrefixAttention;

impl Backward<Cpu, 1> for PrefixAttention {
    type State = Arc<State>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad_out = grads.consume::<Cpu>(&ops.node);
        let Some(parent) = parent else { return };
        let state = ops.state;
        let Some(dout) = HostTensor::new(grad_out) else {
            return;
        };
        let dqkv = state.qkv.with_slice(|qkv| {
            dout.with_slice(|dout| {
                backward(
                    qkv,
                    &state.probs_prefix,
                    &state.probs_text,
                    dout,
                    &state.shape,
                )
            })
        });
        let [r, d] = [state.shape.rows.total(), state.shape.d];
        grads.register::<Cpu>(parent.id, to_ndarray(dqkv, &[r, 3 * d]));
    }
}

/// Sizes of one attention call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    rows: Rows,
    d: usize,
    heads: usize,
    dh: usize,
    scale: f32,
}

impl Shape {
    pub(crate) fn new(rows: Rows, d: usize, heads: usize) -> Self {
        let dh = d / heads;
        Shape {
            rows,
            d,
            heads,
            dh,
            scale: (1.0 / (dh as f64).sqrt()) as f32,
        }
    }

    /// Probabilities of one (group, head) task: prefix `P × P`, text `S × T × (P + T)`.
    fn task_prefix(&self) -> usize {
        self.rows.prefix * self.rows.prefix
    }

    fn task_text(&self) -> usize {
        let Rows {
            prefix, seqs, text, ..
        } = self.rows;
        seqs * text * (prefix + text)
    }

    fn tasks(&self) -> usize {
        self.rows.groups * self.heads
    }
}

/// One task's index, probability slices and result.
type Slot<'a> = (usize, ((&'a mut [f32], &'a mut [f32]), &'a mut Vec<f32>));

/// Runs `task(k, probs_prefix_k, probs_text_k)` for every (group, head) task `k` on rayon's
/// threads and returns their results in task order. Each task writes only its own slices and
/// result, so the results do not depend on the number of threads.
fn for_each_task<F>(
    shape: &Shape,
    probs_prefix: &mut [f32],
    probs_text: &mut [f32],
    task: F,
) -> Vec<Vec<f32>>
where
    F: Fn(usize, &mut [f32], &mut [f32]) -> Vec<f32> + Sync,
{
    let tasks = shape.tasks();
    let mut results = vec![Vec::new(); tasks];
    let (np, nt) = (shape.task_prefix().max(1), shape.task_text().max(1));
    let mut slots: Vec<Slot<'_>> = probs_prefix
        .chunks_mut(np)
        .chain(std::iter::repeat_with(|| &mut [][..]))
        .zip(
            probs_text
                .chunks_mut(nt)
                .chain(std::iter::repeat_with(|| &mut [][..])),
        )
        .zip(results.iter_mut())
        .take(tasks)
        .enumerate()
        .collect();
    slots.par_iter_mut().for_each(|(k, ((p, t), out))| {
        **out = task(*k, p, t);
    });
    results
}

/// A `rows × cols` view of `data` from `offset` with strides `(rs, cs)`.
fn view(
    data: &[f32],
    offset: usize,
    dim: (usize, usize),
    strides: (usize, usize),
) -> ArrayView2<'_, f32> {
    ArrayView2::from_shape(dim.strides(strides), &data[offset..]).expect("view inside its buffer")
}

/// `a b` as a new row-major matrix.
fn product(a: &ArrayView2<'_, f32>, b: &ArrayView2<'_, f32>) -> Vec<f32> {
    let (m, n) = (a.nrows(), b.ncols());
    let mut c = vec![0.0f32; m * n];
    general_mat_mul(1.0, a, b, 0.0, &mut view_mut(&mut c, 0, (m, n), (n, 1)));
    c
}

/// A mutable `rows × cols` view of `data` from `offset` with strides `(rs, cs)`.
fn view_mut(
    data: &mut [f32],
    offset: usize,
    dim: (usize, usize),
    strides: (usize, usize),
) -> ArrayViewMut2<'_, f32> {
    ArrayViewMut2::from_shape(dim.strides(strides), &mut data[offset..])
        .expect("view inside its buffer")
}

/// Softmax of the first `valid` entries of `row` in place; the rest become 0.
fn softmax_prefix(row: &mut [f32], valid: usize) {
    let (live, dead) = row.split_at_mut(valid);
    let max = live.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for x in live.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    let inv = 1.0 / sum;
    for x in live.iter_mut() {
        *x *= inv;
    }
    dead.fill(0.0);
}

/// `dS = W ⊙ (dW − Σ_j W_j dW_j)` of one row, in place in `dw`.
fn softmax_backward_row(w: &[f32], dw: &mut [f32]) {
    let delta: f32 = w.iter().zip(dw.iter()).map(|(a, b)| a * b).sum();
    for (g, &p) in dw.iter_mut().zip(w) {
        *g = p * (*g - delta);
    }
}

/// Writes each task's local rows (`width` columns per part, `parts` parts per row, row
/// stride `parts · width`) into `out` (`[R, parts · d]`): local row `i < P` is the group's
/// prefix row `i`, the rest its text rows in order; part `c` of head `h` goes to columns
/// `c · d + h · width ..`.
fn scatter(out: &mut [f32], locals: &[Vec<f32>], shape: &Shape, parts: usize) {
    let (d, dh, heads) = (shape.d, shape.dh, shape.heads);
    let rows = shape.rows;
    let stride = parts * d;
    for (task, local) in locals.iter().enumerate() {
        let (g, h) = (task / heads, task % heads);
        let global = |i: usize| {
            if i < rows.prefix {
                g * rows.prefix + i
            } else {
                rows.text_row(g, 0) + (i - rows.prefix)
            }
        };
        for (i, row) in local.chunks(parts * dh).enumerate() {
            let base = global(i) * stride + h * dh;
            for c in 0..parts {
                out[base + c * d..base + c * d + dh].copy_from_slice(&row[c * dh..(c + 1) * dh]);
            }
        }
    }
}

/// What the forward keeps.
pub(crate) struct Forward {
    pub(crate) out: Vec<f32>,
    probs_prefix: Vec<f32>,
    probs_text: Vec<f32>,
}

/// The forward pass on host memory: `qkv: [R, 3 d]` row-major, output `[R, d]`.
pub(crate) fn forward(qkv: &[f32], shape: &Shape) -> Forward {
    let Shape {
        rows,
        d,
        heads,
        dh,
        scale,
    } = *shape;
    let (p, seqs, t) = (rows.prefix, rows.seqs, rows.text);
    let (d3, w) = (3 * d, p + t);
    let mut probs_prefix = vec![0.0f32; shape.tasks() * shape.task_prefix()];
    let mut probs_text = vec![0.0f32; shape.tasks() * shape.task_text()];
    let locals = for_each_task(shape, &mut probs_prefix, &mut probs_text, |task, pp, pt| {
        let (g, h) = (task / heads, task % heads);
        let (q, k, v) = (h * dh, d + h * dh, 2 * d + h * dh);
        let pr = g * p;
        let mut o = vec![0.0f32; (p + seqs * t) * dh];
        let vp = view(qkv, pr * d3 + v, (p, dh), (d3, 1));
        let kp_t = view(qkv, pr * d3 + k, (dh, p), (1, d3));
        if p > 0 {
            let qp = view(qkv, pr * d3 + q, (p, dh), (d3, 1));
            general_mat_mul(scale, &qp, &kp_t, 0.0, &mut view_mut(pp, 0, (p, p), (p, 1)));
            for row in pp.chunks_mut(p) {
                softmax_prefix(row, p);
            }
            let probs = view(pp, 0, (p, p), (p, 1));
            general_mat_mul(
                1.0,
                &probs,
                &vp,
                0.0,
                &mut view_mut(&mut o, 0, (p, dh), (dh, 1)),
            );
        }
        for s in 0..seqs {
            let tr = rows.text_row(g, s);
            let wt = &mut pt[s * t * w..(s + 1) * t * w];
            let qt = view(qkv, tr * d3 + q, (t, dh), (d3, 1));
            let kt_t = view(qkv, tr * d3 + k, (dh, t), (1, d3));
            let vt = view(qkv, tr * d3 + v, (t, dh), (d3, 1));
            general_mat_mul(scale, &qt, &kp_t, 0.0, &mut view_mut(wt, 0, (t, p), (w, 1)));
            general_mat_mul(scale, &qt, &kt_t, 0.0, &mut view_mut(wt, p, (t, t), (w, 1)));
            for (i, row) in wt.chunks_mut(w).enumerate() {
                softmax_prefix(row, p + i + 1);
            }
            let mut ot = view_mut(&mut o, (p + s * t) * dh, (t, dh), (dh, 1));
            general_mat_mul(1.0, &view(wt, 0, (t, p), (w, 1)), &vp, 0.0, &mut ot);
            general_mat_mul(1.0, &view(wt, p, (t, t), (w, 1)), &vt, 1.0, &mut ot);
        }
        o
    });
    let mut out = vec![0.0f32; rows.total() * d];
    scatter(&mut out, &locals, shape, 1);
    Forward {
        out,
        probs_prefix,
        probs_text,
    }
}

/// The backward pass: `∂L/∂qkv: [R, 3 d]` from `∂L/∂out: [R, d]`.
fn backward(
    qkv: &[f32],
    probs_prefix: &[f32],
    probs_text: &[f32],
    dout: &[f32],
    shape: &Shape,
) -> Vec<f32> {
    let Shape {
        rows,
        d,
        heads,
        dh,
        scale,
    } = *shape;
    let (p, seqs, t) = (rows.prefix, rows.seqs, rows.text);
    let (d3, w) = (3 * d, p + t);
    // Scratch for dW, one per task: `P × P` and one sequence's `T × (P + T)`.
    let scratch_shape = Shape {
        rows: Rows {
            seqs: seqs.min(1),
            ..rows
        },
        ..*shape
    };
    let mut scratch_p = vec![0.0f32; shape.tasks() * scratch_shape.task_prefix()];
    let mut scratch_t = vec![0.0f32; shape.tasks() * scratch_shape.task_text()];
    let locals = for_each_task(
        &scratch_shape,
        &mut scratch_p,
        &mut scratch_t,
        |task, sp, st| {
            let (g, h) = (task / heads, task % heads);
            let (q, k, v) = (h * dh, d + h * dh, 2 * d + h * dh);
            let pr = g * p;
            let pt = &probs_text[task * shape.task_text()..(task + 1) * shape.task_text()];
            let pp = &probs_prefix[task * shape.task_prefix()..(task + 1) * shape.task_prefix()];
            // Local gradient rows: [dq | dk | dv] of the group's prefix rows, then its text rows.
            let ld = 3 * dh;
            let mut local = vec![0.0f32; (p + seqs * t) * ld];
            let qp = view(qkv, pr * d3 + q, (p, dh), (d3, 1));
            let kp = view(qkv, pr * d3 + k, (p, dh), (d3, 1));
            let vp_t = view(qkv, pr * d3 + v, (dh, p), (1, d3));
            for s in 0..seqs {
                let tr = rows.text_row(g, s);
                let lt = (p + s * t) * ld;
                let wt = &pt[s * t * w..(s + 1) * t * w];
                let dw = &mut st[..t * w];
                let dot = view(dout, tr * d + q, (t, dh), (d, 1));
                let qt = view(qkv, tr * d3 + q, (t, dh), (d3, 1));
                let kt = view(qkv, tr * d3 + k, (t, dh), (d3, 1));
                let vt_t = view(qkv, tr * d3 + v, (dh, t), (1, d3));
                // dW = dO Vᵀ over the [prefix ; text] columns, then dS.
                general_mat_mul(1.0, &dot, &vp_t, 0.0, &mut view_mut(dw, 0, (t, p), (w, 1)));
                general_mat_mul(1.0, &dot, &vt_t, 0.0, &mut view_mut(dw, p, (t, t), (w, 1)));
                for (wr, dr) in wt.chunks(w).zip(dw.chunks_mut(w)) {
                    softmax_backward_row(wr, dr);
                }
                let ds_p = view(dw, 0, (t, p), (w, 1));
                let ds_t = view(dw, p, (t, t), (w, 1));
                // dQ_t = scale (dS_p K_p + dS_t K_t)
                let mut dq = view_mut(&mut local, lt, (t, dh), (ld, 1));
                general_mat_mul(scale, &ds_p, &kp, 0.0, &mut dq);
                general_mat_mul(scale, &ds_t, &kt, 1.0, &mut dq);
                // dK_t = scale dS_tᵀ Q_t; dV_t = W_tᵀ dO_t
                let ds_t_t = view(dw, p, (t, t), (1, w));
                general_mat_mul(
                    scale,
                    &ds_t_t,
                    &qt,
                    0.0,
                    &mut view_mut(&mut local, lt + dh, (t, dh), (ld, 1)),
                );
                let w_t_t = view(wt, p, (t, t), (1, w));
                general_mat_mul(
                    1.0,
                    &w_t_t,
                    &dot,
                    0.0,
                    &mut view_mut(&mut local, lt + 2 * dh, (t, dh), (ld, 1)),
                );
                // dK_p += scale dS_pᵀ Q_t; dV_p += W_pᵀ dO_t
                if p > 0 {
                    let ds_p_t = view(dw, 0, (p, t), (1, w));
                    general_mat_mul(
                        scale,
                        &ds_p_t,
                        &qt,
                        1.0,
                        &mut view_mut(&mut local, dh, (p, dh), (ld, 1)),
                    );
                    let w_p_t = view(wt, 0, (p, t), (1, w));
                    general_mat_mul(
                        1.0,
                        &w_p_t,
                        &dot,
                        1.0,
                        &mut view_mut(&mut local, 2 * dh, (p, dh), (ld, 1)),
                    );
                }
            }
            if p > 0 {
                let dop = view(dout, pr * d + q, (p, dh), (d, 1));
                general_mat_mul(1.0, &dop, &vp_t, 0.0, &mut view_mut(sp, 0, (p, p), (p, 1)));
                for (wr, dr) in pp.chunks(p).zip(sp.chunks_mut(p)) {
                    softmax_backward_row(wr, dr);
                }
                let ds = view(sp, 0, (p, p), (p, 1));
                general_mat_mul(
                    scale,
                    &ds,
                    &kp,
                    0.0,
                    &mut view_mut(&mut local, 0, (p, dh), (ld, 1)),
                );
                let ds_t = view(sp, 0, (p, p), (1, p));
                general_mat_mul(
                    scale,
                    &ds_t,
                    &qp,
                    1.0,
                    &mut view_mut(&mut local, dh, (p, dh), (ld, 1)),
                );
                let w_t = view(pp, 0, (p, p), (1, p));
                general_mat_mul(
                    1.0,
                    &w_t,
                    &dop,
                    1.0,
                    &mut view_mut(&mut local, 2 * dh, (p, dh), (ld, 1)),
                );
            }
            local
        },
    );
    let mut dqkv = vec![0.0f32; rows.total() * d3];
    scatter(&mut dqkv, &locals, shape, 3);
    dqkv
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernels' results are bitwise the same on one thread and on several.
    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let rows = Rows {
            groups: 3,
            prefix: 4,
            seqs: 2,
            text: 5,
        };
        let shape = Shape::new(rows, 8, 2);
        let r = rows.total();
        let qkv: Vec<f32> = (0..r * 24)
            .map(|i| ((i * 7919 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let dout: Vec<f32> = (0..r * 8)
            .map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0)
            .collect();
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("a thread pool")
                .install(|| {
                    let f = forward(&qkv, &shape);
                    let d = backward(&qkv, &f.probs_prefix, &f.probs_text, &dout, &shape);
                    (f.out, d)
                })
        };
        let (out1, d1) = run(1);
        let (out4, d4) = run(4);
        assert!(out1.iter().any(|&x| x != 0.0) && d1.iter().any(|&x| x != 0.0));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&out1), bits(&out4));
        assert_eq!(bits(&d1), bits(&d4));
    }
}
