//! `cargo xtask bench loss`: prints one JSON object with
//! - `tensor_step_ms`: `sequence_logprobs` + Plackett-Luce loss, forward and backward, on the
//!   NdArray CPU backend for B = 8 groups of 1 + 7 sequences, T = 256, V = 4096;
//! - `scalar_ns_per_example`: the f64 reference on 1e6 examples of 1 + 7 sequences.
//!
//! Options: `--iters N` (tensor iterations, default 5), `--examples N` (default 1e6).

use std::hint::black_box;
use std::time::Instant;

use apo_loss::tensor::{PreferenceBatch, sequence_logprobs};
use apo_loss::{Example, LossConfig, Sequence};
use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Bool, Distribution, Int, Tensor, TensorData};

type B = Autodiff<NdArray>;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let iters = arg("--iters", 5);
    let n_examples = arg("--examples", 1_000_000);
    let (groups, per_group, t, v) = (8usize, 8usize, 256usize, 4096usize);
    let rows = groups * per_group;
    let device = Default::default();

    let logits_data =
        Tensor::<NdArray, 3>::random([rows, t, v], Distribution::Normal(0.0, 2.0), &device)
            .into_data();
    let targets: Vec<i64> = (0..rows * t).map(|i| ((i * 7919) % v) as i64).collect();
    // A 32-token prompt, then completions of varying length, then padding.
    let mask: Vec<bool> = (0..rows * t)
        .map(|i| {
            let (row, pos) = (i / t, i % t);
            pos >= 32 && pos < 32 + 160 + (row * 5) % 64
        })
        .collect();
    let reference = Tensor::<B, 2>::random(
        [groups, per_group],
        Distribution::Normal(-300.0, 20.0),
        &device,
    );
    let loss_fn = LossConfig::default()
        .init()
        .expect("default config is valid");

    let mut step_ms = Vec::new();
    for i in 0..=iters {
        let logits = Tensor::<B, 3>::from_data(logits_data.clone(), &device).require_grad();
        let targets =
            Tensor::<B, 2, Int>::from_data(TensorData::new(targets.clone(), [rows, t]), &device);
        let mask =
            Tensor::<B, 2, Bool>::from_data(TensorData::new(mask.clone(), [rows, t]), &device);
        let start = Instant::now();
        let lp = sequence_logprobs(logits.clone(), targets, mask).expect("valid shapes");
        let policy = lp.reshape([groups, per_group]);
        let loss = loss_fn
            .forward(&PreferenceBatch::new(policy, reference.clone()))
            .expect("valid batch");
        let grads = loss.backward();
        let g = logits.grad(&grads).expect("logits require grad");
        // Read the whole gradient once, as the PyTorch counterpart does with `.sum().item()`.
        black_box(g.sum().into_scalar());
        let ms = start.elapsed().as_secs_f64() * 1e3;
        if i > 0 {
            step_ms.push(ms); // iteration 0 warms up allocators and thread pools
        }
    }
    step_ms.sort_by(f64::total_cmp);
    let median = step_ms[step_ms.len() / 2];
    let mean = step_ms.iter().sum::<f64>() / step_ms.len() as f64;

    // Scalar reference: 1e6 examples of 1 + 7 sequences.
    let mut state = 0x9E3779B97F4A7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        -((state >> 11) as f64 / (1u64 << 53) as f64) * 400.0
    };
    let examples: Vec<Example> = (0..n_examples.min(100_000))
        .map(|_| {
            let seq = |n: &mut dyn FnMut() -> f64| Sequence::new(n(), n());
            Example::new(seq(&mut next), (0..7).map(|_| seq(&mut next)).collect())
        })
        .collect();
    let start = Instant::now();
    let mut acc = 0.0;
    for i in 0..n_examples {
        let out = loss_fn
            .compute(&examples[i % examples.len()])
            .expect("valid example");
        acc += out.loss;
    }
    let scalar_s = start.elapsed().as_secs_f64();
    black_box(acc);

    println!(
        "{{\"bench\":\"loss\",\"backend\":\"ndarray-cpu\",\"threads\":{},\"groups\":{groups},\"sequences_per_group\":{per_group},\"seq_len\":{t},\"vocab\":{v},\"tensor_step_ms_median\":{median:.1},\"tensor_step_ms_mean\":{mean:.1},\"tensor_iters\":{iters},\"scalar_examples\":{n_examples},\"scalar_seconds\":{scalar_s:.3},\"scalar_ns_per_example\":{:.1}}}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        scalar_s * 1e9 / n_examples as f64
    );
}
