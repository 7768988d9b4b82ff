//! The pass over the keys: [`Kernel::class_affinity`] and [`Kernel::similarities`] walk the keys
//! in tiles ([`Tile`]), take each tile's dot products from the dispatched table, and reduce them;
//! [`Scratch`] holds every buffer the pass writes.

use super::dispatch::{StreamOps, Streams, STREAMS, STREAMS_MAX_BATCH};
use super::query::{prepare, ALIGN_SLACK};
use super::{Kernel, KernelError, KeyData, Keys, QueryI16, MAX_BATCH, TILE_KEYS};

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

/// Where a tile of the pass lies, as [`Kernel::for_each_tile`] tells its visitor.
#[derive(Clone, Copy, Debug)]
struct Tile {
    /// The tile holds keys `first_key..first_key + len`.
    first_key: usize,
    len: usize,
    /// The stream the tile was read from (`0..STREAMS`, see [`Streams`]), or `None` for a tile
    /// of the contiguous walk. Within one stream, or the contiguous walk, tiles come in key
    /// order, each starting at the key after the previous one.
    stream: Option<usize>,
}

impl Kernel {
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
        let offsets = keys.class_offsets();
        // Full tiles across class boundaries (the dot-product tiles stay long), then a segmented
        // sum inside each tile: `c` is the class of key `i`; empty classes are stepped over and
        // keep their 0. Each stream, and the contiguous walk (the last slot), keeps a cursor:
        // the key after its last tile and the class that tile ended in, so that only its first
        // tile searches the offsets for its class.
        let mut cursors = [None::<(usize, usize)>; STREAMS + 1];
        self.for_each_tile(
            queries,
            keys,
            scratch,
            (out.len(), nc, "classes"),
            |tile, s, acc| {
                // SAFETY: as for `dots`: `self.affinity` belongs to the detected `self.isa`.
                unsafe { (self.affinity)(s, beta) };
                let batch = acc.len();
                let (t, te) = (tile.first_key, tile.first_key + tile.len);
                let cursor = &mut cursors[tile.stream.unwrap_or(STREAMS)];
                let mut c = match *cursor {
                    Some((next, c)) => {
                        debug_assert_eq!(next, t, "tiles of a stream come in key order");
                        c
                    }
                    // offsets[0] = 0 ≤ t, so at least one offset is ≤ t.
                    None => offsets.partition_point(|&o| o as usize <= t) - 1,
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
                *cursor = Some((te, c));
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
            |tile, s, acc| {
                let t = tile.first_key;
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
    /// [`TILE_KEYS`] consecutive keys, calling `visit(tile, sims, acc)` with where the tile lies
    /// ([`Tile`]), its similarities (key-major, `keys × batch`) and a `batch`-long accumulator
    /// from the scratch. The slices are arguments, not fields of [`Tile`]: only `&mut`
    /// arguments are known not to alias, and as fields the class-sum visitor compiled to code
    /// that ran 19 % more instructions at batch 3 (counted with callgrind).
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
        mut visit: impl FnMut(Tile, &mut [f32], &mut [f32]),
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
                    let tile = Tile {
                        first_key: r * step + i,
                        len,
                        stream: Some(r),
                    };
                    visit(tile, run, &mut class_acc[..batch]);
                }
                i += len;
            }
            t = STREAMS * step;
        }
        while t < n {
            let te = (t + TILE_KEYS).min(n);
            let s = &mut sims[..(te - t) * batch];
            self.dots(queries, batch, keys, q16.as_ref(), t, te, s);
            let tile = Tile {
                first_key: t,
                len: te - t,
                stream: None,
            };
            visit(tile, s, &mut class_acc[..batch]);
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
        let dim = keys.dim();
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
        let dim = keys.dim();
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
        let dim = keys.dim();
        // SAFETY: `ops` is `self.ops.streams`, chosen with `self.ops` for a detected ISA (see
        // `dots`). The callee asserts that the runs lie within the keys and that `out` holds
        // them.
        unsafe {
            match keys.data() {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What `class_affinity`'s cursors rely on: every key is visited once, and the tiles of each
    /// stream (and of the contiguous walk) come in key order, each starting at the key after the
    /// previous one, within the stream's quarter of the keys.
    #[test]
    fn tiles_cover_every_key_once_in_key_order_within_each_stream() {
        let dim = 8;
        let values = vec![0.5f32; 301 * dim];
        for kernel in Kernel::available() {
            for n in [0, 1, 3, 4, 5, 63, 64, 65, 67, 200, 301] {
                let offsets = [0, n as u32];
                let keys = Keys::new(dim, KeyData::F32(&values[..n * dim]), &offsets).unwrap();
                let step = n / STREAMS;
                for batch in [1, STREAMS_MAX_BATCH, STREAMS_MAX_BATCH + 1] {
                    let queries = vec![0.25f32; batch * dim];
                    let mut scratch = Scratch::new(dim);
                    let mut visits = vec![0u32; n];
                    let mut next = [None::<usize>; STREAMS + 1];
                    let walk = kernel.for_each_tile(
                        &queries,
                        &keys,
                        &mut scratch,
                        (0, 0, "values"),
                        |tile, s, acc| {
                            let (t, te) = (tile.first_key, tile.first_key + tile.len);
                            assert_eq!(s.len(), tile.len * batch);
                            assert_eq!(acc.len(), batch);
                            if let Some(r) = tile.stream {
                                assert!(batch <= STREAMS_MAX_BATCH);
                                assert!(r * step <= t && te <= (r + 1) * step);
                            }
                            let slot = &mut next[tile.stream.unwrap_or(STREAMS)];
                            assert!(slot.is_none_or(|k| k == t), "{:?} at {t}", tile.stream);
                            *slot = Some(te);
                            visits[t..te].iter_mut().for_each(|v| *v += 1);
                        },
                    );
                    walk.unwrap();
                    let isa = kernel.isa();
                    assert!(
                        visits.iter().all(|&v| v == 1),
                        "{isa}, n {n}, batch {batch}"
                    );
                }
            }
        }
    }
}
