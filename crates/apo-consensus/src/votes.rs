//! Votes of workers (teachers) on tasks (items), interned.

use std::collections::HashMap;

use crate::{ConsensusError, Result};

/// Votes `(task, worker, label)`, with names interned to indices. Labels are sorted by name,
/// so label index order is lexicographic (crowd-kit's column order).
#[derive(Debug, Clone, PartialEq)]
pub struct Votes {
    tasks: Vec<String>,
    workers: Vec<String>,
    labels: Vec<String>,
    /// `(task, worker, label)` indices, in input order.
    entries: Vec<(usize, usize, usize)>,
}

impl Votes {
    /// Interns votes; labels are whatever appears.
    ///
    /// # Errors
    /// [`ConsensusError::NoVotes`], [`ConsensusError::EmptyField`],
    /// [`ConsensusError::DuplicateVote`] (rows are 1-based in input order).
    pub fn from_triples<I, S>(triples: I) -> Result<Self>
    where
        I: IntoIterator<Item = (S, S, S)>,
        S: AsRef<str>,
    {
        Self::build(triples, None)
    }

    /// Interns votes whose labels must belong to `declared`.
    ///
    /// # Errors
    /// As [`Votes::from_triples`], and [`ConsensusError::UndeclaredLabel`].
    pub fn with_labels<I, S>(triples: I, declared: &[&str]) -> Result<Self>
    where
        I: IntoIterator<Item = (S, S, S)>,
        S: AsRef<str>,
    {
        Self::build(triples, Some(declared))
    }

    fn build<I, S>(triples: I, declared: Option<&[&str]>) -> Result<Self>
    where
        I: IntoIterator<Item = (S, S, S)>,
        S: AsRef<str>,
    {
        let mut raw = Vec::new();
        for (i, (t, w, l)) in triples.into_iter().enumerate() {
            let row = i + 1;
            let (t, w, l) = (t.as_ref().trim(), w.as_ref().trim(), l.as_ref().trim());
            for (field, v) in [("task", t), ("worker", w), ("label", l)] {
                if v.is_empty() {
                    return Err(ConsensusError::EmptyField { row, field });
                }
            }
            if let Some(d) = declared
                && !d.contains(&l)
            {
                return Err(ConsensusError::UndeclaredLabel {
                    row,
                    label: l.to_owned(),
                    declared: d.join(", "),
                });
            }
            raw.push((t.to_owned(), w.to_owned(), l.to_owned()));
        }
        if raw.is_empty() {
            return Err(ConsensusError::NoVotes);
        }
        let mut labels: Vec<String> = match declared {
            Some(d) => d.iter().map(|s| (*s).to_owned()).collect(),
            None => raw.iter().map(|r| r.2.clone()).collect(),
        };
        labels.sort();
        labels.dedup();
        let label_ix: HashMap<&str, usize> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.as_str(), i))
            .collect();
        let (mut tasks, mut workers) = (Vec::new(), Vec::new());
        let (mut task_ix, mut worker_ix) = (HashMap::new(), HashMap::new());
        let mut seen = std::collections::HashSet::new();
        let mut entries = Vec::with_capacity(raw.len());
        for (i, (t, w, l)) in raw.iter().enumerate() {
            let ti = *task_ix.entry(t.clone()).or_insert_with(|| {
                tasks.push(t.clone());
                tasks.len() - 1
            });
            let wi = *worker_ix.entry(w.clone()).or_insert_with(|| {
                workers.push(w.clone());
                workers.len() - 1
            });
            if !seen.insert((ti, wi)) {
                return Err(ConsensusError::DuplicateVote {
                    row: i + 1,
                    task: t.clone(),
                    worker: w.clone(),
                });
            }
            entries.push((ti, wi, label_ix[l.as_str()]));
        }
        Ok(Votes {
            tasks,
            workers,
            labels,
            entries,
        })
    }

    /// Task names, in order of first appearance.
    pub fn tasks(&self) -> &[String] {
        &self.tasks
    }

    /// Worker names, in order of first appearance.
    pub fn workers(&self) -> &[String] {
        &self.workers
    }

    /// Label names, sorted.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The name of label `i`.
    pub fn label_name(&self, i: usize) -> &str {
        &self.labels[i]
    }

    /// `(task, worker, label)` indices, in input order.
    pub fn entries(&self) -> &[(usize, usize, usize)] {
        &self.entries
    }
}
