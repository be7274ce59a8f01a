//! Watching a stage's steps: a terminal progress bar, or nothing.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use super::StepMetrics;

/// Something that watches steps (a progress bar, a test).
pub trait Observer {
    /// Called after every optimiser step.
    fn step(&mut self, total: usize, metrics: &StepMetrics);
}

/// A one-line progress bar on standard error, drawn only when it is a terminal.
#[derive(Debug, Default)]
pub struct ProgressBar {
    started: Option<Instant>,
}

impl Observer for ProgressBar {
    fn step(&mut self, total: usize, m: &StepMetrics) {
        let started = *self.started.get_or_insert_with(Instant::now);
        let mut err = std::io::stderr();
        if !err.is_terminal() {
            return;
        }
        let width = 30;
        let done = width * m.step / total.max(1);
        let elapsed = started.elapsed().as_secs_f64();
        let _ = write!(
            err,
            "\r[{}] [{}{}] {}/{} loss {:.4} lr {:.2e} {:.0} tok/s {:.0}s ",
            m.stage,
            "#".repeat(done),
            "-".repeat(width - done),
            m.step,
            total,
            m.loss,
            m.lr,
            m.tokens_per_s,
            elapsed
        );
        if m.step == total {
            let _ = writeln!(err);
        }
    }
}

/// Observes nothing.
#[derive(Debug, Default)]
pub struct Quiet;

impl Observer for Quiet {
    fn step(&mut self, _: usize, _: &StepMetrics) {}
}
