//! Dispatch: the table of ISA-specific dot products ([`Ops`], [`StreamOps`]), the ISAs this build
//! knows ([`Isa`]), and [`Kernel`], which holds the table of one ISA the CPU was found to support.

use half::f16;
use std::fmt;
use std::sync::OnceLock;

#[cfg(target_arch = "aarch64")]
use super::aarch64;
#[cfg(target_arch = "x86_64")]
use super::x86_64;
use super::{exp, scalar, QueryI16};

/// The ISA-specific part: dot products of a batch of queries with a tile of at most
/// [`TILE_KEYS`](super::TILE_KEYS) keys. Every function writes `out[i * batch + b] = q_b · k_i`
/// (key-major) for the `n = keys.len() / dim` keys of the tile, scales applied for int8.
///
/// Safety contract of each pointer: callable only when the CPU has the target features of the
/// ISA it was compiled for; [`Kernel`] only holds the table of a detected ISA.
#[derive(Clone, Copy)]
pub(crate) struct Ops {
    pub dots_f32: unsafe fn(q: &[f32], batch: usize, dim: usize, keys: &[f32], out: &mut [f32]),
    pub dots_f16: unsafe fn(q: &[f32], batch: usize, dim: usize, keys: &[f16], out: &mut [f32]),
    pub dots_i8: unsafe fn(q: &QueryI16<'_>, keys: &[i8], scales: &[f32], out: &mut [f32]),
    /// Reading several parts of the keys side by side, for batches of at most
    /// [`STREAMS_MAX_BATCH`] queries; `None` where the ISA reads one tile at a time.
    pub streams: Option<StreamOps>,
}

/// Runs of keys read side by side: [`STREAMS`] runs of `len` keys, run `s` starting at key
/// `first + s·step` of the slice.
///
/// A single query does so little arithmetic per key byte that it is bound by how many cache
/// lines one core keeps in flight. One sequential stream leaves that short of the core's limit:
/// on this project's Zen 3 test host a plain AVX2 sum over 64 MiB reads 12–15 GB/s from one
/// stream and 17–24 GB/s from four far-apart ones (2 streams: ~15, 8: ~16), the hardware
/// prefetchers following each stream on its own. So small batches read the keys as four
/// streams, one quarter of the keys each: 1.4× (int8) to 1.6× (fp16) faster from DRAM than
/// key after key (measured in alternating runs of `cargo bench --bench kernel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Streams {
    pub first: usize,
    pub step: usize,
    pub len: usize,
}

/// Streams read side by side (see [`Streams`]).
pub(crate) const STREAMS: usize = 4;

/// Batches of at most this many queries read the keys as [`Streams`] (where the ISA can); larger
/// batches are bound by arithmetic, not by memory.
pub(crate) const STREAMS_MAX_BATCH: usize = 3;

/// The [`Streams`] counterparts of the [`Ops`] functions: the same dot products for the keys of
/// `streams`, written run after run (`out[(s·len + i)·batch + b]` for key `i` of run `s`), as
/// if the runs were one tile of `STREAMS × len` keys.
#[derive(Clone, Copy)]
pub(crate) struct StreamOps {
    pub dots_f32: StreamDotsFloat<f32>,
    pub dots_f16: StreamDotsFloat<f16>,
    pub dots_i8: StreamDotsI8,
}

/// `(queries, batch, dim, keys, streams, out)`, as `Ops::dots_f32` with [`Streams`].
pub(crate) type StreamDotsFloat<T> = unsafe fn(&[f32], usize, usize, &[T], &Streams, &mut [f32]);

/// `(queries, keys, scales, streams, out)`, as `Ops::dots_i8` with [`Streams`].
pub(crate) type StreamDotsI8 = unsafe fn(&QueryI16<'_>, &[i8], &[f32], &Streams, &mut [f32]);

/// Instruction set a kernel was compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust (the reference; also what 32-bit ARM runs).
    Scalar,
    /// x86_64 AVX2 + FMA + F16C.
    Avx2,
    /// x86_64 AVX-512 (F, BW, VL) with VNNI for the int8 keys.
    Avx512Vnni,
    /// aarch64 NEON (every aarch64 CPU; Cortex-A72 / Raspberry Pi 4).
    Neon,
    /// aarch64 NEON with SDOT (dotprod) for the int8 keys (Cortex-A76 / Pi 5, Jetson Orin).
    NeonDotprod,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Neon => "neon",
            Isa::NeonDotprod => "neon-dotprod",
        }
    }
    /// Every ISA this build knows, best last.
    pub fn all() -> &'static [Isa] {
        &[
            Isa::Scalar,
            Isa::Avx2,
            Isa::Avx512Vnni,
            Isa::Neon,
            Isa::NeonDotprod,
        ]
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Isa {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Isa::all()
            .iter()
            .copied()
            .find(|i| i.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Isa::all().iter().map(|i| i.name()).collect();
                format!("unknown ISA '{s}' (one of {})", names.join(", "))
            })
    }
}

/// A dispatched affinity kernel. Cheap to copy; [`Kernel::detect`] decides once per process.
#[derive(Clone, Copy)]
pub struct Kernel {
    pub(super) isa: Isa,
    pub(super) ops: Ops,
    /// The affinity pass `exp(−β(1 − s))`, compiled for the ISA's vector width where the ISA
    /// module provides one (same arithmetic as [`exp::affinity_in_place`]). Same safety
    /// contract as `ops`.
    pub(super) affinity: unsafe fn(&mut [f32], f32),
}

impl fmt::Debug for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kernel").field("isa", &self.isa).finish()
    }
}

impl Kernel {
    /// The best kernel this CPU supports, detected on first call and cached.
    pub fn detect() -> Kernel {
        static BEST: OnceLock<Kernel> = OnceLock::new();
        *BEST.get_or_init(|| {
            Isa::all()
                .iter()
                .rev()
                .find_map(|&isa| Kernel::with_isa(isa))
                .expect("the scalar kernel is always available")
        })
    }

    /// The portable reference kernel.
    pub fn scalar() -> Kernel {
        Kernel {
            isa: Isa::Scalar,
            ops: scalar::OPS,
            affinity: exp::affinity_in_place,
        }
    }

    /// The kernel for `isa` if this build has it and this CPU supports it.
    pub fn with_isa(isa: Isa) -> Option<Kernel> {
        let ops = match isa {
            Isa::Scalar => Some(scalar::OPS),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512Vnni => x86_64::ops(isa),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon | Isa::NeonDotprod => aarch64::ops(isa),
            #[allow(unreachable_patterns)]
            _ => None,
        }?;
        #[cfg(target_arch = "x86_64")]
        let affinity = x86_64::affinity(isa).unwrap_or(exp::affinity_in_place);
        #[cfg(not(target_arch = "x86_64"))]
        let affinity: fn(&mut [f32], f32) = exp::affinity_in_place;
        Some(Kernel { isa, ops, affinity })
    }

    /// Every kernel this CPU can run (for tests and benchmarks).
    pub fn available() -> Vec<Kernel> {
        Isa::all()
            .iter()
            .filter_map(|&i| Kernel::with_isa(i))
            .collect()
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// `exp(−β(1 − s))` in place over any slice, with this kernel's vectorised exp (for callers
    /// that keep similarities and revisit them with many β, such as the α/β search).
    pub fn affinity_in_place(&self, sims: &mut [f32], beta: f32) {
        // SAFETY: `self.affinity` was chosen for `self.isa`, which this CPU supports; it reads
        // and writes only within `sims`.
        unsafe { (self.affinity)(sims, beta) }
    }
}
