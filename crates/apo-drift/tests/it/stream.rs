//! Number streams read from text and run through a named detector.

use apo_drift::stream::{DetectError, detect, parse_params, read_stream};

#[test]
fn every_bad_line_is_listed_with_its_number() {
    let err = read_stream("1\n\nx\n2\ninf\n".as_bytes()).unwrap_err();
    let DetectError::BadLines(lines) = &err else {
        panic!("{err}")
    };
    assert_eq!(lines.iter().map(|l| l.line).collect::<Vec<_>>(), [3, 5]);
    assert_eq!(lines[0].error, "`x` is not a number");
    assert_eq!(lines[1].error, "`inf` is not finite (inf)");
    assert_eq!(
        err.to_string(),
        "2 line(s) are not finite numbers, first at line 3: `x` is not a number"
    );
    assert_eq!(read_stream(" 1.5\n\n-2\n".as_bytes()).unwrap(), [1.5, -2.0]);
}

#[test]
fn a_named_detector_finds_the_shift_in_the_stream() {
    let stream: String = (0..3000)
        .map(|i| if i < 1500 { "0\n" } else { "3\n" })
        .collect();
    let run = detect("page-hinkley", &[], stream.as_bytes()).unwrap();
    assert_eq!(run.values, 3000);
    assert!(!run.detections.is_empty() && run.detections[0] >= 1500);
    let empty = detect("adwin", &[], "\n".as_bytes()).unwrap_err();
    assert_eq!(empty.to_string(), "stream is empty");
    let params = parse_params(&[" delta = 0.1".to_owned()]).unwrap();
    assert_eq!(params, [("delta".to_owned(), "0.1".to_owned())]);
    assert_eq!(
        parse_params(&["delta".to_owned()]).unwrap_err(),
        "parameter `delta` is not NAME=VALUE"
    );
    assert!(matches!(
        detect("adwin", &params, "1\n".as_bytes()),
        Ok(r) if r.detector == "adwin" && r.values == 1
    ));
}
