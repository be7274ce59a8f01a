//! `apo train sft` killed with SIGKILL mid-run and resumed ends with bitwise the same weights
//! as an uninterrupted run (CPU backend), and bad configurations are clear errors.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn config(root: &Path, data: &Path, name: &str, steps: usize) -> std::path::PathBuf {
    let text = format!(
        r#"
[data]
dir = "{data}"
split = "train"
truncate = true
[tokenizer]
vocab_size = 400
[model]
image_size = 32
patch_size = 8
d_model = 32
n_heads = 2
encoder_layers = 1
decoder_layers = 1
mlp_ratio = 2
max_text_len = 160
[sft]
steps = {steps}
batch_size = 2
[run]
out = "{out}"
checkpoint_every = 2
"#,
        data = data.display(),
        out = root.join(name).display()
    );
    let path = root.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A fresh `ROOT/data`: 20 simulated studies, 32-pixel images, seed 9.
fn simulated(root: &Path) -> std::path::PathBuf {
    std::fs::remove_dir_all(root).ok();
    let data = root.join("data");
    cxr_max::sim::synthesize(
        &data,
        &cxr_max::sim::SynthConfig {
            studies: 20,
            image_size: 32,
            seed: 9,
            ..Default::default()
        },
    )
    .unwrap();
    data
}

fn train(config: &Path, resume: bool) -> serde_json::Value {
    let mut args = vec![
        "train",
        "sft",
        "--json",
        "--config",
        config.to_str().unwrap(),
    ];
    if resume {
        args.push("--resume");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_apo"))
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn sigkill_then_resume_is_bitwise_identical() {
    let root = std::env::temp_dir().join(format!("apo-cli-kill-{}", std::process::id()));
    let data = simulated(&root);
    let steps = 16;
    let straight = train(&config(&root, &data, "straight", steps), false);

    let killed = config(&root, &data, "killed", steps);
    let mut child = Command::new(env!("CARGO_BIN_EXE_apo"))
        .args(["train", "sft", "--config", killed.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let checkpoints = root.join("killed/sft/checkpoints");
    let start = Instant::now();
    loop {
        let done = std::fs::read_dir(&checkpoints)
            .map(|d| {
                d.filter_map(Result::ok)
                    .any(|e| e.file_name().to_string_lossy() == "step-000004")
            })
            .unwrap_or(false);
        if done {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !root.join("killed/sft/model.bin").exists(),
        "killed before the end"
    );
    let resumed = train(&killed, true);
    let from = resumed["resumed_from"].as_u64().unwrap();
    assert!((4..steps as u64).contains(&from), "resumed from {from}");
    assert_eq!(resumed["weights_digest"], straight["weights_digest"]);
    assert_eq!(
        std::fs::read_to_string(root.join("killed/sft/metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        steps
    );
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn bad_configs_and_missing_backends_are_clear_errors() {
    let root = std::env::temp_dir().join(format!("apo-cli-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let cases = [
        ("[sft]\nlearning_rate = -1.0\n", "sft.learning_rate"),
        ("[model]\nd_model = 30\nn_heads = 4\n", "model.n_heads"),
        ("[sft]\nstepz = 3\n", "unknown field"),
        ("[apo.loss]\nbeta = 0.0\n", "apo.loss"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = root.join(format!("c{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_apo"))
            .args(["train", "sft", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(want), "{want}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    #[cfg(not(feature = "cuda"))]
    {
        let out = Command::new(env!("CARGO_BIN_EXE_apo"))
            .args(["train", "sft", "--device", "cuda"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            err.contains("--features cuda") && err.contains("--device cpu"),
            "{err}"
        );
    }
    std::fs::remove_dir_all(&root).ok();
}

/// SIGINT (Ctrl-C) during `apo train sft`: the step finishes, a checkpoint is written, the
/// command exits 130 saying how to continue, and `--resume` ends bitwise where an
/// uninterrupted run ends.
#[test]
fn sigint_writes_a_checkpoint_and_resume_is_bitwise_identical() {
    let root = std::env::temp_dir().join(format!("apo-cli-sigint-{}", std::process::id()));
    let data = simulated(&root);
    let steps = 40;
    let straight = train(&config(&root, &data, "straight", steps), false);
    let stopped = config(&root, &data, "stopped", steps);
    let child = Command::new(env!("CARGO_BIN_EXE_apo"))
        .args(["train", "sft", "--config", stopped.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = root.join("stopped/sft/metrics.jsonl");
    let start = Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |t| t.lines().count()) < 3 {
        assert!(start.elapsed() < Duration::from_secs(300), "no step");
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted") && stderr.contains("--resume"),
        "{stderr}"
    );
    assert!(!root.join("stopped/sft/model.bin").exists());
    let resumed = train(&stopped, true);
    let from = resumed["resumed_from"].as_u64().unwrap();
    assert!((3..steps as u64).contains(&from), "resumed from {from}");
    assert_eq!(resumed["weights_digest"], straight["weights_digest"]);
    std::fs::remove_dir_all(&root).ok();
}
