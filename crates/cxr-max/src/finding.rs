//! The 14 CheXpert findings of MIMIC-CXR and their label statuses.

use std::fmt;
use std::str::FromStr;

use crate::CxrError;

/// One of the 14 CheXpert findings, in the column order of `mimic-cxr-2.0.0-chexpert.csv`.
///
/// # Examples
/// ```
/// use cxr_max::Finding;
/// assert_eq!(Finding::PleuralEffusion.column_name(), "Pleural Effusion");
/// assert_eq!("Support Devices".parse::<Finding>()?, Finding::SupportDevices);
/// assert_eq!(Finding::ALL.len(), 14);
/// # Ok::<(), cxr_max::CxrError>(())
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    /// Atelectasis.
    Atelectasis,
    /// Cardiomegaly.
    Cardiomegaly,
    /// Consolidation.
    Consolidation,
    /// Edema.
    Edema,
    /// Enlarged Cardiomediastinum.
    EnlargedCardiomediastinum,
    /// Fracture.
    Fracture,
    /// Lung Lesion.
    LungLesion,
    /// Lung Opacity.
    LungOpacity,
    /// No Finding.
    NoFinding,
    /// Pleural Effusion.
    PleuralEffusion,
    /// Pleural Other.
    PleuralOther,
    /// Pneumonia.
    Pneumonia,
    /// Pneumothorax.
    Pneumothorax,
    /// Support Devices.
    SupportDevices,
}

impl Finding {
    /// All findings in CSV column order.
    pub const ALL: [Finding; 14] = [
        Finding::Atelectasis,
        Finding::Cardiomegaly,
        Finding::Consolidation,
        Finding::Edema,
        Finding::EnlargedCardiomediastinum,
        Finding::Fracture,
        Finding::LungLesion,
        Finding::LungOpacity,
        Finding::NoFinding,
        Finding::PleuralEffusion,
        Finding::PleuralOther,
        Finding::Pneumonia,
        Finding::Pneumothorax,
        Finding::SupportDevices,
    ];

    /// The five findings of MS-CXR-T and of the paper's Table 1.
    pub const TABLE1: [Finding; 5] = [
        Finding::Consolidation,
        Finding::PleuralEffusion,
        Finding::Pneumonia,
        Finding::Pneumothorax,
        Finding::Edema,
    ];

    /// The exact MIMIC-CXR / CheXpert column name.
    pub fn column_name(self) -> &'static str {
        match self {
            Finding::Atelectasis => "Atelectasis",
            Finding::Cardiomegaly => "Cardiomegaly",
            Finding::Consolidation => "Consolidation",
            Finding::Edema => "Edema",
            Finding::EnlargedCardiomediastinum => "Enlarged Cardiomediastinum",
            Finding::Fracture => "Fracture",
            Finding::LungLesion => "Lung Lesion",
            Finding::LungOpacity => "Lung Opacity",
            Finding::NoFinding => "No Finding",
            Finding::PleuralEffusion => "Pleural Effusion",
            Finding::PleuralOther => "Pleural Other",
            Finding::Pneumonia => "Pneumonia",
            Finding::Pneumothorax => "Pneumothorax",
            Finding::SupportDevices => "Support Devices",
        }
    }

    /// The finding as a noun phrase the labeler reads as this finding
    /// (`"pleural effusion"`, `"focal consolidation"`).
    pub fn noun(self) -> &'static str {
        match self {
            Finding::Atelectasis => "atelectasis",
            Finding::Cardiomegaly => "cardiomegaly",
            Finding::Consolidation => "focal consolidation",
            Finding::Edema => "pulmonary edema",
            Finding::EnlargedCardiomediastinum => "mediastinal widening",
            Finding::Fracture => "acute fracture",
            Finding::LungLesion => "suspicious nodule",
            Finding::LungOpacity => "focal opacity",
            Finding::NoFinding => "acute cardiopulmonary process",
            Finding::PleuralEffusion => "pleural effusion",
            Finding::PleuralOther => "pleural thickening",
            Finding::Pneumonia => "pneumonia",
            Finding::Pneumothorax => "pneumothorax",
            Finding::SupportDevices => "support devices",
        }
    }

    /// Position in [`Finding::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether the finding is a pathology (everything but No Finding and Support Devices).
    pub fn is_pathology(self) -> bool {
        !matches!(self, Finding::NoFinding | Finding::SupportDevices)
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.column_name())
    }
}

impl FromStr for Finding {
    type Err = CxrError;

    /// Accepts the column name, case-insensitively, with spaces, underscores or hyphens.
    fn from_str(s: &str) -> Result<Self, CxrError> {
        let norm = |x: &str| x.to_ascii_lowercase().replace(['_', '-'], " ");
        let wanted = norm(s.trim());
        Finding::ALL
            .into_iter()
            .find(|f| norm(f.column_name()) == wanted)
            .ok_or_else(|| CxrError::UnknownFinding(s.to_owned()))
    }
}

/// The status of one finding in a label table, a report or a trajectory.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum LabelStatus {
    /// Stated present (`1.0`).
    Positive,
    /// Stated absent (`0.0`).
    Negative,
    /// Stated uncertain (`-1.0`).
    Uncertain,
    /// Not mentioned (blank).
    #[default]
    NotMentioned,
}

impl LabelStatus {
    /// Parses a CheXpert CSV cell: `1.0`/`1`, `0.0`/`0`, `-1.0`/`-1`, or blank.
    ///
    /// # Errors
    /// [`CxrError::InvalidLabel`] for anything else.
    ///
    /// # Examples
    /// ```
    /// use cxr_max::LabelStatus;
    /// assert_eq!(LabelStatus::from_csv("-1.0")?, LabelStatus::Uncertain);
    /// assert_eq!(LabelStatus::from_csv("")?, LabelStatus::NotMentioned);
    /// assert!(LabelStatus::from_csv("2").is_err());
    /// # Ok::<(), cxr_max::CxrError>(())
    /// ```
    pub fn from_csv(cell: &str) -> Result<Self, CxrError> {
        match cell.trim() {
            "" => Ok(LabelStatus::NotMentioned),
            "1.0" | "1" | "1.00" => Ok(LabelStatus::Positive),
            "0.0" | "0" | "0.00" | "-0.0" => Ok(LabelStatus::Negative),
            "-1.0" | "-1" | "-1.00" => Ok(LabelStatus::Uncertain),
            other => Err(CxrError::InvalidLabel(other.to_owned())),
        }
    }

    /// The CSV cell for this status.
    pub fn to_csv(self) -> &'static str {
        match self {
            LabelStatus::Positive => "1.0",
            LabelStatus::Negative => "0.0",
            LabelStatus::Uncertain => "-1.0",
            LabelStatus::NotMentioned => "",
        }
    }

    /// The short name (`positive`, `negative`, `uncertain`, `not_mentioned`).
    pub fn name(self) -> &'static str {
        match self {
            LabelStatus::Positive => "positive",
            LabelStatus::Negative => "negative",
            LabelStatus::Uncertain => "uncertain",
            LabelStatus::NotMentioned => "not_mentioned",
        }
    }
}

/// The status of each of the 14 findings.
///
/// # Examples
/// ```
/// use cxr_max::{Finding, Findings, LabelStatus};
/// let mut f = Findings::default();
/// f.set(Finding::Edema, LabelStatus::Positive);
/// assert_eq!(f.get(Finding::Edema), LabelStatus::Positive);
/// assert_eq!(f.positives(), vec![Finding::Edema]);
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct Findings(pub [LabelStatus; 14]);

impl Findings {
    /// The status of `finding`.
    pub fn get(&self, finding: Finding) -> LabelStatus {
        self.0[finding.index()]
    }

    /// Sets the status of `finding`.
    pub fn set(&mut self, finding: Finding, status: LabelStatus) {
        self.0[finding.index()] = status;
    }

    /// Findings with status positive, in column order.
    pub fn positives(&self) -> Vec<Finding> {
        Finding::ALL
            .into_iter()
            .filter(|&f| self.get(f) == LabelStatus::Positive)
            .collect()
    }

    /// `(finding, status)` pairs in column order.
    pub fn iter(&self) -> impl Iterator<Item = (Finding, LabelStatus)> + '_ {
        Finding::ALL.into_iter().map(|f| (f, self.get(f)))
    }
}
