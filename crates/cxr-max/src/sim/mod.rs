//! The CXR-MAX simulator: writes a data set in the real on-disk formats (CXR-MAX records as
//! JSONL, the three MIMIC-CXR-JPG tables gzipped, JPEG images in the MIMIC folder layout)
//! so that every later stage reads it back through the real readers.

mod draw;
mod profiles;
mod text;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use profiles::{DEFAULT_PROFILES, DriftSegment, Profiles, Style, TeacherProfile};

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
}

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
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            studies: 1000,
            seed: 0,
            image_size: 128,
            profiles: Profiles::embedded(),
            images: true,
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
}

fn study(index: usize, seed: u64) -> Study {
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
    Study {
        subject_id: 10_000_000 + index as u64 * 331 % 9_000_000,
        study_id: 50_000_000 + index as u64 * 257,
        dicom_id,
        view: if rng.bernoulli(0.7) { "PA" } else { "AP" },
        split,
        truth,
        csv,
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

/// The statements of one teacher about one study, in writing order.
fn statements(
    profile: &TeacherProfile,
    truth: &Findings,
    position: f64,
    rng: &mut Rng,
) -> Vec<Statement> {
    // Every ground-truth positive, the five findings of Table 1, and one or two others.
    let mut stated: Vec<Finding> = Finding::ALL
        .into_iter()
        .filter(|&f| {
            f != Finding::NoFinding
                && (truth.get(f) == LabelStatus::Positive || Finding::TABLE1.contains(&f))
        })
        .collect();
    for _ in 0..1 + rng.below(2) {
        let f = Finding::ALL[rng.below(14)];
        if f != Finding::NoFinding && !stated.contains(&f) {
            stated.push(f);
        }
    }
    let mut out = Vec::new();
    let mut finals = Vec::new();
    for f in stated {
        let present = truth.get(f) == LabelStatus::Positive;
        let correct = rng.bernoulli(profile.accuracy_at(f, position));
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
    // Drifted early statements come first; the final statement on each finding comes later.
    out.extend(finals);
    let any_positive = out
        .iter()
        .any(|s| s.status == LabelStatus::Positive && s.finding.is_pathology());
    if !any_positive && truth.get(Finding::NoFinding) == LabelStatus::Positive {
        out.push(Statement {
            finding: Finding::NoFinding,
            status: LabelStatus::Positive,
        });
    }
    out
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
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let studies: Vec<Study> = (0..config.studies).map(|i| study(i, config.seed)).collect();

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
                let stmts = statements(t, &st.truth, position, &mut rng);
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

    // Images, drawn and encoded in parallel.
    let studies_with_images: &[Study] = if config.images { &studies } else { &[] };
    // Every outcome is kept, so the error reported is the first in study order.
    let results: Vec<Result<()>> = studies_with_images
        .par_iter()
        .enumerate()
        .map(|(index, st)| -> Result<()> {
            let mut rng = Rng::substream(config.seed ^ 0x1111_2222, index as u64);
            let pixels = draw::radiograph(config.image_size, &st.truth, &mut rng);
            let rel = image_path(st.subject_id, st.study_id, &st.dicom_id);
            let path = out.join(&rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            let file = std::fs::File::create(&path).map_err(io_err(&path))?;
            let mut writer = std::io::BufWriter::new(file);
            let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut writer, 92);
            image::ImageEncoder::write_image(
                encoder,
                &pixels,
                config.image_size,
                config.image_size,
                image::ExtendedColorType::L8,
            )
            .map_err(|e| CxrError::Image {
                path: path.clone(),
                reason: e.to_string(),
            })
        })
        .collect();
    results.into_iter().collect::<Result<Vec<()>>>()?;

    Ok(SynthSummary {
        studies: studies.len(),
        trajectories: studies.len() * teachers.len(),
        teachers: teachers.iter().map(|t| t.name.clone()).collect(),
        refusals,
        splits,
        positives,
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

    /// The data set is the same file for file, byte for byte, on one thread or several.
    #[test]
    fn the_data_set_does_not_depend_on_the_thread_count() {
        let base = std::env::temp_dir().join(format!("cxr-max-threads-{}", std::process::id()));
        let config = SynthConfig {
            studies: 24,
            image_size: 32,
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
                pool.install(|| synthesize(&dir, &config)).unwrap();
                files(&dir)
            })
            .collect();
        assert_eq!(
            sets[0]
                .keys()
                .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
                .count(),
            24
        );
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
            let st = study(i, 11);
            for (u, t) in profiles.teacher.iter().enumerate() {
                let mut rng = Rng::substream(5, (i * 8 + u) as u64);
                let stmts = statements(t, &st.truth, i as f64 / 300.0, &mut rng);
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

    #[test]
    fn accuracy_follows_the_profile_and_its_drift() {
        let profiles = Profiles::embedded();
        let gemini = profiles
            .teacher
            .iter()
            .find(|t| t.name == "Gemini-2.5")
            .unwrap();
        assert_eq!(gemini.accuracy_at(Finding::Pneumothorax, 0.2), 0.94);
        assert_eq!(gemini.accuracy_at(Finding::Pneumothorax, 0.7), 0.45);
        assert_eq!(gemini.accuracy_at(Finding::Fracture, 0.7), 0.55);
        // Empirical accuracy of the final statements matches the profile.
        let gpt = &profiles.teacher[0];
        let (mut ok, mut n) = (0, 0);
        for i in 0..3000 {
            let st = study(i, 2);
            let mut rng = Rng::substream(9, i as u64);
            // The final statement on the finding (earlier ones may be drifted).
            if let Some(s) = statements(gpt, &st.truth, 0.0, &mut rng)
                .iter()
                .rfind(|s| s.finding == Finding::Pneumonia)
            {
                n += 1;
                ok += usize::from(
                    (s.status == LabelStatus::Positive)
                        == (st.truth.get(Finding::Pneumonia) == LabelStatus::Positive),
                );
            }
        }
        let acc = ok as f64 / n as f64;
        assert!((acc - 0.89).abs() < 0.03, "{acc}");
    }

    #[test]
    fn invalid_profiles_are_config_errors() {
        let bad = "[[teacher]]\nname = \"A\"\nstyle = \"concise\"\ndefault_accuracy = 1.5\n";
        assert!(matches!(
            Profiles::parse(bad, Path::new("x.toml")),
            Err(CxrError::Config { .. })
        ));
        let unknown = "[[teacher]]\nname = \"A\"\nstyle = \"concise\"\ndefault_accuracy = 0.5\n[teacher.accuracy]\n\"Broken Heart\" = 0.5\n";
        let err = Profiles::parse(unknown, Path::new("x.toml")).unwrap_err();
        assert!(
            err.to_string().contains("unknown finding `Broken Heart`"),
            "{err}"
        );
        let dup = "[[teacher]]\nname = \"A\"\nstyle = \"concise\"\ndefault_accuracy = 0.5\n[[teacher]]\nname = \"A\"\nstyle = \"bullet\"\ndefault_accuracy = 0.5\n";
        assert!(
            Profiles::parse(dup, Path::new("x.toml"))
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        assert!(Profiles::parse("teacher = 3", Path::new("x.toml")).is_err());
    }
}
