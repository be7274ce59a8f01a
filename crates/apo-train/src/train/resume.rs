//! What a checkpoint must agree with to be resumed from, which checkpoint to resume, and the
//! stop request a SIGINT handler sets.
//!
//! - [`ResumeKey`]: the settings a stage's checkpoints belong to, as named JSON parts with a
//!   hash. The step count is left out, so `--resume` may raise it (only the schedule's length
//!   changes). A checkpoint written with other settings is refused with the fields that differ.
//! - [`pick`]: the newest checkpoint, or the one `--from-checkpoint` names (newer ones are
//!   removed: they belong to the continuation being abandoned).
//! - [`stop_flag`]: set by `apo train`'s SIGINT handler; the loops finish the current step,
//!   write a checkpoint and return [`TrainError::Interrupted`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use serde_json::Value;

use crate::checkpoint::fnv;
use crate::error::io_err;
use crate::{Result, TrainError};

/// The settings a stage's checkpoints belong to.
#[derive(Debug, Clone, PartialEq)]
pub struct ResumeKey {
    /// FNV-1a of `fields`.
    pub hash: String,
    /// The named parts (`{"sft": {...}, "data": {...}, "seed": 0, ...}`).
    pub fields: Value,
}

/// A value as JSON (`null` if it does not serialise, which the types here always do).
pub fn json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// `value` without its `steps` field (an optimiser section): raising the step count on
/// resume is allowed.
pub fn without_steps(mut value: Value) -> Value {
    if let Value::Object(m) = &mut value {
        m.remove("steps");
    }
    value
}

impl ResumeKey {
    /// The key of named parts.
    pub fn new(parts: Vec<(&str, Value)>) -> Self {
        let fields: serde_json::Map<String, Value> =
            parts.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let fields = Value::Object(fields);
        let hash = fnv(&[fields.to_string().as_bytes()]);
        ResumeKey { hash, fields }
    }

    /// Whether a checkpoint's recorded hash and fields belong to this key; `Err` lists the
    /// fields that differ as `(found, expected)` texts.
    pub fn check(&self, hash: &str, fields: &Value) -> std::result::Result<(), (String, String)> {
        if hash == self.hash {
            return Ok(());
        }
        let mut diffs = Vec::new();
        differences(fields, &self.fields, String::new(), &mut diffs);
        if diffs.is_empty() {
            return Err((
                format!("settings hash {hash}"),
                format!(
                    "settings hash {} (the checkpoint records no settings)",
                    self.hash
                ),
            ));
        }
        let side = |f: &dyn Fn(&(String, String, String)) -> String| {
            diffs.iter().map(f).collect::<Vec<_>>().join(", ")
        };
        Err((
            side(&|(p, a, _)| format!("{p} = {a}")),
            side(&|(p, _, b)| format!("{p} = {b}")),
        ))
    }
}

fn show(v: Option<&Value>) -> String {
    match v {
        None => "(absent)".to_owned(),
        Some(v) => v.to_string(),
    }
}

/// The dotted paths at which `a` and `b` differ, with both values.
fn differences(a: &Value, b: &Value, prefix: String, out: &mut Vec<(String, String, String)>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => differences(p, q, path, out),
                    (p, q) => out.push((path, show(p), show(q))),
                }
            }
        }
        _ if a != b => out.push((prefix, a.to_string(), b.to_string())),
        _ => {}
    }
}

/// The checkpoint to resume from: step `from` if given (an error listing the steps there are
/// when it is missing; the newer checkpoints are removed), else the newest.
///
/// # Errors
/// [`TrainError::NoModel`] for a missing step; file errors.
pub fn pick(
    dir: &Path,
    existing: &[(usize, PathBuf)],
    from: Option<usize>,
) -> Result<Option<PathBuf>> {
    let Some(step) = from else {
        return Ok(existing.last().map(|(_, p)| p.clone()));
    };
    let Some((_, path)) = existing.iter().find(|(s, _)| *s == step) else {
        return Err(TrainError::NoModel {
            path: dir.join("checkpoints").join(format!("step-{step:06}")),
            reason: format!(
                "no checkpoint at step {step}; the stage has {}",
                if existing.is_empty() {
                    "none".to_owned()
                } else {
                    existing
                        .iter()
                        .map(|(s, _)| s.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        });
    };
    for (s, newer) in existing {
        if *s > step {
            tracing::info!(checkpoint = %newer.display(), "removed: newer than --from-checkpoint");
            std::fs::remove_dir_all(newer).map_err(io_err(newer))?;
        }
    }
    Ok(Some(path.clone()))
}

/// Checks the step count against a checkpoint's: it may grow (said in the log), not fall
/// below the checkpoint's step.
///
/// # Errors
/// [`TrainError::Config`] when the checkpoint is beyond the configured steps.
pub fn check_steps(stage: &str, at: usize, recorded: usize, steps: usize) -> Result<()> {
    if at > steps {
        return Err(TrainError::Config {
            field: format!("{stage} steps"),
            value: steps.to_string(),
            expected: format!(
                "at least {at}, the step of the checkpoint being resumed (or start the stage again without --resume)"
            ),
        });
    }
    if recorded != 0 && recorded != steps {
        tracing::info!(
            stage,
            from = recorded,
            to = steps,
            "the step count changed on resume: the learning-rate schedule's length changes with it"
        );
    }
    Ok(())
}

fn flag() -> &'static Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// The flag a SIGINT handler sets (`signal_hook::flag::register`): the training loops finish
/// the step, write a checkpoint and stop with [`TrainError::Interrupted`].
pub fn stop_flag() -> Arc<AtomicBool> {
    Arc::clone(flag())
}

/// Whether a stop was requested.
pub fn stop_requested() -> bool {
    flag().load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differing_fields_are_named_and_steps_do_not_count() {
        let a = ResumeKey::new(vec![
            (
                "sft",
                without_steps(serde_json::json!({"steps": 10, "learning_rate": 0.001})),
            ),
            ("seed", serde_json::json!(0)),
        ]);
        let b = ResumeKey::new(vec![
            (
                "sft",
                without_steps(serde_json::json!({"steps": 20, "learning_rate": 0.001})),
            ),
            ("seed", serde_json::json!(0)),
        ]);
        assert_eq!(a.hash, b.hash, "a longer run resumes");
        let c = ResumeKey::new(vec![
            (
                "sft",
                without_steps(serde_json::json!({"steps": 10, "learning_rate": 0.002})),
            ),
            ("seed", serde_json::json!(1)),
        ]);
        let (found, expected) = c.check(&a.hash, &a.fields).unwrap_err();
        assert_eq!(found, "seed = 0, sft.learning_rate = 0.001");
        assert_eq!(expected, "seed = 1, sft.learning_rate = 0.002");
        assert!(a.check(&b.hash, &b.fields).is_ok());
    }

    #[test]
    fn check_steps_allows_growth_only() {
        assert!(check_steps("sft", 4, 6, 10).is_ok());
        assert!(check_steps("sft", 4, 6, 4).is_ok());
        assert!(check_steps("sft", 6, 6, 4).is_err());
    }
}
