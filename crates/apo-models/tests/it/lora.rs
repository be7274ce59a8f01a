//! LoRA adapters against PEFT 0.21.2 (`tests/fixtures/lora/`, written by
//! `make_lora_fixtures.py`): log-probs with PEFT adapters in both key layouts, the merged export,
//! one SFT and one Plackett-Luce step (loss and every LoRA gradient), the adapter apo writes read
//! back by PEFT, and typed errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use apo_models::hf::{HfModel, ScoreRow};
use apo_models::lora::{self, Adapter, LoraConfig, TargetModules, transformers5_name};
use apo_models::{ModelError, VisionInput};
use burn::backend::{Autodiff, NdArray};
use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde_json::Value;

use crate::fixtures;

type B = NdArray<f32>;
type AD = Autodiff<NdArray<f32>>;

/// burn's autodiff graphs are process-wide: the tests that run a backward pass take this lock
/// so that two never record or free graph nodes at the same time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lora_dir() -> PathBuf {
    fixtures().join("lora")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(lora_dir().join("expected/lora.json")).expect("lora.json");
    serde_json::from_str(&text).expect("json")
}

fn score_rows() -> Vec<ScoreRow> {
    std::fs::read_to_string(fixtures().join("score.jsonl"))
        .expect("score.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("row"))
        .collect()
}

fn rows_of(v: &Value) -> Vec<ScoreRow> {
    v.as_array()
        .expect("rows")
        .iter()
        .map(|r| serde_json::from_value(r.clone()).expect("row"))
        .collect()
}

fn assert_scores(hf: &HfModel<impl Backend>, rows: &[ScoreRow], want: &Value, what: &str) {
    let got = hf.score(rows, &fixtures()).expect("score");
    for (i, (g, w)) in got.iter().zip(want.as_array().expect("score")).enumerate() {
        let lp = w["logprob"].as_f64().expect("logprob");
        assert_eq!(
            g.tokens as u64,
            w["tokens"].as_u64().expect("tokens"),
            "{what} row {i}"
        );
        let rel = ((g.logprob - lp) / lp).abs();
        assert!(
            rel < 1e-4,
            "{what} row {i}: {} vs PEFT {lp} (relative {rel})",
            g.logprob
        );
    }
}

/// The adapters PEFT wrote (transformers-5 keys on Qwen2.5-VL with `alpha_pattern` and vision
/// MLP adapters; the original `base_model.model.model.layers.*` / `visual.*` keys on Qwen2-VL
/// with rsLoRA) give PEFT's log-probs.
#[test]
fn peft_adapters_give_peft_log_probs() {
    let exp = expected();
    let rows = score_rows();
    for (name, info) in exp["adapters"].as_object().expect("adapters") {
        let ckpt = fixtures().join(info["checkpoint"].as_str().expect("checkpoint"));
        let dir = lora_dir().join(name);
        let adapter = Adapter::read(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            adapter.modules.len() * 2,
            info["tensors"].as_u64().expect("n") as usize,
            "{name}"
        );
        let vision = adapter
            .modules
            .keys()
            .filter(|m| m.starts_with("visual."))
            .count();
        assert_eq!(
            vision * 2,
            info["vision_tensors"].as_u64().expect("n") as usize
        );
        let hf = HfModel::<B>::open_with_adapter(&ckpt, Some(&dir), Default::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_scores(&hf, &rows, &info["score"], name);
        // without the adapter the log-probs differ: the adapter does something
        let plain = HfModel::<B>::open(&ckpt, Default::default()).expect("base");
        let a = plain.score(&rows[..1], &fixtures()).expect("score")[0].logprob;
        let want = info["score"][0]["logprob"].as_f64().expect("lp");
        assert!((a - want).abs() > 0.1, "{name}: base {a} vs adapted {want}");
    }
    // alpha_pattern {"down_proj": 12} over lora_alpha 8, r 4
    let a = Adapter::read(&lora_dir().join("peft-qwen2.5-vl")).expect("adapter");
    assert_eq!(a.modules["model.layers.0.mlp.down_proj"].scale, 3.0);
    assert_eq!(a.modules["model.layers.0.mlp.up_proj"].scale, 2.0);
    assert_eq!(a.modules["visual.blocks.0.mlp.down_proj"].scale, 3.0);
    // use_rslora: 4 / sqrt(2)
    let b = Adapter::read(&lora_dir().join("peft-qwen2-vl-old-keys")).expect("adapter");
    let s = b.modules["model.layers.1.self_attn.v_proj"].scale;
    assert!((s - 4.0 / 2f64.sqrt()).abs() < 1e-12, "{s}");
}

/// `export_merged` writes the base layout with the adapter folded in: loaded as a plain
/// checkpoint, it gives PEFT's log-probs; it refuses an existing folder.
#[test]
fn merged_export_gives_peft_log_probs() {
    let exp = expected();
    let rows = score_rows();
    let tmp = tempdir("merged");
    for (name, info) in exp["adapters"].as_object().expect("adapters") {
        let ckpt = fixtures().join(info["checkpoint"].as_str().expect("checkpoint"));
        let out = tmp.join(name);
        let s = lora::export_merged(&ckpt, &lora_dir().join(name), &out)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            s.merged * 2,
            info["tensors"].as_u64().expect("n") as usize,
            "{name}"
        );
        for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
            assert!(out.join(f).exists(), "{name}: {f} not copied");
        }
        let merged = HfModel::<B>::open(&out, Default::default()).expect("merged loads");
        assert_scores(&merged, &rows, &info["score"], &format!("{name} merged"));
        let again = lora::export_merged(&ckpt, &lora_dir().join(name), &out);
        assert!(
            matches!(again, Err(ModelError::Io { ref path, .. }) if path == &out),
            "{again:?}"
        );
    }
    std::fs::remove_dir_all(&tmp).ok();
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("apo-models-lora-{tag}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    std::fs::create_dir_all(&d).expect("tmp");
    d
}

fn sequences<Bk: Backend>(
    hf: &HfModel<Bk>,
    rows: &[ScoreRow],
) -> (Vec<(Vec<u32>, usize)>, Vec<VisionInput>) {
    let mut seqs = Vec::new();
    let mut images = Vec::new();
    for r in rows {
        let (ids, prompt, imgs) = hf.score_inputs(r, &fixtures()).expect("inputs");
        seqs.push((ids, prompt));
        images.extend(imgs.iter().map(VisionInput::from));
    }
    (seqs, images)
}

fn host<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().expect("f32")
}

/// Every LoRA gradient of `model` (PEFT's key and layout: A `[r, in]`, B `[out, r]`).
fn lora_grads(
    model: &apo_models::QwenVl<AD>,
    grads: &<AD as burn::tensor::backend::AutodiffBackend>::Gradients,
) -> BTreeMap<String, Vec<f32>> {
    let mut out = BTreeMap::new();
    for (name, lin) in model.linears() {
        assert!(
            lin.weight.grad(grads).is_none(),
            "{name}: the frozen base weight has a gradient"
        );
        let Some(l) = &lin.lora else { continue };
        let key = format!("base_model.model.{}", transformers5_name(&name));
        let ga = l.a.grad(grads).expect("grad A");
        let gb = l.b.grad(grads).expect("grad B");
        out.insert(format!("{key}.lora_A.weight"), host(ga.transpose()));
        out.insert(format!("{key}.lora_B.weight"), host(gb.transpose()));
    }
    out
}

fn expected_grads(prefix: &str) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(lora_dir().join("expected/step-grads.safetensors")).expect("grads");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let mut out = BTreeMap::new();
    for (k, t) in st.tensors() {
        if let Some(rest) = k.strip_prefix(&format!("{prefix}.")) {
            let v = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            out.insert(rest.to_string(), v);
        }
    }
    out
}

fn assert_grads(got: &BTreeMap<String, Vec<f32>>, want: &BTreeMap<String, Vec<f32>>, what: &str) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: the same LoRA parameters"
    );
    let mut worst = 0f32;
    for (k, w) in want {
        let g = &got[k];
        assert_eq!(g.len(), w.len(), "{what} {k}");
        let scale = w.iter().fold(1f32, |m, v| m.max(v.abs()));
        for (a, b) in g.iter().zip(w) {
            let d = (a - b).abs() / scale;
            worst = worst.max(d);
            assert!(d < 1e-4, "{what} {k}: {a} vs PEFT {b}");
        }
    }
    eprintln!("{what}: largest gradient difference {worst:.2e} (of max(1, |g|max))");
    assert!(worst > 0.0 || want.values().all(|w| w.iter().all(|v| *v == 0.0)));
}

/// One SFT step (token-mean NLL over the completion tokens of three rows, one text-only, one
/// with an image, one with two) and one Plackett-Luce step (1 + 3 completions of one image
/// prompt, β = 0.1, the base model without the adapter as reference) from PEFT's non-zero
/// adapter: losses within 1e-5 relative, every LoRA gradient within 1e-4 of PyTorch + PEFT, and
/// no gradient on any base weight.
#[test]
fn training_step_matches_peft() {
    let _serial = serial();
    let exp = expected();
    let step = &exp["step"];
    let name = step["adapter"].as_str().expect("adapter");
    let ckpt = fixtures().join(exp["adapters"][name]["checkpoint"].as_str().expect("ckpt"));
    let dir = lora_dir().join(name);
    let device = Default::default();
    let hf = HfModel::<AD>::open_with_adapter(&ckpt, Some(&dir), device).expect("open");
    let all = score_rows();

    // SFT
    let rows: Vec<ScoreRow> = step["sft_rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|i| all[i.as_u64().expect("i") as usize].clone())
        .collect();
    let (seqs, images) = sequences(&hf, &rows);
    let (lp, counts) = hf
        .model
        .completion_logprobs_tensor(&seqs, &images, &hf.device)
        .expect("logprobs");
    let n: usize = counts.iter().sum();
    assert_eq!(n as u64, step["sft_tokens"].as_u64().expect("tokens"));
    let loss = lp.sum().neg().div_scalar(n as f64);
    let value = f64::from(host(loss.clone())[0]);
    let want = step["sft_loss"].as_f64().expect("loss");
    assert!(
        ((value - want) / want).abs() < 1e-5,
        "sft loss {value} vs PEFT {want}"
    );
    let grads = loss.backward();
    assert_grads(
        &lora_grads(&hf.model.model, &grads),
        &expected_grads("sft"),
        "sft",
    );

    // Plackett-Luce
    let rows = rows_of(&step["pl_rows"]);
    let (seqs, images) = sequences(&hf, &rows);
    let (pol, _) = hf
        .model
        .completion_logprobs_tensor(&seqs, &images, &hf.device)
        .expect("logprobs");
    let want_pol: Vec<f64> = step["pl_policy"]
        .as_array()
        .expect("policy")
        .iter()
        .map(|v| v.as_f64().expect("f"))
        .collect();
    for (g, w) in host(pol.clone()).iter().zip(&want_pol) {
        assert!(((f64::from(*g) - w) / w).abs() < 1e-5, "policy {g} vs {w}");
    }
    let reference: Vec<f32> = step["pl_reference"]
        .as_array()
        .expect("reference")
        .iter()
        .map(|v| v.as_f64().expect("f") as f32)
        .collect();
    // The reference is the base model: scoring without the adapter reproduces it.
    let base = HfModel::<B>::open(&ckpt, Default::default()).expect("base");
    for (g, w) in base
        .score(&rows, &fixtures())
        .expect("score")
        .iter()
        .zip(&reference)
    {
        assert!(((g.logprob - f64::from(*w)) / f64::from(*w)).abs() < 1e-5);
    }
    let beta = exp["beta"].as_f64().expect("beta");
    let r = Tensor::<AD, 1>::from_data(TensorData::new(reference, [rows.len()]), &hf.device);
    let pl = |pol: Tensor<AD, 1>, r: Tensor<AD, 1>| {
        let s = (pol - r).mul_scalar(beta);
        let lse = s.clone().exp().sum().log();
        lse - s.narrow(0, 0, 1)
    };
    let loss = pl(pol.clone(), r);
    let value = f64::from(host(loss.clone())[0]);
    let want = step["pl_loss"].as_f64().expect("loss");
    assert!(
        ((value - want) / want).abs() < 1e-5,
        "pl loss {value} vs PEFT {want}"
    );
    let grads = loss.backward();
    assert_grads(
        &lora_grads(&hf.model.model, &grads),
        &expected_grads("pl"),
        "pl",
    );

    // The same step with the image encoded once for the four sequences: the same loss and
    // gradients (the tower's gradient is the sum over the sequences that read it).
    let once = &images[..1];
    assert!(images.iter().all(|v| v.pixels == once[0].pixels));
    let (shared, _) = hf
        .model
        .completion_logprobs_tensor_with(&seqs, apo_models::Images::Shared(once), &hf.device)
        .expect("shared");
    for (a, b) in host(shared.clone()).iter().zip(host(pol.clone())) {
        assert!((a - b).abs() < 1e-4, "shared {a} vs per-sequence {b}");
    }
    let r = Tensor::<AD, 1>::from_data(
        TensorData::new(
            step["pl_reference"]
                .as_array()
                .expect("reference")
                .iter()
                .map(|v| v.as_f64().expect("f") as f32)
                .collect::<Vec<_>>(),
            [rows.len()],
        ),
        &hf.device,
    );
    let grads = pl(shared, r).backward();
    assert_grads(
        &lora_grads(&hf.model.model, &grads),
        &expected_grads("pl"),
        "pl (shared image)",
    );

    // Step 0 of stage 2 (the reference is the policy itself): ln(N + 1).
    let (pol, _) = hf
        .model
        .completion_logprobs_tensor(&seqs, &images, &hf.device)
        .expect("logprobs");
    let same = pol.clone().detach();
    let l0 = f64::from(host(pl(pol, same))[0]);
    assert!((l0 - 4f64.ln()).abs() < 1e-6, "step-0 loss {l0} vs ln 4");
}

/// Fresh adapters: `all-linear` is every linear map of the language model but the head; the
/// vision tower only when asked; names and patterns select as PEFT does; B = 0 leaves the
/// model's output unchanged.
#[test]
fn attach_selects_as_peft_and_starts_at_the_base() {
    let ckpt = fixtures().join("qwen2.5-vl-nested-f32");
    let hf = HfModel::<B>::open(&ckpt, Default::default()).expect("open");
    let cfg = LoraConfig::default();
    let chosen = lora::select(&hf.model.model, &cfg).expect("select");
    assert_eq!(chosen.len(), 2 * 7, "{chosen:?}");
    assert!(chosen.iter().all(|n| n.starts_with("model.layers.")));
    let with_vision = LoraConfig {
        vision: true,
        ..LoraConfig::default()
    };
    let v = lora::select(&hf.model.model, &with_vision).expect("select");
    // 4 blocks × (qkv, proj, gate, up, down) + the merger's two
    assert_eq!(v.len(), 14 + 4 * 5 + 2, "{v:?}");
    let names = LoraConfig {
        target_modules: TargetModules::Names(vec!["q_proj".into(), "v_proj".into()]),
        ..LoraConfig::default()
    };
    assert_eq!(
        lora::select(&hf.model.model, &names).expect("names").len(),
        4
    );
    let pattern = LoraConfig {
        target_modules: TargetModules::Pattern(
            r"model\.language_model\.layers\.1\.mlp\.(gate|up)_proj".into(),
        ),
        ..LoraConfig::default()
    };
    assert_eq!(
        lora::select(&hf.model.model, &pattern).expect("pattern"),
        ["model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj"]
    );
    let none = LoraConfig {
        target_modules: TargetModules::Names(vec!["nothing".into()]),
        ..LoraConfig::default()
    };
    assert!(matches!(
        lora::select(&hf.model.model, &none),
        Err(ModelError::Input(m)) if m.contains("selects no linear map")
    ));
    let bad = LoraConfig {
        target_modules: TargetModules::Pattern("(".into()),
        ..LoraConfig::default()
    };
    assert!(lora::select(&hf.model.model, &bad).is_err());

    let rows = score_rows();
    let before = hf.score(&rows, &fixtures()).expect("score");
    let HfModel {
        model: mut loaded,
        processor,
        device,
    } = hf;
    loaded.model = lora::attach(loaded.model, &cfg, 7, &device).expect("attach");
    assert_eq!(lora::adapted(&loaded.model).len(), 14);
    let hf = HfModel {
        model: loaded,
        processor,
        device,
    };
    let after = hf.score(&rows, &fixtures()).expect("score");
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(a.logprob, b.logprob);
    }
}

fn sgd(
    mut model: apo_models::QwenVl<AD>,
    grads: &<AD as burn::tensor::backend::AutodiffBackend>::Gradients,
    lr: f64,
) -> apo_models::QwenVl<AD> {
    for (_, lin) in model.linears_mut() {
        if let Some(l) = lin.lora.as_mut() {
            let ga = l.a.grad(grads).expect("grad A");
            let gb = l.b.grad(grads).expect("grad B");
            let a = Tensor::<AD, 2>::from_inner(l.a.val().inner() - ga.mul_scalar(lr));
            let b = Tensor::<AD, 2>::from_inner(l.b.val().inner() - gb.mul_scalar(lr));
            l.a = Param::initialized(l.a.id, a.require_grad());
            l.b = Param::initialized(l.b.id, b.require_grad());
        }
    }
    model
}

const APO_WRITTEN: &str = "apo-written";

/// Seed 7, rank 4, α 8, all-linear; two SGD steps (lr 0.5) on the SFT loss of the first two
/// score rows (the first moves only B, A's gradient being 0 while B is 0).
fn apo_trained_adapter() -> (Adapter, LoraConfig) {
    let ckpt = fixtures().join("qwen2.5-vl-nested-f32");
    let hf = HfModel::<AD>::open(&ckpt, Default::default()).expect("open");
    let cfg = LoraConfig {
        r: 4,
        alpha: 8.0,
        dropout: 0.0,
        ..LoraConfig::default()
    };
    let HfModel {
        model: mut loaded,
        processor,
        device,
    } = hf;
    loaded.model = lora::attach(loaded.model, &cfg, 7, &device).expect("attach");
    let mut hf = HfModel {
        model: loaded,
        processor,
        device,
    };
    let rows = &score_rows()[..2];
    for _ in 0..2 {
        let (seqs, images) = sequences(&hf, rows);
        let (lp, counts) = hf
            .model
            .completion_logprobs_tensor(&seqs, &images, &hf.device)
            .expect("logprobs");
        let n: usize = counts.iter().sum();
        let grads = lp.sum().neg().div_scalar(n as f64).backward();
        let HfModel {
            model: mut loaded,
            processor,
            device,
        } = hf;
        loaded.model = sgd(loaded.model, &grads, 0.5);
        hf = HfModel {
            model: loaded,
            processor,
            device,
        };
    }
    let adapter =
        Adapter::from_model(&hf.model.model, &cfg, "qwen2.5-vl-nested-f32").expect("adapter");
    (adapter, cfg)
}

/// The adapter apo writes reads back identical, equals the committed `lora/apo-written/` (which
/// `APO_WRITE_FIXTURES=1` rewrites), and with it apo's log-probs equal those PEFT computes after
/// `PeftModel.from_pretrained` on that folder.
#[test]
fn apo_written_adapter_round_trips_and_peft_reads_it() {
    let _serial = serial();
    let (adapter, _) = apo_trained_adapter();
    assert_eq!(adapter.modules.len(), 14);
    assert!(
        adapter
            .modules
            .values()
            .all(|t| t.b.iter().any(|v| *v != 0.0)),
        "training moved every B"
    );
    let tmp = tempdir("written");
    adapter.write(&tmp, false).expect("write");
    assert!(matches!(
        adapter.write(&tmp, false),
        Err(ModelError::Io { .. })
    ));
    let back = Adapter::read(&tmp).expect("read back");
    assert_eq!(back.modules, adapter.modules);
    std::fs::remove_dir_all(&tmp).ok();

    let committed_dir = lora_dir().join(APO_WRITTEN);
    if std::env::var_os("APO_WRITE_FIXTURES").is_some() {
        adapter.write(&committed_dir, true).expect("write fixture");
        return;
    }
    let committed = Adapter::read(&committed_dir).expect("lora/apo-written");
    assert_eq!(committed.config, adapter.config);
    for (m, t) in &adapter.modules {
        let c = &committed.modules[m];
        assert_eq!(c.dims, t.dims);
        for (x, y) in t.a.iter().chain(&t.b).zip(c.a.iter().chain(&c.b)) {
            assert!((x - y).abs() < 1e-6, "{m}: {x} vs committed {y}");
        }
    }
    let exp = expected();
    let info = &exp["apo_written"];
    assert_eq!(info["tensors"].as_u64(), Some(28));
    let hf = HfModel::<B>::open_with_adapter(
        &fixtures().join("qwen2.5-vl-nested-f32"),
        Some(&committed_dir),
        Default::default(),
    )
    .expect("open");
    assert_scores(
        &hf,
        &score_rows(),
        &info["score"],
        "apo-written adapter under PEFT",
    );
}

fn copy_adapter(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for f in [lora::ADAPTER_CONFIG, lora::ADAPTER_WEIGHTS] {
        std::fs::copy(from.join(f), to.join(f)).expect("copy");
    }
}

/// Adapters this crate cannot apply faithfully are typed errors naming the file or module.
#[test]
fn bad_adapters_are_typed_errors() {
    let src = lora_dir().join("peft-qwen2.5-vl");
    let ckpt = fixtures().join("qwen2.5-vl-nested-f32");
    let tmp = tempdir("bad");

    let missing = Adapter::read(&tmp.join("nowhere"));
    assert!(
        matches!(&missing, Err(ModelError::Io { path, .. }) if path.ends_with("adapter_config.json")),
        "{missing:?}"
    );

    for (field, value) in [
        ("use_dora", Value::Bool(true)),
        ("bias", Value::String("all".into())),
        ("peft_type", Value::String("IA3".into())),
        ("modules_to_save", serde_json::json!(["lm_head"])),
    ] {
        let d = tmp.join(field);
        copy_adapter(&src, &d);
        let p = d.join(lora::ADAPTER_CONFIG);
        let mut cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(&p).expect("cfg")).expect("json");
        cfg[field] = value;
        std::fs::write(&p, cfg.to_string()).expect("write");
        let e = Adapter::read(&d);
        assert!(
            matches!(&e, Err(ModelError::Json { path, message }) if path == &p && message.contains(field)),
            "{field}: {e:?}"
        );
    }

    let good = Adapter::read(&src).expect("adapter");
    let base = || {
        HfModel::<B>::open(&ckpt, Default::default())
            .expect("base")
            .model
            .model
    };
    // a module the model does not have
    let mut extra = good.clone();
    let t = extra.modules["model.layers.0.self_attn.q_proj"].clone();
    extra
        .modules
        .insert("model.layers.9.self_attn.q_proj".into(), t);
    let e = extra.attach(base(), 0.0, &Default::default());
    assert!(
        matches!(&e, Err(ModelError::Input(m)) if m.contains("model.layers.9.self_attn.q_proj")),
        "{:?}",
        e.err()
    );
    // dimensions that do not fit the module
    let mut wrong = good.clone();
    let t = wrong
        .modules
        .get_mut("model.layers.0.self_attn.q_proj")
        .expect("q");
    t.dims.0 += 1;
    let e = wrong.attach(base(), 0.0, &Default::default());
    assert!(
        matches!(&e, Err(ModelError::ShapeMismatch { .. })),
        "{:?}",
        e.err()
    );

    // an A without its B, and a tensor that is not a LoRA matrix
    for (tag, names) in [
        (
            "half",
            vec!["base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight"],
        ),
        (
            "stray",
            vec!["base_model.model.model.language_model.layers.0.self_attn.q_proj.weight"],
        ),
    ] {
        let d = tmp.join(tag);
        copy_adapter(&src, &d);
        let tensors: Vec<(String, apo_models::weights::Dtype, Vec<usize>)> = names
            .iter()
            .map(|n| (n.to_string(), apo_models::weights::Dtype::F32, vec![4, 64]))
            .collect();
        let path = d.join(lora::ADAPTER_WEIGHTS);
        std::fs::remove_file(&path).expect("rm");
        let mut w =
            apo_models::weights::SafetensorsWriter::create(&path, &tensors, &[]).expect("w");
        for n in &names {
            w.write(n, &vec![0u8; 4 * 64 * 4]).expect("write");
        }
        w.finish().expect("finish");
        let e = Adapter::read(&d);
        assert!(
            matches!(&e, Err(ModelError::Safetensors { path: p, .. }) if p == &path),
            "{tag}: {e:?}"
        );
    }
    std::fs::remove_dir_all(&tmp).ok();
}

/// `export_merged` on a sharded F16 checkpoint keeps its shards, index and dtype, and the
/// merged model scores as the adapter applied to it does (up to the F16 rounding of the merged
/// weights).
#[test]
fn merged_export_keeps_shards_and_dtype() {
    let ckpt = fixtures().join("qwen2.5-vl-flat-f16-sharded");
    let adapter = lora_dir().join("peft-qwen2.5-vl");
    let tmp = tempdir("sharded");
    let out = tmp.join("merged");
    lora::export_merged(&ckpt, &adapter, &out).expect("export");
    for f in [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "config.json",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let w = apo_models::Weights::open(&out).expect("weights");
    assert_eq!(w.dtype(), Some(apo_models::weights::Dtype::F16));
    let rows = score_rows();
    let applied = HfModel::<B>::open_with_adapter(&ckpt, Some(&adapter), Default::default())
        .expect("adapter")
        .score(&rows, &fixtures())
        .expect("score");
    let merged = HfModel::<B>::open(&out, Default::default())
        .expect("merged")
        .score(&rows, &fixtures())
        .expect("score");
    for (a, m) in applied.iter().zip(&merged) {
        assert_eq!(a.tokens, m.tokens);
        let rel = ((a.logprob - m.logprob) / a.logprob).abs();
        assert!(
            rel < 5e-3,
            "applied {} vs merged {} ({rel})",
            a.logprob,
            m.logprob
        );
    }
    std::fs::remove_dir_all(&tmp).ok();
}
