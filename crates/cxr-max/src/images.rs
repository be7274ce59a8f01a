//! Image loading: JPEG or PNG, 8- or 16-bit, grayscale or RGB, to normalised grayscale at a
//! configured size, decoded in parallel, with a pixel-count limit against decompression bombs.

use std::path::{Path, PathBuf};

use image::{GenericImageView, ImageBuffer, Luma, imageops::FilterType};

use crate::{CxrError, Result};

/// How an image is brought to a square of `size × size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    /// Resize so the longer side is `size` (aspect preserved), then pad the shorter side
    /// symmetrically with black. Nothing is cut.
    #[default]
    Pad,
    /// Resize so the shorter side is `size` (aspect preserved), then cut the longer side
    /// symmetrically (centre crop). Nothing is padded.
    Crop,
}

/// Parameters of the [`ImageLoader`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageLoaderConfig {
    /// Output width and height. Default: 128.
    pub size: u32,
    /// Pad or centre crop. Default: pad.
    pub fit: Fit,
    /// Largest accepted `width × height` before decoding. Default: 50,000,000 (MIMIC-CXR-JPG
    /// images are at most about 4,000 × 4,000 = 16 M pixels).
    pub max_pixels: u64,
}

impl Default for ImageLoaderConfig {
    fn default() -> Self {
        ImageLoaderConfig {
            size: 128,
            fit: Fit::Pad,
            max_pixels: 50_000_000,
        }
    }
}

/// A square grayscale image with values in [0, 1], row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct GrayImage {
    /// Width and height.
    pub size: u32,
    /// `size × size` values in [0, 1].
    pub pixels: Vec<f32>,
}

/// Opens an image file with its format guessed from its bytes.
fn open_reader(path: &Path) -> Result<image::ImageReader<std::io::BufReader<std::fs::File>>> {
    let io = |source| CxrError::Io {
        path: path.to_owned(),
        source,
    };
    image::ImageReader::open(path)
        .map_err(io)?
        .with_guessed_format()
        .map_err(io)
}

/// Loads images as normalised grayscale squares.
///
/// # Examples
/// ```
/// use cxr_max::images::{ImageLoader, ImageLoaderConfig};
/// let dir = std::env::temp_dir().join("cxr-max-doc-images");
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("wide.png");
/// image::GrayImage::from_pixel(40, 20, image::Luma([255u8])).save(&path).unwrap();
/// let img = ImageLoader::new(ImageLoaderConfig { size: 8, ..Default::default() }).load(&path)?;
/// assert_eq!(img.pixels.len(), 64);
/// assert_eq!(img.pixels[0], 0.0);          // padding above the 8 × 4 picture
/// assert_eq!(img.pixels[8 * 4 + 3], 1.0);   // inside it
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ImageLoader {
    config: ImageLoaderConfig,
}

impl ImageLoader {
    /// A loader with `config`.
    pub fn new(config: ImageLoaderConfig) -> Self {
        ImageLoader { config }
    }

    /// The configuration.
    pub fn config(&self) -> &ImageLoaderConfig {
        &self.config
    }

    fn err(path: &Path, reason: impl Into<String>) -> CxrError {
        CxrError::Image {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    /// Reads only the header: `(width, height)`, checking the file is non-empty, of a known
    /// format, and within the pixel limit.
    ///
    /// # Errors
    /// [`CxrError::Io`] (missing file), [`CxrError::Image`] (empty, unknown format, too large).
    pub fn probe(&self, path: &Path) -> Result<(u32, u32)> {
        let meta = std::fs::metadata(path).map_err(|source| CxrError::Io {
            path: path.to_owned(),
            source,
        })?;
        if meta.len() == 0 {
            return Err(Self::err(path, "empty file (0 bytes)"));
        }
        let reader = open_reader(path)?;
        if reader.format().is_none() {
            return Err(Self::err(path, "not a JPEG or PNG image"));
        }
        let (w, h) = reader
            .into_dimensions()
            .map_err(|e| Self::err(path, format!("cannot read the image header: {e}")))?;
        if u64::from(w) * u64::from(h) > self.config.max_pixels {
            return Err(Self::err(
                path,
                format!(
                    "{w} × {h} pixels exceeds the limit of {} pixels",
                    self.config.max_pixels
                ),
            ));
        }
        if w == 0 || h == 0 {
            return Err(Self::err(path, format!("degenerate size {w} × {h}")));
        }
        Ok((w, h))
    }

    /// Decodes and resizes one image.
    ///
    /// # Errors
    /// As [`ImageLoader::probe`], and [`CxrError::Image`] for corrupt data.
    pub fn load(&self, path: &Path) -> Result<GrayImage> {
        self.probe(path)?;
        let mut reader = open_reader(path)?;
        let mut limits = image::Limits::default();
        limits.max_alloc = Some(self.config.max_pixels.saturating_mul(16));
        reader.limits(limits);
        let img = reader
            .decode()
            .map_err(|e| Self::err(path, format!("cannot decode: {e}")))?;
        Ok(self.fit(&img))
    }

    fn fit(&self, img: &image::DynamicImage) -> GrayImage {
        let size = self.config.size;
        let (w, h) = img.dimensions();
        let luma: ImageBuffer<Luma<f32>, Vec<f32>> = img.to_luma32f();
        let (long, short) = (w.max(h) as f64, w.min(h) as f64);
        let scale = match self.config.fit {
            Fit::Pad => size as f64 / long,
            Fit::Crop => size as f64 / short,
        };
        let nw = ((w as f64 * scale).round() as u32).max(1);
        let nh = ((h as f64 * scale).round() as u32).max(1);
        let resized = image::imageops::resize(&luma, nw, nh, FilterType::Triangle);
        let mut pixels = vec![0.0f32; (size * size) as usize];
        // Offsets of the resized picture in the square (negative = cropped).
        let ox = (size as i64 - nw as i64) / 2;
        let oy = (size as i64 - nh as i64) / 2;
        for y in 0..size as i64 {
            let sy = y - oy;
            if sy < 0 || sy >= nh as i64 {
                continue;
            }
            for x in 0..size as i64 {
                let sx = x - ox;
                if sx < 0 || sx >= nw as i64 {
                    continue;
                }
                pixels[(y * size as i64 + x) as usize] =
                    resized.get_pixel(sx as u32, sy as u32)[0].clamp(0.0, 1.0);
            }
        }
        GrayImage { size, pixels }
    }

    /// Loads many images on all cores (the rayon pool); results are in input order.
    pub fn load_many(&self, paths: &[PathBuf]) -> Vec<Result<GrayImage>> {
        use rayon::prelude::*;
        paths.par_iter().map(|p| self.load(p)).collect()
    }
}
