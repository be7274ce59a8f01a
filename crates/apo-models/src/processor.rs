//! Qwen2-VL's image processor (transformers' `Qwen2VLImageProcessorPil`, also used by Qwen2.5-VL)
//! and the [`Processor`] that joins it with the chat template and the tokenizer.
//!
//! An image goes through the steps of the PIL backend: conversion to RGB (transparency composited
//! onto white as PIL's `alpha_composite` does), a resize to the [`smart_resize`] size with Pillow's
//! own resampling (`ImagingResample`: separable, antialiased, 22-bit fixed-point coefficients,
//! rounding to 8 bits after each pass; reproduced here bit for bit), rescaling and normalisation in
//! the same floating-point types as NumPy, and the flattening into patches of
//! `channels * temporal_patch_size * patch_size²` values in the order the vision tower reads them.

use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder as _};
use serde_json::Value;

use crate::chat::{ChatTemplate, Message};
use crate::error::{ModelError, Result};
use crate::tokenizer::{Tokenizer, read_json};

/// The hub's image-processor file.
pub const PREPROCESSOR_CONFIG_FILE: &str = "preprocessor_config.json";
/// transformers 5's processor file (the image processor's settings under `"image_processor"`).
pub const PROCESSOR_CONFIG_FILE: &str = "processor_config.json";

/// `OPENAI_CLIP_MEAN`, transformers' default `image_mean` for Qwen2-VL.
pub const OPENAI_CLIP_MEAN: [f64; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// `OPENAI_CLIP_STD`, transformers' default `image_std` for Qwen2-VL.
pub const OPENAI_CLIP_STD: [f64; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// Pillow's resampling filters, by their `PIL.Image.Resampling` codes (the `resample` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    /// `LANCZOS` (1): windowed sinc, support 3.
    Lanczos,
    /// `BILINEAR` (2): triangle, support 1.
    Bilinear,
    /// `BICUBIC` (3): cubic convolution with `a = -0.5`, support 2 (Qwen2-VL's filter).
    Bicubic,
    /// `BOX` (4): support 0.5.
    Box,
    /// `HAMMING` (5): Hamming-windowed sinc, support 1.
    Hamming,
}

impl Resample {
    /// The filter for a `PIL.Image.Resampling` code; `NEAREST` (0) is not implemented.
    pub fn from_pil_code(code: i64) -> Option<Self> {
        match code {
            1 => Some(Self::Lanczos),
            2 => Some(Self::Bilinear),
            3 => Some(Self::Bicubic),
            4 => Some(Self::Box),
            5 => Some(Self::Hamming),
            _ => None,
        }
    }

    /// The filter's support (half-width) at scale 1, as in Pillow.
    fn support(self) -> f64 {
        match self {
            Self::Box => 0.5,
            Self::Bilinear | Self::Hamming => 1.0,
            Self::Bicubic => 2.0,
            Self::Lanczos => 3.0,
        }
    }

    /// The filter's kernel, as Pillow's `Resample.c` computes it.
    fn kernel(self, x: f64) -> f64 {
        match self {
            Self::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Self::Bilinear => {
                let x = x.abs();
                if x < 1.0 { 1.0 - x } else { 0.0 }
            }
            Self::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    // Pillow writes the window's constants as floats (`0.54f`, `0.46f`).
                    x.sin() / x * (f64::from(0.54_f32) + f64::from(0.46_f32) * x.cos())
                }
            }
            Self::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Self::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

/// `sin(πx)/(πx)` as Pillow computes it.
fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let x = x * std::f64::consts::PI;
    x.sin() / x
}

/// One image's patches, as transformers' `pixel_values` rows for that image.
#[derive(Debug, Clone, PartialEq)]
pub struct PixelValues {
    /// `patches * patch_dim` values, row-major.
    pub data: Vec<f32>,
    /// Number of rows (`grid_t * grid_h * grid_w`).
    pub patches: usize,
    /// Values per row (`channels * temporal_patch_size * patch_size²`, 1176 for Qwen2-VL).
    pub patch_dim: usize,
    /// `image_grid_thw`: the patch grid in time, height and width.
    pub grid_thw: [usize; 3],
}

impl PixelValues {
    /// The number of image tokens the language model sees (`t * h * w / merge²`), i.e. how many
    /// `<|image_pad|>` placeholders the processor puts in the text; 0 when `merge` is 0.
    pub fn tokens(&self, merge: usize) -> usize {
        let [t, h, w] = self.grid_thw;
        (t * h * w).checked_div(merge * merge).unwrap_or(0)
    }
}

/// Transformers' `smart_resize`: the `(height, width)` closest to the input's, both multiples of
/// `factor`, with `min_pixels <= height * width <= max_pixels` where the aspect ratio allows it.
///
/// # Errors
/// [`ModelError::Input`] for an aspect ratio above 200 (as transformers), an empty image, a zero
/// `factor` or `max_pixels`, or a result with a zero side.
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Result<(usize, usize)> {
    if height == 0 || width == 0 {
        return Err(ModelError::Input(format!(
            "cannot resize an empty image ({height}x{width})"
        )));
    }
    if factor == 0 || max_pixels == 0 {
        return Err(ModelError::Input(format!(
            "smart_resize: factor ({factor}) and max_pixels ({max_pixels}) must be positive"
        )));
    }
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    let ratio = h.max(w) / h.min(w);
    if ratio > 200.0 {
        return Err(ModelError::Input(format!(
            "absolute aspect ratio must be smaller than 200, got {ratio} ({height}x{width})"
        )));
    }
    // Python's `round` rounds halves to even.
    let round = |x: f64| x.round_ties_even() as usize;
    let mut h_bar = round(h / f) * factor;
    let mut w_bar = round(w / f) * factor;
    let area = |a: usize, b: usize| (a as u128) * (b as u128);
    if area(h_bar, w_bar) > max_pixels as u128 {
        let beta = ((height as u128 * width as u128) as f64 / max_pixels as f64).sqrt();
        h_bar = factor.max((h / beta / f).floor() as usize * factor);
        w_bar = factor.max((w / beta / f).floor() as usize * factor);
    } else if area(h_bar, w_bar) < min_pixels as u128 {
        let beta = (min_pixels as f64 / (height as u128 * width as u128) as f64).sqrt();
        h_bar = (h * beta / f).ceil() as usize * factor;
        w_bar = (w * beta / f).ceil() as usize * factor;
    }
    if h_bar == 0 || w_bar == 0 {
        return Err(ModelError::Input(format!(
            "image of {height}x{width} is too small: it resizes to {h_bar}x{w_bar}"
        )));
    }
    Ok((h_bar, w_bar))
}

/// Transformers' Qwen2-VL image processor (PIL backend) with a checkpoint's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessor {
    config_path: Option<PathBuf>,
    do_resize: bool,
    resample: Resample,
    min_pixels: usize,
    max_pixels: usize,
    do_rescale: bool,
    rescale_factor: f64,
    do_normalize: bool,
    image_mean: [f32; 3],
    image_std: [f32; 3],
    do_convert_rgb: bool,
    patch_size: usize,
    temporal_patch_size: usize,
    merge_size: usize,
}

/// The name transformers gives this class.
pub type Qwen2VLImageProcessor = ImageProcessor;

impl Default for ImageProcessor {
    /// transformers' class defaults.
    fn default() -> Self {
        Self {
            config_path: None,
            do_resize: true,
            resample: Resample::Bicubic,
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: OPENAI_CLIP_MEAN.map(|v| v as f32),
            image_std: OPENAI_CLIP_STD.map(|v| v as f32),
            do_convert_rgb: true,
            patch_size: 14,
            temporal_patch_size: 2,
            merge_size: 2,
        }
    }
}

/// Field access on a JSON object, with errors naming the file and field.
struct Fields<'a> {
    path: &'a Path,
    map: &'a serde_json::Map<String, Value>,
    prefix: &'a str,
}

impl Fields<'_> {
    fn error(&self, name: &str, message: impl std::fmt::Display) -> ModelError {
        ModelError::Json {
            path: self.path.to_path_buf(),
            message: format!("field \"{}{name}\": {message}", self.prefix),
        }
    }

    /// The value, `None` for absent or `null` (transformers then uses the class default).
    fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn bool(&self, name: &str) -> Result<Option<bool>> {
        self.get(name)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| self.error(name, format!("expected a boolean, found {v}")))
            })
            .transpose()
    }

    fn f64(&self, name: &str) -> Result<Option<f64>> {
        self.get(name)
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| self.error(name, format!("expected a number, found {v}")))
            })
            .transpose()
    }

    fn usize_of(&self, name: &str, v: &Value) -> Result<usize> {
        if let Some(n) = v.as_u64() {
            return usize::try_from(n).map_err(|_| self.error(name, format!("{n} is too large")));
        }
        match v.as_f64() {
            Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 9.0e15 => Ok(f as usize),
            _ => Err(self.error(name, format!("expected a non-negative integer, found {v}"))),
        }
    }

    fn usize(&self, name: &str) -> Result<Option<usize>> {
        self.get(name).map(|v| self.usize_of(name, v)).transpose()
    }

    fn positive(&self, name: &str) -> Result<Option<usize>> {
        match self.usize(name)? {
            Some(0) => Err(self.error(name, "must be positive")),
            other => Ok(other),
        }
    }

    /// `image_mean` / `image_std`: three numbers or one for all channels.
    fn triple(&self, name: &str) -> Result<Option<[f32; 3]>> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        if let Some(x) = v.as_f64() {
            return Ok(Some([x as f32; 3]));
        }
        let list = v
            .as_array()
            .ok_or_else(|| self.error(name, format!("expected a list of 3 numbers, found {v}")))?;
        if list.len() != 3 {
            return Err(self.error(
                name,
                format!("expected 3 values (RGB), found {}", list.len()),
            ));
        }
        let mut out = [0.0_f32; 3];
        for (slot, item) in out.iter_mut().zip(list) {
            *slot = item
                .as_f64()
                .ok_or_else(|| self.error(name, format!("expected a number, found {item}")))?
                as f32;
        }
        Ok(Some(out))
    }
}

impl ImageProcessor {
    /// Reads the image-processor settings of a checkpoint folder: the `"image_processor"` object of
    /// `processor_config.json` when there is one (transformers 5 layout; transformers prefers
    /// it), else `preprocessor_config.json`. Absent or `null` fields take transformers' defaults;
    /// the pixel bounds come from `min_pixels` / `max_pixels`, else
    /// `size.shortest_edge` / `size.longest_edge` (else `size.min_pixels` / `size.max_pixels`).
    ///
    /// # Errors
    /// [`ModelError::Io`] when neither file exists or one cannot be read, [`ModelError::Json`] for
    /// a malformed file or field, a zero size, or an unsupported `resample`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let processor_path = dir.join(PROCESSOR_CONFIG_FILE);
        if processor_path.is_file() {
            let json = read_json(&processor_path)?;
            if let Some(nested) = json.get("image_processor") {
                let map = nested.as_object().ok_or_else(|| ModelError::Json {
                    path: processor_path.clone(),
                    message: "field \"image_processor\": expected an object".into(),
                })?;
                return Self::from_config(&processor_path, map, "image_processor.");
            }
        }
        let path = dir.join(PREPROCESSOR_CONFIG_FILE);
        if !path.is_file() {
            return Err(ModelError::Io {
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "no image-processor config (neither this file nor an \"image_processor\" entry in {PROCESSOR_CONFIG_FILE})"
                    ),
                ),
            });
        }
        let json = read_json(&path)?;
        let map = json.as_object().ok_or_else(|| ModelError::Json {
            path: path.clone(),
            message: "expected a JSON object".into(),
        })?;
        Self::from_config(&path, map, "")
    }

    /// Builds the processor from an image-processor config object (`path` and `prefix` name it
    /// in errors).
    fn from_config(
        path: &Path,
        map: &serde_json::Map<String, Value>,
        prefix: &str,
    ) -> Result<Self> {
        let f = Fields { path, map, prefix };
        let d = Self::default();
        let size = match f.get("size") {
            None => None,
            Some(Value::Object(size)) => Some(size),
            Some(other) => {
                return Err(f.error("size", format!("expected an object, found {other}")));
            }
        };
        let size_field = |name: &str| -> Result<Option<usize>> {
            match size.and_then(|s| s.get(name)).filter(|v| !v.is_null()) {
                None => Ok(None),
                Some(v) => f.usize_of(&format!("size.{name}"), v).map(Some),
            }
        };
        let min_pixels = match f.usize("min_pixels")? {
            Some(v) => v,
            None => size_field("shortest_edge")?
                .or(size_field("min_pixels")?)
                .unwrap_or(d.min_pixels),
        };
        let max_pixels = match f.usize("max_pixels")? {
            Some(v) => v,
            None => size_field("longest_edge")?
                .or(size_field("max_pixels")?)
                .unwrap_or(d.max_pixels),
        };
        if max_pixels == 0 {
            return Err(f.error("max_pixels", "must be positive"));
        }
        let resample = match f.get("resample") {
            None => d.resample,
            Some(v) => {
                let code = v.as_i64().ok_or_else(|| {
                    f.error(
                        "resample",
                        format!("expected a PIL resampling code, found {v}"),
                    )
                })?;
                Resample::from_pil_code(code).ok_or_else(|| {
                    f.error(
                        "resample",
                        format!("PIL resampling code {code} is not supported (1-5: lanczos, bilinear, bicubic, box, hamming)"),
                    )
                })?
            }
        };
        Ok(Self {
            config_path: Some(path.to_path_buf()),
            do_resize: f.bool("do_resize")?.unwrap_or(d.do_resize),
            resample,
            min_pixels,
            max_pixels,
            do_rescale: f.bool("do_rescale")?.unwrap_or(d.do_rescale),
            rescale_factor: f.f64("rescale_factor")?.unwrap_or(d.rescale_factor),
            do_normalize: f.bool("do_normalize")?.unwrap_or(d.do_normalize),
            image_mean: f.triple("image_mean")?.unwrap_or(d.image_mean),
            image_std: f.triple("image_std")?.unwrap_or(d.image_std),
            do_convert_rgb: f.bool("do_convert_rgb")?.unwrap_or(d.do_convert_rgb),
            patch_size: f.positive("patch_size")?.unwrap_or(d.patch_size),
            temporal_patch_size: f
                .positive("temporal_patch_size")?
                .unwrap_or(d.temporal_patch_size),
            merge_size: f.positive("merge_size")?.unwrap_or(d.merge_size),
        })
    }

    /// The spatial patch size of the vision tower (14).
    pub fn patch_size(&self) -> usize {
        self.patch_size
    }

    /// Frames per temporal patch (2); a still image is repeated this many times.
    pub fn temporal_patch_size(&self) -> usize {
        self.temporal_patch_size
    }

    /// Patches merged into one language-model token per side (2).
    pub fn merge_size(&self) -> usize {
        self.merge_size
    }

    /// The lower bound on the resized pixel count (`size.shortest_edge`, `min_pixels`).
    pub fn min_pixels(&self) -> usize {
        self.min_pixels
    }

    /// The upper bound on the resized pixel count (`size.longest_edge`, `max_pixels`).
    pub fn max_pixels(&self) -> usize {
        self.max_pixels
    }

    /// The resampling filter.
    pub fn resample(&self) -> Resample {
        self.resample
    }

    /// The file the settings came from (`None` for [`ImageProcessor::default`]).
    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }

    /// The size an image of `height x width` is resized to (itself when `do_resize` is off).
    ///
    /// # Errors
    /// See [`smart_resize`].
    pub fn target_size(&self, height: usize, width: usize) -> Result<(usize, usize)> {
        if self.do_resize {
            smart_resize(
                height,
                width,
                self.patch_size * self.merge_size,
                self.min_pixels,
                self.max_pixels,
            )
        } else {
            Ok((height, width))
        }
    }

    /// Decodes an image file (EXIF orientation applied, as transformers' `load_image` does) and
    /// preprocesses it.
    ///
    /// # Errors
    /// [`ModelError::Io`] when the file cannot be opened, [`ModelError::Image`] naming the file
    /// when it does not decode, and the errors of [`ImageProcessor::preprocess`].
    pub fn open(&self, path: impl AsRef<Path>) -> Result<PixelValues> {
        let image = open_image(path.as_ref())?;
        self.preprocess(&image)
    }

    /// Turns one image into its patches as transformers' processor does.
    ///
    /// # Errors
    /// [`ModelError::Input`] for a size [`smart_resize`] rejects, or, with `do_resize` off, sides
    /// that are not multiples of `patch_size * merge_size` (or an image that is not RGB with
    /// `do_convert_rgb` off).
    pub fn preprocess(&self, image: &DynamicImage) -> Result<PixelValues> {
        let (width, height) = (image.width() as usize, image.height() as usize);
        let rgb = if self.do_convert_rgb {
            to_rgb(image)
        } else {
            match image {
                DynamicImage::ImageRgb8(buf) => buf.as_raw().clone(),
                other => {
                    return Err(ModelError::Input(format!(
                        "the image is {:?}, not 8-bit RGB, and do_convert_rgb is off",
                        other.color()
                    )));
                }
            }
        };
        let (new_h, new_w) = self.target_size(height, width)?;
        let pixels = if (new_h, new_w) == (height, width) {
            rgb
        } else {
            resample_rgb(&rgb, width, height, new_w, new_h, self.resample)
        };
        let chw = self.normalize(&pixels, new_h, new_w);
        self.patchify(&chw, new_h, new_w)
    }

    /// Rescale and normalise an interleaved RGB image into a `[3, h, w]` plane layout, in the
    /// types NumPy uses (`uint8 * scale` in float64, cast to float32; `(x - mean) / std` in float32).
    fn normalize(&self, rgb: &[u8], height: usize, width: usize) -> Vec<f32> {
        let plane = height * width;
        let mut out = vec![0.0_f32; 3 * plane];
        for (i, px) in rgb.chunks_exact(3).enumerate() {
            for (c, &v) in px.iter().enumerate() {
                let mut x = if self.do_rescale {
                    (f64::from(v) * self.rescale_factor) as f32
                } else {
                    f32::from(v)
                };
                if self.do_normalize {
                    x = (x - self.image_mean[c]) / self.image_std[c];
                }
                out[c * plane + i] = x;
            }
        }
        out
    }

    /// The PIL backend's `patchify`: `[C, H, W]` → rows of `C * tp * p * p` values, rows ordered
    /// by merge block (`gh/m, gw/m, m, m`), each frame repeated `temporal_patch_size` times.
    fn patchify(&self, chw: &[f32], height: usize, width: usize) -> Result<PixelValues> {
        let (p, m, tp) = (self.patch_size, self.merge_size, self.temporal_patch_size);
        let unit = p * m;
        if !height.is_multiple_of(unit) || !width.is_multiple_of(unit) {
            return Err(ModelError::Input(format!(
                "an image of {height}x{width} cannot be cut into {p}-pixel patches merged {m}x{m} (sides must be multiples of {unit})"
            )));
        }
        let channels = 3;
        let (gh, gw) = (height / p, width / p);
        let patch_dim = channels * tp * p * p;
        let patches = gh * gw;
        let mut data = Vec::with_capacity(patches * patch_dim);
        let plane = height * width;
        for bh in 0..gh / m {
            for bw in 0..gw / m {
                for mh in 0..m {
                    for mw in 0..m {
                        let y0 = (bh * m + mh) * p;
                        let x0 = (bw * m + mw) * p;
                        for c in 0..channels {
                            for _ in 0..tp {
                                for ph in 0..p {
                                    let start = c * plane + (y0 + ph) * width + x0;
                                    data.extend_from_slice(&chw[start..start + p]);
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(PixelValues {
            data,
            patches,
            patch_dim,
            grid_thw: [1, gh, gw],
        })
    }
}

/// Opens and decodes an image file, applying its EXIF orientation.
///
/// # Errors
/// [`ModelError::Io`] when the file cannot be opened, [`ModelError::Image`] when it does not decode.
pub fn open_image(path: &Path) -> Result<DynamicImage> {
    let image_error = |message: String| ModelError::Image {
        path: path.to_path_buf(),
        message,
    };
    let reader = image::ImageReader::open(path)
        .map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .with_guessed_format()
        .map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| image_error(e.to_string()))?;
    let orientation = decoder
        .orientation()
        .map_err(|e| image_error(e.to_string()))?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| image_error(e.to_string()))?;
    image.apply_orientation(orientation);
    Ok(image)
}

/// transformers' `convert_to_rgb` on a PIL image: grey replicated, transparency composited onto
/// white with Pillow's `alpha_composite` integer arithmetic. Returns interleaved RGB bytes.
fn to_rgb(image: &DynamicImage) -> Vec<u8> {
    match image {
        DynamicImage::ImageRgb8(buf) => buf.as_raw().clone(),
        DynamicImage::ImageLuma8(buf) => buf.as_raw().iter().flat_map(|&v| [v, v, v]).collect(),
        DynamicImage::ImageLumaA8(buf) => buf
            .as_raw()
            .chunks_exact(2)
            .flat_map(|la| {
                let v = composite_on_white(la[0], la[1]);
                [v, v, v]
            })
            .collect(),
        other if other.color().has_alpha() => other
            .to_rgba8()
            .as_raw()
            .chunks_exact(4)
            .flat_map(|px| {
                let a = px[3];
                [
                    composite_on_white(px[0], a),
                    composite_on_white(px[1], a),
                    composite_on_white(px[2], a),
                ]
            })
            .collect(),
        other => other.to_rgb8().into_raw(),
    }
}

/// One channel of Pillow's `ImagingAlphaComposite(white, src)`.
fn composite_on_white(src: u8, alpha: u8) -> u8 {
    const PRECISION_BITS: u32 = 7;
    let (s, a) = (u32::from(src), u32::from(alpha));
    if a == 0 {
        return 255;
    }
    let blend = 255 * (255 - a);
    let outa255 = a * 255 + blend;
    let coef1 = a * 255 * 255 * (1 << PRECISION_BITS) / outa255;
    let coef2 = 255 * (1 << PRECISION_BITS) - coef1;
    let tmp = s * coef1 + 255 * coef2 + (0x80 << PRECISION_BITS);
    let div255 = ((tmp >> 8) + tmp) >> 8;
    u8::try_from(div255 >> PRECISION_BITS).unwrap_or(u8::MAX)
}

/// Resizes an 8-bit RGB image exactly as Pillow's `Image.resize(size, resample=filter)` does
/// (no `reducing_gap`).
///
/// # Errors
/// [`ModelError::Input`] when either side of the input or the output is zero.
pub fn pil_resize(
    image: &image::RgbImage,
    width: u32,
    height: u32,
    filter: Resample,
) -> Result<image::RgbImage> {
    if image.width() == 0 || image.height() == 0 || width == 0 || height == 0 {
        return Err(ModelError::Input(format!(
            "cannot resize {}x{} to {width}x{height}",
            image.width(),
            image.height()
        )));
    }
    let out = resample_rgb(
        image.as_raw(),
        image.width() as usize,
        image.height() as usize,
        width as usize,
        height as usize,
        filter,
    );
    image::RgbImage::from_raw(width, height, out).ok_or_else(|| {
        ModelError::Input(format!("resize to {width}x{height}: buffer size mismatch"))
    })
}

/// Pillow's fixed-point precision for 8-bit images (`32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for one axis: per output sample the
/// first input index, the number of taps, and `ksize` fixed-point weights.
struct Coefficients {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

fn precompute_coeffs(in_size: usize, out_size: usize, filter: Resample) -> Coefficients {
    // box = (0, 0, in_size, in_size) in Pillow's float; `(double)(in1 - in0) / outSize`.
    let scale = f64::from(in_size as f32) / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0_i32; out_size * ksize];
    let mut k = vec![0.0_f64; ksize];
    let ss = 1.0 / filterscale;
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C's `(int)` truncates toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
        let xmin = usize::try_from(xmin).unwrap_or(0);
        let count = usize::try_from(xmax)
            .unwrap_or(0)
            .saturating_sub(xmin)
            .min(ksize);
        let mut ww = 0.0;
        for (x, slot) in k.iter_mut().enumerate().take(count) {
            let w = filter.kernel(((x + xmin) as f64 - center + 0.5) * ss);
            *slot = w;
            ww += w;
        }
        let one = f64::from(1_u32 << PRECISION_BITS);
        for (x, &w) in k.iter().enumerate().take(count) {
            let w = if ww != 0.0 { w / ww } else { w };
            weights[xx * ksize + x] = if w < 0.0 {
                (-0.5 + w * one) as i32
            } else {
                (0.5 + w * one) as i32
            };
        }
        bounds.push((xmin, count));
    }
    Coefficients {
        ksize,
        bounds,
        weights,
    }
}

/// Pillow's `clip8`: the accumulator (with its rounding half already added) shifted back to 8 bits.
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Channels of the interleaved images the resampler works on.
const CHANNELS: usize = 3;

/// Pillow's `ImagingResampleHorizontal_8bpc`: rows `first..first + rows` of `src` (`width` wide)
/// resampled to `coeffs.bounds.len()` columns.
fn horizontal_pass(
    src: &[u8],
    width: usize,
    first: usize,
    rows: usize,
    coeffs: &Coefficients,
) -> Vec<u8> {
    const C: usize = CHANNELS;
    let out_w = coeffs.bounds.len();
    let mut out = vec![0_u8; rows * out_w * C];
    for y in 0..rows {
        let row = &src[(y + first) * width * C..(y + first + 1) * width * C];
        for (xx, &(xmin, count)) in coeffs.bounds.iter().enumerate() {
            let k = &coeffs.weights[xx * coeffs.ksize..xx * coeffs.ksize + count];
            let mut acc = [1_i64 << (PRECISION_BITS - 1); C];
            for (x, &w) in k.iter().enumerate() {
                let px = &row[(xmin + x) * C..(xmin + x + 1) * C];
                for c in 0..C {
                    acc[c] += i64::from(px[c]) * i64::from(w);
                }
            }
            let o = (y * out_w + xx) * C;
            for c in 0..C {
                out[o + c] = clip8(acc[c]);
            }
        }
    }
    out
}

/// Pillow's `ImagingResampleVertical_8bpc`: `src` (`width` wide) resampled to
/// `coeffs.bounds.len()` rows, the bounds counted from `src`'s first row.
fn vertical_pass(src: &[u8], width: usize, coeffs: &Coefficients) -> Vec<u8> {
    const C: usize = CHANNELS;
    let out_h = coeffs.bounds.len();
    let mut out = vec![0_u8; out_h * width * C];
    for (yy, &(ymin, count)) in coeffs.bounds.iter().enumerate() {
        let k = &coeffs.weights[yy * coeffs.ksize..yy * coeffs.ksize + count];
        for xx in 0..width {
            let mut acc = [1_i64 << (PRECISION_BITS - 1); C];
            for (y, &w) in k.iter().enumerate() {
                let o = ((ymin + y) * width + xx) * C;
                for c in 0..C {
                    acc[c] += i64::from(src[o + c]) * i64::from(w);
                }
            }
            let o = (yy * width + xx) * C;
            for c in 0..C {
                out[o + c] = clip8(acc[c]);
            }
        }
    }
    out
}

/// Pillow's `ImagingResample` for an 8-bit RGB image (interleaved): two separable passes, each
/// rounded to 8 bits. Like Pillow (as installed with transformers 5.24), the vertical pass goes
/// first when the image shrinks vertically by more than twice the pixels it loses horizontally;
/// otherwise the horizontal pass goes first, over the source rows the vertical pass reads.
fn resample_rgb(
    src: &[u8],
    width: usize,
    height: usize,
    out_w: usize,
    out_h: usize,
    filter: Resample,
) -> Vec<u8> {
    let need_h = out_w != width;
    let need_v = out_h != height;
    match (need_h, need_v) {
        (false, false) => src.to_vec(),
        (true, false) => horizontal_pass(
            src,
            width,
            0,
            height,
            &precompute_coeffs(width, out_w, filter),
        ),
        (false, true) => vertical_pass(src, width, &precompute_coeffs(height, out_h, filter)),
        (true, true) => {
            let horiz = precompute_coeffs(width, out_w, filter);
            let mut vert = precompute_coeffs(height, out_h, filter);
            let shrink_v = height as i64 - out_h as i64;
            let shrink_h = width as i64 - out_w as i64;
            if shrink_v > 0 && shrink_v > 2 * shrink_h {
                let tmp = vertical_pass(src, width, &vert);
                horizontal_pass(&tmp, width, 0, out_h, &horiz)
            } else {
                let first = vert.bounds.first().map_or(0, |b| b.0);
                let last = vert.bounds.last().map_or(height, |b| b.0 + b.1);
                for b in &mut vert.bounds {
                    b.0 -= first;
                }
                let tmp = horizontal_pass(src, width, first, last - first, &horiz);
                vertical_pass(&tmp, out_w, &vert)
            }
        }
    }
}

/// A rendered, tokenized conversation with its images, ready for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The chat template's output (one placeholder per image, before expansion).
    pub text: String,
    /// The token ids, with each image placeholder expanded to that image's token count.
    pub ids: Vec<u32>,
    /// The images' patches, in the order the images appear in the messages.
    pub images: Vec<PixelValues>,
}

/// The chat template, tokenizer and image processor of one checkpoint, applied together as
/// transformers' `Qwen2VLProcessor` / `Qwen2_5_VLProcessor`.
#[derive(Debug)]
pub struct Processor {
    /// The checkpoint's chat template.
    pub template: ChatTemplate,
    /// The checkpoint's tokenizer.
    pub tokenizer: Tokenizer,
    /// The checkpoint's image processor.
    pub image_processor: ImageProcessor,
}

impl Processor {
    /// Loads the three parts from a checkpoint folder.
    ///
    /// # Errors
    /// Those of [`ChatTemplate::from_dir`], [`Tokenizer::from_dir`] and [`ImageProcessor::from_dir`].
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        Ok(Self {
            template: ChatTemplate::from_dir(dir)?,
            tokenizer: Tokenizer::from_dir(dir)?,
            image_processor: ImageProcessor::from_dir(dir)?,
        })
    }

    /// Renders `messages`, opens and preprocesses `image_paths` (one per [`crate::chat::Content::Image`], in
    /// message order) and tokenizes the text with each image's placeholder expanded.
    ///
    /// # Errors
    /// [`ModelError::Input`] when the number of image blocks and paths differ, and the errors of
    /// rendering, decoding ([`ModelError::Image`] naming the file) and tokenizing.
    pub fn prepare(
        &self,
        messages: &[Message],
        image_paths: &[PathBuf],
        add_generation_prompt: bool,
    ) -> Result<Prepared> {
        check_image_count(messages, image_paths.len())?;
        let images = image_paths
            .iter()
            .map(|p| self.image_processor.open(p))
            .collect::<Result<Vec<_>>>()?;
        self.prepare_with(messages, images, add_generation_prompt)
    }

    /// [`Processor::prepare`] with decoded images instead of paths.
    ///
    /// # Errors
    /// As [`Processor::prepare`].
    pub fn prepare_images(
        &self,
        messages: &[Message],
        images: &[DynamicImage],
        add_generation_prompt: bool,
    ) -> Result<Prepared> {
        check_image_count(messages, images.len())?;
        let images = images
            .iter()
            .map(|i| self.image_processor.preprocess(i))
            .collect::<Result<Vec<_>>>()?;
        self.prepare_with(messages, images, add_generation_prompt)
    }

    fn prepare_with(
        &self,
        messages: &[Message],
        images: Vec<PixelValues>,
        add_generation_prompt: bool,
    ) -> Result<Prepared> {
        let text = self.template.render(messages, add_generation_prompt)?;
        let merge = self.image_processor.merge_size();
        let counts: Vec<usize> = images.iter().map(|p| p.tokens(merge)).collect();
        let ids = self.tokenizer.encode(&text, &counts)?;
        Ok(Prepared { text, ids, images })
    }
}

/// The messages must hold exactly `given` image blocks.
fn check_image_count(messages: &[Message], given: usize) -> Result<()> {
    let wanted: usize = messages.iter().map(Message::image_count).sum();
    if wanted != given {
        return Err(ModelError::Input(format!(
            "the messages hold {wanted} image(s) but {given} were given"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_resize_matches_transformers() {
        // Values computed with transformers' smart_resize.
        assert_eq!(smart_resize(56, 56, 28, 3136, 1_003_520).unwrap(), (56, 56));
        assert_eq!(smart_resize(42, 70, 28, 3136, 1_003_520).unwrap(), (56, 56));
        assert_eq!(smart_resize(10, 10, 28, 3136, 1_003_520).unwrap(), (56, 56));
        assert_eq!(
            smart_resize(2000, 3000, 28, 3136, 1_003_520).unwrap(),
            (812, 1204)
        );
        assert_eq!(
            smart_resize(14, 2100, 28, 3136, 1_003_520).unwrap(),
            (28, 700)
        );
        assert_eq!(
            smart_resize(1000, 1000, 28, 3136, 1_003_520).unwrap(),
            (980, 980)
        );
        assert!(smart_resize(10, 2001, 28, 3136, 1_003_520).is_err());
        assert!(smart_resize(0, 10, 28, 3136, 1_003_520).is_err());
    }

    #[test]
    fn identity_coefficients() {
        let c = precompute_coeffs(10, 10, Resample::Bicubic);
        for (xx, &(xmin, count)) in c.bounds.iter().enumerate() {
            let taps = &c.weights[xx * c.ksize..xx * c.ksize + count];
            let one = taps.iter().position(|&w| w == 1 << PRECISION_BITS);
            assert_eq!(one.map(|i| i + xmin), Some(xx));
        }
    }

    #[test]
    fn composite_matches_pillow_edges() {
        assert_eq!(composite_on_white(0, 255), 0);
        assert_eq!(composite_on_white(200, 255), 200);
        assert_eq!(composite_on_white(0, 0), 255);
    }
}
