//! `apo run --config pipeline.toml` on a tiny simulated data set: a rerun resumes at the first
//! unfinished stage, and a changed stage-2 setting reruns stage 2 and the evaluation only.

use apo_pipeline::{PipelineConfig, PipelineOptions, PipelineResult, Quiet};
use apo_train::device::Cpu;

fn run(options: &PipelineOptions) -> apo_pipeline::Result<PipelineResult> {
    apo_pipeline::run::<Cpu>(options, &Default::default(), &mut Quiet)
}

fn stage_report(out: &std::path::Path, name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(out.join(format!("stages/{name}.json"))).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["value"].clone()
}

#[test]
fn rerun_resumes_at_the_first_unfinished_stage() {
    let _training = crate::training();
    let root = std::env::temp_dir().join(format!("apo-e2e-run-{}", std::process::id()));
    std::fs::remove_dir_all(&root).ok();
    let data = root.join("data");
    cxr_max::sim::synthesize(
        &data,
        &cxr_max::sim::SynthConfig {
            studies: 40,
            image_size: 64,
            seed: 5,
            ..Default::default()
        },
    )
    .unwrap();
    let out = root.join("run");
    let toml = |apo_steps: usize| {
        format!(
            r#"data = "{}"
out = "{}"

[consensus]
method = "dawid-skene"
negatives = "all"

[train.data]
truncate = true
trajectories_per_group = 2

[train.tokenizer]
vocab_size = 400

[train.model]
d_model = 32
n_heads = 2
encoder_layers = 1
decoder_layers = 1

[train.sft]
steps = 3

[train.apo.optim]
steps = {apo_steps}

[train.run]
checkpoint_every = 0
max_new_tokens = 24
"#,
            data.display(),
            out.display()
        )
    };
    let path = root.join("pipeline.toml");
    std::fs::write(&path, toml(2)).unwrap();
    let config = PipelineConfig::from_file(&path).unwrap();
    let first = run(&config.options(true).unwrap()).unwrap();
    for name in [
        "drift",
        "consensus",
        "sft",
        "apo",
        "pairwise",
        "eval-sft",
        "eval-apo",
        "eval-pairwise",
        "eval-apo-shuffled",
    ] {
        assert!(out.join(format!("stages/{name}.json")).is_file(), "{name}");
    }
    let sft = stage_report(&out, "sft");
    let apo = stage_report(&out, "apo");

    // Everything is done: the rerun trains nothing and reports the same numbers (the stage
    // reports, wall-clock seconds included, are the recorded ones).
    let again = run(&config.options(true).unwrap()).unwrap();
    assert_eq!(again.stages, first.stages);
    assert_eq!(again.mean_accuracy, first.mean_accuracy);
    assert_eq!(stage_report(&out, "sft"), sft);

    // Stage 1 started with the same inputs but not recorded as finished (a run killed after
    // its last checkpoint): it continues from that checkpoint instead of starting over, and
    // the stages after it, whose inputs did not change, stay done.
    std::fs::remove_file(out.join("stages/sft.json")).unwrap();
    let continued = run(&config.options(true).unwrap()).unwrap();
    assert_eq!(continued.stages[0].resumed_from, Some(3));
    assert_eq!(
        continued.stages[0].weights_digest,
        first.stages[0].weights_digest
    );
    assert_eq!(continued.stages[1], first.stages[1]);

    // A changed stage-2 setting: stage 1 is kept, stage 2 runs again.
    std::fs::write(&path, toml(3)).unwrap();
    let config = PipelineConfig::from_file(&path).unwrap();
    let changed = run(&config.options(true).unwrap()).unwrap();
    assert_eq!(changed.stages[0], continued.stages[0]);
    assert_eq!(changed.stages[1].steps, 3);
    assert_ne!(stage_report(&out, "apo"), apo);
    let stage_report_changed = stage_report(&out, "apo");

    // Positives in the closest teacher's form: the labels, and so stage 1, are kept; the
    // preference sets and stage 2 are rebuilt.
    let positive = toml(3).replace(
        "negatives = \"all\"\n",
        "negatives = \"all\"\npositive = \"closest-teacher\"\n",
    );
    assert_ne!(positive, toml(3));
    std::fs::write(&path, positive).unwrap();
    let closest = PipelineConfig::from_file(&path).unwrap();
    let edited = run(&closest.options(true).unwrap()).unwrap();
    assert_eq!(edited.stages[0], changed.stages[0]);
    let prefs = std::fs::read_to_string(out.join("prefs.jsonl")).unwrap();
    assert!(!prefs.contains("Impression:"), "merged positives remain");
    assert_ne!(stage_report(&out, "apo"), stage_report_changed);
    std::fs::write(&path, toml(3)).unwrap();

    // --fresh reruns everything; the training is deterministic, so the weights match.
    let fresh = run(&config.options(false).unwrap()).unwrap();
    assert_eq!(
        fresh.stages[0].weights_digest,
        first.stages[0].weights_digest
    );
    assert_ne!(fresh.stages[0].seconds, first.stages[0].seconds);

    // A bad field names the file and the field.
    std::fs::write(&path, "data = \"x\"\n[consensus]\nmethod = \"vote\"\n").unwrap();
    let err = PipelineConfig::from_file(&path).unwrap_err().to_string();
    assert!(
        err.contains("pipeline.toml") && err.contains("consensus.method"),
        "{err}"
    );
    std::fs::write(&path, "data = \"x\"\n[consensus]\npositive = \"edited\"\n").unwrap();
    let err = PipelineConfig::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("consensus.positive"), "{err}");
    std::fs::write(&path, "data = \"x\"\nunknown = 1\n").unwrap();
    let err = PipelineConfig::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("unknown"), "{err}");
    std::fs::remove_dir_all(&root).ok();
}

/// `[[variants]]`: more stage-2 students from the same stage-1 student, each scored as a row;
/// a variant with its own negatives gets its own preference sets; a rerun keeps them done;
/// a bad variant is an error naming it.
#[test]
fn variants_train_from_the_same_stage_one_and_are_scored() {
    let _training = crate::training();
    let root = std::env::temp_dir().join(format!("apo-e2e-variants-{}", std::process::id()));
    std::fs::remove_dir_all(&root).ok();
    let data = root.join("data");
    cxr_max::sim::synthesize(
        &data,
        &cxr_max::sim::SynthConfig {
            studies: 40,
            image_size: 64,
            seed: 6,
            ..Default::default()
        },
    )
    .unwrap();
    let out = root.join("run");
    let toml = |variants: &str| {
        format!(
            r#"data = "{}"
out = "{}"

[train.data]
truncate = true
trajectories_per_group = 2

[train.tokenizer]
vocab_size = 400

[train.model]
d_model = 32
n_heads = 2
encoder_layers = 1
decoder_layers = 1

[train.sft]
steps = 2

[train.apo.optim]
steps = 2

[train.run]
checkpoint_every = 0
max_new_tokens = 16
{variants}"#,
            data.display(),
            out.display()
        )
    };
    let variants = r#"
[[variants]]
name = "nll-only"
apo.loss.preference_weight = 0.0
apo.loss.sft_weight = 1.0

[[variants]]
name = "minimal-pairs"
negatives = "edits-2"
apo.loss.beta = 0.5
"#;
    let path = root.join("pipeline.toml");
    std::fs::write(&path, toml(variants)).unwrap();
    let config = PipelineConfig::from_file(&path).unwrap();
    let options = config.options(true).unwrap();
    assert_eq!(options.variants.len(), 2);
    assert_eq!(options.variants[0].apo.loss.preference_weight, 0.0);
    assert_eq!(options.variants[1].apo.loss.beta, 0.5);
    assert_eq!(
        options.variants[1].apo.optim.steps, 2,
        "the run's [train.apo] is kept under a variant's fields"
    );
    let first = run(&options).unwrap();
    let stages: Vec<&str> = first.stages.iter().map(|s| s.stage.as_str()).collect();
    assert_eq!(
        stages,
        ["sft", "apo", "pairwise", "nll-only", "minimal-pairs"]
    );
    for name in ["nll-only", "minimal-pairs"] {
        let row = format!("{name} student");
        assert!(first.rows.iter().any(|r| r.name == row), "{row}");
        assert!(first.mean_accuracy.variants.contains_key(name));
        assert!(out.join(format!("train/{name}/model.bin")).is_file());
        assert!(out.join(format!("samples-{name}.jsonl")).is_file());
        assert!(
            first.comparisons.iter().any(|c| c.versus == row),
            "the APO student is compared with {row}"
        );
    }
    // Only the variant with its own negatives has its own preference sets: minimal pairs.
    assert!(!out.join("prefs-nll-only.jsonl").exists());
    let sets = std::fs::read_to_string(out.join("prefs-minimal-pairs.jsonl")).unwrap();
    let mut negatives = 0;
    for line in sets.lines() {
        let set: serde_json::Value = serde_json::from_str(line).unwrap();
        let rejected = set["rejected"].as_array().unwrap();
        assert!((1..=2).contains(&rejected.len()), "{line}");
        for r in rejected {
            assert!(r["teacher"].as_str().unwrap().starts_with("edit:"), "{r}");
            assert_ne!(r["text"], set["chosen"]);
            negatives += 1;
        }
    }
    assert!(negatives > 0);
    // The variants start from stage 1's student with their own settings: different weights.
    let digests: std::collections::BTreeSet<&str> = first
        .stages
        .iter()
        .map(|s| s.weights_digest.as_str())
        .collect();
    assert_eq!(digests.len(), 5, "{:?}", first.stages);

    // The margin breakdown of every stage-2 student on the scored split's preference sets.
    let names: Vec<&str> = first.margins.keys().map(String::as_str).collect();
    assert_eq!(names, ["apo", "minimal-pairs", "nll-only", "pairwise"]);
    for (name, b) in &first.margins {
        assert!(b.groups > 0 && b.pairs >= b.groups, "{name}: {b:?}");
        assert!(
            b.margin.total().is_finite() && b.margin.total() != 0.0,
            "{name}: {b:?}"
        );
        assert!(
            b.chosen_tokens.finding > 0.0 && b.chosen_tokens.layout >= 1.0,
            "{name}"
        );
    }
    assert_eq!(first.margins["minimal-pairs"].beta, 0.5);
    assert!(out.join("prefs-test.jsonl").is_file());
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("Where the preference is won"), "{report}");

    let again = run(&config.options(true).unwrap()).unwrap();
    assert_eq!(again.margins, first.margins);
    assert_eq!(
        again.stages, first.stages,
        "a rerun keeps every variant done"
    );
    assert_eq!(again.mean_accuracy, first.mean_accuracy);

    for (bad, field, says) in [
        (
            "\n[[variants]]\nname = \"apo\"\n",
            "variants[0]",
            "not a variant name",
        ),
        (
            "\n[[variants]]\nname = \"x\"\napo.loss.bogus = 1\n",
            "variants[0]",
            "bogus",
        ),
        (
            "\n[[variants]]\nname = \"x\"\nnegatives = \"some\"\n",
            "variants[0]",
            "edits-K",
        ),
        (
            "\n[[variants]]\nname = \"x\"\n\n[[variants]]\nname = \"x\"\n",
            "variants[1]",
            "a second variant",
        ),
        (
            "\n[[variants]]\nname = \"x\"\napo.loss.beta = -1.0\n",
            "variants[0]",
            "beta",
        ),
    ] {
        std::fs::write(&path, toml(bad)).unwrap();
        match PipelineConfig::from_file(&path).unwrap_err() {
            apo_pipeline::PipelineError::Config {
                field: f, message, ..
            } => {
                assert_eq!(f, field, "{bad}");
                assert!(message.contains(says), "{bad}: {message}");
            }
            other => panic!("{bad}: {other}"),
        }
    }
    std::fs::remove_dir_all(&root).ok();
}
