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

/// Quantise `batch` queries (row-major `batch × dim`) to i16 into `values`/`scales`. A query with
/// a NaN or infinite element gets scale NaN (its similarities are NaN, as with float keys); an
/// all-zero (or vanishingly small) one gets scale 0.
pub fn quantize_queries_i16(queries: &[f32], dim: usize, values: &mut [i16], scales: &mut [f32]) {
    let qmax = query_i16_max(dim) as f32;
    for ((q, v), s) in queries
        .chunks_exact(dim)
        .zip(values.chunks_exact_mut(dim))
        .zip(scales.iter_mut())
    {
        // |x| as bits: for finite values their integer order is their order, and a NaN or an
        // infinity is above every finite value; one integer max (which vectorises; `f32::max`
        // and an early-exit `is_finite` scan did not) finds both.
        let top = q.iter().fold(0u32, |m, x| m.max(x.to_bits() & 0x7fff_ffff));
        let absmax = f32::from_bits(top);
        let inv = qmax / absmax;
        if top >= f32::INFINITY.to_bits() {
            // A NaN or infinite element: NaN similarities, as the float kernels give.
            v.fill(0);
            *s = f32::NAN;
            continue;
        }
        if absmax == 0.0 || !inv.is_finite() {
            // Zero, or so small (subnormal) that no step fits: similarities 0.
            v.fill(0);
            *s = 0.0;
            continue;
        }
        for (o, x) in v.iter_mut().zip(q) {
            *o = round_to_i16(x * inv);
        }
        *s = absmax / qmax;
    }
}

/// `y.round() as i16` (half away from zero) for |y| ≤ 32767, without the `roundf` call that
/// `f32::round` is on baseline x86_64 (no SSE4.1), one value at a time: that call took a quarter
/// of a 16-query pass over 256 int8 keys. This is how LLVM lowers `round` where it has a
/// truncating instruction: truncate `y ± (0.5 − 2⁻²⁵)`. Exact: the sum rounds up to the next
/// integer exactly when y's fraction is at least one half (at one half exactly, a tie that
/// rounds to the even, integer, neighbour), and the loop vectorises (`cvttps2dq`).
///
/// `y` must be finite with |y| ≤ 32767 (the callers scale by `q_max / absmax`); a plain `as`
/// cast would add NaN and range checks to every element and keep the loop scalar.
#[inline]
fn round_to_i16(y: f32) -> i16 {
    const JUST_UNDER_HALF: f32 = 0.499_999_97; // 0.5 − 2⁻²⁵, the largest f32 below 0.5
    let t = y + JUST_UNDER_HALF.copysign(y);
    debug_assert!(t.is_finite() && t.abs() < 32768.0, "{y}");
    // SAFETY: `t` is finite and within ±32768 (the precondition), so it truncates to an i32.
    unsafe { t.to_int_unchecked::<i32>() as i16 }
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

#[cfg(test)]
mod tests {
    use super::round_to_i16;

    #[test]
    fn non_finite_and_tiny_queries_are_flagged_not_cast() {
        let q = [0.5, f32::NAN, -0.25, 1.0, f32::INFINITY, 0.0, 1e-44, -1e-45];
        let (mut v, mut s) = ([7i16; 8], [0f32; 4]);
        super::quantize_queries_i16(&q, 2, &mut v, &mut s);
        assert!(s[0].is_nan() && s[2].is_nan() && v[..2] == [0, 0] && v[4..6] == [0, 0]);
        assert_eq!(
            (s[1], &v[2..4]),
            (1.0 / super::query_i16_max(2) as f32, &[-8192i16, 32767][..])
        );
        assert_eq!((s[3], &v[6..]), (0.0, &[0i16, 0][..]));
    }

    #[test]
    fn rounding_matches_f32_round_everywhere_it_is_used() {
        let mut edge = vec![0.0f32, -0.0, 0.5, -0.5, 1.5, -1.5, 2.5, 32767.0, -32767.0];
        for k in -40_000i32..40_000 {
            let h = k as f32 * 0.5;
            edge.extend([h, h.next_up(), h.next_down()]);
        }
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            edge.push(f32::from_bits(state as u32) % 32767.0);
        }
        for y in edge
            .into_iter()
            .filter(|y| y.is_finite() && y.abs() <= 32767.0)
        {
            assert_eq!(round_to_i16(y), y.round() as i16, "{y:e}");
        }
    }
}
