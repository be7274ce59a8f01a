//! Tests of the `apo` binary and its command modules, one test binary.

mod cli;
mod commands;
mod hf;
mod pipeline_plots;
mod plot;
mod train_kill;
