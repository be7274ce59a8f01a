//! Minimal PNG charts for reports a person reads at a glance: a heatmap with row and column
//! labels, line charts, and event strips. Text uses a built-in 5 × 7 pixel font (upper case,
//! digits and a little punctuation), so no font file is needed.

mod font;

use std::path::Path;

use image::{Rgb, RgbImage};

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const BLACK: Rgb<u8> = Rgb([20, 20, 20]);
const GREY: Rgb<u8> = Rgb([200, 200, 200]);

/// Distinct colours for series (twelve: seven teachers, two label rows, three students).
pub const PALETTE: [Rgb<u8>; 12] = [
    Rgb([31, 119, 180]),
    Rgb([255, 127, 14]),
    Rgb([44, 160, 44]),
    Rgb([214, 39, 40]),
    Rgb([148, 103, 189]),
    Rgb([140, 86, 75]),
    Rgb([227, 119, 194]),
    Rgb([127, 127, 127]),
    Rgb([188, 189, 34]),
    Rgb([23, 190, 207]),
    Rgb([0, 0, 0]),
    Rgb([255, 215, 0]),
];

/// A canvas with text drawing.
pub struct Canvas {
    img: RgbImage,
}

impl std::fmt::Debug for Canvas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Canvas({}x{})", self.img.width(), self.img.height())
    }
}

impl Canvas {
    /// A white canvas.
    pub fn new(w: u32, h: u32) -> Self {
        Canvas {
            img: RgbImage::from_pixel(w, h, WHITE),
        }
    }

    /// Sets a pixel if inside.
    pub fn put(&mut self, x: i64, y: i64, c: Rgb<u8>) {
        if x >= 0 && y >= 0 && (x as u32) < self.img.width() && (y as u32) < self.img.height() {
            self.img.put_pixel(x as u32, y as u32, c);
        }
    }

    /// Fills a rectangle.
    pub fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, c: Rgb<u8>) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.put(xx, yy, c);
            }
        }
    }

    /// Draws a line (Bresenham), `thick` pixels wide.
    pub fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb<u8>, thick: i64) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.rect(x - thick / 2, y - thick / 2, thick.max(1), thick.max(1), c);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Writes text with its top-left corner at (x, y), `scale` pixels per font pixel.
    pub fn text(&mut self, x: i64, y: i64, s: &str, scale: i64, c: Rgb<u8>) {
        for (i, ch) in s.chars().enumerate() {
            let glyph = font::glyph(ch);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..5 {
                    if bits & (1 << (4 - col)) != 0 {
                        self.rect(
                            x + (i as i64 * 6 + col) * scale,
                            y + row as i64 * scale,
                            scale,
                            scale,
                            c,
                        );
                    }
                }
            }
        }
    }

    /// Width in pixels of `s` at `scale`.
    pub fn text_width(s: &str, scale: i64) -> i64 {
        s.chars().count() as i64 * 6 * scale
    }

    /// Saves as PNG.
    ///
    /// # Errors
    /// The encoder's error, as text.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        self.img
            .save(path)
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Colour for a value in [0, 1]: white → dark red.
pub fn heat(v: f64) -> Rgb<u8> {
    let v = v.clamp(0.0, 1.0);
    let r = 255.0 - 90.0 * v;
    let g = 255.0 - 235.0 * v;
    let b = 255.0 - 225.0 * v;
    Rgb([r as u8, g as u8, b as u8])
}

/// A heatmap of `values[row][col]` in [0, 1] with labels and the values written in the cells.
pub fn heatmap(
    title: &str,
    rows: &[String],
    cols: &[String],
    values: &[Vec<f64>],
    path: &Path,
) -> Result<(), String> {
    let cell = 44i64;
    let left = rows
        .iter()
        .map(|r| Canvas::text_width(r, 2))
        .max()
        .unwrap_or(0)
        + 20;
    let top = 60
        + cols
            .iter()
            .map(|c| Canvas::text_width(c, 1))
            .max()
            .unwrap_or(0)
            .min(0);
    let label_h = 30;
    let w = left + cell * cols.len() as i64 + 20;
    let h = top + label_h + cell * rows.len() as i64 + 40;
    let mut c = Canvas::new(w as u32, h as u32);
    c.text(10, 12, title, 2, BLACK);
    for (j, col) in cols.iter().enumerate() {
        let x = left + j as i64 * cell;
        let short: String = col.chars().take(7).collect();
        c.text(x + 2, top + 4, &short, 1, BLACK);
    }
    for (i, row) in rows.iter().enumerate() {
        let y = top + label_h + i as i64 * cell;
        c.text(10, y + cell / 2 - 7, row, 2, BLACK);
        for (j, &v) in values[i].iter().enumerate() {
            let x = left + j as i64 * cell;
            if v.is_nan() {
                c.rect(x, y, cell - 2, cell - 2, GREY);
                continue;
            }
            c.rect(x, y, cell - 2, cell - 2, heat(v));
            let t = format!("{:.0}", v * 100.0);
            let fg = if v > 0.55 { WHITE } else { BLACK };
            c.text(
                x + (cell - 2 - Canvas::text_width(&t, 2)) / 2,
                y + cell / 2 - 8,
                &t,
                2,
                fg,
            );
        }
    }
    c.text(10, h - 24, "CELLS: PERCENT", 1, BLACK);
    c.save(path)
}

/// Line chart: one series per name, x = index, y = value, axes from 0 to the maxima.
pub fn lines(
    title: &str,
    x_label: &str,
    names: &[String],
    series: &[Vec<f64>],
    path: &Path,
) -> Result<(), String> {
    let (w, h) = (900i64, 520i64);
    let (left, right, top, bottom) = (70i64, 210i64, 50i64, 60i64);
    let mut c = Canvas::new(w as u32, h as u32);
    c.text(10, 12, title, 2, BLACK);
    let n = series.iter().map(Vec::len).max().unwrap_or(1).max(2);
    let ymax = series
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let px = |i: usize| left + (i as i64 * (w - left - right)) / (n as i64 - 1);
    let py = |v: f64| h - bottom - ((v / ymax) * (h - top - bottom) as f64) as i64;
    c.line((left, h - bottom), (w - right, h - bottom), BLACK, 2);
    c.line((left, top), (left, h - bottom), BLACK, 2);
    c.text(left - 60, top - 4, &format!("{ymax:.3}"), 1, BLACK);
    c.text(left - 20, h - bottom - 4, "0", 1, BLACK);
    c.text(left, h - bottom + 12, "0", 1, BLACK);
    c.text(
        w - right - 20,
        h - bottom + 12,
        &format!("{}", n - 1),
        1,
        BLACK,
    );
    c.text(left + 200, h - bottom + 30, x_label, 2, BLACK);
    for (k, (name, s)) in names.iter().zip(series).enumerate() {
        let col = PALETTE[k % PALETTE.len()];
        for i in 1..s.len() {
            if s[i - 1].is_finite() && s[i].is_finite() {
                c.line((px(i - 1), py(s[i - 1])), (px(i), py(s[i])), col, 3);
            }
        }
        c.rect(w - right + 15, top + 10 + k as i64 * 26, 16, 12, col);
        c.text(w - right + 38, top + 10 + k as i64 * 26, name, 1, BLACK);
    }
    c.save(path)
}

/// Event strips: one row per name along a stream of `length`, with a marker at every event
/// and dashed markers at `expected` positions (e.g. injected drift).
pub fn events(
    title: &str,
    names: &[String],
    events: &[Vec<usize>],
    expected: &[Vec<usize>],
    length: usize,
    path: &Path,
) -> Result<(), String> {
    let row_h = 34i64;
    let left = names
        .iter()
        .map(|r| Canvas::text_width(r, 2))
        .max()
        .unwrap_or(0)
        + 24;
    let (w, top) = (left + 760, 60i64);
    let h = top + row_h * names.len() as i64 + 60;
    let mut c = Canvas::new(w as u32, h as u32);
    c.text(10, 12, title, 2, BLACK);
    let x = |i: usize| left + (i as i64 * 740) / length.max(1) as i64;
    for (k, name) in names.iter().enumerate() {
        let y = top + k as i64 * row_h;
        c.text(10, y + 8, name, 2, BLACK);
        c.line((left, y + row_h / 2), (left + 740, y + row_h / 2), GREY, 1);
        for &e in expected.get(k).map(Vec::as_slice).unwrap_or(&[]) {
            for yy in (y + 2..y + row_h - 2).step_by(4) {
                c.rect(x(e), yy, 2, 2, BLACK);
            }
        }
        for &e in &events[k] {
            c.rect(x(e) - 3, y + 6, 7, row_h - 12, PALETTE[3]);
        }
    }
    c.text(left, h - 40, "0", 1, BLACK);
    c.text(left + 700, h - 40, &format!("{length}"), 1, BLACK);
    c.text(
        left + 120,
        h - 26,
        "RED: CHANGE POINTS   DOTTED: INJECTED",
        1,
        BLACK,
    );
    c.save(path)
}

/// Grouped bar chart: one group per category, one bar per series, values in [0, 1].
pub fn bars(
    title: &str,
    categories: &[String],
    names: &[String],
    values: &[Vec<f64>],
    path: &Path,
) -> Result<(), String> {
    let (w, h) = (1200i64, 560i64);
    let (left, right, top, bottom) = (60i64, 230i64, 50i64, 70i64);
    let mut c = Canvas::new(w as u32, h as u32);
    c.text(10, 12, title, 2, BLACK);
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    c.line((left, h - bottom), (w - right, h - bottom), BLACK, 2);
    c.line((left, top), (left, h - bottom), BLACK, 2);
    for tick in [0.25, 0.5, 0.75, 1.0] {
        let y = h - bottom - (tick * plot_h as f64) as i64;
        c.line((left - 4, y), (left, y), BLACK, 1);
        c.text(left - 44, y - 4, &format!("{tick:.2}"), 1, BLACK);
    }
    let groups = categories.len().max(1) as i64;
    let group_w = plot_w / groups;
    let bar_w = ((group_w - 10) / names.len().max(1) as i64).max(1);
    for (g, cat) in categories.iter().enumerate() {
        let x0 = left + g as i64 * group_w + 5;
        for (k, row) in values.iter().enumerate() {
            let v = row.get(g).copied().unwrap_or(0.0).clamp(0.0, 1.0);
            let bh = (v * plot_h as f64) as i64;
            c.rect(
                x0 + k as i64 * bar_w,
                h - bottom - bh,
                (bar_w - 1).max(1),
                bh,
                PALETTE[k % PALETTE.len()],
            );
        }
        let label: String = cat.chars().take(12).collect();
        c.text(x0, h - bottom + 12, &label, 1, BLACK);
    }
    for (k, name) in names.iter().enumerate() {
        c.rect(
            w - right + 15,
            top + 10 + k as i64 * 22,
            16,
            12,
            PALETTE[k % PALETTE.len()],
        );
        c.text(w - right + 38, top + 10 + k as i64 * 22, name, 1, BLACK);
    }
    c.save(path)
}
