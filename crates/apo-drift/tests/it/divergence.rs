//! Divergences: closed forms and properties.

use apo_drift::{DriftError, hellinger, js_divergence, kl_divergence, smoothed, total_variation};
use proptest::prelude::*;

fn distribution(k: usize) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(0.0..1.0f64, k).prop_map(|v| {
        let s: f64 = v.iter().sum::<f64>() + 1e-9;
        v.iter().map(|x| (x + 1e-9 / v.len() as f64) / s).collect()
    })
}

#[test]
fn closed_forms() {
    // Disjoint supports: JS = ln 2, TV = 1, Hellinger = 1.
    let (p, q) = ([0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.25, 0.75]);
    assert!((js_divergence(&p, &q).unwrap() - 2f64.ln()).abs() < 1e-15);
    assert!((total_variation(&p, &q).unwrap() - 1.0).abs() < 1e-15);
    assert!((hellinger(&p, &q).unwrap() - 1.0).abs() < 1e-15);
    assert!(matches!(
        kl_divergence(&p, &q),
        Err(DriftError::ZeroProbability { index: 0, .. })
    ));
    // Bernoulli(0.5) vs Bernoulli(0.25): KL = 0.5 ln 2 + 0.5 ln(2/3).
    let kl = kl_divergence(&[0.5, 0.5], &[0.75, 0.25]).unwrap();
    assert!((kl - (0.5 * (0.5f64 / 0.75).ln() + 0.5 * 2f64.ln())).abs() < 1e-15);
    // Hellinger of Bernoullis: 1 − H² = √(pq) + √((1−p)(1−q)).
    let h = hellinger(&[0.5, 0.5], &[0.75, 0.25]).unwrap();
    assert!((1.0 - h * h - ((0.5f64 * 0.75).sqrt() + (0.5f64 * 0.25).sqrt())).abs() < 1e-15);
}

#[test]
fn smoothing_and_validation() {
    assert_eq!(
        smoothed(&[2.0, 0.0, 2.0], 1.0).unwrap(),
        vec![3.0 / 7.0, 1.0 / 7.0, 3.0 / 7.0]
    );
    assert!(matches!(
        smoothed(&[0.0, 0.0], 0.0),
        Err(DriftError::NotADistribution { .. })
    ));
    assert!(matches!(
        smoothed(&[1.0, -1.0], 0.0),
        Err(DriftError::NotADistribution { .. })
    ));
    assert!(matches!(
        js_divergence(&[0.5, 0.6], &[0.5, 0.5]),
        Err(DriftError::NotADistribution { .. })
    ));
    assert!(matches!(
        js_divergence(&[f64::NAN, 1.0], &[0.5, 0.5]),
        Err(DriftError::NotADistribution { .. })
    ));
    assert!(matches!(
        js_divergence(&[], &[]),
        Err(DriftError::Empty { .. })
    ));
}

proptest! {
    #[test]
    fn divergence_properties(p in distribution(5), q in distribution(5)) {
        let js = js_divergence(&p, &q).unwrap();
        prop_assert!((0.0..=2f64.ln() + 1e-15).contains(&js));
        prop_assert!((js - js_divergence(&q, &p).unwrap()).abs() < 1e-15);
        prop_assert!(js_divergence(&p, &p).unwrap().abs() < 1e-15);
        let tv = total_variation(&p, &q).unwrap();
        let h = hellinger(&p, &q).unwrap();
        // Le Cam: H² ≤ TV ≤ √2 H.
        prop_assert!(h * h <= tv + 1e-12 && tv <= 2f64.sqrt() * h + 1e-12);
        // Pinsker: TV ≤ √(KL / 2).
        let kl = kl_divergence(&p, &q).unwrap();
        prop_assert!(tv <= (kl / 2.0).sqrt() + 1e-12);
        // JS ≤ ½ (KL(p‖q) + KL(q‖p)) / 2 … and the mixture identity JS = H(m) − (H(p)+H(q))/2.
        let ent = |d: &[f64]| -d.iter().filter(|&&x| x > 0.0).map(|x| x * x.ln()).sum::<f64>();
        let m: Vec<f64> = p.iter().zip(&q).map(|(a, b)| 0.5 * (a + b)).collect();
        prop_assert!((js - (ent(&m) - 0.5 * (ent(&p) + ent(&q)))).abs() < 1e-12);
    }
}
