//! Cross-crate end-to-end tests, one binary (one link of burn and every crate).

mod consensus_build;
mod demo;
mod drift_report;
mod loss_cli;
mod loss_reference;
mod pipeline_run;

/// The CPU backend's random generator is process-wide, and the tests of this binary run on
/// threads of one process: the tests that train (and so draw initial weights and dropout
/// from it) hold this lock, or two of them interleave their draws and neither is
/// reproducible.
static TRAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes [`TRAINING`] (a poisoned lock from a failed test is taken as well).
fn training() -> std::sync::MutexGuard<'static, ()> {
    TRAINING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
