//! Consensus of drifting teachers.
//!
//! APO prefers a consensus over every drifting teacher; this crate finds the consensus. Label
//! aggregation over N teachers' votes per item ([`Votes`]): [`majority_vote`],
//! [`weighted_vote`] (a teacher that drifts counts less) and [`dawid_skene`] (class priors and
//! one confusion matrix per teacher, by EM), each returning per item the label, its posterior
//! or support, and how many teachers agree and dissent ([`Consensus`]; [`Votes::split_workers`]
//! names them).
//!
//! # Examples
//! ```
//! use apo_consensus::{Votes, majority_vote};
//! let votes = Votes::from_triples([("img1", "GPT-5", "effusion"), ("img1", "Grok-4", "effusion"), ("img1", "Moonshot", "none")])?;
//! let c = majority_vote(&votes);
//! assert_eq!(votes.label_name(c[0].label), "effusion");
//! assert!((c[0].confidence - 2.0 / 3.0).abs() < 1e-12);
//! # Ok::<(), apo_consensus::ConsensusError>(())
//! ```
//!
//! # Feature flags
//! - `serde`: `Serialize`/`Deserialize` for votes and results.
//! - `csv`: the `csv` module reads `task,worker,label` votes and `worker,weight` weights.
#![warn(missing_docs)]

mod aggregate;
#[cfg(feature = "csv")]
pub mod csv;
mod error;
#[cfg(feature = "serde")]
pub mod export;
mod glad;
mod mace;
mod method;
mod prefs;
mod synth;
mod votes;

pub use aggregate::{
    Consensus, DawidSkene, DawidSkeneConfig, check_weights, dawid_skene, majority_vote,
    one_coin_dawid_skene, reliability_weights, wawa, weighted_vote,
};
pub use error::{ConsensusError, Result};
pub use glad::{Glad, GladConfig, glad};
pub use mace::{Mace, MaceConfig, MaceMethod, mace};
pub use method::Method;
pub use prefs::{
    Negative, NegativePolicy, NegativeWeighting, PreferenceConfig, PreferenceInput, PreferenceSet,
    SkipReason, build_preference,
};
pub use synth::{
    Claim, ClaimConfig, ClaimExtractor, ClaimSynthesizer, Polarity, PositiveStyle, Provenance,
    Reading, Source, Synthesis, Synthesizer, similarity,
};
pub use votes::Votes;
