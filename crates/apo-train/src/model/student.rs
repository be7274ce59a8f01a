//! The student model ([`Student`]): image encoder, decoder, heads, LoRA.

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{Embedding, LayerNorm};
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use super::{Block, ConceptAttention, Dense, Rows};
use crate::Result;
use crate::data::Batch;
use crate::kernels::ApoKernels;

/// The student model.
#[derive(Module, Debug)]
pub struct Student<B: Backend> {
    pub(super) patch: Conv2d<B>,
    pub(super) image_pos: Param<Tensor<B, 3>>,
    pub(super) encoder: Vec<Block<B>>,
    pub(super) encoder_norm: LayerNorm<B>,
    pub(super) token_embedding: Embedding<B>,
    pub(super) text_pos: Embedding<B>,
    pub(super) decoder: Vec<Block<B>>,
    pub(super) norm: LayerNorm<B>,
    pub(super) head: Dense<B>,
    pub(super) summary: Option<Dense<B>>,
    pub(super) concepts: Option<Dense<B>>,
    pub(super) concept_attention: Option<ConceptAttention<B>>,
    pub(super) concept_input: Option<Dense<B>>,
    pub(super) patches: usize,
    pub(super) max_text_len: usize,
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
    /// training loops check both first and report a [`crate::TrainError`].
    pub fn decode(&self, prefix: Tensor<B, 3>, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let (mut x, rows, _) = self.decoder_input(prefix, tokens);
        for block in &self.decoder {
            x = block.forward_rows(x, rows).0;
        }
        self.head
            .forward(self.norm.forward(self.text_rows(x, rows)))
    }

    /// The policy's masked completion log-prob of every sequence of `batch`: `[G · S]`, the
    /// log-probs of each sequence's completion tokens summed (prompt and padding left out),
    /// each image encoded once for its group. What stage 2 compares with the reference's.
    ///
    /// # Errors
    /// [`crate::TrainError::Loss`] when a target id is outside the vocabulary.
    pub fn sequence_logprobs(&self, batch: &Batch<B>) -> Result<Tensor<B, 1>> {
        let prefix = self.encode(batch.images.clone());
        self.sequence_logprobs_on(prefix, batch)
    }

    /// [`Student::sequence_logprobs`] on the batch's image prefixes `[G, P, d]`, already
    /// encoded.
    ///
    /// # Errors
    /// As [`Student::sequence_logprobs`].
    pub fn sequence_logprobs_on(
        &self,
        prefix: Tensor<B, 3>,
        batch: &Batch<B>,
    ) -> Result<Tensor<B, 1>> {
        let logits = self.decode(prefix, batch.inputs.clone());
        Ok(apo_loss::tensor::sequence_logprobs(
            logits,
            batch.targets.clone(),
            batch.mask.clone(),
        )?)
    }

    /// The decoder's `[R, d]` input rows (`[prefix ; text]`, see [`Rows`]), their layout, and
    /// the image summary added to every text row (`[G · S, 1, d]`).
    #[allow(clippy::type_complexity)]
    pub(super) fn decoder_input(
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
    pub(super) fn text_rows(&self, x: Tensor<B, 2>, rows: Rows) -> Tensor<B, 3> {
        let d = x.dims()[1];
        let (n, t) = (rows.sequences(), rows.text);
        x.narrow(0, rows.groups * rows.prefix, n * t)
            .reshape([n, t, d])
    }

    /// Concept logits `[G, n_concepts]` of prefixes `[G, P, d]` (in the training stages one
    /// per finding, in `cxr_max::Finding::ALL` order), when the model has a concept head.
    pub fn concepts(&self, prefix: &Tensor<B, 3>) -> Option<Tensor<B, 2>> {
        if let Some(attention) = &self.concept_attention {
            return Some(attention.forward(prefix.clone()));
        }
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
        let concepts = match (&self.concept_input, self.concepts(prefix)) {
            (Some(input), Some(logits)) => Some(input.forward(sigmoid(logits)).reshape([g, 1, d])),
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
    pub(super) fn embed(&self, tokens: Tensor<B, 2, Int>, start: usize) -> Tensor<B, 3> {
        let [n, t] = tokens.dims();
        let device = tokens.device();
        let positions = Tensor::<B, 1, Int>::arange(start as i64..(start + t) as i64, &device)
            .unsqueeze::<2>()
            .expand([n, t]);
        self.token_embedding.forward(tokens) + self.text_pos.forward(positions)
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
        .materialised()
    }

    /// The model with every lazily initialised parameter drawn now. burn's modules draw their
    /// initial values at a parameter's first use, and a clone of a parameter not yet used
    /// draws its own; drawing them all here, in a fixed order, makes the weights a function of
    /// the seed set before [`StudentConfig::init`](crate::StudentConfig::init) alone, and makes
    /// every copy of the model (one per worker of a data-parallel run) the same.
    pub(crate) fn materialised(self) -> Self {
        struct Touch;
        impl<B: Backend> burn::module::ModuleVisitor<B> for Touch {
            fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<B, D>>) {
                let _ = p.val();
            }
        }
        self.visit(&mut Touch);
        self
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
