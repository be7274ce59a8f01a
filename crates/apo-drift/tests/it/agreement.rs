//! Agreement statistics against published and hand-computed values.

use apo_drift::{DriftError, binary_scores, fleiss_kappa, pairwise_agreement, vote_entropy};
use ndarray::{Array2, array};

/// Fleiss (1971) as worked in the Wikipedia article "Fleiss' kappa": 10 subjects, 14 raters,
/// 5 categories; P̄ = 0.378, P̄_e = 0.213, κ = 0.210.
#[test]
fn fleiss_kappa_worked_example() {
    let table = array![
        [0.0, 0.0, 0.0, 0.0, 14.0],
        [0.0, 2.0, 6.0, 4.0, 2.0],
        [0.0, 0.0, 3.0, 5.0, 6.0],
        [0.0, 3.0, 9.0, 2.0, 0.0],
        [2.0, 2.0, 8.0, 1.0, 1.0],
        [7.0, 7.0, 0.0, 0.0, 0.0],
        [3.0, 2.0, 6.0, 3.0, 0.0],
        [2.0, 5.0, 3.0, 2.0, 2.0],
        [6.0, 5.0, 2.0, 1.0, 0.0],
        [0.0, 2.0, 2.0, 3.0, 7.0],
    ];
    let k = fleiss_kappa(table.view()).unwrap();
    assert!((k - 0.210).abs() < 5e-4, "{k}");
}

#[test]
fn fleiss_kappa_limits_and_errors() {
    // Raters split evenly and independently of the item: κ = (P̄ − P̄e)/(1 − P̄e) with P̄ = 1/3,
    // P̄e = 1/2 ⇒ −1/3 for 4 raters split 2–2.
    let k = fleiss_kappa(array![[2.0, 2.0], [2.0, 2.0]].view()).unwrap();
    assert!((k + 1.0 / 3.0).abs() < 1e-15, "{k}");
    assert!(matches!(
        fleiss_kappa(array![[2.0, 1.0], [2.0, 2.0]].view()),
        Err(DriftError::UnequalRaters { item: 1, .. })
    ));
    assert!(matches!(
        fleiss_kappa(Array2::<f64>::zeros((0, 2)).view()),
        Err(DriftError::Empty { .. })
    ));
    assert!(matches!(
        fleiss_kappa(array![[1.0, 0.0]].view()),
        Err(DriftError::OutOfRange { .. })
    ));
}

#[test]
fn entropy_agreement_and_scores() {
    assert!((vote_entropy(&[1.0, 1.0, 1.0, 1.0]).unwrap() - 4f64.ln()).abs() < 1e-15);
    assert!(matches!(
        vote_entropy(&[0.0, 0.0]),
        Err(DriftError::Empty { .. })
    ));
    let m = pairwise_agreement(&[vec![Some(0), None], vec![None, Some(1)]]).unwrap();
    assert!(m[[0, 1]].is_nan());
    let s = binary_scores(
        &[Some(true); 4],
        &[Some(true), Some(true), Some(false), Some(false)],
    )
    .unwrap();
    assert_eq!((s.precision, s.recall, s.accuracy), (0.5, 1.0, 0.5));
    assert!((s.f1 - 2.0 / 3.0).abs() < 1e-15);
    assert!(matches!(
        binary_scores(&[None], &[]),
        Err(DriftError::LengthMismatch { .. })
    ));
}
