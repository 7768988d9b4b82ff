//! Calibrated probabilities: temperature scaling (Guo et al., "On Calibration of Modern Neural
//! Networks", ICML 2017) and the measures a camera's "unknown" threshold is chosen on.
//!
//! A classifier's logits `z` become probabilities `p = softmax(z / T)`. One scalar `T > 0`,
//! fitted on a validation split by minimising the mean negative log-likelihood of the true
//! class, changes how confident the probabilities are, never which class is on top.
//!
//! - [`fit_temperature`]: `T`, exactly (the root of a monotone function, not a learning-rate
//!   loop);
//! - [`softmax_with_temperature`] (from [`crate::adapter`], what the runtime prints): one
//!   row's probabilities, stably, without allocating;
//! - [`calibration_metrics`]: NLL, Brier score, expected calibration error and its reliability
//!   bins;
//! - [`coverage_curve`]: the reject option, "unknown" below a top-1 probability.
//!
//! Logits are row-major `n × n_classes` f32, labels `u32 < n_classes`; the arithmetic is f64.
//! The predicted class is the first maximum of the logits, as in [`super::metrics`].

use super::search::argmax;
pub use crate::adapter::softmax_with_temperature;
use crate::adapter::TipAdapter;
use crate::error::{Error, Result};
use crate::kernel::Kernel;

/// Equal-width confidence bins of the expected calibration error, as Guo et al.
pub const ECE_BINS: usize = 15;

/// The `--min-prob` values `tipedge eval` reports the reject option at.
pub const COVERAGE_THRESHOLDS: [f64; 13] = [
    0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999,
];

/// Fewest images a temperature is fitted on.
const MIN_IMAGES: usize = 8;
/// The first bracket of `s = 1/T`, moved outwards by [`BRACKET_GROWTH`] as needed, up to
/// [`S_LIMITS`] (T from 1e-32 to 1e32: normal f32 numbers either way).
const S_START: (f64, f64) = (1e-8, 1e8);
const S_LIMITS: (f64, f64) = (1e-32, 1e32);
const BRACKET_GROWTH: f64 = 1e4;
/// The fit stops when the bracket of `s` is this narrow, relative: a few f64 ulps.
const BRACKET_WIDTH: f64 = 8.0 * f64::EPSILON;
/// A Newton step smaller than this (relative) is replaced by one of this size towards the
/// root, so that the bracket closes (its sign change is then within `BRACKET_WIDTH`).
const NUDGE: f64 = 4.0 * f64::EPSILON;
/// A guard only: bisection alone narrows the widest bracket (147 in ln s) to 8ε in 57 steps.
const MAX_ITERATIONS: usize = 200;

/// Result of fitting the temperature on a validation split.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "runtime", derive(serde::Serialize))]
pub struct TemperatureFit {
    /// `T > 0`, finite.
    pub temperature: f32,
    /// Mean NLL at `T = 1`.
    pub nll_before: f64,
    /// Mean NLL at the fitted `T` (the f32 one returned).
    pub nll_after: f64,
    /// Newton or bisection steps inside the bracket, one pass over the split each (finding the
    /// bracket costs two more passes, and one per widening).
    pub iterations: usize,
}

/// One reliability bin: confidences in `(lower, upper]` (the first bin also holds 0).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "runtime", derive(serde::Serialize))]
pub struct ReliabilityBin {
    pub lower: f64,
    pub upper: f64,
    pub count: usize,
    /// Mean top-1 probability of the bin's images; 0 for an empty bin.
    pub confidence: f64,
    /// Fraction of the bin's images whose top-1 class is right; 0 for an empty bin.
    pub accuracy: f64,
}

#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "runtime", derive(serde::Serialize))]
pub struct CalibrationMetrics {
    pub temperature: f32,
    /// Mean negative log-likelihood of the true class, `mean_i −ln p_{i,y_i}`.
    pub nll: f64,
    /// Multi-class Brier score: `mean_i Σ_c (p_ic − onehot_ic)²` (0 to 2).
    pub brier: f64,
    /// Expected calibration error over [`ECE_BINS`] equal-width bins:
    /// `Σ_b (n_b / n) · |accuracy_b − confidence_b|`.
    pub ece: f64,
    /// All [`ECE_BINS`] bins, empty ones included, lowest first: the reliability diagram.
    pub bins: Vec<ReliabilityBin>,
}

/// One point of the reject option: images whose top-1 probability is below `min_prob` are
/// "unknown", the others accepted.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "runtime", derive(serde::Serialize))]
pub struct CoveragePoint {
    pub min_prob: f64,
    pub accepted: usize,
    /// `accepted / n`.
    pub coverage: f64,
    /// Fraction right among the accepted images; 0 when none is accepted.
    pub accuracy: f64,
}

/// The `T` minimising the mean negative log-likelihood of `softmax(logits / T)` on a
/// validation split (Guo et al., ICML 2017).
///
/// With `s = 1/T`,
///
/// ```text
/// NLL(s) = mean_i [ logsumexp(s·z_i) − s·z_{i,y_i} ]
/// g(s)   = NLL'(s) = mean_i [ E_{p_i(s)}[z_i] − z_{i,y_i} ]      g'(s) = mean_i Var_{p_i(s)}[z_i] ≥ 0
/// ```
///
/// so NLL is convex in `s` and the fit is the root of the non-decreasing `g`:
///
/// 1. Its limits decide whether there is one: `g(∞) = mean_i [max_c z_ic − z_{i,y_i}]` is 0
///    when every true class has the top logit (the NLL falls all the way to `T → 0`: refused),
///    and `g(0) = mean_i [mean_c z_ic − z_{i,y_i}] ≥ 0` means worse than uniform (the NLL falls
///    all the way to `T → ∞`: refused).
/// 2. A bracket `g(s_lo) < 0 < g(s_hi)` from `[1e-8, 1e8]`, each end widened ×1e4 while needed,
///    up to `[1e-32, 1e32]` (logit scales differ by orders of magnitude between models: an
///    image-only cache needs `T ≈ 1e-3`, CLIP's ×100 logits `T > 1`).
/// 3. Safeguarded Newton in `ln s` from `s = 1`: the step `−g / (s·g')` is taken when it lands
///    inside the bracket and is at most half the step before last, otherwise the bracket is
///    bisected in `ln s`; every evaluation narrows the bracket by the sign of `g`.
/// 4. Stopping rule: `g(s) = 0` exactly, or the bracket at most `8ε·s_hi` wide (ε = f64
///    epsilon; a few ulps of `s`). A Newton step under `4ε·s` is replaced by one of `4ε·s`
///    towards the root, which closes the bracket: `s` is then known to the resolution f64 gives
///    the sum `g(s)`, and the fitted `s` is the last one evaluated.
///
/// Rows are shifted by their maximum, so `exp` never overflows whatever `s`.
pub fn fit_temperature(logits: &[f32], labels: &[u32], n_classes: usize) -> Result<TemperatureFit> {
    let split = Split::new(logits, labels, n_classes)?;
    let n = labels.len();
    if n < MIN_IMAGES {
        return Err(invalid(format!(
            "{n} images: too small to fit a temperature (at least {MIN_IMAGES})"
        )));
    }
    let mut present = vec![false; n_classes];
    for &y in labels {
        present[y as usize] = true;
    }
    if present.iter().filter(|&&p| p).count() < 2 {
        return Err(invalid(format!(
            "all {n} images are of class {}: too small to fit a temperature (at least 2 classes)",
            labels[0]
        )));
    }
    let (mut g_zero, mut g_infinity, mut spread) = (0.0, 0.0, false);
    for (row, y) in split.rows() {
        let max = row_max(row);
        let d_y = f64::from(row[y]) - max;
        let mean = row.iter().map(|&z| f64::from(z) - max).sum::<f64>() / n_classes as f64;
        g_zero += mean - d_y;
        g_infinity -= d_y;
        spread |= row.iter().any(|&z| z != row[0]);
    }
    if !spread {
        return Err(invalid(
            "every image's logits are all equal: the probabilities are uniform whatever T",
        ));
    }
    if g_infinity == 0.0 {
        return Err(invalid(
            "separable: every image's true class has the top logit, so the NLL falls without \
             end as T shrinks: T would go to 0",
        ));
    }
    if g_zero >= 0.0 {
        return Err(invalid(
            "worse than uniform: on average the true class's logit is not above its row's mean, \
             so the NLL falls without end as T grows: T would go to ∞",
        ));
    }
    let Some(mut lo) = bracket_end(&split, S_START.0, 1.0 / BRACKET_GROWTH, S_LIMITS.0, false)
    else {
        return Err(invalid(format!(
            "the NLL still falls at T = {:.0e}: T would go to ∞",
            1.0 / S_LIMITS.0
        )));
    };
    let Some(mut hi) = bracket_end(&split, S_START.1, BRACKET_GROWTH, S_LIMITS.1, true) else {
        return Err(invalid(format!(
            "the NLL still falls at T = {:.0e}: T would go to 0",
            1.0 / S_LIMITS.1
        )));
    };

    let mut s = 1.0;
    let mut nll_before = f64::NAN;
    // |Δ ln s| of the last step and of the one before.
    let (mut step, mut step_before) = (f64::INFINITY, f64::INFINITY);
    let mut iterations = 0;
    loop {
        if iterations == MAX_ITERATIONS {
            return Err(invalid(format!(
                "the temperature fit did not converge in {MAX_ITERATIONS} steps \
                 (bracket s = 1/T in [{lo:e}, {hi:e}])"
            )));
        }
        iterations += 1;
        let e = evaluate(&split, s);
        if iterations == 1 {
            nll_before = e.nll; // s = 1
        }
        if e.g == 0.0 {
            break;
        }
        if e.g < 0.0 {
            lo = s;
        } else {
            hi = s;
        }
        if hi - lo <= BRACKET_WIDTH * hi {
            break;
        }
        // Newton in ln s; a zero variance gives ±∞ and falls back to bisection.
        let newton = s * (-e.g / (s * e.dg)).exp();
        let next = if (newton - s).abs() <= NUDGE * s {
            // A step below resolution: one of 4ε towards the root closes the bracket.
            if e.g < 0.0 {
                s * (1.0 + NUDGE)
            } else {
                s * (1.0 - NUDGE)
            }
        } else if newton > lo && newton < hi && (newton / s).ln().abs() <= 0.5 * step_before {
            newton
        } else {
            let mid = lo.sqrt() * hi.sqrt();
            if lo < mid && mid < hi {
                mid
            } else {
                lo + 0.5 * (hi - lo)
            }
        };
        step_before = step;
        step = (next / s).ln().abs();
        s = next;
    }
    let temperature = (1.0 / s) as f32;
    Ok(TemperatureFit {
        temperature,
        nll_before,
        nll_after: evaluate(&split, 1.0 / f64::from(temperature)).nll,
        iterations,
    })
}

/// NLL, Brier score, ECE and the reliability bins of `softmax(logits / temperature)`.
///
/// The bins are `(b/15, (b+1)/15]` as in Guo et al.'s code (`conf > lower && conf <= upper`),
/// the first also holding 0, so a top-1 probability of 1 is in the last bin. The NLL is
/// computed from the log-sum-exp, so a true class whose probability underflows still counts
/// with its finite `−ln p`.
pub fn calibration_metrics(
    logits: &[f32],
    labels: &[u32],
    n_classes: usize,
    temperature: f32,
) -> Result<CalibrationMetrics> {
    let split = Split::new(logits, labels, n_classes)?;
    let s = inverse_temperature(temperature)?;
    let mut bins: Vec<ReliabilityBin> = (0..ECE_BINS)
        .map(|b| ReliabilityBin {
            lower: b as f64 / ECE_BINS as f64,
            upper: (b + 1) as f64 / ECE_BINS as f64,
            count: 0,
            confidence: 0.0,
            accuracy: 0.0,
        })
        .collect();
    let mut p = vec![0f64; n_classes];
    let (mut nll, mut brier) = (0.0, 0.0);
    for (row, y) in split.rows() {
        let max = row_max(row);
        let mut sum = 0.0;
        for (p, &z) in p.iter_mut().zip(row) {
            *p = ((f64::from(z) - max) * s).exp();
            sum += *p;
        }
        p.iter_mut().for_each(|p| *p /= sum);
        nll += sum.ln() - (f64::from(row[y]) - max) * s;
        brier += p
            .iter()
            .enumerate()
            .map(|(c, &pc)| (pc - if c == y { 1.0 } else { 0.0 }).powi(2))
            .sum::<f64>();
        let predicted = argmax(row.iter().copied());
        let confidence = p[predicted];
        let b = bins
            .iter()
            .position(|b| confidence <= b.upper)
            .unwrap_or(ECE_BINS - 1);
        bins[b].count += 1;
        bins[b].confidence += confidence;
        bins[b].accuracy += f64::from(u8::from(predicted == y));
    }
    let n = labels.len() as f64;
    let mut ece = 0.0;
    for b in bins.iter_mut().filter(|b| b.count > 0) {
        b.confidence /= b.count as f64;
        b.accuracy /= b.count as f64;
        ece += b.count as f64 / n * (b.accuracy - b.confidence).abs();
    }
    Ok(CalibrationMetrics {
        temperature,
        nll: nll / n,
        brier: brier / n,
        ece,
        bins,
    })
}

/// Coverage and accuracy of the reject option at each threshold (in the order given): an
/// image is accepted when its top-1 probability, as [`softmax_with_temperature`] writes it
/// (f32, widened to f64), is at least `min_prob`. So threshold 0 accepts every image and a
/// threshold above 1 none.
pub fn coverage_curve(
    logits: &[f32],
    labels: &[u32],
    n_classes: usize,
    temperature: f32,
    thresholds: &[f64],
) -> Result<Vec<CoveragePoint>> {
    let split = Split::new(logits, labels, n_classes)?;
    inverse_temperature(temperature)?;
    if let Some(i) = thresholds.iter().position(|t| t.is_nan()) {
        return Err(invalid(format!("threshold {i} is NaN")));
    }
    let mut p = vec![0f32; n_classes];
    let top1: Vec<(f64, bool)> = split
        .rows()
        .map(|(row, y)| {
            softmax_with_temperature(row, temperature, &mut p);
            let predicted = argmax(row.iter().copied());
            (f64::from(p[predicted]), predicted == y)
        })
        .collect();
    let n = labels.len() as f64;
    Ok(thresholds
        .iter()
        .map(|&min_prob| {
            let (accepted, correct) = top1
                .iter()
                .filter(|&&(p, _)| p >= min_prob)
                .fold((0usize, 0usize), |(a, c), &(_, right)| {
                    (a + 1, c + usize::from(right))
                });
            CoveragePoint {
                min_prob,
                accepted,
                coverage: accepted as f64 / n,
                accuracy: if accepted == 0 {
                    0.0
                } else {
                    correct as f64 / accepted as f64
                },
            }
        })
        .collect())
}

/// What fitting a model's temperature on a validation split gave (the `calibration` field of
/// `tune` and `finetune` records): the temperature, or why there is none (probabilities then
/// stay `softmax(logits)`, T = 1).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "runtime", derive(serde::Serialize))]
pub struct Calibration {
    /// The fitted temperature; `None` when the split could not fit one.
    pub temperature: Option<f32>,
    /// Mean validation NLL at T = 1 and at the fitted T.
    pub val_nll_before: Option<f64>,
    pub val_nll_after: Option<f64>,
    /// Why no temperature was fitted (one line).
    pub refused: Option<String>,
}

/// Fits the temperature of `model` (at its own α/β) on encoded validation features (`n × dim`)
/// and says what came of it through `progress`. A split the fit refuses (too small, one class,
/// separable, NaN logits, ...) is not an error: the outcome says why and keeps T = 1.
pub fn calibrate(
    model: &TipAdapter<'_>,
    features: &[f32],
    labels: &[u32],
    progress: &mut dyn crate::progress::Progress,
) -> Result<Calibration> {
    let logits = model.logits_all(&Kernel::detect(), features, false)?;
    let calibration = match fit_temperature(&logits, labels, model.n_classes()) {
        Ok(fit) => Calibration {
            temperature: Some(fit.temperature),
            val_nll_before: Some(fit.nll_before),
            val_nll_after: Some(fit.nll_after),
            refused: None,
        },
        Err(e) => Calibration {
            temperature: None,
            val_nll_before: None,
            val_nll_after: None,
            refused: Some(e.to_string()),
        },
    };
    progress.note(&calibration.describe());
    Ok(calibration)
}

impl Calibration {
    /// One line for a person: the temperature and the NLL it bought, or why T = 1 stays.
    pub fn describe(&self) -> String {
        match (self.temperature, self.val_nll_before, self.val_nll_after) {
            (Some(t), Some(a), Some(b)) => format!(
                "temperature T = {t:.4e}: validation NLL {a:.4} → {b:.4}; probabilities are softmax(logits / T)"
            ),
            _ => format!(
                "no temperature fitted, keeping T = 1 (uncalibrated probabilities): {}",
                self.refused.as_deref().unwrap_or("not asked")
            ),
        }
    }
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::Invalid(reason.into())
}

/// `1/T` in f64, or why `T` is no temperature.
fn inverse_temperature(temperature: f32) -> Result<f64> {
    if temperature.is_finite() && temperature > 0.0 {
        Ok(1.0 / f64::from(temperature))
    } else {
        Err(invalid(format!(
            "temperature {temperature} is not a finite positive number"
        )))
    }
}

fn row_max(row: &[f32]) -> f64 {
    f64::from(row.iter().copied().fold(f32::NEG_INFINITY, f32::max))
}

/// Logits and labels checked to fit together: at least one image, labels in range, every
/// logit finite.
struct Split<'a> {
    logits: &'a [f32],
    labels: &'a [u32],
    n_classes: usize,
}

impl<'a> Split<'a> {
    fn new(logits: &'a [f32], labels: &'a [u32], n_classes: usize) -> Result<Split<'a>> {
        if n_classes == 0 {
            return Err(invalid("no classes"));
        }
        if labels.len().checked_mul(n_classes) != Some(logits.len()) {
            return Err(invalid(format!(
                "{} logits for {} labels of {n_classes} classes",
                logits.len(),
                labels.len()
            )));
        }
        if labels.is_empty() {
            return Err(invalid("no images"));
        }
        if let Some((i, &y)) = labels
            .iter()
            .enumerate()
            .find(|&(_, &y)| y as usize >= n_classes)
        {
            return Err(invalid(format!(
                "label {y} of image {i} out of range ({n_classes} classes)"
            )));
        }
        if let Some(k) = logits.iter().position(|z| !z.is_finite()) {
            return Err(invalid(format!(
                "logits row {}: class {} is {}",
                k / n_classes,
                k % n_classes,
                logits[k]
            )));
        }
        Ok(Split {
            logits,
            labels,
            n_classes,
        })
    }

    /// Each image's logits and true class.
    fn rows(&self) -> impl Iterator<Item = (&'a [f32], usize)> + '_ {
        self.logits
            .chunks_exact(self.n_classes)
            .zip(self.labels.iter().map(|&y| y as usize))
    }
}

/// Mean NLL, `g = NLL'` and `g' = NLL''` at `s = 1/T` (see [`fit_temperature`]).
#[derive(Debug, Clone, Copy)]
struct Evaluation {
    nll: f64,
    g: f64,
    dg: f64,
}

/// One pass over the split. With `d = z − max z` (so every `exp` is at most 1):
/// `−ln p_y = ln Σ exp(s·d) − s·d_y`, `E_p[z] − z_y = E_p[d] − d_y`, `Var_p[z] = Var_p[d]`.
fn evaluate(split: &Split<'_>, s: f64) -> Evaluation {
    let (mut nll, mut g, mut dg) = (0.0, 0.0, 0.0);
    for (row, y) in split.rows() {
        let max = row_max(row);
        let (mut sum, mut sum_d, mut sum_d2) = (0.0, 0.0, 0.0);
        for &z in row {
            let d = f64::from(z) - max;
            let w = (s * d).exp();
            sum += w;
            sum_d += w * d;
            sum_d2 += w * d * d;
        }
        let d_y = f64::from(row[y]) - max;
        let mean = sum_d / sum;
        nll += sum.ln() - s * d_y;
        g += mean - d_y;
        dg += (sum_d2 / sum - mean * mean).max(0.0);
    }
    let n = split.labels.len() as f64;
    Evaluation {
        nll: nll / n,
        g: g / n,
        dg: dg / n,
    }
}

/// From `s`, moves by `factor` (towards `limit`) until `g(s) > 0` (`above_root`) or
/// `g(s) < 0`; `None` when `limit` is reached without.
fn bracket_end(
    split: &Split<'_>,
    mut s: f64,
    factor: f64,
    limit: f64,
    above_root: bool,
) -> Option<f64> {
    loop {
        let g = evaluate(split, s).g;
        if (above_root && g > 0.0) || (!above_root && g < 0.0) {
            return Some(s);
        }
        if s == limit {
            return None;
        }
        s *= factor;
        if (factor > 1.0) == (s > limit) {
            s = limit;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn gauss(rng: &mut Rng) -> f64 {
        let u = 1.0 - rng.uniform(); // (0, 1]: ln u is finite
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * rng.uniform()).cos()
    }

    /// Class means in 2-D; unit shared covariance and equal priors, so the true posterior's
    /// logits are `μ_k·x − |μ_k|²/2` (the `−|x|²/2` term is the same for every class).
    const MEANS: [[f64; 2]; 3] = [[0.0, 0.0], [2.0, 0.0], [1.0, 1.5]];

    fn true_logits(x: [f64; 2]) -> [f64; 3] {
        MEANS.map(|m| m[0] * x[0] + m[1] * x[1] - 0.5 * (m[0] * m[0] + m[1] * m[1]))
    }

    /// `n` features drawn from the three Gaussians and their labels.
    fn gaussian_split(n: usize, seed: u64) -> (Vec<[f64; 2]>, Vec<u32>) {
        let mut rng = Rng::new(seed);
        (0..n)
            .map(|_| {
                let y = rng.below(3) as u32;
                let m = MEANS[y as usize];
                ([m[0] + gauss(&mut rng), m[1] + gauss(&mut rng)], y)
            })
            .unzip()
    }

    fn softmax64(z: &[f64]) -> Vec<f64> {
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|&v| (v - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        e.iter().map(|v| v / sum).collect()
    }

    /// Random logits of `n` images and `nc` classes: unit Gaussian noise, the true class's
    /// raised by 1.5 (64 % top-1 right at 6 classes).
    fn noisy_split(n: usize, nc: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
        let mut rng = Rng::new(seed);
        let labels: Vec<u32> = (0..n).map(|_| rng.below(nc as u64) as u32).collect();
        let logits = labels
            .iter()
            .flat_map(|&y| {
                let bump: Vec<f32> = (0..nc)
                    .map(|c| (gauss(&mut rng) + if c == y as usize { 1.5 } else { 0.0 }) as f32)
                    .collect();
                bump
            })
            .collect();
        (logits, labels)
    }

    fn message(r: Result<impl std::fmt::Debug>) -> String {
        let m = r.expect_err("expected a refusal").to_string();
        assert!(!m.contains('\n'), "one line: {m}");
        m
    }

    /// Known posterior. Classifier logits are `c ×` the true posterior's logits, with c = 5
    /// (overconfident: T should be 5) and c = 0.2 (underconfident: T should be 0.2), on 20 000
    /// images (seed 19). Tolerances: the fitted T within 3 % of c, the calibrated
    /// probabilities within 0.02 of the true posterior (largest absolute difference over every
    /// image and class), and the ECE lower after the fit than before.
    /// Measured: T/c − 1 = +0.17 % for both c (the same split scaled: the fit is
    /// scale-equivariant), in 10 and 9 steps; probability error max 0.0006, mean 0.0002; ECE
    /// 0.217 → 0.007 (c = 5) and 0.285 → 0.007 (c = 0.2). What limits the recovery is the sampling
    /// error of the maximum-likelihood estimate, not the method: over seeds 0..30 at this size,
    /// T/c − 1 had a standard deviation of 1.1 % (largest 2.8 %), so 3 % is about 3σ.
    #[test]
    fn recovers_the_scale_of_a_known_posterior() {
        let (features, labels) = gaussian_split(20_000, 19);
        for c in [5.0f64, 0.2] {
            let logits: Vec<f32> = features
                .iter()
                .flat_map(|&x| true_logits(x).map(|l| (c * l) as f32))
                .collect();
            let fit = fit_temperature(&logits, &labels, 3).unwrap();
            let t = f64::from(fit.temperature);
            let rel = t / c - 1.0;
            let mut p = [0f32; 3];
            let (mut worst, mut total) = (0f64, 0f64);
            for (row, &x) in logits.chunks_exact(3).zip(&features) {
                softmax_with_temperature(row, fit.temperature, &mut p);
                for (&p, q) in p.iter().zip(softmax64(&true_logits(x))) {
                    worst = worst.max((f64::from(p) - q).abs());
                    total += (f64::from(p) - q).abs();
                }
            }
            let mean = total / (3.0 * features.len() as f64);
            let ece = |t: f32| calibration_metrics(&logits, &labels, 3, t).unwrap().ece;
            let (ece_before, ece_after) = (ece(1.0), ece(fit.temperature));
            eprintln!(
                "c = {c}: T = {t:.5} (T/c − 1 = {:+.3} %), NLL {:.4} → {:.4}, {} steps; \
                 |p − posterior| max {worst:.4}, mean {mean:.4}; ECE {ece_before:.4} → {ece_after:.4}",
                100.0 * rel,
                fit.nll_before,
                fit.nll_after,
                fit.iterations
            );
            assert!(rel.abs() < 0.03, "c = {c}: T = {t}");
            assert!(ece_after < ece_before);
            assert!(worst < 0.02, "c = {c}: worst {worst}");
            assert!(fit.nll_after < fit.nll_before);
            assert!(fit.iterations < 20, "{} steps", fit.iterations);
        }
    }

    /// The fit is a minimum of the NLL: the NLL that calibration_metrics computes at T is
    /// the fit's nll_after (within 1e-12) and no lower at T·(1 ± 1e-4); and an independent
    /// minimiser (golden-section search on ln T over calibration_metrics' NLL, 200 steps)
    /// finds the same T within 1e-5 relative (the NLL is flat at its minimum, so a search on
    /// NLL values alone resolves T only to about √ε). Measured: 1.4e-7 relative; the fit took
    /// 7 steps.
    #[test]
    fn fit_is_the_minimum_an_independent_search_finds() {
        let (logits, labels) = noisy_split(500, 7, 3);
        let fit = fit_temperature(&logits, &labels, 7).unwrap();
        let nll = |t: f64| {
            calibration_metrics(&logits, &labels, 7, t as f32)
                .unwrap()
                .nll
        };
        let t = f64::from(fit.temperature);
        assert!((nll(t) - fit.nll_after).abs() < 1e-12);
        assert!(nll(t * (1.0 + 1e-4)) >= fit.nll_after);
        assert!(nll(t * (1.0 - 1e-4)) >= fit.nll_after);
        assert!((nll(1.0) - fit.nll_before).abs() < 1e-12);
        let (mut a, mut b) = ((1e-3f64).ln(), (1e3f64).ln());
        let r = (5f64.sqrt() - 1.0) / 2.0;
        for _ in 0..200 {
            let (c, d) = (b - r * (b - a), a + r * (b - a));
            if nll(c.exp()) < nll(d.exp()) {
                b = d;
            } else {
                a = c;
            }
        }
        let golden = (0.5 * (a + b)).exp();
        let rel = (golden / t - 1.0).abs();
        eprintln!(
            "T = {t}, golden section {golden}, relative {rel:.1e}, {} steps",
            fit.iterations
        );
        assert!(rel < 1e-5, "{t} vs {golden}");
    }

    /// Logit scales orders of magnitude apart: an image-only cache's logits differing in the
    /// fourth decimal around 0.8 (T ≈ 1e-3) and CLIP's ×100 (T ≈ 100) are fitted from the same
    /// bracket. Scaling the logits by a power of two (exact in f32) scales T by it to within
    /// one f32 ulp, and 1e-3·z + 0.8 and 100·z scale it within 1e-3 (the offset logits are
    /// quantised by f32 to ±6e-8 on differences of ~1e-3). Measured: T(2^k·z) / (2^k·T(z)) − 1
    /// = 0 exactly for k = −20, −10, 10, 20 (T from 6.5e-7 to 7.1e5); ratios 0.999999 (×1e-3
    /// + 0.8, T = 6.8e-4) and 1.000000 (×100, T = 68); 9 or 10 steps each.
    #[test]
    fn any_logit_scale_is_bracketed() {
        let (logits, labels) = noisy_split(400, 5, 11);
        let base = fit_temperature(&logits, &labels, 5).unwrap();
        for k in [-20, -10, 10, 20] {
            let scale = 2f32.powi(k);
            let scaled: Vec<f32> = logits.iter().map(|&z| z * scale).collect();
            let fit = fit_temperature(&scaled, &labels, 5).unwrap();
            let rel =
                f64::from(fit.temperature) / (f64::from(base.temperature) * f64::from(scale)) - 1.0;
            eprintln!(
                "2^{k}: T = {:e}, relative to 2^k·T(z) {rel:.1e}, {} steps",
                fit.temperature, fit.iterations
            );
            assert!(rel.abs() <= 1.2e-7, "2^{k}: {rel}");
            assert!((fit.nll_after - base.nll_after).abs() < 1e-9);
        }
        for (scale, offset) in [(1e-3f64, 0.8f64), (100.0, 0.0)] {
            let shifted: Vec<f32> = logits
                .iter()
                .map(|&z| (offset + scale * f64::from(z)) as f32)
                .collect();
            let fit = fit_temperature(&shifted, &labels, 5).unwrap();
            let ratio = f64::from(fit.temperature) / (scale * f64::from(base.temperature));
            eprintln!(
                "×{scale} + {offset}: T = {:e}, T / (scale·T(z)) = {ratio:.6}, {} steps",
                fit.temperature, fit.iterations
            );
            assert!((ratio - 1.0).abs() < 1e-3, "×{scale}: {ratio}");
        }
    }

    /// The order of the images does not matter: a shuffled copy gives the same T within 1e-6
    /// relative. Measured: identical f32 T (relative difference 0) for three shuffles.
    #[test]
    fn temperature_ignores_image_order() {
        let (logits, labels) = noisy_split(1000, 10, 5);
        let fit = fit_temperature(&logits, &labels, 10).unwrap();
        let mut order: Vec<usize> = (0..labels.len()).collect();
        for seed in 0..3 {
            Rng::new(seed).shuffle(&mut order);
            let l: Vec<u32> = order.iter().map(|&i| labels[i]).collect();
            let z: Vec<f32> = order
                .iter()
                .flat_map(|&i| logits[i * 10..(i + 1) * 10].iter().copied())
                .collect();
            let shuffled = fit_temperature(&z, &l, 10).unwrap();
            let rel = (f64::from(shuffled.temperature) / f64::from(fit.temperature) - 1.0).abs();
            eprintln!(
                "shuffle {seed}: T {} vs {}, relative {rel:.1e}",
                shuffled.temperature, fit.temperature
            );
            assert!(rel <= 1e-6, "{rel}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 512, failure_persistence: None, ..Default::default()
        })]

        /// softmax(z / T) is monotone in z, so the top logit always has the top probability,
        /// and it is the first maximum of the probabilities whenever that maximum is unique
        /// (two probabilities can round to the same f32 when (z_a − z_b)/T is below f32
        /// resolution, e.g. at T = 1e4). Probabilities sum to 1 within 1e-5.
        #[test]
        fn temperature_never_changes_the_top_class(
            row in proptest::collection::vec(-1e3f32..1e3, 2..40),
            log_t in -9.0f64..9.0,
        ) {
            let t = log_t.exp() as f32;
            let mut p = vec![0f32; row.len()];
            softmax_with_temperature(&row, t, &mut p);
            let top = argmax(row.iter().copied());
            let max = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            proptest::prop_assert_eq!(p[top], max);
            if p.iter().filter(|&&v| v == max).count() == 1 {
                proptest::prop_assert_eq!(argmax(p.iter().copied()), top);
            }
            for a in 0..row.len() {
                for b in 0..row.len() {
                    if row[a] < row[b] {
                        proptest::prop_assert!(p[a] <= p[b]);
                    }
                }
            }
            let sum: f64 = p.iter().map(|&v| f64::from(v)).sum();
            proptest::prop_assert!((sum - 1.0).abs() < 1e-5, "sum {}", sum);
        }
    }

    /// Four images, two classes, T = 2 on doubled logits, so the probabilities are
    /// 3/4, 3/4, 9/10 and 1/2 (a tie: the first class is predicted, and right):
    ///
    /// | image | p(true) | top-1 | right | Brier                 | bin (of 15)        |
    /// |-------|---------|-------|-------|-----------------------|--------------------|
    /// | 0     | 0.75    | 0.75  | yes   | 0.25² + 0.25² = 0.125 | 11: (11/15, 12/15] |
    /// | 1     | 0.25    | 0.75  | no    | 0.75² + 0.75² = 1.125 | 11                 |
    /// | 2     | 0.9     | 0.9   | yes   | 0.1² + 0.1²   = 0.02  | 13: (13/15, 14/15] |
    /// | 3     | 0.5     | 0.5   | yes   | 0.5² + 0.5²   = 0.5   | 7:  (7/15, 8/15]   |
    ///
    /// NLL = (ln 4/3 + ln 4 + ln 10/9 + ln 2) / 4 = 0.618121; Brier = 1.77 / 4 = 0.4425;
    /// ECE = 1/4·|1 − 0.5| + 2/4·|0.5 − 0.75| + 1/4·|1 − 0.9| = 0.275.
    #[test]
    fn metrics_by_hand() {
        let (l3, l9) = (2.0 * 3f32.ln(), 2.0 * 9f32.ln());
        let logits = [l3, 0.0, l3, 0.0, 0.0, l9, 0.0, 0.0];
        let m = calibration_metrics(&logits, &[0, 1, 1, 0], 2, 2.0).unwrap();
        let nll = ((4.0f64 / 3.0).ln() + 4f64.ln() + (10.0f64 / 9.0).ln() + 2f64.ln()) / 4.0;
        assert!((m.nll - nll).abs() < 1e-6, "{} vs {nll}", m.nll);
        assert!((nll - 0.618121).abs() < 1e-6);
        assert!((m.brier - 0.4425).abs() < 1e-6, "{}", m.brier);
        assert!((m.ece - 0.275).abs() < 1e-6, "{}", m.ece);
        assert_eq!(m.temperature, 2.0);
        let counts: Vec<usize> = m.bins.iter().map(|b| b.count).collect();
        let mut expected = [0usize; ECE_BINS];
        (expected[7], expected[11], expected[13]) = (1, 2, 1);
        assert_eq!(counts, expected);
        assert!((m.bins[11].confidence - 0.75).abs() < 1e-6);
        assert_eq!(m.bins[11].accuracy, 0.5);
        assert_eq!(m.bins[7].accuracy, 1.0);
        // Empty bins: nothing in them, nothing from them.
        for b in m.bins.iter().filter(|b| b.count == 0) {
            assert_eq!((b.confidence, b.accuracy), (0.0, 0.0));
        }
        let from_bins: f64 = m
            .bins
            .iter()
            .map(|b| b.count as f64 / 4.0 * (b.accuracy - b.confidence).abs())
            .sum();
        assert_eq!(from_bins, m.ece);
    }

    /// The 15 bins tile [0, 1] without gaps; a top-1 probability of exactly 1 falls in the last,
    /// one exactly on a boundary (1/3 = 5/15: three equal logits) in the bin below it; and a
    /// true class whose probability underflows still has a finite NLL (1000 at T = 1).
    #[test]
    fn bins_cover_the_unit_interval() {
        // p = (1/2, e^-1000/2, 1/2) and about (0.498, 0.498, 0.003): both top-1 in bin 7
        // (7/15, 8/15]; the first's true class has −ln p = 1000 + ln 2.
        let logits = [0.0, -1000.0, 0.0, 0.0, 0.0, -5.0];
        let m = calibration_metrics(&logits, &[1, 0], 3, 1.0).unwrap();
        assert_eq!(m.bins.len(), ECE_BINS);
        assert_eq!(m.bins[0].lower, 0.0);
        assert_eq!(m.bins[ECE_BINS - 1].upper, 1.0);
        for w in m.bins.windows(2) {
            assert_eq!(w[0].upper, w[1].lower);
        }
        assert_eq!(m.bins[7].count, 2);
        assert!(m.nll.is_finite() && m.nll > 500.0);

        let one = calibration_metrics(&[0.0, -1000.0], &[0], 2, 1.0).unwrap();
        assert_eq!(one.bins[ECE_BINS - 1].count, 1);
        assert_eq!(one.bins[ECE_BINS - 1].confidence, 1.0);
        assert_eq!(one.ece, 0.0);

        let third = calibration_metrics(&[0.5, 0.5, 0.5], &[2], 3, 1.0).unwrap();
        assert_eq!(third.bins[4].count, 1, "1/3 is the upper edge of bin 4");
    }

    /// Threshold 0 accepts every image (coverage 1, accuracy = top-1 of Metrics); a threshold
    /// above every probability (1.5) accepts none, with accuracy 0 by convention; coverage
    /// never grows with the threshold; the tiny example of metrics_by_hand at 0.7 accepts
    /// images 0–2 (2 of 3 right) and at 0.8 image 2 alone; a probability equal to the
    /// threshold is accepted.
    #[test]
    fn coverage_curve_behaves() {
        let (logits, labels) = noisy_split(600, 6, 8);
        let thresholds: Vec<f64> = (0..=100)
            .map(|i| f64::from(i) / 100.0)
            .chain([1.5])
            .collect();
        let curve = coverage_curve(&logits, &labels, 6, 0.7, &thresholds).unwrap();
        let names: Vec<String> = (0..6).map(|c| c.to_string()).collect();
        let top1 = super::super::metrics::Metrics::from_logits(&logits, &labels, &names)
            .unwrap()
            .top1;
        assert_eq!((curve[0].accepted, curve[0].coverage), (600, 1.0));
        assert!((100.0 * curve[0].accuracy - top1).abs() < 1e-9);
        let last = curve.last().unwrap();
        assert_eq!((last.accepted, last.coverage, last.accuracy), (0, 0.0, 0.0));
        for w in curve.windows(2) {
            assert!(w[1].coverage <= w[0].coverage);
            assert!(w[1].accepted <= w[0].accepted);
        }
        assert!(curve.iter().zip(&thresholds).all(|(p, &t)| p.min_prob == t));

        let (l3, l9) = (2.0 * 3f32.ln(), 2.0 * 9f32.ln());
        let tiny = [l3, 0.0, l3, 0.0, 0.0, l9, 0.0, 0.0];
        let c = coverage_curve(&tiny, &[0, 1, 1, 0], 2, 2.0, &[0.7, 0.8]).unwrap();
        assert_eq!((c[0].accepted, c[0].coverage), (3, 0.75));
        assert!((c[0].accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!((c[1].accepted, c[1].accuracy), (1, 1.0));

        // "Below" is refused, equal is accepted: two equal logits give exactly 0.5.
        let half = coverage_curve(&[0.0; 4], &[0, 1], 2, 1.0, &[0.5, 0.5000001]).unwrap();
        assert_eq!((half[0].accepted, half[1].accepted), (2, 0));
        assert_eq!(half[0].accuracy, 0.5);
    }

    /// Every refusal says why, on one line.
    #[test]
    fn refusals_say_why() {
        let (logits, labels) = noisy_split(40, 4, 2);
        let fit = |z: &[f32], l: &[u32]| message(fit_temperature(z, l, 4));

        assert!(fit(&logits[..28], &labels[..7]).contains("7 images: too small"));
        assert!(fit(&logits, &[2; 40]).contains("all 40 images are of class 2"));
        let mut nan = logits.clone();
        nan[4 * 13 + 2] = f32::NAN;
        assert_eq!(fit(&nan, &labels), "logits row 13: class 2 is NaN");
        nan[4 * 13 + 2] = f32::NEG_INFINITY;
        assert!(fit(&nan, &labels).contains("row 13"));
        assert!(fit(&logits[1..], &labels).contains("159 logits for 40 labels of 4 classes"));
        let mut bad = labels.clone();
        bad[5] = 4;
        assert!(fit(&logits, &bad).contains("label 4 of image 5 out of range (4 classes)"));
        assert!(message(fit_temperature(&[], &[], 0)).contains("no classes"));
        assert!(message(calibration_metrics(&[], &[], 3, 1.0)).contains("no images"));

        // Separable: every true class on top, one only tied there.
        let mut separable: Vec<f32> = labels
            .iter()
            .flat_map(|&y| (0..4).map(move |c| if c == y { 1.0 } else { 0.0 }))
            .collect();
        separable[4 * 3 + (labels[3] as usize + 1) % 4] = 1.0;
        assert!(fit(&separable, &labels).contains("separable"));
        assert!(fit(&separable, &labels).contains("T would go to 0"));
        // Worse than uniform: every true class at the bottom.
        let worst: Vec<f32> = separable.iter().map(|&z| -z).collect();
        assert!(fit(&worst, &labels).contains("worse than uniform"));
        assert!(fit(&worst, &labels).contains("T would go to ∞"));
        assert!(fit(&vec![0.5; 160], &labels).contains("uniform whatever T"));

        // Roots beyond the bracket limits. T < 1e-32: seven right images with a gap of 1e-33
        // and one wrong image with a gap of 1e-44 (the root is near s = 3e34).
        let mut tiny: Vec<f32> = [1e-33, 0.0].repeat(7);
        tiny.extend([1e-44, 0.0]);
        let mut tiny_labels = vec![0u32; 7];
        tiny_labels.push(1);
        assert_eq!(
            message(fit_temperature(&tiny, &tiny_labels, 2)),
            "the NLL still falls at T = 1e-32: T would go to 0"
        );
        // T > 1e32: four right and four wrong images with logits ±1e30, and one right by 1.
        let mut huge: Vec<f32> = [1e30, -1e30].repeat(8);
        huge.extend([1.0, 0.0]);
        let huge_labels = [0, 0, 0, 0, 1, 1, 1, 1, 0];
        assert_eq!(
            message(fit_temperature(&huge, &huge_labels, 2)),
            "the NLL still falls at T = 1e32: T would go to ∞"
        );

        for t in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert!(message(calibration_metrics(&logits, &labels, 4, t))
                .contains("is not a finite positive number"));
            assert!(message(coverage_curve(&logits, &labels, 4, t, &[0.5]))
                .contains("is not a finite positive number"));
        }
        assert_eq!(
            message(coverage_curve(&logits, &labels, 4, 1.0, &[0.5, f64::NAN])),
            "threshold 1 is NaN"
        );
    }
}
