//! The error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong reading, validating or writing CXR-MAX and MIMIC-CXR-JPG data.
/// Messages name the file and, where one exists, the line or record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CxrError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A finding name that is not one of the 14 CheXpert findings.
    #[error("unknown finding `{0}`")]
    UnknownFinding(String),
    /// A label cell outside {1.0, 0.0, -1.0, blank}.
    #[error("label value `{0}` is not one of 1.0, 0.0, -1.0 or blank")]
    InvalidLabel(String),
    /// A record or row that cannot be used, with where it is and why.
    #[error("{}:{line}: {reason}", path.display())]
    Record {
        /// The file.
        path: PathBuf,
        /// 1-based line (or row + 1 for tables, counting the header).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A table without a required column, or with an unexpected header.
    #[error("{}: {reason}", path.display())]
    Schema {
        /// The file.
        path: PathBuf,
        /// What is wrong with the header.
        reason: String,
    },
    /// An image that cannot be decoded or is unusable.
    #[error("{}: {reason}", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A configuration (profiles, mapping file) that is invalid.
    #[error("{}: {reason}", path.display())]
    Config {
        /// The file (or `<embedded>`).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// `Result` with [`CxrError`] as the default error type.
pub type Result<T, E = CxrError> = std::result::Result<T, E>;
