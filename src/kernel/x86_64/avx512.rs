//! AVX-512 (F + BW + VL) with VNNI: 512-bit tiles.
//!
//! Shapes: 4 keys × 4 queries (16 accumulators of the 32 zmm registers) for batches of 4 and
//! more, 8 keys × 1 query for fewer (batches of 1–3 otherwise read the keys as four streams,
//! 4 × 1: [`Streams`](crate::kernel::Streams)). Per 32 int8 key values: `vpmovsxbw` (BW) once,
//! then one `vpdpwssd` (VNNI: multiply i16 pairs and accumulate in i32) per query; per 16 fp16
//! values `vcvtph2ps` once and one FMA per query.
//!
//! Only the [`Vector`] methods below are specific to this width; the tiles are the ones the
//! AVX2 instantiation runs (and the tests check) on every x86_64 machine.

use core::arch::x86_64::*;

use half::f16;

use super::avx2::Avx2;
use super::generic::{self, Vector};
use crate::kernel::Ops;

/// Run-time check for everything this module's functions are compiled with.
pub(super) fn is_available() -> bool {
    super::avx2::is_available()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

/// # Safety of its functions
/// The CPU has AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI: `OPS` is handed out only after
/// [`is_available`].
pub(super) const OPS: Ops = generic::ops_table!(Avx512,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    float: (4, 4, 8), int8: (4, 4, 8));

/// The affinity `exp(−β(1 − s))` of a tile, 16 lanes wide.
///
/// # Safety
/// As for [`OPS`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn affinity_in_place(sims: &mut [f32], beta: f32) {
    crate::kernel::exp::affinity_in_place_inline(sims, beta)
}

/// 512-bit vectors. Callable only with the features of [`is_available`] present.
#[derive(Clone, Copy)]
pub(super) struct Avx512;

impl Vector for Avx512 {
    type F = __m512;
    type I = __m512i;
    const F_LANES: usize = 16;
    const I_LANES: usize = 32;

    #[inline(always)]
    unsafe fn f_zero() -> __m512 {
        _mm512_setzero_ps()
    }
    #[inline(always)]
    unsafe fn f_load(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn f_load_f16(p: *const f16) -> __m512 {
        // AVX512F vcvtph2ps: 16 halves (32 bytes) to 16 floats, exact.
        _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
    }
    #[inline(always)]
    unsafe fn f_fma(a: __m512, b: __m512, acc: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, acc)
    }
    #[inline(always)]
    unsafe fn f_sum4(v: [__m512; 4]) -> [f32; 4] {
        Avx2::f_sum4([fold_f(v[0]), fold_f(v[1]), fold_f(v[2]), fold_f(v[3])])
    }

    #[inline(always)]
    unsafe fn i_zero() -> __m512i {
        _mm512_setzero_si512()
    }
    #[inline(always)]
    unsafe fn i_load_i16(p: *const i16) -> __m512i {
        _mm512_loadu_si512(p as *const _)
    }
    #[inline(always)]
    unsafe fn i_load_i8(p: *const i8) -> __m512i {
        // AVX512BW vpmovsxbw: 32 int8 (32 bytes) sign-extended to 32 i16.
        _mm512_cvtepi8_epi16(_mm256_loadu_si256(p as *const __m256i))
    }
    #[inline(always)]
    unsafe fn i_dot_acc(a: __m512i, b: __m512i, acc: __m512i) -> __m512i {
        // VNNI vpdpwssd: acc + a₀b₀ + a₁b₁ per i32 lane, wrapping (never reached: see
        // `query_i16_max`), exactly vpmaddwd + vpaddd.
        _mm512_dpwssd_epi32(acc, a, b)
    }
    #[inline(always)]
    unsafe fn i_sum4(v: [__m512i; 4]) -> [i32; 4] {
        Avx2::i_sum4([fold_i(v[0]), fold_i(v[1]), fold_i(v[2]), fold_i(v[3])])
    }
}

// The folds are `#[inline(always)]` functions, not closures: a closure is only an inlining
// hint, and one that stays out of line has no AVX-512 features, so every intrinsic in it became
// a call (batch-1 int8 scoring spent 35 % of its time in such calls and ran 2× slower than AVX2).

/// 16 f32 lanes folded to 8 (low half + high half; `extractf64x4` is AVX512F, the f32x8 form
/// would need DQ).
#[inline(always)]
unsafe fn fold_f(x: __m512) -> __m256 {
    _mm256_add_ps(
        _mm512_castps512_ps256(x),
        _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(x))),
    )
}

/// 16 i32 lanes folded to 8.
#[inline(always)]
unsafe fn fold_i(x: __m512i) -> __m256i {
    _mm256_add_epi32(_mm512_castsi512_si256(x), _mm512_extracti64x4_epi64::<1>(x))
}
