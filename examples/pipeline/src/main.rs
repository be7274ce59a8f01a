//! The demo's pipeline from the library: simulate a data set with the seven default teacher
//! profiles, then drift report → consensus and preference sets → stage 1 → stage 2
//! (Plackett-Luce and pairwise) → evaluation, on the CPU backend.
//!
//! `cargo run --release -p pipeline -- [STUDIES] [SFT_STEPS] [APO_STEPS] [OUT]`
//! (defaults: the demo's 10000, 1600, 200, `runs/pipeline-example`).

use apo_pipeline::demo::{DemoOptions, run};
use apo_pipeline::table::RowKind;
use apo_train::device::Cpu;
use apo_train::train::StepMetrics;

/// Prints the pipeline's progress lines and every 100th training step.
struct Print;

impl apo_pipeline::Observer for Print {
    fn message(&mut self, line: &str) {
        println!("{line}");
    }

    fn step(&mut self, total: usize, m: &StepMetrics) {
        if m.step.is_multiple_of(100) || m.step == total {
            println!("  [{}] {}/{total} loss {:.4}", m.stage, m.step, m.loss);
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: usize| args.get(i).map_or(Ok(default), |a| a.parse());
    let options = DemoOptions {
        studies: number(0, apo_pipeline::demo::DEFAULT_STUDIES)?,
        sft_steps: number(1, 1600)?,
        apo_steps: number(2, 200)?,
        out: args
            .get(3)
            .map_or("runs/pipeline-example".into(), Into::into),
        ..DemoOptions::default()
    };
    let result = run::<Cpu>(&options, &Default::default(), &mut Print)?;
    println!("\nover the Table 1 findings, test split: balanced accuracy, macro-F1, accuracy");
    for row in &result.rows {
        let kind = match row.kind {
            RowKind::Teacher => "teacher",
            RowKind::Aggregate => "aggregate",
            RowKind::Baseline => "baseline",
            RowKind::Student => "student",
        };
        let v = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.3}"));
        let s = &row.summary;
        println!(
            "  {:<22} {kind:<9} {} {} {}",
            row.name,
            v(s.balanced_accuracy),
            v(s.macro_f1),
            v(s.accuracy)
        );
    }
    for c in &result.comparisons {
        let d = &c.difference;
        println!(
            "APO student vs {} ({}): {:+.4} [{:+.4}, {:+.4}]",
            c.versus,
            c.metric.label(),
            d.difference,
            d.ci95[0],
            d.ci95[1]
        );
    }
    println!("report: {}", options.out.join("report.md").display());
    Ok(())
}
