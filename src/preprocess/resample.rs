//! Pillow's resampler (`Resample.c`): separable filter, coefficients in 22-bit fixed point,
//! intermediate rounding to 8 bits between the two passes, reading its source through
//! [`Rows`], so that any frame format feeds it without a full-frame RGB copy.
//!
//! Only the output pixels that survive the crop are computed: the first pass covers the source
//! rows (or columns) the second pass's taps reach, and the second pass only the crop.

use super::frame::Rows;
use super::{Interpolation, Recipe, Region};

/// What to cut from the source and where it lands: resize `src` (a region of the frame, as if
/// cropped first) to `resized`, keep the crop × crop window at `origin` (left, top) of the
/// result, mirrored left-right when `flip`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    pub src: Region,
    pub resized: (usize, usize),
    pub origin: (usize, usize),
    pub flip: bool,
}

/// The resampler's reusable state: filter taps and scratch rows, grown once per frame size.
#[derive(Debug, Clone)]
pub(super) struct Resampler {
    horiz: Coefficients,
    vert: Coefficients,
    /// The first pass's 8-bit RGB rows.
    pass1: Vec<u8>,
    /// One row of 32-bit sums of the vertical pass.
    sums: Vec<i32>,
    /// Source rows converted to RGB.
    cache: RowCache,
    normalized: Normalized,
}

/// The normalised value of each 8-bit level per channel, `(v / 255 − mean) / std` in f32, for
/// the mean and std it was made with.
#[derive(Debug, Clone)]
struct Normalized {
    mean_std: ([f32; 3], [f32; 3]),
    table: Box<[[f32; 256]; 3]>,
}

impl Default for Resampler {
    fn default() -> Self {
        Resampler {
            horiz: Coefficients::default(),
            vert: Coefficients::default(),
            pass1: Vec::new(),
            sums: Vec::new(),
            cache: RowCache::default(),
            // NaN never equals a recipe's mean, so the first run fills the table.
            normalized: Normalized {
                mean_std: ([f32::NAN; 3], [f32::NAN; 3]),
                table: Box::new([[0.0; 256]; 3]),
            },
        }
    }
}

impl Resampler {
    /// Resizes `src` per `plan`, normalises with the recipe's mean/std into `out` (planar RGB,
    /// crop × crop each).
    pub(super) fn run(&mut self, recipe: &Recipe, src: &Rows<'_>, plan: Plan, out: &mut [f32]) {
        let crop = recipe.crop_size as usize;
        debug_assert_eq!(out.len(), 3 * crop * crop);
        if crop == 0 {
            return;
        }
        let Plan {
            src: region,
            resized: (new_w, new_h),
            origin: (left, top),
            flip,
        } = plan;
        let filter = recipe.interpolation;
        self.vert
            .compute(region.h, new_h, top, crop, filter, new_h != region.h);
        self.horiz
            .compute(region.w, new_w, left, crop, filter, new_w != region.w);
        let plane = crop * crop;
        // ToTensor then Normalize, in f32 as torchvision does: (v / 255 − mean) / std, looked
        // up per 8-bit value (the same f32 operations, done once per value, not per pixel).
        if self.normalized.mean_std != (recipe.mean, recipe.std) {
            for (c, table) in self.normalized.table.iter_mut().enumerate() {
                for (v, t) in table.iter_mut().enumerate() {
                    *t = (v as f32 / 255.0 - recipe.mean[c]) / recipe.std[c];
                }
            }
            self.normalized.mean_std = (recipe.mean, recipe.std);
        }
        let lut = &self.normalized.table;
        let mut put = |xx: usize, yy: usize, acc: &[i32]| {
            let ox = if flip { crop - 1 - xx } else { xx };
            for c in 0..3 {
                out[c * plane + yy * crop + ox] = lut[c][usize::from(clip8(acc[c]))];
            }
        };
        // The source columns all output pixels reach, in frame coordinates.
        let (c0, c1) = self.horiz.span();
        let (x0, x1) = (region.x + c0, region.x + c1);

        // Pillow 13 runs the vertical pass first when the height shrinks by more than twice
        // what the width does ("to make the horizontal pass faster"); the 8-bit rounding
        // between the passes makes the order visible, so follow it.
        let (dh, dw) = (
            region.h as i64 - new_h as i64,
            region.w as i64 - new_w as i64,
        );
        if dh > 0 && dh > dw * 2 {
            // Vertical pass over columns [c0, c1) × crop rows, 8-bit. Each output row sums its
            // source rows whole (integer sums in Pillow's tap order, so the result is Pillow's);
            // a converted source row stays in a ring of `ksize` rows, enough for every output
            // row's window, so each is converted once.
            let row_len = (c1 - c0) * 3;
            self.pass1.resize(crop * row_len, 0);
            self.sums.resize(row_len, 0);
            self.cache.reset(self.vert.ksize, row_len);
            for (yy, dst) in self.pass1.chunks_exact_mut(row_len).enumerate() {
                let (start, taps) = self.vert.taps(yy);
                self.sums.fill(ROUND_HALF);
                for (i, &k) in taps.iter().enumerate() {
                    let row = self.cache.row(src, region.y + start + i, x0, x1);
                    multiply_add(&mut self.sums, row, k);
                }
                for (d, &s) in dst.iter_mut().zip(&self.sums) {
                    *d = clip8(s);
                }
            }
            // Horizontal pass into the normalised planar output.
            for (yy, row) in self.pass1.chunks_exact(row_len).enumerate() {
                for xx in 0..crop {
                    let (start, taps) = self.horiz.taps(xx);
                    put(xx, yy, &convolve(&row[(start - c0) * 3..], taps));
                }
            }
            return;
        }

        // Horizontal pass over the rows the vertical taps reach: [first_row, last_row) × crop
        // columns, 8-bit. RGB24 rows are read in place, others converted one at a time.
        let (first_row, last_row) = self.vert.span();
        let row_len = crop * 3;
        self.pass1.resize((last_row - first_row) * row_len, 0);
        self.cache.reset(1, (c1 - c0) * 3);
        for (y, dst) in (first_row..last_row).zip(self.pass1.chunks_exact_mut(row_len)) {
            let row = self.cache.row(src, region.y + y, x0, x1);
            for (xx, px) in dst.chunks_exact_mut(3).enumerate() {
                let (start, taps) = self.horiz.taps(xx);
                px.copy_from_slice(&convolve(&row[(start - c0) * 3..], taps).map(clip8));
            }
        }
        // Vertical pass into the normalised planar output.
        self.sums.resize(row_len, 0);
        for yy in 0..crop {
            let (start, taps) = self.vert.taps(yy);
            self.sums.fill(ROUND_HALF);
            for (i, &k) in taps.iter().enumerate() {
                let row = &self.pass1[(start - first_row + i) * row_len..][..row_len];
                multiply_add(&mut self.sums, row, k);
            }
            for (xx, acc) in self.sums.chunks_exact(3).enumerate() {
                put(xx, yy, acc);
            }
        }
    }
}

/// One output pixel of a horizontal pass: Σ taps[i] · pixel i of `row` (RGB), plus the rounding
/// half, in Pillow's order.
#[inline]
fn convolve(row: &[u8], taps: &[i32]) -> [i32; 3] {
    let mut acc = [ROUND_HALF; 3];
    for (s, &k) in row.chunks_exact(3).zip(taps) {
        acc[0] += i32::from(s[0]) * k;
        acc[1] += i32::from(s[1]) * k;
        acc[2] += i32::from(s[2]) * k;
    }
    acc
}

/// `sums += k · row`, element-wise: one tap of a vertical pass over a whole row. In fixed
/// blocks of 16 so that the compiler vectorises the widening multiply-add.
#[inline]
fn multiply_add(sums: &mut [i32], row: &[u8], k: i32) {
    const BLOCK: usize = 16;
    let n = sums.len().min(row.len());
    let (sums, row) = (&mut sums[..n], &row[..n]);
    let mut s_blocks = sums.chunks_exact_mut(BLOCK);
    let mut r_blocks = row.chunks_exact(BLOCK);
    for (s, r) in (&mut s_blocks).zip(&mut r_blocks) {
        for j in 0..BLOCK {
            s[j] += i32::from(r[j]) * k;
        }
    }
    for (s, &p) in s_blocks
        .into_remainder()
        .iter_mut()
        .zip(r_blocks.remainder())
    {
        *s += i32::from(p) * k;
    }
}

/// Source rows as RGB spans: borrowed from the frame where it holds RGB24, otherwise converted
/// into a ring of `slots` rows, indexed by row number modulo the ring size and tagged with the
/// row they hold. A ring at least as long as any output pixel's tap window never evicts a row
/// the current window still needs, since the windows only move down.
#[derive(Debug, Clone, Default)]
struct RowCache {
    rgb: Vec<u8>,
    tags: Vec<usize>,
    row_len: usize,
}

impl RowCache {
    fn reset(&mut self, slots: usize, row_len: usize) {
        // Growing only writes the new part; stale contents are never read (tags say so).
        self.rgb.resize(slots.max(1) * row_len, 0);
        self.tags.clear();
        self.tags.resize(slots.max(1), usize::MAX);
        self.row_len = row_len;
    }

    /// Pixels `[x0, x1)` of source row `y` as RGB.
    fn row<'s>(&'s mut self, src: &Rows<'s>, y: usize, x0: usize, x1: usize) -> &'s [u8] {
        if let Some(rgb) = src.in_place(y, x0, x1) {
            return rgb;
        }
        let slot = y % self.tags.len();
        let rgb = &mut self.rgb[slot * self.row_len..(slot + 1) * self.row_len];
        if self.tags[slot] != y {
            src.convert(y, x0, x1, rgb);
            self.tags[slot] = y;
        }
        rgb
    }
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
    /// Pillow's unnormalised weights of one output pixel.
    weights: Vec<f64>,
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
        self.weights.clear();
        self.weights.resize(ksize, 0.0);
        for xx in first..first + count {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) truncates toward zero; so does `as`.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
            let mut ww = 0.0;
            for (x, kx) in self.weights.iter_mut().enumerate().take(xmax) {
                let w = kernel((x as f64 + xmin as f64 - center + 0.5) * ss);
                *kx = w;
                ww += w;
            }
            for (x, &kx) in self.weights.iter().enumerate() {
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
    fn tap_windows_only_move_forward() {
        // The row ring relies on it.
        let mut c = Coefficients::default();
        for (n_in, n_out) in [(3000, 224), (480, 256), (13, 224)] {
            c.compute(n_in, n_out, 0, n_out, Interpolation::Bicubic, true);
            for i in 1..n_out {
                assert!(c.bounds[i].0 >= c.bounds[i - 1].0);
                assert!(c.bounds[i].1 <= c.ksize);
            }
        }
    }
}
