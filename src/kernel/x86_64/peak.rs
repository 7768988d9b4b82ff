//! The compute floor of the tiles: how many multiply-accumulates per nanosecond one core retires
//! with the instruction each kernel's inner loop is built on, measured with a loop of twelve
//! independent instructions on zeroed registers (inline assembly, so the compiler can neither hoist
//! nor fuse them; zeros, so no float assist slows them):
//!
//! | kernel | int8 keys | float keys |
//! |---|---|---|
//! | AVX2 | `vpmaddwd` + `vpaddd` ymm: 16 MACs per pair | `vfmadd231ps` ymm: 8 |
//! | AVX-512 VNNI | `vpdpwssd` zmm: 32 MACs | `vfmadd231ps` zmm: 16 |
//!
//! `dim / rate` is then the least time one query can take over one key: the kernel also widens
//! the keys (`vpmovsxbw`, `vcvtph2ps`), loads the queries and reduces the sums, so it cannot
//! reach it, but at batch 16 it shows how much arithmetic is left to save.

use core::arch::asm;
use std::time::Instant;

use crate::kernel::Isa;

/// Loop iterations per timed run: 12 instructions each, a few milliseconds.
const ITERS: u64 = 200_000;

/// MACs per nanosecond of `isa`'s int8 (`float == false`) or float dot-product instruction on
/// this core: the median of seven runs after one warm-up. `None` when the CPU lacks `isa`.
pub(crate) fn macs_per_ns(isa: Isa, float: bool) -> Option<f64> {
    let (run, macs): (unsafe fn(u64), f64) = match (isa, float) {
        (Isa::Avx2, false) if super::avx2::is_available() => (avx2_int, 6.0 * 16.0),
        (Isa::Avx2, true) if super::avx2::is_available() => (avx2_float, 12.0 * 8.0),
        (Isa::Avx512Vnni, false) if super::avx512::is_available() => (vnni_int, 12.0 * 32.0),
        (Isa::Avx512Vnni, true) if super::avx512::is_available() => (avx512_float, 12.0 * 16.0),
        _ => return None,
    };
    let mut ns: Vec<f64> = (0..8)
        .map(|_| {
            let t = Instant::now();
            // SAFETY: the features `run` is compiled for were detected above; it touches only
            // the registers it declares.
            unsafe { run(ITERS) };
            t.elapsed().as_nanos() as f64
        })
        .skip(1)
        .collect();
    ns.sort_by(|a, b| a.total_cmp(b));
    Some(macs * ITERS as f64 / ns[ns.len() / 2])
}

/// One probe: `$zero` clears every register in `$regs` (no float assist from whatever they held),
/// then the loop runs the `$body` instructions `iters` times. Every register is declared clobbered.
macro_rules! probe {
    ($(#[$doc:meta])* $name:ident, $features:literal, $zero:literal, [$($reg:tt),* $(,)?],
     [$($body:expr),* $(,)?]) => {
        $(#[$doc])*
        #[target_feature(enable = $features)]
        unsafe fn $name(iters: u64) {
            asm!(
                $(concat!($zero, " ", $reg, ", ", $reg, ", ", $reg),)*
                "2:",
                $($body,)*
                "dec {n}",
                "jnz 2b",
                n = inout(reg) iters => _,
                $(out($reg) _,)*
                options(nostack, nomem),
            );
        }
    };
}

probe!(
    /// Twelve `vpdpwssd` (16 i32 lanes × 2 MACs), twelve accumulator chains: enough to cover the
    /// instruction's latency on two ports.
    vnni_int, "avx512f,avx512bw,avx512vnni", "vpxord",
    [
        "zmm0", "zmm1", "zmm2", "zmm3", "zmm4", "zmm5", "zmm6",
        "zmm7", "zmm8", "zmm9", "zmm10", "zmm11", "zmm30", "zmm31",
    ],
    [
        "vpdpwssd zmm0, zmm30, zmm31", "vpdpwssd zmm1, zmm30, zmm31",
        "vpdpwssd zmm2, zmm30, zmm31", "vpdpwssd zmm3, zmm30, zmm31",
        "vpdpwssd zmm4, zmm30, zmm31", "vpdpwssd zmm5, zmm30, zmm31",
        "vpdpwssd zmm6, zmm30, zmm31", "vpdpwssd zmm7, zmm30, zmm31",
        "vpdpwssd zmm8, zmm30, zmm31", "vpdpwssd zmm9, zmm30, zmm31",
        "vpdpwssd zmm10, zmm30, zmm31", "vpdpwssd zmm11, zmm30, zmm31",
    ]
);

probe!(
    /// Twelve `vfmadd231ps` zmm (16 MACs each), twelve chains.
    avx512_float, "avx512f", "vpxord",
    [
        "zmm0", "zmm1", "zmm2", "zmm3", "zmm4", "zmm5", "zmm6",
        "zmm7", "zmm8", "zmm9", "zmm10", "zmm11", "zmm30", "zmm31",
    ],
    [
        "vfmadd231ps zmm0, zmm30, zmm31", "vfmadd231ps zmm1, zmm30, zmm31",
        "vfmadd231ps zmm2, zmm30, zmm31", "vfmadd231ps zmm3, zmm30, zmm31",
        "vfmadd231ps zmm4, zmm30, zmm31", "vfmadd231ps zmm5, zmm30, zmm31",
        "vfmadd231ps zmm6, zmm30, zmm31", "vfmadd231ps zmm7, zmm30, zmm31",
        "vfmadd231ps zmm8, zmm30, zmm31", "vfmadd231ps zmm9, zmm30, zmm31",
        "vfmadd231ps zmm10, zmm30, zmm31", "vfmadd231ps zmm11, zmm30, zmm31",
    ]
);

probe!(
    /// Six `vpmaddwd` + `vpaddd` pairs (8 i32 lanes × 2 MACs per pair): the AVX2 tile's int8 step.
    avx2_int, "avx2", "vpxor",
    [
        "ymm0", "ymm1", "ymm2", "ymm3", "ymm4", "ymm5", "ymm6",
        "ymm7", "ymm8", "ymm9", "ymm10", "ymm11", "ymm14", "ymm15",
    ],
    [
        "vpmaddwd ymm6, ymm14, ymm15", "vpaddd ymm0, ymm0, ymm6",
        "vpmaddwd ymm7, ymm14, ymm15", "vpaddd ymm1, ymm1, ymm7",
        "vpmaddwd ymm8, ymm14, ymm15", "vpaddd ymm2, ymm2, ymm8",
        "vpmaddwd ymm9, ymm14, ymm15", "vpaddd ymm3, ymm3, ymm9",
        "vpmaddwd ymm10, ymm14, ymm15", "vpaddd ymm4, ymm4, ymm10",
        "vpmaddwd ymm11, ymm14, ymm15", "vpaddd ymm5, ymm5, ymm11",
    ]
);

probe!(
    /// Twelve `vfmadd231ps` ymm (8 MACs each), twelve chains.
    avx2_float, "avx2,fma", "vpxor",
    [
        "ymm0", "ymm1", "ymm2", "ymm3", "ymm4", "ymm5", "ymm6",
        "ymm7", "ymm8", "ymm9", "ymm10", "ymm11", "ymm14", "ymm15",
    ],
    [
        "vfmadd231ps ymm0, ymm14, ymm15", "vfmadd231ps ymm1, ymm14, ymm15",
        "vfmadd231ps ymm2, ymm14, ymm15", "vfmadd231ps ymm3, ymm14, ymm15",
        "vfmadd231ps ymm4, ymm14, ymm15", "vfmadd231ps ymm5, ymm14, ymm15",
        "vfmadd231ps ymm6, ymm14, ymm15", "vfmadd231ps ymm7, ymm14, ymm15",
        "vfmadd231ps ymm8, ymm14, ymm15", "vfmadd231ps ymm9, ymm14, ymm15",
        "vfmadd231ps ymm10, ymm14, ymm15", "vfmadd231ps ymm11, ymm14, ymm15",
    ]
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_positive_where_the_isa_exists_and_absent_elsewhere() {
        for isa in [Isa::Avx2, Isa::Avx512Vnni] {
            let has = super::super::ops(isa).is_some();
            for float in [false, true] {
                match macs_per_ns(isa, float) {
                    Some(r) => assert!(has && r.is_finite() && r > 0.0, "{isa} {float}: {r}"),
                    None => assert!(!has, "{isa} is available but has no rate"),
                }
            }
        }
    }
}
