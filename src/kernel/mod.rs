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
//! Files, one concern each:
//!
//! - `keys.rs`: how keys are stored ([`KeyDtype`], [`KeyData`]), the checked class-sorted view
//!   [`Keys`], and how keys are made ([`l2_normalize_rows`], [`quantize_key_i8`]);
//! - `query.rs`: the queries as the kernels read them: aligned copies, or [`QueryI16`] for
//!   int8 keys;
//! - `dispatch.rs`: the ISA table of dot products (`Ops`, `StreamOps`, `Streams`), [`Isa`], and
//!   [`Kernel`] with its run-time choice of table;
//! - `walk.rs`: the pass over the keys in tiles, the two entry points built on it
//!   ([`Kernel::class_affinity`], [`Kernel::similarities`]), and the [`Scratch`] it writes to;
//! - [`scalar`], `x86_64/`, `aarch64/`: the dot-product tiles; [`exp`]: the shared fast exp;
//!   [`bench`](mod@bench): the benchmark harness behind `tipedge bench kernel`.
//!
//! This module knows nothing about files or models (see DESIGN.md): keys arrive as slices.

pub mod bench;
pub mod exp;
pub mod scalar;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86_64;

mod dispatch;
mod keys;
mod query;
mod walk;

pub use dispatch::{Isa, Kernel};
pub(crate) use dispatch::{Ops, STREAMS};
// The x86_64 tiles read the keys as streams side by side; aarch64 has no stream tiles yet.
#[cfg(target_arch = "x86_64")]
pub(crate) use dispatch::{StreamOps, Streams};
pub use keys::{
    class_offsets_of, l2_normalize_rows, quantize_key_i8, KernelError, KeyData, KeyDtype, Keys,
};
pub use query::{quantize_queries_i16, query_i16_max, QueryI16};
pub use walk::Scratch;

/// Largest number of queries scored in one pass over the keys.
pub const MAX_BATCH: usize = 32;
/// Keys per tile: the dot-product functions are called on at most this many keys at a time, and
/// the similarity scratch holds `TILE_KEYS × MAX_BATCH` values.
pub const TILE_KEYS: usize = 64;
