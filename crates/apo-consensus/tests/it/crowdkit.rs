//! Dawid-Skene against crowd-kit 1.4.2 on the same votes (fixtures from
//! `tests/fixtures/make_crowdkit_fixtures.py`), and majority / weighted votes.

use std::collections::HashMap;

use apo_consensus::{
    ConsensusError, DawidSkeneConfig, Votes, dawid_skene, majority_vote, one_coin_dawid_skene,
    wawa, weighted_vote,
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

fn votes_of_case(case: &str) -> Votes {
    let rows = read_csv(&format!("votes_{case}.csv"));
    Votes::from_triples(
        rows.iter()
            .map(|r| (r[0].as_str(), r[1].as_str(), r[2].as_str())),
    )
    .unwrap()
}

/// One-coin Dawid-Skene gives crowd-kit 1.4.2's `OneCoinDawidSkene` labels on every task and
/// its posteriors within 1e-6.
#[test]
fn one_coin_dawid_skene_agrees_with_crowdkit() {
    for case in ["three_labels", "binary_teachers", "adversarial"] {
        let votes = votes_of_case(case);
        let want: HashMap<String, (String, f64)> = read_csv(&format!("onecoin_{case}.csv"))
            .into_iter()
            .map(|r| (r[0].clone(), (r[1].clone(), r[2].parse().unwrap())))
            .collect();
        let ds = one_coin_dawid_skene(&votes, &DawidSkeneConfig::default()).unwrap();
        let mut worst = 0f64;
        for c in &ds.consensus {
            let (label, posterior) = &want[&votes.tasks()[c.task]];
            assert_eq!(votes.label_name(c.label), label, "{case} task {}", c.task);
            worst = worst.max((ds.posteriors[c.task][c.label] - posterior).abs());
        }
        assert!(worst < 1e-6, "{case}: posteriors differ by {worst}");
        assert!(
            ds.posteriors
                .iter()
                .all(|p| (p.iter().sum::<f64>() - 1.0).abs() < 1e-9)
        );
        // One skill per worker: every confusion row of a worker has the same diagonal.
        for (w, rows) in ds.errors.iter().enumerate() {
            let diag: Vec<f64> = (0..rows.len())
                .filter(|&l| rows[l].iter().any(|&x| x > 0.0))
                .map(|l| rows[l][l])
                .collect();
            assert!(
                diag.windows(2).all(|d| (d[0] - d[1]).abs() < 1e-12),
                "worker {w}"
            );
        }
    }
}

/// Wawa gives crowd-kit 1.4.2's labels and worker skills.
#[test]
fn wawa_agrees_with_crowdkit() {
    for case in ["three_labels", "binary_teachers", "adversarial"] {
        let votes = votes_of_case(case);
        let want: HashMap<String, String> = read_csv(&format!("wawa_{case}.csv"))
            .into_iter()
            .map(|r| (r[0].clone(), r[1].clone()))
            .collect();
        let skills: HashMap<String, f64> = read_csv(&format!("wawa_skills_{case}.csv"))
            .into_iter()
            .map(|r| (r[0].clone(), r[1].parse().unwrap()))
            .collect();
        let (labels, got_skills) = wawa(&votes);
        for c in &labels {
            assert_eq!(
                votes.label_name(c.label),
                want[&votes.tasks()[c.task]],
                "{case} task {}",
                c.task
            );
        }
        for (w, s) in got_skills.iter().enumerate() {
            let name = &votes.workers()[w];
            assert!((s - skills[name]).abs() < 1e-12, "{case} {name}: {s}");
        }
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
    let margin =
        |c: &apo_consensus::Consensus| c.agreeing as f64 / (c.agreeing + c.dissenting) as f64;
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
    assert_eq!((mv[1].agreeing, mv[1].dissenting), (2, 1));
    // Workers a and b voted x on t2, c voted y; on t1 (a tie taken by x) b agrees.
    let split = votes.split_workers(&mv);
    let names = |ws: &[usize]| {
        ws.iter()
            .map(|&w| votes.workers()[w].as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        (names(&split[1].0), names(&split[1].1)),
        (vec!["a", "b"], vec!["c"])
    );
    assert_eq!(
        (names(&split[0].0), names(&split[0].1)),
        (vec!["b"], vec!["a"])
    );
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

#[test]
fn from_indices_checks_ranges_and_duplicates() {
    let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let ok = Votes::from_indices(
        names(&["t1", "t2", "t3"]),
        names(&["a", "b"]),
        names(&["no", "yes"]),
        vec![(0, 0, 1), (0, 1, 1), (1, 0, 0)],
    )
    .unwrap();
    // Task t3 has no vote: majority gives it confidence 0.
    let c = majority_vote(&ok);
    assert_eq!(c[2].confidence, 0.0);
    assert_eq!(c[0].label, 1);
    assert!(matches!(
        Votes::from_indices(names(&["t"]), names(&["a"]), names(&["x"]), vec![(0, 1, 0)]),
        Err(ConsensusError::IndexOutOfRange {
            row: 1,
            field: "worker",
            ..
        })
    ));
    assert!(matches!(
        Votes::from_indices(
            names(&["t"]),
            names(&["a"]),
            names(&["x"]),
            vec![(0, 0, 0), (0, 0, 0)]
        ),
        Err(ConsensusError::DuplicateVote { row: 2, .. })
    ));
}

#[test]
fn majority_label_fixes_the_orientation_of_a_mirrored_fit() {
    // Five workers; three of them are wrong 90% of the time, so the majority vote (and EM
    // started from it) lands on the mirrored labels. Truth: "present" on 1 task in 5.
    let accuracy = [0.9, 0.85, 0.1, 0.1, 0.1];
    let (rows, truth) = binary_votes(7, 2000, accuracy.len(), 0.2, |_, w, present, u| {
        if u < accuracy[w] { present } else { !present }
    });
    let votes = votes_of(&rows);
    let acc = |ds: &apo_consensus::DawidSkene| share_right(ds, &votes, &truth);
    let plain = dawid_skene(&votes, &DawidSkeneConfig::default()).unwrap();
    let oriented = dawid_skene(
        &votes,
        &DawidSkeneConfig {
            majority_label: Some(0),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(acc(&plain) < 0.05, "plain {}", acc(&plain));
    assert!(acc(&oriented) > 0.95, "oriented {}", acc(&oriented));
    assert_eq!(plain.elbo, oriented.elbo);
    assert!(oriented.priors[0] > 0.7);
    assert!(
        dawid_skene(
            &votes,
            &DawidSkeneConfig {
                majority_label: Some(2),
                ..Default::default()
            }
        )
        .is_err()
    );
}

#[test]
fn reliability_weights_follow_agreement() {
    let votes = Votes::from_triples([
        ("1", "a", "x"),
        ("1", "b", "x"),
        ("1", "c", "y"),
        ("2", "a", "y"),
        ("2", "b", "y"),
        ("2", "c", "x"),
        ("3", "a", "x"),
        ("3", "b", "x"),
        ("3", "c", "x"),
    ])
    .unwrap();
    let w = apo_consensus::reliability_weights(&votes);
    // a and b agree with the others' majority on every decided task (3 of 3 for a: others
    // b,c tie on 1 and 2 -> only task 3 decided).
    let r = |agree: f64, decided: f64| {
        ((agree + 1.0) / (decided + 2.0) / (1.0 - (agree + 1.0) / (decided + 2.0)))
            .ln()
            .max(0.0)
    };
    assert_eq!(w[0], ("a".to_owned(), r(1.0, 1.0)));
    assert_eq!(w[2], ("c".to_owned(), r(1.0, 3.0)));
}

#[test]
fn worker_starts_escape_a_fit_that_follows_a_shared_bias() {
    // Seven workers. Two are reliable; five drift together: over the first half of the
    // stream they state "present" on 10 % of the tasks where it is absent, over the second
    // half on 80-90 %. Truth: "present" on 15 % of tasks. The majority vote then follows the
    // drift, and so does EM started from it: its latent class is "second half", not the
    // finding (the votes break Dawid-Skene's independence given the truth, as drifting
    // teachers do).
    // (P(says present | present), P(says present | absent)) per worker.
    let rates = [
        (0.9, 0.05),
        (0.85, 0.1),
        (0.95, 0.9),
        (0.9, 0.85),
        (0.95, 0.9),
        (0.9, 0.8),
        (0.95, 0.9),
    ];
    let (rows, truth) = binary_votes(11, 3000, rates.len(), 0.15, |i, w, present, u| {
        let (tpr, fpr) = rates[w];
        let fpr = if w >= 2 && i < 1500 { 0.1 } else { fpr };
        u < if present { tpr } else { fpr }
    });
    let votes = votes_of(&rows);
    let acc = |ds: &apo_consensus::DawidSkene| share_right(ds, &votes, &truth);
    let absent = votes.labels().iter().position(|l| l == "absent").unwrap();
    let one = dawid_skene(
        &votes,
        &DawidSkeneConfig {
            majority_label: Some(absent),
            ..Default::default()
        },
    )
    .unwrap();
    let many = dawid_skene(
        &votes,
        &DawidSkeneConfig {
            majority_label: Some(absent),
            worker_starts: true,
            ..Default::default()
        },
    )
    .unwrap();
    let last = |ds: &apo_consensus::DawidSkene| *ds.elbo.last().unwrap();
    assert!(acc(&one) < 0.5, "majority-vote start {}", acc(&one));
    assert!(acc(&many) > 0.9, "worker starts {}", acc(&many));
    // The better fit is chosen by the likelihood, not by the truth.
    assert!(
        last(&many) > last(&one) + 0.01,
        "{} vs {}",
        last(&many),
        last(&one)
    );
    // Where the majority-vote start already finds the best fit, the starts change nothing.
    let early: Vec<_> = rows
        .iter()
        .filter(|(i, _, _)| i[1..].parse::<usize>().unwrap() < 1500)
        .cloned()
        .collect();
    let clean = votes_of(&early);
    let clean_absent = clean.labels().iter().position(|l| l == "absent").unwrap();
    let fit = |worker_starts| {
        dawid_skene(
            &clean,
            &DawidSkeneConfig {
                majority_label: Some(clean_absent),
                worker_starts,
                ..Default::default()
            },
        )
        .unwrap()
    };
    assert_eq!(fit(false).consensus, fit(true).consensus);
}

/// Votes "present" / "absent" of `workers` workers on `tasks` tasks, from a seeded SplitMix64:
/// each task is "present" with probability `prior`; then, per worker, one uniform draw `u`
/// and `says(task, worker, present, u)` decides whether the worker says "present". Returns
/// the (task, worker, label) rows and the truth.
#[allow(clippy::type_complexity)]
fn binary_votes(
    seed: u64,
    tasks: usize,
    workers: usize,
    prior: f64,
    says: impl Fn(usize, usize, bool, f64) -> bool,
) -> (Vec<(String, String, String)>, Vec<bool>) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_xoshiro::SplitMix64::seed_from_u64(seed);
    let mut uniform = move || rng.random::<f64>();
    let mut rows = Vec::new();
    let mut truth = Vec::new();
    for i in 0..tasks {
        let present = uniform() < prior;
        truth.push(present);
        for w in 0..workers {
            let label = if says(i, w, present, uniform()) {
                "present"
            } else {
                "absent"
            };
            rows.push((format!("i{i}"), format!("w{w}"), label.to_owned()));
        }
    }
    (rows, truth)
}

fn votes_of(rows: &[(String, String, String)]) -> Votes {
    Votes::from_triples(
        rows.iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())),
    )
    .unwrap()
}

/// Share of tasks whose consensus label is the truth.
fn share_right(ds: &apo_consensus::DawidSkene, votes: &Votes, truth: &[bool]) -> f64 {
    ds.consensus
        .iter()
        .filter(|c| (votes.label_name(c.label) == "present") == truth[c.task])
        .count() as f64
        / truth.len() as f64
}

/// GLAD gives crowd-kit 1.4.2's `GLAD` labels on every task (the bar for an iterative fit is
/// 99 %), its posteriors of the label it picked and its worker abilities within 1e-4: the M-step
/// takes scipy's conjugate-gradient steps (MINPACK's line search), sums in another order.
#[test]
fn glad_agrees_with_crowdkit() {
    use apo_consensus::{GladConfig, glad};
    for case in ["three_labels", "binary_teachers", "adversarial"] {
        let votes = votes_of_case(case);
        let want: HashMap<String, (String, f64)> = read_csv(&format!("glad_{case}.csv"))
            .into_iter()
            .map(|r| (r[0].clone(), (r[1].clone(), r[2].parse().unwrap())))
            .collect();
        let alphas: HashMap<String, f64> = read_csv(&format!("glad_alphas_{case}.csv"))
            .into_iter()
            .map(|r| (r[0].clone(), r[1].parse().unwrap()))
            .collect();
        let g = glad(&votes, &GladConfig::default()).unwrap();
        let (mut same, mut worst_p) = (0usize, 0f64);
        for c in &g.consensus {
            let (label, posterior) = &want[&votes.tasks()[c.task]];
            if votes.label_name(c.label) == label {
                same += 1;
                worst_p = worst_p.max((g.posteriors[c.task][c.label] - posterior).abs());
            }
        }
        let rate = same as f64 / g.consensus.len() as f64;
        let worst_a = votes
            .workers()
            .iter()
            .enumerate()
            .map(|(w, name)| (g.alphas[w] - alphas[name]).abs())
            .fold(0f64, f64::max);
        eprintln!(
            "{case}: {same}/{} labels equal to crowd-kit ({rate:.4}), posteriors within {worst_p:.2e}, abilities within {worst_a:.2e}, {} EM iterations",
            g.consensus.len(),
            g.loss_history.len()
        );
        assert_eq!(same, g.consensus.len(), "{case}: {rate}");
        assert!(worst_a < 1e-4, "{case}: abilities differ by {worst_a}");
        assert!(worst_p < 1e-4, "{case}: posteriors differ by {worst_p}");
        assert!(
            g.posteriors
                .iter()
                .all(|p| (p.iter().sum::<f64>() - 1.0).abs() < 1e-9)
        );
        assert!(g.loss_history.iter().all(|q| q.is_finite()));
    }
}

/// MACE with crowd-kit's defaults (its indexing included) gives crowd-kit 1.4.2's `MACE` labels
/// on every task and its posteriors; the published model agrees with them where the two orders
/// of workers and labels coincide, and is reported beside it.
#[test]
fn mace_agrees_with_crowdkit() {
    use apo_consensus::{MaceConfig, mace};
    for case in ["three_labels", "binary_teachers", "adversarial"] {
        let votes = votes_of_case(case);
        let want: HashMap<String, (String, f64)> = read_csv(&format!("mace_{case}.csv"))
            .into_iter()
            .map(|r| (r[0].clone(), (r[1].clone(), r[2].parse().unwrap())))
            .collect();
        let published = MaceConfig {
            crowdkit_indexing: false,
            ..MaceConfig::default()
        };
        let plain = mace(&votes, &published).unwrap();
        let plain_same = plain
            .consensus
            .iter()
            .filter(|c| want[&votes.tasks()[c.task]].0 == votes.label_name(c.label))
            .count();
        eprintln!(
            "{case}: the published model: {plain_same}/{} labels equal to crowd-kit's",
            plain.consensus.len()
        );
        let m = mace(&votes, &MaceConfig::default()).unwrap();
        let (mut same, mut worst_p) = (0usize, 0f64);
        for c in &m.consensus {
            let (label, posterior) = &want[&votes.tasks()[c.task]];
            if votes.label_name(c.label) == label {
                same += 1;
                worst_p = worst_p.max((m.posteriors[c.task][c.label] - posterior).abs());
            }
        }
        let rate = same as f64 / m.consensus.len() as f64;
        eprintln!(
            "{case}: {same}/{} labels equal to crowd-kit ({rate:.4}), posteriors within {worst_p:.2e}",
            m.consensus.len(),
        );
        assert_eq!(same, m.consensus.len(), "{case}: {rate}");
        assert!(worst_p < 1e-9, "{case}: posteriors differ by {worst_p}");
        assert!(
            m.posteriors
                .iter()
                .all(|p| (p.iter().sum::<f64>() - 1.0).abs() < 1e-9)
        );
    }
}
