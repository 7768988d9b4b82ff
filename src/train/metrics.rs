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
            top5: pct(top5, n),
            per_class,
            confusion,
            n_images: n,
        })
    }
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
    }
}
