//! Affinity kernels: the cache term of Tip-Adapter over class-sorted keys.
//!
//! For each query `f` (f32, unit norm, dim C) and each key `k_i` (f32, fp16, or int8 with one f32
//! scale per key), the kernel computes
//!
//! ```text
//! s_i = f·k_i,   A_i = exp(−β(1 − s_i)),   class_sum[c] = Σ_{i ∈ class c} A_i
//! ```
//!
//! which is `exp(−β(1 − f·Kᵀ))·L` with the one-hot value matrix L replaced by a segmented sum
//! (keys are stored sorted by class, `class_offsets[c]..class_offsets[c+1]`).
//!
//! Layout follows memchr: [`scalar`] is the portable reference, `x86_64/` and `aarch64/` hold
//! the ISA-specific dot-product tiles, and [`Kernel::detect`] picks one at run time once (cached),
//! so the hot call pays no detection cost. Only the dot products are ISA-specific; the exp and the
//! segmented sum are shared ([`exp`]) and written so the compiler vectorises them.
//!
//! Keys are walked in tiles of [`TILE_KEYS`]. A single query (or two or three) does so little
//! arithmetic per byte that one core's memory reads bound it; where the ISA has `StreamOps`
//! (x86_64), such batches read the keys as four streams side by side (`Streams`), which one
//! core reads faster than one.
//!
//! This module knows nothing about files or models (see DESIGN.md): keys arrive as slices.

pub mod bench;
pub mod exp;
pub mod scalar;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86_64;

use half::f16;
use std::fmt;
use std::sync::OnceLock;

/// Largest number of queries scored in one pass over the keys.
pub const MAX_BATCH: usize = 32;
/// Keys per tile: the dot-product functions are called on at most this many keys at a time, and
/// the similarity scratch holds `TILE_KEYS × MAX_BATCH` values.
pub const TILE_KEYS: usize = 64;

/// How the keys are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyDtype {
    F32,
    F16,
    /// int8 values in −127..=127 with one f32 scale per key (absmax / 127).
    I8,
}

impl KeyDtype {
    pub fn name(self) -> &'static str {
        match self {
            KeyDtype::F32 => "f32",
            KeyDtype::F16 => "fp16",
            KeyDtype::I8 => "int8",
        }
    }
    /// Bytes one key of dimension `dim` occupies (int8 counts its f32 scale).
    pub fn key_bytes(self, dim: usize) -> usize {
        match self {
            KeyDtype::F32 => 4 * dim,
            KeyDtype::F16 => 2 * dim,
            KeyDtype::I8 => dim + 4,
        }
    }
}

impl fmt::Display for KeyDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KeyDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(KeyDtype::F32),
            "fp16" | "f16" | "float16" => Ok(KeyDtype::F16),
            "int8" | "i8" => Ok(KeyDtype::I8),
            other => Err(format!(
                "unknown key dtype '{other}' (expected int8, fp16 or f32)"
            )),
        }
    }
}

/// Key values, row-major `n × dim`.
#[derive(Clone, Copy, Debug)]
pub enum KeyData<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    I8 { values: &'a [i8], scales: &'a [f32] },
}

impl KeyData<'_> {
    pub fn dtype(&self) -> KeyDtype {
        match self {
            KeyData::F32(_) => KeyDtype::F32,
            KeyData::F16(_) => KeyDtype::F16,
            KeyData::I8 { .. } => KeyDtype::I8,
        }
    }
    /// The keys as f32 (int8: value × its key's scale), row-major `n × dim`.
    pub fn to_f32(&self, dim: usize) -> Vec<f32> {
        match self {
            KeyData::F32(v) => v.to_vec(),
            KeyData::F16(v) => v.iter().map(|h| h.to_f32()).collect(),
            KeyData::I8 { values, scales } => values
                .chunks_exact(dim.max(1))
                .zip(scales.iter())
                .flat_map(|(row, &s)| row.iter().map(move |&q| f32::from(q) * s))
                .collect(),
        }
    }
    fn values_len(&self) -> usize {
        match self {
            KeyData::F32(v) => v.len(),
            KeyData::F16(v) => v.len(),
            KeyData::I8 { values, .. } => values.len(),
        }
    }
}

/// Why a set of keys or a call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KernelError(pub String);

/// Class-sorted keys: a checked view, cheap to copy.
#[derive(Clone, Copy, Debug)]
pub struct Keys<'a> {
    dim: usize,
    n: usize,
    data: KeyData<'a>,
    class_offsets: &'a [u32],
}

impl<'a> Keys<'a> {
    /// `class_offsets` has one entry per class plus one: class `c` owns keys
    /// `class_offsets[c]..class_offsets[c+1]`; it starts at 0, never decreases and ends at the
    /// key count. Empty classes are allowed.
    pub fn new(
        dim: usize,
        data: KeyData<'a>,
        class_offsets: &'a [u32],
    ) -> Result<Keys<'a>, KernelError> {
        if dim == 0 {
            return Err(KernelError("key dimension is 0".into()));
        }
        let len = data.values_len();
        if !len.is_multiple_of(dim) {
            return Err(KernelError(format!(
                "{len} key values are not a whole number of keys of dimension {dim}"
            )));
        }
        let n = len / dim;
        if let KeyData::I8 { scales, .. } = data {
            if scales.len() != n {
                return Err(KernelError(format!(
                    "{} scales for {n} int8 keys",
                    scales.len()
                )));
            }
        }
        if class_offsets.len() < 2 {
            return Err(KernelError("class offsets need at least one class".into()));
        }
        if class_offsets[0] != 0 || *class_offsets.last().unwrap() as usize != n {
            return Err(KernelError(format!(
                "class offsets must run from 0 to the key count {n}"
            )));
        }
        if let Some(w) = class_offsets.windows(2).position(|w| w[1] < w[0]) {
            return Err(KernelError(format!(
                "class offsets decrease at class {w} (classes would overlap)"
            )));
        }
        Ok(Keys {
            dim,
            n,
            data,
            class_offsets,
        })
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
    pub fn len(&self) -> usize {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    pub fn n_classes(&self) -> usize {
        self.class_offsets.len() - 1
    }
    pub fn dtype(&self) -> KeyDtype {
        self.data.dtype()
    }
    pub fn data(&self) -> KeyData<'a> {
        self.data
    }
    pub fn class_offsets(&self) -> &'a [u32] {
        self.class_offsets
    }
    /// Bytes of key storage the kernel reads per query pass.
    pub fn bytes(&self) -> usize {
        self.dtype().key_bytes(self.dim) * self.n
    }
    /// Keys `start..end` as a sub-view of the same data (used to cut tiles).
    fn range(&self, start: usize, end: usize) -> KeyData<'a> {
        let (a, b) = (start * self.dim, end * self.dim);
        match self.data {
            KeyData::F32(v) => KeyData::F32(&v[a..b]),
            KeyData::F16(v) => KeyData::F16(&v[a..b]),
            KeyData::I8 { values, scales } => KeyData::I8 {
                values: &values[a..b],
                scales: &scales[start..end],
            },
        }
    }
}

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

/// The ISA-specific part: dot products of a batch of queries with a tile of at most
/// [`TILE_KEYS`] keys. Every function writes `out[i * batch + b] = q_b · k_i` (key-major) for
/// the `n = keys.len() / dim` keys of the tile, scales applied for int8.
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

/// Work buffers, allocated once (at load) so that scoring allocates nothing.
pub struct Scratch {
    dim: usize,
    /// The f32 queries copied to a 64-byte boundary, and the i16 ones written at one: the
    /// kernels' 32- and 64-byte query loads then never straddle cache lines (unaligned query
    /// rows cost the AVX2 int8 kernel about a quarter of its speed on Zen 3).
    q_f32: Vec<f32>,
    q_i16: Vec<i16>,
    q_i16_scales: Vec<f32>,
    sims: Vec<f32>,
    class_acc: Vec<f32>,
}

impl Scratch {
    pub fn new(dim: usize) -> Scratch {
        Scratch {
            dim,
            q_f32: vec![0.0; MAX_BATCH * dim + ALIGN_SLACK],
            q_i16: vec![0; MAX_BATCH * dim + ALIGN_SLACK],
            q_i16_scales: vec![0.0; MAX_BATCH],
            sims: vec![0.0; TILE_KEYS * MAX_BATCH],
            class_acc: vec![0.0; MAX_BATCH],
        }
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
}

/// A dispatched affinity kernel. Cheap to copy; [`Kernel::detect`] decides once per process.
#[derive(Clone, Copy)]
pub struct Kernel {
    isa: Isa,
    ops: Ops,
    /// The affinity pass `exp(−β(1 − s))`, compiled for the ISA's vector width where the ISA
    /// module provides one (same arithmetic as [`exp::affinity_in_place`]). Same safety
    /// contract as `ops`.
    affinity: unsafe fn(&mut [f32], f32),
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

    /// Per-class affinity sums for `queries` (row-major `batch × dim`, `batch ≤ MAX_BATCH`):
    /// `out[b * n_classes + c] = Σ_{i ∈ class c} exp(−β(1 − q_b·k_i))`.
    ///
    /// Reads the keys once for the whole batch. Allocates nothing.
    pub fn class_affinity(
        &self,
        queries: &[f32],
        keys: &Keys<'_>,
        beta: f32,
        scratch: &mut Scratch,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        let nc = keys.n_classes();
        out.fill(0.0);
        let offsets = keys.class_offsets;
        // Full tiles across class boundaries (the dot-product tiles stay long), then a segmented
        // sum inside each tile: `c` is the class of key `i`; empty classes are stepped over and
        // keep their 0. Tiles come in key order only within a stream ([`Streams`]): where each
        // stream's last tile ended (the key after it, the class it ended in) is kept, so that
        // only a stream's first tile searches the offsets for its class.
        let mut resume = [(usize::MAX, 0usize); STREAMS];
        let mut next_slot = 0;
        self.for_each_tile(
            queries,
            keys,
            scratch,
            (out.len(), nc, "classes"),
            |t, s, acc| {
                // SAFETY: as for `dots`: `self.affinity` belongs to the detected `self.isa`.
                unsafe { (self.affinity)(s, beta) };
                let batch = acc.len();
                let te = t + s.len() / batch;
                let (slot, mut c) = match resume.iter().position(|&(next, _)| next == t) {
                    Some(slot) => (slot, resume[slot].1),
                    None => {
                        let slot = next_slot;
                        next_slot = (next_slot + 1) % STREAMS;
                        // offsets[0] = 0 ≤ t, so at least one offset is ≤ t.
                        (slot, offsets.partition_point(|&o| o as usize <= t) - 1)
                    }
                };
                let mut i = t;
                while i < te {
                    while offsets[c + 1] as usize <= i {
                        c += 1;
                    }
                    let seg_end = (offsets[c + 1] as usize).min(te);
                    let rows = &s[(i - t) * batch..(seg_end - t) * batch];
                    if batch == 1 {
                        // One query: a plain sum, in lanes (the loop below is a scalar add
                        // per key, which showed up in the batch-1 profile next to the dot
                        // products).
                        out[c] += sum_lanes(rows);
                    } else {
                        acc.fill(0.0);
                        for row in rows.chunks_exact(batch) {
                            for (a, v) in acc.iter_mut().zip(row) {
                                *a += v;
                            }
                        }
                        for (b, a) in acc.iter().enumerate() {
                            out[b * nc + c] += *a;
                        }
                    }
                    i = seg_end;
                }
                resume[slot] = (te, c);
            },
        )
    }

    /// Raw similarities `out[b * n + i] = q_b·k_i` for every key (query-major), for callers that
    /// reuse them across many β (the α/β search). Allocates nothing.
    pub fn similarities(
        &self,
        queries: &[f32],
        keys: &Keys<'_>,
        scratch: &mut Scratch,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        let n = keys.len();
        self.for_each_tile(
            queries,
            keys,
            scratch,
            (out.len(), n, "keys"),
            |t, s, acc| {
                for (i, row) in s.chunks_exact(acc.len()).enumerate() {
                    for (b, v) in row.iter().enumerate() {
                        out[b * n + t + i] = *v;
                    }
                }
            },
        )
    }

    /// The pass both entry points share: checks the call (`out` = (its length, values per
    /// query, what they are)), stages the queries, then walks the keys in tiles of at most
    /// [`TILE_KEYS`] consecutive keys, calling `visit(first_key, sims, acc)` with the tile's
    /// similarities (key-major, `keys × batch`) and a `batch`-long accumulator from the scratch.
    ///
    /// Batches of up to [`STREAMS_MAX_BATCH`] queries, where the ISA has [`StreamOps`], read the
    /// keys as [`STREAMS`] streams: `n / STREAMS` keys each, side by side, in tiles of
    /// `TILE_KEYS / STREAMS` keys per stream (then the `n % STREAMS` last keys as usual). Every
    /// key is still visited exactly once, but not in key order.
    fn for_each_tile(
        &self,
        queries: &[f32],
        keys: &Keys<'_>,
        scratch: &mut Scratch,
        (out_len, per_query, what): (usize, usize, &str),
        mut visit: impl FnMut(usize, &mut [f32], &mut [f32]),
    ) -> Result<(), KernelError> {
        let batch = self.check(queries, keys, scratch)?;
        if out_len != batch * per_query {
            return Err(KernelError(format!(
                "output holds {out_len} values, expected batch {batch} × {per_query} {what}"
            )));
        }
        let Scratch {
            q_f32,
            q_i16,
            q_i16_scales,
            sims,
            class_acc,
            ..
        } = scratch;
        let (queries, q16) = prepare(queries, batch, keys, q_f32, q_i16, q_i16_scales);
        let n = keys.len();
        let mut t = 0;
        if let Some(ops) = self.ops.streams.filter(|_| batch <= STREAMS_MAX_BATCH) {
            let step = n / STREAMS;
            let mut i = 0;
            while i < step {
                let len = (TILE_KEYS / STREAMS).min(step - i);
                let streams = Streams {
                    first: i,
                    step,
                    len,
                };
                let s = &mut sims[..STREAMS * len * batch];
                self.dots_streams(&ops, queries, batch, keys, q16.as_ref(), &streams, s);
                for (r, run) in s.chunks_exact_mut(len * batch).enumerate() {
                    visit(r * step + i, run, &mut class_acc[..batch]);
                }
                i += len;
            }
            t = STREAMS * step;
        }
        while t < n {
            let te = (t + TILE_KEYS).min(n);
            let s = &mut sims[..(te - t) * batch];
            self.dots(queries, batch, keys, q16.as_ref(), t, te, s);
            visit(t, s, &mut class_acc[..batch]);
            t = te;
        }
        Ok(())
    }

    fn check(
        &self,
        queries: &[f32],
        keys: &Keys<'_>,
        scratch: &Scratch,
    ) -> Result<usize, KernelError> {
        let dim = keys.dim;
        if scratch.dim != dim {
            return Err(KernelError(format!(
                "scratch was made for dimension {}, keys have {dim}",
                scratch.dim
            )));
        }
        if queries.is_empty() || !queries.len().is_multiple_of(dim) {
            return Err(KernelError(format!(
                "{} query values are not a whole batch of dimension {dim}",
                queries.len()
            )));
        }
        let batch = queries.len() / dim;
        if batch > MAX_BATCH {
            return Err(KernelError(format!(
                "batch of {batch} queries exceeds the maximum {MAX_BATCH}"
            )));
        }
        Ok(batch)
    }

    #[allow(clippy::too_many_arguments)]
    fn dots(
        &self,
        queries: &[f32],
        batch: usize,
        keys: &Keys<'_>,
        q16: Option<&QueryI16<'_>>,
        start: usize,
        end: usize,
        out: &mut [f32],
    ) {
        let dim = keys.dim;
        // SAFETY: `self.ops` belongs to `self.isa`, which `with_isa` only hands out after
        // run-time detection confirmed the CPU has its target features. Slice lengths are
        // consistent: the tile has `end - start ≤ TILE_KEYS` whole keys and `out` holds
        // `(end - start) × batch` values.
        unsafe {
            match keys.range(start, end) {
                KeyData::F32(k) => (self.ops.dots_f32)(queries, batch, dim, k, out),
                KeyData::F16(k) => (self.ops.dots_f16)(queries, batch, dim, k, out),
                KeyData::I8 { values, scales } => {
                    let q = q16.expect("int8 keys always have prepared queries");
                    (self.ops.dots_i8)(q, values, scales, out)
                }
            }
        }
    }

    /// [`Kernel::dots`] for the keys of `streams` (see [`StreamOps`]).
    #[allow(clippy::too_many_arguments)]
    fn dots_streams(
        &self,
        ops: &StreamOps,
        queries: &[f32],
        batch: usize,
        keys: &Keys<'_>,
        q16: Option<&QueryI16<'_>>,
        streams: &Streams,
        out: &mut [f32],
    ) {
        let dim = keys.dim;
        // SAFETY: `ops` is `self.ops.streams`, chosen with `self.ops` for a detected ISA (see
        // `dots`). The callee asserts that the runs lie within the keys and that `out` holds
        // them.
        unsafe {
            match keys.data {
                KeyData::F32(k) => (ops.dots_f32)(queries, batch, dim, k, streams, out),
                KeyData::F16(k) => (ops.dots_f16)(queries, batch, dim, k, streams, out),
                KeyData::I8 { values, scales } => {
                    let q = q16.expect("int8 keys always have prepared queries");
                    (ops.dots_i8)(q, values, scales, streams, out)
                }
            }
        }
    }
}

/// Sum of `v` in 8 independent lanes (vectorised at the baseline ISA).
#[inline]
fn sum_lanes(v: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l += x;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Spare elements in the query buffers for moving their start to a 64-byte boundary.
const ALIGN_SLACK: usize = 32;

/// `len` elements of `buf` from its first 64-byte boundary.
fn aligned<T>(buf: &mut [T], len: usize) -> &mut [T] {
    let off = buf.as_ptr().align_offset(64).min(ALIGN_SLACK);
    &mut buf[off..off + len]
}

/// Stages the queries in the scratch (no allocation): copied to an aligned buffer for float
/// keys, quantised to i16 (aligned) for int8 keys.
fn prepare<'s>(
    queries: &[f32],
    batch: usize,
    keys: &Keys<'_>,
    q_f32: &'s mut [f32],
    q_i16: &'s mut [i16],
    q_i16_scales: &'s mut [f32],
) -> (&'s [f32], Option<QueryI16<'s>>) {
    let dim = keys.dim;
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

/// L2-normalise each row of a row-major matrix in place (rows of zeros stay zero).
pub fn l2_normalize_rows(values: &mut [f32], dim: usize) {
    for row in values.chunks_exact_mut(dim) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
}

/// Quantise one key to int8 with its absmax scale: `k ≈ scale · q`, `q ∈ −127..=127`.
pub fn quantize_key_i8(key: &[f32], out: &mut [i8]) -> f32 {
    let absmax = key.iter().fold(0f32, |m, x| m.max(x.abs()));
    if absmax == 0.0 {
        out.fill(0);
        return 0.0;
    }
    let inv = 127.0 / absmax;
    for (o, x) in out.iter_mut().zip(key) {
        *o = (x * inv).round().clamp(-127.0, 127.0) as i8;
    }
    absmax / 127.0
}
