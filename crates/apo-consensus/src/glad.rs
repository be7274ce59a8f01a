//! GLAD (Whitehill et al. 2009, "Whose vote should count more"), following crowd-kit 1.4's
//! `GLAD`: each worker has an ability `α_w` (any real), each task an inverse difficulty
//! `e^{β_t}`, and a worker gives the true label with probability `σ(α_w e^{β_t})`, any other
//! label with `(1 − σ) / (K − 1)`.

use crate::aggregate::Consensus;
use crate::{Result, Votes};

/// Parameters of [`glad`] (crowd-kit 1.4's defaults).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct GladConfig {
    /// Maximum EM iterations. Default: 100.
    pub max_iter: usize,
    /// Stop when the expected log-likelihood per (vote, label) row improves by less than this.
    /// Default: 1e-5.
    pub tol: f64,
    /// Conjugate-gradient iterations per M-step. Default: 25.
    pub m_step_max_iter: usize,
    /// The M-step stops when the largest gradient entry is at most this. Default: 1e-2.
    pub m_step_tol: f64,
}

impl Default for GladConfig {
    fn default() -> Self {
        GladConfig {
            max_iter: 100,
            tol: 1e-5,
            m_step_max_iter: 25,
            m_step_tol: 1e-2,
        }
    }
}

/// The fitted GLAD model.
#[derive(Debug, Clone, PartialEq)]
pub struct Glad {
    /// The consensus per task (label = posterior argmax, confidence = its posterior).
    pub consensus: Vec<Consensus>,
    /// Posterior over labels per task (crowd-kit's `probas_`).
    pub posteriors: Vec<Vec<f64>>,
    /// Each worker's ability `α_w` (crowd-kit's `alphas_`), in `votes.workers()` order.
    pub alphas: Vec<f64>,
    /// Each task's log inverse difficulty `β_t` (crowd-kit's `betas_`; the model uses
    /// `e^{β_t}`), in `votes.tasks()` order.
    pub betas: Vec<f64>,
    /// The expected log-likelihood per (vote, label) row after each iteration (crowd-kit's
    /// `loss_history_`).
    pub loss_history: Vec<f64>,
}

/// `ln(1 + e^x)`, stable.
fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `ln N(z; 0, 1)`.
fn log_normal(z: f64) -> f64 {
    -0.5 * z * z - 0.5 * (2.0 * std::f64::consts::PI).ln()
}

struct Problem<'a> {
    /// `(task, worker, label)`.
    entries: &'a [(usize, usize, usize)],
    workers: usize,
    labels: usize,
    /// Per vote: the posterior of the label it gave.
    p: Vec<f64>,
}

impl Problem<'_> {
    /// `−Q` at `x = [α…, β…]` and its gradient.
    fn value_grad(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        let (alpha, beta) = x.split_at(self.workers);
        let ln_k1 = ((self.labels - 1).max(1) as f64).ln();
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut q = 0.0;
        for (v, &(t, w, _)) in self.entries.iter().enumerate() {
            let eb = beta[t].exp();
            let z = alpha[w] * eb;
            let (log_s, log_1ms) = (-softplus(-z), -softplus(z));
            let p = self.p[v];
            q += p * log_s + (1.0 - p) * (log_1ms - ln_k1);
            let s = 1.0 / (1.0 + (-z).exp());
            let d = p - s;
            grad[w] -= d * eb;
            grad[self.workers + t] -= d * alpha[w] * eb;
        }
        for (i, &a) in alpha.iter().enumerate() {
            q += log_normal(a - 1.0);
            grad[i] += a - 1.0;
        }
        for (t, &b) in beta.iter().enumerate() {
            q += log_normal(b - 1.0);
            grad[self.workers + t] += b - 1.0;
        }
        -q
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn inf_norm(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// `−Q` and its gradient at `x + a p` (`xt` is scratch space for the point).
fn probe(prob: &Problem, x: &[f64], p: &[f64], a: f64, xt: &mut [f64]) -> Probe {
    for ((t, xi), pi) in xt.iter_mut().zip(x).zip(p) {
        *t = xi + a * pi;
    }
    let mut g = vec![0.0; x.len()];
    let f = prob.value_grad(xt, &mut g);
    Probe {
        a,
        f,
        d: dot(&g, p),
        g,
    }
}

/// A point of the line search: step, value, directional derivative, gradient.
struct Probe {
    a: f64,
    f: f64,
    d: f64,
    g: Vec<f64>,
}

/// A strong-Wolfe line search along `p` from `x` (value `f0`, directional derivative `d0`;
/// Nocedal & Wright, algorithms 3.5 and 3.6, with cubic interpolation), `c1 = 1e-4`,
/// `c2 = 0.4` as scipy's conjugate gradient uses; `None` when no step satisfies them within 20
/// trials.
fn line_search(prob: &Problem, x: &[f64], p: &[f64], f0: f64, d0: f64, a1: f64) -> Option<Probe> {
    let (c1, c2) = (1e-4, 0.4);
    let mut xt = vec![0.0; x.len()];
    let mut eval = |a: f64| probe(prob, x, p, a, &mut xt);
    let interpolate = |lo: &Probe, hi: &Probe| -> f64 {
        // The minimiser of the cubic through both values and derivatives, kept inside the
        // interval (bisection when it is not).
        let d1 = lo.d + hi.d - 3.0 * (lo.f - hi.f) / (lo.a - hi.a);
        let disc = d1 * d1 - lo.d * hi.d;
        let (a, b) = (lo.a.min(hi.a), lo.a.max(hi.a));
        if disc >= 0.0 {
            let d2 = disc.sqrt() * (hi.a - lo.a).signum();
            let t = hi.a - (hi.a - lo.a) * (hi.d + d2 - d1) / (hi.d - lo.d + 2.0 * d2);
            let margin = 0.1 * (b - a);
            if t.is_finite() && t > a + margin && t < b - margin {
                return t;
            }
        }
        0.5 * (a + b)
    };
    let zoom = |mut lo: Probe, mut hi: Probe, eval: &mut dyn FnMut(f64) -> Probe| {
        for _ in 0..20 {
            let a = interpolate(&lo, &hi);
            let t = eval(a);
            if t.f > f0 + c1 * a * d0 || t.f >= lo.f {
                hi = t;
            } else {
                if t.d.abs() <= -c2 * d0 {
                    return Some(t);
                }
                if t.d * (hi.a - lo.a) >= 0.0 {
                    hi = lo;
                }
                lo = t;
            }
        }
        None
    };
    let start = Probe {
        a: 0.0,
        f: f0,
        d: d0,
        g: Vec::new(),
    };
    let mut prev = start;
    let mut a = a1;
    for i in 0..20 {
        let t = eval(a);
        if !t.f.is_finite() {
            a = 0.5 * (prev.a + a);
            continue;
        }
        if t.f > f0 + c1 * a * d0 || (i > 0 && t.f >= prev.f) {
            return zoom(prev, t, &mut eval);
        }
        if t.d.abs() <= -c2 * d0 {
            return Some(t);
        }
        if t.d >= 0.0 {
            return zoom(t, prev, &mut eval);
        }
        prev = t;
        a *= 2.0;
    }
    None
}

/// MINPACK's DCSRCH line search (Moré and Thuente 1994), as scipy 1.17's `_dcsrch.py` ports it
/// (the first line search of scipy's conjugate gradients, `line_search_wolfe1`): a step with
/// `f(stp) ≤ f(0) + ftol · stp · f'(0)` and `|f'(stp)| ≤ gtol · |f'(0)|`.
struct Dcsrch {
    ftol: f64,
    gtol: f64,
    xtol: f64,
    stpmin: f64,
    stpmax: f64,
    brackt: bool,
    stage: u8,
    ginit: f64,
    gtest: f64,
    finit: f64,
    stx: f64,
    fx: f64,
    gx: f64,
    sty: f64,
    fy: f64,
    gy: f64,
    stmin: f64,
    stmax: f64,
    width: f64,
    width1: f64,
}

/// What one DCSRCH iteration asks for.
enum Task {
    /// Evaluate the function and derivative at the returned step.
    Fg,
    /// The step satisfies both conditions.
    Converged,
    /// A warning or an error: no step.
    Failed,
}

impl Dcsrch {
    fn new(ftol: f64, gtol: f64, xtol: f64, stpmin: f64, stpmax: f64) -> Self {
        Dcsrch {
            ftol,
            gtol,
            xtol,
            stpmin,
            stpmax,
            brackt: false,
            stage: 1,
            ginit: 0.0,
            gtest: 0.0,
            finit: 0.0,
            stx: 0.0,
            fx: 0.0,
            gx: 0.0,
            sty: 0.0,
            fy: 0.0,
            gy: 0.0,
            stmin: 0.0,
            stmax: 0.0,
            width: 0.0,
            width1: 0.0,
        }
    }

    /// The first iteration (`task = START`).
    fn start(&mut self, stp: f64, f: f64, g: f64) -> Task {
        if stp < self.stpmin || stp > self.stpmax || g >= 0.0 {
            return Task::Failed;
        }
        self.brackt = false;
        self.stage = 1;
        self.finit = f;
        self.ginit = g;
        self.gtest = self.ftol * g;
        self.width = self.stpmax - self.stpmin;
        self.width1 = self.width / 0.5;
        self.stx = 0.0;
        self.fx = f;
        self.gx = g;
        self.sty = 0.0;
        self.fy = f;
        self.gy = g;
        self.stmin = 0.0;
        self.stmax = stp + 4.0 * stp;
        Task::Fg
    }

    /// One iteration at step `stp` with value `f` and derivative `g`; updates `stp`.
    fn iterate(&mut self, stp: &mut f64, f: f64, g: f64) -> Task {
        let ftest = self.finit + *stp * self.gtest;
        if self.stage == 1 && f <= ftest && g >= 0.0 {
            self.stage = 2;
        }
        let warn = (self.brackt
            && (*stp <= self.stmin
                || *stp >= self.stmax
                || self.stmax - self.stmin <= self.xtol * self.stmax))
            || (*stp == self.stpmax && f <= ftest && g <= self.gtest)
            || (*stp == self.stpmin && (f > ftest || g >= self.gtest));
        if f <= ftest && g.abs() <= self.gtol * -self.ginit {
            return Task::Converged;
        }
        if warn {
            return Task::Failed;
        }
        if self.stage == 1 && f <= self.fx && f > ftest {
            let (fm, mut fxm, mut fym) = (
                f - *stp * self.gtest,
                self.fx - self.stx * self.gtest,
                self.fy - self.sty * self.gtest,
            );
            let (gm, mut gxm, mut gym) =
                (g - self.gtest, self.gx - self.gtest, self.gy - self.gtest);
            dcstep(
                &mut self.stx,
                &mut fxm,
                &mut gxm,
                &mut self.sty,
                &mut fym,
                &mut gym,
                stp,
                fm,
                gm,
                &mut self.brackt,
                self.stmin,
                self.stmax,
            );
            self.fx = fxm + self.stx * self.gtest;
            self.fy = fym + self.sty * self.gtest;
            self.gx = gxm + self.gtest;
            self.gy = gym + self.gtest;
        } else {
            dcstep(
                &mut self.stx,
                &mut self.fx,
                &mut self.gx,
                &mut self.sty,
                &mut self.fy,
                &mut self.gy,
                stp,
                f,
                g,
                &mut self.brackt,
                self.stmin,
                self.stmax,
            );
        }
        if self.brackt {
            if (self.sty - self.stx).abs() >= 0.66 * self.width1 {
                *stp = self.stx + 0.5 * (self.sty - self.stx);
            }
            self.width1 = self.width;
            self.width = (self.sty - self.stx).abs();
            self.stmin = self.stx.min(self.sty);
            self.stmax = self.stx.max(self.sty);
        } else {
            self.stmin = *stp + 1.1 * (*stp - self.stx);
            self.stmax = *stp + 4.0 * (*stp - self.stx);
        }
        *stp = stp.clamp(self.stpmin, self.stpmax);
        if self.brackt
            && (*stp <= self.stmin
                || *stp >= self.stmax
                || self.stmax - self.stmin <= self.xtol * self.stmax)
        {
            *stp = self.stx;
        }
        Task::Fg
    }
}

/// MINPACK's DCSTEP: the safeguarded step of DCSRCH and the update of the interval.
#[allow(clippy::too_many_arguments)] // MINPACK's signature
fn dcstep(
    stx: &mut f64,
    fx: &mut f64,
    dx: &mut f64,
    sty: &mut f64,
    fy: &mut f64,
    dy: &mut f64,
    stp: &mut f64,
    fp: f64,
    dp: f64,
    brackt: &mut bool,
    stpmin: f64,
    stpmax: f64,
) {
    let sign = |v: f64| {
        if v > 0.0 {
            1.0
        } else if v < 0.0 {
            -1.0
        } else {
            0.0
        }
    };
    let sgnd = sign(dp) * sign(*dx);
    let stpf;
    if fp > *fx {
        let theta = 3.0 * (*fx - fp) / (*stp - *stx) + *dx + dp;
        let s = theta.abs().max(dx.abs()).max(dp.abs());
        let mut gamma = s * ((theta / s).powi(2) - (*dx / s) * (dp / s)).sqrt();
        if *stp < *stx {
            gamma = -gamma;
        }
        let p = (gamma - *dx) + theta;
        let q = ((gamma - *dx) + gamma) + dp;
        let r = p / q;
        let stpc = *stx + r * (*stp - *stx);
        let stpq = *stx + ((*dx / ((*fx - fp) / (*stp - *stx) + *dx)) / 2.0) * (*stp - *stx);
        stpf = if (stpc - *stx).abs() <= (stpq - *stx).abs() {
            stpc
        } else {
            stpc + (stpq - stpc) / 2.0
        };
        *brackt = true;
    } else if sgnd < 0.0 {
        let theta = 3.0 * (*fx - fp) / (*stp - *stx) + *dx + dp;
        let s = theta.abs().max(dx.abs()).max(dp.abs());
        let mut gamma = s * ((theta / s).powi(2) - (*dx / s) * (dp / s)).sqrt();
        if *stp > *stx {
            gamma = -gamma;
        }
        let p = (gamma - dp) + theta;
        let q = ((gamma - dp) + gamma) + *dx;
        let r = p / q;
        let stpc = *stp + r * (*stx - *stp);
        let stpq = *stp + (dp / (dp - *dx)) * (*stx - *stp);
        stpf = if (stpc - *stp).abs() > (stpq - *stp).abs() {
            stpc
        } else {
            stpq
        };
        *brackt = true;
    } else if dp.abs() < dx.abs() {
        let theta = 3.0 * (*fx - fp) / (*stp - *stx) + *dx + dp;
        let s = theta.abs().max(dx.abs()).max(dp.abs());
        let mut gamma = s * (0f64.max((theta / s).powi(2) - (*dx / s) * (dp / s))).sqrt();
        if *stp > *stx {
            gamma = -gamma;
        }
        let p = (gamma - dp) + theta;
        let q = (gamma + (*dx - dp)) + gamma;
        let r = p / q;
        let stpc = if r < 0.0 && gamma != 0.0 {
            *stp + r * (*stx - *stp)
        } else if *stp > *stx {
            stpmax
        } else {
            stpmin
        };
        let stpq = *stp + (dp / (dp - *dx)) * (*stx - *stp);
        if *brackt {
            let mut f = if (stpc - *stp).abs() < (stpq - *stp).abs() {
                stpc
            } else {
                stpq
            };
            if *stp > *stx {
                f = f.min(*stp + 0.66 * (*sty - *stp));
            } else {
                f = f.max(*stp + 0.66 * (*sty - *stp));
            }
            stpf = f;
        } else {
            let f = if (stpc - *stp).abs() > (stpq - *stp).abs() {
                stpc
            } else {
                stpq
            };
            stpf = f.clamp(stpmin, stpmax);
        }
    } else if *brackt {
        let theta = 3.0 * (fp - *fy) / (*sty - *stp) + *dy + dp;
        let s = theta.abs().max(dy.abs()).max(dp.abs());
        let mut gamma = s * ((theta / s).powi(2) - (*dy / s) * (dp / s)).sqrt();
        if *stp > *sty {
            gamma = -gamma;
        }
        let p = (gamma - dp) + theta;
        let q = ((gamma - dp) + gamma) + *dy;
        let r = p / q;
        stpf = *stp + r * (*sty - *stp);
    } else if *stp > *stx {
        stpf = stpmax;
    } else {
        stpf = stpmin;
    }
    if fp > *fx {
        *sty = *stp;
        *fy = fp;
        *dy = dp;
    } else {
        if sgnd < 0.0 {
            *sty = *stx;
            *fy = *fx;
            *dy = *dx;
        }
        *stx = *stp;
        *fx = fp;
        *dx = dp;
    }
    *stp = stpf;
}

/// scipy's `line_search_wolfe1`: DCSRCH from the step `min(1, 1.01 · 2 (f − f_old) / f'(0))`
/// (1 when that is negative), `c1 = 1e-4`, `c2 = 0.4`, `xtol = 1e-14`, steps in
/// `[1e-100, 1e100]`, at most 100 evaluations. Returns the step and its point.
fn wolfe1(prob: &Problem, x: &[f64], p: &[f64], f0: f64, d0: f64, old_f: f64) -> Option<Probe> {
    let mut a = if d0 != 0.0 {
        let a = (1.01 * 2.0 * (f0 - old_f) / d0).min(1.0);
        if a < 0.0 { 1.0 } else { a }
    } else {
        1.0
    };
    let mut xt = vec![0.0; x.len()];
    let mut search = Dcsrch::new(1e-4, 0.4, 1e-14, 1e-100, 1e100);
    let mut task = search.start(a, f0, d0);
    let mut last: Option<Probe> = None;
    for _ in 0..100 {
        match task {
            Task::Failed => return None,
            Task::Converged => return last,
            Task::Fg => {}
        }
        if !a.is_finite() {
            return None;
        }
        let t = probe(prob, x, p, a, &mut xt);
        let (f, d) = (t.f, t.d);
        last = Some(t);
        task = search.iterate(&mut a, f, d);
    }
    None
}

/// Minimises `−Q` from `x` as scipy's `minimize(method="CG")` does (crowd-kit's M-step):
/// Polak-Ribière+ conjugate gradients, each step from DCSRCH ([`wolfe1`]) and accepted only if
/// the next direction still descends (`pᵀg ≤ −0.01 gᵀg`) or the gradient is small enough, else
/// from a strong-Wolfe search with the same condition ([`line_search`], scipy's fallback); at
/// most `max_iter` iterations, until the largest gradient entry is at most `gtol`.
fn conjugate_gradient(prob: &Problem, x: &mut [f64], max_iter: usize, gtol: f64) {
    let n = x.len();
    let mut g = vec![0.0; n];
    let mut f = prob.value_grad(x, &mut g);
    let mut old_f = f + dot(&g, &g).sqrt() / 2.0;
    let mut p: Vec<f64> = g.iter().map(|v| -v).collect();
    let mut gnorm = inf_norm(&g);
    let mut k = 0;
    while gnorm > gtol && k < max_iter {
        let delta = dot(&g, &g);
        let d0 = dot(&g, &p);
        // The next direction from a step: Polak-Ribière+ (β = max(0, (g₁ − g)ᵀg₁ / gᵀg)).
        let next = |t: &Probe| -> (Vec<f64>, f64, bool) {
            let beta = (dot(&t.g, &t.g) - dot(&t.g, &g)) / delta;
            let beta = if beta.is_finite() { beta.max(0.0) } else { 0.0 };
            let p1: Vec<f64> = t.g.iter().zip(&p).map(|(gi, pi)| -gi + beta * pi).collect();
            let gn = inf_norm(&t.g);
            let ok = gn <= gtol || dot(&p1, &t.g) <= -0.01 * dot(&t.g, &t.g);
            (p1, gn, ok)
        };
        let mut chosen = wolfe1(prob, x, &p, f, d0, old_f).and_then(|t| {
            let (p1, gn, ok) = next(&t);
            ok.then_some((t, p1, gn))
        });
        if chosen.is_none() {
            chosen = line_search(prob, x, &p, f, d0, 1.0).and_then(|t| {
                let (p1, gn, ok) = next(&t);
                ok.then_some((t, p1, gn))
            });
        }
        let Some((t, p1, gn)) = chosen else {
            break;
        };
        for (xi, pi) in x.iter_mut().zip(&p) {
            *xi += t.a * pi;
        }
        old_f = f;
        f = t.f;
        g = t.g;
        p = p1;
        gnorm = gn;
        k += 1;
    }
}

/// GLAD by EM, as crowd-kit 1.4's `GLAD`: uniform label priors (fixed), `α_w = β_t = 1` at the
/// start with standard-normal priors around 1 on both; the E-step computes each task's label
/// posterior in log space; the M-step maximises the expected log-likelihood plus the log-priors
/// over all `α` and `β` with conjugate gradients (`m_step_max_iter` iterations, gradient
/// tolerance `m_step_tol`); iteration stops when the expected log-likelihood per (vote,
/// label) row improves by less than `tol`. Labels are the posterior argmax (ties to the label
/// that sorts first). The M-step follows scipy's conjugate gradients step for step (MINPACK's
/// DCSRCH line search, scipy's descent condition and fallback), so the fit follows crowd-kit's
/// path; sums are taken in another order than pandas', so the parameters agree to rounding, not
/// bitwise.
///
/// # Errors
/// [`crate::ConsensusError::OutOfRange`] for `max_iter` of 0 or a negative / non-finite `tol`.
///
/// # Examples
/// ```
/// use apo_consensus::{GladConfig, Votes, glad};
/// let votes = Votes::from_triples([
///     ("t1", "good", "x"), ("t1", "bad", "y"), ("t1", "ok", "x"),
///     ("t2", "good", "y"), ("t2", "bad", "x"), ("t2", "ok", "y"),
/// ])?;
/// let g = glad(&votes, &GladConfig::default())?;
/// assert_eq!(votes.label_name(g.consensus[0].label), "x");
/// assert_eq!(votes.label_name(g.consensus[1].label), "y");
/// # Ok::<(), apo_consensus::ConsensusError>(())
/// ```
pub fn glad(votes: &Votes, config: &GladConfig) -> Result<Glad> {
    crate::aggregate::check_iterations(config.max_iter, config.tol)?;
    let (tasks, workers, k) = (
        votes.tasks().len(),
        votes.workers().len(),
        votes.labels().len(),
    );
    let entries = votes.entries();
    let mut x: Vec<f64> = vec![1.0; workers + tasks];
    let ln_k1 = ((k - 1).max(1) as f64).ln();
    let ln_prior = -(k.max(1) as f64).ln();
    let e_step = |x: &[f64]| -> Vec<Vec<f64>> {
        let (alpha, beta) = x.split_at(workers);
        let mut lp = vec![vec![0.0; k]; tasks];
        for &(t, w, l) in entries {
            let z = alpha[w] * beta[t].exp();
            let (log_s, log_1ms) = (-softplus(-z), -softplus(z) - ln_k1);
            for (c, v) in lp[t].iter_mut().enumerate() {
                *v += if c == l { log_s } else { log_1ms };
            }
        }
        for row in &mut lp {
            let m = row
                .iter()
                .fold(f64::NEG_INFINITY, |a, &b| a.max(b + ln_prior));
            let mut total = 0.0;
            for v in row.iter_mut() {
                *v = (*v + ln_prior - m).exp();
                total += *v;
            }
            row.iter_mut().for_each(|v| *v /= total);
        }
        lp
    };
    let q_of = |prob: &Problem, x: &[f64]| -> f64 {
        let mut g = vec![0.0; x.len()];
        -prob.value_grad(x, &mut g)
    };
    let rows = (entries.len() * k).max(1) as f64;
    let mut post = e_step(&x);
    let mut prob = Problem {
        entries,
        workers,
        labels: k,
        p: entries.iter().map(|&(t, _, l)| post[t][l]).collect(),
    };
    // crowd-kit compares the first iteration's per-row value with this unscaled one.
    let mut q = q_of(&prob, &x);
    let mut history = Vec::new();
    for _ in 0..config.max_iter {
        let last = q;
        post = e_step(&x);
        prob.p = entries.iter().map(|&(t, _, l)| post[t][l]).collect();
        conjugate_gradient(&prob, &mut x, config.m_step_max_iter, config.m_step_tol);
        q = q_of(&prob, &x) / rows;
        history.push(q);
        if q - last < config.tol {
            break;
        }
    }
    // crowd-kit's posteriors are those of the last E-step.
    let consensus = crate::aggregate::finish(votes, post.clone());
    let (alphas, betas) = x.split_at(workers);
    Ok(Glad {
        consensus,
        posteriors: post,
        alphas: alphas.to_vec(),
        betas: betas.to_vec(),
        loss_history: history,
    })
}
