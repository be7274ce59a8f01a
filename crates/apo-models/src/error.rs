//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running a checkpoint. Each variant names the
/// file, tensor, row or token it is about.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A JSON file (config, tokenizer config, processor config, index) is malformed or lacks a field.
    #[error("{path}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the field's name.
        message: String,
    },
    /// `config.json` names an architecture this crate does not implement.
    #[error(
        "{path}: unsupported architecture {found:?} (supported: Qwen2VLForConditionalGeneration / qwen2_vl, Qwen2_5_VLForConditionalGeneration / qwen2_5_vl)"
    )]
    UnknownArchitecture {
        /// The config file.
        path: PathBuf,
        /// The `architectures` / `model_type` it gives.
        found: String,
    },
    /// A safetensors file's header or data is not valid.
    #[error("{path}: not a valid safetensors file: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The model needs a tensor the checkpoint does not have.
    #[error("{dir}: the checkpoint has no tensor {name:?}")]
    MissingTensor {
        /// The checkpoint folder.
        dir: PathBuf,
        /// The tensor's name as stored.
        name: String,
    },
    /// The checkpoint has tensors the model does not use.
    #[error("{dir}: {} tensor(s) the model does not use, first {:?}", names.len(), names.first())]
    UnusedTensors {
        /// The checkpoint folder.
        dir: PathBuf,
        /// Their names.
        names: Vec<String>,
    },
    /// A tensor's shape differs from what the config implies.
    #[error("{dir}: tensor {name:?} has shape {found:?}, the config implies {expected:?}")]
    ShapeMismatch {
        /// The checkpoint folder.
        dir: PathBuf,
        /// The tensor.
        name: String,
        /// The shape on disk.
        found: Vec<usize>,
        /// The shape the config implies.
        expected: Vec<usize>,
    },
    /// A tensor is stored in a dtype this crate does not convert (only F32, F16 and BF16 are).
    #[error("{dir}: tensor {name:?} has dtype {dtype}, expected F32, F16 or BF16")]
    UnsupportedDtype {
        /// The checkpoint folder.
        dir: PathBuf,
        /// The tensor.
        name: String,
        /// The dtype on disk.
        dtype: String,
    },
    /// The tokenizer failed or is missing a special token the model needs.
    #[error("{path}: {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The chat template does not parse or fails to render.
    #[error("chat template ({source_file}): {message}")]
    Template {
        /// Where the template came from.
        source_file: PathBuf,
        /// The template engine's message.
        message: String,
    },
    /// An image could not be opened or decoded.
    #[error("{path}: cannot decode image: {message}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// The input does not fit what the model accepts (sequence too long, image tokens and images
    /// disagree, an empty completion, ...).
    #[error("{0}")]
    Input(String),
}

/// This crate's result type.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
