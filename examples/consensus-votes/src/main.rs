//! Consensus from a votes CSV with columns `task,worker,label` (crowd-kit's layout).
//!
//! Prints, per task, the majority, reliability-weighted and Dawid-Skene labels with their
//! support, the workers' reliability weights, and Dawid-Skene's estimated accuracy of each
//! worker (the diagonal of its confusion matrix, weighted by the class priors).
//!
//! ```sh
//! cargo run -p consensus-votes -- crates/apo-consensus/tests/fixtures/votes_adversarial.csv
//! ```

use apo_consensus::{
    DawidSkeneConfig, Votes, dawid_skene, majority_vote, reliability_weights, weighted_vote,
};

fn main() -> Result<(), String> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: consensus-votes VOTES.csv (columns task,worker,label)")?;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or("empty file")?
        .split(',')
        .map(str::trim)
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or(format!("{path}: no `{name}` column"))
    };
    let (ti, wi, li) = (col("task")?, col("worker")?, col("label")?);
    let mut rows = Vec::new();
    for (n, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() != header.len() {
            return Err(format!("{path} line {}: {} fields", n + 2, f.len()));
        }
        rows.push((f[ti].to_owned(), f[wi].to_owned(), f[li].to_owned()));
    }
    let votes =
        Votes::from_triples(rows).map_err(|e| format!("{path}: {e} (row N is line N + 1)"))?;
    let majority = majority_vote(&votes);
    let weights = reliability_weights(&votes);
    let pairs: Vec<(&str, f64)> = weights.iter().map(|(w, x)| (w.as_str(), *x)).collect();
    let weighted = weighted_vote(&votes, &pairs).map_err(|e| e.to_string())?;
    let ds = dawid_skene(&votes, &DawidSkeneConfig::default()).map_err(|e| e.to_string())?;
    println!("worker reliability weights (leave-one-out agreement log-odds):");
    for (w, x) in &weights {
        println!("  {w:<12} {x:.3}");
    }
    println!("Dawid-Skene: estimated accuracy per worker");
    for (w, name) in votes.workers().iter().enumerate() {
        let acc: f64 = (0..votes.labels().len())
            .map(|c| ds.priors[c] * ds.errors[w][c][c])
            .sum();
        println!("  {name:<12} {acc:.3}");
    }
    println!("task,majority,support,weighted,support,dawid_skene,posterior");
    for t in 0..votes.tasks().len() {
        println!(
            "{},{},{:.3},{},{:.3},{},{:.3}",
            votes.tasks()[t],
            votes.label_name(majority[t].label),
            majority[t].confidence,
            votes.label_name(weighted[t].label),
            weighted[t].confidence,
            votes.label_name(ds.consensus[t].label),
            ds.consensus[t].confidence
        );
    }
    Ok(())
}
