//! [`LossKernels`] through its provided (composite-graph) method for burn's GPU backends,
//! behind the `wgpu` and `cuda` features: the backend types `apo-train` and the `apo`
//! command train on (`Wgpu`, `Cuda`, and `Autodiff` over them, any checkpointing).

#[cfg(any(feature = "wgpu", feature = "cuda"))]
use burn::backend::Autodiff;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;

#[cfg(any(feature = "wgpu", feature = "cuda"))]
use super::LossKernels;

#[cfg(feature = "wgpu")]
impl LossKernels for burn::backend::Wgpu {}
#[cfg(feature = "wgpu")]
impl<C: CheckpointStrategy> LossKernels for Autodiff<burn::backend::Wgpu, C> {}

#[cfg(feature = "cuda")]
impl LossKernels for burn::backend::Cuda {}
#[cfg(feature = "cuda")]
impl<C: CheckpointStrategy> LossKernels for Autodiff<burn::backend::Cuda, C> {}
