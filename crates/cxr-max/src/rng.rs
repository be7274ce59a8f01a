//! The seeded generator of the simulator and the samplers: SplitMix64 (`rand_xoshiro`), with
//! the small helpers the simulated data is drawn with, so that every simulated artefact is a
//! pure function of the seed, on every platform.
//!
//! The helpers are written over the generator's 64-bit outputs (`uniform` is the top 53 bits
//! over 2^53, rand's `StandardUniform` for `f64`), not over `rand`'s range and Bernoulli
//! samplers, whose algorithms differ: data simulated before and after the move to
//! `rand_xoshiro` is bit for bit the same.

use rand::{Rng as _, RngCore, SeedableRng};
use rand_xoshiro::SplitMix64;

/// SplitMix64 (Steele, Lea & Flood 2014) with the simulator's helpers. It implements
/// [`RngCore`], so `rand::Rng`'s methods work on it too.
#[derive(Debug, Clone)]
pub struct Rng(SplitMix64);

impl Rng {
    /// A generator seeded with `seed` (the SplitMix64 state is `seed`).
    pub fn new(seed: u64) -> Self {
        Rng(SplitMix64::seed_from_u64(seed))
    }

    /// A generator for the `stream`-th independent sub-stream of `seed`.
    pub fn substream(seed: u64, stream: u64) -> Self {
        let mut r = Rng::new(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next_u64();
        r
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1): `(next_u64() >> 11) / 2^53`.
    pub fn uniform(&mut self) -> f64 {
        self.0.random::<f64>()
    }

    /// `true` with probability `p` (`uniform() < p`).
    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Uniform in `lo..hi` (floats).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform index in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }

    /// A random element of `items` (non-empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Approximately standard normal (sum of 4 uniforms, rescaled).
    pub fn normal(&mut self) -> f64 {
        let s: f64 = (0..4).map(|_| self.uniform()).sum();
        (s - 2.0) * (3.0f64).sqrt()
    }
}

impl RngCore for Rng {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }

    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.0.fill_bytes(dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stream is the one of the hand-written SplitMix64 this module had before (values
    /// computed by that code): the simulated data sets are unchanged.
    #[test]
    fn the_stream_is_the_old_splitmix64() {
        let mut r = Rng::new(0);
        assert_eq!(
            [r.next_u64(), r.next_u64(), r.next_u64()],
            [
                0xe220_a839_7b1d_cdaf,
                0x6e78_9e6a_a1b9_65f4,
                0x06c4_5d18_8009_454f
            ]
        );
        let mut r = Rng::new(7);
        assert_eq!(
            [r.next_u64(), r.next_u64()],
            [0x63cb_e1e4_5932_0dd7, 0x044c_3cd7_f43c_661c]
        );
        let mut r = Rng::substream(0xA5A5_0000, 3 * 64 + 2);
        assert_eq!(r.next_u64(), 0xed29_8a27_9f9e_a4bd);
        assert_eq!(r.uniform(), 0.6000685015812665);
        assert_eq!(r.uniform(), 0.8633700606949095);
    }

    #[test]
    fn uniform_is_the_top_53_bits() {
        let mut a = Rng::new(42);
        let mut b = a.clone();
        for _ in 0..1000 {
            let u = a.uniform();
            assert_eq!(u, (b.next_u64() >> 11) as f64 / (1u64 << 53) as f64);
            assert!((0.0..1.0).contains(&u));
        }
    }
}
