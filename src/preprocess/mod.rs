//! Decoding and the model's preprocessing recipe.
//!
//! The reference is the pipeline the graphs were trained and exported with:
//! `PIL.Image.open → ImageOps.exif_transpose → convert("RGB") → torchvision Resize(short side,
//! bicubic|bilinear) → CenterCrop → ToTensor → Normalize`. The resampler below reproduces
//! Pillow's `Resample.c` (separable filter, horizontal pass first, coefficients in 22-bit fixed
//! point, intermediate rounding to 8 bits), so the normalised tensor matches PIL to the last
//! rounding step instead of differing by a pixel level here and there, as a generic resizer would.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

use crate::error::{Error, Result};

pub mod augment;
mod jpeg;

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
    let (rgb, orientation) = jpeg::decode(bytes, path, limits)?;
    let mut img = DynamicImage::ImageRgb8(rgb);
    img.apply_orientation(orientation);
    Ok(match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    })
}

/// The decompression-bomb guard, applied to the dimensions a file's header declares.
fn check_dimensions(w: u32, h: u32, path: &Path, limits: &DecodeLimits) -> Result<()> {
    let pixels = u64::from(w) * u64::from(h);
    if pixels > limits.max_pixels {
        return Err(Error::image(
            path,
            format!(
                "{w}×{h} = {:.1} MP exceeds the {:.1} MP limit (decompression-bomb guard)",
                pixels as f64 / 1e6,
                limits.max_pixels as f64 / 1e6
            ),
        ));
    }
    if pixels == 0 {
        return Err(Error::image(path, format!("image has no pixels ({w}×{h})")));
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
    check_dimensions(w, h, path, limits)?;
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

/// Turns RGB images into normalised CHW tensors with one recipe, reusing its scratch buffers,
/// so that after the first frame of a given size no allocation happens.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    recipe: Recipe,
    horiz: Coefficients,
    vert: Coefficients,
    rows: Vec<u8>,
}

impl Preprocessor {
    pub fn new(recipe: Recipe) -> Self {
        Preprocessor {
            recipe,
            horiz: Coefficients::default(),
            vert: Coefficients::default(),
            rows: Vec::new(),
        }
    }

    pub fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    /// Writes the normalised `[3, crop, crop]` tensor of `img` into `out`.
    ///
    /// Equivalent to resizing the whole image with PIL and cropping, but only the pixels that
    /// survive the crop are computed.
    pub fn run(&mut self, img: &RgbImage, out: &mut [f32]) {
        let crop = self.recipe.crop_size as usize;
        let (w, h) = (img.width() as usize, img.height() as usize);
        let resized = resized_size(w, h, self.recipe.resize as usize);
        let origin = crop_origin(resized.0, resized.1, crop);
        let whole = Region { x: 0, y: 0, w, h };
        self.resample(img, whole, resized, origin, false, out);
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
        self.resample(img, region, (crop, crop), (0, 0), flip, out);
    }

    /// Resizes `src` (a region of `img`, as if cropped first) to `resized`, keeps the
    /// crop × crop window at `(left, top)` of the result, mirrors it when `flip`, normalises.
    fn resample(
        &mut self,
        img: &RgbImage,
        src: Region,
        (new_w, new_h): (usize, usize),
        (left, top): (usize, usize),
        flip: bool,
        out: &mut [f32],
    ) {
        let crop = self.recipe.crop_size as usize;
        assert_eq!(
            out.len(),
            3 * crop * crop,
            "output buffer must hold 3 × crop × crop values"
        );
        let filter = self.recipe.interpolation;
        let need_h = new_w != src.w;
        let need_v = new_h != src.h;
        let img_w = img.width() as usize;
        let raw = img.as_raw();
        self.vert.compute(src.h, new_h, top, crop, filter, need_v);
        self.horiz.compute(src.w, new_w, left, crop, filter, need_h);
        let plane = crop * crop;
        let (mean, std) = (self.recipe.mean, self.recipe.std);
        // ToTensor then Normalize, in f32 as torchvision does: (v / 255 − mean) / std.
        let mut put = |xx: usize, yy: usize, acc: [i32; 3]| {
            let ox = if flip { crop - 1 - xx } else { xx };
            for c in 0..3 {
                let v = f32::from(clip8(acc[c])) / 255.0;
                out[c * plane + yy * crop + ox] = (v - mean[c]) / std[c];
            }
        };
        // Pillow 13 runs the vertical pass first when the height shrinks by more than twice
        // what the width does ("to make the horizontal pass faster"); the 8-bit rounding
        // between the passes makes the order visible, so follow it.
        let (dh, dw) = (src.h as i64 - new_h as i64, src.w as i64 - new_w as i64);
        let vertical_first = dh > 0 && dh > dw * 2;
        if vertical_first {
            // Vertical pass over the needed source columns [c0, c1) × crop rows, 8-bit.
            let (c0, c1) = self.horiz.span();
            let row_len = (c1 - c0) * 3;
            self.rows.clear();
            self.rows.resize(crop * row_len, 0);
            for yy in 0..crop {
                let (start, taps) = self.vert.taps(yy);
                let dst = &mut self.rows[yy * row_len..(yy + 1) * row_len];
                for (x, px) in dst.chunks_exact_mut(3).enumerate() {
                    let col = src.x + c0 + x;
                    let mut acc = [ROUND_HALF; 3];
                    for (i, &k) in taps.iter().enumerate() {
                        let s = &raw[((src.y + start + i) * img_w + col) * 3..][..3];
                        acc[0] += i32::from(s[0]) * k;
                        acc[1] += i32::from(s[1]) * k;
                        acc[2] += i32::from(s[2]) * k;
                    }
                    px.copy_from_slice(&acc.map(clip8));
                }
            }
            // Horizontal pass into the normalised planar output.
            for yy in 0..crop {
                let row = &self.rows[yy * row_len..(yy + 1) * row_len];
                for xx in 0..crop {
                    let (start, taps) = self.horiz.taps(xx);
                    let mut acc = [ROUND_HALF; 3];
                    for (i, &k) in taps.iter().enumerate() {
                        let s = &row[(start - c0 + i) * 3..][..3];
                        acc[0] += i32::from(s[0]) * k;
                        acc[1] += i32::from(s[1]) * k;
                        acc[2] += i32::from(s[2]) * k;
                    }
                    put(xx, yy, acc);
                }
            }
            return;
        }

        // Horizontal pass over the rows the vertical taps need: [first_row, last_row) × crop
        // columns, 8-bit.
        let (first_row, last_row) = self.vert.span();
        let row_len = crop * 3;
        self.rows.clear();
        self.rows.resize((last_row - first_row) * row_len, 0);
        for (r, y) in (first_row..last_row).enumerate() {
            let y = src.y + y;
            let src_row = &raw[(y * img_w + src.x) * 3..(y * img_w + src.x + src.w) * 3];
            let dst = &mut self.rows[r * row_len..(r + 1) * row_len];
            for (xx, px) in dst.chunks_exact_mut(3).enumerate() {
                let (start, taps) = self.horiz.taps(xx);
                let mut acc = [ROUND_HALF; 3];
                for (i, &k) in taps.iter().enumerate() {
                    let s = &src_row[(start + i) * 3..(start + i) * 3 + 3];
                    acc[0] += i32::from(s[0]) * k;
                    acc[1] += i32::from(s[1]) * k;
                    acc[2] += i32::from(s[2]) * k;
                }
                px.copy_from_slice(&acc.map(clip8));
            }
        }
        // Vertical pass into the normalised planar output.
        for yy in 0..crop {
            let (start, taps) = self.vert.taps(yy);
            let start = start - first_row;
            for xx in 0..crop {
                let mut acc = [ROUND_HALF; 3];
                for (i, &k) in taps.iter().enumerate() {
                    let s = &self.rows[(start + i) * row_len + xx * 3..][..3];
                    acc[0] += i32::from(s[0]) * k;
                    acc[1] += i32::from(s[1]) * k;
                    acc[2] += i32::from(s[2]) * k;
                }
                put(xx, yy, acc);
            }
        }
    }

    /// Allocating convenience around [`Preprocessor::run`].
    pub fn tensor(&mut self, img: &RgbImage) -> Vec<f32> {
        let mut out = vec![0.0; self.recipe.tensor_len()];
        self.run(img, &mut out);
        out
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

// Pillow: PRECISION_BITS = 32 − 8 − 2.
const PRECISION_BITS: u32 = 22;
const ROUND_HALF: i32 = 1 << (PRECISION_BITS - 1);

fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Fixed-point filter taps for a run of output pixels along one axis (Pillow's
/// `precompute_coeffs` + `normalize_coeffs_8bpc`), restricted to the cropped output range.
#[derive(Debug, Clone, Default)]
struct Coefficients {
    ksize: usize,
    /// (first source index, number of taps) per output pixel.
    bounds: Vec<(usize, usize)>,
    taps: Vec<i32>,
}

impl Coefficients {
    fn compute(
        &mut self,
        in_size: usize,
        out_size: usize,
        first: usize,
        count: usize,
        filter: Interpolation,
        resample: bool,
    ) {
        self.bounds.clear();
        self.taps.clear();
        if !resample {
            // Pillow skips a pass whose size does not change: the identity, one tap of 1.0.
            self.ksize = 1;
            for xx in first..first + count {
                self.bounds.push((xx, 1));
                self.taps.push(1 << PRECISION_BITS);
            }
            return;
        }
        let (support, kernel): (f64, fn(f64) -> f64) = match filter {
            Interpolation::Bicubic => (2.0, bicubic),
            Interpolation::Bilinear => (1.0, bilinear),
        };
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = support * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        self.ksize = ksize;
        let ss = 1.0 / filterscale;
        let mut k = vec![0f64; ksize];
        for xx in first..first + count {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) truncates toward zero; so does `as`.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
            let mut ww = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(xmax) {
                let w = kernel((x as f64 + xmin as f64 - center + 0.5) * ss);
                *kx = w;
                ww += w;
            }
            for (x, &kx) in k.iter().enumerate() {
                let w = match (x < xmax, ww != 0.0) {
                    (true, true) => kx / ww,
                    (true, false) => kx,
                    (false, _) => 0.0,
                };
                let fixed = w * f64::from(1u32 << PRECISION_BITS);
                self.taps.push(if w < 0.0 {
                    (fixed - 0.5) as i32
                } else {
                    (fixed + 0.5) as i32
                });
            }
            self.bounds.push((xmin, xmax));
        }
    }

    fn taps(&self, i: usize) -> (usize, &[i32]) {
        let (start, n) = self.bounds[i];
        (start, &self.taps[i * self.ksize..i * self.ksize + n])
    }

    /// The source range [first, last) touched by all output pixels.
    fn span(&self) -> (usize, usize) {
        let first = self.bounds.iter().map(|b| b.0).min().unwrap_or(0);
        let last = self.bounds.iter().map(|b| b.0 + b.1).max().unwrap_or(0);
        (first, last)
    }
}

fn bicubic(x: f64) -> f64 {
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

fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
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
    fn filters_are_partitions_of_unity() {
        let mut c = Coefficients::default();
        for (n_in, n_out) in [(640, 224), (100, 224), (451, 336)] {
            for f in [Interpolation::Bicubic, Interpolation::Bilinear] {
                c.compute(n_in, n_out, 0, n_out, f, true);
                for i in 0..n_out {
                    let sum: i64 = c.taps(i).1.iter().map(|&k| i64::from(k)).sum();
                    assert!(
                        (sum - (1 << PRECISION_BITS)).abs() <= c.ksize as i64,
                        "{sum}"
                    );
                }
            }
        }
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
