//! The `apo` command.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use apo_cli::commands::pipeline as p;
use apo_cli::commands::train::dispatch;
use apo_cli::commands::{data, demo, drift};
use apo_loss::cases as loss;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// APO: multi-teacher distillation of multimodal models, robust to teacher drift.
#[derive(Debug, Parser)]
#[command(name = "apo", version, about, long_about = None)]
struct Cli {
    /// Log filter (e.g. `info`, `apo=debug`); also read from `APO_LOG`.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum DriftCommand {
    /// Drift report of a data set (real or simulated): drift.json plus PNG plots (teacher x
    /// finding disagreement heatmap, instantaneous drift by sentence step, change points
    /// along the stream), written to OUT_DIR.
    Report {
        /// The data set folder.
        dir: PathBuf,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Change-point detector (adwin, page-hinkley, ddm, kswin).
        #[arg(long, default_value = "adwin")]
        detector: String,
        /// Detector parameter, NAME=VALUE (repeatable).
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Sentence steps kept (later sentences pool into the last).
        #[arg(long = "max-steps", default_value_t = 12)]
        max_steps: usize,
        #[command(flatten)]
        source: SourceArgs,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run an online drift detector over a stream (one number per line) and print
    /// {"detections":[...]}: the 0-based indices at which it signals drift, as river's
    /// `drift_detected` does. Detectors: adwin (delta, clock, max_buckets, min_window_length,
    /// grace_period), page-hinkley (min_instances, delta, threshold, alpha, mode),
    /// ddm (warm_start, warning_threshold, drift_threshold; 0/1 values), kswin (alpha,
    /// window_size, stat_size, seed), eddm (warm_start, alpha, beta; 0/1 values), fhddm
    /// (sliding_window_size, confidence_level, short_window_size; 0/1 values), hddm-a
    /// (drift_confidence, warning_confidence, two_sided_test; 0/1 values), hddm-w (the same and
    /// lambda_val). Parameter names and defaults are river 0.26's; --warnings adds river's
    /// warning zones (ddm, eddm, hddm-a, hddm-w).
    Detect {
        /// Detector name.
        #[arg(long)]
        detector: String,
        /// Detector parameter, NAME=VALUE (repeatable).
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Input file, or `-` for standard input.
        #[arg(long, short)]
        input: PathBuf,
        /// Also print `"warnings"`: the indices at which the detector is in its warning zone
        /// (river's `warning_detected`: DDM, EDDM, HDDM_A, HDDM_W; empty for the others).
        #[arg(long)]
        warnings: bool,
        /// Read the input as it arrives and print each event when it happens, one JSON line
        /// each (`{"index": I, "event": "drift"}`, and `"warning"` on entering a warning zone
        /// with --warnings), flushed at once: a live stream can be piped through it.
        #[arg(long)]
        follow: bool,
    },
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per run; the build variant carries every option
enum ConsensusCommand {
    /// Aggregate votes from a CSV with columns task,worker,label (crowd-kit's layout) and print
    /// CSV task,label,confidence. Methods: majority (ties to the label that sorts first),
    /// weighted (--weights CSV worker,weight; missing workers weigh 1), dawid-skene (crowd-kit
    /// 1.4 DawidSkene, n_iter 100, tol 1e-5), one-coin-dawid-skene (crowd-kit's
    /// OneCoinDawidSkene, the same), wawa (crowd-kit's Wawa), glad (crowd-kit's GLAD; --skills
    /// writes each worker's ability α), mace (crowd-kit's MACE; --skills writes each worker's
    /// competence), mace-published (MACE without crowd-kit's indexing of its M-step).
    Votes {
        /// Aggregation method.
        #[arg(long, default_value = "majority")]
        method: String,
        /// Votes CSV, or `-` for standard input.
        #[arg(long, short)]
        input: PathBuf,
        /// Worker weights CSV (worker,weight) for --method weighted; without it, each
        /// worker's reliability (leave-one-out agreement log-odds) is its weight.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Add each task's full label distribution, one column p_LABEL per label (crowd-kit's
        /// probas_).
        #[arg(long)]
        posteriors: bool,
        /// Write the workers' parameters to this CSV (crowd-kit's skills_ / errors_):
        /// worker,skill (one-coin-dawid-skene, wawa), worker,weight (majority, weighted) or
        /// worker,observed,true,probability (dawid-skene). Refused if it exists.
        #[arg(long)]
        skills: Option<PathBuf>,
    },
    /// Build preference sets from a data set: label consensus per image and finding, a
    /// consensus trajectory (the chosen response) and the teacher trajectories as rejected
    /// ones, written as JSONL for our trainer (ours), TRL (trl) or ms-swift (swift). Prints a
    /// summary: items, consensus found, skipped by reason, negatives per item, and, when the
    /// data set has labels, the accuracy of the consensus next to each teacher's.
    Build {
        /// The data set folder.
        dir: PathBuf,
        /// Output JSONL file.
        #[arg(long)]
        out: PathBuf,
        /// Label aggregation: majority, weighted, dawid-skene, one-coin-dawid-skene or wawa.
        #[arg(long, default_value = "dawid-skene")]
        method: String,
        /// Teacher weights CSV (worker,weight) for --method weighted (default: reliabilities).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Negatives: all, dissenting, top-K by drift (e.g. top-3), or edits-K (minimal pairs: the consensus with one finding flipped).
        #[arg(long, default_value = "all")]
        negatives: String,
        /// Per-negative weights: uniform or drift.
        #[arg(long = "negative-weights", default_value = "uniform")]
        negative_weights: String,
        /// Export layout: ours, trl or swift.
        #[arg(long, default_value = "ours")]
        export: String,
        /// Only this split (train, validate, test).
        #[arg(long)]
        split: Option<String>,
        /// Teachers that must vote on a finding for it to have a consensus.
        #[arg(long = "min-votes", default_value_t = 2)]
        min_votes: usize,
        /// A finding's consensus needs a confidence above this.
        #[arg(long = "min-confidence", default_value_t = 0.5)]
        min_confidence: f64,
        /// Skip an image whose mean consensus confidence (over its findings with a
        /// consensus) is below this.
        #[arg(long = "min-agreement", default_value_t = 0.0)]
        min_agreement: f64,
        /// Teachers whose final statement must support a kept sentence.
        #[arg(long = "min-support", default_value_t = 2)]
        min_support: usize,
        /// How the consensus trajectory is written: `merged` (the best-supported teacher
        /// sentence per finding, in one layout, with an impression) or `closest-teacher` (the
        /// trajectory of the teacher needing the fewest edits, edited in place).
        #[arg(long, default_value = "merged")]
        positive: String,
        /// Write image paths relative to this folder (a portable set, e.g. the folder the
        /// trainer runs in); by default they are absolute and resolve from any working folder.
        #[arg(long = "relative-to")]
        relative_to: Option<PathBuf>,
        #[command(flatten)]
        source: SourceArgs,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Read, join and validate a data set (CXR-MAX records + MIMIC-CXR-JPG tables and images).
    /// Counts studies, images found and missing, trajectories per teacher, the label
    /// distribution, and every problem with its file and line. Exit status: 0 when there is
    /// no problem, 1 when problems were found (lenient mode reports them all), 2 on a fatal
    /// error or, with --strict, at the first problem.
    Check {
        /// The data set folder.
        dir: PathBuf,
        /// Stop at the first problem.
        #[arg(long)]
        strict: bool,
        /// Write every rejected record, with its reason, to this JSONL file.
        #[arg(long)]
        quarantine: Option<PathBuf>,
        /// The records file, when the folder has several candidates.
        #[arg(long)]
        records: Option<PathBuf>,
        /// A TOML file naming the fields of an unforeseen layout.
        #[arg(long)]
        mapping: Option<PathBuf>,
        /// Decode every image instead of reading headers only.
        #[arg(long = "decode-images")]
        decode_images: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum CollectiveCommand {
    /// Runs burn's global collective orchestrator until stopped: the one process every node of
    /// a multi-machine `apo train` / `apo run` registers with (`--orchestrator ws://HOST:PORT`).
    Orchestrator {
        /// The port to listen on.
        #[arg(long, default_value_t = 3000)]
        port: u16,
    },
}

#[derive(Debug, Subcommand)]
enum TrainCommand {
    /// Stage 1: supervised bootstrapping on the union of all teacher trajectories.
    Sft {
        #[command(flatten)]
        common: TrainArgs,
    },
    /// Stage 2: constraint-aware optimisation on preference sets (data.preferences), from the
    /// stage-1 model, with the configured objective (Plackett-Luce by default).
    Apo {
        #[command(flatten)]
        common: TrainArgs,
        /// Stage folder name under the run folder (e.g. `pairwise` for a baseline).
        #[arg(long, default_value = "apo")]
        name: String,
    },
}

/// How a command reads a data set's records (as `apo data check` does).
#[derive(Debug, Clone, Default, clap::Args)]
struct SourceArgs {
    /// The records file, when the folder has several candidates.
    #[arg(long)]
    records: Option<PathBuf>,
    /// A TOML file naming the fields of an unforeseen record layout.
    #[arg(long)]
    mapping: Option<PathBuf>,
    /// Stop at the first rejected record instead of leaving it out (and counting it).
    #[arg(long)]
    strict: bool,
    /// Write every rejected record, with its file, line and reason, to this JSON Lines file.
    #[arg(long)]
    quarantine: Option<PathBuf>,
}

impl SourceArgs {
    fn source(&self) -> cxr_max::dataset::DataSource {
        cxr_max::dataset::DataSource {
            records: self.records.clone(),
            mapping: self.mapping.clone(),
            strict: self.strict,
            quarantine: self.quarantine.clone(),
        }
    }
}

/// Data parallelism (docs/training.md, "Several devices and machines").
#[derive(Debug, Clone, Default, clap::Args)]
struct ParallelArgs {
    /// Devices of the chosen kind on this machine, one worker each: every micro-batch is
    /// split across them and their gradients summed with burn's collective all-reduce
    /// (`[run] devices`; default 1).
    #[arg(long)]
    devices: Option<usize>,
    /// Machines taking part, each running the same command with its own --node-rank
    /// (`[run] nodes`).
    #[arg(long)]
    nodes: Option<u32>,
    /// This machine's index among the --nodes, from 0 (`[run] node_rank`).
    #[arg(long = "node-rank")]
    node_rank: Option<u32>,
    /// burn's global orchestrator, as `ws://HOST:PORT` (started with
    /// `apo collective orchestrator --port PORT`).
    #[arg(long)]
    orchestrator: Option<String>,
    /// This machine's address as the other nodes reach it, `ws://HOST:PORT`.
    #[arg(long = "node-address")]
    node_address: Option<String>,
    /// The port this machine serves tensors on to the other nodes.
    #[arg(long = "data-port")]
    data_port: Option<u16>,
    /// How one machine's workers sum the gradients: `collective` (burn-collective, every
    /// backend) or `nccl` (a build with the `distributed` feature, --device cuda, one machine)
    /// (`[run] all_reduce`).
    #[arg(long = "all-reduce", value_parser = ["collective", "nccl"])]
    all_reduce: Option<String>,
}

impl ParallelArgs {
    /// Sets the given flags over the configuration's `[run]` values.
    fn apply(&self, run: &mut apo_train::config::RunSettings) {
        if let Some(n) = self.devices {
            run.devices = n;
        }
        if let Some(n) = self.nodes {
            run.nodes = n;
        }
        if let Some(r) = self.node_rank {
            run.node_rank = r;
        }
        if self.orchestrator.is_some() {
            run.orchestrator.clone_from(&self.orchestrator);
        }
        if self.node_address.is_some() {
            run.node_address.clone_from(&self.node_address);
        }
        if self.data_port.is_some() {
            run.data_port = self.data_port;
        }
        match self.all_reduce.as_deref() {
            Some("nccl") => run.all_reduce = apo_train::config::AllReduce::Nccl,
            Some(_) => run.all_reduce = apo_train::config::AllReduce::Collective,
            None => {}
        }
    }
}

#[derive(Debug, clap::Args)]
struct TrainArgs {
    /// Run configuration (TOML or JSON); every field has a default (docs/training.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// cpu, wgpu or cuda (the GPU ones need a build with that feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Continue from the newest checkpoint of the stage.
    #[arg(long)]
    resume: bool,
    /// Train the stage again over a model it already wrote (without it, a trained stage is
    /// kept and the command stops: `--resume` continues it instead).
    #[arg(long)]
    force: bool,
    /// Resume from this checkpoint (`step-000040` or `40`) instead of the newest; the newer
    /// ones are removed. Implies `--resume`.
    #[arg(long = "from-checkpoint")]
    from_checkpoint: Option<String>,
    /// Float type of a Hugging Face student (`[student] hf`) on a GPU backend: f32, bf16
    /// (cuda) or f16. Weights, adapters, optimiser state and activations all take it; the
    /// small student and the CPU backend train in f32.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Print the stage report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    parallel: ParallelArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train the student (stage 1 `sft`, stage 2 `apo`).
    #[command(subcommand)]
    Train(TrainCommand),
    /// Generate a trajectory for every image of a split with a trained student, read the
    /// findings back with the labeler, and print per-finding accuracy.
    Eval {
        /// Run configuration (the same file as for training).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The stage folder under the run folder to evaluate (sft, apo, ...).
        #[arg(long, default_value = "apo")]
        stage: String,
        /// A model folder elsewhere (model.bin + model.json).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Split: train, validate, test or all.
        #[arg(long, default_value = "test")]
        split: String,
        /// cpu, wgpu or cuda.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Write every generated trajectory (JSONL) here.
        #[arg(long)]
        samples: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Consensus of teachers.
    #[command(subcommand)]
    Consensus(ConsensusCommand),
    /// The findings labeler on your reports: one CSV line per report, `id` then the 14
    /// CheXpert columns with 1.0 (present), 0.0 (absent), -1.0 (uncertain) or blank (not
    /// mentioned). Input: JSON Lines {"id", "text"} (e.g. the samples-*.jsonl files of
    /// `apo eval` and `apo demo`), a CSV with a header (report column `Report Impression`,
    /// `report`, `reports` or `text`, or --column; id column `id`, `dicom_id` or `study_id`,
    /// or --id-column, or the row number), or a CSV without a header (the CheXpert labeler's
    /// reports.csv). Records that cannot be read are listed on standard error with their
    /// line, and the exit status is 1.
    Label {
        /// The reports, or `-` for standard input.
        #[arg(long, short)]
        input: PathBuf,
        /// Output CSV (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Overwrite an existing output file.
        #[arg(long)]
        force: bool,
        /// jsonl, csv or csv-no-header (default: csv for a .csv file, else jsonl).
        #[arg(long)]
        format: Option<String>,
        /// CSV: the report column.
        #[arg(long)]
        column: Option<String>,
        /// CSV: the id column.
        #[arg(long = "id-column")]
        id_column: Option<String>,
        /// Extra labeler phrases and cues (TOML, the format of cxr-max's lexicon.toml).
        #[arg(long)]
        lexicon: Option<PathBuf>,
    },
    /// Data set validation.
    #[command(subcommand)]
    Data(DataCommand),
    /// Simulate a CXR-MAX + MIMIC-CXR-JPG data set in the real on-disk format.
    Synth {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Number of studies (one frontal image and one trajectory per teacher each).
        #[arg(long, default_value_t = 1000)]
        studies: usize,
        /// Seed; the data set is a function of it.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Teacher profiles (TOML); default: the embedded seven teachers of the paper.
        #[arg(long)]
        teachers: Option<PathBuf>,
        /// Image width and height in pixels.
        #[arg(long = "image-size", default_value_t = 128)]
        image_size: u32,
        /// Also render every test image once per Table 1 finding with that finding toggled
        /// (`counterfactuals/{dicom_id}/{finding}.jpg`, listed in `counterfactuals.jsonl`).
        #[arg(long)]
        counterfactuals: bool,
        /// Share of subtle images (fainter signs; every teacher's sensitivity on them times
        /// --subtle-sensitivity): the difficulty mix.
        #[arg(long = "subtle-rate", default_value_t = 0.25)]
        subtle_rate: f64,
        /// Factor on every teacher's sensitivity on a subtle image.
        #[arg(long = "subtle-sensitivity", default_value_t = 0.5)]
        subtle_sensitivity: f64,
        /// Factor on every teacher's false-positive rate on edema and pleural effusion on AP
        /// films.
        #[arg(long = "confounder-fp", default_value_t = 3.0)]
        confounder_fp: f64,
        /// Replace each teacher's drift by one change point at a seeded position where its
        /// balanced accuracy on each Table 1 finding moves by this much up or down
        /// (`Profiles::shifted`, seeded by --seed): a shifted world for generalisation.
        #[arg(long = "shift-teachers")]
        shift_teachers: Option<f64>,
        /// Write into a folder that already has files (records, tables, teachers.toml and
        /// images there are replaced).
        #[arg(long)]
        force: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Drift statistics and detectors.
    #[command(subcommand)]
    Drift(DriftCommand),
    /// burn's collective, for training on several machines.
    #[command(subcommand)]
    Collective(CollectiveCommand),
    /// Run the whole pipeline on a fresh simulation (the default when no command is given):
    /// simulate -> validate -> drift report -> consensus and preference sets -> stage 1 ->
    /// stage 2 with Plackett-Luce and, as the baseline, pairwise-sigmoid -> evaluation on the
    /// test split. Writes OUT/report.md, results.json, metric logs and plots, and prints the
    /// Table 1 analogue.
    Demo {
        /// Seed of the simulation and the training.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Teacher profiles (TOML); default: the embedded seven.
        #[arg(long)]
        teachers: Option<PathBuf>,
        /// Studies simulated.
        #[arg(long, default_value_t = apo_pipeline::demo::DEFAULT_STUDIES)]
        studies: usize,
        /// Run folder.
        #[arg(long, default_value = "runs/demo")]
        out: PathBuf,
        /// cpu, wgpu or cuda.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Stage-1 steps.
        #[arg(long = "sft-steps", default_value_t = 1600)]
        sft_steps: usize,
        /// Stage-2 steps per objective.
        #[arg(long = "apo-steps", default_value_t = 200)]
        apo_steps: usize,
        /// Encoder pretraining steps before stage 1 (0: none).
        #[arg(long = "pretrain-steps", default_value_t = 600)]
        pretrain_steps: usize,
        /// Score every row on this split: test (default) or validate (where settings are
        /// chosen without looking at the test split).
        #[arg(long = "eval-split", default_value = "test", value_parser = parse_eval_split)]
        eval_split: cxr_max::tables::Split,
        /// Also train and score the objective ablation: eleven stage-2 variants from the same
        /// stage-1 student (NLL only, N = 1 and 3 negatives, minimal-pair negatives, the
        /// listwise objectives, pairwise-sum, and β and learning rate of both objectives);
        /// about 2.5 minutes each on 2 cores.
        #[arg(long)]
        ablation: bool,
        /// Also simulate a generalisation data set (the teachers' drift shifted, twice the
        /// subtle images; OUT/data-shifted) and score every student and the teachers on it;
        /// about 2 minutes more on 2 cores.
        #[arg(long)]
        generalisation: bool,
        /// Print one JSON object at the end instead of the table.
        #[arg(long)]
        json: bool,
        /// Print the preference-objective table on an embedded group instead.
        #[arg(long)]
        objectives: bool,
    },
    /// Run the whole pipeline on any data set the readers accept, as described by a
    /// `pipeline.toml` (`data`, `out`, `[consensus]`, `[train]`; see docs/guide-real-data.md):
    /// validate -> drift report -> consensus and preference sets -> stage 1 -> stage 2 with
    /// Plackett-Luce and with pairwise-sigmoid -> evaluation on the test split. Each finished
    /// stage is recorded in OUT/stages/, so a rerun resumes at the first unfinished stage
    /// (a training stage from its newest checkpoint) and a changed input reruns the stages
    /// it feeds.
    Run {
        /// The pipeline configuration (TOML).
        #[arg(long)]
        config: PathBuf,
        /// cpu, wgpu or cuda.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Run every stage again instead of resuming.
        #[arg(long)]
        fresh: bool,
        /// Print one JSON object at the end instead of the table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        parallel: ParallelArgs,
    },
    /// Scores completions with a Hugging Face Qwen2-VL / Qwen2.5-VL checkpoint.
    ///
    /// Each line: {"images": ["a.png", ...], "prompt": "...", "completion": "..."}; relative
    /// image paths resolve against the input file's folder. The images and the prompt form a
    /// user message, the completion an assistant message, both rendered by the checkpoint's
    /// own chat template. Prints one line per row: {"logprob": <sum of the log-probs of the
    /// completion's tokens, TRL's definition>, "tokens": N}, or {"line": N, "error": ".."};
    /// exits with status 1 if any row failed.
    Score {
        /// The checkpoint folder (config.json, safetensors, tokenizer, chat template,
        /// preprocessor config), e.g. a download of Qwen/Qwen2.5-VL-7B-Instruct.
        #[arg(long)]
        model: PathBuf,
        /// A PEFT LoRA adapter folder (adapter_config.json, adapter_model.safetensors) to
        /// apply to the model.
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// Rows per batch (a right-padded forward pass for score, a left-padded generation
        /// for generate); every row's answer is what it gets alone.
        #[arg(long, default_value_t = 1)]
        batch_size: usize,
        /// Input file, or `-` for standard input (image paths then resolve against the
        /// working folder).
        #[arg(long, short)]
        input: PathBuf,
        /// Output file (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// cpu, wgpu or cuda.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// f32, bf16 (cuda) or f16 (GPU backends).
        #[arg(long, default_value = "f32")]
        dtype: String,
    },
    /// Continues prompts with a Hugging Face Qwen2-VL / Qwen2.5-VL checkpoint.
    ///
    /// Each line: {"images": [...], "prompt": "..."}; prints {"text": "..", "ids": [..]} per
    /// row (greedy unless --temperature > 0), or {"line": N, "error": ".."}.
    Generate {
        /// The checkpoint folder.
        #[arg(long)]
        model: PathBuf,
        /// A PEFT LoRA adapter folder (adapter_config.json, adapter_model.safetensors) to
        /// apply to the model.
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// Rows per batch (a right-padded forward pass for score, a left-padded generation
        /// for generate); every row's answer is what it gets alone.
        #[arg(long, default_value_t = 1)]
        batch_size: usize,
        /// Input file, or `-` for standard input.
        #[arg(long, short)]
        input: PathBuf,
        /// Output file (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Most new tokens per row (generation also stops at the end-of-turn token).
        #[arg(long, default_value_t = 128)]
        max_new_tokens: usize,
        /// 0 for greedy decoding; otherwise sample from softmax(logits / T).
        #[arg(long, default_value_t = 0.0)]
        temperature: f64,
        /// Seed of the sampler.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// cpu, wgpu or cuda.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// f32, bf16 (cuda) or f16 (GPU backends).
        #[arg(long, default_value = "f32")]
        dtype: String,
    },
    /// Writes a model in a format other tools load.
    #[command(subcommand)]
    Export(ExportCommand),
    /// Evaluate preference objectives on JSON-lines cases (a parity tool against TRL and others).
    ///
    /// Each line: {"objective":"plackett-luce","beta":0.1,"chosen":{"policy":-12.5,"reference":-13.0},
    /// "rejected":[{"policy":..,"reference":..},...]} with optional "id", "label_smoothing", "gamma",
    /// "sft_weight", "aggregation" ("sum"|"mean"), "reduction" ("mean"|"sum", pairwise
    /// objectives), "temperature" and "rewards" (infonca: one per sequence, chosen first),
    /// "weights" and per-sequence "tokens".
    /// Objectives: plackett-luce, pairwise-sigmoid, ipo, hinge, robust, simpo,
    /// plackett-luce-ranking, infonca.
    /// Defaults of a case's fields: objective plackett-luce, beta 0.1, label_smoothing 0,
    /// gamma 0.5 (simpo), sft_weight 0, aggregation sum (mean for ipo and simpo, as TRL),
    /// reduction mean, temperature 0.1 (infonca), every weight 1.
    /// Prints one line per case: {"loss":..,"grad_chosen":..,"grad_rejected":[..]}, or
    /// {"line":N,"error":".."}; exits with status 1 if any case failed. With --metrics each
    /// answer adds the rewards, the margins (margin_mean: the chosen reward minus the mean
    /// negative reward; margin_max: minus the largest, the hardest negative), the top-1 and
    /// pairwise accuracies and p_chosen (the Plackett-Luce probability of the chosen first).
    Loss {
        /// Input file, or `-` for standard input.
        #[arg(long, short)]
        input: PathBuf,
        /// Output file (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Add every case's metrics (rewards, margins, accuracies, p_chosen) to its answer.
        #[arg(long)]
        metrics: bool,
    },
}

/// `apo export ...`.
#[derive(Subcommand, Debug)]
enum ExportCommand {
    /// Writes the stage-1 training set for another trainer: one row per image and teacher
    /// trajectory that states a finding (refusals are left out and counted), image paths
    /// absolute, in our layout, TRL's conversational vision SFT layout or ms-swift's.
    Sft {
        /// The data set folder.
        dir: PathBuf,
        /// Output JSON Lines file (refused if it exists).
        #[arg(long)]
        out: PathBuf,
        /// ours, trl or swift.
        #[arg(long, default_value = "ours")]
        format: String,
        /// Only this split (train, validate, test); default: every image.
        #[arg(long)]
        split: Option<String>,
        /// Write image paths relative to this folder instead of absolute.
        #[arg(long = "relative-to")]
        relative_to: Option<PathBuf>,
        #[command(flatten)]
        source: SourceArgs,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Folds a PEFT LoRA adapter into its base checkpoint and writes the result in the base's
    /// own layout (shards, key names, dtypes; config, tokenizer and processor files copied), a
    /// folder transformers and vLLM load as they load the base.
    Merged {
        /// The base checkpoint folder.
        #[arg(long)]
        model: PathBuf,
        /// The adapter folder (adapter_config.json, adapter_model.safetensors).
        #[arg(long)]
        adapter: PathBuf,
        /// The new folder (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    apo_train::memory::keep_freed_memory();
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_env("APO_LOG").unwrap_or_else(|_| EnvFilter::new(&cli.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .init();
    let Some(command) = cli.command else {
        // A bare `apo` says what there is, and what the main job costs, instead of starting it.
        use clap::CommandFactory as _;
        let mut help = Cli::command();
        println!("{}", help.render_help());
        println!(
            "\nThe main job is `apo demo` (or `cargo run --release -- demo`): it simulates {} studies \
             with the seven default teachers and runs the whole method on them (drift report, \
             consensus, stage 1, stage 2 with Plackett-Luce and pairwise DPO, evaluation). It \
             takes 15-20 minutes on 2 cores with a release build and writes about 200 MB to \
             runs/demo (report.md, results.json, table.txt, plots; the simulated data set is \
             170 MB of it). `apo demo --help` lists its settings.",
            apo_pipeline::demo::DEFAULT_STUDIES
        );
        return ExitCode::SUCCESS;
    };
    match run(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `--eval-split`: test or validate (training images are never scored).
fn parse_eval_split(s: &str) -> Result<cxr_max::tables::Split, String> {
    match s.parse::<cxr_max::tables::Split>() {
        Ok(cxr_max::tables::Split::Train) | Err(_) => Err(format!(
            "`{s}` is not a split to score on; expected test or validate"
        )),
        Ok(split) => Ok(split),
    }
}

fn device_kind(name: &str) -> Result<apo_train::device::DeviceKind, String> {
    name.parse()
        .map_err(|e: apo_train::TrainError| e.to_string())
}

/// `apo score` / `apo generate`.
#[allow(clippy::too_many_arguments)] // one per command-line option
fn hf_command(
    model: &std::path::Path,
    adapter: Option<&std::path::Path>,
    batch: usize,
    input: &PathBuf,
    output: Option<&PathBuf>,
    device: &str,
    dtype: &str,
    task: apo_cli::commands::hf::Task,
) -> Result<ExitCode, String> {
    let kind = device_kind(device)?;
    let precision: apo_cli::commands::hf::Precision = dtype.parse()?;
    if batch == 0 {
        return Err("--batch-size 0: expected at least 1 row per batch".into());
    }
    let base = if input.as_os_str() == "-" {
        PathBuf::from(".")
    } else {
        input
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_else(|| PathBuf::from("."))
    };
    let reader = open_input(input)?;
    if let Some(path) = output
        && path.exists()
    {
        return Err(format!(
            "{}: exists; choose another --output or remove it",
            path.display()
        ));
    }
    let writer = open_output(output)?;
    let summary = apo_cli::commands::hf::run(
        model, adapter, batch, reader, writer, &base, kind, precision, task,
    )
    .map_err(|e| format!("{}: {e}", input.display()))?;
    tracing::info!(
        read = summary.read,
        answered = summary.answered,
        failed = summary.failed,
        "finished"
    );
    Ok(if summary.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `--output FILE` (created) or standard output, buffered.
fn open_output(output: Option<&PathBuf>) -> Result<Box<dyn io::Write>, String> {
    Ok(match output {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).map_err(|e| format!("{}: {e}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(io::stdout().lock())),
    })
}

fn open_input(input: &PathBuf) -> Result<Box<dyn io::BufRead>, String> {
    if input.as_os_str() == "-" {
        return Ok(Box::new(io::stdin().lock()));
    }
    let file = File::open(input).map_err(|e| format!("{}: {e}", input.display()))?;
    Ok(Box::new(BufReader::new(file)))
}

fn run(command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Consensus(ConsensusCommand::Votes {
            method,
            input,
            weights,
            posteriors,
            skills,
        }) => {
            let method: apo_consensus::Method = method.parse().map_err(|e| format!("{e}"))?;
            let reader = open_input(&input)?;
            let weights_path = weights.clone();
            let weights = weights.as_ref().map(open_input).transpose()?;
            let out = io::stdout().lock();
            use apo_cli::commands::consensus::VotesError;
            if let Some(p) = &skills
                && p.exists()
            {
                return Err(format!(
                    "{}: exists; choose another --skills file",
                    p.display()
                ));
            }
            let mut skills_file = skills
                .as_ref()
                .map(|p| {
                    std::fs::File::create(p)
                        .map(io::BufWriter::new)
                        .map_err(|e| format!("{}: {e}", p.display()))
                })
                .transpose()?;
            let output = apo_cli::commands::consensus::VotesOutput {
                posteriors,
                skills: skills_file.as_mut().map(|f| f as &mut dyn io::Write),
            };
            let result =
                apo_cli::commands::consensus::votes_with(method, reader, weights, out, output)
                    .map_err(|e| match (e, &weights_path) {
                        (VotesError::Weights(e), Some(w)) => format!("{}: {e}", w.display()),
                        (e, _) => format!("{}: {e}", input.display()),
                    })?;
            if let (Some(f), Some(p)) = (skills_file.as_mut(), &skills) {
                io::Write::flush(f).map_err(|e| format!("{}: {e}", p.display()))?;
            }
            tracing::info!(tasks = result.len(), "consensus votes");
            Ok(ExitCode::SUCCESS)
        }
        Command::Consensus(ConsensusCommand::Build {
            dir,
            out,
            method,
            weights,
            negatives,
            negative_weights,
            export,
            split,
            min_votes,
            min_confidence,
            min_agreement,
            min_support,
            positive,
            relative_to,
            source,
            json,
        }) => {
            use apo_pipeline::consensus as cb;
            let consensus_err = |e: apo_consensus::ConsensusError| e.to_string();
            let mut options = cb::BuildOptions::new(dir, out);
            options.method = method.parse().map_err(consensus_err)?;
            if let Some(w) = &weights {
                options.weights = apo_pipeline::labels::Weights::Static(
                    apo_cli::commands::consensus::read_weights(open_input(w)?)
                        .map_err(|e| format!("{}: {e}", w.display()))?,
                );
            }
            options.preference.negatives = negatives.parse().map_err(consensus_err)?;
            options.preference.weighting = negative_weights.parse().map_err(consensus_err)?;
            options.preference.min_confidence = min_confidence;
            options.preference.min_agreement = min_agreement;
            options.export = export.parse().map_err(consensus_err)?;
            options.split = split
                .map(|s| {
                    s.parse::<cxr_max::tables::Split>()
                        .map_err(|e| e.to_string())
                })
                .transpose()?;
            options.min_votes = min_votes;
            options.claims.min_support = min_support;
            options.claims.style = positive.parse().map_err(consensus_err)?;
            options.relative_to = relative_to;
            options.source = source.source();
            let summary = cb::build(&options).map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&summary).map_err(|e| e.to_string())?
                );
            } else {
                print!("{}", summary.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Train(cmd) => {
            use apo_cli::commands::train as t;
            let (common, stage) = match cmd {
                TrainCommand::Sft { common } => (common, t::Stage::Sft),
                TrainCommand::Apo { common, name } => (common, t::Stage::Apo(name)),
            };
            let mut config = t::load_config(common.config.as_deref()).map_err(|e| e.to_string())?;
            common.parallel.apply(&mut config.run);
            config.run.validate_parallel().map_err(|e| e.to_string())?;
            let kind = device_kind(&common.device)?;
            let precision: apo_cli::commands::hf::Precision = common.dtype.parse()?;
            let mut common = common;
            if let Some(c) = &common.from_checkpoint {
                let step: usize = c.strip_prefix("step-").unwrap_or(c).parse().map_err(|_| {
                    format!("--from-checkpoint {c}: expected a step number or step-NNNNNN")
                })?;
                config.run.from_checkpoint = Some(step);
                common.resume = true;
            }
            // Ctrl-C: finish the step, write a checkpoint and stop; a second Ctrl-C exits now.
            #[cfg(unix)]
            {
                use signal_hook::consts::SIGINT;
                let flag = apo_train::train::stop_flag();
                signal_hook::flag::register_conditional_shutdown(SIGINT, 130, flag.clone())
                    .and_then(|_| signal_hook::flag::register(SIGINT, flag))
                    .map_err(|e| format!("cannot install the SIGINT handler: {e}"))?;
            }
            if !common.resume && !common.force {
                let name = match &stage {
                    t::Stage::Sft => "sft",
                    t::Stage::Apo(n) => n.as_str(),
                };
                let dir = config.run.out.join(name);
                let trained = [
                    dir.join("model.bin"),
                    dir.join("adapter/adapter_config.json"),
                ];
                if let Some(found) = trained.iter().find(|p| p.exists()) {
                    return Err(format!(
                        "{}: stage `{name}` is already trained; pass --resume to continue it, --force to train it again, or choose another run.out",
                        found.display()
                    ));
                }
            }
            let mut bar = apo_train::train::TrainProgress::stderr();
            let job = t::TrainJob {
                config: &config,
                stage,
                resume: common.resume,
                observer: &mut bar,
            };
            let report = match t::dispatch_hf(kind, precision, job) {
                Ok(r) => r,
                Err(e @ apo_train::TrainError::Interrupted { .. }) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(130));
                }
                Err(e) => return Err(e.to_string()),
            };
            if common.json {
                println!(
                    "{}",
                    serde_json::to_string(&report).map_err(|e| e.to_string())?
                );
            } else {
                println!(
                    "{}: {} steps{} in {:.1} s, loss {:.4} -> {:.4}; model in {}",
                    report.stage,
                    report.steps,
                    report
                        .resumed_from
                        .map(|s| format!(" (resumed at step {s})"))
                        .unwrap_or_default(),
                    report.seconds,
                    report.first_loss,
                    report.last_loss,
                    report.model_dir.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval {
            config,
            stage,
            model,
            split,
            device,
            samples,
            json,
        } => {
            use apo_cli::commands::train as t;
            let config = t::load_config(config.as_deref()).map_err(|e| e.to_string())?;
            let kind = device_kind(&device)?;
            let job = t::eval_job(&config, model.as_deref(), &stage, &split);
            let report = t::dispatch(kind, job).map_err(|e| e.to_string())?;
            if let Some(path) = &samples {
                apo_pipeline::write_samples(path, &report).map_err(|e| e.to_string())?;
            }
            if json {
                let mut v = serde_json::to_value(&report).map_err(|e| e.to_string())?;
                v.as_object_mut().map(|o| o.remove("samples"));
                println!("{v}");
            } else {
                print!("{}", report.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Data(DataCommand::Check {
            dir,
            strict,
            quarantine,
            records,
            mapping,
            decode_images,
            json,
        }) => {
            let options = data::CheckOptions {
                dir,
                records,
                mapping,
                strict,
                quarantine,
                decode_images,
                json,
            };
            let report = data::check(&options, io::stdout().lock())?;
            tracing::info!(
                records_read = report.records.read,
                kept = report.samples.kept,
                problems = report.problems.len(),
                reconciles = report.reconciles(),
                "data check"
            );
            Ok(if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Synth {
            out,
            studies,
            seed,
            teachers,
            image_size,
            counterfactuals,
            subtle_rate,
            subtle_sensitivity,
            confounder_fp,
            shift_teachers,
            force,
            json,
        } => {
            if !force && let Ok(entries) = std::fs::read_dir(&out) {
                let names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                if !names.is_empty() {
                    return Err(format!(
                        "{}: the folder is not empty ({} entries, e.g. {}); choose a new folder or pass --force to write over its files",
                        out.display(),
                        names.len(),
                        names.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
            let profiles = match &teachers {
                Some(path) => cxr_max::sim::Profiles::from_file(path).map_err(|e| e.to_string())?,
                None => cxr_max::sim::Profiles::embedded(),
            };
            let profiles = match shift_teachers {
                Some(shift) if !(0.0..=0.5).contains(&shift) => {
                    return Err(format!(
                        "--shift-teachers {shift}: expected a balanced-accuracy shift in [0, 0.5]"
                    ));
                }
                Some(shift) => profiles.shifted(shift, seed),
                None => profiles,
            };
            let config = cxr_max::sim::SynthConfig {
                studies,
                seed,
                image_size,
                profiles,
                counterfactuals,
                subtle_rate,
                subtle_sensitivity,
                confounder_fp,
                ..Default::default()
            };
            let start = std::time::Instant::now();
            let summary = cxr_max::sim::synthesize(&out, &config).map_err(|e| e.to_string())?;
            let seconds = start.elapsed().as_secs_f64();
            if json {
                let mut v = serde_json::to_value(&summary).map_err(|e| e.to_string())?;
                v["seconds"] = serde_json::json!(seconds);
                v["out"] = serde_json::json!(out.display().to_string());
                println!("{v}");
            } else {
                println!(
                    "wrote {} studies, {} trajectories from {} teachers ({} refusals) to {} in {seconds:.1} s",
                    summary.studies,
                    summary.trajectories,
                    summary.teachers.len(),
                    summary.refusals,
                    out.display()
                );
                println!(
                    "splits: train {}, validate {}, test {}",
                    summary.splits[0], summary.splits[1], summary.splits[2]
                );
                println!(
                    "images: {} subtle, {} AP films; {} counterfactual renders",
                    summary.subtle, summary.ap, summary.counterfactuals
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Collective(CollectiveCommand::Orchestrator { port }) => {
            eprintln!("burn collective orchestrator on port {port} (Ctrl-C stops it)");
            apo_train::parallel::orchestrator(port).map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Drift(DriftCommand::Report {
            dir,
            out,
            detector,
            params,
            max_steps,
            source,
            json,
        }) => {
            let params = drift::parse_params(&params)?;
            let pairs: Vec<(&str, &str)> = params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let detector = apo_drift::DetectorConfig::from_params(&detector, &pairs)
                .map_err(|e| e.to_string())?;
            let options = apo_pipeline::DriftOptions {
                detector,
                max_steps,
                expected: Default::default(),
            };
            let mut report = apo_pipeline::drift::report_dir_from(&dir, &source.source(), &options)
                .map_err(|e| e.to_string())?;
            report.files = apo_cli::commands::pipeline::drift_plots(&report, &out)?;
            let json_path = out.join("drift.json");
            report.files.push(json_path.clone());
            report.write_json(&json_path).map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&report).map_err(|e| e.to_string())?
                );
            } else {
                print!("{}", report.render());
                for f in &report.files {
                    println!("wrote {}", f.display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Drift(DriftCommand::Detect {
            detector,
            params,
            input,
            warnings,
            follow,
        }) => {
            let params = drift::parse_params(&params)?;
            let reader = open_input(&input)?;
            if follow {
                let (_, bad) = drift::follow(&detector, &params, reader, io::stdout(), warnings)
                    .map_err(|e| format!("{}: {e}", input.display()))?;
                return Ok(if bad.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
            }
            match drift::detect(&detector, &params, reader, io::stdout().lock(), warnings) {
                Ok(_) => Ok(ExitCode::SUCCESS),
                Err(drift::DetectError::BadLines(lines)) => {
                    for l in &lines {
                        eprintln!("{}:{}: {}", input.display(), l.line, l.error);
                    }
                    eprintln!("error: {} line(s) are not finite numbers", lines.len());
                    Ok(ExitCode::FAILURE)
                }
                Err(e) => Err(format!("{}: {e}", input.display())),
            }
        }
        Command::Demo {
            seed,
            teachers,
            studies,
            out,
            device,
            sft_steps,
            apo_steps,
            pretrain_steps,
            eval_split,
            ablation,
            generalisation,
            json,
            objectives,
        } => {
            if objectives {
                demo::run(io::stdout().lock(), json).map_err(|e| e.to_string())?;
                return Ok(ExitCode::SUCCESS);
            }
            let options = apo_pipeline::demo::DemoOptions {
                seed,
                studies,
                teachers,
                out,
                sft_steps,
                apo_steps,
                pretrain_steps,
                eval_split,
                ablation,
                generalisation,
            };
            let kind = device_kind(&device)?;
            let mut observer = p::CliObserver::new(!json);
            let job = p::DemoJob {
                options: &options,
                observer: &mut observer,
            };
            let result = dispatch(kind, job).map_err(|e| e.to_string())?;
            p::print_result(&result, &options.out, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            config,
            device,
            fresh,
            json,
            parallel,
        } => {
            let c = apo_pipeline::PipelineConfig::from_file(&config).map_err(|e| e.to_string())?;
            let kind = device_kind(&device)?;
            let mut options = c.options(!fresh).map_err(|e| e.to_string())?;
            parallel.apply(&mut options.train.run);
            options
                .train
                .run
                .validate_parallel()
                .map_err(|e| e.to_string())?;
            let mut observer = p::CliObserver::new(!json);
            let job = p::RunJob {
                options: &options,
                observer: &mut observer,
            };
            let result = dispatch(kind, job).map_err(|e| e.to_string())?;
            p::print_result(&result, &options.out, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Label {
            input,
            output,
            force,
            format,
            column,
            id_column,
            lexicon,
        } => {
            let args = apo_cli::commands::label::LabelArgs {
                input,
                output,
                force,
                format,
                column,
                id_column,
                lexicon,
            };
            let reader = open_input(&args.input)?;
            let summary = apo_cli::commands::label::label(&args, reader, io::stdout().lock())?;
            for r in &summary.rejected {
                eprintln!("{}:{}: {}", args.input.display(), r.line, r.reason);
            }
            tracing::info!(
                read = summary.read,
                labelled = summary.labelled,
                rejected = summary.rejected.len(),
                "apo label finished"
            );
            Ok(if summary.rejected.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Score {
            model,
            adapter,
            batch_size,
            input,
            output,
            device,
            dtype,
        } => hf_command(
            &model,
            adapter.as_deref(),
            batch_size,
            &input,
            output.as_ref(),
            &device,
            &dtype,
            apo_cli::commands::hf::Task::Score,
        ),
        Command::Generate {
            model,
            adapter,
            batch_size,
            input,
            output,
            max_new_tokens,
            temperature,
            seed,
            device,
            dtype,
        } => {
            if !(temperature >= 0.0 && temperature.is_finite()) {
                return Err(format!(
                    "--temperature {temperature}: expected a number >= 0"
                ));
            }
            let opts = apo_models::model::GenerateOptions {
                max_new_tokens,
                temperature,
                seed,
                stop: Vec::new(),
            };
            hf_command(
                &model,
                adapter.as_deref(),
                batch_size,
                &input,
                output.as_ref(),
                &device,
                &dtype,
                apo_cli::commands::hf::Task::Generate(opts),
            )
        }
        Command::Export(ExportCommand::Sft {
            dir,
            out,
            format,
            split,
            relative_to,
            source,
            json,
        }) => {
            if out.exists() {
                return Err(format!(
                    "{}: exists; choose another --out or remove it",
                    out.display()
                ));
            }
            let options = apo_pipeline::sft_export::SftExportOptions {
                dir,
                out,
                format: format.parse()?,
                split: split
                    .map(|s| {
                        s.parse::<cxr_max::tables::Split>()
                            .map_err(|e| e.to_string())
                    })
                    .transpose()?,
                relative_to,
                source: source.source(),
            };
            let summary =
                apo_pipeline::sft_export::export_sft(&options).map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&summary).map_err(|e| e.to_string())?
                );
            } else {
                print!("{}", summary.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Export(ExportCommand::Merged {
            model,
            adapter,
            out,
        }) => {
            let s = apo_models::lora::export_merged(&model, &adapter, &out)
                .map_err(|e| e.to_string())?;
            eprintln!(
                "wrote {}: {} tensors ({} with the adapter folded in), {} other files copied",
                out.display(),
                s.tensors,
                s.merged,
                s.copied
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Loss {
            input,
            output,
            metrics,
        } => {
            let reader = open_input(&input)?;
            let writer = open_output(output.as_ref())?;
            let options = loss::LossOptions { metrics };
            let summary = loss::run(reader, writer, options)
                .map_err(|e| format!("{}: {e}", input.display()))?;
            tracing::info!(
                read = summary.read,
                answered = summary.answered,
                failed = summary.failed,
                "apo loss finished"
            );
            Ok(if summary.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
