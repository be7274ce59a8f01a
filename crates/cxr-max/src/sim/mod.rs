//! The CXR-MAX simulator: writes a data set in the real on-disk formats (CXR-MAX records as
//! JSONL, the three MIMIC-CXR-JPG tables gzipped, JPEG images in the MIMIC folder layout)
//! so that every later stage reads it back through the real readers.

mod draw;
pub mod profiles;
mod text;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use profiles::{
    DEFAULT_PROFILES, DriftSegment, Profiles, Rates, Style, TeacherProfile,
    balanced_accuracy_from_top1, rates_from_balanced_accuracy, specificity_from_precision_recall,
    tilt_from_precision_recall,
};

use rayon::prelude::*;

use crate::rng::Rng;
use crate::{CxrError, Finding, Findings, LabelStatus, Result};
use text::Statement;

/// The prompt the simulated teachers answer (label-free, so that a student's accuracy
/// measures image reading; the real CXR-MAX prompt is reconstructed to name the labels).
pub const PROMPT: &str = "This is a patient's chest DR image. Please describe the findings and explain the basis for the diagnosis.";

/// File names written by the simulator (the MIMIC-CXR-JPG names are the real ones).
pub mod files {
    /// CXR-MAX records, one JSON object per image.
    pub const RECORDS: &str = "cxr-max.jsonl";
    /// Per-study CheXpert labels.
    pub const CHEXPERT: &str = "mimic-cxr-2.0.0-chexpert.csv.gz";
    /// Per-image metadata.
    pub const METADATA: &str = "mimic-cxr-2.0.0-metadata.csv.gz";
    /// Per-image split.
    pub const SPLIT: &str = "mimic-cxr-2.0.0-split.csv.gz";
    /// The profiles the data set was simulated with.
    pub const PROFILES: &str = "teachers.toml";
    /// The manifest of the counterfactual renders (with `SynthConfig::counterfactuals`).
    pub const COUNTERFACTUALS: &str = "counterfactuals.jsonl";
    /// The folder of the counterfactual renders: `counterfactuals/{dicom_id}/{slug}.jpg`.
    pub const COUNTERFACTUAL_DIR: &str = "counterfactuals";
}

/// The findings on which AP films raise every teacher's false-positive rate.
pub const CONFOUNDED: [Finding; 2] = [Finding::Edema, Finding::PleuralEffusion];

/// The lowest specificity the AP confounder leaves.
pub const CONFOUNDED_MIN_SPECIFICITY: f64 = 0.05;

/// Parameters of a simulation.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    /// Number of studies (one frontal image each).
    pub studies: usize,
    /// Seed: the whole data set is a function of it.
    pub seed: u64,
    /// Image width and height in pixels.
    pub image_size: u32,
    /// The teachers.
    pub profiles: Profiles,
    /// Write the images (off: records and tables only, e.g. for reader benchmarks).
    pub images: bool,
    /// Share of images that are subtle (default 0.25): their positive signs are drawn at half
    /// the intensity change, and every teacher's sensitivity on them is multiplied by
    /// `subtle_sensitivity`. The profiles' rates are those on clear images.
    pub subtle_rate: f64,
    /// Factor on every teacher's sensitivity on a subtle image (default 0.5).
    pub subtle_sensitivity: f64,
    /// Factor on every teacher's false-positive rate (1 − specificity) on [`CONFOUNDED`]
    /// findings on AP films (about 30 % of the studies, drawn with lower contrast; default
    /// 3.0), with the specificity kept at or above [`CONFOUNDED_MIN_SPECIFICITY`].
    pub confounder_fp: f64,
    /// Also render every test-split image once per Table 1 finding with that finding toggled
    /// (`counterfactuals/`, manifest [`files::COUNTERFACTUALS`]); needs `images`.
    pub counterfactuals: bool,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            studies: 1000,
            seed: 0,
            image_size: 128,
            profiles: Profiles::embedded(),
            images: true,
            subtle_rate: 0.25,
            subtle_sensitivity: 0.5,
            confounder_fp: 3.0,
            counterfactuals: false,
        }
    }
}

/// What a simulation wrote.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SynthSummary {
    /// Studies (= images).
    pub studies: usize,
    /// Trajectories (studies × teachers).
    pub trajectories: usize,
    /// Teachers.
    pub teachers: Vec<String>,
    /// Trajectories that are refusals.
    pub refusals: usize,
    /// Studies per split (train, validate, test).
    pub splits: [usize; 3],
    /// Positive ground-truth labels per finding, in column order.
    pub positives: Vec<usize>,
    /// Subtle images.
    #[serde(default)]
    pub subtle: usize,
    /// AP films.
    #[serde(default)]
    pub ap: usize,
    /// Counterfactual renders written.
    #[serde(default)]
    pub counterfactuals: usize,
}

/// Prevalence of each finding in the simulated population (column order); Lung Opacity and
/// No Finding are derived.
const PREVALENCE: [f64; 14] = [
    0.22, 0.20, 0.10, 0.15, 0.06, 0.04, 0.06, 0.08, 0.0, 0.25, 0.03, 0.12, 0.07, 0.30,
];

/// One simulated study.
#[derive(Debug, Clone)]
struct Study {
    subject_id: u64,
    study_id: u64,
    dicom_id: String,
    view: &'static str,
    split: &'static str,
    truth: Findings,
    /// What the CSV says: positives 1.0, some negatives 0.0, the rest blank.
    csv: Findings,
    /// A subtle image (fainter signs, lower sensitivity of every teacher).
    subtle: bool,
}

impl Study {
    fn look(&self) -> draw::Look {
        draw::Look {
            subtle: self.subtle,
            ap: self.view == "AP",
        }
    }
}

fn study(index: usize, seed: u64, subtle_rate: f64) -> Study {
    let mut rng = Rng::substream(seed, index as u64);
    let mut truth = Findings::default();
    for f in Finding::ALL {
        if rng.bernoulli(PREVALENCE[f.index()]) {
            truth.set(f, LabelStatus::Positive);
        }
    }
    let pos = |t: &Findings, f: Finding| t.get(f) == LabelStatus::Positive;
    if pos(&truth, Finding::Consolidation) || pos(&truth, Finding::Pneumonia) {
        truth.set(Finding::LungOpacity, LabelStatus::Positive);
    }
    let pathology = Finding::ALL
        .into_iter()
        .any(|f| f.is_pathology() && pos(&truth, f));
    if !pathology {
        truth.set(Finding::NoFinding, LabelStatus::Positive);
    }
    let mut csv = Findings::default();
    for f in Finding::ALL {
        let status = if pos(&truth, f) {
            LabelStatus::Positive
        } else if f != Finding::NoFinding && rng.bernoulli(0.3) {
            LabelStatus::Negative
        } else {
            LabelStatus::NotMentioned
        };
        csv.set(f, status);
    }
    let hex = |rng: &mut Rng| format!("{:08x}", rng.next_u64() as u32);
    let dicom_id = (0..5).map(|_| hex(&mut rng)).collect::<Vec<_>>().join("-");
    let u = rng.uniform();
    let split = if u < 0.8 {
        "train"
    } else if u < 0.9 {
        "validate"
    } else {
        "test"
    };
    let view = if rng.bernoulli(0.7) { "PA" } else { "AP" };
    Study {
        subject_id: 10_000_000 + index as u64 * 331 % 9_000_000,
        study_id: 50_000_000 + index as u64 * 257,
        dicom_id,
        view,
        split,
        truth,
        csv,
        subtle: rng.bernoulli(subtle_rate),
    }
}

/// The relative path of an image in the MIMIC-CXR-JPG layout:
/// `files/p{first two digits of subject}/p{subject}/s{study}/{dicom}.jpg`.
///
/// # Examples
/// ```
/// use cxr_max::sim::image_path;
/// assert_eq!(
///     image_path(10000032, 50414267, "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"),
///     std::path::PathBuf::from("files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg")
/// );
/// ```
pub fn image_path(subject_id: u64, study_id: u64, dicom_id: &str) -> PathBuf {
    let subject = subject_id.to_string();
    let prefix = &subject[..2.min(subject.len())];
    PathBuf::from(format!(
        "files/p{prefix}/p{subject}/s{study_id}/{dicom_id}.jpg"
    ))
}

/// What a teacher's rates depend on besides the profile: the image and the error model.
#[derive(Debug, Clone, Copy)]
struct Conditions {
    subtle: bool,
    ap: bool,
    subtle_sensitivity: f64,
    confounder_fp: f64,
}

impl Conditions {
    fn of(study: &Study, config: &SynthConfig) -> Self {
        Conditions {
            subtle: study.subtle,
            ap: study.view == "AP",
            subtle_sensitivity: config.subtle_sensitivity,
            confounder_fp: config.confounder_fp,
        }
    }

    /// The profile's (clear-image) rates on this image.
    fn apply(self, finding: Finding, rates: Rates) -> Rates {
        let mut r = rates;
        if self.subtle {
            r.sensitivity *= self.subtle_sensitivity;
        }
        if self.ap && CONFOUNDED.contains(&finding) {
            let floor = CONFOUNDED_MIN_SPECIFICITY.min(r.specificity);
            r.specificity = (1.0 - (1.0 - r.specificity) * self.confounder_fp).max(floor);
        }
        r
    }
}

/// The statements of one teacher about one study, in writing order.
///
/// Which findings are stated does not depend on the truth: the five of Table 1 always, every
/// other finding but No Finding with the teacher's `mention_rate`. A present finding is
/// stated present with the sensitivity, an absent one with 1 − specificity. No Finding is
/// stated when the teacher's own final statements have no positive pathology.
fn statements(
    profile: &TeacherProfile,
    truth: &Findings,
    position: f64,
    conditions: Conditions,
    rng: &mut Rng,
) -> Vec<Statement> {
    let mut stated = Vec::new();
    for f in Finding::ALL {
        // The five of Table 1 draw nothing; every other finding draws its mention.
        let always = Finding::TABLE1.contains(&f);
        if always || (f != Finding::NoFinding && rng.bernoulli(profile.mention_rate)) {
            stated.push(f);
        }
    }
    let mut out = Vec::new();
    let mut finals = Vec::new();
    for f in stated {
        let present = truth.get(f) == LabelStatus::Positive;
        let rates = conditions.apply(f, profile.rates_at(f, position));
        let correct = rng.bernoulli(if present {
            rates.sensitivity
        } else {
            rates.specificity
        });
        let asserted = if present == correct {
            LabelStatus::Positive
        } else {
            LabelStatus::Negative
        };
        if rng.bernoulli(profile.drift_rate) {
            // Within-trajectory drift: an earlier statement hedges or contradicts the final one.
            let early = if rng.bernoulli(0.5) {
                LabelStatus::Uncertain
            } else if asserted == LabelStatus::Positive {
                LabelStatus::Negative
            } else {
                LabelStatus::Positive
            };
            out.push(Statement {
                finding: f,
                status: early,
            });
        }
        finals.push(Statement {
            finding: f,
            status: asserted,
        });
    }
    let any_positive = finals
        .iter()
        .any(|s| s.status == LabelStatus::Positive && s.finding.is_pathology());
    // Drifted early statements come first; the final statement on each finding comes later.
    out.extend(finals);
    if !any_positive {
        out.push(Statement {
            finding: Finding::NoFinding,
            status: LabelStatus::Positive,
        });
    }
    out
}

/// One counterfactual render: a test image drawn again with one Table 1 finding toggled.
#[derive(Debug, Clone, PartialEq)]
pub struct Counterfactual {
    /// The original image.
    pub dicom_id: String,
    /// The toggled finding.
    pub finding: Finding,
    /// The finding's state in the render (the opposite of the truth).
    pub present: bool,
    /// The render, relative to the data set folder.
    pub path: PathBuf,
}

/// A finding's file-name slug: its column name in lower case, spaces as `-`.
///
/// # Examples
/// ```
/// use cxr_max::Finding;
/// assert_eq!(cxr_max::sim::slug(Finding::PleuralEffusion), "pleural-effusion");
/// ```
pub fn slug(finding: Finding) -> String {
    finding.column_name().to_lowercase().replace(' ', "-")
}

/// Reads the counterfactual manifest ([`files::COUNTERFACTUALS`]) of a simulated data set.
///
/// # Errors
/// [`CxrError::Io`] for a missing or unreadable manifest; [`CxrError::Record`] naming the
/// file and line for a line that is not a JSON object with `dicom_id`, `finding` (a column
/// name), `present` (a boolean) and a relative `path` inside the data set.
pub fn read_counterfactuals(dir: &Path) -> Result<Vec<Counterfactual>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Line {
        dicom_id: String,
        finding: String,
        present: bool,
        path: PathBuf,
    }
    let path = dir.join(files::COUNTERFACTUALS);
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record = |reason: String| CxrError::Record {
            path: path.clone(),
            line: i + 1,
            reason,
        };
        let l: Line = serde_json::from_str(line).map_err(|e| record(e.to_string()))?;
        let finding = Finding::ALL
            .into_iter()
            .find(|f| f.column_name() == l.finding)
            .ok_or_else(|| record(format!("unknown finding `{}`", l.finding)))?;
        if l.path.is_absolute()
            || l.path
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(record(format!(
                "path `{}` is not relative to the data set",
                l.path.display()
            )));
        }
        out.push(Counterfactual {
            dicom_id: l.dicom_id,
            finding,
            present: l.present,
            path: l.path,
        });
    }
    Ok(out)
}

/// The pixels of study `index`'s image, drawn for `truth` (its own or a counterfactual).
fn render(config: &SynthConfig, index: usize, st: &Study, truth: &Findings) -> Vec<u8> {
    let mut rng = Rng::substream(config.seed ^ 0x1111_2222, index as u64);
    draw::radiograph(config.image_size, truth, st.look(), &mut rng)
}

fn write_jpeg(path: &Path, pixels: &[u8], size: u32) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let file = std::fs::File::create(path).map_err(io_err(path))?;
    let mut writer = std::io::BufWriter::new(file);
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut writer, 92);
    image::ImageEncoder::write_image(encoder, pixels, size, size, image::ExtendedColorType::L8)
        .map_err(|e| CxrError::Image {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    writer.flush().map_err(io_err(path))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CxrError + '_ {
    move |source| CxrError::Io {
        path: path.to_owned(),
        source,
    }
}

fn write_gz(path: &Path, text: &str) -> Result<()> {
    let file = std::fs::File::create(path).map_err(io_err(path))?;
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    gz.write_all(text.as_bytes()).map_err(io_err(path))?;
    gz.finish().map_err(io_err(path))?;
    Ok(())
}

/// Writes a simulated data set to `out`.
///
/// # Errors
/// [`CxrError::Io`] for files that cannot be written; [`CxrError::Config`] for a zero study
/// count or an image size below 16.
///
/// # Examples
/// ```
/// use cxr_max::sim::{SynthConfig, synthesize};
/// let dir = std::env::temp_dir().join("cxr-max-doc-synth");
/// let summary = synthesize(&dir, &SynthConfig { studies: 20, image_size: 32, ..Default::default() })?;
/// assert_eq!(summary.trajectories, 20 * 7);
/// assert!(dir.join("cxr-max.jsonl").exists());
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), cxr_max::CxrError>(())
/// ```
pub fn synthesize(out: &Path, config: &SynthConfig) -> Result<SynthSummary> {
    let cfg_err = |reason: &str| CxrError::Config {
        path: out.to_owned(),
        reason: reason.to_owned(),
    };
    if config.studies == 0 {
        return Err(cfg_err("the number of studies must be at least 1"));
    }
    if config.image_size < 16 {
        return Err(cfg_err("the image size must be at least 16 pixels"));
    }
    for (name, v) in [
        ("subtle_rate", config.subtle_rate),
        ("subtle_sensitivity", config.subtle_sensitivity),
    ] {
        if !(0.0..=1.0).contains(&v) {
            return Err(cfg_err(&format!("{name} = {v} is not in [0, 1]")));
        }
    }
    if !(config.confounder_fp.is_finite() && config.confounder_fp >= 0.0) {
        return Err(cfg_err(&format!(
            "confounder_fp = {} is not a finite factor >= 0",
            config.confounder_fp
        )));
    }
    if config.counterfactuals && !config.images {
        return Err(cfg_err("counterfactual renders need the images"));
    }
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let studies: Vec<Study> = (0..config.studies)
        .map(|i| study(i, config.seed, config.subtle_rate))
        .collect();

    // Records: one JSON object per image, trajectories as a list of {model, response}.
    let mut records = String::new();
    let mut refusals = 0;
    let teachers = &config.profiles.teacher;
    for (i, st) in studies.iter().enumerate() {
        let position = i as f64 / config.studies as f64;
        let trajectories: Vec<serde_json::Value> = teachers
            .iter()
            .enumerate()
            .map(|(u, t)| {
                let mut rng = Rng::substream(config.seed ^ 0xA5A5_0000, (i * 64 + u) as u64);
                let refusal = rng.bernoulli(t.refusal_rate);
                refusals += usize::from(refusal);
                let stmts =
                    statements(t, &st.truth, position, Conditions::of(st, config), &mut rng);
                let response = text::trajectory(t.style, &stmts, refusal, &mut rng);
                serde_json::json!({ "model": t.name, "response": response })
            })
            .collect();
        let record = serde_json::json!({
            "dicom_id": st.dicom_id,
            "subject_id": st.subject_id,
            "study_id": st.study_id,
            "prompt": PROMPT,
            "trajectories": trajectories,
        });
        records.push_str(&record.to_string());
        records.push('\n');
    }
    let path = out.join(files::RECORDS);
    std::fs::write(&path, records).map_err(io_err(&path))?;

    // The three MIMIC-CXR-JPG tables.
    let mut chexpert = String::from("subject_id,study_id");
    for f in Finding::ALL {
        chexpert.push(',');
        chexpert.push_str(f.column_name());
    }
    chexpert.push('\n');
    let mut metadata = String::from(
        "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,StudyDate,StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,PatientOrientationCodeSequence_CodeMeaning\n",
    );
    let mut split = String::from("dicom_id,study_id,subject_id,split\n");
    let mut splits = [0usize; 3];
    let mut positives = vec![0usize; 14];
    for (i, st) in studies.iter().enumerate() {
        chexpert.push_str(&format!("{},{}", st.subject_id, st.study_id));
        for f in Finding::ALL {
            chexpert.push(',');
            chexpert.push_str(st.csv.get(f).to_csv());
            positives[f.index()] += usize::from(st.truth.get(f) == LabelStatus::Positive);
        }
        chexpert.push('\n');
        let view_meaning = if st.view == "PA" {
            "postero-anterior"
        } else {
            "antero-posterior"
        };
        metadata.push_str(&format!(
            "{},{},{},CHEST (PA AND LAT),{},{},{},{},{:06}.000,CHEST (PA AND LAT),{view_meaning},Erect\n",
            st.dicom_id,
            st.subject_id,
            st.study_id,
            st.view,
            config.image_size,
            config.image_size,
            21_000_101 + (i % 28) as u64,
            (i * 7919) % 235_959,
        ));
        split.push_str(&format!(
            "{},{},{},{}\n",
            st.dicom_id, st.study_id, st.subject_id, st.split
        ));
        splits[match st.split {
            "train" => 0,
            "validate" => 1,
            _ => 2,
        }] += 1;
    }
    write_gz(&out.join(files::CHEXPERT), &chexpert)?;
    write_gz(&out.join(files::METADATA), &metadata)?;
    write_gz(&out.join(files::SPLIT), &split)?;
    let profiles_text = toml::to_string(&config.profiles).map_err(|e| cfg_err(&e.to_string()))?;
    let path = out.join(files::PROFILES);
    std::fs::write(&path, profiles_text).map_err(io_err(&path))?;

    // Images (and counterfactual renders), drawn and encoded in parallel.
    let studies_with_images: &[Study] = if config.images { &studies } else { &[] };
    // Every outcome is kept, so the error reported is the first in study order.
    let results: Vec<Result<Vec<Counterfactual>>> = studies_with_images
        .par_iter()
        .enumerate()
        .map(|(index, st)| -> Result<Vec<Counterfactual>> {
            let pixels = render(config, index, st, &st.truth);
            let rel = image_path(st.subject_id, st.study_id, &st.dicom_id);
            write_jpeg(&out.join(&rel), &pixels, config.image_size)?;
            let mut renders = Vec::new();
            if config.counterfactuals && st.split == "test" {
                for f in Finding::TABLE1 {
                    let present = st.truth.get(f) != LabelStatus::Positive;
                    let mut truth = st.truth;
                    truth.set(
                        f,
                        if present {
                            LabelStatus::Positive
                        } else {
                            LabelStatus::NotMentioned
                        },
                    );
                    let pixels = render(config, index, st, &truth);
                    let rel = Path::new(files::COUNTERFACTUAL_DIR)
                        .join(&st.dicom_id)
                        .join(format!("{}.jpg", slug(f)));
                    write_jpeg(&out.join(&rel), &pixels, config.image_size)?;
                    renders.push(Counterfactual {
                        dicom_id: st.dicom_id.clone(),
                        finding: f,
                        present,
                        path: rel,
                    });
                }
            }
            Ok(renders)
        })
        .collect();
    let renders: Vec<Counterfactual> = results
        .into_iter()
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
    if config.counterfactuals {
        let mut manifest = String::new();
        for c in &renders {
            let line = serde_json::json!({
                "dicom_id": c.dicom_id,
                "finding": c.finding.column_name(),
                "present": c.present,
                "path": c.path.to_string_lossy().replace('\\', "/"),
            });
            manifest.push_str(&line.to_string());
            manifest.push('\n');
        }
        let path = out.join(files::COUNTERFACTUALS);
        std::fs::write(&path, manifest).map_err(io_err(&path))?;
    }

    Ok(SynthSummary {
        studies: studies.len(),
        trajectories: studies.len() * teachers.len(),
        teachers: teachers.iter().map(|t| t.name.clone()).collect(),
        refusals,
        splits,
        positives,
        subtle: studies.iter().filter(|s| s.subtle).count(),
        ap: studies.iter().filter(|s| s.view == "AP").count(),
        counterfactuals: renders.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings;

    /// Every file of a simulated data set, by path relative to `dir`, with its bytes.
    fn files(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
        let mut out = std::collections::BTreeMap::new();
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let rel = path.strip_prefix(dir).unwrap().to_owned();
                    out.insert(rel, std::fs::read(&path).unwrap());
                }
            }
        }
        out
    }

    fn teacher<'a>(profiles: &'a Profiles, name: &str) -> &'a TeacherProfile {
        profiles.teacher.iter().find(|t| t.name == name).unwrap()
    }

    const CLEAR: Conditions = Conditions {
        subtle: false,
        ap: false,
        subtle_sensitivity: 0.5,
        confounder_fp: 3.0,
    };

    /// The data set is the same file for file, byte for byte, on one thread or several.
    #[test]
    fn the_data_set_does_not_depend_on_the_thread_count() {
        let base = std::env::temp_dir().join(format!("cxr-max-threads-{}", std::process::id()));
        let config = SynthConfig {
            studies: 24,
            image_size: 32,
            counterfactuals: true,
            ..Default::default()
        };
        let sets: Vec<_> = [1, 3]
            .into_iter()
            .map(|threads| {
                let dir = base.join(threads.to_string());
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let summary = pool.install(|| synthesize(&dir, &config)).unwrap();
                assert_eq!(summary.counterfactuals, 5 * summary.splits[2]);
                files(&dir)
            })
            .collect();
        let jpgs = |under: &str| {
            sets[0]
                .keys()
                .filter(|p| p.starts_with(under) && p.extension().is_some_and(|e| e == "jpg"))
                .count()
        };
        assert_eq!(jpgs("files"), 24);
        assert!(jpgs(files::COUNTERFACTUAL_DIR) > 0);
        assert!(sets[0] == sets[1]);
        std::fs::remove_dir_all(&base).ok();
    }

    /// What the labeler reads from a simulated trajectory is exactly each finding's final
    /// statement, whatever the style and the within-trajectory drift.
    #[test]
    fn trajectories_read_back_as_their_final_statements() {
        let profiles = Profiles::embedded();
        let mut checked = 0;
        for i in 0..300 {
            let st = study(i, 11, 0.25);
            let config = SynthConfig::default();
            for (u, t) in profiles.teacher.iter().enumerate() {
                let mut rng = Rng::substream(5, (i * 8 + u) as u64);
                let stmts = statements(
                    t,
                    &st.truth,
                    i as f64 / 300.0,
                    Conditions::of(&st, &config),
                    &mut rng,
                );
                let text = text::trajectory(t.style, &stmts, false, &mut rng);
                let got = findings::extract(&text);
                let mut want = Findings::default();
                for s in &stmts {
                    want.set(s.finding, s.status);
                }
                if Finding::ALL.iter().any(|f| {
                    f.is_pathology()
                        && matches!(want.get(*f), LabelStatus::Positive | LabelStatus::Uncertain)
                }) {
                    want.set(Finding::NoFinding, LabelStatus::NotMentioned);
                }
                assert_eq!(got.findings, want, "{}: {text}", t.name);
                checked += 1;
            }
        }
        assert_eq!(checked, 2100);
    }

    /// Empirical sensitivity and specificity of the final statements on `finding` over
    /// `n` studies of seed 2, under `conditions` (or each study's own when `None`),
    /// keeping only the studies `keep` accepts.
    fn empirical(
        t: &TeacherProfile,
        finding: Finding,
        position: f64,
        n: usize,
        conditions: Option<Conditions>,
        keep: impl Fn(&Study) -> bool,
    ) -> Rates {
        let config = SynthConfig::default();
        let (mut tp, mut pos, mut tn, mut neg) = (0usize, 0usize, 0usize, 0usize);
        for i in 0..n {
            let st = study(i, 2, 0.25);
            if !keep(&st) {
                continue;
            }
            let mut rng = Rng::substream(9, i as u64);
            let c = conditions.unwrap_or_else(|| Conditions::of(&st, &config));
            let stmts = statements(t, &st.truth, position, c, &mut rng);
            // The final statement on the finding (earlier ones may be drifted).
            let said = stmts
                .iter()
                .rfind(|s| s.finding == finding)
                .expect("Table 1 findings are always stated")
                .status
                == LabelStatus::Positive;
            if st.truth.get(finding) == LabelStatus::Positive {
                pos += 1;
                tp += usize::from(said);
            } else {
                neg += 1;
                tn += usize::from(!said);
            }
        }
        Rates {
            sensitivity: tp as f64 / pos as f64,
            specificity: tn as f64 / neg as f64,
        }
    }

    #[test]
    fn rates_follow_the_profile_and_its_drift() {
        let profiles = Profiles::embedded();
        let gemini = teacher(&profiles, "Gemini-2.5");
        let r = |t: &TeacherProfile, f, at| {
            let r = t.rates_at(f, at);
            (r.sensitivity, r.specificity)
        };
        assert_eq!(r(gemini, Finding::Pneumothorax, 0.2), (0.92, 0.99));
        assert_eq!(r(gemini, Finding::Pneumothorax, 0.5), (0.386, 0.789));
        assert_eq!(r(gemini, Finding::Fracture, 0.7), (0.446, 0.849));
        assert_eq!(r(gemini, Finding::SupportDevices, 0.7), (0.9, 0.9));
        // Empirical rates of the final statements on clear images match the profile, within
        // about three standard errors (6,000 studies: ~1,500 effusions).
        let gpt = teacher(&profiles, "GPT-5");
        let e = empirical(
            gpt,
            Finding::PleuralEffusion,
            0.0,
            6000,
            Some(CLEAR),
            |_| true,
        );
        assert!((e.sensitivity - 0.618).abs() < 0.04, "{e:?}");
        assert!((e.specificity - 0.902).abs() < 0.015, "{e:?}");
        let grok = teacher(&profiles, "Grok-4");
        let before = empirical(
            grok,
            Finding::PleuralEffusion,
            0.3,
            6000,
            Some(CLEAR),
            |_| true,
        );
        let after = empirical(
            grok,
            Finding::PleuralEffusion,
            0.7,
            6000,
            Some(CLEAR),
            |_| true,
        );
        assert!((before.sensitivity - 0.178).abs() < 0.035, "{before:?}");
        assert!((before.specificity - 0.938).abs() < 0.015, "{before:?}");
        assert!((after.sensitivity - 0.785).abs() < 0.035, "{after:?}");
        assert!((after.specificity - 0.99).abs() < 0.01, "{after:?}");
    }

    /// Subtle images halve every teacher's sensitivity; AP films triple the false-positive
    /// rate on Edema and Pleural Effusion and leave the other findings alone.
    #[test]
    fn subtle_images_and_ap_films_move_the_rates() {
        let profiles = Profiles::embedded();
        let gpt = teacher(&profiles, "GPT-5");
        let n = 8000;
        let pe = Finding::PleuralEffusion;
        let subtle = empirical(gpt, pe, 0.0, n, None, |s| s.subtle);
        let clear = empirical(gpt, pe, 0.0, n, None, |s| !s.subtle);
        let ratio = subtle.sensitivity / clear.sensitivity;
        assert!(
            (ratio - 0.5).abs() < 0.12,
            "{subtle:?} vs {clear:?}: {ratio}"
        );
        for (f, want) in [
            (pe, 3.0),
            (Finding::Edema, 3.0),
            (Finding::Consolidation, 1.0),
        ] {
            let ap = empirical(gpt, f, 0.0, n, None, |s| s.view == "AP");
            let pa = empirical(gpt, f, 0.0, n, None, |s| s.view == "PA");
            let ratio = (1.0 - ap.specificity) / (1.0 - pa.specificity);
            assert!(
                (ratio - want).abs() < 0.2 * want + 0.3,
                "{f}: {ap:?} vs {pa:?}: {ratio}"
            );
        }
        // The share of each kind of image.
        let studies: Vec<Study> = (0..n).map(|i| study(i, 2, 0.25)).collect();
        let share =
            |p: &dyn Fn(&Study) -> bool| studies.iter().filter(|s| p(s)).count() as f64 / n as f64;
        assert!((share(&|s| s.subtle) - 0.25).abs() < 0.02);
        assert!((share(&|s| s.view == "AP") - 0.3).abs() < 0.02);
        // The rates on the image, exactly.
        let on = |subtle, ap| {
            Conditions {
                subtle,
                ap,
                ..CLEAR
            }
            .apply(Finding::Edema, gpt.rates_at(Finding::Edema, 0.0))
        };
        assert_eq!(on(false, false).sensitivity, 0.498);
        assert_eq!(on(true, false).sensitivity, 0.249);
        assert!((on(false, true).specificity - (1.0 - 3.0 * 0.218)).abs() < 1e-12);
        // The cap: a specificity of 0.6 would fall to -0.2, it stays at 0.05.
        let capped = CLEAR_AP.apply(
            Finding::Edema,
            Rates {
                sensitivity: 0.5,
                specificity: 0.6,
            },
        );
        assert_eq!(capped.specificity, CONFOUNDED_MIN_SPECIFICITY);
    }

    const CLEAR_AP: Conditions = Conditions { ap: true, ..CLEAR };

    /// Which findings are stated does not depend on the truth.
    #[test]
    fn mentions_are_independent_of_the_truth() {
        let profiles = Profiles::embedded();
        let gpt = teacher(&profiles, "GPT-5");
        let n = 6000;
        // Per finding outside Table 1: (stated | present, present, stated | absent, absent).
        let mut counts = [[0usize; 4]; 14];
        for i in 0..n {
            let st = study(i, 4, 0.25);
            let mut rng = Rng::substream(13, i as u64);
            let stmts = statements(gpt, &st.truth, 0.0, CLEAR, &mut rng);
            for f in Finding::ALL {
                let said = stmts.iter().any(|s| s.finding == f);
                if Finding::TABLE1.contains(&f) {
                    assert!(said);
                    continue;
                }
                let k = if st.truth.get(f) == LabelStatus::Positive {
                    0
                } else {
                    2
                };
                counts[f.index()][k] += usize::from(said);
                counts[f.index()][k + 1] += 1;
            }
            // No Finding follows the teacher's own final statements.
            let finals = {
                let mut fs = Findings::default();
                for s in &stmts {
                    fs.set(s.finding, s.status);
                }
                fs
            };
            let own_pathology = Finding::ALL
                .iter()
                .any(|&f| f.is_pathology() && finals.get(f) == LabelStatus::Positive);
            assert_eq!(
                finals.get(Finding::NoFinding) == LabelStatus::Positive,
                !own_pathology
            );
        }
        for f in [
            Finding::Atelectasis,
            Finding::Cardiomegaly,
            Finding::SupportDevices,
        ] {
            let [sp, p, sa, a] = counts[f.index()];
            let (when_present, when_absent) = (sp as f64 / p as f64, sa as f64 / a as f64);
            assert!((when_present - 0.5).abs() < 0.05, "{f}: {when_present}");
            assert!((when_absent - 0.5).abs() < 0.03, "{f}: {when_absent}");
        }
    }

    fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| (f64::from(x) - f64::from(y)).abs())
            .sum::<f64>()
            / a.len() as f64
    }

    /// Subtle signs are fainter: an image drawn with a finding differs less from the same
    /// image drawn without it when subtle; AP films have less contrast.
    #[test]
    fn subtle_signs_are_fainter_and_ap_films_flatter() {
        let mut gaps = [0.0f64; 2];
        for i in 0..20 {
            let mut positive = Findings::default();
            for f in Finding::TABLE1 {
                positive.set(f, LabelStatus::Positive);
            }
            let negative = Findings::default();
            for (k, subtle) in [false, true].into_iter().enumerate() {
                let look = draw::Look { subtle, ap: false };
                let rng = Rng::substream(21, i);
                let with = draw::radiograph(64, &positive, look, &mut rng.clone());
                let without = draw::radiograph(64, &negative, look, &mut rng.clone());
                gaps[k] += mean_abs_diff(&with, &without);
            }
        }
        let ratio = gaps[1] / gaps[0];
        assert!((0.35..0.75).contains(&ratio), "{gaps:?}");
        let sd = |img: &[u8]| {
            let m = img.iter().map(|&v| f64::from(v)).sum::<f64>() / img.len() as f64;
            (img.iter().map(|&v| (f64::from(v) - m).powi(2)).sum::<f64>() / img.len() as f64).sqrt()
        };
        let rng = Rng::substream(22, 0);
        let t = Findings::default();
        let pa = draw::radiograph(64, &t, draw::Look::default(), &mut rng.clone());
        let ap = draw::radiograph(
            64,
            &t,
            draw::Look {
                subtle: false,
                ap: true,
            },
            &mut rng.clone(),
        );
        assert!(sd(&ap) < 0.8 * sd(&pa), "{} vs {}", sd(&ap), sd(&pa));
    }

    /// The drawing consumes its generator the same way whatever the truth: toggling one
    /// finding changes the pixels of its sign only, not the noise of the whole image.
    #[test]
    fn toggling_a_finding_changes_only_its_sign() {
        for i in 0..10 {
            let st = study(i, 8, 0.25);
            for f in Finding::TABLE1 {
                let mut toggled = st.truth;
                toggled.set(
                    f,
                    if st.truth.get(f) == LabelStatus::Positive {
                        LabelStatus::NotMentioned
                    } else {
                        LabelStatus::Positive
                    },
                );
                let rng = Rng::substream(23, i as u64);
                let a = draw::radiograph(64, &st.truth, st.look(), &mut rng.clone());
                let b = draw::radiograph(64, &toggled, st.look(), &mut rng.clone());
                let changed = a.iter().zip(&b).filter(|(x, y)| x != y).count();
                let share = changed as f64 / a.len() as f64;
                assert!(changed > 0 && share < 0.5, "study {i}, {f}: {share}");
            }
        }
    }

    fn jpeg(pixels: &[u8], size: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 92);
        image::ImageEncoder::write_image(encoder, pixels, size, size, image::ExtendedColorType::L8)
            .unwrap();
        bytes
    }

    #[test]
    fn counterfactuals_toggle_one_finding_and_read_back() {
        let dir = std::env::temp_dir().join(format!("cxr-max-cf-{}", std::process::id()));
        let config = SynthConfig {
            studies: 60,
            image_size: 32,
            seed: 6,
            counterfactuals: true,
            ..Default::default()
        };
        let summary = synthesize(&dir, &config).unwrap();
        let test = summary.splits[2];
        assert!(test >= 3, "{summary:?}");
        let renders = read_counterfactuals(&dir).unwrap();
        assert_eq!(renders.len(), 5 * test);
        assert_eq!(summary.counterfactuals, renders.len());
        let studies: Vec<Study> = (0..60).map(|i| study(i, 6, 0.25)).collect();
        for c in &renders {
            let (index, st) = studies
                .iter()
                .enumerate()
                .find(|(_, s)| s.dicom_id == c.dicom_id)
                .unwrap();
            assert_eq!(st.split, "test");
            assert_eq!(c.present, st.truth.get(c.finding) != LabelStatus::Positive);
            assert_eq!(
                c.path,
                Path::new("counterfactuals")
                    .join(&st.dicom_id)
                    .join(format!("{}.jpg", slug(c.finding)))
            );
            let original =
                std::fs::read(dir.join(image_path(st.subject_id, st.study_id, &st.dicom_id)))
                    .unwrap();
            // The unchanged truth drawn again gives the original image, byte for byte.
            assert_eq!(jpeg(&render(&config, index, st, &st.truth), 32), original);
            let toggled = std::fs::read(dir.join(&c.path)).unwrap();
            assert_ne!(toggled, original, "{c:?}");
        }
        // Five per test image, one per Table 1 finding.
        for st in studies.iter().filter(|s| s.split == "test") {
            let mine: Vec<Finding> = renders
                .iter()
                .filter(|c| c.dicom_id == st.dicom_id)
                .map(|c| c.finding)
                .collect();
            assert_eq!(mine, Finding::TABLE1);
        }
        // Bad manifests are errors naming the file and the line.
        let manifest = dir.join(files::COUNTERFACTUALS);
        let good = std::fs::read_to_string(&manifest).unwrap();
        for (bad, says) in [
            ("{\"dicom_id\": \"x\"}", "missing field"),
            (
                "{\"dicom_id\": \"x\", \"finding\": \"Flu\", \"present\": true, \"path\": \"a.jpg\"}",
                "unknown finding `Flu`",
            ),
            (
                "{\"dicom_id\": \"x\", \"finding\": \"Edema\", \"present\": true, \"path\": \"../a.jpg\"}",
                "not relative",
            ),
        ] {
            std::fs::write(&manifest, format!("{good}{bad}\n")).unwrap();
            let err = read_counterfactuals(&dir).unwrap_err();
            let line = renders.len() + 1;
            assert!(
                matches!(err, CxrError::Record { line: l, .. } if l == line),
                "{err}"
            );
            assert!(err.to_string().contains(says), "{err}");
            assert!(err.to_string().contains("counterfactuals.jsonl"), "{err}");
        }
        std::fs::remove_dir_all(&dir).ok();
        assert!(matches!(
            read_counterfactuals(&dir),
            Err(CxrError::Io { .. })
        ));
    }

    #[test]
    fn invalid_configs_are_config_errors() {
        let dir = std::env::temp_dir().join(format!("cxr-max-badcfg-{}", std::process::id()));
        for config in [
            SynthConfig {
                subtle_rate: 1.5,
                ..Default::default()
            },
            SynthConfig {
                confounder_fp: f64::NAN,
                ..Default::default()
            },
            SynthConfig {
                images: false,
                counterfactuals: true,
                ..Default::default()
            },
        ] {
            assert!(matches!(
                synthesize(&dir, &config),
                Err(CxrError::Config { .. })
            ));
        }
        assert!(!dir.exists());
    }
}
