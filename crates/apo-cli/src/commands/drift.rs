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
