//! Subcommands of `apo`.

pub mod demo;
pub mod loss;
