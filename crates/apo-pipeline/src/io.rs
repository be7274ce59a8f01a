//! Writing result files.

use std::io::Write;
use std::path::Path;

use crate::error::{PipelineError, Result};

/// Writes `path` atomically: `write` fills a temporary file beside it, which is synced and
/// renamed over `path`, so a reader never sees a half-written file. Only a new path or a
/// regular file is replaced; a symbolic link is written through (its target is replaced, the
/// link kept); a folder, FIFO, device or socket is refused
/// ([`cxr_max::output::replace_target`]).
///
/// # Errors
/// [`PipelineError::UnsafeOutput`] naming `path`, [`PipelineError::Io`] naming `path`.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    cxr_max::output::write_atomic(path, write).map_err(|e| match e {
        cxr_max::output::WriteError::Target(t) => PipelineError::UnsafeOutput(t),
        cxr_max::output::WriteError::Io { path, source } => PipelineError::Io { path, source },
    })
}

/// Writes `value` as pretty JSON to `path` (atomically).
///
/// # Errors
/// [`PipelineError::Io`] naming `path`.
pub fn write_json<T: serde::Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    write_atomic(path, |w| {
        serde_json::to_writer_pretty(&mut *w, value)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A result file path that is a folder is refused, named, and left as it was.
    #[test]
    fn a_folder_at_the_output_path_is_refused() {
        let dir = std::env::temp_dir().join(format!("apo-pipeline-io-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = dir.join("prefs.jsonl");
        std::fs::create_dir_all(&out).unwrap();
        let e = write_json(&out, &[1, 2]).unwrap_err();
        assert!(
            matches!(&e, PipelineError::UnsafeOutput(t) if t.path == out),
            "{e}"
        );
        assert!(out.is_dir());
        let file = dir.join("ok.json");
        write_json(&file, &[1, 2]).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "[\n  1,\n  2\n]");
        std::fs::remove_dir_all(&dir).ok();
    }
}
