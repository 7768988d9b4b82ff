//! The training augmentation of the official Tip-Adapter code:
//! `RandomResizedCrop(size, scale=(0.5, 1), interpolation=BICUBIC)`, `RandomHorizontalFlip(0.5)`,
//! then the model's normalisation. The crop parameters follow torchvision's `get_params`
//! (ten tries at a random area and log-uniform aspect ratio, then a centre-crop fallback);
//! the resampling is Pillow's, through [`Preprocessor::run_resized_crop`].

use image::RgbImage;

use crate::preprocess::{Preprocessor, Region};
use crate::rng::{derive_seed, Rng};

/// `RandomResizedCrop` + horizontal flip parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Augmentation {
    /// Range of the crop's area as a fraction of the image's.
    pub scale: (f64, f64),
    /// Range of the crop's aspect ratio w / h (sampled log-uniformly).
    pub ratio: (f64, f64),
    /// Probability of a left-right mirror.
    pub flip_p: f64,
    /// Keep the model's eval view (resize + centre crop) instead of a random resized crop:
    /// only the mirror is random (the "flip" key recipe).
    pub eval_view: bool,
}

impl Default for Augmentation {
    /// Tip-Adapter's: scale (0.5, 1), ratio (3/4, 4/3), flip p = 0.5.
    fn default() -> Self {
        Augmentation {
            scale: (0.5, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            flip_p: 0.5,
            eval_view: false,
        }
    }
}

impl Augmentation {
    /// torchvision `RandomResizedCrop.get_params` for a `width × height` image.
    pub fn crop_region(&self, width: usize, height: usize, rng: &mut Rng) -> Region {
        let area = (width * height) as f64;
        let (log_lo, log_hi) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target_area = area * rng.uniform_in(self.scale.0, self.scale.1);
            let aspect = rng.uniform_in(log_lo, log_hi).exp();
            let w = (target_area * aspect).sqrt().round_ties_even() as usize;
            let h = (target_area / aspect).sqrt().round_ties_even() as usize;
            if 0 < w && w <= width && 0 < h && h <= height {
                let y = rng.below((height - h + 1) as u64) as usize;
                let x = rng.below((width - w + 1) as u64) as usize;
                return Region { x, y, w, h };
            }
        }
        // Fallback: the whole image, cut to the nearest allowed aspect ratio, centred.
        let in_ratio = width as f64 / height as f64;
        let (w, h) = if in_ratio < self.ratio.0 {
            (
                width,
                ((width as f64 / self.ratio.0).round_ties_even() as usize).max(1),
            )
        } else if in_ratio > self.ratio.1 {
            (
                ((height as f64 * self.ratio.1).round_ties_even() as usize).max(1),
                height,
            )
        } else {
            (width, height)
        };
        Region {
            x: (width - w) / 2,
            y: (height - h) / 2,
            w,
            h,
        }
    }

    /// One augmented, normalised tensor of `img` into `out`, drawn from `rng`.
    pub fn apply(&self, pre: &mut Preprocessor, img: &RgbImage, rng: &mut Rng, out: &mut [f32]) {
        if self.eval_view {
            let flip = rng.uniform() < self.flip_p;
            pre.run_mirrored(img, flip, out);
            return;
        }
        let region = self.crop_region(img.width() as usize, img.height() as usize, rng);
        let flip = rng.uniform() < self.flip_p;
        pre.run_resized_crop(img, region, flip, out);
    }
}

/// Which random view of an image to draw: the augmentation, a user seed and the pass number.
/// Each image's generator is derived from (seed, epoch, image index), so the views do not depend
/// on batch size, skipped files or threads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AugmentPass {
    pub augmentation: Augmentation,
    pub seed: u64,
    pub epoch: u64,
}

impl AugmentPass {
    pub fn rng_for(&self, image_index: usize) -> Rng {
        Rng::new(derive_seed(
            self.seed,
            &[0xA06, self.epoch, image_index as u64],
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_stay_inside_and_cover_the_scale_range() {
        let aug = Augmentation::default();
        let mut rng = Rng::new(5);
        let (mut min_frac, mut max_frac) = (1.0f64, 0.0f64);
        for &(w, h) in &[
            (250usize, 250usize),
            (451, 300),
            (20, 13),
            (1, 1),
            (3000, 40),
        ] {
            for _ in 0..2000 {
                let r = aug.crop_region(w, h, &mut rng);
                assert!(
                    r.w > 0 && r.h > 0 && r.x + r.w <= w && r.y + r.h <= h,
                    "{r:?} in {w}x{h}"
                );
                if (w, h) == (250, 250) {
                    let frac = (r.w * r.h) as f64 / (w * h) as f64;
                    min_frac = min_frac.min(frac);
                    max_frac = max_frac.max(frac);
                    let ratio = r.w as f64 / r.h as f64;
                    assert!((0.74..=1.35).contains(&ratio), "{ratio}");
                }
            }
        }
        assert!(min_frac < 0.52 && min_frac > 0.48, "{min_frac}");
        assert!(max_frac > 0.97, "{max_frac}");
    }

    #[test]
    fn extreme_aspect_falls_back_to_a_centred_crop() {
        // 3000 × 40 cannot hold a crop of half its area with ratio ≤ 4/3: centre crop 53 × 40.
        let aug = Augmentation::default();
        let r = aug.crop_region(3000, 40, &mut Rng::new(1));
        assert_eq!(
            r,
            Region {
                x: 1473,
                y: 0,
                w: 53,
                h: 40
            }
        );
    }
}
