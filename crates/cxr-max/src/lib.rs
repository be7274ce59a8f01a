//! CXR-MAX and MIMIC-CXR-JPG: the chest X-ray domain of the APO workspace.
//!
//! - The 14 CheXpert findings ([`Finding`]) and label statuses ([`LabelStatus`], [`Findings`]).
//! - A rule-based findings labeler ([`findings::extract`]) that reads trajectories and
//!   reports sentence by sentence.
//! - A simulator ([`sim::synthesize`], `apo synth`) that writes CXR-MAX records and
//!   MIMIC-CXR-JPG tables and images in the real on-disk layout.
#![warn(missing_docs)]

mod error;
mod finding;
mod labeler;
pub mod rng;
pub mod sim;

pub use error::{CxrError, Result};
pub use finding::{Finding, Findings, LabelStatus};

/// The findings labeler.
pub mod findings {
    pub use crate::labeler::{Extraction, Mention, extract, split_sentences};
}
