//! Public-API tests of `cxr-max`.

mod dataset;
mod labeler;
mod metrics;
