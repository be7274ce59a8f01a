//! A checkpoint folder as one object: the model, its processor (chat template, tokenizer, image
//! processor), and the two row formats `apo score` and `apo generate` read (JSON Lines).
//!
//! A score row `{"images": ["a.png", ...], "prompt": "...", "completion": "..."}` is rendered
//! as a user message (the images, then the prompt text) and an assistant message (the
//! completion). Its answer is `{"logprob", "tokens"}`: the sum of the log-probabilities of the
//! tokens of render(user + assistant) after render(user, add_generation_prompt = true) — TRL's
//! definition of a completion's log-probability. Relative image paths resolve against the folder
//! of the input file.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::chat::{Content, Message};
use crate::error::{ModelError, Result};
use crate::model::{GenerateOptions, Loaded};
use crate::processor::{PixelValues, Processor};
use crate::vision::VisionInput;

/// A tokenised sequence and the length of its prompt (the completion is the rest).
pub type Sequence = (Vec<u32>, usize);

/// A row of `apo score`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreRow {
    /// Image files, in the order they appear before the prompt.
    #[serde(default)]
    pub images: Vec<PathBuf>,
    /// The user's text.
    pub prompt: String,
    /// The assistant's answer to score.
    pub completion: String,
}

/// A row of `apo generate`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRow {
    /// Image files.
    #[serde(default)]
    pub images: Vec<PathBuf>,
    /// The user's text.
    pub prompt: String,
}

/// The answer to a score row.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Sum of the completion tokens' log-probabilities (natural log).
    pub logprob: f64,
    /// How many completion tokens.
    pub tokens: usize,
}

/// The answer to a generate row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generated {
    /// The decoded new tokens (special tokens skipped).
    pub text: String,
    /// The new token ids.
    pub ids: Vec<u32>,
}

/// What a JSON Lines run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunSummary {
    /// Non-empty lines read.
    pub read: usize,
    /// Lines answered.
    pub answered: usize,
    /// Lines answered with an error.
    pub failed: usize,
}

/// A checkpoint: model and processor.
#[derive(Debug)]
pub struct HfModel<B: Backend> {
    /// The model.
    pub model: Loaded<B>,
    /// Its processor.
    pub processor: Processor,
    /// Where it runs.
    pub device: B::Device,
}

impl From<&PixelValues> for VisionInput {
    fn from(p: &PixelValues) -> Self {
        VisionInput {
            pixels: p.data.clone(),
            grid_thw: p.grid_thw,
        }
    }
}

fn vision_inputs(images: &[PixelValues]) -> Vec<VisionInput> {
    images.iter().map(VisionInput::from).collect()
}

fn user(images: usize, prompt: &str) -> Message {
    let mut content = vec![Content::Image; images];
    content.push(Content::Text(prompt.to_string()));
    Message::new("user", content)
}

fn resolve(base: &Path, images: &[PathBuf]) -> Vec<PathBuf> {
    images
        .iter()
        .map(|p| {
            if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            }
        })
        .collect()
}

impl<B: Backend> HfModel<B> {
    /// Loads the model and its processor from a checkpoint folder.
    pub fn open(dir: &Path, device: B::Device) -> Result<Self> {
        Self::open_with_adapter(dir, None, device)
    }

    /// [`HfModel::open`], then applies the PEFT LoRA adapter in folder `adapter` if given.
    pub fn open_with_adapter(
        dir: &Path,
        adapter: Option<&Path>,
        device: B::Device,
    ) -> Result<Self> {
        let mut model = Loaded::load(dir, &device)?;
        if let Some(a) = adapter {
            let adapter = crate::lora::Adapter::read(a)?;
            model.model = adapter.attach(model.model, 0.0, &device)?;
            tracing::info!(adapter = %a.display(), modules = adapter.modules.len(), "adapter applied");
        }
        let processor = Processor::from_dir(dir)?;
        let id = processor.tokenizer.image_token_id();
        if id != model.config.image_token_id {
            return Err(ModelError::Tokenizer {
                path: processor.tokenizer.path().to_path_buf(),
                message: format!(
                    "the tokenizer's image token has id {id}, config.json says image_token_id {}",
                    model.config.image_token_id
                ),
            });
        }
        Ok(HfModel {
            model,
            processor,
            device,
        })
    }

    /// The token ids of render(user + assistant), the length of render(user, generation prompt),
    /// and the images.
    pub fn score_inputs(
        &self,
        row: &ScoreRow,
        base: &Path,
    ) -> Result<(Vec<u32>, usize, Vec<PixelValues>)> {
        let (mut seqs, images) =
            self.completion_inputs(&row.images, &row.prompt, &[&row.completion], base)?;
        let (ids, prompt) = seqs.remove(0);
        Ok((ids, prompt, images))
    }

    /// [`HfModel::score_inputs`] for several completions of one prompt: each completion's
    /// `(ids, prompt length)`, and the images once (every sequence shows them).
    pub fn completion_inputs(
        &self,
        images: &[PathBuf],
        prompt: &str,
        completions: &[&str],
        base: &Path,
    ) -> Result<(Vec<Sequence>, Vec<PixelValues>)> {
        let paths = resolve(base, images);
        let u = user(paths.len(), prompt);
        let prepared = self
            .processor
            .prepare(std::slice::from_ref(&u), &paths, true)?;
        let images = prepared.images;
        let merge = self.processor.image_processor.merge_size();
        let counts: Vec<usize> = images.iter().map(|p| p.tokens(merge)).collect();
        let mut seqs = Vec::with_capacity(completions.len());
        for completion in completions {
            if completion.is_empty() {
                return Err(ModelError::Input("the completion is empty".into()));
            }
            let assistant = Message::text("assistant", completion.to_string());
            let full_text = self
                .processor
                .template
                .render(&[u.clone(), assistant], false)?;
            let full = self.processor.tokenizer.encode(&full_text, &counts)?;
            if full.len() <= prepared.ids.len() || full[..prepared.ids.len()] != prepared.ids[..] {
                return Err(ModelError::Input(
                    "the chat template's render of the prompt is not a prefix of its render of prompt + completion".into(),
                ));
            }
            seqs.push((full, prepared.ids.len()));
        }
        Ok((seqs, images))
    }

    /// Scores rows in one batch (right-padded).
    pub fn score(&self, rows: &[ScoreRow], base: &Path) -> Result<Vec<Score>> {
        let mut seqs = Vec::with_capacity(rows.len());
        let mut images = Vec::new();
        for row in rows {
            let (ids, prompt, imgs) = self.score_inputs(row, base)?;
            seqs.push((ids, prompt));
            images.extend(vision_inputs(&imgs));
        }
        Ok(self
            .model
            .completion_logprobs(&seqs, &images, &self.device)?
            .into_iter()
            .map(|(logprob, tokens)| Score { logprob, tokens })
            .collect())
    }

    /// Continues a row's prompt.
    pub fn generate(
        &self,
        row: &GenerateRow,
        base: &Path,
        opts: &GenerateOptions,
    ) -> Result<Generated> {
        let paths = resolve(base, &row.images);
        let prompt = self
            .processor
            .prepare(&[user(paths.len(), &row.prompt)], &paths, true)?;
        let mut opts = opts.clone();
        if opts.stop.is_empty() {
            opts.stop = self.stop_tokens();
        }
        let ids = self.model.generate(
            &prompt.ids,
            &vision_inputs(&prompt.images),
            &opts,
            &self.device,
        )?;
        let text = self.processor.tokenizer.decode(&ids, true)?;
        Ok(Generated { text, ids })
    }

    /// Continues several rows' prompts in one left-padded batch ([`Loaded::generate_batch`]);
    /// row `i` samples with seed `seeds[i]` (`None`: every row with `opts.seed`, so each row
    /// gives what [`HfModel::generate`] gives it alone).
    pub fn generate_batch(
        &self,
        rows: &[GenerateRow],
        base: &Path,
        opts: &GenerateOptions,
        seeds: Option<&[u64]>,
    ) -> Result<Vec<Generated>> {
        let mut ids = Vec::with_capacity(rows.len());
        let mut images = Vec::new();
        for row in rows {
            let paths = resolve(base, &row.images);
            let prompt = self
                .processor
                .prepare(&[user(paths.len(), &row.prompt)], &paths, true)?;
            ids.push(prompt.ids);
            images.extend(vision_inputs(&prompt.images));
        }
        let mut opts = opts.clone();
        if opts.stop.is_empty() {
            opts.stop = self.stop_tokens();
        }
        let same = vec![opts.seed; rows.len()];
        let seeds = seeds.unwrap_or(&same);
        let out = self
            .model
            .generate_batch(&ids, &images, &opts, seeds, &self.device)?;
        out.into_iter()
            .map(|ids| {
                let text = self.processor.tokenizer.decode(&ids, true)?;
                Ok(Generated { text, ids })
            })
            .collect()
    }

    /// The tokens that end a turn: the tokenizer's eos and the config's `eos_token_id`s.
    pub fn stop_tokens(&self) -> Vec<u32> {
        let mut stop: Vec<u32> = self.model.config.text.eos_token_id.clone();
        if let Some(e) = self.processor.tokenizer.eos_id()
            && !stop.contains(&e)
        {
            stop.push(e);
        }
        stop
    }

    /// `apo score`: one answer line per non-empty input line, `{"line": N, "error": ...}` for a
    /// line that fails (the rest are still answered).
    pub fn score_jsonl(
        &self,
        input: impl BufRead,
        mut output: impl Write,
        base: &Path,
    ) -> Result<RunSummary> {
        self.score_jsonl_batched(input, &mut output, base, 1)
    }

    /// [`HfModel::score_jsonl`], `batch` rows per right-padded forward pass.
    pub fn score_jsonl_batched(
        &self,
        input: impl BufRead,
        mut output: impl Write,
        base: &Path,
        batch: usize,
    ) -> Result<RunSummary> {
        let value = |s: Score| serde_json::to_value(s).unwrap_or_default();
        run_jsonl(
            input,
            &mut output,
            batch,
            |rows: &[ScoreRow]| Ok(self.score(rows, base)?.into_iter().map(value).collect()),
            |row: &ScoreRow| Ok(value(self.score(std::slice::from_ref(row), base)?[0])),
        )
    }

    /// `apo generate`: as [`HfModel::score_jsonl`], answers `{"text", "ids"}`.
    pub fn generate_jsonl(
        &self,
        input: impl BufRead,
        mut output: impl Write,
        base: &Path,
        opts: &GenerateOptions,
    ) -> Result<RunSummary> {
        self.generate_jsonl_batched(input, &mut output, base, opts, 1)
    }

    /// [`HfModel::generate_jsonl`], `batch` rows per left-padded batch (each row gives what it
    /// gives alone).
    pub fn generate_jsonl_batched(
        &self,
        input: impl BufRead,
        mut output: impl Write,
        base: &Path,
        opts: &GenerateOptions,
        batch: usize,
    ) -> Result<RunSummary> {
        let value = |g: Generated| serde_json::to_value(g).unwrap_or_default();
        run_jsonl(
            input,
            &mut output,
            batch,
            |rows: &[GenerateRow]| {
                Ok(self
                    .generate_batch(rows, base, opts, None)?
                    .into_iter()
                    .map(value)
                    .collect())
            },
            |row: &GenerateRow| Ok(value(self.generate(row, base, opts)?)),
        )
    }
}

/// Answers JSON Lines `batch` rows at a time: every non-empty line is parsed; the rows that
/// parse go through `many` together, and if that fails, one at a time through `one`, so a bad
/// row is answered `{"line", "error"}` and the others are still answered. Answers keep input
/// order.
fn run_jsonl<R: serde::de::DeserializeOwned>(
    input: impl BufRead,
    output: &mut impl Write,
    batch: usize,
    mut many: impl FnMut(&[R]) -> Result<Vec<serde_json::Value>>,
    mut one: impl FnMut(&R) -> Result<serde_json::Value>,
) -> Result<RunSummary> {
    let mut summary = RunSummary::default();
    let io = |source| ModelError::Io {
        path: PathBuf::from("<output>"),
        source,
    };
    let mut pending: Vec<(usize, Result<R>)> = Vec::new();
    let mut flush = |pending: &mut Vec<(usize, Result<R>)>,
                     output: &mut dyn Write,
                     summary: &mut RunSummary|
     -> Result<()> {
        let started = std::time::Instant::now();
        let (lines, parsed): (Vec<usize>, Vec<Result<R>>) = pending.drain(..).unzip();
        let (first, last) = (lines.first().copied(), lines.last().copied());
        let mut good: Vec<R> = Vec::new();
        let mut slots: Vec<std::result::Result<usize, String>> = Vec::new();
        for p in parsed {
            match p {
                Ok(r) => {
                    slots.push(Ok(good.len()));
                    good.push(r);
                }
                Err(e) => slots.push(Err(e.to_string())),
            }
        }
        let answers: Vec<std::result::Result<serde_json::Value, String>> = if good.is_empty() {
            Vec::new()
        } else if good.len() > 1
            && let Ok(v) = many(&good)
        {
            v.into_iter().map(Ok).collect()
        } else {
            good.iter()
                .map(|r| one(r).map_err(|e| e.to_string()))
                .collect()
        };
        for (line, slot) in lines.into_iter().zip(slots) {
            let value = match slot.and_then(|k| answers[k].clone()) {
                Ok(v) => {
                    summary.answered += 1;
                    v
                }
                Err(e) => {
                    summary.failed += 1;
                    serde_json::json!({ "line": line, "error": e })
                }
            };
            writeln!(output, "{value}").map_err(io)?;
        }
        if let (Some(first), Some(last)) = (first, last) {
            tracing::info!(
                "lines {first}..={last} answered in {:.3} s",
                started.elapsed().as_secs_f64()
            );
        }
        Ok(())
    };
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|source| ModelError::Io {
            path: PathBuf::from("<input>"),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        summary.read += 1;
        let parsed = serde_json::from_str::<R>(&line)
            .map_err(|e| ModelError::Input(format!("not a valid row: {e}")));
        pending.push((i + 1, parsed));
        if pending.len() >= batch.max(1) {
            flush(&mut pending, output, &mut summary)?;
        }
    }
    flush(&mut pending, output, &mut summary)?;
    output.flush().map_err(io)?;
    Ok(summary)
}
