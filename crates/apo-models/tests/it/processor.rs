//! The image processor, chat template and tokenizer against transformers 5.24's values
//! (`tests/fixtures/expected/`, written by `tests/fixtures/make_fixtures.py`).

use std::path::{Path, PathBuf};

use apo_models::ModelError;
use apo_models::chat::{ChatTemplate, Content, Message};
use apo_models::processor::{ImageProcessor, PixelValues, Processor};
use apo_models::tokenizer::{PaddingSide, Tokenizer};
use serde_json::Value;

use crate::{CHECKPOINTS, fixtures};

/// `image_std` of the fixtures' processor config, to undo the normalisation.
const IMAGE_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn expected_json(checkpoint: &str) -> Value {
    read_json(
        &fixtures()
            .join("expected")
            .join(format!("{checkpoint}.json")),
    )
}

/// A tensor of `processor.safetensors` as f64 values, with its shape.
fn tensor(st: &safetensors::SafeTensors<'_>, name: &str) -> (Vec<f64>, Vec<usize>) {
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("processor.safetensors: {name}: {e}"));
    let data = t.data();
    let values: Vec<f64> = match t.dtype() {
        safetensors::Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        safetensors::Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
        safetensors::Dtype::I64 => data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f64)
            .collect(),
        other => panic!("{name}: unexpected dtype {other:?}"),
    };
    (values, t.shape().to_vec())
}

fn ids_of(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .expect("a list of ids")
        .iter()
        .map(|v| u32::try_from(v.as_u64().expect("an id")).expect("a u32 id"))
        .collect()
}

/// The user message the fixtures render: one image block per image, then the text.
fn user_message(images: usize, text: &str) -> Message {
    let mut content = vec![Content::Image; images];
    content.push(Content::Text(text.to_owned()));
    Message::new("user", content)
}

/// The image paths of a fixture row (relative to the fixtures folder).
fn image_paths(value: &Value) -> Vec<PathBuf> {
    value
        .as_array()
        .expect("a list of image paths")
        .iter()
        .map(|p| fixtures().join(p.as_str().expect("a path")))
        .collect()
}

/// Max |ours - transformers'| over a pixel-value tensor, and the same in 8-bit units before
/// normalisation (the difference times the channel's std times 255).
fn pixel_errors(ours: &PixelValues, expected: &[f64], rows: usize) -> (f64, f64) {
    let per_channel = ours.patch_dim / 3;
    let mut max_abs = 0.0_f64;
    let mut max_255 = 0.0_f64;
    for (i, (&a, &b)) in ours.data[..rows * ours.patch_dim]
        .iter()
        .zip(expected)
        .enumerate()
    {
        let d = (f64::from(a) - b).abs();
        let channel = (i % ours.patch_dim) / per_channel;
        max_abs = max_abs.max(d);
        max_255 = max_255.max(d * IMAGE_STD[channel] * 255.0);
    }
    (max_abs, max_255)
}

#[test]
fn pixel_values_match_transformers() {
    let bytes = std::fs::read(fixtures().join("expected/processor.safetensors"))
        .expect("processor.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let processor = ImageProcessor::from_dir(fixtures().join("qwen2-vl-flat-f32"))
        .expect("preprocessor_config.json");
    for (stem, resized) in [
        ("square", false),
        ("gray", false),
        ("wide", true),
        ("large", true),
    ] {
        let ours = processor
            .open(fixtures().join(format!("images/{stem}.png")))
            .expect("image opens");
        let (thw, _) = tensor(&st, &format!("image_grid_thw.{stem}"));
        let thw: Vec<usize> = thw.iter().map(|&v| v as usize).collect();
        assert_eq!(ours.grid_thw.to_vec(), thw, "{stem}: image_grid_thw");
        assert_eq!(ours.patches, thw.iter().product::<usize>(), "{stem}");
        assert_eq!(ours.patch_dim, 3 * 2 * 14 * 14, "{stem}");
        assert_eq!(ours.data.len(), ours.patches * ours.patch_dim, "{stem}");

        // large.png's values are stored for its first 64 rows only; every row's sum is stored.
        let (expected, shape) = tensor(&st, &format!("pixel_values.{stem}"));
        assert_eq!(shape[1], ours.patch_dim, "{stem}");
        let rows = shape[0];
        assert!(rows <= ours.patches, "{stem}");
        let (max_abs, max_255) = pixel_errors(&ours, &expected, rows);
        eprintln!(
            "{stem}: max |diff| {max_abs:e} ({:.3}/255 before normalisation)",
            max_255
        );
        // The contract is 2/255 before normalisation after a resize; the resampler reproduces
        // Pillow bit for bit, so the values are in fact equal. The tighter bound matters: a
        // resampler that runs its two passes in the wrong order (Pillow goes vertical-first
        // when an image shrinks mostly vertically, as wide.png does) stays within 2/255 here.
        assert!(
            max_255 <= 2.0 + 1e-9,
            "{stem}: {max_255}/255 (resized: {resized})"
        );
        assert!(max_abs <= 1e-6, "{stem}: {max_abs} (resized: {resized})");
        let (sums, _) = tensor(&st, &format!("pixel_row_sums.{stem}"));
        assert_eq!(sums.len(), ours.patches, "{stem}: row count");
        let worst_sum = ours
            .data
            .chunks_exact(ours.patch_dim)
            .zip(&sums)
            .map(|(row, &s)| (row.iter().map(|&v| f64::from(v)).sum::<f64>() - s).abs())
            .fold(0.0, f64::max);
        eprintln!("{stem}: max row-sum |diff| {worst_sum:e}");
        let bound = if resized {
            2.0 / 255.0 / 0.26 * ours.patch_dim as f64
        } else {
            1e-3
        };
        assert!(worst_sum <= bound, "{stem}: row sums differ by {worst_sum}");
    }
}

#[test]
fn image_processor_configs_agree() {
    // preprocessor_config.json (flat, min/max_pixels) and processor_config.json (nested, size{}).
    let flat = ImageProcessor::from_dir(fixtures().join("qwen2-vl-flat-f32")).expect("flat");
    let nested = ImageProcessor::from_dir(fixtures().join("qwen2-vl-nested-bf16")).expect("nested");
    for p in [&flat, &nested] {
        assert_eq!((p.min_pixels(), p.max_pixels()), (3136, 78400));
        assert_eq!(
            (p.patch_size(), p.temporal_patch_size(), p.merge_size()),
            (14, 2, 2)
        );
    }
    assert!(
        nested
            .config_path()
            .is_some_and(|p| p.ends_with("processor_config.json"))
    );
    let square = fixtures().join("images/square.png");
    assert_eq!(
        flat.open(&square).expect("square"),
        nested.open(&square).expect("square")
    );
}

#[test]
fn chat_text_matches_transformers() {
    for checkpoint in CHECKPOINTS {
        let dir = fixtures().join(checkpoint);
        let template = ChatTemplate::from_dir(&dir).unwrap_or_else(|e| panic!("{checkpoint}: {e}"));
        let expected = expected_json(checkpoint);
        let cases = expected["cases"].as_object().expect("cases");
        assert!(cases.len() >= 4, "{checkpoint}");
        for (case, c) in cases {
            let sequences = c["sequences"].as_array().expect("sequences");
            for (i, seq) in sequences.iter().enumerate() {
                let images = seq["images"].as_array().expect("images").len();
                let text = seq["text"].as_str().expect("text");
                let rendered = template
                    .render(&[user_message(images, text)], true)
                    .expect("renders");
                assert_eq!(
                    rendered,
                    c["rendered"][i].as_str().expect("rendered"),
                    "{checkpoint} {case} [{i}]"
                );
            }
        }
        for (i, row) in expected["score"]
            .as_array()
            .expect("score")
            .iter()
            .enumerate()
        {
            let user = user_message(
                row["images"].as_array().expect("images").len(),
                row["prompt"].as_str().expect("prompt"),
            );
            let assistant =
                Message::text("assistant", row["completion"].as_str().expect("completion"));
            let prompt = template
                .render(std::slice::from_ref(&user), true)
                .expect("renders");
            assert_eq!(
                prompt,
                row["prompt_text"].as_str().expect("prompt_text"),
                "{checkpoint} score [{i}]"
            );
            let full = template.render(&[user, assistant], false).expect("renders");
            assert_eq!(
                full,
                row["full_text"].as_str().expect("full_text"),
                "{checkpoint} score [{i}]"
            );
        }
    }
}

#[test]
fn input_ids_match_transformers() {
    for checkpoint in CHECKPOINTS {
        let dir = fixtures().join(checkpoint);
        let processor = Processor::from_dir(&dir).unwrap_or_else(|e| panic!("{checkpoint}: {e}"));
        let expected = expected_json(checkpoint);
        let pad =
            u32::try_from(expected["pad_token_id"].as_u64().expect("pad_token_id")).expect("u32");
        assert_eq!(processor.tokenizer.pad_id(), Some(pad), "{checkpoint}");
        let side = match expected["padding_side"].as_str() {
            Some("left") => PaddingSide::Left,
            _ => PaddingSide::Right,
        };
        assert_eq!(processor.tokenizer.padding_side(), side, "{checkpoint}");
        let special = &expected["special_token_ids"];
        for (token, id) in [
            ("<|image_pad|>", processor.tokenizer.image_token_id()),
            ("<|vision_start|>", processor.tokenizer.vision_start_id()),
            ("<|vision_end|>", processor.tokenizer.vision_end_id()),
        ] {
            assert_eq!(
                u64::from(id),
                special[token].as_u64().expect("id"),
                "{checkpoint} {token}"
            );
        }

        for (case, c) in expected["cases"].as_object().expect("cases") {
            let mut grids = Vec::new();
            let mut image_tokens = 0;
            for (i, seq) in c["sequences"]
                .as_array()
                .expect("sequences")
                .iter()
                .enumerate()
            {
                let paths = image_paths(&seq["images"]);
                let message = user_message(paths.len(), seq["text"].as_str().expect("text"));
                let prepared = processor
                    .prepare(&[message], &paths, true)
                    .expect("prepares");
                assert_eq!(
                    prepared.text,
                    c["rendered"][i].as_str().expect("rendered"),
                    "{checkpoint} {case} [{i}]"
                );
                // transformers' row, without its padding.
                let padded = ids_of(&c["input_ids"][i]);
                let mask = ids_of(&c["attention_mask"][i]);
                let unpadded: Vec<u32> = padded
                    .iter()
                    .zip(&mask)
                    .filter(|(_, m)| **m == 1)
                    .map(|(id, _)| *id)
                    .collect();
                assert_eq!(
                    prepared.ids, unpadded,
                    "{checkpoint} {case} [{i}]: input_ids"
                );
                let pads = padded.len() - unpadded.len();
                let pad_run = match side {
                    PaddingSide::Left => &padded[..pads],
                    PaddingSide::Right => &padded[unpadded.len()..],
                };
                assert!(
                    pad_run.iter().all(|&id| id == pad),
                    "{checkpoint} {case} [{i}]: padding"
                );
                let merge = processor.image_processor.merge_size();
                image_tokens += prepared
                    .images
                    .iter()
                    .map(|p| p.tokens(merge))
                    .sum::<usize>();
                let image_id = processor.tokenizer.image_token_id();
                assert_eq!(
                    prepared.ids.iter().filter(|&&id| id == image_id).count(),
                    prepared
                        .images
                        .iter()
                        .map(|p| p.tokens(merge))
                        .sum::<usize>(),
                    "{checkpoint} {case} [{i}]"
                );
                grids.extend(prepared.images.iter().map(|p| p.grid_thw.to_vec()));
            }
            let expected_grids: Vec<Vec<usize>> = c["image_grid_thw"]
                .as_array()
                .expect("image_grid_thw")
                .iter()
                .map(|g| ids_of(g).into_iter().map(|v| v as usize).collect())
                .collect();
            assert_eq!(grids, expected_grids, "{checkpoint} {case}: image_grid_thw");
            assert_eq!(
                image_tokens as u64,
                c["image_tokens"].as_u64().expect("image_tokens"),
                "{checkpoint} {case}"
            );
        }

        for (i, row) in expected["score"]
            .as_array()
            .expect("score")
            .iter()
            .enumerate()
        {
            let paths = image_paths(&row["images"]);
            let user = user_message(paths.len(), row["prompt"].as_str().expect("prompt"));
            let assistant =
                Message::text("assistant", row["completion"].as_str().expect("completion"));
            let prompt = processor
                .prepare(std::slice::from_ref(&user), &paths, true)
                .expect("prompt");
            assert_eq!(
                prompt.ids,
                ids_of(&row["prompt_ids"]),
                "{checkpoint} score [{i}]: prompt_ids"
            );
            let full = processor
                .prepare(&[user, assistant], &paths, false)
                .expect("full");
            assert_eq!(
                full.ids,
                ids_of(&row["full_ids"]),
                "{checkpoint} score [{i}]: full_ids"
            );
        }

        let generate = &expected["generate"];
        let paths = image_paths(&generate["images"]);
        let prepared = processor
            .prepare(
                &[user_message(
                    paths.len(),
                    generate["prompt"].as_str().expect("prompt"),
                )],
                &paths,
                true,
            )
            .expect("generate prompt");
        assert_eq!(
            prepared.text,
            generate["rendered"].as_str().expect("rendered"),
            "{checkpoint} generate"
        );
        assert_eq!(
            prepared.ids,
            ids_of(&generate["input_ids"]),
            "{checkpoint} generate"
        );
        let decoded = processor
            .tokenizer
            .decode(&ids_of(&generate["new_ids"]), false)
            .expect("decodes");
        assert_eq!(
            decoded,
            generate["decoded"].as_str().expect("decoded"),
            "{checkpoint} generate: decode"
        );
    }
}

#[test]
fn decode_round_trips_and_skips_special_tokens() {
    let tokenizer = Tokenizer::from_dir(fixtures().join("qwen2-vl-flat-f32")).expect("tokenizer");
    let text = "<|im_start|>user\nThe heart is normal in size.<|im_end|>\n";
    let ids = tokenizer.encode(text, &[]).expect("encodes");
    assert_eq!(tokenizer.decode(&ids, false).expect("decodes"), text);
    assert_eq!(
        tokenizer.decode(&ids, true).expect("decodes"),
        "user\nThe heart is normal in size.\n"
    );
    assert_eq!(tokenizer.eos_token(), Some("<|im_end|>"));
    assert!(matches!(
        tokenizer.decode(&[u32::MAX], false),
        Err(ModelError::Tokenizer { .. })
    ));
    // Placeholder count must match the images given.
    let err = tokenizer
        .encode("<|image_pad|>", &[])
        .expect_err("mismatch");
    assert!(matches!(err, ModelError::Input(_)), "{err}");
    let ids = tokenizer
        .encode("a<|image_pad|>b<|image_pad|>", &[2, 3])
        .expect("encodes");
    let pad = tokenizer.image_token_id();
    assert_eq!(ids.iter().filter(|&&id| id == pad).count(), 5);
}

#[test]
fn broken_image_is_a_decode_error_naming_the_file() {
    let processor = ImageProcessor::from_dir(fixtures().join("qwen2-vl-flat-f32")).expect("config");
    let path = fixtures().join("images/broken.png");
    match processor.open(&path) {
        Err(ModelError::Image { path: p, message }) => {
            assert_eq!(p, path);
            let shown = ModelError::Image { path: p, message }.to_string();
            assert!(shown.contains("broken.png"), "{shown}");
        }
        other => panic!("expected ModelError::Image, got {other:?}"),
    }
    assert!(matches!(
        processor.open(fixtures().join("images/absent.png")),
        Err(ModelError::Io { .. })
    ));
}

/// A scratch folder with some of a checkpoint's files.
fn scratch_dir(name: &str, from: &str, files: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "apo-models-processor-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    for f in files {
        std::fs::copy(fixtures().join(from).join(f), dir.join(f)).expect("copy");
    }
    dir
}

#[test]
fn missing_template_is_a_typed_error() {
    // tokenizer_config.json without "chat_template", no chat_template.json / .jinja.
    let dir = scratch_dir(
        "no-template",
        "qwen2-vl-flat-f32",
        &[
            "tokenizer.json",
            "tokenizer_config.json",
            "preprocessor_config.json",
        ],
    );
    let err = ChatTemplate::from_dir(&dir).expect_err("no template");
    assert!(matches!(err, ModelError::Template { .. }), "{err}");
    assert!(matches!(
        Processor::from_dir(&dir),
        Err(ModelError::Template { .. })
    ));
    // A template that raises.
    let raising = ChatTemplate::new(
        "{{ raise_exception('no system role') }}".into(),
        dir.join("x.jinja"),
        vec![],
    )
    .expect("parses");
    let err = raising.render(&[], false).expect_err("raises");
    assert!(
        matches!(&err, ModelError::Template { message, .. } if message.contains("no system role")),
        "{err}"
    );
    // A template that does not parse.
    assert!(matches!(
        ChatTemplate::new("{% for %}".into(), dir.join("y.jinja"), vec![]),
        Err(ModelError::Template { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_vision_token_and_configs_are_typed_errors() {
    let dir = scratch_dir("bad-token", "qwen2-vl-flat-f32", &["tokenizer.json"]);
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"image_token": "<|no_such_token|>"}"#,
    )
    .expect("write");
    let err = Tokenizer::from_dir(&dir).expect_err("missing token");
    assert!(
        matches!(&err, ModelError::Tokenizer { message, .. } if message.contains("<|no_such_token|>")),
        "{err}"
    );
    // No image-processor config at all, then a malformed field.
    assert!(matches!(
        ImageProcessor::from_dir(&dir),
        Err(ModelError::Io { .. })
    ));
    std::fs::write(
        dir.join("preprocessor_config.json"),
        r#"{"patch_size": "fourteen"}"#,
    )
    .expect("write");
    let err = ImageProcessor::from_dir(&dir).expect_err("bad field");
    assert!(
        matches!(&err, ModelError::Json { message, .. } if message.contains("patch_size")),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn image_count_mismatch_is_an_input_error() {
    let processor = Processor::from_dir(fixtures().join("qwen2-vl-flat-f32")).expect("processor");
    let err = processor
        .prepare(&[user_message(1, "hi")], &[], true)
        .expect_err("mismatch");
    assert!(matches!(err, ModelError::Input(_)), "{err}");
}
