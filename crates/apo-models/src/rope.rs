//! Multimodal rotary positions (M-RoPE) as transformers' `get_rope_index` assigns them.
//!
//! Text tokens advance all three rows (temporal, height, width) by one. An image's
//! `t·h·w / merge²` tokens take grid positions `(start + t_i, start + h_i, start + w_i)` over the
//! merged grid, and the next token starts at `start + max(h, w) / merge`. Padding takes position
//! 0. The delta `max position + 1 − real tokens` continues the count when decoding.

use crate::error::{ModelError, Result};

/// Positions of one sequence, `[3][len]`, and its decoding delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Positions {
    /// Rows t, h, w; one entry per token of the (padded) sequence.
    pub rows: [Vec<i64>; 3],
    /// `max + 1 − real tokens`.
    pub delta: i64,
}

/// Assigns positions to one padded sequence. `mask[i]` is false on padding; `grids` are the
/// sequence's images in order (their `[t, h, w]` patch grids); `image_token` is `<|image_pad|>`.
pub fn rope_index(
    ids: &[u32],
    mask: &[bool],
    grids: &[[usize; 3]],
    merge: usize,
    image_token: u32,
    video_token: u32,
) -> Result<Positions> {
    let len = ids.len();
    let mut rows = [vec![0i64; len], vec![0i64; len], vec![0i64; len]];
    let real: Vec<usize> = (0..len).filter(|&i| mask[i]).collect();
    let mut next = 0i64;
    let mut max = -1i64;
    let mut images = grids.iter();
    let mut k = 0usize;
    while k < real.len() {
        let id = ids[real[k]];
        if id == video_token {
            return Err(ModelError::Input(format!(
                "token {k} is a video token: video input is not supported"
            )));
        }
        if id != image_token {
            for row in rows.iter_mut() {
                row[real[k]] = next;
            }
            max = max.max(next);
            next += 1;
            k += 1;
            continue;
        }
        let Some(&[t, h, w]) = images.next() else {
            return Err(ModelError::Input(format!(
                "more image blocks in the tokens than the {} image(s) given",
                grids.len()
            )));
        };
        let (gh, gw) = (h / merge, w / merge);
        let count = t * gh * gw;
        if k + count > real.len() || real[k..k + count].iter().any(|&i| ids[i] != image_token) {
            return Err(ModelError::Input(format!(
                "an image of grid [{t}, {h}, {w}] needs {count} consecutive image tokens at token {k}"
            )));
        }
        let mut j = k;
        for ti in 0..t {
            for hi in 0..gh {
                for wi in 0..gw {
                    let p = [next + ti as i64, next + hi as i64, next + wi as i64];
                    for (r, v) in p.iter().enumerate() {
                        rows[r][real[j]] = *v;
                        max = max.max(*v);
                    }
                    j += 1;
                }
            }
        }
        next += gh.max(gw) as i64;
        k += count;
    }
    if images.next().is_some() {
        return Err(ModelError::Input(format!(
            "{} image(s) given but fewer image blocks in the tokens",
            grids.len()
        )));
    }
    Ok(Positions {
        rows,
        delta: max + 1 - real.len() as i64,
    })
}
