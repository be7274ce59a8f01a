//! Where stage 2's reward margin is won: the policy's per-token log-ratios over its frozen
//! reference, summed separately over the tokens of sentences that state a finding and over
//! the rest (layout: headers, list markers, sentences without a finding, `<eos>`).
//!
//! With `r(y) = β Σ_t [log π_θ(y_t | ·) − log π_ref(y_t | ·)]` (the summed reward of DPO and
//! of the Plackett-Luce objective), the margin of the chosen sequence `c` over a negative `u`
//! splits exactly as `r(c) − r(u) = [r_F(c) − r_F(u)] + [r_L(c) − r_L(u)]`, `F` the finding
//! tokens and `L` the layout tokens of each sequence. A preference won on layout tokens is
//! a preference for the consensus's form; one won on finding tokens is a preference for
//! what it states.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};
use cxr_max::dataset::Item;
use serde::{Deserialize, Serialize};

use crate::data::{self, Images, Preferences};
use crate::tokenizer::TextTokenizer;
use crate::{ApoKernels, Result, Student, TrainError};

/// One quantity over the finding tokens and over the layout tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Parts {
    /// Over the tokens of sentences that state a finding.
    pub finding: f64,
    /// Over every other completion token.
    pub layout: f64,
}

impl Parts {
    /// `finding + layout`.
    pub fn total(&self) -> f64 {
        self.finding + self.layout
    }

    fn add(&mut self, other: Parts, scale: f64) {
        self.finding += scale * other.finding;
        self.layout += scale * other.layout;
    }
}

/// The reward margins of a policy over its reference on a set of preference groups, split by
/// token class ([`margin_breakdown`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarginBreakdown {
    /// Preference groups scored.
    pub groups: usize,
    /// (group, negative) pairs.
    pub pairs: usize,
    /// β of the reward.
    pub beta: f64,
    /// Mean over the pairs of the margin `r(c) − r(u)`, by token class.
    pub margin: Parts,
    /// Mean reward of the chosen sequences, by token class.
    pub chosen: Parts,
    /// Mean reward of the negatives, by token class.
    pub rejected: Parts,
    /// Mean tokens per chosen sequence, by class.
    pub chosen_tokens: Parts,
    /// Mean tokens per negative, by class.
    pub rejected_tokens: Parts,
    /// Share of pairs with a positive margin.
    pub accuracy: f64,
    /// Share of pairs whose finding-token part of the margin is positive.
    pub finding_accuracy: f64,
}

/// The class of each completion token of `text` (`true`: inside one of `spans`, the byte
/// ranges of the sentences that state a finding), for the first `kept` tokens; the rest
/// (`<eos>`, and tokens a truncation removed) are layout.
fn classes(tok: &TextTokenizer, text: &str, spans: &[(usize, usize)]) -> Result<Vec<bool>> {
    let (_, offsets) = tok.encode_with_offsets(text)?;
    Ok(offsets
        .iter()
        .map(|&(a, b)| spans.iter().any(|&(s, e)| a < e && b > s))
        .collect())
}

/// The margin breakdown of `policy` over `reference` on the preference sets of `prefs` whose
/// image is among `items` (the first `max_groups` of them), `batch` groups per forward pass.
/// `finding_spans(text)` gives the byte ranges of the sentences of `text` that state a
/// finding (the pipeline's findings labeler).
///
/// # Errors
/// [`TrainError::Empty`] when no preference set matches an image; tokenizer, image and
/// model errors.
#[allow(clippy::too_many_arguments)]
pub fn margin_breakdown<B: ApoKernels>(
    policy: &Student<B>,
    reference: &Student<B>,
    tok: &TextTokenizer,
    prefs: &Preferences,
    items: &[Item],
    image_size: usize,
    truncate: bool,
    beta: f64,
    max_groups: usize,
    finding_spans: &dyn Fn(&str) -> Vec<(usize, usize)>,
    batch: usize,
    device: &B::Device,
) -> Result<MarginBreakdown> {
    let (mut groups, _) =
        data::preference_groups(prefs, items, tok, policy.max_text_len(), truncate)?;
    groups.truncate(max_groups);
    let texts: Vec<Vec<&str>> = prefs
        .matched(items)
        .filter(|(_, _, image)| image.is_some())
        .take(groups.len())
        .map(|(_, row, _)| {
            std::iter::once(row.chosen.as_str())
                .chain(row.rejected.iter().map(|r| r.text.as_str()))
                .collect()
        })
        .collect();
    let used: Vec<usize> = groups.iter().map(|g| g.image).collect();
    let paths: Vec<std::path::PathBuf> = used.iter().map(|&i| items[i].image.clone()).collect();
    let images = Images::load(&paths, image_size)?;
    for (k, g) in groups.iter_mut().enumerate() {
        g.image = k;
    }
    let mut out = MarginBreakdown {
        groups: groups.len(),
        pairs: 0,
        beta,
        margin: Parts::default(),
        chosen: Parts::default(),
        rejected: Parts::default(),
        chosen_tokens: Parts::default(),
        rejected_tokens: Parts::default(),
        accuracy: 0.0,
        finding_accuracy: 0.0,
    };
    let (mut won, mut won_finding, mut negatives) = (0usize, 0usize, 0usize);
    let which: Vec<usize> = (0..groups.len()).collect();
    for chunk in which.chunks(batch.max(1)) {
        let b: data::Batch<B> = data::make_batch(&images, &groups, chunk, tok.pad(), device);
        let per = |model: &Student<B>| -> Result<Vec<f32>> {
            let logits = model.decode(model.encode(b.images.clone()), b.inputs.clone());
            let [n, t, _] = logits.dims();
            let targets: Tensor<B, 3, Int> = b.targets.clone().reshape([n, t, 1]);
            log_softmax(logits, 2)
                .gather(2, targets)
                .reshape([n * t])
                .into_data()
                .convert::<f32>()
                .to_vec()
                .map_err(|e| TrainError::Empty(format!("{e:?}")))
        };
        let (lp, lr) = (per(policy)?, per(reference)?);
        let t = b.inputs.dims()[1];
        for (gi, &g) in chunk.iter().enumerate() {
            let group = &groups[g];
            let mut rewards = Vec::with_capacity(group.sequences.len());
            let mut tokens = Vec::with_capacity(group.sequences.len());
            for (si, seq) in group.sequences.iter().enumerate() {
                let text = texts[g][si];
                let spans = finding_spans(text);
                let class = classes(tok, text, &spans)?;
                let row = (gi * b.per_group + si) * t;
                let (mut r, mut n) = (Parts::default(), Parts::default());
                for j in 0..seq.completion_len() {
                    let at = row + seq.prompt_len + j - 1;
                    let ratio = beta * f64::from(lp[at] - lr[at]);
                    // The last completion token is `<eos>`; a truncated text keeps its first
                    // `completion_len − 1` tokens.
                    let finding = j + 1 < seq.completion_len() && class.get(j) == Some(&true);
                    if finding {
                        r.finding += ratio;
                        n.finding += 1.0;
                    } else {
                        r.layout += ratio;
                        n.layout += 1.0;
                    }
                }
                rewards.push(r);
                tokens.push(n);
            }
            let chosen = rewards[0];
            out.chosen.add(chosen, 1.0);
            out.chosen_tokens.add(tokens[0], 1.0);
            for (r, n) in rewards[1..].iter().zip(&tokens[1..]) {
                let m = Parts {
                    finding: chosen.finding - r.finding,
                    layout: chosen.layout - r.layout,
                };
                out.margin.add(m, 1.0);
                out.rejected.add(*r, 1.0);
                out.rejected_tokens.add(*n, 1.0);
                won += usize::from(m.total() > 0.0);
                won_finding += usize::from(m.finding > 0.0);
                negatives += 1;
            }
        }
    }
    let (g, p) = (groups.len().max(1) as f64, negatives.max(1) as f64);
    out.pairs = negatives;
    out.chosen = scaled(out.chosen, g);
    out.chosen_tokens = scaled(out.chosen_tokens, g);
    out.margin = scaled(out.margin, p);
    out.rejected = scaled(out.rejected, p);
    out.rejected_tokens = scaled(out.rejected_tokens, p);
    out.accuracy = won as f64 / p;
    out.finding_accuracy = won_finding as f64 / p;
    Ok(out)
}

fn scaled(p: Parts, by: f64) -> Parts {
    Parts {
        finding: p.finding / by,
        layout: p.layout / by,
    }
}

/// [`margin_breakdown`] of the stage-2 run folder `policy_dir` over its stage-1 reference
/// `reference_dir`, with the run's tokenizer.
///
/// # Errors
/// As [`margin_breakdown`]; checkpoint and tokenizer errors.
#[allow(clippy::too_many_arguments)]
pub fn margin_breakdown_dirs<B: ApoKernels>(
    policy_dir: &std::path::Path,
    reference_dir: &std::path::Path,
    tokenizer: &std::path::Path,
    prefs: &Preferences,
    items: &[Item],
    truncate: bool,
    beta: f64,
    max_groups: usize,
    finding_spans: &dyn Fn(&str) -> Vec<(usize, usize)>,
    device: &B::Device,
) -> Result<MarginBreakdown> {
    let tok = TextTokenizer::from_file(tokenizer)?;
    let (policy, config) = crate::checkpoint::load_model::<B>(policy_dir, device)?;
    let (reference, _) = crate::checkpoint::load_model::<B>(reference_dir, device)?;
    margin_breakdown(
        &policy,
        &reference,
        &tok,
        prefs,
        items,
        config.image_size,
        truncate,
        beta,
        max_groups,
        finding_spans,
        4,
        device,
    )
}
