//! Baseline NEON tiles (every aarch64 CPU; what the Raspberry Pi 4's Cortex-A72 runs).
//!
//! - f32 keys: `fmla` (`vfmaq_f32`), 4 values per instruction.
//! - fp16 keys: `fcvtl`/`fcvtl2` widen 8 key values to two f32 vectors once per key, then `fmla`
//!   with each query. The conversion is base ARMv8 SIMD (not FEAT_FP16), so the A72 has it.
//! - int8 keys × i16 queries ([`QueryI16`]): `sxtl`/`sxtl2` widen 16 key values to i16 once per
//!   key, then `smlal`/`smlal2` multiply-accumulate into i32 lanes, 4 products per instruction.
//!   The alternative, `smull` + `add` (or `sadalp`), takes two instructions per 4 products; an
//!   i8 × i8 `smull` (8 per instruction) would need the query in int8, i.e. split in two parts
//!   as `dotprod.rs` does, plus `sadalp` to keep i16 sums from overflowing: no fewer multiplies.
//!   llvm-mca (`cross/mca/`) puts the 4-key × 1-query loop at one `smlal` per cycle on the
//!   Cortex-A72 (its one integer-multiply pipe): 129 cycles per 512-byte key, under the 155–232
//!   cycles the Pi 4's DRAM takes to deliver it. The i32 lanes cannot overflow: each holds a
//!   partial sum of `|q·k| ≤ q_max · 128`, and `C · q_max · 128 ≤ i32::MAX` by choice of `q_max`.
//!
//! Every function here uses only Advanced SIMD (`neon`), which is part of the
//! aarch64-unknown-linux-gnu baseline and is also checked at run time by `super::ops`.

use std::arch::aarch64::*;
use std::arch::asm;

use half::f16;

use super::for_each_block;
use crate::kernel::{Ops, QueryI16};

pub(super) const OPS: Ops = Ops {
    dots_f32,
    dots_f16,
    dots_i8,
    // One tile at a time.
    streams: None,
};

/// The operands of one call, shared by its register tiles. Rows are `dim` values apart; `out` is
/// key-major (`out[i * batch + b]`).
struct Tile<Q, K> {
    queries: *const Q,
    keys: *const K,
    dim: usize,
    batch: usize,
    out: *mut f32,
}

/// Checks the slice lengths of one call against the [`Ops`] contract and returns the key count.
fn keys_in_tile(q_len: usize, batch: usize, dim: usize, keys_len: usize, out_len: usize) -> usize {
    assert!(dim > 0, "key dimension is 0");
    let n = keys_len / dim;
    assert!(
        keys_len == n * dim && q_len >= batch * dim && out_len >= n * batch,
        "dot-product tile: {keys_len} key values, {q_len} query values, {out_len} outputs \
         do not fit dim {dim}, batch {batch}"
    );
    n
}

// ---------------------------------------------------------------------------------------------
// f32 keys

/// # Safety
/// Needs `neon` (aarch64 baseline; `super::ops` confirms it before handing out this table).
#[target_feature(enable = "neon")]
pub(super) unsafe fn dots_f32(q: &[f32], batch: usize, dim: usize, keys: &[f32], out: &mut [f32]) {
    let n = keys_in_tile(q.len(), batch, dim, keys.len(), out.len());
    let t = Tile {
        queries: q.as_ptr(),
        keys: keys.as_ptr(),
        dim,
        batch,
        out: out.as_mut_ptr(),
    };
    for_each_block!(n, batch, tile_f32(&t) { 4, 1, 2, 3 });
}

/// `K` keys from `k0` × `Q` queries from `q0`, 4 dims per step, `K × Q` accumulators.
///
/// # Safety
/// `neon`; `k0 + K ≤ n` and `q0 + Q ≤ batch` for the rows `t` points at.
#[inline(always)]
unsafe fn tile_f32<const K: usize, const Q: usize>(t: &Tile<f32, f32>, k0: usize, q0: usize) {
    let dim = t.dim;
    let kp: [*const f32; K] = std::array::from_fn(|i| t.keys.add((k0 + i) * dim));
    let qp: [*const f32; Q] = std::array::from_fn(|b| t.queries.add((q0 + b) * dim));
    let mut acc = [[vdupq_n_f32(0.0); Q]; K];
    let mut j = 0;
    while j + 4 <= dim {
        let kv: [float32x4_t; K] = std::array::from_fn(|i| vld1q_f32(kp[i].add(j)));
        for b in 0..Q {
            let qv = vld1q_f32(qp[b].add(j));
            for i in 0..K {
                acc[i][b] = vfmaq_f32(acc[i][b], kv[i], qv);
            }
        }
        j += 4;
    }
    for i in 0..K {
        for b in 0..Q {
            let s = vaddvq_f32(acc[i][b]) + tail_f32(kp[i].add(j), qp[b].add(j), dim - j);
            *t.out.add((k0 + i) * t.batch + q0 + b) = s;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// fp16 keys

/// # Safety
/// Needs `neon` (aarch64 baseline; `super::ops` confirms it before handing out this table).
#[target_feature(enable = "neon")]
pub(super) unsafe fn dots_f16(q: &[f32], batch: usize, dim: usize, keys: &[f16], out: &mut [f32]) {
    let n = keys_in_tile(q.len(), batch, dim, keys.len(), out.len());
    let t = Tile {
        queries: q.as_ptr(),
        // `half::f16` is `repr(transparent)` over the IEEE binary16 bits.
        keys: keys.as_ptr().cast::<u16>(),
        dim,
        batch,
        out: out.as_mut_ptr(),
    };
    for_each_block!(n, batch, tile_f16(&t) { 4, 1, 2, 3 });
}

/// Lanes 0..4 of 8 binary16 values, widened to f32 (`fcvtl`: exact, base ARMv8 SIMD).
#[inline(always)]
unsafe fn f16_low_to_f32(v: uint16x8_t) -> float32x4_t {
    let r: float32x4_t;
    // The intrinsic `vcvt_f32_f16` needs the unstable `f16` vector types; the instruction is the
    // same.
    asm!("fcvtl {r:v}.4s, {v:v}.4h", v = in(vreg) v, r = lateout(vreg) r,
         options(pure, nomem, nostack, preserves_flags));
    r
}

/// Lanes 4..8 of 8 binary16 values, widened to f32 (`fcvtl2`).
#[inline(always)]
unsafe fn f16_high_to_f32(v: uint16x8_t) -> float32x4_t {
    let r: float32x4_t;
    asm!("fcvtl2 {r:v}.4s, {v:v}.8h", v = in(vreg) v, r = lateout(vreg) r,
         options(pure, nomem, nostack, preserves_flags));
    r
}

/// Like [`tile_f32`], 8 dims per step: each key's 8 values are widened once for all `Q` queries.
///
/// # Safety
/// `neon`; `k0 + K ≤ n` and `q0 + Q ≤ batch` for the rows `t` points at.
#[inline(always)]
unsafe fn tile_f16<const K: usize, const Q: usize>(t: &Tile<f32, u16>, k0: usize, q0: usize) {
    let dim = t.dim;
    let kp: [*const u16; K] = std::array::from_fn(|i| t.keys.add((k0 + i) * dim));
    let qp: [*const f32; Q] = std::array::from_fn(|b| t.queries.add((q0 + b) * dim));
    let mut acc = [[vdupq_n_f32(0.0); Q]; K];
    let mut j = 0;
    while j + 8 <= dim {
        let kv: [(float32x4_t, float32x4_t); K] = std::array::from_fn(|i| {
            let h = vld1q_u16(kp[i].add(j));
            (f16_low_to_f32(h), f16_high_to_f32(h))
        });
        for b in 0..Q {
            let (q0v, q1v) = (vld1q_f32(qp[b].add(j)), vld1q_f32(qp[b].add(j + 4)));
            for i in 0..K {
                acc[i][b] = vfmaq_f32(acc[i][b], kv[i].0, q0v);
                acc[i][b] = vfmaq_f32(acc[i][b], kv[i].1, q1v);
            }
        }
        j += 8;
    }
    if j + 4 <= dim {
        let kv: [float32x4_t; K] = std::array::from_fn(|i| {
            // 4 values in the low half; the high half is never converted.
            f16_low_to_f32(vcombine_u16(vld1_u16(kp[i].add(j)), vdup_n_u16(0)))
        });
        for b in 0..Q {
            let qv = vld1q_f32(qp[b].add(j));
            for i in 0..K {
                acc[i][b] = vfmaq_f32(acc[i][b], kv[i], qv);
            }
        }
        j += 4;
    }
    for i in 0..K {
        for b in 0..Q {
            let s = vaddvq_f32(acc[i][b]) + tail_f16(kp[i].add(j), qp[b].add(j), dim - j);
            *t.out.add((k0 + i) * t.batch + q0 + b) = s;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// int8 keys, i16 queries

/// # Safety
/// Needs `neon` (aarch64 baseline; `super::ops` confirms it before handing out this table).
#[target_feature(enable = "neon")]
pub(super) unsafe fn dots_i8(q: &QueryI16<'_>, keys: &[i8], scales: &[f32], out: &mut [f32]) {
    let (batch, dim) = (q.batch, q.dim);
    let n = keys_in_tile(q.values.len(), batch, dim, keys.len(), out.len());
    assert!(scales.len() >= n && q.scales.len() >= batch);
    let t = TileI8 {
        t: Tile {
            queries: q.values.as_ptr(),
            keys: keys.as_ptr(),
            dim,
            batch,
            out: out.as_mut_ptr(),
        },
        query_scales: q.scales.as_ptr(),
        key_scales: scales.as_ptr(),
    };
    for_each_block!(n, batch, tile_i8(&t) { 4, 1, 2, 3 });
}

/// An int8 call: the integer operands and the scales that turn an exact i32 dot into `q·k`.
struct TileI8 {
    t: Tile<i16, i8>,
    query_scales: *const f32,
    key_scales: *const f32,
}

/// Integer dots of `K` keys × `Q` queries, 16 dims per step, then scaled exactly as the portable
/// kernel scales them (`dot as f32 * (q_scale * k_scale)`), so the two agree bit for bit.
///
/// # Safety
/// `neon`; `k0 + K ≤ n` and `q0 + Q ≤ batch` for the rows `t` points at.
#[inline(always)]
unsafe fn tile_i8<const K: usize, const Q: usize>(ti: &TileI8, k0: usize, q0: usize) {
    let t = &ti.t;
    let dim = t.dim;
    let kp: [*const i8; K] = std::array::from_fn(|i| t.keys.add((k0 + i) * dim));
    let qp: [*const i16; Q] = std::array::from_fn(|b| t.queries.add((q0 + b) * dim));
    let mut acc = [[vdupq_n_s32(0); Q]; K];
    let mut j = 0;
    while j + 16 <= dim {
        let kv: [(int16x8_t, int16x8_t); K] = std::array::from_fn(|i| {
            let r = vld1q_s8(kp[i].add(j));
            (vmovl_s8(vget_low_s8(r)), vmovl_high_s8(r))
        });
        for b in 0..Q {
            let (qa, qb) = (vld1q_s16(qp[b].add(j)), vld1q_s16(qp[b].add(j + 8)));
            for i in 0..K {
                let mut a = acc[i][b];
                a = vmlal_s16(a, vget_low_s16(kv[i].0), vget_low_s16(qa));
                a = vmlal_high_s16(a, kv[i].0, qa);
                a = vmlal_s16(a, vget_low_s16(kv[i].1), vget_low_s16(qb));
                a = vmlal_high_s16(a, kv[i].1, qb);
                acc[i][b] = a;
            }
        }
        j += 16;
    }
    if j + 8 <= dim {
        let kv: [int16x8_t; K] = std::array::from_fn(|i| vmovl_s8(vld1_s8(kp[i].add(j))));
        for b in 0..Q {
            let qa = vld1q_s16(qp[b].add(j));
            for i in 0..K {
                acc[i][b] = vmlal_s16(acc[i][b], vget_low_s16(kv[i]), vget_low_s16(qa));
                acc[i][b] = vmlal_high_s16(acc[i][b], kv[i], qa);
            }
        }
        j += 8;
    }
    for i in 0..K {
        for b in 0..Q {
            let s = vaddvq_s32(acc[i][b]) + tail_i8(kp[i].add(j), qp[b].add(j), dim - j);
            let scale = *ti.query_scales.add(q0 + b) * *ti.key_scales.add(k0 + i);
            *t.out.add((k0 + i) * t.batch + q0 + b) = s as f32 * scale;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tails: the last few dims of a row (fewer than one step), scalar. Out of line because inlined
// into every register tile the compiler would vectorise each copy of what are at most 15
// iterations.

/// `Σ k[j]·q[j]` over `len` values.
///
/// # Safety
/// `k` and `q` readable for `len` values.
#[inline(never)]
unsafe fn tail_f32(k: *const f32, q: *const f32, len: usize) -> f32 {
    let mut s = 0.0;
    for j in 0..len {
        s += *k.add(j) * *q.add(j);
    }
    s
}

/// `Σ k[j]·q[j]` over `len` values with binary16 keys.
///
/// # Safety
/// `k` and `q` readable for `len` values.
#[inline(never)]
unsafe fn tail_f16(k: *const u16, q: *const f32, len: usize) -> f32 {
    let mut s = 0.0;
    for j in 0..len {
        s += f16::from_bits(*k.add(j)).to_f32() * *q.add(j);
    }
    s
}

/// `Σ k[j]·q[j]` over `len` values, exact in i32 (`len · 127 · 32768` is far below `i32::MAX` for
/// the tails it serves).
///
/// # Safety
/// `k` and `q` readable for `len` values.
#[inline(never)]
pub(super) unsafe fn tail_i8(k: *const i8, q: *const i16, len: usize) -> i32 {
    let mut s = 0i32;
    for j in 0..len {
        s += *k.add(j) as i32 * *q.add(j) as i32;
    }
    s
}
