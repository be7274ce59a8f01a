//! `apo drift detect`: run an online drift detector over a stream of numbers.

use std::io::{BufRead, Write};

pub use apo_drift::stream::{BadLine, DetectError, parse_params, read_stream};

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
    let run = apo_drift::stream::detect(detector, params, input)?;
    tracing::info!(
        detector = run.detector,
        values = run.values,
        detections = run.detections.len(),
        "drift detect"
    );
    let json = serde_json::json!({ "detections": run.detections });
    serde_json::to_writer(&mut output, &json).map_err(std::io::Error::from)?;
    output.write_all(b"\n")?;
    Ok(run.detections)
}
