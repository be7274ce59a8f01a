//! The charts: PNG and SVG written, sized to their labels, every label in full.

use std::path::{Path, PathBuf};

use apo_cli::plot::{
    PALETTE, PlotError, Titles, bars, events, finite_runs, heat, heatmap, lines, text_width,
    y_range,
};
use plotters::style::RGBColor;

/// The size of axis titles and category labels, in pixels.
const LABEL_PX: f64 = 15.0;
/// A heatmap cell without a value.
const MISSING: RGBColor = RGBColor(205, 205, 205);
/// Change-point markers (the palette's red).
const EVENT: RGBColor = PALETTE[3];

/// A fresh folder per test.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("apo-plot-{}-{name}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn png(path: &Path) -> image::RgbImage {
    image::open(path).unwrap().to_rgb8()
}

fn has_pixel(img: &image::RgbImage, c: RGBColor) -> bool {
    img.pixels().any(|p| p.0 == [c.0, c.1, c.2])
}

fn svg(path: &Path) -> String {
    std::fs::read_to_string(path.with_extension("svg")).unwrap()
}

/// The `<text>` elements' contents of an SVG, in order.
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            Some(
                t.split_once('>')?
                    .1
                    .split_once("</text>")?
                    .0
                    .trim()
                    .to_owned(),
            )
        })
        .collect()
}

const LONG: [&str; 3] = [
    "enlarged cardiomediastinum",
    "pleural effusion",
    "support devices",
];

#[test]
fn heatmap_writes_png_and_svg_with_full_labels_and_cell_values() {
    let d = dir("heatmap");
    let path = d.join("heat.png");
    let rows = strings(&["Gemini-2.5", "GPT-5"]);
    let cols = strings(&LONG);
    let values = vec![vec![0.0, 0.5, 1.0], vec![0.25, f64::NAN, 0.126]];
    heatmap(
        Titles::new("disagreement with consensus")
            .x("finding")
            .y("teacher"),
        &rows,
        &cols,
        &values,
        &path,
    )
    .unwrap();
    let img = png(&path);
    // The column labels are wider than a cell: they stand upright below the cells, which makes
    // the chart taller than the label's width plus two cell rows.
    assert!(img.height() as i32 > 2 * 38 + text_width(LONG[0], LABEL_PX));
    assert!(img.width() >= 320);
    // A full cell (v = 1) is dark red; the NaN cell is grey.
    assert!(has_pixel(&img, heat(1.0)));
    assert!(has_pixel(&img, MISSING));
    let texts = svg_texts(&svg(&path));
    for t in rows.iter().chain(&cols) {
        assert!(texts.contains(t), "{t} in {texts:?}");
    }
    for t in [
        "disagreement with consensus",
        "finding",
        "teacher",
        "0",
        "50",
        "100",
        "25",
        "n/a",
        "13",
    ] {
        assert!(texts.iter().any(|x| x == t), "{t} in {texts:?}");
    }
    let svg_text = svg(&path);
    assert!(svg_text.contains(r#"width="#), "{}", &svg_text[..200]);
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn heatmap_with_short_labels_keeps_them_level_and_the_png_matches_the_layout() {
    let d = dir("heatmap-short");
    let path = d.join("heat.png");
    let rows = strings(&["a", "b", "c"]);
    let cols = strings(&["x", "y"]);
    let values = vec![vec![0.1, 0.2], vec![0.3, 0.4], vec![0.5, 0.6]];
    heatmap("t", &rows, &cols, &values, &path).unwrap();
    let img = png(&path);
    // top 60, three 38 px rows, then 8 + one line of labels + 20.
    assert_eq!(img.height(), 60 + 3 * 38 + 8 + LABEL_PX as u32 + 20);
    assert_eq!(img.width(), 320);
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn shape_errors_name_the_file_and_write_nothing() {
    let d = dir("shape");
    let path = d.join("bad.png");
    let rows = strings(&["a", "b"]);
    let cols = strings(&["x"]);
    let e = heatmap("t", &rows, &cols, &[vec![0.1]], &path).unwrap_err();
    assert!(matches!(e, PlotError::Shape { .. }), "{e}");
    assert!(e.to_string().contains("bad.png"), "{e}");
    assert!(
        e.to_string().contains("1 rows of values for 2 row labels"),
        "{e}"
    );
    let e = heatmap("t", &rows, &cols, &[vec![0.1], vec![0.2, 0.3]], &path).unwrap_err();
    assert!(
        e.to_string()
            .contains("row 1 (b) has 2 values for 1 columns"),
        "{e}"
    );
    let e = lines("t", "x", &rows, &[vec![1.0]], &path).unwrap_err();
    assert!(e.to_string().contains("2 names for 1 series"), "{e}");
    let e = events("t", &rows, &[vec![]], &[], 10, &path).unwrap_err();
    assert!(e.to_string().contains("2 names, 1 rows of events"), "{e}");
    let e = bars("t", &cols, &rows, &[vec![0.5], vec![]], &path).unwrap_err();
    assert!(
        e.to_string()
            .contains("series 1 (b) has 0 values for 1 categories"),
        "{e}"
    );
    // Through `?` into the commands' `String` errors.
    let s: String = e.into();
    assert!(s.starts_with(&path.display().to_string()), "{s}");
    assert!(!path.exists() && !path.with_extension("svg").exists());
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn lines_draw_every_series_with_a_legend_and_axis_titles() {
    let d = dir("lines");
    let path = d.join("curves_loss.png");
    let names = strings(&["sft", "apo (pl)", "pairwise"]);
    let series = vec![
        vec![3.0, 2.5, 2.0, 1.5],
        vec![f64::NAN, 1.0, 0.8, f64::NAN],
        vec![0.5],
    ];
    lines(
        Titles::new("training loss").y("loss"),
        "step",
        &names,
        &series,
        &path,
    )
    .unwrap();
    let img = png(&path);
    assert_eq!((img.width(), img.height()), (900, 520));
    // Each series' colour appears (as a line, or a dot for a lone value).
    for c in &PALETTE[..3] {
        assert!(has_pixel(&img, *c), "{c:?}");
    }
    assert!(!has_pixel(&img, PALETTE[3]));
    let texts = svg_texts(&svg(&path));
    for t in [
        "training loss",
        "step",
        "loss",
        "sft",
        "apo (pl)",
        "pairwise",
    ] {
        assert!(texts.iter().any(|x| x == t), "{t} in {texts:?}");
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn finite_runs_split_at_gaps() {
    let nan = f64::NAN;
    assert_eq!(
        finite_runs(&[nan, 1.0, 2.0, nan, nan, 3.0, f64::INFINITY, 4.0, 5.0]),
        vec![(1, vec![1.0, 2.0]), (5, vec![3.0]), (7, vec![4.0, 5.0])]
    );
    assert!(finite_runs(&[nan, nan]).is_empty());
}

#[test]
fn y_range_starts_at_zero_or_the_minimum_with_headroom() {
    assert_eq!(y_range(&[vec![1.0, 2.0], vec![f64::NAN]]), (0.0, 2.1));
    assert_eq!(y_range(&[vec![-1.0, 1.0]]), (-1.0, 1.1));
    assert_eq!(y_range(&[vec![f64::NAN]]), (0.0, 1.0));
    assert_eq!(y_range(&[]), (0.0, 1.0));
}

#[test]
fn events_mark_change_points_and_injected_drift() {
    let d = dir("events");
    let path = d.join("change_points.png");
    let names = strings(&[
        "Gemini-2.5 pneumothorax",
        "Grok-4 pleural effusion",
        "GPT-5 edema",
    ]);
    let events_at = vec![vec![480, 520], vec![610], vec![]];
    let expected = vec![vec![500], vec![600]];
    events(
        "change points of agreement with consensus",
        &names,
        &events_at,
        &expected,
        1000,
        &path,
    )
    .unwrap();
    let img = png(&path);
    let widest = names.iter().map(|n| text_width(n, LABEL_PX)).max().unwrap();
    let left = 16 + widest + 12;
    // 56 px for the title, a 24 px row per name, 64 px for the axis below.
    assert_eq!(img.height() as i32, 56 + 3 * 24 + 64);
    // The labels, a 760 px plot and the legend.
    assert!(img.width() as i32 > left + 760);
    assert!(has_pixel(&img, EVENT));
    let texts = svg_texts(&svg(&path));
    for t in names
        .iter()
        .map(String::as_str)
        .chain(["change point", "injected drift"])
        .chain(["item (position in the stream)", "0", "1000"])
    {
        assert!(texts.iter().any(|x| x == t), "{t} in {texts:?}");
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn bars_label_every_category_in_full_and_write_the_values() {
    let d = dir("bars");
    let path = d.join("accuracy.png");
    let categories: Vec<String> = LONG
        .iter()
        .map(|s| (*s).to_owned())
        .chain(["mean".to_owned()])
        .collect();
    let names = strings(&["apo", "pairwise", "sft"]);
    let values = vec![
        vec![0.9, 0.8, 0.7, 0.8],
        vec![0.85, 0.75, f64::NAN, 0.8],
        vec![0.5, 0.25, 0.126, 0.29],
    ];
    bars(
        Titles::new("accuracy on the test split").x("accuracy"),
        &categories,
        &names,
        &values,
        &path,
    )
    .unwrap();
    let img = png(&path);
    // 56 px for the title, three 18 px bars and a 14 px gap per category, 60 px below.
    assert_eq!(img.height() as i32, 56 + 4 * (3 * 18 + 14) + 60);
    // The labels and a 720 px plot.
    assert!(img.width() as i32 > text_width(LONG[0], LABEL_PX) + 720);
    for c in &PALETTE[..3] {
        assert!(has_pixel(&img, *c), "{c:?}");
    }
    let texts = svg_texts(&svg(&path));
    for t in categories
        .iter()
        .chain(&names)
        .map(String::as_str)
        .chain(["accuracy", "0.90", "0.13", "n/a", "0.5", "1.0"])
    {
        assert!(texts.iter().any(|x| x == t), "{t} in {texts:?}");
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn titles_from_str_have_no_axis_titles() {
    let t: Titles<'_> = "x".into();
    assert_eq!(t, Titles::new("x"));
    assert_eq!(Titles::new("a").x("b").y("c").x, Some("b"));
    assert_eq!(heat(0.0), RGBColor(255, 255, 255));
    assert_eq!(heat(2.0), RGBColor(165, 20, 30));
}
