//! The concept head's per-finding attention pooling ([`ConceptAttention`]).

use burn::module::{Module, Param};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

/// One learned query per concept attends over the image's prefix vectors; each concept's
/// logit is a linear read-out of its own pooled vector:
///
/// ```text
/// a_k = softmax_p( x_p · q_k / √d )        (over the P prefix vectors x_p)
/// z_k = (Σ_p a_kp x_p) · w_k + b_k
/// ```
///
/// A finding drawn in a few patches (a pneumothorax at one apex) keeps its weight in its own
/// pooled vector instead of being averaged with the whole image, as the mean-pooled linear
/// head does.
#[derive(Module, Debug)]
pub struct ConceptAttention<B: Backend> {
    /// Queries `[K, d]`.
    pub queries: Param<Tensor<B, 2>>,
    /// Read-out weights `[K, d]`.
    pub weight: Param<Tensor<B, 2>>,
    /// Read-out biases `[K]`.
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> ConceptAttention<B> {
    /// A head for `n` concepts over width `d` (queries and weights `N(0, 0.02)`, biases 0).
    pub fn new(n: usize, d: usize, device: &B::Device) -> Self {
        let normal = || Distribution::Normal(0.0, 0.02);
        ConceptAttention {
            queries: Param::from_tensor(Tensor::random([n, d], normal(), device)),
            weight: Param::from_tensor(Tensor::random([n, d], normal(), device)),
            bias: Param::from_tensor(Tensor::zeros([n], device)),
        }
    }

    /// Concept logits `[G, K]` of prefixes `[G, P, d]`.
    pub fn forward(&self, prefix: Tensor<B, 3>) -> Tensor<B, 2> {
        let [g, _, d] = prefix.dims();
        let k = self.queries.dims()[0];
        let q = self
            .queries
            .val()
            .transpose()
            .unsqueeze::<3>()
            .expand([g, d, k]); // [G, d, K]
        let scores = prefix.clone().matmul(q).div_scalar((d as f64).sqrt()); // [G, P, K]
        let attn = softmax(scores, 1).swap_dims(1, 2); // [G, K, P]
        let pooled = attn.matmul(prefix); // [G, K, d]
        let w = self.weight.val().unsqueeze::<3>(); // [1, K, d]
        let z = (pooled * w).sum_dim(2).reshape([g, k]); // [G, K]
        z + self.bias.val().unsqueeze::<2>()
    }
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    /// The tensor forward against the formula, term by term, in f64 on the tensors' values.
    #[test]
    fn attention_pooling_matches_the_formula() {
        type Nd = NdArray;
        let device = Default::default();
        let (g, p, d, k) = (2, 5, 4, 3);
        let head = ConceptAttention::<Nd>::new(k, d, &device);
        let head = ConceptAttention {
            bias: Param::from_tensor(Tensor::from_floats([0.1, -0.2, 0.3], &device)),
            ..head
        };
        let prefix = Tensor::<Nd, 3>::random([g, p, d], Distribution::Normal(0.0, 1.0), &device);
        let z: Vec<f64> = head
            .forward(prefix.clone())
            .into_data()
            .convert::<f64>()
            .to_vec()
            .unwrap();
        let x: Vec<f64> = prefix.into_data().convert::<f64>().to_vec().unwrap();
        let q: Vec<f64> = head
            .queries
            .val()
            .into_data()
            .convert::<f64>()
            .to_vec()
            .unwrap();
        let w: Vec<f64> = head
            .weight
            .val()
            .into_data()
            .convert::<f64>()
            .to_vec()
            .unwrap();
        let b: Vec<f64> = head
            .bias
            .val()
            .into_data()
            .convert::<f64>()
            .to_vec()
            .unwrap();
        for gi in 0..g {
            for c in 0..k {
                let xs = |pi: usize, j: usize| x[(gi * p + pi) * d + j];
                let scores: Vec<f64> = (0..p)
                    .map(|pi| (0..d).map(|j| xs(pi, j) * q[c * d + j]).sum::<f64>() / 2.0)
                    .collect();
                let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let total: f64 = e.iter().sum();
                let want = (0..d)
                    .map(|j| {
                        let pooled: f64 = (0..p).map(|pi| e[pi] / total * xs(pi, j)).sum();
                        pooled * w[c * d + j]
                    })
                    .sum::<f64>()
                    + b[c];
                let got = z[gi * k + c];
                assert!((got - want).abs() < 1e-5, "[{gi}, {c}]: {got} vs {want}");
            }
        }
    }
}
