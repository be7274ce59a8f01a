//! Public-API tests of `apo-consensus`.

mod crowdkit;
#[cfg(feature = "csv")]
mod csv;
mod properties;
mod synth;
