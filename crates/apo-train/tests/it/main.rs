//! apo-train integration tests, one test binary.

mod hf;
mod margin;
mod parallel;
mod progress;
mod train;
