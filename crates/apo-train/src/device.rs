//! Devices by name, with a clear error instead of a panic when a GPU is missing.

use crate::{Result, TrainError};

/// The CPU backend the training stages run on (`--device cpu`): burn's NdArray (f32) under
/// autodiff, with the fused kernels of [`crate::ApoKernels`].
#[cfg(feature = "ndarray")]
pub type Cpu = burn::backend::Autodiff<burn::backend::NdArray>;

/// The devices the command line offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// burn's ndarray CPU backend.
    Cpu,
    /// burn's wgpu backend (Vulkan, Metal, DX12).
    Wgpu,
    /// burn's CUDA backend.
    Cuda,
}

impl std::str::FromStr for DeviceKind {
    type Err = TrainError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" | "ndarray" => Ok(DeviceKind::Cpu),
            "wgpu" | "gpu" => Ok(DeviceKind::Wgpu),
            "cuda" => Ok(DeviceKind::Cuda),
            other => Err(TrainError::Device(format!(
                "unknown device `{other}`; expected cpu, wgpu or cuda"
            ))),
        }
    }
}

impl DeviceKind {
    /// The name.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Wgpu => "wgpu",
            DeviceKind::Cuda => "cuda",
        }
    }

    /// The error for a backend this build does not include.
    pub fn not_built(self) -> TrainError {
        TrainError::Device(format!(
            "this build has no {0} backend; rebuild with `cargo build --release --features {0}` (on a machine with the {0} runtime), or use --device cpu",
            self.name()
        ))
    }
}

/// Runs `probe` (which creates a tensor on the device) and turns a panic of the backend's
/// runtime (no GPU, no driver) into [`TrainError::Device`] naming the alternative.
///
/// # Errors
/// [`TrainError::Device`].
pub fn check<F: FnOnce() + std::panic::UnwindSafe>(kind: DeviceKind, probe: F) -> Result<()> {
    // The hook keeps the panic's message (and prints nothing); the payload is not inspected.
    let message = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let seen = std::sync::Arc::clone(&message);
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Ok(mut slot) = seen.lock() {
            *slot = info.payload_as_str().map(str::to_owned);
        }
    }));
    let result = std::panic::catch_unwind(probe);
    std::panic::set_hook(hook);
    result.map_err(|_| {
        let detail = message
            .lock()
            .ok()
            .and_then(|mut m| m.take())
            .unwrap_or_default();
        TrainError::Device(format!(
            "no usable {} device ({}); use --device cpu, or run on a machine with a GPU and its driver",
            kind.name(),
            detail.lines().next().unwrap_or("the runtime failed to start")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panicking probe becomes a device error carrying the panic's first line.
    #[test]
    fn a_panicking_probe_is_a_device_error() {
        let err = check(DeviceKind::Wgpu, || panic!("no adapter found\nmore")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("no usable wgpu device (no adapter found)"),
            "{text}"
        );
        let owned = String::from("driver missing");
        let err = check(DeviceKind::Cuda, move || panic!("{owned}")).unwrap_err();
        assert!(err.to_string().contains("(driver missing)"), "{err}");
        assert!(check(DeviceKind::Cpu, || ()).is_ok());
    }
}
