//! Rows of preference sets in the JSONL layouts that existing trainers read.
//!
//! - [`Export::Ours`]: one row per item with every negative ([`OursRow`]).
//! - [`Export::Trl`]: TRL's conversational vision DPO layout, one row per negative
//!   ([`TrlRow`]: `images`, `prompt`, `chosen`, `rejected`).
//! - [`Export::Swift`]: ms-swift's RLHF layout, one row per negative ([`SwiftRow`]:
//!   `messages` with the chosen answer last, `rejected_response`, `images`).

use std::collections::BTreeMap;

use crate::prefs::{Negative, PreferenceSet};
use crate::synth::Polarity;
use crate::{ConsensusError, Result};

/// Export layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Export {
    /// One row per item, all negatives.
    Ours,
    /// TRL `DPOTrainer`, one row per negative.
    Trl,
    /// ms-swift `swift rlhf --rlhf_type dpo`, one row per negative.
    Swift,
}

impl std::str::FromStr for Export {
    type Err = ConsensusError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ours" => Ok(Export::Ours),
            "trl" => Ok(Export::Trl),
            "swift" | "ms-swift" => Ok(Export::Swift),
            other => Err(ConsensusError::UnknownOption {
                name: "export",
                value: other.to_owned(),
                expected: "ours, trl or swift",
            }),
        }
    }
}

/// The item context a row needs besides its preference set.
#[derive(Debug, Clone, Copy)]
pub struct ItemContext<'a> {
    /// The user prompt (without an image placeholder).
    pub prompt: &'a str,
    /// Image paths.
    pub images: &'a [String],
    /// Topic names, indexed like the consensus.
    pub topics: &'a [String],
}

/// Our multi-negative row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OursRow {
    /// Item id.
    pub id: String,
    /// Prompt.
    pub prompt: String,
    /// Image paths.
    pub images: Vec<String>,
    /// The consensus trajectory.
    pub chosen: String,
    /// Every negative.
    pub rejected: Vec<Negative>,
    /// Consensus per topic name (topics without consensus are left out).
    pub consensus: BTreeMap<String, Polarity>,
    /// Mean consensus confidence.
    pub agreement: f64,
}

/// A typed content part of a TRL message.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Part {
    /// The image placeholder.
    Image,
    /// Text.
    Text {
        /// The text.
        text: String,
    },
}

/// A TRL conversational message.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrlMessage {
    /// `user` or `assistant`.
    pub role: String,
    /// Content parts.
    pub content: Vec<Part>,
}

/// A TRL vision DPO row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrlRow {
    /// The item (image) id.
    pub id: String,
    /// The teacher whose trajectory is the negative.
    pub teacher: String,
    /// The negative's weight (`--negative-weights drift`; absent when uniform). Stock
    /// trainers ignore the column: TRL's `DPOTrainer` weighs every row alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Image paths (cast to `datasets.Image` when loading).
    pub images: Vec<String>,
    /// The user turn: an image part, then the prompt text.
    pub prompt: Vec<TrlMessage>,
    /// The assistant turn with the consensus trajectory.
    pub chosen: Vec<TrlMessage>,
    /// The assistant turn with one negative.
    pub rejected: Vec<TrlMessage>,
}

/// An ms-swift message.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SwiftMessage {
    /// `user` or `assistant`.
    pub role: String,
    /// Text; the user turn starts with `<image>`.
    pub content: String,
}

/// An ms-swift RLHF row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SwiftRow {
    /// The item (image) id.
    pub id: String,
    /// The teacher whose trajectory is the negative.
    pub teacher: String,
    /// The negative's weight (`--negative-weights drift`; absent when uniform). ms-swift's DPO
    /// ignores the column and weighs every row alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// The user turn and the chosen assistant turn.
    pub messages: Vec<SwiftMessage>,
    /// One negative.
    pub rejected_response: String,
    /// Image paths.
    pub images: Vec<String>,
}

/// Our row of `set`.
pub fn ours_row(set: &PreferenceSet, ctx: &ItemContext<'_>) -> OursRow {
    OursRow {
        id: set.id.clone(),
        prompt: ctx.prompt.to_owned(),
        images: ctx.images.to_vec(),
        chosen: set.chosen.clone(),
        rejected: set.rejected.clone(),
        consensus: set
            .consensus
            .iter()
            .enumerate()
            .filter_map(|(t, c)| {
                c.map(|c| {
                    let name = ctx.topics.get(t).cloned().unwrap_or_else(|| t.to_string());
                    (name, c)
                })
            })
            .collect(),
        agreement: set.agreement,
    }
}

fn assistant(text: &str) -> Vec<TrlMessage> {
    vec![TrlMessage {
        role: "assistant".to_owned(),
        content: vec![Part::Text {
            text: text.to_owned(),
        }],
    }]
}

/// TRL rows of `set`, one per negative.
pub fn trl_rows(set: &PreferenceSet, ctx: &ItemContext<'_>) -> Vec<TrlRow> {
    let mut content = vec![Part::Image; ctx.images.len()];
    content.push(Part::Text {
        text: ctx.prompt.to_owned(),
    });
    let prompt = vec![TrlMessage {
        role: "user".to_owned(),
        content,
    }];
    set.rejected
        .iter()
        .map(|n| TrlRow {
            id: set.id.clone(),
            teacher: n.teacher.clone(),
            weight: n.weight,
            images: ctx.images.to_vec(),
            prompt: prompt.clone(),
            chosen: assistant(&set.chosen),
            rejected: assistant(&n.text),
        })
        .collect()
}

/// ms-swift rows of `set`, one per negative.
pub fn swift_rows(set: &PreferenceSet, ctx: &ItemContext<'_>) -> Vec<SwiftRow> {
    let user = SwiftMessage {
        role: "user".to_owned(),
        content: format!("{}{}", "<image>".repeat(ctx.images.len()), ctx.prompt),
    };
    set.rejected
        .iter()
        .map(|n| SwiftRow {
            id: set.id.clone(),
            teacher: n.teacher.clone(),
            weight: n.weight,
            messages: vec![
                user.clone(),
                SwiftMessage {
                    role: "assistant".to_owned(),
                    content: set.chosen.clone(),
                },
            ],
            rejected_response: n.text.clone(),
            images: ctx.images.to_vec(),
        })
        .collect()
}
