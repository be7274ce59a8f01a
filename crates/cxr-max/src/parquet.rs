//! Parquet records (feature `parquet`): read with polars, then handed to the same
//! interpretation as JSON Lines (each row becomes one JSON object, nested lists and structs
//! included).

use std::path::Path;

use polars::prelude::{JsonFormat, JsonWriter, ParquetReader, SerReader, SerWriter};

use crate::records::{Location, RawRow};
use crate::{CxrError, Result};

pub(crate) fn read_rows(path: &Path) -> Result<Vec<RawRow>> {
    let schema_err = |e: &dyn std::fmt::Display| CxrError::Schema {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(|source| CxrError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut df = ParquetReader::new(file)
        .finish()
        .map_err(|e| schema_err(&e))?;
    let mut buf = Vec::new();
    JsonWriter::new(&mut buf)
        .with_json_format(JsonFormat::JsonLines)
        .finish(&mut df)
        .map_err(|e| schema_err(&e))?;
    let text = String::from_utf8(buf).map_err(|e| schema_err(&e))?;
    Ok(text
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let object = match serde_json::from_str::<serde_json::Value>(line) {
                Ok(serde_json::Value::Object(m)) => {
                    Ok(m.into_iter().filter(|(_, v)| !v.is_null()).collect())
                }
                Ok(_) => Err("row is not an object".to_owned()),
                Err(e) => Err(format!("row cannot be read: {e}")),
            };
            RawRow {
                source: Location {
                    path: path.to_owned(),
                    line: i + 1,
                },
                object,
                raw: line.chars().take(2000).collect(),
                parsed: None,
            }
        })
        .collect())
}
