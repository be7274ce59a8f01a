//! `apo drift detect`: run an online drift detector over a stream of numbers.

use std::io::{BufRead, Write};

pub use apo_drift::stream::{BadLine, DetectError, parse_params, read_stream};

/// Runs `detector` with `params` over the stream in `input` and writes `{"detections":[...]}`
/// (and `"warnings":[...]`, the indices in the warning zone, when `warnings`).
///
/// # Errors
/// [`DetectError`].
pub fn detect(
    detector: &str,
    params: &[(String, String)],
    input: impl BufRead,
    mut output: impl Write,
    warnings: bool,
) -> Result<Vec<usize>, DetectError> {
    let run = apo_drift::stream::detect(detector, params, input)?;
    tracing::info!(
        detector = run.detector,
        values = run.values,
        detections = run.detections.len(),
        "drift detect"
    );
    let json = if warnings {
        serde_json::json!({ "detections": run.detections, "warnings": run.warnings })
    } else {
        serde_json::json!({ "detections": run.detections })
    };
    serde_json::to_writer(&mut output, &json).map_err(std::io::Error::from)?;
    output.write_all(b"\n")?;
    Ok(run.detections)
}

/// `apo drift detect --follow`: reads `input` line by line as it arrives and writes one JSON
/// line per event when it happens, flushed at once: `{"index": I, "event": "drift"}` (and
/// `"warning"` with `warnings`, when the detector enters its warning zone). A line that is
/// not a finite number is answered `{"line": N, "error": ...}` and skipped (the stream goes
/// on). Returns the drift indices and the bad lines.
///
/// # Errors
/// An unknown detector or parameter; read and write errors.
pub fn follow(
    detector: &str,
    params: &[(String, String)],
    input: impl BufRead,
    mut output: impl Write,
    warnings: bool,
) -> Result<(Vec<usize>, Vec<BadLine>), DetectError> {
    let pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut d = apo_drift::DetectorConfig::from_params(detector, &pairs)
        .and_then(|c| c.build())
        .map_err(DetectError::from)?;
    let mut index = 0usize;
    let mut hits = Vec::new();
    let mut bad = Vec::new();
    let mut in_warning = false;
    // Writes one JSON event line and flushes it at once (the reader is a live consumer).
    let emit = |out: &mut dyn Write, v: serde_json::Value| -> std::io::Result<()> {
        writeln!(out, "{v}")?;
        out.flush()
    };
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        let line = if i == 0 {
            line.strip_prefix('\u{feff}').unwrap_or(&line).to_owned()
        } else {
            line
        };
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let parsed = match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            Ok(v) => Err(format!("`{text}` is not finite ({v})")),
            Err(_) => Err(format!("`{text}` is not a number")),
        };
        let outcome = parsed.and_then(|v| d.update(v).map_err(|e| e.to_string()));
        match outcome {
            Ok(drift) => {
                if warnings {
                    let w = d.warning_detected();
                    if w && !in_warning {
                        emit(
                            &mut output,
                            serde_json::json!({"index": index, "event": "warning"}),
                        )?;
                    }
                    in_warning = w;
                }
                if drift {
                    hits.push(index);
                    emit(
                        &mut output,
                        serde_json::json!({"index": index, "event": "drift"}),
                    )?;
                    in_warning = false;
                }
                index += 1;
            }
            Err(error) => {
                emit(
                    &mut output,
                    serde_json::json!({"line": i + 1, "error": error}),
                )?;
                bad.push(BadLine { line: i + 1, error });
            }
        }
    }
    Ok((hits, bad))
}
