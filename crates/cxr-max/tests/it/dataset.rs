//! Readers and validation: every accepted layout, and every kind of bad input, which must be
//! reported with its file and line and never panic or vanish.

use std::io::Write;
use std::path::{Path, PathBuf};

use cxr_max::dataset::{Dataset, DatasetOptions};
use cxr_max::images::ImageLoaderConfig;
use cxr_max::sim::{SynthConfig, files, synthesize};
use cxr_max::{CxrError, FieldMapping, read_records};

fn fresh(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cxr-max-it-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn simulated(name: &str, studies: usize) -> PathBuf {
    let dir = fresh(name);
    synthesize(
        &dir,
        &SynthConfig {
            studies,
            image_size: 32,
            seed: 3,
            ..Default::default()
        },
    )
    .unwrap();
    dir
}

fn records_lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(files::RECORDS))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(dir: &Path, lines: &[String]) {
    std::fs::write(dir.join(files::RECORDS), lines.join("\n") + "\n").unwrap();
}

fn write_gz(path: &Path, text: &str) {
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap();
}

fn gunzip(path: &Path) -> String {
    let mut s = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()),
        &mut s,
    )
    .unwrap();
    s
}

#[test]
fn simulated_data_reads_back_through_the_real_readers() {
    let dir = simulated("roundtrip", 40);
    let (data, report) = Dataset::open(
        &dir,
        &DatasetOptions {
            decode_images: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(data.items.len(), 40);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.reconciles());
    assert_eq!(report.records.read, 40);
    assert_eq!(report.studies, 40);
    assert_eq!(report.images_found, 40);
    assert_eq!(report.trajectories_per_teacher.len(), 7);
    assert!(report.trajectories_per_teacher.values().all(|&n| n == 40));
    assert!(
        data.items
            .iter()
            .all(|i| i.labels.is_some() && i.split.is_some())
    );
    assert!(
        report.unknown_fields.is_empty(),
        "{:?}",
        report.unknown_fields
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn every_layout_is_accepted() {
    let dir = fresh("layouts");
    let mapping = FieldMapping::default();
    // List of {teacher, text} objects with the authors' aliases (sid, pid, diagnose).
    let list = dir.join("list.jsonl");
    std::fs::write(&list, r#"{"dicom_id":"a","sid":"50000001","pid":"p10000001","diagnose":"Edema","trajectories":[{"teacher":"GPT-5","trajectory":"Mild pulmonary edema."},{"model":"Grok-4","text":"No edema."}]}"#).unwrap();
    let r = read_records(&list, &mapping).unwrap();
    assert_eq!(r.samples[0].study_id, Some(50000001));
    assert_eq!(r.samples[0].subject_id, Some(10000001));
    assert_eq!(r.samples[0].trajectories.len(), 2);
    assert_eq!(r.samples[0].diagnose.as_deref(), Some("Edema"));
    // Wide: one column per teacher, in a JSON array.
    let wide = dir.join("wide.json");
    std::fs::write(&wide, r#"[{"dicom_id":"b","GPT-5":"Small effusion.","Moonshot":"As an AI..."},{"dicom_id":"c","GLM-4.5V":"No pneumothorax."}]"#).unwrap();
    let r = read_records(&wide, &mapping).unwrap();
    assert_eq!(
        (r.read, r.samples.len(), r.samples[0].trajectories.len()),
        (2, 2, 2)
    );
    // Long: one row per (image, teacher), CSV.
    let long = dir.join("long.csv");
    std::fs::write(&long, "dicom_id,study_id,model,response\nd,5,GPT-5,No effusion.\nd,5,Grok-4,Small effusion.\ne,6,GPT-5,\"Cardiomegaly, mild.\"\n").unwrap();
    let r = read_records(&long, &mapping).unwrap();
    assert_eq!((r.read, r.kept_records, r.samples.len()), (3, 3, 2));
    assert_eq!(r.samples[0].trajectories.len(), 2);
    // A layout nobody foresaw, named by a mapping file.
    let odd = dir.join("odd.jsonl");
    std::fs::write(
        &odd,
        r#"{"img":"f","answers_by_model":{"A":"x","B":"y"},"note":"n"}"#,
    )
    .unwrap();
    assert_eq!(read_records(&odd, &mapping).unwrap().rejected.len(), 1);
    let map_path = dir.join("mapping.toml");
    std::fs::write(
        &map_path,
        "dicom_id = [\"img\"]\ntrajectories = [\"answers_by_model\"]\n",
    )
    .unwrap();
    let mapping = FieldMapping::from_file(&map_path).unwrap();
    let r = read_records(&odd, &mapping).unwrap();
    assert_eq!(r.samples[0].trajectories.len(), 2);
    // Unknown fields are reported, not silently ignored.
    assert_eq!(r.unknown_fields.get("note"), Some(&1));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_records_are_quarantined_with_their_line() {
    let dir = simulated("badrecords", 12);
    let mut lines = records_lines(&dir);
    let truncated = lines[1][..lines[1].len() / 2].to_owned();
    lines[1] = truncated; // truncated JSON line
    lines[2] = lines[2].replace("\"dicom_id\"", "\"dicom_idx\""); // missing id
    lines[3] = r#"{"dicom_id":"zz","stuff":[1,2,3]}"#.to_owned(); // unknown trajectory shape
    let dup = lines[4].clone();
    lines.push(dup); // duplicate (image, teacher)
    write_lines(&dir, &lines);
    let quarantine = dir.join("quarantine.jsonl");
    let (data, report) = Dataset::open(&dir, &DatasetOptions::default()).unwrap();
    report.write_quarantine(&quarantine).unwrap();
    assert!(report.reconciles());
    assert_eq!(report.records.read, 13);
    assert_eq!(report.records.rejected, 4);
    // 12 images, 3 of whose records are bad; the duplicate line adds no image.
    assert_eq!(data.items.len(), 9);
    let by_line: Vec<(usize, &str)> = report
        .problems
        .iter()
        .map(|p| (p.source.line, p.reason.as_str()))
        .collect();
    assert!(
        by_line
            .iter()
            .any(|(l, r)| *l == 2 && r.contains("invalid JSON")),
        "{by_line:?}"
    );
    assert!(
        by_line
            .iter()
            .any(|(l, r)| *l == 3 && r.contains("missing image id")),
        "{by_line:?}"
    );
    assert!(
        by_line
            .iter()
            .any(|(l, r)| *l == 4 && r.contains("no trajectories")),
        "{by_line:?}"
    );
    assert!(
        by_line
            .iter()
            .any(|(l, r)| *l == 13 && r.contains("duplicate trajectory")),
        "{by_line:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&quarantine)
            .unwrap()
            .lines()
            .count(),
        4
    );
    // Strict mode stops at the first problem with the file and line.
    match Dataset::open(
        &dir,
        &DatasetOptions {
            strict: true,
            ..Default::default()
        },
    )
    .unwrap_err()
    {
        CxrError::Record { line, .. } => assert_eq!(line, 2),
        e => panic!("unexpected {e}"),
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_tables_are_reported() {
    let dir = simulated("badtables", 10);
    let labels = dir.join(files::CHEXPERT);
    let text = gunzip(&labels);
    let mut rows: Vec<String> = text.lines().map(str::to_owned).collect();
    rows[3] = rows[3]
        .replacen(",1.0", ",2.0", 1)
        .replacen(",,", ",2.0,", 1); // label outside the set
    write_gz(&labels, &(rows.join("\n") + "\n"));
    let (_, report) = Dataset::open(&dir, &DatasetOptions::default()).unwrap();
    let p = report
        .problems
        .iter()
        .find(|p| p.kind == "table")
        .expect("a table problem");
    assert_eq!(p.source.line, 4);
    assert!(p.reason.contains("`2.0` is not one of"), "{}", p.reason);
    assert_eq!(report.labels.rejected, 1);
    assert!(report.reconciles());
    // Wrong header.
    write_gz(&labels, "subject,study_id,Edema\n1,2,1.0\n");
    let err = Dataset::open(&dir, &DatasetOptions::default()).unwrap_err();
    assert!(
        matches!(err, CxrError::Schema { .. })
            && err.to_string().contains("missing column(s) subject_id"),
        "{err}"
    );
    // Truncated gzip.
    write_gz(&labels, &text);
    let bytes = std::fs::read(&labels).unwrap();
    std::fs::write(&labels, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let err = Dataset::open(&dir, &DatasetOptions::default()).unwrap_err();
    assert!(err.to_string().contains(files::CHEXPERT), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_images_are_reported() {
    let dir = simulated("badimages", 8);
    let (data, _) = Dataset::open(&dir, &DatasetOptions::default()).unwrap();
    let paths: Vec<PathBuf> = data.items.iter().map(|i| i.image.clone()).collect();
    std::fs::remove_file(&paths[0]).unwrap(); // missing
    std::fs::write(&paths[1], b"").unwrap(); // zero bytes
    std::fs::write(&paths[2], b"\xFF\xD8\xFF\xE0 this is not really a jpeg").unwrap(); // corrupt
    image::GrayImage::new(400, 300)
        .save_with_format(&paths[3], image::ImageFormat::Jpeg)
        .unwrap(); // too large for the limit below
    let options = DatasetOptions {
        decode_images: true,
        images: ImageLoaderConfig {
            max_pixels: 100_000,
            ..Default::default()
        },
        ..Default::default()
    };
    let (data, report) = Dataset::open(&dir, &options).unwrap();
    assert_eq!(data.items.len(), 4);
    assert_eq!((report.images_missing, report.images_unusable), (1, 3));
    assert!(report.reconciles());
    let reasons: Vec<&str> = report.problems.iter().map(|p| p.reason.as_str()).collect();
    assert!(
        reasons.iter().any(|r| r.contains("not found")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("0 bytes")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("cannot")), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("exceeds the limit")),
        "{reasons:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[cfg(feature = "burn")]
#[test]
fn burn_dataset_and_batcher() {
    use burn::backend::NdArray;
    use burn::data::dataloader::batcher::Batcher;
    use burn::data::dataset::Dataset as _;
    use cxr_max::burn_data::{CxrBatcher, CxrDataset};
    use cxr_max::images::{ImageLoader, ImageLoaderConfig};

    let dir = simulated("burn", 6);
    let (data, _) = Dataset::open(&dir, &DatasetOptions::default()).unwrap();
    let ds = CxrDataset::new(
        data.items,
        ImageLoader::new(ImageLoaderConfig {
            size: 24,
            ..Default::default()
        }),
    );
    assert_eq!(ds.len(), 6);
    let items: Vec<_> = (0..4).map(|i| ds.get(i).unwrap()).collect();
    assert_eq!(items[0].trajectories.len(), 7);
    let batch: cxr_max::burn_data::CxrBatch<NdArray> = CxrBatcher.batch(items, &Default::default());
    assert_eq!(batch.images.dims(), [4, 1, 24, 24]);
    let mean: f32 = batch.images.mean().into_scalar();
    assert!(mean > 0.05 && mean < 0.9, "{mean}");
    assert!(ds.get(6).is_none());
    std::fs::remove_dir_all(&dir).ok();
}

/// Parquet records (feature `parquet`): `fixtures/records.parquet` was written by pandas +
/// pyarrow from `fixtures/records.jsonl` (`fixtures/make_parquet.py`), the list layout as a
/// list-of-struct column; it must read exactly like the JSON Lines it came from.
#[cfg(feature = "parquet")]
#[test]
fn parquet_records_read_like_jsonl() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let a = read_records(&fixtures.join("records.jsonl"), &FieldMapping::default()).unwrap();
    let b = read_records(&fixtures.join("records.parquet"), &FieldMapping::default()).unwrap();
    assert_eq!(b.rejected, vec![]);
    assert_eq!(a.samples.len(), 5);
    assert_eq!(a.samples.len(), b.samples.len());
    for (x, y) in a.samples.iter().zip(&b.samples) {
        assert_eq!(
            (&x.dicom_id, x.study_id, &x.trajectories),
            (&y.dicom_id, y.study_id, &y.trajectories)
        );
    }
}

/// 16-bit grayscale and 8-bit RGB PNGs load as the same normalised grayscale; `crop` keeps the
/// centre and `pad` keeps everything.
#[test]
fn sixteen_bit_rgb_and_fit_modes() {
    use cxr_max::images::{Fit, ImageLoader, ImageLoaderConfig};
    let dir = fresh("bitdepth");
    // A 20 × 10 picture: left half at 25 % grey, right half at 75 % grey.
    let g16 = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(20, 10, |x, _| {
        image::Luma([if x < 10 { 16384 } else { 49151 }])
    });
    let rgb = image::RgbImage::from_fn(20, 10, |x, _| {
        if x < 10 {
            image::Rgb([64, 64, 64])
        } else {
            image::Rgb([191, 191, 191])
        }
    });
    g16.save(dir.join("g16.png")).unwrap();
    rgb.save(dir.join("rgb.png")).unwrap();
    let pad = ImageLoader::new(ImageLoaderConfig {
        size: 10,
        ..Default::default()
    });
    let a = pad.load(&dir.join("g16.png")).unwrap();
    let b = pad.load(&dir.join("rgb.png")).unwrap();
    // Padded: rows 0–1 and 8–9 are black, the picture fills rows 2–7 (20 × 10 → 10 × 5, centred).
    assert_eq!(a.pixels[0], 0.0);
    assert!(
        (a.pixels[5 * 10 + 1] - 0.25).abs() < 0.01,
        "{}",
        a.pixels[5 * 10 + 1]
    );
    assert!((a.pixels[5 * 10 + 8] - 0.75).abs() < 0.01);
    for (x, y) in a.pixels.iter().zip(&b.pixels) {
        assert!((x - y).abs() < 0.01, "16-bit and RGB agree: {x} vs {y}");
    }
    let crop = ImageLoader::new(ImageLoaderConfig {
        size: 10,
        fit: Fit::Crop,
        ..Default::default()
    });
    let c = crop.load(&dir.join("g16.png")).unwrap();
    // Cropped: 20 × 10 → 20 × 10 at scale 1, centre 10 columns: left half dark, right half light, no padding.
    assert!(c.pixels.iter().all(|&v| v > 0.2));
    assert!((c.pixels[0] - 0.25).abs() < 0.01 && (c.pixels[9] - 0.75).abs() < 0.01);
    std::fs::remove_dir_all(&dir).ok();
}
