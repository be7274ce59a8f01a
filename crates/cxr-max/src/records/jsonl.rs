//! JSON Lines: read in blocks of about a mebibyte that are parsed in parallel and handed on
//! in file order, each line through a typed fast path for the common CXR-MAX shape, or else
//! as a general JSON object for [`super::schema`] to interpret.

use std::io::{BufRead, Read};
use std::path::Path;

use rayon::prelude::*;
use serde_json::Value;

use super::format::{open_text, raw_text};
use super::schema::{Parsed, kind, repeated_teacher};
use super::{Location, RawRow, Trajectory};
use crate::{CxrError, Result};

/// The common CXR-MAX shape, parsed without building a JSON tree. Anything else (other
/// names, extra fields, other types) falls back to the general interpretation.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FastRecord {
    dicom_id: String,
    #[serde(default)]
    subject_id: Option<u64>,
    #[serde(default)]
    study_id: Option<u64>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    report: Option<String>,
    #[serde(default)]
    diagnose: Option<String>,
    trajectories: Vec<FastTrajectory>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FastTrajectory {
    #[serde(alias = "teacher")]
    model: String,
    #[serde(alias = "trajectory", alias = "text")]
    response: String,
}

fn fast_parse(line: &str) -> Option<Parsed> {
    let r: FastRecord = serde_json::from_str(line).ok()?;
    if r.dicom_id.trim().is_empty() || r.dicom_id.trim() != r.dicom_id {
        return None;
    }
    // A blank or over-long trajectory: the general path rejects it with its reason.
    if r.trajectories.iter().any(|t| {
        t.response.trim().is_empty() || t.response.len() > super::schema::MAX_TRAJECTORY_BYTES
    }) {
        return None;
    }
    let parsed = Parsed {
        dicom_id: r.dicom_id,
        subject_id: r.subject_id,
        study_id: r.study_id,
        prompt: r.prompt,
        report: r.report,
        diagnose: r.diagnose,
        trajectories: r
            .trajectories
            .into_iter()
            .map(|t| Trajectory {
                teacher: t.model,
                text: t.response,
            })
            .collect(),
    };
    // A teacher twice in one record: the general path rejects it with its reason.
    repeated_teacher(&parsed.trajectories)
        .is_none()
        .then_some(parsed)
}

/// Parses one JSON line: the typed fast path, or the general JSON tree.
pub(super) fn parse_line(source: Location, line: &str) -> RawRow {
    if let Some(parsed) = fast_parse(line) {
        return RawRow {
            source,
            object: Err(String::new()),
            raw: String::new(),
            parsed: Some(parsed),
        };
    }
    let object = match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!("expected a JSON object, found {}", kind(&other))),
        Err(e) => Err(format!("invalid JSON: {e}")),
    };
    RawRow {
        source,
        object,
        raw: raw_text(line),
        parsed: None,
    }
}

/// Bytes per block handed to a parsing thread (a block ends at a line end).
pub(super) const BLOCK: usize = 1 << 20;

/// Splits one block of whole JSON Lines into rows, numbering its lines from `first_line + 1`.
fn parse_block(path: &Path, block: &[u8], first_line: usize) -> Vec<RawRow> {
    let mut rows = Vec::new();
    let mut start = 0;
    let unterminated = block.last().is_some_and(|&b| b != b'\n');
    let ends = memchr::memchr_iter(b'\n', block).chain(unterminated.then_some(block.len()));
    for (line, end) in (first_line + 1..).zip(ends) {
        let bytes = &block[start..end];
        start = end + 1;
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let source = Location {
            path: path.to_owned(),
            line,
        };
        rows.push(match std::str::from_utf8(bytes) {
            Ok(text) => parse_line(source, text),
            Err(e) => RawRow {
                source,
                object: Err(format!(
                    "invalid UTF-8 at byte {} of the line",
                    e.valid_up_to() + 1
                )),
                raw: raw_text(&String::from_utf8_lossy(bytes)),
                parsed: None,
            },
        });
    }
    rows
}

/// Reads `input` into `buf` until it holds at least `block` bytes and a line end past that
/// mark, or the input ends. Returns whether the input ended.
fn fill_block(input: &mut dyn Read, buf: &mut Vec<u8>, block: usize) -> std::io::Result<bool> {
    let mut scanned = 0;
    let step = (block / 64).clamp(1, 1 << 16);
    loop {
        if buf.len() >= block && memchr::memchr(b'\n', &buf[scanned.max(block)..]).is_some() {
            return Ok(false);
        }
        scanned = buf.len();
        let want = (block + step).saturating_sub(buf.len()).max(step);
        let n = Read::take(&mut *input, want as u64).read_to_end(buf)?;
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Cuts a JSON Lines stream into blocks of whole lines.
struct Blocks<'a> {
    path: &'a Path,
    input: Box<dyn BufRead + Send>,
    block_size: usize,
    /// The start of a line that the last block cut off.
    carry: Vec<u8>,
    /// Line ends in the blocks handed out so far.
    lines: usize,
    ended: bool,
}

impl Blocks<'_> {
    /// Up to `n` further blocks, each with the number of lines before it.
    fn next(&mut self, n: usize) -> Result<Vec<(usize, Vec<u8>)>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n && !self.ended {
            let mut block = std::mem::take(&mut self.carry);
            let ended = fill_block(&mut *self.input, &mut block, self.block_size).map_err(|e| {
                CxrError::Record {
                    path: self.path.to_owned(),
                    line: self.lines + memchr::memchr_iter(b'\n', &block).count() + 1,
                    reason: format!("cannot read further (truncated or corrupt file?): {e}"),
                }
            })?;
            if !ended && let Some(end) = memchr::memrchr(b'\n', &block) {
                self.carry.extend_from_slice(&block[end + 1..]);
                block.truncate(end + 1);
            }
            self.ended = ended;
            if !block.is_empty() {
                let before = self.lines;
                self.lines += memchr::memchr_iter(b'\n', &block).count();
                out.push((before, block));
            }
        }
        Ok(out)
    }
}

/// Reads JSON Lines in blocks of about `block_size` bytes and hands the rows of each block to
/// `sink` in file order. A batch of blocks (one per thread of the rayon pool) is parsed in
/// parallel while, beside it, the previous batch goes to `sink` and the next one is read.
pub(super) fn read_json_lines_in_blocks(
    path: &Path,
    block_size: usize,
    sink: &mut (dyn FnMut(Vec<RawRow>) + Send),
) -> Result<()> {
    let batch = rayon::current_num_threads().max(1);
    let mut blocks = Blocks {
        path,
        input: open_text(path)?,
        block_size,
        carry: Vec::new(),
        lines: 0,
        ended: false,
    };
    let mut next = blocks.next(batch)?;
    let mut parsed: Vec<Vec<RawRow>> = Vec::new();
    while !next.is_empty() {
        let current = std::mem::take(&mut next);
        let to_sink = std::mem::take(&mut parsed);
        let (rows, read) = rayon::join(
            || {
                current
                    .par_iter()
                    .map(|(before, block)| parse_block(path, block, *before))
                    .collect::<Vec<_>>()
            },
            || {
                to_sink.into_iter().for_each(&mut *sink);
                blocks.next(batch)
            },
        );
        next = read?;
        parsed = rows;
    }
    parsed.into_iter().for_each(sink);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a row says, for comparing two reads.
    fn summary(rows: &[RawRow]) -> Vec<(usize, String)> {
        rows.iter()
            .map(|r| {
                let what = match (&r.parsed, &r.object) {
                    (Some(p), _) => format!("fast {} {}", p.dicom_id, p.trajectories.len()),
                    (None, Ok(m)) => format!("object {}", m.len()),
                    (None, Err(e)) => format!("error {e} / {}", r.raw),
                };
                (r.source.line, what)
            })
            .collect()
    }

    fn record(i: usize, text_len: usize) -> String {
        format!(
            r#"{{"dicom_id":"d{i}","study_id":{i},"trajectories":[{{"model":"A","response":"{}"}},{{"model":"B","response":"x\"y"}}]}}"#,
            "z".repeat(text_len)
        )
    }

    /// Every block size gives the rows of a plain line-by-line read, with the same line
    /// numbers: blank, CRLF, invalid UTF-8, malformed and over-long lines, no final newline.
    #[test]
    fn blocks_read_like_one_pass() {
        let dir = std::env::temp_dir().join(format!("cxr-max-blocks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut bytes = Vec::new();
        for i in 0..30 {
            match i % 10 {
                3 => bytes.extend_from_slice(b"\n   \n"),
                4 => bytes.extend_from_slice(format!("{}\r\n", record(i, 5)).as_bytes()),
                5 => bytes.extend_from_slice(b"{\"dicom_id\":\"bad\xff\xfe\"}\n"),
                6 => bytes.extend_from_slice(b"{\"dicom_id\": \"cut\n"),
                7 => bytes.extend_from_slice(format!("{}\n", record(i, 700)).as_bytes()),
                8 => bytes
                    .extend_from_slice(b"{\"dicom_id\":\"g\",\"model\":\"A\",\"text\":\"t\"}\n"),
                // (An empty response is not a trajectory: at least one character.)
                _ => bytes.extend_from_slice(format!("{}\n", record(i, i.max(1))).as_bytes()),
            }
        }
        bytes.extend_from_slice(record(99, 3).as_bytes()); // no final newline
        let path = dir.join("r.jsonl");
        std::fs::write(&path, &bytes).unwrap();
        let gz = dir.join("r.jsonl.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &bytes).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();

        // The reference: split on line ends, one line after another.
        let reference: Vec<RawRow> = bytes
            .split(|&b| b == b'\n')
            .enumerate()
            .filter_map(|(i, l)| {
                let l = l.strip_suffix(b"\r").unwrap_or(l);
                let loc = Location {
                    path: path.clone(),
                    line: i + 1,
                };
                if l.iter().all(u8::is_ascii_whitespace) {
                    None
                } else if let Ok(t) = std::str::from_utf8(l) {
                    Some(parse_line(loc, t))
                } else {
                    Some(RawRow {
                        source: loc,
                        object: Err("invalid UTF-8 at byte 17 of the line".to_owned()),
                        raw: raw_text(&String::from_utf8_lossy(l)),
                        parsed: None,
                    })
                }
            })
            .collect();
        let want = summary(&reference);
        assert_eq!(want.len(), 28);
        assert_eq!(want.last().unwrap().0, 34);
        assert_eq!(
            want.iter().filter(|(_, w)| w.starts_with("fast")).count(),
            19
        );
        // One thread or several: the same rows.
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                for block in (1..120).chain([500, 701, 4096, 1 << 20]) {
                    for file in [&path, &gz] {
                        let mut rows = Vec::new();
                        read_json_lines_in_blocks(file, block, &mut |part| rows.extend(part))
                            .unwrap();
                        let what = format!("block {block}, {threads} threads, {}", file.display());
                        assert_eq!(summary(&rows), want, "{what}");
                    }
                }
            });
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A gzip stream cut short is an error naming the line reached, at any block size.
    #[test]
    fn truncated_gzip_names_the_line_reached() {
        let dir = std::env::temp_dir().join(format!("cxr-max-trunc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text: String = (0..400).map(|i| record(i, 40) + "\n").collect();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut enc, text.as_bytes()).unwrap();
        let gz = enc.finish().unwrap();
        let path = dir.join("t.jsonl.gz");
        std::fs::write(&path, &gz[..gz.len() / 2]).unwrap();
        for block in [64, 4096, BLOCK] {
            match read_json_lines_in_blocks(&path, block, &mut |_| {}) {
                Err(CxrError::Record { line, reason, .. }) => {
                    assert!((2..=400).contains(&line), "line {line}");
                    assert!(reason.contains("truncated"), "{reason}");
                }
                Err(e) => panic!("unexpected error {e}"),
                Ok(_) => panic!("a truncated stream was read without error"),
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
