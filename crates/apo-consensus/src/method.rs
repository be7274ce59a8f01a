//! The label aggregation methods by name.

use crate::{ConsensusError, Result};

/// A label aggregation method: [`crate::majority_vote`], [`crate::weighted_vote`] or
/// [`crate::dawid_skene`], by the names a command line or a config file uses.
///
/// # Examples
/// ```
/// use apo_consensus::Method;
/// let m: Method = "dawid-skene".parse()?;
/// assert_eq!(m, Method::DawidSkene);
/// assert_eq!(m.to_string(), "dawid-skene");
/// assert!("em".parse::<Method>().is_err());
/// # Ok::<(), apo_consensus::ConsensusError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum Method {
    /// The most frequent label ([`crate::majority_vote`]).
    Majority,
    /// Votes weighted per teacher ([`crate::weighted_vote`]).
    Weighted,
    /// Class priors and one confusion matrix per teacher, by EM ([`crate::dawid_skene`]).
    #[default]
    DawidSkene,
}

impl Method {
    /// Every method, in the order of their names in messages.
    pub const ALL: [Method; 3] = [Method::Majority, Method::Weighted, Method::DawidSkene];

    /// The name (`majority`, `weighted`, `dawid-skene`).
    pub fn name(self) -> &'static str {
        match self {
            Method::Majority => "majority",
            Method::Weighted => "weighted",
            Method::DawidSkene => "dawid-skene",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Method {
    type Err = ConsensusError;

    /// One of the names of [`Method::name`], exactly.
    ///
    /// # Errors
    /// [`ConsensusError::UnknownOption`] listing the valid names.
    fn from_str(s: &str) -> Result<Self> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| ConsensusError::UnknownOption {
                name: "aggregation method",
                value: s.to_owned(),
                expected: "majority, weighted or dawid-skene",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_valid_ones() {
        for m in Method::ALL {
            assert_eq!(m.to_string().parse::<Method>().unwrap(), m);
        }
        assert_eq!("weighted".parse::<Method>().unwrap(), Method::Weighted);
        assert_eq!(Method::default(), Method::DawidSkene);
        for bad in ["Majority", "dawid_skene", "", "em"] {
            let err = bad.parse::<Method>().unwrap_err();
            assert!(
                matches!(&err, ConsensusError::UnknownOption { value, .. } if value == bad),
                "{err:?}"
            );
            assert_eq!(
                err.to_string(),
                format!(
                    "aggregation method `{bad}` is not known; expected majority, weighted or dawid-skene"
                )
            );
        }
    }
}
