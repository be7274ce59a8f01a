//! Dawid-Skene against crowd-kit 1.4.2 on the same votes (fixtures from
//! `tests/fixtures/make_crowdkit_fixtures.py`), and majority / weighted votes.

use std::collections::HashMap;

use apo_consensus::{
    ConsensusError, DawidSkeneConfig, Votes, dawid_skene, majority_vote, weighted_vote,
};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn read_csv(name: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

#[test]
fn dawid_skene_agrees_with_crowdkit() {
    for case in ["three_labels", "binary_teachers", "adversarial"] {
        let rows = read_csv(&format!("votes_{case}.csv"));
        let votes = Votes::from_triples(
            rows.iter()
                .map(|r| (r[0].as_str(), r[1].as_str(), r[2].as_str())),
        )
        .unwrap();
        let want: HashMap<String, String> = read_csv(&format!("ds_{case}.csv"))
            .into_iter()
            .map(|r| (r[0].clone(), r[1].clone()))
            .collect();
        let ds = dawid_skene(&votes, &DawidSkeneConfig::default()).unwrap();
        let same = ds
            .consensus
            .iter()
            .filter(|c| want[&votes.tasks()[c.task]] == votes.label_name(c.label))
            .count();
        let rate = same as f64 / ds.consensus.len() as f64;
        eprintln!(
            "{case}: {same}/{} equal to crowd-kit ({rate:.4}), {} EM iterations",
            ds.consensus.len(),
            ds.elbo.len()
        );
        assert!(rate >= 0.995, "{case}: {rate}");
        // Posteriors are distributions; priors sum to one; the ELBO never decreases.
        assert!(
            ds.posteriors
                .iter()
                .all(|p| (p.iter().sum::<f64>() - 1.0).abs() < 1e-9)
        );
        assert!((ds.priors.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(
            ds.elbo.windows(2).all(|w| w[1] >= w[0] - 1e-9),
            "{:?}",
            ds.elbo
        );
    }
}

#[test]
fn dawid_skene_beats_majority_with_adversarial_workers() {
    // Two of five workers are mostly wrong: Dawid-Skene learns to invert them.
    let rows = read_csv("votes_adversarial.csv");
    let votes = Votes::from_triples(
        rows.iter()
            .map(|r| (r[0].as_str(), r[1].as_str(), r[2].as_str())),
    )
    .unwrap();
    let ds = dawid_skene(&votes, &DawidSkeneConfig::default()).unwrap();
    let mv = majority_vote(&votes);
    let margin = |c: &apo_consensus::Consensus| {
        c.agreeing.len() as f64 / (c.agreeing.len() + c.dissenting.len()) as f64
    };
    assert!(mv.iter().all(|c| margin(c) > 0.5 - 1e-12));
    let changed = ds
        .consensus
        .iter()
        .zip(&mv)
        .filter(|(a, b)| a.label != b.label)
        .count();
    assert!(changed > 0, "Dawid-Skene corrects some majority decisions");
}

#[test]
fn majority_and_weighted_votes() {
    let votes = Votes::from_triples([
        ("t1", "a", "y"),
        ("t1", "b", "x"),
        ("t2", "a", "x"),
        ("t2", "b", "x"),
        ("t2", "c", "y"),
    ])
    .unwrap();
    let mv = majority_vote(&votes);
    // Tie on t1 goes to the label that sorts first ("x").
    assert_eq!(votes.label_name(mv[0].label), "x");
    assert_eq!(mv[0].confidence, 0.5);
    assert_eq!(votes.label_name(mv[1].label), "x");
    assert!((mv[1].confidence - 2.0 / 3.0).abs() < 1e-15);
    assert_eq!((mv[1].agreeing.len(), mv[1].dissenting.len()), (2, 1));
    let wv = weighted_vote(&votes, &[("c", 5.0)]).unwrap();
    assert_eq!(votes.label_name(wv[1].label), "y");
    assert!((wv[1].confidence - 5.0 / 7.0).abs() < 1e-15);
    assert!(matches!(
        weighted_vote(&votes, &[("zz", 1.0)]),
        Err(ConsensusError::UnknownWorker(_))
    ));
    assert!(matches!(
        weighted_vote(&votes, &[("a", -1.0)]),
        Err(ConsensusError::InvalidWeight { .. })
    ));
}

#[test]
fn bad_votes_are_typed_errors_naming_the_row() {
    assert_eq!(
        Votes::from_triples(Vec::<(&str, &str, &str)>::new()).unwrap_err(),
        ConsensusError::NoVotes
    );
    assert_eq!(
        Votes::from_triples([("t", "a", "x"), ("", "b", "x")]).unwrap_err(),
        ConsensusError::EmptyField {
            row: 2,
            field: "task"
        }
    );
    assert!(matches!(
        Votes::from_triples([("t", "a", "x"), ("t", "a", "y")]).unwrap_err(),
        ConsensusError::DuplicateVote { row: 2, .. }
    ));
    assert!(matches!(
        Votes::with_labels([("t", "a", "x"), ("t", "b", "maybe")], &["x", "y"]).unwrap_err(),
        ConsensusError::UndeclaredLabel { row: 2, .. }
    ));
    let votes = Votes::from_triples([("t", "a", "x")]).unwrap();
    assert!(matches!(
        dawid_skene(
            &votes,
            &DawidSkeneConfig {
                max_iter: 0,
                ..Default::default()
            }
        ),
        Err(ConsensusError::OutOfRange {
            name: "max_iter",
            ..
        })
    ));
}
