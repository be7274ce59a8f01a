//! Subcommands of `apo`.

pub mod demo;
pub mod drift;
pub mod loss;
