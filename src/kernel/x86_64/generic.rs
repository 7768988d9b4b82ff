//! The dot-product tiles written once over a small vector trait ([`Vector`]); `avx2.rs` and
//! `avx512.rs` instantiate them (the memchr `arch/generic` pattern).
//!
//! A block computes the `K × Q` dot products of `K` keys with `Q` queries over the whole
//! dimension, with `K × Q` accumulators held in registers: each chunk of a key is loaded (and
//! converted: `vcvtph2ps`, `vpmovsxbw`) once and multiplied with `Q` queries, each query chunk
//! once per `K` keys. At the end the accumulators are reduced four at a time (one `hadd` tree
//! for four sums), and the `dim % LANES` tail elements are added in scalar code.
//!
//! Everything here is `#[inline(always)]` so that it is compiled inside the `#[target_feature]`
//! entry points of the instantiating module, with that module's features.

use half::f16;

use crate::kernel::{QueryI16, Streams, STREAMS};

/// One SIMD width's worth of operations. Every method is a thin wrapper over one or two
/// intrinsics; calling any of them requires the implementor's target features.
pub(super) trait Vector: Copy {
    /// f32 lanes (a vector of f32, or of f16 widened to f32).
    type F: Copy;
    /// i32 lanes (accumulators), also used for 2× as many i16 lanes.
    type I: Copy;
    /// f32 (and f16) elements per `F`.
    const F_LANES: usize;
    /// i16 (and int8 key) elements per `I`.
    const I_LANES: usize;

    unsafe fn f_zero() -> Self::F;
    unsafe fn f_load(p: *const f32) -> Self::F;
    /// `F_LANES` halves widened to f32.
    unsafe fn f_load_f16(p: *const f16) -> Self::F;
    /// `acc + a·b`, fused.
    unsafe fn f_fma(a: Self::F, b: Self::F, acc: Self::F) -> Self::F;
    /// Horizontal sums of four vectors.
    unsafe fn f_sum4(v: [Self::F; 4]) -> [f32; 4];

    unsafe fn i_zero() -> Self::I;
    /// `I_LANES` i16 values.
    unsafe fn i_load_i16(p: *const i16) -> Self::I;
    /// `I_LANES` int8 values sign-extended to i16.
    unsafe fn i_load_i8(p: *const i8) -> Self::I;
    /// `acc + (a₀b₀ + a₁b₁, a₂b₂ + a₃b₃, …)` over i16 lanes into i32 lanes.
    unsafe fn i_dot_acc(a: Self::I, b: Self::I, acc: Self::I) -> Self::I;
    unsafe fn i_sum4(v: [Self::I; 4]) -> [i32; 4];
}

/// A float key element: f32, or f16 widened on load.
pub(super) trait FloatKey: Copy {
    unsafe fn load<V: Vector>(p: *const Self) -> V::F;
    fn to_f32(self) -> f32;
}

impl FloatKey for f32 {
    #[inline(always)]
    unsafe fn load<V: Vector>(p: *const f32) -> V::F {
        V::f_load(p)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl FloatKey for f16 {
    #[inline(always)]
    unsafe fn load<V: Vector>(p: *const f16) -> V::F {
        V::f_load_f16(p)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

/// Software prefetch of the keys that follow a block's rows, one line per row for every line
/// the block reads from each row ([`for_each_chunk`]).
///
/// Contiguous rows (a tile read key after key): the blocks read `K` key rows side by side, a
/// few cache lines from each (512 bytes for an int8 key of C = 512), and a group of 8 such keys
/// is exactly one 4 KiB page: too short and too interleaved for the hardware stream
/// prefetchers, which also stop at page boundaries. So each block prefetches the `K` rows that
/// follow its own (the next block, or the next tile: keys are contiguous), line after line in
/// address order.
///
/// Rows far apart (streams, see [`dots_i8_streams`]): each row is the head of its own stream,
/// and each stream is prefetched [`STREAM_AHEAD`] bytes (at least one key) ahead.
///
/// Only the first block over a group of keys does (the first queries): the later ones find the
/// keys in L1.
struct Prefetch {
    first: *const u8,
    /// Bytes between the lines prefetched for the rows of one line group, and between groups.
    row_stride: usize,
    group_stride: usize,
}

/// How far ahead of its head a stream is prefetched: two int8 keys of C = 512, one fp16 or
/// f32 key.
const STREAM_AHEAD: usize = 1024;

impl Prefetch {
    #[inline(always)]
    fn new<T>(keys: *const T, rows: usize, dim: usize, key_stride: usize) -> Prefetch {
        let size = core::mem::size_of::<T>();
        let row_bytes = dim * size;
        // wrapping_add: past the last key these point outside the slice; prefetching an
        // address never faults and nothing is read through the pointers.
        if key_stride == dim {
            Prefetch {
                first: (keys as *const u8).wrapping_add(rows * row_bytes),
                row_stride: 64,
                group_stride: 64 * rows,
            }
        } else {
            Prefetch {
                first: (keys as *const u8).wrapping_add(row_bytes.max(STREAM_AHEAD)),
                row_stride: key_stride * size,
                group_stride: 64,
            }
        }
    }
    /// The line for row `k` of line group `g`.
    #[inline(always)]
    fn at(&self, k: usize, g: usize) {
        let p = self
            .first
            .wrapping_add(k * self.row_stride + g * self.group_stride);
        // SAFETY: SSE prefetch is baseline x86_64 and has no memory effects.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
        }
    }
}

/// Runs `$body` for every chunk `$j < $chunks` of a block's rows (`$chunk_bytes` of each row),
/// grouped by the 64-byte lines they fill; with `$PREFETCH`, `$K` lines are prefetched before
/// each group (one per row), as many lines as the group reads. A macro, not a function taking a
/// closure: the body must be compiled inside the caller's `#[target_feature]` context, which a
/// closure the optimiser declines to inline would not be (every intrinsic a call).
macro_rules! for_each_chunk {
    ($K:ident, $PREFETCH:ident, $chunks:expr, $chunk_bytes:expr, $prefetch:expr, |$j:ident| $body:block) => {{
        let chunks: usize = $chunks;
        // Without prefetch a plain loop: unrolled by the line, the wide tiles of the larger
        // batches spill (fp16 3 × 4 on AVX2: 15% slower).
        let per_line = if $PREFETCH {
            (64 / $chunk_bytes).max(1)
        } else {
            chunks.max(1)
        };
        let groups = if $PREFETCH { chunks / per_line } else { 0 };
        for g in 0..groups {
            for k in 0..$K {
                $prefetch.at(k, g);
            }
            for c in 0..per_line {
                let $j = g * per_line + c;
                $body
            }
        }
        for $j in groups * per_line..chunks {
            $body
        }
    }};
}

/// Register-tile shapes of one instantiation: `K × Q` for batches of at least `Q` queries
/// (remainders `K × 1`, `1 × Q`, `1 × 1`), `K1 × 1` for batches of fewer than `Q` (single
/// queries: the memory-bound case, where more keys in flight help most).
pub(super) struct Shape<const K: usize, const Q: usize, const K1: usize>;

/// Four horizontal sums at once ([`Vector::f_sum4`] or [`Vector::i_sum4`]), named by a type so
/// that [`reduce`] calls it directly. A closure would only be an inlining hint: left out of line
/// it lacks the ISA's target features, and every intrinsic in it becomes a call (AVX-512 batch-1
/// int8 scoring spent a third of its time in such calls and ran 2× slower than AVX2).
trait Sum4 {
    type T: Copy;
    type S: Copy + Default;
    unsafe fn zero() -> Self::T;
    unsafe fn sum4(v: [Self::T; 4]) -> [Self::S; 4];
}

struct FloatSums<V>(core::marker::PhantomData<V>);

impl<V: Vector> Sum4 for FloatSums<V> {
    type T = V::F;
    type S = f32;
    #[inline(always)]
    unsafe fn zero() -> V::F {
        V::f_zero()
    }
    #[inline(always)]
    unsafe fn sum4(v: [V::F; 4]) -> [f32; 4] {
        V::f_sum4(v)
    }
}

struct IntSums<V>(core::marker::PhantomData<V>);

impl<V: Vector> Sum4 for IntSums<V> {
    type T = V::I;
    type S = i32;
    #[inline(always)]
    unsafe fn zero() -> V::I {
        V::i_zero()
    }
    #[inline(always)]
    unsafe fn sum4(v: [V::I; 4]) -> [i32; 4] {
        V::i_sum4(v)
    }
}

/// Reduce the `K × Q` accumulators four at a time.
#[inline(always)]
unsafe fn reduce<R: Sum4, const K: usize, const Q: usize>(acc: &[[R::T; Q]; K]) -> [[R::S; Q]; K] {
    let mut sums = [[R::S::default(); Q]; K];
    let mut idx = 0;
    while idx < K * Q {
        let mut v = [R::zero(); 4];
        for (m, v) in v.iter_mut().enumerate() {
            let x = idx + m;
            if x < K * Q {
                *v = acc[x / Q][x % Q];
            }
        }
        let s = R::sum4(v);
        for (m, s) in s.into_iter().enumerate() {
            let x = idx + m;
            if x < K * Q {
                sums[x / Q][x % Q] = s;
            }
        }
        idx += 4;
    }
    sums
}

/// `out[k·out_step·batch + b] = q_b · key_k` for `K` key rows, row `k` at
/// `keys + k·key_step·dim` ([`Rows`]; consecutive keys have both steps 1), and `Q` queries at
/// `q` (row-major, row length `dim`).
///
/// With `PREFETCH` it also prefetches what follows its rows ([`Prefetch`]); a compile-time
/// flag, so that the blocks without it run a loop with no test in it (about 5% on int8 and
/// fp16 batches of 16, Zen 3).
///
/// Safety: `V`'s target features are present; `q` holds `Q` rows, the `K` key rows are in
/// bounds, and so is `out[k·out_step·batch + b]` for `k < K`, `b < Q`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // `acc[k][b]` over both indices reads clearest
unsafe fn block_f<V: Vector, T: FloatKey, const K: usize, const Q: usize, const PREFETCH: bool>(
    q: *const f32,
    dim: usize,
    keys: *const T,
    out: *mut f32,
    batch: usize,
    rows: Rows,
) {
    let chunks = dim / V::F_LANES;
    let (key_stride, out_stride) = (rows.key_step * dim, rows.out_step * batch);
    let prefetch = Prefetch::new(keys, K, dim, key_stride);
    let mut acc = [[V::f_zero(); Q]; K];
    let chunk_bytes = V::F_LANES * core::mem::size_of::<T>();
    for_each_chunk!(K, PREFETCH, chunks, chunk_bytes, prefetch, |j| {
        let off = j * V::F_LANES;
        // A loop, not `array::from_fn`: see `block_i8`.
        let mut kv = [V::f_zero(); K];
        for k in 0..K {
            kv[k] = unsafe { T::load::<V>(keys.add(k * key_stride + off)) };
        }
        for b in 0..Q {
            let qv = unsafe { V::f_load(q.add(b * dim + off)) };
            for k in 0..K {
                acc[k][b] = unsafe { V::f_fma(kv[k], qv, acc[k][b]) };
            }
        }
    });
    let mut sums = reduce::<FloatSums<V>, K, Q>(&acc);
    for t in chunks * V::F_LANES..dim {
        for (k, row) in sums.iter_mut().enumerate() {
            let kt = (*keys.add(k * key_stride + t)).to_f32();
            for (b, s) in row.iter_mut().enumerate() {
                *s += *q.add(b * dim + t) * kt;
            }
        }
    }
    for (k, row) in sums.iter().enumerate() {
        for (b, s) in row.iter().enumerate() {
            *out.add(k * out_stride + b) = *s;
        }
    }
}

/// The int8 counterpart of [`block_f`]: i16 queries × int8 keys in i32, then
/// `out = dot · (query_scale · key_scale)` (the same expression as the scalar kernel, so the
/// similarities agree bit for bit: the integer sums are exact).
///
/// Safety: as [`block_f`], plus `qs` holds `Q` and `ks` `K` scales.
#[inline(always)]
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
unsafe fn block_i8<V: Vector, const K: usize, const Q: usize, const PREFETCH: bool>(
    q: *const i16,
    qs: *const f32,
    dim: usize,
    keys: *const i8,
    ks: *const f32,
    out: *mut f32,
    batch: usize,
    rows: Rows,
) {
    let chunks = dim / V::I_LANES;
    let (key_stride, out_stride) = (rows.key_step * dim, rows.out_step * batch);
    let prefetch = Prefetch::new(keys, K, dim, key_stride);
    let mut acc = [[V::i_zero(); Q]; K];
    for_each_chunk!(K, PREFETCH, chunks, V::I_LANES, prefetch, |j| {
        let off = j * V::I_LANES;
        // A loop, not `array::from_fn`: its closure is only an inlining hint, and left out of
        // line it lacks the ISA's features, so the load became a call (AVX-512, batch 1).
        let mut kv = [V::i_zero(); K];
        for k in 0..K {
            kv[k] = unsafe { V::i_load_i8(keys.add(k * key_stride + off)) };
        }
        for b in 0..Q {
            let qv = unsafe { V::i_load_i16(q.add(b * dim + off)) };
            for k in 0..K {
                acc[k][b] = unsafe { V::i_dot_acc(kv[k], qv, acc[k][b]) };
            }
        }
    });
    let mut sums = reduce::<IntSums<V>, K, Q>(&acc);
    for t in chunks * V::I_LANES..dim {
        for (k, row) in sums.iter_mut().enumerate() {
            let kt = *keys.add(k * key_stride + t) as i32;
            for (b, s) in row.iter_mut().enumerate() {
                *s += *q.add(b * dim + t) as i32 * kt;
            }
        }
    }
    for (k, row) in sums.iter().enumerate() {
        for (b, s) in row.iter().enumerate() {
            *out.add(k * out_stride + b) = *s as f32 * (*qs.add(b) * *ks.add(k * rows.key_step));
        }
    }
}

/// Where a block's `K` rows are: key row `k` at `keys + k·key_step·dim` (its int8 scale at
/// `ks + k·key_step`), its outputs at `out + k·out_step·batch`. A contiguous tile has both steps
/// 1; streams (see [`dots_float_streams`]) have one row per run.
#[derive(Clone, Copy)]
struct Rows {
    key_step: usize,
    out_step: usize,
}

const CONTIGUOUS: Rows = Rows {
    key_step: 1,
    out_step: 1,
};

/// One kind of block (float or int8 keys), run at a given shape.
trait Block {
    /// The `K × Q` block at key `i`, query `b` (rows as the block's [`Rows`] say); the first
    /// block over a group of keys (`b == 0`) prefetches what follows them ([`Prefetch`]).
    unsafe fn run<const K: usize, const Q: usize>(&self, i: usize, b: usize);
}

/// Covers every (key, query) pair of a tile of `n` keys and `batch` queries exactly once:
/// `K × Q` blocks (key remainder `1 × Q`, query remainder `K × 1` and `1 × 1`) when the batch
/// has at least `Q` queries, else `K1 × 1` blocks query by query.
#[inline(always)]
unsafe fn walk<B: Block, const K: usize, const Q: usize, const K1: usize>(
    n: usize,
    batch: usize,
    block: &B,
) {
    if batch >= Q {
        let mut i = 0;
        while i + K <= n {
            let mut b = 0;
            while b + Q <= batch {
                block.run::<K, Q>(i, b);
                b += Q;
            }
            while b < batch {
                block.run::<K, 1>(i, b);
                b += 1;
            }
            i += K;
        }
        while i < n {
            let mut b = 0;
            while b + Q <= batch {
                block.run::<1, Q>(i, b);
                b += Q;
            }
            while b < batch {
                block.run::<1, 1>(i, b);
                b += 1;
            }
            i += 1;
        }
    } else {
        for b in 0..batch {
            let mut i = 0;
            while i + K1 <= n {
                block.run::<K1, 1>(i, b);
                i += K1;
            }
            while i < n {
                block.run::<1, 1>(i, b);
                i += 1;
            }
        }
    }
}

/// Covers `STREAMS` runs of `len` keys query by query, each block taking the `i`-th key of
/// every run (the block's rows are one per run).
#[inline(always)]
unsafe fn walk_streams<B: Block>(len: usize, batch: usize, block: &B) {
    for b in 0..batch {
        for i in 0..len {
            block.run::<STREAMS, 1>(i, b);
        }
    }
}

struct FloatBlock<V, T> {
    q: *const f32,
    keys: *const T,
    out: *mut f32,
    dim: usize,
    batch: usize,
    rows: Rows,
    _v: core::marker::PhantomData<V>,
}

impl<V, T> FloatBlock<V, T> {
    /// Blocks over `keys` from key `first` on, their rows as `rows` say. The callers have
    /// checked that every block they run stays within `q`, `keys` and `out`.
    fn new(
        q: &[f32],
        batch: usize,
        dim: usize,
        keys: &[T],
        first: usize,
        rows: Rows,
        out: &mut [f32],
    ) -> Self {
        FloatBlock {
            q: q.as_ptr(),
            keys: keys[first * dim..].as_ptr(),
            out: out.as_mut_ptr(),
            dim,
            batch,
            rows,
            _v: core::marker::PhantomData,
        }
    }
}

impl<V: Vector, T: FloatKey> Block for FloatBlock<V, T> {
    #[inline(always)]
    unsafe fn run<const K: usize, const Q: usize>(&self, i: usize, b: usize) {
        let (dim, batch) = (self.dim, self.batch);
        let (q, keys, out) = (
            self.q.add(b * dim),
            self.keys.add(i * dim),
            self.out.add(i * batch + b),
        );
        // Two instantiations rather than a flag tested in the loop: the blocks without the
        // prefetch (every query group after the first) keep a branch-free inner loop.
        if b == 0 {
            block_f::<V, T, K, Q, true>(q, dim, keys, out, batch, self.rows)
        } else {
            block_f::<V, T, K, Q, false>(q, dim, keys, out, batch, self.rows)
        }
    }
}

struct I8Block<V> {
    q: *const i16,
    qs: *const f32,
    keys: *const i8,
    ks: *const f32,
    out: *mut f32,
    dim: usize,
    batch: usize,
    rows: Rows,
    _v: core::marker::PhantomData<V>,
}

impl<V> I8Block<V> {
    /// As [`FloatBlock::new`], for int8 keys and their scales.
    fn new(
        q: &QueryI16<'_>,
        keys: &[i8],
        scales: &[f32],
        first: usize,
        rows: Rows,
        out: &mut [f32],
    ) -> Self {
        I8Block {
            q: q.values.as_ptr(),
            qs: q.scales.as_ptr(),
            keys: keys[first * q.dim..].as_ptr(),
            ks: scales[first..].as_ptr(),
            out: out.as_mut_ptr(),
            dim: q.dim,
            batch: q.batch,
            rows,
            _v: core::marker::PhantomData,
        }
    }
}

impl<V: Vector> Block for I8Block<V> {
    #[inline(always)]
    unsafe fn run<const K: usize, const Q: usize>(&self, i: usize, b: usize) {
        let (dim, batch) = (self.dim, self.batch);
        let (q, qs, keys, ks, out) = (
            self.q.add(b * dim),
            self.qs.add(b),
            self.keys.add(i * dim),
            self.ks.add(i),
            self.out.add(i * batch + b),
        );
        // As in `FloatBlock::run`: the prefetch is decided per instantiation.
        if b == 0 {
            block_i8::<V, K, Q, true>(q, qs, dim, keys, ks, out, batch, self.rows)
        } else {
            block_i8::<V, K, Q, false>(q, qs, dim, keys, ks, out, batch, self.rows)
        }
    }
}

/// The `Ops::dots_f32` / `dots_f16` contract for one instantiation.
///
/// Safety: `V`'s target features are present.
#[inline(always)]
pub(super) unsafe fn dots_float<
    V: Vector,
    T: FloatKey,
    const K: usize,
    const Q: usize,
    const K1: usize,
>(
    _shape: Shape<K, Q, K1>,
    q: &[f32],
    batch: usize,
    dim: usize,
    keys: &[T],
    out: &mut [f32],
) {
    // These make every block's pointer offsets in bounds.
    assert!(dim > 0 && keys.len().is_multiple_of(dim));
    let n = keys.len() / dim;
    assert!(q.len() >= batch * dim && out.len() >= n * batch);
    let block = FloatBlock::<V, T>::new(q, batch, dim, keys, 0, CONTIGUOUS, out);
    walk::<_, K, Q, K1>(n, batch, &block);
}

/// The `Ops::dots_i8` contract for one instantiation.
///
/// Safety: `V`'s target features are present.
#[inline(always)]
pub(super) unsafe fn dots_i8<V: Vector, const K: usize, const Q: usize, const K1: usize>(
    _shape: Shape<K, Q, K1>,
    q: &QueryI16<'_>,
    keys: &[i8],
    scales: &[f32],
    out: &mut [f32],
) {
    let (batch, dim) = (q.batch, q.dim);
    // These make every block's pointer offsets in bounds.
    assert!(dim > 0 && keys.len().is_multiple_of(dim));
    let n = keys.len() / dim;
    assert!(scales.len() == n && out.len() >= n * batch);
    assert!(q.values.len() >= batch * dim && q.scales.len() >= batch);
    let block = I8Block::<V>::new(q, keys, scales, 0, CONTIGUOUS, out);
    walk::<_, K, Q, K1>(n, batch, &block);
}

/// The first key and the [`Rows`] of a streams walk over `n` keys, after checking that the
/// runs lie within the keys and that `out_len` values hold their outputs (these make every
/// block's pointer offsets in bounds).
fn stream_rows(streams: &Streams, n: usize, out_len: usize, batch: usize) -> (usize, Rows) {
    let Streams { first, step, len } = *streams;
    assert!(first + (STREAMS - 1) * step + len <= n);
    assert!(out_len >= STREAMS * len * batch);
    let rows = Rows {
        key_step: step,
        out_step: len,
    };
    (first, rows)
}

/// The `StreamOps::dots_f32` / `dots_f16` contract for one instantiation: the `STREAMS` runs of
/// `streams` read side by side, one block row per run, `K1`-style blocks of single queries.
///
/// Safety: `V`'s target features are present.
#[inline(always)]
pub(super) unsafe fn dots_float_streams<V: Vector, T: FloatKey>(
    q: &[f32],
    batch: usize,
    dim: usize,
    keys: &[T],
    streams: &Streams,
    out: &mut [f32],
) {
    // These make every block's pointer offsets in bounds.
    assert!(dim > 0 && keys.len().is_multiple_of(dim));
    let (first, rows) = stream_rows(streams, keys.len() / dim, out.len(), batch);
    assert!(q.len() >= batch * dim);
    let block = FloatBlock::<V, T>::new(q, batch, dim, keys, first, rows, out);
    walk_streams(streams.len, batch, &block);
}

/// The `StreamOps::dots_i8` contract for one instantiation (as [`dots_float_streams`]).
///
/// Safety: `V`'s target features are present.
#[inline(always)]
pub(super) unsafe fn dots_i8_streams<V: Vector>(
    q: &QueryI16<'_>,
    keys: &[i8],
    scales: &[f32],
    streams: &Streams,
    out: &mut [f32],
) {
    let (batch, dim) = (q.batch, q.dim);
    // These make every block's pointer offsets in bounds.
    assert!(dim > 0 && keys.len().is_multiple_of(dim));
    let n = keys.len() / dim;
    let (first, rows) = stream_rows(streams, n, out.len(), batch);
    assert!(scales.len() == n);
    assert!(q.values.len() >= batch * dim && q.scales.len() >= batch);
    let block = I8Block::<V>::new(q, keys, scales, first, rows, out);
    walk_streams(streams.len, batch, &block);
}

/// The [`Ops`](crate::kernel::Ops) table of one instantiation: vector type `$V` compiled with
/// `$features`, float tiles of shape `(K, Q, K1)` and int8 tiles of shape `(K, Q, K1)` (see
/// [`Shape`]), with the [`Streams`] functions for small batches. Every function in it is
/// `#[target_feature(enable = $features)]`: the table may be handed out only after run-time
/// detection of those features.
macro_rules! ops_table {
    ($V:ty, $features:literal, float: ($FK:literal, $FQ:literal, $FK1:literal),
     int8: ($IK:literal, $IQ:literal, $IK1:literal)) => {{
        use half::f16;
        use $crate::kernel::x86_64::generic::{self, FloatKey, Shape};
        use $crate::kernel::{Ops, QueryI16, StreamOps, Streams};

        #[target_feature(enable = $features)]
        unsafe fn dots_float<T: FloatKey>(
            q: &[f32],
            batch: usize,
            dim: usize,
            keys: &[T],
            out: &mut [f32],
        ) {
            let shape: Shape<$FK, $FQ, $FK1> = Shape;
            generic::dots_float::<$V, T, $FK, $FQ, $FK1>(shape, q, batch, dim, keys, out)
        }
        #[target_feature(enable = $features)]
        unsafe fn dots_i8(q: &QueryI16<'_>, keys: &[i8], scales: &[f32], out: &mut [f32]) {
            let shape: Shape<$IK, $IQ, $IK1> = Shape;
            generic::dots_i8::<$V, $IK, $IQ, $IK1>(shape, q, keys, scales, out)
        }
        #[target_feature(enable = $features)]
        unsafe fn streams_float<T: FloatKey>(
            q: &[f32],
            batch: usize,
            dim: usize,
            keys: &[T],
            streams: &Streams,
            out: &mut [f32],
        ) {
            generic::dots_float_streams::<$V, T>(q, batch, dim, keys, streams, out)
        }
        #[target_feature(enable = $features)]
        unsafe fn streams_i8(
            q: &QueryI16<'_>,
            keys: &[i8],
            scales: &[f32],
            streams: &Streams,
            out: &mut [f32],
        ) {
            generic::dots_i8_streams::<$V>(q, keys, scales, streams, out)
        }

        Ops {
            dots_f32: dots_float::<f32>,
            dots_f16: dots_float::<f16>,
            dots_i8,
            streams: Some(StreamOps {
                dots_f32: streams_float::<f32>,
                dots_f16: streams_float::<f16>,
                dots_i8: streams_i8,
            }),
        }
    }};
}
pub(super) use ops_table;
