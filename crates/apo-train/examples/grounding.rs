//! Does a student's text depend on the image, and in the right direction?
//!
//! ```text
//! cargo run --release -p apo-train --example grounding -- RUN/train/apo RUN/train/tokenizer.json RUN/data
//! ```
//!
//! On the test split of a simulated data set (the phrases below are the simulator's), for
//! each Table 1 finding: the student's log-likelihood of a report that states the finding
//! minus that of the same report denying it (everything else denied), per image. The area
//! under the ROC curve of that score against the ground-truth label says whether the text
//! reads the finding from the image (0.5: it does not; 1: perfectly); the mean scores on
//! positive and negative images say where the greedy decision sits. With a concept head, the
//! same area for its probability of the finding.

use std::error::Error;
use std::path::Path;

use apo_train::data::{Images, encode, open_items};
use apo_train::tokenizer::TextTokenizer;
use burn::backend::NdArray;
use burn::tensor::activation::{log_softmax, sigmoid};
use burn::tensor::{Int, Tensor, TensorData};
use cxr_max::{Finding, LabelStatus};

type B = NdArray<f32>;

/// Each Table 1 finding with the simulator's denial and one of its positive phrasings.
const PHRASES: [(Finding, &str, &str); 5] = [
    (
        Finding::Consolidation,
        "No focal consolidation.",
        "Consolidation in the right lower lobe.",
    ),
    (
        Finding::Edema,
        "No pulmonary edema.",
        "Mild pulmonary edema.",
    ),
    (
        Finding::PleuralEffusion,
        "No pleural effusion.",
        "Small left pleural effusion.",
    ),
    (
        Finding::Pneumonia,
        "No pneumonia.",
        "Findings consistent with right lower lobe pneumonia.",
    ),
    (
        Finding::Pneumothorax,
        "No pneumothorax.",
        "Right apical pneumothorax with a visible pleural line.",
    ),
];

/// The probability that a random positive scores above a random negative (ties count ½).
fn auc(pos: &[f64], neg: &[f64]) -> f64 {
    let mut s = 0.0;
    for p in pos {
        for n in neg {
            s += match p.total_cmp(n) {
                std::cmp::Ordering::Greater => 1.0,
                std::cmp::Ordering::Equal => 0.5,
                std::cmp::Ordering::Less => 0.0,
            };
        }
    }
    s / (pos.len() * neg.len()).max(1) as f64
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model_dir, tokenizer, data] = args.as_slice() else {
        return Err("usage: grounding MODEL_DIR TOKENIZER_JSON DATA_DIR".into());
    };
    let device = Default::default();
    let (model, config) = apo_train::checkpoint::load_model::<B>(Path::new(model_dir), &device)?;
    let tok = TextTokenizer::from_file(Path::new(tokenizer))?;
    let items = open_items(Path::new(data), Some("test"))?;
    let paths: Vec<_> = items.iter().map(|i| i.image.clone()).collect();
    let images = Images::load(&paths, config.image_size)?;

    // Text 0 denies all five findings; text 1 + k states finding k instead.
    let denials: Vec<&str> = PHRASES.iter().map(|p| p.1).collect();
    let mut texts = vec![format!("Findings: {}", denials.join(" "))];
    for (k, phrase) in PHRASES.iter().enumerate() {
        let mut t = denials.clone();
        t[k] = phrase.2;
        texts.push(format!("Findings: {}", t.join(" ")));
    }
    let prompt = cxr_max::sim::PROMPT;
    let seqs = texts
        .iter()
        .map(|t| encode(&tok, prompt, t, config.max_text_len, true, "grounding"))
        .collect::<Result<Vec<_>, _>>()?;
    let s = seqs.len();
    let width = seqs.iter().map(|q| q.ids.len()).max().unwrap_or(2) - 1;
    let vocab = tok.vocab_size();
    let column = |f: Finding| Finding::ALL.iter().position(|&g| g == f).unwrap_or(0);

    let n = items.len();
    let mut score = vec![[0f64; 5]; n];
    let mut concept = vec![[f64::NAN; 5]; n];
    let chunk = 16;
    for start in (0..n).step_by(chunk) {
        let which: Vec<usize> = (start..(start + chunk).min(n)).collect();
        let g = which.len();
        let prefix = model.encode(images.tensor::<B>(&which, &device));
        if let Some(c) = model.concepts(&prefix) {
            let c: Vec<f32> = sigmoid(c)
                .into_data()
                .to_vec()
                .map_err(|e| format!("{e:?}"))?;
            for (j, &i) in which.iter().enumerate() {
                for (k, p) in PHRASES.iter().enumerate() {
                    concept[i][k] = f64::from(c[j * 14 + column(p.0)]);
                }
            }
        }
        // Inputs, targets and the completion mask of every (image, text) row.
        let rows = g * s;
        let mut input = vec![0i64; rows * width];
        let mut target = vec![None; rows * width];
        for j in 0..g {
            for (q, seq) in seqs.iter().enumerate() {
                for t in 0..seq.ids.len() - 1 {
                    let o = (j * s + q) * width + t;
                    input[o] = i64::from(seq.ids[t]);
                    if t + 1 >= seq.prompt_len {
                        target[o] = Some(seq.ids[t + 1] as usize);
                    }
                }
            }
        }
        let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(input, [rows, width]), &device);
        let lp: Vec<f32> = log_softmax(model.decode(prefix, tokens), 2)
            .into_data()
            .to_vec()
            .map_err(|e| format!("{e:?}"))?;
        let mut total = vec![0f64; rows];
        for (o, t) in target.iter().enumerate() {
            if let Some(t) = t {
                total[o / width] += f64::from(lp[o * vocab + t]);
            }
        }
        for (j, &i) in which.iter().enumerate() {
            for (k, x) in score[i].iter_mut().enumerate() {
                *x = total[j * s + 1 + k] - total[j * s];
            }
        }
    }

    println!(
        "{} test images; score = log p(states it) - log p(denies it)",
        n
    );
    println!(
        "{:18} {:>9} {:>10} {:>10} {:>10} {:>13}",
        "finding", "positive", "AUC(text)", "mean s+", "mean s-", "AUC(concept)"
    );
    for (k, p) in PHRASES.iter().enumerate() {
        let (mut sp, mut sn, mut cp, mut cn) = (vec![], vec![], vec![], vec![]);
        for (i, item) in items.iter().enumerate() {
            let positive = item.labels.as_ref().map(|l| l.get(p.0)) == Some(LabelStatus::Positive);
            let (s, c) = if positive {
                (&mut sp, &mut cp)
            } else {
                (&mut sn, &mut cn)
            };
            s.push(score[i][k]);
            c.push(concept[i][k]);
        }
        let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len().max(1) as f64;
        let concept_auc = if cp.iter().chain(&cn).any(|x| x.is_nan()) {
            "-".to_owned()
        } else {
            format!("{:.3}", auc(&cp, &cn))
        };
        println!(
            "{:18} {:>9} {:>10.3} {:>10.3} {:>10.3} {:>13}",
            p.0.column_name(),
            sp.len(),
            auc(&sp, &sn),
            mean(&sp),
            mean(&sn),
            concept_auc
        );
    }
    Ok(())
}
