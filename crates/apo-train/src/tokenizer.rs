//! The text tokenizer: byte-level BPE trained on the trajectories, stored in the `tokenizers`
//! crate's `tokenizer.json` format (so an existing `tokenizer.json` can be brought instead).

use std::path::Path;

use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

use crate::{Result, TrainError};

/// Byte range `[start, end)` of each token in the encoded text.
pub type ByteSpans = Vec<(usize, usize)>;

/// Padding.
pub const PAD: &str = "<pad>";
/// Start of a sequence.
pub const BOS: &str = "<bos>";
/// Between the prompt and the completion.
pub const SEP: &str = "<sep>";
/// End of the completion.
pub const EOS: &str = "<eos>";

/// A tokenizer with the four special tokens the student uses.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    pad: u32,
    bos: u32,
    sep: u32,
    eos: u32,
}

fn tk_err(e: impl std::fmt::Display) -> TrainError {
    TrainError::Tokenizer(e.to_string())
}

impl TextTokenizer {
    /// Trains a byte-level BPE tokenizer with (at most) `vocab_size` entries on `texts`.
    ///
    /// # Errors
    /// [`TrainError::Config`] for a vocabulary smaller than the 256 byte symbols plus the
    /// special tokens, [`TrainError::Tokenizer`] when training fails.
    pub fn train<S: AsRef<str> + Send>(
        texts: impl Iterator<Item = S> + Send,
        vocab_size: usize,
    ) -> Result<Self> {
        if vocab_size < 300 {
            return Err(TrainError::Config {
                field: "tokenizer.vocab_size".into(),
                value: vocab_size.to_string(),
                expected: "at least 300 (256 byte symbols, 4 special tokens, some merges)".into(),
            });
        }
        let specials: Vec<AddedToken> = [PAD, BOS, SEP, EOS]
            .iter()
            .map(|s| AddedToken::from(*s, true))
            .collect();
        let trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(specials)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut tk = Tokenizer::new(ModelWrapper::BPE(BPE::default()));
        tk.with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(
            ByteLevel::default().add_prefix_space(false),
        )));
        tk.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
        let mut trainer = TrainerWrapper::BpeTrainer(trainer);
        tk.train(&mut trainer, texts).map_err(tk_err)?;
        Self::wrap(tk)
    }

    /// Loads a `tokenizer.json`; the four special tokens are added if it lacks them.
    ///
    /// # Errors
    /// [`TrainError::Tokenizer`] naming the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let tk = Tokenizer::from_file(path)
            .map_err(|e| TrainError::Tokenizer(format!("{}: {e}", path.display())))?;
        Self::wrap(tk)
    }

    fn wrap(mut inner: Tokenizer) -> Result<Self> {
        let missing: Vec<AddedToken> = [PAD, BOS, SEP, EOS]
            .iter()
            .filter(|s| inner.token_to_id(s).is_none())
            .map(|s| AddedToken::from(*s, true))
            .collect();
        if !missing.is_empty() {
            inner.add_special_tokens(&missing);
        }
        let id = |s: &str| {
            inner
                .token_to_id(s)
                .ok_or_else(|| TrainError::Tokenizer(format!("special token {s} missing")))
        };
        Ok(TextTokenizer {
            pad: id(PAD)?,
            bos: id(BOS)?,
            sep: id(SEP)?,
            eos: id(EOS)?,
            inner,
        })
    }

    /// Writes `tokenizer.json`.
    ///
    /// # Errors
    /// [`TrainError::Tokenizer`] naming the file.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner
            .save(path, false)
            .map_err(|e| TrainError::Tokenizer(format!("{}: {e}", path.display())))
    }

    /// Vocabulary size including the special tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text` (no special tokens).
    ///
    /// # Errors
    /// [`TrainError::Tokenizer`].
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(tk_err)?
            .get_ids()
            .to_vec())
    }

    /// Token ids of `text` (no special tokens) with each token's byte range in `text`.
    ///
    /// # Errors
    /// [`TrainError::Tokenizer`].
    pub fn encode_with_offsets(&self, text: &str) -> Result<(Vec<u32>, ByteSpans)> {
        let e = self.inner.encode(text, false).map_err(tk_err)?;
        Ok((e.get_ids().to_vec(), e.get_offsets().to_vec()))
    }

    /// The text of `ids`, special tokens skipped.
    ///
    /// # Errors
    /// [`TrainError::Tokenizer`].
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(tk_err)
    }

    /// Padding id.
    pub fn pad(&self) -> u32 {
        self.pad
    }

    /// Start id.
    pub fn bos(&self) -> u32 {
        self.bos
    }

    /// Prompt/completion separator id.
    pub fn sep(&self) -> u32 {
        self.sep
    }

    /// End id.
    pub fn eos(&self) -> u32 {
        self.eos
    }
}
