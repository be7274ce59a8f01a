//! The frozen reference's log-probs of every stage-2 sequence, computed once and cached on
//! disk.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::{self, Batch, Group, Images};
use crate::error::io_err;
use crate::{ApoKernels, Result, Student, TrainError};

/// Reference log-probs `[group][sequence]`, computed once with the frozen reference and
/// cached in `dir/reference_logprobs.json`, keyed by the preference data, the tokenizer and
/// the reference weights: `dir/KEY.json`, shared by every stage-2 run of the run folder that
/// uses the same preferences, tokenizer, reference and data settings.
#[allow(clippy::too_many_arguments)]
pub(super) fn reference_logprobs<B: ApoKernels>(
    dir: &Path,
    key: &str,
    reference: &Student<B>,
    images: &Images,
    groups: &[Group],
    pad: u32,
    batch: usize,
    device: &B::Device,
) -> Result<Vec<Vec<f32>>> {
    #[derive(Serialize, Deserialize)]
    struct Cache {
        key: String,
        logprobs: Vec<Vec<f32>>,
    }
    let path = dir.join(format!("{key}.json"));
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(cache) = serde_json::from_str::<Cache>(&text)
        && cache.key == key
        && cache.logprobs.len() == groups.len()
    {
        tracing::info!(file = %path.display(), "reference log-probs from cache");
        return Ok(cache.logprobs);
    }
    let _span = tracing::info_span!("reference log-probs", groups = groups.len()).entered();
    let mut out = Vec::with_capacity(groups.len());
    let all: Vec<usize> = (0..groups.len()).collect();
    for chunk in all.chunks(batch.max(1)) {
        let b: Batch<B> = data::make_batch(images, groups, chunk, pad, device);
        let lp: Vec<f32> = reference
            .sequence_logprobs(&b)?
            .into_data()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| TrainError::Empty(format!("{e:?}")))?;
        for (gi, &g) in chunk.iter().enumerate() {
            let n = groups[g].sequences.len();
            out.push(lp[gi * b.per_group..gi * b.per_group + n].to_vec());
        }
    }
    let text = serde_json::to_string(&Cache {
        key: key.to_owned(),
        logprobs: out.clone(),
    })
    .map_err(|e| TrainError::Empty(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let target = cxr_max::output::replace_target(&path)?;
    let tmp = cxr_max::output::temporary(&target);
    std::fs::write(&tmp, text).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &target).map_err(io_err(&target))?;
    Ok(out)
}
