//! Tip-Adapter scoring (Zhang et al., ECCV 2022): the online path's glue.
//!
//! `logits = logit_scale·f·Wᵀ + α·exp(−β(1 − f·Kᵀ))·L`: the zero-shot term is a tiny N×C
//! product done here; the cache term is the affinity kernel ([`crate::kernel`]) over class-sorted
//! keys, wherever they live (an in-memory [`Cache`] or a memory-mapped adapter pack).

use crate::error::{Error, Result};
use crate::kernel::{Kernel, KeyData, Keys, Scratch, MAX_BATCH};

/// Tip-Adapter's constant CLIP logit scale.
pub const LOGIT_SCALE: f32 = 100.0;
/// The official ImageNet config's initial α and β (`configs/imagenet.yaml`).
pub const DEFAULT_ALPHA: f32 = 1.17;
pub const DEFAULT_BETA: f32 = 1.0;
/// Largest k for top-k; a fixed capacity keeps the hot path allocation-free.
pub const MAX_TOP_K: usize = 16;

/// The key-value cache built in memory: keys are unit-norm image features of the few-shot
/// images, stored sorted by class; values are their labels (the one-hot matrix L is implicit in
/// the class offsets).
#[derive(Debug, Clone)]
pub struct Cache {
    dim: usize,
    keys: Vec<f32>,
    labels: Vec<u32>,
    class_offsets: Vec<u32>,
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
        if n_classes == 0 {
            return Err(Error::Invalid("cache: no classes".into()));
        }
        if let Some(bad) = labels.iter().find(|&&l| l as usize >= n_classes) {
            return Err(Error::Invalid(format!(
                "cache: label {bad} out of range ({n_classes} classes)"
            )));
        }
        crate::kernel::l2_normalize_rows(&mut keys, dim);
        let mut order: Vec<usize> = (0..labels.len()).collect();
        order.sort_by_key(|&i| labels[i]);
        let keys = order
            .iter()
            .flat_map(|&i| keys[i * dim..(i + 1) * dim].iter().copied())
            .collect();
        let labels: Vec<u32> = order.iter().map(|&i| labels[i]).collect();
        let mut class_offsets = vec![0u32; n_classes + 1];
        for &l in &labels {
            class_offsets[l as usize + 1] += 1;
        }
        for c in 0..n_classes {
            class_offsets[c + 1] += class_offsets[c];
        }
        Ok(Cache {
            dim,
            keys,
            labels,
            class_offsets,
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
        self.class_offsets.len() - 1
    }
    pub fn keys(&self) -> &[f32] {
        &self.keys
    }
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }
    /// Class `c` owns keys `class_offsets[c]..class_offsets[c+1]`.
    pub fn class_offsets(&self) -> &[u32] {
        &self.class_offsets
    }
    /// The keys as the kernel reads them (f32).
    pub fn view(&self) -> Keys<'_> {
        Keys::new(self.dim, KeyData::F32(&self.keys), &self.class_offsets)
            .expect("a Cache is consistent by construction")
    }
}

/// The adapted classifier over borrowed keys: zero-shot text classifier W (absent for
/// image-only backbones) plus the cache term, scored by a dispatched [`Kernel`].
///
/// All buffers are allocated in [`TipAdapter::new`]; [`TipAdapter::logits`] and
/// [`TipAdapter::logits_batch`] allocate nothing.
pub struct TipAdapter<'a> {
    keys: Keys<'a>,
    /// `n_classes × dim`, unit-norm rows.
    classifier: Option<&'a [f32]>,
    pub alpha: f32,
    pub beta: f32,
    pub logit_scale: f32,
    kernel: Kernel,
    scratch: Scratch,
    class_sums: Vec<f32>,
}

impl<'a> TipAdapter<'a> {
    /// A Tip-Adapter over `keys` with the default α, β and logit scale and the best kernel for
    /// this CPU.
    pub fn new(keys: Keys<'a>, classifier: Option<&'a [f32]>) -> Result<TipAdapter<'a>> {
        if let Some(w) = classifier {
            if w.len() != keys.n_classes() * keys.dim() {
                return Err(Error::Invalid(format!(
                    "text classifier has {} values, expected {} classes × {} dims",
                    w.len(),
                    keys.n_classes(),
                    keys.dim()
                )));
            }
        }
        Ok(TipAdapter {
            keys,
            classifier,
            alpha: DEFAULT_ALPHA,
            beta: DEFAULT_BETA,
            logit_scale: LOGIT_SCALE,
            kernel: Kernel::detect(),
            scratch: Scratch::new(keys.dim()),
            class_sums: vec![0.0; MAX_BATCH * keys.n_classes()],
        })
    }

    /// Use `kernel` instead of the detected one (tests, benchmarks).
    pub fn with_kernel(mut self, kernel: Kernel) -> Self {
        self.kernel = kernel;
        self
    }

    pub fn kernel(&self) -> Kernel {
        self.kernel
    }
    pub fn keys(&self) -> &Keys<'a> {
        &self.keys
    }
    pub fn n_classes(&self) -> usize {
        self.keys.n_classes()
    }
    pub fn dim(&self) -> usize {
        self.keys.dim()
    }

    /// Zero-shot logits `logit_scale · f·Wᵀ` into `out` (zeros when there is no W).
    pub fn zero_shot_logits(&self, f: &[f32], out: &mut [f32]) {
        out.fill(0.0);
        if let Some(w) = self.classifier {
            for (o, row) in out.iter_mut().zip(w.chunks_exact(self.dim())) {
                *o = self.logit_scale * row.iter().zip(f).map(|(a, b)| a * b).sum::<f32>();
            }
        }
    }

    /// `logits = logit_scale·f·Wᵀ + α·exp(−β(1 − f·Kᵀ))·L` for one unit-norm query `f`.
    /// Image-only backbones have no W: the cache term alone.
    pub fn logits(&mut self, f: &[f32], out: &mut [f32]) -> Result<()> {
        self.logits_batch(f, out)
    }

    /// Logits for up to [`MAX_BATCH`] queries (row-major `batch × dim` in, `batch × n_classes`
    /// out), reading the keys once for the whole batch.
    pub fn logits_batch(&mut self, queries: &[f32], out: &mut [f32]) -> Result<()> {
        let (dim, nc) = (self.dim(), self.n_classes());
        if queries.is_empty()
            || !queries.len().is_multiple_of(dim)
            || queries.len() / dim > MAX_BATCH
        {
            return Err(Error::Invalid(format!(
                "{} query values are not a batch of 1..={MAX_BATCH} features of dimension {dim}",
                queries.len()
            )));
        }
        let batch = queries.len() / dim;
        if out.len() != batch * nc {
            return Err(Error::Invalid(format!(
                "logits buffer holds {} values, expected {batch} × {nc} classes",
                out.len()
            )));
        }
        let sums = &mut self.class_sums[..batch * nc];
        self.kernel
            .class_affinity(queries, &self.keys, self.beta, &mut self.scratch, sums)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        for (b, (f, o)) in queries
            .chunks_exact(dim)
            .zip(out.chunks_exact_mut(nc))
            .enumerate()
        {
            self.zero_shot_logits(f, o);
            for (o, s) in o.iter_mut().zip(&self.class_sums[b * nc..(b + 1) * nc]) {
                *o += self.alpha * s;
            }
        }
        Ok(())
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
        assert_eq!(cache.class_offsets(), &[0, 1, 3]);
        let mut adapter = TipAdapter::new(cache.view(), None).unwrap();
        adapter.alpha = 2.0;
        adapter.beta = 3.0;
        let mut out = [0.0; 2];
        adapter.logits(&[1.0, 0.0], &mut out).unwrap();
        let e = |s: f32| 2.0 * (-3.0 * (1.0 - s)).exp();
        assert!((out[0] - e(0.0)).abs() < 1e-6);
        assert!((out[1] - (e(1.0) + e(0.6))).abs() < 1e-6);
    }

    #[test]
    fn bad_shapes_are_refused() {
        assert!(Cache::new(2, vec![1.0; 5], vec![0, 0], 1).is_err());
        assert!(Cache::new(2, vec![1.0; 4], vec![0, 3], 2).is_err());
        let c = Cache::new(2, vec![1.0; 4], vec![0, 1], 2).unwrap();
        assert!(TipAdapter::new(c.view(), Some(&[0.0; 3])).is_err());
        let mut a = TipAdapter::new(c.view(), None).unwrap();
        assert!(a.logits(&[1.0, 0.0, 0.0], &mut [0.0; 2]).is_err());
        assert!(a.logits(&[1.0, 0.0], &mut [0.0; 3]).is_err());
    }
}
