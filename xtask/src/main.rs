//! Project automation. `cargo xtask ci` is what CI runs; `cargo xtask bench <area>` prints
//! benchmark figures as JSON; `cargo xtask deps` checks the dependency-direction invariants.

use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Set by `cargo xtask ci`: a build from a clean clone gains nothing from incremental caches.
static FROM_SCRATCH: AtomicBool = AtomicBool::new(false);

mod deps;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  ci            fmt check, clippy -D warnings, dependency rules, tests, GPU backend
                compile checks, docs (cheapest first)
  fmt           check formatting
  lint          clippy with -D warnings
  deps          check the dependency-direction invariants
  test          the test matrix
  doc           rustdoc with -D warnings
  bench loss    apo-loss benchmark (release build), JSON on stdout
  bench drift   apo-drift detector throughput (release build), JSON on stdout
  bench data    cxr-max read + join and image decode throughput (release build), JSON
  bench consensus  Dawid-Skene, one-coin, Wawa, GLAD, MACE over 24,426 items x 7 teachers x
                   14 findings, JSON
  bench train      stage-2 steps/s and memory of the reference student config (CPU), JSON
  bench hf-train   LoRA stage-2 step time and memory over 100 steps (tiny Qwen2.5-VL, CPU),
                   beside transformers + PEFT (APO_BENCH_PYTHON)
  bench hf         Qwen2.5-VL score throughput and memory (tiny checkpoint, CPU), beside
                   transformers when `python3` (or $APO_BENCH_PYTHON) has it, JSON
  check-backends   cargo check of apo with --features wgpu,cuda and cuda,distributed, and of a
                   GPU-only apo-train (--no-default-features --features wgpu)
  gpu-smoke --backend cuda|wgpu
                   build apo with the GPU backend, train a few steps on a simulated
                   set, check the loss falls (for a machine with a GPU)";

/// Feature set of the workspace-wide lint and doc steps.
/// `apo-loss/ndarray` runs its tensor tests on the CPU backend (its `burn` feature picks none).
const WORKSPACE_FEATURES: &str = "apo-loss/burn,apo-loss/ndarray,cxr-max/burn";
/// The workspace test build adds the Parquet reader (`cxr-max/parquet`): a separate
/// `cargo test -p cxr-max` would unify burn's features differently and compile it again.
const TEST_FEATURES: &str = "apo-loss/burn,apo-loss/ndarray,cxr-max/burn,cxr-max/parquet";

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
        ["gpu-smoke", "--backend", backend] => gpu_smoke(backend),
        ["check-backends"] => check_backends(),
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
    let steps: [(&str, Step); 6] = [
        ("fmt", fmt),
        ("lint", lint),
        ("deps", deps::check),
        ("test", test),
        ("backends", check_backends),
        ("doc", doc),
    ];
    FROM_SCRATCH.store(true, Ordering::Relaxed);
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
    // Parquet records through polars included (its crates compile unoptimised in test builds,
    // see the dev profile in Cargo.toml).
    cargo(&["test", "--workspace", "--features", TEST_FEATURES], &[])?;
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
                "ndarray",
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
        "hf" => {
            let mut args = vec!["bench", "-p", "apo-models", "--bench", "hf", "--"];
            args.extend(rest);
            cargo(&args, &[])?;
            python_side(
                "hf",
                "transformers",
                "crates/apo-models/benches/hf_transformers.py",
                rest,
            )
        }
        "hf-train" => {
            let mut args = vec!["bench", "-p", "apo-train", "--bench", "hf_train", "--"];
            args.extend(rest);
            cargo(&args, &[])?;
            python_side(
                "hf-train",
                "transformers + PEFT",
                "crates/apo-train/benches/hf_train_peft.py",
                rest,
            )
        }
        "train" => {
            let mut args = vec!["bench", "-p", "apo-train", "--bench", "train", "--"];
            args.extend_from_slice(rest);
            cargo(&args, &[])
        }
        other => Err(format!(
            "unknown benchmark area `{other}`; available: loss, drift, data, consensus, train, hf, hf-train"
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
    if FROM_SCRATCH.load(Ordering::Relaxed) {
        cmd.env("CARGO_INCREMENTAL", "0");
    }
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

/// Runs a benchmark's Python counterpart (`APO_BENCH_PYTHON`, else `python3`) with the same
/// arguments; a Python without the pinned packages is reported, not an error.
fn python_side(bench: &str, what: &str, script: &str, rest: &[&str]) -> Result<(), String> {
    let python = std::env::var("APO_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    match std::process::Command::new(&python)
        .arg(script)
        .args(rest)
        .status()
    {
        Ok(s) if s.success() => {}
        _ => eprintln!(
            "bench {bench}: the {what} side did not run (`{python} {script}` needs the packages of crates/apo-models/tests/fixtures/requirements.txt; set APO_BENCH_PYTHON to a Python that has them)"
        ),
    }
    Ok(())
}

/// Compile-checks the GPU backends (no GPU needed): `apo` with `--features wgpu,cuda` and with
/// `--features cuda,distributed`.
fn check_backends() -> Result<(), String> {
    // Both backends in one build: each feature's code sits behind its own `cfg`, and the
    // `not(feature = ..)` branches are compiled by the default build (lint, test).
    cargo(&["check", "-p", "apo-cli", "--features", "wgpu,cuda"], &[])?;
    // burn's `distributed` feature (NCCL all-reduce on CUDA), which changes burn's autodiff
    // backend: a build of its own.
    cargo(
        &["check", "-p", "apo-cli", "--features", "cuda,distributed"],
        &[],
    )?;
    // A GPU-only apo-train: no CPU backend, no NdArray kernels.
    cargo(
        &[
            "check",
            "-p",
            "apo-train",
            "--no-default-features",
            "--features",
            "wgpu",
        ],
        &[],
    )
}

fn number_after(json: &str, key: &str) -> Option<f64> {
    let at = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &json[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | 'E' | '+')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// For a machine with a GPU: builds `apo` with the backend, simulates 64 studies, trains
/// stage 1 for 40 steps on the GPU, and checks the loss falls. Prints one JSON line.
fn gpu_smoke(backend: &str) -> Result<(), String> {
    if !matches!(backend, "cuda" | "wgpu") {
        return Err(format!(
            "unknown backend `{backend}`; expected cuda or wgpu"
        ));
    }
    let start = Instant::now();
    cargo(
        &["build", "--release", "-p", "apo-cli", "--features", backend],
        &[],
    )?;
    let build_s = start.elapsed().as_secs_f64();
    let root = std::path::Path::new("target/gpu-smoke");
    std::fs::create_dir_all(root).map_err(|e| e.to_string())?;
    let bin = "target/release/apo";
    let run = |args: &[&str]| -> Result<String, String> {
        let out = Command::new(bin)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {bin}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`apo {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let data = root.join("data");
    run(&[
        "synth",
        "--out",
        data.to_str().unwrap_or_default(),
        "--studies",
        "64",
        "--seed",
        "1",
        "--image-size",
        "64",
    ])?;
    let config = root.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[data]\ndir = \"{}\"\nsplit = \"train\"\ntruncate = true\n[sft]\nsteps = 40\nbatch_size = 4\n[run]\nout = \"{}\"\ncheckpoint_every = 20\n",
            data.display(),
            root.join("run").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let t = Instant::now();
    let report = run(&[
        "train",
        "sft",
        "--config",
        config.to_str().unwrap_or_default(),
        "--device",
        backend,
        "--json",
    ])?;
    let train_s = t.elapsed().as_secs_f64();
    let first = number_after(&report, "first_loss").ok_or("no first_loss in the report")?;
    let last = number_after(&report, "last_loss").ok_or("no last_loss in the report")?;
    let ok = last < first;
    println!(
        "{{\"bench\":\"gpu-smoke\",\"backend\":\"{backend}\",\"build_s\":{build_s:.1},\"train_s\":{train_s:.2},\"steps\":40,\"first_loss\":{first:.4},\"last_loss\":{last:.4},\"loss_falls\":{ok}}}"
    );
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the loss did not fall on {backend}: {first} -> {last}"
        ))
    }
}
