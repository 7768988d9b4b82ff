//! Decoding, camera frames and the model's preprocessing recipe.
//!
//! The reference is the pipeline the graphs were trained and exported with:
//! `PIL.Image.open → ImageOps.exif_transpose → convert("RGB") → torchvision Resize(short side,
//! bicubic|bilinear) → CenterCrop → ToTensor → Normalize`. The resampler ([`resample`])
//! reproduces Pillow's `Resample.c` (separable filter, horizontal pass first, coefficients in
//! 22-bit fixed point, intermediate rounding to 8 bits), so the normalised tensor matches PIL to
//! the last rounding step instead of differing by a pixel level here and there, as a generic
//! resizer would. Camera frames ([`frame`]: RGB, BGR, RGBA, gray, YUYV, NV12, I420, MJPEG) feed
//! the same resampler row by row, converted on the fly ([`yuv`]: OpenCV's integer YUV → RGB).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

use crate::error::{Error, Result};

pub mod augment;
pub mod frame;
mod jpeg;
mod resample;
mod yuv;

use frame::Rows;
pub use frame::{Colorimetry, FrameError, FrameRef, PixelFormat, YuvMatrix, YuvRange};
pub use jpeg::is_jpeg;
use resample::{Plan, Resampler};

/// Resampling filter of the resize step (Pillow's definitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    /// Keys cubic with a = −0.5, support 2 (PIL `BICUBIC`, CLIP's choice).
    Bicubic,
    /// Triangle, support 1 (PIL `BILINEAR`).
    Bilinear,
}

/// Resize the short side to `resize`, centre-crop `crop_size`², normalise with `mean`/`std`.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    pub resize: u32,
    pub crop_size: u32,
    pub interpolation: Interpolation,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Recipe {
    /// CLIP's recipe (OpenAI mean/std, bicubic, resize = crop = `size`).
    // The constants are written as OpenAI publishes them; f32 rounds them as torch does.
    #[allow(clippy::excessive_precision)]
    pub fn clip(size: u32) -> Recipe {
        Recipe {
            resize: size,
            crop_size: size,
            interpolation: Interpolation::Bicubic,
            mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            std: [0.268_629_54, 0.261_302_58, 0.275_777_11],
        }
    }

    /// Number of f32 values of one preprocessed image (3 × crop × crop, CHW).
    pub fn tensor_len(&self) -> usize {
        3 * self.crop_size as usize * self.crop_size as usize
    }
}

/// Guards applied before a single pixel is decoded.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest accepted width × height. Defends against decompression bombs: a 50 KB PNG can
    /// declare 100,000 × 100,000 pixels.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        // 64 MP covers any camera sensor on the market at full resolution.
        DecodeLimits {
            max_pixels: 64_000_000,
        }
    }
}

/// Reads an image file and returns it upright (EXIF orientation applied) as 8-bit RGB.
///
/// JPEG (recognised by its magic bytes, whatever the extension) is decoded with libjpeg-turbo's
/// algorithms and gives Pillow's pixels exactly ([`jpeg`]); a truncated JPEG is an error, as in
/// Pillow. Other formats go through the `image` crate. Grayscale is replicated, alpha dropped (as
/// PIL's `convert("RGB")`), 16-bit scaled to 8 bits, CMYK converted with Pillow's formula.
pub fn load_rgb(path: &Path, limits: &DecodeLimits) -> Result<RgbImage> {
    let file =
        std::fs::File::open(path).map_err(|e| Error::image(path, crate::error::io_reason(&e)))?;
    let mut reader = BufReader::new(file);
    let head = reader
        .fill_buf()
        .map_err(|e| Error::image(path, format!("cannot read: {e}")))?;
    if head.is_empty() {
        // Distinguish an empty file from a corrupt one: a camera that failed to write shows up here.
        return Err(Error::image(path, "empty file (0 bytes)"));
    }
    if jpeg::is_jpeg(head) {
        // libjpeg decodes from memory; the `image` crate's JPEG decoder also reads the whole file.
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| Error::image(path, format!("cannot read: {e}")))?;
        return decode_jpeg(&bytes, path, limits);
    }
    decode_rgb(reader, path, limits)
}

/// Decodes an in-memory image; `name` is used in error messages.
pub fn decode_rgb_bytes(bytes: &[u8], name: &Path, limits: &DecodeLimits) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(Error::image(name, "empty file (0 bytes)"));
    }
    if jpeg::is_jpeg(bytes) {
        return decode_jpeg(bytes, name, limits);
    }
    decode_rgb(std::io::Cursor::new(bytes), name, limits)
}

fn decode_jpeg(bytes: &[u8], path: &Path, limits: &DecodeLimits) -> Result<RgbImage> {
    let mut rgb = Vec::new();
    let (w, h) = decode_jpeg_upright(bytes, limits, &mut rgb).map_err(|r| Error::image(path, r))?;
    Ok(RgbImage::from_raw(w, h, rgb).expect("decoded buffer is w × h × 3"))
}

/// Decodes a JPEG into `rgb` (reused), upright; returns its size, or the reason it failed.
fn decode_jpeg_upright(
    bytes: &[u8],
    limits: &DecodeLimits,
    rgb: &mut Vec<u8>,
) -> std::result::Result<(u32, u32), String> {
    if bytes.is_empty() {
        return Err("empty (0 bytes)".into());
    }
    let (w, h, orientation) = jpeg::decode_into(bytes, limits, rgb)?;
    if orientation == image::metadata::Orientation::NoTransforms {
        return Ok((w, h));
    }
    let decoded = RgbImage::from_raw(w, h, std::mem::take(rgb)).expect("buffer is w × h × 3");
    let mut img = DynamicImage::ImageRgb8(decoded);
    img.apply_orientation(orientation);
    let upright = match img {
        DynamicImage::ImageRgb8(upright) => upright,
        other => other.to_rgb8(),
    };
    let size = upright.dimensions();
    *rgb = upright.into_raw();
    Ok(size)
}

/// The decompression-bomb guard, applied to the dimensions a file's header declares; the
/// reason it refuses them.
fn check_dimensions(w: u32, h: u32, limits: &DecodeLimits) -> std::result::Result<(), String> {
    let pixels = u64::from(w) * u64::from(h);
    if pixels > limits.max_pixels {
        return Err(format!(
            "{w}×{h} = {:.1} MP exceeds the {:.1} MP limit (decompression-bomb guard)",
            pixels as f64 / 1e6,
            limits.max_pixels as f64 / 1e6
        ));
    }
    if pixels == 0 {
        return Err(format!("image has no pixels ({w}×{h})"));
    }
    Ok(())
}

/// Formats other than JPEG, with the `image` crate.
fn decode_rgb<R: std::io::BufRead + std::io::Seek>(
    reader: R,
    path: &Path,
    limits: &DecodeLimits,
) -> Result<RgbImage> {
    let reader = ImageReader::new(reader)
        .with_guessed_format()
        .map_err(|e| Error::image(path, format!("cannot read: {e}")))?;
    if reader.format().is_none() {
        return Err(Error::image(
            path,
            "not a recognised image (expected JPEG, PNG, BMP, WebP or TIFF)",
        ));
    }
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| Error::image(path, format!("cannot decode: {e}")))?;
    let (w, h) = decoder.dimensions();
    check_dimensions(w, h, limits).map_err(|r| Error::image(path, r))?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder)
        .map_err(|e| Error::image(path, format!("cannot decode: {e}")))?;
    img.apply_orientation(orientation);
    Ok(match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    })
}

/// Turns images and camera frames into normalised CHW tensors with one recipe, reusing its
/// scratch buffers, so that after the first frame of a given size no allocation happens (raw
/// frame formats; decoding a JPEG allocates inside libjpeg).
#[derive(Debug, Clone)]
pub struct Preprocessor {
    recipe: Recipe,
    resampler: Resampler,
    /// The last JPEG frame's decoded RGB.
    jpeg_rgb: Vec<u8>,
}

impl Preprocessor {
    pub fn new(recipe: Recipe) -> Self {
        Preprocessor {
            recipe,
            resampler: Resampler::default(),
            jpeg_rgb: Vec::new(),
        }
    }

    pub fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    /// Writes the normalised `[3, crop, crop]` tensor of `img` into `out`.
    ///
    /// Equivalent to resizing the whole image with PIL and cropping, but only the pixels that
    /// survive the crop are computed. Panics if `out` does not hold 3 × crop × crop values or
    /// the image has no pixels; [`Preprocessor::run_frame`] returns errors instead.
    pub fn run(&mut self, img: &RgbImage, out: &mut [f32]) {
        let rows = rgb_rows(img);
        self.check_output(out).unwrap_or_else(|e| panic!("{e}"));
        let plan = center_crop(&self.recipe, rows.width(), rows.height());
        self.resampler.run(&self.recipe, &rows, plan, out);
    }

    /// [`Preprocessor::run`], mirrored left-right when `flip` (a centred crop commutes with the
    /// mirror, so this is the eval view of the mirrored image).
    pub fn run_mirrored(&mut self, img: &RgbImage, flip: bool, out: &mut [f32]) {
        let rows = rgb_rows(img);
        self.check_output(out).unwrap_or_else(|e| panic!("{e}"));
        let mut plan = center_crop(&self.recipe, rows.width(), rows.height());
        plan.flip = flip;
        self.resampler.run(&self.recipe, &rows, plan, out);
    }

    /// The normalised `[3, crop, crop]` tensor of a camera frame into `out`, with the model's
    /// recipe: the same resampling as [`Preprocessor::run`] (bit for bit on an RGB24 frame),
    /// reading the frame's rows straight from its buffer. JPEG frames are decoded into a buffer
    /// kept for the next frame, upright (EXIF orientation applied).
    pub fn run_frame(
        &mut self,
        frame: &FrameRef<'_>,
        limits: &DecodeLimits,
        out: &mut [f32],
    ) -> std::result::Result<(), FrameError> {
        self.check_output(out)?;
        let rows = match frame.rows(limits)? {
            Some(rows) => rows,
            None => {
                let (w, h) = decode_jpeg_upright(frame.data(), limits, &mut self.jpeg_rgb)
                    .map_err(|reason| FrameError::Jpeg { reason })?;
                FrameRef::packed(&self.jpeg_rgb, w, h, PixelFormat::Rgb24)?
                    .rows(limits)?
                    .expect("an RGB24 frame has rows")
            }
        };
        let plan = center_crop(&self.recipe, rows.width(), rows.height());
        self.resampler.run(&self.recipe, &rows, plan, out);
        Ok(())
    }

    /// torchvision's `resized_crop(img, top, left, height, width, [crop, crop], interpolation)`
    /// (PIL: crop `region`, then resize it to crop × crop), mirrored left-right when `flip`,
    /// then normalised into `out` — the training augmentation's tensor.
    pub fn run_resized_crop(
        &mut self,
        img: &RgbImage,
        region: Region,
        flip: bool,
        out: &mut [f32],
    ) {
        let crop = self.recipe.crop_size as usize;
        assert!(
            region.w > 0
                && region.h > 0
                && region.x + region.w <= img.width() as usize
                && region.y + region.h <= img.height() as usize,
            "crop region must lie inside the image"
        );
        self.check_output(out).unwrap_or_else(|e| panic!("{e}"));
        let plan = Plan {
            src: region,
            resized: (crop, crop),
            origin: (0, 0),
            flip,
        };
        self.resampler.run(&self.recipe, &rgb_rows(img), plan, out);
    }

    fn check_output(&self, out: &[f32]) -> std::result::Result<(), FrameError> {
        let expected = self.recipe.tensor_len();
        if out.len() == expected {
            Ok(())
        } else {
            Err(FrameError::OutputLength {
                expected,
                len: out.len(),
                crop: self.recipe.crop_size,
            })
        }
    }

    /// Allocating convenience around [`Preprocessor::run`].
    pub fn tensor(&mut self, img: &RgbImage) -> Vec<f32> {
        let mut out = vec![0.0; self.recipe.tensor_len()];
        self.run(img, &mut out);
        out
    }
}

/// An RGB image as an RGB24 frame; panics on an image without pixels.
fn rgb_rows(img: &RgbImage) -> Rows<'_> {
    FrameRef::packed(img.as_raw(), img.width(), img.height(), PixelFormat::Rgb24)
        .and_then(|f| {
            f.rows(&DecodeLimits {
                max_pixels: u64::MAX,
            })
        })
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("an RGB24 frame has rows")
}

/// The recipe's resize of the short side and centre crop, for a `w × h` source.
fn center_crop(recipe: &Recipe, w: usize, h: usize) -> Plan {
    let resized = resized_size(w, h, recipe.resize as usize);
    Plan {
        src: Region { x: 0, y: 0, w, h },
        resized,
        origin: crop_origin(resized.0, resized.1, recipe.crop_size as usize),
        flip: false,
    }
}

/// A rectangle of an image in pixels: left `x`, top `y`, width `w`, height `h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

/// torchvision `Resize(int)`: the short side becomes `size`, the long side
/// `int(size * long / short)` (truncated, as Python's `int`).
pub fn resized_size(w: usize, h: usize, size: usize) -> (usize, usize) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = (size as f64 * long as f64 / short as f64) as usize;
    if w <= h {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// torchvision `CenterCrop`: `int(round((size − crop) / 2))` with Python's round-half-to-even.
pub fn crop_origin(w: usize, h: usize, crop: usize) -> (usize, usize) {
    let half = |n: usize| ((n - crop) as f64 / 2.0).round_ties_even() as usize;
    (half(w), half(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_follows_torchvision() {
        assert_eq!(resized_size(451, 300, 224), (336, 224));
        assert_eq!(resized_size(300, 451, 224), (224, 336));
        assert_eq!(resized_size(224, 224, 224), (224, 224));
        assert_eq!(resized_size(20, 13, 224), (344, 224));
    }

    #[test]
    fn crop_rounds_half_to_even() {
        // (225 − 224) / 2 = 0.5 → 0; (227 − 224) / 2 = 1.5 → 2; (229 − 224) / 2 = 2.5 → 2.
        assert_eq!(crop_origin(225, 224, 224), (0, 0));
        assert_eq!(crop_origin(227, 224, 224), (2, 0));
        assert_eq!(crop_origin(229, 229, 224), (2, 2));
    }

    #[test]
    fn flat_image_stays_flat() {
        let img = RgbImage::from_pixel(97, 61, image::Rgb([200, 100, 50]));
        let mut p = Preprocessor::new(Recipe::clip(32));
        let t = p.tensor(&img);
        let r = Recipe::clip(32);
        for c in 0..3 {
            let v = [200.0f32, 100.0, 50.0][c] / 255.0;
            let expect = (v - r.mean[c]) / r.std[c];
            assert!(t[c * 1024..(c + 1) * 1024].iter().all(|&x| x == expect));
        }
    }
}
