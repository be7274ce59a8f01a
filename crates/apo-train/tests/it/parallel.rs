//! Data-parallel training (`run.devices`) on the CPU backend: 2 and 3 workers (threads with
//! burn's collective all-reduce) train the same weights as one device on the same global
//! batch, within 1e-5 (the gradient sum is reassociated, so not bitwise); a checkpoint of a
//! multi-device run resumes on another number of devices; a failing worker stops the run with
//! its error.

use std::path::Path;

use apo_train::TrainError;
use apo_train::train::{self, Quiet};
use burn::backend::{Autodiff, NdArray};
use burn::module::{Module, ModuleVisitor};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::train::{CrashAt, StopAt, metrics, preferences, serial};

type B = Autodiff<NdArray>;

/// Every float parameter of a saved small student, in visit order, and whether each value is
/// an attention key bias.
fn weights(dir: &Path) -> (Vec<f32>, Vec<bool>) {
    struct All(Vec<f32>, Vec<bool>);
    impl<Bk: Backend> ModuleVisitor<Bk> for All {
        fn visit_float_with_path<const D: usize>(
            &mut self,
            path: &[String],
            _: burn::module::ParamId,
            t: &Tensor<Bk, D>,
        ) {
            let v = t
                .clone()
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .unwrap();
            let qkv_bias = path.ends_with(&["qkv".into(), "linear".into(), "bias".into()]);
            let d = v.len() / 3;
            self.1
                .extend((0..v.len()).map(|i| qkv_bias && (d..2 * d).contains(&i)));
            self.0.extend(v);
        }
    }
    let (m, _) = apo_train::checkpoint::load_model::<NdArray>(dir, &Default::default()).unwrap();
    let mut all = All(Vec::new(), Vec::new());
    m.visit(&mut all);
    (all.0, all.1)
}

/// The largest difference between two runs' weights, leaving out the attention key biases,
/// and the largest difference of those. A key bias adds the same `q · b` to every logit of an
/// attention row, which the softmax cancels: its gradient is 0 in exact arithmetic and
/// rounding noise (~1e-9) in floats, which Adam divides by its own square root, so any
/// reassociation of the gradient sum (other devices, other thread counts) moves it by up to
/// `lr` per step. The same holds for PyTorch's DDP.
fn max_diff(a: &(Vec<f32>, Vec<bool>), b: &(Vec<f32>, Vec<bool>)) -> (f32, f32) {
    assert_eq!(a.0.len(), b.0.len());
    let mut out = (0f32, 0f32);
    for ((x, y), &key) in a.0.iter().zip(&b.0).zip(&a.1) {
        let d = (x - y).abs();
        if key {
            out.1 = out.1.max(d);
        } else {
            out.0 = out.0.max(d);
        }
    }
    out
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Stage 1 and stage 2 of the small student on 1, 2 and 3 devices: the same weights within
/// 1e-5 (batch 5: shards of 3 + 2 and 2 + 2 + 1; 2 micro-batches per step; key biases aside,
/// [`max_diff`]), the same losses and gradient norms; stage 2's reference log-probs computed by
/// the workers equal one device's; a 2-device run that crashed after its step-2 checkpoint
/// resumes on 3 devices, and one stopped at step 2 resumes on 1, both ending at the same
/// weights.
#[test]
fn small_student_on_two_and_three_devices_matches_one() {
    let _serial = serial();
    let root = crate::train::temp("parallel");
    let mut config = crate::train::tiny(&root);
    config.sft.steps = 3;
    config.sft.batch_size = 5;
    config.sft.grad_accum = 2;
    let lr = 3e-3;
    config.sft.learning_rate = Some(lr as f64);
    let device = Default::default();
    let sft = |devices: usize, out: &str| {
        let mut c = config.clone();
        c.run.devices = devices;
        c.run.out = root.join(out);
        let r = train::sft::<B>(&c, &device, false, &mut Quiet).unwrap();
        (weights(&c.run.out.join("sft")), metrics(&r.metrics))
    };
    let (one, one_m) = sft(1, "one");
    for devices in [2, 3] {
        let (w, m) = sft(devices, &format!("d{devices}"));
        let (d, key) = max_diff(&one, &w);
        assert!(d < 1e-5, "{devices} devices: largest weight difference {d}");
        assert!(
            key <= 2.0 * lr * 3.0,
            "{devices} devices: key biases moved {key}"
        );
        assert_eq!(m.len(), one_m.len());
        for (a, b) in one_m.iter().zip(&m) {
            assert!((a.loss - b.loss).abs() < 1e-5, "{} vs {}", a.loss, b.loss);
            assert!((a.grad_norm - b.grad_norm).abs() < 1e-4 * a.grad_norm.max(1.0));
        }
    }

    // A checkpoint of a 2-device run, resumed on 3 devices.
    let mut c = config.clone();
    c.run.devices = 2;
    c.run.out = root.join("resumed");
    let crashed = std::panic::catch_unwind(|| {
        train::sft::<B>(&c, &Default::default(), false, &mut CrashAt(3)).ok()
    });
    assert!(crashed.is_err(), "the observer's panic reaches the caller");
    assert!(c.run.out.join("sft/checkpoints/step-000002").is_dir());
    assert!(!c.run.out.join("sft/model.bin").exists());
    c.run.devices = 3;
    let r = train::sft::<B>(&c, &device, true, &mut Quiet).unwrap();
    assert_eq!(r.resumed_from, Some(2));
    let (d, _) = max_diff(&one, &weights(&c.run.out.join("sft")));
    assert!(
        d < 1e-5,
        "resumed on 3 devices: largest weight difference {d}"
    );

    // A stop (Ctrl-C) on 2 devices: both workers stop after the same step, one checkpoint
    // there; it resumes on 1 device.
    let mut c = config.clone();
    c.run.devices = 2;
    c.run.out = root.join("stopped");
    let e = train::sft::<B>(&c, &device, false, &mut StopAt(2)).unwrap_err();
    apo_train::train::stop_flag().store(false, std::sync::atomic::Ordering::SeqCst);
    match &e {
        TrainError::Interrupted {
            step, checkpoint, ..
        } => {
            assert_eq!(*step, 2);
            assert!(
                checkpoint.ends_with("step-000002"),
                "{}",
                checkpoint.display()
            );
        }
        other => panic!("{other}"),
    }
    c.run.devices = 1;
    let r = train::sft::<B>(&c, &device, true, &mut Quiet).unwrap();
    assert_eq!(r.resumed_from, Some(2));
    let (d, _) = max_diff(&one, &weights(&c.run.out.join("sft")));
    assert!(
        d < 1e-5,
        "stopped on 2, resumed on 1: largest weight difference {d}"
    );

    // Stage 2 from the one-device stage 1, on 1 and 2 devices.
    let prefs = root.join("prefs.jsonl");
    preferences(&config, &prefs);
    config.data.preferences = Some(prefs);
    config.apo.init = Some(root.join("one/sft"));
    config.apo.optim.steps = 2;
    config.apo.optim.batch_size = 3;
    let apo = |devices: usize, out: &str| {
        let mut c = config.clone();
        c.run.devices = devices;
        c.run.out = root.join(out);
        let r = train::apo::<B>(&c, "apo", &device, false, &mut Quiet).unwrap();
        let cache = std::fs::read_dir(c.run.out.join("reference"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let cache: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(cache).unwrap()).unwrap();
        let lps: Vec<f32> = cache["logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g.as_array().cloned().unwrap_or_default())
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        (weights(&c.run.out.join("apo")), metrics(&r.metrics), lps)
    };
    let (one, one_m, one_ref) = apo(1, "apo1");
    let (two, two_m, two_ref) = apo(2, "apo2");
    assert!(
        (one_m[0].loss - 7f64.ln()).abs() < 1e-4,
        "{}",
        one_m[0].loss
    );
    assert!((one_m[0].loss - two_m[0].loss).abs() < 1e-5);
    assert!(!one_ref.is_empty());
    let d = max_abs(&one_ref, &two_ref);
    assert!(d < 1e-4, "reference log-probs differ by {d}");
    let (d, _) = max_diff(&one, &two);
    assert!(
        d < 1e-5,
        "stage 2 on 2 devices: largest weight difference {d}"
    );
    std::fs::remove_dir_all(&root).ok();
}

/// Stage 1 of the tiny Qwen2.5-VL student with LoRA on 1, 2 and 3 devices and stage 2 on 1
/// and 2: the same adapters within 1e-5 (batch 3: shards of 2 + 1 and 1 + 1 + 1 rows; the
/// token mean is over the whole micro-batch) and the same losses (stage 2's reference
/// log-probs gathered from the workers start it at ln 7).
#[test]
fn hf_student_on_two_devices_matches_one() {
    let _serial = serial();
    let root = crate::hf::temp("parallel");
    let mut config = crate::hf::tiny(&root);
    config.sft.steps = 2;
    config.sft.batch_size = 3;
    let device = Default::default();
    let sft = |devices: usize, out: &str| {
        let mut c = config.clone();
        c.run.devices = devices;
        c.run.out = root.join(out);
        let r = apo_train::hf::sft::<B>(&c, &device, false, &mut Quiet).unwrap();
        (
            crate::hf::adapter_values(&c.run.out.join("sft/adapter")),
            metrics(&r.metrics),
        )
    };
    let (one, one_m) = sft(1, "one");
    for devices in [2, 3] {
        let (w, m) = sft(devices, &format!("d{devices}"));
        let d = max_abs(&one, &w);
        assert!(
            d < 1e-5,
            "{devices} devices: stage 1 adapters differ by {d}"
        );
        for (a, b) in one_m.iter().zip(&m) {
            assert!((a.loss - b.loss).abs() < 1e-5, "{} vs {}", a.loss, b.loss);
        }
    }
    let prefs = root.join("prefs.jsonl");
    preferences(&config, &prefs);
    config.data.preferences = Some(prefs);
    config.apo.init = Some(root.join("one/sft"));
    config.apo.optim.batch_size = 2;
    let apo = |devices: usize, out: &str| {
        let mut c = config.clone();
        c.run.devices = devices;
        c.run.out = root.join(out);
        let r = apo_train::hf::apo::<B>(&c, "apo", &device, false, &mut Quiet).unwrap();
        (
            crate::hf::adapter_values(&c.run.out.join("apo/adapter")),
            metrics(&r.metrics),
        )
    };
    let (one, one_m) = apo(1, "apo1");
    let (two, two_m) = apo(2, "apo2");
    assert!(
        (one_m[0].loss - 7f64.ln()).abs() < 1e-5,
        "{}",
        one_m[0].loss
    );
    assert!((one_m[0].loss - two_m[0].loss).abs() < 1e-5);
    let d = max_abs(&one, &two);
    assert!(d < 1e-5, "stage 2 adapters differ by {d}");
    std::fs::remove_dir_all(&root).ok();
}

/// A row whose image is missing fails on the worker whose shard holds it: the run stops on
/// both workers with [`TrainError::Worker`] naming that worker and the record, after the
/// checkpoints of the steps before it, with no partial checkpoint and no adapter written.
#[test]
fn a_failing_worker_stops_the_run_and_is_named() {
    let _serial = serial();
    let root = crate::hf::temp("parallel-fail");
    let mut config = crate::hf::tiny(&root);
    config.run.devices = 2;
    config.sft.batch_size = 2;
    config.sft.steps = 6;
    config.run.checkpoint_every = 1;
    let mut items = apo_train::data::open_items(&config.data.dir, None).unwrap();
    // The rows are the items' trajectories in order; find the first micro-batch with a row
    // of item `bad`, and the worker that gets it.
    let per_item = items[0].sample.trajectories.len();
    let rows: usize = items.iter().map(|i| i.sample.trajectories.len()).sum();
    let bad = 2;
    let (step, rank) = (0..config.sft.steps)
        .find_map(|m| {
            let which = apo_train::data::micro_batch(config.run.seed, rows, 2, m);
            which.iter().position(|&u| u / per_item == bad).map(|pos| {
                (
                    m,
                    apo_train::parallel::shard(1, 2, 2).contains(&pos) as usize,
                )
            })
        })
        .expect("the bad item is drawn within the run");
    assert!(
        items
            .iter()
            .all(|i| i.sample.trajectories.len() == per_item)
    );
    items[bad].image = root.join("no-such-image.png");
    let id = items[bad].sample.dicom_id.clone();
    let err = apo_train::hf::sft_on::<B>(&config, &items, &Default::default(), false, &mut Quiet)
        .unwrap_err();
    match &err {
        TrainError::Worker {
            rank: r,
            world,
            source,
            ..
        } => {
            assert_eq!((*r, *world), (rank, 2), "{err}");
            let text = source.to_string();
            assert!(text.contains(&id), "{text}");
        }
        other => panic!("expected a worker error, got {other}"),
    }
    let ckpts: Vec<String> = std::fs::read_dir(config.run.out.join("sft/checkpoints"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(ckpts.iter().all(|n| !n.ends_with(".partial")), "{ckpts:?}");
    let want: Vec<String> = (1..=step).map(|s| format!("step-{s:06}")).collect();
    let mut got = ckpts.clone();
    got.sort();
    let kept = config.run.keep_checkpoints.min(want.len());
    assert_eq!(
        got,
        want[want.len() - kept..].to_vec(),
        "checkpoints before step {}",
        step + 1
    );
    assert!(!config.run.out.join("sft/adapter").exists());
    std::fs::remove_dir_all(&root).ok();
}
