//! Cross-crate end-to-end tests, one binary (one link of burn and every crate).

mod consensus_build;
mod demo;
mod drift_report;
mod loss_cli;
mod loss_reference;
mod pipeline_run;
