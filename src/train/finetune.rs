//! Tip-Adapter-F: the cache keys become trainable parameters (values stay the frozen one-hot
//! labels) and are fitted with cross-entropy on the Tip-Adapter logits, as the official
//! `run_tip_adapter_F` does:
//!
//! ```text
//! a = f·Kᵀ,  A = exp(−β(1 − a)),  z = s·f·Wᵀ + α·A·L,  loss = mean_b CE(z_b, y_b)
//! ```
//!
//! The gradient is closed-form: with `δ = (softmax(z) − onehot(y)) / B`,
//! `∂loss/∂a_bk = α·β·A_bk·δ_b[label(k)]` and `∂loss/∂K = (∂loss/∂a)ᵀ·F`.
//! The optimiser is PyTorch's AdamW (decoupled weight decay, bias-corrected moments, eps added
//! after the square root) with cosine annealing stepped once per iteration; keys are not
//! renormalised after training.

use crate::adapter::{AdapterParams, Head, TipAdapter};
use crate::error::{Error, Result};
use crate::kernel::scalar::dot_f32 as dot;
use crate::kernel::{class_offsets_of, KeyData, Keys};
use crate::pack::OwnedGda;
use crate::rng::{derive_seed, Rng};

/// The optimiser settings of the official code and the paper.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FinetuneConfig {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub eps: f64,
    /// PyTorch's AdamW default, which the official code leaves in place.
    pub weight_decay: f64,
    pub betas: (f64, f64),
    /// Seed of the per-epoch shuffles.
    pub seed: u64,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        FinetuneConfig {
            epochs: 20,
            batch: 256,
            lr: 1e-3,
            eps: 1e-4,
            weight_decay: 0.01,
            betas: (0.9, 0.999),
            seed: 1,
        }
    }
}

/// `CosineAnnealingLR` with `eta_min = 0`: the rate of step `t` (0-based) of `t_max`.
pub fn cosine_lr(base: f64, t: usize, t_max: usize) -> f64 {
    if t_max == 0 {
        return base;
    }
    base * (1.0 + (std::f64::consts::PI * t as f64 / t_max as f64).cos()) / 2.0
}

/// PyTorch's `AdamW` (single-tensor path), in f32 like the tensors, with scalars computed in
/// f64 like Python's floats.
#[derive(Debug, Clone)]
pub struct AdamW {
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
    m: Vec<f32>,
    v: Vec<f32>,
    step: i32,
}

impl AdamW {
    pub fn new(n_params: usize, cfg: &FinetuneConfig) -> AdamW {
        AdamW {
            betas: cfg.betas,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
            m: vec![0.0; n_params],
            v: vec![0.0; n_params],
            step: 0,
        }
    }

    /// One update of `param` with `grad` at learning rate `lr`.
    pub fn update(&mut self, param: &mut [f32], grad: &[f32], lr: f64) {
        assert_eq!(param.len(), self.m.len());
        assert_eq!(grad.len(), self.m.len());
        self.step += 1;
        let (b1, b2) = self.betas;
        let decay = (1.0 - lr * self.weight_decay) as f32;
        let w1 = (1.0 - b1) as f32;
        let b2f = b2 as f32;
        let w2 = (1.0 - b2) as f32;
        let bc1 = 1.0 - b1.powi(self.step);
        let bc2 = 1.0 - b2.powi(self.step);
        let step_size = -(lr / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let eps = self.eps as f32;
        for (((p, &g), m), v) in param.iter_mut().zip(grad).zip(&mut self.m).zip(&mut self.v) {
            *p *= decay;
            *m += w1 * (g - *m);
            *v = *v * b2f + w2 * (g * g);
            let denom = v.sqrt() / bc2_sqrt + eps;
            *p += step_size * (*m / denom);
        }
    }
}

/// The trainable cache: the Tip-Adapter model ([`TipAdapter`]) whose keys (`n_keys × dim`,
/// f32, sorted by class) are parameters, with the frozen zero-shot classifier, α, β and the
/// logit scale, and the buffers one step needs.
#[derive(Debug, Clone)]
pub struct TipAdapterF {
    pub keys: Vec<f32>,
    class_offsets: Vec<u32>,
    labels: Vec<u32>,
    classifier: Option<Vec<f32>>,
    dim: usize,
    params: AdapterParams,
    /// A frozen GDA term added to the logits (a pack whose head is `both`).
    gda: Option<OwnedGda>,
    grad: Vec<f32>,
    aff: Vec<f32>,
    delta: Vec<f32>,
}

impl TipAdapterF {
    /// Starts from `keys` (`labels.len() × dim`) whose labels are sorted by class, as a pack's
    /// are; W (if any) is `n_classes × dim`.
    pub fn new(
        keys: Vec<f32>,
        labels: Vec<u32>,
        classifier: Option<Vec<f32>>,
        dim: usize,
        n_classes: usize,
        params: AdapterParams,
    ) -> Result<TipAdapterF> {
        if dim == 0 || keys.len() != labels.len() * dim {
            return Err(Error::Invalid(format!(
                "Tip-Adapter-F: {} key values for {} labels of dim {dim}",
                keys.len(),
                labels.len()
            )));
        }
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= n_classes) {
            return Err(Error::Invalid(format!(
                "Tip-Adapter-F: label {bad} out of range ({n_classes} classes)"
            )));
        }
        if labels.windows(2).any(|w| w[1] < w[0]) {
            return Err(Error::Invalid(
                "Tip-Adapter-F: keys must be sorted by class".into(),
            ));
        }
        let class_offsets = class_offsets_of(&labels, n_classes);
        let f = TipAdapterF {
            grad: vec![0.0; keys.len()],
            keys,
            class_offsets,
            labels,
            classifier,
            dim,
            params,
            gda: None,
            aff: Vec::new(),
            delta: Vec::new(),
        };
        // W's shape is the model's to check.
        f.model()?;
        Ok(f)
    }

    /// Trains the keys with a frozen GDA term in the logits (the keys of a pack whose head is
    /// `both`); `None` leaves the model as it is.
    pub fn with_gda(self, gda: Option<OwnedGda>) -> Result<TipAdapterF> {
        let f = TipAdapterF { gda, ..self };
        f.model()?;
        Ok(f)
    }

    /// The model at the current keys (for the zero-shot term, validation and the α/β search).
    pub fn model(&self) -> Result<TipAdapter<'_>> {
        let keys = Keys::new(self.dim, KeyData::F32(&self.keys), &self.class_offsets)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let head = if self.gda.is_some() {
            Head::Both
        } else {
            Head::Tip
        };
        TipAdapter::new(keys, self.classifier.as_deref(), self.params)?
            .with_head(head, self.gda.as_ref().map(OwnedGda::term))
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn n_classes(&self) -> usize {
        self.class_offsets.len() - 1
    }

    pub fn n_keys(&self) -> usize {
        self.labels.len()
    }

    /// The gradient left by the last [`TipAdapterF::loss_and_grad`].
    pub fn grad(&self) -> &[f32] {
        &self.grad
    }

    /// Mean cross-entropy of the batch `features` (`b × dim`) with `targets`, and its gradient
    /// with respect to the keys (kept in `self.grad`).
    pub fn loss_and_grad(&mut self, features: &[f32], targets: &[u32]) -> f64 {
        let (dim, nk, nc) = (self.dim, self.n_keys(), self.n_classes());
        let b = targets.len();
        assert_eq!(features.len(), b * dim, "features must be batch × dim");
        self.aff.resize(b * nk, 0.0);
        self.delta.resize(b * nc, 0.0);
        let TipAdapterF {
            keys,
            class_offsets,
            labels,
            classifier,
            params,
            gda,
            grad,
            aff,
            delta,
            ..
        } = self;
        let beta = params.beta;
        let alpha = params.alpha;
        // Forward: A = exp(β·a − β) (the official `exp(−(β − β·a))`), z = s·f·Wᵀ + α·A·L.
        par_rows(aff, nk, |bi, row| {
            let f = &features[bi * dim..(bi + 1) * dim];
            for (a, k) in row.iter_mut().zip(keys.chunks_exact(dim)) {
                *a = (-(beta - beta * dot(f, k))).exp();
            }
        });
        let model = TipAdapter::new(
            Keys::new(dim, KeyData::F32(keys), class_offsets)
                .expect("checked at construction: keys and class offsets agree"),
            classifier.as_deref(),
            *params,
        )
        .and_then(|m| match gda {
            Some(g) => m.with_head(Head::Both, Some(g.term())),
            None => Ok(m),
        })
        .expect("checked at construction: W and the GDA layer have one row per class");
        let mut loss = 0f64;
        let mut z = vec![0f32; nc];
        let mut cache = vec![0f32; nc];
        for bi in 0..b {
            let f = &features[bi * dim..(bi + 1) * dim];
            model.base(f, &mut z);
            cache.fill(0.0);
            for (a, &l) in aff[bi * nk..(bi + 1) * nk].iter().zip(labels.iter()) {
                cache[l as usize] += a;
            }
            for (zc, c) in z.iter_mut().zip(&cache) {
                *zc += alpha * c;
            }
            // Softmax and cross-entropy in f64 (log-sum-exp with the maximum subtracted).
            let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
            let sum: f64 = z.iter().map(|&v| (v as f64 - max).exp()).sum();
            let y = targets[bi] as usize;
            loss += sum.ln() + max - z[y] as f64;
            for (c, d) in delta[bi * nc..(bi + 1) * nc].iter_mut().enumerate() {
                let p = (z[c] as f64 - max).exp() / sum;
                let t = if c == y { 1.0 } else { 0.0 };
                *d = ((p - t) / b as f64) as f32;
            }
        }
        // Backward: g_bk = α·β·A_bk·δ_b[label k] (in place of A), ∂K_k = Σ_b g_bk·f_b.
        let ab = alpha * beta;
        for bi in 0..b {
            let d = &delta[bi * nc..(bi + 1) * nc];
            for (a, &l) in aff[bi * nk..(bi + 1) * nk].iter_mut().zip(labels.iter()) {
                *a *= ab * d[l as usize];
            }
        }
        let g = &*aff;
        par_rows(grad, dim, |k, gk| {
            gk.fill(0.0);
            for bi in 0..b {
                let gbk = g[bi * nk + k];
                if gbk != 0.0 {
                    for (o, &x) in gk.iter_mut().zip(&features[bi * dim..(bi + 1) * dim]) {
                        *o += gbk * x;
                    }
                }
            }
        });
        loss / b as f64
    }

    /// One optimiser step on a batch; returns the batch loss before the step.
    pub fn step(&mut self, opt: &mut AdamW, features: &[f32], targets: &[u32], lr: f64) -> f64 {
        let loss = self.loss_and_grad(features, targets);
        opt.update(&mut self.keys, &self.grad, lr);
        loss
    }
}

/// One epoch's numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "runtime", derive(serde::Serialize))]
pub struct EpochReport {
    pub epoch: usize,
    /// Mean of the batch losses.
    pub loss: f64,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// Validation top-1 (percent) with the keys at the end of the epoch.
    pub val_accuracy: f64,
}

/// The result of [`train`]: the keys of the best epoch on the validation split.
#[derive(Debug, Clone)]
pub struct Trained {
    pub keys: Vec<f32>,
    pub best_epoch: usize,
    pub best_val_accuracy: f64,
    pub epochs: Vec<EpochReport>,
}

/// The training loop: each epoch asks `epoch_data(epoch)` for freshly augmented training
/// features (unit-norm, `n × dim`) and their classes, shuffles them (seeded), walks them in
/// batches of `cfg.batch` (the last one smaller), steps AdamW with the cosine schedule over
/// `epochs × batches` iterations, then asks `validate(model)` for the validation accuracy. The
/// keys of the first epoch with the strictly best validation accuracy are returned.
pub fn train<E>(
    model: &mut TipAdapterF,
    cfg: &FinetuneConfig,
    mut epoch_data: impl FnMut(usize) -> Result<(Vec<f32>, Vec<u32>), E>,
    mut validate: impl FnMut(&TipAdapterF) -> Result<f64, E>,
    mut on_epoch: impl FnMut(&EpochReport),
) -> Result<Trained, E> {
    let dim = model.dim;
    let mut opt = AdamW::new(model.keys.len(), cfg);
    let mut best: Option<(usize, f64, Vec<f32>)> = None;
    let mut reports = Vec::with_capacity(cfg.epochs);
    let mut t = 0;
    let mut t_max = 0;
    let mut batch_feats = Vec::new();
    let mut batch_targets = Vec::new();
    for epoch in 0..cfg.epochs {
        let (feats, targets) = epoch_data(epoch)?;
        let n = targets.len();
        if epoch == 0 {
            t_max = cfg.epochs * n.div_ceil(cfg.batch.max(1));
        }
        let mut order: Vec<usize> = (0..n).collect();
        Rng::new(derive_seed(cfg.seed, &[0x5F, epoch as u64])).shuffle(&mut order);
        let mut loss_sum = 0.0;
        let mut batches = 0;
        let mut lr = cfg.lr;
        for chunk in order.chunks(cfg.batch.max(1)) {
            batch_feats.clear();
            batch_targets.clear();
            for &i in chunk {
                batch_feats.extend_from_slice(&feats[i * dim..(i + 1) * dim]);
                batch_targets.push(targets[i]);
            }
            lr = cosine_lr(cfg.lr, t, t_max);
            loss_sum += model.step(&mut opt, &batch_feats, &batch_targets, lr);
            batches += 1;
            t += 1;
        }
        let val_accuracy = validate(model)?;
        let report = EpochReport {
            epoch,
            loss: if batches > 0 {
                loss_sum / batches as f64
            } else {
                0.0
            },
            lr,
            val_accuracy,
        };
        on_epoch(&report);
        reports.push(report);
        if best.as_ref().is_none_or(|b| val_accuracy > b.1) {
            best = Some((epoch, val_accuracy, model.keys.clone()));
        }
    }
    let (best_epoch, best_val_accuracy, keys) = best.unwrap_or((0, 0.0, model.keys.clone()));
    Ok(Trained {
        keys,
        best_epoch,
        best_val_accuracy,
        epochs: reports,
    })
}

/// Runs `f(row_index, row)` over the `row_len`-long rows of `out`, on rayon's pool when the
/// runtime is built (the rows are independent), sequentially otherwise.
fn par_rows(out: &mut [f32], row_len: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if row_len == 0 {
        return;
    }
    #[cfg(feature = "runtime")]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(row_len)
            .enumerate()
            .for_each(|(i, r)| f(i, r));
    }
    #[cfg(not(feature = "runtime"))]
    out.chunks_mut(row_len)
        .enumerate()
        .for_each(|(i, r)| f(i, r));
}
