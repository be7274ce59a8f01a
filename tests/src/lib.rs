//! Cross-crate end-to-end tests of the apo workspace live in `tests/`.
