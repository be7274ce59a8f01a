//! Incremental decoding: the keys and values of every decoder layer kept between tokens.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use super::Student;
use crate::kernels::ApoKernels;

impl<B: ApoKernels> Student<B> {
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

/// Keys and values of every decoder layer for incremental decoding.
#[derive(Debug, Clone)]
pub struct DecodeCache<B: Backend> {
    kv: Vec<(Tensor<B, 4>, Tensor<B, 4>)>,
    text_len: usize,
    summary: Option<Tensor<B, 3>>,
}
