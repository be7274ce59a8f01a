//! Votes and weights read from CSV.

use apo_consensus::csv::{CsvError, read_votes, read_weights};
use apo_consensus::majority_vote;

#[test]
fn votes_are_read_by_column_name() {
    let votes =
        read_votes("label,task,worker,extra\nx,t1,a,1\nx,t1,b,2\ny,t1,c,3\n".as_bytes()).unwrap();
    let c = majority_vote(&votes);
    assert_eq!(votes.label_name(c[0].label), "x");
    assert!((c[0].confidence - 2.0 / 3.0).abs() < 1e-12);
}

#[test]
fn bad_csv_names_the_column_or_line() {
    let err = |s: &str| read_votes(s.as_bytes()).unwrap_err().to_string();
    assert_eq!(
        err("task,who,label\n"),
        "votes: missing column `worker` (header: task,who,label)"
    );
    let short = err("task,worker,label\nt1,a\n");
    assert!(
        short.starts_with("votes line 2: malformed row: "),
        "{short}"
    );
    assert!(matches!(
        read_votes("task,worker,label\n".as_bytes()),
        Err(CsvError::Votes(_))
    ));
    let w = read_weights("worker,weight\na, 2.5\nb,heavy\n".as_bytes()).unwrap_err();
    assert_eq!(w.to_string(), "weights line 3: `heavy` is not a number");
    assert_eq!(
        read_weights("weight,worker\n1,a\n".as_bytes()).unwrap(),
        [("a".to_owned(), 1.0)]
    );
}

/// A UTF-8 byte-order mark before the header (as spreadsheet programs write) costs neither
/// the first column name nor the first row.
#[test]
fn a_byte_order_mark_is_not_part_of_the_header() {
    let votes = read_votes("\u{feff}task,worker,label\nt1,a,x\nt1,b,x\n".as_bytes()).unwrap();
    assert_eq!(votes.tasks(), ["t1"]);
    let weights = read_weights("\u{feff}worker,weight\na,2\n".as_bytes()).unwrap();
    assert_eq!(weights, [("a".to_owned(), 2.0)]);
}
