//! `cargo xtask bench drift`: throughput of each detector over a 1e6-value stream, printed as
//! one JSON object (values per second). The stream has a level shift every 100,000 values and
//! Gaussian-like noise; DDM gets a 0/1 error stream with changing error rate.
//! `--n N` sets the length; `--write-streams DIR` writes both streams for
//! `benches/river_detectors.py --streams DIR`, which times river on the same values.

use std::hint::black_box;
use std::time::Instant;

use rand::{Rng, SeedableRng};

use apo_drift::DetectorConfig;

fn main() {
    let n: usize = std::env::args()
        .skip_while(|a| a != "--n")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let mut rng = rand_xoshiro::SplitMix64::seed_from_u64(0x2545F4914F6CDD1D);
    let mut uniform = move || rng.random::<f64>();
    let values: Vec<f64> = (0..n)
        .map(|i| {
            let level = ((i / 100_000) % 3) as f64 * 0.5;
            level + (uniform() + uniform() + uniform() - 1.5) * 0.5
        })
        .collect();
    let errors: Vec<f64> = (0..n)
        .map(|i| {
            let rate = if (i / 100_000) % 2 == 0 { 0.1 } else { 0.3 };
            f64::from(uniform() < rate)
        })
        .collect();
    // `--write-streams DIR` saves both streams so that river can be timed on the same values.
    let args: Vec<String> = std::env::args().collect();
    if let Some(dir) = args
        .iter()
        .position(|a| a == "--write-streams")
        .and_then(|i| args.get(i + 1))
    {
        let write = |name: &str, v: &[f64]| {
            let text: String = v.iter().map(|x| format!("{x:?}\n")).collect();
            std::fs::write(std::path::Path::new(dir).join(name), text)
                .expect("stream file is writable");
        };
        write("values.txt", &values);
        write("errors.txt", &errors);
    }
    let mut fields = Vec::new();
    for name in [
        "adwin",
        "page-hinkley",
        "ddm",
        "kswin",
        "eddm",
        "fhddm",
        "hddm-a",
        "hddm-w",
    ] {
        let binary = matches!(name, "ddm" | "eddm" | "fhddm" | "hddm-a" | "hddm-w");
        let stream = if binary { &errors } else { &values };
        let mut detector = DetectorConfig::default_for(name)
            .expect("known detector")
            .build()
            .expect("defaults are valid");
        let start = Instant::now();
        let hits = detector.detections(stream).expect("finite stream");
        let secs = start.elapsed().as_secs_f64();
        black_box(&hits);
        fields.push(format!(
            "\"{name}\":{{\"values_per_second\":{:.0},\"seconds\":{secs:.4},\"detections\":{}}}",
            n as f64 / secs,
            hits.len()
        ));
    }
    println!(
        "{{\"bench\":\"drift-detectors\",\"n\":{n},{}}}",
        fields.join(",")
    );
}
