//! The reward-margin breakdown by token class against the summed sequence log-probs of the
//! training path.

use apo_train::data::{self, Preferences};
use apo_train::margin::{self, MarginBreakdown};
use apo_train::tokenizer::TextTokenizer;
use apo_train::train::{self, Quiet};
use burn::backend::{Autodiff, NdArray};

use crate::train::{preferences, serial, temp, tiny};

type B = Autodiff<NdArray>;

/// The bytes of the first sentence (up to and including the first `.`).
fn first_sentence(text: &str) -> Vec<(usize, usize)> {
    text.find('.').map(|e| vec![(0, e + 1)]).unwrap_or_default()
}

#[test]
fn margins_split_exactly_into_finding_and_layout_tokens() {
    let _serial = serial();
    let root = temp("margin");
    let mut config = tiny(&root);
    let device = Default::default();
    train::sft::<B>(&config, &device, false, &mut Quiet).unwrap();
    let path = root.join("prefs.jsonl");
    preferences(&config, &path);
    config.data.preferences = Some(path.clone());
    config.apo.optim.learning_rate = Some(1e-2);
    train::apo::<B>(&config, "apo", &device, false, &mut Quiet).unwrap();
    let out = &config.run.out;
    let items = data::open_items(&config.data.dir, None).unwrap();
    let prefs = Preferences::read(&path).unwrap();
    let beta = 0.1;
    let run = |policy: &str, spans: &dyn Fn(&str) -> Vec<(usize, usize)>| -> MarginBreakdown {
        margin::margin_breakdown_dirs::<NdArray>(
            &out.join(policy),
            &out.join("sft"),
            &out.join("tokenizer.json"),
            &prefs,
            &items,
            true,
            beta,
            5,
            spans,
            &device,
        )
        .unwrap()
    };
    let b = run("apo", &first_sentence);
    assert_eq!(b.groups, 5);
    assert_eq!(b.pairs, 5 * 6, "six negatives per group");

    // The total margin is β times the difference of the summed completion log-probs that
    // stage 2 trains on, computed here by the training path for the same five groups.
    let tok = TextTokenizer::from_file(&out.join("tokenizer.json")).unwrap();
    let (policy, mc) =
        apo_train::checkpoint::load_model::<NdArray>(&out.join("apo"), &device).unwrap();
    let (reference, _) =
        apo_train::checkpoint::load_model::<NdArray>(&out.join("sft"), &device).unwrap();
    let (mut groups, _) =
        data::preference_groups(&prefs, &items, &tok, mc.max_text_len, true).unwrap();
    groups.truncate(5);
    let paths: Vec<_> = groups
        .iter()
        .map(|g| items[g.image].image.clone())
        .collect();
    let images = data::Images::load(&paths, mc.image_size).unwrap();
    for (k, g) in groups.iter_mut().enumerate() {
        g.image = k;
    }
    let batch: data::Batch<NdArray> =
        data::make_batch(&images, &groups, &[0, 1, 2, 3, 4], tok.pad(), &device);
    let lp = |m: &apo_train::Student<NdArray>| -> Vec<f32> {
        m.sequence_logprobs(&batch)
            .unwrap()
            .into_data()
            .to_vec()
            .unwrap()
    };
    let (p, r) = (lp(&policy), lp(&reference));
    let s = batch.per_group;
    let (mut margin, mut chosen, mut pairs) = (0f64, 0f64, 0);
    for g in 0..5 {
        let reward = |j: usize| beta * f64::from(p[g * s + j] - r[g * s + j]);
        chosen += reward(0);
        for j in 1..groups[g].sequences.len() {
            margin += reward(0) - reward(j);
            pairs += 1;
        }
    }
    let (margin, chosen) = (margin / pairs as f64, chosen / 5.0);
    assert!(margin.abs() > 1e-3, "stage 2 moved the policy: {margin}");
    assert!(
        (b.margin.total() - margin).abs() < 1e-4 * (1.0 + margin.abs()),
        "{} vs {margin}",
        b.margin.total()
    );
    assert!((b.chosen.total() - chosen).abs() < 1e-4 * (1.0 + chosen.abs()));
    assert!((b.chosen.total() - b.rejected.total() - b.margin.total()).abs() < 1e-9);
    // Token counts: every completion token (with `<eos>`) in exactly one class.
    let mean_len = groups
        .iter()
        .map(|g| g.sequences[0].completion_len())
        .sum::<usize>() as f64
        / 5.0;
    assert!((b.chosen_tokens.total() - mean_len).abs() < 1e-9);
    assert!(b.chosen_tokens.finding > 0.0 && b.chosen_tokens.layout >= 1.0);
    assert!((0.0..=1.0).contains(&b.accuracy) && (0.0..=1.0).contains(&b.finding_accuracy));

    // No finding sentence: the whole margin is layout; the same total.
    let none = run("apo", &|_| Vec::new());
    assert_eq!(none.margin.finding, 0.0);
    assert_eq!(none.chosen_tokens.finding, 0.0);
    assert!((none.margin.layout - b.margin.total()).abs() < 1e-9);
    // Everything a finding sentence: only `<eos>` (and truncated tails) stays layout.
    let all = run("apo", &|t: &str| vec![(0, t.len())]);
    assert!(all.chosen_tokens.layout >= 1.0 && all.chosen_tokens.layout < b.chosen_tokens.layout);
    // The reference against itself: no margin.
    let same = run("sft", &first_sentence);
    assert_eq!(same.margin, Default::default());
    assert_eq!(same.accuracy, 0.0);
    std::fs::remove_dir_all(&root).ok();
}
