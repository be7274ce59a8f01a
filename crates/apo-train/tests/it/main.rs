//! apo-train integration tests, one test binary.

mod hf;
mod parallel;
mod progress;
mod train;
