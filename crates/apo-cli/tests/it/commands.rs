//! The subcommands' library functions, driven without a process.

use apo_cli::commands::{consensus, demo, drift};
use apo_consensus::Method;

#[test]
fn consensus_votes_writes_csv_and_reports_bad_input() {
    let input = "task,worker,label\nt1,a,x\nt1,b,x\nt1,c,y\n";
    let mut out = Vec::new();
    consensus::votes(Method::Majority, input.as_bytes(), None::<&[u8]>, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("task,label,confidence\nt1,x,0.666"),
        "{text}"
    );
    let err = consensus::votes(
        Method::Majority,
        "task,who,label\n".as_bytes(),
        None::<&[u8]>,
        Vec::new(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("missing column `worker`"), "{err}");
    let err = consensus::votes(
        Method::Majority,
        "task,worker,label\nt1,a\n".as_bytes(),
        None::<&[u8]>,
        Vec::new(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
    let err = consensus::votes(
        Method::Weighted,
        input.as_bytes(),
        Some("worker,weight\nzz,1\n".as_bytes()),
        Vec::new(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, consensus::VotesError::Weights(e) if e.contains("zz")),
        "{err}"
    );
    // Every weight 0: an error about the weights, not a file of confidences 0.
    let err = consensus::votes(
        Method::Weighted,
        input.as_bytes(),
        Some("worker,weight\na,0\nb,0\nc,0\n".as_bytes()),
        Vec::new(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        consensus::VotesError::Weights(
            "every worker's weight is 0, so no vote counts; give at least one worker a weight > 0"
                .to_owned()
        )
    );
    let mut out = Vec::new();
    consensus::votes(
        Method::Weighted,
        input.as_bytes(),
        Some("worker,weight\nc,5\n".as_bytes()),
        &mut out,
    )
    .unwrap();
    assert!(String::from_utf8(out).unwrap().contains("t1,y,"));
    let err = consensus::read_weights("worker,weight\na,x\n".as_bytes()).unwrap_err();
    assert_eq!(err, "weights line 2: `x` is not a number");
}

#[test]
fn drift_detect_writes_detections_and_reports_bad_lines() {
    let stream: String = (0..3000)
        .map(|i| format!("{}\n", if i < 1500 { 0.0 } else { 3.0 }))
        .collect();
    let mut out = Vec::new();
    let hits = drift::detect("page-hinkley", &[], stream.as_bytes(), &mut out, false).unwrap();
    assert!(!hits.is_empty() && hits[0] >= 1500);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["detections"][0].as_u64().unwrap() as usize, hits[0]);

    let err = drift::detect(
        "adwin",
        &[],
        "1\n\nx\n2\nNaN\n".as_bytes(),
        Vec::new(),
        false,
    )
    .unwrap_err();
    match err {
        drift::DetectError::BadLines(lines) => {
            assert_eq!(lines.iter().map(|l| l.line).collect::<Vec<_>>(), vec![3, 5]);
        }
        e => panic!("unexpected {e}"),
    }
    assert!(matches!(
        drift::detect("adwin", &[], "".as_bytes(), Vec::new(), false),
        Err(drift::DetectError::Drift(_))
    ));
    let params = drift::parse_params(&["delta=0.1".to_owned()]).unwrap();
    assert_eq!(params, vec![("delta".to_owned(), "0.1".to_owned())]);
    assert!(drift::parse_params(&["delta".to_owned()]).is_err());
}

/// `--warnings` adds river's warning zones: EDDM on the committed error stream gives river
/// 0.26's detections and warnings (`crates/apo-drift/tests/fixtures/river_detections.json`).
#[test]
fn drift_detect_warnings_match_river() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../apo-drift/tests/fixtures");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{fixtures}/river_detections.json")).unwrap(),
    )
    .unwrap();
    let case = json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["detector"] == "eddm"
                && c["stream"] == "stream_errors.txt"
                && c["params"].as_object().unwrap().is_empty()
        })
        .unwrap();
    let stream = std::fs::read_to_string(format!("{fixtures}/stream_errors.txt")).unwrap();
    let mut out = Vec::new();
    drift::detect("eddm", &[], stream.as_bytes(), &mut out, true).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["detections"], case["detections"]);
    assert_eq!(v["warnings"], case["warnings"]);
    assert!(!v["warnings"].as_array().unwrap().is_empty());
}

#[test]
fn demo_objective_table_prints_every_objective_and_teacher() {
    let mut text = Vec::new();
    demo::run(&mut text, false).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("plackett-luce") && text.contains("Moonshot"));
    let mut json = Vec::new();
    demo::run(&mut json, true).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(
        v["objectives"].as_array().unwrap().len(),
        apo_loss::Objective::ALL.len()
    );
    assert!(text.contains("plackett-luce-ranking") && text.contains("infonca"));
}

/// `apo consensus votes --method one-coin-dawid-skene | wawa` give crowd-kit 1.4.2's labels
/// on its fixture votes.
#[test]
fn consensus_votes_new_methods_match_crowdkit() {
    let fixtures = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../apo-consensus/tests/fixtures"
    );
    for (method, prefix) in [
        (Method::OneCoinDawidSkene, "onecoin"),
        (Method::Wawa, "wawa"),
    ] {
        let input = std::fs::read_to_string(format!("{fixtures}/votes_three_labels.csv")).unwrap();
        let mut out = Vec::new();
        consensus::votes(method, input.as_bytes(), None::<&[u8]>, &mut out).unwrap();
        let got: std::collections::HashMap<String, String> = String::from_utf8(out)
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[0].to_owned(), f[1].to_owned())
            })
            .collect();
        let want =
            std::fs::read_to_string(format!("{fixtures}/{prefix}_three_labels.csv")).unwrap();
        let mut n = 0;
        for l in want.lines().skip(1) {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(got[f[0]], f[1], "{method} task {}", f[0]);
            n += 1;
        }
        assert_eq!(n, 600);
    }
}

/// `--posteriors` adds each task's label distribution (summing to 1, its largest entry the
/// confidence) and `--skills` writes the workers' parameters: Wawa's equal crowd-kit's skills,
/// Dawid-Skene's confusion rows sum to 1 over the observed labels of each true label.
#[test]
fn consensus_votes_posteriors_and_skills() {
    let fixtures = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../apo-consensus/tests/fixtures"
    );
    let input = std::fs::read_to_string(format!("{fixtures}/votes_three_labels.csv")).unwrap();
    for method in [
        Method::DawidSkene,
        Method::OneCoinDawidSkene,
        Method::Wawa,
        Method::Majority,
    ] {
        let (mut out, mut skills) = (Vec::new(), Vec::new());
        let output = consensus::VotesOutput {
            posteriors: true,
            skills: Some(&mut skills),
        };
        consensus::votes_with(method, input.as_bytes(), None::<&[u8]>, &mut out, output).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap(), "task,label,confidence,p_a,p_b,p_c");
        for l in lines {
            let f: Vec<&str> = l.split(',').collect();
            let p: Vec<f64> = f[3..].iter().map(|x| x.parse().unwrap()).collect();
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{method}: {l}");
            let conf: f64 = f[2].parse().unwrap();
            let label = ["a", "b", "c"].iter().position(|x| *x == f[1]).unwrap();
            assert!((p[label] - conf).abs() < 1e-12, "{method}: {l}");
        }
        let skills = String::from_utf8(skills).unwrap();
        match method {
            Method::Wawa => {
                let want =
                    std::fs::read_to_string(format!("{fixtures}/wawa_skills_three_labels.csv"))
                        .unwrap();
                let want: std::collections::HashMap<&str, f64> = want
                    .lines()
                    .skip(1)
                    .map(|l| {
                        let (w, v) = l.split_once(',').unwrap();
                        (w, v.parse().unwrap())
                    })
                    .collect();
                let mut n = 0;
                for l in skills.lines().skip(1) {
                    let (w, v) = l.split_once(',').unwrap();
                    let v: f64 = v.parse().unwrap();
                    assert!((v - want[w]).abs() < 1e-12, "{w}: {v} vs {}", want[w]);
                    n += 1;
                }
                assert_eq!(n, want.len());
            }
            Method::DawidSkene => {
                assert!(skills.starts_with("worker,observed,true,probability\n"));
                let mut col: std::collections::HashMap<(String, String), f64> = Default::default();
                for l in skills.lines().skip(1) {
                    let f: Vec<&str> = l.split(',').collect();
                    *col.entry((f[0].to_owned(), f[2].to_owned())).or_default() +=
                        f[3].parse::<f64>().unwrap();
                }
                assert!(col.values().all(|s| (s - 1.0).abs() < 1e-9), "{col:?}");
            }
            Method::OneCoinDawidSkene => assert!(skills.starts_with("worker,skill\n")),
            _ => assert!(skills.starts_with("worker,weight\n")),
        }
    }
}
