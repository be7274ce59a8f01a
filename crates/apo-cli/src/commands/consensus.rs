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

/// What is wrong in [`votes`]: the votes (or the output), or the weights file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VotesError {
    /// The votes file, or writing the result.
    #[error("{0}")]
    Votes(String),
    /// The weights file: malformed, a worker without votes, a bad or all-zero weight.
    #[error("{0}")]
    Weights(String),
}

/// Reads votes, aggregates them and writes `task,label,confidence` CSV.
///
/// # Errors
/// [`VotesError::Votes`]: malformed CSV (naming the line), typed consensus errors (naming
/// the row: row N is CSV line N + 1); [`VotesError::Weights`]: bad weights (a weight that is
/// not a number, negative, for a worker without votes, or every weight 0).
pub fn votes(
    method: Method,
    input: impl BufRead,
    weights: Option<impl BufRead>,
    mut out: impl Write,
) -> Result<Vec<Consensus>, VotesError> {
    let votes =
        apo_consensus::csv::read_votes(input).map_err(|e| VotesError::Votes(e.to_string()))?;
    let result = match method {
        Method::Majority => majority_vote(&votes),
        Method::DawidSkene => {
            dawid_skene(&votes, &DawidSkeneConfig::default())
                .map_err(|e| VotesError::Votes(e.to_string()))?
                .consensus
        }
        Method::OneCoinDawidSkene => {
            apo_consensus::one_coin_dawid_skene(&votes, &DawidSkeneConfig::default())
                .map_err(|e| VotesError::Votes(e.to_string()))?
                .consensus
        }
        Method::Wawa => apo_consensus::wawa(&votes).0,
        Method::Weighted => {
            let weight_err = |e: apo_consensus::ConsensusError| VotesError::Weights(e.to_string());
            let (parsed, given) = match weights {
                Some(r) => (read_weights(r).map_err(VotesError::Weights)?, true),
                None => (apo_consensus::reliability_weights(&votes), false),
            };
            let pairs: Vec<(&str, f64)> = parsed.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            if given {
                apo_consensus::check_weights(votes.workers(), &pairs).map_err(weight_err)?;
            }
            apo_consensus::weighted_vote(&votes, &pairs).map_err(|e| match e {
                apo_consensus::ConsensusError::UnknownWorker(_)
                | apo_consensus::ConsensusError::InvalidWeight { .. } => weight_err(e),
                other => VotesError::Votes(other.to_string()),
            })?
        }
    };
    let io = |e: std::io::Error| VotesError::Votes(e.to_string());
    writeln!(out, "task,label,confidence").map_err(io)?;
    for c in &result {
        let (task, label) = (&votes.tasks()[c.task], votes.label_name(c.label));
        writeln!(out, "{task},{label},{}", c.confidence).map_err(io)?;
    }
    Ok(result)
}
