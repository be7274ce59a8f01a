//! The student: a small vision-language model.
//!
//! An image encoder (a strided-convolution patch embedding, learned positions and pre-norm
//! transformer layers) turns a `[G, 1, H, W]` batch of images into `P` prefix vectors each.
//! A decoder (token and position embeddings, pre-norm transformer layers, a vocabulary head)
//! reads `[prefix ; text]`: the prefix attends to itself, text attends to the prefix and to
//! earlier text (a prefix language model). Each image is encoded once per group and its
//! prefix shared by the group's sequences (the consensus and every negative of a preference
//! group, or one trajectory per teacher). Every linear layer can carry a LoRA adapter.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig,
    Linear, LinearConfig,
};
use burn::tensor::activation::{gelu, relu, sigmoid};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use crate::kernels::{ApoKernels, attend, attention_composite, shared_kv, split_heads};
use crate::{Result, TrainError};

/// The student's architecture.
#[derive(Config, Debug, PartialEq)]
pub struct StudentConfig {
    /// Text vocabulary (the tokenizer's size).
    pub vocab_size: usize,
    /// Image width and height in pixels.
    #[config(default = 64)]
    pub image_size: usize,
    /// Patch width and height (the image size must be a multiple).
    #[config(default = 8)]
    pub patch_size: usize,
    /// Model width.
    #[config(default = 128)]
    pub d_model: usize,
    /// Attention heads (must divide `d_model`).
    #[config(default = 4)]
    pub n_heads: usize,
    /// Image encoder layers.
    #[config(default = 2)]
    pub encoder_layers: usize,
    /// Decoder layers.
    #[config(default = 2)]
    pub decoder_layers: usize,
    /// MLP width as a multiple of `d_model`.
    #[config(default = 4)]
    pub mlp_ratio: usize,
    /// Longest text (prompt and completion with their special tokens).
    #[config(default = 192)]
    pub max_text_len: usize,
    /// Dropout probability (0 for deterministic training).
    #[config(default = 0.0)]
    pub dropout: f64,
    /// The MLP activation.
    #[config(default = "Activation::Relu")]
    pub activation: Activation,
    /// Add a projection of the mean prefix vector to every text embedding (a direct path
    /// from the image to each token, besides attention to the prefix). Without it a model
    /// trained from scratch takes several times more steps before its text depends on the
    /// image.
    #[config(default = true)]
    pub image_summary: bool,
    /// A linear head from the mean image vector to one logit per finding (stage 1's
    /// auxiliary concept loss; read when generating only with `concept_input`).
    #[config(default = false)]
    pub concept_head: bool,
    /// Feed the concept head's probabilities (`σ` of its 14 logits) through a `14 → d`
    /// projection into every text embedding, next to the image summary: a low-dimensional,
    /// explicitly supervised path from what the image shows to the text. Needs `concept_head`.
    #[config(default = false)]
    pub concept_input: bool,
}

/// The MLP activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// `x · σ(1.702 x)` (CLIP's GELU approximation).
    QuickGelu,
    /// The exact GELU `x · Φ(x)` (erf-based; several times slower on the CPU backend).
    Gelu,
    /// `max(0, x)`: the default, by far the cheapest on the CPU backend (on the stage-2
    /// reference step, burn's erf-based `gelu` cost 0.27 s more per step, `quick-gelu` 0.2 s).
    #[default]
    Relu,
}

impl Activation {
    fn apply<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Activation::QuickGelu => x.clone() * sigmoid(x.mul_scalar(1.702)),
            Activation::Gelu => gelu(x),
            Activation::Relu => relu(x),
        }
    }
}

impl StudentConfig {
    /// Checks the ranges.
    ///
    /// # Errors
    /// [`TrainError::Config`] naming the field and what it must be.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, value: String, expected: &str| {
            Err(TrainError::Config {
                field: format!("model.{field}"),
                value,
                expected: expected.into(),
            })
        };
        if self.vocab_size < 8 {
            return bad("vocab_size", self.vocab_size.to_string(), "at least 8");
        }
        if self.patch_size == 0
            || self.image_size == 0
            || !self.image_size.is_multiple_of(self.patch_size)
        {
            return bad(
                "patch_size",
                self.patch_size.to_string(),
                &format!("a positive divisor of image_size = {}", self.image_size),
            );
        }
        if self.d_model == 0 || self.n_heads == 0 || !self.d_model.is_multiple_of(self.n_heads) {
            return bad(
                "n_heads",
                self.n_heads.to_string(),
                &format!("a positive divisor of d_model = {}", self.d_model),
            );
        }
        if self.decoder_layers == 0 {
            return bad("decoder_layers", "0".into(), "at least 1");
        }
        if self.mlp_ratio == 0 {
            return bad("mlp_ratio", "0".into(), "at least 1");
        }
        if self.concept_input && !self.concept_head {
            return bad(
                "concept_input",
                "true".into(),
                "false unless the model has a concept head (model.concept_weight > 0)",
            );
        }
        if self.max_text_len < 4 {
            return bad("max_text_len", self.max_text_len.to_string(), "at least 4");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", self.dropout.to_string(), "in [0, 1)");
        }
        Ok(())
    }

    /// Prefix vectors per image.
    pub fn patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    /// A fresh student.
    ///
    /// # Errors
    /// As [`StudentConfig::validate`].
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<Student<B>> {
        self.validate()?;
        let d = self.d_model;
        let block = || Block::new(self, device);
        Ok(Student {
            patch: Conv2dConfig::new([1, d], [self.patch_size, self.patch_size])
                .with_stride([self.patch_size, self.patch_size])
                .init(device),
            image_pos: Param::from_tensor(Tensor::random(
                [1, self.patches(), d],
                burn::tensor::Distribution::Normal(0.0, 0.02),
                device,
            )),
            encoder: (0..self.encoder_layers).map(|_| block()).collect(),
            encoder_norm: LayerNormConfig::new(d).init(device),
            token_embedding: EmbeddingConfig::new(self.vocab_size, d)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                })
                .init(device),
            text_pos: EmbeddingConfig::new(self.max_text_len, d)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                })
                .init(device),
            decoder: (0..self.decoder_layers).map(|_| block()).collect(),
            norm: LayerNormConfig::new(d).init(device),
            head: Dense::new(d, self.vocab_size, device),
            summary: self.image_summary.then(|| Dense::new(d, d, device)),
            concepts: self
                .concept_head
                .then(|| Dense::new(d, cxr_max::Finding::ALL.len(), device)),
            concept_input: self
                .concept_input
                .then(|| Dense::new(cxr_max::Finding::ALL.len(), d, device)),
            patches: self.patches(),
            max_text_len: self.max_text_len,
        })
    }
}

/// A LoRA adapter `x ↦ scale · (x A) B` with `A: [d_in, r]`, `B: [r, d_out]` (B starts at 0).
#[derive(Module, Debug)]
pub struct Lora<B: Backend> {
    /// Down projection.
    pub a: Param<Tensor<B, 2>>,
    /// Up projection.
    pub b: Param<Tensor<B, 2>>,
    /// `alpha / r`.
    pub scale: f64,
}

/// A linear layer with an optional LoRA adapter.
#[derive(Module, Debug)]
pub struct Dense<B: Backend> {
    /// The base layer.
    pub linear: Linear<B>,
    /// The adapter.
    pub lora: Option<Lora<B>>,
}

impl<B: Backend> Dense<B> {
    fn new(d_in: usize, d_out: usize, device: &B::Device) -> Self {
        Dense {
            linear: LinearConfig::new(d_in, d_out).init(device),
            lora: None,
        }
    }
}

impl<B: ApoKernels> Dense<B> {
    /// `x W + b (+ scale x A B)`, over the last dimension of `x`. The leading dimensions
    /// are flattened first, so the layer is one matrix product `[rows, d_in] × [d_in, d_out]`
    /// (and its gradients two), not one small product per leading index with the weight
    /// repacked for each and its gradient summed over them afterwards.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.dims();
        let d_in = dims[D - 1];
        let rows = dims[..D - 1].iter().product::<usize>();
        let x: Tensor<B, 2> = if D == 2 {
            // Already a matrix: a reshape would copy it on NdArray.
            Tensor::from_primitive(x.into_primitive())
        } else {
            x.reshape([rows, d_in])
        };
        let mut y = self.base(x.clone());
        if let Some(l) = &self.lora {
            y = y + x.matmul(l.a.val()).matmul(l.b.val()).mul_scalar(l.scale);
        }
        if D == 2 {
            return Tensor::from_primitive(y.into_primitive());
        }
        let mut out = dims;
        out[D - 1] = y.dims()[1];
        y.reshape(out)
    }

    /// `x W + b` of the base layer ([`ApoKernels::linear_layer`]: the fused product on the CPU
    /// backend).
    fn base(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match &self.linear.bias {
            Some(bias) => B::linear_layer(x, self.linear.weight.val(), bias.val()),
            None => self.linear.forward(x),
        }
    }
}

impl<B: Backend> Dense<B> {
    fn with_lora(mut self, rank: usize, alpha: f64, device: &B::Device) -> Self {
        let [d_in, d_out] = self.linear.weight.dims();
        let bound = (1.0 / d_in as f64).sqrt();
        self.lora = Some(Lora {
            a: Param::from_tensor(Tensor::random(
                [d_in, rank],
                burn::tensor::Distribution::Uniform(-bound, bound),
                device,
            )),
            b: Param::from_tensor(Tensor::zeros([rank, d_out], device)),
            scale: alpha / rank as f64,
        });
        self
    }

    fn merged(mut self) -> Self {
        if let Some(l) = self.lora.take() {
            let delta = l.a.val().matmul(l.b.val()).mul_scalar(l.scale);
            let w = self.linear.weight.val() + delta;
            self.linear.weight = Param::initialized(self.linear.weight.id, w.detach());
        }
        self
    }
}

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
    fn new(c: &StudentConfig, device: &B::Device) -> Self {
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

    fn map_dense(self, f: &impl Fn(Dense<B>) -> Dense<B>) -> Self {
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
    fn forward_rows(&self, x: Tensor<B, 2>, rows: Rows) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let qkv = self.qkv.forward(self.norm1.forward(x.clone()));
        let out = self.attention(qkv.clone(), rows);
        let x = x + self.dropout.forward(self.proj.forward(out));
        (self.mlp(x), qkv)
    }

    /// Attention over `rows` of `qkv: [R, 3 d]`: `[R, d]`. Without attention dropout,
    /// [`ApoKernels::prefix_attention`] (a fused kernel on the CPU backend); with it, the composite
    /// graph.
    fn attention(&self, qkv: Tensor<B, 2>, rows: Rows) -> Tensor<B, 2> {
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
    fn text_kv(&self, qkv: Tensor<B, 2>, rows: Rows) -> (Tensor<B, 4>, Tensor<B, 4>) {
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
    fn forward_kv(
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

/// The student model.
#[derive(Module, Debug)]
pub struct Student<B: Backend> {
    patch: Conv2d<B>,
    image_pos: Param<Tensor<B, 3>>,
    encoder: Vec<Block<B>>,
    encoder_norm: LayerNorm<B>,
    token_embedding: Embedding<B>,
    text_pos: Embedding<B>,
    decoder: Vec<Block<B>>,
    norm: LayerNorm<B>,
    head: Dense<B>,
    summary: Option<Dense<B>>,
    concepts: Option<Dense<B>>,
    concept_input: Option<Dense<B>>,
    patches: usize,
    max_text_len: usize,
}

impl<B: ApoKernels> Student<B> {
    /// Prefix vectors `[G, P, d]` of images `[G, 1, H, W]`.
    pub fn encode(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        let x = self.patch.forward(images); // [G, d, H/p, W/p]
        let [g, d, _, _] = x.dims();
        let p = self.patches;
        let x = x.reshape([g, d, p]).swap_dims(1, 2) + self.image_pos.val();
        let rows = Rows {
            groups: g,
            prefix: p,
            seqs: 0,
            text: 0,
        };
        let mut x = x.reshape([g * p, d]);
        for block in &self.encoder {
            x = block.forward_rows(x, rows).0;
        }
        self.encoder_norm.forward(x).reshape([g, p, d])
    }

    /// Next-token logits `[G · S, T, V]` of `tokens: [G · S, T]`, where the `S` sequences of
    /// group `g` (rows `g · S .. (g + 1) · S`) share the prefix `prefix[g]`.
    ///
    /// # Panics
    /// When `T` exceeds `max_text_len` or the rows are not a multiple of the groups; the
    /// training loops check both first and report a [`TrainError`].
    pub fn decode(&self, prefix: Tensor<B, 3>, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let (mut x, rows, _) = self.decoder_input(prefix, tokens);
        for block in &self.decoder {
            x = block.forward_rows(x, rows).0;
        }
        self.head
            .forward(self.norm.forward(self.text_rows(x, rows)))
    }

    /// The decoder's `[R, d]` input rows (`[prefix ; text]`, see [`Rows`]), their layout, and
    /// the image summary added to every text row (`[G · S, 1, d]`).
    #[allow(clippy::type_complexity)]
    fn decoder_input(
        &self,
        prefix: Tensor<B, 3>,
        tokens: Tensor<B, 2, Int>,
    ) -> (Tensor<B, 2>, Rows, Option<Tensor<B, 3>>) {
        let [g, p, d] = prefix.dims();
        let [n, t] = tokens.dims();
        assert!(t <= self.max_text_len, "text of {t} tokens");
        assert_eq!(n % g, 0, "rows are groups of equal size");
        let rows = Rows {
            groups: g,
            prefix: p,
            seqs: n / g,
            text: t,
        };
        let summary = self.summary(&prefix, rows.seqs);
        let mut xt = self.embed(tokens, 0);
        if let Some(s) = &summary {
            xt = xt + s.clone();
        }
        let x = Tensor::cat(vec![prefix.reshape([g * p, d]), xt.reshape([n * t, d])], 0);
        (x, rows, summary)
    }

    /// The text rows of a decoder layer's output as `[G · S, T, d]`.
    fn text_rows(&self, x: Tensor<B, 2>, rows: Rows) -> Tensor<B, 3> {
        let d = x.dims()[1];
        let (n, t) = (rows.sequences(), rows.text);
        x.narrow(0, rows.groups * rows.prefix, n * t)
            .reshape([n, t, d])
    }

    /// Concept logits `[G, 14]` (one per finding, in `Finding::ALL` order) of prefixes
    /// `[G, P, d]`, when the model has a concept head.
    pub fn concepts(&self, prefix: &Tensor<B, 3>) -> Option<Tensor<B, 2>> {
        let dense = self.concepts.as_ref()?;
        let [g, _, d] = prefix.dims();
        Some(dense.forward(prefix.clone().mean_dim(1).reshape([g, d])))
    }

    /// The image summary of each of the `G` prefixes (its projection of the mean image
    /// vector, plus the projected concept probabilities when the model feeds them back),
    /// repeated for the `s` sequences of its group: `[G · s, 1, d]`.
    fn summary(&self, prefix: &Tensor<B, 3>, s: usize) -> Option<Tensor<B, 3>> {
        let [g, _, d] = prefix.dims();
        let mean = prefix.clone().mean_dim(1); // [G, 1, d]
        let projected = self
            .summary
            .as_ref()
            .map(|dense| dense.forward(mean.clone()));
        let concepts = match (&self.concepts, &self.concept_input) {
            (Some(head), Some(input)) => Some(input.forward(sigmoid(head.forward(mean)))),
            _ => None,
        };
        let x = match (projected, concepts) {
            (Some(a), Some(b)) => a + b,
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return None,
        };
        Some(if s == 1 {
            x
        } else {
            x.unsqueeze_dim::<4>(1)
                .expand([g, s, 1, d])
                .reshape([g * s, 1, d])
        })
    }

    /// Token plus position embeddings of `tokens: [N, T]` at positions `start..start + T`.
    fn embed(&self, tokens: Tensor<B, 2, Int>, start: usize) -> Tensor<B, 3> {
        let [n, t] = tokens.dims();
        let device = tokens.device();
        let positions = Tensor::<B, 1, Int>::arange(start as i64..(start + t) as i64, &device)
            .unsqueeze::<2>()
            .expand([n, t]);
        self.token_embedding.forward(tokens) + self.text_pos.forward(positions)
    }

    /// Starts incremental decoding: reads `[prefix ; tokens]` (`tokens: [G, T]`, one
    /// sequence per prefix) and returns the next-token logits `[G, V]` of the last position
    /// and the cache of every layer's keys and values.
    pub fn decode_start(
        &self,
        prefix: Tensor<B, 3>,
        tokens: Tensor<B, 2, Int>,
    ) -> (Tensor<B, 2>, DecodeCache<B>) {
        let (mut x, rows, summary) = self.decoder_input(prefix, tokens);
        let mut kv = Vec::with_capacity(self.decoder.len());
        for block in &self.decoder {
            let (y, qkv) = block.forward_rows(x, rows);
            kv.push(block.text_kv(qkv, rows));
            x = y;
        }
        let t = rows.text;
        let last = self
            .norm
            .forward(self.text_rows(x, rows).narrow(1, t - 1, 1));
        let logits = self.head.forward(last).squeeze_dim::<2>(1);
        (
            logits,
            DecodeCache {
                kv,
                text_len: t,
                summary,
            },
        )
    }

    /// Feeds one more token per sequence (`[G, 1]`) and returns the next-token logits
    /// `[G, V]`; the same numbers as [`Student::decode`] over the whole text, without
    /// recomputing earlier positions.
    ///
    /// # Panics
    /// When the text would exceed `max_text_len`.
    pub fn decode_next(
        &self,
        cache: &mut DecodeCache<B>,
        token: Tensor<B, 2, Int>,
    ) -> Tensor<B, 2> {
        let pos = cache.text_len;
        assert!(pos < self.max_text_len, "text of {} tokens", pos + 1);
        let mut x = self.embed(token, pos);
        if let Some(s) = &cache.summary {
            x = x + s.clone();
        }
        for (block, kv) in self.decoder.iter().zip(cache.kv.iter_mut()) {
            let past = (kv.0.clone(), kv.1.clone());
            let (y, next) = block.forward_kv(x, past);
            x = y;
            *kv = next;
        }
        cache.text_len += 1;
        self.head.forward(self.norm.forward(x)).squeeze_dim::<2>(1)
    }
}

impl<B: Backend> Student<B> {
    /// The longest text the model reads.
    pub fn max_text_len(&self) -> usize {
        self.max_text_len
    }

    /// Adds LoRA adapters of rank `rank` to every linear layer and freezes everything else.
    pub fn with_lora(self, rank: usize, alpha: f64, device: &B::Device) -> Self {
        let frozen = self.no_grad();
        let add = |dense: Dense<B>| dense.with_lora(rank, alpha, device);
        Student {
            encoder: frozen
                .encoder
                .into_iter()
                .map(|b| b.map_dense(&add))
                .collect(),
            decoder: frozen
                .decoder
                .into_iter()
                .map(|b| b.map_dense(&add))
                .collect(),
            head: add(frozen.head),
            summary: frozen.summary.map(add),
            ..frozen
        }
    }

    /// Folds every LoRA adapter into its base weights (`W + scale · A B`) and removes it.
    pub fn merged(self) -> Self {
        let merge = |dense: Dense<B>| dense.merged();
        Student {
            encoder: self
                .encoder
                .into_iter()
                .map(|b| b.map_dense(&merge))
                .collect(),
            decoder: self
                .decoder
                .into_iter()
                .map(|b| b.map_dense(&merge))
                .collect(),
            head: merge(self.head),
            summary: self.summary.map(merge),
            ..self
        }
    }

    /// A digest of every weight's bits, in module order (FNV-1a over the little-endian f32
    /// bytes): equal digests mean bitwise-equal weights, whatever the parameter ids.
    pub fn weights_digest(&self) -> String {
        struct Collect(Vec<u8>);
        impl<B: Backend> burn::module::ModuleVisitor<B> for Collect {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                let data = param.val().into_data().convert::<f32>();
                for x in data.iter::<f32>() {
                    self.0.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
        let mut c = Collect(Vec::new());
        self.visit(&mut c);
        crate::checkpoint::fnv(&[&c.0])
    }

    /// Whether any layer carries a LoRA adapter.
    pub fn has_lora(&self) -> bool {
        self.head.lora.is_some()
    }
}

/// Keys and values of every decoder layer for incremental decoding.
#[derive(Debug, Clone)]
pub struct DecodeCache<B: Backend> {
    kv: Vec<(Tensor<B, 4>, Tensor<B, 4>)>,
    text_len: usize,
    summary: Option<Tensor<B, 3>>,
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

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::{Distribution, TensorData};

    type Ad = Autodiff<NdArray>;

    fn max_diff(a: TensorData, b: TensorData) -> f32 {
        a.iter::<f32>()
            .zip(b.iter::<f32>())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// The CPU backends the trainer runs on (the `cpu` device's autodiff backend and its
    /// inner backend, which the frozen reference and evaluation use) take the fused kernels,
    /// so the comparisons below compare two different implementations.
    #[test]
    fn the_cpu_backends_take_the_fused_kernels() {
        type Inner = <crate::device::Cpu as burn::tensor::backend::AutodiffBackend>::InnerBackend;
        const {
            assert!(<crate::device::Cpu as ApoKernels>::FUSED_LAYERS);
            assert!(<Inner as ApoKernels>::FUSED_LAYERS);
            assert!(<crate::device::Cpu as apo_loss::tensor::LossKernels>::FUSED_LOGPROBS);
            assert!(<Inner as apo_loss::tensor::LossKernels>::FUSED_LOGPROBS);
            assert!(!<Autodiff<NdArray<f64>> as ApoKernels>::FUSED_LAYERS);
        }
    }

    /// The fused CPU attention against the composite graph: outputs and `∂L/∂qkv` for a
    /// random upstream gradient, on decoder layouts (prefix + text, shared by each group's
    /// sequences) and the encoder layout (prefix only).
    #[test]
    fn fused_attention_matches_the_composite_graph() {
        let device = Default::default();
        <Ad as Backend>::seed(&device, 11);
        let config = StudentConfig::new(32).with_d_model(16).with_n_heads(2);
        let block = Block::<Ad>::new(&config, &device);
        for rows in [
            Rows {
                groups: 2,
                prefix: 3,
                seqs: 3,
                text: 5,
            },
            Rows {
                groups: 3,
                prefix: 4,
                seqs: 0,
                text: 0,
            },
            Rows {
                groups: 1,
                prefix: 2,
                seqs: 1,
                text: 7,
            },
        ] {
            let r = rows.total();
            // Scores of a few units: the softmax is far from uniform.
            let qkv = Tensor::<Ad, 2>::random([r, 48], Distribution::Normal(0.0, 2.0), &device);
            let upstream = Tensor::<Ad, 2>::random([r, 16], Distribution::Default, &device);
            let fused_in = qkv.clone().detach().require_grad();
            let composite_in = qkv.detach().require_grad();
            let fused = block.attention(fused_in.clone(), rows);
            let composite = block.attention_composite(composite_in.clone(), rows);
            let diff = max_diff(fused.to_data(), composite.to_data());
            assert!(diff < 1e-5, "{rows:?}: outputs differ by {diff}");
            let gf = (fused * upstream.clone()).sum().backward();
            let gc = (composite * upstream).sum().backward();
            let (gf, gc) = (
                fused_in.grad(&gf).expect("gradient"),
                composite_in.grad(&gc).expect("gradient"),
            );
            let scale = gc
                .to_data()
                .iter::<f32>()
                .fold(0.0f32, |m, x| m.max(x.abs()));
            assert!(scale > 0.1, "{rows:?}: gradient {scale}");
            let diff = max_diff(gf.to_data(), gc.to_data());
            assert!(
                diff < 1e-5 * scale.max(1.0),
                "{rows:?}: gradients differ by {diff}"
            );
            // Without autodiff, the same forward.
            let plain = Block::<NdArray>::new(&config, &device);
            let q = Tensor::<NdArray, 2>::from_data(fused_in.to_data(), &device);
            let diff = max_diff(
                plain.attention(q.clone(), rows).to_data(),
                plain.attention_composite(q, rows).to_data(),
            );
            assert!(diff < 1e-5, "{rows:?}: plain outputs differ by {diff}");
        }
    }

    /// The fused linear layer against burn's: output and the gradients of the input, the
    /// weight and the bias; and with a frozen layer (no weight or bias gradient), the input's.
    #[test]
    fn fused_linear_matches_burn_linear() {
        let device = Default::default();
        <Ad as Backend>::seed(&device, 5);
        let dense = Dense::<Ad>::new(12, 7, &device);
        let x = Tensor::<Ad, 2>::random([9, 12], Distribution::Normal(0.0, 1.5), &device);
        let upstream = Tensor::<Ad, 2>::random([9, 7], Distribution::Default, &device);
        for frozen in [false, true] {
            let dense = if frozen {
                dense.clone().no_grad()
            } else {
                dense.clone()
            };
            let (xf, xc) = (
                x.clone().detach().require_grad(),
                x.clone().detach().require_grad(),
            );
            let fused = dense.base(xf.clone());
            let reference = dense.linear.forward(xc.clone());
            assert!(max_diff(fused.to_data(), reference.to_data()) < 1e-5);
            let gf = (fused * upstream.clone()).sum().backward();
            let gc = (reference * upstream.clone()).sum().backward();
            let grad = |t: &Tensor<Ad, 2>, g| t.grad(g).expect("input gradient").to_data();
            assert!(max_diff(grad(&xf, &gf), grad(&xc, &gc)) < 1e-5);
            let w = dense.linear.weight.val();
            let b = dense.linear.bias.as_ref().expect("bias").val();
            if frozen {
                assert!(w.grad(&gf).is_none() && b.grad(&gf).is_none());
            } else {
                let (wf, wc) = (w.grad(&gf).expect("dW"), w.grad(&gc).expect("dW"));
                assert!(max_diff(wf.to_data(), wc.to_data()) < 1e-5);
                let (bf, bc) = (b.grad(&gf).expect("db"), b.grad(&gc).expect("db"));
                assert!(max_diff(bf.to_data(), bc.to_data()) < 1e-5);
                assert!(bc.abs().sum().into_scalar() > 0.1);
            }
        }
    }
}
