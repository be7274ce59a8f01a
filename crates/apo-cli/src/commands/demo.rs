//! `apo demo --objectives`: the preference-objective table on the embedded group of
//! [`apo_pipeline::demo::rows`].

use std::io::Write;

use apo_pipeline::demo::{TEACHERS, rows};

/// Writes the objective table, or as one JSON object when `json` is set.
///
/// # Errors
/// I/O errors of `out`, or a loss error (as an I/O error of kind `InvalidData`).
pub fn run(mut out: impl Write, json: bool) -> std::io::Result<()> {
    let rows = rows().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    if json {
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({ "teachers": TEACHERS, "objectives": rows }),
        )?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "APO objective on one consensus trajectory vs the 7 CXR-MAX teachers (beta 0.1)"
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{:<21} {:>9} {:>10} {:>11} {:>9} {:>6} {:>9}",
        "objective", "loss", "step-0", "dL/dlogp+", "p(cons.)", "top-1", "pairwise"
    )?;
    for r in &rows {
        writeln!(
            out,
            "{:<21} {:>9.5} {:>10.5} {:>11.5} {:>9.4} {:>6.2} {:>9.3}",
            r.objective,
            r.loss,
            r.loss_at_step_zero,
            r.grad_chosen,
            r.p_chosen,
            r.top1_accuracy,
            r.pairwise_accuracy
        )?;
    }
    writeln!(out)?;
    let pl = &rows[0];
    writeln!(
        out,
        "Plackett-Luce gradient per teacher (each drifting trajectory is a constraint):"
    )?;
    for (name, g) in TEACHERS.iter().zip(&pl.grad_rejected) {
        writeln!(out, "  {name:<12} {g:>10.6}")?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "Step-0 Plackett-Luce loss is ln(8) = {:.6}; see `apo loss --help` to check",
        8f64.ln()
    )?;
    writeln!(out, "any case against TRL or another reference.")?;
    Ok(())
}
