//! Checkpoints: model, optimiser and run state, written atomically.
//!
//! `STAGE/checkpoints/step-000050/` holds `model.bin`, `optim.bin` and `state.json`. It is
//! written as `step-000050.partial/` and renamed when complete, so a run killed at any moment
//! leaves either a whole checkpoint or a `.partial` folder that resuming ignores and removes.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::Optimizer;
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::error::io_err;
use crate::{Result, Student, StudentConfig, TrainError};

/// The recorder of every model and optimiser file (full precision: resuming is bitwise).
pub type Rec = BinFileRecorder<FullPrecisionSettings>;

/// What a checkpoint records besides tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// `sft` or the stage-2 name.
    pub stage: String,
    /// Optimiser steps done.
    pub step: usize,
    /// The stage's configured step count when it was written (0 in older checkpoints).
    #[serde(default)]
    pub steps: usize,
    /// Micro-batches consumed (the data position: the order is a function of the seed).
    pub micro_batches: usize,
    /// The run seed (data order, initialisation, per-micro-batch backend seeds).
    pub seed: u64,
    /// Learning rate of the last step (the schedule is a function of the step).
    pub lr: f64,
    /// Fingerprint of everything that must not change on resume.
    pub fingerprint: String,
    /// The settings behind the fingerprint (named parts), so a mismatch names the fields.
    #[serde(default)]
    pub identity: serde_json::Value,
    /// The architecture.
    #[serde(deserialize_with = "deserialize_student")]
    pub model: StudentConfig,
    /// FNV-1a digest of each file of the checkpoint (`model.bin`, `optim.bin`), checked before
    /// resuming: a checkpoint whose bytes changed is refused, not resumed from.
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, String>,
}

/// The digest of every named file in `dir`.
///
/// # Errors
/// File errors.
pub fn digest_files(
    dir: &Path,
    names: &[&str],
) -> Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for n in names {
        let p = dir.join(n);
        let bytes = std::fs::read(&p).map_err(io_err(&p))?;
        out.insert((*n).to_owned(), fnv(&[&bytes]));
    }
    Ok(out)
}

/// Checks the files of a checkpoint against the digests its `state.json` recorded (a
/// checkpoint written before digests were recorded has none and passes).
///
/// # Errors
/// [`TrainError::CorruptCheckpoint`] naming the first file whose bytes changed or is missing.
pub fn verify_files(dir: &Path, files: &std::collections::BTreeMap<String, String>) -> Result<()> {
    for (name, want) in files {
        let p = dir.join(name);
        let bytes = std::fs::read(&p).map_err(|e| corrupt(&p, e))?;
        let got = fnv(&[&bytes]);
        if &got != want {
            return Err(TrainError::CorruptCheckpoint {
                path: p,
                message: format!(
                    "its contents changed since the checkpoint was written (digest {got}, recorded {want}); resume from an earlier checkpoint or start the stage again"
                ),
            });
        }
    }
    Ok(())
}

/// FNV-1a, 64 bit: a stable fingerprint of bytes (not cryptographic).
pub fn fnv(parts: &[&[u8]]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn corrupt(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::CorruptCheckpoint {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// Writes a checkpoint under `dir/checkpoints`, then deletes all but the newest `keep`.
///
/// # Errors
/// File and recorder errors.
pub fn save<B, O>(
    dir: &Path,
    model: &Student<B>,
    optim: &O,
    state: &State,
    keep: usize,
) -> Result<PathBuf>
where
    B: AutodiffBackend,
    O: Optimizer<Student<B>, B>,
{
    let root = dir.join("checkpoints");
    std::fs::create_dir_all(&root).map_err(io_err(&root))?;
    let name = format!("step-{:06}", state.step);
    let tmp = root.join(format!("{name}.partial"));
    let done = root.join(&name);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let rec = Rec::new();
    model
        .clone()
        .save_file(tmp.join("model"), &rec)
        .map_err(|e| corrupt(&tmp, e))?;
    Recorder::<B>::record(&rec, optim.to_record(), tmp.join("optim"))
        .map_err(|e| corrupt(&tmp, e))?;
    let state = State {
        files: digest_files(&tmp, &["model.bin", "optim.bin"])?,
        ..state.clone()
    };
    let json = serde_json::to_string_pretty(&state).map_err(|e| corrupt(&tmp, e))?;
    std::fs::write(tmp.join("state.json"), json).map_err(io_err(&tmp))?;
    if done.exists() {
        std::fs::remove_dir_all(&done).map_err(io_err(&done))?;
    }
    std::fs::rename(&tmp, &done).map_err(io_err(&done))?;
    let mut all = list(dir)?;
    while all.len() > keep.max(1) {
        let (_, old) = all.remove(0);
        std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
    }
    Ok(done)
}

/// Complete checkpoints `(step, folder)`, oldest first; removes leftover `.partial` folders.
///
/// # Errors
/// File errors.
pub fn list(dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let root = dir.join("checkpoints");
    if !root.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&root).map_err(io_err(&root))? {
        let entry = entry.map_err(io_err(&root))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".partial") {
            std::fs::remove_dir_all(entry.path()).map_err(io_err(&entry.path()))?;
            continue;
        }
        if let Some(step) = name.strip_prefix("step-").and_then(|s| s.parse().ok()) {
            out.push((step, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Reads a checkpoint's state and checks it belongs to this run.
///
/// # Errors
/// [`TrainError::CorruptCheckpoint`], [`TrainError::CheckpointMismatch`].
pub fn read_state(
    path: &Path,
    stage: &str,
    fingerprint: &crate::train::ResumeKey,
    model: &StudentConfig,
) -> Result<State> {
    let file = path.join("state.json");
    let text = std::fs::read_to_string(&file).map_err(|e| corrupt(&file, e))?;
    let state: State = serde_json::from_str(&text).map_err(|e| corrupt(&file, e))?;
    if state.stage != stage {
        return Err(TrainError::CheckpointMismatch {
            path: path.to_owned(),
            what: "stage",
            found: state.stage,
            expected: stage.to_owned(),
        });
    }
    if &state.model != model {
        return Err(TrainError::CheckpointMismatch {
            path: path.to_owned(),
            what: "model architecture",
            found: serde_json::to_string(&state.model).unwrap_or_default(),
            expected: serde_json::to_string(model).unwrap_or_default(),
        });
    }
    if let Err((found, expected)) = fingerprint.check(&state.fingerprint, &state.identity) {
        return Err(TrainError::CheckpointMismatch {
            path: path.to_owned(),
            what: "run configuration",
            found,
            expected,
        });
    }
    verify_files(path, &state.files)?;
    Ok(state)
}

/// Loads a checkpoint's model and optimiser into `model` and `optim`.
///
/// # Errors
/// [`TrainError::CorruptCheckpoint`].
pub fn load<B, O>(
    path: &Path,
    model: Student<B>,
    optim: O,
    device: &B::Device,
) -> Result<(Student<B>, O)>
where
    B: AutodiffBackend,
    O: Optimizer<Student<B>, B>,
{
    let rec = Rec::new();
    let model = model
        .load_file(path.join("model"), &rec, device)
        .map_err(|e| corrupt(&path.join("model.bin"), e))?;
    let record = Recorder::<B>::load(&rec, path.join("optim"), device)
        .map_err(|e| corrupt(&path.join("optim.bin"), e))?;
    Ok((model, optim.load_record(record)))
}

/// Saves a final model (`model.bin`, `model.json`) atomically into `dir`.
///
/// # Errors
/// File and recorder errors.
pub fn save_model<B: burn::tensor::backend::Backend>(
    dir: &Path,
    model: Student<B>,
    config: &StudentConfig,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    // Only regular files (or links to them) are replaced; a folder or FIFO at either path is
    // refused before anything is written.
    let bin = cxr_max::output::replace_target(&dir.join("model.bin"))?;
    let json_path = cxr_max::output::replace_target(&dir.join("model.json"))?;
    // The recorder sets the extension itself, so the temporary file lives in its own folder.
    let tmp = dir.join(".partial");
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    model
        .save_file(tmp.join("model"), &Rec::new())
        .map_err(|e| corrupt(dir, e))?;
    std::fs::rename(tmp.join("model.bin"), &bin).map_err(io_err(&bin))?;
    std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    let json = serde_json::to_string_pretty(config).map_err(|e| corrupt(dir, e))?;
    let partial = cxr_max::output::temporary(&json_path);
    std::fs::write(&partial, json).map_err(io_err(&partial))?;
    std::fs::rename(&partial, &json_path).map_err(io_err(&json_path))?;
    Ok(dir.join("model.bin"))
}

/// Reads a `model.json`; fields added since it was written take their defaults (a model
/// saved before `concept_input` existed has none; one saved before `n_concepts` has 14).
fn student_config(text: &str) -> std::result::Result<StudentConfig, serde_json::Error> {
    student_config_value(serde_json::from_str(text)?)
}

/// [`student_config`] on a parsed value.
fn student_config_value(
    mut value: serde_json::Value,
) -> std::result::Result<StudentConfig, serde_json::Error> {
    let vocab = value.get("vocab_size").and_then(serde_json::Value::as_u64);
    if let (Some(saved), Some(vocab)) = (value.as_object_mut(), vocab)
        && let serde_json::Value::Object(defaults) =
            serde_json::to_value(StudentConfig::new(vocab as usize))?
    {
        for (key, default) in defaults {
            saved.entry(key).or_insert(default);
        }
    }
    serde_json::from_value(value)
}

/// The architecture of a `state.json`, with the defaults of fields added since it was
/// written (as [`student_config`]), so older checkpoints still resume.
fn deserialize_student<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<StudentConfig, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    student_config_value(value).map_err(serde::de::Error::custom)
}

/// Loads a final model written by [`save_model`].
///
/// # Errors
/// [`TrainError::CorruptCheckpoint`] for a missing or unreadable model.
pub fn load_model<B: burn::tensor::backend::Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(Student<B>, StudentConfig)> {
    let file = dir.join("model.json");
    if !dir.is_dir() {
        return Err(TrainError::NoModel {
            path: dir.to_owned(),
            reason: "the model folder does not exist (train that stage first, or name an existing stage or model folder)".to_owned(),
        });
    }
    if !file.exists() {
        return Err(TrainError::NoModel {
            path: dir.to_owned(),
            reason: "holds no model.json: not a finished stage (finish or resume its training first, or name another model folder)".to_owned(),
        });
    }
    let text = std::fs::read_to_string(&file).map_err(|e| corrupt(&file, e))?;
    let config = student_config(&text).map_err(|e| corrupt(&file, e))?;
    let model = config.init::<B>(device)?;
    let model = model
        .load_file(dir.join("model"), &Rec::new(), device)
        .map_err(|e| corrupt(&dir.join("model.bin"), e))?;
    Ok((model, config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model folder that does not exist, or holds no model, says so (not "corrupt").
    #[test]
    fn a_missing_model_folder_is_not_called_corrupt() {
        let device = Default::default();
        let root = std::env::temp_dir().join(format!("apo-train-no-model-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let missing = root.join("nope");
        let e = load_model::<burn::backend::NdArray>(&missing, &device).unwrap_err();
        assert!(
            matches!(&e, TrainError::NoModel { path, .. } if *path == missing),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("nope: the model folder does not exist"),
            "{e}"
        );
        assert!(!e.to_string().contains("corrupt"), "{e}");
        std::fs::create_dir_all(&missing).unwrap();
        let e = load_model::<burn::backend::NdArray>(&missing, &device).unwrap_err();
        assert!(e.to_string().contains("holds no model.json"), "{e}");
        std::fs::remove_dir_all(&root).ok();
    }

    /// A folder where `model.json` goes is refused before anything is written; a regular
    /// model folder is written and reads back.
    #[test]
    fn save_model_refuses_a_folder_in_the_way() {
        type B = burn::backend::NdArray;
        let device = Default::default();
        let root = std::env::temp_dir().join(format!("apo-train-save-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let config = StudentConfig::new(300).with_d_model(32);
        let model = config.init::<B>(&device).unwrap();
        std::fs::create_dir_all(root.join("model.json")).unwrap();
        let e = save_model(&root, model.clone(), &config).unwrap_err();
        assert!(
            matches!(&e, TrainError::UnsafeOutput(t) if t.kind == "a folder"),
            "{e}"
        );
        assert!(
            e.to_string().contains("model.json: a folder; refusing"),
            "{e}"
        );
        assert!(!root.join("model.bin").exists());
        assert!(root.join("model.json").is_dir());
        let good = root.join("good");
        save_model(&good, model, &config).unwrap();
        let (_, read) = load_model::<B>(&good, &device).unwrap();
        assert_eq!(read, config);
        std::fs::remove_dir_all(&root).ok();
    }

    /// A `model.json` written before a field existed loads with that field's default; a
    /// present field keeps its value; a file without `vocab_size` is still an error.
    #[test]
    fn older_model_json_takes_new_fields_defaults() {
        let mut saved = serde_json::to_value(StudentConfig::new(300).with_d_model(64)).unwrap();
        let object = saved.as_object_mut().unwrap();
        object.remove("concept_input");
        object.remove("concept_head");
        object.remove("n_concepts");
        let config = student_config(&saved.to_string()).unwrap();
        assert_eq!(config, StudentConfig::new(300).with_d_model(64));
        assert_eq!(config.n_concepts, 14);
        // The same for the architecture in a checkpoint's state.
        let state = State {
            stage: "sft".into(),
            step: 3,
            steps: 3,
            micro_batches: 3,
            seed: 0,
            lr: 1e-3,
            fingerprint: "f".into(),
            identity: serde_json::Value::Null,
            model: StudentConfig::new(300).with_d_model(64),
            files: Default::default(),
        };
        let mut json = serde_json::to_value(&state).unwrap();
        json["model"].as_object_mut().unwrap().remove("n_concepts");
        assert_eq!(serde_json::from_value::<State>(json).unwrap(), state);
        assert!(student_config(r#"{"d_model": 64}"#).is_err());
        assert!(student_config("not json").is_err());
    }
}
