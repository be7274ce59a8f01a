//! The vision towers: Qwen2-VL's (LayerNorm, QuickGELU MLP, full attention per image) and
//! Qwen2.5-VL's (RMSNorm, SwiGLU MLP, attention in 112-pixel windows except in the
//! `fullatt_block_indexes` blocks), with the patch merger that turns each 2×2 block of patches
//! into one language-model token.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::config::{Architecture, VisionConfig};
use crate::error::{ModelError, Result};
use crate::nn::{Activation, LayerNorm, Linear, RmsNorm, apply_rope, attention, host};
use crate::weights::Weights;

/// One image's patches, as the image processor flattens them.
#[derive(Debug, Clone)]
pub struct VisionInput {
    /// `[t·h·w, channels · temporal_patch · patch · patch]`, row-major.
    pub pixels: Vec<f32>,
    /// The patch grid `[t, h, w]`.
    pub grid_thw: [usize; 3],
}

/// A norm of either kind.
#[derive(Module, Debug)]
pub enum Norm<B: Backend> {
    /// Qwen2-VL.
    Layer(LayerNorm<B>),
    /// Qwen2.5-VL.
    Rms(RmsNorm<B>),
}

impl<B: Backend> Norm<B> {
    fn load(
        arch: Architecture,
        w: &mut Weights,
        prefix: &str,
        d: usize,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(match arch {
            Architecture::Qwen2Vl => Norm::Layer(LayerNorm::load(w, prefix, d, 1e-6, device)?),
            Architecture::Qwen25Vl => Norm::Rms(RmsNorm::load(w, prefix, d, 1e-6, device)?),
        })
    }
    fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Norm::Layer(n) => n.forward(x),
            Norm::Rms(n) => n.forward(x),
        }
    }
}

/// The MLP of a vision block: `down(act(up(x)))` (Qwen2-VL's `fc1`/`fc2`) or
/// `down(act(gate(x)) · up(x))` (Qwen2.5-VL's SwiGLU).
#[derive(Module, Debug)]
pub struct VisionMlp<B: Backend> {
    /// Qwen2.5-VL's gate.
    gate: Option<Linear<B>>,
    /// `fc1` or `up_proj`.
    up: Linear<B>,
    /// `fc2` or `down_proj`.
    down: Linear<B>,
}

/// One vision transformer block.
#[derive(Module, Debug)]
pub struct VisionBlock<B: Backend> {
    norm1: Norm<B>,
    qkv: Linear<B>,
    proj: Linear<B>,
    norm2: Norm<B>,
    mlp: VisionMlp<B>,
}

/// The vision tower and its patch merger.
#[derive(Module, Debug)]
pub struct VisionTower<B: Backend> {
    /// Patch embedding as a linear map `[C·tp·p·p, width]` (the Conv3d with kernel = stride).
    patch_embed: Param<Tensor<B, 2>>,
    blocks: Vec<VisionBlock<B>>,
    merger_norm: Norm<B>,
    merger_fc1: Linear<B>,
    merger_fc2: Linear<B>,
    heads: usize,
    width: usize,
    merge: usize,
    patch_dim: usize,
    theta: f64,
    act: usize,
    window: usize,
    patch: usize,
    full_blocks: Vec<usize>,
    windowed: bool,
}

fn act_code(a: Activation) -> usize {
    match a {
        Activation::QuickGelu => 0,
        Activation::Silu => 1,
        Activation::Gelu => 2,
    }
}
fn act_of(code: usize) -> Activation {
    match code {
        0 => Activation::QuickGelu,
        1 => Activation::Silu,
        _ => Activation::Gelu,
    }
}

impl<B: Backend> VisionTower<B> {
    /// Loads `visual.*`.
    pub fn load(
        arch: Architecture,
        cfg: &VisionConfig,
        w: &mut Weights,
        device: &B::Device,
    ) -> Result<Self> {
        let d = cfg.width;
        let (c, tp, p) = (cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size);
        let patch_dim = c * tp * p * p;
        let conv = w.tensor::<B, 5>("visual.patch_embed.proj.weight", [d, c, tp, p, p], device)?;
        let patch_embed = Param::from_tensor(conv.reshape([d, patch_dim]).transpose());
        let act = Activation::parse(&cfg.hidden_act)?;
        let mut blocks = Vec::with_capacity(cfg.depth);
        for i in 0..cfg.depth {
            let pre = format!("visual.blocks.{i}");
            let mlp = match arch {
                Architecture::Qwen2Vl => VisionMlp {
                    gate: None,
                    up: Linear::load(
                        w,
                        &format!("{pre}.mlp.fc1"),
                        d,
                        cfg.intermediate_size,
                        true,
                        device,
                    )?,
                    down: Linear::load(
                        w,
                        &format!("{pre}.mlp.fc2"),
                        cfg.intermediate_size,
                        d,
                        true,
                        device,
                    )?,
                },
                Architecture::Qwen25Vl => VisionMlp {
                    gate: Some(Linear::load(
                        w,
                        &format!("{pre}.mlp.gate_proj"),
                        d,
                        cfg.intermediate_size,
                        true,
                        device,
                    )?),
                    up: Linear::load(
                        w,
                        &format!("{pre}.mlp.up_proj"),
                        d,
                        cfg.intermediate_size,
                        true,
                        device,
                    )?,
                    down: Linear::load(
                        w,
                        &format!("{pre}.mlp.down_proj"),
                        cfg.intermediate_size,
                        d,
                        true,
                        device,
                    )?,
                },
            };
            blocks.push(VisionBlock {
                norm1: Norm::load(arch, w, &format!("{pre}.norm1"), d, device)?,
                qkv: Linear::load(w, &format!("{pre}.attn.qkv"), d, 3 * d, true, device)?,
                proj: Linear::load(w, &format!("{pre}.attn.proj"), d, d, true, device)?,
                norm2: Norm::load(arch, w, &format!("{pre}.norm2"), d, device)?,
                mlp,
            });
        }
        let m2 = cfg.spatial_merge_size * cfg.spatial_merge_size;
        Ok(VisionTower {
            patch_embed,
            blocks,
            merger_norm: Norm::load(arch, w, "visual.merger.ln_q", d, device)?,
            merger_fc1: Linear::load(w, "visual.merger.mlp.0", d * m2, d * m2, true, device)?,
            merger_fc2: Linear::load(
                w,
                "visual.merger.mlp.2",
                d * m2,
                cfg.out_hidden_size,
                true,
                device,
            )?,
            heads: cfg.num_heads,
            width: d,
            merge: cfg.spatial_merge_size,
            patch_dim,
            theta: cfg.rope_theta,
            act: act_code(act),
            window: cfg.window_size,
            patch: cfg.patch_size,
            full_blocks: cfg.fullatt_block_indexes.clone(),
            windowed: arch == Architecture::Qwen25Vl,
        })
    }

    /// Every linear map with its hub name (`visual.blocks.{i}.attn.qkv`, `….attn.proj`, the MLP's
    /// `fc1`/`fc2` or `gate_proj`/`up_proj`/`down_proj`, `visual.merger.mlp.0` and `.2`).
    pub fn linears(&self) -> Vec<(String, &Linear<B>)> {
        let mut out = Vec::with_capacity(self.blocks.len() * 5 + 2);
        let qwen25 = self.windowed;
        for (i, b) in self.blocks.iter().enumerate() {
            let p = format!("visual.blocks.{i}");
            out.push((format!("{p}.attn.qkv"), &b.qkv));
            out.push((format!("{p}.attn.proj"), &b.proj));
            if let Some(g) = &b.mlp.gate {
                out.push((format!("{p}.mlp.gate_proj"), g));
            }
            let (up, down) = if qwen25 {
                ("up_proj", "down_proj")
            } else {
                ("fc1", "fc2")
            };
            out.push((format!("{p}.mlp.{up}"), &b.mlp.up));
            out.push((format!("{p}.mlp.{down}"), &b.mlp.down));
        }
        out.push(("visual.merger.mlp.0".to_string(), &self.merger_fc1));
        out.push(("visual.merger.mlp.2".to_string(), &self.merger_fc2));
        out
    }

    /// [`VisionTower::linears`], mutable.
    pub fn linears_mut(&mut self) -> Vec<(String, &mut Linear<B>)> {
        let mut out = Vec::with_capacity(self.blocks.len() * 5 + 2);
        let qwen25 = self.windowed;
        for (i, b) in self.blocks.iter_mut().enumerate() {
            let p = format!("visual.blocks.{i}");
            out.push((format!("{p}.attn.qkv"), &mut b.qkv));
            out.push((format!("{p}.attn.proj"), &mut b.proj));
            if let Some(g) = &mut b.mlp.gate {
                out.push((format!("{p}.mlp.gate_proj"), g));
            }
            let (up, down) = if qwen25 {
                ("up_proj", "down_proj")
            } else {
                ("fc1", "fc2")
            };
            out.push((format!("{p}.mlp.{up}"), &mut b.mlp.up));
            out.push((format!("{p}.mlp.{down}"), &mut b.mlp.down));
        }
        out.push(("visual.merger.mlp.0".to_string(), &mut self.merger_fc1));
        out.push(("visual.merger.mlp.2".to_string(), &mut self.merger_fc2));
        out
    }

    /// How many language-model tokens an image of this grid becomes.
    pub fn tokens(&self, grid_thw: [usize; 3]) -> usize {
        grid_thw[0] * grid_thw[1] * grid_thw[2] / (self.merge * self.merge)
    }

    /// The merged embeddings `[Σ tokens, out_hidden]` of the images, in order.
    pub fn forward(&self, images: &[VisionInput], device: &B::Device) -> Result<Tensor<B, 2>> {
        let mut pixels = Vec::new();
        let mut n = 0usize;
        for (i, img) in images.iter().enumerate() {
            let [t, h, w] = img.grid_thw;
            if t == 0 || h % self.merge != 0 || w % self.merge != 0 || h == 0 || w == 0 {
                return Err(ModelError::Input(format!(
                    "image {i}: grid {:?} is not a positive multiple of the merge size {}",
                    img.grid_thw, self.merge
                )));
            }
            let patches = t * h * w;
            if img.pixels.len() != patches * self.patch_dim {
                return Err(ModelError::Input(format!(
                    "image {i}: {} pixel values for grid {:?}, expected {} ({} patches × {})",
                    img.pixels.len(),
                    img.grid_thw,
                    patches * self.patch_dim,
                    patches,
                    self.patch_dim
                )));
            }
            pixels.extend_from_slice(&img.pixels);
            n += patches;
        }
        if n == 0 {
            return Err(ModelError::Input("no image to encode".into()));
        }
        let grids: Vec<[usize; 3]> = images.iter().map(|i| i.grid_thw).collect();
        let x = host::<B, 2>(pixels, [n, self.patch_dim], device).matmul(self.patch_embed.val());
        let head_dim = self.width / self.heads;
        let (cos, sin) = self.rotary(&grids, head_dim, device);

        // Full-attention segments: one per frame of each image.
        let mut full = Vec::new();
        for &[t, h, w] in &grids {
            full.extend(std::iter::repeat_n(h * w, t));
        }
        let unit = self.merge * self.merge;
        let (mut x, cos, sin, windows, order) = if self.windowed {
            let (index, windows) =
                window_index(&grids, self.merge, self.window / self.merge / self.patch);
            let idx = Tensor::<B, 1, Int>::from_data(
                TensorData::new(
                    index.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                    [index.len()],
                ),
                device,
            );
            let permute = |t: Tensor<B, 2>| {
                let d = t.dims()[1];
                t.reshape([n / unit, unit * d])
                    .select(0, idx.clone())
                    .reshape([n, d])
            };
            (permute(x), permute(cos), permute(sin), windows, Some(index))
        } else {
            (x, cos, sin, Vec::new(), None)
        };
        let cos = cos.reshape([n, 1, head_dim]);
        let sin = sin.reshape([n, 1, head_dim]);
        for (i, block) in self.blocks.iter().enumerate() {
            let segments = if self.windowed && !self.full_blocks.contains(&i) {
                &windows
            } else {
                &full
            };
            x = self.block(block, x, cos.clone(), sin.clone(), segments);
        }
        let merged = self
            .merger_norm
            .forward(x)
            .reshape([n / unit, unit * self.width]);
        let merged = self
            .merger_fc2
            .forward(Activation::Gelu.apply(self.merger_fc1.forward(merged)));
        Ok(match order {
            None => merged,
            Some(index) => {
                let mut reverse = vec![0i64; index.len()];
                for (pos, &src) in index.iter().enumerate() {
                    reverse[src] = pos as i64;
                }
                let idx =
                    Tensor::<B, 1, Int>::from_data(TensorData::new(reverse, [index.len()]), device);
                merged.select(0, idx)
            }
        })
    }

    fn block(
        &self,
        b: &VisionBlock<B>,
        x: Tensor<B, 2>,
        cos: Tensor<B, 3>,
        sin: Tensor<B, 3>,
        segments: &[usize],
    ) -> Tensor<B, 2> {
        let [n, d] = x.dims();
        let hd = d / self.heads;
        let qkv = b
            .qkv
            .forward(b.norm1.forward(x.clone()))
            .reshape([n, 3, self.heads, hd]);
        let q = qkv.clone().narrow(1, 0, 1).reshape([n, self.heads, hd]);
        let k = qkv.clone().narrow(1, 1, 1).reshape([n, self.heads, hd]);
        let v = qkv.narrow(1, 2, 1).reshape([n, self.heads, hd]);
        let q = apply_rope(q, cos.clone(), sin.clone());
        let k = apply_rope(k, cos, sin);
        let scale = 1.0 / (hd as f64).sqrt();
        // Runs of equal-length consecutive segments attend as one batch.
        let mut outs = Vec::new();
        let mut start = 0usize;
        let mut i = 0usize;
        while i < segments.len() {
            let len = segments[i];
            let mut j = i;
            while j < segments.len() && segments[j] == len {
                j += 1;
            }
            let m = j - i;
            if len > 0 {
                let take = |t: &Tensor<B, 3>| {
                    t.clone()
                        .narrow(0, start, m * len)
                        .reshape([m, len, self.heads, hd])
                        .swap_dims(1, 2)
                };
                let o = attention(take(&q), take(&k), take(&v), None, scale);
                outs.push(o.swap_dims(1, 2).reshape([m * len, d]));
            }
            start += m * len;
            i = j;
        }
        let attn = b.proj.forward(Tensor::cat(outs, 0));
        let x = x + attn;
        let h = b.norm2.forward(x.clone());
        let act = act_of(self.act);
        let m = &b.mlp;
        let y = match &m.gate {
            None => m.down.forward(act.apply(m.up.forward(h))),
            Some(gate) => m
                .down
                .forward(act.apply(gate.forward(h.clone())).mul(m.up.forward(h))),
        };
        x + y
    }

    /// cos/sin `[patches, head_dim]` of the 2-D rotary embedding, positions in merge-block order.
    fn rotary(
        &self,
        grids: &[[usize; 3]],
        head_dim: usize,
        device: &B::Device,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let spatial = head_dim / 2;
        let inv: Vec<f32> = (0..spatial / 2)
            .map(|i| (1.0 / self.theta.powf((2 * i) as f64 / spatial as f64)) as f32)
            .collect();
        let m = self.merge;
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for &[t, h, w] in grids {
            for _ in 0..t {
                for bh in 0..h / m {
                    for bw in 0..w / m {
                        for ih in 0..m {
                            for iw in 0..m {
                                let (ph, pw) = ((bh * m + ih) as f32, (bw * m + iw) as f32);
                                let mut row: Vec<f32> = inv.iter().map(|f| ph * f).collect();
                                row.extend(inv.iter().map(|f| pw * f));
                                for _ in 0..2 {
                                    cos.extend(row.iter().map(|a| (*a as f64).cos() as f32));
                                    sin.extend(row.iter().map(|a| (*a as f64).sin() as f32));
                                }
                            }
                        }
                    }
                }
            }
        }
        let n = cos.len() / head_dim;
        (
            host(cos, [n, head_dim], device),
            host(sin, [n, head_dim], device),
        )
    }
}

/// Qwen2.5-VL's window order over merged units and the window lengths in patches
/// (`get_vision_window_index`): each frame's merged grid is cut into `ws × ws` windows (the last
/// row and column of windows may be partial), windows row-major, units row-major inside.
pub fn window_index(grids: &[[usize; 3]], merge: usize, ws: usize) -> (Vec<usize>, Vec<usize>) {
    let unit = merge * merge;
    let mut index = Vec::new();
    let mut lengths = Vec::new();
    let mut offset = 0usize;
    for &[t, h, w] in grids {
        let (gh, gw) = (h / merge, w / merge);
        let (nh, nw) = (gh.div_ceil(ws), gw.div_ceil(ws));
        for ti in 0..t {
            for wh in 0..nh {
                for ww in 0..nw {
                    let mut count = 0;
                    for r in wh * ws..((wh + 1) * ws).min(gh) {
                        for c in ww * ws..((ww + 1) * ws).min(gw) {
                            index.push(offset + ti * gh * gw + r * gw + c);
                            count += 1;
                        }
                    }
                    if count > 0 {
                        lengths.push(count * unit);
                    }
                }
            }
        }
        offset += t * gh * gw;
    }
    (index, lengths)
}
