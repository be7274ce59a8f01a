//! Properties of the aggregators: posteriors are distributions, and renaming workers and tasks
//! (a bijection) or reordering the votes only permutes the output.

use std::collections::HashMap;

use apo_consensus::{
    DawidSkeneConfig, GladConfig, MaceConfig, Votes, dawid_skene, glad, mace, majority_vote,
    one_coin_dawid_skene, wawa,
};
use proptest::prelude::*;

/// Random votes: `(task, worker, label)` with up to 30 tasks, 6 workers, 3 labels; each task
/// votes once per worker at most.
fn votes_strategy() -> impl Strategy<Value = Vec<(usize, usize, usize)>> {
    proptest::collection::vec((0usize..30, 0usize..6, 0usize..3), 20..200).prop_map(|mut v| {
        v.sort_by_key(|&(t, w, _)| (t, w));
        v.dedup_by_key(|&mut (t, w, _)| (t, w));
        v
    })
}

fn build(rows: &[(String, String, String)]) -> Votes {
    Votes::from_triples(
        rows.iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())),
    )
    .unwrap()
}

/// Task name → label name, for every method.
fn labels_by_task(votes: &Votes) -> Vec<HashMap<String, String>> {
    let to_map = |c: &[apo_consensus::Consensus]| {
        c.iter()
            .map(|c| {
                (
                    votes.tasks()[c.task].clone(),
                    votes.label_name(c.label).to_owned(),
                )
            })
            .collect::<HashMap<_, _>>()
    };
    let ds = dawid_skene(votes, &DawidSkeneConfig::default()).unwrap();
    let oc = one_coin_dawid_skene(votes, &DawidSkeneConfig::default()).unwrap();
    let gl = glad(votes, &GladConfig::default()).unwrap();
    // The published model: crowd-kit's indexing depends on the names' sort order.
    let published = MaceConfig {
        crowdkit_indexing: false,
        ..MaceConfig::default()
    };
    let mc = mace(votes, &published).unwrap();
    for p in ds
        .posteriors
        .iter()
        .chain(&oc.posteriors)
        .chain(&gl.posteriors)
        .chain(&mc.posteriors)
    {
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(p.iter().all(|&x| (0.0..=1.0 + 1e-12).contains(&x)));
    }
    vec![
        to_map(&majority_vote(votes)),
        to_map(&ds.consensus),
        to_map(&oc.consensus),
        to_map(&wawa(votes).0),
        to_map(&gl.consensus),
        to_map(&mc.consensus),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Renaming every worker and task by a bijection gives each renamed task the label it had,
    /// for every method; reversing the order of the votes too changes nothing for majority
    /// (ties to the label that sorts first), Dawid-Skene, one-coin Dawid-Skene and GLAD (MACE's
    /// random start follows the order in which workers and labels first appear; Wawa breaks
    /// ties by first appearance, as crowd-kit, so the order of the votes may matter there).
    #[test]
    fn renaming_workers_and_tasks_permutes_the_output(raw in votes_strategy(), shift in 1usize..29) {
        let label = |l: usize| ["a", "b", "c"][l].to_owned();
        let rows: Vec<(String, String, String)> = raw
            .iter()
            .map(|&(t, w, l)| (format!("t{t}"), format!("w{w}"), label(l)))
            .collect();
        // Task t → "x{(t + shift) % 30}", worker w → "z{5 - w}".
        let renamed: Vec<(String, String, String)> = raw
            .iter()
            .map(|&(t, w, l)| (format!("x{}", (t + shift) % 30), format!("z{}", 5 - w), label(l)))
            .collect();
        let mut reversed = renamed.clone();
        reversed.reverse();
        let before = labels_by_task(&build(&rows));
        for (case, votes) in [("renamed", &renamed), ("renamed and reversed", &reversed)] {
            let after = labels_by_task(&build(votes));
            for (m, (b, a)) in before.iter().zip(&after).enumerate() {
                // Wawa and MACE depend on the order of first appearance (ties; the random
                // start's rows), which reversing the votes changes.
                if (m == 3 || m == 5) && case != "renamed" {
                    continue;
                }
                for (task, l) in b {
                    let t: usize = task[1..].parse().unwrap();
                    let renamed_task = format!("x{}", (t + shift) % 30);
                    prop_assert_eq!(&a[&renamed_task], l, "{} method {} task {}", case, m, task);
                }
            }
        }
    }
}

/// Names of 0 to 40 bytes (the interner packs names below 16 bytes into one value and hashes
/// longer ones), ASCII and not, with shared prefixes and suffixes.
fn name_strategy() -> impl Strategy<Value = String> {
    (0usize..6, 0usize..41).prop_map(|(stem, len)| {
        let stems = ["", "x", "teacher-", "ß", "task/0000000", "é1"];
        let mut s = String::from(stems[stem]);
        let mut k = 0;
        while s.len() < len {
            s.push(char::from(b'a' + (k % 3) as u8));
            k += 1;
        }
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Interned indices name what was read: same name, same index, in order of first
    /// appearance, whatever the names' lengths.
    #[test]
    fn interning_matches_a_plain_map(
        rows in proptest::collection::vec((name_strategy(), name_strategy()), 1..120),
    ) {
        // Every row a distinct (task, worker) pair: worker = row number.
        let triples: Vec<(String, String, String)> = rows
            .iter()
            .enumerate()
            .filter(|(_, (t, l))| !t.trim().is_empty() && !l.trim().is_empty())
            .map(|(i, (t, l))| (t.clone(), format!("w{i}"), l.clone()))
            .collect();
        prop_assume!(!triples.is_empty());
        let votes = build(&triples);
        let mut tasks: Vec<&str> = Vec::new();
        for ((t, w, l), &(ti, wi, li)) in triples.iter().zip(votes.entries()) {
            if !tasks.contains(&t.trim()) {
                tasks.push(t.trim());
            }
            prop_assert_eq!(votes.tasks()[ti].as_str(), t.trim());
            prop_assert_eq!(votes.workers()[wi].as_str(), w.as_str());
            prop_assert_eq!(votes.label_name(li), l.trim());
        }
        prop_assert_eq!(votes.tasks().len(), tasks.len());
        prop_assert!(votes.labels().windows(2).all(|p| p[0] < p[1]));
    }

    /// The duplicate reported is the first vote (input order) of a worker on a task it already
    /// voted on, whether or not each task's votes are contiguous.
    #[test]
    fn the_first_duplicate_vote_is_reported(
        mut raw in proptest::collection::vec((0usize..8, 0usize..4), 1..60),
        grouped in any::<bool>(),
    ) {
        if grouped {
            raw.sort_by_key(|&(t, _)| t);
        }
        let rows: Vec<(String, String, String)> = raw
            .iter()
            .map(|&(t, w)| (format!("t{t}"), format!("w{w}"), "x".to_owned()))
            .collect();
        let expected = (0..raw.len()).find(|&e| raw[..e].contains(&raw[e]));
        let got = Votes::from_triples(
            rows.iter().map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())),
        );
        match expected {
            None => prop_assert!(got.is_ok()),
            Some(e) => match got {
                Err(apo_consensus::ConsensusError::DuplicateVote { row, task, worker }) => {
                    prop_assert_eq!(row, e + 1);
                    prop_assert_eq!(task, format!("t{}", raw[e].0));
                    prop_assert_eq!(worker, format!("w{}", raw[e].1));
                }
                other => prop_assert!(false, "expected a duplicate at row {}, got {:?}", e + 1, other),
            },
        }
    }
}

fn columns(rows: &[(String, String, String)]) -> [Vec<&str>; 3] {
    [
        rows.iter().map(|r| r.0.as_str()).collect(),
        rows.iter().map(|r| r.1.as_str()).collect(),
        rows.iter().map(|r| r.2.as_str()).collect(),
    ]
}

fn triples(rows: &[(String, String, String)]) -> apo_consensus::Result<Votes> {
    Votes::from_triples(
        rows.iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Columns give what the same rows give: the same votes, or the same error.
    #[test]
    fn columns_equal_rows(
        raw in proptest::collection::vec((0usize..10, 0usize..4, 0usize..3), 0..60),
    ) {
        let name = |prefix: &str, i: usize| if i == 0 && prefix == "l" { " ".to_owned() } else { format!("{prefix}{i}") };
        let rows: Vec<(String, String, String)> = raw
            .iter()
            .map(|&(t, w, l)| (name("t", t), name("w", w), name("l", l)))
            .collect();
        let [t, w, l] = columns(&rows);
        prop_assert_eq!(Votes::from_columns(&t, &w, &l), triples(&rows));
    }
}

/// A table large enough for the second thread: the same votes as the rows, and the same first
/// empty field and first duplicate when one is planted late in the table.
#[test]
fn large_columns_equal_rows() {
    let mut rows: Vec<(String, String, String)> = (0..50_000)
        .map(|i| {
            (
                format!("image-{}", i / 7),
                format!("teacher-{}", i % 7),
                ["absent", "present", "uncertain"][i % 3].to_owned(),
            )
        })
        .collect();
    let [t, w, l] = columns(&rows);
    let votes = Votes::from_columns(&t, &w, &l).unwrap();
    assert_eq!(votes, triples(&rows).unwrap());
    assert_eq!(votes.tasks().len(), 50_000_usize.div_ceil(7));
    // A duplicate at row 40,001 and an empty worker at row 45,001: both report the empty
    // worker (fields are checked before duplicates).
    rows[40_000].1 = rows[39_999].1.clone();
    rows[45_000].1 = " ".to_owned();
    let [t, w, l] = columns(&rows);
    let got = Votes::from_columns(&t, &w, &l).unwrap_err();
    assert_eq!(got, triples(&rows).unwrap_err());
    // An empty label at an earlier row than both: reported first.
    rows[30_000].2 = String::new();
    let [t, w, l] = columns(&rows);
    let got = Votes::from_columns(&t, &w, &l).unwrap_err();
    assert_eq!(
        got,
        apo_consensus::ConsensusError::EmptyField {
            row: 30_001,
            field: "label"
        }
    );
    assert_eq!(got, triples(&rows).unwrap_err());
    assert!(matches!(
        Votes::from_columns(&t[1..], &w, &l),
        Err(apo_consensus::ConsensusError::ColumnLengths { tasks: 49_999, .. })
    ));
}
