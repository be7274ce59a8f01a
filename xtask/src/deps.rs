//! The dependency-direction invariants of ARCHITECTURE.md, checked with `cargo tree`.

use std::collections::BTreeSet;

use crate::cargo_output;

/// A rule: the normal dependencies of `krate` (with `features`) must not include any of
/// `forbidden`, or must be a subset of `only` when that is given.
struct Rule {
    krate: &'static str,
    features: &'static [&'static str],
    forbidden: &'static [&'static str],
    only: Option<&'static [&'static str]>,
    why: &'static str,
}

/// The crates a dependency-free `apo-loss` may pull in: `thiserror` and its derive macro.
const THISERROR: &[&str] = &[
    "apo-loss",
    "thiserror",
    "thiserror-impl",
    "proc-macro2",
    "quote",
    "syn",
    "unicode-ident",
];

const HEAVY: &[&str] = &["burn", "polars", "image", "cxr-max", "apo-train"];

const RULES: &[Rule] = &[
    Rule {
        krate: "apo-loss",
        features: &[],
        forbidden: &[],
        only: Some(THISERROR),
        why: "apo-loss without features depends on thiserror only",
    },
    Rule {
        krate: "apo-loss",
        features: &["serde"],
        forbidden: &["burn", "polars", "image"],
        only: None,
        why: "apo-loss with `serde` stays light",
    },
    Rule {
        krate: "apo-loss",
        features: &["burn"],
        forbidden: &["burn-ndarray", "burn-wgpu", "burn-cuda"],
        only: None,
        why: "apo-loss with `burn` picks no backend (the CPU kernels are its `ndarray` feature)",
    },
    Rule {
        krate: "loss-downstream",
        features: &[],
        forbidden: &["burn", "polars", "image"],
        only: None,
        why: "a downstream user of apo-loss does not get burn",
    },
    Rule {
        krate: "apo-drift",
        features: &[],
        forbidden: HEAVY,
        only: None,
        why: "apo-drift never depends on burn, polars, image, cxr-max or apo-train",
    },
    Rule {
        krate: "apo-consensus",
        features: &[],
        forbidden: HEAVY,
        only: None,
        why: "apo-consensus never depends on burn, polars, image, cxr-max or apo-train",
    },
    Rule {
        krate: "cxr-max",
        features: &[],
        forbidden: &["apo-loss", "apo-drift", "apo-consensus", "apo-train"],
        only: None,
        why: "cxr-max depends on no apo-* crate",
    },
    Rule {
        krate: "apo-models",
        features: &[],
        forbidden: &[
            "apo-loss",
            "apo-drift",
            "apo-consensus",
            "apo-train",
            "apo-pipeline",
            "cxr-max",
            "polars",
        ],
        only: None,
        why: "apo-models depends on no other apo-* crate (a model crate, no training logic)",
    },
    Rule {
        krate: "apo-train",
        features: &[],
        forbidden: &[
            "burn-wgpu",
            "burn-cuda",
            "cubecl-cuda",
            "cubecl-wgpu",
            "apo-cli",
            "apo-pipeline",
        ],
        only: None,
        why: "apo-train's default build is the CPU backend only (GPU backends are features)",
    },
    Rule {
        krate: "apo-pipeline",
        features: &[],
        forbidden: &["apo-cli", "clap", "burn-ndarray", "burn-wgpu", "burn-cuda"],
        only: None,
        why: "apo-pipeline is a library: no command-line parser, and it picks no backend",
    },
];

pub fn check() -> Result<(), String> {
    let members = workspace_members()?;
    let mut failures = Vec::new();
    for rule in RULES {
        if !members.contains(rule.krate) {
            continue;
        }
        let deps = normal_deps(rule.krate, rule.features)?;
        let bad: Vec<&String> = match rule.only {
            Some(only) => deps
                .iter()
                .filter(|d| !only.contains(&d.as_str()))
                .collect(),
            None => deps
                .iter()
                .filter(|d| rule.forbidden.contains(&d.as_str()))
                .collect(),
        };
        if bad.is_empty() {
            eprintln!(
                "deps: ok   {} [{}]: {}",
                rule.krate,
                rule.features.join(","),
                rule.why
            );
        } else {
            failures.push(format!("{}: {} (found {:?})", rule.krate, rule.why, bad));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

fn workspace_members() -> Result<BTreeSet<String>, String> {
    let out = cargo_output(&[
        "tree",
        "--workspace",
        "--depth",
        "0",
        "--prefix",
        "none",
        "--format",
        "{p}",
    ])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

fn normal_deps(krate: &str, features: &[&str]) -> Result<BTreeSet<String>, String> {
    let features = features.join(",");
    let mut args = vec![
        "tree", "-e", "normal", "-p", krate, "--prefix", "none", "--format", "{p}",
    ];
    if !features.is_empty() {
        args.extend_from_slice(&["--features", &features]);
    }
    let out = cargo_output(&args)?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}
