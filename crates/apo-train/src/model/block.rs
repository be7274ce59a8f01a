//! The pre-norm transformer layer ([`Block`]) of the image encoder and the decoder, and the
//! row layout ([`Rows`]) its attention reads.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::{Activation, Dense, StudentConfig};
use crate::kernels::{ApoKernels, attend, attention_composite, shared_kv, split_heads};

/// A pre-norm transformer layer.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    norm1: LayerNorm<B>,
    qkv: Dense<B>,
    proj: Dense<B>,
    norm2: LayerNorm<B>,
    fc1: Dense<B>,
    fc2: Dense<B>,
    dropout: Dropout,
    n_heads: usize,
    #[module(skip)]
    activation: Activation,
}

impl<B: Backend> Block<B> {
    pub(super) fn new(c: &StudentConfig, device: &B::Device) -> Self {
        let d = c.d_model;
        Block {
            norm1: LayerNormConfig::new(d).init(device),
            qkv: Dense::new(d, 3 * d, device),
            proj: Dense::new(d, d, device),
            norm2: LayerNormConfig::new(d).init(device),
            fc1: Dense::new(d, c.mlp_ratio * d, device),
            fc2: Dense::new(c.mlp_ratio * d, d, device),
            dropout: DropoutConfig::new(c.dropout).init(),
            n_heads: c.n_heads,
            activation: c.activation,
        }
    }

    pub(super) fn map_dense(self, f: &impl Fn(Dense<B>) -> Dense<B>) -> Self {
        Block {
            qkv: f(self.qkv),
            proj: f(self.proj),
            fc1: f(self.fc1),
            fc2: f(self.fc2),
            ..self
        }
    }
}

impl<B: ApoKernels> Block<B> {
    /// One layer over the rows of a batch laid out as `rows` (`x: [R, d]`): prefix rows
    /// attend to their group's prefix, text rows to their group's prefix and to the earlier
    /// text of their sequence. Returns the output and the layer's queries, keys and values
    /// `[R, 3 d]` (what incremental decoding continues from).
    pub(super) fn forward_rows(&self, x: Tensor<B, 2>, rows: Rows) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let qkv = self.qkv.forward(self.norm1.forward(x.clone()));
        let out = self.attention(qkv.clone(), rows);
        let x = x + self.dropout.forward(self.proj.forward(out));
        (self.mlp(x), qkv)
    }

    /// Attention over `rows` of `qkv: [R, 3 d]`: `[R, d]`. Without attention dropout,
    /// [`ApoKernels::prefix_attention`] (a fused kernel on the CPU backend); with it, the composite
    /// graph.
    pub(super) fn attention(&self, qkv: Tensor<B, 2>, rows: Rows) -> Tensor<B, 2> {
        if self.dropout.prob == 0.0 {
            B::prefix_attention(qkv, rows, self.n_heads)
        } else {
            self.attention_composite(qkv, rows)
        }
    }

    /// [`Block::attention`] from burn's tensor operations, on any backend.
    pub(crate) fn attention_composite(&self, qkv: Tensor<B, 2>, rows: Rows) -> Tensor<B, 2> {
        attention_composite(qkv, rows, self.n_heads, Some(&self.dropout))
    }

    /// The keys and values `[G·S, H, P + T, d_h]` each text sequence attends to (its group's
    /// prefix, then its own text), from a layer's `qkv: [R, 3 d]`.
    pub(super) fn text_kv(&self, qkv: Tensor<B, 2>, rows: Rows) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let d = qkv.dims()[1] / 3;
        let (g, p, n, t) = (rows.groups, rows.prefix, rows.sequences(), rows.text);
        let h = self.n_heads;
        let [_, kp, vp] = split_heads(qkv.clone().narrow(0, 0, g * p).reshape([g, p, 3 * d]), h);
        let [_, kt, vt] = split_heads(qkv.narrow(0, g * p, n * t).reshape([n, t, 3 * d]), h);
        shared_kv(rows, (kp, vp), (kt, vt))
    }

    /// As one text position through the layer, with the keys and values of earlier
    /// positions (`past`, each `[N, H, T_past, d_h]`) prepended; returns the output and the
    /// keys and values of all positions (what incremental decoding keeps).
    pub(super) fn forward_kv(
        &self,
        x: Tensor<B, 3>,
        past: (Tensor<B, 4>, Tensor<B, 4>),
    ) -> (Tensor<B, 3>, (Tensor<B, 4>, Tensor<B, 4>)) {
        let [q, k, v] = split_heads(
            self.qkv.forward(self.norm1.forward(x.clone())),
            self.n_heads,
        );
        let k = Tensor::cat(vec![past.0, k], 2);
        let v = Tensor::cat(vec![past.1, v], 2);
        let out = attend(q, k.clone(), v.clone(), None, Some(&self.dropout));
        let x = x + self.dropout.forward(self.proj.forward(out));
        (self.mlp(x), (k, v))
    }

    fn mlp<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let m = self.fc2.forward(
            self.activation
                .apply(self.fc1.forward(self.norm2.forward(x.clone()))),
        );
        x + self.dropout.forward(m)
    }
}

/// How the rows of a layer's `[R, d]` input are laid out: first the `groups · prefix`
/// prefix rows (group by group), then the `groups · seqs · text` text rows (sequence by
/// sequence; the `seqs` sequences of group `g` are `g · seqs .. (g + 1) · seqs`). Prefix rows
/// attend to their group's prefix; text rows to their group's prefix and to the earlier text
/// of their own sequence. The image encoder is the case `seqs = 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rows {
    /// Groups (images).
    pub groups: usize,
    /// Prefix rows per group.
    pub prefix: usize,
    /// Sequences per group.
    pub seqs: usize,
    /// Text rows per sequence.
    pub text: usize,
}

impl Rows {
    /// All rows.
    pub fn total(&self) -> usize {
        self.groups * self.prefix + self.sequences() * self.text
    }

    /// Text sequences over all groups.
    pub fn sequences(&self) -> usize {
        self.groups * self.seqs
    }

    /// The first row of sequence `s` of group `g`.
    pub fn text_row(&self, g: usize, s: usize) -> usize {
        self.groups * self.prefix + (g * self.seqs + s) * self.text
    }
}
