//! The pipeline's one error type.

use std::path::PathBuf;

/// Everything that can stop a pipeline stage, with the file, field or record it concerns.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Reading or writing a file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Encoding or decoding JSON.
    #[error("{}: {source}", path.display())]
    Json {
        /// The file written or read.
        path: PathBuf,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// A configuration file or field that cannot be used.
    #[error("{}: {field}: {message}", path.display())]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// The field (`consensus.method`, `train`, or the TOML parser's location).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A data set with no sample to work on.
    #[error("{}: no usable sample{}", dir.display(), split.as_ref().map(|s| format!(" in split `{s}`")).unwrap_or_default())]
    Empty {
        /// The data set folder.
        dir: PathBuf,
        /// The split asked for.
        split: Option<String>,
    },
    /// The data set readers and the simulator.
    #[error(transparent)]
    Data(#[from] cxr_max::CxrError),
    /// Label aggregation, preference sets and their options.
    #[error("{context}{}{source}", if context.is_empty() { "" } else { ": " })]
    Consensus {
        /// The finding or image concerned (empty when none).
        context: String,
        /// The consensus error.
        #[source]
        source: apo_consensus::ConsensusError,
    },
    /// Drift statistics and detectors.
    #[error(transparent)]
    Drift(#[from] apo_drift::DriftError),
    /// Training, checkpoints and evaluation.
    #[error(transparent)]
    Train(#[from] apo_train::TrainError),
    /// An output path that names a folder, FIFO, device or socket (or a link to one).
    #[error(transparent)]
    UnsafeOutput(#[from] cxr_max::output::UnsafeTarget),
    /// What an [`crate::Observer`] reported (drawing a plot, for instance).
    #[error("{0}")]
    Observer(String),
}

impl From<apo_consensus::ConsensusError> for PipelineError {
    fn from(source: apo_consensus::ConsensusError) -> Self {
        PipelineError::Consensus {
            context: String::new(),
            source,
        }
    }
}

impl PipelineError {
    /// An I/O error of `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> PipelineError {
        let path = path.into();
        move |source| PipelineError::Io { path, source }
    }

    /// A JSON error of `path`.
    pub fn json(path: impl Into<PathBuf>) -> impl FnOnce(serde_json::Error) -> PipelineError {
        let path = path.into();
        move |source| PipelineError::Json { path, source }
    }
}

/// `Result` with [`PipelineError`].
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;
