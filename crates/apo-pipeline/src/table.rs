//! The evaluation table: every teacher, the aggregates, the floors (all absent, a
//! prevalence-matched random guess, the APO student fed shuffled images) and the students
//! scored on the same test images, as typed rows with every clinical-efficacy metric
//! ([`cxr_max::eval::scores`]), and paired-bootstrap comparisons of the APO student against
//! every other row on balanced accuracy, macro-F1 and accuracy.

use std::collections::BTreeMap;

use apo_consensus::Polarity;
use apo_train::eval::EvalReport;
use cxr_max::dataset::Item;
use cxr_max::eval::{
    Accuracy, Call, FindingMetrics, Metric, PairedDifference, Scores, Summary, paired_differences,
    prediction,
};
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
    /// A floor that does not read the image: all absent, a prevalence-matched random guess,
    /// a student fed another image.
    Baseline,
    /// A trained student's generated text, read back with the labeler.
    Student,
}

/// The name of the image-blind baseline row.
pub const ALL_ABSENT: &str = "all absent";
/// The name of the prevalence-matched random-guess row.
pub const RANDOM_GUESS: &str = "random guess";
/// The name of the majority-vote row.
pub const MAJORITY_VOTE: &str = "majority vote";
/// The name of the Dawid-Skene consensus row.
pub const CONSENSUS: &str = "consensus";

/// The row name of the student trained by stage `stage` (`sft`, `pairwise`, `apo`).
pub fn student_row(stage: &str) -> String {
    format!("{stage} student")
}

/// The row name of the student of `stage` fed every test image's text from another test
/// image (the image-shuffled floor).
pub fn shuffled_row(stage: &str) -> String {
    format!("{stage}, shuffled images")
}

/// Per test image (in [`TestSet`] order) and finding (by [`Finding::index`]): the row's
/// statement.
pub type Predictions = Vec<Vec<Call>>;

/// Per test image and finding: the row's score for AUROC (a student's concept-head
/// probability), `None` where it has none.
pub type Confidences = Vec<Vec<Option<f64>>>;

/// One row: its name, kind, metrics and predictions on the test images.
#[derive(Debug, Clone)]
pub struct Row {
    /// The name (a teacher's, `majority vote`, `consensus`, `all absent`, `apo student`, ...).
    pub name: String,
    /// What it is.
    pub kind: RowKind,
    /// The Table 1 accuracy on the test split (the figures of `scores`).
    pub accuracy: Accuracy,
    /// Every metric on the test split.
    pub scores: Scores,
    /// Statements per test image and finding.
    pub predictions: Predictions,
    /// Scores per test image and finding, for rows that have one.
    pub confidence: Option<Confidences>,
    /// Share of the row's trajectories whose earlier statements contradict or hedge their
    /// final ones ([`cxr_max::findings::Consistency`]), for rows that write text.
    pub inconsistent: Option<f64>,
}

/// Share of `texts` whose earlier statements contradict or hedge their final ones; `None`
/// for no text.
pub fn inconsistency<'a>(texts: impl IntoIterator<Item = &'a str>) -> Option<f64> {
    let (mut bad, mut n) = (0usize, 0usize);
    for t in texts {
        n += 1;
        bad += usize::from(cxr_max::findings::extract(t).consistency().inconsistent());
    }
    (n > 0).then(|| bad as f64 / n as f64)
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
    /// A student's statements: the labeler's reading of the text generated for each test
    /// image (an image without a sample has no statement), and its concept-head
    /// probabilities when the evaluation has them.
    pub fn read(&self, report: &EvalReport) -> (Predictions, Option<Confidences>) {
        let index = sample_index(report);
        let predictions = self
            .ids
            .iter()
            .map(|id| {
                let read = index
                    .get(id.as_str())
                    .map(|&k| cxr_max::findings::extract(&report.samples[k].text).findings);
                Finding::ALL
                    .iter()
                    .map(|&f| Call::from(read.as_ref().and_then(|r| prediction(r, f))))
                    .collect()
            })
            .collect();
        (predictions, self.confidences(report, &index))
    }

    /// A student's concept-head probabilities per test image and finding, when the
    /// evaluation has them (`index`: sample position by image id).
    fn confidences(
        &self,
        report: &EvalReport,
        index: &BTreeMap<&str, usize>,
    ) -> Option<Confidences> {
        report.concepts.as_ref().map(|concepts| {
            self.ids
                .iter()
                .map(|id| {
                    let row = index.get(id.as_str()).and_then(|&k| concepts.get(k));
                    Finding::ALL
                        .iter()
                        .map(|f| row.and_then(|r| r.get(f.index())).map(|&p| f64::from(p)))
                        .collect()
                })
                .collect()
        })
    }
}

impl TestSet {
    /// The calls of a template report written from a student's concept head: each finding
    /// stated present where the head's probability is at least `threshold`, absent
    /// otherwise, with the probability as the score; `None` when the evaluation has no
    /// concept probabilities. An image without a sample has no statement.
    pub fn concept_calls(
        &self,
        report: &EvalReport,
        threshold: f64,
    ) -> Option<(Predictions, Confidences)> {
        let index = sample_index(report);
        let confidence = self.confidences(report, &index)?;
        let predictions = confidence
            .iter()
            .map(|row| {
                row.iter()
                    .map(|p| match p {
                        Some(p) if *p >= threshold => Call::PRESENT,
                        Some(_) => Call::ABSENT,
                        None => Call::NONE,
                    })
                    .collect()
            })
            .collect();
        Some((predictions, confidence))
    }
}

/// The row name of the template report written from the concept head of `stage`'s student
/// ([`TestSet::concept_calls`] at probability 0.5): what the head knows, without the text.
pub fn concept_row(stage: &str) -> String {
    format!("{stage} concept head -> template")
}

/// Each sample's position in `report`, by image id.
fn sample_index(report: &EvalReport) -> BTreeMap<&str, usize> {
    report
        .samples
        .iter()
        .enumerate()
        .map(|(k, s)| (s.id.as_str(), k))
        .collect()
}

/// Resamples of the paired bootstrap behind [`Comparison`].
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// The APO student against another row of the table on one metric, on the same test images.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    /// The row compared with.
    pub versus: String,
    /// The summary metric (over the evaluated findings) compared.
    pub metric: Metric,
    /// The APO student's metric minus the row's, with a paired bootstrap over test images.
    #[serde(flatten)]
    pub difference: PairedDifference,
}

/// The table: rows scored on one test set over the evaluated findings.
#[derive(Debug, Clone)]
pub struct Table {
    /// The findings averaged in the summaries (the paper's Table 1 findings).
    pub evaluated: Vec<Finding>,
    /// The rows, in order: teachers, aggregates, the floors, then the students.
    pub rows: Vec<Row>,
    /// The test images.
    pub test: TestSet,
}

/// Per finding (by [`Finding::index`]): the share of positive labels among the definite
/// labels of `items`; `None` without any.
pub fn prevalence(items: &[&Item]) -> Option<[f64; 14]> {
    let mut out = [0.0; 14];
    let mut any = false;
    for f in Finding::ALL {
        let (mut pos, mut den) = (0usize, 0usize);
        for l in items.iter().filter_map(|i| i.labels.as_ref()) {
            if let Some(t) = cxr_max::eval::truth(l, f) {
                den += 1;
                pos += usize::from(t);
            }
        }
        any |= den > 0;
        out[f.index()] = pos as f64 / den.max(1) as f64;
    }
    any.then_some(out)
}

impl Table {
    /// The teachers, the majority vote, the consensus and the floors (all absent, and a
    /// random guess at the training split's prevalence), each fitted on every image and
    /// scored on `split` (the test split; the validate split while settings are chosen). `majority` and `consensus` are the label consensus of
    /// every item (in item order).
    pub fn teachers(
        items: &[Item],
        labelled: &Labelled,
        majority: &LabelConsensus,
        consensus: &LabelConsensus,
        evaluated: &[Finding],
        split: Split,
    ) -> Table {
        let test: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].split == Some(split))
            .collect();
        let set = TestSet {
            ids: test
                .iter()
                .map(|&i| items[i].sample.dicom_id.clone())
                .collect(),
            labels: test.iter().map(|&i| items[i].labels).collect(),
        };
        let predictions = |predict: &dyn Fn(usize, Finding) -> Call| -> Predictions {
            (0..test.len())
                .map(|k| Finding::ALL.iter().map(|&f| predict(k, f)).collect())
                .collect()
        };
        let vote = |p: Option<Polarity>| Call::from(present(p));
        let mut named: Vec<(String, RowKind, Predictions)> = Vec::new();
        for name in &labelled.teachers {
            named.push((
                name.clone(),
                RowKind::Teacher,
                predictions(&|k, f| {
                    vote(teacher_vote(
                        &items[test[k]],
                        &labelled.finals[test[k]],
                        name,
                        f,
                    ))
                }),
            ));
        }
        for (name, c) in [(MAJORITY_VOTE, majority), (CONSENSUS, consensus)] {
            named.push((
                name.to_owned(),
                RowKind::Aggregate,
                predictions(&|k, f| vote(c.labels[test[k]][f.index()])),
            ));
        }
        // The image-blind floors: every finding stated absent on every image, and a guess that
        // states each finding present at its prevalence in the training split (expected
        // counts). A student that does not read the image scores about these.
        named.push((
            ALL_ABSENT.to_owned(),
            RowKind::Baseline,
            predictions(&|_, _| Call::ABSENT),
        ));
        let train: Vec<&Item> = items
            .iter()
            .filter(|i| i.split == Some(Split::Train))
            .collect();
        if let Some(q) = prevalence(&train) {
            named.push((
                RANDOM_GUESS.to_owned(),
                RowKind::Baseline,
                predictions(&|_, f| Call::guess(q[f.index()])),
            ));
        }
        let mut table = Table {
            evaluated: evaluated.to_vec(),
            rows: Vec::new(),
            test: set,
        };
        for (name, kind, p) in named {
            table.push(name, kind, p, None);
        }
        for name in &labelled.teachers {
            let texts = test.iter().flat_map(|&i| {
                items[i]
                    .sample
                    .trajectories
                    .iter()
                    .filter(|t| &t.teacher == name)
                    .map(|t| t.text.as_str())
            });
            table.set_inconsistent(name, inconsistency(texts));
        }
        table
    }

    /// Sets a row's chain-of-thought inconsistency ([`Row::inconsistent`]).
    pub fn set_inconsistent(&mut self, name: &str, share: Option<f64>) {
        if let Some(r) = self.rows.iter_mut().find(|r| r.name == name) {
            r.inconsistent = share;
        }
    }

    /// Adds a row scored from its statements (and scores, for AUROC); a test set without
    /// labels adds nothing.
    pub fn push(
        &mut self,
        name: String,
        kind: RowKind,
        predictions: Predictions,
        confidence: Option<Confidences>,
    ) {
        let score = confidence
            .as_ref()
            .map(|c| move |k: usize, f: Finding| c[k][f.index()]);
        let score_ref = score
            .as_ref()
            .map(|s| s as &dyn Fn(usize, Finding) -> Option<f64>);
        if let Some(scores) = cxr_max::eval::scores(
            &self.test.labels,
            &self.evaluated,
            |k, f| predictions[k][f.index()],
            score_ref,
        ) {
            self.rows.push(Row {
                name,
                kind,
                accuracy: scores.accuracy(),
                scores,
                predictions,
                confidence,
                inconsistent: None,
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

    /// The teacher with the highest mean balanced accuracy.
    pub fn best_teacher(&self) -> Option<&Row> {
        let ba = |r: &Row| {
            r.scores
                .summary
                .balanced_accuracy
                .unwrap_or(f64::NEG_INFINITY)
        };
        self.of_kind(RowKind::Teacher)
            .max_by(|a, b| ba(a).total_cmp(&ba(b)))
    }

    /// The APO student against every other row (the pairwise and SFT students first, then
    /// the rows in table order) on each of [`Metric::REPORTED`], with a paired bootstrap over
    /// the test images seeded by `seed` (the same draws for every row and metric).
    pub fn comparisons(&self, seed: u64) -> Vec<Comparison> {
        let apo_name = student_row("apo");
        let Some(apo) = self.row(&apo_name) else {
            return Vec::new();
        };
        let first = [student_row("pairwise"), student_row("sft")];
        let versus: Vec<&Row> = first
            .iter()
            .filter_map(|n| self.row(n))
            .chain(
                self.rows
                    .iter()
                    .filter(|r| r.name != apo_name && !first.contains(&r.name)),
            )
            .collect();
        let mut out = Vec::new();
        for other in versus {
            let differences = paired_differences(
                &Metric::REPORTED,
                &self.test.labels,
                &self.evaluated,
                |k, f| apo.predictions[k][f.index()],
                |k, f| other.predictions[k][f.index()],
                BOOTSTRAP_RESAMPLES,
                seed,
            );
            for (metric, d) in Metric::REPORTED.into_iter().zip(differences) {
                if let Some(difference) = d {
                    out.push(Comparison {
                        versus: other.name.clone(),
                        metric,
                        difference,
                    });
                }
            }
        }
        out
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

    /// Per row: its per-finding balanced accuracies on the evaluated findings.
    pub fn balanced_per_finding(&self, row: &Row) -> Vec<Option<f64>> {
        self.evaluated
            .iter()
            .map(|f| row.scores.findings[f.column_name()].balanced_accuracy)
            .collect()
    }

    /// The headline and Table 1 blocks.
    fn blocks(&self) -> Vec<Block> {
        let mut head: Vec<String> = self.columns();
        head.extend(
            [
                "BA",
                "macro-F1",
                "micro-F1",
                "AUROC",
                "BA-14",
                "macro-F1-14",
            ]
            .into_iter()
            .map(String::from),
        );
        let headline = self
            .rows
            .iter()
            .map(|r| {
                let s = &r.scores;
                let mut v = self.balanced_per_finding(r);
                v.extend([
                    s.summary.balanced_accuracy,
                    s.summary.macro_f1,
                    s.summary.micro_f1,
                    s.summary.auroc,
                    s.summary_14.balanced_accuracy,
                    s.summary_14.macro_f1,
                ]);
                v
            })
            .collect();
        let mut acc_head: Vec<String> = self.columns();
        acc_head.push("mean".into());
        acc_head.push("inconsistent".into());
        let accuracy = self
            .rows
            .iter()
            .map(|r| {
                let mut v = self.per_finding(r);
                v.push(r.scores.summary.accuracy);
                v.push(r.inconsistent);
                v
            })
            .collect();
        vec![
            (
                "Balanced accuracy per finding; BA = its mean, macro-F1, micro-F1 and mean AUROC over the Table 1 findings; BA-14 and macro-F1-14 over all 14".to_owned(),
                head,
                headline,
            ),
            (
                "Accuracy per finding (the paper's Table 1 definition; no statement = wrong), its mean, and the share of trajectories whose earlier statements contradict or hedge their final ones".to_owned(),
                acc_head,
                accuracy,
            ),
        ]
    }

    /// The table as aligned text (`table.txt`): the balanced-accuracy and F1 block, then the
    /// Table 1 accuracy block.
    pub fn render_text(&self) -> String {
        use std::fmt::Write as _;
        let width = self
            .rows
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(0)
            .max(16);
        let mut out = String::new();
        for (n, (title, head, values)) in self.blocks().into_iter().enumerate() {
            if n > 0 {
                out.push('\n');
            }
            let _ = writeln!(out, "{title}:");
            let _ = write!(out, "{:<width$}", "");
            for h in &head {
                let short: String = h.chars().take(11).collect();
                let _ = write!(out, " {short:>11}");
            }
            out.push('\n');
            for (row, vals) in self.rows.iter().zip(values) {
                let _ = write!(out, "{:<width$}", row.name);
                for v in vals {
                    let _ = match v {
                        Some(v) => write!(out, " {v:>11.3}"),
                        None => write!(out, " {:>11}", "-"),
                    };
                }
                out.push('\n');
            }
        }
        out
    }

    /// The table as Markdown: the balanced-accuracy and F1 table, then the Table 1 accuracy
    /// table.
    pub fn render_markdown(&self) -> String {
        let mut md = String::new();
        for (title, head, values) in self.blocks() {
            md.push_str(&format!("{title}:\n\n| | {} |\n|---|", head.join(" | ")));
            md.push_str(&"---|".repeat(head.len()));
            md.push('\n');
            for (row, vals) in self.rows.iter().zip(values) {
                md.push_str(&format!("| {} |", row.name));
                for v in vals {
                    md.push_str(&v.map_or(" - |".to_owned(), |v| format!(" {v:.3} |")));
                }
                md.push('\n');
            }
            md.push('\n');
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
                findings: r.scores.findings.clone(),
                summary: r.scores.summary,
                summary_14: r.scores.summary_14,
                inconsistent: r.inconsistent,
            })
            .collect()
    }
}

/// A block of the rendered table: title, column names, values per row.
type Block = (String, Vec<String>, Vec<Vec<Option<f64>>>);

/// The comparisons as a Markdown table: one line per row compared with, one column per
/// metric (difference and 95 % interval).
pub fn render_comparisons(comparisons: &[Comparison]) -> String {
    let mut metrics: Vec<Metric> = Vec::new();
    let mut versus: Vec<&str> = Vec::new();
    for c in comparisons {
        if !metrics.contains(&c.metric) {
            metrics.push(c.metric);
        }
        if !versus.contains(&c.versus.as_str()) {
            versus.push(&c.versus);
        }
    }
    let mut md = String::from("| APO student vs |");
    for m in &metrics {
        md.push_str(&format!(" {} difference [95 % CI] |", m.label()));
    }
    md.push_str(" P(APO higher) |\n|---|");
    md.push_str(&"---|".repeat(metrics.len() + 1));
    md.push('\n');
    for v in versus {
        md.push_str(&format!("| {v} |"));
        let mut share = None;
        for m in &metrics {
            match comparisons.iter().find(|c| c.versus == v && c.metric == *m) {
                Some(c) => {
                    let d = &c.difference;
                    share.get_or_insert(d.share_a_higher);
                    md.push_str(&format!(
                        " {:+.4} [{:+.4}, {:+.4}] |",
                        d.difference, d.ci95[0], d.ci95[1]
                    ));
                }
                None => md.push_str(" - |"),
            }
        }
        md.push_str(&share.map_or(" - |\n".to_owned(), |s| format!(" {s:.3} |\n")));
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
    /// Per finding (all 14, by CheXpert column name).
    pub findings: BTreeMap<String, FindingMetrics>,
    /// Over the evaluated findings (the Table 1 five).
    pub summary: Summary,
    /// Over all 14 findings.
    pub summary_14: Summary,
    /// Share of the row's trajectories whose earlier statements contradict or hedge their
    /// final ones (teachers and students; `None` for rows that write no text).
    pub inconsistent: Option<f64>,
}
