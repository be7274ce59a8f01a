//! What the pipeline runs on ([`PipelineOptions`]) and `pipeline.toml` ([`PipelineConfig`]).

use std::path::{Path, PathBuf};

use apo_consensus::{Method, NegativePolicy, NegativeWeighting, PositiveStyle};
use apo_train::RunConfig;
use serde::{Deserialize, Serialize};

use crate::error::{PipelineError, Result};

/// What the pipeline runs on and how long it trains.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// The data set.
    pub data: PathBuf,
    /// The run folder.
    pub out: PathBuf,
    /// Training configuration (data and output paths are set by the pipeline).
    pub train: RunConfig,
    /// Label aggregation of the consensus.
    pub method: Method,
    /// Which teacher trajectories become negatives.
    pub negatives: NegativePolicy,
    /// How the negatives are weighted.
    pub negative_weights: NegativeWeighting,
    /// How the consensus trajectories (the positives) are written.
    pub positive: PositiveStyle,
    /// Skip the stages whose markers match and continue unfinished training stages.
    pub resume: bool,
    /// The split every row is scored on: `test` (the default; scored once) or `validate`
    /// (where settings are chosen).
    pub eval_split: cxr_max::tables::Split,
    /// More stage-2 students, each trained from the same stage-1 student as the APO and
    /// pairwise students and scored as one more row (an ablation).
    pub variants: Vec<Variant>,
    /// A second data set on which every trained student and the teachers are scored too
    /// (its `eval_split`): generalisation to data no model was trained or tuned on.
    pub generalisation: Option<PathBuf>,
    /// The pairwise baseline's stage-2 configuration (`None`: the run's `[train.apo]` with
    /// the pairwise-sigmoid objective), so that β and the learning rate can be chosen per
    /// objective; its objective is always pairwise-sigmoid.
    pub pairwise: Option<apo_train::config::ApoConfig>,
}

/// A stage-2 variant: its own negatives and stage-2 settings, trained from the run's stage-1
/// student into `OUT/train/NAME` and scored as the row `NAME student`.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// The row and folder name: lowercase letters, digits, `-` and `.`, not the name of one of
    /// the run's own stages.
    pub name: String,
    /// Its negatives (`None`: the run's, and its preference sets).
    pub negatives: Option<NegativePolicy>,
    /// Its stage-2 configuration (the run's `[train.apo]` with the variant's fields over it).
    pub apo: apo_train::config::ApoConfig,
}

impl Variant {
    /// The variant `name` of `base`: `overrides` (a `[train.apo]`-shaped table, e.g.
    /// `{loss = {objective = "infonca"}}`) merged over `base` field by field.
    ///
    /// # Errors
    /// A message naming what is wrong: the name, or a field the stage-2 configuration does
    /// not have or cannot take.
    pub fn new(
        name: &str,
        negatives: Option<NegativePolicy>,
        base: &apo_train::config::ApoConfig,
        overrides: &toml::Table,
    ) -> std::result::Result<Variant, String> {
        // The run's own stages and their markers (`OUT/stages/NAME.json`).
        let reserved = ["sft", "apo", "pairwise", "drift", "consensus"];
        let safe = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && !name.starts_with(['-', '.'])
            && !["eval-", "consensus-", "margins-", "generalisation-"]
                .iter()
                .any(|p| name.starts_with(p));
        if !safe || reserved.contains(&name) {
            return Err(format!(
                "`{name}` is not a variant name: use lowercase letters, digits, `-` and `.`, not \
                 {} and not starting with eval-, consensus-, margins- or generalisation-",
                reserved.join(", ")
            ));
        }
        Ok(Variant {
            name: name.to_owned(),
            negatives,
            apo: merged(base, overrides)?,
        })
    }
}

/// `overrides` (a `[train.apo]`-shaped table) merged over `base` field by field.
fn merged(
    base: &apo_train::config::ApoConfig,
    overrides: &toml::Table,
) -> std::result::Result<apo_train::config::ApoConfig, String> {
    let mut value = serde_json::to_value(base).map_err(|e| e.to_string())?;
    let over = serde_json::to_value(overrides).map_err(|e| e.to_string())?;
    merge(&mut value, over);
    serde_json::from_value(value).map_err(|e| format!("apo: {e}"))
}

/// `over` merged into `value`: objects field by field, anything else replaced.
fn merge(value: &mut serde_json::Value, over: serde_json::Value) {
    match (value, over) {
        (serde_json::Value::Object(v), serde_json::Value::Object(o)) => {
            for (k, x) in o {
                match v.get_mut(&k) {
                    Some(slot) => merge(slot, x),
                    None => {
                        v.insert(k, x);
                    }
                }
            }
        }
        (slot, x) => *slot = x,
    }
}

/// `[[variants]]` of `pipeline.toml`: one more stage-2 student.
///
/// ```toml
/// [[variants]]
/// name = "nll-only"
/// apo.loss.preference_weight = 0.0
///
/// [[variants]]
/// name = "minimal-pairs"
/// negatives = "edits-7"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantSettings {
    /// The row and folder name.
    pub name: String,
    /// `all`, `dissenting`, `top-K` or `edits-K` (default: `[consensus] negatives`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negatives: Option<String>,
    /// Fields of `[train.apo]` to change (`loss.objective`, `loss.beta`,
    /// `optim.learning_rate`, ...).
    #[serde(default)]
    pub apo: toml::Table,
}

impl PipelineOptions {
    /// Defaults: Dawid-Skene consensus, every negative unweighted, merged positives, no
    /// resuming.
    pub fn new(data: PathBuf, out: PathBuf, train: RunConfig) -> Self {
        PipelineOptions {
            data,
            out,
            train,
            method: Method::DawidSkene,
            negatives: NegativePolicy::All,
            negative_weights: NegativeWeighting::Uniform,
            positive: PositiveStyle::Merged,
            resume: false,
            eval_split: cxr_max::tables::Split::Test,
            variants: Vec::new(),
            generalisation: None,
            pairwise: None,
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
    /// The split the rows are scored on: `test` (default) or `validate` (to choose settings
    /// without looking at the test split).
    #[serde(default = "default_eval_split")]
    pub eval_split: String,
    /// More stage-2 students (an ablation), each scored as one more row.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<VariantSettings>,
    /// A second data set folder (relative paths as for `data`): every trained student and
    /// the teachers are also scored on its `eval_split` (generalisation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generalisation: Option<PathBuf>,
    /// Fields of `[train.apo]` to change for the pairwise baseline only (as `[[variants]]`
    /// take them: `loss.beta`, `optim.learning_rate`, ...): β and learning rate per
    /// objective. The objective stays pairwise-sigmoid.
    #[serde(default, skip_serializing_if = "toml::Table::is_empty")]
    pub pairwise: toml::Table,
}

fn default_eval_split() -> String {
    "test".into()
}

/// The `[train]` fields the pipeline sets itself, and what to write instead.
const OVERRIDDEN: [(&str, &str, &str); 4] = [
    (
        "run",
        "out",
        "remove it and set the top-level `out` (the run folder; training goes to OUT/train)",
    ),
    (
        "data",
        "dir",
        "remove it and set the top-level `data` (the data set folder)",
    ),
    (
        "data",
        "preferences",
        "remove it: the pipeline builds the preference sets (settings under [consensus])",
    ),
    (
        "data",
        "split",
        "remove it: the pipeline trains on split `train`",
    ),
];

fn default_out() -> PathBuf {
    PathBuf::from("runs/pipeline")
}

/// `[consensus]` of `pipeline.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsensusSettings {
    /// `dawid-skene`, `majority` or `weighted`.
    pub method: String,
    /// `all`, `dissenting`, `top-K` or `edits-K`.
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
    /// [`PipelineError::Io`], or [`PipelineError::Config`] naming the file and the field (the
    /// TOML parser's, a consensus setting, or the training configuration's ranges).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(PipelineError::io(path))?;
        let bad = |field: &str, message: String| PipelineError::Config {
            path: path.to_path_buf(),
            field: field.to_owned(),
            message,
        };
        let config: PipelineConfig =
            toml::from_str(&text).map_err(|e| bad("toml", e.to_string().trim_end().to_owned()))?;
        // The pipeline sets these itself: a value here would be silently replaced.
        if let Ok(table) = text.parse::<toml::Table>() {
            for (section, key, instead) in OVERRIDDEN {
                let set = table
                    .get("train")
                    .and_then(|t| t.get(section))
                    .and_then(|t| t.get(key))
                    .is_some();
                if set {
                    return Err(bad(
                        &format!("train.{section}.{key}"),
                        format!("the pipeline sets this itself; {instead}"),
                    ));
                }
            }
        }
        config.options_in(path, false)?;
        config
            .train
            .validate()
            .map_err(|e| bad("train", e.to_string()))?;
        Ok(config)
    }

    /// The pipeline's options.
    ///
    /// # Errors
    /// [`PipelineError::Config`] for an unknown consensus setting, naming the field.
    pub fn options(&self, resume: bool) -> Result<PipelineOptions> {
        self.options_in(Path::new("pipeline.toml"), resume)
    }

    fn options_in(&self, path: &Path, resume: bool) -> Result<PipelineOptions> {
        let bad = |field: &str, e: apo_consensus::ConsensusError| PipelineError::Config {
            path: path.to_path_buf(),
            field: format!("consensus.{field}"),
            message: e.to_string(),
        };
        let c = &self.consensus;
        let mut o = PipelineOptions::new(self.data.clone(), self.out.clone(), self.train.clone());
        o.method = c.method.parse().map_err(|e| bad("method", e))?;
        o.negatives = c.negatives.parse().map_err(|e| bad("negatives", e))?;
        o.negative_weights = c
            .negative_weights
            .parse()
            .map_err(|e| bad("negative_weights", e))?;
        o.positive = c.positive.parse().map_err(|e| bad("positive", e))?;
        for (k, v) in self.variants.iter().enumerate() {
            let field = format!("variants[{k}]");
            let bad_variant = |message: String| PipelineError::Config {
                path: path.to_path_buf(),
                field: field.clone(),
                message,
            };
            if self.variants[..k].iter().any(|w| w.name == v.name) {
                return Err(bad_variant(format!("a second variant named `{}`", v.name)));
            }
            let negatives = match &v.negatives {
                Some(n) => Some(
                    n.parse()
                        .map_err(|e: apo_consensus::ConsensusError| bad_variant(e.to_string()))?,
                ),
                None => None,
            };
            let variant =
                Variant::new(&v.name, negatives, &self.train.apo, &v.apo).map_err(&bad_variant)?;
            let mut check = self.train.clone();
            check.apo = variant.apo.clone();
            check
                .validate()
                .map_err(|e| bad_variant(format!("`{}`: {e}", v.name)))?;
            o.variants.push(variant);
        }
        o.resume = resume;
        o.generalisation = self.generalisation.clone();
        if !self.pairwise.is_empty() {
            let bad = |message: String| PipelineError::Config {
                path: path.to_path_buf(),
                field: "pairwise".into(),
                message,
            };
            let apo = merged(&self.train.apo, &self.pairwise).map_err(&bad)?;
            let mut check = self.train.clone();
            check.apo = apo.clone();
            check.validate().map_err(|e| bad(e.to_string()))?;
            o.pairwise = Some(apo);
        }
        o.eval_split = match self.eval_split.as_str() {
            "test" => cxr_max::tables::Split::Test,
            "validate" => cxr_max::tables::Split::Validate,
            other => {
                return Err(PipelineError::Config {
                    path: path.to_path_buf(),
                    field: "eval_split".into(),
                    message: format!(
                        "`{other}` is not a split to score on; expected test or validate"
                    ),
                });
            }
        };
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[train.run] out` and `[train.data] dir` (which the pipeline sets itself) are errors
    /// that name the pipeline field to use instead.
    #[test]
    fn fields_the_pipeline_sets_are_refused() {
        let dir = std::env::temp_dir().join(format!("apo-pipeline-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pipeline.toml");
        for (section, body, field, instead) in [
            (
                "[train.run]",
                "out = \"elsewhere\"",
                "train.run.out",
                "set the top-level `out`",
            ),
            (
                "[train.data]",
                "dir = \"data2\"",
                "train.data.dir",
                "set the top-level `data`",
            ),
        ] {
            std::fs::write(&path, format!("data = \"data\"\n{section}\n{body}\n")).unwrap();
            let e = PipelineConfig::from_file(&path).unwrap_err();
            match &e {
                PipelineError::Config {
                    field: f, message, ..
                } => {
                    assert_eq!(f, field);
                    assert!(message.contains(instead), "{message}");
                }
                other => panic!("{other}"),
            }
        }
        std::fs::write(&path, "data = \"data\"\n[train.run]\nseed = 3\n").unwrap();
        assert_eq!(PipelineConfig::from_file(&path).unwrap().train.run.seed, 3);
        // A generalisation data set is scored as well; none by default.
        let options = PipelineConfig::from_file(&path)
            .unwrap()
            .options(false)
            .unwrap();
        assert_eq!(options.generalisation, None);
        std::fs::write(&path, "data = \"data\"\ngeneralisation = \"shifted\"\n").unwrap();
        let options = PipelineConfig::from_file(&path)
            .unwrap()
            .options(false)
            .unwrap();
        assert_eq!(options.generalisation, Some(PathBuf::from("shifted")));
        assert_eq!(options.pairwise, None);
        // The pairwise baseline's own β, over the run's stage 2; a bad field is named.
        std::fs::write(
            &path,
            "data = \"data\"\n[train.apo.loss]\nbeta = 0.2\n[pairwise.loss]\nbeta = 0.5\n",
        )
        .unwrap();
        let options = PipelineConfig::from_file(&path)
            .unwrap()
            .options(false)
            .unwrap();
        let pairwise = options.pairwise.unwrap();
        assert_eq!(
            (options.train.apo.loss.beta, pairwise.loss.beta),
            (0.2, 0.5)
        );
        assert_eq!(pairwise.optim, options.train.apo.optim);
        std::fs::write(&path, "data = \"data\"\n[pairwise.loss]\nbeta = -1.0\n").unwrap();
        match PipelineConfig::from_file(&path).unwrap_err() {
            PipelineError::Config { field, .. } => assert_eq!(field, "pairwise"),
            other => panic!("{other}"),
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
