//! The frozen reference's log-probs of the stage-2 sequences a run visits, computed once and
//! cached on disk.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::{self, Batch, Group, Images};
use crate::error::io_err;
use burn::module::Module;

use crate::{ApoKernels, Result, Student, TrainError};

/// Reference log-probs `[group][sequence]` of the groups in `needed` (the groups the
/// stage's micro-batches visit; every other group's entry is empty), computed with the frozen
/// reference and cached in `dir/KEY.json`, keyed by the preference data, the tokenizer and the
/// reference weights, and shared by every stage-2 run of the run folder that uses the same
/// preferences, tokenizer, reference and data settings. A cache that lacks some needed groups
/// (a longer run, another seed) is completed and rewritten.
///
/// On several workers (`run.devices`, [`crate::parallel`]) each computes its share of the
/// missing groups on its device and the shares are gathered with one all-reduce.
#[allow(clippy::too_many_arguments)]
pub(super) fn reference_logprobs<B: crate::TrainBackend>(
    dir: &Path,
    key: &str,
    reference: Student<B::InnerBackend>,
    images: &Images,
    groups: &[Group],
    needed: &[usize],
    pad: u32,
    batch: usize,
    run: &crate::config::RunSettings,
    device: &B::Device,
) -> Result<Vec<Vec<f32>>> {
    #[derive(Serialize, Deserialize)]
    struct Cache {
        key: String,
        /// Per group: its sequences' log-probs, or `None` when not computed.
        logprobs: Vec<Option<Vec<f32>>>,
    }
    let path = dir.join(format!("{key}.json"));
    let mut cached: Vec<Option<Vec<f32>>> = match std::fs::read_to_string(&path) {
        Ok(text) => match serde_json::from_str::<Cache>(&text) {
            Ok(c) if c.key == key && c.logprobs.len() == groups.len() => c.logprobs,
            _ => vec![None; groups.len()],
        },
        Err(_) => vec![None; groups.len()],
    };
    let missing: Vec<usize> = needed
        .iter()
        .copied()
        .filter(|&g| cached[g].is_none())
        .collect();
    if missing.is_empty() {
        tracing::info!(file = %path.display(), groups = needed.len(), "reference log-probs from cache");
    } else {
        let _span = tracing::info_span!(
            "reference log-probs",
            groups = missing.len(),
            of = groups.len()
        )
        .entered();
        let devices = crate::parallel::devices::<B>(device, super::runner::local_workers(run));
        let copies = crate::parallel::Copies::new(reference, &devices, |m, d| m.clone().fork(d));
        let lens: Vec<usize> = missing.iter().map(|&g| groups[g].sequences.len()).collect();
        let computed = crate::parallel::run::<B, _, _>(run, device, &mut super::Quiet, |w, _| {
            let mine = w.shard(missing.len());
            let local = copies.take(w.local_index()).and_then(|model| {
                compute(
                    &model,
                    images,
                    groups,
                    &missing[mine.clone()],
                    pad,
                    batch,
                    &w.device,
                )
            });
            w.gather(&lens, mine, local)
        })?;
        for (&g, lp) in missing.iter().zip(computed) {
            cached[g] = Some(lp);
        }
        let text = serde_json::to_string(&Cache {
            key: key.to_owned(),
            logprobs: cached.clone(),
        })
        .map_err(|e| TrainError::Empty(e.to_string()))?;
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let target = cxr_max::output::replace_target(&path)?;
        let tmp = cxr_max::output::temporary(&target);
        std::fs::write(&tmp, text).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &target).map_err(io_err(&target))?;
    }
    Ok(cached.into_iter().map(Option::unwrap_or_default).collect())
}

/// The reference log-probs of the sequences of `which`, `batch` groups per forward pass.
fn compute<B: ApoKernels>(
    reference: &Student<B>,
    images: &Images,
    groups: &[Group],
    which: &[usize],
    pad: u32,
    batch: usize,
    device: &B::Device,
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(which.len());
    for chunk in which.chunks(batch.max(1)) {
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
    Ok(out)
}

/// The groups that micro-batches `0..micro_batches` of a stage visit, sorted.
pub(crate) fn visited(seed: u64, units: usize, batch: usize, micro_batches: usize) -> Vec<usize> {
    let mut seen = vec![false; units];
    for m in 0..micro_batches {
        for g in data::micro_batch(seed, units, batch, m) {
            seen[g] = true;
        }
    }
    (0..units).filter(|&g| seen[g]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The visited set is the union of the micro-batches, and covers every group once the
    /// stage runs past an epoch.
    #[test]
    fn visited_groups_are_the_micro_batches_union() {
        let v = visited(7, 100, 4, 5);
        let mut want: Vec<usize> = (0..5)
            .flat_map(|m| data::micro_batch(7, 100, 4, m))
            .collect();
        want.sort_unstable();
        want.dedup();
        assert_eq!(v, want);
        assert_eq!(v.len(), 20, "one epoch's permutation: no repeats within it");
        assert_eq!(visited(7, 100, 4, 26), (0..100).collect::<Vec<_>>());
    }
}
