//! The Qwen2 decoder: grouped-query attention with q/k/v biases, RMSNorm, SwiGLU, multimodal
//! rotary positions, and a key/value cache for generation.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::config::TextConfig;
use crate::error::Result;
use crate::nn::{Linear, RmsNorm, apply_rope, attention, host};
use crate::weights::Weights;

/// Added to the attention scores of masked keys: far enough below any score that its
/// probability underflows to 0 in f32, bf16 and f16, and finite in all three.
pub const MASKED: f32 = -1.0e4;

/// One decoder layer.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    input_norm: RmsNorm<B>,
    q: Linear<B>,
    k: Linear<B>,
    v: Linear<B>,
    o: Linear<B>,
    post_norm: RmsNorm<B>,
    gate: Linear<B>,
    up: Linear<B>,
    down: Linear<B>,
}

/// The language model: embeddings, decoder layers, final norm and the output head.
#[derive(Module, Debug)]
pub struct TextModel<B: Backend> {
    /// `[vocab, hidden]`.
    pub embed: Param<Tensor<B, 2>>,
    layers: Vec<DecoderLayer<B>>,
    norm: RmsNorm<B>,
    /// `None` when tied to `embed`.
    lm_head: Option<Linear<B>>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    theta: f64,
    section: Vec<usize>,
}

/// Keys and values of the tokens seen so far, per layer: `[batch, kv_heads, seen, head_dim]`.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
}

impl<B: Backend> KvCache<B> {
    /// How many tokens the cache holds.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map(|(k, _)| k.dims()[2])
            .unwrap_or(0)
    }
    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<B: Backend> TextModel<B> {
    /// Loads `model.*` and `lm_head.weight` (unless tied).
    pub fn load(cfg: &TextConfig, tied: bool, w: &mut Weights, device: &B::Device) -> Result<Self> {
        let (d, f) = (cfg.hidden_size, cfg.intermediate_size);
        let (h, kv, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let embed = w.tensor::<B, 2>("model.embed_tokens.weight", [cfg.vocab_size, d], device)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            layers.push(DecoderLayer {
                input_norm: RmsNorm::load(
                    w,
                    &format!("{p}.input_layernorm"),
                    d,
                    cfg.rms_norm_eps,
                    device,
                )?,
                q: Linear::load(w, &format!("{p}.self_attn.q_proj"), d, h * hd, true, device)?,
                k: Linear::load(
                    w,
                    &format!("{p}.self_attn.k_proj"),
                    d,
                    kv * hd,
                    true,
                    device,
                )?,
                v: Linear::load(
                    w,
                    &format!("{p}.self_attn.v_proj"),
                    d,
                    kv * hd,
                    true,
                    device,
                )?,
                o: Linear::load(
                    w,
                    &format!("{p}.self_attn.o_proj"),
                    h * hd,
                    d,
                    false,
                    device,
                )?,
                post_norm: RmsNorm::load(
                    w,
                    &format!("{p}.post_attention_layernorm"),
                    d,
                    cfg.rms_norm_eps,
                    device,
                )?,
                gate: Linear::load(w, &format!("{p}.mlp.gate_proj"), d, f, false, device)?,
                up: Linear::load(w, &format!("{p}.mlp.up_proj"), d, f, false, device)?,
                down: Linear::load(w, &format!("{p}.mlp.down_proj"), f, d, false, device)?,
            });
        }
        let norm = RmsNorm::load(w, "model.norm", d, cfg.rms_norm_eps, device)?;
        let lm_head = if tied {
            w.skip("lm_head.weight");
            None
        } else {
            Some(Linear::load(
                w,
                "lm_head",
                d,
                cfg.vocab_size,
                false,
                device,
            )?)
        };
        Ok(TextModel {
            embed: Param::from_tensor(embed),
            layers,
            norm,
            lm_head,
            heads: h,
            kv_heads: kv,
            head_dim: hd,
            theta: cfg.rope_theta,
            section: cfg.mrope_section.clone(),
        })
    }

    /// Every linear map with its hub name (`model.layers.{i}.self_attn.q_proj`, …,
    /// `model.layers.{i}.mlp.down_proj`, and `lm_head` when untied), in layer order.
    pub fn linears(&self) -> Vec<(String, &Linear<B>)> {
        let mut out = Vec::with_capacity(self.layers.len() * 7 + 1);
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            out.push((format!("{p}.self_attn.q_proj"), &l.q));
            out.push((format!("{p}.self_attn.k_proj"), &l.k));
            out.push((format!("{p}.self_attn.v_proj"), &l.v));
            out.push((format!("{p}.self_attn.o_proj"), &l.o));
            out.push((format!("{p}.mlp.gate_proj"), &l.gate));
            out.push((format!("{p}.mlp.up_proj"), &l.up));
            out.push((format!("{p}.mlp.down_proj"), &l.down));
        }
        if let Some(h) = &self.lm_head {
            out.push(("lm_head".to_string(), h));
        }
        out
    }

    /// [`TextModel::linears`], mutable.
    pub fn linears_mut(&mut self) -> Vec<(String, &mut Linear<B>)> {
        let mut out = Vec::with_capacity(self.layers.len() * 7 + 1);
        for (i, l) in self.layers.iter_mut().enumerate() {
            let p = format!("model.layers.{i}");
            out.push((format!("{p}.self_attn.q_proj"), &mut l.q));
            out.push((format!("{p}.self_attn.k_proj"), &mut l.k));
            out.push((format!("{p}.self_attn.v_proj"), &mut l.v));
            out.push((format!("{p}.self_attn.o_proj"), &mut l.o));
            out.push((format!("{p}.mlp.gate_proj"), &mut l.gate));
            out.push((format!("{p}.mlp.up_proj"), &mut l.up));
            out.push((format!("{p}.mlp.down_proj"), &mut l.down));
        }
        if let Some(h) = &mut self.lm_head {
            out.push(("lm_head".to_string(), h));
        }
        out
    }

    /// An empty cache.
    pub fn cache(&self) -> KvCache<B> {
        KvCache {
            layers: vec![None; self.layers.len()],
        }
    }

    /// Token embeddings `[batch, len, hidden]` of `ids` (rectangular).
    pub fn embed_ids(&self, ids: &[Vec<u32>], device: &B::Device) -> Tensor<B, 3> {
        let (b, l) = (ids.len(), ids.first().map_or(0, Vec::len));
        let flat: Vec<i64> = ids.iter().flatten().map(|&i| i as i64).collect();
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(flat, [b * l]), device);
        let d = self.embed.dims()[1];
        self.embed.val().select(0, idx).reshape([b, l, d])
    }

    /// cos/sin `[batch, len, head_dim]` for positions `[3][batch][len]` (M-RoPE: the frequency
    /// index `j < head_dim/2` takes the temporal, height or width row by `mrope_section`).
    #[allow(clippy::needless_range_loop)] // t indexes three rows at once
    pub fn rotary(
        &self,
        positions: &[[Vec<i64>; 3]],
        device: &B::Device,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let hd = self.head_dim;
        let half = hd / 2;
        let inv: Vec<f32> = (0..half)
            .map(|i| (1.0 / self.theta.powf((2 * i) as f64 / hd as f64)) as f32)
            .collect();
        let mut row_of = Vec::with_capacity(half);
        for (r, &n) in self.section.iter().enumerate() {
            row_of.extend(std::iter::repeat_n(r, n));
        }
        let b = positions.len();
        let l = positions.first().map_or(0, |p| p[0].len());
        let mut cos = Vec::with_capacity(b * l * hd);
        let mut sin = Vec::with_capacity(b * l * hd);
        let mut angles = vec![0f32; half];
        for p in positions {
            for t in 0..l {
                for (j, a) in angles.iter_mut().enumerate() {
                    *a = p[row_of[j]][t] as f32 * inv[j];
                }
                for _ in 0..2 {
                    cos.extend(angles.iter().map(|a| (*a as f64).cos() as f32));
                    sin.extend(angles.iter().map(|a| (*a as f64).sin() as f32));
                }
            }
        }
        (host(cos, [b, l, hd], device), host(sin, [b, l, hd], device))
    }

    /// Runs the decoder over `x: [batch, len, hidden]` (new tokens), appending to `cache`.
    /// `mask: [batch, 1, len, seen + len]` is added to the scores. Returns the final-norm hidden
    /// states `[batch, len, hidden]`.
    pub fn forward(
        &self,
        mut x: Tensor<B, 3>,
        cos: Tensor<B, 3>,
        sin: Tensor<B, 3>,
        mask: Tensor<B, 4>,
        mut cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        let [b, l, _] = x.dims();
        let (h, kv, hd) = (self.heads, self.kv_heads, self.head_dim);
        let cos = cos.unsqueeze_dim::<4>(1);
        let sin = sin.unsqueeze_dim::<4>(1);
        let scale = 1.0 / (hd as f64).sqrt();
        for (i, layer) in self.layers.iter().enumerate() {
            let hn = layer.input_norm.forward(x.clone());
            let q = layer
                .q
                .forward(hn.clone())
                .reshape([b, l, h, hd])
                .swap_dims(1, 2);
            let k = layer
                .k
                .forward(hn.clone())
                .reshape([b, l, kv, hd])
                .swap_dims(1, 2);
            let v = layer.v.forward(hn).reshape([b, l, kv, hd]).swap_dims(1, 2);
            let q = apply_rope(q, cos.clone(), sin.clone());
            let k = apply_rope(k, cos.clone(), sin.clone());
            let (k, v) = match cache.as_deref_mut() {
                Some(c) => {
                    let (k, v) = match c.layers[i].take() {
                        Some((pk, pv)) => {
                            (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2))
                        }
                        None => (k, v),
                    };
                    c.layers[i] = Some((k.clone(), v.clone()));
                    (k, v)
                }
                None => (k, v),
            };
            let a = attention(q, k, v, Some(mask.clone()), scale)
                .swap_dims(1, 2)
                .reshape([b, l, h * hd]);
            x = x + layer.o.forward(a);
            let hn = layer.post_norm.forward(x.clone());
            let y = layer.down.forward(
                burn::tensor::activation::silu(layer.gate.forward(hn.clone()))
                    .mul(layer.up.forward(hn)),
            );
            x = x + y;
        }
        self.norm.forward(x)
    }

    /// Output logits of hidden states (any leading shape).
    pub fn logits<const D: usize>(&self, hidden: Tensor<B, D>) -> Tensor<B, D> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => {
                let dims = hidden.dims();
                let rows = dims[..D - 1].iter().product::<usize>();
                let y = hidden
                    .reshape([rows, dims[D - 1]])
                    .matmul(self.embed.val().transpose());
                let mut out = dims;
                out[D - 1] = y.dims()[1];
                y.reshape(out)
            }
        }
    }
}

/// The additive mask `[batch, 1, len, seen + len]`: a new token `i` (at absolute index
/// `seen + i`) sees key `j` when `j ≤ seen + i` and key `j` is not padding (`keys[b][j]`).
pub fn causal_mask<B: Backend>(keys: &[Vec<bool>], len: usize, device: &B::Device) -> Tensor<B, 4> {
    let b = keys.len();
    let s = keys.first().map_or(0, Vec::len);
    let seen = s - len;
    let mut m = Vec::with_capacity(b * len * s);
    for row in keys {
        for i in 0..len {
            for (j, &real) in row.iter().enumerate() {
                m.push(if real && j <= seen + i { 0.0 } else { MASKED });
            }
        }
    }
    host(m, [b, 1, len, s], device)
}
