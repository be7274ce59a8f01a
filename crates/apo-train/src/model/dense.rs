//! The linear layer with an optional LoRA adapter ([`Dense`]).

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::kernels::ApoKernels;

/// A LoRA adapter `x ↦ scale · (x A) B` with `A: [d_in, r]`, `B: [r, d_out]` (B starts at 0).
#[derive(Module, Debug)]
pub struct Lora<B: Backend> {
    /// Down projection.
    pub a: Param<Tensor<B, 2>>,
    /// Up projection.
    pub b: Param<Tensor<B, 2>>,
    /// `alpha / r`.
    pub scale: f64,
}

/// A linear layer with an optional LoRA adapter.
#[derive(Module, Debug)]
pub struct Dense<B: Backend> {
    /// The base layer.
    pub linear: Linear<B>,
    /// The adapter.
    pub lora: Option<Lora<B>>,
}

impl<B: Backend> Dense<B> {
    pub(super) fn new(d_in: usize, d_out: usize, device: &B::Device) -> Self {
        Dense {
            linear: LinearConfig::new(d_in, d_out).init(device),
            lora: None,
        }
    }
}

impl<B: ApoKernels> Dense<B> {
    /// `x W + b (+ scale x A B)`, over the last dimension of `x`. The leading dimensions
    /// are flattened first, so the layer is one matrix product `[rows, d_in] × [d_in, d_out]`
    /// (and its gradients two), not one small product per leading index with the weight
    /// repacked for each and its gradient summed over them afterwards.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.dims();
        let d_in = dims[D - 1];
        let rows = dims[..D - 1].iter().product::<usize>();
        let x: Tensor<B, 2> = if D == 2 {
            // Already a matrix: a reshape would copy it on NdArray.
            Tensor::from_primitive(x.into_primitive())
        } else {
            x.reshape([rows, d_in])
        };
        let mut y = self.base(x.clone());
        if let Some(l) = &self.lora {
            y = y + x.matmul(l.a.val()).matmul(l.b.val()).mul_scalar(l.scale);
        }
        if D == 2 {
            return Tensor::from_primitive(y.into_primitive());
        }
        let mut out = dims;
        out[D - 1] = y.dims()[1];
        y.reshape(out)
    }

    /// `x W + b` of the base layer ([`ApoKernels::linear_layer`]: the fused product on the CPU
    /// backend).
    pub(super) fn base(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match &self.linear.bias {
            Some(bias) => B::linear_layer(x, self.linear.weight.val(), bias.val()),
            None => self.linear.forward(x),
        }
    }
}

impl<B: Backend> Dense<B> {
    pub(super) fn with_lora(mut self, rank: usize, alpha: f64, device: &B::Device) -> Self {
        let [d_in, d_out] = self.linear.weight.dims();
        let bound = (1.0 / d_in as f64).sqrt();
        self.lora = Some(Lora {
            a: Param::from_tensor(Tensor::random(
                [d_in, rank],
                burn::tensor::Distribution::Uniform(-bound, bound),
                device,
            )),
            b: Param::from_tensor(Tensor::zeros([rank, d_out], device)),
            scale: alpha / rank as f64,
        });
        self
    }

    pub(super) fn merged(mut self) -> Self {
        if let Some(l) = self.lora.take() {
            let delta = l.a.val().matmul(l.b.val()).mul_scalar(l.scale);
            let w = self.linear.weight.val() + delta;
            self.linear.weight = Param::initialized(self.linear.weight.id, w.detach());
        }
        self
    }
}
