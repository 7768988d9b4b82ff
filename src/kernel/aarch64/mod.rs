//! aarch64 dot-product tiles: [`neon`] for every aarch64 CPU (Cortex-A72 / Raspberry Pi 4) and
//! [`dotprod`] for CPUs with SDOT (Cortex-A76 / Pi 5, Jetson Orin's A78AE).
//!
//! Both walk a tile of keys × queries the same way (`for_each_block!`): blocks of `KR` keys
//! outside, blocks of up to `QR` queries inside, a register tile of `KR × QR` accumulators for
//! each block. A key is read from memory once per tile, the queries (at most 32 × C values,
//! re-read for every key block) stay in cache. Key blocks are 4 keys so that batch 1 still has 4
//! independent accumulator chains to hide the multiply-accumulate latency.
//!
//! Only the int8 keys differ between the two: the fp32 and fp16 tiles are plain NEON (fp16 keys
//! are widened to f32 with `fcvtl`, which every ARMv8 CPU has; the products and sums stay f32,
//! so the A76's fp16 arithmetic is not used: accumulating in fp16 would cost accuracy).
//!
//! The tables are chosen once by [`Kernel::detect`](super::Kernel::detect); nothing here checks
//! CPU features in the hot path.

mod dotprod;
mod neon;

use super::{Isa, Ops};

/// The table for `isa` if this CPU has its target features.
pub(crate) fn ops(isa: Isa) -> Option<Ops> {
    match isa {
        // NEON (Advanced SIMD) is part of the aarch64-unknown-linux-gnu baseline; the run-time
        // check keeps the table honest on a target built without it.
        Isa::Neon if std::arch::is_aarch64_feature_detected!("neon") => Some(neon::OPS),
        // The dotprod table uses SDOT (FEAT_DotProd) for int8 keys and the NEON tiles otherwise;
        // FEAT_FP16 arithmetic is not used (see the module docs), so only dotprod is required.
        Isa::NeonDotprod
            if std::arch::is_aarch64_feature_detected!("neon")
                && std::arch::is_aarch64_feature_detected!("dotprod") =>
        {
            Some(dotprod::OPS)
        }
        _ => None,
    }
}

/// Keys per register block: 4 independent accumulator chains even for one query.
const KR: usize = 4;

/// Walks `n` keys × `batch` queries in blocks: `KR` keys (then single keys) outside, and inside
/// blocks of `$full` queries, then the remainder as one block. `$tile::<K, Q>($ctx, key, query)`
/// is called for each block with its first key and first query; every remainder `1..$full`
/// must be listed in `$rest` so that each block shape is a compile-time constant (the register
/// tiles are arrays the compiler keeps in registers).
macro_rules! for_each_block {
    ($n:expr, $batch:expr, $tile:ident($ctx:expr) { $full:literal $(, $rest:literal)* }) => {{
        let (n, batch) = ($n, $batch);
        let mut k = 0;
        while k + $crate::kernel::aarch64::KR <= n {
            for_each_block!(@queries batch, k, $tile($ctx), $crate::kernel::aarch64::KR,
                            $full $(, $rest)*);
            k += $crate::kernel::aarch64::KR;
        }
        while k < n {
            for_each_block!(@queries batch, k, $tile($ctx), 1, $full $(, $rest)*);
            k += 1;
        }
    }};
    (@queries $batch:expr, $k:expr, $tile:ident($ctx:expr), $kr:expr,
     $full:literal $(, $rest:literal)*) => {{
        let mut q = 0;
        while q + $full <= $batch {
            $tile::<{ $kr }, $full>($ctx, $k, q);
            q += $full;
        }
        match $batch - q {
            $($rest => $tile::<{ $kr }, $rest>($ctx, $k, q),)*
            _ => {}
        }
    }};
}
use for_each_block;

#[cfg(test)]
mod tests {
    use super::super::{quantize_queries_i16, scalar, QueryI16};
    use super::*;
    use half::f16;

    /// Small deterministic generator: the unit tests must not depend on the machine.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as u32
        }
        fn f32(&mut self) -> f32 {
            self.next() as f32 / (1u64 << 31) as f32 * 2.0 - 1.0
        }
    }

    fn tables() -> Vec<(Isa, Ops)> {
        [Isa::Neon, Isa::NeonDotprod]
            .into_iter()
            .filter_map(|i| ops(i).map(|o| (i, o)))
            .collect()
    }

    /// Every tile shape the block walk produces (keys 0..=9 cover full blocks and 1..3 single
    /// keys; batch 1..=9 covers every query remainder), against the portable table.
    #[test]
    fn every_block_shape_matches_the_portable_kernel() {
        let mut rng = Lcg(7);
        for (isa, o) in tables() {
            for &dim in &[1usize, 3, 4, 7, 8, 15, 16, 17, 31, 33, 64, 129] {
                for n in 0..=9 {
                    for batch in 1..=9 {
                        let q: Vec<f32> = (0..batch * dim).map(|_| rng.f32()).collect();
                        let k: Vec<f32> = (0..n * dim).map(|_| rng.f32()).collect();
                        let k16: Vec<f16> = k.iter().map(|&x| f16::from_f32(x)).collect();
                        let k8: Vec<i8> = (0..n * dim).map(|_| rng.next() as i8).collect();
                        let ks: Vec<f32> = (0..n).map(|_| rng.f32().abs() / 127.0).collect();
                        let mut qv = vec![0i16; batch * dim];
                        let mut qs = vec![0f32; batch];
                        quantize_queries_i16(&q, dim, &mut qv, &mut qs);
                        let q16 = QueryI16 {
                            batch,
                            dim,
                            values: &qv,
                            scales: &qs,
                        };
                        let (mut want, mut got) = (vec![0f32; n * batch], vec![0f32; n * batch]);
                        // SAFETY: `tables` only returns tables whose features were detected.
                        unsafe {
                            (scalar::OPS.dots_f32)(&q, batch, dim, &k, &mut want);
                            (o.dots_f32)(&q, batch, dim, &k, &mut got);
                            close(&want, &got, dim, isa, "f32");
                            (scalar::OPS.dots_f16)(&q, batch, dim, &k16, &mut want);
                            (o.dots_f16)(&q, batch, dim, &k16, &mut got);
                            close(&want, &got, dim, isa, "f16");
                            // The integer dot is exact in both, and both scale it the same way.
                            (scalar::OPS.dots_i8)(&q16, &k8, &ks, &mut want);
                            (o.dots_i8)(&q16, &k8, &ks, &mut got);
                            assert_eq!(want, got, "{isa} int8 dim {dim} n {n} batch {batch}");
                        }
                    }
                }
            }
        }
    }

    fn close(want: &[f32], got: &[f32], dim: usize, isa: Isa, what: &str) {
        for (w, g) in want.iter().zip(got) {
            // |q|,|k| ≤ 1 per element: the sums differ only in rounding order.
            let tol = 4.0 * f32::EPSILON * dim as f32;
            assert!((w - g).abs() <= tol, "{isa} {what} dim {dim}: {w} vs {g}");
        }
    }

    /// The largest sums the i16 query allows (`C · q_max · 128` just under `i32::MAX`): every
    /// query value at ±q_max and every key value at −128, so the SDOT split's `256·hi` partial
    /// sums wrap while the total must come out exact.
    #[test]
    fn int8_extremes_are_exact() {
        for (isa, o) in tables() {
            for &dim in &[1usize, 16, 511, 512, 513, 514, 600, 1000, 2048] {
                let qmax = super::super::query_i16_max(dim) as i16;
                for &sign in &[1i16, -1] {
                    let batch = 3;
                    let qv: Vec<i16> = (0..batch * dim)
                        .map(|j| {
                            if j % 7 == 3 {
                                -sign * qmax
                            } else {
                                sign * qmax
                            }
                        })
                        .collect();
                    let qs = vec![1.0f32; batch];
                    let q16 = QueryI16 {
                        batch,
                        dim,
                        values: &qv,
                        scales: &qs,
                    };
                    let n = 5;
                    let k8 = vec![-128i8; n * dim];
                    let ks = vec![1.0f32; n];
                    let (mut want, mut got) = (vec![0f32; n * batch], vec![0f32; n * batch]);
                    // SAFETY: `tables` only returns tables whose features were detected.
                    unsafe {
                        (scalar::OPS.dots_i8)(&q16, &k8, &ks, &mut want);
                        (o.dots_i8)(&q16, &k8, &ks, &mut got);
                    }
                    let exact: i64 = (0..dim).map(|j| qv[j] as i64 * -128).sum();
                    assert_eq!(want[0], exact as f32, "{isa} scalar dim {dim}");
                    assert_eq!(want, got, "{isa} int8 extremes dim {dim}");
                }
            }
        }
    }
}
