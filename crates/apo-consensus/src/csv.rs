//! Votes and weights from CSV files: `task,worker,label` votes (crowd-kit's layout) and
//! `worker,weight` weights. Columns are found by name (extra columns are ignored); every
//! error names the file's role and the line.

use std::io::Read;

use crate::{ConsensusError, Votes};

/// A votes or weights CSV could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    /// The header could not be read.
    #[error("{what}: {source}")]
    Header {
        /// `votes` or `weights`.
        what: &'static str,
        /// The CSV error.
        source: ::csv::Error,
    },
    /// A required column is missing.
    #[error("{what}: missing column `{column}` (header: {header})")]
    MissingColumn {
        /// `votes` or `weights`.
        what: &'static str,
        /// The missing column.
        column: &'static str,
        /// The header as read.
        header: String,
    },
    /// A row could not be read.
    #[error("{what} line {line}: malformed row: {source}")]
    Row {
        /// `votes` or `weights`.
        what: &'static str,
        /// 1-based line.
        line: usize,
        /// The CSV error.
        source: ::csv::Error,
    },
    /// A row has another number of fields than the header.
    #[error("{what} line {line}: {fields} fields, the header has {header}")]
    Fields {
        /// `votes` or `weights`.
        what: &'static str,
        /// 1-based line.
        line: usize,
        /// Fields in the row.
        fields: usize,
        /// Fields in the header.
        header: usize,
    },
    /// A weight is not a number.
    #[error("weights line {line}: `{value}` is not a number")]
    Weight {
        /// 1-based line.
        line: usize,
        /// The field as read.
        value: String,
    },
    /// The votes do not make a vote table.
    #[error("votes: {0} (row N is CSV line N + 1)")]
    Votes(ConsensusError),
}

/// The `columns` of every row (header trimmed, a row's fields as read).
fn records<const N: usize>(
    input: impl Read,
    what: &'static str,
    columns: [&'static str; N],
) -> Result<Vec<[String; N]>, CsvError> {
    let mut reader = ::csv::ReaderBuilder::new().from_reader(input);
    let headers: Vec<String> = reader
        .headers()
        .map_err(|source| CsvError::Header { what, source })?
        .iter()
        .map(|h| h.trim().to_owned())
        .collect();
    let mut idx = [0; N];
    for (slot, column) in idx.iter_mut().zip(columns) {
        *slot = headers.iter().position(|h| h == column).ok_or_else(|| {
            let header = headers.join(",");
            CsvError::MissingColumn {
                what,
                column,
                header,
            }
        })?;
    }
    let mut out = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let line = i + 2;
        let rec = rec.map_err(|source| CsvError::Row { what, line, source })?;
        if rec.len() != headers.len() {
            let (fields, header) = (rec.len(), headers.len());
            return Err(CsvError::Fields {
                what,
                line,
                fields,
                header,
            });
        }
        out.push(idx.map(|j| rec[j].to_owned()));
    }
    Ok(out)
}

/// Reads `task,worker,label` votes.
///
/// # Errors
/// Malformed CSV, naming the line; [`CsvError::Votes`] for votes that do not make a table
/// (naming the row: row N is CSV line N + 1).
pub fn read_votes(input: impl Read) -> Result<Votes, CsvError> {
    let rows = records(input, "votes", ["task", "worker", "label"])?;
    let (mut tasks, mut workers, mut labels) = (
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
    );
    for [t, w, l] in rows {
        tasks.push(t);
        workers.push(w);
        labels.push(l);
    }
    Votes::from_columns(&tasks, &workers, &labels).map_err(CsvError::Votes)
}

/// Reads a `worker,weight` CSV.
///
/// # Errors
/// Malformed rows and weights that are not numbers, naming the line.
pub fn read_weights(input: impl Read) -> Result<Vec<(String, f64)>, CsvError> {
    let rows = records(input, "weights", ["worker", "weight"])?;
    rows.into_iter()
        .enumerate()
        .map(|(i, [worker, weight])| match weight.trim().parse::<f64>() {
            Ok(v) => Ok((worker, v)),
            Err(_) => Err(CsvError::Weight {
                line: i + 2,
                value: weight,
            }),
        })
        .collect()
}
