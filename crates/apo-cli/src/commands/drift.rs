//! `apo drift detect`: run an online drift detector over a stream of numbers.

use std::io::{BufRead, Write};

use apo_drift::DetectorConfig;
use serde::Serialize;

/// A line of the input that is not a number.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BadLine {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub error: String,
}

/// Why `apo drift detect` could not produce detections.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// Reading the input failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Some lines are not finite numbers; every one is listed.
    #[error("{} line(s) are not finite numbers, first at line {}: {}", .0.len(), .0[0].line, .0[0].error)]
    BadLines(Vec<BadLine>),
    /// The detector or its parameters are invalid, or the stream is empty.
    #[error("{0}")]
    Drift(#[from] apo_drift::DriftError),
}

/// Reads one number per non-empty line (blank lines are skipped; values are indexed in order).
///
/// # Errors
/// [`DetectError::BadLines`] listing every line that is not a finite number.
pub fn read_stream(input: impl BufRead) -> Result<Vec<f64>, DetectError> {
    let mut values = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => values.push(v),
            Ok(v) => bad.push(BadLine {
                line: i + 1,
                error: format!("`{text}` is not finite ({v})"),
            }),
            Err(_) => bad.push(BadLine {
                line: i + 1,
                error: format!("`{text}` is not a number"),
            }),
        }
    }
    if !bad.is_empty() {
        return Err(DetectError::BadLines(bad));
    }
    Ok(values)
}

/// Parses `NAME=VALUE` parameters.
///
/// # Errors
/// A message naming the malformed parameter.
pub fn parse_params(params: &[String]) -> Result<Vec<(String, String)>, String> {
    params
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
            _ => Err(format!("parameter `{p}` is not NAME=VALUE")),
        })
        .collect()
}

/// Runs `detector` with `params` over the stream in `input` and writes `{"detections":[...]}`.
///
/// # Errors
/// [`DetectError`].
pub fn detect(
    detector: &str,
    params: &[(String, String)],
    input: impl BufRead,
    mut output: impl Write,
) -> Result<Vec<usize>, DetectError> {
    let pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let config = DetectorConfig::from_params(detector, &pairs)?;
    let mut built = config.build()?;
    let stream = read_stream(input)?;
    if stream.is_empty() {
        return Err(apo_drift::DriftError::Empty {
            what: "stream".to_owned(),
        }
        .into());
    }
    let detections = built.detections(&stream)?;
    tracing::info!(
        detector = config.name(),
        values = stream.len(),
        detections = detections.len(),
        "drift detect"
    );
    serde_json::to_writer(
        &mut output,
        &serde_json::json!({ "detections": detections }),
    )
    .map_err(std::io::Error::from)?;
    output.write_all(b"\n")?;
    Ok(detections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_and_reports_bad_lines() {
        let stream: String = (0..3000)
            .map(|i| format!("{}\n", if i < 1500 { 0.0 } else { 3.0 }))
            .collect();
        let mut out = Vec::new();
        let hits = detect("page-hinkley", &[], stream.as_bytes(), &mut out).unwrap();
        assert!(!hits.is_empty() && hits[0] >= 1500);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["detections"][0].as_u64().unwrap() as usize, hits[0]);

        let err = detect("adwin", &[], "1\n\nx\n2\nNaN\n".as_bytes(), Vec::new()).unwrap_err();
        match err {
            DetectError::BadLines(lines) => {
                assert_eq!(lines.iter().map(|l| l.line).collect::<Vec<_>>(), vec![3, 5]);
            }
            e => panic!("unexpected {e}"),
        }
        assert!(matches!(
            detect("adwin", &[], "".as_bytes(), Vec::new()),
            Err(DetectError::Drift(_))
        ));
        let params = parse_params(&["delta=0.1".to_owned()]).unwrap();
        assert_eq!(params, vec![("delta".to_owned(), "0.1".to_owned())]);
        assert!(parse_params(&["delta".to_owned()]).is_err());
    }
}
