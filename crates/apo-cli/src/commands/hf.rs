//! `apo score` and `apo generate`: a Hugging Face Qwen2-VL / Qwen2.5-VL checkpoint on the CPU,
//! wgpu or CUDA backend (inference: no autodiff), JSON Lines in and out.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use apo_models::hf::{HfModel, RunSummary};
use apo_models::model::GenerateOptions;
use apo_train::device::DeviceKind;
use burn::tensor::backend::Backend;

/// Float precision of the weights and activations on a GPU backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// f32 (every backend).
    F32,
    /// bfloat16 (CUDA).
    Bf16,
    /// f16 (CUDA, wgpu where the adapter has it).
    F16,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "f16" | "float16" => Ok(Precision::F16),
            other => Err(format!(
                "unknown dtype `{other}`; expected f32, bf16 or f16"
            )),
        }
    }
}

/// What to do with the model.
#[derive(Debug, Clone)]
pub enum Task {
    /// `apo score`.
    Score,
    /// `apo generate`.
    Generate(GenerateOptions),
}

/// Loads the checkpoint at `model` (with the PEFT adapter `adapter` applied, if given) on the
/// backend of `device` and answers every line of `input`.
///
/// # Errors
/// The checkpoint cannot be loaded, the backend is not built or has no device, or the output
/// cannot be written. Bad rows are answered with `{"line", "error"}` and counted, not errors.
#[allow(clippy::too_many_arguments)] // one per command-line option
pub fn run(
    model: &Path,
    adapter: Option<&Path>,
    batch: usize,
    input: Box<dyn BufRead>,
    output: Box<dyn Write>,
    base: &Path,
    device: DeviceKind,
    dtype: Precision,
    task: Task,
) -> Result<RunSummary, String> {
    let job = Job {
        model: model.to_path_buf(),
        adapter: adapter.map(Path::to_path_buf),
        batch,
        input,
        output,
        base: base.to_path_buf(),
        task,
    };
    match (device, dtype) {
        (DeviceKind::Cpu, Precision::F32) => {
            job.run::<burn::backend::NdArray<f32>>(Default::default())
        }
        (DeviceKind::Cpu, other) => Err(format!(
            "--dtype {other:?} needs a GPU backend; the CPU backend computes in f32"
        )),
        (DeviceKind::Wgpu, dtype) => {
            #[cfg(feature = "wgpu")]
            {
                use burn::backend::wgpu::Wgpu;
                let d = crate::commands::train::wgpu_device().map_err(|e| e.to_string())?;
                match dtype {
                    Precision::F32 => job.run::<Wgpu<f32>>(d),
                    Precision::F16 => job.run::<Wgpu<half::f16>>(d),
                    Precision::Bf16 => {
                        Err("--dtype bf16 is not available on wgpu; use f16 or f32".into())
                    }
                }
            }
            #[cfg(not(feature = "wgpu"))]
            {
                let _ = (job, dtype);
                Err(device.not_built().to_string())
            }
        }
        (DeviceKind::Cuda, dtype) => {
            #[cfg(feature = "cuda")]
            {
                use burn::backend::cuda::Cuda;
                let d = crate::commands::train::cuda_device().map_err(|e| e.to_string())?;
                match dtype {
                    Precision::F32 => job.run::<Cuda<f32>>(d),
                    Precision::F16 => job.run::<Cuda<half::f16>>(d),
                    Precision::Bf16 => job.run::<Cuda<half::bf16>>(d),
                }
            }
            #[cfg(not(feature = "cuda"))]
            {
                let _ = (job, dtype);
                Err(device.not_built().to_string())
            }
        }
    }
}

struct Job {
    model: PathBuf,
    adapter: Option<PathBuf>,
    batch: usize,
    input: Box<dyn BufRead>,
    output: Box<dyn Write>,
    base: PathBuf,
    task: Task,
}

impl Job {
    fn run<B: Backend>(self, device: B::Device) -> Result<RunSummary, String> {
        let hf = HfModel::<B>::open_with_adapter(&self.model, self.adapter.as_deref(), device)
            .map_err(|e| e.to_string())?;
        let result = match &self.task {
            Task::Score => hf.score_jsonl_batched(self.input, self.output, &self.base, self.batch),
            Task::Generate(opts) => {
                hf.generate_jsonl_batched(self.input, self.output, &self.base, opts, self.batch)
            }
        };
        result.map_err(|e| e.to_string())
    }
}
