//! The checkpoint's tokenizer (`tokenizer.json` through the `tokenizers` crate) with the special
//! tokens `tokenizer_config.json` names, and the processor's image-placeholder expansion.
//!
//! [`Tokenizer::encode`] tokenizes a rendered chat the way transformers' `Qwen2VLProcessor(text=...)`
//! does: every image placeholder (`<|image_pad|>`) is first repeated once per image token, then the
//! text goes through the tokenizer with its post-processor (Qwen's adds no BOS).

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::AddedToken;

use crate::error::{ModelError, Result};

/// The tokenizer file inside a checkpoint folder.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The tokenizer settings file inside a checkpoint folder.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";

/// The image placeholder the Qwen2-VL processor expands (unless `tokenizer_config.json` names another
/// `image_token`).
pub const DEFAULT_IMAGE_TOKEN: &str = "<|image_pad|>";
/// The token that opens an image span in Qwen2-VL's chat template.
pub const VISION_START_TOKEN: &str = "<|vision_start|>";
/// The token that closes an image span in Qwen2-VL's chat template.
pub const VISION_END_TOKEN: &str = "<|vision_end|>";

/// The named special tokens transformers exposes to chat templates (`special_tokens_map`), in its order.
pub const SPECIAL_TOKEN_ATTRIBUTES: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// Which side the processor pads a batch on (`padding_side` in `tokenizer_config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaddingSide {
    /// Pad tokens go before the sequence.
    Left,
    /// Pad tokens go after the sequence (transformers' default).
    Right,
}

/// The settings read from `tokenizer_config.json` (all optional; an absent file gives the defaults).
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenizerConfig {
    /// The file, or where it would be.
    pub(crate) path: PathBuf,
    /// The parsed JSON object (empty when the file is absent).
    pub(crate) json: serde_json::Map<String, Value>,
}

impl TokenizerConfig {
    /// Reads `dir/tokenizer_config.json`; a missing file is an empty config.
    pub(crate) fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join(TOKENIZER_CONFIG_FILE);
        if !path.is_file() {
            return Ok(Self {
                path,
                json: serde_json::Map::new(),
            });
        }
        let json = match read_json(&path)? {
            Value::Object(map) => map,
            _ => {
                return Err(ModelError::Json {
                    path,
                    message: "expected a JSON object".into(),
                });
            }
        };
        Ok(Self { path, json })
    }

    /// Whether the tokenizer class is transformers' `Qwen2Tokenizer` (or its old `...Fast` name),
    /// whose constructor defaults `unk_token`, `eos_token` and `pad_token` to `<|endoftext|>`.
    fn is_qwen2_tokenizer(&self) -> bool {
        matches!(
            self.json.get("tokenizer_class").and_then(Value::as_str),
            Some("Qwen2Tokenizer" | "Qwen2TokenizerFast")
        )
    }

    /// The string of a named special token (`"eos_token"`, ...): a plain string or an
    /// `AddedToken` object's `content`. `null` means none; a key that is absent falls back to the
    /// tokenizer class's constructor default.
    pub(crate) fn special_token(&self, name: &str) -> Result<Option<String>> {
        match self.json.get(name) {
            Some(value) => token_content(value).map_err(|message| ModelError::Json {
                path: self.path.clone(),
                message: format!("field {name:?}: {message}"),
            }),
            None => {
                let qwen_default = matches!(name, "unk_token" | "eos_token" | "pad_token");
                Ok((qwen_default && self.is_qwen2_tokenizer()).then(|| "<|endoftext|>".to_owned()))
            }
        }
    }

    /// The named special tokens that are set, in transformers' order (`special_tokens_map`).
    pub(crate) fn special_tokens_map(&self) -> Result<Vec<(&'static str, String)>> {
        let mut out = Vec::new();
        for name in SPECIAL_TOKEN_ATTRIBUTES {
            if let Some(token) = self.special_token(name)? {
                out.push((name, token));
            }
        }
        Ok(out)
    }

    /// A boolean field, `None` when absent or `null`.
    fn bool_field(&self, name: &str) -> Result<Option<bool>> {
        match self.json.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(ModelError::Json {
                path: self.path.clone(),
                message: format!("field {name:?}: expected a boolean, found {other}"),
            }),
        }
    }

    /// A string field, `None` when absent or `null`.
    fn str_field(&self, name: &str) -> Result<Option<&str>> {
        match self.json.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(ModelError::Json {
                path: self.path.clone(),
                message: format!("field {name:?}: expected a string, found {other}"),
            }),
        }
    }
}

/// Reads and parses a JSON file, naming it in the error.
pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The text of a token given as a string or as a serialised `AddedToken` (`{"content": ...}`).
fn token_content(value: &Value) -> std::result::Result<Option<String>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Object(map) => match map.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err("an AddedToken object without a string \"content\"".into()),
        },
        other => Err(format!(
            "expected a string or an AddedToken object, found {other}"
        )),
    }
}

/// Parses one `added_tokens_decoder` entry into an [`AddedToken`].
fn added_token(entry: &Value) -> std::result::Result<AddedToken, String> {
    let Value::Object(map) = entry else {
        return Err(format!("expected an AddedToken object, found {entry}"));
    };
    let Some(Value::String(content)) = map.get("content") else {
        return Err("an AddedToken object without a string \"content\"".into());
    };
    let flag =
        |name: &str, default: bool| map.get(name).and_then(Value::as_bool).unwrap_or(default);
    let special = flag("special", false);
    Ok(AddedToken::from(content.clone(), special)
        .single_word(flag("single_word", false))
        .lstrip(flag("lstrip", false))
        .rstrip(flag("rstrip", false))
        .normalized(flag("normalized", !special)))
}

/// A checkpoint's tokenizer with the ids of the vision tokens.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    image_token: String,
    image_token_id: u32,
    vision_start_id: u32,
    vision_end_id: u32,
    eos_token: Option<String>,
    eos_id: Option<u32>,
    pad_token: Option<String>,
    pad_id: Option<u32>,
    bos_token: Option<String>,
    add_bos: Option<bool>,
    add_eos: Option<bool>,
    clean_up_tokenization_spaces: bool,
    padding_side: PaddingSide,
}

impl Tokenizer {
    /// Loads `dir/tokenizer.json` and the special tokens of `dir/tokenizer_config.json` (eos, pad,
    /// `added_tokens_decoder` entries the tokenizer lacks), and looks up `<|image_pad|>` (or the
    /// config's `image_token`), `<|vision_start|>` and `<|vision_end|>`.
    ///
    /// # Errors
    /// [`ModelError::Io`] / [`ModelError::Json`] for an unreadable or malformed file,
    /// [`ModelError::Tokenizer`] when `tokenizer.json` does not load or a vision token is missing.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let path = dir.join(TOKENIZER_FILE);
        if !path.is_file() {
            return Err(ModelError::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no tokenizer.json"),
            });
        }
        let mut inner =
            tokenizers::Tokenizer::from_file(&path).map_err(|e| ModelError::Tokenizer {
                path: path.clone(),
                message: e.to_string(),
            })?;
        let config = TokenizerConfig::from_dir(dir)?;

        // `added_tokens_decoder` entries the tokenizer does not have yet, in id order (what
        // transformers' `TokenizersBackend.__init__` adds).
        if let Some(decoder) = config.json.get("added_tokens_decoder") {
            let Value::Object(entries) = decoder else {
                return Err(ModelError::Json {
                    path: config.path.clone(),
                    message: "field \"added_tokens_decoder\": expected an object".into(),
                });
            };
            let mut sorted = Vec::with_capacity(entries.len());
            for (id, entry) in entries {
                let id: u64 = id.parse().map_err(|_| ModelError::Json {
                    path: config.path.clone(),
                    message: format!(
                        "field \"added_tokens_decoder\": key {id:?} is not a token id"
                    ),
                })?;
                let token = added_token(entry).map_err(|message| ModelError::Json {
                    path: config.path.clone(),
                    message: format!("field \"added_tokens_decoder\".{id}: {message}"),
                })?;
                sorted.push((id, token));
            }
            sorted.sort_by_key(|(id, _)| *id);
            let missing: Vec<AddedToken> = sorted
                .into_iter()
                .filter(|(_, t)| inner.token_to_id(&t.content).is_none())
                .map(|(_, t)| t)
                .collect();
            if !missing.is_empty() {
                tracing::debug!(
                    count = missing.len(),
                    "adding tokens from tokenizer_config.json"
                );
                inner.add_tokens(&missing);
            }
        }
        // Named special tokens the tokenizer does not know are added as special tokens.
        let specials = config.special_tokens_map()?;
        let missing: Vec<AddedToken> = specials
            .iter()
            .filter(|(_, t)| inner.token_to_id(t).is_none())
            .map(|(_, t)| AddedToken::from(t.clone(), true))
            .collect();
        if !missing.is_empty() {
            inner.add_special_tokens(&missing);
        }

        let image_token = config
            .str_field("image_token")?
            .or_else(|| {
                config
                    .json
                    .get("extra_special_tokens")
                    .and_then(|m| m.get("image_token"))
                    .and_then(Value::as_str)
            })
            .unwrap_or(DEFAULT_IMAGE_TOKEN)
            .to_owned();
        let lookup = |token: &str| {
            inner
                .token_to_id(token)
                .ok_or_else(|| ModelError::Tokenizer {
                    path: path.clone(),
                    message: format!("the vocabulary has no token {token:?}, which Qwen2-VL needs"),
                })
        };
        let image_token_id = lookup(&image_token)?;
        let vision_start_id = lookup(VISION_START_TOKEN)?;
        let vision_end_id = lookup(VISION_END_TOKEN)?;

        let eos_token = config.special_token("eos_token")?;
        let pad_token = config.special_token("pad_token")?;
        let bos_token = config.special_token("bos_token")?;
        let eos_id = eos_token.as_deref().and_then(|t| inner.token_to_id(t));
        let pad_id = pad_token.as_deref().and_then(|t| inner.token_to_id(t));
        let padding_side = match config.str_field("padding_side")? {
            None | Some("right") => PaddingSide::Right,
            Some("left") => PaddingSide::Left,
            Some(other) => {
                return Err(ModelError::Json {
                    path: config.path.clone(),
                    message: format!(
                        "field \"padding_side\": expected \"left\" or \"right\", found {other:?}"
                    ),
                });
            }
        };
        let clean_up = config
            .bool_field("clean_up_tokenization_spaces")?
            .unwrap_or(false);
        let force_bpe_clean_up = config
            .bool_field("clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output")?
            .unwrap_or(false);
        let is_bpe = matches!(inner.get_model(), tokenizers::models::ModelWrapper::BPE(_));
        Ok(Self {
            image_token,
            image_token_id,
            vision_start_id,
            vision_end_id,
            eos_token,
            eos_id,
            pad_token,
            pad_id,
            bos_token,
            add_bos: config.bool_field("add_bos_token")?,
            add_eos: config.bool_field("add_eos_token")?,
            clean_up_tokenization_spaces: clean_up && (!is_bpe || force_bpe_clean_up),
            padding_side,
            inner,
            path,
        })
    }

    /// Tokenizes `text` as the processor does: the `i`-th image placeholder is first repeated
    /// `image_tokens[i]` times (the image's merged patch count, [`crate::processor::PixelValues::tokens`]),
    /// then the text is encoded with the tokenizer's special-token handling (`add_special_tokens=True`;
    /// for Qwen this adds nothing).
    ///
    /// # Errors
    /// [`ModelError::Input`] when the text has a different number of placeholders than
    /// `image_tokens` has entries, [`ModelError::Tokenizer`] when encoding fails.
    pub fn encode(&self, text: &str, image_tokens: &[usize]) -> Result<Vec<u32>> {
        let found = text.matches(self.image_token.as_str()).count();
        if found != image_tokens.len() {
            return Err(ModelError::Input(format!(
                "the text has {found} {} placeholder(s) but {} image(s) were given",
                self.image_token,
                image_tokens.len()
            )));
        }
        let expanded;
        let text = if image_tokens.is_empty() {
            text
        } else {
            let extra: usize = image_tokens.iter().sum::<usize>().saturating_sub(found);
            let mut out = String::with_capacity(text.len() + extra * self.image_token.len());
            let mut pieces = text.split(self.image_token.as_str());
            if let Some(first) = pieces.next() {
                out.push_str(first);
            }
            for (piece, &count) in pieces.zip(image_tokens) {
                for _ in 0..count {
                    out.push_str(&self.image_token);
                }
                out.push_str(piece);
            }
            expanded = out;
            expanded.as_str()
        };
        self.encode_text(text)
    }

    /// Tokenizes `text` as-is (no placeholder expansion), with the special-token handling of
    /// [`Tokenizer::encode`].
    ///
    /// # Errors
    /// [`ModelError::Tokenizer`] when encoding fails.
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        // transformers rebuilds the post-processor from `add_bos_token` / `add_eos_token` when the
        // config sets either; otherwise the post-processor of tokenizer.json is used.
        let explicit = self.add_bos.is_some() || self.add_eos.is_some();
        let encoding = self
            .inner
            .encode(text, !explicit)
            .map_err(|e| ModelError::Tokenizer {
                path: self.path.clone(),
                message: format!("cannot encode: {e}"),
            })?;
        let mut ids = encoding.get_ids().to_vec();
        if explicit {
            if self.add_bos == Some(true)
                && let Some(bos) = self
                    .bos_token
                    .as_deref()
                    .and_then(|t| self.inner.token_to_id(t))
            {
                ids.insert(0, bos);
            }
            if self.add_eos == Some(true)
                && let Some(eos) = self.eos_id
            {
                ids.push(eos);
            }
        }
        Ok(ids)
    }

    /// Turns ids back into text, optionally without special tokens.
    ///
    /// # Errors
    /// [`ModelError::Tokenizer`] when an id is outside the vocabulary or decoding fails.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let size = self.inner.get_vocab_size(true);
        if let Some(bad) = ids
            .iter()
            .find(|&&id| usize::try_from(id).map_or(true, |i| i >= size))
        {
            return Err(ModelError::Tokenizer {
                path: self.path.clone(),
                message: format!("cannot decode id {bad}: the vocabulary has {size} tokens"),
            });
        }
        let text =
            self.inner
                .decode(ids, skip_special_tokens)
                .map_err(|e| ModelError::Tokenizer {
                    path: self.path.clone(),
                    message: format!("cannot decode: {e}"),
                })?;
        Ok(if self.clean_up_tokenization_spaces {
            clean_up_tokenization(&text)
        } else {
            text
        })
    }

    /// The id of a token, if the vocabulary has it.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The image placeholder the processor expands (`<|image_pad|>`).
    pub fn image_token(&self) -> &str {
        &self.image_token
    }

    /// The id of the image placeholder (`image_token_id` in the model config).
    pub fn image_token_id(&self) -> u32 {
        self.image_token_id
    }

    /// The id of `<|vision_start|>`.
    pub fn vision_start_id(&self) -> u32 {
        self.vision_start_id
    }

    /// The id of `<|vision_end|>`.
    pub fn vision_end_id(&self) -> u32 {
        self.vision_end_id
    }

    /// The end-of-sequence token of `tokenizer_config.json`, if any.
    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// The id of the end-of-sequence token, if any.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// The padding token of `tokenizer_config.json`, if any.
    pub fn pad_token(&self) -> Option<&str> {
        self.pad_token.as_deref()
    }

    /// The id of the padding token, if any.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }

    /// The side the processor pads batches on.
    pub fn padding_side(&self) -> PaddingSide {
        self.padding_side
    }

    /// The vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The `tokenizer.json` this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// transformers' `clean_up_tokenization` (spaces before punctuation and English contractions).
fn clean_up_tokenization(text: &str) -> String {
    text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}
