//! The `apo` binary as a user runs it: exit codes, stdin input, error lines.

use std::io::Write;
use std::process::{Command, Stdio};

fn apo(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_apo"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("apo runs");
    // A command that refuses its arguments exits without reading its input: a closed pipe
    // is then not an error of the test.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A fresh temporary folder `TAG-PID` holding `data/`, a data set of `studies` studies
/// simulated by `apo synth` (16-pixel images).
fn folder_with_data(tag: &str, studies: usize) -> std::path::PathBuf {
    let root = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
    std::fs::remove_dir_all(&root).ok();
    std::fs::create_dir_all(&root).unwrap();
    let n = studies.to_string();
    let out = apo_in(
        &root,
        &[
            "synth",
            "--out",
            "data",
            "--studies",
            &n,
            "--image-size",
            "16",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    root
}

/// Runs the binary in folder `dir` with `args` (no standard input).
fn apo_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_apo"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn loss_answers_every_line_and_fails_at_the_end_on_a_bad_one() {
    let input = concat!(
        r#"{"chosen":{"policy":-1,"reference":-1},"rejected":[{"policy":-2,"reference":-2}]}"#,
        "\n{\"chosen\":\n",
        r#"{"objective":"hinge","chosen":{"policy":-1,"reference":-3},"rejected":[{"policy":-2,"reference":-2}]}"#,
        "\n"
    );
    let (code, stdout, stderr) = apo(&["loss", "--input", "-"], input);
    assert_eq!(code, 1, "stderr: {stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!((lines[0]["loss"].as_f64().unwrap() - 2f64.ln()).abs() < 1e-15);
    assert_eq!(lines[1]["line"], 2);
    // Hinge: x = 0.1 · (2 − 0) = 0.2 ⇒ loss 0.8.
    assert!((lines[2]["loss"].as_f64().unwrap() - 0.8).abs() < 1e-15);
    assert!(stderr.contains("read=3 answered=2 failed=1"), "{stderr}");
}

#[test]
fn loss_succeeds_when_every_line_is_good_and_reports_missing_files() {
    let input =
        r#"{"chosen":{"policy":-1,"reference":-1},"rejected":[{"policy":-2,"reference":-2}]}"#;
    let (code, stdout, _) = apo(&["loss", "--input", "-", "--metrics"], input);
    assert_eq!(code, 0);
    assert!(stdout.contains("\"p_chosen\":0.5"));
    let (code, _, stderr) = apo(&["loss", "--input", "does-not-exist.jsonl"], "");
    assert_eq!(code, 2);
    assert!(stderr.contains("does-not-exist.jsonl"), "{stderr}");
}

#[test]
fn demo_objectives_prints_the_objective_table() {
    let (code, stdout, _) = apo(&["demo", "--objectives"], "");
    assert_eq!(code, 0);
    assert!(stdout.contains("plackett-luce") && stdout.contains("ln(8)"));
}

#[test]
fn drift_report_writes_its_json_and_three_plots() {
    let root = std::env::temp_dir().join(format!("apo-cli-drift-{}", std::process::id()));
    std::fs::remove_dir_all(&root).ok();
    let data = root.join("data");
    let data_arg = data.to_str().unwrap();
    let (code, _, stderr) = apo(
        &[
            "synth",
            "--out",
            data_arg,
            "--studies",
            "60",
            "--image-size",
            "16",
        ],
        "",
    );
    assert_eq!(code, 0, "{stderr}");
    let out = root.join("report");
    let (code, stdout, stderr) = apo(
        &["drift", "report", data_arg, "--out", out.to_str().unwrap()],
        "",
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("drift report over 60 images, 7 teachers"),
        "{stdout}"
    );
    for f in [
        "drift.json",
        "disagreement_heatmap.png",
        "step_drift.png",
        "change_points.png",
    ] {
        assert!(out.join(f).is_file(), "{f} written");
        assert!(stdout.contains(f), "{f} listed: {stdout}");
    }
    let png = image::open(out.join("disagreement_heatmap.png")).unwrap();
    assert!(png.width() > 300 && png.height() > 200);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("drift.json")).unwrap()).unwrap();
    assert_eq!(json["items"], 60);
    assert_eq!(json["files"].as_array().unwrap().len(), 4);
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn label_writes_one_csv_line_per_report_and_names_bad_lines() {
    let input = "{\"id\": \"s1\", \"text\": \"Small left pleural effusion. No pneumothorax.\"}\n{\"id\": \"s2\"}\n{\"id\": \"s3\", \"text\": \"Cardiomegaly.\"}\n";
    let (code, stdout, stderr) = apo(&["label", "--input", "-"], input);
    assert_eq!(code, 1, "a rejected record fails the run: {stderr}");
    assert!(stderr.contains("-:2: no `text`"), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(lines[0].split(',').count(), 15);
    let s1: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(s1[0], "s1");
    assert_eq!(s1[10], "1.0", "Pleural Effusion");
    assert_eq!(s1[13], "0.0", "Pneumothorax");
    assert!(lines[2].starts_with("s3,,1.0,"));

    // A CSV file in, a file out that is not overwritten without --force.
    let dir = std::env::temp_dir().join(format!("apo-cli-label-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let reports = dir.join("reports.csv");
    std::fs::write(&reports, "study_id,Report Impression\n7,No edema.\n").unwrap();
    let out = dir.join("labels.csv");
    let args = |force: bool| {
        let mut a = vec![
            "label".to_owned(),
            "-i".into(),
            reports.display().to_string(),
            "-o".into(),
            out.display().to_string(),
        ];
        if force {
            a.push("--force".into());
        }
        a
    };
    let run = |a: Vec<String>| {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        apo(&refs, "")
    };
    assert_eq!(run(args(false)).0, 0);
    let written = std::fs::read_to_string(&out).unwrap();
    assert!(written.lines().nth(1).unwrap().starts_with("7,,,,0.0,"));
    let (code, _, stderr) = run(args(false));
    assert_eq!(code, 2, "an error, not a rejected record");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(run(args(true)).0, 0);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn synth_writes_counterfactual_renders_on_request() {
    let root = std::env::temp_dir().join(format!("apo-cli-cf-{}", std::process::id()));
    std::fs::remove_dir_all(&root).ok();
    let out = root.to_str().unwrap();
    let (code, stdout, stderr) = apo(
        &[
            "synth",
            "--out",
            out,
            "--studies",
            "40",
            "--image-size",
            "16",
            "--counterfactuals",
            "--json",
        ],
        "",
    );
    assert_eq!(code, 0, "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let test = summary["splits"][2].as_u64().unwrap() as usize;
    assert!(test > 0, "{summary}");
    assert_eq!(summary["counterfactuals"], 5 * test);
    let renders = cxr_max::sim::read_counterfactuals(&root).unwrap();
    assert_eq!(renders.len(), 5 * test);
    assert!(renders.iter().all(|c| root.join(&c.path).is_file()));
    std::fs::remove_dir_all(&root).ok();
}

/// A weights error names the weights file, not the votes file.
#[test]
fn consensus_votes_weight_errors_name_the_weights_file() {
    let votes = bad_input("votes.csv");
    for (weights, message) in [
        ("weights-zero.csv", "every worker's weight is 0"),
        (
            "weights-unknown-worker.csv",
            "weights name worker `zz`, who has no vote",
        ),
    ] {
        let path = bad_input(weights);
        let (code, stdout, stderr) = apo(
            &[
                "consensus",
                "votes",
                "--method",
                "weighted",
                "--input",
                votes.to_str().unwrap(),
                "--weights",
                path.to_str().unwrap(),
            ],
            "",
        );
        assert_ne!(code, 0, "{weights}: {stdout}");
        assert!(stdout.is_empty(), "{weights}: nothing written: {stdout}");
        assert!(
            stderr.contains(&format!("{}: {message}", path.display())),
            "{weights}: {stderr}"
        );
        assert!(!stderr.contains("votes.csv"), "{weights}: {stderr}");
    }
}

/// A detector parameter typed as a word says the value is not a number (not `NaN`).
#[test]
fn drift_detect_names_a_parameter_that_is_not_a_number() {
    let (code, _, stderr) = apo(
        &[
            "drift",
            "detect",
            "--detector",
            "adwin",
            "--param",
            "delta=abc",
            "--input",
            "-",
        ],
        "1\n2\n",
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("delta = `abc` is not a number"), "{stderr}");
    assert!(!stderr.contains("NaN"), "{stderr}");
}

/// `consensus build` refuses a threshold outside [0, 1], weights that are all 0, and an
/// output path that is a folder, with a message and no output file (not an empty file and
/// exit 0).
#[test]
fn consensus_build_refuses_bad_thresholds_zero_weights_and_a_folder() {
    let root = std::env::temp_dir().join(format!("apo-cli-build-bad-{}", std::process::id()));
    std::fs::remove_dir_all(&root).ok();
    let data = root.join("data");
    let data_arg = data.to_str().unwrap();
    let (code, _, stderr) = apo(
        &[
            "synth",
            "--out",
            data_arg,
            "--studies",
            "30",
            "--image-size",
            "16",
        ],
        "",
    );
    assert_eq!(code, 0, "{stderr}");
    let out = root.join("prefs.jsonl");
    let out_arg = out.to_str().unwrap();
    for bad in ["1.5", "-0.1"] {
        let (code, _, stderr) = apo(
            &[
                "consensus",
                "build",
                data_arg,
                "--out",
                out_arg,
                &format!("--min-confidence={bad}"),
            ],
            "",
        );
        assert_ne!(code, 0, "--min-confidence {bad}");
        assert!(
            stderr.contains(&format!(
                "min_confidence = {bad} is out of range: a confidence in [0, 1]"
            )),
            "{stderr}"
        );
        assert!(!out.exists());
    }
    let weights = root.join("weights.csv");
    let zero: String = cxr_max::KNOWN_TEACHERS
        .iter()
        .map(|t| format!("{t},0\n"))
        .collect();
    std::fs::write(&weights, format!("worker,weight\n{zero}")).unwrap();
    let (code, _, stderr) = apo(
        &[
            "consensus",
            "build",
            data_arg,
            "--out",
            out_arg,
            "--method",
            "weighted",
            "--weights",
            weights.to_str().unwrap(),
        ],
        "",
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("every worker's weight is 0"), "{stderr}");
    assert!(!out.exists());
    std::fs::create_dir_all(&out).unwrap();
    let (code, _, stderr) = apo(&["consensus", "build", data_arg, "--out", out_arg], "");
    assert_ne!(code, 0);
    assert!(
        stderr.contains("prefs.jsonl: a folder; refusing"),
        "{stderr}"
    );
    assert!(out.is_dir());
    std::fs::remove_dir_all(&root).ok();
}

/// `apo label -o PATH --force` replaces a regular file but refuses a folder or a FIFO at the
/// path (renaming a temporary file over them would swap them for a regular file).
#[cfg(unix)]
#[test]
fn label_output_refuses_a_folder_and_a_fifo() {
    let dir = std::env::temp_dir().join(format!("apo-cli-label-special-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    let folder = dir.join("labels.csv");
    std::fs::create_dir_all(&folder).unwrap();
    let fifo = dir.join("pipe.csv");
    let fifo_made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    let mut targets = vec![(folder.clone(), "a folder")];
    if fifo_made {
        targets.push((fifo.clone(), "a FIFO (named pipe)"));
    }
    for (target, kind) in targets {
        let (code, _, stderr) = apo(
            &[
                "label",
                "-i",
                "-",
                "-o",
                target.to_str().unwrap(),
                "--force",
            ],
            "{\"id\": \"a\", \"text\": \"Cardiomegaly.\"}\n",
        );
        assert_eq!(code, 2, "{stderr}");
        assert!(
            stderr.contains(&format!("{}: {kind}; refusing", target.display())),
            "{stderr}"
        );
    }
    assert!(folder.is_dir());
    if fifo_made {
        use std::os::unix::fs::FileTypeExt;
        assert!(
            std::fs::symlink_metadata(&fifo)
                .unwrap()
                .file_type()
                .is_fifo()
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn bad_input(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/bad-inputs")
        .join(name)
}

/// `apo synth --out` into a folder with files refuses without `--force`.
#[test]
fn synth_refuses_a_folder_with_files_without_force() {
    let root = std::env::temp_dir().join(format!("apo-cli-synth-force-{}", std::process::id()));
    std::fs::remove_dir_all(&root).ok();
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("records.jsonl"), "mine\n").unwrap();
    let args = [
        "synth",
        "--out",
        root.to_str().unwrap(),
        "--studies",
        "4",
        "--image-size",
        "16",
    ];
    let (code, _, stderr) = apo(&args, "");
    assert_ne!(code, 0);
    assert!(
        stderr.contains("not empty") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("records.jsonl")).unwrap(),
        "mine\n"
    );
    let mut forced = args.to_vec();
    forced.push("--force");
    let (code, _, stderr) = apo(&forced, "");
    assert_eq!(code, 0, "{stderr}");
    std::fs::remove_dir_all(&root).ok();
}

/// A bare `apo` prints the usage and what `apo demo` costs; it starts nothing.
#[test]
fn bare_apo_prints_usage_and_the_demo_cost() {
    let dir = std::env::temp_dir().join(format!("apo-cli-bare-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_apo"))
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("Usage") && stdout.contains("demo"),
        "{stdout}"
    );
    assert!(
        stdout.contains("15-20 minutes") && stdout.contains("runs/demo"),
        "{stdout}"
    );
    assert!(!dir.join("runs").exists(), "nothing was started");
    std::fs::remove_dir_all(&dir).ok();
}

/// Exported image paths resolve from any working folder: absolute by default, relative to
/// `--relative-to DIR` on request; rows carry the item id and the teacher.
#[test]
fn consensus_exports_resolve_images_from_anywhere() {
    let root = std::env::temp_dir().join(format!("apo-cli-export-paths-{}", std::process::id()));
    std::fs::remove_dir_all(&root).ok();
    std::fs::create_dir_all(&root).unwrap();
    let run = |args: &[&str]| {
        let out = apo_in(&root, args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // The data set named relative to the working folder.
    run(&[
        "synth",
        "--out",
        "data",
        "--studies",
        "12",
        "--image-size",
        "16",
    ]);
    run(&[
        "consensus",
        "build",
        "data",
        "--export",
        "trl",
        "--out",
        "trl.jsonl",
    ]);
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(root.join("trl.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let image = std::path::PathBuf::from(first["images"][0].as_str().unwrap());
    assert!(
        image.is_absolute() && image.is_file(),
        "{}",
        image.display()
    );
    assert!(first["id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(first["teacher"].as_str().is_some_and(|s| !s.is_empty()));
    std::fs::create_dir_all(root.join("elsewhere")).unwrap();
    run(&[
        "consensus",
        "build",
        "data",
        "--export",
        "swift",
        "--out",
        "swift.jsonl",
        "--relative-to",
        "elsewhere",
    ]);
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(root.join("swift.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let rel = std::path::PathBuf::from(first["images"][0].as_str().unwrap());
    assert!(
        rel.is_relative() && rel.starts_with(".."),
        "{}",
        rel.display()
    );
    assert!(
        root.join("elsewhere").join(&rel).is_file(),
        "{}",
        rel.display()
    );
    std::fs::remove_dir_all(&root).ok();
}

/// `apo export sft`: one row per image and trajectory that states a finding, counts that add
/// up, absolute image paths, each layout; an existing output is refused.
#[test]
fn export_sft_writes_every_trajectory_once_and_reconciles_counts() {
    let root = std::env::temp_dir().join(format!("apo-cli-export-sft-{}", std::process::id()));
    std::fs::remove_dir_all(&root).ok();
    std::fs::create_dir_all(&root).unwrap();
    let run = |args: &[&str]| apo_in(&root, args);
    let o = run(&[
        "synth",
        "--out",
        "data",
        "--studies",
        "20",
        "--image-size",
        "16",
        "--json",
    ]);
    assert!(o.status.success());
    let synth: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for format in ["ours", "trl", "swift"] {
        let out = format!("sft-{format}.jsonl");
        let o = run(&[
            "export", "sft", "data", "--format", format, "--out", &out, "--json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let refused: u64 = s["refusals"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(
            s["trajectories"].as_u64().unwrap(),
            s["rows"].as_u64().unwrap() + refused
        );
        assert_eq!(
            s["records_read"].as_u64().unwrap(),
            s["records_kept"].as_u64().unwrap() + s["records_rejected"].as_u64().unwrap()
        );
        assert_eq!(s["images"], 20);
        assert_eq!(s["trajectories"], 140, "20 images × 7 teachers");
        // The simulator's refusals are exactly the trajectories left out.
        assert_eq!(Some(refused), synth["refusals"].as_u64());
        let text = std::fs::read_to_string(root.join(&out)).unwrap();
        let rows: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len() as u64, s["rows"].as_u64().unwrap());
        let image = std::path::PathBuf::from(rows[0]["images"][0].as_str().unwrap());
        assert!(image.is_absolute() && image.is_file());
        assert!(
            rows.iter()
                .all(|r| r["id"].is_string() && r["teacher"].is_string())
        );
        match format {
            "ours" => assert!(rows[0]["completion"].is_string()),
            "trl" => assert_eq!(rows[0]["messages"][0]["content"][0]["type"], "image"),
            _ => assert!(
                rows[0]["messages"][0]["content"]
                    .as_str()
                    .unwrap()
                    .starts_with("<image>")
            ),
        }
    }
    let o = run(&["export", "sft", "data", "--out", "sft-ours.jsonl"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("exists"));
    std::fs::remove_dir_all(&root).ok();
}

/// Every command that reads a data set counts what its reader rejected, writes the rejected
/// records with `--quarantine`, stops at the first with `--strict`, and takes `--records`;
/// `[data]` of a run configuration takes the same settings.
#[test]
fn data_commands_count_quarantine_and_stop_on_rejected_records() {
    let root = folder_with_data("apo-cli-source", 12);
    let run = |args: &[&str]| apo_in(&root, args);
    // One broken record at the end (line 13), and the records file moved aside: the folder
    // then needs --records.
    let records = root.join("data/cxr-max.jsonl");
    let mut text = std::fs::read_to_string(&records).unwrap();
    text.push_str("{\"dicom_id\": \"broken\", \"trajectories\": 7}\n");
    std::fs::write(root.join("data/cxr-max.jsonl"), &text).unwrap();

    let o = run(&[
        "consensus",
        "build",
        "data",
        "--out",
        "prefs.jsonl",
        "--quarantine",
        "q.jsonl",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout.contains("13 records read: 12 kept, 1 rejected"),
        "{stdout}"
    );
    let q = std::fs::read_to_string(root.join("q.jsonl")).unwrap();
    assert_eq!(q.lines().count(), 1, "{q}");
    assert!(q.contains("\"line\":13"), "{q}");

    let o = run(&[
        "consensus",
        "build",
        "data",
        "--out",
        "strict.jsonl",
        "--strict",
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("13"),
        "the error names the line"
    );
    assert!(!root.join("strict.jsonl").exists());

    let o = run(&["drift", "report", "data", "--out", "drift", "--strict"]);
    assert!(!o.status.success());

    let o = run(&["export", "sft", "data", "--out", "sft.jsonl", "--json"]);
    assert!(o.status.success());
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (s["records_read"].as_u64(), s["records_rejected"].as_u64()),
        (Some(13), Some(1))
    );

    // --records names the file when it is not the folder's only candidate.
    std::fs::rename(&records, root.join("data/records-v2.jsonl")).unwrap();
    std::fs::write(root.join("data/other.jsonl"), "").unwrap();
    let o = run(&[
        "consensus",
        "build",
        "data",
        "--out",
        "named.jsonl",
        "--records",
        "data/records-v2.jsonl",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // The same settings in a run configuration's [data].
    let cfg = root.join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            "[data]\ndir = \"{}\"\nsplit = \"train\"\nrecords = \"{}\"\nstrict = true\n[sft]\nsteps = 1\n[run]\nout = \"{}\"\n",
            root.join("data").display(),
            root.join("data/records-v2.jsonl").display(),
            root.join("run").display()
        ),
    )
    .unwrap();
    let o = run(&["train", "sft", "--config", cfg.to_str().unwrap()]);
    assert!(
        !o.status.success(),
        "strict: the broken record stops training"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("records-v2.jsonl"));
    std::fs::remove_dir_all(&root).ok();
}

/// `--min-agreement` is a flag of `apo consensus build` (1.0 skips every image whose findings
/// are not unanimous), `data.split = "all"` is a valid setting, and `apo loss --help` documents
/// its defaults.
#[test]
fn min_agreement_and_split_all_are_accepted() {
    let root = folder_with_data("apo-cli-agree", 30);
    let run = |args: &[&str]| apo_in(&root, args);
    let count = |args: &[&str]| {
        let o = run(args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        s["consensus_found"].as_u64().unwrap()
    };
    let all = count(&["consensus", "build", "data", "--out", "a.jsonl", "--json"]);
    let strict = count(&[
        "consensus",
        "build",
        "data",
        "--out",
        "b.jsonl",
        "--json",
        "--min-agreement",
        "0.999",
    ]);
    assert!(strict < all, "{strict} vs {all}");
    let cfg = root.join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            "[data]\ndir = \"{}\"\nsplit = \"all\"\ntruncate = true\n[sft]\nsteps = 1\nbatch_size = 1\n\
             [model]\nimage_size = 16\npatch_size = 8\nd_model = 16\nn_heads = 2\n\
             encoder_layers = 1\ndecoder_layers = 1\n[tokenizer]\nvocab_size = 300\n\
             [run]\nout = \"{}\"\n",
            root.join("data").display(),
            root.join("run").display()
        ),
    )
    .unwrap();
    let o = run(&["train", "sft", "--json", "--config", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let help = String::from_utf8(run(&["loss", "--help"]).stdout).unwrap();
    assert!(
        help.contains("beta 0.1") && help.contains("margin_max"),
        "{help}"
    );
    std::fs::remove_dir_all(&root).ok();
}

/// `apo drift detect --follow`: an event is printed while the input is still open (a live
/// stream), and the drift indices equal the batch mode's; a bad line is answered and skipped.
#[test]
fn drift_detect_follow_prints_events_as_they_happen() {
    use std::io::{BufRead, BufReader};
    let values: Vec<String> = (0..3000)
        .map(|i| {
            if i < 1500 {
                "0.0".to_owned()
            } else {
                "3.0".to_owned()
            }
        })
        .collect();
    let batch: serde_json::Value = {
        let (code, stdout, _) = apo(
            &[
                "drift",
                "detect",
                "--detector",
                "page-hinkley",
                "--input",
                "-",
            ],
            &(values.join("\n") + "\n"),
        );
        assert_eq!(code, 0);
        serde_json::from_str(stdout.trim()).unwrap()
    };
    let first = batch["detections"][0].as_u64().unwrap() as usize;
    let mut child = Command::new(env!("CARGO_BIN_EXE_apo"))
        .args([
            "drift",
            "detect",
            "--detector",
            "page-hinkley",
            "--follow",
            "--input",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // Up to the first detection, plus a bad line: both are answered before the input ends.
    for v in &values[..=first] {
        writeln!(stdin, "{v}").unwrap();
    }
    writeln!(stdin, "oops").unwrap();
    stdin.flush().unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["event"], "drift");
    assert_eq!(event["index"].as_u64().unwrap() as usize, first);
    line.clear();
    stdout.read_line(&mut line).unwrap();
    let bad: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(bad["line"].as_u64().unwrap() as usize, first + 2);
    for v in &values[first + 1..] {
        writeln!(stdin, "{v}").unwrap();
    }
    drop(stdin);
    let rest: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "a bad line makes the exit status 1");
    let mut got = vec![first as u64];
    got.extend(rest.iter().map(|e| e["index"].as_u64().unwrap()));
    let want: Vec<u64> = batch["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(got, want);
}

/// `apo train sft --devices 2` trains data-parallel (the report's loss equals the one-device
/// run's to float rounding), and bad data-parallel settings are errors that name the field.
#[test]
fn train_devices_flag_and_bad_parallel_settings() {
    let root = folder_with_data("apo-cli-devices", 12);
    let run = |args: &[&str]| apo_in(&root, args);
    let cfg = |out: &str| {
        let path = root.join(format!("{out}.toml"));
        std::fs::write(
            &path,
            format!(
                "[data]\ndir = \"{}\"\nsplit = \"all\"\ntruncate = true\n[sft]\nsteps = 2\nbatch_size = 4\n\
                 [model]\nimage_size = 16\npatch_size = 8\nd_model = 16\nn_heads = 2\n\
                 encoder_layers = 1\ndecoder_layers = 1\n[tokenizer]\nvocab_size = 300\n\
                 [run]\nout = \"{}\"\n",
                root.join("data").display(),
                root.join(out).display()
            ),
        )
        .unwrap();
        path.to_str().unwrap().to_owned()
    };
    let report = |args: &[&str]| -> serde_json::Value {
        let o = run(args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let one = report(&["train", "sft", "--json", "--config", &cfg("one")]);
    let two = report(&[
        "train",
        "sft",
        "--json",
        "--devices",
        "2",
        "--config",
        &cfg("two"),
    ]);
    for key in ["first_loss", "last_loss"] {
        let (a, b) = (one[key].as_f64().unwrap(), two[key].as_f64().unwrap());
        assert!((a - b).abs() < 1e-5, "{key}: {a} vs {b}");
    }
    let fails = |args: &[&str], needle: &str| {
        let o = run(args);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{err}");
    };
    fails(
        &["train", "sft", "--devices", "0", "--config", &cfg("zero")],
        "run.devices",
    );
    fails(
        &["train", "sft", "--devices", "5", "--config", &cfg("five")],
        "sft.batch_size",
    );
    fails(
        &["train", "sft", "--nodes", "2", "--config", &cfg("nodes")],
        "run.orchestrator",
    );
    fails(
        &["train", "sft", "--node-rank", "1", "--config", &cfg("rank")],
        "run.node_rank",
    );
    fails(
        &[
            "train",
            "sft",
            "--devices",
            "2",
            "--all-reduce",
            "nccl",
            "--config",
            &cfg("nccl"),
        ],
        "run.all_reduce",
    );
    std::fs::remove_dir_all(&root).ok();
}

/// `apo consensus votes --method glad` and `--method mace` aggregate a votes CSV, and
/// `--skills` writes one line per worker.
#[test]
fn consensus_votes_glad_and_mace() {
    let csv = "task,worker,label\nt1,a,x\nt1,b,x\nt1,c,y\nt2,a,y\nt2,b,y\nt2,c,x\nt3,a,x\nt3,b,x\nt3,c,x\n";
    for method in ["glad", "mace", "mace-published"] {
        let skills = std::env::temp_dir().join(format!(
            "apo-cli-skills-{method}-{}.csv",
            std::process::id()
        ));
        let (code, out, err) = apo(
            &[
                "consensus",
                "votes",
                "--method",
                method,
                "--input",
                "-",
                "--posteriors",
                "--skills",
                skills.to_str().unwrap(),
            ],
            csv,
        );
        assert_eq!(code, 0, "{method}: {err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "task,label,confidence,p_x,p_y", "{method}");
        assert!(lines[1].starts_with("t1,x,"), "{method}: {out}");
        assert!(lines[2].starts_with("t2,y,"), "{method}: {out}");
        let s = std::fs::read_to_string(&skills).unwrap();
        assert_eq!(s.lines().count(), 4, "{method}: {s}");
        std::fs::remove_file(&skills).ok();
    }
}

/// `apo synth --shift-teachers --subtle-rate`: the teachers written with the data set are the
/// embedded ones shifted as `Profiles::shifted` draws them for the seed, the difficulty mix
/// follows the flag, and out-of-range values are refused with the flag named.
#[test]
fn synth_shifts_the_teachers_and_the_difficulty_mix() {
    let root = std::env::temp_dir().join(format!("apo-cli-synth-shift-{}", std::process::id()));
    std::fs::remove_dir_all(&root).ok();
    let run = |name: &str, extra: &[&str]| {
        let out = root.join(name);
        let mut args = vec![
            "synth",
            "--out",
            out.to_str().unwrap(),
            "--studies",
            "200",
            "--image-size",
            "16",
            "--seed",
            "5",
            "--json",
        ];
        args.extend_from_slice(extra);
        let (code, stdout, stderr) = apo(&args, "");
        (code, stdout, stderr, out)
    };
    let (code, stdout, stderr, out) = run(
        "shifted",
        &["--shift-teachers", "0.1", "--subtle-rate", "0.75"],
    );
    assert_eq!(code, 0, "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let subtle = summary["subtle"].as_u64().unwrap();
    assert!((120..=180).contains(&subtle), "{subtle} of 200 subtle");
    let written = cxr_max::sim::Profiles::from_file(&out.join("teachers.toml")).unwrap();
    assert_eq!(written, cxr_max::sim::Profiles::embedded().shifted(0.1, 5));
    let (code, stdout, stderr, out) = run("plain", &[]);
    assert_eq!(code, 0, "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(summary["subtle"].as_u64().unwrap() < 80);
    let written = cxr_max::sim::Profiles::from_file(&out.join("teachers.toml")).unwrap();
    assert_eq!(written, cxr_max::sim::Profiles::embedded());
    for (name, flags, says) in [
        (
            "bad-shift",
            ["--shift-teachers", "0.7"],
            "--shift-teachers 0.7",
        ),
        ("bad-subtle", ["--subtle-rate", "1.5"], "subtle_rate = 1.5"),
    ] {
        let (code, _, stderr, _) = run(name, &flags);
        assert_ne!(code, 0, "{name}");
        assert!(stderr.contains(says), "{name}: {stderr}");
    }
    std::fs::remove_dir_all(&root).ok();
}
