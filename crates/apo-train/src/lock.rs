//! One trainer per stage folder: `STAGE/.lock` holds the owner's process id while a stage
//! trains, so two trainers on one run folder cannot interleave `metrics.jsonl` and checkpoints.
//! A lock left by a process that no longer runs (killed) is taken over with a warning.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::io_err;
use crate::{Result, TrainError};

/// The lock of one stage folder, released when dropped.
#[derive(Debug)]
pub struct StageLock {
    path: PathBuf,
}

/// Whether process `pid` runs (Linux: `/proc/PID`; elsewhere every recorded owner counts as
/// running, and a stale lock is removed by hand as the error says).
fn alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

impl StageLock {
    /// Takes `DIR/.lock` (creating `DIR`).
    ///
    /// # Errors
    /// [`TrainError::Locked`] while another running process holds it; file errors.
    pub fn acquire(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(".lock");
        for _ in 0..3 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    writeln!(f, "{}", std::process::id()).map_err(io_err(&path))?;
                    return Ok(StageLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|t| t.trim().parse::<u32>().ok());
                    match owner {
                        Some(pid) if pid != std::process::id() && alive(pid) => {
                            return Err(TrainError::Locked { path, pid });
                        }
                        _ => {
                            tracing::warn!(
                                lock = %path.display(),
                                owner = ?owner,
                                "removing a stale lock (its process no longer runs)"
                            );
                            match std::fs::remove_file(&path) {
                                Ok(()) => {}
                                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                                Err(e) => return Err(io_err(&path)(e)),
                            }
                        }
                    }
                }
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        Err(TrainError::Locked {
            path,
            pid: std::process::id(),
        })
    }
}

impl Drop for StageLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_owner_blocks_a_dead_one_does_not() {
        let dir = std::env::temp_dir().join(format!("apo-lock-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        {
            let _held = StageLock::acquire(&dir).unwrap();
            assert!(dir.join(".lock").is_file());
            // Another process holds it: pid 1 (init) always runs on Linux.
            std::fs::write(dir.join(".lock"), "1\n").unwrap();
            if cfg!(target_os = "linux") {
                let e = StageLock::acquire(&dir).unwrap_err();
                assert!(matches!(&e, TrainError::Locked { pid: 1, .. }), "{e}");
                assert!(e.to_string().contains(".lock"), "{e}");
            }
        }
        assert!(!dir.join(".lock").exists(), "released on drop");
        // A lock whose process is gone (a killed trainer) is taken over.
        std::fs::write(dir.join(".lock"), "4294967295\n").unwrap();
        let again = StageLock::acquire(&dir).unwrap();
        drop(again);
        std::fs::remove_dir_all(&dir).ok();
    }
}
