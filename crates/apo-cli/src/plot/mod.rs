//! Charts for reports a person reads at a glance: a heatmap with row and column labels, line
//! charts, event strips and grouped bars. They are drawn with `plotters`; every chart is written
//! as a PNG at the path given and as an SVG next to it (same basename, `.svg`). Text is set in
//! DejaVu Sans, embedded in the binary (`assets/fonts/`), so no system font is needed.
//!
//! Category labels (rows, columns, finding names) are measured with the font and the chart is
//! sized to fit them: nothing is cut short.

mod raster;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::element::{Circle, DashedPathElement, PathElement, Rectangle, Text};
use plotters::prelude::{
    BitMapBackend, ChartBuilder, DrawingArea, DrawingAreaErrorKind, IntoDrawingArea, LineSeries,
    SVGBackend,
};
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{
    Color, FontDesc, FontFamily, FontStyle, FontTransform, RGBColor, TRANSPARENT, TextStyle,
    register_font,
};
use raster::Canvas;

/// DejaVu Sans 2.37 (Bitstream Vera licence, see `assets/fonts/LICENSE-DejaVu.txt`).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// The family the embedded font is registered under; an SVG names it too, so a viewer
/// without DejaVu Sans falls back to its own sans-serif face.
const FAMILY: FontFamily<'static> = FontFamily::SansSerif;

/// Text sizes in pixels: the chart title, axis titles and category labels, tick labels, values
/// written in cells or next to bars.
const TITLE_PX: f64 = 22.0;
const LABEL_PX: f64 = 15.0;
const TICK_PX: f64 = 13.0;
const VALUE_PX: f64 = 12.0;

const WHITE: RGBColor = RGBColor(255, 255, 255);
const INK: RGBColor = RGBColor(30, 30, 30);
const GRID: RGBColor = RGBColor(222, 222, 222);
const MISSING: RGBColor = RGBColor(205, 205, 205);
const STRIPE: RGBColor = RGBColor(246, 246, 246);
/// Change points: the palette's red.
const EVENT: RGBColor = PALETTE[3];

/// Distinct colours for series: the ten of matplotlib's `tab10`, then four more (seven
/// teachers, two label rows, the all-absent row and three students fit without repeating).
pub const PALETTE: [RGBColor; 14] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(255, 215, 0),
    RGBColor(174, 199, 232),
    RGBColor(152, 223, 138),
];

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
    /// Drawing failed.
    #[error("{}: drawing the chart: {message}", path.display())]
    Draw {
        /// The chart's file.
        path: PathBuf,
        /// The backend's message.
        message: String,
    },
    /// The PNG could not be encoded or written.
    #[error("{}: {source}", path.display())]
    Png {
        /// The PNG file.
        path: PathBuf,
        /// The encoder's error.
        source: image::ImageError,
    },
    /// The SVG could not be written.
    #[error("{}: {source}", path.display())]
    Svg {
        /// The SVG file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl From<PlotError> for String {
    fn from(e: PlotError) -> Self {
        e.to_string()
    }
}

/// A chart's title and, optionally, its axis titles. A plain `&str` converts into a title
/// alone, so `heatmap("…", …)` reads as before.
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
            x: None,
            y: None,
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

impl<'a> From<&'a String> for Titles<'a> {
    fn from(title: &'a String) -> Self {
        Titles::new(title)
    }
}

/// The colour of series `k`.
fn colour(k: usize) -> RGBColor {
    PALETTE[k % PALETTE.len()]
}

/// Colour for a value in [0, 1]: white → dark red.
pub fn heat(v: f64) -> RGBColor {
    let v = v.clamp(0.0, 1.0);
    let r = 255.0 - 90.0 * v;
    let g = 255.0 - 235.0 * v;
    let b = 255.0 - 225.0 * v;
    RGBColor(r as u8, g as u8, b as u8)
}

/// The embedded font, parsed and registered with plotters (which measures text for layout and
/// names it in SVG) once per process.
fn font() -> Result<&'static ab_glyph::FontRef<'static>, PlotError> {
    static FONT_REF: OnceLock<Option<ab_glyph::FontRef<'static>>> = OnceLock::new();
    FONT_REF
        .get_or_init(|| {
            register_font(FAMILY.as_str(), FontStyle::Normal, FONT).ok()?;
            ab_glyph::FontRef::try_from_slice(FONT).ok()
        })
        .as_ref()
        .ok_or(PlotError::Font)
}

fn style(px: f64) -> TextStyle<'static> {
    TextStyle::from(FontDesc::new(FAMILY, px, FontStyle::Normal))
}

/// Anchors: the point of a text's box placed at the position given.
const LEFT: Pos = anchor(HPos::Left, VPos::Center);
const RIGHT: Pos = anchor(HPos::Right, VPos::Center);
const MIDDLE: Pos = anchor(HPos::Center, VPos::Center);
const ABOVE: Pos = anchor(HPos::Center, VPos::Top);
const BELOW: Pos = anchor(HPos::Center, VPos::Bottom);

const fn anchor(h_pos: HPos, v_pos: VPos) -> Pos {
    Pos { h_pos, v_pos }
}

/// The width in pixels of `s` set at `px` pixels in the embedded font (what the charts are
/// sized by).
pub fn text_width(s: &str, px: f64) -> i32 {
    font().map_or(0, |_| {
        FontDesc::new(FAMILY, px, FontStyle::Normal)
            .box_size(s)
            .map_or(0, |(w, _)| w as i32)
    })
}

fn widest<S: AsRef<str>>(labels: &[S], px: f64) -> i32 {
    labels
        .iter()
        .map(|l| text_width(l.as_ref(), px))
        .max()
        .unwrap_or(0)
}

type Area<'a> = DrawingArea<Canvas<'a>, Shift>;
type Drawn = Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// Draws a chart of `size` pixels (white, `title` centred at the top, then `draw`) into a
/// PNG at `path` and an SVG next to it.
fn save(
    path: &Path,
    (w, h): (i32, i32),
    title: &str,
    draw: impl Fn(&Area<'_>) -> Drawn,
) -> Result<(), PlotError> {
    let font = font()?;
    let (w, h) = (w as u32, h as u32);
    let draw_err = |message: String| PlotError::Draw {
        path: path.to_owned(),
        message,
    };
    let mut buf = vec![255u8; w as usize * h as usize * 3];
    let mut svg = String::new();
    let canvases = [
        Canvas::Png(BitMapBackend::with_buffer(&mut buf, (w, h)), font),
        Canvas::Svg(SVGBackend::with_string(&mut svg, (w, h))),
    ];
    for canvas in canvases {
        let root = canvas.into_drawing_area();
        root.fill(&WHITE)
            .and_then(|()| {
                let at = (w as i32 / 2, 14);
                root.draw(&Text::new(title, at, style(TITLE_PX).pos(ABOVE)))
            })
            .and_then(|()| draw(&root))
            .and_then(|()| root.present())
            .map_err(|e| draw_err(e.to_string()))?;
    }
    let img =
        image::RgbImage::from_raw(w, h, buf).ok_or_else(|| draw_err("pixel buffer size".into()))?;
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|source| PlotError::Png {
            path: path.to_owned(),
            source,
        })?;
    let svg_path = path.with_extension("svg");
    std::fs::write(&svg_path, svg).map_err(|source| PlotError::Svg {
        path: svg_path,
        source,
    })
}

fn shape(path: &Path, what: String) -> PlotError {
    PlotError::Shape {
        path: path.to_owned(),
        what,
    }
}

/// That `values` are one row of `n` values per name; the error's words name the rows, a row
/// and the columns.
fn check_rows(
    path: &Path,
    values: &[Vec<f64>],
    names: &[String],
    n: usize,
    [rows, row, cols]: [&str; 3],
) -> Result<(), PlotError> {
    let (got, want) = (values.len(), names.len());
    if got != want {
        let what = format!("{got} rows of values for {want} {rows}");
        return Err(shape(path, what));
    }
    match values.iter().position(|r| r.len() != n) {
        Some(i) => {
            let (name, got) = (&names[i], values[i].len());
            let what = format!("{row} {i} ({name}) has {got} values for {n} {cols}");
            Err(shape(path, what))
        }
        None => Ok(()),
    }
}

/// `s` at `at`, `px` pixels high, its box placed there by `anchor`.
fn text(area: &Area<'_>, s: &str, at: (i32, i32), px: f64, anchor: Pos) -> Drawn {
    area.draw(&Text::new(s, at, style(px).pos(anchor)))
}

/// A vertical axis title, read bottom to top, centred on `at`'s height.
fn y_title(area: &Area<'_>, title: Option<&str>, at: (i32, i32)) -> Drawn {
    let Some(title) = title else { return Ok(()) };
    let style = style(LABEL_PX)
        .pos(ABOVE)
        .transform(FontTransform::Rotate270);
    area.draw(&Text::new(title, at, style))
}

/// A dashed line (expected events) from one end to the other.
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

/// A legend: one swatch and name per entry, top to bottom from height `y`.
fn legend<'s>(
    area: &Area<'_>,
    y: i32,
    entries: impl IntoIterator<Item = (&'s str, Swatch)>,
) -> Drawn {
    for (k, (name, swatch)) in entries.into_iter().enumerate() {
        let cy = y + k as i32 * 24 + 8;
        match swatch {
            Swatch::Line(c) => area.draw(&PathElement::new([(0, cy), (26, cy)], c.stroke_width(3))),
            Swatch::Box(c) => area.draw(&Rectangle::new([(4, cy - 7), (22, cy + 7)], c.filled())),
            Swatch::Dashed => dashed(area, [(0, cy), (26, cy)]),
        }?;
        text(area, name, (34, cy), LABEL_PX, LEFT)?;
    }
    Ok(())
}

/// A legend entry per name, in the series' colours.
fn swatches<'n>(names: &'n [String], swatch: fn(RGBColor) -> Swatch) -> Vec<(&'n str, Swatch)> {
    let entry = |(k, n): (usize, &'n String)| (n.as_str(), swatch(colour(k)));
    names.iter().enumerate().map(entry).collect()
}

/// Room for a legend of `names` on the right.
fn legend_width<S: AsRef<str>>(names: &[S]) -> i32 {
    widest(names, LABEL_PX) + 34 + 24
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
    let words = ["row labels", "row", "columns"];
    check_rows(path, values, rows, cols.len(), words)?;
    let left = 20 + if t.y.is_some() { 28 } else { 0 } + widest(rows, LABEL_PX) + 10;
    // Column labels wider than a cell stand upright, read bottom to top.
    let col_w = widest(cols, LABEL_PX);
    let rotate = col_w > 84;
    let (cell_w, labels_h) = if rotate {
        (52, col_w)
    } else {
        ((col_w + 14).max(52), LABEL_PX as i32)
    };
    let (top, cell_h) = (60, 38);
    let bottom = top + cell_h * rows.len() as i32;
    let right = left + cell_w * cols.len() as i32;
    let below = 8 + labels_h + if t.x.is_some() { 32 } else { 0 } + 20;
    let width = (right + 110)
        .max(text_width(t.title, TITLE_PX) + 40)
        .max(320);
    save(path, (width, bottom + below), t.title, |root| {
        for (i, (row, vals)) in rows.iter().zip(values).enumerate() {
            let y = top + i as i32 * cell_h;
            text(root, row, (left - 10, y + cell_h / 2), LABEL_PX, RIGHT)?;
            for (j, &v) in vals.iter().enumerate() {
                let x = left + j as i32 * cell_w;
                let (fill, value, ink) = if !v.is_finite() {
                    (MISSING, "n/a".to_owned(), INK)
                } else {
                    let ink = if v > 0.55 { WHITE } else { INK };
                    (heat(v), format!("{:.0}", v * 100.0), ink)
                };
                let cell = [(x + 1, y + 1), (x + cell_w - 1, y + cell_h - 1)];
                root.draw(&Rectangle::new(cell, fill.filled()))?;
                let style = style(LABEL_PX).pos(MIDDLE).color(&ink);
                root.draw(&Text::new(value, (x + cell_w / 2, y + cell_h / 2), style))?;
            }
        }
        for (j, col) in cols.iter().enumerate() {
            let at = (left + j as i32 * cell_w + cell_w / 2, bottom + 8);
            if rotate {
                let style = style(LABEL_PX).pos(RIGHT);
                let style = style.transform(FontTransform::Rotate270);
                root.draw(&Text::new(col.as_str(), at, style))?;
            } else {
                text(root, col, at, LABEL_PX, ABOVE)?;
            }
        }
        if let Some(x) = t.x {
            let at = ((left + right) / 2, bottom + 20 + labels_h);
            text(root, x, at, LABEL_PX, ABOVE)?;
        }
        y_title(root, t.y, (10, (top + bottom) / 2))?;
        // The colour scale: 0 % at the bottom, 100 % at the top.
        let (bx, y0, y1) = (right + 30, top, bottom.max(top + 120));
        for s in 0..64 {
            let v = (f64::from(s) + 0.5) / 64.0;
            let (ya, yb) = (y1 - (y1 - y0) * s / 64, y1 - (y1 - y0) * (s + 1) / 64);
            root.draw(&Rectangle::new([(bx, yb), (bx + 18, ya)], heat(v).filled()))?;
        }
        let frame = [(bx, y0), (bx + 18, y1)];
        root.draw(&Rectangle::new(frame, INK.stroke_width(1)))?;
        for t in [0, 25, 50, 75, 100] {
            let y = y1 - (y1 - y0) * t / 100;
            root.draw(&PathElement::new([(bx + 18, y), (bx + 23, y)], INK))?;
            text(root, &t.to_string(), (bx + 26, y), TICK_PX, LEFT)?;
        }
        text(root, "%", (bx + 9, y0 - 6), TICK_PX, BELOW)
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
    let lo = finite().fold(0.0f64, f64::min);
    let hi = finite().fold(0.0f64, f64::max);
    if hi - lo < 1e-12 {
        (lo, lo + 1.0)
    } else {
        (lo, hi + 0.05 * (hi - lo))
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
    let t = titles.into();
    if names.len() != series.len() {
        let what = format!("{} names for {} series", names.len(), series.len());
        return Err(shape(path, what));
    }
    let legend_w = legend_width(names).max(120);
    let n = series.iter().map(Vec::len).max().unwrap_or(0).max(2) as i64;
    let (lo, hi) = y_range(series);
    let x_title = t.x.unwrap_or(x_label);
    save(path, (900, 520), t.title, |root| {
        let (plot, legend_area) = root.split_horizontally(900 - legend_w);
        let mut chart = ChartBuilder::on(&plot)
            .margin_top(50)
            .margin_left(10)
            .margin_right(20)
            .margin_bottom(10)
            .x_label_area_size(if x_title.is_empty() { 32 } else { 56 })
            .y_label_area_size(if t.y.is_some() { 80 } else { 60 })
            .build_cartesian_2d(0..n - 1, lo..hi)?;
        let mut mesh = chart.configure_mesh();
        mesh.light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .label_style(style(TICK_PX))
            .axis_desc_style(style(LABEL_PX))
            .x_labels(10)
            .y_labels(8);
        if !x_title.is_empty() {
            mesh.x_desc(x_title);
        }
        if let Some(y) = t.y {
            mesh.y_desc(y);
        }
        mesh.draw()?;
        for (k, s) in series.iter().enumerate() {
            let colour = colour(k);
            for (start, run) in finite_runs(s) {
                let at = |(i, &v): (usize, &f64)| ((start + i) as i64, v);
                let points = run.iter().enumerate().map(at);
                if run.len() == 1 {
                    chart.draw_series(points.map(|p| Circle::new(p, 3, colour.filled())))?;
                } else {
                    chart.draw_series(LineSeries::new(points, colour.stroke_width(2)))?;
                }
            }
        }
        legend(&legend_area, 64, swatches(names, Swatch::Line))
    })
}

/// What event strips and bars share: one horizontal band per label (the first on top,
/// labelled on the left) along an x axis from 0 to `x_max`, a legend on the right.
struct Bands<'a> {
    titles: Titles<'a>,
    labels: &'a [String],
    band_h: i32,
    /// The plot's width, the margin right of it and the room below it.
    plot_w: i32,
    right: i32,
    below: i32,
    x_max: f64,
    x_labels: usize,
    x_format: fn(&f64) -> String,
    x_title: Option<&'a str>,
    /// Shade every other band.
    stripes: bool,
}

impl Bands<'_> {
    const TOP: i32 = 56;

    /// Draws the bands, `band(root, k, band's top, x → pixel)` drawing the k-th band's content.
    fn save(
        &self,
        path: &Path,
        entries: &[(&str, Swatch)],
        band: impl Fn(&Area<'_>, usize, i32, &dyn Fn(f64) -> i32) -> Drawn,
    ) -> Result<(), PlotError> {
        let (top, band_h) = (Self::TOP, self.band_h);
        let y_title_w = if self.titles.y.is_some() { 28 } else { 0 };
        let left = 16 + y_title_w + widest(self.labels, LABEL_PX) + 12;
        let names: Vec<&str> = entries.iter().map(|e| e.0).collect();
        let legend_w = legend_width(&names);
        let w = left + self.plot_w + self.right + legend_w;
        let h = top + band_h * self.labels.len().max(1) as i32 + self.below;
        save(path, (w, h), self.titles.title, |root| {
            let (plot, legend_area) = root.split_horizontally(w - legend_w);
            let mut chart = ChartBuilder::on(&plot)
                .margin_top(top)
                .margin_right(self.right)
                .margin_bottom(10)
                .x_label_area_size(self.below - 10)
                .y_label_area_size(left)
                .build_cartesian_2d(0f64..self.x_max, 0f64..self.labels.len().max(1) as f64)?;
            let x = |v: f64| chart.backend_coord(&(v, 0.0)).0;
            if self.stripes {
                for k in (1..self.labels.len()).step_by(2) {
                    let y = top + k as i32 * band_h;
                    let stripe = [(x(0.0), y), (x(self.x_max), y + band_h)];
                    root.draw(&Rectangle::new(stripe, STRIPE.filled()))?;
                }
            }
            let mut mesh = chart.configure_mesh();
            mesh.disable_y_mesh()
                .y_labels(0)
                .light_line_style(TRANSPARENT)
                .bold_line_style(GRID)
                .label_style(style(TICK_PX))
                .axis_desc_style(style(LABEL_PX))
                .x_labels(self.x_labels)
                .x_label_formatter(&self.x_format);
            if let Some(title) = self.x_title {
                mesh.x_desc(title);
            }
            mesh.draw()?;
            let x = |v: f64| chart.backend_coord(&(v, 0.0)).0;
            for (k, label) in self.labels.iter().enumerate() {
                let y = top + k as i32 * band_h;
                text(root, label, (x(0.0) - 10, y + band_h / 2), LABEL_PX, RIGHT)?;
                band(root, k, y, &x)?;
            }
            y_title(root, self.titles.y, (10, (top + h - self.below) / 2))?;
            legend(&legend_area, top + 8, entries.iter().copied())
        })
    }
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
    if events.len() != names.len() || expected.len() > names.len() {
        let (n, e, x) = (names.len(), events.len(), expected.len());
        let what = format!("{n} names, {e} rows of events, {x} rows of expected events");
        return Err(shape(path, what));
    }
    let titles = titles.into();
    let bands = Bands {
        titles,
        labels: names,
        band_h: 24,
        plot_w: 760,
        right: 30,
        below: 64,
        x_max: length.max(1) as f64,
        x_labels: 10,
        x_format: |v| format!("{v:.0}"),
        x_title: Some(titles.x.unwrap_or("item (position in the stream)")),
        stripes: true,
    };
    let entries = [
        ("change point", Swatch::Box(EVENT)),
        ("injected drift", Swatch::Dashed),
    ];
    bands.save(path, &entries, |root, k, top, x| {
        let bottom = top + bands.band_h;
        for &e in expected.get(k).map_or(&[][..], Vec::as_slice) {
            let at = x(e as f64);
            dashed(root, [(at, top + 1), (at, bottom - 1)])?;
        }
        for &e in &events[k] {
            let at = x(e as f64);
            let marker = [(at - 2, top + 4), (at + 2, bottom - 4)];
            root.draw(&Rectangle::new(marker, EVENT.filled()))?;
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
    let words = ["names", "series", "categories"];
    check_rows(path, values, names, categories.len(), words)?;
    const GAP: i32 = 14;
    let bar_h = match names.len() {
        0..=4 => 18,
        5..=8 => 13,
        _ => 11,
    };
    let titles = titles.into();
    let bands = Bands {
        titles,
        labels: categories,
        band_h: bar_h * names.len().max(1) as i32 + GAP,
        plot_w: 720,
        right: 50,
        below: 60,
        x_max: 1.0,
        x_labels: 11,
        x_format: |v| format!("{v:.1}"),
        x_title: titles.x,
        stripes: false,
    };
    bands.save(path, &swatches(names, Swatch::Box), |root, g, top, x| {
        let x0 = x(0.0);
        for (k, row) in values.iter().enumerate() {
            let ya = top + GAP / 2 + k as i32 * bar_h;
            let (yb, v) = (ya + bar_h - 1, row[g]);
            let mid = (ya + yb) / 2;
            if !v.is_finite() {
                text(root, "n/a", (x0 + 4, mid), VALUE_PX, LEFT)?;
                continue;
            }
            let xv = x(v.clamp(0.0, 1.0));
            let bar = [(x0 + 1, ya), (xv.max(x0 + 2), yb)];
            root.draw(&Rectangle::new(bar, colour(k).filled()))?;
            text(root, &format!("{v:.2}"), (xv + 4, mid), VALUE_PX, LEFT)?;
        }
        Ok(())
    })
}
