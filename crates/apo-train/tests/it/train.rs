//! Both stages on a tiny simulated data set with the CPU backend.

use std::path::{Path, PathBuf};

use apo_train::config::{ConceptTargets, RunConfig};
use apo_train::train::{self, Observer, Quiet, StepMetrics};
use burn::backend::{Autodiff, NdArray};

type B = Autodiff<NdArray>;

/// The ndarray backend's random generator is process-wide: tests that seed it and draw from
/// it (initialisation, dropout) run one at a time.
static BACKEND_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub(crate) fn serial() -> std::sync::MutexGuard<'static, ()> {
    BACKEND_RNG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn tiny(root: &Path) -> RunConfig {
    let data = root.join("data");
    if !data.exists() {
        cxr_max::sim::synthesize(
            &data,
            &cxr_max::sim::SynthConfig {
                studies: 16,
                image_size: 32,
                seed: 3,
                ..Default::default()
            },
        )
        .unwrap();
    }
    let mut c = RunConfig::default();
    c.data.dir = data;
    c.data.split = None;
    c.data.truncate = true;
    c.tokenizer.vocab_size = 400;
    c.model.image_size = 32;
    c.model.patch_size = 8;
    c.model.d_model = 32;
    c.model.n_heads = 2;
    c.model.encoder_layers = 1;
    c.model.decoder_layers = 1;
    c.model.mlp_ratio = 2;
    c.model.max_text_len = 160;
    c.sft.steps = 6;
    c.sft.batch_size = 2;
    c.sft.learning_rate = Some(3e-3);
    c.apo.optim.steps = 2;
    c.apo.optim.batch_size = 2;
    c.run.out = root.join("run");
    c.run.checkpoint_every = 2;
    c
}

pub(crate) fn temp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("apo-train-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&p).ok();
    p
}

fn digest(run: &Path) -> String {
    let (m, _) =
        apo_train::checkpoint::load_model::<NdArray>(&run.join("sft"), &Default::default())
            .unwrap();
    m.weights_digest()
}

pub(crate) fn metrics(path: &Path) -> Vec<StepMetrics> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Writes preference rows (chosen: the first teacher's trajectory; rejected: the others).
pub(crate) fn preferences(config: &RunConfig, path: &Path) {
    let items = apo_train::data::open_items(&config.data.dir, None).unwrap();
    let mut out = String::new();
    for item in &items {
        let t = &item.sample.trajectories;
        let row = serde_json::json!({
            "id": item.sample.dicom_id,
            "prompt": cxr_max::sim::PROMPT,
            "images": [item.image.display().to_string()],
            "chosen": t[0].text,
            "rejected": t[1..].iter().map(|r| serde_json::json!({
                "teacher": r.teacher, "text": r.text, "contradictions": 0, "hedges": 0,
                "omissions": 0, "drift": 0.0})).collect::<Vec<_>>(),
            "consensus": {},
            "agreement": 1.0,
        });
        out.push_str(&row.to_string());
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn incremental_decoding_matches_full_decoding() {
    for (summary, concepts) in [(true, false), (false, false), (true, true), (false, true)] {
        incremental_decoding_case(summary, concepts);
    }
}

fn incremental_decoding_case(summary: bool, concepts: bool) {
    let _serial = serial();
    use burn::tensor::{Int, Tensor};
    let device = Default::default();
    let c = apo_train::StudentConfig::new(50)
        .with_image_size(16)
        .with_d_model(16)
        .with_n_heads(2)
        .with_max_text_len(12)
        .with_image_summary(summary)
        .with_concept_head(concepts)
        .with_concept_input(concepts);
    <NdArray as burn::tensor::backend::Backend>::seed(&device, 5);
    let model = c.init::<NdArray>(&device).unwrap();
    let images =
        Tensor::<NdArray, 4>::random([2, 1, 16, 16], burn::tensor::Distribution::Default, &device);
    let prefix = model.encode(images);
    let ids = [[3i64, 7, 9, 11, 2, 5], [4, 4, 8, 1, 0, 6]];
    let full = model.decode(
        prefix.clone(),
        Tensor::<NdArray, 2, Int>::from_ints(ids, &device),
    );
    let start = Tensor::<NdArray, 2, Int>::from_ints([[3i64, 7, 9], [4, 4, 8]], &device);
    let (first, mut cache) = model.decode_start(prefix, start);
    let mut steps = vec![first];
    for (a, b) in ids[0].iter().zip(&ids[1]).skip(3) {
        let tok = Tensor::<NdArray, 2, Int>::from_ints([[*a], [*b]], &device);
        steps.push(model.decode_next(&mut cache, tok));
    }
    for (j, logits) in steps.into_iter().enumerate() {
        let want: Vec<f32> = full
            .clone()
            .narrow(1, 2 + j, 1)
            .into_data()
            .to_vec()
            .unwrap();
        let got: Vec<f32> = logits.into_data().to_vec().unwrap();
        let err = want
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-4, "position {}: max error {err}", 2 + j);
    }
}

/// A group's sequences sharing one image prefix get the same logits as each sequence decoded
/// alone with its own copy of the image (the prefix keys and values and the image summary
/// are repeated per sequence correctly), and the image changes them.
#[test]
fn shared_prefix_decoding_matches_one_sequence_at_a_time() {
    let _serial = serial();
    use burn::tensor::{Int, Tensor};
    let device = Default::default();
    let c = apo_train::StudentConfig::new(40)
        .with_image_size(16)
        .with_d_model(16)
        .with_n_heads(2)
        .with_max_text_len(8);
    <NdArray as burn::tensor::backend::Backend>::seed(&device, 9);
    let model = c.init::<NdArray>(&device).unwrap();
    let images =
        Tensor::<NdArray, 4>::random([2, 1, 16, 16], burn::tensor::Distribution::Default, &device);
    // Two groups of three sequences.
    let ids: [[i64; 5]; 6] = [
        [1, 5, 9, 2, 3],
        [1, 6, 6, 7, 8],
        [1, 4, 3, 2, 1],
        [1, 5, 9, 2, 3],
        [1, 7, 7, 7, 7],
        [1, 2, 30, 31, 32],
    ];
    let shared: Vec<f32> = model
        .decode(
            model.encode(images.clone()),
            Tensor::<NdArray, 2, Int>::from_ints(ids, &device),
        )
        .into_data()
        .to_vec()
        .unwrap();
    let per_row = 5 * 40;
    for (row, seq) in ids.iter().enumerate() {
        let image = images.clone().narrow(0, row / 3, 1);
        let alone: Vec<f32> = model
            .decode(
                model.encode(image),
                Tensor::<NdArray, 2, Int>::from_ints([*seq], &device),
            )
            .into_data()
            .to_vec()
            .unwrap();
        let err = alone
            .iter()
            .zip(&shared[row * per_row..(row + 1) * per_row])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-4, "row {row}: max error {err}");
    }
    // Rows 0 and 3 read the same tokens with different images.
    let diff = (0..per_row)
        .map(|k| (shared[k] - shared[3 * per_row + k]).abs())
        .fold(0f32, f32::max);
    assert!(diff > 1e-3, "the image changes the logits ({diff})");
}

#[test]
fn sft_groups_split_each_image_into_units() {
    let root = temp("groups");
    let config = tiny(&root);
    let items = apo_train::data::open_items(&config.data.dir, None).unwrap();
    let tok = apo_train::train::tokenizer(&config, &items).unwrap();
    let whole = apo_train::data::sft_groups(&items, &tok, 160, true, 0, 1).unwrap();
    let total: usize = whole.iter().map(|g| g.sequences.len()).sum();
    assert_eq!(whole.len(), items.len());
    for per in [1, 2, 3] {
        let split = apo_train::data::sft_groups(&items, &tok, 160, true, per, 1).unwrap();
        assert!(split.iter().all(|g| (1..=per).contains(&g.sequences.len())));
        // Every trajectory is in exactly one unit of its image.
        for w in &whole {
            let mut mine: Vec<Vec<u32>> = split
                .iter()
                .filter(|g| g.image == w.image)
                .flat_map(|g| g.sequences.iter().map(|q| q.ids.clone()))
                .collect();
            let mut want: Vec<Vec<u32>> = w.sequences.iter().map(|q| q.ids.clone()).collect();
            mine.sort();
            want.sort();
            assert_eq!(mine, want);
        }
        let n: usize = split.iter().map(|g| g.sequences.len()).sum();
        assert_eq!(n, total);
        // Seeded: the same split for the same seed.
        let again = apo_train::data::sft_groups(&items, &tok, 160, true, per, 1).unwrap();
        assert_eq!(split, again);
    }
    std::fs::remove_dir_all(&root).ok();
}

/// Drifts of the six negatives of each group, in teacher order (two equal).
const DRIFT: [f64; 6] = [0.6, 0.1, 0.35, 0.1, 0.9, 0.0];

/// [`preferences`] with the drifts of [`DRIFT`] on the negatives.
fn drift_preferences(config: &RunConfig, path: &Path) {
    preferences(config, path);
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let mut row: serde_json::Value = serde_json::from_str(line).unwrap();
        for (r, d) in row["rejected"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .zip(DRIFT)
        {
            r["drift"] = d.into();
        }
        out.push_str(&row.to_string());
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
}

/// Stage 2 with the listwise objectives: the ranking over negatives ordered by drift, InfoNCA
/// with the rewards `1 − drift`. Both train, start at their step-0 values (every score is 0:
/// `ln 7!` for the ranking of seven sequences, `ln 7` for InfoNCA whatever its targets), and
/// one stage-2 pass through `preference_step` on the drift-ordered batch equals the scalar
/// reference on the same log-probs.
#[test]
fn listwise_objectives_train_on_drift_ordered_groups() {
    use apo_loss::{Example, LossConfig, Objective, Sequence};
    let _serial = serial();
    let root = temp("listwise");
    let mut config = tiny(&root);
    config.sft.steps = 2;
    let device = Default::default();
    train::sft::<B>(&config, &device, false, &mut Quiet).unwrap();
    let prefs = root.join("prefs.jsonl");
    drift_preferences(&config, &prefs);
    config.data.preferences = Some(prefs.clone());

    let ln_factorial_7: f64 = (1..=7).map(|k| f64::from(k).ln()).sum();
    for (objective, step_zero) in [
        (Objective::PlackettLuceRanking, ln_factorial_7),
        (Objective::Infonca, 7f64.ln()),
    ] {
        config.apo.loss = LossConfig::new(objective);
        let r = train::apo::<B>(&config, objective.name(), &device, false, &mut Quiet).unwrap();
        let m = metrics(&r.metrics);
        assert_eq!(m.len(), 2);
        assert!(
            (m[0].loss - step_zero).abs() < 1e-4,
            "{objective} step-0 loss {} vs {step_zero}",
            m[0].loss
        );
        assert!(
            m.iter()
                .all(|x| x.loss.is_finite() && x.grad_norm.is_finite() && x.grad_norm > 0.0),
            "{objective}: {m:?}"
        );
    }

    // One pass on two drift-ordered groups against the scalar reference, with reference
    // log-probs away from the policy's so that every score (and so the order) matters.
    let items = apo_train::data::open_items(&config.data.dir, None).unwrap();
    let tok =
        apo_train::tokenizer::TextTokenizer::from_file(&config.run.out.join("tokenizer.json"))
            .unwrap();
    let (model, model_config) =
        apo_train::checkpoint::load_model::<B>(&config.run.out.join("sft"), &device).unwrap();
    let read = apo_train::data::Preferences::read(&prefs).unwrap();
    let (mut groups, _) =
        apo_train::data::preference_groups(&read, &items, &tok, model_config.max_text_len, true)
            .unwrap();
    let mut reference: Vec<Vec<f32>> = groups
        .iter()
        .map(|g| {
            (0..g.sequences.len())
                .map(|j| -60.0 - 7.0 * j as f32)
                .collect()
        })
        .collect();
    apo_train::data::order_by_drift(&mut groups, &mut reference).unwrap();
    let mut sorted = DRIFT.to_vec();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(groups[0].drift.as_deref(), Some(&sorted[..]));
    let paths: Vec<PathBuf> = items.iter().map(|i| i.image.clone()).collect();
    let images = apo_train::data::Images::load(&paths, model_config.image_size).unwrap();
    let which = [0, 1];
    let batch: apo_train::data::Batch<B> =
        apo_train::data::make_batch(&images, &groups, &which, tok.pad(), &device);
    let policy: Vec<f64> = model
        .sequence_logprobs(&batch)
        .unwrap()
        .into_data()
        .convert::<f64>()
        .to_vec()
        .unwrap();
    let refs: Vec<&[f32]> = which.iter().map(|&g| reference[g].as_slice()).collect();
    for objective in [Objective::PlackettLuceRanking, Objective::Infonca] {
        let loss_fn = LossConfig::new(objective).with_beta(0.05).init().unwrap();
        let (loss, _) = train::preference_step(&model, &batch, &refs, &loss_fn, &device).unwrap();
        let got: f64 = loss.into_scalar().into();
        let s = batch.per_group;
        let want: f64 = which
            .iter()
            .enumerate()
            .map(|(gi, &g)| {
                let seq = |j: usize| Sequence::new(policy[gi * s + j], f64::from(reference[g][j]));
                let mut ex = Example::new(seq(0), (1..s).map(seq).collect());
                if objective == Objective::Infonca {
                    let d = groups[g].drift.as_ref().unwrap();
                    ex = ex.with_rewards(
                        std::iter::once(1.0)
                            .chain(d.iter().map(|d| 1.0 - d))
                            .collect(),
                    );
                }
                loss_fn.compute(&ex).unwrap().loss
            })
            .sum::<f64>()
            / which.len() as f64;
        assert!(
            (got - want).abs() < 1e-4 * (1.0 + want.abs()),
            "{objective}: tensor {got} vs scalar {want}"
        );
        // The scores are far from 0: the value is not the step-0 one.
        assert!(
            (want - ln_factorial_7).abs() > 0.1 && (want - 7f64.ln()).abs() > 0.1,
            "{want}"
        );
    }
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn sft_then_apo_starts_at_ln_n_plus_1_and_learns() {
    let _serial = serial();
    let root = temp("stages");
    let mut config = tiny(&root);
    let device = Default::default();
    let r = train::sft::<B>(&config, &device, false, &mut Quiet).unwrap();
    assert_eq!(r.steps, 6);
    let m = metrics(&r.metrics);
    assert_eq!(m.len(), 6);
    assert!(
        m[5].loss < m[0].loss,
        "SFT loss falls: {} -> {}",
        m[0].loss,
        m[5].loss
    );
    assert!(
        m.iter()
            .all(|x| x.grad_norm.is_finite() && x.grad_norm > 0.0)
    );
    assert!(config.run.out.join("sft/model.bin").is_file());
    assert!(config.run.out.join("tokenizer.json").is_file());

    let prefs = root.join("prefs.jsonl");
    preferences(&config, &prefs);
    config.data.preferences = Some(prefs);
    let r = train::apo::<B>(&config, "apo", &device, false, &mut Quiet).unwrap();
    let m = metrics(&r.metrics);
    // Policy = reference at step 0: every reward is 0 and the Plackett-Luce loss is
    // ln(1 + N) with N = 6 negatives per group.
    assert!(
        (m[0].loss - 7f64.ln()).abs() < 1e-4,
        "step-0 loss {}",
        m[0].loss
    );
    assert!(m[0].reward_chosen.unwrap().abs() < 1e-4);
    let cached: Vec<_> = std::fs::read_dir(config.run.out.join("reference"))
        .unwrap()
        .collect();
    assert_eq!(cached.len(), 1, "one reference cache file");
    // The cache is reused: same numbers on a rerun.
    let again = train::apo::<B>(&config, "apo", &device, false, &mut Quiet).unwrap();
    assert_eq!(metrics(&again.metrics)[0].loss, m[0].loss);
    // Data already opened (the rows parsed elsewhere, as a pipeline holds them): the same
    // training.
    let items = apo_train::data::open_items(&config.data.dir, None).unwrap();
    let read =
        apo_train::data::Preferences::read(config.data.preferences.as_ref().unwrap()).unwrap();
    let rows = read.rows.iter().map(|(_, row)| row.clone()).collect();
    let in_memory = apo_train::data::Preferences::from_rows("in memory", rows);
    assert_eq!(in_memory.rows, read.rows);
    let on = train::apo_on::<B>(
        &config, "apo-on", &items, &in_memory, &device, false, &mut Quiet,
    )
    .unwrap();
    assert_eq!(on.weights_digest, r.weights_digest);
    let losses = |p: &Path| metrics(p).iter().map(|m| m.loss).collect::<Vec<_>>();
    assert_eq!(losses(&on.metrics), losses(&r.metrics));

    // LoRA: the same start, adapters merged into the saved model.
    config.apo.lora_rank = 4;
    let r = train::apo::<B>(&config, "apo-lora", &device, false, &mut Quiet).unwrap();
    assert!((metrics(&r.metrics)[0].loss - 7f64.ln()).abs() < 1e-4);
    let (merged, _) =
        apo_train::checkpoint::load_model::<NdArray>(&config.run.out.join("apo-lora"), &device)
            .unwrap();
    assert!(!merged.has_lora());
    std::fs::remove_dir_all(&root).ok();
}

/// Stops the process's run at a given step, as a crash would.
pub(crate) struct CrashAt(pub(crate) usize);

impl Observer for CrashAt {
    fn step(&mut self, _: usize, m: &StepMetrics) {
        assert!(m.step != self.0, "simulated crash at step {}", self.0);
    }
}

#[test]
fn resumed_run_matches_uninterrupted_run_bitwise() {
    let _serial = serial();
    let root = temp("resume");
    let config = tiny(&root);
    let device = Default::default();
    let straight = {
        let mut c = config.clone();
        c.run.out = root.join("straight");
        train::sft::<B>(&c, &device, false, &mut Quiet).unwrap();
        digest(&c.run.out)
    };
    let again = {
        let mut c = config.clone();
        c.run.out = root.join("again");
        train::sft::<B>(&c, &device, false, &mut Quiet).unwrap();
        digest(&c.run.out)
    };
    assert!(straight == again, "two uninterrupted runs differ");
    let mut c = config.clone();
    c.run.out = root.join("crashed");
    let crashed = std::panic::catch_unwind(|| {
        train::sft::<B>(&c, &Default::default(), false, &mut CrashAt(5)).ok()
    });
    assert!(crashed.is_err());
    assert!(!c.run.out.join("sft/model.bin").exists());
    let r = train::sft::<B>(&c, &device, true, &mut Quiet).unwrap();
    assert_eq!(r.resumed_from, Some(4));
    let resumed = digest(&c.run.out);
    assert!(straight == resumed, "resumed weights differ");
    let lines = metrics(&r.metrics);
    assert_eq!(
        lines.iter().map(|m| m.step).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn bad_inputs_are_typed_errors() {
    use apo_train::TrainError;
    let _serial = serial();
    let root = temp("errors");
    let mut config = tiny(&root);
    config.sft.steps = 2;
    let device = Default::default();
    // Too long without truncation.
    config.data.truncate = false;
    config.model.max_text_len = 24;
    let err = train::sft::<B>(&config, &device, false, &mut Quiet).unwrap_err();
    assert!(matches!(err, TrainError::TooLong { .. }), "{err}");
    assert!(err.to_string().contains("max_text_len"), "{err}");
    std::fs::remove_dir_all(&config.run.out).ok();
    config.data.truncate = true;
    config.model.max_text_len = 160;
    train::sft::<B>(&config, &device, false, &mut Quiet).unwrap();
    // A checkpoint from another architecture.
    let mut other = config.clone();
    other.model.d_model = 64;
    let err = train::sft::<B>(&other, &device, true, &mut Quiet).unwrap_err();
    assert!(
        matches!(
            err,
            TrainError::CheckpointMismatch {
                what: "model architecture",
                ..
            }
        ),
        "{err}"
    );
    // ... or another optimiser configuration.
    let mut other = config.clone();
    other.sft.weight_decay = 0.5;
    let err = train::sft::<B>(&other, &device, true, &mut Quiet).unwrap_err();
    assert!(
        matches!(err, TrainError::CheckpointMismatch { .. }),
        "{err}"
    );
    // A corrupt checkpoint.
    let ckpt = apo_train::checkpoint::list(&config.run.out.join("sft")).unwrap();
    let (_, last) = ckpt.last().unwrap();
    std::fs::write(last.join("optim.bin"), b"not a record").unwrap();
    let err = train::sft::<B>(&config, &device, true, &mut Quiet).unwrap_err();
    assert!(matches!(err, TrainError::CorruptCheckpoint { .. }), "{err}");
    // A preference group without negatives, named by its line.
    let prefs = root.join("prefs.jsonl");
    preferences(&config, &prefs);
    let mut text = std::fs::read_to_string(&prefs).unwrap();
    let mut row: serde_json::Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
    row["rejected"] = serde_json::json!([]);
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    text = format!("{}\n{}\n{}\n", lines[0], row, lines[2..].join("\n"));
    std::fs::write(&prefs, text).unwrap();
    config.data.preferences = Some(prefs.clone());
    let err = train::apo::<B>(&config, "apo", &device, false, &mut Quiet).unwrap_err();
    assert!(
        matches!(err, TrainError::NoNegatives { line: 2, .. }),
        "{err}"
    );
    std::fs::write(&prefs, "{not json\n").unwrap();
    let err = train::apo::<B>(&config, "apo", &device, false, &mut Quiet).unwrap_err();
    assert!(
        matches!(err, TrainError::BadPreference { line: 1, .. }),
        "{err}"
    );
    // Out-of-range values name their field.
    let mut bad = config.clone();
    bad.apo.optim.grad_accum = 0;
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("apo.optim.grad_accum")
    );
    std::fs::remove_dir_all(&root).ok();
}

/// Concept targets are the fraction of an image's teachers ending positive on each finding
/// (uncertain = one half) or the findings of the image's consensus trajectory, and the
/// concept head adds its binary cross-entropy to stage 1: ln 2 per image at the start
/// (logits near 0), the text loss unchanged; stage 2 adds it too.
#[test]
fn concept_head_targets_and_stage_one_loss() {
    use cxr_max::{Finding, Location, Sample, Trajectory};
    let texts = [
        "Cardiomegaly. No pleural effusion.",
        "No cardiomegaly.",
        "Possible cardiomegaly.",
        "The lungs are clear.",
    ];
    let item = cxr_max::dataset::Item {
        sample: Sample {
            dicom_id: "d".into(),
            subject_id: None,
            study_id: None,
            prompt: None,
            report: None,
            diagnose: None,
            trajectories: texts
                .iter()
                .enumerate()
                .map(|(i, t)| Trajectory {
                    teacher: format!("T{i}"),
                    text: (*t).to_owned(),
                })
                .collect(),
            source: Location {
                path: "r.jsonl".into(),
                line: 1,
            },
        },
        subject_id: None,
        study_id: None,
        labels: None,
        split: None,
        view_position: None,
        image: "d.jpg".into(),
    };
    let t = apo_train::data::concept_targets(std::slice::from_ref(&item));
    let k = |f: Finding| Finding::ALL.iter().position(|&g| g == f).unwrap();
    assert!(
        (t[0][k(Finding::Cardiomegaly)] - 0.375).abs() < 1e-6,
        "{:?}",
        t[0]
    );
    assert_eq!(t[0][k(Finding::PleuralEffusion)], 0.0);
    assert_eq!(t[0][k(Finding::Pneumothorax)], 0.0);

    assert_eq!(
        apo_train::data::text_concepts("Possible cardiomegaly. Small left pleural effusion.")
            [k(Finding::Cardiomegaly)..=k(Finding::Cardiomegaly)],
        [0.5]
    );

    let _serial = serial();
    let root = temp("concepts");
    let mut config = tiny(&root);
    config.sft.steps = 3;
    // Consensus targets: each image's row in the preference file (here the chosen text is
    // the first teacher's trajectory); an image without a row has none.
    let items = apo_train::data::open_items(&config.data.dir, None).unwrap();
    let prefs = root.join("prefs.jsonl");
    preferences(&config, &prefs);
    let text = std::fs::read_to_string(&prefs).unwrap();
    let without_first: Vec<&str> = text.lines().skip(1).collect();
    std::fs::write(&prefs, without_first.join("\n")).unwrap();
    let targets = apo_train::data::consensus_targets(
        &apo_train::data::Preferences::read(&prefs).unwrap(),
        &items,
    );
    assert_eq!(targets.len(), items.len());
    assert_eq!(targets[0], None);
    for (item, t) in items.iter().zip(&targets).skip(1) {
        let want = apo_train::data::text_concepts(&item.sample.trajectories[0].text);
        assert_eq!(t.as_ref(), Some(&want), "{}", item.sample.dicom_id);
    }
    assert!(targets.iter().skip(1).any(|t| t.unwrap().contains(&1.0)));
    let bad = root.join("bad.jsonl");
    std::fs::write(&bad, format!("{}\n{{oops\n", without_first[0])).unwrap();
    let err = apo_train::data::Preferences::read(&bad).unwrap_err();
    assert!(
        matches!(err, apo_train::TrainError::BadPreference { line: 2, .. }),
        "{err}"
    );
    preferences(&config, &prefs);
    // The consensus targets need the preference file.
    config.model.concept_weight = 1.0;
    let device = Default::default();
    let err = train::sft::<B>(&config, &device, false, &mut Quiet).unwrap_err();
    assert!(err.to_string().contains("data.preferences"), "{err}");
    // Feeding the concepts back needs the head.
    let mut no_head = config.clone();
    no_head.model.concept_weight = 0.0;
    no_head.model.concept_input = true;
    assert!(
        no_head
            .validate()
            .unwrap_err()
            .to_string()
            .contains("concept_input")
    );

    for targets in [ConceptTargets::Teachers, ConceptTargets::Consensus] {
        config.model.concept_targets = targets;
        config.data.preferences = Some(prefs.clone());
        // The baseline carries the head too, with a negligible weight: burn draws a
        // parameter's initial values when it is first used, so a model without the head
        // would start from other weights and the difference would not be the concept loss.
        config.model.concept_weight = 1e-9;
        config.run.out = root.join(format!("run-plain-{targets:?}"));
        let plain = metrics(
            &train::sft::<B>(&config, &device, false, &mut Quiet)
                .unwrap()
                .metrics,
        );
        config.model.concept_weight = 1.0;
        config.run.out = root.join(format!("run-concepts-{targets:?}"));
        let with = metrics(
            &train::sft::<B>(&config, &device, false, &mut Quiet)
                .unwrap()
                .metrics,
        );
        // About ln 2 (a head that knows nothing; its initial logits are small but not zero,
        // so the first micro-batch's targets move it by up to about 0.1).
        let extra = with[0].loss - plain[0].loss;
        assert!(
            (extra - 2f64.ln()).abs() < 0.15,
            "{targets:?}: concept loss at step 0: {extra}"
        );
        // The step metrics carry the unweighted cross-entropy itself.
        let logged = with[0].concept_loss.unwrap();
        assert!((logged - extra).abs() < 1e-3, "{logged} vs {extra}");
        assert!(plain[0].concept_loss.unwrap() > 0.5);
        assert!(
            with[2].loss < with[0].loss,
            "{} -> {}",
            with[0].loss,
            with[2].loss
        );
    }
    // Stage 2 from the same stage-1 model, with and without the concept loss: the first
    // step's loss differs by the head's cross-entropy on the consensus targets (> 0).
    config.model.concept_input = true;
    config.run.out = root.join("run-input");
    train::sft::<B>(&config, &device, false, &mut Quiet).unwrap();
    config.apo.init = Some(config.run.out.join("sft"));
    let stage2 = |weight: f64, out: &str| {
        let mut c = config.clone();
        c.model.concept_weight = weight;
        c.run.out = root.join(out);
        metrics(
            &train::apo::<B>(&c, "apo", &device, false, &mut Quiet)
                .unwrap()
                .metrics,
        )
    };
    let a = stage2(1e-9, "run-apo-plain");
    let b = stage2(1.0, "run-apo-concepts");
    let extra = b[0].loss - a[0].loss;
    assert!(
        extra > 0.01 && extra < 2f64.ln() + 0.05,
        "stage-2 concept loss {extra}"
    );
    assert!((b[0].concept_loss.unwrap() - extra).abs() < 1e-3);
    std::fs::remove_dir_all(&root).ok();
}

/// The encoder pretraining stage: with a concept head pooled by attention and balanced
/// classes, `[pretrain]` trains the image encoder and the head on the consensus targets alone
/// (no text), writes `OUT/pretrain/`, and stage 1 starts from its model; without a concept
/// head it is a configuration error.
#[test]
fn encoder_pretraining_feeds_stage_one() {
    let _serial = serial();
    let root = temp("pretrain");
    let mut config = tiny(&root);
    config.sft.steps = 2;
    let prefs = root.join("prefs.jsonl");
    preferences(&config, &prefs);
    config.data.preferences = Some(prefs);
    config.model.concept_weight = 1.0;
    config.model.concept_input = true;
    config.model.concept_pooling = apo_train::ConceptPooling::Attention;
    config.model.concept_balance = true;
    config.pretrain.optim.steps = 8;
    config.pretrain.optim.batch_size = 4;
    config.pretrain.optim.learning_rate = Some(1e-2);
    config.pretrain.optim.warmup_ratio = 0.0;

    let mut no_head = config.clone();
    no_head.model.concept_weight = 0.0;
    no_head.model.concept_input = false;
    let err = no_head.validate().unwrap_err().to_string();
    assert!(err.contains("pretrain.optim.steps"), "{err}");

    let device = Default::default();
    let report = train::sft::<B>(&config, &device, false, &mut Quiet).unwrap();
    let pre = metrics(&config.run.out.join("pretrain/metrics.jsonl"));
    assert_eq!(pre.len(), 8);
    assert!(pre.iter().all(|m| m.stage == "pretrain"));
    // The loss is the concept cross-entropy alone, balanced: near ln 2 at the start.
    let first = pre[0].concept_loss.unwrap();
    assert!((pre[0].loss - first).abs() < 1e-6);
    assert!((first - 2f64.ln()).abs() < 0.25, "{first}");
    let last = pre[7].loss;
    assert!(last < first, "pretraining loss {first} -> {last}");
    assert!(config.run.out.join("pretrain/model.bin").exists());
    let (pretrained, model_config) =
        apo_train::checkpoint::load_model::<NdArray>(&config.run.out.join("pretrain"), &device)
            .unwrap();
    assert_eq!(
        model_config.concept_pooling,
        apo_train::ConceptPooling::Attention
    );
    // Stage 1 starts where pretraining ended: its first step's concept loss is the
    // pretrained head's (below a fresh head's ln 2).
    let sft = metrics(&report.metrics);
    assert!(
        sft[0].concept_loss.unwrap() < first,
        "{:?}",
        sft[0].concept_loss
    );
    // Without the stage, stage 1 trains from a fresh model and no OUT/pretrain is written.
    let mut plain = config.clone();
    plain.pretrain.optim.steps = 0;
    plain.run.out = root.join("run-plain");
    train::sft::<B>(&plain, &device, false, &mut Quiet).unwrap();
    assert!(!plain.run.out.join("pretrain").exists());
    assert_ne!(digest(&plain.run.out), digest(&config.run.out));
    assert_ne!(pretrained.weights_digest(), digest(&config.run.out));
    std::fs::remove_dir_all(&root).ok();
}

/// A checkpoint whose bytes changed after it was written is refused on `--resume`, naming the
/// file, and the stage's final model stays as it was; a stage folder another running trainer
/// holds is refused.
#[test]
fn corrupt_checkpoints_and_a_held_stage_are_refused() {
    let _serial = serial();
    let root = temp("corrupt");
    let config = tiny(&root);
    let device = Default::default();
    train::sft::<B>(&config, &device, false, &mut Quiet).unwrap();
    let final_model = config.run.out.join("sft/model.bin");
    let before = std::fs::read(&final_model).unwrap();
    let (_, newest) = apo_train::checkpoint::list(&config.run.out.join("sft"))
        .unwrap()
        .pop()
        .unwrap();
    let bin = newest.join("model.bin");
    let mut bytes = std::fs::read(&bin).unwrap();
    let k = bytes.len() / 2;
    bytes[k] ^= 0x5a;
    std::fs::write(&bin, bytes).unwrap();
    let e = train::sft::<B>(&config, &device, true, &mut Quiet).unwrap_err();
    assert!(
        matches!(&e, apo_train::TrainError::CorruptCheckpoint { path, .. } if path == &bin),
        "{e}"
    );
    assert_eq!(
        std::fs::read(&final_model).unwrap(),
        before,
        "the final model is kept"
    );

    // pid 1 always runs on Linux: a lock it holds blocks the stage.
    if cfg!(target_os = "linux") {
        let lock = config.run.out.join("sft/.lock");
        std::fs::write(&lock, "1\n").unwrap();
        let e = train::sft::<B>(&config, &device, false, &mut Quiet).unwrap_err();
        assert!(
            matches!(&e, apo_train::TrainError::Locked { pid: 1, .. }),
            "{e}"
        );
        std::fs::remove_file(&lock).unwrap();
    }
    std::fs::remove_dir_all(&root).ok();
}

/// Sets the stop flag (what `apo train`'s SIGINT handler does) when step `0` is observed.
pub(crate) struct StopAt(pub(crate) usize);

impl Observer for StopAt {
    fn step(&mut self, _: usize, m: &StepMetrics) {
        if m.step == self.0 {
            apo_train::train::stop_flag().store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// A stop request ends the stage after the step with a checkpoint there; `--resume` continues
/// bitwise; `--from-checkpoint` picks an earlier one (and drops the newer); the step count may
/// grow on resume; a changed setting is refused with the field's name.
#[test]
fn stop_from_checkpoint_more_steps_and_named_mismatches() {
    let _serial = serial();
    let root = temp("stop");
    let config = tiny(&root);
    let device = Default::default();
    let mut straight = config.clone();
    straight.run.out = root.join("straight");
    train::sft::<B>(&straight, &device, false, &mut Quiet).unwrap();
    let want = digest(&straight.run.out);

    let mut c = config.clone();
    c.run.out = root.join("stopped");
    let e = train::sft::<B>(&c, &device, false, &mut StopAt(3)).unwrap_err();
    apo_train::train::stop_flag().store(false, std::sync::atomic::Ordering::SeqCst);
    match &e {
        apo_train::TrainError::Interrupted {
            step, checkpoint, ..
        } => {
            assert_eq!(*step, 3);
            assert!(
                checkpoint.ends_with("step-000003"),
                "{}",
                checkpoint.display()
            );
        }
        other => panic!("{other}"),
    }
    // From step 2 (the stop's step-3 checkpoint is dropped), then to the end: the same weights.
    c.run.from_checkpoint = Some(2);
    let r = train::sft::<B>(&c, &device, true, &mut Quiet).unwrap();
    assert_eq!(r.resumed_from, Some(2));
    assert!(digest(&c.run.out) == want, "resumed weights differ");
    c.run.from_checkpoint = Some(5);
    let e = train::sft::<B>(&c, &device, true, &mut Quiet).unwrap_err();
    assert!(e.to_string().contains("no checkpoint at step 5"), "{e}");
    c.run.from_checkpoint = None;

    // More steps on resume: allowed.
    let mut longer = c.clone();
    longer.sft.steps = 8;
    let r = train::sft::<B>(&longer, &device, true, &mut Quiet).unwrap();
    assert_eq!((r.resumed_from, r.steps), (Some(6), 8));
    // A changed setting: refused, naming it.
    let mut other = longer.clone();
    other.sft.learning_rate = Some(1e-2);
    let e = train::sft::<B>(&other, &device, true, &mut Quiet).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("sft.learning_rate = 0.003") && msg.contains("sft.learning_rate = 0.01"),
        "{msg}"
    );
    std::fs::remove_dir_all(&root).ok();
}
