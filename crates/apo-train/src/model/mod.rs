//! The student: a small vision-language model.
//!
//! An image encoder (a strided-convolution patch embedding, learned positions and pre-norm
//! transformer layers) turns a `[G, 1, H, W]` batch of images into `P` prefix vectors each.
//! A decoder (token and position embeddings, pre-norm transformer layers, a vocabulary head)
//! reads `[prefix ; text]`: the prefix attends to itself, text attends to the prefix and to
//! earlier text (a prefix language model). Each image is encoded once per group and its
//! prefix shared by the group's sequences (the consensus and every negative of a preference
//! group, or one trajectory per teacher). Every linear layer can carry a LoRA adapter.

mod block;
mod concept;
mod config;
mod decode;
mod dense;
mod student;

pub use block::{Block, Rows};
pub use concept::ConceptAttention;
pub use config::{Activation, ConceptPooling, StudentConfig};
pub use decode::DecodeCache;
pub use dense::{Dense, Lora};
pub use student::Student;

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use super::*;
    use crate::kernels::ApoKernels;
    use burn::backend::{Autodiff, NdArray};
    use burn::module::Module;
    use burn::tensor::Tensor;
    use burn::tensor::backend::Backend;
    use burn::tensor::{Distribution, TensorData};

    type Ad = Autodiff<NdArray>;

    fn max_diff(a: TensorData, b: TensorData) -> f32 {
        a.iter::<f32>()
            .zip(b.iter::<f32>())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// The CPU backends the trainer runs on (the `cpu` device's autodiff backend and its
    /// inner backend, which the frozen reference and evaluation use) take the fused kernels,
    /// so the comparisons below compare two different implementations.
    #[test]
    fn the_cpu_backends_take_the_fused_kernels() {
        type Inner = <crate::device::Cpu as burn::tensor::backend::AutodiffBackend>::InnerBackend;
        const {
            assert!(<crate::device::Cpu as ApoKernels>::FUSED_LAYERS);
            assert!(<Inner as ApoKernels>::FUSED_LAYERS);
            assert!(<crate::device::Cpu as apo_loss::tensor::LossKernels>::FUSED_LOGPROBS);
            assert!(<Inner as apo_loss::tensor::LossKernels>::FUSED_LOGPROBS);
            assert!(!<Autodiff<NdArray<f64>> as ApoKernels>::FUSED_LAYERS);
        }
    }

    /// The fused CPU attention against the composite graph: outputs and `∂L/∂qkv` for a
    /// random upstream gradient, on decoder layouts (prefix + text, shared by each group's
    /// sequences) and the encoder layout (prefix only).
    #[test]
    fn fused_attention_matches_the_composite_graph() {
        let device = Default::default();
        <Ad as Backend>::seed(&device, 11);
        let config = StudentConfig::new(32).with_d_model(16).with_n_heads(2);
        let block = Block::<Ad>::new(&config, &device);
        for rows in [
            Rows {
                groups: 2,
                prefix: 3,
                seqs: 3,
                text: 5,
            },
            Rows {
                groups: 3,
                prefix: 4,
                seqs: 0,
                text: 0,
            },
            Rows {
                groups: 1,
                prefix: 2,
                seqs: 1,
                text: 7,
            },
        ] {
            let r = rows.total();
            // Scores of a few units: the softmax is far from uniform.
            let qkv = Tensor::<Ad, 2>::random([r, 48], Distribution::Normal(0.0, 2.0), &device);
            let upstream = Tensor::<Ad, 2>::random([r, 16], Distribution::Default, &device);
            let fused_in = qkv.clone().detach().require_grad();
            let composite_in = qkv.detach().require_grad();
            let fused = block.attention(fused_in.clone(), rows);
            let composite = block.attention_composite(composite_in.clone(), rows);
            let diff = max_diff(fused.to_data(), composite.to_data());
            assert!(diff < 1e-5, "{rows:?}: outputs differ by {diff}");
            let gf = (fused * upstream.clone()).sum().backward();
            let gc = (composite * upstream).sum().backward();
            let (gf, gc) = (
                fused_in.grad(&gf).expect("gradient"),
                composite_in.grad(&gc).expect("gradient"),
            );
            let scale = gc
                .to_data()
                .iter::<f32>()
                .fold(0.0f32, |m, x| m.max(x.abs()));
            assert!(scale > 0.1, "{rows:?}: gradient {scale}");
            let diff = max_diff(gf.to_data(), gc.to_data());
            assert!(
                diff < 1e-5 * scale.max(1.0),
                "{rows:?}: gradients differ by {diff}"
            );
            // Without autodiff, the same forward.
            let plain = Block::<NdArray>::new(&config, &device);
            let q = Tensor::<NdArray, 2>::from_data(fused_in.to_data(), &device);
            let diff = max_diff(
                plain.attention(q.clone(), rows).to_data(),
                plain.attention_composite(q, rows).to_data(),
            );
            assert!(diff < 1e-5, "{rows:?}: plain outputs differ by {diff}");
        }
    }

    /// The fused linear layer against burn's: output and the gradients of the input, the
    /// weight and the bias; and with a frozen layer (no weight or bias gradient), the input's.
    #[test]
    fn fused_linear_matches_burn_linear() {
        let device = Default::default();
        <Ad as Backend>::seed(&device, 5);
        let dense = Dense::<Ad>::new(12, 7, &device);
        let x = Tensor::<Ad, 2>::random([9, 12], Distribution::Normal(0.0, 1.5), &device);
        let upstream = Tensor::<Ad, 2>::random([9, 7], Distribution::Default, &device);
        for frozen in [false, true] {
            let dense = if frozen {
                dense.clone().no_grad()
            } else {
                dense.clone()
            };
            let (xf, xc) = (
                x.clone().detach().require_grad(),
                x.clone().detach().require_grad(),
            );
            let fused = dense.base(xf.clone());
            let reference = dense.linear.forward(xc.clone());
            assert!(max_diff(fused.to_data(), reference.to_data()) < 1e-5);
            let gf = (fused * upstream.clone()).sum().backward();
            let gc = (reference * upstream.clone()).sum().backward();
            let grad = |t: &Tensor<Ad, 2>, g| t.grad(g).expect("input gradient").to_data();
            assert!(max_diff(grad(&xf, &gf), grad(&xc, &gc)) < 1e-5);
            let w = dense.linear.weight.val();
            let b = dense.linear.bias.as_ref().expect("bias").val();
            if frozen {
                assert!(w.grad(&gf).is_none() && b.grad(&gf).is_none());
            } else {
                let (wf, wc) = (w.grad(&gf).expect("dW"), w.grad(&gc).expect("dW"));
                assert!(max_diff(wf.to_data(), wc.to_data()) < 1e-5);
                let (bf, bc) = (b.grad(&gf).expect("db"), b.grad(&gc).expect("db"));
                assert!(max_diff(bf.to_data(), bc.to_data()) < 1e-5);
                assert!(bc.abs().sum().into_scalar() > 0.1);
            }
        }
    }
}
