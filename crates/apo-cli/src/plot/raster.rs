//! The one backend every chart is drawn on, twice: the PNG's pixels or the SVG. On the pixels,
//! text is rasterised glyph by glyph at each glyph's true position (side bearings, fractional
//! advances, kerning): plotters 0.3.7's own `ab_glyph` text drops every glyph's left side
//! bearing, which spaces letters unevenly ("Moon shot"). Everything else goes to plotters'
//! bitmap or SVG backend unchanged.

use std::error::Error;
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

/// The bitmap backend's error as an I/O error (the SVG backend's own kind).
fn other<E: Error + Send + Sync + 'static>(e: DrawingErrorKind<E>) -> DrawingErrorKind<io::Error> {
    match e {
        DrawingErrorKind::DrawingError(e) => DrawingErrorKind::DrawingError(io::Error::other(e)),
        DrawingErrorKind::FontError(e) => DrawingErrorKind::FontError(e),
    }
}

/// Methods that call the same method of the canvas' backend.
macro_rules! delegate {
    ($(fn $name:ident $(<$($g:ident: $bound:path),+>)? ($($arg:ident: $t:ty),*);)+) => {$(
        fn $name $(<$($g: $bound),+>)? (&mut self, $($arg: $t),*) -> Drawn {
            match self {
                Canvas::Png(b, _) => b.$name($($arg),*).map_err(other),
                Canvas::Svg(b) => b.$name($($arg),*),
            }
        }
    )+};
}

impl DrawingBackend for Canvas<'_> {
    type ErrorType = io::Error;

    fn get_size(&self) -> (u32, u32) {
        match self {
            Canvas::Png(b, _) => b.get_size(),
            Canvas::Svg(b) => b.get_size(),
        }
    }

    delegate! {
        fn ensure_prepared();
        fn present();
        fn draw_pixel(at: BackendCoord, color: BackendColor);
        fn draw_line<S: BackendStyle>(from: BackendCoord, to: BackendCoord, s: &S);
        fn draw_rect<S: BackendStyle>(a: BackendCoord, z: BackendCoord, s: &S, fill: bool);
        fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(path: I, s: &S);
        fn draw_circle<S: BackendStyle>(c: BackendCoord, r: u32, s: &S, fill: bool);
        fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(vert: I, s: &S);
    }

    fn draw_text<S: BackendTextStyle>(&mut self, t: &str, st: &S, at: BackendCoord) -> Drawn {
        match self {
            Canvas::Png(b, font) => glyphs(b, font, t, st, at),
            Canvas::Svg(b) => b.draw_text(t, st, at),
        }
    }
}

/// Draws `text` on `b` from `font`. The text's box is its advance width by the font's ascent
/// to descent; the anchor places that box at `pos`, and the style's rotation turns it about
/// `pos`.
fn glyphs<S: BackendTextStyle>(
    b: &mut BitMapBackend,
    font: &FontRef,
    text: &str,
    style: &S,
    pos: BackendCoord,
) -> Drawn {
    let (color, transform) = (style.color(), style.transform());
    let scaled = font.as_scaled(PxScale::from(style.size() as f32));
    // Each glyph at its kerned offset; the caret ends at the text's advance width.
    let (mut caret, mut prev, mut placed) = (0.0, None, Vec::new());
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        caret += prev.map_or(0.0, |p| scaled.kern(p, id));
        placed.push((id, caret));
        caret += scaled.h_advance(id);
        prev = Some(id);
    }
    let dx = match style.anchor().h_pos {
        HPos::Left => 0.0,
        HPos::Center => -caret / 2.0,
        HPos::Right => -caret,
    };
    let height = scaled.ascent() - scaled.descent();
    let baseline = scaled.ascent()
        - match style.anchor().v_pos {
            VPos::Top => 0.0,
            VPos::Center => height / 2.0,
            VPos::Bottom => height,
        };
    for (id, x) in placed {
        let glyph = id.with_scale_and_position(scaled.scale(), point(dx + x, baseline));
        let Some(outline) = font.outline_glyph(glyph) else {
            continue;
        };
        // The bitmap skips pixels off the canvas.
        let (min, mut drawn) = (outline.px_bounds().min, Ok(()));
        outline.draw(|x, y, v| {
            let (x, y) = transform.transform(min.x as i32 + x as i32, min.y as i32 + y as i32);
            let alpha = color.alpha * f64::from(v.min(1.0));
            if v > 0.0 && drawn.is_ok() {
                let color = BackendColor {
                    alpha,
                    rgb: color.rgb,
                };
                drawn = b.draw_pixel((pos.0 + x, pos.1 + y), color);
            }
        });
        drawn.map_err(other)?;
    }
    Ok(())
}
