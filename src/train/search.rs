//! The α/β grid search of the official Tip-Adapter code (`search_hp`): for every β of the
//! grid (outer loop) and every α (inner loop), the top-1 accuracy of
//!
//! ```text
//! logits = logit_scale · f·Wᵀ + α · exp(−β(1 − f·Kᵀ)) · L
//! ```
//!
//! on a validation split; the first strictly better point wins. The work is shared across the
//! grid: the similarities `f·Kᵀ` come from the SIMD kernel once per query, the zero-shot term
//! once per query, the affinities once per (query, β) through the kernel's vectorised exp, and
//! each α costs only a multiply-add per class.

use crate::adapter::TipAdapter;
use crate::kernel::{Kernel, KernelError, Scratch, MAX_BATCH};

/// β and α maxima of the default search (`--search-scale`).
pub const DEFAULT_SEARCH_SCALE: [f64; 2] = [7.0, 3.0];
/// β and α steps of the default search (`--search-step`).
pub const DEFAULT_SEARCH_STEPS: [usize; 2] = [200, 20];

/// The points of an α/β search, and how a tie between equally accurate points is broken.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    pub betas: Vec<f32>,
    pub alphas: Vec<f32>,
    pub tie: TieBreak,
}

/// Which of the equally best grid points [`GridAccuracy::best`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TieBreak {
    /// The official `search_hp`: β outer, α inner, the first strictly better point wins, so a
    /// flat surface keeps the smallest β and α (β = 0.1 at the grid's corner).
    #[default]
    Official,
    /// The point deepest inside the best plateau: the one whose nearest worse point is farthest
    /// away (Chebyshev distance in fractions of each axis's extent), so a small change of α or
    /// β (another split, another day's light) stays on the plateau. Ties keep the official
    /// order; a surface that is best everywhere keeps the point nearest the grid's centre.
    Plateau,
}

/// Queries scored per block: the similarities of a block are kept for all β.
const BLOCK: usize = 256;

impl Grid {
    /// The official grid: `β_i = 0.1 + i·(β_max − 0.1)/steps_β` for `i < steps_β`, and
    /// likewise α (Tip-Adapter's configs: scales (7, 3), steps (200, 20)). Computed in f64 as
    /// Python does, then rounded to f32.
    pub fn official(beta_max: f64, alpha_max: f64, beta_steps: usize, alpha_steps: usize) -> Grid {
        let list = |max: f64, steps: usize| {
            (0..steps)
                .map(|i| (i as f64 * (max - 0.1) / steps as f64 + 0.1) as f32)
                .collect()
        };
        Grid {
            betas: list(beta_max, beta_steps),
            alphas: list(alpha_max, alpha_steps),
            tie: TieBreak::Official,
        }
    }

    /// The same points with another tie-break.
    /// The grid `tune` and `cache build --val` search by default: β up to 7 in 200 steps, α up
    /// to 3 in 20 (the official configs' search scale and steps), the official tie rule.
    pub fn default_search() -> Grid {
        Grid::official(
            DEFAULT_SEARCH_SCALE[0],
            DEFAULT_SEARCH_SCALE[1],
            DEFAULT_SEARCH_STEPS[0],
            DEFAULT_SEARCH_STEPS[1],
        )
    }

    pub fn with_tie(self, tie: TieBreak) -> Grid {
        Grid { tie, ..self }
    }

    /// One point (for scoring a fixed α/β with the same code path).
    pub fn single(alpha: f32, beta: f32) -> Grid {
        Grid {
            betas: vec![beta],
            alphas: vec![alpha],
            tie: TieBreak::Official,
        }
    }
}

/// Accuracy (percent, `100·correct/n` as the official `cls_acc`) at every grid point.
#[derive(Debug, Clone, PartialEq)]
pub struct GridAccuracy {
    pub grid: Grid,
    /// `correct[i_beta * alphas + i_alpha]`.
    pub correct: Vec<u32>,
    pub n: usize,
}

impl GridAccuracy {
    pub fn accuracy(&self, i_beta: usize, i_alpha: usize) -> f64 {
        let c = self.correct[i_beta * self.grid.alphas.len() + i_alpha];
        if self.n == 0 {
            0.0
        } else {
            100.0 * f64::from(c) / self.n as f64
        }
    }

    /// The best point, ties broken by the grid's [`TieBreak`]. Returns (α, β, accuracy).
    pub fn best(&self) -> (f32, f32, f64) {
        let (ib, ia) = match self.grid.tie {
            TieBreak::Official => self.first_best(),
            TieBreak::Plateau => self.plateau_centre(),
        };
        (
            self.grid.alphas[ia],
            self.grid.betas[ib],
            self.accuracy(ib, ia),
        )
    }

    /// The official choice: β outer, α inner, the first strictly better accuracy wins (ties
    /// keep the earlier, smaller β and α). (β index, α index).
    fn first_best(&self) -> (usize, usize) {
        let na = self.grid.alphas.len();
        let mut best = (0, 0);
        let mut best_correct = None;
        for (i, &c) in self.correct.iter().enumerate() {
            if best_correct.is_none_or(|b| c > b) {
                best_correct = Some(c);
                best = (i / na, i % na);
            }
        }
        best
    }

    /// See [`TieBreak::Plateau`]. (β index, α index).
    fn plateau_centre(&self) -> (usize, usize) {
        let (nb, na) = (self.grid.betas.len(), self.grid.alphas.len());
        let top = self.correct.iter().copied().max().unwrap_or(0);
        let at = |i: usize| (i / na, i % na);
        let worse: Vec<(usize, usize)> = (0..self.correct.len())
            .filter(|&i| self.correct[i] < top)
            .map(at)
            .collect();
        let frac = |d: usize, n: usize| d as f64 / n.max(1) as f64;
        let mut best = (0, 0);
        let mut best_key = (f64::NEG_INFINITY, f64::NEG_INFINITY);
        for i in (0..self.correct.len()).filter(|&i| self.correct[i] == top) {
            let (ib, ia) = at(i);
            // Depth: distance to the nearest worse point (infinite when none is worse).
            let depth = worse
                .iter()
                .map(|&(wb, wa)| frac(ib.abs_diff(wb), nb).max(frac(ia.abs_diff(wa), na)))
                .fold(f64::INFINITY, f64::min);
            // Among equally deep points (a surface best everywhere), the one nearest the centre.
            let centre = -(frac(2 * ib + 1, 2 * nb) - 0.5)
                .abs()
                .max((frac(2 * ia + 1, 2 * na) - 0.5).abs());
            let key = (depth, if depth.is_infinite() { centre } else { 0.0 });
            if key > best_key {
                best_key = key;
                best = (ib, ia);
            }
        }
        best
    }
}

/// Top-1 correct counts of `model` over the grid for `features` (`n × dim`, unit-norm) with
/// true classes `labels`: the model's keys, W and logit scale, each grid point's α and β (the
/// model's own α and β are not used). `progress` is called with the number of queries done.
pub fn grid_accuracy(
    kernel: &Kernel,
    model: &TipAdapter<'_>,
    features: &[f32],
    labels: &[u32],
    grid: &Grid,
    mut progress: impl FnMut(usize),
) -> Result<GridAccuracy, KernelError> {
    let dim = model.dim();
    let nc = model.n_classes();
    let n_keys = model.keys().len();
    let n = labels.len();
    if features.len() != n * dim {
        return Err(KernelError(format!(
            "{} feature values for {n} labels of dim {dim}",
            features.len()
        )));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= nc) {
        return Err(KernelError(format!(
            "label {bad} out of range for {nc} classes"
        )));
    }
    let (nb, na) = (grid.betas.len(), grid.alphas.len());
    let mut correct = vec![0u32; nb * na];
    let offsets = model.keys().class_offsets();
    let mut scratch = Scratch::new(dim);
    let mut sims = vec![0f32; BLOCK.min(n.max(1)) * n_keys];
    let mut zero_shot = vec![0f32; BLOCK.min(n.max(1)) * nc];
    let mut aff = vec![0f32; n_keys];
    let mut cache = vec![0f32; nc];
    let mut start = 0;
    while start < n {
        let end = (start + BLOCK).min(n);
        let rows = end - start;
        for b0 in (0..rows).step_by(MAX_BATCH) {
            let b1 = (b0 + MAX_BATCH).min(rows);
            kernel.similarities(
                &features[(start + b0) * dim..(start + b1) * dim],
                model.keys(),
                &mut scratch,
                &mut sims[b0 * n_keys..b1 * n_keys],
            )?;
        }
        for r in 0..rows {
            let f = &features[(start + r) * dim..(start + r + 1) * dim];
            model.base(f, &mut zero_shot[r * nc..(r + 1) * nc]);
        }
        for (ib, &beta) in grid.betas.iter().enumerate() {
            for r in 0..rows {
                aff.copy_from_slice(&sims[r * n_keys..(r + 1) * n_keys]);
                kernel.affinity_in_place(&mut aff, beta);
                for (c, w) in cache.iter_mut().zip(offsets.windows(2)) {
                    *c = aff[w[0] as usize..w[1] as usize].iter().sum();
                }
                let z = &zero_shot[r * nc..(r + 1) * nc];
                let label = labels[start + r] as usize;
                for (ia, &alpha) in grid.alphas.iter().enumerate() {
                    if argmax(z.iter().zip(&cache).map(|(&z, &c)| z + alpha * c)) == label {
                        correct[ib * na + ia] += 1;
                    }
                }
            }
        }
        start = end;
        progress(start);
    }
    Ok(GridAccuracy {
        grid: grid.clone(),
        correct,
        n,
    })
}

/// Index of the first maximum (NaN never wins).
pub fn argmax(values: impl Iterator<Item = f32>) -> usize {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, v) in values.enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_grid_values() {
        let g = Grid::official(7.0, 3.0, 200, 20);
        assert_eq!(g.betas.len(), 200);
        assert_eq!(g.alphas.len(), 20);
        assert_eq!(g.betas[0], 0.1);
        assert!((g.betas[199] - (199.0 * 6.9 / 200.0 + 0.1) as f32).abs() < 1e-7);
        assert!((g.alphas[1] - 0.245).abs() < 1e-7);
    }

    #[test]
    fn ties_keep_the_first_point() {
        let acc = GridAccuracy {
            grid: Grid {
                betas: vec![1.0, 2.0],
                alphas: vec![0.5, 1.0],
                tie: TieBreak::Official,
            },
            correct: vec![3, 5, 5, 4],
            n: 10,
        };
        assert_eq!(acc.best(), (1.0, 1.0, 50.0));
    }

    fn surface(nb: usize, na: usize, correct: Vec<u32>) -> GridAccuracy {
        GridAccuracy {
            grid: Grid {
                betas: (0..nb).map(|i| i as f32).collect(),
                alphas: (0..na).map(|i| i as f32 * 10.0).collect(),
                tie: TieBreak::Plateau,
            },
            correct,
            n: 100,
        }
    }

    #[test]
    fn the_plateau_rule_keeps_the_point_deepest_inside_the_best_region() {
        // 5 β × 5 α; the best value (9) fills a 3 × 3 block at β 1..=3, α 2..=4 and one isolated
        // point at (0, 0), which the official rule keeps.
        #[rustfmt::skip]
        let c = vec![
            9, 1, 1, 1, 1,
            1, 1, 9, 9, 9,
            1, 1, 9, 9, 9,
            1, 1, 9, 9, 9,
            1, 1, 1, 1, 1,
        ];
        let mut acc = surface(5, 5, c);
        assert_eq!(acc.best(), (30.0, 2.0, 9.0));
        acc.grid.tie = TieBreak::Official;
        assert_eq!(acc.best(), (0.0, 0.0, 9.0));
        // A surface best everywhere: the centre, not the corner.
        let flat = surface(4, 3, vec![5; 12]);
        assert_eq!(flat.best(), (10.0, 1.0, 5.0));
        // One best point: that point, whatever the rule.
        let mut one = vec![0; 12];
        one[7] = 1;
        assert_eq!(surface(4, 3, one).best(), (10.0, 2.0, 1.0));
    }
}
