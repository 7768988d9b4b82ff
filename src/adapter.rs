//! The Tip-Adapter model (Zhang et al., ECCV 2022), written once for every caller: online
//! scoring ([`crate::classifier`]), the α/β search ([`crate::train::search`]) and Tip-Adapter-F
//! ([`crate::train::finetune`]).
//!
//! ```text
//! logits = logit_scale · f·Wᵀ + α · exp(−β(1 − f·Kᵀ)) · L            (head "tip")
//!        = logit_scale · f·Wᵀ + α_g · (f·W_gᵀ + b)                    (head "gda")
//!        = logit_scale · f·Wᵀ + α · exp(…) · L + α_g · (f·W_gᵀ + b)   (head "both")
//! ```
//!
//! The zero-shot term is a tiny N×C product ([`TipAdapter::zero_shot`]); the cache term is the
//! affinity kernel ([`crate::kernel`]) over class-sorted keys, wherever they live (a memory-mapped
//! adapter pack or an owned [`crate::pack::PackDraft`]); the GDA term ([`GdaTerm`], Wang et al.,
//! ICLR 2024) is one more N×C layer. The zero-shot and GDA terms together are the *base*
//! ([`TipAdapter::base`]): what the α/β search holds fixed while it varies the cache term.

use crate::error::{Error, Result};
use crate::kernel::scalar::dot_f32;
use crate::kernel::{Kernel, Keys, Scratch, MAX_BATCH};

/// Tip-Adapter's constant CLIP logit scale.
pub const LOGIT_SCALE: f32 = 100.0;
/// The official ImageNet config's initial α and β (`configs/imagenet.yaml`).
pub const DEFAULT_ALPHA: f32 = 1.17;
pub const DEFAULT_BETA: f32 = 1.0;
/// Largest k for top-k; a fixed capacity keeps the hot path allocation-free.
pub const MAX_TOP_K: usize = 16;

/// The three numbers of the equation besides the features: the residual ratio α (weight of the
/// cache term), the sharpness β of the affinities, and the scale of the zero-shot logits.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "runtime", derive(serde::Serialize))]
pub struct AdapterParams {
    pub alpha: f32,
    pub beta: f32,
    pub logit_scale: f32,
}

impl Default for AdapterParams {
    /// The official ImageNet initialisation (α 1.17, β 1) and CLIP's logit scale 100.
    fn default() -> Self {
        AdapterParams {
            alpha: DEFAULT_ALPHA,
            beta: DEFAULT_BETA,
            logit_scale: LOGIT_SCALE,
        }
    }
}

impl AdapterParams {
    /// The same logit scale with another α and β (what the search and `--alpha/--beta` change).
    pub fn with_alpha_beta(self, alpha: f32, beta: f32) -> AdapterParams {
        AdapterParams {
            alpha,
            beta,
            ..self
        }
    }

    /// Refuses non-finite values (a NaN α would silently turn every prediction into class 0).
    pub fn check(&self) -> Result<()> {
        if [self.alpha, self.beta, self.logit_scale]
            .iter()
            .all(|v| v.is_finite())
        {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "α, β and the logit scale must be finite numbers (got α {}, β {}, logit scale {})",
                self.alpha, self.beta, self.logit_scale
            )))
        }
    }
}

/// Which terms a classifier adds to the zero-shot term (FORMAT.md: the pack header's `head`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Head {
    /// Tip-Adapter's cache term (the keys).
    #[default]
    Tip,
    /// The GDA layer alone; the keys are kept in the pack but not scored.
    Gda,
    /// Both terms.
    Both,
}

impl Head {
    pub const ALL: [Head; 3] = [Head::Tip, Head::Gda, Head::Both];

    pub fn name(self) -> &'static str {
        match self {
            Head::Tip => "tip",
            Head::Gda => "gda",
            Head::Both => "both",
        }
    }
    /// Whether the cache term (the keys) is scored.
    pub fn uses_cache(self) -> bool {
        self != Head::Gda
    }
    /// Whether the GDA term is scored.
    pub fn uses_gda(self) -> bool {
        self != Head::Tip
    }
}

impl std::fmt::Display for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Head {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Head, String> {
        Head::ALL
            .into_iter()
            .find(|h| h.name() == s)
            .ok_or_else(|| format!("unknown head '{s}' (tip, gda, both, or auto)"))
    }
}

/// The GDA head's term `α_g · (f·W_gᵀ + b)` over borrowed data: `weights` is `n_classes × dim`,
/// row-major, `bias` one value per class (see [`crate::train::gda`] for the fit).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GdaTerm<'a> {
    pub weights: &'a [f32],
    pub bias: &'a [f32],
    pub alpha: f32,
}

impl GdaTerm<'_> {
    /// Adds `α_g · (f·W_gᵀ + b)` of one feature to `out` (one value per class).
    pub fn add_to(&self, f: &[f32], out: &mut [f32]) {
        let dim = f.len();
        for ((o, w), b) in out
            .iter_mut()
            .zip(self.weights.chunks_exact(dim))
            .zip(self.bias)
        {
            *o += self.alpha * (dot_f32(f, w) + b);
        }
    }
}

/// The Tip-Adapter model over borrowed data: class-sorted keys K (the values L are implicit in
/// the class offsets), the zero-shot classifier W (`n_classes × dim`, unit-norm rows; absent for
/// image-only backbones, which use the cache term alone) and the [`AdapterParams`]. Cheap to
/// copy; scoring needs a [`Kernel`] and a [`ScoreScratch`] and allocates nothing.
#[derive(Clone, Copy, Debug)]
pub struct TipAdapter<'a> {
    keys: Keys<'a>,
    classifier: Option<&'a [f32]>,
    params: AdapterParams,
    /// The GDA term, when the head uses it.
    gda: Option<GdaTerm<'a>>,
    /// Whether the cache term is scored (false for the GDA head alone).
    cache: bool,
}

impl<'a> TipAdapter<'a> {
    /// Checks that W has one row of the keys' dimension per class.
    pub fn new(
        keys: Keys<'a>,
        classifier: Option<&'a [f32]>,
        params: AdapterParams,
    ) -> Result<TipAdapter<'a>> {
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
            params,
            gda: None,
            cache: true,
        })
    }

    /// The same model scored with `head`: `gda` must be given when the head uses it (it is
    /// dropped otherwise), with one row of the keys' dimension and one bias per class, and a
    /// finite α.
    pub fn with_head(self, head: Head, gda: Option<GdaTerm<'a>>) -> Result<TipAdapter<'a>> {
        let (nc, dim) = (self.n_classes(), self.dim());
        match (head.uses_gda(), gda) {
            (false, _) => Ok(TipAdapter {
                gda: None,
                cache: true,
                ..self
            }),
            (true, None) => Err(Error::Invalid(format!(
                "head '{head}' needs a GDA layer, and there is none"
            ))),
            (true, Some(g)) => {
                if g.weights.len() != nc * dim || g.bias.len() != nc {
                    return Err(Error::Invalid(format!(
                        "the GDA layer has {} weights and {} biases, the model {nc} classes × dim {dim}",
                        g.weights.len(),
                        g.bias.len()
                    )));
                }
                if !g.alpha.is_finite() {
                    return Err(Error::Invalid(format!(
                        "the GDA layer's α is {} (must be finite)",
                        g.alpha
                    )));
                }
                Ok(TipAdapter {
                    gda: Some(g),
                    cache: head.uses_cache(),
                    ..self
                })
            }
        }
    }

    /// Which terms are scored.
    pub fn head(&self) -> Head {
        match (self.cache, self.gda.is_some()) {
            (true, false) => Head::Tip,
            (false, _) => Head::Gda,
            (true, true) => Head::Both,
        }
    }

    /// The GDA term, if the head scores it.
    pub fn gda(&self) -> Option<GdaTerm<'a>> {
        self.gda
    }

    /// The same keys and W with other parameters.
    pub fn with_params(self, params: AdapterParams) -> TipAdapter<'a> {
        TipAdapter { params, ..self }
    }

    /// The same W and parameters with other keys of the same dimension and classes (fine-tuned
    /// keys, for instance).
    pub fn with_keys<'b>(self, keys: Keys<'b>) -> Result<TipAdapter<'b>>
    where
        'a: 'b,
    {
        if (keys.dim(), keys.n_classes()) != (self.dim(), self.n_classes()) {
            return Err(Error::Invalid(format!(
                "replacement keys have dim {} and {} classes, the model dim {} and {} classes",
                keys.dim(),
                keys.n_classes(),
                self.dim(),
                self.n_classes()
            )));
        }
        Ok(TipAdapter { keys, ..self })
    }

    /// Without W: the cache term alone (the "cache-only" column of `tipedge eval`).
    pub fn without_classifier(self) -> TipAdapter<'a> {
        TipAdapter {
            classifier: None,
            ..self
        }
    }

    pub fn keys(&self) -> &Keys<'a> {
        &self.keys
    }
    pub fn classifier(&self) -> Option<&'a [f32]> {
        self.classifier
    }
    pub fn params(&self) -> AdapterParams {
        self.params
    }
    pub fn n_classes(&self) -> usize {
        self.keys.n_classes()
    }
    pub fn dim(&self) -> usize {
        self.keys.dim()
    }

    /// The zero-shot term `logit_scale · f·Wᵀ` of one unit-norm feature into `out` (zeros when
    /// there is no W). The one place the term is computed (online, search, Tip-Adapter-F).
    pub fn zero_shot(&self, f: &[f32], out: &mut [f32]) {
        match self.classifier {
            Some(w) => {
                for (o, row) in out.iter_mut().zip(w.chunks_exact(self.dim())) {
                    *o = self.params.logit_scale * dot_f32(f, row);
                }
            }
            None => out.fill(0.0),
        }
    }

    /// The terms the α/β search holds fixed: the zero-shot term plus, when the head has one,
    /// the GDA term.
    pub fn base(&self, f: &[f32], out: &mut [f32]) {
        self.zero_shot(f, out);
        if let Some(g) = &self.gda {
            g.add_to(f, out);
        }
    }

    /// `logits = base + α·exp(−β(1 − f·Kᵀ))·L` (the cache term only when the head scores it)
    /// for up to [`MAX_BATCH`] unit-norm queries (row-major `batch × dim` in, `batch ×
    /// n_classes` out), reading the keys once for the whole batch. Allocates nothing.
    pub fn logits_batch(
        &self,
        kernel: &Kernel,
        scratch: &mut ScoreScratch,
        queries: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
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
        if !scratch.fits(dim, nc) {
            return Err(Error::Invalid(format!(
                "score scratch was made for dim {} and {} classes, the model has dim {dim} and {nc}",
                scratch.kernel.dim(),
                scratch.class_sums.len() / MAX_BATCH
            )));
        }
        if !self.cache {
            for (f, o) in queries.chunks_exact(dim).zip(out.chunks_exact_mut(nc)) {
                self.base(f, o);
            }
            return Ok(());
        }
        let sums = &mut scratch.class_sums[..batch * nc];
        kernel
            .class_affinity(
                queries,
                &self.keys,
                self.params.beta,
                &mut scratch.kernel,
                sums,
            )
            .map_err(|e| Error::Invalid(e.to_string()))?;
        for ((f, o), s) in queries
            .chunks_exact(dim)
            .zip(out.chunks_exact_mut(nc))
            .zip(sums.chunks_exact(nc))
        {
            self.base(f, o);
            for (o, s) in o.iter_mut().zip(s) {
                *o += self.params.alpha * s;
            }
        }
        Ok(())
    }
}

impl TipAdapter<'_> {
    /// The logits of any number of unit-norm features (`n × dim` in, `n × n_classes` out), in
    /// batches of [`MAX_BATCH`]; the zero-shot term alone when `zero_shot_only`. Allocating
    /// convenience for offline work (evaluation, calibration).
    pub fn logits_all(
        &self,
        kernel: &Kernel,
        features: &[f32],
        zero_shot_only: bool,
    ) -> Result<Vec<f32>> {
        let (dim, nc) = (self.dim(), self.n_classes());
        if !features.len().is_multiple_of(dim) {
            return Err(Error::Invalid(format!(
                "{} feature values are not whole features of dimension {dim}",
                features.len()
            )));
        }
        let mut scratch = ScoreScratch::new(dim, nc);
        let mut out = vec![0f32; features.len() / dim * nc];
        for (q, o) in features
            .chunks(MAX_BATCH * dim)
            .zip(out.chunks_mut(MAX_BATCH * nc))
        {
            if zero_shot_only {
                for (f, o) in q.chunks_exact(dim).zip(o.chunks_exact_mut(nc)) {
                    self.zero_shot(f, o);
                }
            } else {
                self.logits_batch(kernel, &mut scratch, q, o)?;
            }
        }
        Ok(out)
    }
}

/// Work buffers for scoring one model shape (dimension, class count): the kernel's scratch and
/// the per-class sums of a batch. Allocated once; a caller that scores on several threads keeps
/// one per thread.
pub struct ScoreScratch {
    kernel: Scratch,
    class_sums: Vec<f32>,
}

impl ScoreScratch {
    pub fn new(dim: usize, n_classes: usize) -> ScoreScratch {
        ScoreScratch {
            kernel: Scratch::new(dim),
            class_sums: vec![0.0; MAX_BATCH * n_classes],
        }
    }

    /// Whether this scratch serves a model of `dim` and `n_classes`.
    pub fn fits(&self, dim: usize, n_classes: usize) -> bool {
        self.kernel.dim() == dim && self.class_sums.len() == MAX_BATCH * n_classes
    }
}

/// One class of a top-k list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// Class index (into the classifier's class names).
    pub class: usize,
    pub logit: f32,
    /// Softmax probability over all classes.
    pub prob: f32,
}

/// The k largest logits (k ≤ [`MAX_TOP_K`]), best first, with probabilities `softmax(logits)`.
/// Allocates nothing.
pub fn top_k(logits: &[f32], k: usize) -> heapless::Vec<Scored, MAX_TOP_K> {
    top_k_at(logits, k, 1.0)
}

/// [`top_k`] with calibrated probabilities `softmax(logits / temperature)` (temperature > 0;
/// the ranking does not depend on it). The probabilities are those of
/// [`softmax_with_temperature`], bit for bit.
pub fn top_k_at(logits: &[f32], k: usize, temperature: f32) -> heapless::Vec<Scored, MAX_TOP_K> {
    let mut best: heapless::Vec<Scored, MAX_TOP_K> = heapless::Vec::new();
    let k = k.min(MAX_TOP_K).min(logits.len());
    if k == 0 {
        return best;
    }
    let softmax = Softmax::new(logits, temperature);
    for (i, &l) in logits.iter().enumerate() {
        let pos = best.iter().position(|b| l > b.logit).unwrap_or(best.len());
        if pos < k {
            if best.len() == k {
                best.pop();
            }
            // Cannot fail: one slot was freed above or len < k ≤ capacity.
            let _ = best.insert(
                pos,
                Scored {
                    class: i,
                    logit: l,
                    prob: softmax.prob(l),
                },
            );
        }
    }
    best
}

/// `softmax(row / T)` of one row into `out` (same length): the row's maximum subtracted,
/// computed in f64, written as f32. Allocates nothing. `temperature` must be finite and
/// positive, the logits finite. Panics when `out.len() != row.len()`.
pub fn softmax_with_temperature(row: &[f32], temperature: f32, out: &mut [f32]) {
    assert_eq!(
        row.len(),
        out.len(),
        "softmax_with_temperature: {} logits into {} probabilities",
        row.len(),
        out.len()
    );
    let softmax = Softmax::new(row, temperature);
    for (p, &z) in out.iter_mut().zip(row) {
        *p = softmax.prob(z);
    }
}

/// One row's softmax at `s = 1/T`: `p(z) = exp(s·(z − max)) / Σ exp(s·(z_c − max))` in f64,
/// so no `exp` overflows and tiny temperatures (an image-only cache's T ≈ 1e-3) lose nothing.
struct Softmax {
    max: f64,
    s: f64,
    sum: f64,
}

impl Softmax {
    fn new(row: &[f32], temperature: f32) -> Softmax {
        let s = 1.0 / f64::from(temperature);
        let max = f64::from(row.iter().copied().fold(f32::NEG_INFINITY, f32::max));
        let sum = row.iter().map(|&z| ((f64::from(z) - max) * s).exp()).sum();
        Softmax { max, s, sum }
    }

    fn prob(&self, z: f32) -> f32 {
        (((f64::from(z) - self.max) * self.s).exp() / self.sum) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::KeyData;

    #[test]
    fn top_k_orders_and_caps() {
        let l = [0.1, 3.0, -1.0, 2.0, 2.5];
        let t = top_k(&l, 3);
        let idx: Vec<usize> = t.iter().map(|x| x.class).collect();
        assert_eq!(idx, [1, 4, 3]);
        let p: f32 = top_k(&l, 5).iter().map(|x| x.prob).sum();
        assert!((p - 1.0).abs() < 1e-6);
        assert_eq!(top_k(&l, 100).len(), 5);
        assert!(top_k(&l, 0).is_empty());
    }

    #[test]
    fn cache_term_matches_equation() {
        // Two classes, three class-sorted keys; query equal to key 0.
        let keys = [1.0, 0.0, 0.0, 1.0, 0.6, 0.8];
        let offsets = [0, 1, 3];
        let keys = Keys::new(2, KeyData::F32(&keys), &offsets).unwrap();
        let params = AdapterParams {
            alpha: 2.0,
            beta: 3.0,
            logit_scale: 100.0,
        };
        let model = TipAdapter::new(keys, None, params).unwrap();
        let mut scratch = ScoreScratch::new(2, 2);
        let mut out = [0.0; 2];
        model
            .logits_batch(&Kernel::detect(), &mut scratch, &[1.0, 0.0], &mut out)
            .unwrap();
        let e = |s: f32| 2.0 * (-3.0 * (1.0 - s)).exp();
        assert!((out[0] - e(1.0)).abs() < 1e-6);
        assert!((out[1] - (e(0.0) + e(0.6))).abs() < 1e-6);
    }

    #[test]
    fn bad_shapes_are_refused() {
        let offsets = [0, 1, 2];
        let keys = Keys::new(2, KeyData::F32(&[1.0; 4]), &offsets).unwrap();
        let p = AdapterParams::default();
        assert!(TipAdapter::new(keys, Some(&[0.0; 3]), p).is_err());
        let a = TipAdapter::new(keys, None, p).unwrap();
        let k = Kernel::detect();
        let mut s = ScoreScratch::new(2, 2);
        assert!(a
            .logits_batch(&k, &mut s, &[1.0, 0.0, 0.0], &mut [0.0; 2])
            .is_err());
        assert!(a
            .logits_batch(&k, &mut s, &[1.0, 0.0], &mut [0.0; 3])
            .is_err());
        let mut wrong = ScoreScratch::new(2, 3);
        assert!(a
            .logits_batch(&k, &mut wrong, &[1.0, 0.0], &mut [0.0; 2])
            .is_err());
        assert!(AdapterParams {
            alpha: f32::NAN,
            ..p
        }
        .check()
        .is_err());
    }
}
