//! The one backend every chart is drawn on, twice: the PNG's pixels or the SVG. On the pixels,
//! text is rasterised glyph by glyph at each glyph's true position (side bearings, fractional
//! advances, kerning): plotters 0.3.7's own `ab_glyph` text drops every glyph's left side
//! bearing, which spaces letters unevenly ("Moon shot"). Everything else goes to plotters'
//! bitmap or SVG backend unchanged.

use std::io;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use plotters::prelude::{BitMapBackend, SVGBackend};
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend, DrawingErrorKind,
};

/// The PNG's pixels (their text drawn from the font) or the SVG.
pub(super) enum Canvas<'a> {
    Png(BitMapBackend<'a>, &'a FontRef<'static>),
    Svg(SVGBackend<'a>),
}

type Drawn = Result<(), DrawingErrorKind<io::Error>>;

/// A backend's error as an I/O error (the SVG backend's own kind).
fn other<E: std::error::Error + Send + Sync + 'static>(
    e: DrawingErrorKind<E>,
) -> DrawingErrorKind<io::Error> {
    match e {
        DrawingErrorKind::DrawingError(e) => DrawingErrorKind::DrawingError(io::Error::other(e)),
        DrawingErrorKind::FontError(e) => DrawingErrorKind::FontError(e),
    }
}

/// `$call` on the canvas' backend `$b`.
macro_rules! each {
    ($self:ident, $b:ident => $call:expr) => {
        match $self {
            Canvas::Png($b, _) => $call.map_err(other),
            Canvas::Svg($b) => $call,
        }
    };
}

impl DrawingBackend for Canvas<'_> {
    type ErrorType = io::Error;

    fn get_size(&self) -> (u32, u32) {
        match self {
            Canvas::Png(b, _) => b.get_size(),
            Canvas::Svg(b) => b.get_size(),
        }
    }

    fn ensure_prepared(&mut self) -> Drawn {
        each!(self, b => b.ensure_prepared())
    }

    fn present(&mut self) -> Drawn {
        each!(self, b => b.present())
    }

    fn draw_pixel(&mut self, at: BackendCoord, color: BackendColor) -> Drawn {
        each!(self, b => b.draw_pixel(at, color))
    }

    fn draw_line<S: BackendStyle>(&mut self, from: BackendCoord, to: BackendCoord, s: &S) -> Drawn {
        each!(self, b => b.draw_line(from, to, s))
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        a: BackendCoord,
        z: BackendCoord,
        s: &S,
        fill: bool,
    ) -> Drawn {
        each!(self, b => b.draw_rect(a, z, s, fill))
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        s: &S,
    ) -> Drawn {
        each!(self, b => b.draw_path(path, s))
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        c: BackendCoord,
        r: u32,
        s: &S,
        fill: bool,
    ) -> Drawn {
        each!(self, b => b.draw_circle(c, r, s, fill))
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        s: &S,
    ) -> Drawn {
        each!(self, b => b.fill_polygon(vert, s))
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Drawn {
        match self {
            Canvas::Png(b, font) => glyphs(b, font, text, style, pos).map_err(other),
            Canvas::Svg(b) => b.draw_text(text, style, pos),
        }
    }
}

/// Draws `text` on `b` from `font`. The text's box is its advance width by the font's ascent
/// to descent; the anchor places that box at `pos`, and the style's rotation turns it about
/// `pos`.
fn glyphs<B: DrawingBackend, S: BackendTextStyle>(
    b: &mut B,
    font: &FontRef<'static>,
    text: &str,
    style: &S,
    pos: BackendCoord,
) -> Result<(), DrawingErrorKind<B::ErrorType>> {
    let color = style.color();
    if color.alpha == 0.0 {
        return Ok(());
    }
    let scaled = font.as_scaled(PxScale::from(style.size() as f32));
    let kerned = |c: char, prev: &mut Option<_>| {
        let id = scaled.glyph_id(c);
        let kern = prev.map_or(0.0, |p| scaled.kern(p, id));
        *prev = Some(id);
        (id, kern)
    };
    let mut prev = None;
    let width: f32 = text
        .chars()
        .map(|c| {
            let (id, kern) = kerned(c, &mut prev);
            kern + scaled.h_advance(id)
        })
        .sum();
    let height = scaled.ascent() - scaled.descent();
    let anchor = style.anchor();
    let mut caret = match anchor.h_pos {
        HPos::Left => 0.0,
        HPos::Center => -width / 2.0,
        HPos::Right => -width,
    };
    let baseline = scaled.ascent()
        - match anchor.v_pos {
            VPos::Top => 0.0,
            VPos::Center => height / 2.0,
            VPos::Bottom => height,
        };
    let (w, h) = b.get_size();
    let mut coverage = Vec::new();
    let mut prev = None;
    for c in text.chars() {
        let (id, kern) = kerned(c, &mut prev);
        caret += kern;
        let glyph = id.with_scale_and_position(scaled.scale(), point(caret, baseline));
        caret += scaled.h_advance(id);
        let Some(outline) = font.outline_glyph(glyph) else {
            continue;
        };
        let min = outline.px_bounds().min;
        coverage.clear();
        outline
            .draw(|x, y, v| coverage.push((min.x as i32 + x as i32, min.y as i32 + y as i32, v)));
        for &(x, y, v) in coverage.iter().filter(|c| c.2 > 0.0) {
            let (x, y) = style.transform().transform(x, y);
            let (x, y) = (pos.0 + x, pos.1 + y);
            if x >= 0 && y >= 0 && x < w as i32 && y < h as i32 {
                let alpha = color.alpha * f64::from(v.min(1.0));
                b.draw_pixel(
                    (x, y),
                    BackendColor {
                        alpha,
                        rgb: color.rgb,
                    },
                )?;
            }
        }
    }
    Ok(())
}
