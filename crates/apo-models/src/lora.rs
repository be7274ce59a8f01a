//! LoRA adapters on the Hugging Face models, read and written in PEFT's format.
//!
//! An adapted linear map computes `x W + b + s · dropout(x) A B` with `A: [in, r]`,
//! `B: [r, out]` and `s = α / r` (`α / √r` with rsLoRA). [`attach`] freezes every base weight
//! and attaches fresh adapters to the selected modules (A drawn as PEFT draws it, Kaiming-uniform
//! with `a = √5`, i.e. `U(−1/√in, 1/√in)`; B zero, so the adapted model starts equal to the
//! base); only the adapters then carry gradients.
//!
//! On disk an adapter is PEFT's folder: `adapter_config.json` and `adapter_model.safetensors`
//! with `base_model.model.<module>.lora_A.weight` (`[r, in]`) and `….lora_B.weight`
//! (`[out, r]`). Both module layouts are read: the original checkpoints'
//! (`model.layers.*`, `visual.*`) and transformers 5's (`model.language_model.layers.*`,
//! `model.visual.*`); adapters are written in transformers 5's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::module::{Module, Param, ParamId};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ModelError, Result};
use crate::model::QwenVl;
use crate::weights::{Dtype, SafetensorsWriter, Weights, canonical};

/// The file names of a PEFT adapter folder.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// The tensors of a PEFT adapter folder.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// A low-rank update of one linear map.
#[derive(Module, Debug)]
pub struct Lora<B: Backend> {
    /// `[in, r]` (PEFT's `lora_A.weight` transposed).
    pub a: Param<Tensor<B, 2>>,
    /// `[r, out]` (PEFT's `lora_B.weight` transposed).
    pub b: Param<Tensor<B, 2>>,
    /// `α / r` (or `α / √r`).
    pub scale: f64,
    /// Dropout on the adapter's input (active only while gradients are recorded).
    pub dropout: Dropout,
}

impl<B: Backend> Lora<B> {
    /// The rank `r`.
    pub fn rank(&self) -> usize {
        self.a.dims()[1]
    }

    /// `scale · dropout(x) A B` for `x: [rows, in]`.
    pub(crate) fn delta(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.dropout
            .forward(x)
            .matmul(self.a.val())
            .matmul(self.b.val())
            .mul_scalar(self.scale)
    }
}

/// Which linear maps get adapters, as PEFT's `target_modules` says it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// `"all-linear"` (every linear map of the language model but the output head, as ms-swift
    /// means it), or a regular expression that must match a whole module name (PEFT's
    /// `re.fullmatch`).
    Pattern(String),
    /// Module names or name suffixes: a module is selected when its name is one of them or ends
    /// with `.` and one of them (PEFT's rule), e.g. `["q_proj", "v_proj"]`.
    Names(Vec<String>),
}

impl Default for TargetModules {
    fn default() -> Self {
        TargetModules::Pattern("all-linear".into())
    }
}

/// How to attach new adapters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank r ≥ 1. Default 8.
    pub r: usize,
    /// α > 0; the update is scaled by α / r. Default 16.
    pub alpha: f64,
    /// Dropout probability on the adapters' input, in [0, 1). Default 0.05.
    pub dropout: f64,
    /// The modules. Default `"all-linear"`.
    pub target_modules: TargetModules,
    /// Scale by α / √r (rsLoRA) instead of α / r. Default false.
    pub use_rslora: bool,
    /// Also adapt the vision tower and merger (otherwise only the language model is adapted,
    /// whatever `target_modules` matches there). Default false.
    pub vision: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            r: 8,
            alpha: 16.0,
            dropout: 0.05,
            target_modules: TargetModules::default(),
            use_rslora: false,
            vision: false,
        }
    }
}

impl LoraConfig {
    /// The scale of a rank-`r` update.
    pub fn scale(&self, r: usize) -> f64 {
        scale(self.alpha, r, self.use_rslora)
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Input(format!("lora: {m}")));
        if self.r == 0 {
            return bad("r must be at least 1".into());
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return bad(format!("alpha must be positive, got {}", self.alpha));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        if let TargetModules::Pattern(p) = &self.target_modules
            && p != "all-linear"
        {
            full_regex(p)?;
        }
        if let TargetModules::Names(n) = &self.target_modules
            && n.is_empty()
        {
            return bad("target_modules is an empty list".into());
        }
        Ok(())
    }
}

fn scale(alpha: f64, r: usize, rslora: bool) -> f64 {
    if rslora {
        alpha / (r as f64).sqrt()
    } else {
        alpha / r as f64
    }
}

fn full_regex(p: &str) -> Result<regex::Regex> {
    regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| {
        ModelError::Input(format!(
            "lora: target_modules {p:?} is not a regular expression: {e}"
        ))
    })
}

/// A module's name in transformers 5's layout (`model.language_model.layers.*`,
/// `model.visual.*`; `lm_head` unchanged) from the hub layout this crate uses.
pub fn transformers5_name(hub: &str) -> String {
    if let Some(rest) = hub.strip_prefix("model.") {
        format!("model.language_model.{rest}")
    } else if let Some(rest) = hub.strip_prefix("visual.") {
        format!("model.visual.{rest}")
    } else {
        hub.to_string()
    }
}

fn is_vision(hub: &str) -> bool {
    hub.starts_with("visual.")
}

/// The hub names of the linear maps `config` selects in `model`, in model order.
///
/// # Errors
/// A bad pattern, or no module selected.
pub fn select<B: Backend>(model: &QwenVl<B>, config: &LoraConfig) -> Result<Vec<String>> {
    config.validate()?;
    let names: Vec<String> = model.linears().into_iter().map(|(n, _)| n).collect();
    let regex = match &config.target_modules {
        TargetModules::Pattern(p) if p != "all-linear" => Some(full_regex(p)?),
        _ => None,
    };
    let chosen: Vec<String> = names
        .into_iter()
        .filter(|n| config.vision || !is_vision(n))
        .filter(|n| {
            let both = [n.clone(), transformers5_name(n)];
            match (&config.target_modules, &regex) {
                (_, Some(re)) => both.iter().any(|x| re.is_match(x)),
                (TargetModules::Pattern(_), None) => n != "lm_head",
                (TargetModules::Names(list), None) => list
                    .iter()
                    .any(|t| both.iter().any(|x| x == t || x.ends_with(&format!(".{t}")))),
            }
        })
        .collect();
    if chosen.is_empty() {
        return Err(ModelError::Input(format!(
            "lora: target_modules {:?} selects no linear map of the model{}",
            config.target_modules,
            if config.vision {
                ""
            } else {
                " (vision tower excluded)"
            }
        )));
    }
    Ok(chosen)
}

/// A stable 64-bit id for a parameter name: adapters get the same [`ParamId`]s every time they
/// are attached, so an optimiser state saved with them loads back onto them.
fn stable_id(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn lora_from_host<B: Backend>(
    name: &str,
    a: Vec<f32>,
    b: Vec<f32>,
    (d_in, r, d_out): (usize, usize, usize),
    scale: f64,
    dropout: f64,
    device: &B::Device,
) -> Lora<B> {
    // PEFT's [r, in] and [out, r], transposed to Burn's [in, r] and [r, out].
    let a = Tensor::<B, 2>::from_data(TensorData::new(a, [r, d_in]), device)
        .transpose()
        .require_grad();
    let b = Tensor::<B, 2>::from_data(TensorData::new(b, [d_out, r]), device)
        .transpose()
        .require_grad();
    Lora {
        a: Param::initialized(ParamId::from(stable_id(&format!("{name}.lora_A"))), a),
        b: Param::initialized(ParamId::from(stable_id(&format!("{name}.lora_B"))), b),
        scale,
        dropout: DropoutConfig::new(dropout).init(),
    }
}

/// Freezes every weight of `model` and attaches fresh adapters to the modules `config` selects.
/// A is drawn from `U(−1/√in, 1/√in)` by a generator seeded with `seed` and the module's name
/// (the same adapters on every backend and in every run), B is zero.
///
/// # Errors
/// As [`select`].
pub fn attach<B: Backend>(
    model: QwenVl<B>,
    config: &LoraConfig,
    seed: u64,
    device: &B::Device,
) -> Result<QwenVl<B>> {
    let chosen: BTreeSet<String> = select(&model, config)?.into_iter().collect();
    let mut model = model.no_grad();
    for (name, lin) in model.linears_mut() {
        if !chosen.contains(&name) {
            continue;
        }
        let (d_in, d_out) = lin.dims();
        let r = config.r;
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed ^ stable_id(&name));
        let bound = 1.0 / (d_in as f64).sqrt();
        let a: Vec<f32> = (0..r * d_in)
            .map(|_| rng.random_range(-bound..bound) as f32)
            .collect();
        let b = vec![0f32; d_out * r];
        lin.lora = Some(lora_from_host(
            &name,
            a,
            b,
            (d_in, r, d_out),
            config.scale(r),
            config.dropout,
            device,
        ));
    }
    Ok(model)
}

/// The adapted modules of `model` and their ranks, in model order.
pub fn adapted<B: Backend>(model: &QwenVl<B>) -> Vec<(String, usize)> {
    model
        .linears()
        .into_iter()
        .filter_map(|(n, l)| l.lora.as_ref().map(|x| (n, x.rank())))
        .collect()
}

/// Folds every adapter into its base weight (`W + s · A B`) and removes it.
pub fn merge<B: Backend>(mut model: QwenVl<B>) -> QwenVl<B> {
    for (_, lin) in model.linears_mut() {
        if let Some(lora) = lin.lora.take() {
            let delta = lora
                .a
                .val()
                .matmul(lora.b.val())
                .mul_scalar(lora.scale)
                .detach();
            let w = lin.weight.val().detach() + delta;
            lin.weight = Param::initialized(lin.weight.id, w);
        }
    }
    model
}

/// Removes every adapter (without folding it in).
pub fn remove<B: Backend>(mut model: QwenVl<B>) -> QwenVl<B> {
    for (_, lin) in model.linears_mut() {
        lin.lora = None;
    }
    model
}

/// One module's adapter on the host, PEFT's layout.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterTensors {
    /// `lora_A.weight`, `[r, in]` row-major.
    pub a: Vec<f32>,
    /// `lora_B.weight`, `[out, r]` row-major.
    pub b: Vec<f32>,
    /// `(in, r, out)`.
    pub dims: (usize, usize, usize),
    /// The scale `α / r` (or `α / √r`).
    pub scale: f64,
}

/// A PEFT LoRA adapter on the host: its `adapter_config.json` and its tensors by module (hub
/// names).
#[derive(Debug, Clone, PartialEq)]
pub struct Adapter {
    /// `adapter_config.json` as read or as it will be written.
    pub config: Value,
    /// Module (hub name) → tensors.
    pub modules: BTreeMap<String, AdapterTensors>,
}

fn cfg_err(path: &Path, message: String) -> ModelError {
    ModelError::Json {
        path: path.to_path_buf(),
        message,
    }
}

/// PEFT's `rank_pattern` / `alpha_pattern` rule: the first key `k` (in file order) with
/// `re.match(rf"(.*\.)?({k})$", name)`.
fn pattern_value(
    path: &Path,
    patterns: Option<&serde_json::Map<String, Value>>,
    names: &[String],
) -> Result<Option<f64>> {
    let Some(map) = patterns else {
        return Ok(None);
    };
    for (k, v) in map {
        let re = regex::Regex::new(&format!(r"^(?:.*\.)?(?:{k})$"))
            .map_err(|e| cfg_err(path, format!("pattern {k:?}: {e}")))?;
        if names.iter().any(|n| re.is_match(n)) {
            return v
                .as_f64()
                .map(Some)
                .ok_or_else(|| cfg_err(path, format!("pattern {k:?}: value is not a number")));
        }
    }
    Ok(None)
}

impl Adapter {
    /// Reads a PEFT adapter folder. Settings this crate does not implement (DoRA, trained
    /// biases, `modules_to_save`, `fan_in_fan_out`, non-LoRA types) are typed errors, as is a
    /// tensor that is not a LoRA matrix or an A without its B.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(ADAPTER_CONFIG);
        let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        let config: Value =
            serde_json::from_str(&text).map_err(|e| cfg_err(&path, e.to_string()))?;
        let get = |k: &str| config.get(k);
        match get("peft_type").and_then(Value::as_str) {
            Some("LORA") => {}
            other => {
                return Err(cfg_err(
                    &path,
                    format!("peft_type {other:?}: only LORA adapters are supported"),
                ));
            }
        }
        let flag = |k: &str| get(k).and_then(Value::as_bool).unwrap_or(false);
        for k in ["use_dora", "fan_in_fan_out", "lora_bias"] {
            if flag(k) {
                return Err(cfg_err(&path, format!("{k} = true is not supported")));
            }
        }
        if let Some(b) = get("bias").and_then(Value::as_str)
            && b != "none"
        {
            return Err(cfg_err(
                &path,
                format!("bias {b:?}: only \"none\" is supported"),
            ));
        }
        if let Some(m) = get("modules_to_save")
            && !(m.is_null() || m.as_array().is_some_and(Vec::is_empty))
        {
            return Err(cfg_err(
                &path,
                format!("modules_to_save {m}: fully trained modules are not supported"),
            ));
        }
        let alpha = get("lora_alpha").and_then(Value::as_f64).ok_or_else(|| {
            cfg_err(
                &path,
                "field \"lora_alpha\": missing or not a number".into(),
            )
        })?;
        let rslora = flag("use_rslora");
        let alpha_pattern = get("alpha_pattern").and_then(Value::as_object);
        let weights_path = dir.join(ADAPTER_WEIGHTS);
        if !weights_path.exists() && dir.join("adapter_model.bin").exists() {
            return Err(ModelError::Io {
                path: weights_path,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "only adapter_model.bin is present: save the adapter with safe_serialization=True",
                ),
            });
        }
        let mut w = Weights::open_file(&weights_path)?;
        type Half = Option<(Vec<f32>, Vec<usize>)>;
        let mut halves: BTreeMap<String, [Half; 2]> = BTreeMap::new();
        for (key, stored, _, _, shape) in w.entries() {
            let bare = key.strip_prefix("base_model.model.").unwrap_or(&key);
            let (module, which) = if let Some(m) = bare.strip_suffix(".lora_A.weight") {
                (m, 0)
            } else if let Some(m) = bare.strip_suffix(".lora_B.weight") {
                (m, 1)
            } else {
                return Err(ModelError::Safetensors {
                    path: weights_path.clone(),
                    message: format!(
                        "tensor {stored:?} is not a LoRA matrix (…lora_A.weight / …lora_B.weight)"
                    ),
                });
            };
            if shape.len() != 2 {
                return Err(ModelError::Safetensors {
                    path: weights_path.clone(),
                    message: format!("tensor {stored:?} has shape {shape:?}, expected 2-D"),
                });
            }
            let values = w.read_f32(&key, &shape)?;
            halves.entry(canonical(module)).or_default()[which] = Some((values, shape));
        }
        let mut modules = BTreeMap::new();
        for (module, [a, b]) in halves {
            let (Some((a, sa)), Some((b, sb))) = (a, b) else {
                return Err(ModelError::Safetensors {
                    path: weights_path.clone(),
                    message: format!("module {module:?} has only one of lora_A and lora_B"),
                });
            };
            let (r, d_in, d_out) = (sa[0], sa[1], sb[0]);
            if sb[1] != r {
                return Err(ModelError::ShapeMismatch {
                    dir: dir.to_path_buf(),
                    name: format!("{module}.lora_B.weight"),
                    found: sb.clone(),
                    expected: vec![d_out, r],
                });
            }
            let names = [module.clone(), transformers5_name(&module)];
            let alpha = pattern_value(&path, alpha_pattern, &names)?.unwrap_or(alpha);
            modules.insert(
                module,
                AdapterTensors {
                    a,
                    b,
                    dims: (d_in, r, d_out),
                    scale: scale(alpha, r, rslora),
                },
            );
        }
        if modules.is_empty() {
            return Err(ModelError::Safetensors {
                path: weights_path,
                message: "the adapter has no tensors".into(),
            });
        }
        Ok(Adapter { config, modules })
    }

    /// The adapters of `model` (after training), with an `adapter_config.json` that PEFT loads:
    /// `target_modules` is a pattern that matches exactly the adapted modules in both layouts.
    /// All adapters must share one rank and scale (as [`attach`] makes them).
    ///
    /// # Errors
    /// No adapter, or adapters of different ranks or scales.
    pub fn from_model<B: Backend>(
        model: &QwenVl<B>,
        config: &LoraConfig,
        base_model: &str,
    ) -> Result<Self> {
        let mut modules = BTreeMap::new();
        for (name, lin) in model.linears() {
            let Some(l) = &lin.lora else { continue };
            let r = l.rank();
            if r != config.r || (l.scale - config.scale(r)).abs() > 1e-12 * l.scale.abs() {
                return Err(ModelError::Input(format!(
                    "lora: module {name} has rank {r} and scale {}, the config says rank {} and scale {}",
                    l.scale,
                    config.r,
                    config.scale(config.r)
                )));
            }
            let (d_in, d_out) = lin.dims();
            let host = |t: Tensor<B, 2>| -> Result<Vec<f32>> {
                t.transpose()
                    .into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .map_err(|e| ModelError::Input(format!("{e:?}")))
            };
            modules.insert(
                name,
                AdapterTensors {
                    a: host(l.a.val())?,
                    b: host(l.b.val())?,
                    dims: (d_in, r, d_out),
                    scale: l.scale,
                },
            );
        }
        if modules.is_empty() {
            return Err(ModelError::Input("lora: the model has no adapter".into()));
        }
        let names: Vec<&str> = modules.keys().map(String::as_str).collect();
        let config = serde_json::json!({
            "alpha_pattern": {},
            "auto_mapping": null,
            "base_model_name_or_path": base_model,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "layers_pattern": null,
            "layers_to_transform": null,
            "lora_alpha": config.alpha,
            "lora_dropout": config.dropout,
            "modules_to_save": null,
            "peft_type": "LORA",
            "r": config.r,
            "rank_pattern": {},
            "revision": null,
            "target_modules": module_pattern(&names),
            "task_type": "CAUSAL_LM",
            "use_dora": false,
            "use_rslora": config.use_rslora,
        });
        Ok(Adapter { config, modules })
    }

    /// Writes `DIR/adapter_config.json` and `DIR/adapter_model.safetensors` (F32, transformers 5
    /// key names). Refuses to replace existing files unless `overwrite`.
    pub fn write(&self, dir: &Path, overwrite: bool) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| ModelError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let cfg = dir.join(ADAPTER_CONFIG);
        let weights = dir.join(ADAPTER_WEIGHTS);
        for p in [&cfg, &weights] {
            if p.exists() && !overwrite {
                return Err(ModelError::Io {
                    path: p.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "exists; refusing to replace it",
                    ),
                });
            }
        }
        let mut tensors = Vec::new();
        for (m, t) in &self.modules {
            let (d_in, r, d_out) = t.dims;
            let key = format!("base_model.model.{}", transformers5_name(m));
            tensors.push((format!("{key}.lora_A.weight"), Dtype::F32, vec![r, d_in]));
            tensors.push((format!("{key}.lora_B.weight"), Dtype::F32, vec![d_out, r]));
        }
        let mut wr = SafetensorsWriter::create(&weights, &tensors, &[("format", "pt")])?;
        let mut names = tensors.iter().map(|(n, _, _)| n.clone());
        for t in self.modules.values() {
            for v in [&t.a, &t.b] {
                let bytes = crate::weights::encode(Dtype::F32, v);
                let name = names.next().unwrap_or_default();
                wr.write(&name, &bytes)?;
            }
        }
        wr.finish()?;
        let text =
            serde_json::to_string_pretty(&self.config).map_err(|e| cfg_err(&cfg, e.to_string()))?;
        write_atomic(&cfg, format!("{text}\n").as_bytes())
    }

    /// Attaches this adapter to `model` (frozen base, adapters trainable, dropout `dropout`).
    /// Every module the adapter names must exist in the model with the adapter's dimensions.
    pub fn attach<B: Backend>(
        &self,
        model: QwenVl<B>,
        dropout: f64,
        device: &B::Device,
    ) -> Result<QwenVl<B>> {
        let mut model = model.no_grad();
        let mut left: BTreeSet<String> = self.modules.keys().cloned().collect();
        for (name, lin) in model.linears_mut() {
            let Some(t) = self.modules.get(&name) else {
                continue;
            };
            left.remove(&name);
            let (d_in, d_out) = lin.dims();
            if (d_in, d_out) != (t.dims.0, t.dims.2) {
                return Err(ModelError::ShapeMismatch {
                    dir: PathBuf::from(ADAPTER_WEIGHTS),
                    name: format!("{name}.lora_A/B"),
                    found: vec![t.dims.0, t.dims.2],
                    expected: vec![d_in, d_out],
                });
            }
            lin.lora = Some(lora_from_host(
                &name,
                t.a.clone(),
                t.b.clone(),
                t.dims,
                t.scale,
                dropout,
                device,
            ));
        }
        if let Some(first) = left.into_iter().next() {
            return Err(ModelError::Input(format!(
                "the adapter has tensors for module {first:?}, which the model does not have"
            )));
        }
        Ok(model)
    }
}

/// A regular expression (PEFT's `re.fullmatch` semantics) that matches exactly `modules` (hub
/// names) in both the hub and transformers 5 layouts. Modules repeated in every layer are
/// written once with `\d+`-free alternations per layer set.
pub fn module_pattern(modules: &[&str]) -> String {
    // Group decoder-layer modules by their suffix; when a suffix occurs in every layer that has
    // any adapter, the layer index is a set of alternatives.
    let mut by_suffix: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    let mut others: Vec<String> = Vec::new();
    for m in modules {
        let split = m
            .strip_prefix("model.layers.")
            .map(|r| ("model.layers.", r))
            .or_else(|| {
                m.strip_prefix("visual.blocks.")
                    .map(|r| ("visual.blocks.", r))
            });
        match split.and_then(|(p, r)| r.split_once('.').map(|(i, s)| (p, i, s))) {
            Some((p, i, s)) if i.parse::<usize>().is_ok() => {
                by_suffix
                    .entry(format!("{p}{{}}.{s}"))
                    .or_default()
                    .insert(i.parse().unwrap_or(0));
            }
            _ => others.push(regex::escape(m)),
        }
    }
    let mut alts: Vec<String> = Vec::new();
    // Suffixes that share one layer set are written together.
    let mut by_layers: BTreeMap<Vec<usize>, Vec<String>> = BTreeMap::new();
    for (tmpl, layers) in by_suffix {
        by_layers
            .entry(layers.into_iter().collect())
            .or_default()
            .push(tmpl);
    }
    for (layers, tmpls) in by_layers {
        let idx = layers
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("|");
        // Split the templates by prefix (decoder layers or vision blocks).
        let mut by_prefix: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for t in &tmpls {
            let (p, s) = t.split_once("{}.").unwrap_or(("", t));
            by_prefix.entry(p).or_default().push(regex::escape(s));
        }
        for (p, suffixes) in by_prefix {
            alts.push(format!(
                "{}(?:{idx})\\.(?:{})",
                regex::escape(p),
                suffixes.join("|")
            ));
        }
    }
    alts.extend(others);
    let body = alts
        .into_iter()
        .map(|a| {
            if let Some(rest) = a.strip_prefix("model\\.") {
                format!("model\\.(?:language_model\\.)?{rest}")
            } else if let Some(rest) = a.strip_prefix("visual\\.") {
                format!("(?:model\\.)?visual\\.{rest}")
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join("|");
    format!("(?:{body})")
}

/// What [`export_merged`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// Tensors written.
    pub tensors: usize,
    /// Of them, base weights with an adapter folded in.
    pub merged: usize,
    /// Other files copied from the base folder (config, tokenizer, processor, template).
    pub copied: usize,
}

/// Writes the base checkpoint `base` with the adapter `adapter` folded into its weights
/// (`W + s · B A`, computed in f32 and stored in each tensor's own dtype) to the new folder
/// `out`, in the base's own layout: the same shards, key names and dtypes, with every other file
/// of the base folder (config, tokenizer, processor, chat template, index) copied. The result
/// loads in transformers as the base does. Tensors are streamed one at a time. `out` must not
/// exist; it appears only when complete.
///
/// # Errors
/// `out` exists; file, safetensors and adapter errors; an adapter module the base lacks.
pub fn export_merged(base: &Path, adapter: &Path, out: &Path) -> Result<ExportSummary> {
    if out.exists() {
        return Err(ModelError::Io {
            path: out.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists; refusing to write a merged checkpoint over it",
            ),
        });
    }
    let adapter = Adapter::read(adapter)?;
    let mut w = Weights::open(base)?;
    let tmp = out.with_extension("partial");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|source| ModelError::Io {
            path: tmp.clone(),
            source,
        })?;
    }
    std::fs::create_dir_all(&tmp).map_err(|source| ModelError::Io {
        path: tmp.clone(),
        source,
    })?;
    let entries = w.entries();
    let files: Vec<PathBuf> = w.files().to_vec();
    let mut summary = ExportSummary {
        tensors: 0,
        merged: 0,
        copied: 0,
    };
    let mut found: BTreeSet<&str> = BTreeSet::new();
    for (i, file) in files.iter().enumerate() {
        let name = file.file_name().map(PathBuf::from).unwrap_or_default();
        let here: Vec<_> = entries.iter().filter(|e| e.2 == i).collect();
        let header: Vec<(String, Dtype, Vec<usize>)> = here
            .iter()
            .map(|(_, stored, _, dtype, shape)| (stored.clone(), *dtype, shape.clone()))
            .collect();
        let mut wr = SafetensorsWriter::create(&tmp.join(&name), &header, &[("format", "pt")])?;
        for (key, stored, _, dtype, shape) in here {
            let module = key.strip_suffix(".weight");
            let bytes = match module.and_then(|m| adapter.modules.get_key_value(m)) {
                Some((m, t)) => {
                    let (d_in, r, d_out) = t.dims;
                    if shape != &vec![d_out, d_in] {
                        return Err(ModelError::ShapeMismatch {
                            dir: base.to_path_buf(),
                            name: stored.clone(),
                            found: shape.clone(),
                            expected: vec![d_out, d_in],
                        });
                    }
                    found.insert(m.as_str());
                    let mut wv = crate::weights::decode(*dtype, &w.read_raw(key)?);
                    // W[o, :] += s · Σ_k B[o, k] A[k, :], row by row (contiguous, vectorised).
                    for (o, row) in wv.chunks_exact_mut(d_in).enumerate() {
                        for k in 0..r {
                            let c = (t.scale * f64::from(t.b[o * r + k])) as f32;
                            let a = &t.a[k * d_in..(k + 1) * d_in];
                            for (x, &av) in row.iter_mut().zip(a) {
                                *x += c * av;
                            }
                        }
                    }
                    summary.merged += 1;
                    crate::weights::encode(*dtype, &wv)
                }
                None => w.read_raw(key)?,
            };
            wr.write(stored, &bytes)?;
            summary.tensors += 1;
        }
        wr.finish()?;
    }
    if let Some(m) = adapter.modules.keys().find(|m| !found.contains(m.as_str())) {
        return Err(ModelError::MissingTensor {
            dir: base.to_path_buf(),
            name: format!("{m}.weight (adapted by the adapter)"),
        });
    }
    let shards: BTreeSet<PathBuf> = files
        .iter()
        .filter_map(|f| f.file_name().map(PathBuf::from))
        .collect();
    let listing = std::fs::read_dir(base).map_err(|source| ModelError::Io {
        path: base.to_path_buf(),
        source,
    })?;
    for entry in listing {
        let entry = entry.map_err(|source| ModelError::Io {
            path: base.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let name = PathBuf::from(entry.file_name());
        if !path.is_file() || shards.contains(&name) {
            continue;
        }
        std::fs::copy(&path, tmp.join(&name)).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        summary.copied += 1;
    }
    std::fs::rename(&tmp, out).map_err(|source| ModelError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(summary)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).map_err(|source| ModelError::Io {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_matches_exactly_the_modules_in_both_layouts() {
        let mods = [
            "model.layers.0.self_attn.q_proj",
            "model.layers.0.mlp.down_proj",
            "model.layers.1.self_attn.q_proj",
            "model.layers.1.mlp.down_proj",
            "visual.blocks.0.attn.qkv",
        ];
        let p = module_pattern(&mods);
        let re = regex::Regex::new(&format!("^{p}$")).unwrap();
        for m in mods {
            assert!(re.is_match(m), "{m} in {p}");
            assert!(re.is_match(&transformers5_name(m)), "{m} (tf5) in {p}");
        }
        for m in [
            "model.layers.0.self_attn.k_proj",
            "model.layers.2.self_attn.q_proj",
            "model.layers.10.self_attn.q_proj",
            "visual.blocks.0.mlp.down_proj",
            "visual.blocks.1.attn.qkv",
            "lm_head",
        ] {
            assert!(!re.is_match(m), "{m} matched {p}");
            assert!(
                !re.is_match(&transformers5_name(m)),
                "{m} (tf5) matched {p}"
            );
        }
    }

    #[test]
    fn rslora_scale() {
        assert_eq!(scale(16.0, 4, false), 4.0);
        assert_eq!(scale(16.0, 4, true), 8.0);
    }
}
