//! `config.json` of a Qwen2-VL / Qwen2.5-VL checkpoint, in the hub's original flat layout and in
//! the nested layout transformers 5 writes.
//!
//! Flat (hub): the text model's fields at the top level, `rope_theta` and
//! `rope_scaling: {type: "mrope", mrope_section}`, `vision_config` beside them. Nested
//! (transformers 5): `text_config` with `rope_parameters: {rope_type, rope_theta, mrope_section}`.
//! Both read into one [`ModelConfig`].

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{ModelError, Result};

/// Which model family a checkpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `Qwen2VLForConditionalGeneration` (`model_type` `qwen2_vl`).
    Qwen2Vl,
    /// `Qwen2_5_VLForConditionalGeneration` (`model_type` `qwen2_5_vl`).
    Qwen25Vl,
}

impl Architecture {
    /// The name transformers gives the class.
    pub fn class_name(self) -> &'static str {
        match self {
            Architecture::Qwen2Vl => "Qwen2VLForConditionalGeneration",
            Architecture::Qwen25Vl => "Qwen2_5_VLForConditionalGeneration",
        }
    }
}

/// The language model's settings (`Qwen2VLTextConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    /// Vocabulary size (rows of `embed_tokens` and `lm_head`).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// SwiGLU inner width.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention).
    pub num_key_value_heads: usize,
    /// `hidden_size / num_attention_heads`.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Rotary base.
    pub rope_theta: f64,
    /// How the rotary frequencies split between the temporal, height and width positions.
    pub mrope_section: Vec<usize>,
    /// Longest sequence the model accepts.
    pub max_position_embeddings: usize,
    /// End-of-sequence token ids from the config (the tokenizer's eos is added by callers).
    pub eos_token_id: Vec<u32>,
}

/// The vision tower's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    /// Transformer blocks.
    pub depth: usize,
    /// Width of the vision blocks (`embed_dim` in Qwen2-VL, `hidden_size` in Qwen2.5-VL).
    pub width: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// MLP inner width (`embed_dim * mlp_ratio` in Qwen2-VL, `intermediate_size` in Qwen2.5-VL).
    pub intermediate_size: usize,
    /// Width of the merger's output (the language model's `hidden_size`).
    pub out_hidden_size: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Side of a square patch, pixels.
    pub patch_size: usize,
    /// Frames per temporal patch.
    pub temporal_patch_size: usize,
    /// Side of the block of patches the merger joins into one token.
    pub spatial_merge_size: usize,
    /// The MLP activation (`quick_gelu`, `silu`, `gelu`, ...).
    pub hidden_act: String,
    /// Rotary base of the 2-D vision rotary embedding.
    pub rope_theta: f64,
    /// Qwen2.5-VL: attention window side in pixels (0: no windows).
    pub window_size: usize,
    /// Qwen2.5-VL: the blocks that attend over the whole image.
    pub fullatt_block_indexes: Vec<usize>,
}

/// Everything the model needs from `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// The family.
    pub architecture: Architecture,
    /// The language model.
    pub text: TextConfig,
    /// The vision tower.
    pub vision: VisionConfig,
    /// `<|image_pad|>`.
    pub image_token_id: u32,
    /// `<|video_pad|>`.
    pub video_token_id: u32,
    /// `<|vision_start|>`.
    pub vision_start_token_id: u32,
    /// Whether `lm_head` shares `embed_tokens`' weight.
    pub tie_word_embeddings: bool,
    /// The dtype the checkpoint declares (`torch_dtype` / `dtype`), for information.
    pub dtype: Option<String>,
}

struct Fields<'a> {
    path: &'a Path,
    section: &'a str,
    map: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn err(&self, key: &str, what: &str) -> ModelError {
        let at = if self.section.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.section)
        };
        ModelError::Json {
            path: self.path.to_path_buf(),
            message: format!("field {at:?}: {what}"),
        }
    }
    fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }
    fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.err(key, "expected a non-negative integer")),
        }
    }
    fn usize(&self, key: &str) -> Result<usize> {
        self.usize_opt(key)?.ok_or_else(|| self.err(key, "missing"))
    }
    fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        Ok(self.usize_opt(key)?.unwrap_or(default))
    }
    fn f64_opt(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(key, "expected a number")),
        }
    }
    fn bool_opt(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.err(key, "expected true or false")),
        }
    }
    fn str_opt(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.err(key, "expected a string")),
        }
    }
    fn usize_list(&self, key: &str) -> Result<Option<Vec<usize>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_u64()
                        .map(|n| n as usize)
                        .ok_or_else(|| self.err(key, "expected integers"))
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(_) => Err(self.err(key, "expected a list of integers")),
        }
    }
    fn object(&self, key: &str) -> Result<Option<&Map<String, Value>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(_) => Err(self.err(key, "expected an object")),
        }
    }
}

impl ModelConfig {
    /// Reads `DIR/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        Self::from_json(&text, &path)
    }

    /// Parses the text of a `config.json`; `path` names it in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| ModelError::Json {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let Value::Object(root) = value else {
            return Err(ModelError::Json {
                path: path.to_path_buf(),
                message: "expected a JSON object".into(),
            });
        };
        let top = Fields {
            path,
            section: "",
            map: &root,
        };
        let architecture = architecture(&top)?;

        let nested = top.object("text_config")?;
        let text_fields = match nested {
            Some(map) => Fields {
                path,
                section: "text_config",
                map,
            },
            None => Fields {
                path,
                section: "",
                map: &root,
            },
        };
        let text = text_config(&text_fields, &top)?;

        let vision_map = top
            .object("vision_config")?
            .ok_or_else(|| top.err("vision_config", "missing"))?;
        let vf = Fields {
            path,
            section: "vision_config",
            map: vision_map,
        };
        let vision = vision_config(&vf, architecture, text.hidden_size)?;

        let token = |key: &str, default: u32| -> Result<u32> {
            let v = top.usize_opt(key)?.or(text_fields.usize_opt(key)?);
            Ok(v.map(|v| v as u32).unwrap_or(default))
        };
        let tie = match top.bool_opt("tie_word_embeddings")? {
            Some(true) => true,
            // transformers moves a text config's `tie_word_embeddings: true` to the outer config.
            _ => {
                nested.is_some()
                    && text_fields
                        .bool_opt("tie_word_embeddings")?
                        .unwrap_or(false)
            }
        };
        Ok(ModelConfig {
            architecture,
            text,
            vision,
            image_token_id: token("image_token_id", 151_655)?,
            video_token_id: token("video_token_id", 151_656)?,
            vision_start_token_id: token("vision_start_token_id", 151_652)?,
            tie_word_embeddings: tie,
            dtype: top
                .str_opt("torch_dtype")?
                .or(top.str_opt("dtype")?)
                .or(text_fields.str_opt("torch_dtype")?)
                .or(text_fields.str_opt("dtype")?)
                .map(str::to_string),
        })
    }
}

fn architecture(top: &Fields<'_>) -> Result<Architecture> {
    let mut seen = Vec::new();
    if let Some(Value::Array(names)) = top.get("architectures") {
        for name in names.iter().filter_map(Value::as_str) {
            match name {
                "Qwen2VLForConditionalGeneration" | "Qwen2VLModel" => {
                    return Ok(Architecture::Qwen2Vl);
                }
                "Qwen2_5_VLForConditionalGeneration" | "Qwen2_5_VLModel" => {
                    return Ok(Architecture::Qwen25Vl);
                }
                other => seen.push(other.to_string()),
            }
        }
    }
    match top.str_opt("model_type")? {
        Some("qwen2_vl") => Ok(Architecture::Qwen2Vl),
        Some("qwen2_5_vl") => Ok(Architecture::Qwen25Vl),
        other => {
            if let Some(t) = other {
                seen.push(format!("model_type {t}"));
            }
            Err(ModelError::UnknownArchitecture {
                path: top.path.to_path_buf(),
                found: if seen.is_empty() {
                    "none given".into()
                } else {
                    seen.join(", ")
                },
            })
        }
    }
}

fn text_config(f: &Fields<'_>, top: &Fields<'_>) -> Result<TextConfig> {
    let hidden_size = f.usize("hidden_size")?;
    let heads = f.usize("num_attention_heads")?;
    if heads == 0 || hidden_size % heads != 0 {
        return Err(f.err("num_attention_heads", "must divide hidden_size"));
    }
    let kv = f.usize_opt("num_key_value_heads")?.unwrap_or(heads);
    if kv == 0 || heads % kv != 0 {
        return Err(f.err("num_key_value_heads", "must divide num_attention_heads"));
    }
    let head_dim = hidden_size / heads;
    if f.bool_opt("use_sliding_window")?.unwrap_or(false) {
        return Err(f.err(
            "use_sliding_window",
            "sliding-window attention is not supported",
        ));
    }
    // rope_parameters (transformers 5) or rope_scaling (hub), and rope_theta beside them.
    let rope = match f.object("rope_parameters")? {
        Some(m) => Some(("rope_parameters", m)),
        None => f.object("rope_scaling")?.map(|m| ("rope_scaling", m)),
    };
    let (mut theta, mut section) = (f.f64_opt("rope_theta")?, None);
    if let Some((name, map)) = rope {
        let rf = Fields {
            path: f.path,
            section: name,
            map,
        };
        let kind = rf
            .str_opt("rope_type")?
            .or(rf.str_opt("type")?)
            .unwrap_or("default");
        if !matches!(kind, "default" | "mrope") {
            return Err(rf.err(
                "rope_type",
                &format!("{kind:?} is not supported (only default / mrope)"),
            ));
        }
        theta = rf.f64_opt("rope_theta")?.or(theta);
        section = rf.usize_list("mrope_section")?;
    }
    let mrope_section = section.unwrap_or_else(|| vec![16, 24, 24]);
    if mrope_section.len() != 3 || mrope_section.iter().sum::<usize>() * 2 != head_dim {
        return Err(f.err(
            "mrope_section",
            &format!(
                "{mrope_section:?} must be 3 numbers summing to head_dim / 2 = {}",
                head_dim / 2
            ),
        ));
    }
    let eos = match f.get("eos_token_id").or(top.get("eos_token_id")) {
        None => Vec::new(),
        Some(Value::Array(ids)) => ids
            .iter()
            .filter_map(Value::as_u64)
            .map(|v| v as u32)
            .collect(),
        Some(v) => v.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
    };
    Ok(TextConfig {
        vocab_size: f.usize("vocab_size")?,
        hidden_size,
        intermediate_size: f.usize("intermediate_size")?,
        num_hidden_layers: f.usize("num_hidden_layers")?,
        num_attention_heads: heads,
        num_key_value_heads: kv,
        head_dim,
        rms_norm_eps: f.f64_opt("rms_norm_eps")?.unwrap_or(1e-6),
        rope_theta: theta.unwrap_or(1_000_000.0),
        mrope_section,
        max_position_embeddings: f.usize_or("max_position_embeddings", 32_768)?,
        eos_token_id: eos,
    })
}

fn vision_config(f: &Fields<'_>, arch: Architecture, text_hidden: usize) -> Result<VisionConfig> {
    let theta = match f.object("rope_parameters")? {
        Some(m) => Fields {
            path: f.path,
            section: "vision_config.rope_parameters",
            map: m,
        }
        .f64_opt("rope_theta")?,
        None => f.f64_opt("rope_theta")?,
    }
    .unwrap_or(10_000.0);
    let num_heads = f
        .usize_opt("num_heads")?
        .or(f.usize_opt("num_attention_heads")?)
        .ok_or_else(|| f.err("num_heads", "missing"))?;
    let depth = f
        .usize_opt("depth")?
        .or(f.usize_opt("num_hidden_layers")?)
        .ok_or_else(|| f.err("depth", "missing"))?;
    let (width, intermediate, out, act, window, full) = match arch {
        Architecture::Qwen2Vl => {
            let embed = f.usize("embed_dim")?;
            let ratio = f.f64_opt("mlp_ratio")?.unwrap_or(4.0);
            let out = f.usize_opt("hidden_size")?.unwrap_or(text_hidden);
            let act = f.str_opt("hidden_act")?.unwrap_or("quick_gelu").to_string();
            (
                embed,
                (embed as f64 * ratio) as usize,
                out,
                act,
                0,
                Vec::new(),
            )
        }
        Architecture::Qwen25Vl => {
            let width = f.usize("hidden_size")?;
            let out = f.usize_opt("out_hidden_size")?.unwrap_or(text_hidden);
            let act = f.str_opt("hidden_act")?.unwrap_or("silu").to_string();
            let full = f
                .usize_list("fullatt_block_indexes")?
                .unwrap_or_else(|| vec![7, 15, 23, 31]);
            (
                width,
                f.usize("intermediate_size")?,
                out,
                act,
                f.usize_or("window_size", 112)?,
                full,
            )
        }
    };
    if num_heads == 0 || width % num_heads != 0 || (width / num_heads) % 4 != 0 {
        return Err(f.err(
            "num_heads",
            "must divide the vision width into heads whose size is a multiple of 4",
        ));
    }
    if out != text_hidden {
        return Err(f.err(
            "out_hidden_size",
            &format!("{out} differs from the language model's hidden_size {text_hidden}"),
        ));
    }
    let cfg = VisionConfig {
        depth,
        width,
        num_heads,
        intermediate_size: intermediate,
        out_hidden_size: out,
        in_channels: f
            .usize_opt("in_channels")?
            .or(f.usize_opt("in_chans")?)
            .unwrap_or(3),
        patch_size: f.usize_or("patch_size", 14)?,
        temporal_patch_size: f.usize_or("temporal_patch_size", 2)?,
        spatial_merge_size: f.usize_or("spatial_merge_size", 2)?,
        hidden_act: act,
        rope_theta: theta,
        window_size: window,
        fullatt_block_indexes: full,
    };
    if cfg.spatial_merge_size == 0 || cfg.patch_size == 0 {
        return Err(f.err("spatial_merge_size", "must be positive"));
    }
    if arch == Architecture::Qwen25Vl && cfg.window_size < cfg.spatial_merge_size * cfg.patch_size {
        return Err(f.err("window_size", "must hold at least one merged patch"));
    }
    Ok(cfg)
}
