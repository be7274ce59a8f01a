//! apo-train integration tests, one test binary.

mod hf;
mod progress;
mod train;
