//! A whole Qwen2-VL / Qwen2.5-VL model: vision tower, language model, positions, forward,
//! completion log-probabilities and generation.

use std::path::Path;

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::rope::{Positions, rope_index};
use crate::text::{KvCache, TextModel, causal_mask};
use crate::vision::{VisionInput, VisionTower};
use crate::weights::Weights;

/// A loaded checkpoint.
#[derive(Module, Debug)]
pub struct QwenVl<B: Backend> {
    /// The vision tower and merger.
    pub vision: VisionTower<B>,
    /// The language model.
    pub text: TextModel<B>,
}

impl<B: Backend> QwenVl<B> {
    /// Every linear map with its hub name: the vision tower's, then the language model's.
    pub fn linears(&self) -> Vec<(String, &crate::nn::Linear<B>)> {
        let mut v = self.vision.linears();
        v.extend(self.text.linears());
        v
    }

    /// [`QwenVl::linears`], mutable.
    pub fn linears_mut(&mut self) -> Vec<(String, &mut crate::nn::Linear<B>)> {
        let mut v = self.vision.linears_mut();
        v.extend(self.text.linears_mut());
        v
    }
}

/// Where a batch's images come from.
#[derive(Debug, Clone, Copy)]
pub enum Images<'a> {
    /// All the batch's images, sequence by sequence, in order.
    PerSequence(&'a [VisionInput]),
    /// The images every sequence shows (the same for all): encoded once.
    Shared(&'a [VisionInput]),
}

/// A model with the settings it was loaded with.
#[derive(Debug)]
pub struct Loaded<B: Backend> {
    /// The modules.
    pub model: QwenVl<B>,
    /// `config.json`.
    pub config: ModelConfig,
}

/// How to pick each new token.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Most tokens to produce.
    pub max_new_tokens: usize,
    /// 0: greedy; otherwise sample from `softmax(logits / temperature)`.
    pub temperature: f64,
    /// Seed of the sampler.
    pub seed: u64,
    /// Tokens that end generation (produced, then stop).
    pub stop: Vec<u32>,
}

impl<B: Backend> Loaded<B> {
    /// Loads `DIR/config.json` and the weights. A tensor the model needs and the checkpoint
    /// lacks, a shape that differs from the config, and a tensor the model does not use are
    /// typed errors that name the tensor.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        let config = ModelConfig::from_dir(dir)?;
        let mut w = Weights::open(dir)?;
        let vision = VisionTower::load(config.architecture, &config.vision, &mut w, device)?;
        let text = TextModel::load(&config.text, config.tie_word_embeddings, &mut w, device)?;
        w.finish()?;
        tracing::info!(
            dir = %dir.display(),
            architecture = config.architecture.class_name(),
            dtype = ?config.dtype,
            "checkpoint loaded"
        );
        Ok(Loaded {
            model: QwenVl { vision, text },
            config,
        })
    }

    /// M-RoPE positions of a padded batch; `images` are all the batch's images in order.
    pub fn positions(
        &self,
        ids: &[Vec<u32>],
        mask: &[Vec<bool>],
        images: &[VisionInput],
    ) -> Result<Vec<Positions>> {
        let grids: Vec<[usize; 3]> = images.iter().map(|i| i.grid_thw).collect();
        self.positions_of_grids(ids, mask, &grids)
    }

    /// [`Loaded::positions`] from the images' patch grids `[t, h, w]` alone.
    pub fn positions_of_grids(
        &self,
        ids: &[Vec<u32>],
        mask: &[Vec<bool>],
        grids: &[[usize; 3]],
    ) -> Result<Vec<Positions>> {
        let c = &self.config;
        let mut next = 0usize;
        let mut out = Vec::with_capacity(ids.len());
        for (b, (row, m)) in ids.iter().zip(mask).enumerate() {
            let blocks = image_blocks(row, m, c.image_token_id);
            if next + blocks > grids.len() {
                return Err(ModelError::Input(format!(
                    "sequence {b}: {blocks} image block(s) in the tokens, but only {} image(s) left",
                    grids.len() - next
                )));
            }
            let these = &grids[next..next + blocks];
            next += blocks;
            out.push(
                rope_index(
                    row,
                    m,
                    these,
                    c.vision.spatial_merge_size,
                    c.image_token_id,
                    c.video_token_id,
                )
                .map_err(|e| ModelError::Input(format!("sequence {b}: {e}")))?,
            );
        }
        if next != grids.len() {
            return Err(ModelError::Input(format!(
                "{} image(s) given, the tokens have {next} image block(s)",
                grids.len()
            )));
        }
        Ok(out)
    }

    /// Input embeddings `[batch, len, hidden]`: token embeddings with each image's merged
    /// features in place of its `<|image_pad|>` tokens.
    pub fn embeddings(
        &self,
        ids: &[Vec<u32>],
        images: &[VisionInput],
        device: &B::Device,
    ) -> Result<Tensor<B, 3>> {
        if images.is_empty() {
            return Ok(self.model.text.embed_ids(ids, device));
        }
        let feats = self.model.vision.forward(images, device)?;
        self.place_features(ids, feats, device)
    }

    /// Token embeddings with `feats` (`[image tokens, hidden]`, in the order the image tokens
    /// appear in the batch) in place of the `<|image_pad|>` tokens.
    pub fn place_features(
        &self,
        ids: &[Vec<u32>],
        feats: Tensor<B, 2>,
        device: &B::Device,
    ) -> Result<Tensor<B, 3>> {
        let x = self.model.text.embed_ids(ids, device);
        let [b, l, d] = x.dims();
        let n = feats.dims()[0];
        let mut index = Vec::with_capacity(b * l);
        let mut k = 0usize;
        for (bi, row) in ids.iter().enumerate() {
            for (t, &id) in row.iter().enumerate() {
                if id == self.config.image_token_id {
                    index.push((b * l + k) as i64);
                    k += 1;
                } else {
                    index.push((bi * l + t) as i64);
                }
            }
        }
        if k != n {
            return Err(ModelError::Input(format!(
                "image features and image tokens do not match: {k} tokens, {n} features"
            )));
        }
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [b * l]), device);
        Ok(Tensor::cat(vec![x.reshape([b * l, d]), feats], 0)
            .select(0, idx)
            .reshape([b, l, d]))
    }

    fn check(&self, ids: &[Vec<u32>], mask: &[Vec<bool>]) -> Result<()> {
        let l = ids.first().map_or(0, Vec::len);
        if ids.is_empty() || l == 0 {
            return Err(ModelError::Input("empty input".into()));
        }
        for (b, (row, m)) in ids.iter().zip(mask).enumerate() {
            if row.len() != l || m.len() != l {
                return Err(ModelError::Input(format!(
                    "sequence {b}: rows of a batch must have one length (padded)"
                )));
            }
            if let Some(&bad) = row
                .iter()
                .find(|&&t| t as usize >= self.config.text.vocab_size)
            {
                return Err(ModelError::Input(format!(
                    "sequence {b}: token id {bad} is outside the vocabulary ({})",
                    self.config.text.vocab_size
                )));
            }
        }
        if ids.len() != mask.len() {
            return Err(ModelError::Input(
                "ids and mask differ in batch size".into(),
            ));
        }
        if l > self.config.text.max_position_embeddings {
            return Err(ModelError::Input(format!(
                "{l} tokens: longer than the model's max_position_embeddings {}",
                self.config.text.max_position_embeddings
            )));
        }
        Ok(())
    }

    /// Final hidden states `[batch, len, hidden]` of a padded batch, filling `cache` if given.
    pub fn hidden(
        &self,
        ids: &[Vec<u32>],
        mask: &[Vec<bool>],
        images: &[VisionInput],
        cache: Option<&mut KvCache<B>>,
        device: &B::Device,
    ) -> Result<(Tensor<B, 3>, Vec<Positions>)> {
        self.hidden_with(ids, mask, Images::PerSequence(images), cache, device)
    }

    /// [`Loaded::hidden`] with the images given either per sequence or once for all.
    pub fn hidden_with(
        &self,
        ids: &[Vec<u32>],
        mask: &[Vec<bool>],
        images: Images<'_>,
        cache: Option<&mut KvCache<B>>,
        device: &B::Device,
    ) -> Result<(Tensor<B, 3>, Vec<Positions>)> {
        self.check(ids, mask)?;
        let (positions, x) = match images {
            Images::PerSequence(images) => (
                self.positions(ids, mask, images)?,
                self.embeddings(ids, images, device)?,
            ),
            Images::Shared(images) => {
                let grids: Vec<[usize; 3]> = images.iter().map(|i| i.grid_thw).collect();
                let all: Vec<[usize; 3]> =
                    (0..ids.len()).flat_map(|_| grids.iter().copied()).collect();
                let positions = self.positions_of_grids(ids, mask, &all)?;
                let x = if images.is_empty() {
                    self.model.text.embed_ids(ids, device)
                } else {
                    // The tower runs once; every sequence reads the same features (their
                    // gradients add up in the tower).
                    let feats = self.model.vision.forward(images, device)?;
                    let f = feats.dims()[0];
                    let idx: Vec<i64> = (0..ids.len()).flat_map(|_| 0..f as i64).collect();
                    let n = idx.len();
                    let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [n]), device);
                    self.place_features(ids, feats.select(0, idx), device)?
                };
                (positions, x)
            }
        };
        let rows: Vec<[Vec<i64>; 3]> = positions.iter().map(|p| p.rows.clone()).collect();
        let (cos, sin) = self.model.text.rotary(&rows, device);
        let l = ids[0].len();
        let m = causal_mask::<B>(mask, l, device);
        Ok((self.model.text.forward(x, cos, sin, m, cache), positions))
    }

    /// Logits `[batch, len, vocab]` of a padded batch (values at padding are not meaningful).
    pub fn forward(
        &self,
        ids: &[Vec<u32>],
        mask: &[Vec<bool>],
        images: &[VisionInput],
        device: &B::Device,
    ) -> Result<Tensor<B, 3>> {
        let (h, _) = self.hidden(ids, mask, images, None, device)?;
        Ok(self.model.text.logits(h))
    }

    /// `Σ_{p ≥ prompt_len} log p(ids[p] | ids[..p])` of each sequence (TRL's completion
    /// log-probability) and the number of completion tokens. Sequences are right-padded into
    /// one batch; the head runs only on the positions that predict completion tokens.
    pub fn completion_logprobs(
        &self,
        seqs: &[(Vec<u32>, usize)],
        images: &[VisionInput],
        device: &B::Device,
    ) -> Result<Vec<(f64, usize)>> {
        self.completion_logprobs_with(seqs, Images::PerSequence(images), device)
    }

    /// [`Loaded::completion_logprobs`] with the images per sequence or shared.
    pub fn completion_logprobs_with(
        &self,
        seqs: &[(Vec<u32>, usize)],
        images: Images<'_>,
        device: &B::Device,
    ) -> Result<Vec<(f64, usize)>> {
        let (lp, counts) = self.completion_token_logprobs(seqs, images, device)?;
        let values = lp
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| ModelError::Input(format!("{e:?}")))?;
        // Summed in f64 on the host.
        let mut out = Vec::with_capacity(counts.len());
        let mut at = 0usize;
        for c in counts {
            let sum: f64 = values[at..at + c].iter().map(|&v| f64::from(v)).sum();
            out.push((sum, c));
            at += c;
        }
        Ok(out)
    }

    /// [`Loaded::completion_logprobs`] as a tensor `[sequences]` that gradients flow through
    /// (into whatever parameters require them: the LoRA adapters), and the token counts.
    pub fn completion_logprobs_tensor(
        &self,
        seqs: &[(Vec<u32>, usize)],
        images: &[VisionInput],
        device: &B::Device,
    ) -> Result<(Tensor<B, 1>, Vec<usize>)> {
        self.completion_logprobs_tensor_with(seqs, Images::PerSequence(images), device)
    }

    /// [`Loaded::completion_logprobs_tensor`] with the images per sequence or shared: a
    /// preference group's 1 + N sequences of one image run the vision tower once.
    pub fn completion_logprobs_tensor_with(
        &self,
        seqs: &[(Vec<u32>, usize)],
        images: Images<'_>,
        device: &B::Device,
    ) -> Result<(Tensor<B, 1>, Vec<usize>)> {
        let (lp, counts) = self.completion_token_logprobs(seqs, images, device)?;
        let n = lp.dims()[0];
        // Segment sums as one matmul with the 0/1 matrix of which sequence each token is in.
        let mut seg = vec![0f32; seqs.len() * n];
        let mut at = 0usize;
        for (s, &c) in counts.iter().enumerate() {
            for t in at..at + c {
                seg[s * n + t] = 1.0;
            }
            at += c;
        }
        let seg = Tensor::<B, 2>::from_data(TensorData::new(seg, [seqs.len(), n]), device);
        let sums = seg.matmul(lp.unsqueeze_dim::<2>(1)).reshape([seqs.len()]);
        Ok((sums, counts))
    }

    /// The log-probability of every completion token `[tokens]` (sequence by sequence, in
    /// order) and each sequence's count; gradients flow through it.
    pub fn completion_token_logprobs(
        &self,
        seqs: &[(Vec<u32>, usize)],
        images: Images<'_>,
        device: &B::Device,
    ) -> Result<(Tensor<B, 1>, Vec<usize>)> {
        let l = seqs.iter().map(|(s, _)| s.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(seqs.len());
        let mut mask = Vec::with_capacity(seqs.len());
        let mut picks = Vec::new();
        let mut targets = Vec::new();
        let mut counts = Vec::new();
        for (b, (s, prompt)) in seqs.iter().enumerate() {
            if *prompt == 0 || *prompt >= s.len() {
                return Err(ModelError::Input(format!(
                    "sequence {b}: the completion is empty (prompt {prompt} of {} tokens)",
                    s.len()
                )));
            }
            let mut row = s.clone();
            row.resize(l, 0);
            let mut m = vec![true; s.len()];
            m.resize(l, false);
            ids.push(row);
            mask.push(m);
            for (p, &token) in s.iter().enumerate().skip(*prompt) {
                picks.push((b * l + p - 1) as i64);
                targets.push(token as i64);
            }
            counts.push(s.len() - prompt);
        }
        let (h, _) = self.hidden_with(&ids, &mask, images, None, device)?;
        let [b, _, d] = h.dims();
        let n = picks.len();
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(picks, [n]), device);
        let rows = h.reshape([b * l, d]).select(0, idx);
        let lp = log_softmax(self.model.text.logits(rows), 1);
        let tgt = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [n, 1]), device);
        Ok((lp.gather(1, tgt).reshape([n]), counts))
    }

    /// Continues one sequence: prefill, then one token at a time with the key/value cache.
    /// Returns the new token ids (ending with a stop token if one was produced).
    pub fn generate(
        &self,
        ids: &[u32],
        images: &[VisionInput],
        opts: &GenerateOptions,
        device: &B::Device,
    ) -> Result<Vec<u32>> {
        let mut cache = self.model.text.cache();
        let ids = vec![ids.to_vec()];
        let mut keys = vec![vec![true; ids[0].len()]];
        let (h, positions) = self.hidden(&ids, &keys, images, Some(&mut cache), device)?;
        let l = ids[0].len();
        let [_, _, d] = h.dims();
        let mut last = h.narrow(1, l - 1, 1).reshape([1, d]);
        let mut rng = rand_xoshiro::SplitMix64::seed_from_u64(opts.seed);
        let next_pos = l as i64 + positions[0].delta;
        let mut out = Vec::new();
        let limit = self.config.text.max_position_embeddings;
        for (step, pos) in (next_pos..).take(opts.max_new_tokens).enumerate() {
            let logits = self.model.text.logits(last).into_data().convert::<f32>();
            let logits = logits
                .as_slice::<f32>()
                .map_err(|e| ModelError::Input(format!("{e:?}")))?;
            let token = pick(logits, opts.temperature, &mut rng);
            out.push(token);
            if opts.stop.contains(&token) || step + 1 == opts.max_new_tokens {
                break;
            }
            if l + out.len() >= limit {
                tracing::warn!(limit, "generation stopped at max_position_embeddings");
                break;
            }
            keys[0].push(true);
            let x = self.model.text.embed_ids(&[vec![token]], device);
            // The token picked at step s is fed at position `len + delta + s`.
            let pos = [vec![pos], vec![pos], vec![pos]];
            let (cos, sin) = self.model.text.rotary(&[pos], device);
            let m = causal_mask::<B>(&keys, 1, device);
            last = self
                .model
                .text
                .forward(x, cos, sin, m, Some(&mut cache))
                .reshape([1, d]);
        }
        Ok(out)
    }
}

impl<B: Backend> Loaded<B> {
    /// Continues several sequences at once: left-padded into one batch, prefilled together,
    /// then one token per row per step with the key/value cache. Each row stops at a stop token
    /// or `max_new_tokens` (finished rows are carried along, masked, until all are done); row
    /// `b` samples with its own generator seeded by `seeds[b]`, so a row gives what
    /// [`Loaded::generate`] gives it alone with that seed (greedy: the same argmax, up to the
    /// rounding differences of a padded batch). `images` are all rows' images, row by row.
    pub fn generate_batch(
        &self,
        rows: &[Vec<u32>],
        images: &[VisionInput],
        opts: &GenerateOptions,
        seeds: &[u64],
        device: &B::Device,
    ) -> Result<Vec<Vec<u32>>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        if seeds.len() != rows.len() {
            return Err(ModelError::Input(format!(
                "{} seeds for {} rows",
                seeds.len(),
                rows.len()
            )));
        }
        let l = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len());
        let mut keys = Vec::with_capacity(rows.len());
        for r in rows {
            let pad = l - r.len();
            let mut row = vec![0u32; pad];
            row.extend_from_slice(r);
            let mut m = vec![false; pad];
            m.extend(std::iter::repeat_n(true, r.len()));
            ids.push(row);
            keys.push(m);
        }
        let mut cache = self.model.text.cache();
        let (h, positions) = self.hidden(&ids, &keys, images, Some(&mut cache), device)?;
        let [b, _, d] = h.dims();
        let mut last = h.narrow(1, l - 1, 1).reshape([b, d]);
        let mut rngs: Vec<_> = seeds
            .iter()
            .map(|&s| rand_xoshiro::SplitMix64::seed_from_u64(s))
            .collect();
        // The next position of each row: its real length plus its M-RoPE delta.
        let next: Vec<i64> = rows
            .iter()
            .zip(&positions)
            .map(|(r, p)| r.len() as i64 + p.delta)
            .collect();
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); b];
        let mut done = vec![false; b];
        let limit = self.config.text.max_position_embeddings;
        let vocab = self.config.text.vocab_size;
        for step in 0..opts.max_new_tokens {
            let logits = self.model.text.logits(last).into_data().convert::<f32>();
            let logits = logits
                .as_slice::<f32>()
                .map_err(|e| ModelError::Input(format!("{e:?}")))?;
            let mut fed = Vec::with_capacity(b);
            for (row, rng) in rngs.iter_mut().enumerate() {
                if done[row] {
                    fed.push(0u32);
                    continue;
                }
                let token = pick(
                    &logits[row * vocab..(row + 1) * vocab],
                    opts.temperature,
                    rng,
                );
                out[row].push(token);
                if opts.stop.contains(&token) || out[row].len() == opts.max_new_tokens {
                    done[row] = true;
                }
                if rows[row].len() + out[row].len() >= limit && !done[row] {
                    tracing::warn!(limit, row, "generation stopped at max_position_embeddings");
                    done[row] = true;
                }
                fed.push(token);
            }
            if done.iter().all(|&x| x) || step + 1 == opts.max_new_tokens {
                break;
            }
            for (row, k) in keys.iter_mut().enumerate() {
                k.push(!done[row]);
            }
            let x = self
                .model
                .text
                .embed_ids(&fed.iter().map(|&t| vec![t]).collect::<Vec<_>>(), device);
            let pos: Vec<[Vec<i64>; 3]> = next
                .iter()
                .map(|&p| {
                    let q = p + step as i64;
                    [vec![q], vec![q], vec![q]]
                })
                .collect();
            let (cos, sin) = self.model.text.rotary(&pos, device);
            let m = causal_mask::<B>(&keys, 1, device);
            last = self
                .model
                .text
                .forward(x, cos, sin, m, Some(&mut cache))
                .reshape([b, d]);
        }
        Ok(out)
    }
}

/// The number of maximal runs of the image token among the real tokens.
fn image_blocks(ids: &[u32], mask: &[bool], image: u32) -> usize {
    let mut blocks = 0;
    let mut inside = false;
    for (&t, &m) in ids.iter().zip(mask) {
        if !m {
            continue;
        }
        let is = t == image;
        if is && !inside {
            blocks += 1;
        }
        inside = is;
    }
    blocks
}

/// Greedy (temperature 0; the first of equal maxima, as `argmax`) or a draw from
/// `softmax(logits / temperature)` computed in f64.
fn pick(logits: &[f32], temperature: f64, rng: &mut impl Rng) -> u32 {
    if temperature <= 0.0 {
        let mut best = 0usize;
        for (i, &v) in logits.iter().enumerate() {
            if v > logits[best] {
                best = i;
            }
        }
        return best as u32;
    }
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let weights: Vec<f64> = logits
        .iter()
        .map(|&v| ((v as f64 - max) / temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        u -= w;
        if u <= 0.0 {
            return i as u32;
        }
    }
    (logits.len() - 1) as u32
}
