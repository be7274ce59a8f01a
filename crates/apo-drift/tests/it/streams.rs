//! Multi-stream statistics on streams whose answer is known in closed form.

use apo_drift::{
    Divergence, DriftError, StreamCounts, collective_shift, cumulative_deviation,
    instantaneous_drift, step_shift, teacher_divergence,
};
use ndarray::array;

/// Two teachers, four steps, two labels. Teacher 0 is stationary at (0.5, 0.5); teacher 1 is
/// (0.5, 0.5) for steps 0–1 and (0.9, 0.1) for steps 2–3.
fn counts() -> StreamCounts {
    let mut c = StreamCounts::new(2, 4, 2).unwrap();
    for step in 0..4 {
        c.add(0, step, 0, 5.0).unwrap();
        c.add(0, step, 1, 5.0).unwrap();
        let (a, b) = if step < 2 { (5.0, 5.0) } else { (9.0, 1.0) };
        c.add(1, step, 0, a).unwrap();
        c.add(1, step, 1, b).unwrap();
    }
    c
}

fn kl(p: [f64; 2], q: [f64; 2]) -> f64 {
    p[0] * (p[0] / q[0]).ln() + p[1] * (p[1] / q[1]).ln()
}

#[test]
fn non_stationarity_is_where_the_stream_changes() {
    let d = counts().distributions(0.0).unwrap();
    let shift = step_shift(&d, 1, Divergence::KullbackLeibler).unwrap();
    assert_eq!(shift.row(0).to_vec(), vec![0.0, 0.0, 0.0]);
    let jump = kl([0.5, 0.5], [0.9, 0.1]);
    assert!((shift[[1, 1]] - jump).abs() < 1e-15);
    assert_eq!((shift[[1, 0]], shift[[1, 2]]), (0.0, 0.0));
    // Collective (product) KL = sum over teachers.
    let coll = collective_shift(&d, 1).unwrap();
    assert!((coll[1] - jump).abs() < 1e-15 && coll[0] == 0.0);
    assert!(matches!(
        step_shift(&d, 4, Divergence::JensenShannon),
        Err(DriftError::OutOfRange { .. })
    ));
}

#[test]
fn teacher_divergence_and_factorised_drift() {
    let d = counts().distributions(0.0).unwrap();
    let tt = teacher_divergence(&d, Divergence::TotalVariation).unwrap();
    assert_eq!(tt[[0, 0, 1]], 0.0);
    assert!((tt[[3, 0, 1]] - 0.4).abs() < 1e-15 && (tt[[3, 1, 0]] - 0.4).abs() < 1e-15);

    // Instantaneous drift against the cross-teacher mean: at steps 2–3 the mean is (0.7, 0.3).
    let inst = instantaneous_drift(&d, None, Divergence::KullbackLeibler).unwrap();
    assert!((inst[[0, 2]] - kl([0.5, 0.5], [0.7, 0.3])).abs() < 1e-15);
    assert!((inst[[1, 3]] - kl([0.9, 0.1], [0.7, 0.3])).abs() < 1e-15);
    assert_eq!((inst[[0, 0]], inst[[1, 1]]), (0.0, 0.0));

    // Against a given consensus equal to teacher 0: teacher 0 never drifts.
    let consensus = array![[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]];
    let inst =
        instantaneous_drift(&d, Some(consensus.view()), Divergence::KullbackLeibler).unwrap();
    assert!(inst.row(0).iter().all(|&x| x == 0.0));

    // Cumulative deviation: prefix sums (λ = 1) and geometric decay.
    let h = cumulative_deviation(&inst, 1.0).unwrap();
    let k = kl([0.9, 0.1], [0.5, 0.5]);
    assert!((h[[1, 3]] - 2.0 * k).abs() < 1e-15);
    let h = cumulative_deviation(&inst, 0.5).unwrap();
    assert!((h[[1, 3]] - 1.5 * k).abs() < 1e-15);
    assert!(matches!(
        cumulative_deviation(&inst, 0.0),
        Err(DriftError::OutOfRange { .. })
    ));
}

#[test]
fn empty_cells_need_smoothing() {
    let mut c = StreamCounts::new(1, 2, 3).unwrap();
    c.observe(0, 0, 2).unwrap();
    match c.distributions(0.0).unwrap_err() {
        DriftError::NotADistribution { what, .. } => assert_eq!(what, "teacher 0 at step 1"),
        e => panic!("unexpected {e}"),
    }
    let d = c.distributions(1.0).unwrap();
    assert!((d[[0, 1, 0]] - 1.0 / 3.0).abs() < 1e-15);
    assert!((d[[0, 0, 2]] - 0.5).abs() < 1e-15);
    assert!(matches!(
        c.observe(0, 2, 0),
        Err(DriftError::IndexOutOfRange { what: "step", .. })
    ));
}
