//! `apo consensus votes`: aggregate `task,worker,label` votes (crowd-kit's CSV layout, read by
//! [`apo_consensus::csv`]).

use std::io::{BufRead, Write};

use apo_consensus::{Consensus, DawidSkeneConfig, Method, dawid_skene, majority_vote};

/// Reads a `worker,weight` CSV.
///
/// # Errors
/// Malformed rows and weights that are not numbers, naming the line.
pub fn read_weights(input: impl BufRead) -> Result<Vec<(String, f64)>, String> {
    apo_consensus::csv::read_weights(input).map_err(|e| e.to_string())
}

/// Reads votes, aggregates them and writes `task,label,confidence` CSV.
///
/// # Errors
/// Malformed CSV (naming the line), typed consensus errors (naming the row: row N is CSV
/// line N + 1), bad weights.
pub fn votes(
    method: Method,
    input: impl BufRead,
    weights: Option<impl BufRead>,
    mut out: impl Write,
) -> Result<Vec<Consensus>, String> {
    let votes = apo_consensus::csv::read_votes(input).map_err(|e| e.to_string())?;
    let result = match method {
        Method::Majority => majority_vote(&votes),
        Method::DawidSkene => {
            dawid_skene(&votes, &DawidSkeneConfig::default())
                .map_err(|e| e.to_string())?
                .consensus
        }
        Method::Weighted => {
            let parsed = match weights {
                Some(r) => read_weights(r)?,
                None => apo_consensus::reliability_weights(&votes),
            };
            let pairs: Vec<(&str, f64)> = parsed.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            apo_consensus::weighted_vote(&votes, &pairs).map_err(|e| e.to_string())?
        }
    };
    let io = |e: std::io::Error| e.to_string();
    writeln!(out, "task,label,confidence").map_err(io)?;
    for c in &result {
        let (task, label) = (&votes.tasks()[c.task], votes.label_name(c.label));
        writeln!(out, "{task},{label},{}", c.confidence).map_err(io)?;
    }
    Ok(result)
}
