//! The host bridge of the CPU kernels (feature `ndarray`): burn's NdArray f32 tensors read in
//! place as host slices, and host vectors turned back into tensors.
//!
//! The fused kernels of this crate ([`crate::tensor::LossKernels`] on NdArray) and of
//! `apo-train` compute on plain `&[f32]` row-major buffers; these helpers are the only place
//! that knows how burn's NdArray backend stores them.

use burn::backend::NdArray;
use burn::backend::ndarray::NdArrayTensor;
use burn::tensor::{Tensor, TensorPrimitive};

/// The CPU backend the kernels run on.
pub type Cpu = NdArray<f32>;

/// An f32 tensor of the NdArray backend, readable as one row-major slice: in place when its
/// layout is standard, through a contiguous copy otherwise. Kept by a backward pass, it keeps
/// the forward's values without copying them.
#[derive(Debug)]
pub struct HostTensor {
    tensor: NdArrayTensor,
    /// A contiguous copy, only when the tensor's layout is not standard.
    copy: Option<Vec<f32>>,
}

impl HostTensor {
    /// Wraps `tensor`; `None` when it does not hold f32 values.
    pub fn new(tensor: NdArrayTensor) -> Option<Self> {
        let copy = match &tensor {
            NdArrayTensor::F32(storage) => {
                let view = storage.view();
                if view.as_slice().is_some() {
                    None
                } else {
                    Some(view.iter().copied().collect())
                }
            }
            _ => return None,
        };
        Some(HostTensor { tensor, copy })
    }

    /// Wraps the primitive of a float tensor of the CPU backend; `None` when it is not f32.
    pub fn from_tensor<const D: usize>(tensor: Tensor<Cpu, D>) -> Option<Self> {
        Self::new(tensor.into_primitive().tensor())
    }

    /// Runs `f` on the values in row-major order.
    pub fn with_slice<R>(&self, f: impl FnOnce(&[f32]) -> R) -> R {
        if let Some(copy) = &self.copy {
            return f(copy);
        }
        match &self.tensor {
            NdArrayTensor::F32(storage) => {
                let view = storage.view();
                // Standard layout and f32: both checked in `new`.
                match view.as_slice() {
                    Some(slice) => f(slice),
                    None => f(&view.iter().copied().collect::<Vec<f32>>()),
                }
            }
            _ => f(&[]),
        }
    }

    /// The values as a vector.
    pub fn to_vec(&self) -> Vec<f32> {
        self.with_slice(<[f32]>::to_vec)
    }
}

/// `values` (row-major) as an NdArray primitive of `shape`.
///
/// # Panics
/// When `values.len()` is not the product of `shape` (a kernel's own sizes disagree).
pub fn to_ndarray(values: Vec<f32>, shape: &[usize]) -> NdArrayTensor {
    let array = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(shape), values)
        .expect("length matches the shape")
        .into_shared();
    NdArrayTensor::from(array)
}

/// `values` (row-major) as a float tensor of the CPU backend of `shape`.
///
/// # Panics
/// As [`to_ndarray`].
pub fn to_tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<Cpu, D> {
    Tensor::from_primitive(TensorPrimitive::Float(to_ndarray(values, &shape)))
}
