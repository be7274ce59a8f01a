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
    /// Largest accepted decoded size in bytes (`width × height × channels × bytes per
    /// sample`, read from the header before decoding): a small 16-bit RGBA PNG can decode to
    /// hundreds of megabytes under the pixel limit. Default: 100,000,000 (a 4,000 × 4,000
    /// 8-bit RGB image is 48 MB, 16-bit grey 32 MB).
    pub max_decoded_bytes: u64,
}

impl Default for ImageLoaderConfig {
    fn default() -> Self {
        ImageLoaderConfig {
            size: 128,
            fit: Fit::Pad,
            max_pixels: 50_000_000,
            max_decoded_bytes: 100_000_000,
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

/// Checks that a JPEG's data reaches its end-of-image marker: walks the marker segments
/// and the entropy-coded data of every scan (progressive files have several). A file cut
/// anywhere before the marker fails, saying where the data stops.
pub(crate) fn jpeg_complete(bytes: &[u8]) -> std::result::Result<(), String> {
    let ends = |what: &str| {
        Err(format!(
            "the file ends {what}, before the end-of-image marker ({} bytes)",
            bytes.len()
        ))
    };
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Err("no start-of-image marker".to_owned());
    }
    let mut i = 2;
    loop {
        while i + 1 < bytes.len() && bytes[i] == 0xFF && bytes[i + 1] == 0xFF {
            i += 1;
        }
        if i + 1 >= bytes.len() {
            return ends("between segments");
        }
        if bytes[i] != 0xFF {
            return Err(format!(
                "expected a marker at byte {i}, found 0x{:02X}",
                bytes[i]
            ));
        }
        let marker = bytes[i + 1];
        i += 2;
        match marker {
            0xD9 => return Ok(()),
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        if i + 2 > bytes.len() {
            return ends(&format!("in the length of segment 0x{marker:02X}"));
        }
        let len = usize::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        if len < 2 {
            return Err(format!(
                "segment 0x{marker:02X} at byte {} has length {len}",
                i - 2
            ));
        }
        i += len;
        if i > bytes.len() {
            return ends(&format!("inside segment 0x{marker:02X}"));
        }
        if marker == 0xDA {
            // Entropy-coded data: 0xFF is followed by 0x00 (a stuffed byte), a restart marker
            // or fill; any other byte is the next marker.
            loop {
                let Some(at) = memchr::memchr(0xFF, &bytes[i..]) else {
                    return ends("inside the image data");
                };
                let j = i + at;
                match bytes.get(j + 1) {
                    None => return ends("inside the image data"),
                    Some(0x00 | 0xD0..=0xD7) => i = j + 2,
                    Some(0xFF) => i = j + 1,
                    Some(_) => {
                        i = j;
                        break;
                    }
                }
            }
        }
    }
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
        if reader.format() == Some(image::ImageFormat::Jpeg) {
            // The JPEG decoder fills the rows of a cut file with grey and returns Ok.
            let bytes = std::fs::read(path).map_err(|source| CxrError::Io {
                path: path.to_owned(),
                source,
            })?;
            jpeg_complete(&bytes).map_err(|e| Self::err(path, format!("truncated JPEG: {e}")))?;
        }
        let mut limits = image::Limits::default();
        limits.max_alloc = Some(self.config.max_decoded_bytes.saturating_mul(2));
        reader.limits(limits);
        let decoder = reader
            .into_decoder()
            .map_err(|e| Self::err(path, format!("cannot read the image header: {e}")))?;
        let bytes = image::ImageDecoder::total_bytes(&decoder);
        if bytes > self.config.max_decoded_bytes {
            let (w, h) = image::ImageDecoder::dimensions(&decoder);
            return Err(Self::err(
                path,
                format!(
                    "{w} × {h} pixels of {:?} decode to {bytes} bytes, over the limit of {} bytes",
                    image::ImageDecoder::color_type(&decoder),
                    self.config.max_decoded_bytes
                ),
            ));
        }
        let img = image::DynamicImage::from_decoder(decoder)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img =
            image::GrayImage::from_fn(w, h, |x, y| image::Luma([((x * 7 + y * 13) % 256) as u8]));
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
            .encode_image(&img)
            .unwrap();
        bytes
    }

    /// A JPEG cut after its header, or in the middle of its data, fails to load (the decoder
    /// alone returns grey rows for it); the whole file, and one with bytes after its end
    /// A small 16-bit RGBA PNG under the pixel limit whose decoded size is over the byte limit
    /// is refused from its header, before anything is decoded; under the limit it loads.
    #[test]
    fn decoded_bytes_are_bounded_not_only_pixels() {
        let path = std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/bad-inputs/png16-rgba-1000.png"
        ));
        let file_len = std::fs::metadata(&path).unwrap().len();
        assert!(file_len < 100_000, "a small file: {file_len} bytes");
        let tight = ImageLoader::new(ImageLoaderConfig {
            size: 16,
            max_decoded_bytes: 4_000_000,
            ..Default::default()
        });
        let e = tight.load(&path).unwrap_err().to_string();
        assert!(e.contains("8000000 bytes") && e.contains("4000000"), "{e}");
        let default = ImageLoader::new(ImageLoaderConfig {
            size: 16,
            ..Default::default()
        });
        assert_eq!(default.load(&path).unwrap().size, 16);
    }

    /// marker, load.
    #[test]
    fn a_truncated_jpeg_is_rejected() {
        let dir = std::env::temp_dir().join(format!("cxr-max-jpeg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bytes = jpeg(64, 48);
        let loader = ImageLoader::new(ImageLoaderConfig {
            size: 16,
            ..Default::default()
        });
        let whole = dir.join("whole.jpg");
        std::fs::write(&whole, &bytes).unwrap();
        assert_eq!(loader.load(&whole).unwrap().pixels.len(), 256);
        let padded = dir.join("padded.jpg");
        std::fs::write(&padded, [&bytes[..], &[0u8; 16]].concat()).unwrap();
        assert!(loader.load(&padded).is_ok());
        // The header ends where the scan's data starts, after the SOS segment.
        let sos = bytes.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        let header_end =
            sos + 2 + usize::from(u16::from_be_bytes([bytes[sos + 2], bytes[sos + 3]]));
        for cut in [
            header_end,
            header_end + (bytes.len() - header_end) / 2,
            bytes.len() - 2,
        ] {
            let path = dir.join(format!("cut-{cut}.jpg"));
            std::fs::write(&path, &bytes[..cut]).unwrap();
            assert!(loader.probe(&path).is_ok(), "the header alone is fine");
            let e = loader.load(&path).unwrap_err().to_string();
            assert!(
                e.contains("truncated JPEG: the file ends inside the image data"),
                "cut at {cut}: {e}"
            );
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn jpeg_walk_reports_cut_segments() {
        let bytes = jpeg(8, 8);
        assert_eq!(jpeg_complete(&bytes), Ok(()));
        assert!(
            jpeg_complete(&bytes[..4])
                .unwrap_err()
                .contains("in the length of segment")
        );
        assert!(
            jpeg_complete(&bytes[..30])
                .unwrap_err()
                .contains("inside segment 0x")
        );
        assert_eq!(
            jpeg_complete(b"GIF8").unwrap_err(),
            "no start-of-image marker"
        );
    }
}
