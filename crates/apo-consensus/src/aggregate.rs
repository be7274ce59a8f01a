//! Label aggregation: majority vote, weighted vote, Dawid-Skene.

use rand::{Rng as _, SeedableRng};
use rand_xoshiro::SplitMix64;

use crate::votes::FastMap;
use crate::{ConsensusError, Result, Votes};

/// The seed of the random EM starts ([`DawidSkeneConfig::random_starts`]).
const RANDOM_STARTS_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// The consensus on one task.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Consensus {
    /// Task index (see [`Votes::tasks`]).
    pub task: usize,
    /// Label index (see [`Votes::labels`]).
    pub label: usize,
    /// Support: the (weighted) share of votes for the label, or its Dawid-Skene posterior.
    pub confidence: f64,
    /// Votes for the consensus label ([`Votes::split_workers`] names their workers).
    pub agreeing: usize,
    /// Votes for another label.
    pub dissenting: usize,
}

/// The distinct vote patterns of a set of votes.
struct Patterns {
    /// Tasks per pattern.
    count: Vec<f64>,
    /// The pattern of each task.
    of_task: Vec<usize>,
    /// `(pattern, worker, label)`, workers ascending within a pattern.
    entries: Vec<(usize, usize, usize)>,
}

impl Patterns {
    fn of(votes: &Votes) -> Patterns {
        let groups = votes.by_task();
        let mut index: FastMap<Vec<(usize, usize)>, usize> = FastMap::default();
        let (mut count, mut of_task, mut entries) = (Vec::new(), Vec::new(), Vec::new());
        let mut key: Vec<(usize, usize)> = Vec::new();
        for t in 0..votes.tasks().len() {
            key.clear();
            key.extend(
                groups.order[groups.offsets[t]..groups.offsets[t + 1]]
                    .iter()
                    .map(|&e| (votes.entries()[e].1, votes.entries()[e].2)),
            );
            key.sort_unstable();
            let p = match index.get(key.as_slice()) {
                Some(&p) => p,
                None => {
                    let p = count.len();
                    count.push(0.0);
                    entries.extend(key.iter().map(|&(w, l)| (p, w, l)));
                    index.insert(key.clone(), p);
                    p
                }
            };
            count[p] += 1.0;
            of_task.push(p);
        }
        Patterns {
            count,
            of_task,
            entries,
        }
    }
}

/// Index of the largest value; ties go to the smallest index (the label that sorts first).
fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

pub(crate) fn finish(votes: &Votes, scores: Vec<Vec<f64>>) -> Vec<Consensus> {
    finish_rows(votes, scores.iter().map(Vec::as_slice), argmax)
}

/// Each task's consensus from its row of label scores (the label picked by `pick`, its score
/// the confidence), with the votes for and against it counted.
fn finish_rows<'a>(
    votes: &Votes,
    rows: impl Iterator<Item = &'a [f64]>,
    pick: impl Fn(&[f64]) -> usize,
) -> Vec<Consensus> {
    let out = rows
        .enumerate()
        .map(|(task, s)| {
            let label = pick(s);
            consensus(task, label, s[label])
        })
        .collect();
    split_workers(votes, out)
}

fn consensus(task: usize, label: usize, confidence: f64) -> Consensus {
    Consensus {
        task,
        label,
        confidence,
        agreeing: 0,
        dissenting: 0,
    }
}

/// Counts each task's votes for and against its consensus label.
fn split_workers(votes: &Votes, mut out: Vec<Consensus>) -> Vec<Consensus> {
    for &(t, _, l) in votes.entries() {
        let c = &mut out[t];
        if c.label == l {
            c.agreeing += 1;
        } else {
            c.dissenting += 1;
        }
    }
    out
}

/// Each task's (weighted) share of every label: row `t` is `[t * k, (t + 1) * k)` with `k`
/// labels.
fn shares(votes: &Votes, weight: impl Fn(usize) -> f64) -> Vec<f64> {
    let k = votes.labels().len();
    let mut s = vec![0.0; k * votes.tasks().len()];
    for &(t, w, l) in votes.entries() {
        s[t * k + l] += weight(w);
    }
    for row in s.chunks_exact_mut(k) {
        let total: f64 = row.iter().sum();
        if total > 0.0 {
            row.iter_mut().for_each(|x| *x /= total);
        }
    }
    s
}

/// Majority vote: the label with the most votes; ties go to the label that sorts first.
/// Confidence is the label's share of the task's votes.
pub fn majority_vote(votes: &Votes) -> Vec<Consensus> {
    let k = votes.labels().len();
    finish_rows(votes, shares(votes, |_| 1.0).chunks_exact(k), argmax)
}

/// Weighted vote: the label with the largest total weight (ties to the label that sorts
/// first); confidence is its share of the task's total weight. Workers absent from `weights`
/// weigh 1. Reliabilities from `apo-drift` (e.g. agreement with the consensus) fit here: a
/// teacher that drifts counts less.
///
/// # Errors
/// [`ConsensusError::UnknownWorker`] for a weight of a worker without votes,
/// [`ConsensusError::InvalidWeight`] for a negative or non-finite weight.
///
/// # Examples
/// ```
/// use apo_consensus::{Votes, weighted_vote};
/// let votes = Votes::from_triples([("t", "a", "x"), ("t", "b", "y"), ("t", "c", "y")])?;
/// let c = weighted_vote(&votes, &[("a", 3.0)])?;
/// assert_eq!(votes.label_name(c[0].label), "x");
/// # Ok::<(), apo_consensus::ConsensusError>(())
/// ```
pub fn weighted_vote(votes: &Votes, weights: &[(&str, f64)]) -> Result<Vec<Consensus>> {
    let mut w = vec![1.0; votes.workers().len()];
    for &(name, value) in weights {
        let i = votes
            .workers()
            .iter()
            .position(|x| x == name)
            .ok_or_else(|| ConsensusError::UnknownWorker(name.to_owned()))?;
        if !(value.is_finite() && value >= 0.0) {
            return Err(ConsensusError::InvalidWeight {
                worker: name.to_owned(),
                value,
            });
        }
        w[i] = value;
    }
    let k = votes.labels().len();
    Ok(finish_rows(
        votes,
        shares(votes, |i| w[i]).chunks_exact(k),
        argmax,
    ))
}

/// Checks weights given by a user for [`weighted_vote`] over `workers`: at least one worker
/// must count (a worker not in `weights` weighs 1). With every weight 0 the weighted vote
/// would give every task confidence 0, a silently empty result.
///
/// # Examples
/// ```
/// use apo_consensus::{ConsensusError, check_weights};
/// let workers = ["a".to_owned(), "b".to_owned()];
/// assert_eq!(check_weights(&workers, &[("a", 0.0), ("b", 0.0)]), Err(ConsensusError::ZeroWeights));
/// assert_eq!(check_weights(&workers, &[("a", 0.0)]), Ok(())); // b weighs 1
/// ```
///
/// # Errors
/// [`ConsensusError::ZeroWeights`].
pub fn check_weights(workers: &[String], weights: &[(&str, f64)]) -> Result<()> {
    let counts = |name: &str| {
        weights
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .is_none_or(|&(_, w)| w != 0.0)
    };
    if workers.iter().any(|w| counts(w)) {
        Ok(())
    } else {
        Err(ConsensusError::ZeroWeights)
    }
}

/// Per-worker reliability weights for [`weighted_vote`]: a worker's agreement with the
/// majority of the *other* workers (leave-one-out, over tasks where that majority is not a
/// tie), smoothed as `r = (agree + 1) / (decided + 2)`, turned into the log-odds weight
/// `max(0, ln(r / (1 - r)))`, the optimal weight of independent symmetric voters (Nitzan &
/// Paroush 1982). A teacher that drifts away from the others counts less; one at chance or
/// worse counts nothing.
///
/// # Examples
/// ```
/// use apo_consensus::{Votes, reliability_weights};
/// let votes = Votes::from_triples([
///     ("1", "a", "x"), ("1", "b", "x"), ("1", "c", "x"), ("1", "d", "y"),
///     ("2", "a", "y"), ("2", "b", "y"), ("2", "c", "y"), ("2", "d", "x"),
/// ])?;
/// let w = reliability_weights(&votes);
/// assert!((w[0].1 - 3f64.ln()).abs() < 1e-12); // agrees on 2 of 2: r = 3/4
/// assert_eq!(w[3].1, 0.0); // never agrees
/// # Ok::<(), apo_consensus::ConsensusError>(())
/// ```
pub fn reliability_weights(votes: &Votes) -> Vec<(String, f64)> {
    let k = votes.labels().len();
    let mut counts = vec![0usize; votes.tasks().len() * k];
    for &(t, _, l) in votes.entries() {
        counts[t * k + l] += 1;
    }
    let n = votes.workers().len();
    let (mut agree, mut decided) = (vec![0usize; n], vec![0usize; n]);
    let mut others = vec![0usize; k];
    for &(t, w, l) in votes.entries() {
        others.copy_from_slice(&counts[t * k..(t + 1) * k]);
        others[l] -= 1;
        let top = others.iter().copied().max().unwrap_or(0);
        if top == 0 || others.iter().filter(|&&c| c == top).count() > 1 {
            continue;
        }
        decided[w] += 1;
        agree[w] += usize::from(others[l] == top);
    }
    votes
        .workers()
        .iter()
        .enumerate()
        .map(|(w, name)| {
            let r = (agree[w] as f64 + 1.0) / (decided[w] as f64 + 2.0);
            (name.clone(), (r / (1.0 - r)).ln().max(0.0))
        })
        .collect()
}

/// Parameters of [`dawid_skene`] (crowd-kit 1.4 defaults).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DawidSkeneConfig {
    /// Maximum EM iterations. Default: 100.
    pub max_iter: usize,
    /// Stop when the evidence lower bound per vote improves by less than this. Default: 1e-5.
    pub tol: f64,
    /// The label known to be the most frequent true class (e.g. "absent" for a finding that
    /// most images lack), or `None`. Dawid-Skene is identified only up to a relabelling of
    /// the true classes: every permutation of them fits the votes equally well. When most
    /// workers are worse than chance, EM started from the majority vote can settle on the
    /// mirrored solution; with this set, the fitted class with the largest prior and this
    /// label swap roles if they differ (an exact symmetry of the model: same likelihood).
    /// Default: `None` (crowd-kit's behaviour).
    pub majority_label: Option<usize>,
    /// Besides the majority-vote start, run EM from one start per worker (that worker's
    /// labels taken as the truth on the tasks it labelled, majority-vote shares elsewhere)
    /// and keep the fit with the highest final evidence lower bound (at convergence, the
    /// log-likelihood of the votes; ties keep the earlier start, the majority vote first).
    /// EM finds a local optimum only: when most workers share a bias, the majority-vote
    /// start can settle on a solution in which the latent class tracks that bias instead of
    /// the truth, and a start from a reliable worker finds the better-fitting one.
    /// Default: `false` (crowd-kit's behaviour).
    pub worker_starts: bool,
    /// Further EM starts from random posteriors (a fixed SplitMix64 sequence, so the fit is
    /// deterministic), with the same selection by the final evidence lower bound as
    /// `worker_starts`. Default: 0.
    pub random_starts: usize,
}

impl Default for DawidSkeneConfig {
    fn default() -> Self {
        DawidSkeneConfig {
            max_iter: 100,
            tol: 1e-5,
            majority_label: None,
            worker_starts: false,
            random_starts: 0,
        }
    }
}

/// The fitted Dawid-Skene model.
#[derive(Debug, Clone, PartialEq)]
pub struct DawidSkene {
    /// The consensus per task (label = posterior argmax, confidence = its posterior).
    pub consensus: Vec<Consensus>,
    /// Posterior over labels per task.
    pub posteriors: Vec<Vec<f64>>,
    /// Class priors.
    pub priors: Vec<f64>,
    /// Per worker, `errors[observed][true]` = P(worker says `observed` | truth is `true`), over
    /// the labels the worker used.
    pub errors: Vec<Vec<Vec<f64>>>,
    /// Evidence lower bound per vote after each iteration.
    pub elbo: Vec<f64>,
}

const EPS: f64 = 1e-10;

/// Dawid-Skene EM (Dawid & Skene 1979), following crowd-kit 1.4's `DawidSkene`: posteriors
/// start from majority-vote shares; the M-step estimates the priors as mean posteriors and
/// each worker's confusion matrix from posterior-weighted counts (floored at 1e-10, columns
/// normalised over the labels the worker used); the E-step computes posteriors in log space
/// with the row maximum subtracted; iteration stops when the evidence lower bound per vote
/// improves by less than `tol`, or after `max_iter` iterations. Labels are the posterior
/// argmax (ties to the label that sorts first).
///
/// # Errors
/// [`ConsensusError::OutOfRange`] for `max_iter` of 0 or a negative / non-finite `tol`.
///
/// # Examples
/// ```
/// use apo_consensus::{DawidSkeneConfig, Votes, dawid_skene};
/// let votes = Votes::from_triples([
///     ("t1", "good", "x"), ("t1", "bad", "y"), ("t1", "ok", "x"),
///     ("t2", "good", "y"), ("t2", "bad", "x"), ("t2", "ok", "y"),
/// ])?;
/// let ds = dawid_skene(&votes, &DawidSkeneConfig::default())?;
/// assert_eq!(votes.label_name(ds.consensus[0].label), "x");
/// assert_eq!(votes.label_name(ds.consensus[1].label), "y");
/// # Ok::<(), apo_consensus::ConsensusError>(())
/// ```
#[allow(clippy::needless_range_loop)] // (worker, observed, true) indices address several tables
pub fn dawid_skene(votes: &Votes, config: &DawidSkeneConfig) -> Result<DawidSkene> {
    em(votes, config, false)
}

/// One-coin Dawid-Skene (crowd-kit 1.4's `OneCoinDawidSkene`): Dawid-Skene in which each
/// worker has a single skill `p_w` (the chance that their label is the true one, errors spread
/// evenly over the other labels) instead of a confusion matrix. The M-step sets `p_w` to the
/// mean posterior of the label the worker gave, over their votes; the confusion entries are
/// then `p_w` on the diagonal and `(1 − p_w) / (K − 1)` off it, clipped to `[1e-10, 1 − 1e-10]`.
/// Same starts, E-step, priors and stopping rule as [`dawid_skene`]; the skills are
/// [`DawidSkene::errors`]' diagonals.
///
/// # Errors
/// As [`dawid_skene`].
pub fn one_coin_dawid_skene(votes: &Votes, config: &DawidSkeneConfig) -> Result<DawidSkene> {
    em(votes, config, true)
}

/// Wawa (crowd-kit 1.4's `Wawa`, worker agreement with aggregate): the majority vote, then each
/// worker's skill as the share of their votes that agree with it, then the vote weighted by
/// those skills. Ties (in both votes) go to the label that appears first in the votes, as
/// crowd-kit's `MajorityVote` breaks them (its columns keep that order), not to the one that
/// sorts first as [`majority_vote`]'s do. Returns the weighted vote and the skills (in
/// `votes.workers()` order).
pub fn wawa(votes: &Votes) -> (Vec<Consensus>, Vec<f64>) {
    let k = votes.labels().len();
    // Each label's position of first appearance.
    let mut rank = vec![usize::MAX; k];
    let mut next = 0;
    for &(_, _, l) in votes.entries() {
        if rank[l] == usize::MAX {
            rank[l] = next;
            next += 1;
            if next == k {
                break;
            }
        }
    }
    let pick = |row: &[f64]| -> usize {
        let mut best = 0;
        for l in 1..row.len() {
            if row[l] > row[best] || (row[l] == row[best] && rank[l] < rank[best]) {
                best = l;
            }
        }
        best
    };
    let mv: Vec<usize> = shares(votes, |_| 1.0).chunks_exact(k).map(pick).collect();
    let n = votes.workers().len();
    let (mut agree, mut total) = (vec![0usize; n], vec![0usize; n]);
    for &(t, w, l) in votes.entries() {
        total[w] += 1;
        agree[w] += usize::from(mv[t] == l);
    }
    let skills: Vec<f64> = agree
        .iter()
        .zip(&total)
        .map(|(&a, &t)| if t > 0 { a as f64 / t as f64 } else { 0.0 })
        .collect();
    let out = finish_rows(votes, shares(votes, |w| skills[w]).chunks_exact(k), pick);
    (out, skills)
}

/// An iterative fit's settings: at least one iteration, a finite non-negative tolerance.
///
/// # Errors
/// [`ConsensusError::OutOfRange`].
pub(crate) fn check_iterations(max_iter: usize, tol: f64) -> Result<()> {
    if max_iter == 0 {
        return Err(ConsensusError::OutOfRange {
            name: "max_iter",
            value: 0.0,
            expected: "at least 1",
        });
    }
    if !(tol.is_finite() && tol >= 0.0) {
        return Err(ConsensusError::OutOfRange {
            name: "tol",
            value: tol,
            expected: "a finite number >= 0",
        });
    }
    Ok(())
}

#[allow(clippy::needless_range_loop)] // (worker, observed, true) indices address several tables
fn em(votes: &Votes, config: &DawidSkeneConfig, one_coin: bool) -> Result<DawidSkene> {
    check_iterations(config.max_iter, config.tol)?;
    let (n_tasks, n_workers, k) = (
        votes.tasks().len(),
        votes.workers().len(),
        votes.labels().len(),
    );
    // Tasks with the same votes (the same workers saying the same labels) have the same
    // posterior at every iteration, so EM runs over the distinct vote patterns, each weighted
    // by its number of tasks: the sums are those over tasks, grouped.
    if let Some(e) = config.majority_label.filter(|&e| e >= k) {
        return Err(ConsensusError::OutOfRange {
            name: "majority_label",
            value: e as f64,
            expected: "a label index",
        });
    }
    let pat = Patterns::of(votes);
    let n_pat = pat.count.len();
    // Flat, row-major tables: posteriors [pattern][class], confusion [worker][observed][class].
    let ek = |w: usize, l: usize| (w * k + l) * k;
    let mut used = vec![false; n_workers * k];
    for &(_, w, l) in votes.entries() {
        used[w * k + l] = true;
    }
    // One-coin M-step: each worker's skill (mean posterior of the label they gave), spread
    // into a confusion table as crowd-kit's `_process_skills_to_errors` does.
    let one_coin_step = |post: &[f64]| -> Vec<f64> {
        let (mut sum, mut count) = (vec![0.0; n_workers], vec![0.0; n_workers]);
        for &(p, w, l) in &pat.entries {
            let n = pat.count[p];
            sum[w] += n * post[p * k + l];
            count[w] += n;
        }
        let mut e = vec![0.0; n_workers * k * k];
        for w in 0..n_workers {
            let skill = if count[w] > 0.0 {
                sum[w] / count[w]
            } else {
                0.0
            };
            let off = if k > 1 {
                (1.0 - skill) / (k - 1) as f64
            } else {
                0.0
            };
            for l in 0..k {
                if !used[w * k + l] {
                    continue;
                }
                for c in 0..k {
                    let v = if c == l { skill } else { off };
                    e[ek(w, l) + c] = v.clamp(EPS, 1.0 - EPS);
                }
            }
        }
        e
    };
    let m_step = |post: &[f64]| -> Vec<f64> {
        if one_coin {
            return one_coin_step(post);
        }
        let mut e = vec![0.0; n_workers * k * k];
        for &(p, w, l) in &pat.entries {
            let (row, n) = (ek(w, l), pat.count[p]);
            for c in 0..k {
                e[row + c] += n * post[p * k + c];
            }
        }
        for w in 0..n_workers {
            for l in 0..k {
                if used[w * k + l] {
                    e[ek(w, l)..ek(w, l) + k]
                        .iter_mut()
                        .for_each(|x| *x = x.max(EPS));
                }
            }
            for c in 0..k {
                let col: f64 = (0..k)
                    .filter(|&l| used[w * k + l])
                    .map(|l| e[ek(w, l) + c])
                    .sum();
                for l in 0..k {
                    if used[w * k + l] {
                        e[ek(w, l) + c] /= col;
                    }
                }
            }
        }
        e
    };
    let mean = |post: &[f64]| -> Vec<f64> {
        (0..k)
            .map(|c| {
                post.iter()
                    .skip(c)
                    .step_by(k)
                    .zip(&pat.count)
                    .map(|(p, n)| p * n)
                    .sum::<f64>()
                    / n_tasks as f64
            })
            .collect()
    };
    // Majority-vote shares to start (uniform for a task without votes).
    let mut mv = vec![0.0; n_pat * k];
    for &(p, _, l) in &pat.entries {
        mv[p * k + l] += 1.0;
    }
    for row in mv.chunks_mut(k) {
        let total: f64 = row.iter().sum();
        if total > 0.0 {
            row.iter_mut().for_each(|x| *x /= total);
        } else {
            row.iter_mut().for_each(|x| *x = 1.0 / k as f64);
        }
    }
    // One EM run: (posteriors, priors, confusion, evidence lower bound per iteration).
    type Fit = (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>);
    let fit = |mut post: Vec<f64>| -> Fit {
        let mut priors = mean(&post);
        let mut errors = m_step(&post);
        let mut loss = f64::NEG_INFINITY;
        let mut elbo = Vec::new();
        for _ in 0..config.max_iter {
            // E-step in base-2 logs, as crowd-kit (the base cancels in the normalisation);
            // the logs of the few confusion entries are taken once per iteration, not once
            // per vote.
            let log2_errors: Vec<f64> = errors.iter().map(|x| x.log2()).collect();
            let log2_priors: Vec<f64> = priors.iter().map(|p| p.max(EPS).log2()).collect();
            let mut ll: Vec<f64> = log2_priors
                .iter()
                .copied()
                .cycle()
                .take(n_pat * k)
                .collect();
            for &(p, w, l) in &pat.entries {
                let row = ek(w, l);
                for c in 0..k {
                    ll[p * k + c] += log2_errors[row + c];
                }
            }
            for row in ll.chunks_mut(k) {
                let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                row.iter_mut().for_each(|x| *x = (*x - m).exp2());
                let s: f64 = row.iter().sum();
                row.iter_mut().for_each(|x| *x /= s);
            }
            post = ll;
            priors = mean(&post);
            errors = m_step(&post);
            // Evidence lower bound per vote.
            let ln_terms: Vec<f64> = errors
                .iter()
                .enumerate()
                .map(|(i, x)| x.ln() + priors[i % k].max(EPS).ln())
                .collect();
            let mut joint = 0.0;
            for &(p, w, l) in &pat.entries {
                let row = ek(w, l);
                let mut s = 0.0;
                for c in 0..k {
                    s += post[p * k + c] * ln_terms[row + c];
                }
                joint += pat.count[p] * s;
            }
            let entropy: f64 = -post
                .chunks(k)
                .zip(&pat.count)
                .map(|(row, n)| {
                    n * row
                        .iter()
                        .map(|&p| {
                            let p = p.max(EPS);
                            p.ln() * p
                        })
                        .sum::<f64>()
                })
                .sum::<f64>();
            let new_loss = (joint + entropy) / votes.entries().len() as f64;
            elbo.push(new_loss);
            if new_loss - loss < config.tol {
                break;
            }
            loss = new_loss;
        }
        (post, priors, errors, elbo)
    };
    // The majority-vote start, then one per worker (its labels taken as the truth where it
    // voted), then seeded random posteriors; the fit with the highest final evidence lower
    // bound wins, the earlier start on ties.
    let worker_start = |w: usize| {
        let mut start = mv.clone();
        for &(p, ww, l) in &pat.entries {
            if ww == w {
                let row = &mut start[p * k..(p + 1) * k];
                row.iter_mut().for_each(|x| *x = 0.0);
                row[l] = 1.0;
            }
        }
        start
    };
    let mut rng = SplitMix64::seed_from_u64(RANDOM_STARTS_SEED);
    let mut random_start = || {
        let mut start = vec![0.0; n_pat * k];
        for row in start.chunks_mut(k) {
            for x in row.iter_mut() {
                *x = 0.01 + rng.random::<f64>();
            }
            let total: f64 = row.iter().sum();
            row.iter_mut().for_each(|x| *x /= total);
        }
        start
    };
    let workers = if config.worker_starts { n_workers } else { 0 };
    let starts = std::iter::once(mv.clone())
        .chain((0..workers).map(worker_start))
        .chain((0..config.random_starts).map(|_| random_start()));
    let final_elbo = |fit: &Fit| fit.3.last().copied().unwrap_or(f64::NEG_INFINITY);
    let mut best: Option<Fit> = None;
    for start in starts {
        let candidate = fit(start);
        if best
            .as_ref()
            .is_none_or(|b| final_elbo(&candidate) > final_elbo(b))
        {
            best = Some(candidate);
        }
    }
    let (mut post, mut priors, mut errors, elbo) = best.expect("the majority-vote start");
    if let Some(e) = config.majority_label {
        let top = argmax(&priors);
        if top != e {
            priors.swap(top, e);
            for row in post.chunks_mut(k) {
                row.swap(top, e);
            }
            for row in errors.chunks_mut(k) {
                row.swap(top, e);
            }
        }
    }
    let post: Vec<f64> = pat
        .of_task
        .iter()
        .flat_map(|&p| post[p * k..(p + 1) * k].iter().copied())
        .collect();
    let post: Vec<Vec<f64>> = post.chunks(k).map(<[f64]>::to_vec).collect();
    let errors: Vec<Vec<Vec<f64>>> = (0..n_workers)
        .map(|w| {
            (0..k)
                .map(|l| {
                    if used[w * k + l] {
                        errors[ek(w, l)..ek(w, l) + k].to_vec()
                    } else {
                        vec![0.0; k]
                    }
                })
                .collect()
        })
        .collect();
    let consensus = finish(votes, post.clone());
    Ok(DawidSkene {
        consensus,
        posteriors: post,
        priors,
        errors,
        elbo,
    })
}
