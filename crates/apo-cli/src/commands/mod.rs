//! Subcommands of `apo`: argument-level glue over the libraries.

pub mod consensus;
pub mod data;
pub mod demo;
pub mod drift;
pub mod hf;
pub mod label;
pub mod pipeline;
pub mod train;
