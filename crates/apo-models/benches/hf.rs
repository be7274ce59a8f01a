//! `cargo xtask bench hf`: forward + `score` throughput of a tiny Qwen2.5-VL checkpoint on the
//! CPU backend (the fixtures' `qwen2.5-vl-nested-f32`, the four rows of `score.jsonl` in one
//! batch), and peak resident memory. Prints one JSON line; `benches/hf_transformers.py` runs
//! the same workload in transformers for the ratio.

use std::path::PathBuf;
use std::time::Instant;

use apo_models::hf::{HfModel, ScoreRow};
use burn::backend::NdArray;

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() {
    let fixtures = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"));
    let name = std::env::args()
        .nth(1)
        .filter(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "qwen2.5-vl-nested-f32".into());
    let hf = HfModel::<NdArray<f32>>::open(&fixtures.join(&name), Default::default())
        .expect("checkpoint");
    let text = std::fs::read_to_string(fixtures.join("score.jsonl")).expect("score.jsonl");
    let rows: Vec<ScoreRow> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("row"))
        .collect();
    let tokens: usize = rows
        .iter()
        .map(|r| hf.score_inputs(r, &fixtures).expect("inputs").0.len())
        .sum();
    // Warm up, then time whole `score` calls (preprocessing, vision, decoder, head).
    let _ = hf.score(&rows, &fixtures).expect("score");
    let reps = 20;
    let start = Instant::now();
    for _ in 0..reps {
        let s = hf.score(&rows, &fixtures).expect("score");
        std::hint::black_box(s);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "bench": "hf_score",
            "implementation": "apo-models (burn ndarray, f32)",
            "checkpoint": name,
            "rows": rows.len(),
            "tokens_per_call": tokens,
            "calls": reps,
            "seconds_per_call": secs / reps as f64,
            "tokens_per_second": (tokens * reps) as f64 / secs,
            "peak_rss_mib": peak_rss_mib(),
        })
    );
}
