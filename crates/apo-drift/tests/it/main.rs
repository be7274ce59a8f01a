//! Public-API tests of `apo-drift`.

mod agreement;
mod detectors;
mod divergence;
mod stream;
mod streams;
