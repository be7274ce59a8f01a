//! Monitor several teacher streams for drift.
//!
//! Input (a file argument or standard input): CSV lines `teacher,value`, in stream order, where
//! `value` is a per-answer score in [0, 1] (e.g. 1 when the teacher agrees with the consensus).
//! Output: the change points of each teacher (ADWIN, river's defaults), and the Jensen-Shannon
//! divergence between the first and second half of each teacher's score histogram.
//!
//! ```sh
//! cargo run -p drift-monitor -- scores.csv
//! cargo run -p drift-monitor -- --demo     # a generated stream where teacher B drifts halfway
//! ```

use std::collections::BTreeMap;
use std::io::BufRead;

use apo_drift::{DetectorConfig, MultiStreamMonitor, js_divergence, smoothed};

fn demo_stream() -> Vec<(String, f64)> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut out = Vec::new();
    for i in 0..4000 {
        let b_accuracy = if i < 2000 { 0.9 } else { 0.55 };
        out.push(("A".to_owned(), f64::from(uniform() < 0.85)));
        out.push(("B".to_owned(), f64::from(uniform() < b_accuracy)));
    }
    out
}

fn read(input: Box<dyn BufRead>) -> Result<Vec<(String, f64)>, String> {
    let mut out = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line.map_err(|e| e.to_string())?;
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (teacher, value) = line
            .split_once(',')
            .ok_or_else(|| format!("line {}: expected `teacher,value`", n + 1))?;
        let value: f64 = value
            .trim()
            .parse()
            .map_err(|_| format!("line {}: `{}` is not a number", n + 1, value.trim()))?;
        out.push((teacher.trim().to_owned(), value));
    }
    Ok(out)
}

fn histogram(values: &[f64]) -> Vec<f64> {
    let mut h = vec![0.0; 10];
    for &v in values {
        h[((v.clamp(0.0, 1.0) * 10.0) as usize).min(9)] += 1.0;
    }
    h
}

fn main() -> Result<(), String> {
    let arg = std::env::args().nth(1);
    let stream = match arg.as_deref() {
        Some("--demo") => demo_stream(),
        Some(path) => read(Box::new(std::io::BufReader::new(
            std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?,
        )))?,
        None => read(Box::new(std::io::stdin().lock()))?,
    };
    let mut teachers: Vec<String> = Vec::new();
    for (t, _) in &stream {
        if !teachers.contains(t) {
            teachers.push(t.clone());
        }
    }
    let config = DetectorConfig::default_for("adwin").map_err(|e| e.to_string())?;
    let mut monitor =
        MultiStreamMonitor::new(&config, teachers.len()).map_err(|e| e.to_string())?;
    let mut per: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (t, v) in &stream {
        let u = teachers.iter().position(|x| x == t).expect("listed");
        monitor.update(u, *v).map_err(|e| e.to_string())?;
        per.entry(t.as_str()).or_default().push(*v);
    }
    for (u, t) in teachers.iter().enumerate() {
        let values = &per[t.as_str()];
        let half = values.len() / 2;
        let (a, b) = (
            smoothed(&histogram(&values[..half]), 0.5).map_err(|e| e.to_string())?,
            smoothed(&histogram(&values[half..]), 0.5).map_err(|e| e.to_string())?,
        );
        let js = js_divergence(&a, &b).map_err(|e| e.to_string())?;
        println!(
            "{t}: {} values, change points at {:?}, JS(first half, second half) = {js:.4} nats",
            values.len(),
            monitor.change_points()[u]
        );
    }
    Ok(())
}
