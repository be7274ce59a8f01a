//! Safetensors checkpoints: one `model.safetensors` or shards listed in
//! `model.safetensors.index.json`; F32, F16 and BF16 tensors converted to the backend's float.
//!
//! Headers are parsed and checked when the checkpoint is opened (offsets inside the file, byte
//! lengths equal to the shapes); tensor data is read one tensor at a time when the model asks for
//! it, so loading never holds a whole shard in memory. Every name the model asks for is recorded:
//! [`Weights::finish`] names the tensors the model did not use.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde_json::Value;

use crate::error::{ModelError, Result};

/// How a tensor is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// IEEE single precision.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    /// The name as stored (for messages).
    stored: String,
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte offset of the data in the file.
    start: u64,
    len: usize,
}

/// The tensors of a checkpoint folder.
#[derive(Debug)]
pub struct Weights {
    dir: PathBuf,
    files: Vec<PathBuf>,
    /// Canonical name (hub layout: `visual.*`, `model.*`, `lm_head.*`) → entry.
    entries: BTreeMap<String, Entry>,
    used: BTreeSet<String>,
    /// The dtype most tensors are stored in.
    dominant: Option<Dtype>,
}

/// The hub's names for both key layouts: transformers 5 may write `model.language_model.*` and
/// `model.visual.*` where the original checkpoints have `model.*` and `visual.*`.
pub(crate) fn canonical(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("model.language_model.") {
        format!("model.{rest}")
    } else if let Some(rest) = name.strip_prefix("model.visual.") {
        format!("visual.{rest}")
    } else if let Some(rest) = name.strip_prefix("language_model.model.") {
        format!("model.{rest}")
    } else if let Some(rest) = name.strip_prefix("language_model.lm_head.") {
        format!("lm_head.{rest}")
    } else {
        name.to_string()
    }
}

impl Weights {
    /// Opens `DIR/model.safetensors.index.json` (sharded) or else `DIR/model.safetensors`.
    pub fn open(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|source| ModelError::Io {
                path: index.clone(),
                source,
            })?;
            let value: Value = serde_json::from_str(&text).map_err(|e| ModelError::Json {
                path: index.clone(),
                message: e.to_string(),
            })?;
            let map = value
                .get("weight_map")
                .and_then(Value::as_object)
                .ok_or_else(|| ModelError::Json {
                    path: index.clone(),
                    message: "field \"weight_map\": missing or not an object".into(),
                })?;
            let mut shards = BTreeSet::new();
            for (name, file) in map {
                let file = file.as_str().ok_or_else(|| ModelError::Json {
                    path: index.clone(),
                    message: format!("weight_map[{name:?}]: expected a file name"),
                })?;
                if file.contains('/') || file.contains('\\') || file.starts_with('.') {
                    return Err(ModelError::Json {
                        path: index.clone(),
                        message: format!(
                            "weight_map[{name:?}]: {file:?} is not a file in the checkpoint folder"
                        ),
                    });
                }
                shards.insert(file.to_string());
            }
            shards.into_iter().map(|f| dir.join(f)).collect()
        } else {
            let single = dir.join("model.safetensors");
            if !single.exists() {
                return Err(ModelError::Io {
                    path: single,
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no model.safetensors and no model.safetensors.index.json in the checkpoint folder",
                    ),
                });
            }
            vec![single]
        };
        Self::from_files(dir, files)
    }

    /// Opens one safetensors file (an adapter's `adapter_model.safetensors`).
    pub fn open_file(path: &Path) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Self::from_files(&dir, vec![path.to_path_buf()])
    }

    fn from_files(dir: &Path, files: Vec<PathBuf>) -> Result<Self> {
        let mut entries = BTreeMap::new();
        let mut counts = [0usize; 3];
        for (i, path) in files.iter().enumerate() {
            for entry in read_header(path, i)? {
                counts[match entry.dtype {
                    Dtype::F32 => 0,
                    Dtype::F16 => 1,
                    Dtype::Bf16 => 2,
                }] += 1;
                let key = canonical(&entry.stored);
                if let Some(prev) = entries.insert(key.clone(), entry) {
                    return Err(ModelError::Safetensors {
                        path: path.clone(),
                        message: format!(
                            "tensor {:?} is stored twice (also in {})",
                            prev.stored,
                            files[prev.file].display()
                        ),
                    });
                }
            }
        }
        let dominant = [Dtype::F32, Dtype::F16, Dtype::Bf16]
            .into_iter()
            .zip(counts)
            .filter(|(_, n)| *n > 0)
            .max_by_key(|(_, n)| *n)
            .map(|(d, _)| d);
        Ok(Weights {
            dir: dir.to_path_buf(),
            files,
            entries,
            used: BTreeSet::new(),
            dominant,
        })
    }

    /// The checkpoint folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The dtype most tensors are stored in.
    pub fn dtype(&self) -> Option<Dtype> {
        self.dominant
    }

    /// Whether the checkpoint has the tensor (canonical name).
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The stored shape of a tensor.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// The files, in shard order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Every tensor as `(canonical name, stored name, file index, dtype, shape)`, by file and
    /// then by offset in the file (the order the data is stored in).
    pub fn entries(&self) -> Vec<(String, String, usize, Dtype, Vec<usize>)> {
        let mut v: Vec<_> = self.entries.iter().collect();
        v.sort_by_key(|(_, e)| (e.file, e.start));
        v.into_iter()
            .map(|(k, e)| {
                (
                    k.clone(),
                    e.stored.clone(),
                    e.file,
                    e.dtype,
                    e.shape.clone(),
                )
            })
            .collect()
    }

    /// A tensor's stored bytes (little-endian, its own dtype), without conversion.
    pub fn read_raw(&mut self, name: &str) -> Result<Vec<u8>> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                dir: self.dir.clone(),
                name: name.to_string(),
            })?;
        let path = &self.files[entry.file];
        let io = |source| ModelError::Io {
            path: path.clone(),
            source,
        };
        let mut file = File::open(path).map_err(io)?;
        file.seek(SeekFrom::Start(entry.start)).map_err(io)?;
        let mut bytes = vec![0u8; entry.len];
        file.read_exact(&mut bytes).map_err(io)?;
        self.used.insert(name.to_string());
        Ok(bytes)
    }

    /// Marks a tensor as used without reading it (a tied `lm_head.weight`).
    pub fn skip(&mut self, name: &str) {
        if self.entries.contains_key(name) {
            self.used.insert(name.to_string());
        }
    }

    /// Reads a tensor as f32 values, checking its shape.
    pub fn read_f32(&mut self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                dir: self.dir.clone(),
                name: name.to_string(),
            })?;
        if entry.shape != expected {
            return Err(ModelError::ShapeMismatch {
                dir: self.dir.clone(),
                name: entry.stored.clone(),
                found: entry.shape.clone(),
                expected: expected.to_vec(),
            });
        }
        let dtype = entry.dtype;
        let bytes = self.read_raw(name)?;
        Ok(decode(dtype, &bytes))
    }

    /// Reads a tensor onto `device` in the backend's float type, checking its shape.
    pub fn tensor<B: Backend, const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        let values = self.read_f32(name, &shape)?;
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }

    /// A `[out, in]` linear weight stored the PyTorch way, returned as Burn's `[in, out]`.
    pub fn linear<B: Backend>(
        &mut self,
        name: &str,
        d_in: usize,
        d_out: usize,
        device: &B::Device,
    ) -> Result<Tensor<B, 2>> {
        Ok(self
            .tensor::<B, 2>(name, [d_out, d_in], device)?
            .transpose())
    }

    /// Fails with [`ModelError::UnusedTensors`] if the checkpoint holds tensors the model never read.
    pub fn finish(self) -> Result<()> {
        let unused: Vec<String> = self
            .entries
            .iter()
            .filter(|(k, _)| !self.used.contains(*k))
            .map(|(_, e)| e.stored.clone())
            .collect();
        if unused.is_empty() {
            Ok(())
        } else {
            Err(ModelError::UnusedTensors {
                dir: self.dir,
                names: unused,
            })
        }
    }
}

/// Little-endian bytes of `dtype` as f32 values.
pub fn decode(dtype: Dtype, bytes: &[u8]) -> Vec<f32> {
    match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::Bf16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
    }
}

/// f32 values as little-endian bytes of `dtype` (round to nearest even, as PyTorch's `.to()`).
pub fn encode(dtype: Dtype, values: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        Dtype::Bf16 => values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
    }
}

impl Dtype {
    /// The safetensors name (`F32`, `F16`, `BF16`).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::Bf16 => "BF16",
        }
    }
}

/// A safetensors file written tensor by tensor: the header (names, dtypes, shapes, offsets) is
/// fixed first, then each tensor's bytes are appended in header order, so a file of any size is
/// written without holding it in memory. The file appears under its name only when complete.
#[derive(Debug)]
pub struct SafetensorsWriter {
    path: PathBuf,
    tmp: PathBuf,
    file: std::io::BufWriter<File>,
    pending: std::collections::VecDeque<(String, usize)>,
}

impl SafetensorsWriter {
    /// Starts `path` with tensors `(name, dtype, shape)` in the order their data will follow.
    /// `metadata` goes to `__metadata__` (PEFT and transformers write `{"format": "pt"}`).
    pub fn create(
        path: &Path,
        tensors: &[(String, Dtype, Vec<usize>)],
        metadata: &[(&str, &str)],
    ) -> Result<Self> {
        use std::io::Write as _;
        let mut header = serde_json::Map::new();
        if !metadata.is_empty() {
            let m: serde_json::Map<String, Value> = metadata
                .iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                .collect();
            header.insert("__metadata__".into(), Value::Object(m));
        }
        let mut offset = 0usize;
        let mut pending = std::collections::VecDeque::new();
        for (name, dtype, shape) in tensors {
            let len = shape.iter().product::<usize>() * dtype.size();
            header.insert(
                name.clone(),
                serde_json::json!({
                    "dtype": dtype.name(),
                    "shape": shape,
                    "data_offsets": [offset, offset + len],
                }),
            );
            pending.push_back((name.clone(), len));
            offset += len;
        }
        let mut text =
            serde_json::to_vec(&Value::Object(header)).map_err(|e| ModelError::Json {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        // The data starts 8-byte aligned, the header padded with spaces (as the reference writer).
        while text.len() % 8 != 0 {
            text.push(b' ');
        }
        let tmp = path.with_extension("safetensors.partial");
        let io = |source| ModelError::Io {
            path: tmp.clone(),
            source,
        };
        let mut file = std::io::BufWriter::new(File::create(&tmp).map_err(io)?);
        file.write_all(&(text.len() as u64).to_le_bytes())
            .map_err(io)?;
        file.write_all(&text).map_err(io)?;
        Ok(SafetensorsWriter {
            path: path.to_path_buf(),
            tmp,
            file,
            pending,
        })
    }

    /// Appends the next tensor's bytes (it must be the next in header order, of its size).
    pub fn write(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        use std::io::Write as _;
        match self.pending.pop_front() {
            Some((n, len)) if n == name && len == bytes.len() => {}
            other => {
                return Err(ModelError::Input(format!(
                    "{}: tensor {name:?} ({} bytes) written out of order, expected {other:?}",
                    self.path.display(),
                    bytes.len()
                )));
            }
        }
        self.file.write_all(bytes).map_err(|source| ModelError::Io {
            path: self.tmp.clone(),
            source,
        })
    }

    /// Flushes and renames the file into place; every tensor must have been written.
    pub fn finish(self) -> Result<()> {
        use std::io::Write as _;
        if let Some((n, _)) = self.pending.front() {
            return Err(ModelError::Input(format!(
                "{}: tensor {n:?} was never written",
                self.path.display()
            )));
        }
        let tmp = self.tmp.clone();
        let io = |source| ModelError::Io {
            path: tmp.clone(),
            source,
        };
        let file = self.file.into_inner().map_err(|e| ModelError::Io {
            path: tmp.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io)?;
        let mut file = file;
        file.flush().map_err(io)?;
        std::fs::rename(&self.tmp, &self.path).map_err(|source| ModelError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Parses and checks one file's header.
fn read_header(path: &Path, file_index: usize) -> Result<Vec<Entry>> {
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bad = |message: String| ModelError::Safetensors {
        path: path.to_path_buf(),
        message,
    };
    let mut file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut len_bytes = [0u8; 8];
    if file_len < 8 {
        return Err(bad(format!(
            "{file_len} bytes: shorter than the 8-byte header length"
        )));
    }
    file.read_exact(&mut len_bytes).map_err(io)?;
    let header_len = u64::from_le_bytes(len_bytes);
    // The format caps headers at 100 MB.
    if header_len > 100_000_000 || 8 + header_len > file_len {
        return Err(bad(format!(
            "header length {header_len} does not fit the file ({file_len} bytes)"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(io)?;
    let value: Value =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(bad("header is not a JSON object".into()));
    };
    let data_start = 8 + header_len;
    let data_len = file_len - data_start;
    let mut entries = Vec::new();
    for (name, info) in map {
        if name == "__metadata__" {
            continue;
        }
        let field = |key: &str| {
            info.get(key)
                .ok_or_else(|| bad(format!("tensor {name:?}: no {key:?}")))
        };
        let dtype = match field("dtype")?.as_str() {
            Some("F32") => Dtype::F32,
            Some("F16") => Dtype::F16,
            Some("BF16") => Dtype::Bf16,
            Some(other) => {
                return Err(ModelError::UnsupportedDtype {
                    dir: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
                    name,
                    dtype: other.to_string(),
                });
            }
            None => return Err(bad(format!("tensor {name:?}: dtype is not a string"))),
        };
        let shape: Vec<usize> = field("shape")?
            .as_array()
            .and_then(|a| {
                a.iter()
                    .map(|v| v.as_u64().map(|n| n as usize))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| bad(format!("tensor {name:?}: shape is not a list of integers")))?;
        let offsets: Vec<u64> = field("data_offsets")?
            .as_array()
            .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<_>>>())
            .filter(|o| o.len() == 2)
            .ok_or_else(|| bad(format!("tensor {name:?}: data_offsets is not [begin, end]")))?;
        let (begin, end) = (offsets[0], offsets[1]);
        let numel = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        let bytes = numel.and_then(|n| n.checked_mul(dtype.size()));
        if end < begin || end > data_len || bytes != Some((end - begin) as usize) {
            return Err(bad(format!(
                "tensor {name:?}: data_offsets [{begin}, {end}] do not hold shape {shape:?} in {dtype:?} inside {data_len} data bytes"
            )));
        }
        entries.push(Entry {
            stored: name,
            file: file_index,
            dtype,
            shape,
            start: data_start + begin,
            len: (end - begin) as usize,
        });
    }
    Ok(entries)
}
