//! `apo score` and `apo generate` on the tiny checkpoints of `crates/apo-models/tests/fixtures`.

use std::path::PathBuf;
use std::process::Command;

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../apo-models/tests/fixtures"
    ))
}

/// `expected/<name>.json` of a checkpoint.
fn expected(name: &str) -> serde_json::Value {
    let path = fixtures().join("expected").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).expect("expected values");
    serde_json::from_str(&text).expect("json")
}

/// Every row of `score.jsonl` answered with transformers' log-prob (1e-4 relative); a bad row
/// answered with its line number and exit status 1, the others still answered.
#[test]
fn apo_score_answers_rows_and_reports_bad_lines() {
    let f = fixtures();
    for name in ["qwen2-vl-nested-bf16", "qwen2.5-vl-flat-f16-sharded"] {
        let out = Command::new(env!("CARGO_BIN_EXE_apo"))
            .args(["score", "--model"])
            .arg(f.join(name))
            .arg("--input")
            .arg(f.join("score.jsonl"))
            .output()
            .expect("run apo");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let expected = expected(name);
        let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
            .expect("utf8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("line"))
            .collect();
        let want = expected["score"].as_array().expect("score");
        assert_eq!(lines.len(), want.len());
        for (got, want) in lines.iter().zip(want) {
            let (g, w) = (
                got["logprob"].as_f64().expect("lp"),
                want["logprob"].as_f64().expect("lp"),
            );
            assert!(((g - w) / w).abs() < 1e-4, "{name}: {g} vs {w}");
            assert_eq!(got["tokens"], want["tokens"]);
        }
    }

    let dir = std::env::temp_dir().join(format!("apo-score-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("images")).expect("dir");
    std::fs::copy(f.join("images/square.png"), dir.join("images/square.png")).expect("copy");
    let rows = dir.join("rows.jsonl");
    std::fs::write(
        &rows,
        "{\"images\": [\"images/square.png\"], \"prompt\": \"Effusion?\", \"completion\": \"No.\"}\n{\"prompt\": \"no completion\"}\n{\"images\": [], \"prompt\": \"a\", \"completion\": \"b\"}\n",
    )
    .expect("rows");
    let out = Command::new(env!("CARGO_BIN_EXE_apo"))
        .args(["score", "--model"])
        .arg(f.join("qwen2-vl-flat-f32"))
        .arg("--input")
        .arg(&rows)
        .output()
        .expect("run apo");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("line"))
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0]["logprob"].as_f64().expect("lp") < 0.0);
    assert_eq!(lines[1]["line"], 2);
    assert!(
        lines[1]["error"]
            .as_str()
            .expect("e")
            .contains("completion"),
        "{stdout}"
    );
    assert!(lines[2]["tokens"].as_u64().expect("t") > 0);
    // In batches (a bad row, an undecodable image): the same answers, the same order.
    std::fs::write(
        &rows,
        "{\"images\": [\"images/square.png\"], \"prompt\": \"Effusion?\", \"completion\": \"No.\"}\n{\"prompt\": \"no completion\"}\n{\"images\": [], \"prompt\": \"a\", \"completion\": \"b\"}\n{\"images\": [\"images/missing.png\"], \"prompt\": \"a\", \"completion\": \"b\"}\n{\"images\": [], \"prompt\": \"c\", \"completion\": \"d\"}\n",
    )
    .expect("rows");
    let run = |batch: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_apo"))
            .args(["score", "--batch-size", batch, "--model"])
            .arg(f.join("qwen2-vl-flat-f32"))
            .arg("--input")
            .arg(&rows)
            .output()
            .expect("run apo");
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8(out.stdout)
            .expect("utf8")
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("line"))
            .collect::<Vec<_>>()
    };
    let one = run("1");
    let three = run("3");
    assert_eq!(one.len(), 5);
    assert_eq!(three.len(), 5);
    for (i, (a, b)) in one.iter().zip(&three).enumerate() {
        match (a["logprob"].as_f64(), b["logprob"].as_f64()) {
            (Some(x), Some(y)) => assert!(((x - y) / x).abs() < 1e-5, "row {i}: {x} vs {y}"),
            _ => assert_eq!(a, b, "row {i}"),
        }
    }
    assert_eq!(three[3]["line"], 4);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `apo generate` gives transformers' 16 greedy tokens.
#[test]
fn apo_generate_gives_the_greedy_tokens() {
    let f = fixtures();
    let name = "qwen2.5-vl-nested-f32";
    let expected = expected(name);
    let g = &expected["generate"];
    let dir = std::env::temp_dir().join(format!("apo-generate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let images: Vec<String> = g["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|p| f.join(p.as_str().expect("p")).display().to_string())
        .collect();
    let row = serde_json::json!({"images": images, "prompt": g["prompt"]});
    std::fs::write(dir.join("rows.jsonl"), format!("{row}\n")).expect("rows");
    let out = Command::new(env!("CARGO_BIN_EXE_apo"))
        .args(["generate", "--max-new-tokens", "16", "--model"])
        .arg(f.join(name))
        .arg("--input")
        .arg(dir.join("rows.jsonl"))
        .output()
        .expect("run apo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let want = &g["new_ids"];
    // transformers was told to produce exactly 16 tokens; ours stops early only at an
    // end-of-turn token, which must then be transformers' token at that step.
    let got_ids = got["ids"].as_array().expect("ids");
    assert_eq!(
        &want.as_array().expect("ids")[..got_ids.len()],
        &got_ids[..]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn apo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_apo"))
        .args(args)
        .output()
        .expect("run apo")
}

fn scores(out: &std::process::Output) -> Vec<f64> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("line");
            v["logprob"].as_f64().expect("logprob")
        })
        .collect()
}

/// `[student] hf = DIR` through `apo train sft` and `apo train apo`, then the stage-2 adapter
/// applied by `apo score --adapter` and folded in by `apo export merged`: the merged checkpoint
/// scores as the adapter does, and a second export into the same folder is refused.
#[test]
fn apo_train_a_hugging_face_student_then_score_and_export() {
    let root = std::env::temp_dir().join(format!("apo-cli-hf-train-{}", std::process::id()));
    std::fs::remove_dir_all(&root).ok();
    let data = root.join("data");
    cxr_max::sim::synthesize(
        &data,
        &cxr_max::sim::SynthConfig {
            studies: 4,
            image_size: 32,
            seed: 2,
            ..Default::default()
        },
    )
    .expect("simulate");
    let ckpt = fixtures().join("qwen2.5-vl-nested-f32");
    let prefs = root.join("prefs.jsonl");
    let (items, _) =
        cxr_max::dataset::Dataset::open(&data, &Default::default()).expect("open data");
    let mut rows = String::new();
    for item in &items.items {
        let t = &item.sample.trajectories;
        let row = serde_json::json!({
            "id": item.sample.dicom_id, "prompt": "Describe the image.",
            "images": [item.image.display().to_string()], "chosen": t[0].text,
            "rejected": t[1..4].iter().map(|r| serde_json::json!({"teacher": r.teacher,
                "text": r.text, "contradictions": 0, "hedges": 0, "omissions": 0,
                "drift": 0.0})).collect::<Vec<_>>(),
            "consensus": {}, "agreement": 1.0});
        rows.push_str(&format!("{row}\n"));
    }
    std::fs::write(&prefs, rows).expect("prefs");
    let out = root.join("run");
    let cfg = root.join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[data]
dir = "{data}"
preferences = "{prefs}"
truncate = true
[student]
hf = "{ckpt}"
max_length = 120
[student.lora]
r = 2
alpha = 4
dropout = 0.0
target_modules = ["q_proj", "v_proj"]
[sft]
steps = 2
batch_size = 2
[apo.optim]
steps = 1
batch_size = 1
learning_rate = 0.001
[run]
out = "{out}"
max_new_tokens = 6
"#,
            data = data.display(),
            prefs = prefs.display(),
            ckpt = ckpt.display(),
            out = out.display()
        ),
    )
    .expect("config");
    let cfg = cfg.to_str().expect("utf8");
    for stage in ["sft", "apo"] {
        let o = apo(&["train", stage, "--json", "--config", cfg]);
        assert!(
            o.status.success(),
            "{stage}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("report");
        assert_eq!(report["steps"], if stage == "sft" { 2 } else { 1 });
    }
    // A trained stage is kept: training it again needs --force (or --resume to continue).
    let again = apo(&["train", "sft", "--config", cfg]);
    assert!(!again.status.success());
    let msg = String::from_utf8_lossy(&again.stderr);
    assert!(
        msg.contains("already trained") && msg.contains("--force"),
        "{msg}"
    );
    let before = std::fs::read(out.join("sft/adapter/adapter_model.safetensors")).expect("adapter");
    let forced = apo(&["train", "sft", "--force", "--json", "--config", cfg]);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    // The same seed and data: the same adapter again.
    assert_eq!(
        std::fs::read(out.join("sft/adapter/adapter_model.safetensors")).expect("adapter"),
        before
    );
    let o = apo(&[
        "eval", "--config", cfg, "--stage", "apo", "--split", "all", "--json",
    ]);
    assert!(
        o.status.success(),
        "eval: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("eval report");
    assert_eq!(report["images"], 4);
    let adapter = out.join("apo/adapter");
    let a = apo_models::Adapter::read(&adapter).expect("adapter");
    assert_eq!(a.modules.len(), 4, "q_proj and v_proj of 2 layers");

    let input = fixtures().join("score.jsonl");
    let input = input.to_str().expect("utf8");
    let ckpt_s = ckpt.to_str().expect("utf8");
    let adapted = scores(&apo(&[
        "score",
        "--model",
        ckpt_s,
        "--adapter",
        adapter.to_str().expect("utf8"),
        "--input",
        input,
    ]));
    let base = scores(&apo(&["score", "--model", ckpt_s, "--input", input]));
    assert!(
        adapted.iter().zip(&base).any(|(a, b)| (a - b).abs() > 1e-4),
        "the adapter acts"
    );
    let merged = root.join("merged");
    let export = |_: ()| {
        apo(&[
            "export",
            "merged",
            "--model",
            ckpt_s,
            "--adapter",
            adapter.to_str().expect("utf8"),
            "--out",
            merged.to_str().expect("utf8"),
        ])
    };
    let o = export(());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let folded = scores(&apo(&[
        "score",
        "--model",
        merged.to_str().expect("utf8"),
        "--input",
        input,
    ]));
    for (a, b) in adapted.iter().zip(&folded) {
        assert!(((a - b) / a).abs() < 1e-5, "merged {b} vs adapter {a}");
    }
    let again = export(());
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    std::fs::remove_dir_all(&root).ok();
}

/// `apo run` with `[train.student] hf`: the whole pipeline (validate, drift, consensus, both
/// stages with LoRA, Plackett-Luce and pairwise stage 2, generation and evaluation of the
/// students) on a tiny simulated set and the tiny checkpoint, adapters per stage.
#[test]
fn apo_run_trains_and_evaluates_a_hugging_face_student() {
    let root = std::env::temp_dir().join(format!("apo-cli-hf-run-{}", std::process::id()));
    std::fs::remove_dir_all(&root).ok();
    let data = root.join("data");
    cxr_max::sim::synthesize(
        &data,
        &cxr_max::sim::SynthConfig {
            studies: 24,
            image_size: 32,
            seed: 4,
            ..Default::default()
        },
    )
    .expect("simulate");
    let out = root.join("run");
    let cfg = root.join("pipeline.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
data = "{data}"
out = "{out}"
[train.data]
truncate = true
[train.student]
hf = "{ckpt}"
max_length = 520
[train.student.lora]
r = 2
alpha = 4
dropout = 0.0
[train.sft]
steps = 2
batch_size = 2
[train.apo.optim]
steps = 1
batch_size = 1
[train.run]
max_new_tokens = 8
"#,
            data = data.display(),
            out = out.display(),
            ckpt = fixtures().join("qwen2.5-vl-nested-f32").display()
        ),
    )
    .expect("config");
    let o = apo(&["run", "--config", cfg.to_str().expect("utf8")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for stage in ["sft", "apo"] {
        let a = out.join("train").join(stage).join("adapter");
        assert!(
            a.join("adapter_model.safetensors").is_file(),
            "{}",
            a.display()
        );
    }
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("results.json")).expect("results.json"),
    )
    .expect("json");
    let students: Vec<&str> = results["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["kind"] == "student")
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert!(students.len() >= 3, "{students:?}");
    std::fs::remove_dir_all(&root).ok();
}
