//! Charts for reports a person reads at a glance: a heatmap, line charts, event strips and
//! grouped bars, drawn with `plotters`. Every chart is written as a PNG at the path given and
//! as an SVG next to it (same basename, `.svg`). Text is set in DejaVu Sans, embedded in the
//! binary (`assets/fonts/`); charts are sized to fit their labels, which are never cut short.

mod raster;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use Swatch::{Box, Dashed};
use ab_glyph::FontRef;
use image::{ExtendedColorType, ImageEncoder, codecs::png::PngEncoder};
use plotters::coord::{Shift, types::RangedCoordf64};
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontTransform, register_font};
use raster::Canvas;

/// DejaVu Sans 2.37 (Bitstream Vera licence, see `assets/fonts/LICENSE-DejaVu.txt`).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Text sizes in pixels: title; axis titles and labels; ticks; values next to bars.
const TITLE_PX: f64 = 22.0;
const LABEL_PX: f64 = 15.0;
const TICK_PX: f64 = 13.0;
const VALUE_PX: f64 = 12.0;

const INK: RGBColor = RGBColor(30, 30, 30);
const GRID: RGBColor = RGBColor(222, 222, 222);
const MISSING: RGBColor = RGBColor(205, 205, 205);
const STRIPE: RGBColor = RGBColor(246, 246, 246);

/// Distinct colours for series: matplotlib's `tab10`, then black, gold, light blue and green.
pub const PALETTE: [RGBColor; 14] = {
    const HEX: [u32; 14] = [
        0x1f77b4, 0xff7f0e, 0x2ca02c, 0xd62728, 0x9467bd, 0x8c564b, 0xe377c2, 0x7f7f7f, 0xbcbd22,
        0x17becf, 0x000000, 0xffd700, 0xaec7e8, 0x98df8a,
    ];
    let (mut p, mut i) = ([RGBColor(0, 0, 0); 14], 0);
    while i < 14 {
        p[i] = RGBColor((HEX[i] >> 16) as u8, (HEX[i] >> 8) as u8, HEX[i] as u8);
        i += 1;
    }
    p
};

/// A chart could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The embedded font could not be parsed (a corrupt build).
    #[error("the embedded chart font (DejaVu Sans) could not be read")]
    Font,
    /// The data do not fit together (e.g. a row of values longer than the column labels).
    #[error("{}: {what}", path.display())]
    Shape {
        /// The chart's file.
        path: PathBuf,
        /// What does not match.
        what: String,
    },
    /// The PNG or the SVG could not be drawn, encoded or written.
    #[error("{}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The backend's, the encoder's or the file system's error.
        source: io::Error,
    },
}

impl From<PlotError> for String {
    fn from(e: PlotError) -> Self {
        e.to_string()
    }
}

/// A chart's title and, optionally, its axis titles; a plain `&str` is a title alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Titles<'a> {
    /// The title above the chart.
    pub title: &'a str,
    /// The horizontal axis' title.
    pub x: Option<&'a str>,
    /// The vertical axis' title.
    pub y: Option<&'a str>,
}

impl<'a> Titles<'a> {
    /// A title without axis titles.
    pub fn new(title: &'a str) -> Self {
        Titles {
            title,
            ..Self::default()
        }
    }

    /// With a horizontal axis title.
    #[must_use]
    pub fn x(self, x: &'a str) -> Self {
        Titles { x: Some(x), ..self }
    }

    /// With a vertical axis title.
    #[must_use]
    pub fn y(self, y: &'a str) -> Self {
        Titles { y: Some(y), ..self }
    }
}

impl<'a> From<&'a str> for Titles<'a> {
    fn from(title: &'a str) -> Self {
        Titles::new(title)
    }
}

/// Colour for a value in [0, 1]: white → dark red.
pub fn heat(v: f64) -> RGBColor {
    let c = |k: f64| (255.0 - k * v.clamp(0.0, 1.0)) as u8;
    RGBColor(c(90.0), c(235.0), c(225.0))
}

/// The embedded font, parsed and registered with plotters (which measures text with it and
/// names its family in SVG) once per process.
fn font() -> Result<&'static FontRef<'static>, PlotError> {
    static PARSED: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    let init = || {
        register_font("sans-serif", FontStyle::Normal, FONT).ok()?;
        FontRef::try_from_slice(FONT).ok()
    };
    PARSED.get_or_init(init).as_ref().ok_or(PlotError::Font)
}

/// Text `px` pixels high, its box placed at the position given by `pos`.
fn st(px: f64, pos: Pos) -> TextStyle<'static> {
    TextStyle::from(FontDesc::new(FontFamily::SansSerif, px, FontStyle::Normal)).pos(pos)
}

/// The width in pixels of `s` set at `px` pixels in the embedded font.
pub fn text_width(s: &str, px: f64) -> i32 {
    let w = |_| st(px, LEFT).font.box_size(s).map_or(0, |(w, _)| w as i32);
    font().map_or(0, w)
}

fn widest<S: AsRef<str>>(labels: &[S]) -> i32 {
    let w = labels.iter().map(|l| text_width(l.as_ref(), LABEL_PX));
    w.max().unwrap_or(0)
}

const fn pos(h_pos: HPos, v_pos: VPos) -> Pos {
    Pos { h_pos, v_pos }
}
const LEFT: Pos = pos(HPos::Left, VPos::Center);
const RIGHT: Pos = pos(HPos::Right, VPos::Center);
const MIDDLE: Pos = pos(HPos::Center, VPos::Center);
const ABOVE: Pos = pos(HPos::Center, VPos::Top);
const BELOW: Pos = pos(HPos::Center, VPos::Bottom);
const UP: FontTransform = FontTransform::Rotate270;

type Area<'a> = DrawingArea<Canvas<'a>, Shift>;
type Drawn = Result<(), DrawingAreaErrorKind<std::io::Error>>;

fn text(area: &Area<'_>, s: &str, at: (i32, i32), style: TextStyle<'_>) -> Drawn {
    area.draw(&Text::new(s, at, style))
}

fn fill(area: &Area<'_>, c: RGBColor, corners: [(i32, i32); 2]) -> Drawn {
    area.draw(&Rectangle::new(corners, c.filled()))
}

/// Draws a `size` chart (white, `title` at the top, then `draw`) into a PNG at `path` and an
/// SVG next to it.
fn save(path: &Path, size: (i32, i32), title: &str, draw: impl Fn(&Area) -> Drawn) -> Rslt {
    let (font, (w, h)) = (font()?, (size.0 as u32, size.1 as u32));
    let (mut pixels, mut svg) = (vec![255u8; w as usize * h as usize * 3], String::new());
    let canvases = [
        Canvas::Png(BitMapBackend::with_buffer(&mut pixels, (w, h)), font),
        Canvas::Svg(SVGBackend::with_string(&mut svg, (w, h))),
    ];
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |source| PlotError::Write { path, source }
    };
    for root in canvases.map(IntoDrawingArea::into_drawing_area) {
        let title = |()| text(&root, title, (size.0 / 2, 14), st(TITLE_PX, ABOVE));
        let drawn = root.fill(&WHITE).and_then(title).and_then(|()| draw(&root));
        let drawn = drawn.and_then(|()| root.present());
        let message = |e| io::Error::other(format!("drawing the chart: {e}"));
        drawn.map_err(message).map_err(failed(path))?;
    }
    let mut png = Vec::new();
    let encoder = PngEncoder::new(&mut png);
    let encoded = encoder.write_image(&pixels, w, h, ExtendedColorType::Rgb8);
    encoded.map_err(io::Error::other).map_err(failed(path))?;
    std::fs::write(path, png).map_err(failed(path))?;
    let svg_path = path.with_extension("svg");
    std::fs::write(&svg_path, svg).map_err(failed(&svg_path))
}

type Rslt = Result<(), PlotError>;

fn shape(path: &Path, what: String) -> Rslt {
    let path = path.to_owned();
    Err(PlotError::Shape { path, what })
}

/// That `values` are one row of `n` values per name; `words` name the rows, a row and the
/// columns in the error.
fn check(path: &Path, values: &[Vec<f64>], names: &[String], n: usize, words: &str) -> Rslt {
    let [rows, row, cols] = [0, 1, 2].map(|i| words.split(',').nth(i).unwrap_or(""));
    if values.len() != names.len() {
        let what = format!("{} rows of values for {} {rows}", values.len(), names.len());
        return shape(path, what);
    }
    let Some(i) = values.iter().position(|r| r.len() != n) else {
        return Ok(());
    };
    let (name, got) = (&names[i], values[i].len());
    let what = format!("{row} {i} ({name}) has {got} values for {n} {cols}");
    shape(path, what)
}

/// A vertical axis title, read bottom to top, centred on height `y`.
fn y_title(area: &Area<'_>, title: Option<&str>, y: i32) -> Drawn {
    let style = st(LABEL_PX, ABOVE).transform(UP);
    title.map_or(Ok(()), |t| text(area, t, (10, y), style))
}

/// A dashed line (expected events).
fn dashed(area: &Area<'_>, ends: [(i32, i32); 2]) -> Drawn {
    area.draw(&DashedPathElement::new(ends, 3, 3, INK.stroke_width(2)))
}

/// A legend entry's swatch.
#[derive(Clone, Copy)]
enum Swatch {
    Line(RGBColor),
    Box(RGBColor),
    Dashed,
}

/// A legend entry per name, in the series' colours.
fn swatches<'n>(names: &'n [String], swatch: fn(RGBColor) -> Swatch) -> Vec<(&'n str, Swatch)> {
    let entry = |(k, n): (usize, &'n String)| (n.as_str(), swatch(PALETTE[k % PALETTE.len()]));
    names.iter().enumerate().map(entry).collect()
}

/// A heatmap of `values[row][col]` in [0, 1]: rows labelled on the left, columns below, each
/// cell coloured white → dark red and marked with its value in percent (a non-finite value is
/// a grey `n/a` cell); a colour scale on the right.
///
/// # Errors
/// [`PlotError::Shape`] when `values` is not `rows.len()` rows of `cols.len()` values; the
/// drawing, encoding or writing error otherwise.
pub fn heatmap<'a>(
    titles: impl Into<Titles<'a>>,
    rows: &[String],
    cols: &[String],
    values: &[Vec<f64>],
    path: &Path,
) -> Result<(), PlotError> {
    let t = titles.into();
    check(path, values, rows, cols.len(), "row labels,row,columns")?;
    let left = 30 + if t.y.is_some() { 28 } else { 0 } + widest(rows);
    // Column labels wider than a cell stand upright, read bottom to top.
    let (col_w, label_h) = (widest(cols), LABEL_PX as i32);
    let upright = col_w > 84;
    let (w, labels_h) = if upright {
        (52, col_w)
    } else {
        ((col_w + 14).max(52), label_h)
    };
    let (top, h) = (60, 38);
    let bottom = top + h * rows.len() as i32;
    let right = left + w * cols.len() as i32;
    let height = bottom + 28 + labels_h + if t.x.is_some() { 32 } else { 0 };
    let width = (right + 110).max(text_width(t.title, TITLE_PX) + 40);
    save(path, (width.max(320), height), t.title, |root| {
        for (i, (row, vals)) in rows.iter().zip(values).enumerate() {
            let y = top + i as i32 * h;
            text(root, row, (left - 10, y + h / 2), st(LABEL_PX, RIGHT))?;
            for (j, &v) in vals.iter().enumerate() {
                let x = left + j as i32 * w;
                let ink = if v > 0.55 { WHITE } else { INK };
                let (colour, value) = match v.is_finite() {
                    false => (MISSING, "n/a".to_owned()),
                    true => (heat(v), format!("{:.0}", v * 100.0)),
                };
                fill(root, colour, [(x + 1, y + 1), (x + w - 1, y + h - 1)])?;
                let style = st(LABEL_PX, MIDDLE).color(&ink);
                text(root, &value, (x + w / 2, y + h / 2), style)?;
            }
        }
        for (j, col) in cols.iter().enumerate() {
            let at = (left + j as i32 * w + w / 2, bottom + 8);
            let up = st(LABEL_PX, RIGHT).transform(UP);
            text(
                root,
                col,
                at,
                if upright { up } else { st(LABEL_PX, ABOVE) },
            )?;
        }
        let x_at = ((left + right) / 2, bottom + 20 + labels_h);
        t.x.map_or(Ok(()), |x| text(root, x, x_at, st(LABEL_PX, ABOVE)))?;
        y_title(root, t.y, (top + bottom) / 2)?;
        // The colour scale: 0 % at the bottom, 100 % at the top.
        let (x, y0, y1) = (right + 30, top, bottom.max(top + 120));
        let at = |pct: i32| y1 - (y1 - y0) * pct / 100;
        for s in 0..100 {
            let colour = heat((f64::from(s) + 0.5) / 100.0);
            fill(root, colour, [(x, at(s + 1)), (x + 18, at(s))])?;
        }
        root.draw(&Rectangle::new([(x, y0), (x + 18, y1)], INK))?;
        for pct in [0, 25, 50, 75, 100] {
            let tick = [(x + 18, at(pct)), (x + 23, at(pct))];
            root.draw(&PathElement::new(tick, INK))?;
            text(root, &pct.to_string(), (x + 26, at(pct)), st(TICK_PX, LEFT))?;
        }
        text(root, "%", (x + 9, y0 - 6), st(TICK_PX, BELOW))
    })
}

/// Runs of consecutive finite values: (start index, values).
pub fn finite_runs(s: &[f64]) -> Vec<(usize, Vec<f64>)> {
    let mut runs: Vec<(usize, Vec<f64>)> = Vec::new();
    for (i, &v) in s.iter().enumerate().filter(|(_, v)| v.is_finite()) {
        match runs.last_mut() {
            Some((start, run)) if *start + run.len() == i => run.push(v),
            _ => runs.push((i, vec![v])),
        }
    }
    runs
}

/// The y range of finite values: from 0 (or the minimum, if negative) to the maximum, with 5 %
/// headroom; a unit range when there is nothing to show.
pub fn y_range(series: &[Vec<f64>]) -> (f64, f64) {
    let finite = || series.iter().flatten().copied().filter(|v| v.is_finite());
    let (lo, hi) = (finite().fold(0.0, f64::min), finite().fold(0.0, f64::max));
    let top = if hi - lo < 1e-12 {
        lo + 1.0
    } else {
        hi + 0.05 * (hi - lo)
    };
    (lo, top)
}

type Plot<'a> = DrawingArea<Canvas<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// What line charts, event strips and bars share: a plot `size` pixels large over `x` × `y`
/// with `ticks` on the x axis (written by `fmt`) and on the y axis (none: no y axis, every
/// other band of height 1 shaded instead), `margins` (left, top, right, bottom) around it
/// holding the axes, and a legend on the right.
struct Frame<'a> {
    titles: Titles<'a>,
    size: (i32, i32),
    margins: [i32; 4],
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    ticks: (usize, usize),
    fmt: fn(&f64) -> String,
    legend: Vec<(&'a str, Swatch)>,
}

impl Frame<'_> {
    /// Draws the frame, then `content`.
    fn save(&self, path: &Path, content: impl Fn(&Area, &Plot) -> Drawn) -> Rslt {
        let entries = self.legend.iter().map(|e| e.0).collect::<Vec<_>>();
        let legend_w = (widest(&entries) + 58).max(120);
        let ([left, top, right, below], (x_ticks, y_ticks)) = (self.margins, self.ticks);
        let w = left + self.size.0 + right + legend_w;
        let size = (w, top + self.size.1 + below);
        save(path, size, self.titles.title, |root| {
            let (plot, legend) = root.split_horizontally(w - legend_w);
            let mut chart = ChartBuilder::on(&plot);
            chart.margin_top(top).margin_right(right).margin_bottom(10);
            chart.x_label_area_size(below - 10).y_label_area_size(left);
            let mut chart = chart.build_cartesian_2d(self.x.clone(), self.y.clone())?;
            let area = chart.plotting_area().clone();
            let (xs, n) = (area.get_pixel_range().0, self.y.end as i32);
            let bands = if y_ticks == 0 { n } else { 0 };
            for y in (1..bands).step_by(2) {
                let (y0, y1) = (top + y * self.size.1 / n, top + (y + 1) * self.size.1 / n);
                fill(root, STRIPE, [(xs.start, y0), (xs.end, y1)])?;
            }
            let mut mesh = chart.configure_mesh();
            mesh.light_line_style(TRANSPARENT).bold_line_style(GRID);
            mesh.label_style(st(TICK_PX, LEFT));
            mesh.axis_desc_style(st(LABEL_PX, LEFT));
            mesh.x_labels(x_ticks).y_labels(y_ticks);
            mesh.x_label_formatter(&self.fmt);
            self.titles.x.map(|t| mesh.x_desc(t));
            if y_ticks == 0 {
                mesh.disable_y_mesh();
                y_title(root, self.titles.y, top + self.size.1 / 2)?;
            } else {
                self.titles.y.map(|t| mesh.y_desc(t));
            }
            mesh.draw()?;
            content(root, &area)?;
            for (k, &(name, swatch)) in self.legend.iter().enumerate() {
                let y = top + 16 + k as i32 * 24;
                let line = [(0, y), (26, y)];
                match swatch {
                    Swatch::Line(c) => legend.draw(&PathElement::new(line, c.stroke_width(3))),
                    Box(c) => fill(&legend, c, [(4, y - 7), (22, y + 7)]),
                    Dashed => dashed(&legend, line),
                }?;
                text(&legend, name, (34, y), st(LABEL_PX, LEFT))?;
            }
            Ok(())
        })
    }
}

/// Line chart (900 × 520): one series per name, x = index, y = value (non-finite values leave
/// gaps); the y axis from 0 (or the minimum, if negative) to the maximum; a legend on the
/// right. `x_label` is the x-axis title unless `titles` names one.
///
/// # Errors
/// [`PlotError::Shape`] when `names` and `series` differ in length; the drawing, encoding or
/// writing error otherwise.
pub fn lines<'a>(
    titles: impl Into<Titles<'a>>,
    x_label: &str,
    names: &[String],
    series: &[Vec<f64>],
    path: &Path,
) -> Result<(), PlotError> {
    let mut titles = titles.into();
    if names.len() != series.len() {
        let what = format!("{} names for {} series", names.len(), series.len());
        return shape(path, what);
    }
    titles.x = Some(titles.x.unwrap_or(x_label)).filter(|t| !t.is_empty());
    let left = if titles.y.is_some() { 80 } else { 60 };
    let below = if titles.x.is_some() { 66 } else { 42 };
    let legend_w = (widest(names) + 58).max(120);
    let n = series.iter().map(Vec::len).max().unwrap_or(0).max(2);
    let (lo, hi) = y_range(series);
    let frame = Frame {
        titles,
        size: (900 - left - 20 - legend_w, 520 - 50 - below),
        margins: [left, 50, 20, below],
        x: 0.0..(n - 1) as f64,
        y: lo..hi,
        ticks: (n.min(10), 8),
        fmt: |v| format!("{v:.0}"),
        legend: swatches(names, Swatch::Line),
    };
    frame.save(path, |_, plot| {
        for (k, s) in series.iter().enumerate() {
            let colour = PALETTE[k % PALETTE.len()];
            for (i, run) in finite_runs(s) {
                let at = |(j, &v): (usize, &f64)| ((i + j) as f64, v);
                let points: Vec<_> = run.iter().enumerate().map(at).collect();
                match points[..] {
                    [p] => plot.draw(&Circle::new(p, 3, colour.filled())),
                    _ => plot.draw(&PathElement::new(points, colour.stroke_width(2))),
                }?;
            }
        }
        Ok(())
    })
}

/// One band per label (the first on top, labelled on the left), `band_h` pixels high, in
/// `frame`; `band(root, k, band's top, x → pixel)` draws the k-th band's content.
fn bands(
    path: &Path,
    mut frame: Frame<'_>,
    labels: &[String],
    band_h: i32,
    band: impl Fn(&Area, usize, i32, &dyn Fn(f64) -> i32) -> Drawn,
) -> Rslt {
    let n = labels.len().max(1);
    frame.margins[0] = 28 + if frame.titles.y.is_some() { 28 } else { 0 } + widest(labels);
    (frame.size.1, frame.y) = (band_h * n as i32, 0.0..n as f64);
    frame.save(path, |root, plot| {
        let x = |v: f64| plot.map_coordinate(&(v, 0.0)).0;
        for (k, label) in labels.iter().enumerate() {
            let y = 56 + k as i32 * band_h;
            let at = (x(0.0) - 10, y + band_h / 2);
            text(root, label, at, st(LABEL_PX, RIGHT))?;
            band(root, k, y, &x)?;
        }
        Ok(())
    })
}

/// Event strips: one row per name along a stream of `length` items, with a red marker at every
/// event and a dashed marker at every `expected` position (e.g. injected drift).
///
/// # Errors
/// [`PlotError::Shape`] when `events` (or `expected`, beyond its end) does not match `names`;
/// the drawing, encoding or writing error otherwise.
pub fn events<'a>(
    titles: impl Into<Titles<'a>>,
    names: &[String],
    events: &[Vec<usize>],
    expected: &[Vec<usize>],
    length: usize,
    path: &Path,
) -> Result<(), PlotError> {
    let (n, e, x) = (names.len(), events.len(), expected.len());
    if e != n || x > n {
        let what = format!("{n} names, {e} rows of events, {x} rows of expected events");
        return shape(path, what);
    }
    let mut titles = titles.into();
    titles.x = Some(titles.x.unwrap_or("item (position in the stream)"));
    let frame = Frame {
        titles,
        size: (760, 0),
        margins: [0, 56, 30, 64],
        x: 0.0..length.max(1) as f64,
        y: 0.0..1.0,
        ticks: (10, 0),
        fmt: |v| format!("{v:.0}"),
        legend: vec![
            ("change point", Box(PALETTE[3])),
            ("injected drift", Dashed),
        ],
    };
    bands(path, frame, names, 24, |root, k, y, x| {
        for e in expected.get(k).into_iter().flatten().map(|&e| x(e as f64)) {
            dashed(root, [(e, y + 1), (e, y + 23)])?;
        }
        for e in events[k].iter().map(|&e| x(e as f64)) {
            fill(root, PALETTE[3], [(e - 2, y + 4), (e + 2, y + 20)])?;
        }
        Ok(())
    })
}

/// Grouped bar chart, bars horizontal: one group per category (labelled on the left, the first
/// on top), one bar per series in the legend's order, values in [0, 1] written next to the
/// bars (a non-finite value is marked `n/a`).
///
/// # Errors
/// [`PlotError::Shape`] when `values` is not `names.len()` rows of `categories.len()` values;
/// the drawing, encoding or writing error otherwise.
pub fn bars<'a>(
    titles: impl Into<Titles<'a>>,
    categories: &[String],
    names: &[String],
    values: &[Vec<f64>],
    path: &Path,
) -> Result<(), PlotError> {
    let words = "names,series,categories";
    check(path, values, names, categories.len(), words)?;
    let h = [18, 13, 11][(names.len().saturating_sub(1) / 4).min(2)];
    let frame = Frame {
        titles: titles.into(),
        size: (720, 0),
        margins: [0, 56, 50, 60],
        x: 0.0..1.0,
        y: 0.0..1.0,
        ticks: (11, 0),
        fmt: |v| format!("{v:.1}"),
        legend: swatches(names, Box),
    };
    let band_h = h * names.len().max(1) as i32 + 14;
    bands(path, frame, categories, band_h, |root, g, top, x| {
        for (k, v) in values.iter().map(|row| row[g]).enumerate() {
            let (y, x0) = (top + 7 + k as i32 * h, x(0.0));
            let at = |x| (x + 4, y + (h - 1) / 2);
            if !v.is_finite() {
                text(root, "n/a", at(x0), st(VALUE_PX, LEFT))?;
                continue;
            }
            let xv = x(v.clamp(0.0, 1.0));
            let bar = [(x0 + 1, y), (xv.max(x0 + 2), y + h - 1)];
            fill(root, PALETTE[k % PALETTE.len()], bar)?;
            text(root, &format!("{v:.2}"), at(xv), st(VALUE_PX, LEFT))?;
        }
        Ok(())
    })
}
