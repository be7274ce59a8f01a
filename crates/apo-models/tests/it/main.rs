//! apo-models' integration tests: one binary (burn is linked once).

mod model;
mod processor;
