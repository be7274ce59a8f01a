//! The library behind the `apo` command line: one module per subcommand, each a function
//! from parsed arguments and I/O handles to a summary, so tests drive them without a process.
#![warn(missing_docs)]

pub mod commands;
pub mod plot;
