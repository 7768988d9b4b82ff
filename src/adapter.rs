//! Tip-Adapter scoring (Zhang et al., ECCV 2022), the online path's glue, as a clear scalar
//! implementation. The SIMD affinity kernel and the memory-mapped key file replace the cache
//! term's inner loop later; this stays as the reference they are checked against.

use crate::error::{Error, Result};

/// Tip-Adapter's constant CLIP logit scale.
pub const LOGIT_SCALE: f32 = 100.0;
/// The official ImageNet config's initial α and β (`configs/imagenet.yaml`).
pub const DEFAULT_ALPHA: f32 = 1.17;
pub const DEFAULT_BETA: f32 = 1.0;
/// Largest k for top-k; a fixed capacity keeps the hot path allocation-free.
pub const MAX_TOP_K: usize = 16;

/// The key-value cache: keys are unit-norm image features of the few-shot images, stored
/// sorted by class; values are their labels (the one-hot matrix L is implicit).
#[derive(Debug, Clone)]
pub struct Cache {
    dim: usize,
    keys: Vec<f32>,
    labels: Vec<u32>,
    n_classes: usize,
}

impl Cache {
    /// `keys` is `labels.len() × dim`; each key is L2-normalised here (the official
    /// `build_cache_model` normalises after averaging over augmentations). Keys are reordered
    /// by class (stable) so that the cache term is a segmented sum.
    pub fn new(
        dim: usize,
        mut keys: Vec<f32>,
        labels: Vec<u32>,
        n_classes: usize,
    ) -> Result<Cache> {
        if dim == 0 || keys.len() != labels.len() * dim {
            return Err(Error::Invalid(format!(
                "cache: {} key values for {} labels of dim {dim}",
                keys.len(),
                labels.len()
            )));
        }
        if let Some(bad) = labels.iter().find(|&&l| l as usize >= n_classes) {
            return Err(Error::Invalid(format!(
                "cache: label {bad} out of range ({n_classes} classes)"
            )));
        }
        crate::encoder::l2_normalize_rows(&mut keys, dim);
        let mut order: Vec<usize> = (0..labels.len()).collect();
        order.sort_by_key(|&i| labels[i]);
        let keys = order
            .iter()
            .flat_map(|&i| keys[i * dim..(i + 1) * dim].iter().copied())
            .collect();
        let labels = order.iter().map(|&i| labels[i]).collect();
        Ok(Cache {
            dim,
            keys,
            labels,
            n_classes,
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }
    pub fn keys(&self) -> &[f32] {
        &self.keys
    }
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Cache logits `exp(−β(1 − f·Kᵀ))·L` for one unit-norm query, added into `out`
    /// (`n_classes` long) after scaling by α.
    pub fn add_logits(&self, f: &[f32], alpha: f32, beta: f32, out: &mut [f32]) {
        debug_assert_eq!(f.len(), self.dim);
        for (key, &label) in self.keys.chunks_exact(self.dim).zip(&self.labels) {
            let affinity: f32 = key.iter().zip(f).map(|(k, q)| k * q).sum();
            out[label as usize] += alpha * (-beta * (1.0 - affinity)).exp();
        }
    }
}

/// The adapted classifier: zero-shot text classifier W (absent for image-only backbones) plus
/// the cache.
#[derive(Debug, Clone)]
pub struct TipAdapter {
    pub cache: Cache,
    /// `n_classes × dim`, unit-norm rows.
    pub classifier: Option<Vec<f32>>,
    pub alpha: f32,
    pub beta: f32,
    pub logit_scale: f32,
}

impl TipAdapter {
    pub fn new(cache: Cache, classifier: Option<Vec<f32>>) -> Result<TipAdapter> {
        if let Some(w) = &classifier {
            if w.len() != cache.n_classes() * cache.dim() {
                return Err(Error::Invalid(format!(
                    "text classifier has {} values, expected {} classes × {} dims",
                    w.len(),
                    cache.n_classes(),
                    cache.dim()
                )));
            }
        }
        Ok(TipAdapter {
            cache,
            classifier,
            alpha: DEFAULT_ALPHA,
            beta: DEFAULT_BETA,
            logit_scale: LOGIT_SCALE,
        })
    }

    pub fn n_classes(&self) -> usize {
        self.cache.n_classes()
    }

    /// Zero-shot logits `logit_scale · f·Wᵀ` into `out` (zeros when there is no W).
    pub fn zero_shot_logits(&self, f: &[f32], out: &mut [f32]) {
        out.fill(0.0);
        if let Some(w) = &self.classifier {
            for (o, row) in out.iter_mut().zip(w.chunks_exact(self.cache.dim())) {
                *o = self.logit_scale * row.iter().zip(f).map(|(a, b)| a * b).sum::<f32>();
            }
        }
    }

    /// `logits = logit_scale·f·Wᵀ + α·exp(−β(1 − f·Kᵀ))·L` for one unit-norm query `f`.
    /// Image-only backbones have no W: the cache term alone.
    pub fn logits(&self, f: &[f32], out: &mut [f32]) {
        self.zero_shot_logits(f, out);
        self.cache.add_logits(f, self.alpha, self.beta, out);
    }
}

/// The k largest logits (k ≤ [`MAX_TOP_K`]) as (class, logit, softmax probability), best first.
pub fn top_k(logits: &[f32], k: usize) -> heapless::Vec<(usize, f32, f32), MAX_TOP_K> {
    let mut best: heapless::Vec<(usize, f32, f32), MAX_TOP_K> = heapless::Vec::new();
    let k = k.min(MAX_TOP_K).min(logits.len());
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let denom: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
    for (i, &l) in logits.iter().enumerate() {
        if k == 0 {
            break;
        }
        let pos = best
            .iter()
            .position(|&(_, b, _)| l > b)
            .unwrap_or(best.len());
        if pos < k {
            if best.len() == k {
                best.pop();
            }
            // Cannot fail: one slot was freed above or len < k ≤ capacity.
            let _ = best.insert(pos, (i, l, (l - max).exp() / denom));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_and_caps() {
        let l = [0.1, 3.0, -1.0, 2.0, 2.5];
        let t = top_k(&l, 3);
        let idx: Vec<usize> = t.iter().map(|x| x.0).collect();
        assert_eq!(idx, [1, 4, 3]);
        let p: f32 = top_k(&l, 5).iter().map(|x| x.2).sum();
        assert!((p - 1.0).abs() < 1e-6);
        assert_eq!(top_k(&l, 100).len(), 5);
        assert!(top_k(&l, 0).is_empty());
    }

    #[test]
    fn cache_term_matches_equation() {
        // Two classes, three keys (given out of class order); query equal to key 0.
        let keys = vec![1.0, 0.0, 0.0, 1.0, 0.6, 0.8];
        let cache = Cache::new(2, keys, vec![1, 0, 1], 2).unwrap();
        assert_eq!(cache.labels(), &[0, 1, 1]);
        let mut out = [0.0; 2];
        cache.add_logits(&[1.0, 0.0], 2.0, 3.0, &mut out);
        let e = |s: f32| 2.0 * (-3.0 * (1.0 - s)).exp();
        assert!((out[0] - e(0.0)).abs() < 1e-6);
        assert!((out[1] - (e(1.0) + e(0.6))).abs() < 1e-6);
    }

    #[test]
    fn bad_shapes_are_refused() {
        assert!(Cache::new(2, vec![1.0; 5], vec![0, 0], 1).is_err());
        assert!(Cache::new(2, vec![1.0; 4], vec![0, 3], 2).is_err());
        let c = Cache::new(2, vec![1.0; 4], vec![0, 1], 2).unwrap();
        assert!(TipAdapter::new(c, Some(vec![0.0; 3])).is_err());
    }
}
