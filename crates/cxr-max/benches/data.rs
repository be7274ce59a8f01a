//! `cargo xtask bench data`: prints one JSON object with
//! - the time to read a CXR-MAX-sized records file (default 24,426 studies × 7 teachers =
//!   170,982 trajectories, simulated) and join it with the label, metadata and split tables;
//! - image decode + resize throughput (default 1,000 simulated 512 px JPEGs to 128 px).
//!
//! Options: `--studies N`, `--images N`, `--keep DIR` (write the data there and keep it, e.g.
//! for `benches/pandas_join.py`).

use std::time::Instant;

use cxr_max::dataset::{Dataset, DatasetOptions};
use cxr_max::images::{ImageLoader, ImageLoaderConfig};
use cxr_max::sim::{SynthConfig, synthesize};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() {
    let studies: usize = arg("--studies")
        .and_then(|v| v.parse().ok())
        .unwrap_or(24_426);
    let n_images: usize = arg("--images").and_then(|v| v.parse().ok()).unwrap_or(1000);
    let keep = arg("--keep").map(std::path::PathBuf::from);
    let dir = keep.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("cxr-max-bench-{}", std::process::id()))
    });

    let t = Instant::now();
    synthesize(
        &dir,
        &SynthConfig {
            studies,
            images: false,
            ..Default::default()
        },
    )
    .expect("synthesize records");
    let synth_s = t.elapsed().as_secs_f64();
    let records_bytes = std::fs::metadata(dir.join(cxr_max::sim::files::RECORDS))
        .map(|m| m.len())
        .unwrap_or(0);

    // Read + join. Images are absent here, so every sample is reported missing; the join of
    // records with the three tables is complete before the image lookup.
    // The records are parsed on all cores while the tables are read on their own threads
    // (what `Dataset::open` does); then every sample is joined with its labels and split.
    // Five repetitions: the first runs on memory the process has not touched yet.
    let records_file = dir.join(cxr_max::sim::files::RECORDS);
    let mut runs = Vec::new();
    let mut joined = 0usize;
    let mut trajectories = 0usize;
    for _ in 0..5 {
        let t = Instant::now();
        let sources = cxr_max::dataset::read_sources(&dir, &records_file, &Default::default())
            .expect("records and tables");
        let read_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let labels = sources.labels.as_ref().expect("labels");
        let meta = sources.metadata.as_ref().expect("metadata");
        let split = sources.split.as_ref().expect("split");
        joined = 0;
        for s in &sources.records.samples {
            let study = s
                .study_id
                .or_else(|| meta.rows.get(&s.dicom_id).map(|m| m.study_id));
            if study.and_then(|st| labels.rows.get(&st)).is_some()
                && split.rows.contains_key(&s.dicom_id)
            {
                joined += 1;
            }
        }
        runs.push((read_s, t.elapsed().as_secs_f64()));
        trajectories = sources
            .records
            .samples
            .iter()
            .map(|s| s.trajectories.len())
            .sum();
    }
    let (first_read_s, first_join_s) = runs[0];
    let mut totals: Vec<f64> = runs.iter().map(|(r, j)| r + j).collect();
    totals.sort_by(f64::total_cmp);
    let median_s = totals[totals.len() / 2];

    // Full Dataset::open (records + tables + image lookup) for reference.
    let t = Instant::now();
    let (_, report) = Dataset::open(&dir, &DatasetOptions::default()).expect("open");
    let open_s = t.elapsed().as_secs_f64();

    // Images: simulate a smaller set at 512 px and decode + resize to 128 px.
    let img_dir = dir.join("images-bench");
    synthesize(
        &img_dir,
        &SynthConfig {
            studies: n_images,
            image_size: 512,
            ..Default::default()
        },
    )
    .expect("synthesize images");
    let (items, _) = Dataset::open(&img_dir, &DatasetOptions::default()).expect("open images");
    let paths: Vec<_> = items.items.iter().map(|i| i.image.clone()).collect();
    let loader = ImageLoader::new(ImageLoaderConfig {
        size: 128,
        ..Default::default()
    });
    let t = Instant::now();
    let ok = loader
        .load_many(&paths)
        .iter()
        .filter(|r| r.is_ok())
        .count();
    let img_s = t.elapsed().as_secs_f64();

    println!(
        "{{\"bench\":\"data\",\"studies\":{studies},\"trajectories\":{trajectories},\"records_mb\":{:.1},\"synthesize_records_s\":{synth_s:.2},\"first_read_records_and_tables_s\":{first_read_s:.3},\"first_join_s\":{first_join_s:.3},\"first_read_and_join_s\":{:.3},\"median_read_and_join_s\":{median_s:.3},\"runs\":{totals:?},\"joined\":{joined},\"dataset_open_s\":{open_s:.3},\"dataset_problems\":{},\"images\":{ok},\"image_px\":512,\"target_px\":128,\"decode_resize_s\":{img_s:.3},\"images_per_s\":{:.0}}}",
        records_bytes as f64 / 1e6,
        first_read_s + first_join_s,
        report.problems.len(),
        ok as f64 / img_s
    );
    if keep.is_none() {
        std::fs::remove_dir_all(&dir).ok();
    }
}
