//! Project automation. `cargo xtask ci` is what CI runs; `cargo xtask bench <area>` prints
//! benchmark figures as JSON; `cargo xtask deps` checks the dependency-direction invariants.

use std::process::{Command, ExitCode};
use std::time::Instant;

mod deps;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  ci            fmt check, clippy -D warnings, dependency rules, tests, docs (cheapest first)
  fmt           check formatting
  lint          clippy with -D warnings
  deps          check the dependency-direction invariants
  test          the test matrix
  doc           rustdoc with -D warnings
  bench loss    apo-loss benchmark (release build), JSON on stdout
  bench drift   apo-drift detector throughput (release build), JSON on stdout
  bench data    cxr-max read + join and image decode throughput (release build), JSON
  bench consensus  Dawid-Skene over 24,426 items x 7 teachers x 14 findings, JSON";

/// Feature set every workspace-wide step uses, so one build serves clippy, tests and docs.
const WORKSPACE_FEATURES: &str = "apo-loss/burn,cxr-max/burn";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["ci"] => ci(),
        ["fmt"] => fmt(),
        ["lint"] => lint(),
        ["deps"] => deps::check(),
        ["test"] => test(),
        ["doc"] => doc(),
        ["bench", area, rest @ ..] => bench(area, rest),
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn ci() -> Result<(), String> {
    type Step = fn() -> Result<(), String>;
    let steps: [(&str, Step); 5] = [
        ("fmt", fmt),
        ("lint", lint),
        ("deps", deps::check),
        ("test", test),
        ("doc", doc),
    ];
    let start = Instant::now();
    for (name, step) in steps {
        let t = Instant::now();
        eprintln!("xtask ci: {name} ...");
        step().map_err(|e| format!("{name} failed: {e}"))?;
        eprintln!("xtask ci: {name} ok ({:.1} s)", t.elapsed().as_secs_f64());
    }
    eprintln!(
        "xtask ci: all steps passed in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn fmt() -> Result<(), String> {
    cargo(&["fmt", "--all", "--", "--check"], &[])
}

fn lint() -> Result<(), String> {
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--features",
            WORKSPACE_FEATURES,
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    // apo-loss must also be clean with no features at all.
    cargo(
        &[
            "clippy",
            "-p",
            "apo-loss",
            "--lib",
            "--no-default-features",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )
}

fn test() -> Result<(), String> {
    cargo(
        &["test", "--workspace", "--features", WORKSPACE_FEATURES],
        &[],
    )?;
    // The dependency-free build of apo-loss: its unit tests, scalar property tests and doctests.
    cargo(&["test", "-p", "apo-loss", "--no-default-features"], &[])
}

fn doc() -> Result<(), String> {
    cargo(
        &[
            "doc",
            "--workspace",
            "--no-deps",
            "--features",
            WORKSPACE_FEATURES,
        ],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )
}

fn bench(area: &str, rest: &[&str]) -> Result<(), String> {
    match area {
        "loss" => {
            let mut args = vec![
                "bench",
                "-p",
                "apo-loss",
                "--features",
                "burn",
                "--bench",
                "loss",
                "--",
            ];
            args.extend_from_slice(rest);
            cargo(&args, &[])
        }
        "drift" => {
            let mut args = vec!["bench", "-p", "apo-drift", "--bench", "detectors", "--"];
            args.extend_from_slice(rest);
            cargo(&args, &[])?;
            drift_report_bench()
        }
        "consensus" => {
            let mut args = vec![
                "bench",
                "-p",
                "apo-consensus",
                "--bench",
                "dawid_skene",
                "--",
            ];
            args.extend_from_slice(rest);
            cargo(&args, &[])
        }
        "data" => {
            let mut args = vec!["bench", "-p", "cxr-max", "--bench", "data", "--"];
            args.extend_from_slice(rest);
            cargo(&args, &[])
        }
        other => Err(format!(
            "unknown benchmark area `{other}`; available: loss, drift, data, consensus"
        )),
    }
}

/// Times `apo drift report` (release) over a simulated CXR-MAX-sized set: 24,426 studies ×
/// 7 teachers = 170,982 trajectories. Prints one JSON line.
fn drift_report_bench() -> Result<(), String> {
    let data = "target/bench-drift/data";
    let out = "target/bench-drift/report";
    cargo(&["build", "--release", "-q", "-p", "apo-cli"], &[])?;
    let apo = |args: &[&str]| -> Result<f64, String> {
        let start = Instant::now();
        let status = Command::new("target/release/apo")
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("cannot run target/release/apo: {e}"))?;
        if !status.success() {
            return Err(format!("apo {} exited with {status}", args.join(" ")));
        }
        Ok(start.elapsed().as_secs_f64())
    };
    std::fs::remove_dir_all("target/bench-drift").ok();
    let synth = apo(&[
        "synth",
        "--out",
        data,
        "--studies",
        "24426",
        "--image-size",
        "16",
    ])?;
    let report = apo(&["drift", "report", data, "--out", out])?;
    println!(
        "{{\"bench\":\"drift-report\",\"studies\":24426,\"trajectories\":170982,\"synth_seconds\":{synth:.2},\"report_seconds\":{report:.2}}}"
    );
    Ok(())
}

/// Runs cargo with `args`, inheriting stdio.
pub(crate) fn cargo(args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` exited with {status}", args.join(" ")))
    }
}

/// Runs cargo with `args` and returns its standard output.
pub(crate) fn cargo_output(args: &[&str]) -> Result<String, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`cargo {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| e.to_string())
}
