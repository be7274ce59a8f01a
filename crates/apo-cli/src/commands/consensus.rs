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

/// What [`votes_with`] writes besides `task,label,confidence`.
#[derive(Default)]
pub struct VotesOutput<'a> {
    /// Add one column per label, `p_LABEL`: the task's full label distribution (the posterior
    /// for the EM methods, the (weighted) vote shares otherwise), as crowd-kit's `probas_`.
    pub posteriors: bool,
    /// Write the workers' parameters here, as crowd-kit's `skills_` / `errors_`: `worker,skill`
    /// (one-coin Dawid-Skene, Wawa), `worker,weight` (majority: 1, weighted), or
    /// `worker,observed,true,probability` (Dawid-Skene's confusion entries).
    pub skills: Option<&'a mut dyn Write>,
}

impl std::fmt::Debug for VotesOutput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VotesOutput")
            .field("posteriors", &self.posteriors)
            .field("skills", &self.skills.is_some())
            .finish()
    }
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
    out: impl Write,
) -> Result<Vec<Consensus>, VotesError> {
    votes_with(method, input, weights, out, VotesOutput::default())
}

/// Each task's vote shares with per-worker weights `w` (uniform over the labels for a task
/// without weighted votes).
fn shares(votes: &apo_consensus::Votes, w: &[f64]) -> Vec<Vec<f64>> {
    let k = votes.labels().len();
    let mut s = vec![vec![0.0; k]; votes.tasks().len()];
    for &(t, worker, l) in votes.entries() {
        s[t][l] += w[worker];
    }
    for row in &mut s {
        let total: f64 = row.iter().sum();
        if total > 0.0 {
            row.iter_mut().for_each(|x| *x /= total);
        } else {
            row.iter_mut().for_each(|x| *x = 1.0 / k as f64);
        }
    }
    s
}

/// [`votes`], with the posteriors and the workers' parameters on request.
///
/// # Errors
/// As [`votes`].
pub fn votes_with(
    method: Method,
    input: impl BufRead,
    weights: Option<impl BufRead>,
    mut out: impl Write,
    output: VotesOutput<'_>,
) -> Result<Vec<Consensus>, VotesError> {
    let votes =
        apo_consensus::csv::read_votes(input).map_err(|e| VotesError::Votes(e.to_string()))?;
    let n_workers = votes.workers().len();
    enum Params {
        Weights(Vec<f64>),
        Skills(Vec<f64>),
        Confusion(Vec<Vec<Vec<f64>>>),
    }
    let (result, posteriors, params) = match method {
        Method::Majority => {
            let w = vec![1.0; n_workers];
            (
                majority_vote(&votes),
                shares(&votes, &w),
                Params::Weights(w),
            )
        }
        Method::DawidSkene => {
            let ds = dawid_skene(&votes, &DawidSkeneConfig::default())
                .map_err(|e| VotesError::Votes(e.to_string()))?;
            (ds.consensus, ds.posteriors, Params::Confusion(ds.errors))
        }
        Method::OneCoinDawidSkene => {
            let ds = apo_consensus::one_coin_dawid_skene(&votes, &DawidSkeneConfig::default())
                .map_err(|e| VotesError::Votes(e.to_string()))?;
            // The skill is the diagonal of any confusion row the worker used.
            let skills = ds
                .errors
                .iter()
                .map(|rows| {
                    rows.iter()
                        .enumerate()
                        .find(|(_, r)| r.iter().any(|&x| x > 0.0))
                        .map_or(0.0, |(l, r)| r[l])
                })
                .collect();
            (ds.consensus, ds.posteriors, Params::Skills(skills))
        }
        Method::Glad => {
            let g = apo_consensus::glad(&votes, &apo_consensus::GladConfig::default())
                .map_err(|e| VotesError::Votes(e.to_string()))?;
            // The skills file holds each worker's ability α (crowd-kit's `alphas_`).
            (g.consensus, g.posteriors, Params::Skills(g.alphas))
        }
        Method::Mace | Method::MacePublished => {
            let config = apo_consensus::MaceConfig {
                crowdkit_indexing: method == Method::Mace,
                ..apo_consensus::MaceConfig::default()
            };
            let m = apo_consensus::mace(&votes, &config)
                .map_err(|e| VotesError::Votes(e.to_string()))?;
            // The skills file holds each worker's competence, P(knowing) (crowd-kit's
            // `spamming_[:, 1]`).
            let skills = m.spamming.iter().map(|s| s[1]).collect();
            (m.consensus, m.posteriors, Params::Skills(skills))
        }
        Method::Wawa => {
            let (result, skills) = apo_consensus::wawa(&votes);
            let post = shares(&votes, &skills);
            (result, post, Params::Skills(skills))
        }
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
            let result = apo_consensus::weighted_vote(&votes, &pairs).map_err(|e| match e {
                apo_consensus::ConsensusError::UnknownWorker(_)
                | apo_consensus::ConsensusError::InvalidWeight { .. } => weight_err(e),
                other => VotesError::Votes(other.to_string()),
            })?;
            let mut w = vec![1.0; n_workers];
            for (name, x) in &pairs {
                if let Some(i) = votes.workers().iter().position(|n| n == name) {
                    w[i] = *x;
                }
            }
            let post = shares(&votes, &w);
            (result, post, Params::Weights(w))
        }
    };
    let io = |e: std::io::Error| VotesError::Votes(e.to_string());
    let labels: Vec<&str> = (0..votes.labels().len())
        .map(|l| votes.label_name(l))
        .collect();
    write!(out, "task,label,confidence").map_err(io)?;
    if output.posteriors {
        for l in &labels {
            write!(out, ",p_{l}").map_err(io)?;
        }
    }
    writeln!(out).map_err(io)?;
    for c in &result {
        let (task, label) = (&votes.tasks()[c.task], votes.label_name(c.label));
        write!(out, "{task},{label},{}", c.confidence).map_err(io)?;
        if output.posteriors {
            for p in &posteriors[c.task] {
                write!(out, ",{p}").map_err(io)?;
            }
        }
        writeln!(out).map_err(io)?;
    }
    if let Some(w) = output.skills {
        match &params {
            Params::Weights(x) => {
                writeln!(w, "worker,weight").map_err(io)?;
                for (i, v) in x.iter().enumerate() {
                    writeln!(w, "{},{v}", votes.workers()[i]).map_err(io)?;
                }
            }
            Params::Skills(x) => {
                writeln!(w, "worker,skill").map_err(io)?;
                for (i, v) in x.iter().enumerate() {
                    writeln!(w, "{},{v}", votes.workers()[i]).map_err(io)?;
                }
            }
            Params::Confusion(e) => {
                writeln!(w, "worker,observed,true,probability").map_err(io)?;
                for (i, rows) in e.iter().enumerate() {
                    for (l, row) in rows.iter().enumerate() {
                        if row.iter().all(|&x| x == 0.0) {
                            continue; // a label the worker never gave
                        }
                        for (c, p) in row.iter().enumerate() {
                            writeln!(w, "{},{},{},{p}", votes.workers()[i], labels[l], labels[c])
                                .map_err(io)?;
                        }
                    }
                }
            }
        }
    }
    Ok(result)
}
