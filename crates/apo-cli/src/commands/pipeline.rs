//! `apo demo` and `apo run`: the pipeline of [`apo_pipeline`] on the backend `--device`
//! names, with progress lines on standard error and the plots drawn from its results.

use std::path::{Path, PathBuf};

use apo_pipeline::demo::DemoOptions;
use apo_pipeline::table::Table;
use apo_pipeline::{DriftReport, PipelineError, PipelineOptions, PipelineResult, read_metrics};
use apo_train::TrainBackend;
use apo_train::train::StepMetrics;
use cxr_max::Finding;

use super::train::WithBackend;
use crate::plot::{self, Titles};
use apo_train::train::TrainProgress;

/// Progress on standard error (when `verbose`: stage lines, and the training steps as a bar
/// on a terminal or plain lines otherwise) and the plots.
#[derive(Debug)]
pub struct CliObserver {
    verbose: bool,
    steps: TrainProgress,
}

impl CliObserver {
    /// An observer that prints progress when `verbose`, and draws the plots in any case.
    pub fn new(verbose: bool) -> Self {
        CliObserver {
            verbose,
            steps: TrainProgress::stderr(),
        }
    }
}

fn drawn(r: Result<(), plot::PlotError>) -> apo_pipeline::Result<()> {
    r.map_err(|e| PipelineError::Observer(e.to_string()))
}

impl apo_pipeline::Observer for CliObserver {
    fn message(&mut self, line: &str) {
        if self.verbose {
            eprintln!("{line}");
        }
    }

    fn step(&mut self, total: usize, m: &StepMetrics) {
        if self.verbose {
            apo_train::train::Observer::step(&mut self.steps, total, m);
        }
    }

    fn drift_report(
        &mut self,
        report: &DriftReport,
        dir: &Path,
    ) -> apo_pipeline::Result<Vec<PathBuf>> {
        drift_plots(report, dir).map_err(PipelineError::Observer)
    }

    fn results(
        &mut self,
        _result: &PipelineResult,
        table: &Table,
        dir: &Path,
    ) -> apo_pipeline::Result<Vec<PathBuf>> {
        let train = dir.join("train");
        let sft = read_metrics(&train.join("sft/metrics.jsonl"));
        let apo = read_metrics(&train.join("apo/metrics.jsonl"));
        let pw = read_metrics(&train.join("pairwise/metrics.jsonl"));
        let series = |m: &[StepMetrics], f: &dyn Fn(&StepMetrics) -> Option<f64>| {
            m.iter()
                .map(|x| f(x).unwrap_or(f64::NAN))
                .collect::<Vec<f64>>()
        };
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let plots = [
            (
                "curves_loss.png",
                Titles::new("Training loss").x("step").y("loss"),
                names(&["SFT", "APO (Plackett-Luce)", "pairwise"]),
                vec![
                    series(&sft, &|x| Some(x.loss)),
                    series(&apo, &|x| Some(x.loss)),
                    series(&pw, &|x| Some(x.loss)),
                ],
            ),
            (
                "curves_margin.png",
                Titles::new("Stage 2 margin (chosen - mean rejected reward)")
                    .x("step")
                    .y("margin"),
                names(&["APO (Plackett-Luce)", "pairwise"]),
                vec![
                    series(&apo, &|x| x.margin.map(|v| v.max(0.0))),
                    series(&pw, &|x| x.margin.map(|v| v.max(0.0))),
                ],
            ),
            (
                "curves_accuracy.png",
                Titles::new("Stage 2 top-1 and pairwise accuracy")
                    .x("step")
                    .y("accuracy"),
                names(&[
                    "APO top-1",
                    "APO pairwise",
                    "pairwise top-1",
                    "pairwise pairwise",
                ]),
                vec![
                    series(&apo, &|x| x.top1_accuracy),
                    series(&apo, &|x| x.pairwise_accuracy),
                    series(&pw, &|x| x.top1_accuracy),
                    series(&pw, &|x| x.pairwise_accuracy),
                ],
            ),
        ];
        let mut files = Vec::new();
        for (file, title, names, data) in plots {
            let path = dir.join(file);
            drawn(plot::lines(title, "step", &names, &data, &path))?;
            files.push(path);
        }
        let rows: Vec<String> = table.rows.iter().map(|r| r.name.clone()).collect();
        let categories: Vec<String> = table.columns().into_iter().chain(["mean".into()]).collect();
        let bars = [
            (
                "balanced_accuracy.png",
                "Balanced accuracy on the test split (Table 1 findings and their mean)",
                "balanced accuracy",
                table
                    .rows
                    .iter()
                    .map(|r| {
                        let per = table.balanced_per_finding(r).into_iter();
                        per.chain([r.scores.summary.balanced_accuracy])
                            .map(|v| v.unwrap_or(0.0))
                            .collect()
                    })
                    .collect::<Vec<Vec<f64>>>(),
            ),
            (
                "accuracy.png",
                "Accuracy on the test split (Table 1 findings and their mean)",
                "accuracy",
                table
                    .rows
                    .iter()
                    .map(|r| {
                        let per = table.per_finding(r).into_iter().map(|v| v.unwrap_or(0.0));
                        per.chain([r.accuracy.mean]).collect()
                    })
                    .collect(),
            ),
        ];
        for (file, title, axis, values) in bars {
            let path = dir.join(file);
            drawn(plot::bars(
                Titles::new(title).x(axis),
                &categories,
                &rows,
                &values,
                &path,
            ))?;
            files.push(path);
        }
        Ok(files)
    }
}

/// The drift report's three plots in `dir`: the teacher × finding disagreement heatmap, the
/// instantaneous drift by sentence step and the change points along the stream.
///
/// # Errors
/// Drawing and file errors, as text.
pub fn drift_plots(report: &DriftReport, dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let findings: Vec<String> = Finding::ALL
        .iter()
        .map(|f| f.column_name().to_owned())
        .collect();
    let heat = dir.join("disagreement_heatmap.png");
    plot::heatmap(
        Titles::new("Disagreement with the consensus (teacher x finding)")
            .x("finding")
            .y("teacher"),
        &report.teachers,
        &findings,
        &report.disagreement,
        &heat,
    )?;
    let steps = dir.join("step_drift.png");
    plot::lines(
        Titles::new("Instantaneous drift JS(P_uj || mean) by sentence step").y("JS divergence"),
        "sentence step j",
        &report.teachers,
        &report.steps.instantaneous_js,
        &steps,
    )?;
    let cp = dir.join("change_points.png");
    let names: Vec<String> = report
        .streams
        .iter()
        .map(|s| format!("{} / {}", s.teacher, s.finding))
        .collect();
    let changes: Vec<Vec<usize>> = report.streams.iter().map(|s| s.changes.clone()).collect();
    let expected: Vec<Vec<usize>> = report.streams.iter().map(|s| s.expected.clone()).collect();
    plot::events(
        "Change points of agreement with the consensus",
        &names,
        &changes,
        &expected,
        report.items,
        &cp,
    )?;
    Ok(vec![heat, steps, cp])
}

/// `apo run`: the pipeline on a backend.
#[derive(Debug)]
pub struct RunJob<'a> {
    /// The options.
    pub options: &'a PipelineOptions,
    /// Progress and plots.
    pub observer: &'a mut CliObserver,
}

impl WithBackend for RunJob<'_> {
    type Out = PipelineResult;
    type Error = PipelineError;

    fn run<B: TrainBackend>(self, device: B::Device) -> Result<PipelineResult, PipelineError> {
        apo_pipeline::run::<B>(self.options, &device, self.observer)
    }
}

/// `apo demo`: simulation and pipeline on a backend.
#[derive(Debug)]
pub struct DemoJob<'a> {
    /// The options.
    pub options: &'a DemoOptions,
    /// Progress and plots.
    pub observer: &'a mut CliObserver,
}

impl WithBackend for DemoJob<'_> {
    type Out = PipelineResult;
    type Error = PipelineError;

    fn run<B: TrainBackend>(self, device: B::Device) -> Result<PipelineResult, PipelineError> {
        apo_pipeline::demo::run::<B>(self.options, &device, self.observer)
    }
}

/// The end of `apo demo` and `apo run`: one JSON object, or the Table 1 analogue
/// (`OUT/table.txt`) with the comparisons, the time and the report's path.
///
/// # Errors
/// Reading `OUT/table.txt`.
pub fn print_result(result: &PipelineResult, out: &Path, json: bool) -> Result<(), String> {
    if json {
        let v = serde_json::json!({
            "rows": result.rows,
            "comparisons": result.comparisons,
            "mean_accuracy": result.mean_accuracy,
            "per_finding": result.per_finding,
            "test_images": result.test_images,
            "eval_split": result.eval_split,
            "counterfactuals": result.counterfactuals,
            "seconds": result.seconds,
        });
        println!("{v}");
        return Ok(());
    }
    let table = std::fs::read_to_string(out.join("table.txt"))
        .map_err(|e| format!("{}: {e}", out.join("table.txt").display()))?;
    println!(
        "\nOn the {} split ({} images):\n{table}",
        result.eval_split, result.test_images
    );
    if let Some(cf) = &result.counterfactuals {
        let per: Vec<String> = cf
            .findings
            .iter()
            .map(|c| format!("{} {:.2}", c.finding, c.flip_rate))
            .collect();
        println!(
            "Counterfactual renders ({} images, one finding toggled): the APO student's statement \
             flips on {:.1} % ({}).\n",
            cf.images,
            100.0 * cf.flip_rate,
            per.join(", ")
        );
    }
    let mut versus: Vec<&str> = Vec::new();
    for c in &result.comparisons {
        if !versus.contains(&c.versus.as_str()) {
            versus.push(&c.versus);
        }
    }
    if !versus.is_empty() {
        println!("APO student minus each row, 95% CI of a paired bootstrap over test images:");
    }
    for v in versus {
        let cells: Vec<String> = result
            .comparisons
            .iter()
            .filter(|c| c.versus == v)
            .map(|c| {
                let d = &c.difference;
                format!(
                    "{} {:+.4} [{:+.4}, {:+.4}]",
                    c.metric.label(),
                    d.difference,
                    d.ci95[0],
                    d.ci95[1]
                )
            })
            .collect();
        println!("  vs {v:<24} {}", cells.join("  "));
    }
    println!(
        "{:.0} s; report in {}",
        result.seconds,
        out.join("report.md").display()
    );
    Ok(())
}
