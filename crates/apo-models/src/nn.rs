//! The layers both model families are built from, loaded from checkpoint tensors.

use burn::module::{Module, Param};
use burn::tensor::activation::{sigmoid, silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::error::{ModelError, Result};
use crate::lora::Lora;
use crate::weights::Weights;

/// A linear map `x W + b` with `W: [in, out]` (transposed from PyTorch's `[out, in]` on load),
/// plus `scale · dropout(x) A B` when a LoRA adapter is attached.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// `[in, out]`.
    pub weight: Param<Tensor<B, 2>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// The low-rank update, if any.
    pub lora: Option<Lora<B>>,
}

impl<B: Backend> Linear<B> {
    /// Loads `PREFIX.weight` (and `PREFIX.bias` if `bias`).
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        device: &B::Device,
    ) -> Result<Self> {
        let weight = w.linear::<B>(&format!("{prefix}.weight"), d_in, d_out, device)?;
        let bias = if bias {
            Some(Param::from_tensor(w.tensor::<B, 1>(
                &format!("{prefix}.bias"),
                [d_out],
                device,
            )?))
        } else {
            None
        };
        Ok(Linear {
            weight: Param::from_tensor(weight),
            bias,
            lora: None,
        })
    }

    /// `(in, out)`.
    pub fn dims(&self) -> (usize, usize) {
        let [i, o] = self.weight.dims();
        (i, o)
    }

    /// Applies the map over the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.dims();
        let d_in = dims[D - 1];
        let rows = dims[..D - 1].iter().product::<usize>();
        let x = x.reshape([rows, d_in]);
        let mut y = x.clone().matmul(self.weight.val());
        if let Some(b) = &self.bias {
            y = y + b.val().unsqueeze::<2>();
        }
        if let Some(lora) = &self.lora {
            y = y + lora.delta(x);
        }
        let mut out = dims;
        out[D - 1] = y.dims()[1];
        y.reshape(out)
    }
}

/// Root-mean-square normalisation with a learned scale (`Qwen2RMSNorm`).
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// `[d]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Added to the mean square.
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// Loads `PREFIX.weight`.
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        d: usize,
        eps: f64,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(RmsNorm {
            weight: Param::from_tensor(w.tensor::<B, 1>(
                &format!("{prefix}.weight"),
                [d],
                device,
            )?),
            eps,
        })
    }

    /// `x / sqrt(mean(x²) + eps) · weight` over the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let rms = x
            .clone()
            .powi_scalar(2)
            .mean_dim(D - 1)
            .add_scalar(self.eps)
            .sqrt();
        x.div(rms).mul(self.weight.val().unsqueeze::<D>())
    }
}

/// Layer normalisation with scale and shift (`torch.nn.LayerNorm`).
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// `[d]`.
    pub weight: Param<Tensor<B, 1>>,
    /// `[d]`.
    pub bias: Param<Tensor<B, 1>>,
    /// Added to the variance.
    pub eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// Loads `PREFIX.weight` and `PREFIX.bias`.
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        d: usize,
        eps: f64,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(LayerNorm {
            weight: Param::from_tensor(w.tensor::<B, 1>(
                &format!("{prefix}.weight"),
                [d],
                device,
            )?),
            bias: Param::from_tensor(w.tensor::<B, 1>(&format!("{prefix}.bias"), [d], device)?),
            eps,
        })
    }

    /// `(x − mean) / sqrt(var + eps) · weight + bias` over the last dimension (biased variance).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let mean = x.clone().mean_dim(D - 1);
        let centred = x - mean;
        let var = centred.clone().powi_scalar(2).mean_dim(D - 1);
        centred
            .div(var.add_scalar(self.eps).sqrt())
            .mul(self.weight.val().unsqueeze::<D>())
            .add(self.bias.val().unsqueeze::<D>())
    }
}

/// An activation named as transformers' `ACT2FN` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x · σ(1.702 x)`.
    QuickGelu,
    /// `x · σ(x)`.
    Silu,
    /// The exact (erf) GELU.
    Gelu,
}

impl Activation {
    /// Parses `hidden_act`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "quick_gelu" => Ok(Activation::QuickGelu),
            "silu" | "swish" => Ok(Activation::Silu),
            "gelu" => Ok(Activation::Gelu),
            other => Err(ModelError::Input(format!(
                "hidden_act {other:?} is not supported (quick_gelu, silu, gelu)"
            ))),
        }
    }

    /// Applies it.
    pub fn apply<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Activation::QuickGelu => x.clone().mul(sigmoid(x.mul_scalar(1.702))),
            Activation::Silu => silu(x),
            // The exact (erf) GELU as a composition: burn 0.21's `gelu` computes the erf form
            // but differentiates the tanh approximation, which puts every vision-tower gradient
            // ~2e-4 (relative) off PyTorch's.
            Activation::Gelu => x
                .clone()
                .mul(x.div_scalar(std::f64::consts::SQRT_2).erf().add_scalar(1.0))
                .mul_scalar(0.5),
        }
    }
}

/// `cat(−x₂, x₁)` over the last dimension (the halves of each head).
pub fn rotate_half<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let d = x.dims()[D - 1];
    let x1 = x.clone().narrow(D - 1, 0, d / 2);
    let x2 = x.narrow(D - 1, d / 2, d - d / 2);
    Tensor::cat(vec![x2.neg(), x1], D - 1)
}

/// `x · cos + rotate_half(x) · sin`; `cos` and `sin` broadcast against `x`.
pub fn apply_rope<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    cos: Tensor<B, D>,
    sin: Tensor<B, D>,
) -> Tensor<B, D> {
    x.clone().mul(cos) + rotate_half(x).mul(sin)
}

/// Scaled dot-product attention, `q: [B, H, L, d]`, `k, v: [B, H_kv, S, d]` (grouped: each key/value
/// head serves `H / H_kv` query heads), `mask: [B, 1, L, S]` added to the scores (0 or a large
/// negative). Returns `[B, H, L, d]`.
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Option<Tensor<B, 4>>,
    scale: f64,
) -> Tensor<B, 4> {
    let [b, h, _, d] = q.dims();
    let [_, h_kv, s, _] = k.dims();
    let (k, v) = if h_kv == h {
        (k, v)
    } else {
        let rep = h / h_kv;
        let grow = |t: Tensor<B, 4>| {
            t.unsqueeze_dim::<5>(2)
                .expand([b, h_kv, rep, s, d])
                .reshape([b, h, s, d])
        };
        (grow(k), grow(v))
    };
    let mut scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale);
    if let Some(m) = mask {
        scores = scores + m;
    }
    softmax(scores, 3).matmul(v)
}

/// An f32 tensor from host values.
pub(crate) fn host<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}
