//! Safe output files: what a temporary-file-and-rename write may replace, the write itself,
//! and reading text inputs that may begin with a UTF-8 byte-order mark.
//!
//! A temporary file renamed over a path replaces whatever the path names. That is right for a
//! regular file (readers never see half a file) and for a new path, and wrong for anything
//! else: renaming over a FIFO, a device file or a socket would silently swap the special file
//! for a regular one, and a folder cannot be replaced at all. [`replace_target`] decides:
//!
//! - a path that does not exist, or a regular file: replaced (the path itself);
//! - a symbolic link: written *through*. The link is resolved to its final target, and that
//!   target (which must itself be a regular file, or a new path in an existing folder) is
//!   replaced in its own folder; the link stays a link. A dangling link whose folder does not
//!   exist is refused;
//! - a folder, FIFO, device file or socket: refused with [`UnsafeTarget`] naming the path.
//!
//! apo-pipeline, apo-train and apo-cli use this module for every such write (apo-consensus
//! writes no files itself).

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

/// An output path that a temporary-file-and-rename write must not replace.
#[derive(Debug, thiserror::Error)]
#[error(
    "{}: {kind}; refusing to replace it with a regular file (write to a new path or a regular file)",
    path.display()
)]
pub struct UnsafeTarget {
    /// The path as given.
    pub path: PathBuf,
    /// What the path is (`a folder`, `a FIFO (named pipe)`, ...), or what failed.
    pub kind: String,
}

/// An error of [`write_atomic`].
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The path names something that is not a regular file.
    #[error(transparent)]
    Target(#[from] UnsafeTarget),
    /// Writing, syncing or renaming failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

#[cfg(unix)]
fn special_kind(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: std::fs::FileType) -> &'static str {
    "not a regular file"
}

/// The path a temporary-file-and-rename write of `path` replaces: `path` itself when it does
/// not exist or is a regular file, the link's final target when it is a symbolic link (see
/// the module documentation).
///
/// # Errors
/// [`UnsafeTarget`] for a folder, FIFO, device, socket, or a link to one (or a link whose
/// target folder does not exist).
pub fn replace_target(path: &Path) -> Result<PathBuf, UnsafeTarget> {
    let refuse = |kind: String| UnsafeTarget {
        path: path.to_owned(),
        kind,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(path.to_owned()),
        Err(e) => return Err(refuse(format!("cannot be inspected ({e})"))),
    };
    let t = meta.file_type();
    if t.is_file() {
        return Ok(path.to_owned());
    }
    if t.is_dir() {
        return Err(refuse("a folder".to_owned()));
    }
    if !t.is_symlink() {
        return Err(refuse(special_kind(t).to_owned()));
    }
    // A symbolic link: replace its final target.
    match std::fs::canonicalize(path) {
        Ok(target) => {
            let t = std::fs::metadata(&target)
                .map_err(|e| refuse(format!("a link whose target cannot be inspected ({e})")))?
                .file_type();
            if t.is_file() {
                Ok(target)
            } else if t.is_dir() {
                Err(refuse(format!("a link to a folder ({})", target.display())))
            } else {
                Err(refuse(format!(
                    "a link to {} ({})",
                    special_kind(t),
                    target.display()
                )))
            }
        }
        Err(_) => {
            // Dangling: the link's target is a new file, if its folder exists.
            let link = std::fs::read_link(path)
                .map_err(|e| refuse(format!("a link that cannot be read ({e})")))?;
            let target = match path.parent() {
                Some(parent) if link.is_relative() => parent.join(link),
                _ => link,
            };
            let folder = target
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            match (std::fs::canonicalize(folder), target.file_name()) {
                (Ok(folder), Some(name)) if folder.is_dir() => Ok(folder.join(name)),
                _ => Err(refuse(format!(
                    "a link to {}, whose folder does not exist",
                    target.display()
                ))),
            }
        }
    }
}

/// The temporary file beside `path` (`NAME.partial`).
pub fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

/// Writes `path` atomically: `write` fills a temporary file beside the file to replace
/// ([`replace_target`]), which is synced and renamed over it, so a reader never sees a
/// half-written file. Creates the parent folder. On failure the temporary file is removed.
///
/// # Errors
/// [`WriteError::Target`] when `path` is not replaceable, [`WriteError::Io`] naming `path`.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), WriteError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| WriteError::Io {
            path: parent.to_owned(),
            source,
        })?;
    }
    let target = replace_target(path)?;
    let tmp = temporary(&target);
    let written = (|| {
        let file = std::fs::File::create(&tmp)?;
        let mut w = std::io::BufWriter::new(file);
        write(&mut w)?;
        w.flush()?;
        w.get_ref().sync_all()?;
        std::fs::rename(&tmp, &target)
    })();
    written.map_err(|source| {
        std::fs::remove_file(&tmp).ok();
        WriteError::Io {
            path: path.to_owned(),
            source,
        }
    })
}

/// The UTF-8 byte-order mark.
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

/// `text` without a leading UTF-8 byte-order mark.
pub fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// `input` without a leading UTF-8 byte-order mark (the first bytes are read to look).
///
/// # Errors
/// The read error of the first bytes.
pub fn skip_bom<R: BufRead>(
    mut input: R,
) -> std::io::Result<std::io::Chain<std::io::Cursor<Vec<u8>>, R>> {
    let mut head = Vec::with_capacity(BOM.len());
    while head.len() < BOM.len() {
        let n = Read::take(&mut input, (BOM.len() - head.len()) as u64).read_to_end(&mut head)?;
        if n == 0 || !BOM.starts_with(&head) {
            break;
        }
    }
    if head == BOM {
        head.clear();
    }
    Ok(std::io::Cursor::new(head).chain(input))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cxr-max-output-{name}"));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn new_and_regular_paths_are_replaced() {
        let d = dir("regular");
        let p = d.join("out.jsonl");
        write_atomic(&p, |w| w.write_all(b"one\n")).unwrap();
        write_atomic(&p, |w| w.write_all(b"two\n")).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two\n");
        assert!(!temporary(&p).exists());
    }

    #[test]
    fn a_folder_is_refused_and_kept() {
        let d = dir("folder");
        let p = d.join("out.jsonl");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("keep"), "x").unwrap();
        let e = write_atomic(&p, |w| w.write_all(b"x")).unwrap_err();
        assert!(matches!(&e, WriteError::Target(t) if t.path == p && t.kind == "a folder"));
        assert!(
            e.to_string().contains("out.jsonl: a folder; refusing"),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(p.join("keep")).unwrap(), "x");
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_and_a_device_are_refused() {
        let d = dir("fifo");
        let fifo = d.join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let e = write_atomic(&fifo, |w| w.write_all(b"x")).unwrap_err();
            assert!(e.to_string().contains("a FIFO (named pipe)"), "{e}");
            use std::os::unix::fs::FileTypeExt;
            assert!(
                std::fs::symlink_metadata(&fifo)
                    .unwrap()
                    .file_type()
                    .is_fifo()
            );
        }
        let e = replace_target(Path::new("/dev/null")).unwrap_err();
        assert_eq!(e.kind, "a character device");
        // A link to the device is refused too.
        let link = d.join("null-link");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        let e = write_atomic(&link, |w| w.write_all(b"x")).unwrap_err();
        assert!(
            e.to_string().contains("a link to a character device"),
            "{e}"
        );
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_is_written_through_and_kept() {
        let d = dir("link");
        let real = d.join("real.jsonl");
        std::fs::write(&real, "old\n").unwrap();
        let link = d.join("link.jsonl");
        std::os::unix::fs::symlink("real.jsonl", &link).unwrap();
        write_atomic(&link, |w| w.write_all(b"new\n")).unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "new\n");
        // A dangling link: its target is created.
        let dangling = d.join("dangling.jsonl");
        std::os::unix::fs::symlink("made.jsonl", &dangling).unwrap();
        write_atomic(&dangling, |w| w.write_all(b"made\n")).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("made.jsonl")).unwrap(),
            "made\n"
        );
    }

    #[test]
    fn byte_order_marks_are_skipped() {
        let mut out = String::new();
        skip_bom(&b"\xEF\xBB\xBF{\"a\":1}\n"[..])
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "{\"a\":1}\n");
        let mut out = Vec::new();
        skip_bom(&b"\xEF\xBBx"[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"\xEF\xBBx");
        let mut out = Vec::new();
        skip_bom(&b"ab"[..]).unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out, b"ab");
        assert_eq!(strip_bom("\u{feff}id"), "id");
        assert_eq!(strip_bom("id"), "id");
    }
}
