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
