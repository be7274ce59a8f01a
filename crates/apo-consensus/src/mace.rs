//! MACE (Hovy et al. 2013, "Learning whom to trust with MACE"), following crowd-kit 1.4's
//! `MACE`: on each task a worker either knows the true label and gives it, or spams and draws
//! a label from their own distribution `θ_w`; the true label is uniform.

use crate::aggregate::Consensus;
use crate::{ConsensusError, Result, Votes};

/// How [`mace`] fits the parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum MaceMethod {
    /// Variational Bayes: symmetric Beta priors (`alpha`, `beta`) on the spamming rates and
    /// Dirichlet priors (10 each) on the spam distributions.
    #[default]
    Vb,
    /// Expectation-maximisation with the counts smoothed by `0.01 / K`.
    Em,
}

/// Parameters of [`mace`] (crowd-kit 1.4's defaults).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MaceConfig {
    /// Runs from the random start; the one with the highest marginal likelihood is kept.
    /// Default: 10.
    pub n_restarts: usize,
    /// Iterations per run. Default: 50.
    pub n_iter: usize,
    /// `vb` or `em`. Default: `vb`.
    pub method: MaceMethod,
    /// The random start's spread: each start draws from `U(1, 2 + default_noise)`, then
    /// normalises. Default: 0.5.
    pub default_noise: f64,
    /// The Beta prior on spamming. Default: 0.5.
    pub alpha: f64,
    /// The Beta prior on knowing. Default: 0.5.
    pub beta: f64,
    /// The seed of the random start (numpy's `RandomState`). Default: 0.
    pub random_state: u32,
    /// Reproduce crowd-kit 1.4.2's M-step indexing: its table of expected spam counts is read
    /// with rows in sorted worker-name order and columns in sorted label order, while its
    /// model numbers workers and labels in order of first appearance, so each worker's spam
    /// distribution is taken from another worker's (and label's) counts wherever the two
    /// orders differ, and the fit depends on the names. On by default, as crowd-kit's defaults
    /// are (its labels and posteriors); off, the model as published (method `mace-published`).
    pub crowdkit_indexing: bool,
}

impl Default for MaceConfig {
    fn default() -> Self {
        MaceConfig {
            n_restarts: 10,
            n_iter: 50,
            method: MaceMethod::Vb,
            default_noise: 0.5,
            alpha: 0.5,
            beta: 0.5,
            random_state: 0,
            crowdkit_indexing: true,
        }
    }
}

/// The fitted MACE model.
#[derive(Debug, Clone, PartialEq)]
pub struct Mace {
    /// The consensus per task (label = posterior argmax, confidence = its posterior).
    pub consensus: Vec<Consensus>,
    /// Posterior over labels per task (crowd-kit's `probas_`), columns in `votes.labels()`
    /// order.
    pub posteriors: Vec<Vec<f64>>,
    /// Per worker (`votes.workers()` order): `[P(spamming), P(knowing)]` (crowd-kit's
    /// `spamming_`).
    pub spamming: Vec<[f64; 2]>,
    /// Per worker: the spam distribution over labels (crowd-kit's `thetas_`), in
    /// `votes.labels()` order.
    pub thetas: Vec<Vec<f64>>,
    /// The log marginal likelihood of the kept run.
    pub log_marginal_likelihood: f64,
}

/// numpy's legacy `RandomState` (MT19937 seeded with `init_genrand`) and its `random_sample`.
struct Mt19937 {
    state: [u32; 624],
    index: usize,
}

impl Mt19937 {
    fn new(seed: u32) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            state[i] = 1_812_433_253u32
                .wrapping_mul(state[i - 1] ^ (state[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { state, index: 624 }
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            for i in 0..624 {
                let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
                let mut v = self.state[(i + 397) % 624] ^ (y >> 1);
                if y & 1 == 1 {
                    v ^= 0x9908_b0df;
                }
                self.state[i] = v;
            }
            self.index = 0;
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// A double in `[0, 1)` with 53 random bits, as numpy's `random_sample`.
    fn random_sample(&mut self) -> f64 {
        let a = f64::from(self.next_u32() >> 5);
        let b = f64::from(self.next_u32() >> 6);
        (a * 67_108_864.0 + b) / 9_007_199_254_740_992.0
    }
}

/// `ψ(x)`, the digamma function (recurrence to x ≥ 10, then the asymptotic series to x⁻¹⁰).
fn digamma(mut x: f64) -> f64 {
    let mut r = 0.0;
    while x < 10.0 {
        r -= 1.0 / x;
        x += 1.0;
    }
    let f = 1.0 / (x * x);
    r + x.ln()
        - 0.5 / x
        - f * (1.0 / 12.0 - f * (1.0 / 120.0 - f * (1.0 / 252.0 - f * (1.0 / 240.0 - f / 132.0))))
}

/// A row `[rows][cols]` of `U(1, 2 + noise)` draws (C order), each row normalised.
fn random_start(rng: &mut Mt19937, rows: usize, cols: usize, noise: f64) -> Vec<Vec<f64>> {
    (0..rows)
        .map(|_| {
            let row: Vec<f64> = (0..cols)
                .map(|_| 1.0 + (1.0 + noise) * rng.random_sample())
                .collect();
            let s: f64 = row.iter().sum();
            row.into_iter().map(|v| v / s).collect()
        })
        .collect()
}

/// The M-step's normalisation of one row of expected counts: with priors `h`,
/// `e^{ψ(c + h)} / e^{ψ(Σ (c + h))}` (VB), or `(c + s) / Σ (c + s)` with smoothing `s` (EM);
/// zeros when the normaliser is 0.
fn normalise(counts: &[f64], prior: &[f64], method: MaceMethod, smoothing: f64) -> Vec<f64> {
    match method {
        MaceMethod::Vb => {
            let total: f64 = counts.iter().zip(prior).map(|(c, h)| c + h).sum();
            let norm = digamma(total).exp();
            if norm.abs() < 1e-8 {
                return vec![0.0; counts.len()];
            }
            counts
                .iter()
                .zip(prior)
                .map(|(c, h)| digamma(c + h).exp() / norm)
                .collect()
        }
        MaceMethod::Em => {
            let total: f64 = counts.iter().map(|c| c + smoothing).sum();
            if total.abs() < 1e-8 {
                return vec![0.0; counts.len()];
            }
            counts.iter().map(|c| (c + smoothing) / total).collect()
        }
    }
}

struct Expect {
    ll: f64,
    gold: Vec<Vec<f64>>,
    /// `[worker][label]`: expected spam counts.
    strategy: Vec<Vec<f64>>,
    /// `[worker]`: expected (spamming, knowing) counts.
    knowing: Vec<[f64; 2]>,
}

/// The E-step: each task's unnormalised label marginals, the log marginal likelihood, and the
/// expected counts of spamming / knowing and of each spam label.
fn e_step(
    entries: &[(usize, usize, usize)],
    tasks: usize,
    workers: usize,
    k: usize,
    spamming: &[[f64; 2]],
    thetas: &[Vec<f64>],
) -> Expect {
    let mut gold = vec![vec![1.0 / k as f64; k]; tasks];
    let mut seen = vec![false; tasks];
    for &(t, w, l) in entries {
        seen[t] = true;
        let spam = spamming[w][0] * thetas[w][l];
        for (c, g) in gold[t].iter_mut().enumerate() {
            *g *= spam + if c == l { spamming[w][1] } else { 0.0 };
        }
    }
    let instance: Vec<f64> = gold.iter().map(|g| g.iter().sum()).collect();
    let ll = instance
        .iter()
        .zip(&seen)
        .filter(|(_, s)| **s)
        .map(|(m, _)| (m + 1e-8).ln())
        .sum();
    let mut strategy = vec![vec![0.0; k]; workers];
    let mut knowing = vec![[0.0; 2]; workers];
    for &(t, w, l) in entries {
        let spam = spamming[w][0] * thetas[w][l];
        let mut s = 0.0;
        for (c, g) in gold[t].iter().enumerate() {
            s += g / (spam + if c == l { spamming[w][1] } else { 0.0 });
        }
        let s = s * spam / instance[t];
        strategy[w][l] += s;
        knowing[w][0] += s;
        knowing[w][1] += gold[t][l] * spamming[w][1] / (spam + spamming[w][1]) / instance[t];
    }
    Expect {
        ll,
        gold,
        strategy,
        knowing,
    }
}

/// MACE, as crowd-kit 1.4's `MACE`: from a random start (`U(1, 2 + default_noise)` draws of
/// numpy's `RandomState(random_state)`, normalised per worker), `n_iter` rounds of M-step
/// (variational by default) and E-step; `n_restarts` runs, keeping the one with the highest
/// log marginal likelihood, then a last E-step gives the posteriors. Labels are the posterior
/// argmax (ties to the label that sorts first).
///
/// crowd-kit draws every restart from the same `random_state`, so its restarts are one run
/// repeated; the same holds here (and the run is made once). crowd-kit's M-step also reads its table of spam counts in
/// the order of sorted worker and label names while its model indexes workers and labels in
/// order of first appearance. [`MaceConfig::crowdkit_indexing`] (the default) reproduces that;
/// off, one order is kept throughout (the model as published). The fits differ where those
/// orders do (see `docs/data.md`).
///
/// # Errors
/// [`ConsensusError::OutOfRange`] for `n_restarts` or `n_iter` of 0, or negative priors.
///
/// # Examples
/// ```
/// use apo_consensus::{MaceConfig, Votes, mace};
/// let votes = Votes::from_triples([
///     ("t1", "good", "x"), ("t1", "bad", "y"), ("t1", "ok", "x"),
///     ("t2", "good", "y"), ("t2", "bad", "x"), ("t2", "ok", "y"),
/// ])?;
/// let m = mace(&votes, &MaceConfig::default())?;
/// assert_eq!(votes.label_name(m.consensus[0].label), "x");
/// assert_eq!(votes.label_name(m.consensus[1].label), "y");
/// # Ok::<(), apo_consensus::ConsensusError>(())
/// ```
pub fn mace(votes: &Votes, config: &MaceConfig) -> Result<Mace> {
    for (name, v) in [("n_restarts", config.n_restarts), ("n_iter", config.n_iter)] {
        if v == 0 {
            return Err(ConsensusError::OutOfRange {
                name,
                value: 0.0,
                expected: "at least 1",
            });
        }
    }
    for (name, v) in [("alpha", config.alpha), ("beta", config.beta)] {
        if !(v.is_finite() && v > 0.0) {
            return Err(ConsensusError::OutOfRange {
                name,
                value: v,
                expected: "a finite number > 0",
            });
        }
    }
    let (tasks, workers, k) = (
        votes.tasks().len(),
        votes.workers().len(),
        votes.labels().len(),
    );
    let entries = votes.entries();
    let smoothing = 0.01 / k.max(1) as f64;
    let theta_prior = [config.alpha, config.beta];
    let strategy_prior = vec![10.0; k];
    // crowd-kit numbers workers and labels in order of first appearance (`pd.factorize`):
    // the random start's rows and columns follow that order.
    let first_seen = |n: usize, of: &dyn Fn(&(usize, usize, usize)) -> usize| -> Vec<usize> {
        let mut order = Vec::with_capacity(n);
        let mut seen = vec![false; n];
        for e in entries {
            let i = of(e);
            if !seen[i] {
                seen[i] = true;
                order.push(i);
            }
        }
        order.extend((0..n).filter(|&i| !seen[i]));
        order
    };
    let worker_order = first_seen(workers, &|e| e.1);
    let label_order = first_seen(k, &|e| e.2);
    let mut sorted_workers: Vec<usize> = (0..workers).collect();
    sorted_workers.sort_by(|&a, &b| votes.workers()[a].cmp(&votes.workers()[b]));
    // Each restart reseeds, as crowd-kit's does, so every restart is the same run (and the
    // best of them is it): it runs once.
    let spam_start = random_start(
        &mut Mt19937::new(config.random_state),
        workers,
        2,
        config.default_noise,
    );
    let theta_start = random_start(
        &mut Mt19937::new(config.random_state),
        workers,
        k,
        config.default_noise,
    );
    let mut spamming = vec![[0.0; 2]; workers];
    let mut thetas = vec![vec![0.0; k]; workers];
    for (row, &w) in worker_order.iter().enumerate() {
        spamming[w] = [spam_start[row][0], spam_start[row][1]];
        for (col, &l) in label_order.iter().enumerate() {
            thetas[w][l] = theta_start[row][col];
        }
    }
    let mut ex = e_step(entries, tasks, workers, k, &spamming, &thetas);
    for _ in 0..config.n_iter {
        for w in 0..workers {
            let s = normalise(&ex.knowing[w], &theta_prior, config.method, smoothing);
            spamming[w] = [s[0], s[1]];
            thetas[w] = normalise(&ex.strategy[w], &strategy_prior, config.method, smoothing);
        }
        if config.crowdkit_indexing {
            // Row i of crowd-kit's table is the i-th worker by name, column j the j-th label
            // by name; it becomes the spam distribution of the i-th worker and the j-th label
            // by first appearance.
            for (i, &by_name) in sorted_workers.iter().enumerate() {
                let n = normalise(
                    &ex.strategy[by_name],
                    &strategy_prior,
                    config.method,
                    smoothing,
                );
                let w = worker_order[i];
                for (j, &l) in label_order.iter().enumerate() {
                    thetas[w][l] = n[j];
                }
            }
        }
        ex = e_step(entries, tasks, workers, k, &spamming, &thetas);
    }
    let ll = ex.ll;
    let ex = e_step(entries, tasks, workers, k, &spamming, &thetas);
    let posteriors: Vec<Vec<f64>> = ex
        .gold
        .into_iter()
        .map(|g| {
            let s: f64 = g.iter().sum();
            g.into_iter().map(|v| v / s).collect()
        })
        .collect();
    Ok(Mace {
        consensus: crate::aggregate::finish(votes, posteriors.clone()),
        posteriors,
        spamming,
        thetas,
        log_marginal_likelihood: ll,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// numpy: `RandomState(0).random_sample()` is 0.5488135039273248; scipy's
    /// `uniform(1, 1.5).rvs(size=(2, 2), random_state=0)` is [[1.82322026, 2.07278405],
    /// [1.90414506, 1.81732477]].
    #[test]
    fn the_start_is_numpys() {
        let mut r = Mt19937::new(0);
        assert_eq!(r.random_sample(), 0.548_813_503_927_324_8);
        let mut r = Mt19937::new(0);
        let draws: Vec<f64> = (0..4).map(|_| 1.0 + 1.5 * r.random_sample()).collect();
        for (a, b) in draws
            .iter()
            .zip([1.823_220_26, 2.072_784_05, 1.904_145_06, 1.817_324_77])
        {
            assert!((a - b).abs() < 1e-8, "{a} vs {b}");
        }
    }

    /// ψ(1) = −γ, ψ(0.5) = −γ − 2 ln 2, ψ(10) = 2.251752589066721.
    #[test]
    fn digamma_values() {
        let gamma = 0.577_215_664_901_532_9;
        assert!((digamma(1.0) + gamma).abs() < 1e-13);
        assert!((digamma(0.5) + gamma + 2.0 * 2f64.ln()).abs() < 1e-13);
        assert!((digamma(10.0) - 2.251_752_589_066_721).abs() < 1e-13);
    }
}
