//! Writing result files.

use std::io::Write;
use std::path::Path;

use crate::error::{PipelineError, Result};

/// Writes `path` atomically: `write` fills a temporary file in the same folder, which is
/// synced and renamed over `path`, so a reader never sees a half-written file.
///
/// # Errors
/// [`PipelineError::Io`] naming `path`.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let err = PipelineError::io(path);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(PipelineError::io(parent))?;
    }
    let tmp = path.with_extension("partial");
    let written = (|| {
        let file = std::fs::File::create(&tmp)?;
        let mut w = std::io::BufWriter::new(file);
        write(&mut w)?;
        w.flush()?;
        w.get_ref().sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    written.map_err(err)
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
