//! The queries as the kernels read them: staged at a 64-byte boundary in the scratch, and for the
//! int8 keys quantised to i16 ([`QueryI16`]).

use super::{KeyDtype, Keys};

/// Queries prepared for the int8 keys: each query quantised to i16 with its own scale.
///
/// Why i16 and not the f32 query (DESIGN.md keeps the query f32 unless a scheme is shown to be as
/// accurate): the i16 step is `absmax / q_max` with `q_max ≥ 8191` for C ≤ 2048, at least 64×
/// finer than the int8 keys' `absmax / 127`, so it adds well under 1% to the int8 error of a
/// similarity and about 4% to that of a class sum (its error is shared by all keys of a class,
/// the keys' own errors average out; measured in `tests/kernel.rs`), while it lets the int8 kernels multiply integers (`vpmaddwd`, `smlal`)
/// instead of converting every key value to float. `q_max` is chosen so that no i32 accumulator
/// can overflow: `C · q_max · 128 ≤ i32::MAX`.
pub struct QueryI16<'a> {
    pub batch: usize,
    pub dim: usize,
    /// `batch × dim`, row-major.
    pub values: &'a [i16],
    /// Per query: the float value of one i16 step.
    pub scales: &'a [f32],
}

/// Largest i16 magnitude a query value is quantised to for dimension `dim`.
pub fn query_i16_max(dim: usize) -> i32 {
    (i32::MAX as i64 / (128 * dim.max(1) as i64)).min(32767) as i32
}

/// Quantise `batch` queries (row-major `batch × dim`) to i16 into `values`/`scales`.
pub fn quantize_queries_i16(queries: &[f32], dim: usize, values: &mut [i16], scales: &mut [f32]) {
    let qmax = query_i16_max(dim) as f32;
    for ((q, v), s) in queries
        .chunks_exact(dim)
        .zip(values.chunks_exact_mut(dim))
        .zip(scales.iter_mut())
    {
        let absmax = q.iter().fold(0f32, |m, x| m.max(x.abs()));
        if absmax == 0.0 || !absmax.is_finite() {
            v.fill(0);
            *s = if absmax.is_finite() { 0.0 } else { f32::NAN };
            continue;
        }
        let inv = qmax / absmax;
        for (o, x) in v.iter_mut().zip(q) {
            *o = (x * inv).round() as i16;
        }
        *s = absmax / qmax;
    }
}

/// Spare elements in the query buffers for moving their start to a 64-byte boundary.
pub(super) const ALIGN_SLACK: usize = 32;

/// `len` elements of `buf` from its first 64-byte boundary.
fn aligned<T>(buf: &mut [T], len: usize) -> &mut [T] {
    let off = buf.as_ptr().align_offset(64).min(ALIGN_SLACK);
    &mut buf[off..off + len]
}

/// Stages the queries in the scratch (no allocation): copied to an aligned buffer for float
/// keys, quantised to i16 (aligned) for int8 keys.
pub(super) fn prepare<'s>(
    queries: &[f32],
    batch: usize,
    keys: &Keys<'_>,
    q_f32: &'s mut [f32],
    q_i16: &'s mut [i16],
    q_i16_scales: &'s mut [f32],
) -> (&'s [f32], Option<QueryI16<'s>>) {
    let dim = keys.dim();
    if keys.dtype() != KeyDtype::I8 {
        let q = aligned(q_f32, batch * dim);
        q.copy_from_slice(queries);
        return (q, None);
    }
    let (values, scales) = (aligned(q_i16, batch * dim), &mut q_i16_scales[..batch]);
    quantize_queries_i16(queries, dim, values, scales);
    let q = QueryI16 {
        batch,
        dim,
        values,
        scales,
    };
    (&[], Some(q))
}
