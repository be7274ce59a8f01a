//! Subcommands of `apo`.

pub mod consensus;
pub mod consensus_build;
pub mod data;
pub mod demo;
pub mod drift;
pub mod drift_report;
pub mod loss;
pub mod pipeline;
pub mod train;
