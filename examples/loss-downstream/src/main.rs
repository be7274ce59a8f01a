//! A downstream crate that depends only on `apo-loss` (no burn in its dependency tree):
//! it scores one APO group, a consensus trajectory against seven teacher trajectories,
//! under every objective, and prints the loss, its gradient and the metrics.
//!
//! Run it with `cargo run -p loss-downstream`.

use apo_loss::{Example, LossConfig, LossError, Objective, Sequence};

fn main() -> Result<(), LossError> {
    // Summed completion log-probs under the policy being trained and the frozen reference
    // (the stage-1 model), with token counts for the length-normalised objectives.
    let consensus = Sequence::new(-120.0, -126.0).with_tokens(64);
    let teachers = vec![
        Sequence::new(-140.0, -141.5).with_tokens(70),
        Sequence::new(-133.0, -130.0).with_tokens(66),
        Sequence::new(-151.0, -149.0).with_tokens(80),
        Sequence::new(-118.0, -121.0).with_tokens(58),
        Sequence::new(-160.0, -155.0).with_tokens(85),
        Sequence::new(-127.0, -128.0).with_tokens(61),
        Sequence::new(-190.0, -180.0).with_tokens(99),
    ];
    let group = Example::new(consensus, teachers);

    let apo = LossConfig::new(Objective::PlackettLuce)
        .with_beta(0.1)
        .init()?;
    let out = apo.compute(&group)?;
    println!("APO (Plackett-Luce) loss      {:.6}", out.loss);
    println!("  d loss / d log pi(consensus) {:.6}", out.grad_chosen);
    for (u, g) in out.grad_rejected.iter().enumerate() {
        println!("  d loss / d log pi(teacher {u}) {g:.6}");
    }
    let m = &out.metrics;
    println!(
        "  reward chosen {:.4}, mean rejected {:.4}",
        m.reward_chosen, m.reward_rejected_mean
    );
    println!(
        "  margin vs mean {:.4}, vs max {:.4}",
        m.margin_mean, m.margin_max
    );
    println!(
        "  top-1 accuracy {}, pairwise accuracy {:.3}, p(consensus) {:.4}",
        m.top1_accuracy, m.pairwise_accuracy, m.p_chosen
    );

    // Down-weight a teacher known to drift (weight 0.5 = adding ln 0.5 to its score).
    let weighted = group
        .clone()
        .with_weights(vec![1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5]);
    println!(
        "APO with the last teacher at weight 0.5: {:.6}",
        apo.compute(&weighted)?.loss
    );

    println!();
    println!("{:<21} {:>10}", "objective", "loss");
    for objective in Objective::ALL {
        let loss = LossConfig::new(objective).init()?.compute(&group)?.loss;
        println!("{:<21} {:>10.6}", objective.name(), loss);
    }
    Ok(())
}
