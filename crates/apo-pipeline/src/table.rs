//! The evaluation table: every teacher, the aggregates, the image-blind baseline and the
//! students scored on the same test images, as typed rows, with paired-bootstrap
//! comparisons of the APO student against the others.

use std::collections::BTreeMap;

use apo_consensus::Polarity;
use apo_train::eval::EvalReport;
use cxr_max::dataset::Item;
use cxr_max::eval::{Accuracy, PairedDifference};
use cxr_max::tables::Split;
use cxr_max::{Finding, Findings};
use serde::{Deserialize, Serialize};

use crate::labels::{LabelConsensus, Labelled, present, teacher_vote};

/// What a row of the table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowKind {
    /// One teacher's final statements.
    Teacher,
    /// An aggregate of the teachers (majority vote, consensus).
    Aggregate,
    /// A constant answer that does not read the image (all absent).
    Baseline,
    /// A trained student's generated text, read back with the labeler.
    Student,
}

/// The name of the image-blind baseline row.
pub const ALL_ABSENT: &str = "all absent";
/// The name of the majority-vote row.
pub const MAJORITY_VOTE: &str = "majority vote";
/// The name of the Dawid-Skene consensus row.
pub const CONSENSUS: &str = "consensus";

/// The row name of the student trained by stage `stage` (`sft`, `pairwise`, `apo`).
pub fn student_row(stage: &str) -> String {
    format!("{stage} student")
}

/// Per test image (in [`TestSet`] order) and finding (by [`Finding::index`]): the row's
/// prediction, present or absent (`None`: no statement).
pub type Predictions = Vec<Vec<Option<bool>>>;

/// One row: its name, kind, accuracy and predictions on the test images.
#[derive(Debug, Clone)]
pub struct Row {
    /// The name (a teacher's, `majority vote`, `consensus`, `all absent`, `apo student`, ...).
    pub name: String,
    /// What it is.
    pub kind: RowKind,
    /// Accuracy on the test split.
    pub accuracy: Accuracy,
    /// Predictions per test image and finding.
    pub predictions: Predictions,
}

/// The test split's images: their DICOM ids and ground-truth labels.
#[derive(Debug, Clone, Default)]
pub struct TestSet {
    /// DICOM ids, in data set order.
    pub ids: Vec<String>,
    /// Ground truth per image.
    pub labels: Vec<Option<Findings>>,
}

impl TestSet {
    /// A student's predictions: the labeler's reading of the text generated for each test
    /// image (an image without a sample has no statement).
    pub fn read(&self, report: &EvalReport) -> Predictions {
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

/// Resamples of the paired bootstrap behind [`Comparison`].
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// The APO student against another row of the table, on the same test images.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    /// The row compared with (`pairwise student`, `sft student`, the best teacher's name,
    /// `all absent`).
    pub versus: String,
    /// Mean accuracy of the APO student minus the row's, with a paired bootstrap over test
    /// images.
    #[serde(flatten)]
    pub difference: PairedDifference,
}

/// The table: rows scored on one test set over the evaluated findings.
#[derive(Debug, Clone)]
pub struct Table {
    /// The findings averaged in the means (the paper's Table 1 findings).
    pub evaluated: Vec<Finding>,
    /// The rows, in order: teachers, aggregates, the baseline, then the students.
    pub rows: Vec<Row>,
    /// The test images.
    pub test: TestSet,
}

impl Table {
    /// The teachers, the majority vote, the consensus and the all-absent baseline, each fitted
    /// on every image and scored on the test split. `majority` and `consensus` are the label
    /// consensus of every item (in item order).
    pub fn teachers(
        items: &[Item],
        labelled: &Labelled,
        majority: &LabelConsensus,
        consensus: &LabelConsensus,
        evaluated: &[Finding],
    ) -> Table {
        let test: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].split == Some(Split::Test))
            .collect();
        let set = TestSet {
            ids: test
                .iter()
                .map(|&i| items[i].sample.dicom_id.clone())
                .collect(),
            labels: test.iter().map(|&i| items[i].labels).collect(),
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
        let mut named: Vec<(String, RowKind, Predictions)> = Vec::new();
        for name in &labelled.teachers {
            named.push((
                name.clone(),
                RowKind::Teacher,
                predictions(&|k, f| {
                    teacher_vote(&items[test[k]], &labelled.finals[test[k]], name, f)
                }),
            ));
        }
        for (name, c) in [(MAJORITY_VOTE, majority), (CONSENSUS, consensus)] {
            named.push((
                name.to_owned(),
                RowKind::Aggregate,
                predictions(&|k, f| c.labels[test[k]][f.index()]),
            ));
        }
        // The image-blind baseline: every finding stated absent on every image. A student that
        // does not read the image scores about this.
        named.push((
            ALL_ABSENT.to_owned(),
            RowKind::Baseline,
            predictions(&|_, _| Some(Polarity::Absent)),
        ));
        let mut table = Table {
            evaluated: evaluated.to_vec(),
            rows: Vec::new(),
            test: set,
        };
        for (name, kind, p) in named {
            table.push(name, kind, p);
        }
        table
    }

    /// Adds a row scored from its predictions; a test set without labels adds nothing.
    pub fn push(&mut self, name: String, kind: RowKind, predictions: Predictions) {
        if let Some(accuracy) =
            cxr_max::eval::accuracy(&self.test.labels, &self.evaluated, |k, f| {
                predictions[k][f.index()]
            })
        {
            self.rows.push(Row {
                name,
                kind,
                accuracy,
                predictions,
            });
        }
    }

    /// The row named `name`.
    pub fn row(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.name == name)
    }

    /// The mean accuracy of `name` (NaN without such a row).
    pub fn mean(&self, name: &str) -> f64 {
        self.row(name).map_or(f64::NAN, |r| r.accuracy.mean)
    }

    /// The rows of one kind.
    pub fn of_kind(&self, kind: RowKind) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(move |r| r.kind == kind)
    }

    /// The teacher with the highest mean accuracy.
    pub fn best_teacher(&self) -> Option<&Row> {
        self.of_kind(RowKind::Teacher)
            .max_by(|a, b| a.accuracy.mean.total_cmp(&b.accuracy.mean))
    }

    /// The APO student against the pairwise and SFT students, the best teacher and the
    /// all-absent baseline (the rows that exist), with a paired bootstrap over the test
    /// images seeded by `seed`.
    pub fn comparisons(&self, seed: u64) -> Vec<Comparison> {
        let Some(apo) = self.row(&student_row("apo")) else {
            return Vec::new();
        };
        [student_row("pairwise"), student_row("sft")]
            .into_iter()
            .chain(self.best_teacher().map(|r| r.name.clone()))
            .chain([ALL_ABSENT.to_owned()])
            .filter_map(|versus| {
                let other = self.row(&versus)?;
                let difference = cxr_max::eval::paired_difference(
                    &self.test.labels,
                    &self.evaluated,
                    |k, f| apo.predictions[k][f.index()],
                    |k, f| other.predictions[k][f.index()],
                    BOOTSTRAP_RESAMPLES,
                    seed,
                )?;
                Some(Comparison { versus, difference })
            })
            .collect()
    }

    /// The evaluated findings' column names.
    pub fn columns(&self) -> Vec<String> {
        self.evaluated
            .iter()
            .map(|f| f.column_name().to_owned())
            .collect()
    }

    /// Per row: its per-finding accuracies on the evaluated findings.
    pub fn per_finding(&self, row: &Row) -> Vec<Option<f64>> {
        self.evaluated
            .iter()
            .map(|f| row.accuracy.per_finding[f.column_name()])
            .collect()
    }

    /// The Table 1 analogue as aligned text (`table.txt`).
    pub fn render_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = write!(out, "{:<16}", "");
        for f in self.columns() {
            let short: String = f.chars().take(11).collect();
            let _ = write!(out, " {short:>11}");
        }
        let _ = writeln!(out, " {:>7}", "mean");
        for row in &self.rows {
            let _ = write!(out, "{:<16}", row.name);
            for v in self.per_finding(row) {
                match v {
                    Some(v) => {
                        let _ = write!(out, " {v:>11.3}");
                    }
                    None => {
                        let _ = write!(out, " {:>11}", "-");
                    }
                }
            }
            let _ = writeln!(out, " {:>7.3}", row.accuracy.mean);
        }
        out
    }

    /// The table as Markdown.
    pub fn render_markdown(&self) -> String {
        let names = self.columns();
        let mut md = String::from("| | ");
        md.push_str(&names.join(" | "));
        md.push_str(" | mean |\n|---|");
        md.push_str(&"---|".repeat(names.len() + 1));
        md.push('\n');
        for row in &self.rows {
            md.push_str(&format!("| {} |", row.name));
            for v in self.per_finding(row) {
                md.push_str(&v.map_or(" - |".to_owned(), |v| format!(" {v:.3} |")));
            }
            md.push_str(&format!(" {:.3} |\n", row.accuracy.mean));
        }
        md
    }

    /// The rows as `results.json` lists them.
    pub fn summaries(&self) -> Vec<RowSummary> {
        self.rows
            .iter()
            .map(|r| RowSummary {
                name: r.name.clone(),
                kind: r.kind,
                findings: self
                    .evaluated
                    .iter()
                    .map(|f| {
                        (
                            f.column_name().to_owned(),
                            FindingScores {
                                accuracy: r.accuracy.per_finding[f.column_name()],
                            },
                        )
                    })
                    .collect(),
                summary: Summary {
                    accuracy: r.accuracy.mean,
                },
            })
            .collect()
    }
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

/// A row of `results.json`'s `rows`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowSummary {
    /// The row's name.
    pub name: String,
    /// What it is.
    pub kind: RowKind,
    /// Per evaluated finding (CheXpert column name).
    pub findings: BTreeMap<String, FindingScores>,
    /// Over the evaluated findings.
    pub summary: Summary,
}

/// A row's scores on one finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingScores {
    /// Share of test images with a definite label whose prediction matches it.
    pub accuracy: Option<f64>,
}

/// A row's scores over the evaluated findings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Mean accuracy over the evaluated findings.
    pub accuracy: f64,
}
