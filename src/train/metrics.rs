//! Classification metrics from logits: top-1 / top-5, per-class accuracy, confusion matrix.

use super::search::argmax;
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "runtime", derive(serde::Serialize))]
pub struct ClassAccuracy {
    pub class: String,
    pub correct: u32,
    pub total: u32,
    /// Percent; 0 for a class without images.
    pub accuracy: f64,
}

#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "runtime", derive(serde::Serialize))]
pub struct Metrics {
    /// Percent of images whose true class has the highest logit (first maximum on ties).
    pub top1: f64,
    /// Wilson's 95 % score interval of `top1`, percent: how far the accuracy of the population
    /// the test images were drawn from may lie (one image of `n_images` is `100 / n_images`
    /// points).
    pub top1_ci95: (f64, f64),
    /// Percent of images whose true class is among the 5 highest logits (all classes when
    /// there are 5 or fewer, which makes it 100).
    pub top5: f64,
    pub per_class: Vec<ClassAccuracy>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<u32>>,
    pub n_images: usize,
}

impl Metrics {
    /// Metrics of `logits` (`n × classes.len()`, row-major) against `labels`.
    pub fn from_logits(logits: &[f32], labels: &[u32], classes: &[String]) -> Result<Metrics> {
        let nc = classes.len();
        if logits.len() != labels.len() * nc {
            return Err(Error::Invalid(format!(
                "{} logits for {} labels of {nc} classes",
                logits.len(),
                labels.len()
            )));
        }
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= nc) {
            return Err(Error::Invalid(format!(
                "label {bad} out of range ({nc} classes)"
            )));
        }
        let mut confusion = vec![vec![0u32; nc]; nc];
        let mut top5 = 0usize;
        for (row, &y) in logits.chunks_exact(nc).zip(labels) {
            let y = y as usize;
            let pred = argmax(row.iter().copied());
            confusion[y][pred] += 1;
            // Rank of the true class: how many classes beat it (earlier index wins ties).
            let rank = row
                .iter()
                .enumerate()
                .filter(|&(c, &v)| v > row[y] || (v == row[y] && c < y))
                .count();
            if rank < 5 {
                top5 += 1;
            }
        }
        let n = labels.len();
        let pct = |c: usize, t: usize| {
            if t == 0 {
                0.0
            } else {
                100.0 * c as f64 / t as f64
            }
        };
        let per_class: Vec<ClassAccuracy> = classes
            .iter()
            .enumerate()
            .map(|(c, name)| {
                let total: u32 = confusion[c].iter().sum();
                ClassAccuracy {
                    class: name.clone(),
                    correct: confusion[c][c],
                    total,
                    accuracy: pct(confusion[c][c] as usize, total as usize),
                }
            })
            .collect();
        let correct: u32 = per_class.iter().map(|c| c.correct).sum();
        Ok(Metrics {
            top1: pct(correct as usize, n),
            top1_ci95: wilson_95(correct as usize, n),
            top5: pct(top5, n),
            per_class,
            confusion,
            n_images: n,
        })
    }
}

/// Wilson's 95 % score interval of `correct` successes in `n` trials, in percent; (0, 100) for
/// no trial.
pub fn wilson_95(correct: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 100.0);
    }
    let z = 1.959_963_984_540_054f64;
    let (n, p) = (n as f64, correct as f64 / n as f64);
    let z2n = z * z / n;
    let centre = (p + z2n / 2.0) / (1.0 + z2n);
    let half = z / (1.0 + z2n) * (p * (1.0 - p) / n + z2n / (4.0 * n)).sqrt();
    (
        100.0 * (centre - half).max(0.0),
        100.0 * (centre + half).min(1.0),
    )
}

/// Two methods on the same images: where they disagree about being right.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "runtime", derive(serde::Serialize))]
pub struct Paired {
    /// Images the first method gets right and the second wrong.
    pub better: u32,
    /// The reverse.
    pub worse: u32,
    /// Exact two-sided McNemar test (binomial, p = ½ over the disagreements): the probability
    /// of a split at least this uneven if neither method were better. 1 without disagreement.
    pub p_value: f64,
}

/// [`Paired`] of the logits `a` and `b` (`n × n_classes` each) against `labels`.
pub fn paired(a: &[f32], b: &[f32], labels: &[u32], n_classes: usize) -> Result<Paired> {
    if n_classes == 0 || a.len() != labels.len() * n_classes || b.len() != a.len() {
        return Err(Error::Invalid(format!(
            "paired comparison: {} and {} logits for {} labels of {n_classes} classes",
            a.len(),
            b.len(),
            labels.len()
        )));
    }
    let (mut better, mut worse) = (0u32, 0u32);
    for ((ra, rb), &y) in a
        .chunks_exact(n_classes)
        .zip(b.chunks_exact(n_classes))
        .zip(labels)
    {
        let right_a = argmax(ra.iter().copied()) == y as usize;
        let right_b = argmax(rb.iter().copied()) == y as usize;
        match (right_a, right_b) {
            (true, false) => better += 1,
            (false, true) => worse += 1,
            _ => {}
        }
    }
    Ok(Paired {
        better,
        worse,
        p_value: mcnemar_exact(better, worse),
    })
}

/// Two-sided exact binomial p-value of `b` against `c` successes at p = ½.
fn mcnemar_exact(b: u32, c: u32) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let k = b.min(c);
    // P(X ≤ k) for X ~ Binomial(n, ½), summed in log space.
    let ln_choose = |n: u32, i: u32| -> f64 {
        (1..=i)
            .map(|j| ((n - i + j) as f64).ln() - (j as f64).ln())
            .sum()
    };
    let half_n = n as f64 * std::f64::consts::LN_2;
    let tail: f64 = (0..=k).map(|i| (ln_choose(n, i) - half_n).exp()).sum();
    (2.0 * tail).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_ties() {
        let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        // rows: correct a; b predicted as a (tie goes to the first); c correct.
        let logits = [3.0, 1.0, 0.0, 2.0, 2.0, 0.0, 0.0, 1.0, 5.0];
        let m = Metrics::from_logits(&logits, &[0, 1, 2], &classes).unwrap();
        assert_eq!(
            m.confusion,
            vec![vec![1, 0, 0], vec![1, 0, 0], vec![0, 0, 1]]
        );
        assert!((m.top1 - 200.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.top5, 100.0);
        assert_eq!(m.per_class[1].accuracy, 0.0);
        assert_eq!(m.n_images, 3);
        // Wilson's interval of 2 of 3: (20.8 %, 93.9 %).
        assert!((m.top1_ci95.0 - 20.77).abs() < 0.01 && (m.top1_ci95.1 - 93.85).abs() < 0.01);
    }

    #[test]
    fn wilson_and_mcnemar_against_known_values() {
        // 33 of 48 (the demo): 54.6 %–80.1 %.
        let (lo, hi) = wilson_95(33, 48);
        assert!(
            (lo - 54.67).abs() < 0.01 && (hi - 80.05).abs() < 0.01,
            "{lo} {hi}"
        );
        assert_eq!(wilson_95(0, 0), (0.0, 100.0));
        let (lo, hi) = wilson_95(10, 10);
        assert!((lo - 72.25).abs() < 0.01 && (hi - 100.0).abs() < 1e-9);
        // scipy.stats.binomtest(2, 12, 0.5).pvalue = 0.0385742...; (5, 5) = 1; (0, 3) = 0.25.
        assert!((mcnemar_exact(2, 10) - 0.038_574_218_75).abs() < 1e-12);
        assert_eq!(mcnemar_exact(5, 5), 1.0);
        assert!((mcnemar_exact(0, 3) - 0.25).abs() < 1e-12);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        let labels = [0, 1, 1];
        let a = [1.0, 0.0, 0.0, 1.0, 0.0, 1.0]; // right, right, right
        let b = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]; // right, wrong, wrong
        let p = paired(&a, &b, &labels, 2).unwrap();
        assert_eq!((p.better, p.worse), (2, 0));
        assert!((p.p_value - 0.5).abs() < 1e-12);
        assert!(paired(&a, &b[..4], &labels, 2).is_err());
    }
}
