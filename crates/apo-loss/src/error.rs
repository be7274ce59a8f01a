//! The error type of this crate.

/// Everything that can be wrong with the input of a preference objective.
///
/// Messages name the offending field and, where one exists, the sequence
/// (`chosen`, `rejected[2]`) or batch row.
///
/// # Examples
/// ```
/// use apo_loss::{Example, LossConfig, LossError, Sequence};
/// let ex = Example::new(Sequence::new(-1.0, -1.0), vec![Sequence::new(f64::NAN, -1.0)]);
/// let err = LossConfig::default().init()?.compute(&ex).unwrap_err();
/// assert!(matches!(err, LossError::NonFinite { .. }));
/// assert_eq!(err.to_string(), "rejected[0].policy must be finite, got NaN");
/// # Ok::<(), LossError>(())
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LossError {
    /// An example (or a batch row) has no rejected sequence to compare the chosen one with.
    #[error("no rejected sequences{}: a preference needs at least one negative", row_suffix(*.row))]
    NoNegatives {
        /// Batch row, when the input is a batch.
        row: Option<usize>,
    },
    /// Two inputs that must have the same length (or shape) do not.
    #[error("length mismatch: {what} has {got} entries but {expected} were expected")]
    LengthMismatch {
        /// Which input is the wrong length.
        what: String,
        /// The length implied by the other inputs.
        expected: usize,
        /// The length found.
        got: usize,
    },
    /// An input that must be a finite number is NaN or infinite.
    #[error("{what} must be finite, got {value}")]
    NonFinite {
        /// Which input, e.g. `rejected[3].policy`.
        what: String,
        /// The offending value.
        value: f64,
    },
    /// `beta` must be a finite positive number.
    #[error("beta must be finite and > 0, got {0}")]
    InvalidBeta(f64),
    /// A hyperparameter is outside its documented range.
    #[error("{name} = {value} is out of range: {expected}")]
    OutOfRange {
        /// Parameter name as it appears in configs (`label_smoothing`, `sft_weight`, ...).
        name: &'static str,
        /// The value given.
        value: f64,
        /// The admissible range, in words.
        expected: &'static str,
    },
    /// The objective does not use an option that was set to a non-default value.
    #[error("objective `{objective}` does not use `{option}`; remove it or pick another objective")]
    UnsupportedOption {
        /// Objective name.
        objective: &'static str,
        /// Option name.
        option: &'static str,
    },
    /// A per-negative weight is negative or not finite.
    #[error("weights[{index}] = {value}: weights must be finite and >= 0")]
    InvalidWeight {
        /// Index of the negative.
        index: usize,
        /// The value given.
        value: f64,
    },
    /// Every negative of an example has weight zero (or is masked out).
    #[error("every negative{} has weight zero or is masked out", row_suffix(*.row))]
    NoActiveNegatives {
        /// Batch row, when the input is a batch.
        row: Option<usize>,
    },
    /// The objective needs the reference log-prob of a sequence and none was given.
    #[error("{sequence} has no reference log-prob, which objective `{objective}` needs")]
    MissingReference {
        /// `chosen` or `rejected[i]`.
        sequence: String,
        /// Objective name.
        objective: &'static str,
    },
    /// The objective or option needs the token count of a sequence and none was given.
    #[error("{sequence} has no token count, which {needed_by} needs")]
    MissingTokens {
        /// `chosen` or `rejected[i]`.
        sequence: String,
        /// What needs it (`objective ipo`, `aggregation mean`, `sft_weight`).
        needed_by: String,
    },
    /// A token count is zero, so a per-token mean is undefined.
    #[error("{sequence} has a token count of 0; sequences must have at least one scored token")]
    ZeroTokens {
        /// `chosen` or `rejected[i]`.
        sequence: String,
    },
    /// A tensor has the wrong shape.
    #[error("shape mismatch in {op}: expected {expected}, got {got}")]
    Shape {
        /// The operation or input.
        op: &'static str,
        /// The expected shape, in words.
        expected: String,
        /// The shape found.
        got: String,
    },
    /// A target token id is outside the vocabulary at a position that is scored.
    #[error("target token id {id} is outside the vocabulary of size {vocab} at a scored position")]
    TargetOutOfRange {
        /// The offending id (the smallest or largest found).
        id: i64,
        /// Vocabulary size.
        vocab: usize,
    },
    /// A name that is not one of the known objectives or aggregations.
    #[error("unknown {kind} `{name}`; expected one of: {expected}")]
    UnknownName {
        /// `objective` or `aggregation`.
        kind: &'static str,
        /// The name given.
        name: String,
        /// The admissible names.
        expected: &'static str,
    },
}

fn row_suffix(row: Option<usize>) -> String {
    match row {
        Some(r) => format!(" in batch row {r}"),
        None => String::new(),
    }
}

/// `Result` with [`LossError`] as the default error type.
pub type Result<T, E = LossError> = std::result::Result<T, E>;
