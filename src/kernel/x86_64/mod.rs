//! x86_64 kernels: AVX2 + FMA + F16C ([`avx2`]) and AVX-512 with VNNI ([`avx512`]), both
//! instantiations of the tiles in [`generic`]. The choice is made once by `Kernel::detect`;
//! [`ops`] only hands out a table after run-time detection of every feature it was compiled for.

mod avx2;
mod avx512;
mod generic;
mod peak;

pub(crate) use peak::macs_per_ns;

use super::{Isa, Ops};

/// The dot-product table for `isa`, if this CPU supports it.
pub(crate) fn ops(isa: Isa) -> Option<Ops> {
    match isa {
        Isa::Avx2 if avx2::is_available() => Some(avx2::OPS),
        Isa::Avx512Vnni if avx512::is_available() => Some(avx512::OPS),
        _ => None,
    }
}

/// The affinity pass (`exp`) compiled for `isa`'s vector width, if this CPU supports it.
pub(crate) fn affinity(isa: Isa) -> Option<unsafe fn(&mut [f32], f32)> {
    match isa {
        Isa::Avx2 if avx2::is_available() => Some(avx2::affinity_in_place),
        Isa::Avx512Vnni if avx512::is_available() => Some(avx512::affinity_in_place),
        _ => None,
    }
}

/// Sums `bytes` with the widest loads available (256-bit; more does not read DRAM faster):
/// the read-bandwidth probe of the benchmark.
pub(crate) fn stream_sum(bytes: &[u8]) -> Option<u64> {
    if avx2::is_available() {
        // SAFETY: AVX2 was just detected.
        Some(unsafe { avx2::stream_sum(bytes) })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    //! The AVX-512 instantiation cannot run on a CPU without AVX-512 (nor under qemu-user, which
    //! has no AVX-512). What can be checked anywhere with AVX2 is everything but its one-line
    //! intrinsic wrappers: the tiles at its widths (16 f32 lanes, 32 int8 lanes), its shapes
    //! (4 × 4, 8 × 1) and its tails, run here over a 512-bit "vector" made of two AVX2 halves.

    use core::arch::x86_64::*;

    use half::f16;

    use super::avx2::Avx2;
    use super::generic::{self, Vector};
    use crate::kernel::{exp, Isa, Kernel, KeyData, Keys, Scratch};

    #[derive(Clone, Copy)]
    struct TwoAvx2;

    impl Vector for TwoAvx2 {
        type F = [__m256; 2];
        type I = [__m256i; 2];
        const F_LANES: usize = 16;
        const I_LANES: usize = 32;

        #[inline(always)]
        unsafe fn f_zero() -> Self::F {
            [Avx2::f_zero(); 2]
        }
        #[inline(always)]
        unsafe fn f_load(p: *const f32) -> Self::F {
            [Avx2::f_load(p), Avx2::f_load(p.add(8))]
        }
        #[inline(always)]
        unsafe fn f_load_f16(p: *const f16) -> Self::F {
            [Avx2::f_load_f16(p), Avx2::f_load_f16(p.add(8))]
        }
        #[inline(always)]
        unsafe fn f_fma(a: Self::F, b: Self::F, acc: Self::F) -> Self::F {
            [
                Avx2::f_fma(a[0], b[0], acc[0]),
                Avx2::f_fma(a[1], b[1], acc[1]),
            ]
        }
        #[inline(always)]
        unsafe fn f_sum4(v: [Self::F; 4]) -> [f32; 4] {
            let lo = Avx2::f_sum4([v[0][0], v[1][0], v[2][0], v[3][0]]);
            let hi = Avx2::f_sum4([v[0][1], v[1][1], v[2][1], v[3][1]]);
            core::array::from_fn(|i| lo[i] + hi[i])
        }
        #[inline(always)]
        unsafe fn i_zero() -> Self::I {
            [Avx2::i_zero(); 2]
        }
        #[inline(always)]
        unsafe fn i_load_i16(p: *const i16) -> Self::I {
            [Avx2::i_load_i16(p), Avx2::i_load_i16(p.add(16))]
        }
        #[inline(always)]
        unsafe fn i_load_i8(p: *const i8) -> Self::I {
            [Avx2::i_load_i8(p), Avx2::i_load_i8(p.add(16))]
        }
        #[inline(always)]
        unsafe fn i_dot_acc(a: Self::I, b: Self::I, acc: Self::I) -> Self::I {
            [
                Avx2::i_dot_acc(a[0], b[0], acc[0]),
                Avx2::i_dot_acc(a[1], b[1], acc[1]),
            ]
        }
        #[inline(always)]
        unsafe fn i_sum4(v: [Self::I; 4]) -> [i32; 4] {
            let lo = Avx2::i_sum4([v[0][0], v[1][0], v[2][0], v[3][0]]);
            let hi = Avx2::i_sum4([v[0][1], v[1][1], v[2][1], v[3][1]]);
            core::array::from_fn(|i| lo[i].wrapping_add(hi[i]))
        }
    }

    #[test]
    fn avx512_tiles_at_512_bit_widths_match_the_scalar_kernel() {
        if !super::avx2::is_available() {
            return;
        }
        // Only reachable with AVX2 + FMA + F16C detected, which is all these functions use.
        let wide = Kernel {
            isa: Isa::Avx512Vnni,
            ops: generic::ops_table!(TwoAvx2, "avx2,fma,f16c", float: (4, 4, 8), int8: (4, 4, 8)),
            affinity: exp::affinity_in_place,
        };
        let scalar = Kernel::scalar();
        let mut state = 0x1234_5678_9abc_def1u64;
        let mut rnd = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        for dim in [1, 15, 16, 17, 31, 32, 33, 47, 64, 65, 100, 512] {
            for n in [0, 1, 3, 4, 5, 8, 9, 17, 64, 65, 130] {
                for batch in [1, 3, 4, 5, 8, 9, 16, 32] {
                    let mut keys: Vec<f32> = (0..n * dim).map(|_| rnd()).collect();
                    crate::kernel::l2_normalize_rows(&mut keys, dim);
                    let mut queries: Vec<f32> = (0..batch * dim).map(|_| rnd()).collect();
                    crate::kernel::l2_normalize_rows(&mut queries, dim);
                    let halves: Vec<f16> = keys.iter().map(|&x| f16::from_f32(x)).collect();
                    let mut values = vec![0i8; n * dim];
                    let scales: Vec<f32> = keys
                        .chunks_exact(dim)
                        .zip(values.chunks_exact_mut(dim))
                        .map(|(k, q)| crate::kernel::quantize_key_i8(k, q))
                        .collect();
                    let offsets = [0, (n / 3) as u32, n as u32];
                    for data in [
                        KeyData::F32(&keys),
                        KeyData::F16(&halves),
                        KeyData::I8 {
                            values: &values,
                            scales: &scales,
                        },
                    ] {
                        let keys = Keys::new(dim, data, &offsets).unwrap();
                        let mut scratch = Scratch::new(dim);
                        let (mut a, mut b) = (vec![0f32; batch * n], vec![0f32; batch * n]);
                        wide.similarities(&queries, &keys, &mut scratch, &mut a)
                            .unwrap();
                        scalar
                            .similarities(&queries, &keys, &mut scratch, &mut b)
                            .unwrap();
                        for (x, y) in a.iter().zip(&b) {
                            let tol = if matches!(data, KeyData::I8 { .. }) {
                                0.0 // exact integer sums, same scaling expression
                            } else {
                                2e-6
                            };
                            assert!(
                                (x - y).abs() <= tol,
                                "{:?} dim {dim} n {n} batch {batch}: {x} vs {y}",
                                keys.dtype()
                            );
                        }
                        let (mut a, mut b) = (vec![0f32; batch * 2], vec![0f32; batch * 2]);
                        wide.class_affinity(&queries, &keys, 4.0, &mut scratch, &mut a)
                            .unwrap();
                        scalar
                            .class_affinity(&queries, &keys, 4.0, &mut scratch, &mut b)
                            .unwrap();
                        for (x, y) in a.iter().zip(&b) {
                            assert!((x - y).abs() <= 1e-5 * y.abs().max(1e-3));
                        }
                    }
                }
            }
        }
    }
}
