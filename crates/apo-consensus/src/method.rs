//! The label-aggregation methods by name, as commands and configuration files spell them.

use crate::error::{ConsensusError, Result};

/// A label-aggregation method: [`crate::majority_vote`], [`crate::weighted_vote`],
/// [`crate::dawid_skene`], [`crate::one_coin_dawid_skene`], [`crate::wawa`], [`crate::glad`] or
/// [`crate::mace`].
///
/// ```
/// use apo_consensus::Method;
/// let m: Method = "dawid-skene".parse()?;
/// assert_eq!(m, Method::DawidSkene);
/// assert_eq!(m.to_string(), "dawid-skene");
/// assert!("zero-shot".parse::<Method>().is_err());
/// # Ok::<(), apo_consensus::ConsensusError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum Method {
    /// Majority vote (ties to the label that sorts first).
    Majority,
    /// Weighted vote (static weights or each worker's reliability).
    Weighted,
    /// Dawid-Skene EM.
    #[default]
    DawidSkene,
    /// One-coin Dawid-Skene: one skill per worker ([`crate::one_coin_dawid_skene`]).
    OneCoinDawidSkene,
    /// Worker agreement with aggregate ([`crate::wawa`]).
    Wawa,
    /// Worker abilities and task difficulties ([`crate::glad`]).
    Glad,
    /// Multi-annotator competence estimation ([`crate::mace`]) as crowd-kit 1.4 computes it.
    Mace,
    /// [`crate::mace`] as published (one order of workers and labels throughout).
    MacePublished,
}

impl Method {
    /// Every method, in the order the names are listed.
    pub const ALL: [Method; 8] = [
        Method::Majority,
        Method::Weighted,
        Method::DawidSkene,
        Method::OneCoinDawidSkene,
        Method::Wawa,
        Method::Glad,
        Method::Mace,
        Method::MacePublished,
    ];

    /// The name commands and configuration files use.
    pub fn name(self) -> &'static str {
        match self {
            Method::Majority => "majority",
            Method::Weighted => "weighted",
            Method::DawidSkene => "dawid-skene",
            Method::OneCoinDawidSkene => "one-coin-dawid-skene",
            Method::Wawa => "wawa",
            Method::Glad => "glad",
            Method::Mace => "mace",
            Method::MacePublished => "mace-published",
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

    /// `majority`, `weighted`, `dawid-skene` (or `ds`), `one-coin-dawid-skene`, `wawa`, `glad`, `mace`, `mace-published`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "majority" => Ok(Method::Majority),
            "weighted" => Ok(Method::Weighted),
            "dawid-skene" | "ds" => Ok(Method::DawidSkene),
            "one-coin-dawid-skene" | "one-coin-ds" => Ok(Method::OneCoinDawidSkene),
            "wawa" => Ok(Method::Wawa),
            "glad" => Ok(Method::Glad),
            "mace" => Ok(Method::Mace),
            "mace-published" => Ok(Method::MacePublished),
            other => Err(ConsensusError::UnknownOption {
                name: "method",
                value: other.to_owned(),
                expected: "majority, weighted, dawid-skene, one-coin-dawid-skene, wawa, glad, mace or mace-published",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_valid_ones() {
        for m in Method::ALL {
            assert_eq!(m.name().parse::<Method>().unwrap(), m);
            assert_eq!(m.to_string(), m.name());
        }
        assert_eq!("ds".parse::<Method>().unwrap(), Method::DawidSkene);
        let e = "zero-shot".parse::<Method>().unwrap_err().to_string();
        assert_eq!(
            e,
            "method `zero-shot` is not known; expected majority, weighted, dawid-skene, one-coin-dawid-skene, wawa, glad, mace or mace-published"
        );
    }
}
