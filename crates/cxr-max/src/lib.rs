//! CXR-MAX and MIMIC-CXR-JPG: the chest X-ray domain of the APO workspace.
//!
//! - The 14 CheXpert findings ([`Finding`]) and label statuses ([`LabelStatus`], [`Findings`]).
//! - A rule-based findings labeler ([`findings::extract`]) that reads trajectories and
//!   reports sentence by sentence.
//! - A simulator ([`sim::synthesize`], `apo synth`) that writes CXR-MAX records and
//!   MIMIC-CXR-JPG tables and images in the real on-disk layout.
#![warn(missing_docs)]

#[cfg(feature = "burn")]
pub mod burn_data;
pub mod dataset;
mod error;
pub mod eval;
mod finding;
pub mod images;
mod labeler;
pub mod output;
#[cfg(feature = "parquet")]
mod parquet;
mod records;
pub mod rng;
pub mod sim;
pub mod tables;

pub use error::{CxrError, Result};
pub use finding::{Finding, Findings, LabelStatus};
pub use records::{
    FieldMapping, Format, KNOWN_TEACHERS, Location, RecordsRead, Rejected, Sample, Trajectory,
    read_records,
};

/// The findings labeler.
pub mod findings {
    pub use crate::labeler::reports::{
        LabelOptions, LabelSummary, RejectedReport, ReportFormat, label_reports,
    };
    pub use crate::labeler::{
        Consistency, Extraction, Labeler, LabelerError, Lexicon, Mention, extract, split_sentences,
        statement,
    };
}
