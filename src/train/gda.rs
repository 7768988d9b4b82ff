//! The GDA head (Wang et al., ICLR 2024, "A Hard-to-Beat Baseline for Training-free CLIP-based
//! Adaptation"; official code mrflogs/ICLR24, `main_few_shots.py`): a Gaussian discriminant
//! analysis classifier on the few-shot features — one linear layer, `C × D`, so less memory and
//! time per frame than a cache of `C × K` keys.
//!
//! As the official fitting, from the unit-norm features of every augmented view of every shot:
//!
//! ```text
//! μ_c  = mean of class c's features
//! X    = every feature minus its class mean            (N × D)
//! S    = cov(Xᵀ)  (torch.cov: rows' mean removed, divided by N − 1)
//! Σ⁻¹  = D · pinv((N − 1) S + tr(S) I)                 (the official shrinkage)
//! W_g  = μ Σ⁻¹,   b_c = log p_c − ½ μ_c Σ⁻¹ μ_cᵀ,   p_c = 1 / C
//! logits = logit_scale · f Wᵀ + α (f W_gᵀ + b)        (α on validation)
//! ```
//!
//! `(N − 1) S + tr(S) I` is symmetric and, when the features vary at all within their classes
//! (`tr(S) > 0`), positive definite: its pseudo-inverse is its inverse, computed here by Cholesky
//! in f64. With no within-class spread at all (one unaugmented view per class) the official code
//! inverts a zero matrix — `pinv` gives 0, so the head adds only the constant prior and changes
//! nothing; here that case is refused with a clear error instead. A class without a shot is
//! refused too (its mean would be NaN in the official code).
//!
//! The official α grid is `[1e-4, 1e-3, 1e-2, 0.1, 1, 10, 100]`, keeping the first strictly best
//! validation accuracy (starting from α = 0.1 at accuracy 0). The official ImageNet script
//! selects α on the test features; tipedge selects on validation.
//!
//! Where it runs: `cache build --val` fits the layer on the views each key recipe averaged into
//! its keys (with the plain recipe, one view per shot: at 1 shot per class there is no spread,
//! and that head is reported as not fitted), scores it alone and beside the cache, and stores
//! the chosen head in the pack (format version 4, `adapter::GdaTerm`). With an image-only
//! backbone and the layer alone, no α changes a prediction, so α = 1 is stored instead of the
//! grid's first point (`recipes::GDA_ALONE_ALPHA`).

use nalgebra::{DMatrix, DVector};

use crate::adapter::GdaTerm;
use crate::error::{Error, Result};
use crate::train::search::argmax;

/// The official α grid.
pub const GDA_ALPHAS: [f32; 7] = [1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0];

/// A fitted GDA head: `logits_c = f · weights_c + bias_c`.
#[derive(Debug, Clone, PartialEq)]
pub struct GdaHead {
    pub dim: usize,
    /// `n_classes × dim`, row-major: `W_g = μ Σ⁻¹`.
    pub weights: Vec<f32>,
    /// `b_c = log p_c − ½ μ_c Σ⁻¹ μ_cᵀ`.
    pub bias: Vec<f32>,
}

impl GdaHead {
    pub fn n_classes(&self) -> usize {
        self.bias.len()
    }

    /// The head's logits of each feature (`n × dim`) into `out` (`n × n_classes`): the term the
    /// model adds ([`GdaTerm::add_to`]) at α = 1.
    pub fn logits_into(&self, features: &[f32], out: &mut [f32]) {
        let term = GdaTerm {
            weights: &self.weights,
            bias: &self.bias,
            alpha: 1.0,
        };
        out.fill(0.0);
        for (f, row) in features
            .chunks_exact(self.dim)
            .zip(out.chunks_exact_mut(self.n_classes()))
        {
            term.add_to(f, row);
        }
    }
}

/// Fits the head on `features` (`n × dim`, unit norm: every view of every shot) with classes
/// `labels` (`< n_classes`).
pub fn fit_gda(features: &[f32], labels: &[u32], n_classes: usize, dim: usize) -> Result<GdaHead> {
    let n = labels.len();
    if dim == 0 || n_classes == 0 || features.len() != n * dim {
        return Err(Error::Invalid(format!(
            "GDA: {} feature values for {n} labels of dim {dim} ({n_classes} classes)",
            features.len()
        )));
    }
    if let Some(i) = features.iter().position(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!(
            "GDA: feature {} has a value that is not finite",
            i / dim
        )));
    }
    let mut counts = vec![0usize; n_classes];
    for &y in labels {
        *counts.get_mut(y as usize).ok_or_else(|| {
            Error::Invalid(format!("GDA: label {y} out of range ({n_classes} classes)"))
        })? += 1;
    }
    if let Some(c) = counts.iter().position(|&k| k == 0) {
        return Err(Error::Invalid(format!(
            "GDA: class {c} has no shot (every class needs at least one to have a mean)"
        )));
    }
    // Class means.
    let mut mu = DMatrix::<f64>::zeros(n_classes, dim);
    for (f, &y) in features.chunks_exact(dim).zip(labels) {
        for (j, &v) in f.iter().enumerate() {
            mu[(y as usize, j)] += v as f64;
        }
    }
    for (c, &k) in counts.iter().enumerate() {
        mu.row_mut(c).iter_mut().for_each(|v| *v /= k as f64);
    }
    // Centred features, and torch.cov of their transpose.
    let mut x = DMatrix::<f64>::zeros(n, dim);
    for (i, (f, &y)) in features.chunks_exact(dim).zip(labels).enumerate() {
        for (j, &v) in f.iter().enumerate() {
            x[(i, j)] = v as f64 - mu[(y as usize, j)];
        }
    }
    if n < 2 {
        return Err(Error::Invalid(
            "GDA: a covariance needs at least 2 features".into(),
        ));
    }
    let mean = x.row_mean();
    for mut row in x.row_iter_mut() {
        row -= &mean;
    }
    let scatter = x.transpose() * &x; // (N − 1) · S
    let trace_s = scatter.trace() / (n - 1) as f64;
    // Finite inputs: the trace is finite and ≥ 0.
    if trace_s <= 0.0 {
        return Err(Error::Invalid(
            "GDA: the features do not vary within their classes (one unaugmented view per \
             class?), so there is no covariance to estimate; use augmented passes or more shots"
                .into(),
        ));
    }
    let mut a = scatter;
    for j in 0..dim {
        a[(j, j)] += trace_s;
    }
    let inv = a
        .cholesky()
        .ok_or_else(|| {
            Error::Invalid("GDA: the shrunk covariance is not positive definite".into())
        })?
        .inverse()
        * dim as f64;
    let w = &mu * &inv; // C × D
    let prior = (1.0 / n_classes as f64).ln();
    let bias: Vec<f32> = (0..n_classes)
        .map(|c| {
            let m: DVector<f64> = mu.row(c).transpose();
            let wc: DVector<f64> = w.row(c).transpose();
            (prior - 0.5 * m.dot(&wc)) as f32
        })
        .collect();
    let mut weights = Vec::with_capacity(n_classes * dim);
    for c in 0..n_classes {
        weights.extend(w.row(c).iter().map(|&v| v as f32));
    }
    if weights.iter().chain(&bias).any(|v| !v.is_finite()) {
        return Err(Error::Invalid("GDA: the fitted head is not finite".into()));
    }
    Ok(GdaHead { dim, weights, bias })
}

/// The official α search on a validation split: for each α of [`GDA_ALPHAS`], the accuracy of
/// `zero_shot + α · gda` (`zero_shot`: `logit_scale · f Wᵀ`, `None` for an image-only model);
/// the first strictly best is kept. Returns (α, validation top-1 in percent).
pub fn search_alpha(
    head: &GdaHead,
    zero_shot: Option<&[f32]>,
    features: &[f32],
    labels: &[u32],
) -> Result<(f32, f64)> {
    let nc = head.n_classes();
    let n = labels.len();
    if features.len() != n * head.dim || zero_shot.is_some_and(|z| z.len() != n * nc) || n == 0 {
        return Err(Error::Invalid(format!(
            "GDA α search: {} feature values, {} zero-shot logits, {n} labels",
            features.len(),
            zero_shot.map_or(0, <[f32]>::len)
        )));
    }
    let mut g = vec![0f32; n * nc];
    head.logits_into(features, &mut g);
    let (mut best_alpha, mut best_acc) = (0.1f32, 0.0f64);
    let mut row = vec![0f32; nc];
    for alpha in GDA_ALPHAS {
        let mut right = 0usize;
        for (i, &y) in labels.iter().enumerate() {
            for (c, r) in row.iter_mut().enumerate() {
                let z = zero_shot.map_or(0.0, |z| z[i * nc + c]);
                *r = z + alpha * g[i * nc + c];
            }
            right += usize::from(argmax(row.iter().copied()) == y as usize);
        }
        let acc = 100.0 * right as f64 / n as f64;
        if acc > best_acc {
            (best_alpha, best_acc) = (alpha, acc);
        }
    }
    Ok((best_alpha, best_acc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degenerate_inputs_are_refused() {
        // One unaugmented view per class: no spread.
        let f = [1.0f32, 0.0, 0.0, 1.0];
        let e = fit_gda(&f, &[0, 1], 2, 2).unwrap_err().to_string();
        assert!(e.contains("do not vary within their classes"), "{e}");
        let e = fit_gda(&f, &[0, 0], 2, 2).unwrap_err().to_string();
        assert!(e.contains("class 1 has no shot"), "{e}");
        let e = fit_gda(&[f32::NAN, 0.0, 0.0, 1.0], &[0, 1], 2, 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("feature 0") && e.contains("not finite"), "{e}");
        assert!(fit_gda(&f, &[0, 2], 2, 2).is_err());
        assert!(fit_gda(&f[..3], &[0, 1], 2, 2).is_err());
    }

    #[test]
    fn two_shots_per_class_give_a_finite_head_that_separates_them() {
        let s = std::f32::consts::FRAC_1_SQRT_2;
        let f = [1.0, 0.0, s, s, 0.0, 1.0, -s, s];
        let head = fit_gda(&f, &[0, 0, 1, 1], 2, 2).unwrap();
        let mut out = [0f32; 8];
        head.logits_into(&f, &mut out);
        assert!(out.iter().all(|v| v.is_finite()));
        for (i, y) in [0usize, 0, 1, 1].into_iter().enumerate() {
            assert_eq!(argmax(out[i * 2..i * 2 + 2].iter().copied()), y);
        }
        let (alpha, acc) = search_alpha(&head, None, &f, &[0, 0, 1, 1]).unwrap();
        assert_eq!((alpha, acc), (1e-4, 100.0), "all α tie: the first is kept");
    }
}
