//! A custom stage-2 loop on `apo-train` as a library: build a student, make preference
//! groups (here synthetic: the chosen sequence repeats a pattern, the negatives are noise),
//! and run the Plackett-Luce step with your own schedule, printing loss, margin and top-1
//! accuracy. Swap in your own groups, objective or optimiser.
//!
//! ```sh
//! cargo run --release -p train-loop
//! ```

use apo_train::StudentConfig;
use apo_train::config::OptimConfig;
use apo_train::data::{self, Group, Images, Sequence};
use apo_train::train::{clip, optimizer, preference_step};
use burn::backend::{Autodiff, NdArray};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::ElementConversion;
use burn::tensor::backend::Backend;
use rand::{Rng, SeedableRng};
use rand_xoshiro::SplitMix64;

type B = Autodiff<NdArray>;

fn main() -> Result<(), apo_train::TrainError> {
    let device = Default::default();
    B::seed(&device, 7);
    let vocab = 64;
    let model_config = StudentConfig::new(vocab)
        .with_image_size(16)
        .with_patch_size(8)
        .with_d_model(32)
        .with_n_heads(2)
        .with_encoder_layers(1)
        .with_decoder_layers(1)
        .with_max_text_len(24);
    let mut model = model_config.init::<B>(&device)?;
    // Eight images, each with a chosen sequence (a repeating pattern) and three noisy negatives.
    let mut rng = SplitMix64::seed_from_u64(0x1234_5678_9abc_def0u64);
    let mut next = move |n: u64| rng.random_range(0..n);
    let images = Images {
        size: 16,
        pixels: (0..8)
            .map(|_| (0..256).map(|_| next(100) as f32 / 50.0 - 1.0).collect())
            .collect(),
    };
    let groups: Vec<Group> = (0..8)
        .map(|g| {
            let chosen: Vec<u32> = (0..20).map(|k| 4 + (k % 5) as u32).collect();
            let mut sequences = vec![Sequence {
                ids: chosen,
                prompt_len: 4,
            }];
            for _ in 0..3 {
                sequences.push(Sequence {
                    ids: (0..20).map(|_| 4 + next(vocab as u64 - 4) as u32).collect(),
                    prompt_len: 4,
                });
            }
            Group {
                id: format!("g{g}"),
                image: g,
                sequences,
                weights: None,
                drift: None,
            }
        })
        .collect();
    // Reference log-probs: the initial model's (so the first loss is ln 4), one per sequence
    // of each group.
    let reference: Vec<Vec<f32>> = {
        let all: Vec<usize> = (0..groups.len()).collect();
        let batch = data::make_batch::<B>(&images, &groups, &all, 0, &device);
        let lp: Vec<f32> = model
            .sequence_logprobs(&batch)?
            .into_data()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| apo_train::TrainError::Empty(format!("{e:?}")))?;
        lp.chunks(batch.per_group).map(<[f32]>::to_vec).collect()
    };
    let loss_fn = apo_loss::LossConfig::default().init()?;
    let opt = OptimConfig {
        steps: 30,
        learning_rate: Some(3e-3),
        ..OptimConfig::default()
    };
    let mut optim = optimizer::<B>(&opt);
    for step in 0..opt.steps {
        let which = data::micro_batch(7, groups.len(), 4, step);
        let batch = data::make_batch::<B>(&images, &groups, &which, 0, &device);
        let refs: Vec<&[f32]> = which.iter().map(|&g| reference[g].as_slice()).collect();
        let (loss, metrics) = preference_step(&model, &batch, &refs, &loss_fn, &device)?;
        let value: f64 = loss.clone().into_scalar().elem();
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        let norm = clip(&model, &mut grads, 1.0);
        model = optim.step(opt.lr_at(step, 3e-3), model, grads);
        let n = metrics.len() as f64;
        let margin = metrics.iter().map(|m| m.margin_mean).sum::<f64>() / n;
        let top1 = metrics.iter().map(|m| m.top1_accuracy).sum::<f64>() / n;
        if step % 5 == 0 || step + 1 == opt.steps {
            println!(
                "step {step:>2}: loss {value:.4} (ln 4 = {:.4}) margin {margin:.3} top-1 {top1:.2} grad-norm {norm:.3}",
                4f64.ln()
            );
        }
    }
    Ok(())
}
