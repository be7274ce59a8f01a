//! The error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while preparing or running training, each saying what to
/// change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A configuration value outside its range.
    #[error("config: `{field}` = {value} is out of range; {expected}")]
    Config {
        /// The field, dotted (`sft.learning_rate`).
        field: String,
        /// The value given.
        value: String,
        /// What would be accepted.
        expected: String,
    },
    /// A configuration file that does not parse.
    #[error("{path}: {message}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A checkpoint written for another model or run configuration.
    #[error(
        "{path}: this checkpoint was written with a different {what} ({found}); the run asks for {expected}. Resume with the config it was written with, or start a new run folder"
    )]
    CheckpointMismatch {
        /// The checkpoint folder.
        path: PathBuf,
        /// What differs.
        what: &'static str,
        /// What the checkpoint has.
        found: String,
        /// What the run has.
        expected: String,
    },
    /// A checkpoint that cannot be read.
    #[error(
        "{path}: corrupt or incomplete checkpoint ({message}); delete it to start over, or resume from an earlier one"
    )]
    CorruptCheckpoint {
        /// The checkpoint folder or file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A preference group without any negative.
    #[error(
        "{source_file} line {line}: preference group `{id}` has no rejected trajectory; build the sets with `apo consensus build` (which skips such items) or drop the row"
    )]
    NoNegatives {
        /// The preference file.
        source_file: PathBuf,
        /// 1-based line.
        line: usize,
        /// The item id.
        id: String,
    },
    /// A malformed preference row.
    #[error("{source_file} line {line}: {message}")]
    BadPreference {
        /// The preference file.
        source_file: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A sequence longer than the model's maximum.
    #[error(
        "{what} `{id}` has {tokens} tokens, more than the model's max_text_len = {max}; raise model.max_text_len or set data.truncate = true"
    )]
    TooLong {
        /// Trajectory or prompt.
        what: &'static str,
        /// The item id.
        id: String,
        /// Its length in tokens.
        tokens: usize,
        /// The maximum.
        max: usize,
    },
    /// A sequence longer than a Hugging Face student takes.
    #[error(
        "{what} `{id}` has {tokens} tokens, more than student.max_length = {max}; raise student.max_length or set data.truncate = true"
    )]
    TooLongForStudent {
        /// Trajectory or prompt.
        what: &'static str,
        /// The record (item id, or id/teacher).
        id: String,
        /// Its length in tokens.
        tokens: usize,
        /// The maximum.
        max: usize,
    },
    /// A stop was requested (SIGINT): the stage wrote a checkpoint after the step it was in.
    #[error(
        "stage `{stage}` interrupted after step {step}; checkpoint written to {checkpoint}; run the same command with --resume to continue"
    )]
    Interrupted {
        /// The stage.
        stage: String,
        /// The last step done.
        step: usize,
        /// The checkpoint folder written.
        checkpoint: PathBuf,
    },
    /// Another running trainer holds the stage folder.
    #[error(
        "{path}: another trainer (process {pid}) is training this stage; wait for it, or remove the file if no such process runs"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Its owner's process id.
        pid: u32,
    },
    /// A requested device that is not available.
    #[error("{0}")]
    Device(String),
    /// Data set errors.
    #[error(transparent)]
    Data(#[from] cxr_max::CxrError),
    /// Loss errors (non-finite log-probs, bad weights).
    #[error(transparent)]
    Loss(#[from] apo_loss::LossError),
    /// A Hugging Face checkpoint, adapter or input the model rejects.
    #[error(transparent)]
    Model(#[from] apo_models::ModelError),
    /// Tokenizer errors.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The run folder's `tokenizer.json` was made for another vocabulary size.
    #[error(
        "{path}: this run folder's tokenizer was trained for vocab_size = {found}, but the configuration asks for tokenizer.vocab_size = {expected}. Set tokenizer.vocab_size back to {found}, or start a new run folder (run.out); deleting {path} also trains a new tokenizer, but the run's checkpoints and models were made with the old one"
    )]
    StaleTokenizer {
        /// The run folder's tokenizer file.
        path: PathBuf,
        /// The vocabulary size it was made for (or has).
        found: usize,
        /// The configured vocabulary size.
        expected: usize,
    },
    /// A model folder that does not exist or holds no model.
    #[error("{path}: {reason}")]
    NoModel {
        /// The model folder.
        path: PathBuf,
        /// What is missing and what to do.
        reason: String,
    },
    /// An output path that names something other than a regular file.
    #[error(transparent)]
    UnsafeOutput(#[from] cxr_max::output::UnsafeTarget),
    /// File errors.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Nothing to train on.
    #[error("{0}")]
    Empty(String),
    /// One worker of a data-parallel run failed; the run stopped on every worker at the same
    /// step, and no checkpoint of that step was written.
    #[error("worker {rank} of {world} ({device}) failed: {source}")]
    Worker {
        /// The failing worker's global rank (`node_rank · devices + local index`).
        rank: usize,
        /// The number of workers.
        world: usize,
        /// Its device.
        device: String,
        /// What went wrong there.
        source: Box<TrainError>,
    },
    /// The collective (burn-collective) refused an operation or lost a peer.
    #[error("collective: {0}")]
    Collective(String),
}

/// `Result` with [`TrainError`].
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_owned(),
        source,
    }
}
