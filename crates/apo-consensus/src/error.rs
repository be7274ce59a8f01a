//! The error type of this crate.

/// Everything that can be wrong with votes, weights or parameters.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConsensusError {
    /// Vote columns of different lengths ([`crate::Votes::from_columns`]).
    #[error("the vote columns differ in length: {tasks} tasks, {workers} workers, {labels} labels")]
    ColumnLengths {
        /// Length of the task column.
        tasks: usize,
        /// Length of the worker column.
        workers: usize,
        /// Length of the label column.
        labels: usize,
    },
    /// A vote with an empty task, worker or label, with its position (1-based row).
    #[error("row {row}: empty {field}")]
    EmptyField {
        /// 1-based row of the vote.
        row: usize,
        /// `task`, `worker` or `label`.
        field: &'static str,
    },
    /// A label outside the declared set, with its row.
    #[error("row {row}: label `{label}` is not one of the declared labels ({declared})")]
    UndeclaredLabel {
        /// 1-based row.
        row: usize,
        /// The label.
        label: String,
        /// The declared labels, comma-separated.
        declared: String,
    },
    /// The same worker voted twice on a task.
    #[error("row {row}: worker `{worker}` already voted on task `{task}`")]
    DuplicateVote {
        /// 1-based row.
        row: usize,
        /// Task.
        task: String,
        /// Worker.
        worker: String,
    },
    /// An interned vote whose index is outside its name list.
    #[error("entry {row}: {field} index {index} is out of range (there are {len})")]
    IndexOutOfRange {
        /// 1-based entry.
        row: usize,
        /// `task`, `worker` or `label`.
        field: &'static str,
        /// The index.
        index: usize,
        /// The length of the name list.
        len: usize,
    },
    /// An option value that is not one of the accepted names.
    #[error("{name} `{value}` is not known; expected {expected}")]
    UnknownOption {
        /// The option.
        name: &'static str,
        /// The value given.
        value: String,
        /// The accepted values.
        expected: &'static str,
    },
    /// No votes at all.
    #[error("no votes")]
    NoVotes,
    /// A weight for a worker that never voted.
    #[error("weights name worker `{0}`, who has no vote")]
    UnknownWorker(String),
    /// A negative or non-finite weight.
    #[error("weight of worker `{worker}` is {value}; weights must be finite and >= 0")]
    InvalidWeight {
        /// Worker.
        worker: String,
        /// Value.
        value: f64,
    },
    /// Every worker's weight is zero, so no vote counts.
    #[error("every worker's weight is 0, so no vote counts; give at least one worker a weight > 0")]
    ZeroWeights,
    /// A parameter out of range.
    #[error("{name} = {value} is out of range: {expected}")]
    OutOfRange {
        /// Parameter.
        name: &'static str,
        /// Value.
        value: f64,
        /// The admissible range.
        expected: &'static str,
    },
}

/// `Result` with [`ConsensusError`].
pub type Result<T, E = ConsensusError> = std::result::Result<T, E>;
