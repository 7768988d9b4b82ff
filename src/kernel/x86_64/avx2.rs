//! AVX2 + FMA + F16C: 256-bit tiles.
//!
//! Shapes (keys × queries), for batches of 4 and more / for fewer queries (batches of 1–3
//! otherwise read the keys as four streams, in 4 × 1 blocks of one key per stream:
//! [`Streams`](crate::kernel::Streams)):
//! - f32, fp16: 3 × 4 (12 accumulators + 3 key vectors + 1 query vector = the 16 ymm
//!   registers) / 8 × 1. Per 8 fp16 values: `vcvtph2ps` once, one `vfmadd231ps` per query.
//! - int8: 2 × 4 / 8 × 1. Per 16 key values: `vpmovsxbw` once, then `vpmaddwd` + `vpaddd` per
//!   query; `vpmaddwd` needs a destination besides its accumulator, so 3 × 4 would spill one
//!   accumulator to the stack (measured 10–25% slower on Zen 3).

use core::arch::x86_64::*;

use half::f16;

use super::generic::{self, Vector};
use crate::kernel::{Ops, STREAMS};

/// Run-time check for everything this module's functions are compiled with.
pub(super) fn is_available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// # Safety of its functions
/// The CPU has AVX2, FMA and F16C: `OPS` is handed out only after [`is_available`].
pub(super) const OPS: Ops = generic::ops_table!(Avx2, "avx2,fma,f16c",
    float: (3, 4, 8), int8: (2, 4, 8));

/// The affinity `exp(−β(1 − s))` of a tile, 8 lanes wide.
///
/// # Safety
/// The CPU has AVX2 and FMA (see [`is_available`]).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn affinity_in_place(sims: &mut [f32], beta: f32) {
    crate::kernel::exp::affinity_in_place_inline(sims, beta)
}

/// Sum of `bytes` read as u32 lanes with 256-bit loads, as [`STREAMS`] streams side by side
/// (the bytes in quarters): the read-bandwidth probe. One stream reads less (Zen 3: 12–15 GB/s
/// against 17–24 from four; see [`Streams`](crate::kernel::Streams)).
///
/// # Safety
/// The CPU has AVX2 (see [`is_available`]).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn stream_sum(bytes: &[u8]) -> u64 {
    const STEP: usize = 256;
    let mut acc = [_mm256_setzero_si256(); STEP / 32];
    let part = bytes.len() / STREAMS / STEP * STEP;
    let p = bytes.as_ptr();
    let mut off = 0;
    while off < part {
        for s in 0..STREAMS {
            for (u, a) in acc.iter_mut().enumerate() {
                // In bounds: s·part + off + 32·(u + 1) ≤ STREAMS·part ≤ len.
                let v = _mm256_loadu_si256(p.add(s * part + off + 32 * u) as *const __m256i);
                *a = _mm256_add_epi32(*a, v);
            }
        }
        off += STEP;
    }
    let mut total = 0u64;
    for a in acc {
        let mut lanes = [0u32; 8];
        _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, a);
        total = lanes.iter().fold(total, |t, &l| t.wrapping_add(l as u64));
    }
    bytes[STREAMS * part..]
        .iter()
        .fold(total, |t, &b| t.wrapping_add(b as u64))
}

/// 256-bit vectors. Callable only with AVX2 + FMA + F16C present.
#[derive(Clone, Copy)]
pub(super) struct Avx2;

impl Vector for Avx2 {
    type F = __m256;
    type I = __m256i;
    const F_LANES: usize = 8;
    const I_LANES: usize = 16;

    #[inline(always)]
    unsafe fn f_zero() -> __m256 {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn f_load(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn f_load_f16(p: *const f16) -> __m256 {
        // F16C vcvtph2ps: 8 halves (16 bytes) to 8 floats, exact.
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
    #[inline(always)]
    unsafe fn f_fma(a: __m256, b: __m256, acc: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, acc)
    }
    #[inline(always)]
    unsafe fn f_sum4(v: [__m256; 4]) -> [f32; 4] {
        // hadd(a, b) = [a01 a23 b01 b23 | a45 a67 b45 b67]; a second hadd gives per 128-bit
        // half the four partial sums, and adding the halves the four totals.
        let ab = _mm256_hadd_ps(v[0], v[1]);
        let cd = _mm256_hadd_ps(v[2], v[3]);
        let abcd = _mm256_hadd_ps(ab, cd);
        let s = _mm_add_ps(
            _mm256_castps256_ps128(abcd),
            _mm256_extractf128_ps::<1>(abcd),
        );
        let mut out = [0f32; 4];
        _mm_storeu_ps(out.as_mut_ptr(), s);
        out
    }

    #[inline(always)]
    unsafe fn i_zero() -> __m256i {
        _mm256_setzero_si256()
    }
    #[inline(always)]
    unsafe fn i_load_i16(p: *const i16) -> __m256i {
        _mm256_loadu_si256(p as *const __m256i)
    }
    #[inline(always)]
    unsafe fn i_load_i8(p: *const i8) -> __m256i {
        // vpmovsxbw: 16 int8 (16 bytes) sign-extended to 16 i16.
        _mm256_cvtepi8_epi16(_mm_loadu_si128(p as *const __m128i))
    }
    #[inline(always)]
    unsafe fn i_dot_acc(a: __m256i, b: __m256i, acc: __m256i) -> __m256i {
        // vpmaddwd cannot overflow here (keys are ≥ −128, never −32768 · −32768), and the
        // query scale bounds the running sum (`query_i16_max`).
        _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))
    }
    #[inline(always)]
    unsafe fn i_sum4(v: [__m256i; 4]) -> [i32; 4] {
        let ab = _mm256_hadd_epi32(v[0], v[1]);
        let cd = _mm256_hadd_epi32(v[2], v[3]);
        let abcd = _mm256_hadd_epi32(ab, cd);
        let s = _mm_add_epi32(
            _mm256_castsi256_si128(abcd),
            _mm256_extracti128_si256::<1>(abcd),
        );
        let mut out = [0i32; 4];
        _mm_storeu_si128(out.as_mut_ptr() as *mut __m128i, s);
        out
    }
}
