//! A stream of numbers read from text, one per line, and a detector named by `NAME=VALUE`
//! parameters run over it (what `apo drift detect` does).

use std::io::BufRead;

use crate::{DetectorConfig, DriftError};

/// A line of the input that is not a number.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BadLine {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub error: String,
}

/// Why a stream could not be read or run through a detector.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// Reading the input (or writing the output) failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Some lines are not finite numbers; every one is listed.
    #[error("{} line(s) are not finite numbers, first at line {}: {}", .0.len(), .0[0].line, .0[0].error)]
    BadLines(Vec<BadLine>),
    /// The detector or its parameters are invalid, or the stream is empty.
    #[error("{0}")]
    Drift(#[from] DriftError),
}

/// A detector's run over a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamDetections {
    /// The detector's name.
    pub detector: &'static str,
    /// How many values the stream has.
    pub values: usize,
    /// The 0-based indices at which drift was detected.
    pub detections: Vec<usize>,
    /// The 0-based indices at which the detector is in its warning zone (river's
    /// `warning_detected`; empty for detectors without one).
    pub warnings: Vec<usize>,
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
        // A UTF-8 byte-order mark is not part of the first value.
        let line = match i {
            0 => line.strip_prefix('\u{feff}').unwrap_or(&line),
            _ => &line,
        };
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let error = match text.parse::<f64>() {
            Ok(v) if v.is_finite() => {
                values.push(v);
                continue;
            }
            Ok(v) => format!("`{text}` is not finite ({v})"),
            Err(_) => format!("`{text}` is not a number"),
        };
        bad.push(BadLine { line: i + 1, error });
    }
    if bad.is_empty() {
        Ok(values)
    } else {
        Err(DetectError::BadLines(bad))
    }
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

/// Runs `detector` with `params` ([`DetectorConfig::from_params`]) over the stream in `input`.
///
/// # Errors
/// [`DetectError`]: an unknown detector or bad parameter, bad lines, an empty stream.
pub fn detect(
    detector: &str,
    params: &[(String, String)],
    input: impl BufRead,
) -> Result<StreamDetections, DetectError> {
    let pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let config = DetectorConfig::from_params(detector, &pairs)?;
    let mut built = config.build()?;
    let stream = read_stream(input)?;
    if stream.is_empty() {
        return Err(DriftError::Empty {
            what: "stream".to_owned(),
        }
        .into());
    }
    let mut detections = Vec::new();
    let mut warnings = Vec::new();
    for (i, &x) in stream.iter().enumerate() {
        // The same per-value errors as `DriftDetector::detections` (with the index).
        if built
            .update(x)
            .map_err(|e| crate::detect::at_index_pub(e, i))?
        {
            detections.push(i);
        }
        if built.warning_detected() {
            warnings.push(i);
        }
    }
    Ok(StreamDetections {
        detector: config.name(),
        values: stream.len(),
        detections,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UTF-8 byte-order mark before the first value is not a bad line.
    #[test]
    fn a_byte_order_mark_is_stripped() {
        let values = read_stream("\u{feff}0.5\n1.5\n".as_bytes()).unwrap();
        assert_eq!(values, [0.5, 1.5]);
    }
}
