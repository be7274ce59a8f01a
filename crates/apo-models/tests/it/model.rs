//! Logits, positions, vision features, completion log-probabilities and greedy tokens of the
//! four tiny checkpoints against transformers 5.24's (`tests/fixtures/expected/`).

use std::path::PathBuf;

use apo_models::chat::{Content, Message};
use apo_models::hf::{HfModel, ScoreRow};
use apo_models::model::GenerateOptions;
use apo_models::{Loaded, ModelError, VisionInput};
use burn::backend::NdArray;
use burn::tensor::Tensor;
use serde_json::Value;

use crate::{CHECKPOINTS, fixtures};

type B = NdArray<f32>;

fn expected(name: &str) -> (Value, Vec<u8>) {
    let dir = fixtures().join("expected");
    let json = std::fs::read_to_string(dir.join(format!("{name}.json"))).expect("expected json");
    let st = std::fs::read(dir.join(format!("{name}.safetensors"))).expect("expected tensors");
    (serde_json::from_str(&json).expect("json"), st)
}

fn f32s(st: &safetensors::SafeTensors<'_>, key: &str) -> (Vec<f32>, Vec<usize>) {
    let t = st.tensor(key).unwrap_or_else(|e| panic!("{key}: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{key}");
    let v = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (v, t.shape().to_vec())
}

fn i64s(st: &safetensors::SafeTensors<'_>, key: &str) -> (Vec<i64>, Vec<usize>) {
    let t = st.tensor(key).unwrap_or_else(|e| panic!("{key}: {e}"));
    let v = t
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    (v, t.shape().to_vec())
}

fn ids_of(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_u64().expect("id") as u32)
                .collect()
        })
        .collect()
}

fn host<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().expect("f32")
}

/// The images of a case, preprocessed by our processor (equal to transformers' to the last
/// digit: tests/it/processor.rs).
fn images(hf: &HfModel<B>, case: &Value) -> Vec<VisionInput> {
    let mut out = Vec::new();
    for seq in case["sequences"].as_array().expect("sequences") {
        for img in seq["images"].as_array().expect("images") {
            let p = hf
                .processor
                .image_processor
                .open(fixtures().join(img.as_str().expect("path")))
                .expect("image");
            out.push(VisionInput::from(&p));
        }
    }
    out
}

fn open(name: &str) -> HfModel<B> {
    HfModel::<B>::open(&fixtures().join(name), Default::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Logits within 1e-4 at every real position, M-RoPE positions and deltas exactly, the merged
/// vision features within 1e-4: text only, one image, two images of different sizes, and a
/// left-padded batch — for both architectures, both config layouts and all three dtypes.
#[test]
fn logits_positions_and_vision_features_match_transformers() {
    let device = Default::default();
    for name in CHECKPOINTS {
        let hf = open(name);
        let (exp, bytes) = expected(name);
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
        for (case_name, case) in exp["cases"].as_object().expect("cases") {
            let ids = ids_of(&case["input_ids"]);
            let mask: Vec<Vec<bool>> = ids_of(&case["attention_mask"])
                .iter()
                .map(|r| r.iter().map(|&m| m == 1).collect())
                .collect();
            let imgs = images(&hf, case);
            let grids: Vec<[usize; 3]> = imgs.iter().map(|i| i.grid_thw).collect();
            let want_grids: Vec<[usize; 3]> = case["image_grid_thw"]
                .as_array()
                .expect("grids")
                .iter()
                .map(|g| {
                    let g: Vec<usize> = g
                        .as_array()
                        .expect("g")
                        .iter()
                        .map(|x| x.as_u64().expect("n") as usize)
                        .collect();
                    [g[0], g[1], g[2]]
                })
                .collect();
            assert_eq!(grids, want_grids, "{name}/{case_name}: image grids");

            // Positions (transformers computes them only when the batch has images; text-only
            // positions are 0..len, which ours equal without padding).
            let positions = hf.model.positions(&ids, &mask, &imgs).expect("positions");
            let (want, shape) = i64s(&st, &format!("position_ids.{case_name}"));
            let (b, l) = (shape[1], shape[2]);
            for r in 0..3 {
                for bi in 0..b {
                    for t in 0..l {
                        if mask[bi][t] {
                            assert_eq!(
                                positions[bi].rows[r][t],
                                want[(r * b + bi) * l + t],
                                "{name}/{case_name}: position row {r} seq {bi} token {t}"
                            );
                        }
                    }
                }
            }
            if !imgs.is_empty() {
                let (deltas, _) = i64s(&st, &format!("rope_deltas.{case_name}"));
                let ours: Vec<i64> = positions.iter().map(|p| p.delta).collect();
                assert_eq!(ours, deltas, "{name}/{case_name}: rope deltas");
                let (want, shape) = f32s(&st, &format!("vision.{case_name}"));
                let got = host(
                    hf.model
                        .model
                        .vision
                        .forward(&imgs, &device)
                        .expect("vision"),
                );
                assert_eq!(
                    got.len(),
                    shape.iter().product::<usize>(),
                    "{name}/{case_name}: vision shape"
                );
                let err = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    err < 1e-4,
                    "{name}/{case_name}: vision features differ by {err}"
                );
            }

            let logits = host(
                hf.model
                    .forward(&ids, &mask, &imgs, &device)
                    .expect("forward"),
            );
            let (want, shape) = f32s(&st, &format!("logits.{case_name}"));
            let from = case["logits_from"].as_u64().unwrap_or(0) as usize;
            let (eb, el, v) = (shape[0], shape[1], shape[2]);
            assert_eq!(
                from + el,
                l,
                "{name}/{case_name}: stored logits cover the tail"
            );
            let mut worst = 0f32;
            for bi in 0..eb {
                for t in 0..el {
                    if !mask[bi][from + t] {
                        continue;
                    }
                    for k in 0..v {
                        let a = logits[(bi * l + from + t) * v + k];
                        let e = want[(bi * el + t) * v + k];
                        worst = worst.max((a - e).abs());
                    }
                }
            }
            assert!(worst < 1e-4, "{name}/{case_name}: logits differ by {worst}");
        }
    }
}

/// `HfModel::score` equals TRL's completion log-probability (transformers' logits, f64 sums)
/// within 1e-4 relative, with the same token count; rows batched together give the same.
#[test]
fn completion_logprobs_match_transformers() {
    for name in CHECKPOINTS {
        let hf = open(name);
        let (exp, _) = expected(name);
        let rows: Vec<ScoreRow> = exp["score"]
            .as_array()
            .expect("score")
            .iter()
            .map(|r| ScoreRow {
                images: r["images"]
                    .as_array()
                    .expect("images")
                    .iter()
                    .map(|p| PathBuf::from(p.as_str().expect("p")))
                    .collect(),
                prompt: r["prompt"].as_str().expect("prompt").into(),
                completion: r["completion"].as_str().expect("completion").into(),
            })
            .collect();
        let batched = hf.score(&rows, &fixtures()).expect("score batch");
        for (i, (row, want)) in rows
            .iter()
            .zip(exp["score"].as_array().expect("score"))
            .enumerate()
        {
            let got = hf
                .score(std::slice::from_ref(row), &fixtures())
                .expect("score")[0];
            let lp = want["logprob"].as_f64().expect("logprob");
            assert_eq!(
                got.tokens as u64,
                want["tokens"].as_u64().expect("tokens"),
                "{name} row {i}: tokens"
            );
            let rel = ((got.logprob - lp) / lp).abs();
            assert!(
                rel < 1e-4,
                "{name} row {i}: logprob {} vs {lp} (relative {rel})",
                got.logprob
            );
            let relb = ((batched[i].logprob - lp) / lp).abs();
            assert!(
                relb < 1e-4,
                "{name} row {i} in a batch: {} vs {lp}",
                batched[i].logprob
            );
        }
    }
}

/// 16 greedy tokens equal transformers' `generate(do_sample=False)`.
#[test]
fn greedy_tokens_match_transformers() {
    for name in CHECKPOINTS {
        let hf = open(name);
        let (exp, _) = expected(name);
        let g = &exp["generate"];
        let prompt_ids: Vec<u32> = g["input_ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|x| x.as_u64().expect("id") as u32)
            .collect();
        let want: Vec<u32> = g["new_ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|x| x.as_u64().expect("id") as u32)
            .collect();
        let paths: Vec<PathBuf> = g["images"]
            .as_array()
            .expect("images")
            .iter()
            .map(|p| fixtures().join(p.as_str().expect("p")))
            .collect();
        let mut content = vec![Content::Image; paths.len()];
        content.push(Content::Text(g["prompt"].as_str().expect("prompt").into()));
        let prepared = hf
            .processor
            .prepare(&[Message::new("user", content)], &paths, true)
            .expect("prepare");
        assert_eq!(prepared.ids, prompt_ids, "{name}: prompt ids");
        let imgs: Vec<VisionInput> = prepared.images.iter().map(VisionInput::from).collect();
        let opts = GenerateOptions {
            max_new_tokens: want.len(),
            temperature: 0.0,
            seed: 0,
            stop: Vec::new(),
        };
        let got = hf
            .model
            .generate(&prepared.ids, &imgs, &opts, &hf.device)
            .expect("generate");
        assert_eq!(got, want, "{name}: greedy tokens");
    }
}

/// Batched generation (left-padded prompts of different lengths, with and without images, one
/// row that stops early at a stop token) gives every row what it gets alone: greedy, and
/// sampled with per-row seeds; the fixture's row keeps transformers' 16 greedy tokens.
#[test]
fn batched_generation_equals_one_row_at_a_time() {
    use apo_models::hf::GenerateRow;
    for name in ["qwen2-vl-flat-f32", "qwen2.5-vl-nested-f32"] {
        let hf = open(name);
        let (exp, _) = expected(name);
        let g = &exp["generate"];
        let rows = vec![
            GenerateRow {
                images: vec![PathBuf::from("images/square.png")],
                prompt: g["prompt"].as_str().expect("prompt").into(),
            },
            GenerateRow {
                images: vec![],
                prompt: "What is the impression of this study, briefly?".into(),
            },
            GenerateRow {
                images: vec![
                    PathBuf::from("images/wide.png"),
                    PathBuf::from("images/gray.png"),
                ],
                prompt: "Compare.".into(),
            },
        ];
        for (temperature, seeds) in [(0.0, [0u64, 0, 0]), (0.8, [3u64, 11, 5])] {
            let alone: Vec<Vec<u32>> = rows
                .iter()
                .zip(seeds)
                .map(|(r, seed)| {
                    let opts = GenerateOptions {
                        max_new_tokens: 16,
                        temperature,
                        seed,
                        stop: Vec::new(),
                    };
                    hf.generate(r, &fixtures(), &opts).expect("generate").ids
                })
                .collect();
            // A stop token that one row produces early: that row ends there, the others go on.
            let stop = alone[1][3];
            let opts = GenerateOptions {
                max_new_tokens: 16,
                temperature,
                seed: 0,
                stop: Vec::new(),
            };
            let batched = hf
                .generate_batch(&rows, &fixtures(), &opts, Some(&seeds))
                .expect("batch");
            for (i, (a, b)) in alone.iter().zip(&batched).enumerate() {
                assert_eq!(&b.ids, a, "{name} T={temperature} row {i}");
            }
            if temperature == 0.0 {
                let want: Vec<u32> = g["new_ids"]
                    .as_array()
                    .expect("ids")
                    .iter()
                    .map(|x| x.as_u64().expect("id") as u32)
                    .collect();
                assert_eq!(batched[0].ids, want, "{name}: transformers' greedy tokens");
            }
            let mut stops = hf.stop_tokens();
            stops.push(stop);
            let with_stop = GenerateOptions {
                stop: stops,
                ..opts.clone()
            };
            let stopped = hf
                .generate_batch(&rows, &fixtures(), &with_stop, Some(&seeds))
                .expect("batch");
            let cut = alone[1].iter().position(|&t| t == stop).expect("stop") + 1;
            assert_eq!(
                stopped[1].ids,
                alone[1][..cut],
                "{name}: row 1 stops at its stop token"
            );
            for i in [0, 2] {
                let cut = alone[i]
                    .iter()
                    .position(|&t| t == stop)
                    .map_or(alone[i].len(), |p| p + 1);
                assert_eq!(stopped[i].ids, alone[i][..cut], "{name}: row {i}");
            }
        }
    }
}

/// Edits a safetensors header and its data.
type Edit = dyn Fn(&mut serde_json::Map<String, Value>, &mut Vec<u8>);

/// A checkpoint with a tensor missing, a tensor of the wrong shape, an extra tensor, an unknown
/// architecture or a corrupt safetensors header is a typed error naming it; so is a prompt
/// longer than `max_position_embeddings`.
#[test]
fn bad_checkpoints_and_inputs_are_typed_errors() {
    let src = fixtures().join("qwen2-vl-flat-f32");
    let tmp = std::env::temp_dir().join(format!("apo-models-bad-{}", std::process::id()));
    let copy = |name: &str| {
        let dir = tmp.join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        for entry in std::fs::read_dir(&src).expect("src") {
            let p = entry.expect("entry").path();
            std::fs::copy(&p, dir.join(p.file_name().expect("name"))).expect("copy");
        }
        dir
    };
    let device = Default::default();
    let rewrite = |dir: &PathBuf, edit: &Edit| {
        // Rewrites model.safetensors with its header edited.
        let path = dir.join("model.safetensors");
        let bytes = std::fs::read(&path).expect("read");
        let n = u64::from_le_bytes(bytes[..8].try_into().expect("8")) as usize;
        let mut header: serde_json::Map<String, Value> =
            serde_json::from_slice(&bytes[8..8 + n]).expect("header");
        let mut data = bytes[8 + n..].to_vec();
        edit(&mut header, &mut data);
        let h = serde_json::to_vec(&header).expect("json");
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend(h);
        out.extend(data);
        std::fs::write(&path, out).expect("write");
    };

    let dir = copy("missing");
    rewrite(&dir, &|h, _| {
        h.remove("visual.blocks.1.attn.qkv.bias");
    });
    match Loaded::<B>::load(&dir, &device) {
        Err(ModelError::MissingTensor { name, .. }) => {
            assert_eq!(name, "visual.blocks.1.attn.qkv.bias")
        }
        other => panic!("missing tensor: {other:?}"),
    }

    let dir = copy("shape");
    rewrite(&dir, &|h, _| {
        let t = h.get_mut("model.norm.weight").expect("norm");
        t["shape"] = serde_json::json!([32, 2]);
    });
    match Loaded::<B>::load(&dir, &device) {
        Err(ModelError::ShapeMismatch {
            name,
            found,
            expected,
            ..
        }) => {
            assert_eq!(name, "model.norm.weight");
            assert_eq!((found, expected), (vec![32, 2], vec![64]));
        }
        other => panic!("shape mismatch: {other:?}"),
    }

    let dir = copy("unused");
    rewrite(&dir, &|h, data| {
        let start = data.len();
        data.extend([0u8; 8]);
        h.insert(
            "model.extra.weight".into(),
            serde_json::json!({"dtype": "F32", "shape": [2], "data_offsets": [start, start + 8]}),
        );
    });
    match Loaded::<B>::load(&dir, &device) {
        Err(ModelError::UnusedTensors { names, .. }) => {
            assert_eq!(names, vec!["model.extra.weight".to_string()])
        }
        other => panic!("unused tensor: {other:?}"),
    }

    let dir = copy("arch");
    let cfg = std::fs::read_to_string(dir.join("config.json")).expect("cfg");
    std::fs::write(
        dir.join("config.json"),
        cfg.replace(
            "Qwen2VLForConditionalGeneration",
            "LlavaForConditionalGeneration",
        )
        .replace("\"qwen2_vl\"", "\"llava\""),
    )
    .expect("w");
    match Loaded::<B>::load(&dir, &device) {
        Err(e @ ModelError::UnknownArchitecture { .. }) => assert!(
            e.to_string().contains("LlavaForConditionalGeneration"),
            "{e}"
        ),
        other => panic!("unknown architecture: {other:?}"),
    }

    let dir = copy("corrupt");
    let path = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[8] = b'#';
    std::fs::write(&path, &bytes).expect("write");
    match Loaded::<B>::load(&dir, &device) {
        Err(e @ ModelError::Safetensors { .. }) => {
            assert!(e.to_string().contains("model.safetensors"), "{e}")
        }
        other => panic!("corrupt header: {other:?}"),
    }
    std::fs::write(&path, &bytes[..4]).expect("write");
    assert!(matches!(
        Loaded::<B>::load(&dir, &device),
        Err(ModelError::Safetensors { .. })
    ));

    let hf = open("qwen2-vl-flat-f32");
    let long = "lung ".repeat(600);
    let row = ScoreRow {
        images: vec![],
        prompt: long,
        completion: "ok".into(),
    };
    match hf.score(&[row], &fixtures()) {
        Err(e @ ModelError::Input(_)) => {
            assert!(e.to_string().contains("max_position_embeddings"), "{e}")
        }
        other => panic!("too long: {other:?}"),
    }
    let row = ScoreRow {
        images: vec!["images/broken.png".into()],
        prompt: "x".into(),
        completion: "y".into(),
    };
    match hf.score(&[row], &fixtures()) {
        Err(e @ ModelError::Image { .. }) => assert!(e.to_string().contains("broken.png"), "{e}"),
        other => panic!("broken image: {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `score_jsonl` answers every good line and reports a bad one by its line number.
#[test]
fn score_jsonl_answers_good_lines_and_names_bad_ones() {
    let hf = open("qwen2.5-vl-nested-f32");
    let input = "{\"images\": [\"images/square.png\"], \"prompt\": \"Effusion?\", \"completion\": \"No.\"}\n\nnot json\n{\"images\": [\"images/missing.png\"], \"prompt\": \"a\", \"completion\": \"b\"}\n{\"images\": [], \"prompt\": \"a\", \"completion\": \"b\"}\n";
    let mut out = Vec::new();
    let summary = hf
        .score_jsonl(input.as_bytes(), &mut out, &fixtures())
        .expect("run");
    assert_eq!((summary.read, summary.answered, summary.failed), (4, 2, 2));
    let lines: Vec<Value> = String::from_utf8(out)
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[0]["logprob"].as_f64().expect("lp") < 0.0);
    assert_eq!(lines[1]["line"], 3);
    assert_eq!(lines[2]["line"], 4);
    assert!(
        lines[2]["error"]
            .as_str()
            .expect("e")
            .contains("missing.png")
    );
    assert!(lines[3]["tokens"].as_u64().expect("t") > 0);
}

/// Sampling with a temperature is a pure function of the seed; another seed draws another
/// continuation; temperature 0 is greedy.
#[test]
fn sampling_is_seeded() {
    let hf = open("qwen2.5-vl-nested-f32");
    let row = apo_models::hf::GenerateRow {
        images: vec!["images/square.png".into()],
        prompt: "Findings?".into(),
    };
    let opts = |temperature: f64, seed: u64| GenerateOptions {
        max_new_tokens: 12,
        temperature,
        seed,
        stop: vec![u32::MAX],
    };
    let a = hf
        .generate(&row, &fixtures(), &opts(1.5, 7))
        .expect("generate");
    let b = hf
        .generate(&row, &fixtures(), &opts(1.5, 7))
        .expect("generate");
    let c = hf
        .generate(&row, &fixtures(), &opts(1.5, 8))
        .expect("generate");
    assert_eq!(a.ids, b.ids);
    assert_eq!(a.ids.len(), 12);
    assert_ne!(a.ids, c.ids, "seeds 7 and 8 drew the same 12 tokens");
    let g1 = hf
        .generate(&row, &fixtures(), &opts(0.0, 1))
        .expect("generate");
    let g2 = hf
        .generate(&row, &fixtures(), &opts(0.0, 2))
        .expect("generate");
    assert_eq!(g1.ids, g2.ids);
}
