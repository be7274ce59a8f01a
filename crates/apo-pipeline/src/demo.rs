//! The demo's presets: what `apo demo` (and `cargo run --release`) runs. [`run`] simulates
//! a data set with the seven default teacher profiles, then runs the whole pipeline
//! ([`crate::run`]) with the demo's training configuration ([`config`]). [`rows`] is the
//! objective table of `apo demo --objectives`: every preference objective on an embedded APO
//! group (one consensus trajectory and the trajectories of the seven source models, scored by
//! a policy that has moved away from its reference).

use apo_loss::{Example, LossConfig, Objective, Sequence};
use apo_train::TrainBackend;
use serde::Serialize;

use crate::error::{PipelineError, Result};
use crate::{Observer, PipelineOptions, PipelineResult};

/// The seven source models of CXR-MAX, in the order of the paper's Table 1.
pub const TEACHERS: [&str; 7] = [
    "GPT-5",
    "Gemini-2.5",
    "Sonnet-4",
    "Qwen-VL-Max",
    "Grok-4",
    "GLM-4.5V",
    "Moonshot",
];

/// The embedded group: summed log-probs (policy, reference) and token counts.
pub fn embedded_group() -> Example {
    let chosen = Sequence::new(-182.4, -190.1).with_tokens(96);
    let rejected = [
        (-201.7, -203.0, 104),
        (-236.2, -230.9, 121),
        (-214.8, -214.1, 110),
        (-175.3, -178.8, 88),
        (-242.6, -236.0, 117),
        (-198.4, -199.9, 99),
        (-301.5, -288.2, 140),
    ]
    .into_iter()
    .map(|(p, r, t)| Sequence::new(p, r).with_tokens(t))
    .collect();
    Example::new(chosen, rejected)
}

/// One row of the demo table.
#[derive(Debug, Clone, Serialize)]
pub struct DemoRow {
    /// Objective name.
    pub objective: String,
    /// Loss value.
    pub loss: f64,
    /// Loss at step 0 (policy equal to reference).
    pub loss_at_step_zero: f64,
    /// d loss / d log π(consensus).
    pub grad_chosen: f64,
    /// d loss / d log π(teacher u).
    pub grad_rejected: Vec<f64>,
    /// Plackett-Luce probability of the consensus.
    pub p_chosen: f64,
    /// `1[s_0 > max_u s_u]`.
    pub top1_accuracy: f64,
    /// `mean_u 1[s_0 > s_u]`.
    pub pairwise_accuracy: f64,
}

/// Computes the demo table.
///
/// # Errors
/// Only if the embedded group were invalid for an objective.
pub fn rows() -> apo_loss::Result<Vec<DemoRow>> {
    let group = embedded_group();
    let mut step_zero = group.clone();
    for s in std::iter::once(&mut step_zero.chosen).chain(step_zero.rejected.iter_mut()) {
        s.reference = Some(s.policy);
    }
    Objective::ALL
        .into_iter()
        .map(|objective| {
            let loss = LossConfig::new(objective).init()?;
            let out = loss.compute(&group)?;
            let zero = loss.compute(&step_zero)?;
            Ok(DemoRow {
                objective: objective.to_string(),
                loss: out.loss,
                loss_at_step_zero: zero.loss,
                grad_chosen: out.grad_chosen,
                grad_rejected: out.grad_rejected,
                p_chosen: out.metrics.p_chosen,
                top1_accuracy: out.metrics.top1_accuracy,
                pairwise_accuracy: out.metrics.pairwise_accuracy,
            })
        })
        .collect()
}

/// Options of the full demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Simulation seed (also the training seed).
    pub seed: u64,
    /// Studies simulated.
    pub studies: usize,
    /// Teacher profiles (default: the embedded seven).
    pub teachers: Option<std::path::PathBuf>,
    /// Run folder.
    pub out: std::path::PathBuf,
    /// Stage-1 steps.
    pub sft_steps: usize,
    /// Stage-2 steps (each objective).
    pub apo_steps: usize,
    /// Encoder pretraining steps before stage 1 (0: none).
    pub pretrain_steps: usize,
    /// The split the rows are scored on (test; validate while settings are chosen).
    pub eval_split: cxr_max::tables::Split,
    /// Also train and score the objective ablation's stage-2 variants ([`ablation`]).
    pub ablation: bool,
    /// Also simulate the shifted data set ([`simulate_shifted`]) and score every student and
    /// the teachers on it.
    pub generalisation: bool,
}

/// The balanced-accuracy shift of every teacher's Table 1 rates in the generalisation data
/// set ([`cxr_max::sim::Profiles::shifted`]).
pub const GENERALISATION_SHIFT: f64 = 0.1;

/// The share of subtle images in the generalisation data set (training: 0.25).
pub const GENERALISATION_SUBTLE_RATE: f64 = 0.5;

/// The pairwise baseline's β in the demo: chosen per objective on the validate split of seed
/// 100 (docs/results.md, the objective ablation: pairwise-sigmoid 0.730 at β = 0.5 against
/// 0.712 at 0.1; Plackett-Luce 0.729 at 0.1 against 0.712 at 0.5).
pub const PAIRWISE_BETA: f64 = 0.5;

/// The pairwise baseline's stage-2 configuration in the demo: `apo` (the demo's
/// `[train.apo]`) with [`PAIRWISE_BETA`] and the pairwise-sigmoid objective.
pub fn pairwise(apo: &apo_train::config::ApoConfig) -> apo_train::config::ApoConfig {
    let mut p = apo.clone();
    p.loss.objective = Objective::PairwiseSigmoid;
    p.loss.beta = PAIRWISE_BETA;
    p
}

/// The generalisation data set's seed offset from the demo's seed (other images, other
/// teacher statements, another drift).
pub const GENERALISATION_SEED_OFFSET: u64 = 1_000_003;

/// The objective ablation: stage-2 variants of `base` (the demo's `[train.apo]`), each
/// trained from the same stage-1 student as the APO (`plackett-luce`, every teacher
/// negative) and pairwise (`pairwise-sigmoid`, mean over negatives) students:
///
/// - `nll-only`: the preference term off (`loss.preference_weight = 0`), the consensus NLL
///   alone: what stage 2 does without any negative;
/// - `apo-top-1`, `apo-top-3`: Plackett-Luce with the 1 or 3 most drifting teachers as the
///   negatives (N = 1 is DPO), against N = 7 for the APO student;
/// - `apo-edits`: Plackett-Luce over minimal pairs (`edits-7`: the consensus with one
///   finding flipped), negatives hard in content rather than in form;
/// - `pl-ranking`, `infonca`: the listwise objectives (the full ranking by drift; soft
///   targets from `1 − drift`);
/// - `pairwise-sum`: the pairwise objective summed over the negatives instead of averaged;
/// - `apo-beta-0.5`, `pairwise-beta-0.1`, `apo-lr-1e-3`, `pairwise-lr-1e-3`: β and the peak
///   learning rate of the two main objectives (the pairwise student is at
///   [`PAIRWISE_BETA`]), chosen on the validate split.
///
/// The pairwise variants start from the demo's pairwise student ([`pairwise`]), the others
/// from the APO student's settings.
pub fn ablation(base: &apo_train::config::ApoConfig) -> Vec<crate::Variant> {
    use apo_consensus::NegativePolicy;
    use apo_loss::Reduction;
    let with = |change: &dyn Fn(&mut apo_train::config::ApoConfig)| {
        let mut a = base.clone();
        change(&mut a);
        a
    };
    let variant = |name: &str, negatives, apo| crate::Variant {
        name: name.to_owned(),
        negatives,
        apo,
    };
    let pairwise_student = pairwise(base);
    let pairwise = |a: &mut apo_train::config::ApoConfig| {
        *a = pairwise_student.clone();
    };
    vec![
        variant("nll-only", None, with(&|a| a.loss.preference_weight = 0.0)),
        variant("apo-top-1", Some(NegativePolicy::TopK(1)), base.clone()),
        variant("apo-top-3", Some(NegativePolicy::TopK(3)), base.clone()),
        variant("apo-edits", Some(NegativePolicy::Edits(7)), base.clone()),
        variant(
            "pl-ranking",
            None,
            with(&|a| a.loss.objective = Objective::PlackettLuceRanking),
        ),
        variant(
            "infonca",
            None,
            with(&|a| a.loss.objective = Objective::Infonca),
        ),
        variant(
            "pairwise-sum",
            None,
            with(&|a| {
                pairwise(a);
                a.loss.reduction = Reduction::Sum;
            }),
        ),
        variant("apo-beta-0.5", None, with(&|a| a.loss.beta = 0.5)),
        variant(
            "pairwise-beta-0.1",
            None,
            with(&|a| {
                pairwise(a);
                a.loss.beta = 0.1;
            }),
        ),
        variant(
            "apo-lr-1e-3",
            None,
            with(&|a| a.optim.learning_rate = Some(1e-3)),
        ),
        variant(
            "pairwise-lr-1e-3",
            None,
            with(&|a| {
                pairwise(a);
                a.optim.learning_rate = Some(1e-3);
            }),
        ),
    ]
}

/// The demo's training configuration: the defaults of `apo-train` with the step counts,
/// and three choices measured on the default simulation (docs/results.md):
///
/// - stage 1 trains on one (image, teacher) row per unit, 8 per step (ms-swift's row layout):
///   more distinct images per step than whole groups of seven, which is what makes the
///   student's text depend on the image within the demo's budget;
/// - stage 2 adds the token-mean NLL of the consensus with weight 1 (`sft_weight`, ms-swift
///   3.x's `rpo_alpha = 1` default) to both objectives: without it the policy wins the
///   preference by wrecking the likelihood of tokens the consensus shares with the negatives,
///   and its greedy text degenerates;
/// - a concept head on the image (`concept_weight = 1`, targets: the findings of each
///   image's consensus trajectory, in both stages) whose probabilities feed every text
///   embedding (`concept_input`): a student learning vision and language from scratch
///   otherwise writes the same image-blind text on every image within the budget; with it,
///   a stage-2 peak learning rate of 5e-4 (instead of 2e-4) moves the students' statements
///   from the teachers' towards the consensus's within the 200 steps;
/// - the grounded student (chosen on the validate split of seed 100, docs/results.md): the
///   concept head pools the image by per-finding attention (`concept_pooling = attention`)
///   and learns class-balanced targets (`concept_balance`), the encoder and head are
///   pretrained on the consensus findings for 600 steps of 32 images before stage 1
///   (`[pretrain]`), and both stages oversample the images whose consensus states a rare
///   Table 1 finding (`data.oversample = table1`), so that the text's statements follow the
///   head instead of the teachers' base rates.
pub fn config(options: &DemoOptions) -> apo_train::RunConfig {
    let mut c = apo_train::RunConfig::default();
    c.data.truncate = true;
    c.data.trajectories_per_group = 1;
    c.run.seed = options.seed;
    c.run.checkpoint_every = 0;
    c.sft.steps = options.sft_steps;
    c.sft.batch_size = 8;
    c.apo.optim.steps = options.apo_steps;
    c.apo.loss.sft_weight = 1.0;
    c.model.concept_weight = 1.0;
    c.model.concept_input = true;
    c.apo.optim.learning_rate = Some(5e-4);
    c.model.concept_pooling = apo_train::ConceptPooling::Attention;
    c.model.concept_balance = true;
    c.pretrain.optim.steps = options.pretrain_steps;
    c.data.oversample = apo_train::config::Oversample::Table1;
    c
}

/// Studies `apo demo` simulates: about 1,000 test images (10 % of the studies are test).
pub const DEFAULT_STUDIES: usize = 10_000;

impl Default for DemoOptions {
    /// `apo demo`'s defaults: seed 0, [`DEFAULT_STUDIES`] studies, the embedded teachers,
    /// `runs/demo`, 600 encoder-pretraining, 1,600 stage-1 and 200 stage-2 steps.
    fn default() -> Self {
        DemoOptions {
            seed: 0,
            studies: DEFAULT_STUDIES,
            teachers: None,
            out: std::path::PathBuf::from("runs/demo"),
            sft_steps: 1600,
            apo_steps: 200,
            pretrain_steps: 600,
            eval_split: cxr_max::tables::Split::Test,
            ablation: false,
            generalisation: false,
        }
    }
}

/// `OUT/NAME`, emptied of an earlier simulation, and the demo's teacher profiles.
fn fresh(
    options: &DemoOptions,
    name: &str,
) -> Result<(std::path::PathBuf, cxr_max::sim::Profiles)> {
    let data = options.out.join(name);
    if data.exists() {
        std::fs::remove_dir_all(&data).map_err(PipelineError::io(&data))?;
    }
    let profiles = match &options.teachers {
        Some(p) => cxr_max::sim::Profiles::from_file(p)?,
        None => cxr_max::sim::Profiles::embedded(),
    };
    Ok((data, profiles))
}

/// Simulates the demo's data set into `OUT/data` (replacing an earlier simulation there).
///
/// # Errors
/// Simulation and file errors.
pub fn simulate(options: &DemoOptions) -> Result<std::path::PathBuf> {
    let (data, profiles) = fresh(options, "data")?;
    cxr_max::sim::synthesize(
        &data,
        &cxr_max::sim::SynthConfig {
            studies: options.studies,
            seed: options.seed,
            image_size: 64,
            profiles,
            counterfactuals: true,
            ..Default::default()
        },
    )?;
    Ok(data)
}

/// Simulates the generalisation data set into `OUT/data-shifted` (replacing an earlier one):
/// as many studies as the demo's, seed `seed + GENERALISATION_SEED_OFFSET`, the demo's
/// teachers with their drift shifted ([`cxr_max::sim::Profiles::shifted`] by
/// [`GENERALISATION_SHIFT`]) and [`GENERALISATION_SUBTLE_RATE`] of the images subtle.
///
/// # Errors
/// Simulation and file errors.
pub fn simulate_shifted(options: &DemoOptions) -> Result<std::path::PathBuf> {
    let (data, profiles) = fresh(options, "data-shifted")?;
    let seed = options.seed.wrapping_add(GENERALISATION_SEED_OFFSET);
    cxr_max::sim::synthesize(
        &data,
        &cxr_max::sim::SynthConfig {
            studies: options.studies,
            seed,
            image_size: 64,
            profiles: profiles.shifted(GENERALISATION_SHIFT, seed),
            subtle_rate: GENERALISATION_SUBTLE_RATE,
            ..Default::default()
        },
    )?;
    Ok(data)
}

/// Simulates the data set and runs the whole pipeline on it ([`crate::run`]).
///
/// # Errors
/// Simulation and pipeline errors.
pub fn run<B: TrainBackend>(
    options: &DemoOptions,
    device: &B::Device,
    observer: &mut dyn Observer,
) -> Result<PipelineResult> {
    let start = std::time::Instant::now();
    observer.message(&format!(
        "simulate: {} studies, seed {}",
        options.studies, options.seed
    ));
    let data = simulate(options)?;
    let simulate_s = start.elapsed().as_secs_f64();
    let mut pipeline = PipelineOptions::new(data, options.out.clone(), config(options));
    pipeline.eval_split = options.eval_split;
    pipeline.pairwise = Some(pairwise(&pipeline.train.apo));
    if options.ablation {
        pipeline.variants = ablation(&pipeline.train.apo);
    }
    let mut simulate_s = simulate_s;
    if options.generalisation {
        let t = std::time::Instant::now();
        observer.message(&format!(
            "simulate: the generalisation data set ({} studies, teachers' drift shifted by \
             {GENERALISATION_SHIFT}, {:.0} % subtle images)",
            options.studies,
            100.0 * GENERALISATION_SUBTLE_RATE
        ));
        pipeline.generalisation = Some(simulate_shifted(options)?);
        simulate_s += t.elapsed().as_secs_f64();
    }
    let mut result = crate::run::<B>(&pipeline, device, observer)?;
    result.phases.insert("simulate".into(), simulate_s);
    result.seconds = start.elapsed().as_secs_f64();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_rows_are_consistent() {
        let rows = rows().unwrap();
        assert_eq!(rows.len(), Objective::ALL.len());
        assert!((rows[0].loss_at_step_zero - 8f64.ln()).abs() < 1e-12);
        // Plackett-Luce pushes down every teacher: all rejected gradients are positive.
        assert!(rows[0].grad_rejected.iter().all(|&g| g > 0.0));
        assert!(rows[0].grad_chosen < 0.0);
        assert_eq!(rows[0].grad_rejected.len(), TEACHERS.len());
    }

    /// Every ablation variant is a valid, distinct stage-2 setting with a name the pipeline
    /// accepts, and differs from the demo's in what its name says.
    #[test]
    fn ablation_variants_are_valid_and_distinct() {
        let base = config(&DemoOptions::default());
        let variants = ablation(&base.apo);
        assert_eq!(variants.len(), 11);
        let mut seen = std::collections::BTreeSet::new();
        for v in &variants {
            let again = crate::Variant::new(&v.name, v.negatives, &v.apo, &Default::default())
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(again, *v);
            let mut c = base.clone();
            c.apo = v.apo.clone();
            c.validate().unwrap_or_else(|e| panic!("{}: {e}", v.name));
            assert!(
                v.apo != base.apo || v.negatives.is_some(),
                "{} is the APO student",
                v.name
            );
            assert!(
                seen.insert((json(&v.apo), v.negatives.map(|n| n.to_string()))),
                "{} repeats",
                v.name
            );
            let pairwise = v.apo.loss.objective == Objective::PairwiseSigmoid;
            assert_eq!(pairwise, v.name.starts_with("pairwise"), "{}", v.name);
        }
        let by = |n: &str| variants.iter().find(|v| v.name == n).unwrap();
        assert_eq!(by("nll-only").apo.loss.preference_weight, 0.0);
        assert_eq!(by("nll-only").apo.loss.sft_weight, 1.0);
        assert_eq!(
            by("apo-edits").negatives,
            Some(apo_consensus::NegativePolicy::Edits(7))
        );
        assert_eq!(by("apo-top-1").apo, base.apo);
        assert_eq!(by("pairwise-lr-1e-3").apo.optim.learning_rate, Some(1e-3));
        assert_eq!(by("pairwise-lr-1e-3").apo.loss.beta, PAIRWISE_BETA);
        assert_eq!(by("pairwise-beta-0.1").apo.loss.beta, 0.1);
        assert_eq!(by("apo-beta-0.5").apo.loss.beta, 0.5);
        // No variant repeats the pairwise student either.
        let p = pairwise(&base.apo);
        assert!(
            variants.iter().all(|v| v.apo != p),
            "a variant is the pairwise student"
        );
        assert_eq!(
            (p.loss.objective, p.loss.beta),
            (Objective::PairwiseSigmoid, 0.5)
        );
        assert_eq!((p.optim, p.loss.sft_weight), (base.apo.optim.clone(), 1.0));
    }

    fn json<T: serde::Serialize>(v: &T) -> String {
        serde_json::to_string(v).unwrap()
    }

    #[test]
    fn demo_config_sets_the_measured_choices() {
        let c = config(&DemoOptions::default());
        assert_eq!((c.sft.steps, c.apo.optim.steps), (1600, 200));
        assert_eq!(c.sft.batch_size, 8);
        assert_eq!(c.apo.optim.learning_rate, Some(5e-4));
        assert!(c.model.concept_input && c.model.concept_weight == 1.0);
    }
}
