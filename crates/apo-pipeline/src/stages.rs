//! The stage cache of a run folder: every finished stage leaves a marker in `OUT/stages/`
//! holding a key (a hash of its inputs and of the keys of the stages before it) and what
//! later stages need of its result.
//!
//! When resuming, a stage whose marker matches is skipped, and a training stage that was
//! started with the same key and not finished continues from its newest checkpoint: a rerun
//! resumes at the first unfinished stage, and a changed input reruns that stage and every
//! stage after it.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{PipelineError, Result};

/// The stage markers of a run folder.
#[derive(Debug, Clone)]
pub struct StageCache {
    dir: PathBuf,
    resume: bool,
}

#[derive(serde::Deserialize)]
struct Marker<T> {
    key: String,
    value: T,
}

impl StageCache {
    /// The markers in `dir`; with `resume` false no marker counts as done.
    pub fn new(dir: PathBuf, resume: bool) -> Self {
        StageCache { dir, resume }
    }

    fn marker(&self, name: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{name}.{ext}"))
    }

    /// The stored result of `name` when resuming and its key matches.
    pub fn done<T: DeserializeOwned>(&self, name: &str, key: &str) -> Option<T> {
        if !self.resume {
            return None;
        }
        let text = std::fs::read_to_string(self.marker(name, "json")).ok()?;
        let m: Marker<T> = serde_json::from_str(&text).ok()?;
        (m.key == key).then_some(m.value)
    }

    /// Records that `name` starts with `key`; returns whether it had been started with the
    /// same key before (an unfinished run to continue).
    ///
    /// # Errors
    /// [`PipelineError::Io`].
    pub fn start(&self, name: &str, key: &str) -> Result<bool> {
        let path = self.marker(name, "started");
        let same = self.resume && std::fs::read_to_string(&path).is_ok_and(|k| k == key);
        std::fs::create_dir_all(&self.dir).map_err(PipelineError::io(&self.dir))?;
        let done = self.marker(name, "json");
        if done.exists() {
            std::fs::remove_file(&done).map_err(PipelineError::io(&done))?;
        }
        std::fs::write(&path, key).map_err(PipelineError::io(&path))?;
        Ok(same)
    }

    /// Records `name`'s result (atomically).
    ///
    /// # Errors
    /// [`PipelineError::Io`].
    pub fn finish<T: Serialize>(&self, name: &str, key: &str, value: &T) -> Result<()> {
        let path = self.marker(name, "json");
        crate::io::write_atomic(&path, |w| {
            serde_json::to_writer(&mut *w, &serde_json::json!({ "key": key, "value": value }))?;
            Ok(())
        })
    }
}

/// A key over the data set's top-level files (records, tables, profiles): name, size and
/// modification time; images are not read.
///
/// # Errors
/// [`PipelineError::Io`] listing the folder.
pub fn data_key(dir: &Path) -> Result<String> {
    let mut entries: Vec<(String, u64, u128)> = Vec::new();
    for e in std::fs::read_dir(dir).map_err(PipelineError::io(dir))? {
        let e = e.map_err(PipelineError::io(dir))?;
        let meta = e.metadata().map_err(PipelineError::io(e.path()))?;
        if meta.is_file() {
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            entries.push((
                e.file_name().to_string_lossy().into_owned(),
                meta.len(),
                modified,
            ));
        }
    }
    entries.sort();
    let text = format!("{}|{entries:?}", dir.display());
    Ok(apo_train::checkpoint::fnv(&[text.as_bytes()]))
}

/// A key over `parts`.
pub fn key(parts: &[&str]) -> String {
    let bytes: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
    apo_train::checkpoint::fnv(&bytes)
}

/// `value` as compact JSON, for keys.
pub fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_is_done_only_when_resuming_with_the_same_key() {
        let dir = std::env::temp_dir().join(format!("apo-stages-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        let fresh = StageCache::new(dir.clone(), false);
        assert!(!fresh.start("sft", "k1").unwrap(), "nothing started before");
        fresh.finish("sft", "k1", &42_u32).unwrap();
        assert_eq!(
            fresh.done::<u32>("sft", "k1"),
            None,
            "a fresh run redoes every stage"
        );
        let resume = StageCache::new(dir.clone(), true);
        assert_eq!(resume.done::<u32>("sft", "k1"), Some(42));
        assert_eq!(
            resume.done::<u32>("sft", "k2"),
            None,
            "another key is not done"
        );
        assert_eq!(
            resume.done::<String>("sft", "k1"),
            None,
            "another type does not parse"
        );
        // Started with the same key and not finished: continue; starting clears the result.
        assert!(resume.start("sft", "k1").unwrap());
        assert_eq!(resume.done::<u32>("sft", "k1"), None);
        assert!(
            !resume.start("sft", "k2").unwrap(),
            "a changed key starts over"
        );
        assert_eq!(key(&["a", "b"]), key(&["a", "b"]));
        assert_ne!(key(&["a", "b"]), key(&["ab"]));
        std::fs::remove_dir_all(&dir).ok();
    }
}
