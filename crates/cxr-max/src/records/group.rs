//! Grouping: the records of one image (several in the long layout, one per teacher) become
//! one [`Sample`]; a teacher twice for one image is rejected as a duplicate.

use super::schema::parse_object;
use super::{FieldMapping, RawRow, RecordsRead, Rejected, Sample};

/// Groups rows, fed in file order, into samples.
pub(crate) struct Interpreter<'m> {
    mapping: &'m FieldMapping,
    out: RecordsRead,
    index: std::collections::HashMap<String, usize, crate::tables::IdHash>,
}

impl<'m> Interpreter<'m> {
    pub(crate) fn new(mapping: &'m FieldMapping) -> Self {
        Interpreter {
            mapping,
            out: RecordsRead::default(),
            index: std::collections::HashMap::with_hasher(crate::tables::IdHash),
        }
    }

    pub(crate) fn finish(self) -> RecordsRead {
        self.out
    }

    /// Takes the next rows of the file.
    pub(crate) fn feed(&mut self, rows: Vec<RawRow>) {
        self.out.read += rows.len();
        self.out.samples.reserve(rows.len());
        self.index.reserve(rows.len());
        for row in rows {
            match self.take(row) {
                Ok(()) => self.out.kept_records += 1,
                Err(rejected) => self.out.rejected.push(rejected),
            }
        }
    }

    /// Adds one row to its image's sample (a new one for an unseen image).
    fn take(&mut self, row: RawRow) -> std::result::Result<(), Rejected> {
        let reject = |record_id, reason| Rejected {
            source: row.source.clone(),
            record_id,
            reason,
            raw: row.raw.clone(),
        };
        let p = match (row.parsed, &row.object) {
            (Some(p), _) => p,
            (None, Err(reason)) => return Err(reject(None, reason.clone())),
            (None, Ok(m)) => parse_object(m, self.mapping, &mut self.out.unknown_fields)
                .map_err(|(id, reason)| reject(id, reason))?,
        };
        let Some(&i) = self.index.get(&p.dicom_id) else {
            self.index
                .insert(p.dicom_id.clone(), self.out.samples.len());
            self.out.samples.push(Sample {
                dicom_id: p.dicom_id,
                subject_id: p.subject_id,
                study_id: p.study_id,
                prompt: p.prompt,
                report: p.report,
                diagnose: p.diagnose,
                trajectories: p.trajectories,
                source: row.source,
            });
            return Ok(());
        };
        let sample = &mut self.out.samples[i];
        let dup = p
            .trajectories
            .iter()
            .find(|t| sample.trajectories.iter().any(|s| s.teacher == t.teacher));
        if let Some(t) = dup {
            let reason = format!(
                "duplicate trajectory of teacher `{}` for image {} (first at line {})",
                t.teacher, p.dicom_id, sample.source.line
            );
            return Err(reject(Some(p.dicom_id.clone()), reason));
        }
        sample.trajectories.extend(p.trajectories);
        sample.subject_id = sample.subject_id.or(p.subject_id);
        sample.study_id = sample.study_id.or(p.study_id);
        sample.prompt = sample.prompt.take().or(p.prompt);
        sample.report = sample.report.take().or(p.report);
        sample.diagnose = sample.diagnose.take().or(p.diagnose);
        Ok(())
    }
}
