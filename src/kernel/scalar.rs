//! The portable kernel and the plain reference.
//!
//! [`OPS`] is the portable dot-product table (what 32-bit ARM and unknown CPUs run); its loops
//! keep several independent accumulators so the compiler can vectorise them for the baseline
//! target. [`reference_class_affinity`] is the Tip-Adapter cache term written out literally in
//! f64 from the dequantised keys: the truth every kernel is tested against.

use half::f16;

use super::{KeyData, Keys, Ops, QueryI16};

pub(crate) const OPS: Ops = Ops {
    dots_f32,
    dots_f16,
    dots_i8,
    // One tile at a time.
    streams: None,
};

const LANES: usize = 8;

/// f32 dot product with independent accumulators (vectorises at the baseline ISA); also the
/// dot product of the offline code (zero-shot term of the search, Tip-Adapter-F).
#[inline(always)]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn dot_i16_i8(a: &[i16], b: &[i8]) -> i32 {
    let mut acc = [0i32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: i32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(&x, &y)| x as i32 * y as i32)
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..LANES {
            acc[l] += x[l] as i32 * y[l] as i32;
        }
    }
    acc.iter().sum::<i32>() + tail
}

unsafe fn dots_f32(q: &[f32], batch: usize, dim: usize, keys: &[f32], out: &mut [f32]) {
    for (key, o) in keys.chunks_exact(dim).zip(out.chunks_exact_mut(batch)) {
        for (qb, ob) in q.chunks_exact(dim).zip(o.iter_mut()) {
            *ob = dot_f32(qb, key);
        }
    }
}

unsafe fn dots_f16(q: &[f32], batch: usize, dim: usize, keys: &[f16], out: &mut [f32]) {
    // Convert one key at a time into a stack tile; dims beyond the tile go in pieces.
    const PIECE: usize = 256;
    let mut buf = [0f32; PIECE];
    for (key, o) in keys.chunks_exact(dim).zip(out.chunks_exact_mut(batch)) {
        o.fill(0.0);
        for (p, piece) in key.chunks(PIECE).enumerate() {
            let b = &mut buf[..piece.len()];
            half::slice::HalfFloatSliceExt::convert_to_f32_slice(piece, b);
            for (qb, ob) in q.chunks_exact(dim).zip(o.iter_mut()) {
                *ob += dot_f32(&qb[p * PIECE..p * PIECE + piece.len()], b);
            }
        }
    }
}

unsafe fn dots_i8(q: &QueryI16<'_>, keys: &[i8], scales: &[f32], out: &mut [f32]) {
    let (batch, dim) = (q.batch, q.dim);
    for ((key, ks), o) in keys
        .chunks_exact(dim)
        .zip(scales)
        .zip(out.chunks_exact_mut(batch))
    {
        for ((qb, qs), ob) in q.values.chunks_exact(dim).zip(q.scales).zip(o.iter_mut()) {
            *ob = dot_i16_i8(qb, key) as f32 * (qs * ks);
        }
    }
}

/// Key `i` as f64 values (dequantised).
pub fn key_f64(keys: &Keys<'_>, i: usize) -> Vec<f64> {
    let d = keys.dim();
    let r = i * d..(i + 1) * d;
    match keys.data() {
        KeyData::F32(v) => v[r].iter().map(|&x| x as f64).collect(),
        KeyData::F16(v) => v[r].iter().map(|x| x.to_f64()).collect(),
        KeyData::I8 { values, scales } => values[r]
            .iter()
            .map(|&x| x as f64 * scales[i] as f64)
            .collect(),
    }
}

/// `out[b][c] = Σ_{i ∈ class c} exp(−β(1 − q_b·k_i))` in f64 with the f32 query, straight from
/// the equation: the reference the kernels are tested against.
pub fn reference_class_affinity(queries: &[f32], keys: &Keys<'_>, beta: f64) -> Vec<Vec<f64>> {
    let d = keys.dim();
    let offsets = keys.class_offsets();
    // Dequantise once: the reference is also run over large accuracy sets.
    let keys_f64: Vec<Vec<f64>> = (0..keys.len()).map(|i| key_f64(keys, i)).collect();
    queries
        .chunks_exact(d)
        .map(|q| {
            (0..keys.n_classes())
                .map(|c| {
                    (offsets[c] as usize..offsets[c + 1] as usize)
                        .map(|i| {
                            let s: f64 =
                                keys_f64[i].iter().zip(q).map(|(k, &x)| k * x as f64).sum();
                            (-beta * (1.0 - s)).exp()
                        })
                        .sum()
                })
                .collect()
        })
        .collect()
}
