//! Public-API tests of `apo-consensus`.

mod crowdkit;
mod synth;
