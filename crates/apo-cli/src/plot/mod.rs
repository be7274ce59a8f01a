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
use plotters::element::{DashedPathElement, PathElement, Rectangle, Text};
use plotters::prelude::{
    BitMapBackend, ChartBuilder, DrawingArea, DrawingAreaErrorKind, DrawingBackend,
    IntoDrawingArea, LineSeries, SVGBackend,
};
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{
    Color, FontDesc, FontFamily, FontStyle, FontTransform, RGBColor, ShapeStyle, TRANSPARENT,
    TextStyle, register_font,
};

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
const EVENT: RGBColor = RGBColor(214, 39, 40);

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

fn anchored(px: f64, h: HPos, v: VPos) -> TextStyle<'static> {
    style(px).pos(Pos::new(h, v))
}

/// Width in pixels of `s` at `px` (the font must be registered).
fn text_width(s: &str, px: f64) -> i32 {
    FontDesc::new(FAMILY, px, FontStyle::Normal)
        .box_size(s)
        .map_or(0, |(w, _)| w as i32)
}

fn widest(labels: &[String], px: f64) -> i32 {
    labels.iter().map(|l| text_width(l, px)).max().unwrap_or(0)
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// A chart laid out for a size, drawable on any backend.
trait Chart {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

/// Draws `chart` into a PNG at `path` and an SVG next to it.
fn save(chart: &impl Chart, path: &Path) -> Result<(), PlotError> {
    let (w, h) = chart.size();
    let draw_err = |e: &dyn std::fmt::Display| PlotError::Draw {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let mut buf = vec![255u8; w as usize * h as usize * 3];
    {
        let root = raster::Glyphs {
            inner: BitMapBackend::with_buffer(&mut buf, (w, h)),
            font: font()?,
        }
        .into_drawing_area();
        chart.draw(&root).map_err(|e| draw_err(&e))?;
        root.present().map_err(|e| draw_err(&e))?;
    }
    let img = image::RgbImage::from_raw(w, h, buf).ok_or_else(|| draw_err(&"pixel buffer size"))?;
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|source| PlotError::Png {
            path: path.to_owned(),
            source,
        })?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        chart.draw(&root).map_err(|e| draw_err(&e))?;
        root.present().map_err(|e| draw_err(&e))?;
    }
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

/// The title, centred at the top.
fn draw_title<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str) -> DrawResult<DB> {
    let (w, _) = root.dim_in_pixel();
    root.draw(&Text::new(
        title.to_owned(),
        (w as i32 / 2, 14),
        anchored(TITLE_PX, HPos::Center, VPos::Top),
    ))
}

/// A vertical axis title, read bottom to top, centred on `y` at `x`.
fn draw_y_title<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    (x, y): (i32, i32),
) -> DrawResult<DB> {
    root.draw(&Text::new(
        title.to_owned(),
        (x, y),
        anchored(LABEL_PX, HPos::Center, VPos::Top).transform(FontTransform::Rotate270),
    ))
}

/// A legend: one swatch and name per series, top to bottom from `(x, y)`.
fn draw_legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    (x, y): (i32, i32),
    entries: &[(String, ShapeStyle, bool)],
) -> DrawResult<DB> {
    for (k, (name, swatch, line)) in entries.iter().enumerate() {
        let cy = y + k as i32 * 24 + 8;
        if *line {
            root.draw(&PathElement::new(vec![(x, cy), (x + 26, cy)], *swatch))?;
        } else {
            root.draw(&Rectangle::new(
                [(x + 4, cy - 7), (x + 22, cy + 7)],
                *swatch,
            ))?;
        }
        root.draw(&Text::new(
            name.clone(),
            (x + 34, cy),
            anchored(LABEL_PX, HPos::Left, VPos::Center),
        ))?;
    }
    Ok(())
}

/// Room for a legend of `names` on the right.
fn legend_width(names: &[String]) -> i32 {
    widest(names, LABEL_PX) + 34 + 24
}

// ------------------------------------------------------------------------------------------
// Heatmap

struct Heatmap<'a> {
    titles: Titles<'a>,
    rows: &'a [String],
    cols: &'a [String],
    values: &'a [Vec<f64>],
    /// Left of the cells: the row labels and the y title.
    left: i32,
    /// Above the cells: the title.
    top: i32,
    cell_w: i32,
    cell_h: i32,
    /// Column labels read bottom to top (they are wider than a cell).
    rotate: bool,
    /// Below the cells: the column labels and the x title.
    below: i32,
    width: i32,
}

impl Heatmap<'_> {
    const BAR: i32 = 110;

    fn cells_right(&self) -> i32 {
        self.left + self.cell_w * self.cols.len() as i32
    }
}

impl Chart for Heatmap<'_> {
    fn size(&self) -> (u32, u32) {
        let h = self.top + self.cell_h * self.rows.len() as i32 + self.below;
        (self.width as u32, h as u32)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        draw_title(root, self.titles.title)?;
        let bottom = self.top + self.cell_h * self.rows.len() as i32;
        for (i, row) in self.rows.iter().enumerate() {
            let y = self.top + i as i32 * self.cell_h;
            root.draw(&Text::new(
                row.clone(),
                (self.left - 10, y + self.cell_h / 2),
                anchored(LABEL_PX, HPos::Right, VPos::Center),
            ))?;
            for (j, &v) in self.values[i].iter().enumerate() {
                let x = self.left + j as i32 * self.cell_w;
                let (fill, text, ink) = if v.is_finite() {
                    let ink = if v > 0.55 { WHITE } else { INK };
                    (heat(v), format!("{:.0}", v * 100.0), ink)
                } else {
                    (MISSING, "n/a".to_owned(), INK)
                };
                root.draw(&Rectangle::new(
                    [(x + 1, y + 1), (x + self.cell_w - 1, y + self.cell_h - 1)],
                    fill.filled(),
                ))?;
                root.draw(&Text::new(
                    text,
                    (x + self.cell_w / 2, y + self.cell_h / 2),
                    anchored(LABEL_PX, HPos::Center, VPos::Center).color(&ink),
                ))?;
            }
        }
        let mut label_bottom = bottom + 8 + LABEL_PX as i32;
        for (j, col) in self.cols.iter().enumerate() {
            let cx = self.left + j as i32 * self.cell_w + self.cell_w / 2;
            if self.rotate {
                root.draw(&Text::new(
                    col.clone(),
                    (cx, bottom + 8),
                    anchored(LABEL_PX, HPos::Right, VPos::Center)
                        .transform(FontTransform::Rotate270),
                ))?;
                label_bottom = label_bottom.max(bottom + 8 + text_width(col, LABEL_PX));
            } else {
                root.draw(&Text::new(
                    col.clone(),
                    (cx, bottom + 8),
                    anchored(LABEL_PX, HPos::Center, VPos::Top),
                ))?;
            }
        }
        if let Some(x) = self.titles.x {
            root.draw(&Text::new(
                x.to_owned(),
                ((self.left + self.cells_right()) / 2, label_bottom + 12),
                anchored(LABEL_PX, HPos::Center, VPos::Top),
            ))?;
        }
        if let Some(y) = self.titles.y {
            draw_y_title(root, y, (10, (self.top + bottom) / 2))?;
        }
        // The colour scale: 0 % at the bottom, 100 % at the top.
        let bx = self.cells_right() + 30;
        let (y0, y1) = (self.top, bottom.max(self.top + 120));
        let steps = 64;
        for s in 0..steps {
            let v = (s as f64 + 0.5) / steps as f64;
            let ya = y1 - (y1 - y0) * s / steps;
            let yb = y1 - (y1 - y0) * (s + 1) / steps;
            root.draw(&Rectangle::new([(bx, yb), (bx + 18, ya)], heat(v).filled()))?;
        }
        root.draw(&Rectangle::new(
            [(bx, y0), (bx + 18, y1)],
            INK.stroke_width(1),
        ))?;
        for t in [0, 25, 50, 75, 100] {
            let y = y1 - (y1 - y0) * t / 100;
            root.draw(&PathElement::new(vec![(bx + 18, y), (bx + 23, y)], INK))?;
            root.draw(&Text::new(
                format!("{t}"),
                (bx + 26, y),
                anchored(TICK_PX, HPos::Left, VPos::Center),
            ))?;
        }
        root.draw(&Text::new(
            "%".to_owned(),
            (bx + 9, y0 - 6),
            anchored(TICK_PX, HPos::Center, VPos::Bottom),
        ))
    }
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
    font()?;
    let titles = titles.into();
    if values.len() != rows.len() {
        return Err(shape(
            path,
            format!(
                "{} rows of values for {} row labels",
                values.len(),
                rows.len()
            ),
        ));
    }
    if let Some((i, r)) = values
        .iter()
        .enumerate()
        .find(|(_, r)| r.len() != cols.len())
    {
        return Err(shape(
            path,
            format!(
                "row {i} ({}) has {} values for {} columns",
                rows[i],
                r.len(),
                cols.len()
            ),
        ));
    }
    let y_title = if titles.y.is_some() { 28 } else { 0 };
    let left = 20 + y_title + widest(rows, LABEL_PX) + 10;
    let col_w = widest(cols, LABEL_PX);
    let rotate = col_w > 84;
    let cell_w = if rotate { 52 } else { (col_w + 14).max(52) };
    let labels_h = if rotate { col_w } else { LABEL_PX as i32 };
    let x_title = if titles.x.is_some() { 32 } else { 0 };
    let chart = Heatmap {
        titles,
        rows,
        cols,
        values,
        left,
        top: 60,
        cell_w,
        cell_h: 38,
        rotate,
        below: 8 + labels_h + x_title + 20,
        width: 0,
    };
    let width = (chart.cells_right() + Heatmap::BAR)
        .max(text_width(titles.title, TITLE_PX) + 40)
        .max(320);
    save(&Heatmap { width, ..chart }, path)
}

// ------------------------------------------------------------------------------------------
// Line chart

struct Lines<'a> {
    titles: Titles<'a>,
    x_label: &'a str,
    names: &'a [String],
    series: &'a [Vec<f64>],
    legend_w: i32,
}

impl Lines<'_> {
    const SIZE: (u32, u32) = (900, 520);
}

/// Runs of consecutive finite values: (start index, values).
fn finite_runs(s: &[f64]) -> Vec<(usize, Vec<f64>)> {
    let mut runs: Vec<(usize, Vec<f64>)> = Vec::new();
    for (i, &v) in s.iter().enumerate() {
        if !v.is_finite() {
            continue;
        }
        match runs.last_mut() {
            Some((start, run)) if *start + run.len() == i => run.push(v),
            _ => runs.push((i, vec![v])),
        }
    }
    runs
}

/// The y range of finite values: from 0 (or the minimum, if negative) to the maximum, with 5 %
/// headroom; a unit range when there is nothing to show.
fn y_range(series: &[Vec<f64>]) -> (f64, f64) {
    let finite = || series.iter().flatten().copied().filter(|v| v.is_finite());
    let lo = finite().fold(0.0f64, f64::min);
    let hi = finite().fold(0.0f64, f64::max);
    if hi - lo < 1e-12 {
        (lo, lo + 1.0)
    } else {
        (lo, hi + 0.05 * (hi - lo))
    }
}

impl Chart for Lines<'_> {
    fn size(&self) -> (u32, u32) {
        Self::SIZE
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        draw_title(root, self.titles.title)?;
        let (w, _) = root.dim_in_pixel();
        let (plot, legend) = root.split_horizontally(w as i32 - self.legend_w);
        let n = self.series.iter().map(Vec::len).max().unwrap_or(0).max(2);
        let (lo, hi) = y_range(self.series);
        let mut chart = ChartBuilder::on(&plot)
            .margin_top(50)
            .margin_left(10)
            .margin_right(20)
            .margin_bottom(10)
            .x_label_area_size(if self.titles.x.is_some() || !self.x_label.is_empty() {
                56
            } else {
                32
            })
            .y_label_area_size(if self.titles.y.is_some() { 80 } else { 60 })
            .build_cartesian_2d(0i64..(n as i64 - 1), lo..hi)?;
        let mut mesh = chart.configure_mesh();
        mesh.light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .label_style(style(TICK_PX))
            .axis_desc_style(style(LABEL_PX))
            .x_labels(10)
            .y_labels(8);
        let x_title = self.titles.x.unwrap_or(self.x_label);
        if !x_title.is_empty() {
            mesh.x_desc(x_title);
        }
        if let Some(y) = self.titles.y {
            mesh.y_desc(y);
        }
        mesh.draw()?;
        let mut entries = Vec::new();
        for (k, (name, s)) in self.names.iter().zip(self.series).enumerate() {
            let colour = PALETTE[k % PALETTE.len()];
            for (start, run) in finite_runs(s) {
                if run.len() == 1 {
                    chart.draw_series(std::iter::once(plotters::element::Circle::new(
                        (start as i64, run[0]),
                        3,
                        colour.filled(),
                    )))?;
                } else {
                    chart.draw_series(LineSeries::new(
                        run.iter()
                            .enumerate()
                            .map(|(i, &v)| ((start + i) as i64, v)),
                        colour.stroke_width(2),
                    ))?;
                }
            }
            entries.push((name.clone(), colour.stroke_width(3), true));
        }
        draw_legend(&legend, (0, 64), &entries)
    }
}

/// Line chart: one series per name, x = index, y = value (non-finite values leave gaps); the
/// y axis from 0 (or the minimum, if negative) to the maximum; a legend on the right.
/// `x_label` is the x-axis title unless `titles` names one.
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
    font()?;
    if names.len() != series.len() {
        return Err(shape(
            path,
            format!("{} names for {} series", names.len(), series.len()),
        ));
    }
    save(
        &Lines {
            titles: titles.into(),
            x_label,
            names,
            series,
            legend_w: legend_width(names).max(120),
        },
        path,
    )
}

// ------------------------------------------------------------------------------------------
// Event strips

struct Events<'a> {
    titles: Titles<'a>,
    names: &'a [String],
    events: &'a [Vec<usize>],
    expected: &'a [Vec<usize>],
    length: usize,
    left: i32,
    legend_w: i32,
}

impl Events<'_> {
    const TOP: i32 = 56;
    const ROW_H: i32 = 24;
    const PLOT_W: i32 = 760;
    const BELOW: i32 = 64;
    const LEGEND: [&'static str; 2] = ["change point", "injected drift"];
}

impl Chart for Events<'_> {
    fn size(&self) -> (u32, u32) {
        let w = self.left + Self::PLOT_W + 30 + self.legend_w;
        let h = Self::TOP + Self::ROW_H * self.names.len().max(1) as i32 + Self::BELOW;
        (w as u32, h as u32)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        draw_title(root, self.titles.title)?;
        let (w, h) = root.dim_in_pixel();
        let (plot, legend) = root.split_horizontally(w as i32 - self.legend_w);
        let rows = self.names.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&plot)
            .margin_top(Self::TOP)
            .margin_right(30)
            .margin_bottom(10)
            .x_label_area_size(Self::BELOW - 10)
            .y_label_area_size(self.left)
            .build_cartesian_2d(0f64..self.length.max(1) as f64, 0f64..rows)?;
        // Alternate row shading, then the grid and the x axis over it.
        let band = |k: usize| (rows - k as f64 - 1.0, rows - k as f64);
        chart.draw_series((0..self.names.len()).filter(|k| k % 2 == 1).map(|k| {
            let (y0, y1) = band(k);
            Rectangle::new([(0.0, y0), (self.length as f64, y1)], STRIPE.filled())
        }))?;
        let mut mesh = chart.configure_mesh();
        mesh.disable_y_mesh()
            .y_labels(0)
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .label_style(style(TICK_PX))
            .axis_desc_style(style(LABEL_PX))
            .x_labels(10)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .x_desc(self.titles.x.unwrap_or("item (position in the stream)"));
        mesh.draw()?;
        for (k, name) in self.names.iter().enumerate() {
            let (y0, y1) = band(k);
            let (_, cy) = chart.backend_coord(&(0.0, (y0 + y1) / 2.0));
            let (x0, _) = chart.backend_coord(&(0.0, 0.0));
            root.draw(&Text::new(
                name.clone(),
                (x0 - 10, cy),
                anchored(LABEL_PX, HPos::Right, VPos::Center),
            ))?;
            let at = |e: usize| chart.backend_coord(&(e as f64, 0.0)).0;
            let (_, top) = chart.backend_coord(&(0.0, y1));
            let (_, bottom) = chart.backend_coord(&(0.0, y0));
            for &e in self.expected.get(k).map(Vec::as_slice).unwrap_or(&[]) {
                root.draw(&DashedPathElement::new(
                    vec![(at(e), top + 1), (at(e), bottom - 1)],
                    3,
                    3,
                    INK.stroke_width(2),
                ))?;
            }
            for &e in &self.events[k] {
                root.draw(&Rectangle::new(
                    [(at(e) - 2, top + 4), (at(e) + 2, bottom - 4)],
                    EVENT.filled(),
                ))?;
            }
        }
        if let Some(y) = self.titles.y {
            draw_y_title(root, y, (10, (Self::TOP + h as i32 - Self::BELOW) / 2))?;
        }
        let entries = [
            (Self::LEGEND[0].to_owned(), EVENT.filled(), false),
            (Self::LEGEND[1].to_owned(), INK.stroke_width(2), true),
        ];
        draw_legend(&legend, (0, Self::TOP + 8), &entries)?;
        // The legend's dashed swatch: overdraw the solid one with gaps.
        let cy = Self::TOP + 8 + 24 + 8;
        legend.draw(&PathElement::new(
            vec![(0, cy), (27, cy)],
            WHITE.stroke_width(3),
        ))?;
        legend.draw(&DashedPathElement::new(
            vec![(0, cy), (26, cy)],
            3,
            3,
            INK.stroke_width(2),
        ))
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
    font()?;
    if events.len() != names.len() || expected.len() > names.len() {
        return Err(shape(
            path,
            format!(
                "{} names, {} rows of events, {} rows of expected events",
                names.len(),
                events.len(),
                expected.len()
            ),
        ));
    }
    let titles = titles.into();
    let y_title = if titles.y.is_some() { 28 } else { 0 };
    let legend: Vec<String> = Events::LEGEND.iter().map(|s| (*s).to_owned()).collect();
    save(
        &Events {
            titles,
            names,
            events,
            expected,
            length,
            left: 16 + y_title + widest(names, LABEL_PX) + 12,
            legend_w: legend_width(&legend),
        },
        path,
    )
}

// ------------------------------------------------------------------------------------------
// Grouped horizontal bars

struct Bars<'a> {
    titles: Titles<'a>,
    categories: &'a [String],
    names: &'a [String],
    values: &'a [Vec<f64>],
    left: i32,
    bar_h: i32,
    legend_w: i32,
}

impl Bars<'_> {
    const TOP: i32 = 56;
    const GAP: i32 = 14;
    const PLOT_W: i32 = 720;
    const BELOW: i32 = 60;

    fn group_h(&self) -> i32 {
        self.bar_h * self.names.len().max(1) as i32 + Self::GAP
    }
}

impl Chart for Bars<'_> {
    fn size(&self) -> (u32, u32) {
        let w = self.left + Self::PLOT_W + 50 + self.legend_w;
        let h = Self::TOP + self.group_h() * self.categories.len().max(1) as i32 + Self::BELOW;
        (w as u32, h as u32)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        draw_title(root, self.titles.title)?;
        let (w, h) = root.dim_in_pixel();
        let (plot, legend) = root.split_horizontally(w as i32 - self.legend_w);
        let groups = self.categories.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&plot)
            .margin_top(Self::TOP)
            .margin_right(50)
            .margin_bottom(10)
            .x_label_area_size(Self::BELOW - 10)
            .y_label_area_size(self.left)
            .build_cartesian_2d(0f64..1f64, 0f64..groups)?;
        let mut mesh = chart.configure_mesh();
        mesh.disable_y_mesh()
            .y_labels(0)
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .label_style(style(TICK_PX))
            .axis_desc_style(style(LABEL_PX))
            .x_labels(11)
            .x_label_formatter(&|v| format!("{v:.1}"));
        if let Some(x) = self.titles.x {
            mesh.x_desc(x);
        }
        mesh.draw()?;
        // Group g spans [groups - g - 1, groups - g] (the first category on top); within it,
        // bar k sits k bars below the group's top, after half a gap.
        let (x0, y_top) = chart.backend_coord(&(0.0, groups));
        let (_, y_bottom) = chart.backend_coord(&(0.0, 0.0));
        let px_per_group = (y_bottom - y_top) as f64 / groups;
        let show_values = self.bar_h >= 11;
        for (g, cat) in self.categories.iter().enumerate() {
            let gy = y_top as f64 + g as f64 * px_per_group;
            root.draw(&Text::new(
                cat.clone(),
                (x0 - 10, (gy + px_per_group / 2.0) as i32),
                anchored(LABEL_PX, HPos::Right, VPos::Center),
            ))?;
            for (k, row) in self.values.iter().enumerate() {
                let ya = (gy + f64::from(Self::GAP) / 2.0) as i32 + k as i32 * self.bar_h;
                let yb = ya + self.bar_h - 1;
                let v = row[g];
                if !v.is_finite() {
                    root.draw(&Text::new(
                        "n/a".to_owned(),
                        (x0 + 4, (ya + yb) / 2),
                        anchored(VALUE_PX, HPos::Left, VPos::Center),
                    ))?;
                    continue;
                }
                let (xv, _) = chart.backend_coord(&(v.clamp(0.0, 1.0), 0.0));
                root.draw(&Rectangle::new(
                    [(x0 + 1, ya), (xv.max(x0 + 2), yb)],
                    PALETTE[k % PALETTE.len()].filled(),
                ))?;
                if show_values {
                    root.draw(&Text::new(
                        format!("{v:.2}"),
                        (xv + 4, (ya + yb) / 2),
                        anchored(VALUE_PX, HPos::Left, VPos::Center),
                    ))?;
                }
            }
        }
        if let Some(y) = self.titles.y {
            draw_y_title(root, y, (10, (Self::TOP + h as i32 - Self::BELOW) / 2))?;
        }
        let entries: Vec<_> = self
            .names
            .iter()
            .enumerate()
            .map(|(k, n)| (n.clone(), PALETTE[k % PALETTE.len()].filled(), false))
            .collect();
        draw_legend(&legend, (0, Self::TOP + 8), &entries)
    }
}

/// Grouped bar chart, bars horizontal: one group per category (labelled on the left, the first
/// on top), one bar per series in the legend's order, values in [0, 1] written next to the
/// bars when there is room (a non-finite value is marked `n/a`).
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
    font()?;
    if values.len() != names.len() {
        return Err(shape(
            path,
            format!("{} rows of values for {} names", values.len(), names.len()),
        ));
    }
    if let Some((k, r)) = values
        .iter()
        .enumerate()
        .find(|(_, r)| r.len() != categories.len())
    {
        return Err(shape(
            path,
            format!(
                "series {k} ({}) has {} values for {} categories",
                names[k],
                r.len(),
                categories.len()
            ),
        ));
    }
    let titles = titles.into();
    let y_title = if titles.y.is_some() { 28 } else { 0 };
    let bar_h = match names.len() {
        0..=4 => 18,
        5..=8 => 13,
        _ => 11,
    };
    save(
        &Bars {
            titles,
            categories,
            names,
            values,
            left: 16 + y_title + widest(categories, LABEL_PX) + 12,
            bar_h,
            legend_w: legend_width(names),
        },
        path,
    )
}

#[cfg(test)]
mod tests;
