//! `cargo xtask bench train`: stage-2 optimiser steps per second on the CPU backend for the
//! reference configuration (64 px images in 8 px patches, d_model 128, 2 + 2 layers, 4 heads,
//! groups of 1 + 7 sequences of 96 tokens, 4 groups per step, vocabulary 1024), and the
//! resident memory after the warm-up and at the end (it must not grow with the steps).
//! Prints one JSON line. `benches/train_torch.py` is the same model and step in PyTorch.
//!
//! `--devices N`: the same global batch data-parallel on N CPU workers ([`apo_train::parallel`]:
//! each worker's shard of the 4 groups, gradients summed with burn's all-reduce), for the scaling
//! of 1 vs N workers at the same global batch.

use rand::{Rng, SeedableRng};
use rand_xoshiro::SplitMix64;
use std::time::Instant;

use apo_train::StudentConfig;
use apo_train::config::OptimConfig;
use apo_train::data::{self, Group, Images, Sequence};
use apo_train::train::{clip, optimizer, preference_step};
use burn::backend::{Autodiff, NdArray};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::Backend;

type B = Autodiff<NdArray>;

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    // As the `apo` binary does.
    apo_train::memory::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let steps: usize = args
        .iter()
        .position(|a| a == "--steps")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let devices: usize = args
        .iter()
        .position(|a| a == "--devices")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let (groups_per_step, per_group, seq_len, prompt_len, vocab) =
        (4usize, 8usize, 96usize, 16usize, 1024usize);
    let device = Default::default();
    B::seed(&device, 0);
    let config = StudentConfig::new(vocab)
        .with_image_size(64)
        .with_patch_size(8)
        .with_d_model(128)
        .with_n_heads(4)
        .with_encoder_layers(2)
        .with_decoder_layers(2)
        .with_max_text_len(seq_len);
    let model = config.init::<B>(&device).expect("model");
    let mut rng = SplitMix64::seed_from_u64(0x2545_F491_4F6C_DD1Du64);
    let mut next = move |n: u64| rng.random_range(0..n);
    let n_groups = 32;
    let images = Images {
        size: 64,
        pixels: (0..n_groups)
            .map(|_| {
                (0..64 * 64)
                    .map(|_| next(1000) as f32 / 500.0 - 1.0)
                    .collect()
            })
            .collect(),
    };
    let groups: Vec<Group> = (0..n_groups)
        .map(|g| Group {
            id: format!("g{g}"),
            image: g,
            sequences: (0..per_group)
                .map(|_| Sequence {
                    ids: (0..seq_len)
                        .map(|_| 4 + next(vocab as u64 - 4) as u32)
                        .collect(),
                    prompt_len,
                })
                .collect(),
            weights: None,
            drift: None,
        })
        .collect();
    let reference: Vec<Vec<f32>> = (0..n_groups).map(|_| vec![-500.0; per_group]).collect();
    let loss_fn = apo_loss::LossConfig::default().init().expect("loss");
    let opt = OptimConfig::default();
    let warmup = 3;
    let run = apo_train::config::RunSettings {
        devices,
        ..Default::default()
    };
    let local = apo_train::parallel::devices::<B>(&device, devices);
    let copies = apo_train::parallel::Copies::new(model, &local, |m, d| {
        burn::module::Module::fork(m.clone(), d)
    });
    let (times, rss_after_warmup) =
        apo_train::parallel::run::<B, _, _>(&run, &device, &mut apo_train::train::Quiet, |w, _| {
            let mut model = copies.take(w.local_index())?;
            let mut optim = optimizer::<B>(&opt);
            let mut times = Vec::new();
            let mut rss_after_warmup = 0;
            for step in 0..warmup + steps {
                let which = data::micro_batch(0, n_groups, groups_per_step, step);
                let t = Instant::now();
                let mine = &which[w.shard(which.len())];
                let batch = data::make_batch::<B>(&images, &groups, mine, 0, &w.device);
                let refs: Vec<&[f32]> = mine.iter().map(|&g| reference[g].as_slice()).collect();
                let (loss, _) = preference_step(&model, &batch, &refs, &loss_fn, &w.device)?;
                let loss = loss.mul_scalar(mine.len() as f64 / which.len() as f64);
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                let mut grads = w.sync(&model, Ok((grads, Vec::new())), 0)?.grads;
                clip(&model, &mut grads, 1.0);
                model = optim.step(2e-4, model, grads);
                let dt = t.elapsed().as_secs_f64();
                if step >= warmup {
                    times.push(dt);
                } else if step + 1 == warmup {
                    rss_after_warmup = rss_kib("VmRSS:");
                }
            }
            Ok((times, rss_after_warmup))
        })
        .expect("bench");
    let mut times = times;
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let tokens = (groups_per_step * per_group * (seq_len - prompt_len)) as f64;
    println!(
        "{{\"bench\":\"apo-train-stage2\",\"backend\":\"ndarray\",\"devices\":{devices},\"threads\":{},\"groups\":{groups_per_step},\"sequences_per_group\":{per_group},\"tokens_per_sequence\":{seq_len},\"d_model\":128,\"layers\":\"2+2\",\"steps\":{steps},\"median_step_s\":{median:.4},\"steps_per_s\":{:.3},\"completion_tokens_per_s\":{:.0},\"rss_after_warmup_mib\":{:.1},\"rss_end_mib\":{:.1},\"peak_rss_mib\":{:.1}}}",
        std::thread::available_parallelism().map_or(1, usize::from),
        1.0 / median,
        tokens / median,
        rss_after_warmup as f64 / 1024.0,
        rss_kib("VmRSS:") as f64 / 1024.0,
        rss_kib("VmHWM:") as f64 / 1024.0,
    );
}
