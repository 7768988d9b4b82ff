//! TDA, training-free test-time adaptation for streams (Karmanov et al., CVPR 2024, "Efficient
//! Test-Time Adaptation of Vision-Language Models"; official code kdiAAA/TDA).
//!
//! Two small caches filled from the stream's own predictions, no labels: a *positive* cache of
//! each class's most confident frames (lowest prediction entropy), and a *negative* cache of
//! frames the classifier was torn about (normalised entropy inside a band), each remembering
//! which classes it thought unlikely. Every frame is scored with Tip-Adapter's affinity against
//! both, on top of whatever head produced the base logits (zero-shot, Tip-Adapter, …):
//!
//! ```text
//! logits = base + α⁺ Σ_{k ∈ pos} exp(−β⁺ (1 − f·k)) onehot(class of k)
//!               − α⁻ Σ_{k ∈ neg} exp(−β⁻ (1 − f·k)) [m_lo < p_k < m_hi]
//! ```
//!
//! As the official `run_test_tda` (single view per frame), in this order: the entropy, softmax
//! and argmax of the *base* logits; the positive cache updated with the frame under its
//! predicted class; the negative cache too when `lower < entropy / log2(C) < upper` (the
//! official normalisation divides the natural-log entropy by log₂ C, so its largest value is
//! ln 2 ≈ 0.69, not 1); then the frame, already in the caches, is scored. A class's cache
//! below capacity takes the frame; a full one replaces its worst entry if the frame's entropy
//! is strictly lower; entries are kept in ascending entropy, ties in arrival order (Python's
//! stable sort). tests/tda.rs checks logits and cache contents, eviction order included,
//! against a re-implementation of the official update (models/make_tda_refs.py).
//!
//! A head with a fitted temperature T is adapted on its calibrated logits `logits / T`
//! ([`Tda::adapt_at`], what [`crate::session::Session`] does), so the official settings mean the
//! same for an image-only model's cache logits as for CLIP's zero-shot ones.
//!
//! Memory is fixed when the caches are made (`classes × capacity × (dim + classes)` floats),
//! and a frame allocates nothing. [`Tda::reset`] empties both caches (a new batch, a new
//! product on the line); a frame whose base logits are not all finite is left as it is and
//! does not enter the caches.

use crate::error::{Error, Result};

/// One cache's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheConfig {
    /// Frames kept per class (0 turns the cache off).
    pub capacity: usize,
    pub alpha: f32,
    pub beta: f32,
}

/// TDA's settings. The default is the official ImageNet configuration (configs/imagenet.yaml).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TdaConfig {
    pub positive: CacheConfig,
    pub negative: CacheConfig,
    /// The band of normalised entropy (exclusive) in which a frame enters the negative cache.
    pub entropy_band: (f32, f32),
    /// The band of probability (exclusive) in which a class counts as "unlikely" for a
    /// negative entry.
    pub mask_band: (f32, f32),
}

impl Default for TdaConfig {
    fn default() -> Self {
        TdaConfig {
            positive: CacheConfig {
                capacity: 3,
                alpha: 2.0,
                beta: 5.0,
            },
            negative: CacheConfig {
                capacity: 2,
                alpha: 0.117,
                beta: 1.0,
            },
            entropy_band: (0.2, 0.5),
            mask_band: (0.03, 1.0),
        }
    }
}

impl TdaConfig {
    fn check(&self) -> Result<()> {
        for (name, c) in [("positive", &self.positive), ("negative", &self.negative)] {
            if !(c.alpha.is_finite() && c.beta.is_finite() && c.alpha >= 0.0 && c.beta >= 0.0) {
                return Err(Error::Invalid(format!(
                    "TDA {name} cache: α and β must be finite and ≥ 0 (α = {}, β = {})",
                    c.alpha, c.beta
                )));
            }
            if c.capacity > MAX_CAPACITY {
                return Err(Error::Invalid(format!(
                    "TDA {name} cache: at most {MAX_CAPACITY} frames per class, not {}",
                    c.capacity
                )));
            }
        }
        for (name, (lo, hi)) in [("entropy", self.entropy_band), ("mask", self.mask_band)] {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(Error::Invalid(format!(
                    "TDA {name} band: needs finite bounds, lower < upper (not {lo}..{hi})"
                )));
            }
        }
        Ok(())
    }
}

/// Most frames a cache keeps per class.
pub const MAX_CAPACITY: usize = 64;

/// One of the two caches: `classes × capacity` slots of a feature (and, for the negative
/// cache, the frame's class probabilities), each class's slots ordered by ascending entropy.
#[derive(Debug, Clone)]
struct ClassCaches {
    cfg: CacheConfig,
    dim: usize,
    n_classes: usize,
    /// Slot `c * capacity + s`: `dim` values.
    features: Vec<f32>,
    /// Slot's class probabilities (`n_classes` values; negative cache only).
    probs: Vec<f32>,
    with_probs: bool,
    entropy: Vec<f32>,
    /// The frame that filled each slot (what tests compare).
    frame: Vec<u64>,
    /// Per class: its filled slots, best (lowest entropy) first.
    order: Vec<u16>,
    len: Vec<usize>,
}

impl ClassCaches {
    fn new(cfg: CacheConfig, dim: usize, n_classes: usize, with_probs: bool) -> ClassCaches {
        let slots = n_classes * cfg.capacity;
        ClassCaches {
            cfg,
            dim,
            n_classes,
            features: vec![0.0; slots * dim],
            probs: vec![0.0; if with_probs { slots * n_classes } else { 0 }],
            with_probs,
            entropy: vec![0.0; slots],
            frame: vec![0; slots],
            order: vec![0; slots],
            len: vec![0; n_classes],
        }
    }

    fn clear(&mut self) {
        self.len.fill(0);
    }

    fn total(&self) -> usize {
        self.len.iter().sum()
    }

    /// The official `update_cache`.
    fn update(&mut self, class: usize, feature: &[f32], entropy: f32, probs: &[f32], frame: u64) {
        let cap = self.cfg.capacity;
        if cap == 0 {
            return;
        }
        let base = class * cap;
        let n = self.len[class];
        let order = &mut self.order[base..base + cap];
        let slot = if n < cap {
            self.len[class] = n + 1;
            n
        } else {
            let worst = order[cap - 1] as usize;
            // Entropies are finite (frames with non-finite logits never get here).
            if entropy >= self.entropy[base + worst] {
                return;
            }
            worst
        };
        // Out of the order (it is last: a new slot, or the evicted worst), then in again after
        // every entry of lower or equal entropy.
        let kept = self.len[class] - 1;
        let at = order[..kept].partition_point(|&s| self.entropy[base + s as usize] <= entropy);
        order.copy_within(at..kept, at + 1);
        order[at] = slot as u16;
        let i = base + slot;
        self.entropy[i] = entropy;
        self.frame[i] = frame;
        self.features[i * self.dim..(i + 1) * self.dim].copy_from_slice(feature);
        if self.with_probs {
            self.probs[i * self.n_classes..(i + 1) * self.n_classes].copy_from_slice(probs);
        }
    }

    /// The slots in the official scoring order: classes ascending, each in cache order.
    fn slots(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let cap = self.cfg.capacity;
        (0..self.n_classes).flat_map(move |c| {
            self.order[c * cap..c * cap + self.len[c]]
                .iter()
                .map(move |&s| (c, c * cap + s as usize))
        })
    }

    fn affinity_weight(&self, slot: usize, feature: &[f32]) -> f32 {
        let k = &self.features[slot * self.dim..(slot + 1) * self.dim];
        let a: f32 = k.iter().zip(feature).map(|(x, y)| x * y).sum();
        (-(self.cfg.beta - self.cfg.beta * a)).exp()
    }
}

/// The two caches of one stream (see the module documentation).
#[derive(Debug, Clone)]
pub struct Tda {
    cfg: TdaConfig,
    dim: usize,
    n_classes: usize,
    pos: ClassCaches,
    neg: ClassCaches,
    /// Softmax of the current frame's base logits.
    probs: Vec<f32>,
    frames: u64,
}

impl Tda {
    /// Empty caches for features of `dim` and `n_classes` classes.
    pub fn new(cfg: TdaConfig, dim: usize, n_classes: usize) -> Result<Tda> {
        cfg.check()?;
        if dim == 0 || n_classes == 0 {
            return Err(Error::Invalid(format!(
                "TDA needs features and classes (dim {dim}, {n_classes} classes)"
            )));
        }
        Ok(Tda {
            cfg,
            dim,
            n_classes,
            pos: ClassCaches::new(cfg.positive, dim, n_classes, false),
            neg: ClassCaches::new(cfg.negative, dim, n_classes, true),
            probs: vec![0.0; n_classes],
            frames: 0,
        })
    }

    pub fn config(&self) -> &TdaConfig {
        &self.cfg
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// Empties both caches.
    pub fn reset(&mut self) {
        self.pos.clear();
        self.neg.clear();
    }

    /// Frames in the positive and in the negative cache.
    pub fn len(&self) -> (usize, usize) {
        (self.pos.total(), self.neg.total())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }

    /// The frames (0-based, counted by [`Tda::adapt`]) in class `class`'s positive or negative
    /// cache, best first.
    pub fn cached_frames(&self, negative: bool, class: usize) -> impl Iterator<Item = u64> + '_ {
        let c = if negative { &self.neg } else { &self.pos };
        let cap = c.cfg.capacity;
        c.order[class * cap..class * cap + c.len[class]]
            .iter()
            .map(move |&s| c.frame[class * cap + s as usize])
    }

    /// [`Tda::adapt`] on the calibrated logits `logits / temperature`, scaled back: so the
    /// caches' entropies and their terms' size are those of the head's calibrated
    /// probabilities, whatever its logits' scale. The official settings assume CLIP's zero-shot
    /// logits (`100 · cos`, calibrated as they are: temperature 1); a head whose logits live on
    /// another scale — the cache-only logits of an image-only model differ by 10⁻⁴ — would
    /// otherwise see every frame as maximally uncertain and be swamped by the caches' terms.
    pub fn adapt_at(
        &mut self,
        feature: &[f32],
        logits: &mut [f32],
        temperature: f32,
    ) -> Result<()> {
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(Error::Invalid(format!(
                "TDA: the temperature must be a positive number, not {temperature}"
            )));
        }
        if temperature == 1.0 {
            return self.adapt(feature, logits);
        }
        logits.iter_mut().for_each(|l| *l /= temperature);
        let adapted = self.adapt(feature, logits);
        logits.iter_mut().for_each(|l| *l *= temperature);
        adapted
    }

    /// Adapts one frame: `feature` (unit norm, `dim`) and `logits` (the head's, `n_classes`)
    /// update the caches, then `logits` get the caches' terms (in place). Allocation-free.
    pub fn adapt(&mut self, feature: &[f32], logits: &mut [f32]) -> Result<()> {
        if feature.len() != self.dim || logits.len() != self.n_classes {
            return Err(Error::Invalid(format!(
                "TDA over dim {} and {} classes was given a feature of {} and {} logits",
                self.dim,
                self.n_classes,
                feature.len(),
                logits.len()
            )));
        }
        let frame = self.frames;
        self.frames += 1;
        if !logits.iter().chain(feature).all(|v| v.is_finite()) {
            return Ok(());
        }
        // Entropy (natural log), softmax and argmax of the base logits, in f64.
        let (mut pred, mut max) = (0, f32::NEG_INFINITY);
        for (c, &l) in logits.iter().enumerate() {
            if l > max {
                (pred, max) = (c, l);
            }
        }
        let lse = logits
            .iter()
            .map(|&l| ((l - max) as f64).exp())
            .sum::<f64>()
            .ln();
        let mut entropy = 0.0f64;
        for (p, &l) in self.probs.iter_mut().zip(logits.iter()) {
            let logp = (l - max) as f64 - lse;
            let prob = logp.exp();
            entropy -= prob * logp;
            *p = prob as f32;
        }
        let entropy = entropy as f32;
        // The official normalisation (log2 C; NaN for one class: never in the band).
        let normalised = entropy / (self.n_classes as f32).log2();
        self.pos.update(pred, feature, entropy, &[], frame);
        let (lo, hi) = self.cfg.entropy_band;
        if lo < normalised && normalised < hi {
            self.neg.update(pred, feature, entropy, &self.probs, frame);
        }
        let alpha = self.pos.cfg.alpha;
        for (c, slot) in self.pos.slots() {
            logits[c] += alpha * self.pos.affinity_weight(slot, feature);
        }
        let (alpha, (mlo, mhi), nc) = (self.neg.cfg.alpha, self.cfg.mask_band, self.n_classes);
        for (_, slot) in self.neg.slots() {
            let w = alpha * self.neg.affinity_weight(slot, feature);
            let probs = &self.neg.probs[slot * nc..(slot + 1) * nc];
            for (l, &p) in logits.iter_mut().zip(probs) {
                if mlo < p && p < mhi {
                    *l -= w;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(dim: usize, i: usize) -> Vec<f32> {
        let mut v = vec![0.0; dim];
        v[i % dim] = 1.0;
        v
    }

    #[test]
    fn a_full_cache_replaces_its_worst_only_with_a_strictly_better_frame() {
        let cfg = TdaConfig {
            positive: CacheConfig {
                capacity: 2,
                alpha: 1.0,
                beta: 5.0,
            },
            ..TdaConfig::default()
        };
        let mut t = Tda::new(cfg, 4, 2).unwrap();
        // Class 0 each time; margins make the entropies: frame 0 mid, 1 high, 2 low, 3 = 2's.
        for (i, margin) in [3.0f32, 1.0, 6.0, 6.0, 0.5].into_iter().enumerate() {
            let mut l = [margin, 0.0];
            t.adapt(&unit(4, i), &mut l).unwrap();
        }
        // After 0, 1: [0, 1]; 2 replaces 1: [2, 0]; 3 (equal to 2) replaces 0, after 2:
        // [2, 3]; 4 is worse than both: unchanged.
        assert_eq!(t.cached_frames(false, 0).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(t.cached_frames(false, 1).count(), 0);
        t.reset();
        assert!(t.is_empty());
    }

    #[test]
    fn at_a_temperature_the_calibrated_logits_are_adapted() {
        let mut a = Tda::new(TdaConfig::default(), 4, 3).unwrap();
        let mut b = a.clone();
        let t = 1e-3f32;
        for i in 0..6 {
            let base = [3e-3 * (i % 3) as f32, 1e-3, 2e-3];
            let mut x = base;
            a.adapt_at(&unit(4, i), &mut x, t).unwrap();
            let mut y = base.map(|l| l / t);
            b.adapt(&unit(4, i), &mut y).unwrap();
            for (x, y) in x.iter().zip(y) {
                assert!(
                    (x - y * t).abs() <= 1e-6 * (y * t).abs().max(1e-3),
                    "{x} {y}"
                );
            }
        }
        assert_eq!(a.len(), b.len());
        assert!(a.adapt_at(&unit(4, 0), &mut [0.0; 3], 0.0).is_err());
    }

    #[test]
    fn bad_input_is_refused_or_left_alone() {
        assert!(Tda::new(TdaConfig::default(), 0, 3).is_err());
        let bad = TdaConfig {
            entropy_band: (0.5, 0.2),
            ..TdaConfig::default()
        };
        assert!(Tda::new(bad, 4, 3).is_err());
        let mut bad = TdaConfig::default();
        bad.negative.alpha = f32::NAN;
        assert!(Tda::new(bad, 4, 3).is_err());
        let mut t = Tda::new(TdaConfig::default(), 4, 3).unwrap();
        assert!(t.adapt(&unit(4, 0), &mut [0.0; 2]).is_err());
        let mut l = [f32::NAN, 1.0, 0.0];
        t.adapt(&unit(4, 0), &mut l).unwrap();
        assert!(l[0].is_nan() && l[1] == 1.0 && t.is_empty());
        // One class: the normalised entropy is NaN, never in the band; no NaN reaches the
        // logits.
        let mut one = Tda::new(TdaConfig::default(), 4, 1).unwrap();
        let mut l = [3.0];
        one.adapt(&unit(4, 1), &mut l).unwrap();
        assert!(l[0].is_finite() && one.len() == (1, 0));
    }
}
