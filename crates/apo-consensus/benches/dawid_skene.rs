//! `cargo xtask bench consensus`: Dawid-Skene over 24,426 items × 7 teachers × 14 findings
//! (14 binary problems, each teacher voting on 95 % of the items with its own accuracy).
//! Prints one JSON line. `--write DIR` saves the 14 vote tables (`votes_{k}.csv`) for
//! `benches/crowdkit_bench.py DIR`, which times crowd-kit on the same votes.

use std::time::Instant;

use rand::{Rng, SeedableRng};

use apo_consensus::{DawidSkeneConfig, Votes, dawid_skene, one_coin_dawid_skene, wawa};
use rayon::prelude::*;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let write = args
        .iter()
        .position(|a| a == "--write")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let (items, teachers, findings) = (24_426usize, 7usize, 14usize);
    let accuracy = [0.74, 0.55, 0.50, 0.64, 0.57, 0.68, 0.48];
    let mut rng = rand_xoshiro::SplitMix64::seed_from_u64(0x853C_49E6_748F_EA9B);
    let mut uniform = move || rng.random::<f64>();
    let mut tables = Vec::new();
    for _ in 0..findings {
        let mut rows = Vec::with_capacity(items * teachers);
        for i in 0..items {
            let truth = uniform() < 0.2;
            for (t, &acc) in accuracy.iter().enumerate().take(teachers) {
                if uniform() < 0.95 {
                    let vote = if uniform() < acc { truth } else { !truth };
                    rows.push((
                        format!("i{i}"),
                        format!("t{t}"),
                        if vote { "present" } else { "absent" }.to_owned(),
                    ));
                }
            }
        }
        tables.push(rows);
    }
    if let Some(dir) = &write {
        std::fs::create_dir_all(dir).expect("output folder");
        for (k, rows) in tables.iter().enumerate() {
            let mut text = String::from("task,worker,label\n");
            for (a, b, c) in rows {
                text.push_str(&format!("{a},{b},{c}\n"));
            }
            std::fs::write(format!("{dir}/votes_{k}.csv"), text).expect("write votes");
        }
    }
    // Serial: one finding after another (interning from strings included).
    let run = |rows: &Vec<(String, String, String)>| {
        let votes = Votes::from_triples(
            rows.iter()
                .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())),
        )
        .expect("votes");
        let t = Instant::now();
        let ds = dawid_skene(&votes, &DawidSkeneConfig::default()).expect("dawid-skene");
        (t.elapsed().as_secs_f64(), ds.elbo.len())
    };
    let start = Instant::now();
    let (mut em_seconds, mut iterations) = (0.0, 0);
    for rows in &tables {
        let (s, i) = run(rows);
        em_seconds += s;
        iterations += i;
    }
    let serial = start.elapsed().as_secs_f64();
    // Parallel: the 14 findings are independent problems, shared out over the cores.
    let threads = rayon::current_num_threads();
    let start = Instant::now();
    tables.par_iter().for_each(|rows| {
        run(rows);
    });
    let parallel = start.elapsed().as_secs_f64();
    // One-coin Dawid-Skene and Wawa, serial over the 14 tables (interning included).
    let votes_of = |rows: &Vec<(String, String, String)>| {
        Votes::from_triples(
            rows.iter()
                .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())),
        )
        .expect("votes")
    };
    let start = Instant::now();
    for rows in &tables {
        let ds =
            one_coin_dawid_skene(&votes_of(rows), &DawidSkeneConfig::default()).expect("one-coin");
        std::hint::black_box(ds);
    }
    let one_coin = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for rows in &tables {
        let g = apo_consensus::glad(&votes_of(rows), &apo_consensus::GladConfig::default())
            .expect("glad");
        std::hint::black_box(g);
    }
    let glad_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for rows in &tables {
        let m = apo_consensus::mace(&votes_of(rows), &apo_consensus::MaceConfig::default())
            .expect("mace");
        std::hint::black_box(m);
    }
    let mace_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut wawa_compute = 0.0;
    for rows in &tables {
        let votes = votes_of(rows);
        let t = Instant::now();
        std::hint::black_box(wawa(&votes));
        wawa_compute += t.elapsed().as_secs_f64();
    }
    let wawa_s = start.elapsed().as_secs_f64();
    // The same from columns, as a data frame holds them (crowd-kit's input): the task column
    // is interned on a second thread.
    let columns: Vec<[Vec<&str>; 3]> = tables
        .iter()
        .map(|rows| {
            [
                rows.iter().map(|r| r.0.as_str()).collect(),
                rows.iter().map(|r| r.1.as_str()).collect(),
                rows.iter().map(|r| r.2.as_str()).collect(),
            ]
        })
        .collect();
    let start = Instant::now();
    for [t, w, l] in &columns {
        let votes = Votes::from_columns(t, w, l).expect("votes");
        std::hint::black_box(wawa(&votes));
    }
    let wawa_columns_s = start.elapsed().as_secs_f64();
    println!(
        "{{\"bench\":\"dawid-skene\",\"items\":{items},\"teachers\":{teachers},\"findings\":{findings},\"votes\":{},\"threads\":{threads},\"seconds\":{parallel:.3},\"serial_seconds\":{serial:.3},\"em_seconds\":{em_seconds:.3},\"em_iterations\":{iterations},\"one_coin_serial_seconds\":{one_coin:.3},\"wawa_serial_seconds\":{wawa_s:.3},\"wawa_compute_seconds\":{wawa_compute:.3},\"wawa_columns_serial_seconds\":{wawa_columns_s:.3},\"glad_serial_seconds\":{glad_s:.3},\"mace_serial_seconds\":{mace_s:.3}}}",
        tables.iter().map(Vec::len).sum::<usize>()
    );
}
