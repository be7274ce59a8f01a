//! Detection indices against river 0.26 (fixtures made by `tests/fixtures/make_river_fixtures.py`),
//! KSWIN determinism, and errors.

use apo_drift::{DetectorConfig, DriftDetector, DriftError, Kswin, KswinConfig};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn read_stream(name: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap();
    text.lines().map(|l| l.parse().unwrap()).collect()
}

#[test]
fn same_detection_indices_as_river() {
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{FIXTURES}/river_detections.json")).unwrap(),
    )
    .unwrap();
    let cases = json["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    let mut total_hits = 0;
    let mut warnings = 0;
    for case in cases {
        let name = case["detector"].as_str().unwrap();
        let params: Vec<(String, String)> = case["params"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        let pairs: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let stream = read_stream(case["stream"].as_str().unwrap());
        let want: Vec<usize> = case["detections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let mut detector = DetectorConfig::from_params(name, &pairs)
            .unwrap()
            .build()
            .unwrap();
        let got = detector.detections(&stream).unwrap();
        assert_eq!(got, want, "{name} {params:?} on {}", case["stream"]);
        total_hits += want.len();
        // river's warning zones (DDM, EDDM): every index at which `warning_detected` is true.
        if let Some(w) = case.get("warnings") {
            let want: Vec<usize> = w
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            let mut d = DetectorConfig::from_params(name, &pairs)
                .unwrap()
                .build()
                .unwrap();
            let mut got = Vec::new();
            for (i, &x) in stream.iter().enumerate() {
                d.update(x).unwrap();
                if d.warning_detected() {
                    got.push(i);
                }
            }
            assert_eq!(
                got, want,
                "{name} {params:?} warnings on {}",
                case["stream"]
            );
            warnings += want.len();
        }
    }
    assert!(warnings > 0, "the fixtures exercise warning zones");
    assert!(
        total_hits > 50,
        "the fixtures exercise real detections ({total_hits})"
    );
}

#[test]
fn kswin_is_deterministic_for_a_seed_and_finds_a_shift() {
    let stream = read_stream("stream_gauss_shifts.txt");
    let run = |seed| {
        Kswin::new(KswinConfig {
            seed,
            ..Default::default()
        })
        .unwrap()
        .detections(&stream)
        .unwrap()
    };
    let a = run(3);
    assert_eq!(a, run(3));
    assert!(a.iter().any(|&i| (1500..1600).contains(&i)), "{a:?}");
    assert!(a.iter().any(|&i| (3000..3100).contains(&i)), "{a:?}");
}

#[test]
fn bad_values_and_parameters_are_typed_errors() {
    let mut adwin = DetectorConfig::default_for("adwin")
        .unwrap()
        .build()
        .unwrap();
    match adwin.detections(&[0.1, 0.2, f64::NAN]).unwrap_err() {
        DriftError::NonFinite { what, .. } => assert_eq!(what, "stream[2]"),
        e => panic!("unexpected {e}"),
    }
    let mut ddm = DetectorConfig::default_for("ddm").unwrap().build().unwrap();
    assert!(matches!(
        ddm.detections(&[0.0, 1.0, 3.0]),
        Err(DriftError::OutOfRange { .. })
    ));
    assert!(matches!(
        DetectorConfig::default_for("cusum"),
        Err(DriftError::UnknownDetector(_))
    ));
    assert!(matches!(
        DetectorConfig::from_params("adwin", &[("delat", "0.1")]),
        Err(DriftError::UnknownParameter { .. })
    ));
    // A word where a number goes says so (not `NaN`).
    for (key, value, message) in [
        ("clock", "x", "clock = `x` is not a non-negative integer"),
        ("delta", "abc", "delta = `abc` is not a number"),
    ] {
        let e = DetectorConfig::from_params("adwin", &[(key, value)]).unwrap_err();
        assert!(matches!(e, DriftError::BadValue { .. }), "{e}");
        assert_eq!(e.to_string(), message);
    }
    let bad = DetectorConfig::from_params("adwin", &[("delta", "2")]).unwrap();
    assert!(matches!(bad.build(), Err(DriftError::OutOfRange { .. })));
    let bad = DetectorConfig::from_params("kswin", &[("stat_size", "60")]).unwrap();
    assert!(matches!(bad.build(), Err(DriftError::OutOfRange { .. })));
    let bad = DetectorConfig::from_params("page-hinkley", &[("mode", "sideways")]).unwrap_err();
    assert_eq!(
        bad.to_string(),
        "mode = `sideways` is not one of up, down, both"
    );
}

#[test]
fn detectors_reset_after_a_detection_like_river() {
    // After a detection the next update starts from scratch: a second identical shift is
    // detected at the same offset from its start.
    let mut stream: Vec<f64> = (0..1000)
        .map(|i| if i < 500 { 0.0 } else { 10.0 })
        .collect();
    let mut ph = DetectorConfig::default_for("page-hinkley")
        .unwrap()
        .build()
        .unwrap();
    let first = ph.detections(&stream).unwrap();
    assert!(!first.is_empty());
    stream.truncate(first[0] + 1);
    let mut again = DetectorConfig::default_for("page-hinkley")
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(again.detections(&stream).unwrap(), vec![first[0]]);
    assert!(again.drift_detected());
    again.update(0.0).unwrap();
    assert!(!again.drift_detected());
}

/// `detections` (which some detectors run with their state in registers) and value-by-value
/// `update` agree on every stream, including after detections and resets.
#[test]
fn detections_equal_value_by_value_updates() {
    for (name, stream) in [
        ("adwin", "stream_gauss_shifts.txt"),
        ("page-hinkley", "stream_ramp.txt"),
        ("ddm", "stream_errors.txt"),
        ("kswin", "stream_gauss_shifts.txt"),
    ] {
        let stream = read_stream(stream);
        let cfg = DetectorConfig::default_for(name).unwrap();
        let batch = cfg.build().unwrap().detections(&stream).unwrap();
        let mut one = cfg.build().unwrap();
        let single: Vec<usize> = (0..stream.len())
            .filter(|&i| one.update(stream[i]).unwrap())
            .collect();
        assert_eq!(batch, single, "{name}");
        assert!(!batch.is_empty(), "{name} detects something");
    }
    // A bad value stops the run where `update` would, with the value's index.
    let mut ddm = DetectorConfig::default_for("ddm").unwrap().build().unwrap();
    match ddm.detections(&[0.0, 1.0, 0.5, f64::NAN, 0.0]).unwrap_err() {
        DriftError::NonFinite { what, .. } => assert_eq!(what, "stream[3]"),
        e => panic!("unexpected {e}"),
    }
}
