//! Procedurally drawn chest-radiograph-like images in which every finding leaves its own
//! learnable signature.
//!
//! The generator is consumed the same way whatever the truth (every random parameter is drawn
//! up front, then one noise sample per pixel), so the same substream drawn with one finding
//! toggled gives the same image except for that finding's sign (counterfactual renders).

use crate::rng::Rng;
use crate::{Finding, Findings, LabelStatus};

/// How an image is drawn apart from its findings.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Look {
    /// A subtle image: every positive sign is drawn at half its intensity change.
    pub subtle: bool,
    /// An AP film: drawn with lower contrast (the shared confounder).
    pub ap: bool,
}

/// Strength of the positive signs on a subtle image (share of the intensity change kept).
pub(crate) const SUBTLE_STRENGTH: f64 = 0.5;
/// Contrast of an AP film around its mid grey.
pub(crate) const AP_CONTRAST: f64 = 0.7;
const AP_MID: f64 = 0.35;

/// Draws a `size × size` 8-bit grayscale radiograph for `truth` (positives drawn).
pub(crate) fn radiograph(size: u32, truth: &Findings, look: Look, rng: &mut Rng) -> Vec<u8> {
    let n = size as usize;
    let s = size as f64;
    let mut img = vec![0.04f64; n * n];
    let jitter = |rng: &mut Rng, x: f64| x + rng.range(-0.015, 0.015);

    let body = (jitter(rng, 0.5), 0.52, 0.46, 0.55);
    let lungs = [
        (jitter(rng, 0.31), jitter(rng, 0.45), 0.16, 0.3),
        (jitter(rng, 0.69), jitter(rng, 0.45), 0.16, 0.3),
    ];
    let side = |rng: &mut Rng| usize::from(rng.bernoulli(0.5));

    let pe_side = side(rng);
    let px_side = side(rng);
    let co_side = side(rng);
    let at_side = side(rng);
    let lesion = (rng.range(0.22, 0.78), rng.range(0.25, 0.55));
    let fracture_rib = rng.below(5);
    let po_side = side(rng);

    // One pixel's value for the findings `has` says are present (no randomness).
    let pixel = |x: usize, y: usize, v: f64, has: &dyn Fn(Finding) -> bool| -> f64 {
        let mut v = v;
        let heart_rx = if has(Finding::Cardiomegaly) {
            0.22
        } else {
            0.14
        };
        let heart = (0.55, 0.64, heart_rx, 0.13);
        let media_w = if has(Finding::EnlargedCardiomediastinum) {
            0.085
        } else {
            0.045
        };
        let (fx, fy) = ((x as f64 + 0.5) / s, (y as f64 + 0.5) / s);
        let ell = |c: (f64, f64, f64, f64)| ((fx - c.0) / c.2).powi(2) + ((fy - c.1) / c.3).powi(2);
        if ell(body) < 1.0 {
            v = 0.38;
        }
        for (k, lung) in lungs.iter().enumerate() {
            let e = ell(*lung);
            if e < 1.0 {
                v = 0.14 + 0.05 * e;
                // Ribs: bright arcs across the lungs.
                let phase = (fy * 14.0 + (fx - lung.0).powi(2) * 6.0) % 1.0;
                let rib = ((fy * 14.0) as usize).min(20);
                let broken = has(Finding::Fracture)
                    && k == 0
                    && rib == 4 + fracture_rib
                    && (fx - lung.0).abs() < 0.03;
                if phase < 0.18 && !broken {
                    v += 0.09;
                }
                if has(Finding::PleuralEffusion)
                    && k == pe_side
                    && fy > lung.1 + 0.12 - 0.05 * ((fx - lung.0) / lung.2).powi(2)
                {
                    v = 0.56; // basal opacity with a meniscus
                }
                if has(Finding::Pneumothorax) && k == px_side && fy < lung.1 - 0.12 {
                    let edge = ((fx - lung.0) / lung.2).abs();
                    v = if (0.55..0.62).contains(&edge) {
                        0.5
                    } else if edge > 0.62 {
                        0.02
                    } else {
                        v
                    };
                }
                if (has(Finding::Consolidation) || has(Finding::Pneumonia)) && k == co_side {
                    let d =
                        ((fx - lung.0) / 0.09).powi(2) + ((fy - (lung.1 + 0.12)) / 0.07).powi(2);
                    if d < 1.0 {
                        // Denser with both, so that each of the two stays visible.
                        let both = has(Finding::Consolidation) && has(Finding::Pneumonia);
                        v = if both { 0.58 } else { 0.5 }
                            + if has(Finding::Pneumonia) {
                                0.06 * ((fx * 90.0).sin() * (fy * 70.0).cos())
                            } else {
                                0.0
                            };
                    }
                }
                if has(Finding::Edema) {
                    let hilum = (0.5 + (lung.0 - 0.5) * 0.45, 0.48);
                    let d2 = ((fx - hilum.0).powi(2) + (fy - hilum.1).powi(2)) / 0.018;
                    v += 0.22 * (-d2).exp();
                }
                if has(Finding::Atelectasis) && k == at_side && (fy - (lung.1 + 0.18)).abs() < 0.012
                {
                    v = 0.5;
                }
                if has(Finding::LungOpacity)
                    && !has(Finding::Consolidation)
                    && !has(Finding::Pneumonia)
                {
                    let d = ((fx - lung.0 + 0.04) / 0.06).powi(2) + ((fy - lung.1) / 0.05).powi(2);
                    if d < 1.0 {
                        v += 0.16;
                    }
                }
                if has(Finding::PleuralOther) && k == po_side && e > 0.8 && fy < lung.1 - 0.05 {
                    v = 0.48;
                }
            }
        }
        if has(Finding::LungLesion)
            && ((fx - lesion.0).powi(2) + (fy - lesion.1).powi(2)).sqrt() < 0.035
        {
            v = 0.62;
        }
        // Mediastinum and heart.
        if (fx - 0.5).abs() < media_w && fy < heart.1 && fy > 0.12 {
            v = v.max(0.55);
        }
        if ell(heart) < 1.0 {
            v = 0.62;
        }
        // Diaphragm domes.
        if fy > 0.77 + 0.04 * ((fx - 0.5) * 6.0).cos().abs() && ell(body) < 1.0 {
            v = 0.6;
        }
        if has(Finding::SupportDevices) {
            let tube = (fx - 0.48 - 0.02 * (fy * 6.0).sin()).abs() < 0.006 && fy < 0.7;
            let device = (0.18..0.27).contains(&fx) && (0.1..0.16).contains(&fy);
            if tube || device {
                v = 0.95;
            }
        }
        v
    };
    let present = |f: Finding| truth.get(f) == LabelStatus::Positive;
    let absent = |_: Finding| false;
    for y in 0..n {
        for x in 0..n {
            let base = img[y * n + x];
            let mut v = pixel(x, y, base, &present);
            if look.subtle {
                let plain = pixel(x, y, base, &absent);
                v = plain + (v - plain) * SUBTLE_STRENGTH;
            }
            if look.ap {
                v = AP_MID + (v - AP_MID) * AP_CONTRAST;
            }
            img[y * n + x] = v;
        }
    }
    img.iter()
        .map(|&v| ((v + 0.03 * rng.normal()).clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect()
}
