//! Generation and evaluation: the student writes a trajectory for each held-out image, the
//! `cxr-max` labeler reads its findings back, and they are scored against the labels.

use std::path::Path;

use burn::tensor::{Int, Tensor, TensorData};
use cxr_max::dataset::Item;
use cxr_max::eval::Accuracy;
use cxr_max::{Finding, findings};
use rand::{Rng, SeedableRng};
use rand_xoshiro::SplitMix64;
use serde::{Deserialize, Serialize};

use crate::data::{Images, prompt_ids};
use crate::tokenizer::TextTokenizer;
use crate::{ApoKernels, Result, Student, TrainError};

/// Decoding settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Generation {
    /// Longest completion in tokens.
    pub max_new_tokens: usize,
    /// 0 = greedy; otherwise softmax sampling at this temperature.
    pub temperature: f64,
    /// Sampling seed.
    pub seed: u64,
    /// Images per forward pass.
    pub batch: usize,
}

/// Completions for `images` (all with `prompt`): greedy or sampled, stopping at `<eos>` or
/// the model's maximum text length.
///
/// # Errors
/// [`TrainError::TooLong`] when the prompt leaves no room; tokenizer errors.
pub fn generate<B: ApoKernels>(
    model: &Student<B>,
    tok: &TextTokenizer,
    images: &Images,
    which: &[usize],
    prompt: &str,
    settings: &Generation,
    device: &B::Device,
) -> Result<Vec<String>> {
    let start = prompt_ids(tok, prompt)?;
    let max_len = model.max_text_len();
    if start.len() >= max_len {
        return Err(TrainError::TooLong {
            what: "prompt",
            id: "(generation)".into(),
            tokens: start.len(),
            max: max_len,
        });
    }
    let mut rng = SplitMix64::seed_from_u64(settings.seed);
    let mut out = Vec::with_capacity(which.len());
    for chunk in which.chunks(settings.batch.max(1)) {
        let g = chunk.len();
        let prefix = model.encode(images.tensor(chunk, device));
        let mut seqs: Vec<Vec<u32>> = vec![start.clone(); g];
        let mut done = vec![false; g];
        let flat: Vec<i64> = seqs.iter().flatten().map(|&x| i64::from(x)).collect();
        let tokens =
            Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [g, start.len()]), device);
        let (mut logits, mut cache) = model.decode_start(prefix, tokens);
        for step in 0..settings.max_new_tokens {
            let v = logits.dims()[1];
            let host: Vec<f32> = logits
                .into_data()
                .convert::<f32>()
                .to_vec()
                .map_err(|e| TrainError::Empty(format!("{e:?}")))?;
            let mut next_ids = Vec::with_capacity(g);
            for (i, row) in host.chunks(v).enumerate() {
                let next = if done[i] {
                    tok.pad()
                } else if settings.temperature <= 0.0 {
                    argmax(row)
                } else {
                    sample(row, settings.temperature, &mut rng)
                };
                if next == tok.eos() {
                    done[i] = true;
                }
                seqs[i].push(next);
                next_ids.push(i64::from(next));
            }
            if done.iter().all(|&d| d)
                || step + 1 == settings.max_new_tokens
                || start.len() + step + 1 >= max_len
            {
                break;
            }
            let token = Tensor::<B, 2, Int>::from_data(TensorData::new(next_ids, [g, 1]), device);
            logits = model.decode_next(&mut cache, token);
        }
        for s in seqs {
            let completion: Vec<u32> = s[start.len()..]
                .iter()
                .copied()
                .take_while(|&x| x != tok.eos() && x != tok.pad())
                .collect();
            out.push(tok.decode(&completion)?);
        }
    }
    Ok(out)
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

fn sample(row: &[f32], temperature: f64, rng: &mut impl Rng) -> u32 {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let w: Vec<f64> = row
        .iter()
        .map(|&x| ((x as f64 - m) / temperature).exp())
        .collect();
    let total: f64 = w.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, x) in w.iter().enumerate() {
        u -= x;
        if u <= 0.0 {
            return i as u32;
        }
    }
    (row.len() - 1) as u32
}

/// One evaluated image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSample {
    /// Image id.
    pub id: String,
    /// The generated trajectory.
    pub text: String,
}

/// An evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Images evaluated.
    pub images: usize,
    /// Accuracy of the findings read back from the generated trajectories (absent when the
    /// data set has no labels).
    pub accuracy: Option<Accuracy>,
    /// Every generated trajectory.
    pub samples: Vec<EvalSample>,
    /// Clinical-efficacy metrics of the findings read back (sensitivity, specificity, F1,
    /// balanced accuracy, AUROC from the concept head; absent without labels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<cxr_max::eval::Scores>,
    /// Per sample (in `samples` order), the concept head's probability of each finding (in
    /// `cxr_max::Finding::ALL` order), when the student has a head with one output per
    /// finding: the score behind the table's AUROC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concepts: Option<Vec<Vec<f32>>>,
}

impl EvalReport {
    /// The accuracy table of an evaluation.
    pub fn render(&self) -> String {
        let r = self;
        use std::fmt::Write as _;
        let mut out = format!("evaluated {} images\n", r.images);
        let v = |x: Option<f64>| x.map_or_else(|| format!("{:>6}", "-"), |x| format!("{x:>6.3}"));
        match (&r.accuracy, &r.scores) {
            (Some(a), Some(s)) => {
                let _ = writeln!(
                    out,
                    "{:<28} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}   stated",
                    "finding", "BA", "sens", "spec", "F1", "AUROC", "acc"
                );
                for (f, m) in &s.findings {
                    let cov = a.coverage.get(f).copied().unwrap_or(0.0);
                    let _ = writeln!(
                        out,
                        "{f:<28} {} {} {} {} {} {}   {:>5.1}%",
                        v(m.balanced_accuracy),
                        v(m.sensitivity),
                        v(m.specificity),
                        v(m.f1),
                        v(m.auroc),
                        v(m.accuracy),
                        100.0 * cov
                    );
                }
                for (name, sum) in [("Table 1 findings", &s.summary), ("all 14", &s.summary_14)] {
                    let _ = writeln!(
                        out,
                        "{name:<28} balanced accuracy {}  macro-F1 {}  micro-F1 {}  AUROC {}  accuracy {}",
                        v(sum.balanced_accuracy),
                        v(sum.macro_f1),
                        v(sum.micro_f1),
                        v(sum.auroc),
                        v(sum.accuracy)
                    );
                }
            }
            (Some(a), None) => {
                for (f, v) in &a.per_finding {
                    let cov = a.coverage.get(f).copied().unwrap_or(0.0);
                    let _ = match v {
                        Some(v) => writeln!(
                            out,
                            "{f:<28} {v:>6.3}   (stated on {:>5.1}% of images)",
                            100.0 * cov
                        ),
                        None => writeln!(out, "{f:<28} {:>6}", "-"),
                    };
                }
                let _ = writeln!(out, "{:<28} {:>6.3}   (Table 1 findings)", "mean", a.mean);
            }
            (None, _) => out.push_str("the data set has no labels: no accuracy\n"),
        }
        out
    }
}

/// Generates a trajectory for every item and scores the findings the labeler reads back.
///
/// # Errors
/// Image, tokenizer and generation errors.
pub fn evaluate<B: ApoKernels>(
    model: &Student<B>,
    tok: &TextTokenizer,
    items: &[Item],
    image_size: usize,
    settings: &Generation,
    evaluated: &[Finding],
    device: &B::Device,
) -> Result<EvalReport> {
    let paths: Vec<_> = items.iter().map(|i| i.image.clone()).collect();
    let images = Images::load(&paths, image_size)?;
    // Items grouped by prompt, so each batch shares one.
    let mut by_prompt: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, item) in items.iter().enumerate() {
        let p = item
            .sample
            .prompt
            .as_deref()
            .unwrap_or(cxr_max::sim::PROMPT);
        by_prompt.entry(p).or_default().push(i);
    }
    let mut texts = vec![String::new(); items.len()];
    let all: Vec<usize> = (0..items.len()).collect();
    let concepts = concept_probabilities(model, &images, &all, settings.batch, device)?;
    for (prompt, which) in by_prompt {
        let generated = generate(model, tok, &images, &which, prompt, settings, device)?;
        for (i, t) in which.into_iter().zip(generated) {
            texts[i] = t;
        }
    }
    Ok(report_from_texts(items, texts, evaluated, concepts))
}

/// Scores generated trajectories (`texts[i]` for `items[i]`): the labeler reads each one's
/// findings back and they are compared with the labels; `concepts` (per item, a probability
/// per finding in `Finding::ALL` order) give the AUROC when a model has them.
pub fn report_from_texts(
    items: &[Item],
    texts: Vec<String>,
    evaluated: &[Finding],
    concepts: Option<Vec<Vec<f32>>>,
) -> EvalReport {
    let read: Vec<_> = texts
        .iter()
        .map(|t| findings::extract(t).findings)
        .collect();
    let labels: Vec<_> = items.iter().map(|i| i.labels).collect();
    let accuracy = cxr_max::eval::accuracy(&labels, evaluated, |i, f| {
        cxr_max::eval::prediction(&read[i], f)
    });
    let score = concepts.as_ref().map(|c| {
        move |i: usize, f: Finding| {
            c.get(i)
                .and_then(|r| r.get(f.index()))
                .map(|&p| f64::from(p))
        }
    });
    let score_ref = score
        .as_ref()
        .map(|s| s as &dyn Fn(usize, Finding) -> Option<f64>);
    let scores = cxr_max::eval::scores(
        &labels,
        evaluated,
        |i, f| cxr_max::eval::Call::from(cxr_max::eval::prediction(&read[i], f)),
        score_ref,
    );
    EvalReport {
        images: items.len(),
        accuracy,
        samples: items
            .iter()
            .zip(texts)
            .map(|(i, text)| EvalSample {
                id: i.sample.dicom_id.clone(),
                text,
            })
            .collect(),
        concepts,
        scores,
    }
}

/// The concept head's probabilities (σ of its logits) for the images `which`, `batch` at a
/// time, in `which` order; `None` when the student has no head or its outputs are not one
/// per `cxr_max` finding.
///
/// # Errors
/// [`TrainError::Empty`] when a tensor cannot be read back.
pub fn concept_probabilities<B: ApoKernels>(
    model: &Student<B>,
    images: &Images,
    which: &[usize],
    batch: usize,
    device: &B::Device,
) -> Result<Option<Vec<Vec<f32>>>> {
    let mut out = Vec::with_capacity(which.len());
    for chunk in which.chunks(batch.max(1)) {
        let prefix = model.encode(images.tensor(chunk, device));
        let Some(logits) = model.concepts(&prefix) else {
            return Ok(None);
        };
        let [g, k] = logits.dims();
        if k != Finding::ALL.len() {
            return Ok(None);
        }
        let host: Vec<f32> = burn::tensor::activation::sigmoid(logits)
            .into_data()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| TrainError::Empty(format!("{e:?}")))?;
        out.extend(host.chunks(k).take(g).map(<[f32]>::to_vec));
    }
    Ok(Some(out))
}

/// Loads `MODEL_DIR/model.{bin,json}` and the run's tokenizer, opens the data set in
/// `data_dir` and evaluates on `split`: [`evaluate_dir_on`] on its items.
///
/// # Errors
/// As [`evaluate_dir_on`], data set errors.
pub fn evaluate_dir<B: ApoKernels>(
    model_dir: &Path,
    tokenizer: &Path,
    data_dir: &Path,
    split: Option<&str>,
    settings: &Generation,
    evaluated: &[Finding],
    device: &B::Device,
) -> Result<EvalReport> {
    let items = crate::data::open_items(data_dir, split)?;
    evaluate_dir_on::<B>(model_dir, tokenizer, &items, settings, evaluated, device)
}

/// Loads `MODEL_DIR/model.{bin,json}` and the run's tokenizer, and evaluates on `items`
/// (already opened).
///
/// # Errors
/// As [`evaluate`], checkpoint errors.
pub fn evaluate_dir_on<B: ApoKernels>(
    model_dir: &Path,
    tokenizer: &Path,
    items: &[Item],
    settings: &Generation,
    evaluated: &[Finding],
    device: &B::Device,
) -> Result<EvalReport> {
    let tok = TextTokenizer::from_file(tokenizer)?;
    let (model, config) = crate::checkpoint::load_model::<B>(model_dir, device)?;
    evaluate(
        &model,
        &tok,
        items,
        config.image_size,
        settings,
        evaluated,
        device,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxr_max::eval::Call;
    use cxr_max::{Findings, LabelStatus};

    /// The printed evaluation leads with the clinical-efficacy metrics of the labelled images.
    #[test]
    fn render_shows_balanced_accuracy_and_f1() {
        let labels: Vec<Option<Findings>> = (0..4)
            .map(|i| {
                let mut f = Findings::default();
                if i < 2 {
                    f.set(Finding::Edema, LabelStatus::Positive);
                }
                Some(f)
            })
            .collect();
        // Edema stated present on images 0 and 2: TP 1, FN 1, FP 1, TN 1.
        let call = |i: usize, f: Finding| match f {
            Finding::Edema if i.is_multiple_of(2) => Call::PRESENT,
            _ => Call::ABSENT,
        };
        let report = EvalReport {
            images: 4,
            accuracy: cxr_max::eval::accuracy(&labels, &Finding::TABLE1, |i, f| {
                Some(call(i, f) == Call::PRESENT)
            }),
            samples: Vec::new(),
            concepts: None,
            scores: cxr_max::eval::scores(&labels, &Finding::TABLE1, call, None),
        };
        let text = report.render();
        let edema = text.lines().find(|l| l.starts_with("Edema")).unwrap();
        assert!(
            edema.contains(" 0.500  0.500  0.500  0.500      -  0.500"),
            "{edema}"
        );
        assert!(text.contains("Table 1 findings"), "{text}");
        assert!(text.contains("macro-F1"), "{text}");
    }
}
