//! A Hugging Face student (the tiny random-weight Qwen2.5-VL checkpoint of apo-models'
//! fixtures) through both stages with LoRA on a tiny simulated data set, CPU backend.

use std::path::{Path, PathBuf};

use apo_train::config::RunConfig;
use apo_train::train::Quiet;

use crate::train::{CrashAt, metrics, preferences};
use burn::backend::{Autodiff, NdArray};

type B = Autodiff<NdArray>;

pub(crate) fn checkpoint() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../apo-models/tests/fixtures/qwen2.5-vl-nested-f32"
    ))
}

pub(crate) fn temp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("apo-train-hf-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&p).ok();
    p
}

pub(crate) fn tiny(root: &Path) -> RunConfig {
    let data = root.join("data");
    if !data.exists() {
        cxr_max::sim::synthesize(
            &data,
            &cxr_max::sim::SynthConfig {
                studies: 6,
                image_size: 32,
                seed: 5,
                ..Default::default()
            },
        )
        .unwrap();
    }
    let mut c = RunConfig::default();
    c.data.dir = data;
    c.data.split = None;
    c.data.truncate = true;
    c.student.hf = Some(checkpoint());
    c.student.lora.r = 4;
    c.student.lora.alpha = 8.0;
    c.student.lora.dropout = 0.0;
    c.student.max_length = 160;
    c.sft.steps = 4;
    c.sft.batch_size = 2;
    c.sft.learning_rate = Some(2e-3);
    c.apo.optim.steps = 2;
    c.apo.optim.batch_size = 1;
    c.apo.optim.learning_rate = Some(1e-3);
    c.run.out = root.join("run");
    c.run.checkpoint_every = 2;
    c
}

pub(crate) fn adapter_values(dir: &Path) -> Vec<f32> {
    let a = apo_models::Adapter::read(dir).unwrap();
    a.modules
        .values()
        .flat_map(|t| t.a.iter().chain(&t.b).copied())
        .collect()
}

/// Stage 1 then stage 2 on the tiny checkpoint: the SFT loss falls, the adapters are PEFT
/// folders, stage 2 starts at ln(1 + N) (policy = reference), the reference cache is reused,
/// and chunked passes (`sequences_per_pass`) train the same adapter as one pass.
#[test]
fn hf_student_trains_both_stages() {
    let _serial = crate::train::serial();
    let root = temp("stages");
    let mut config = tiny(&root);
    let device = Default::default();
    let r = apo_train::hf::sft::<B>(&config, &device, false, &mut Quiet).unwrap();
    let m = metrics(&r.metrics);
    assert_eq!(m.len(), 4);
    assert!(
        m[3].loss < m[0].loss,
        "SFT loss falls: {} -> {}",
        m[0].loss,
        m[3].loss
    );
    assert!(
        m.iter()
            .all(|x| x.grad_norm.is_finite() && x.grad_norm > 0.0)
    );
    let sft_adapter = config.run.out.join("sft/adapter");
    assert_eq!(r.model_dir, sft_adapter);
    let a = apo_models::Adapter::read(&sft_adapter).unwrap();
    assert_eq!(a.modules.len(), 14, "all-linear on 2 decoder layers");
    assert!(a.modules.values().all(|t| t.b.iter().any(|v| *v != 0.0)));

    let prefs = root.join("prefs.jsonl");
    preferences(&config, &prefs);
    config.data.preferences = Some(prefs);
    let r = apo_train::hf::apo::<B>(&config, "apo", &device, false, &mut Quiet).unwrap();
    let m = metrics(&r.metrics);
    assert_eq!(m.len(), 2);
    assert!(
        (m[0].loss - 7f64.ln()).abs() < 1e-5,
        "step-0 loss {}",
        m[0].loss
    );
    assert!(m[0].reward_chosen.unwrap().abs() < 1e-5);
    assert!(m[1].loss.is_finite());
    let cached: Vec<_> = std::fs::read_dir(config.run.out.join("reference"))
        .unwrap()
        .collect();
    assert_eq!(cached.len(), 1);
    let one_pass = adapter_values(&config.run.out.join("apo/adapter"));
    assert_ne!(
        one_pass,
        adapter_values(&sft_adapter),
        "stage 2 moved the adapter"
    );

    config.student.sequences_per_pass = 3;
    let r2 = apo_train::hf::apo::<B>(&config, "apo-chunked", &device, false, &mut Quiet).unwrap();
    let m2 = metrics(&r2.metrics);
    for (a, b) in m.iter().zip(&m2) {
        assert!((a.loss - b.loss).abs() < 1e-5, "{} vs {}", a.loss, b.loss);
        assert!((a.grad_norm - b.grad_norm).abs() < 1e-4 * a.grad_norm.max(1.0));
    }
    let chunked = adapter_values(&config.run.out.join("apo-chunked/adapter"));
    let worst = one_pass
        .iter()
        .zip(&chunked)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-5, "chunked passes differ by {worst}");
    std::fs::remove_dir_all(&root).ok();
}

/// A run killed after its step-2 checkpoint and resumed ends with the same adapter, bit for
/// bit, as an uninterrupted run.
#[test]
fn hf_resume_is_bitwise() {
    let _serial = crate::train::serial();
    let root = temp("resume");
    let config = tiny(&root);
    let device = Default::default();
    let mut straight = config.clone();
    straight.run.out = root.join("straight");
    apo_train::hf::sft::<B>(&straight, &device, false, &mut Quiet).unwrap();
    let mut c = config.clone();
    c.run.out = root.join("crashed");
    let crashed = std::panic::catch_unwind(|| {
        apo_train::hf::sft::<B>(&c, &Default::default(), false, &mut CrashAt(3)).ok()
    });
    assert!(crashed.is_err());
    assert!(!c.run.out.join("sft/adapter").exists());
    let r = apo_train::hf::sft::<B>(&c, &device, true, &mut Quiet).unwrap();
    assert_eq!(r.resumed_from, Some(2));
    assert_eq!(
        adapter_values(&straight.run.out.join("sft/adapter")),
        adapter_values(&c.run.out.join("sft/adapter")),
        "resumed adapter differs"
    );
    assert_eq!(
        metrics(&r.metrics)
            .iter()
            .map(|m| m.step)
            .collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    std::fs::remove_dir_all(&root).ok();
}

/// Configuration and input errors are typed and name what to change.
#[test]
fn hf_bad_inputs_are_typed_errors() {
    let _serial = crate::train::serial();
    let root = temp("bad");
    let mut config = tiny(&root);
    let device = Default::default();
    config.student.hf = Some(root.join("no-such-checkpoint"));
    let e = apo_train::hf::sft::<B>(&config, &device, false, &mut Quiet).unwrap_err();
    assert!(matches!(e, apo_train::TrainError::Model(_)), "{e}");
    config.student.hf = Some(checkpoint());
    config.student.lora.r = 0;
    let e = apo_train::hf::sft::<B>(&config, &device, false, &mut Quiet).unwrap_err();
    assert!(e.to_string().contains("student.lora"), "{e}");
    config.student.lora.r = 4;
    config.data.truncate = false;
    config.student.max_length = 40;
    let e = apo_train::hf::sft::<B>(&config, &device, false, &mut Quiet).unwrap_err();
    assert!(
        matches!(&e, apo_train::TrainError::TooLongForStudent { max: 40, .. }),
        "{e}"
    );
    std::fs::remove_dir_all(&root).ok();
}

/// Burn's balanced activation checkpointing (recompute memory-bound operations in the backward
/// pass) trains the same adapter.
#[test]
fn hf_checkpointing_trains_the_same_adapter() {
    use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
    let _serial = crate::train::serial();
    let root = temp("ckpt");
    let mut config = tiny(&root);
    config.sft.steps = 2;
    let device = Default::default();
    let mut plain = config.clone();
    plain.run.out = root.join("plain");
    apo_train::hf::sft::<B>(&plain, &device, false, &mut Quiet).unwrap();
    let mut ck = config.clone();
    ck.run.out = root.join("checkpointed");
    ck.student.checkpointing = true;
    apo_train::hf::sft::<Autodiff<NdArray, BalancedCheckpointing>>(&ck, &device, false, &mut Quiet)
        .unwrap();
    let a = adapter_values(&plain.run.out.join("sft/adapter"));
    let b = adapter_values(&ck.run.out.join("sft/adapter"));
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-6, "checkpointed training differs by {worst}");
    std::fs::remove_dir_all(&root).ok();
}

/// A Hugging Face student's checkpoint whose adapter bytes changed is refused on `--resume`.
#[test]
fn hf_corrupt_checkpoint_is_refused() {
    let _serial = crate::train::serial();
    let root = temp("corrupt");
    let mut config = tiny(&root);
    config.sft.steps = 2;
    let device = Default::default();
    apo_train::hf::sft::<B>(&config, &device, false, &mut Quiet).unwrap();
    let (_, newest) = apo_train::checkpoint::list(&config.run.out.join("sft"))
        .unwrap()
        .pop()
        .unwrap();
    let w = newest.join("adapter_model.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    let k = bytes.len() - 3;
    bytes[k] ^= 0x11;
    std::fs::write(&w, bytes).unwrap();
    let e = apo_train::hf::sft::<B>(&config, &device, true, &mut Quiet).unwrap_err();
    assert!(
        matches!(&e, apo_train::TrainError::CorruptCheckpoint { path, .. } if path == &w),
        "{e}"
    );
    std::fs::remove_dir_all(&root).ok();
}
