//! One drift detector per teacher over per-teacher signals.

use crate::detect::{DetectorConfig, DriftDetector};
use crate::{DriftError, Result, check_finite};

/// Runs one detector per teacher (stream) and records each teacher's change points, as
/// 0-based positions in that teacher's own signal.
///
/// # Examples
/// ```
/// use apo_drift::{DetectorConfig, MultiStreamMonitor};
/// let mut monitor = MultiStreamMonitor::new(&DetectorConfig::default_for("adwin")?, 2)?;
/// for i in 0..2000 {
///     // Teacher 0 agrees with the consensus 90% of the time throughout; teacher 1 drops to 40%.
///     let t0 = f64::from(i % 10 != 0);
///     let t1 = if i < 1000 { f64::from(i % 10 != 0) } else { f64::from(i % 5 < 2) };
///     monitor.update_all(&[t0, t1])?;
/// }
/// assert!(monitor.change_points()[0].is_empty());
/// assert!(monitor.change_points()[1][0] >= 1000);
/// # Ok::<(), apo_drift::DriftError>(())
/// ```
#[derive(Debug)]
pub struct MultiStreamMonitor {
    detectors: Vec<Box<dyn DriftDetector>>,
    positions: Vec<usize>,
    change_points: Vec<Vec<usize>>,
}

impl MultiStreamMonitor {
    /// A monitor with `n_teachers` detectors built from `config`.
    ///
    /// # Errors
    /// [`DriftError::Empty`] for 0 teachers; invalid detector parameters.
    pub fn new(config: &DetectorConfig, n_teachers: usize) -> Result<Self> {
        if n_teachers == 0 {
            return Err(DriftError::Empty {
                what: "teachers".to_owned(),
            });
        }
        let detectors = (0..n_teachers)
            .map(|_| config.build())
            .collect::<Result<Vec<_>>>()?;
        Ok(MultiStreamMonitor {
            detectors,
            positions: vec![0; n_teachers],
            change_points: vec![Vec::new(); n_teachers],
        })
    }

    /// Number of teachers.
    pub fn n_teachers(&self) -> usize {
        self.detectors.len()
    }

    /// Feeds the next value of one teacher's signal; returns whether it is a change point.
    ///
    /// # Errors
    /// [`DriftError::IndexOutOfRange`] for an unknown teacher; the detector's errors, naming
    /// the teacher and position.
    pub fn update(&mut self, teacher: usize, value: f64) -> Result<bool> {
        let len = self.detectors.len();
        let detector = self
            .detectors
            .get_mut(teacher)
            .ok_or(DriftError::IndexOutOfRange {
                what: "teacher",
                index: teacher,
                len,
            })?;
        let pos = self.positions[teacher];
        check_finite(|| format!("teacher {teacher} value {pos}"), value)?;
        let hit = detector.update(value).map_err(|e| match e {
            DriftError::OutOfRange {
                value, expected, ..
            } => DriftError::OutOfRange {
                name: format!("teacher {teacher} value {pos}"),
                value,
                expected,
            },
            other => other,
        })?;
        if hit {
            self.change_points[teacher].push(pos);
        }
        self.positions[teacher] += 1;
        Ok(hit)
    }

    /// Feeds one value per teacher.
    ///
    /// # Errors
    /// [`DriftError::LengthMismatch`] unless `values.len()` is the number of teachers.
    pub fn update_all(&mut self, values: &[f64]) -> Result<()> {
        if values.len() != self.detectors.len() {
            return Err(DriftError::LengthMismatch {
                what: "values".to_owned(),
                expected: self.detectors.len(),
                got: values.len(),
            });
        }
        for (u, &v) in values.iter().enumerate() {
            self.update(u, v)?;
        }
        Ok(())
    }

    /// Change points per teacher.
    pub fn change_points(&self) -> &[Vec<usize>] {
        &self.change_points
    }

    /// Values seen per teacher.
    pub fn positions(&self) -> &[usize] {
        &self.positions
    }
}
