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
