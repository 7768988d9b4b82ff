//! int8 keys with SDOT (FEAT_DotProd: Cortex-A76 / Raspberry Pi 5, Cortex-A78AE / Jetson Orin).
//!
//! SDOT multiplies int8 by int8, but the query is i16 ([`QueryI16`]: 64× finer than the keys,
//! see `kernel/mod.rs`). Each i16 query value `v` is split exactly into two int8 parts:
//!
//! ```text
//! hi = v >> 8                  (arithmetic shift: floor(v / 256), in −128..=127)
//! lo = (v & 0xff) − 128        (in −128..=127)
//! v  = 256·hi + lo + 128
//! q·k = 256·Σ hi·k + Σ lo·k + 128·Σ k
//! ```
//!
//! The split is exact for every i16 (a signed low byte `v − 256·round(v/256)` would not be: its
//! `hi` reaches 128 for `v ≥ 32640`, and `q_max` is 32767 for C ≤ 512). `Σ k` depends on the key
//! only and is computed once per key (one more SDOT against ones, in the first query block).
//! Per 16 dims and query that is 2 SDOT (32 products) where `neon.rs` needs 4 `smlal` for 16.
//! `256·Σ hi·k` may wrap an i32 lane for large C, but the total `q·k` fits in an i32 by the
//! choice of `q_max` (`C · q_max · 128 ≤ i32::MAX`), so wrapping i32 arithmetic gives it
//! exactly: the result is bit-identical to the portable kernel's.
//!
//! The parts are built per call in stack buffers (no allocation) for `DIM_CHUNK` dims at a time;
//! dims beyond that accumulate exact i32 partial dots in a stack array. The fp32 and fp16 keys
//! use the NEON tiles.

use std::arch::aarch64::*;
use std::arch::asm;
use std::mem::MaybeUninit;

use super::{for_each_block, neon};
use crate::kernel::{Ops, QueryI16, MAX_BATCH, TILE_KEYS};

pub(super) const OPS: Ops = Ops {
    dots_f32: neon::dots_f32,
    dots_f16: neon::dots_f16,
    dots_i8,
    // One tile at a time.
    streams: None,
};

/// Dims whose int8 query parts are built at once: CLIP ViT-B's 512 in one piece; the two part
/// buffers take `2 × MAX_BATCH × DIM_CHUNK` = 32 KiB of stack.
const DIM_CHUNK: usize = 512;

/// `acc + Σ_{j<4} a[4l+j]·b[4l+j]` in each i32 lane `l` (SDOT, by element groups of 4).
///
/// # Safety
/// Needs `dotprod`, which the callers' `#[target_feature]` and `super::ops` guarantee.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut r = acc;
    // `vdotq_s32` is still unstable (stdarch_neon_dotprod); this is the same instruction.
    asm!("sdot {r:v}.4s, {a:v}.16b, {b:v}.16b", r = inout(vreg) r, a = in(vreg) a,
         b = in(vreg) b, options(pure, nomem, nostack, preserves_flags));
    r
}

/// One dim chunk of one call.
struct Chunk {
    /// int8 parts of the queries, row `b` at `b * DIM_CHUNK`, `width` values (a multiple of 16;
    /// the last `width % 16` dims are read from `values`).
    hi: *const i8,
    lo: *const i8,
    /// The i16 queries at the chunk's first dim, rows `dim` apart (for the tail dims).
    values: *const i16,
    /// The keys at the chunk's first dim, rows `dim` apart.
    keys: *const i8,
    dim: usize,
    width: usize,
    batch: usize,
    /// `Σ k` over the chunk's vector dims, per key of the tile (written by the first query block).
    key_sums: *mut i32,
    /// Exact i32 dots, key-major `[i * batch + b]`: set by the first chunk, added to after.
    dots: *mut i32,
    first: bool,
}

/// # Safety
/// Needs `neon` and `dotprod`: `super::ops` hands out this table only when
/// `is_aarch64_feature_detected!("dotprod")` holds.
#[target_feature(enable = "neon,dotprod")]
unsafe fn dots_i8(q: &QueryI16<'_>, keys: &[i8], scales: &[f32], out: &mut [f32]) {
    let (batch, dim) = (q.batch, q.dim);
    assert!(dim > 0, "key dimension is 0");
    let n = keys.len() / dim;
    assert!(
        keys.len() == n * dim
            && n <= TILE_KEYS
            && batch <= MAX_BATCH
            && q.values.len() >= batch * dim
            && q.scales.len() >= batch
            && scales.len() >= n
            && out.len() >= n * batch,
        "int8 dot-product tile: {} keys of dim {dim}, batch {batch}, {} outputs",
        keys.len() / dim,
        out.len()
    );
    // Uninitialised: every element read below was written first (parts for `batch × width`,
    // sums by the first query block of a key block, dots by the first chunk).
    let mut hi = MaybeUninit::<[i8; MAX_BATCH * DIM_CHUNK]>::uninit();
    let mut lo = MaybeUninit::<[i8; MAX_BATCH * DIM_CHUNK]>::uninit();
    let mut key_sums = MaybeUninit::<[i32; TILE_KEYS]>::uninit();
    let mut dots = MaybeUninit::<[i32; TILE_KEYS * MAX_BATCH]>::uninit();
    let (hi, lo) = (hi.as_mut_ptr().cast::<i8>(), lo.as_mut_ptr().cast::<i8>());
    let mut c0 = 0;
    while c0 < dim {
        let width = (dim - c0).min(DIM_CHUNK);
        for b in 0..batch {
            split_i16(
                q.values.as_ptr().add(b * dim + c0),
                width,
                hi.add(b * DIM_CHUNK),
                lo.add(b * DIM_CHUNK),
            );
        }
        let c = Chunk {
            hi,
            lo,
            values: q.values.as_ptr().add(c0),
            keys: keys.as_ptr().add(c0),
            dim,
            width,
            batch,
            key_sums: key_sums.as_mut_ptr().cast(),
            dots: dots.as_mut_ptr().cast(),
            first: c0 == 0,
        };
        for_each_block!(n, batch, tile(&c) { 2, 1 });
        c0 += width;
    }
    let dots: *const i32 = dots.as_ptr().cast();
    for (i, (o, ks)) in out[..n * batch]
        .chunks_exact_mut(batch)
        .zip(scales)
        .enumerate()
    {
        for (b, (v, qs)) in o.iter_mut().zip(q.scales).enumerate() {
            // As the portable kernel scales, so the two agree bit for bit.
            *v = *dots.add(i * batch + b) as f32 * (qs * ks);
        }
    }
}

/// Writes the int8 parts of `width` i16 values, 16 at a time (the `width % 16` tail is left to
/// the tiles' scalar loop).
///
/// # Safety
/// `neon`; `v` readable and `hi`, `lo` writable for `width` values.
#[inline(always)]
unsafe fn split_i16(v: *const i16, width: usize, hi: *mut i8, lo: *mut i8) {
    let bias = vdupq_n_s8(i8::MIN);
    let mut j = 0;
    while j + 16 <= width {
        let (a, b) = (vld1q_s16(v.add(j)), vld1q_s16(v.add(j + 8)));
        // shrn keeps bits 8..16 of each value: the high byte, i.e. floor(v / 256).
        let h = vcombine_s8(vshrn_n_s16::<8>(a), vshrn_n_s16::<8>(b));
        // xtn keeps the low byte; flipping its top bit subtracts 128 (mod 256) and lands in
        // −128..=127.
        let l = veorq_s8(vcombine_s8(vmovn_s16(a), vmovn_s16(b)), bias);
        vst1q_s8(hi.add(j), h);
        vst1q_s8(lo.add(j), l);
        j += 16;
    }
}

/// One register block; the first query block of each key block also sums the keys.
///
/// # Safety
/// `neon`, `dotprod`; `k0 + K ≤ n` and `q0 + Q ≤ batch`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn tile<const K: usize, const Q: usize>(c: &Chunk, k0: usize, q0: usize) {
    if q0 == 0 {
        tile_sdot::<K, Q, true>(c, k0, q0)
    } else {
        tile_sdot::<K, Q, false>(c, k0, q0)
    }
}

/// `K` keys × `Q` queries over the chunk, 16 dims per step: 2 SDOT per key and query (hi, lo)
/// with `2·K·Q` accumulators, plus `K` for the key sums when `SUM`.
///
/// # Safety
/// `neon`, `dotprod`; `k0 + K ≤ n` and `q0 + Q ≤ batch`; when `!SUM` the key sums of this key
/// block were written by its first query block in this chunk.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn tile_sdot<const K: usize, const Q: usize, const SUM: bool>(
    c: &Chunk,
    k0: usize,
    q0: usize,
) {
    let kp: [*const i8; K] = std::array::from_fn(|i| c.keys.add((k0 + i) * c.dim));
    let hp: [*const i8; Q] = std::array::from_fn(|b| c.hi.add((q0 + b) * DIM_CHUNK));
    let lp: [*const i8; Q] = std::array::from_fn(|b| c.lo.add((q0 + b) * DIM_CHUNK));
    let ones = vdupq_n_s8(1);
    let zero = vdupq_n_s32(0);
    let mut acc_hi = [[zero; Q]; K];
    let mut acc_lo = [[zero; Q]; K];
    let mut acc_sum = [zero; K];
    let mut j = 0;
    while j + 16 <= c.width {
        let kv: [int8x16_t; K] = std::array::from_fn(|i| vld1q_s8(kp[i].add(j)));
        if SUM {
            for i in 0..K {
                acc_sum[i] = sdot(acc_sum[i], kv[i], ones);
            }
        }
        for b in 0..Q {
            let (h, l) = (vld1q_s8(hp[b].add(j)), vld1q_s8(lp[b].add(j)));
            for i in 0..K {
                acc_hi[i][b] = sdot(acc_hi[i][b], kv[i], h);
                acc_lo[i][b] = sdot(acc_lo[i][b], kv[i], l);
            }
        }
        j += 16;
    }
    let tail = j;
    for i in 0..K {
        let key_sum = if SUM {
            let s = vaddvq_s32(acc_sum[i]);
            *c.key_sums.add(k0 + i) = s;
            s
        } else {
            *c.key_sums.add(k0 + i)
        };
        for b in 0..Q {
            // 256·hi + lo per lane, wrapping; then the horizontal sum, wrapping (addv is modular).
            let v = vaddq_s32(vshlq_n_s32::<8>(acc_hi[i][b]), acc_lo[i][b]);
            let d = vaddvq_s32(v)
                .wrapping_add(key_sum.wrapping_mul(128))
                .wrapping_add(neon::tail_i8(
                    kp[i].add(tail),
                    c.values.add((q0 + b) * c.dim + tail),
                    c.width - tail,
                ));
            let o = c.dots.add((k0 + i) * c.batch + q0 + b);
            *o = if c.first { d } else { (*o).wrapping_add(d) };
        }
    }
}
