//! The optimiser (AdamW), global-norm gradient clipping, and the per-micro-batch seeds.

use std::marker::PhantomData;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};

use crate::Student;
use crate::config::OptimConfig;

/// The optimiser of both stages.
pub type Adam<B> = OptimizerAdaptor<AdamW, Student<B>, B>;

/// AdamW with the stage's β₁, β₂ and decoupled weight decay (ε = 1e-8).
pub fn optimizer<B: AutodiffBackend>(c: &OptimConfig) -> Adam<B> {
    adamw::<B, Student<B>>(c)
}

/// [`optimizer`] for any module (it updates the parameters that receive gradients: the
/// adapters of a LoRA model).
pub fn adamw<B: AutodiffBackend, M: burn::module::AutodiffModule<B>>(
    c: &OptimConfig,
) -> OptimizerAdaptor<AdamW, M, B> {
    AdamWConfig::new()
        .with_beta_1(c.beta1 as f32)
        .with_beta_2(c.beta2 as f32)
        .with_epsilon(1e-8)
        .with_weight_decay(c.weight_decay as f32)
        .init::<B, M>()
}

struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: f64,
    _b: PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let s: f64 = (g.clone() * g).sum().into_scalar().elem();
            self.total += s;
        }
    }
}

struct Scale<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    factor: f64,
    _b: PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// Global gradient norm, and clipping of all gradients together to `max_norm` (0 = off).
pub fn clip<B: AutodiffBackend, M: Module<B>>(
    model: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let mut v = SquaredNorm::<B> {
        grads,
        total: 0.0,
        _b: PhantomData,
    };
    model.visit(&mut v);
    let norm = v.total.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let mut s = Scale::<B> {
            grads,
            factor: max_norm / (norm + 1e-6),
            _b: PhantomData,
        };
        model.visit(&mut s);
    }
    norm
}

/// The per-micro-batch backend seed: a function of the run seed and the data position, so a
/// resumed run draws the same dropout masks as an uninterrupted one.
pub(crate) fn micro_seed(seed: u64, m: usize) -> u64 {
    let mut x = seed ^ (m as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x.wrapping_mul(0xBF58_476D_1CE4_E5B9)
}
