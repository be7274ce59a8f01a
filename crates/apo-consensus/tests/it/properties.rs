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
