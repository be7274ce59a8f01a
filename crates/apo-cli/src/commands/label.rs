//! `apo label`: the findings labeler over a file of reports, one CSV line per report.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use cxr_max::findings::{
    LabelOptions, LabelSummary, Labeler, Lexicon, ReportFormat, label_reports,
};

/// Options of `apo label`.
#[derive(Debug, Clone)]
pub struct LabelArgs {
    /// The reports (`-`: standard input, read as JSON Lines unless `format` says otherwise).
    pub input: PathBuf,
    /// Where the CSV goes (standard output when `None`).
    pub output: Option<PathBuf>,
    /// Overwrite an existing output file.
    pub force: bool,
    /// `jsonl`, `csv` or `csv-no-header`; from the input's extension when `None`.
    pub format: Option<String>,
    /// CSV: the report column.
    pub column: Option<String>,
    /// CSV: the id column.
    pub id_column: Option<String>,
    /// Extra lexicon entries (TOML, the format of the embedded `lexicon.toml`).
    pub lexicon: Option<PathBuf>,
}

/// Parses a `--format` value.
///
/// # Errors
/// An unknown name.
pub fn parse_format(name: &str) -> Result<ReportFormat, String> {
    match name {
        "jsonl" => Ok(ReportFormat::Jsonl),
        "csv" => Ok(ReportFormat::Csv),
        "csv-no-header" => Ok(ReportFormat::CsvNoHeader),
        other => Err(format!(
            "unknown --format `{other}` (jsonl, csv or csv-no-header)"
        )),
    }
}

/// Labels `args.input`, writing the CSV to the output (atomically, through a temporary file
/// next to it) or to `stdout`. Returns the summary; rejected records are the caller's to
/// report.
///
/// # Errors
/// Unreadable input, an existing output without `force`, a bad lexicon, a CSV header
/// without the report column, write errors.
pub fn label(
    args: &LabelArgs,
    input: Box<dyn BufRead>,
    stdout: impl Write,
) -> Result<LabelSummary, String> {
    let format = match &args.format {
        Some(f) => parse_format(f)?,
        None => ReportFormat::from_path(&args.input),
    };
    let labeler = match &args.lexicon {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut lexicon = Lexicon::builtin();
            lexicon.extend(
                Lexicon::from_toml_str(&text).map_err(|e| format!("{}: {e}", path.display()))?,
            );
            Labeler::with_lexicon(lexicon)
        }
        None => Labeler::default(),
    };
    let options = LabelOptions {
        format,
        column: args.column.clone(),
        id_column: args.id_column.clone(),
    };
    match &args.output {
        None => {
            label_reports(input, &args.input, &options, &labeler, stdout).map_err(|e| e.to_string())
        }
        Some(path) => {
            if path.exists() && !args.force {
                return Err(format!(
                    "{} exists (pass --force to overwrite it)",
                    path.display()
                ));
            }
            // Only a regular file (or a link to one, written through) is replaced.
            let target = cxr_max::output::replace_target(path).map_err(|e| e.to_string())?;
            let tmp = temporary(&target);
            let file =
                std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
            let result = label_reports(
                input,
                &args.input,
                &options,
                &labeler,
                std::io::BufWriter::new(file),
            );
            match result {
                Ok(summary) => {
                    std::fs::rename(&tmp, &target)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    Ok(summary)
                }
                Err(e) => {
                    std::fs::remove_file(&tmp).ok();
                    Err(e.to_string())
                }
            }
        }
    }
}

fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}
