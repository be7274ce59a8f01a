//! apo-train integration tests, one test binary.

mod progress;
mod train;
