//! `cargo xtask bench hf-train`: one LoRA stage-2 step (Plackett-Luce over 1 + 3 completions of
//! one image prompt, β = 0.1, reference log-probs computed once) on the tiny Qwen2.5-VL
//! checkpoint of apo-models' fixtures, CPU backend: seconds per step (forward, loss, backward,
//! AdamW) and resident memory at steps 10, 50 and 100 (flat when nothing leaks). Prints one JSON
//! line; `benches/hf_train_peft.py` runs the same workload in transformers + PEFT.

use std::path::PathBuf;
use std::time::Instant;

use apo_models::VisionInput;
use apo_models::hf::{HfModel, ScoreRow};
use apo_models::lora::{self, LoraConfig};
use burn::backend::{Autodiff, NdArray};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::{Tensor, TensorData};

use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::tensor::backend::AutodiffBackend;

fn rss_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let steps: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(100);
    let long = args.iter().any(|a| a == "--long");
    if args.iter().any(|a| a == "--checkpointing") {
        bench::<Autodiff<NdArray<f32>, BalancedCheckpointing>>(steps, long, "balanced");
    } else {
        bench::<Autodiff<NdArray<f32>>>(steps, long, "none");
    }
}

/// `--long`: each completion repeated until the sequence is about 450 tokens (the tiny model's
/// `max_position_embeddings` is 512), where activations outweigh the fixed costs.
fn bench<B: AutodiffBackend>(steps: usize, long: bool, checkpointing: &str)
where
    B::Device: Default,
{
    let fixtures = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../apo-models/tests/fixtures"
    ));
    let device = B::Device::default();
    let hf = HfModel::<B>::open(&fixtures.join("qwen2.5-vl-nested-f32"), device).expect("open");
    let HfModel {
        model: mut loaded,
        processor,
        device,
    } = hf;
    let cfg = LoraConfig {
        r: 8,
        alpha: 16.0,
        dropout: 0.0,
        ..LoraConfig::default()
    };
    loaded.model = lora::attach(loaded.model, &cfg, 0, &device).expect("attach");
    let mut hf = HfModel {
        model: loaded,
        processor,
        device,
    };
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures.join("lora/expected/lora.json")).expect("lora.json"),
    )
    .expect("json");
    let mut rows: Vec<ScoreRow> =
        serde_json::from_value(expected["step"]["pl_rows"].clone()).expect("rows");
    if long {
        for r in &mut rows {
            let one = r.completion.clone();
            while r.completion.len() < 540 {
                r.completion = format!("{} {one}", r.completion);
            }
        }
    }
    let completions: Vec<&str> = rows.iter().map(|r| r.completion.as_str()).collect();
    let (seqs, images) = hf
        .completion_inputs(&rows[0].images, &rows[0].prompt, &completions, &fixtures)
        .expect("inputs");
    let vision: Vec<VisionInput> = seqs
        .iter()
        .flat_map(|_| images.iter().map(VisionInput::from))
        .collect();
    let n = seqs.len();
    let tokens: usize = seqs.iter().map(|(ids, _)| ids.len()).sum();
    let reference: Vec<f32> = hf
        .model
        .completion_logprobs(&seqs, &vision, &hf.device)
        .expect("reference")
        .into_iter()
        .map(|(v, _)| v as f32)
        .collect();
    let tokens_max = seqs.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
    let loss_fn = apo_loss::LossConfig::default().init().expect("loss");
    let mut optim = apo_train::train::adamw::<B, apo_models::QwenVl<B>>(&Default::default());
    let mut timed = 0.0;
    let mut rss = Vec::new();
    let mut first_loss = f64::NAN;
    let mut last_loss = f64::NAN;
    for step in 0..steps {
        let t0 = Instant::now();
        let (lp, _) = hf
            .model
            .completion_logprobs_tensor(&seqs, &vision, &hf.device)
            .expect("logprobs");
        let r = Tensor::<B, 2>::from_data(TensorData::new(reference.clone(), [1, n]), &hf.device);
        let batch = apo_loss::tensor::PreferenceBatch::new(lp.reshape([1, n]), r);
        let loss = loss_fn.forward(&batch).expect("loss");
        let value: f32 = burn::tensor::ElementConversion::elem(loss.clone().into_scalar());
        let grads = GradientsParams::from_grads(loss.backward(), &hf.model.model);
        let HfModel {
            model: mut loaded,
            processor,
            device,
        } = hf;
        loaded.model = optim.step(1e-3, loaded.model, grads);
        hf = HfModel {
            model: loaded,
            processor,
            device,
        };
        if step == 0 {
            first_loss = f64::from(value);
        }
        last_loss = f64::from(value);
        // Steps 3..23 are timed (after warm-up).
        if (3..23).contains(&step) {
            timed += t0.elapsed().as_secs_f64();
        }
        if [9, 49, 99].contains(&step) {
            rss.push(serde_json::json!({"step": step + 1, "rss_mib": rss_mib("VmRSS:")}));
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "bench": "hf_train_step",
            "implementation": "apo (burn ndarray autodiff, f32)",
            "checkpoint": "qwen2.5-vl-nested-f32",
            "lora": {"r": 8, "alpha": 16, "targets": "all-linear (language model)"},
            "checkpointing": checkpointing,
            "long": long,
            "sequences": n,
            "tokens_per_step": tokens,
            "longest_sequence": tokens_max,
            "steps": steps,
            "seconds_per_step": timed / 20.0,
            "first_loss": first_loss,
            "last_loss": last_loss,
            "rss": rss,
            "peak_rss_mib": rss_mib("VmHWM:"),
        })
    );
}
