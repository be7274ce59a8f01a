//! The error type of this crate.

/// Everything that can be wrong with the input of a drift statistic or detector.
///
/// # Examples
/// ```
/// use apo_drift::{DriftError, js_divergence};
/// let err = js_divergence(&[0.5, 0.5], &[1.0]).unwrap_err();
/// assert!(matches!(err, DriftError::LengthMismatch { .. }));
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DriftError {
    /// An input that must not be empty is empty.
    #[error("{what} is empty")]
    Empty {
        /// Which input.
        what: String,
    },
    /// A value is NaN or infinite.
    #[error("{what} must be finite, got {value}")]
    NonFinite {
        /// Which input and position, e.g. `stream[17]`.
        what: String,
        /// The offending value.
        value: f64,
    },
    /// Two inputs that must agree in length (or shape) do not.
    #[error("length mismatch: {what} has {got} entries but {expected} were expected")]
    LengthMismatch {
        /// Which input.
        what: String,
        /// The expected length.
        expected: usize,
        /// The length found.
        got: usize,
    },
    /// A probability vector has a negative entry or does not sum to 1.
    #[error("{what} is not a probability distribution: {reason}")]
    NotADistribution {
        /// Which input.
        what: String,
        /// Why.
        reason: String,
    },
    /// KL divergence is infinite: `q` is 0 where `p` is not. Add smoothing.
    #[error(
        "KL divergence is infinite: q[{index}] = 0 where p[{index}] = {p}; use additive smoothing"
    )]
    ZeroProbability {
        /// The category index.
        index: usize,
        /// `p` at that index.
        p: f64,
    },
    /// A parameter is outside its admissible range.
    #[error("{name} = {value} is out of range: {expected}")]
    OutOfRange {
        /// Parameter name.
        name: String,
        /// The value given.
        value: f64,
        /// The admissible range, in words.
        expected: &'static str,
    },
    /// A parameter value of the wrong kind (a word where a number goes, an unknown mode).
    #[error("{name} = `{value}` is not {expected}")]
    BadValue {
        /// Parameter name.
        name: String,
        /// The value as typed.
        value: String,
        /// What would be accepted, in words (`a number`).
        expected: &'static str,
    },
    /// A parameter name that the detector does not have.
    #[error("unknown parameter `{name}` for {detector}; expected one of: {expected}")]
    UnknownParameter {
        /// Detector name.
        detector: &'static str,
        /// The name given.
        name: String,
        /// The admissible names.
        expected: &'static str,
    },
    /// A detector name that is not known.
    #[error("unknown detector `{0}`; expected one of: adwin, page-hinkley, ddm, kswin")]
    UnknownDetector(String),
    /// An index (teacher, category) outside its range.
    #[error("{what} index {index} is out of range (there are {len})")]
    IndexOutOfRange {
        /// What is indexed.
        what: &'static str,
        /// The index given.
        index: usize,
        /// The number of valid indices.
        len: usize,
    },
    /// Raters per item differ where a statistic requires a constant number.
    #[error(
        "item {item} has {got} ratings but item 0 has {expected}; Fleiss' kappa needs the same number of raters per item"
    )]
    UnequalRaters {
        /// The item.
        item: usize,
        /// Raters on item 0.
        expected: usize,
        /// Raters on this item.
        got: usize,
    },
}

/// `Result` with [`DriftError`] as the default error type.
pub type Result<T, E = DriftError> = std::result::Result<T, E>;

pub(crate) fn check_finite(what: impl FnOnce() -> String, value: f64) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(DriftError::NonFinite {
            what: what(),
            value,
        })
    }
}
