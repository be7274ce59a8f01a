//! Watching a stage's steps ([`super::TrainProgress`] shows them).

use super::StepMetrics;

/// Something that watches steps (a progress bar, a test).
pub trait Observer {
    /// Called after every optimiser step.
    fn step(&mut self, total: usize, metrics: &StepMetrics);
}

/// Observes nothing.
#[derive(Debug, Default)]
pub struct Quiet;

impl Observer for Quiet {
    fn step(&mut self, _: usize, _: &StepMetrics) {}
}
