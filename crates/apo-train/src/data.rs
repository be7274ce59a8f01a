//! Training data: images, tokenised sequences, preference groups, and micro-batches.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use cxr_max::dataset::Item;
use cxr_max::images::{ImageLoader, ImageLoaderConfig};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_xoshiro::SplitMix64;

use crate::tokenizer::TextTokenizer;
use crate::{Result, TrainError};

/// One tokenised sequence: `<bos> prompt <sep> completion <eos>`; the loss reads the tokens
/// from `prompt_len` on (the completion and `<eos>`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sequence {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Tokens of `<bos> prompt <sep>`.
    pub prompt_len: usize,
}

impl Sequence {
    /// Completion tokens scored (including `<eos>`).
    pub fn completion_len(&self) -> usize {
        self.ids.len() - self.prompt_len
    }
}

/// The prompt part `<bos> prompt <sep>`.
///
/// # Errors
/// Tokenizer errors.
pub fn prompt_ids(tok: &TextTokenizer, prompt: &str) -> Result<Vec<u32>> {
    let mut ids = vec![tok.bos()];
    ids.extend(tok.encode(prompt)?);
    ids.push(tok.sep());
    Ok(ids)
}

/// Tokenises a prompt and completion.
///
/// # Errors
/// [`TrainError::TooLong`] when the sequence exceeds `max_len` and `truncate` is off (with it,
/// the completion is cut and keeps its `<eos>`; a prompt that alone is too long is an error).
pub fn encode(
    tok: &TextTokenizer,
    prompt: &str,
    completion: &str,
    max_len: usize,
    truncate: bool,
    id: &str,
) -> Result<Sequence> {
    let mut ids = prompt_ids(tok, prompt)?;
    let prompt_len = ids.len();
    if prompt_len + 1 >= max_len {
        return Err(TrainError::TooLong {
            what: "prompt",
            id: id.to_owned(),
            tokens: prompt_len,
            max: max_len,
        });
    }
    ids.extend(tok.encode(completion)?);
    ids.push(tok.eos());
    if ids.len() > max_len {
        if !truncate {
            return Err(TrainError::TooLong {
                what: "trajectory",
                id: id.to_owned(),
                tokens: ids.len(),
                max: max_len,
            });
        }
        ids.truncate(max_len - 1);
        ids.push(tok.eos());
    }
    Ok(Sequence { ids, prompt_len })
}

/// Images of a data set, loaded once, normalised to `[-1, 1]`.
#[derive(Debug, Clone)]
pub struct Images {
    /// Width and height.
    pub size: usize,
    /// `size × size` values per image.
    pub pixels: Vec<Vec<f32>>,
}

impl Images {
    /// Decodes `paths` in parallel at `size` pixels.
    ///
    /// # Errors
    /// The first image that cannot be read, naming its file.
    pub fn load(paths: &[PathBuf], size: usize) -> Result<Self> {
        let loader = ImageLoader::new(ImageLoaderConfig {
            size: size as u32,
            ..ImageLoaderConfig::default()
        });
        let pixels = loader
            .load_many(paths)
            .into_iter()
            .map(|r| r.map(|img| img.pixels.iter().map(|p| 2.0 * p - 1.0).collect()))
            .collect::<std::result::Result<Vec<Vec<f32>>, _>>()?;
        Ok(Images { size, pixels })
    }

    /// `[G, 1, H, W]` of the images `which`.
    pub fn tensor<B: Backend>(&self, which: &[usize], device: &B::Device) -> Tensor<B, 4> {
        let mut flat = Vec::with_capacity(which.len() * self.size * self.size);
        for &i in which {
            flat.extend_from_slice(&self.pixels[i]);
        }
        Tensor::from_data(
            TensorData::new(flat, [which.len(), 1, self.size, self.size]),
            device,
        )
    }
}

/// The findings a text states, one value per finding in `Finding::ALL` order: 1 positive,
/// ½ uncertain, 0 otherwise (read with the `cxr-max` labeler; a later statement overrides an
/// earlier one).
pub fn text_concepts(text: &str) -> [f32; 14] {
    let found = cxr_max::findings::extract(text).findings;
    let mut t = [0f32; 14];
    for (k, f) in cxr_max::Finding::ALL.iter().enumerate() {
        t[k] = match found.get(*f) {
            cxr_max::LabelStatus::Positive => 1.0,
            cxr_max::LabelStatus::Uncertain => 0.5,
            _ => 0.0,
        };
    }
    t
}

/// Concept targets from the teachers, one per item: for each finding (in `Finding::ALL`
/// order), the fraction of the item's teachers whose trajectory ends positive on it
/// (uncertain counts one half), read with the `cxr-max` labeler.
pub fn concept_targets(items: &[Item]) -> Vec<[f32; 14]> {
    items
        .iter()
        .map(|item| {
            let mut t = [0f32; 14];
            let n = item.sample.trajectories.len().max(1) as f32;
            for traj in &item.sample.trajectories {
                for (acc, x) in t.iter_mut().zip(text_concepts(&traj.text)) {
                    *acc += x / n;
                }
            }
            t
        })
        .collect()
}

/// Concept targets from the consensus, one per item: the findings stated by the `chosen`
/// trajectory of the item's row in the preferences; `None` for an item without a row (it
/// carries no concept loss).
pub fn consensus_targets(prefs: &Preferences, items: &[Item]) -> Vec<Option<[f32; 14]>> {
    let mut out = vec![None; items.len()];
    for (_, row, image) in prefs.matched(items) {
        if let Some(i) = image {
            out[i] = Some(text_concepts(&row.chosen));
        }
    }
    out
}

/// The sampling order's units with oversampling ([`crate::config::DataConfig::oversample`]):
/// each unit index repeated by the weight of its image, in unit order. `images[u]` is unit
/// `u`'s image; `targets` the consensus findings per image (`None`: no consensus, weight 1).
/// Returns `0..images.len()` when `findings` is empty.
pub fn oversampled_units(
    images: &[usize],
    targets: &[Option<[f32; 14]>],
    findings: &[cxr_max::Finding],
    max: usize,
) -> Vec<usize> {
    let rows: Vec<&[f32; 14]> = targets.iter().flatten().collect();
    let repeat: Vec<usize> = if findings.is_empty() || rows.is_empty() {
        vec![1; targets.len()]
    } else {
        // Per finding: negatives per positive among the images with a consensus.
        let ratio: Vec<Option<f64>> = (0..14)
            .map(|k| {
                let pos = rows.iter().filter(|r| r[k] >= 0.5).count();
                (pos > 0 && findings.iter().any(|f| f.index() == k))
                    .then(|| (rows.len() - pos) as f64 / pos as f64)
            })
            .collect();
        targets
            .iter()
            .map(|t| {
                let Some(t) = t else { return 1 };
                (0..14)
                    .filter(|&k| t[k] >= 0.5)
                    .filter_map(|k| ratio[k])
                    .map(|r| (r.round() as usize).clamp(1, max.max(1)))
                    .max()
                    .unwrap_or(1)
            })
            .collect()
    };
    images
        .iter()
        .enumerate()
        .flat_map(|(u, &i)| std::iter::repeat_n(u, repeat.get(i).copied().unwrap_or(1)))
        .collect()
}

/// The preference sets of stage 2 in our layout (`apo consensus build --export ours`), read
/// and parsed once: what stage 2 builds its groups from and the consensus concept targets
/// are read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Preferences {
    /// The file the rows come from (or a name for rows from elsewhere): errors name it.
    pub source: PathBuf,
    /// The rows, each with its 1-based line.
    pub rows: Vec<(usize, apo_consensus::export::OursRow)>,
    /// The file's bytes (or the rows as JSON lines): part of stage 2's reference-cache key.
    content: Vec<u8>,
}

/// What makes a parsed preference row unusable: an empty id or chosen text, an empty
/// rejected text, a weight that is negative or not finite.
fn check_row(row: &apo_consensus::export::OursRow) -> std::result::Result<(), String> {
    if row.id.trim().is_empty() {
        return Err("the id is empty".to_owned());
    }
    if row.chosen.trim().is_empty() {
        return Err("`chosen` is empty".to_owned());
    }
    for (i, r) in row.rejected.iter().enumerate() {
        if r.text.trim().is_empty() {
            return Err(format!("rejected[{i}] ({}) has an empty text", r.teacher));
        }
        if let Some(w) = r.weight
            && !(w.is_finite() && w >= 0.0)
        {
            return Err(format!(
                "rejected[{i}] ({}) has weight {w}; weights must be finite and >= 0",
                r.teacher
            ));
        }
    }
    Ok(())
}

impl Preferences {
    /// Reads and parses a preference file; blank lines and a leading UTF-8 byte-order mark
    /// are skipped. Every row is checked before training starts: an empty id, `chosen` or
    /// rejected text, or a negative or non-finite weight, is an error naming the line and id.
    ///
    /// # Errors
    /// The file's read error; [`TrainError::BadPreference`] naming the line of a malformed row.
    pub fn read(path: &Path) -> Result<Self> {
        let content = std::fs::read(path).map_err(crate::error::io_err(path))?;
        let text = std::str::from_utf8(&content).map_err(|e| TrainError::BadPreference {
            source_file: path.to_owned(),
            line: 1 + content[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count(),
            message: format!("not UTF-8: {e}"),
        })?;
        // A UTF-8 byte-order mark is not part of the first row.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut rows = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = |message: String| TrainError::BadPreference {
                source_file: path.to_owned(),
                line: n + 1,
                message,
            };
            let row: apo_consensus::export::OursRow = serde_json::from_str(line)
                .map_err(|e| bad(format!("not a preference row in our layout: {e}")))?;
            check_row(&row).map_err(|e| bad(format!("preference `{}`: {e}", row.id)))?;
            rows.push((n + 1, row));
        }
        Ok(Preferences {
            source: path.to_owned(),
            rows,
            content,
        })
    }

    /// Rows already in memory (e.g. from `apo_consensus::export`), named `source` in errors;
    /// row `i` counts as line `i + 1`. Their cache-key content is the rows as JSON lines, what
    /// a file of them holds.
    pub fn from_rows(
        source: impl Into<PathBuf>,
        rows: Vec<apo_consensus::export::OursRow>,
    ) -> Self {
        let mut content = Vec::new();
        for row in &rows {
            // A row of strings, numbers and lists always serialises.
            if let Ok(line) = serde_json::to_string(row) {
                content.extend_from_slice(line.as_bytes());
            }
            content.push(b'\n');
        }
        Preferences {
            source: source.into(),
            rows: rows
                .into_iter()
                .enumerate()
                .map(|(i, r)| (i + 1, r))
                .collect(),
            content,
        }
    }

    /// The bytes stage 2's reference-cache key hashes.
    pub fn content(&self) -> &[u8] {
        &self.content
    }

    /// Each row with its line and the index of its image among `items` (`None` when the
    /// image is not among them).
    pub(crate) fn matched<'a>(
        &'a self,
        items: &[Item],
    ) -> impl Iterator<Item = (usize, &'a apo_consensus::export::OursRow, Option<usize>)> {
        let index: HashMap<&str, usize> = items
            .iter()
            .enumerate()
            .map(|(i, it)| (it.sample.dicom_id.as_str(), i))
            .collect();
        self.rows.iter().map(move |(line, row)| {
            let image = index.get(row.id.as_str()).copied();
            (*line, row, image)
        })
    }
}

/// Opens the data set and keeps the items of `split` (all when `None`).
///
/// # Errors
/// Data set errors; [`TrainError::Empty`] when nothing is left.
pub fn open_items(dir: &Path, split: Option<&str>) -> Result<Vec<Item>> {
    open_items_from(dir, split, &cxr_max::dataset::DataSource::default())
}

/// [`open_items`] with the reader settings of `source` (records file, field mapping, strict,
/// quarantine); how many records were read, kept and rejected is logged, with a warning when
/// any was rejected.
///
/// # Errors
/// As [`open_items`].
pub fn open_items_from(
    dir: &Path,
    split: Option<&str>,
    source: &cxr_max::dataset::DataSource,
) -> Result<Vec<Item>> {
    let (data, _) = source.open(dir)?;
    // `split = "all"` (a TOML file cannot leave a defaulted field unset): every image.
    let split = split.filter(|s| *s != "all");
    let split = split
        .map(|s| s.parse::<cxr_max::tables::Split>())
        .transpose()
        .map_err(|e| TrainError::Empty(e.to_string()))?;
    let items: Vec<Item> = data
        .items
        .into_iter()
        .filter(|i| split.is_none_or(|s| i.split == Some(s)))
        .collect();
    if items.is_empty() {
        return Err(TrainError::Empty(format!(
            "{}: no image{}",
            dir.display(),
            split
                .map(|s| format!(" in split `{}`", s.name()))
                .unwrap_or_default()
        )));
    }
    Ok(items)
}

/// The items a run configuration trains on: `config.data`'s folder, split and reader settings.
///
/// # Errors
/// As [`open_items_from`].
pub fn open_config_items(config: &crate::RunConfig) -> Result<Vec<Item>> {
    open_items_from(
        &config.data.dir,
        config.data.split.as_deref(),
        &config.data.source(),
    )
}

/// Stage 2's inputs of a run configuration: its items ([`open_config_items`]) and the
/// preference file `data.preferences`, each read once.
///
/// # Errors
/// A missing `data.preferences`; data set and preference-file errors.
pub fn open_stage2(config: &crate::RunConfig) -> Result<(Vec<Item>, Preferences)> {
    let path = config.preferences("the preference file of `apo consensus build --export ours`")?;
    let items = open_config_items(config)?;
    Ok((items, Preferences::read(path)?))
}

/// A unit of training: one image and the sequences that share it (stage 1: every teacher's
/// trajectory; stage 2: the consensus first, then the negatives).
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Item id.
    pub id: String,
    /// Index into [`Images::pixels`].
    pub image: usize,
    /// The sequences.
    pub sequences: Vec<Sequence>,
    /// Per-negative weights (stage 2, optional).
    pub weights: Option<Vec<f64>>,
    /// Per-negative drift from the consensus, in `[0, 1]` (stage 2, from the preference rows):
    /// the order of `plackett-luce-ranking` ([`order_by_drift`]) and the rewards `1 − drift`
    /// of `infonca` ([`Batch::rewards`]).
    pub drift: Option<Vec<f64>>,
}

/// Stage-1 groups: each image with all its teacher trajectories (`per_group == 0`), or with
/// its trajectories shuffled by `seed` and split into groups of `per_group` (the last one
/// smaller when they do not divide evenly); every trajectory is in exactly one group.
///
/// # Errors
/// [`TrainError::TooLong`] (unless `truncate`), tokenizer errors.
pub fn sft_groups(
    items: &[Item],
    tok: &TextTokenizer,
    max_len: usize,
    truncate: bool,
    per_group: usize,
    seed: u64,
) -> Result<Vec<Group>> {
    let whole = items
        .iter()
        .enumerate()
        .filter(|(_, item)| !item.sample.trajectories.is_empty())
        .map(|(i, item)| {
            let prompt = item
                .sample
                .prompt
                .as_deref()
                .unwrap_or(cxr_max::sim::PROMPT);
            let sequences = item
                .sample
                .trajectories
                .iter()
                .map(|t| {
                    encode(
                        tok,
                        prompt,
                        &t.text,
                        max_len,
                        truncate,
                        &format!("{}/{}", item.sample.dicom_id, t.teacher),
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Group {
                id: item.sample.dicom_id.clone(),
                image: i,
                sequences,
                weights: None,
                drift: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if per_group == 0 {
        return Ok(whole);
    }
    let mut out = Vec::new();
    for (g, mut group) in whole.into_iter().enumerate() {
        let mut rng = substream(seed ^ 0x5f17_7a3c_0000_0000, g as u64);
        group.sequences.shuffle(&mut rng);
        for chunk in group.sequences.chunks(per_group) {
            out.push(Group {
                id: group.id.clone(),
                image: group.image,
                sequences: chunk.to_vec(),
                weights: None,
                drift: None,
            });
        }
    }
    Ok(out)
}

/// Stage-2 groups from the preference sets; images are matched to `items` by id (rows whose
/// image is not among them are counted in the second return value, not used).
///
/// # Errors
/// [`TrainError::NoNegatives`] for a row without negatives, [`TrainError::TooLong`],
/// [`TrainError::Empty`] when no row matches an image.
pub fn preference_groups(
    prefs: &Preferences,
    items: &[Item],
    tok: &TextTokenizer,
    max_len: usize,
    truncate: bool,
) -> Result<(Vec<Group>, usize)> {
    let mut groups = Vec::new();
    let mut unmatched = 0;
    for (line_no, row, image) in prefs.matched(items) {
        if row.rejected.is_empty() {
            return Err(TrainError::NoNegatives {
                source_file: prefs.source.clone(),
                line: line_no,
                id: row.id.clone(),
            });
        }
        let Some(image) = image else {
            unmatched += 1;
            continue;
        };
        let mut sequences = vec![encode(
            tok,
            &row.prompt,
            &row.chosen,
            max_len,
            truncate,
            &row.id,
        )?];
        for r in &row.rejected {
            sequences.push(encode(
                tok,
                &row.prompt,
                &r.text,
                max_len,
                truncate,
                &format!("{}/{}", row.id, r.teacher),
            )?);
        }
        let weights = if row.rejected.iter().all(|r| r.weight.is_some()) {
            Some(
                row.rejected
                    .iter()
                    .map(|r| r.weight.unwrap_or(1.0))
                    .collect(),
            )
        } else {
            None
        };
        groups.push(Group {
            id: row.id.clone(),
            image,
            sequences,
            weights,
            drift: Some(row.rejected.iter().map(|r| r.drift).collect()),
        });
    }
    if groups.is_empty() {
        return Err(TrainError::Empty(format!(
            "{}: no preference group matches an image of the data set ({unmatched} rows unmatched)",
            prefs.source.display()
        )));
    }
    Ok((groups, unmatched))
}

/// Orders the negatives of every group by drift, least drifting first (stable: equal drifts
/// keep teacher order), with their weights and drifts and, where computed (non-empty), their
/// reference log-probs `reference[group][sequence]`: the list order
/// `plackett-luce-ranking` ranks. Groups without drift are left as they are.
///
/// # Errors
/// [`TrainError::Empty`] when `reference` does not have one entry per group or a non-empty
/// entry has not one log-prob per sequence (nothing is reordered then).
pub fn order_by_drift(groups: &mut [Group], reference: &mut [Vec<f32>]) -> Result<()> {
    if groups.len() != reference.len() {
        return Err(TrainError::Empty(format!(
            "reference log-probs for {} preference groups, expected {}",
            reference.len(),
            groups.len()
        )));
    }
    for (g, (group, lp)) in groups.iter().zip(reference.iter()).enumerate() {
        let n = group.sequences.len();
        if !lp.is_empty() && lp.len() != n {
            return Err(TrainError::Empty(format!(
                "reference log-probs of preference group {g}: {} values for {n} sequences",
                lp.len()
            )));
        }
        if let Some(d) = &group.drift
            && d.len() + 1 != n
        {
            return Err(TrainError::Empty(format!(
                "preference group {g} ({}): {} drifts for {} negatives",
                group.id,
                d.len(),
                n.saturating_sub(1)
            )));
        }
    }
    for (group, lp) in groups.iter_mut().zip(reference.iter_mut()) {
        let Some(drift) = group.drift.clone() else {
            continue;
        };
        let mut order: Vec<usize> = (0..drift.len()).collect();
        order.sort_by(|&a, &b| drift[a].total_cmp(&drift[b]));
        let permute = |v: &[f64]| order.iter().map(|&u| v[u]).collect::<Vec<f64>>();
        group.drift = Some(permute(&drift));
        group.weights = group.weights.as_deref().map(permute);
        let negatives: Vec<Sequence> = order
            .iter()
            .map(|&u| group.sequences[u + 1].clone())
            .collect();
        group.sequences.truncate(1);
        group.sequences.extend(negatives);
        if !lp.is_empty() {
            let negatives: Vec<f32> = order.iter().map(|&u| lp[u + 1]).collect();
            lp.truncate(1);
            lp.extend(negatives);
        }
    }
    Ok(())
}

/// The unit indices of micro-batch `m` (`batch` units each): the units in a seeded random
/// order, a fresh permutation every epoch, so any position of the stream is a function of
/// `(seed, m)` alone (what resuming needs).
pub fn micro_batch(seed: u64, units: usize, batch: usize, m: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(batch);
    let mut cached: Option<(usize, Vec<usize>)> = None;
    for pos in m * batch..(m + 1) * batch {
        let (epoch, offset) = (pos / units, pos % units);
        if cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut perm: Vec<usize> = (0..units).collect();
            perm.shuffle(&mut substream(seed, epoch as u64));
            cached = Some((epoch, perm));
        }
        out.push(cached.as_ref().expect("permutation").1[offset]);
    }
    out
}

/// The generator of the `stream`-th independent sub-stream of `seed` (an epoch of the data
/// order, an image's trajectories): SplitMix64 started from `seed` and the stream index
/// mixed by an odd constant, one output skipped.
pub(crate) fn substream(seed: u64, stream: u64) -> SplitMix64 {
    let mut rng = SplitMix64::seed_from_u64(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
    rand::RngCore::next_u64(&mut rng);
    rng
}

/// A micro-batch on a device: `G` groups of `S` sequences (groups with fewer sequences are
/// padded with masked copies of their first).
#[derive(Debug, Clone)]
pub struct Batch<B: Backend> {
    /// `[G, 1, H, W]`.
    pub images: Tensor<B, 4>,
    /// Inputs `[G·S, T]` (sequence without its last token).
    pub inputs: Tensor<B, 2, Int>,
    /// Targets `[G·S, T]` (sequence without its first token).
    pub targets: Tensor<B, 2, Int>,
    /// `[G·S, T]`: true where the target is a completion token.
    pub mask: Tensor<B, 2, Bool>,
    /// `[G, S - 1]`: true where a negative exists (stage 2).
    pub present: Tensor<B, 2, Bool>,
    /// Completion tokens per sequence `[G, S]` (0 for padding sequences).
    pub tokens: Vec<Vec<usize>>,
    /// `[G, S - 1]` per-negative weights when every group has them.
    pub weights: Option<Tensor<B, 2>>,
    /// `[G, S]` rewards `[1, 1 − drift_1, …, 1 − drift_N]` (the agreement of each sequence with
    /// the consensus; 0 for padding) when every group has drifts: `infonca`'s soft targets.
    pub rewards: Option<Tensor<B, 2>>,
    /// Groups.
    pub groups: usize,
    /// Sequences per group.
    pub per_group: usize,
}

/// Assembles the groups `which` into a [`Batch`].
pub fn make_batch<B: Backend>(
    images: &Images,
    groups: &[Group],
    which: &[usize],
    pad: u32,
    device: &B::Device,
) -> Batch<B> {
    let s = which
        .iter()
        .map(|&g| groups[g].sequences.len())
        .max()
        .unwrap_or(1);
    let t = which
        .iter()
        .flat_map(|&g| groups[g].sequences.iter().map(|q| q.ids.len()))
        .max()
        .unwrap_or(2)
        - 1;
    let rows = which.len() * s;
    let (mut inputs, mut targets) = (vec![pad as i64; rows * t], vec![pad as i64; rows * t]);
    let mut mask = vec![false; rows * t];
    let mut present = vec![false; which.len() * (s - 1).max(1)];
    let mut tokens = vec![vec![0usize; s]; which.len()];
    let all_weighted = which.iter().all(|&g| groups[g].weights.is_some());
    let mut weights = vec![0f32; which.len() * (s - 1).max(1)];
    let all_drift = which.iter().all(|&g| groups[g].drift.is_some());
    let mut rewards = vec![0f32; which.len() * s];
    for (gi, &g) in which.iter().enumerate() {
        let group = &groups[g];
        for j in 0..s {
            let row = gi * s + j;
            let (seq, real) = match group.sequences.get(j) {
                Some(q) => (q, true),
                None => (&group.sequences[0], false),
            };
            for k in 0..seq.ids.len() - 1 {
                inputs[row * t + k] = i64::from(seq.ids[k]);
                targets[row * t + k] = i64::from(seq.ids[k + 1]);
                mask[row * t + k] = real && k + 1 >= seq.prompt_len;
            }
            if real {
                tokens[gi][j] = seq.completion_len();
                if j > 0 {
                    present[gi * (s - 1) + j - 1] = true;
                    if let Some(w) = &group.weights {
                        weights[gi * (s - 1) + j - 1] = w[j - 1] as f32;
                    }
                }
                if let Some(d) = &group.drift {
                    rewards[row] = if j == 0 { 1.0 } else { (1.0 - d[j - 1]) as f32 };
                }
            }
        }
    }
    let int = |v: Vec<i64>| Tensor::<B, 2, Int>::from_data(TensorData::new(v, [rows, t]), device);
    Batch {
        images: images.tensor(
            &which.iter().map(|&g| groups[g].image).collect::<Vec<_>>(),
            device,
        ),
        inputs: int(inputs),
        targets: int(targets),
        mask: Tensor::from_data(TensorData::new(mask, [rows, t]), device),
        present: Tensor::from_data(
            TensorData::new(present, [which.len(), (s - 1).max(1)]),
            device,
        ),
        tokens,
        weights: all_weighted.then(|| {
            Tensor::from_data(
                TensorData::new(weights, [which.len(), (s - 1).max(1)]),
                device,
            )
        }),
        rewards: all_drift
            .then(|| Tensor::from_data(TensorData::new(rewards, [which.len(), s]), device)),
        groups: which.len(),
        per_group: s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    fn bad_input(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/bad-inputs")
            .join(name)
    }

    /// A byte-order mark before the first row costs nothing.
    #[test]
    fn preferences_with_a_byte_order_mark_read_every_row() {
        let prefs = Preferences::read(&bad_input("prefs-bom.jsonl")).unwrap();
        let ids: Vec<(usize, &str)> = prefs
            .rows
            .iter()
            .map(|(l, r)| (*l, r.id.as_str()))
            .collect();
        assert_eq!(ids, [(1, "a"), (2, "b")]);
    }

    /// An empty `chosen` and a negative weight are errors naming the file, the line and the
    /// id, when the file is read (before any training step).
    #[test]
    fn unusable_preference_rows_are_rejected_with_line_and_id() {
        for (name, line, message) in [
            (
                "prefs-empty-chosen.jsonl",
                2,
                "preference `b`: `chosen` is empty",
            ),
            (
                "prefs-negative-weight.jsonl",
                3,
                "preference `c`: rejected[0] (A) has weight -1; weights must be finite and >= 0",
            ),
        ] {
            let path = bad_input(name);
            match Preferences::read(&path) {
                Err(TrainError::BadPreference {
                    source_file,
                    line: l,
                    message: m,
                }) => {
                    assert_eq!((source_file, l, m.as_str()), (path, line, message));
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    fn seq(id: u32) -> Sequence {
        Sequence {
            ids: vec![1, id, 2, id, 3],
            prompt_len: 3,
        }
    }

    /// A stage-2 group: chosen id 10, negatives ids 11.. with the given drifts and weights.
    fn group(drift: &[f64], weights: Option<Vec<f64>>) -> Group {
        Group {
            id: "g".to_owned(),
            image: 0,
            sequences: (0..=drift.len() as u32).map(|i| seq(10 + i)).collect(),
            weights,
            drift: Some(drift.to_vec()),
        }
    }

    /// Negatives sorted by drift ascending, ties in teacher order, with their weights, drifts
    /// and reference log-probs; the chosen sequence stays first; groups without drift and
    /// entries without reference log-probs are untouched.
    #[test]
    fn negatives_are_ordered_by_drift_stably() {
        let mut groups = vec![
            group(&[0.5, 0.1, 0.5, 0.0], Some(vec![1.0, 2.0, 3.0, 4.0])),
            group(&[0.3, 0.2], None),
            Group {
                drift: None,
                ..group(&[0.9, 0.1], None)
            },
        ];
        let mut reference = vec![
            vec![-1.0, -2.0, -3.0, -4.0, -5.0],
            Vec::new(),
            vec![-1.0, -2.0, -3.0],
        ];
        order_by_drift(&mut groups, &mut reference).unwrap();
        let mut short = vec![vec![-1.0]];
        assert!(matches!(
            order_by_drift(&mut groups[..1], &mut short),
            Err(TrainError::Empty(_))
        ));
        let ids = |g: &Group| g.sequences.iter().map(|q| q.ids[1]).collect::<Vec<_>>();
        assert_eq!(ids(&groups[0]), [10, 14, 12, 11, 13]);
        assert_eq!(groups[0].drift.as_deref(), Some(&[0.0, 0.1, 0.5, 0.5][..]));
        assert_eq!(
            groups[0].weights.as_deref(),
            Some(&[4.0, 2.0, 1.0, 3.0][..])
        );
        assert_eq!(reference[0], [-1.0, -5.0, -3.0, -2.0, -4.0]);
        assert_eq!(ids(&groups[1]), [10, 12, 11]);
        assert!(reference[1].is_empty());
        assert_eq!(ids(&groups[2]), [10, 11, 12]);
        assert_eq!(reference[2], [-1.0, -2.0, -3.0]);
    }

    /// The batch carries `[1, 1 − drift…]` per group (0 in padding columns), and no rewards
    /// when a group has no drift.
    #[test]
    fn batches_carry_rewards_from_drift() {
        type B = burn::backend::NdArray;
        let images = Images {
            size: 2,
            pixels: vec![vec![0.0; 4]],
        };
        let groups = vec![group(&[0.25, 0.5], None), group(&[1.0], None)];
        let batch: Batch<B> = make_batch(&images, &groups, &[0, 1], 0, &Default::default());
        let r: Vec<f32> = batch.rewards.unwrap().into_data().to_vec().unwrap();
        assert_eq!(r, [1.0, 0.75, 0.5, 1.0, 0.0, 0.0]);
        let mut stage1 = groups.clone();
        stage1[1].drift = None;
        let batch: Batch<B> = make_batch(&images, &stage1, &[0, 1], 0, &Default::default());
        assert!(batch.rewards.is_none());
    }

    /// `seed_from_u64` of rand_xoshiro's SplitMix64 sets the state to the seed itself (no
    /// seed expansion): its first output is the reference implementation's for that state.
    #[test]
    fn splitmix_seed_is_the_state() {
        let mut rng = SplitMix64::seed_from_u64(1_477_776_061_723_855_037);
        assert_eq!(rng.next_u64(), 1_985_237_415_132_408_290);
    }

    /// Every epoch of the data order visits each unit once, and any micro-batch is a function
    /// of `(seed, m)` alone.
    #[test]
    fn micro_batches_cover_each_epoch_once() {
        let (units, batch) = (10, 5);
        let epoch: Vec<usize> = (0..2)
            .flat_map(|m| micro_batch(3, units, batch, m))
            .collect();
        let mut sorted = epoch.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..units).collect::<Vec<_>>());
        assert_ne!(epoch, (0..units).collect::<Vec<_>>(), "shuffled");
        assert_eq!(
            micro_batch(3, units, batch, 7),
            micro_batch(3, units, batch, 7)
        );
        assert_ne!(
            micro_batch(3, units, batch, 2),
            micro_batch(3, units, batch, 0)
        );
        assert_ne!(
            micro_batch(4, units, batch, 0),
            micro_batch(3, units, batch, 0)
        );
    }
}
