//! The whole pipeline on one data set: validate → drift report → consensus and preference
//! sets → stage 1 → stage 2 (Plackett-Luce, and pairwise-sigmoid as the baseline) →
//! evaluation on the test split, with `report.md`, `results.json` and `table.txt`.
//!
//! The data set is opened and every trajectory labelled once; later stages take what the
//! earlier ones produced. Every stage is recorded in `OUT/stages/` ([`crate::stages`]), so a
//! rerun with [`PipelineOptions::resume`] continues at the first unfinished stage.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use apo_consensus::{Method, NegativePolicy};
use apo_loss::{LossConfig, Objective};
use apo_train::RunConfig;
use apo_train::TrainBackend;
use apo_train::data::Preferences;
use apo_train::eval::{EvalReport, Generation};
use apo_train::margin::MarginBreakdown;
use apo_train::train::{StageReport, StepMetrics};
use cxr_max::Finding;
use cxr_max::dataset::Item;
use cxr_max::tables::Split;
use serde::{Deserialize, Serialize};

use crate::config::PipelineOptions;
use crate::consensus::{self, BuildOptions};
use crate::counterfactual::{self, COUNTERFACTUAL_IMAGES, CounterfactualReport};
use crate::drift::{DriftOptions, DriftReport, expected_drift};
use crate::error::{PipelineError, Result};
use crate::io::{write_atomic, write_json};
use crate::labels::{Labelled, Weights, label_consensus};
use crate::stages::{StageCache, data_key, json, key};
use crate::table::{
    ALL_ABSENT, BOOTSTRAP_RESAMPLES, CONSENSUS, Comparison, MAJORITY_VOTE, RowKind, RowSummary,
    Table, concept_row, inconsistency, render_comparisons, shuffled_row, student_row,
};

/// What a caller of [`run`] sees of it: progress, and the chance to draw plots from the typed
/// results. Every method has a default that does nothing.
pub trait Observer {
    /// A line of progress ("stage 1: supervised bootstrapping").
    fn message(&mut self, _line: &str) {}

    /// After every optimiser step of a training stage.
    fn step(&mut self, _total: usize, _metrics: &StepMetrics) {}

    /// The drift report has been computed and written to `dir/drift.json`; returns the files
    /// drawn from it (plots), which are listed in the results.
    ///
    /// # Errors
    /// Whatever drawing fails with, as [`PipelineError::Observer`].
    fn drift_report(&mut self, _report: &DriftReport, _dir: &Path) -> Result<Vec<PathBuf>> {
        Ok(Vec::new())
    }

    /// The evaluation is done; returns the files drawn from the results (plots) in `dir`,
    /// before `report.md` and `results.json` are written.
    ///
    /// # Errors
    /// Whatever drawing fails with, as [`PipelineError::Observer`].
    fn results(
        &mut self,
        _result: &PipelineResult,
        _table: &Table,
        _dir: &Path,
    ) -> Result<Vec<PathBuf>> {
        Ok(Vec::new())
    }
}

/// An observer that shows nothing and draws nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Observer for Quiet {}

/// Forwards a training stage's steps to the pipeline's observer.
struct Steps<'a>(&'a mut dyn Observer);

impl apo_train::train::Observer for Steps<'_> {
    fn step(&mut self, total: usize, metrics: &StepMetrics) {
        self.0.step(total, metrics);
    }
}

/// What later stages keep of the drift report.
#[derive(Serialize, Deserialize)]
struct DriftDone {
    change_points: usize,
    files: Vec<PathBuf>,
}

/// What later stages keep of the consensus build.
#[derive(Serialize, Deserialize)]
struct ConsensusDone {
    sets: usize,
    skipped: usize,
    negatives_mean: f64,
}

/// Mean accuracies (over the Table 1 findings) of every row of the table.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MeanAccuracy {
    /// Per teacher.
    pub teachers: BTreeMap<String, f64>,
    /// Majority vote of the teachers.
    pub majority_vote: f64,
    /// The Dawid-Skene consensus labels.
    pub consensus: f64,
    /// Every finding stated absent on every image (the image-blind baseline).
    pub all_absent: f64,
    /// The stage-1 student.
    pub sft: f64,
    /// The pairwise-sigmoid (DPO over each negative) student.
    pub pairwise: f64,
    /// The Plackett-Luce (APO) student.
    pub apo: f64,
    /// The stage-2 variants' students, by variant name.
    pub variants: BTreeMap<String, f64>,
}

/// The pipeline's result (`results.json`).
#[derive(Debug, Clone, Serialize)]
pub struct PipelineResult {
    /// Mean accuracy per row.
    pub mean_accuracy: MeanAccuracy,
    /// Per row, per finding accuracy (column names), on the test split.
    pub per_finding: BTreeMap<String, BTreeMap<String, Option<f64>>>,
    /// Every row of the table with its kind and scores.
    pub rows: Vec<RowSummary>,
    /// The findings averaged.
    pub evaluated: Vec<String>,
    /// The split the rows are scored on (`test`, or `validate` while settings are chosen).
    pub eval_split: String,
    /// Images scored (of `eval_split`).
    pub test_images: usize,
    /// Training images.
    pub train_images: usize,
    /// Preference sets used in stage 2.
    pub preference_sets: usize,
    /// Stage reports.
    pub stages: Vec<StageReport>,
    /// The APO student against every other row on balanced accuracy, macro-F1 and accuracy
    /// (over the Table 1 findings), with paired-bootstrap intervals over the test images.
    pub comparisons: Vec<Comparison>,
    /// The APO student on counterfactual renders (one finding toggled), when the data set
    /// has them (`apo synth --counterfactuals`; the demo simulates them).
    pub counterfactuals: Option<CounterfactualReport>,
    /// Per stage-2 student (`apo`, `pairwise`, the variants): its reward margin over the
    /// stage-1 reference on the scored split's preference sets (at most [`MARGIN_GROUPS`]),
    /// split into the tokens of finding sentences and the rest ([`apo_train::margin`]).
    /// Empty for a Hugging Face student.
    pub margins: BTreeMap<String, MarginBreakdown>,
    /// The students and the teachers scored on the generalisation data set, when the run
    /// has one ([`PipelineOptions::generalisation`]).
    pub generalisation: Option<Generalisation>,
    /// Seconds per phase.
    pub phases: BTreeMap<String, f64>,
    /// Total seconds.
    pub seconds: f64,
    /// Files written.
    pub files: Vec<PathBuf>,
}

/// The trained students, and the teachers, on a data set none of them was trained or tuned
/// on (the paper's generalisation check; the demo simulates it with shifted teacher drift and
/// twice the share of subtle images).
#[derive(Debug, Clone, Serialize)]
pub struct Generalisation {
    /// The data set folder.
    pub data: PathBuf,
    /// The split scored (the run's `eval_split`).
    pub eval_split: String,
    /// Images scored.
    pub images: usize,
    /// Every row: the teachers, the majority vote, the Dawid-Skene consensus fitted on this
    /// data set, the floors, and every student of the run.
    pub rows: Vec<RowSummary>,
    /// The APO student against every other row, paired over these images.
    pub comparisons: Vec<Comparison>,
    /// Files written (`OUT/generalisation/samples-STAGE.jsonl`).
    pub files: Vec<PathBuf>,
}

/// The evaluation recorded as stage `name` under `key`, or `eval`'s, recorded.
fn cached(
    stages: &StageCache,
    name: &str,
    key: &str,
    eval: impl FnOnce() -> Result<EvalReport>,
) -> Result<EvalReport> {
    if let Some(r) = stages.done::<EvalReport>(name, key) {
        return Ok(r);
    }
    stages.start(name, key)?;
    let r = eval()?;
    stages.finish(name, key, &r)?;
    Ok(r)
}

/// Adds `stage`'s student to `table` from its evaluation (its row, its texts'
/// inconsistency, and for the APO student its concept head written as a template: an
/// engineering reference next to the student's own text); false when the report has no
/// scores.
fn push_student(table: &mut Table, stage: &str, report: &EvalReport) -> bool {
    if report.accuracy.is_none() {
        return false;
    }
    let row = student_row(stage);
    let (predictions, confidence) = table.test.read(report);
    table.push(row.clone(), RowKind::Student, predictions, confidence);
    table.set_inconsistent(
        &row,
        inconsistency(report.samples.iter().map(|s| s.text.as_str())),
    );
    if stage == "apo"
        && let Some((predictions, confidence)) = table.test.concept_calls(report, 0.5)
    {
        table.push(
            concept_row(stage),
            RowKind::Baseline,
            predictions,
            Some(confidence),
        );
    }
    true
}

/// What a scoring pass outside the main evaluation needs of the run.
struct Scope<'a> {
    options: &'a PipelineOptions,
    config: &'a RunConfig,
    stages: &'a StageCache,
    train_keys: &'a BTreeMap<String, String>,
    decoding: &'a str,
    evaluated: &'a [Finding],
}

/// Scores every student of the run, and the teachers, on the `eval_split` of the data set
/// `dir`; each student's evaluation is cached under its training key and the data set's.
fn generalise<B: TrainBackend>(
    scope: &Scope<'_>,
    dir: &Path,
    device: &B::Device,
    observer: &mut dyn Observer,
) -> Result<(Generalisation, Table)> {
    let options = scope.options;
    let (dataset, check) = options.train.data.source().open(dir)?;
    observer.message(&format!(
        "generalisation data {}: {} records read, {} kept, {} problems",
        dir.display(),
        check.records.read,
        check.records.kept,
        check.problems.len()
    ));
    let items = &dataset.items;
    let split = options.eval_split;
    let scored: Vec<Item> = items
        .iter()
        .filter(|i| i.split == Some(split))
        .cloned()
        .collect();
    if scored.is_empty() {
        return Err(PipelineError::Empty {
            dir: dir.to_path_buf(),
            split: Some(split.name().to_owned()),
        });
    }
    let labelled = Labelled::read(items);
    let majority = crate::drift::majority(items, &labelled)?;
    let mut table = teacher_table(items, &labelled, &majority, scope.evaluated, split)?;
    let data_key = data_key(dir)?;
    let folder = options.out.join("generalisation");
    std::fs::create_dir_all(&folder).map_err(PipelineError::io(&folder))?;
    let mut files = Vec::new();
    let students = ["sft", "pairwise", "apo"]
        .into_iter()
        .map(str::to_owned)
        .chain(options.variants.iter().map(|v| v.name.clone()));
    for stage in students {
        let name = format!("generalisation-eval-{stage}");
        let k = key(&[
            &name,
            EVAL_VERSION,
            &scope.train_keys[&stage],
            scope.decoding,
            &data_key,
            split.name(),
        ]);
        let report = cached(scope.stages, &name, &k, || {
            evaluate::<B>(scope.config, &stage, &scored, scope.evaluated, device)
        })?;
        let samples = folder.join(format!("samples-{stage}.jsonl"));
        write_samples(&samples, &report)?;
        files.push(samples);
        push_student(&mut table, &stage, &report);
    }
    let g = Generalisation {
        data: dir.to_path_buf(),
        eval_split: split.name().to_owned(),
        images: scored.len(),
        rows: table.summaries(),
        comparisons: table.comparisons(scope.config.run.seed),
        files,
    };
    let ba = |r: &crate::table::Row| {
        r.scores
            .summary
            .balanced_accuracy
            .map_or("-".to_owned(), |b| format!("{b:.3}"))
    };
    if let Some(apo) = table.row(&student_row("apo")) {
        observer.message(&format!(
            "generalisation: APO student balanced accuracy {} on {} images (best teacher {})",
            ba(apo),
            g.images,
            table
                .best_teacher()
                .map_or("-".to_owned(), |t| format!("{} {}", t.name, ba(t)))
        ));
    }
    Ok((g, table))
}

/// The stage-2 runs of the pipeline: the APO student and the pairwise baseline.
pub const STAGE2: [(&str, Objective); 2] = [
    ("apo", Objective::PlackettLuce),
    ("pairwise", Objective::PairwiseSigmoid),
];

/// Runs every stage on backend `B` and writes the report.
///
/// # Errors
/// Any stage's error.
pub fn run<B: TrainBackend>(
    options: &PipelineOptions,
    device: &B::Device,
    observer: &mut dyn Observer,
) -> Result<PipelineResult> {
    let start = Instant::now();
    let mut phases = BTreeMap::new();
    let mut files = Vec::new();
    let out = &options.out;
    std::fs::create_dir_all(out).map_err(PipelineError::io(out))?;
    let mut phase = |name: &str, t: Instant| {
        phases.insert(name.to_owned(), t.elapsed().as_secs_f64());
    };

    // Validate, and read every trajectory once.
    let t = Instant::now();
    let (dataset, check) = options.train.data.source().open(&options.data)?;
    observer.message(&format!(
        "validate: {} records read, {} kept, {} problems",
        check.records.read,
        check.records.kept,
        check.problems.len()
    ));
    let check_path = out.join("data-check.json");
    write_json(&check_path, &check)?;
    files.push(check_path);
    let items = &dataset.items;
    if items.is_empty() {
        return Err(PipelineError::Empty {
            dir: options.data.clone(),
            split: None,
        });
    }
    let labelled = Labelled::read(items);
    let majority = crate::drift::majority(items, &labelled)?;
    phase("validate", t);

    let stages = StageCache::new(out.join("stages"), options.resume);
    let data_key = data_key(&options.data)?;

    // Drift report.
    let t = Instant::now();
    let drift_key = key(&["drift", &data_key]);
    let drift = match stages.done::<DriftDone>("drift", &drift_key) {
        Some(d) => {
            observer.message("drift report: done before");
            d
        }
        None => {
            stages.start("drift", &drift_key)?;
            let drift_options = DriftOptions {
                expected: expected_drift(&options.data),
                ..DriftOptions::new()?
            };
            let mut report = DriftReport::compute(items, &labelled, &majority, &drift_options)?;
            report.problems = check.problems.len();
            let dir = out.join("drift");
            report.files = observer.drift_report(&report, &dir)?;
            let json_path = dir.join("drift.json");
            report.files.push(json_path.clone());
            report.write_json(&json_path)?;
            let d = DriftDone {
                change_points: report.change_points.len(),
                files: report.files,
            };
            stages.finish("drift", &drift_key, &d)?;
            d
        }
    };
    observer.message(&format!(
        "drift report: {} change points",
        drift.change_points
    ));
    files.extend(drift.files.iter().cloned());
    phase("drift", t);

    // Consensus and preference sets (train split).
    let t = Instant::now();
    let prefs = out.join("prefs.jsonl");
    // The labels (and so stage 1, whose concept targets they are) do not depend on how the
    // positives are written; stage 2 does.
    let labels_key_of = |negatives: NegativePolicy| {
        key(&[
            "consensus",
            &data_key,
            options.method.name(),
            &negatives.to_string(),
            &options.negative_weights.to_string(),
        ])
    };
    let consensus_key_of = |negatives| {
        key(&[
            &labels_key_of(negatives),
            "positive",
            options.positive.name(),
        ])
    };
    let labels_key = labels_key_of(options.negatives);
    let consensus_key = consensus_key_of(options.negatives);
    let build_split = |name: &str,
                       key: &str,
                       policy: NegativePolicy,
                       path: &Path,
                       split: Split|
     -> Result<ConsensusDone> {
        if let Some(d) = stages
            .done::<ConsensusDone>(name, key)
            .filter(|_| path.is_file())
        {
            return Ok(d);
        }
        stages.start(name, key)?;
        let mut build = BuildOptions::new(options.data.clone(), path.to_path_buf());
        build.split = Some(split);
        build.method = options.method;
        build.preference.negatives = policy;
        build.preference.weighting = options.negative_weights;
        build.claims.style = options.positive;
        let s = consensus::BuildSummary {
            records: check.records.clone(),
            ..consensus::build_on(items, &labelled, &build)?
        };
        let d = ConsensusDone {
            sets: s.consensus_found,
            skipped: s.skipped.values().sum(),
            negatives_mean: s.negatives_mean,
        };
        stages.finish(name, key, &d)?;
        Ok(d)
    };
    let build = |name: &str, key: &str, policy: NegativePolicy, path: &Path| {
        build_split(name, key, policy, path, Split::Train)
    };
    let summary = build("consensus", &consensus_key, options.negatives, &prefs)?;
    observer.message(&format!(
        "consensus: {} preference sets ({} skipped), {:.2} negatives each",
        summary.sets, summary.skipped, summary.negatives_mean
    ));
    files.push(prefs.clone());
    let evaluated = Finding::TABLE1.to_vec();
    let mut table = teacher_table(items, &labelled, &majority, &evaluated, options.eval_split)?;
    // Read once, for stage 1's concept targets and for both stage-2 runs.
    let preferences = Preferences::read(&prefs)?;
    phase("consensus", t);
    let split = |s: Split| -> Vec<Item> {
        items
            .iter()
            .filter(|i| i.split == Some(s))
            .cloned()
            .collect()
    };
    let train_items = split(Split::Train);

    // Training.
    let mut config = options.train.clone();
    config.data.dir = options.data.clone();
    config.data.preferences = Some(prefs);
    config.data.split = Some("train".into());
    config.run.out = out.join("train");
    let mut reports: Vec<StageReport> = Vec::new();
    let t = Instant::now();
    observer.message("stage 1: supervised bootstrapping");
    let mut sft_only = config.clone();
    sft_only.apo = Default::default();
    let sft_key = key(&["sft", &labels_key, &json(&sft_only)]);
    let mut train_keys = BTreeMap::new();
    // Each stage-2 student's β, for its margin breakdown.
    let mut betas: BTreeMap<String, f64> = BTreeMap::new();
    train_keys.insert("sft".to_owned(), sft_key.clone());
    let data = StageData {
        items: &train_items,
        preferences: &preferences,
    };
    reports.push(train_stage::<B>(
        &stages, "sft", &sft_key, &config, None, &data, device, observer,
    )?);
    phase("sft", t);
    for (name, objective) in STAGE2 {
        let t = Instant::now();
        observer.message(&format!("stage 2: {name} ({objective})"));
        let mut c = config.clone();
        if objective == Objective::PairwiseSigmoid
            && let Some(apo) = &options.pairwise
        {
            c.apo = apo.clone();
        }
        c.apo.loss = LossConfig {
            objective,
            ..c.apo.loss.clone()
        };
        let k = key(&[name, &sft_key, &consensus_key, &json(&c.apo)]);
        train_keys.insert(name.to_owned(), k.clone());
        betas.insert(name.to_owned(), c.apo.loss.beta);
        reports.push(train_stage::<B>(
            &stages,
            name,
            &k,
            &c,
            Some(name),
            &data,
            device,
            observer,
        )?);
        phase(name, t);
    }

    // Stage-2 variants (an ablation), each from the same stage-1 student; a variant with its
    // own negatives gets its own preference sets, `OUT/prefs-NAME.jsonl`.
    for v in &options.variants {
        let t = Instant::now();
        observer.message(&format!(
            "stage 2 variant: {} ({})",
            v.name,
            v.apo.loss.objective.name()
        ));
        let mut c = config.clone();
        c.apo = v.apo.clone();
        let (own, v_consensus_key) = match v.negatives.filter(|&n| n != options.negatives) {
            Some(policy) => {
                let path = out.join(format!("prefs-{}.jsonl", v.name));
                let k = consensus_key_of(policy);
                let d = build(&format!("consensus-{}", v.name), &k, policy, &path)?;
                observer.message(&format!(
                    "  {}: {} preference sets ({} skipped), {:.2} negatives ({policy}) each",
                    v.name, d.sets, d.skipped, d.negatives_mean
                ));
                c.data.preferences = Some(path.clone());
                files.push(path.clone());
                (Some(Preferences::read(&path)?), k)
            }
            None => (None, consensus_key.clone()),
        };
        let k = key(&[&v.name, &sft_key, &v_consensus_key, &json(&c.apo)]);
        train_keys.insert(v.name.clone(), k.clone());
        betas.insert(v.name.clone(), c.apo.loss.beta);
        let data = StageData {
            items: &train_items,
            preferences: own.as_ref().unwrap_or(&preferences),
        };
        reports.push(train_stage::<B>(
            &stages,
            &v.name,
            &k,
            &c,
            Some(&v.name),
            &data,
            device,
            observer,
        )?);
        phase(&v.name, t);
    }

    // Evaluation on the test split (or the validate split while settings are chosen).
    let t = Instant::now();
    let test_items = split(options.eval_split);
    let eval_split = options.eval_split.name();
    let decoding = json(&(config.run.max_new_tokens, config.run.temperature));
    // One evaluation of `stage`'s student on `items`, cached as stage `name` under the
    // student's training key, the decoding and the split.
    let cached_eval = |name: &str, stage: &str, items: &[Item]| -> Result<EvalReport> {
        let k = key(&[
            name,
            EVAL_VERSION,
            &train_keys[stage],
            &decoding,
            eval_split,
        ]);
        cached(&stages, name, &k, || {
            evaluate::<B>(&config, stage, items, &evaluated, device)
        })
    };
    let mut test_images = 0;
    let mut apo_report = None;
    for stage in ["sft", "pairwise", "apo"] {
        let report = cached_eval(&format!("eval-{stage}"), stage, &test_items)?;
        let samples = out.join(format!("samples-{stage}.jsonl"));
        write_samples(&samples, &report)?;
        files.push(samples);
        push_student(&mut table, stage, &report);
        test_images = report.images;
        if stage == "apo" {
            apo_report = Some(report);
        }
    }
    let mut variants = BTreeMap::new();
    for v in &options.variants {
        let report = cached_eval(&format!("eval-{}", v.name), &v.name, &test_items)?;
        let samples = out.join(format!("samples-{}.jsonl", v.name));
        write_samples(&samples, &report)?;
        files.push(samples);
        if push_student(&mut table, &v.name, &report) {
            variants.insert(v.name.clone(), table.mean(&student_row(&v.name)));
        }
    }
    // Where the preference is won: each stage-2 student's reward margin over the stage-1
    // reference on preference sets of the scored split, split into finding and layout tokens.
    let mut margins = BTreeMap::new();
    if config.student.hf.is_none() {
        let path = out.join(format!("prefs-{eval_split}.jsonl"));
        let held_key = key(&[&consensus_key, eval_split]);
        let held = build_split(
            "consensus-eval",
            &held_key,
            options.negatives,
            &path,
            options.eval_split,
        )?;
        if held.sets > 0 {
            files.push(path.clone());
            let sets = Preferences::read(&path)?;
            for (name, &beta) in &betas {
                let marker = format!("margins-{name}");
                let k = key(&[&marker, MARGIN_VERSION, &train_keys[name], &held_key]);
                let b = match stages.done::<MarginBreakdown>(&marker, &k) {
                    Some(b) => b,
                    None => {
                        stages.start(&marker, &k)?;
                        let b = apo_train::margin::margin_breakdown_dirs::<B::InnerBackend>(
                            &config.run.out.join(name),
                            &config.run.out.join("sft"),
                            &config.run.out.join("tokenizer.json"),
                            &sets,
                            &test_items,
                            config.data.truncate,
                            beta,
                            MARGIN_GROUPS,
                            &crate::labels::finding_spans,
                            device,
                        )?;
                        stages.finish(&marker, &k, &b)?;
                        b
                    }
                };
                margins.insert(name.clone(), b);
            }
        }
    }
    // Counterfactual renders, when the data set has them: does the APO student's statement
    // of a finding follow the finding in the image?
    let manifest = options.data.join(cxr_max::sim::files::COUNTERFACTUALS);
    let counterfactuals = match (&apo_report, manifest.exists()) {
        (Some(original), true) => {
            let renders = cxr_max::sim::read_counterfactuals(&options.data)?;
            let (cf_items, what) =
                counterfactual::items(&options.data, &test_items, &renders, COUNTERFACTUAL_IMAGES);
            if cf_items.is_empty() {
                None
            } else {
                let r = cached_eval("eval-apo-counterfactuals", "apo", &cf_items)?;
                let report = counterfactual::report("apo", &test_items, original, &r, &what);
                observer.message(&format!(
                    "counterfactuals: the APO student's statement flips on {:.1} % of {} renders \
                     (follows the render on {:.1} %)",
                    100.0 * report.flip_rate,
                    r.samples.len(),
                    100.0 * report.follow_rate
                ));
                Some(report)
            }
        }
        _ => None,
    };
    // The image-shuffled floor: the APO student's text for each test image generated from
    // another test image with the same prompt. A student that scores as well with the wrong
    // image does not read the image.
    let (shuffled_items, sources) = shuffle_images(&test_items, config.run.seed);
    let report = cached_eval("eval-apo-shuffled", "apo", &shuffled_items)?;
    let samples = out.join("samples-apo-shuffled.jsonl");
    write_shuffled_samples(&samples, &report, &sources)?;
    files.push(samples);
    if report.accuracy.is_some() {
        let (predictions, confidence) = table.test.read(&report);
        table.push(
            shuffled_row("apo"),
            RowKind::Baseline,
            predictions,
            confidence,
        );
    }
    phase("eval", t);

    // Generalisation: the trained students, and the teachers, on another data set (e.g.
    // simulated with shifted teacher drift and another difficulty mix); nothing trains on it.
    let generalisation = match &options.generalisation {
        Some(dir) => {
            let t = Instant::now();
            let scope = Scope {
                options,
                config: &config,
                stages: &stages,
                train_keys: &train_keys,
                decoding: &decoding,
                evaluated: &evaluated,
            };
            let (g, gen_table) = generalise::<B>(&scope, dir, device, observer)?;
            files.extend(g.files.iter().cloned());
            phase("generalisation", t);
            Some((g, gen_table))
        }
        None => None,
    };

    let teachers: BTreeMap<String, f64> = table
        .of_kind(RowKind::Teacher)
        .map(|r| (r.name.clone(), r.accuracy.mean))
        .collect();
    let mut result = PipelineResult {
        mean_accuracy: MeanAccuracy {
            teachers,
            majority_vote: table.mean(MAJORITY_VOTE),
            consensus: table.mean(CONSENSUS),
            all_absent: table.mean(ALL_ABSENT),
            sft: table.mean(&student_row("sft")),
            pairwise: table.mean(&student_row("pairwise")),
            apo: table.mean(&student_row("apo")),
            variants,
        },
        per_finding: table
            .rows
            .iter()
            .map(|r| {
                let per = table.columns().into_iter().zip(table.per_finding(r));
                (r.name.clone(), per.collect())
            })
            .collect(),
        rows: table.summaries(),
        evaluated: table.columns(),
        eval_split: eval_split.to_owned(),
        test_images,
        train_images: train_items.len(),
        preference_sets: reports.get(1).map_or(0, |s| s.groups),
        stages: reports,
        comparisons: table.comparisons(config.run.seed),
        counterfactuals,
        margins,
        generalisation: generalisation.as_ref().map(|(g, _)| g.clone()),
        phases,
        seconds: 0.0,
        files,
    };
    let drawn = observer.results(&result, &table, out)?;
    result.files.extend(drawn);
    let report = out.join("report.md");
    let gen_table = generalisation.as_ref().map(|(_, t)| t);
    std::fs::write(&report, render_report(&result, &table, gen_table, out))
        .map_err(PipelineError::io(&report))?;
    result.files.push(report);
    let text = out.join("table.txt");
    std::fs::write(&text, table.render_text()).map_err(PipelineError::io(&text))?;
    result.files.push(text);
    result.seconds = start.elapsed().as_secs_f64();
    let json_path = out.join("results.json");
    result.files.push(json_path.clone());
    write_json(&json_path, &result)?;
    Ok(result)
}

/// The teachers' rows: the teachers, the majority vote, the Dawid-Skene consensus (fitted on
/// every image) and the all-absent baseline, scored on the test split.
fn teacher_table(
    items: &[Item],
    labelled: &Labelled,
    majority: &crate::labels::LabelConsensus,
    evaluated: &[Finding],
    split: Split,
) -> Result<Table> {
    let all: Vec<&Item> = items.iter().collect();
    let ds = label_consensus(
        &all,
        &labelled.finals,
        &labelled.teachers,
        Method::DawidSkene,
        &Weights::Reliability,
        2,
    )?;
    Ok(Table::teachers(
        items, labelled, majority, &ds, evaluated, split,
    ))
}

/// What the training stages read: the train split's items and the preference sets.
struct StageData<'a> {
    items: &'a [Item],
    preferences: &'a Preferences,
}

/// Runs a training stage unless its marker matches; continues it from its newest checkpoint
/// when it was started with the same key. A fresh stage 1 retrains the tokenizer (unless the
/// configuration names a file). `apo` is the stage-2 folder name, `None` for stage 1.
#[allow(clippy::too_many_arguments)]
fn train_stage<B: TrainBackend>(
    stages: &StageCache,
    name: &str,
    key: &str,
    config: &RunConfig,
    apo: Option<&str>,
    data: &StageData<'_>,
    device: &B::Device,
    observer: &mut dyn Observer,
) -> Result<StageReport> {
    if let Some(r) = stages.done::<StageReport>(name, key).filter(|r| {
        r.model_dir.join("model.bin").is_file() || r.model_dir.join("adapter_config.json").is_file()
    }) {
        observer.message(&format!("  {name}: done before ({} steps)", r.steps));
        return Ok(r);
    }
    let resume = stages.start(name, key)?;
    if resume {
        observer.message(&format!("  {name}: continuing from its newest checkpoint"));
    }
    if apo.is_none() && !resume {
        let tok = config.run.out.join("tokenizer.json");
        if tok.exists() {
            std::fs::remove_file(&tok).map_err(PipelineError::io(&tok))?;
        }
    }
    let mut steps = Steps(observer);
    let (items, prefs) = (data.items, data.preferences);
    let hf = config.student.hf.is_some();
    let report = match (apo, hf) {
        (None, false) => {
            apo_train::train::sft_on::<B>(config, items, Some(prefs), device, resume, &mut steps)?
        }
        (Some(folder), false) => {
            apo_train::train::apo_on::<B>(config, folder, items, prefs, device, resume, &mut steps)?
        }
        (None, true) => apo_train::hf::sft_on::<B>(config, items, device, resume, &mut steps)?,
        (Some(folder), true) => {
            apo_train::hf::apo_on::<B>(config, folder, items, prefs, device, resume, &mut steps)?
        }
    };
    stages.finish(name, key, &report)?;
    Ok(report)
}

/// Preference sets of the scored split in each margin breakdown.
pub const MARGIN_GROUPS: usize = 256;

/// Part of every margin breakdown's stage key: bumped when what it computes changes.
const MARGIN_VERSION: &str = "margins-1";

/// Part of every evaluation's stage key: bumped when what an evaluation records changes
/// (the concept-head probabilities behind AUROC).
const EVAL_VERSION: &str = "eval-2";

/// The test items with their images shuffled: within each group of items sharing a prompt,
/// item `k` gets the image of item `π(k)` for a seeded cyclic permutation π (Sattolo's
/// algorithm: no item keeps its own image in a group of two or more; a group of one keeps
/// it). Returns the items and, per item, the DICOM id of the image it now carries.
pub fn shuffle_images(items: &[Item], seed: u64) -> (Vec<Item>, Vec<String>) {
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (k, item) in items.iter().enumerate() {
        let prompt = item
            .sample
            .prompt
            .as_deref()
            .unwrap_or(cxr_max::sim::PROMPT);
        groups.entry(prompt).or_default().push(k);
    }
    let mut rng = cxr_max::rng::Rng::new(seed ^ 0x5348_5546_464c_4544);
    let mut source: Vec<usize> = (0..items.len()).collect();
    for members in groups.values() {
        let mut perm = members.clone();
        for i in (1..perm.len()).rev() {
            let j = rng.below(i);
            perm.swap(i, j);
        }
        for (&k, &from) in members.iter().zip(&perm) {
            source[k] = from;
        }
    }
    let shuffled = items
        .iter()
        .zip(&source)
        .map(|(item, &from)| Item {
            image: items[from].image.clone(),
            ..item.clone()
        })
        .collect();
    let ids = source
        .iter()
        .map(|&from| items[from].sample.dicom_id.clone())
        .collect();
    (shuffled, ids)
}

/// Writes the image-shuffled evaluation's samples as JSON Lines (`{"id", "text", "image"}`:
/// the test image scored, the text, the image it was generated from), atomically.
///
/// # Errors
/// [`PipelineError::Io`].
pub fn write_shuffled_samples(path: &Path, report: &EvalReport, sources: &[String]) -> Result<()> {
    write_atomic(path, |w| {
        for (s, image) in report.samples.iter().zip(sources) {
            let line = serde_json::json!({ "id": s.id, "text": s.text, "image": image });
            writeln!(w, "{line}")?;
        }
        Ok(())
    })
}

/// Generates a text for every test image with the student of `stage` and scores it.
fn evaluate<B: TrainBackend>(
    config: &RunConfig,
    stage: &str,
    test: &[Item],
    evaluated: &[Finding],
    device: &B::Device,
) -> Result<EvalReport> {
    if config.student.hf.is_some() {
        return Ok(apo_train::hf::evaluate_on::<B::InnerBackend>(
            config,
            stage,
            test,
            &generation(config),
            evaluated,
            device,
        )?);
    }
    Ok(apo_train::eval::evaluate_dir_on::<B::InnerBackend>(
        &config.run.out.join(stage),
        &config.run.out.join("tokenizer.json"),
        test,
        &generation(config),
        evaluated,
        device,
    )?)
}

/// Decoding as a run configuration sets it, in batches of 32 images (128 was not faster on
/// the demo: 152 s for its four evaluations against 93-121 s).
pub fn generation(config: &RunConfig) -> Generation {
    Generation {
        max_new_tokens: config.run.max_new_tokens,
        temperature: config.run.temperature,
        seed: config.run.seed,
        batch: 32,
    }
}

/// Writes an evaluation's samples as JSON Lines (`{"id", "text"}` per image), atomically.
///
/// # Errors
/// [`PipelineError::Io`].
pub fn write_samples(path: &Path, report: &EvalReport) -> Result<()> {
    write_atomic(path, |w| {
        for s in &report.samples {
            writeln!(w, "{}", serde_json::to_string(s)?)?;
        }
        Ok(())
    })
}

/// The metrics a training stage logged (`metrics.jsonl`); lines that do not parse, or a
/// missing file, give nothing.
pub fn read_metrics(path: &Path) -> Vec<StepMetrics> {
    std::fs::read_to_string(path)
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn render_report(
    result: &PipelineResult,
    table: &Table,
    generalisation: Option<&Table>,
    out: &Path,
) -> String {
    let mut md = String::from("# APO pipeline report\n\n");
    md.push_str(&format!(
        "Scored images ({} split): {}. Training images: {}. Preference sets: {}.\n\n",
        result.eval_split, result.test_images, result.train_images, result.preference_sets
    ));
    md.push_str(&format!("Scored on the {} split", result.eval_split));
    md.push_str(
        ", once, by the findings labeler on each row's final statements \
         (CheXbert convention: \"present\" = predicted positive; absent, uncertain or no \
         statement = negative; uncertain labels left out; docs/evaluation.md). Floors: all \
         absent, a random guess at the training split's prevalence (expected counts), and the \
         APO student fed each test image's text from another test image.\n\n",
    );
    md.push_str(&table.render_markdown());
    if !result.comparisons.is_empty() {
        md.push_str(&format!(
            "The APO student against every other row, on the same test images (paired bootstrap over images, {BOOTSTRAP_RESAMPLES} resamples; an interval that contains 0 means this test split cannot tell the two apart):\n\n"
        ));
        md.push_str(&render_comparisons(&result.comparisons));
    }
    if let Some(cf) = &result.counterfactuals {
        md.push_str(&format!(
            "\nCounterfactual renders ({} test images, each drawn again with one finding toggled): \
             the APO student's statement of the toggled finding flips on {:.1} % of the renders \
             and matches the render on {:.1} %.\n\n| finding | renders | flipped | matches the render |\n|---|---|---|---|\n",
            cf.images,
            100.0 * cf.flip_rate,
            100.0 * cf.follow_rate
        ));
        for c in &cf.findings {
            md.push_str(&format!(
                "| {} | {} | {:.3} | {:.3} |\n",
                c.finding, c.renders, c.flip_rate, c.follow_rate
            ));
        }
    }
    if !result.margins.is_empty() {
        md.push_str(&format!(
            "\nWhere the preference is won: each stage-2 student's reward margin \
             β·Σ(log π − log π_ref) of the consensus over each negative, on {} preference sets \
             of the {} split, split into the tokens of sentences that state a finding and the \
             rest (layout: headers, list markers, other sentences, end of text).\n\n\
             | student | margin | from finding tokens | from layout tokens | finding share | pairs won | won on findings | tokens (finding / layout) |\n\
             |---|---|---|---|---|---|---|---|\n",
            result.margins.values().next().map_or(0, |b| b.groups),
            result.eval_split
        ));
        for (name, b) in &result.margins {
            let share = if b.margin.total().abs() > 0.0 {
                format!("{:.2}", b.margin.finding / b.margin.total())
            } else {
                "-".into()
            };
            md.push_str(&format!(
                "| {name} | {:.3} | {:.3} | {:.3} | {share} | {:.3} | {:.3} | {:.1} / {:.1} |\n",
                b.margin.total(),
                b.margin.finding,
                b.margin.layout,
                b.accuracy,
                b.finding_accuracy,
                b.chosen_tokens.finding,
                b.chosen_tokens.layout
            ));
        }
    }
    if let (Some(g), Some(gen_table)) = (&result.generalisation, generalisation) {
        md.push_str(&format!(
            "\n## Generalisation\n\nThe same students, and the teachers, on the {} split of \
             `{}` ({} images): a data set no model of this run was trained or tuned on (the \
             consensus row is Dawid-Skene fitted on it).\n\n",
            g.eval_split,
            g.data.display(),
            g.images
        ));
        md.push_str(&gen_table.render_markdown());
        if !g.comparisons.is_empty() {
            md.push_str("\nThe APO student against every other row on these images:\n\n");
            md.push_str(&render_comparisons(&g.comparisons));
        }
    }
    md.push_str(
        "\nProtocol: every setting of this run (steps, learning rates, β, the checkpoint = the \
         last step, decoding) is fixed by its configuration before training; none was chosen \
         on the test split by this run. Settings a user tunes belong on the validate split.\n",
    );
    md.push_str("\nStages:\n\n");
    for s in &result.stages {
        md.push_str(&format!(
            "- {}: {} steps, loss {:.4} → {:.4}, {:.1} s\n",
            s.stage, s.steps, s.first_loss, s.last_loss, s.seconds
        ));
    }
    let plots: Vec<String> = result
        .files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "png"))
        .map(|p| format!("`{}`", p.strip_prefix(out).unwrap_or(p).display()))
        .collect();
    if !plots.is_empty() {
        md.push_str(&format!("\nPlots: {}.\n", plots.join(", ")));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(k: usize, prompt: Option<&str>) -> Item {
        Item {
            sample: cxr_max::Sample {
                dicom_id: format!("d{k}"),
                subject_id: None,
                study_id: None,
                prompt: prompt.map(str::to_owned),
                report: None,
                diagnose: None,
                trajectories: Vec::new(),
                source: cxr_max::Location {
                    path: "records.jsonl".into(),
                    line: k + 1,
                },
            },
            subject_id: None,
            study_id: None,
            labels: None,
            split: Some(Split::Test),
            view_position: None,
            image: format!("img{k}.jpg").into(),
        }
    }

    /// Every item gets another item's image with the same prompt; a prompt group of one
    /// keeps its own; ids and labels stay; the permutation is a function of the seed.
    #[test]
    fn shuffled_images_stay_within_their_prompt_and_leave_no_image_in_place() {
        let mut items: Vec<Item> = (0..9).map(|k| item(k, None)).collect();
        items.push(item(9, Some("another prompt")));
        items.push(item(10, Some("a third prompt")));
        items.push(item(11, Some("a third prompt")));
        let (shuffled, sources) = shuffle_images(&items, 3);
        assert_eq!(shuffled.len(), items.len());
        let mut used = std::collections::BTreeSet::new();
        for (k, (s, src)) in shuffled.iter().zip(&sources).enumerate() {
            assert_eq!(s.sample.dicom_id, items[k].sample.dicom_id);
            let from: usize = src[1..].parse().unwrap();
            assert_eq!(s.image, items[from].image);
            assert_eq!(s.sample.prompt, items[from].sample.prompt);
            assert_eq!(from == k, k == 9, "item {k} from {from}");
            used.insert(from);
        }
        assert_eq!(used.len(), items.len(), "a permutation");
        assert_eq!(shuffle_images(&items, 3).1, sources);
        assert_ne!(shuffle_images(&items, 4).1, sources);
    }
}
