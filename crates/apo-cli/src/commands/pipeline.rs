//! The whole APO pipeline on one data set: validate → drift report → consensus and
//! preference sets → stage 1 → stage 2 (Plackett-Luce, and pairwise-sigmoid as the baseline)
//! → evaluation on the test split, with `report.md`, `results.json` and plots. `apo demo`
//! runs it on a freshly simulated data set; `apo run --config pipeline.toml` on any data set
//! the readers accept ([`PipelineConfig`]).
//!
//! Every finished stage leaves a marker in `OUT/stages/` holding a key (a hash of its inputs
//! and of the keys of the stages before it) and what later stages need of its result. With
//! [`PipelineOptions::resume`], a stage whose marker matches is skipped, and a training stage
//! that was started with the same key and not finished continues from its newest checkpoint:
//! a rerun resumes at the first unfinished stage, and a changed input reruns that stage and
//! every stage after it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use apo_consensus::{Polarity, PositiveStyle};
use apo_loss::{LossConfig, Objective};
use apo_train::RunConfig;
use apo_train::device::DeviceKind;
use apo_train::eval::EvalReport;
use apo_train::train::{Observer, StageReport, StepMetrics};
use cxr_max::Finding;
use cxr_max::dataset::{Dataset, DatasetOptions, Item};
use cxr_max::eval::Accuracy;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::consensus::Method;
use super::consensus_build::{self as cb, BuildOptions, Weights};
use super::train::{Stage, TrainJob, dispatch, eval_job};

/// What the pipeline runs on and how long it trains.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// The data set.
    pub data: PathBuf,
    /// The run folder.
    pub out: PathBuf,
    /// Device.
    pub device: DeviceKind,
    /// Training configuration (data and output paths are set by the pipeline).
    pub train: RunConfig,
    /// Print progress lines to standard error.
    pub verbose: bool,
    /// Label aggregation of the consensus.
    pub method: Method,
    /// Negative selection (`all`, `dissenting`, `top-K`) and weighting (`uniform`, `drift`).
    pub negatives: (String, String),
    /// How the consensus trajectories (the positives) are written.
    pub positive: PositiveStyle,
    /// Skip the stages whose markers match and continue unfinished training stages.
    pub resume: bool,
}

impl PipelineOptions {
    /// Defaults: Dawid-Skene consensus, every negative unweighted, no resuming.
    pub fn new(data: PathBuf, out: PathBuf, device: DeviceKind, train: RunConfig) -> Self {
        PipelineOptions {
            data,
            out,
            device,
            train,
            verbose: false,
            method: Method::DawidSkene,
            negatives: ("all".into(), "uniform".into()),
            positive: PositiveStyle::Merged,
            resume: false,
        }
    }
}

/// `pipeline.toml` of `apo run`: the data set, the run folder, the consensus settings and a
/// training configuration (the `apo train` file's fields under `[train]`; the pipeline sets
/// `data.dir`, `data.preferences`, `data.split` and `run.out` itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// The data set folder.
    pub data: PathBuf,
    /// The run folder.
    #[serde(default = "default_out")]
    pub out: PathBuf,
    /// Consensus settings.
    #[serde(default)]
    pub consensus: ConsensusSettings,
    /// Training configuration.
    #[serde(default)]
    pub train: RunConfig,
}

fn default_out() -> PathBuf {
    PathBuf::from("runs/pipeline")
}

/// `[consensus]` of `pipeline.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsensusSettings {
    /// `dawid-skene`, `majority` or `weighted`.
    pub method: String,
    /// `all`, `dissenting` or `top-K`.
    pub negatives: String,
    /// `uniform` or `drift`.
    pub negative_weights: String,
    /// `merged` or `closest-teacher` (how the positives are written).
    pub positive: String,
}

impl Default for ConsensusSettings {
    fn default() -> Self {
        ConsensusSettings {
            method: "dawid-skene".into(),
            negatives: "all".into(),
            negative_weights: "uniform".into(),
            positive: "merged".into(),
        }
    }
}

impl PipelineConfig {
    /// Reads and checks a `pipeline.toml`.
    ///
    /// # Errors
    /// The file, the TOML parser (with the field), the consensus settings or the training
    /// configuration's ranges, as text naming the file.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let config: PipelineConfig =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        config
            .consensus
            .method
            .parse::<Method>()
            .map_err(|e| format!("{}: consensus.method: {e}", path.display()))?;
        cb::parse_negatives(
            &config.consensus.negatives,
            &config.consensus.negative_weights,
        )
        .map_err(|e| format!("{}: consensus: {e}", path.display()))?;
        config
            .consensus
            .positive
            .parse::<PositiveStyle>()
            .map_err(|e| format!("{}: consensus.positive: {e}", path.display()))?;
        config
            .train
            .validate()
            .map_err(|e| format!("{}: train: {e}", path.display()))?;
        Ok(config)
    }

    /// The pipeline's options on `device`.
    ///
    /// # Errors
    /// An unknown consensus method.
    pub fn options(&self, device: DeviceKind, resume: bool) -> Result<PipelineOptions, String> {
        let mut o = PipelineOptions::new(
            self.data.clone(),
            self.out.clone(),
            device,
            self.train.clone(),
        );
        o.method = self.consensus.method.parse()?;
        o.negatives = (
            self.consensus.negatives.clone(),
            self.consensus.negative_weights.clone(),
        );
        o.positive = self
            .consensus
            .positive
            .parse()
            .map_err(|e: apo_consensus::ConsensusError| e.to_string())?;
        o.resume = resume;
        o.verbose = true;
        Ok(o)
    }
}

/// The stage markers of a run folder (`OUT/stages/`).
struct Stages {
    dir: PathBuf,
    resume: bool,
}

#[derive(Serialize, Deserialize)]
struct Marker<T> {
    key: String,
    value: T,
}

impl Stages {
    fn marker(&self, name: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{name}.{ext}"))
    }

    /// The stored result of `name` when resuming and its key matches.
    fn done<T: DeserializeOwned>(&self, name: &str, key: &str) -> Option<T> {
        if !self.resume {
            return None;
        }
        let text = std::fs::read_to_string(self.marker(name, "json")).ok()?;
        let m: Marker<T> = serde_json::from_str(&text).ok()?;
        (m.key == key).then_some(m.value)
    }

    /// Records that `name` starts with `key`; returns whether it had been started with the
    /// same key before (an unfinished run to continue).
    fn start(&self, name: &str, key: &str) -> Result<bool, String> {
        let path = self.marker(name, "started");
        let same = self.resume && std::fs::read_to_string(&path).is_ok_and(|k| k == key);
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let done = self.marker(name, "json");
        if done.exists() {
            std::fs::remove_file(&done).map_err(|e| format!("{}: {e}", done.display()))?;
        }
        std::fs::write(&path, key).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(same)
    }

    /// Records `name`'s result (atomically).
    fn finish<T: Serialize>(&self, name: &str, key: &str, value: &T) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let path = self.marker(name, "json");
        cb::write_atomic(&path, |w| {
            serde_json::to_writer(&mut *w, &serde_json::json!({ "key": key, "value": value }))?;
            Ok(())
        })
    }
}

/// A key over the data set's top-level files (records, tables, profiles): name, size and
/// modification time; images are not read.
fn data_key(dir: &Path) -> Result<String, String> {
    let mut entries: Vec<(String, u64, u128)> = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
        let meta = e
            .metadata()
            .map_err(|err| format!("{}: {err}", e.path().display()))?;
        if meta.is_file() {
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            entries.push((
                e.file_name().to_string_lossy().into_owned(),
                meta.len(),
                modified,
            ));
        }
    }
    entries.sort();
    let text = format!("{}|{entries:?}", dir.display());
    Ok(apo_train::checkpoint::fnv(&[text.as_bytes()]))
}

fn key(parts: &[&str]) -> String {
    let bytes: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
    apo_train::checkpoint::fnv(&bytes)
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
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
}

/// The pipeline's result (`results.json`).
#[derive(Debug, Clone, Serialize)]
pub struct PipelineResult {
    /// Mean accuracy per row.
    pub mean_accuracy: MeanAccuracy,
    /// Per row, per finding accuracy (column names), on the test split.
    pub per_finding: BTreeMap<String, BTreeMap<String, Option<f64>>>,
    /// The findings averaged.
    pub evaluated: Vec<String>,
    /// Test images.
    pub test_images: usize,
    /// Training images.
    pub train_images: usize,
    /// Preference sets used in stage 2.
    pub preference_sets: usize,
    /// Stage reports.
    pub stages: Vec<StageReport>,
    /// The APO student against the pairwise and SFT students, the best teacher and the
    /// all-absent baseline: differences of mean accuracy with paired-bootstrap intervals
    /// over the test images.
    pub comparisons: Vec<Comparison>,
    /// Seconds per phase.
    pub phases: BTreeMap<String, f64>,
    /// Total seconds.
    pub seconds: f64,
    /// Files written.
    pub files: Vec<PathBuf>,
}

struct Progress {
    verbose: bool,
    last: Instant,
}

impl Observer for Progress {
    fn step(&mut self, total: usize, m: &StepMetrics) {
        if self.verbose && (self.last.elapsed().as_secs_f64() > 5.0 || m.step == total) {
            self.last = Instant::now();
            eprintln!(
                "  [{}] step {}/{} loss {:.4}{}",
                m.stage,
                m.step,
                total,
                m.loss,
                m.top1_accuracy
                    .map(|a| format!(" top-1 {a:.2} margin {:.3}", m.margin.unwrap_or(0.0)))
                    .unwrap_or_default()
            );
        }
    }
}

/// The row of the image-blind baseline.
pub const ALL_ABSENT: &str = "all absent";

/// Per test image (in [`TestSet`] order) and finding (by [`Finding::index`]): the row's
/// prediction, present or absent (`None`: no statement).
type Predictions = Vec<Vec<Option<bool>>>;

/// The test split's images: their DICOM ids and ground-truth labels.
struct TestSet {
    ids: Vec<String>,
    labels: Vec<Option<cxr_max::Findings>>,
}

impl TestSet {
    /// A row's accuracy from its predictions.
    fn accuracy(&self, evaluated: &[Finding], p: &Predictions) -> Option<Accuracy> {
        cxr_max::eval::accuracy(&self.labels, evaluated, |k, f| p[k][f.index()])
    }

    /// A student's predictions: the labeler's reading of the text generated for each test
    /// image (an image without a sample has no statement).
    fn read(&self, report: &EvalReport) -> Predictions {
        let texts: BTreeMap<&str, &str> = report
            .samples
            .iter()
            .map(|s| (s.id.as_str(), s.text.as_str()))
            .collect();
        self.ids
            .iter()
            .map(|id| {
                let read = texts
                    .get(id.as_str())
                    .map(|t| cxr_max::findings::extract(t).findings);
                Finding::ALL
                    .iter()
                    .map(|&f| read.as_ref().and_then(|r| cxr_max::eval::prediction(r, f)))
                    .collect()
            })
            .collect()
    }
}

/// Teachers, majority vote and consensus labels, fitted on every image and scored on the
/// test split, and the all-absent baseline: each row's accuracy and predictions.
#[allow(clippy::type_complexity)]
fn label_rows(
    items: &[Item],
    evaluated: &[Finding],
) -> Result<
    (
        Vec<(String, Accuracy)>,
        BTreeMap<String, Predictions>,
        TestSet,
    ),
    String,
> {
    let all: Vec<&Item> = items.iter().collect();
    let teachers = cb::teachers_of(&all);
    let finals = cb::read_finals(&all);
    let ds = cb::label_consensus(
        &all,
        &finals,
        &teachers,
        Method::DawidSkene,
        &Weights::Reliability,
        2,
    )?;
    let mv = cb::label_consensus(
        &all,
        &finals,
        &teachers,
        Method::Majority,
        &Weights::Reliability,
        2,
    )?;
    let test: Vec<usize> = (0..all.len())
        .filter(|&i| all[i].split == Some(cxr_max::tables::Split::Test))
        .collect();
    let set = TestSet {
        ids: test
            .iter()
            .map(|&i| all[i].sample.dicom_id.clone())
            .collect(),
        labels: test.iter().map(|&i| all[i].labels).collect(),
    };
    let present = |p: Option<Polarity>| match p {
        Some(Polarity::Present) => Some(true),
        Some(Polarity::Absent) => Some(false),
        _ => None,
    };
    let predictions = |predict: &dyn Fn(usize, Finding) -> Option<Polarity>| -> Predictions {
        (0..test.len())
            .map(|k| {
                Finding::ALL
                    .iter()
                    .map(|&f| present(predict(k, f)))
                    .collect()
            })
            .collect()
    };
    let mut named: Vec<(String, Predictions)> = Vec::new();
    for name in &teachers {
        named.push((
            name.clone(),
            predictions(&|k, f| cb::teacher_vote(all[test[k]], &finals[test[k]], name, f)),
        ));
    }
    for (name, c) in [("majority vote", &mv), ("consensus", &ds)] {
        named.push((
            name.to_owned(),
            predictions(&|k, f| c.labels[test[k]][f.index()]),
        ));
    }
    // The image-blind baseline: every finding stated absent on every image. A student that
    // does not read the image scores about this.
    named.push((
        ALL_ABSENT.to_owned(),
        predictions(&|_, _| Some(Polarity::Absent)),
    ));
    let mut rows = Vec::new();
    let mut preds = BTreeMap::new();
    for (name, p) in named {
        if let Some(a) = set.accuracy(evaluated, &p) {
            rows.push((name.clone(), a));
            preds.insert(name, p);
        }
    }
    Ok((rows, preds, set))
}

/// Whether a row of the table is a teacher's (not the majority vote, the consensus, the
/// all-absent baseline or a student).
fn is_teacher_row(name: &str) -> bool {
    !(name == "majority vote"
        || name == "consensus"
        || name == ALL_ABSENT
        || name.ends_with(" student"))
}

/// Resamples of the paired bootstrap behind [`Comparison`].
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// The APO student against another row of the table, on the same test images.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The row compared with (`pairwise student`, `sft student`, the best teacher's name,
    /// `all absent`).
    pub versus: String,
    /// Mean accuracy of the APO student minus the row's, with a paired bootstrap over test
    /// images.
    #[serde(flatten)]
    pub difference: cxr_max::eval::PairedDifference,
}

/// The APO student against the pairwise and SFT students, the best teacher (by mean accuracy)
/// and the all-absent baseline.
fn comparisons(
    rows: &[(String, Accuracy)],
    preds: &BTreeMap<String, Predictions>,
    set: &TestSet,
    evaluated: &[Finding],
    seed: u64,
) -> Vec<Comparison> {
    let Some(apo) = preds.get("apo student") else {
        return Vec::new();
    };
    let best_teacher = rows
        .iter()
        .filter(|(n, _)| is_teacher_row(n))
        .max_by(|a, b| a.1.mean.total_cmp(&b.1.mean))
        .map(|(n, _)| n.clone());
    ["pairwise student", "sft student"]
        .into_iter()
        .map(str::to_owned)
        .chain(best_teacher)
        .chain([ALL_ABSENT.to_owned()])
        .filter_map(|versus| {
            let other = preds.get(&versus)?;
            let difference = cxr_max::eval::paired_difference(
                &set.labels,
                evaluated,
                |k, f| apo[k][f.index()],
                |k, f| other[k][f.index()],
                BOOTSTRAP_RESAMPLES,
                seed,
            )?;
            Some(Comparison { versus, difference })
        })
        .collect()
}

/// The comparisons as a Markdown table.
pub fn render_comparisons(comparisons: &[Comparison]) -> String {
    let mut md = String::from(
        "| APO student vs | difference | 95 % CI | P(APO higher) | only APO right | only other right |\n|---|---|---|---|---|---|\n",
    );
    for c in comparisons {
        let d = &c.difference;
        md.push_str(&format!(
            "| {} | {:+.4} | [{:+.4}, {:+.4}] | {:.3} | {} | {} |\n",
            c.versus,
            d.difference,
            d.ci95[0],
            d.ci95[1],
            d.share_a_higher,
            d.only_a_right,
            d.only_b_right
        ));
    }
    md
}

/// Runs every stage and writes the report.
///
/// # Errors
/// Any stage's error, as text.
pub fn run(options: &PipelineOptions) -> Result<PipelineResult, String> {
    let start = Instant::now();
    let mut phases = BTreeMap::new();
    let mut files = Vec::new();
    let out = &options.out;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let say = |s: &str| {
        if options.verbose {
            eprintln!("{s}");
        }
    };
    let mut phase = |name: &str, t: Instant| {
        phases.insert(name.to_owned(), t.elapsed().as_secs_f64());
    };

    // Validate.
    let t = Instant::now();
    let (dataset, check) =
        Dataset::open(&options.data, &DatasetOptions::default()).map_err(|e| e.to_string())?;
    say(&format!(
        "validate: {} records read, {} kept, {} problems",
        check.records.read,
        check.records.kept,
        check.problems.len()
    ));
    let check_path = out.join("data-check.json");
    std::fs::write(
        &check_path,
        serde_json::to_string_pretty(&check).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    files.push(check_path);
    phase("validate", t);

    let stages = Stages {
        dir: out.join("stages"),
        resume: options.resume,
    };
    let data_key = data_key(&options.data)?;

    // Drift report.
    let t = Instant::now();
    let drift_key = key(&["drift", &data_key]);
    let drift = match stages.done::<DriftDone>("drift", &drift_key) {
        Some(d) => {
            say("drift report: done before");
            d
        }
        None => {
            stages.start("drift", &drift_key)?;
            let r = super::drift_report::report(&super::drift_report::ReportOptions {
                dir: options.data.clone(),
                out: out.join("drift"),
                detector: apo_drift::DetectorConfig::default_for("adwin")
                    .map_err(|e| e.to_string())?,
                max_steps: 12,
            })?;
            let d = DriftDone {
                change_points: r.change_points.len(),
                files: r.files,
            };
            stages.finish("drift", &drift_key, &d)?;
            d
        }
    };
    say(&format!(
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
    let labels_key = key(&[
        "consensus",
        &data_key,
        options.method.name(),
        &options.negatives.0,
        &options.negatives.1,
    ]);
    let consensus_key = key(&[&labels_key, "positive", options.positive.name()]);
    let summary = match stages
        .done::<ConsensusDone>("consensus", &consensus_key)
        .filter(|_| prefs.is_file())
    {
        Some(d) => d,
        None => {
            stages.start("consensus", &consensus_key)?;
            let mut build = BuildOptions::new(options.data.clone(), prefs.clone());
            build.split = Some(cxr_max::tables::Split::Train);
            build.method = options.method;
            let (policy, weighting) =
                cb::parse_negatives(&options.negatives.0, &options.negatives.1)?;
            build.preference.negatives = policy;
            build.preference.weighting = weighting;
            build.claims.style = options.positive;
            let s = cb::build(&build)?;
            let d = ConsensusDone {
                sets: s.consensus_found,
                skipped: s.skipped.values().sum(),
                negatives_mean: s.negatives_mean,
            };
            stages.finish("consensus", &consensus_key, &d)?;
            d
        }
    };
    say(&format!(
        "consensus: {} preference sets ({} skipped), {:.2} negatives each",
        summary.sets, summary.skipped, summary.negatives_mean
    ));
    files.push(prefs.clone());
    let evaluated = Finding::TABLE1.to_vec();
    let (mut rows, mut preds, test_set) = label_rows(&dataset.items, &evaluated)?;
    phase("consensus", t);

    // Training.
    let mut config = options.train.clone();
    config.data.dir = options.data.clone();
    config.data.preferences = Some(prefs);
    config.data.split = Some("train".into());
    config.run.out = out.join("train");
    let mut progress = Progress {
        verbose: options.verbose,
        last: Instant::now(),
    };
    let mut reports: Vec<StageReport> = Vec::new();
    let t = Instant::now();
    say("stage 1: supervised bootstrapping");
    let mut sft_only = config.clone();
    sft_only.apo = Default::default();
    let sft_key = key(&["sft", &labels_key, &json(&sft_only)]);
    let mut train_keys = BTreeMap::new();
    train_keys.insert("sft".to_owned(), sft_key.clone());
    reports.push(train_stage(
        &stages,
        "sft",
        &sft_key,
        options,
        &config,
        Stage::Sft,
        &mut progress,
        &say,
    )?);
    phase("sft", t);
    for (name, objective) in [
        ("apo", Objective::PlackettLuce),
        ("pairwise", Objective::PairwiseSigmoid),
    ] {
        let t = Instant::now();
        say(&format!("stage 2: {name} ({objective})"));
        let mut c = config.clone();
        c.apo.loss = LossConfig {
            objective,
            ..config.apo.loss.clone()
        };
        let k = key(&[name, &sft_key, &consensus_key, &json(&c.apo)]);
        train_keys.insert(name.to_owned(), k.clone());
        reports.push(train_stage(
            &stages,
            name,
            &k,
            options,
            &c,
            Stage::Apo(name.to_owned()),
            &mut progress,
            &say,
        )?);
        phase(name, t);
    }
    let stages_done = reports;

    // Evaluation on the test split.
    let t = Instant::now();
    let mut students: BTreeMap<String, EvalReport> = BTreeMap::new();
    for stage in ["sft", "pairwise", "apo"] {
        let name = format!("eval-{stage}");
        let k = key(&[
            &name,
            &train_keys[stage],
            &json(&(config.run.max_new_tokens, config.run.temperature)),
        ]);
        let report = match stages.done::<EvalReport>(&name, &k) {
            Some(r) => r,
            None => {
                stages.start(&name, &k)?;
                let job = eval_job(&config, None, stage, "test");
                let r = dispatch(options.device, job).map_err(|e| e.to_string())?;
                stages.finish(&name, &k, &r)?;
                r
            }
        };
        let samples = out.join(format!("samples-{stage}.jsonl"));
        cb::write_atomic(&samples, |w| {
            for s in &report.samples {
                writeln!(w, "{}", serde_json::to_string(s)?)?;
            }
            Ok(())
        })?;
        files.push(samples);
        if let Some(a) = &report.accuracy {
            rows.push((format!("{stage} student"), a.clone()));
            preds.insert(format!("{stage} student"), test_set.read(&report));
        }
        students.insert(stage.to_owned(), report);
    }
    phase("eval", t);

    let mean = |name: &str| {
        rows.iter()
            .find(|(n, _)| n == name)
            .map_or(f64::NAN, |(_, a)| a.mean)
    };
    let teacher_names: Vec<String> = rows
        .iter()
        .map(|(n, _)| n.clone())
        .filter(|n| is_teacher_row(n))
        .collect();
    let result = PipelineResult {
        mean_accuracy: MeanAccuracy {
            teachers: teacher_names.iter().map(|n| (n.clone(), mean(n))).collect(),
            majority_vote: mean("majority vote"),
            consensus: mean("consensus"),
            all_absent: mean(ALL_ABSENT),
            sft: mean("sft student"),
            pairwise: mean("pairwise student"),
            apo: mean("apo student"),
        },
        per_finding: rows
            .iter()
            .map(|(n, a)| {
                let per = evaluated
                    .iter()
                    .map(|f| (f.column_name().to_owned(), a.per_finding[f.column_name()]))
                    .collect();
                (n.clone(), per)
            })
            .collect(),
        evaluated: evaluated
            .iter()
            .map(|f| f.column_name().to_owned())
            .collect(),
        test_images: students.values().next().map_or(0, |r| r.images),
        train_images: stages_done.first().map_or(0, |s| s.groups),
        preference_sets: stages_done.get(1).map_or(0, |s| s.groups),
        stages: stages_done,
        comparisons: comparisons(&rows, &preds, &test_set, &evaluated, config.run.seed),
        phases,
        seconds: 0.0,
        files,
    };
    let mut result = result;
    write_outputs(out, &rows, &evaluated, &mut result)?;
    result.seconds = start.elapsed().as_secs_f64();
    let json = out.join("results.json");
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&result).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    result.files.push(json);
    Ok(result)
}

/// Runs a training stage unless its marker matches; continues it from its newest checkpoint
/// when it was started with the same key. A fresh stage 1 retrains the tokenizer (unless the
/// configuration names a file).
#[allow(clippy::too_many_arguments)]
fn train_stage(
    stages: &Stages,
    name: &str,
    key: &str,
    options: &PipelineOptions,
    config: &RunConfig,
    stage: Stage,
    progress: &mut Progress,
    say: &dyn Fn(&str),
) -> Result<StageReport, String> {
    if let Some(r) = stages
        .done::<StageReport>(name, key)
        .filter(|r| r.model_dir.join("model.bin").is_file())
    {
        say(&format!("  {name}: done before ({} steps)", r.steps));
        return Ok(r);
    }
    let resume = stages.start(name, key)?;
    if resume {
        say(&format!("  {name}: continuing from its newest checkpoint"));
    }
    if matches!(stage, Stage::Sft) && !resume {
        let tok = config.run.out.join("tokenizer.json");
        if tok.exists() {
            std::fs::remove_file(&tok).map_err(|e| format!("{}: {e}", tok.display()))?;
        }
    }
    let report = dispatch(
        options.device,
        TrainJob {
            config,
            stage,
            resume,
            observer: progress,
        },
    )
    .map_err(|e| e.to_string())?;
    stages.finish(name, key, &report)?;
    Ok(report)
}

fn read_metrics(path: &Path) -> Vec<StepMetrics> {
    std::fs::read_to_string(path)
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The Table 1 analogue as text.
pub fn render_table(rows: &[(String, Vec<Option<f64>>, f64)], evaluated: &[String]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = write!(out, "{:<16}", "");
    for f in evaluated {
        let short: String = f.chars().take(11).collect();
        let _ = write!(out, " {short:>11}");
    }
    let _ = writeln!(out, " {:>7}", "mean");
    for (name, per, mean) in rows {
        let _ = write!(out, "{name:<16}");
        for v in per {
            match v {
                Some(v) => {
                    let _ = write!(out, " {v:>11.3}");
                }
                None => {
                    let _ = write!(out, " {:>11}", "-");
                }
            }
        }
        let _ = writeln!(out, " {mean:>7.3}");
    }
    out
}

fn write_outputs(
    out: &Path,
    rows: &[(String, Accuracy)],
    evaluated: &[Finding],
    result: &mut PipelineResult,
) -> Result<(), String> {
    let names: Vec<String> = evaluated
        .iter()
        .map(|f| f.column_name().to_owned())
        .collect();
    let table_rows: Vec<(String, Vec<Option<f64>>, f64)> = rows
        .iter()
        .map(|(n, a)| {
            (
                n.clone(),
                names.iter().map(|f| a.per_finding[f]).collect(),
                a.mean,
            )
        })
        .collect();
    // Plots: training curves and per-finding accuracy bars.
    let train = out.join("train");
    let sft = read_metrics(&train.join("sft/metrics.jsonl"));
    let apo = read_metrics(&train.join("apo/metrics.jsonl"));
    let pw = read_metrics(&train.join("pairwise/metrics.jsonl"));
    let series = |m: &[StepMetrics], f: &dyn Fn(&StepMetrics) -> Option<f64>| {
        m.iter()
            .map(|x| f(x).unwrap_or(f64::NAN))
            .collect::<Vec<f64>>()
    };
    let plots = [
        (
            "curves_loss.png",
            "TRAINING LOSS",
            vec![
                "SFT".to_owned(),
                "APO (PL)".to_owned(),
                "PAIRWISE".to_owned(),
            ],
            vec![
                series(&sft, &|x| Some(x.loss)),
                series(&apo, &|x| Some(x.loss)),
                series(&pw, &|x| Some(x.loss)),
            ],
        ),
        (
            "curves_margin.png",
            "STAGE 2 MARGIN (CHOSEN - MEAN REJECTED REWARD)",
            vec!["APO (PL)".to_owned(), "PAIRWISE".to_owned()],
            vec![
                series(&apo, &|x| x.margin.map(|v| v.max(0.0))),
                series(&pw, &|x| x.margin.map(|v| v.max(0.0))),
            ],
        ),
        (
            "curves_accuracy.png",
            "STAGE 2 TOP-1 AND PAIRWISE ACCURACY",
            vec![
                "APO TOP-1".to_owned(),
                "APO PAIRWISE".to_owned(),
                "PW TOP-1".to_owned(),
                "PW PAIRWISE".to_owned(),
            ],
            vec![
                series(&apo, &|x| x.top1_accuracy),
                series(&apo, &|x| x.pairwise_accuracy),
                series(&pw, &|x| x.top1_accuracy),
                series(&pw, &|x| x.pairwise_accuracy),
            ],
        ),
    ];
    for (file, title, names, data) in plots {
        let path = out.join(file);
        crate::plot::lines(title, "STEP", &names, &data, &path)?;
        result.files.push(path);
    }
    let bars = out.join("accuracy.png");
    crate::plot::bars(
        "ACCURACY ON THE TEST SPLIT (TABLE 1 FINDINGS + MEAN)",
        &names
            .iter()
            .map(|n| n.to_uppercase())
            .chain(["MEAN".to_owned()])
            .collect::<Vec<_>>(),
        &table_rows
            .iter()
            .map(|(n, _, _)| n.to_uppercase())
            .collect::<Vec<_>>(),
        &table_rows
            .iter()
            .map(|(_, per, mean)| {
                per.iter()
                    .map(|v| v.unwrap_or(0.0))
                    .chain([*mean])
                    .collect()
            })
            .collect::<Vec<Vec<f64>>>(),
        &bars,
    )?;
    result.files.push(bars);
    // report.md
    let mut md = String::from("# APO pipeline report\n\n");
    md.push_str(&format!(
        "Test images: {}. Training images: {}. Preference sets: {}.\n\n",
        result.test_images, result.train_images, result.preference_sets
    ));
    md.push_str("Accuracy on the test split (Table 1 findings; mean over them):\n\n| | ");
    md.push_str(&names.join(" | "));
    md.push_str(" | mean |\n|---|");
    md.push_str(&"---|".repeat(names.len() + 1));
    md.push('\n');
    for (n, per, mean) in &table_rows {
        md.push_str(&format!("| {n} |"));
        for v in per {
            md.push_str(&v.map_or(" - |".to_owned(), |v| format!(" {v:.3} |")));
        }
        md.push_str(&format!(" {mean:.3} |\n"));
    }
    if !result.comparisons.is_empty() {
        md.push_str(&format!(
            "\nThe APO student against the other rows, on the same test images (paired bootstrap over images, {BOOTSTRAP_RESAMPLES} resamples; an interval that contains 0 means this test split cannot tell the two apart):\n\n"
        ));
        md.push_str(&render_comparisons(&result.comparisons));
    }
    md.push_str("\nStages:\n\n");
    for s in &result.stages {
        md.push_str(&format!(
            "- {}: {} steps, loss {:.4} → {:.4}, {:.1} s\n",
            s.stage, s.steps, s.first_loss, s.last_loss, s.seconds
        ));
    }
    md.push_str("\nPlots: `accuracy.png`, `curves_loss.png`, `curves_margin.png`, `curves_accuracy.png`, `drift/disagreement_heatmap.png`, `drift/step_drift.png`, `drift/change_points.png`.\n");
    let report = out.join("report.md");
    std::fs::write(&report, md).map_err(|e| e.to_string())?;
    result.files.push(report);
    let table = out.join("table.txt");
    std::fs::write(&table, render_table(&table_rows, &names)).map_err(|e| e.to_string())?;
    result.files.push(table);
    Ok(())
}
