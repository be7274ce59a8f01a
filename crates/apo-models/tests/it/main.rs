//! apo-models' integration tests: one binary (burn is linked once).

use std::path::PathBuf;

mod lora;
mod model;
mod processor;

/// The fixtures folder (written by `tests/fixtures/make_fixtures.py`).
fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

/// The four checkpoint folders.
const CHECKPOINTS: [&str; 4] = [
    "qwen2-vl-flat-f32",
    "qwen2-vl-nested-bf16",
    "qwen2.5-vl-flat-f16-sharded",
    "qwen2.5-vl-nested-f32",
];
