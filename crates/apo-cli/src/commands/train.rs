//! `apo train sft|apo` and `apo eval`: the training stages on the backend `--device` names.

use std::path::{Path, PathBuf};

use apo_train::device::DeviceKind;
use apo_train::eval::{EvalReport, Generation};
use apo_train::train::{Observer, StageReport};
use apo_train::{RunConfig, TrainBackend, TrainError};
#[cfg(any(feature = "wgpu", feature = "cuda"))]
use burn::backend::Autodiff;
use cxr_max::Finding;

/// Something to run on a backend chosen at run time.
pub trait WithBackend {
    /// The result.
    type Out;
    /// The error (a device that cannot be opened is a [`TrainError::Device`]).
    type Error: From<TrainError>;
    /// Runs on backend `B` with `device`.
    ///
    /// # Errors
    /// Whatever the work reports.
    fn run<B: TrainBackend>(self, device: B::Device) -> Result<Self::Out, Self::Error>;
}

/// The CUDA device, checked to open (a missing driver or GPU is a [`TrainError::Device`]).
///
/// # Errors
/// [`TrainError::Device`].
#[cfg(feature = "cuda")]
pub fn cuda_device() -> Result<burn::backend::cuda::CudaDevice, TrainError> {
    use burn::backend::cuda::{Cuda, CudaDevice};
    let device = CudaDevice::default();
    let probe = device.clone();
    apo_train::device::check(DeviceKind::Cuda, move || {
        let _ = burn::tensor::Tensor::<Cuda, 1>::zeros([1], &probe).into_data();
    })?;
    Ok(device)
}

/// The wgpu device, checked to open.
///
/// # Errors
/// [`TrainError::Device`].
#[cfg(feature = "wgpu")]
pub fn wgpu_device() -> Result<burn::backend::wgpu::WgpuDevice, TrainError> {
    use burn::backend::wgpu::{Wgpu, WgpuDevice};
    let device = WgpuDevice::default();
    let probe = device.clone();
    apo_train::device::check(DeviceKind::Wgpu, move || {
        let _ = burn::tensor::Tensor::<Wgpu, 1>::zeros([1], &probe).into_data();
    })?;
    Ok(device)
}

/// Installs burn's NCCL all-reduce (`distributed` feature) as the gradient bucket's path of a
/// data-parallel run on the CUDA backends, used with `run.all_reduce = "nccl"`.
#[cfg(all(feature = "cuda", feature = "distributed"))]
pub fn install_nccl() {
    use burn::backend::Cuda;
    use burn::tensor::backend::distributed::{DistributedBackend, ReduceOperation};
    use burn::tensor::{Tensor, TensorPrimitive};
    fn nccl<B: DistributedBackend>(
        t: Tensor<B, 1>,
        devices: &[burn::tensor::backend::DeviceId],
    ) -> Tensor<B, 1> {
        let out = B::all_reduce(
            t.into_primitive().tensor(),
            ReduceOperation::Sum,
            devices.to_vec(),
        )
        .resolve();
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }
    apo_train::parallel::set_local_reduce::<Cuda>(nccl::<Cuda>);
    apo_train::parallel::set_local_reduce::<Cuda<half::bf16>>(nccl::<Cuda<half::bf16>>);
    apo_train::parallel::set_local_reduce::<Cuda<half::f16>>(nccl::<Cuda<half::f16>>);
}

/// burn's `distributed` feature makes every autodiff backend a distributed one, which its CPU
/// backend is not: such a build trains on GPUs only.
#[cfg(feature = "distributed")]
fn distributed_cpu() -> TrainError {
    TrainError::Device(
        "this build has burn's `distributed` feature, with which burn trains on CUDA and wgpu only; use --device cuda, or a build without `distributed` for the CPU".into(),
    )
}

/// Runs `work` on the backend of `kind`: `Autodiff<NdArray>`, `Autodiff<Wgpu>` or
/// `Autodiff<Cuda>`. A backend this build lacks, or a GPU that cannot be opened, is a
/// [`TrainError::Device`] that names the alternative.
///
/// # Errors
/// [`TrainError::Device`] and the work's errors.
pub fn dispatch<W: WithBackend>(kind: DeviceKind, work: W) -> Result<W::Out, W::Error> {
    #[cfg(all(feature = "cuda", feature = "distributed"))]
    install_nccl();
    match kind {
        DeviceKind::Cpu => {
            #[cfg(not(feature = "distributed"))]
            {
                work.run::<apo_train::device::Cpu>(Default::default())
            }
            #[cfg(feature = "distributed")]
            {
                let _ = work;
                Err(distributed_cpu().into())
            }
        }
        DeviceKind::Wgpu => {
            #[cfg(feature = "wgpu")]
            {
                work.run::<Autodiff<burn::backend::Wgpu>>(wgpu_device()?)
            }
            #[cfg(not(feature = "wgpu"))]
            {
                let _ = work;
                Err(kind.not_built().into())
            }
        }
        DeviceKind::Cuda => {
            #[cfg(feature = "cuda")]
            {
                work.run::<Autodiff<burn::backend::Cuda>>(cuda_device()?)
            }
            #[cfg(not(feature = "cuda"))]
            {
                let _ = work;
                Err(kind.not_built().into())
            }
        }
    }
}

/// A Hugging Face student's stage (`[student] hf`) on the backend of `kind` in float type
/// `precision` (`apo train --dtype`: f32 everywhere, bf16 on CUDA, f16 on CUDA and wgpu), with
/// burn's balanced activation checkpointing when `student.checkpointing` is set.
///
/// # Errors
/// [`TrainError::Config`] for a precision the backend does not train in, or for the small
/// student in anything but f32; [`TrainError::Device`]; the stage's errors.
pub fn dispatch_hf(
    kind: DeviceKind,
    precision: crate::commands::hf::Precision,
    job: TrainJob<'_>,
) -> Result<StageReport, TrainError> {
    use crate::commands::hf::Precision;
    use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
    let bad = |p: Precision, expected: &str| TrainError::Config {
        field: "--dtype".into(),
        value: format!("{p:?}").to_lowercase(),
        expected: expected.into(),
    };
    if job.config.student.hf.is_none() {
        if precision == Precision::F32 {
            return dispatch(kind, job);
        }
        return Err(bad(
            precision,
            "f32 for the small student (only a Hugging Face student, [student] hf, trains in bf16/f16)",
        ));
    }
    #[cfg(all(feature = "cuda", feature = "distributed"))]
    install_nccl();
    let checkpointing = job.config.student.checkpointing;
    // The stage on `Autodiff<$inner>`, with or without checkpointing.
    macro_rules! on {
        ($inner:ty, $device:expr) => {
            if checkpointing {
                job.run_hf::<burn::backend::Autodiff<$inner, BalancedCheckpointing>>($device)
            } else {
                job.run_hf::<burn::backend::Autodiff<$inner>>($device)
            }
        };
    }
    match (kind, precision) {
        #[cfg(not(feature = "distributed"))]
        (DeviceKind::Cpu, Precision::F32) => on!(burn::backend::NdArray<f32>, Default::default()),
        #[cfg(feature = "distributed")]
        (DeviceKind::Cpu, Precision::F32) => Err(distributed_cpu()),
        (DeviceKind::Cpu, p) => Err(bad(
            p,
            "f32 on the CPU backend (bf16 and f16 need --device cuda or wgpu)",
        )),
        (DeviceKind::Cuda, p) => {
            #[cfg(feature = "cuda")]
            {
                use burn::backend::cuda::Cuda;
                let device = cuda_device()?;
                match p {
                    Precision::F32 => on!(Cuda<f32>, device),
                    Precision::Bf16 => on!(Cuda<half::bf16>, device),
                    Precision::F16 => on!(Cuda<half::f16>, device),
                }
            }
            #[cfg(not(feature = "cuda"))]
            {
                let _ = (job, p, checkpointing);
                Err(kind.not_built())
            }
        }
        (DeviceKind::Wgpu, p) => {
            #[cfg(feature = "wgpu")]
            {
                use burn::backend::wgpu::Wgpu;
                let device = wgpu_device()?;
                match p {
                    Precision::F32 => on!(Wgpu<f32>, device),
                    Precision::F16 => on!(Wgpu<half::f16>, device),
                    Precision::Bf16 => Err(bad(p, "f16 or f32 on wgpu")),
                }
            }
            #[cfg(not(feature = "wgpu"))]
            {
                let _ = (job, p, checkpointing);
                Err(kind.not_built())
            }
        }
    }
}

impl TrainJob<'_> {
    /// The stage of a Hugging Face student on any autodiff backend.
    fn run_hf<B: burn::tensor::backend::AutodiffBackend>(
        self,
        device: B::Device,
    ) -> apo_train::Result<StageReport> {
        match &self.stage {
            Stage::Sft => apo_train::hf::sft::<B>(self.config, &device, self.resume, self.observer),
            Stage::Apo(name) => {
                apo_train::hf::apo::<B>(self.config, name, &device, self.resume, self.observer)
            }
        }
    }
}

/// Which stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// Stage 1.
    Sft,
    /// Stage 2, written to `OUT/NAME`.
    Apo(String),
}

/// A stage run.
pub struct TrainJob<'a> {
    /// The configuration.
    pub config: &'a RunConfig,
    /// Which stage.
    pub stage: Stage,
    /// Resume from the newest checkpoint.
    pub resume: bool,
    /// Progress.
    pub observer: &'a mut dyn Observer,
}

impl std::fmt::Debug for TrainJob<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainJob")
            .field("stage", &self.stage)
            .field("resume", &self.resume)
            .finish_non_exhaustive()
    }
}

impl WithBackend for TrainJob<'_> {
    type Out = StageReport;
    type Error = TrainError;

    fn run<B: TrainBackend>(self, device: B::Device) -> apo_train::Result<StageReport> {
        let hf = self.config.student.hf.is_some();
        match (&self.stage, hf) {
            (Stage::Sft, false) => {
                apo_train::train::sft::<B>(self.config, &device, self.resume, self.observer)
            }
            (Stage::Apo(name), false) => {
                apo_train::train::apo::<B>(self.config, name, &device, self.resume, self.observer)
            }
            (Stage::Sft, true) => {
                apo_train::hf::sft::<B>(self.config, &device, self.resume, self.observer)
            }
            (Stage::Apo(name), true) => {
                apo_train::hf::apo::<B>(self.config, name, &device, self.resume, self.observer)
            }
        }
    }
}

/// An evaluation run.
#[derive(Debug, Clone)]
pub struct EvalJob {
    /// The model folder (`model.bin`, `model.json`).
    pub model: PathBuf,
    /// The tokenizer.
    pub tokenizer: PathBuf,
    /// The data set folder.
    pub data: PathBuf,
    /// The split evaluated.
    pub split: Option<String>,
    /// Decoding.
    pub generation: Generation,
    /// Findings averaged in the mean.
    pub evaluated: Vec<Finding>,
    /// A Hugging Face student: the base checkpoint (then `model` is the adapter folder).
    pub hf_base: Option<PathBuf>,
    /// The reader settings of `[data]` (records file, mapping, strict, quarantine).
    pub source: cxr_max::dataset::DataSource,
}

impl WithBackend for EvalJob {
    type Out = EvalReport;
    type Error = TrainError;

    fn run<B: TrainBackend>(self, device: B::Device) -> apo_train::Result<EvalReport> {
        let items =
            apo_train::data::open_items_from(&self.data, self.split.as_deref(), &self.source)?;
        if let Some(base) = &self.hf_base {
            return apo_train::hf::evaluate_adapter::<B::InnerBackend>(
                base,
                Some(&self.model),
                &items,
                &self.generation,
                &self.evaluated,
                &device,
            );
        }
        apo_train::eval::evaluate_dir_on::<B::InnerBackend>(
            &self.model,
            &self.tokenizer,
            &items,
            &self.generation,
            &self.evaluated,
            &device,
        )
    }
}

/// The evaluation job for a run configuration: the model in `OUT/STAGE` (a Hugging Face
/// student: the base checkpoint with the adapter `OUT/STAGE/adapter`), the run's tokenizer, the
/// configured data set, `split`.
pub fn eval_job(config: &RunConfig, model: Option<&Path>, stage: &str, split: &str) -> EvalJob {
    let hf_base = config.student.hf.clone();
    let default_model = if hf_base.is_some() {
        apo_train::hf::adapter_dir(&config.run.out, stage)
    } else {
        config.run.out.join(stage)
    };
    EvalJob {
        hf_base,
        source: config.data.source(),
        model: model.map_or(default_model, Path::to_path_buf),
        tokenizer: config.run.out.join("tokenizer.json"),
        data: config.data.dir.clone(),
        split: (split != "all").then(|| split.to_owned()),
        generation: apo_pipeline::generation(config),
        evaluated: Finding::TABLE1.to_vec(),
    }
}

/// Reads a run configuration, or the defaults when `path` is `None`.
///
/// # Errors
/// [`TrainError::ConfigFile`], [`TrainError::Config`].
pub fn load_config(path: Option<&Path>) -> Result<RunConfig, TrainError> {
    match path {
        Some(p) => RunConfig::from_file(p),
        None => {
            let c = RunConfig::default();
            c.validate()?;
            Ok(c)
        }
    }
}
