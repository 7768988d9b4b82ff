//! tipedge's own packing of matrices into the layouts of tract's matrix kernels, for the layouts
//! tract 0.23.9 fills a value at a time: the weights at load ([`super::optimise`]'s `PackWeights`
//! calls [`pack_constant`] before falling back on tract's own pack) and the int8 activations at
//! every pass ([`replacement`] gives the [`PackI8K4`] operator that takes the place of tract's
//! `OptMatMulPack` in the optimised graph).
//!
//! Two layouts (tract-linalg `frame/pack.rs`), each tested byte for byte against tract's packing
//! below:
//!
//! - `PackedFormat` (the float kernels; the int8 kernels without dot-product instructions: AVX2's
//!   `avx2_mmm_i32_8x8`, a Pi 4's `arm64simd_mmm_i32_8x8`): value `(k, x)` at
//!   `(x / r) · panel + k · r + x % r`. tract copies a `[k, n]` matrix (mn contiguous) a panel row
//!   at a time only when a row is 16 to 128 bytes wide; other widths, the 8-byte rows of int8
//!   weights among them, go through its per-value writer (`PackedFormat::pack_t`, about 0.8 ns per
//!   value): packing the int8 ViT-B/32 tower's 85 M weight values that way was a fifth of its load.
//!   [`copy_panel_rows`] copies them a source row at a time.
//! - `PackedI8K4` (the int8 kernels with a 4-way dot product: AVX-512 VNNI / AVX-VNNI's
//!   `vpdpbusd`, a Pi 5's `sdot`): four consecutive k of a lane side by side, value `(k, x)` at
//!   `(x / r) · panel + (k / 4) · 4r + (x % r) · 4 + k % 4`, a panel being `⌈k / 4⌉ · 4r` bytes.
//!   tract's `PackedI8K4::pack_view` copies it a byte at a time with strides read at run time
//!   (`perf` put 10 % of the int8 ViT-B/32 load on an AVX-512 VNNI host there; under qemu
//!   cortex-a76, 606 M instructions of the load and 22 M of each pass, against 88 M and 3 M
//!   here).
//!   [`interleave_k4`] writes four source rows' lanes at once (a `[k, n]` weight) or copies four
//!   bytes at a time (an `[n, k]` one).
//!
//! The pages of a packed copy are mapped in at once ([`populate`]); the bytes tract leaves
//! unwritten or zeroes (padding records, lanes past `mn`, k past the matrix) are zero here.

use std::sync::Arc;

use tract_linalg::mmm::{
    EagerPackedInput, MMMInputFormat, MMMInputValue, PackedExoticFact, PackedMatrixStorage,
};
use tract_linalg::pack::{PackedFormat, PackedI8K4};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::matmul::pack::{DynPackedExoticFact, OptMatMulPack};

/// What tract's `OptMatMulPack` `node` makes of the constant `input`, made by tipedge's code
/// where it has a faster one (the module's doc); `None` for any other pack (tract's own code then
/// runs).
pub(super) fn pack_constant(
    model: &TypedModel,
    node: &TypedNode,
    input: &Arc<Tensor>,
) -> TractResult<Option<TValue>> {
    let Some(pack) = read_pack(model, node)? else {
        return Ok(None);
    };
    let value = pack_matrix(input, pack.k_axis, pack.mn_axis, pack.formats, true);
    Ok(value.map(|value| stored(pack.op, input, value)))
}

/// An `OptMatMulPack` node as tract's public API shows it: the op, the formats it packs into
/// (read from its output's exotic fact) and its input's k and mn axes (from its axes mapping).
struct Pack<'m> {
    op: &'m OptMatMulPack,
    formats: &'m [Box<dyn MMMInputFormat>],
    k_axis: usize,
    mn_axis: usize,
}

/// `node` of `model` read as a [`Pack`]; `None` for any other node.
fn read_pack<'m>(model: &'m TypedModel, node: &'m TypedNode) -> TractResult<Option<Pack<'m>>> {
    let Some(op) = node.op_as::<OptMatMulPack>() else {
        return Ok(None);
    };
    let output = model.outlet_fact(node.id.into())?;
    let exotic = output.exotic_fact.as_ref();
    let Some(exotic) = exotic.and_then(|e| e.downcast_ref::<DynPackedExoticFact>()) else {
        return Ok(None);
    };
    let mapping = op.axes_mapping(&[model.outlet_fact(node.inputs[0])?], &[output])?;
    let (k_axis, mn_axis) = (mapping.axis('K')?, mapping.axis('M')?);
    let (Some(&k_axis), Some(&mn_axis)) = (k_axis.inputs[0].first(), mn_axis.inputs[0].first())
    else {
        return Ok(None);
    };
    Ok(Some(Pack {
        op,
        formats: &exotic.packers,
        k_axis,
        mn_axis,
    }))
}

/// A packed matrix as `op`'s output for `input`: tract's packed-matrix storage, one matrix.
fn stored(op: &OptMatMulPack, input: &Tensor, value: Box<dyn MMMInputValue>) -> TValue {
    let storage = PackedMatrixStorage::new_batched(&op.output_shape(input.shape()), tvec![value]);
    storage.into_tensor(input.datum_type()).into_tvalue()
}

/// `input`, one matrix (every axis but `k_axis` and `mn_axis` 1), packed as tract's
/// `OptMatMulPack` with `formats` would (one format, or tract's `ModePicker::VecVsMat` pair: the
/// first for a single column, the second for several); `None` where tipedge has no faster code
/// for the format or the layout. `fresh`: map the packed copy's pages in at once ([`populate`]),
/// for large copies into memory the process has not used yet (the weights at load).
fn pack_matrix(
    input: &Tensor,
    k_axis: usize,
    mn_axis: usize,
    formats: &[Box<dyn MMMInputFormat>],
    fresh: bool,
) -> Option<Box<dyn MMMInputValue>> {
    let shape = input.shape();
    let (k, mn) = (shape[k_axis], shape[mn_axis]);
    let single = (shape.iter().enumerate()).all(|(ax, d)| ax == k_axis || ax == mn_axis || *d == 1);
    if !single || k == 0 || mn == 0 {
        return None;
    }
    let format = match formats.len() {
        1 => &formats[0],
        2 => &formats[(mn > 1) as usize],
        _ => return None,
    };
    let dt = input.datum_type();
    let src = input.as_plain_ram()?;
    let size = dt.size_of();
    let matrix = Matrix {
        bytes: src.as_bytes(),
        k,
        mn,
        k_stride: input.strides()[k_axis] as usize * size,
        mn_stride: input.strides()[mn_axis] as usize * size,
    };
    let blob = |len: usize, align: usize| {
        // SAFETY: the callers below write every byte of the blob before it is read.
        let mut blob = unsafe { Blob::new_for_size_and_align(len, align) };
        if fresh {
            populate(blob.as_bytes_mut());
        }
        blob
    };
    if let Some(format) = format.downcast_ref::<PackedFormat>() {
        if format.dt.unquantized() != dt.unquantized() || !dt.is_copy() || matrix.mn_stride != size
        {
            return None;
        }
        let panel_bytes = format.single_panel_len(k) * size;
        let mut packed = blob(mn.div_ceil(format.r) * panel_bytes, format.alignment_bytes);
        let src = &matrix.bytes[..(k - 1) * matrix.k_stride + mn * size];
        copy_panel_rows(
            src,
            packed.as_bytes_mut(),
            k,
            matrix.k_stride,
            format.r * size,
            panel_bytes,
            mn * size,
        );
        Some(eager(Box::new(format.clone()), packed, panel_bytes, k, mn))
    } else if let Some(format) = format.downcast_ref::<PackedI8K4>() {
        if dt.unquantized() != DatumType::I8 || (matrix.mn_stride != 1 && matrix.k_stride != 1) {
            return None;
        }
        let panel_bytes = format.single_panel_len(k);
        let mut packed = blob(mn.div_ceil(format.r) * panel_bytes, format.alignment());
        interleave_k4(&matrix, format.r, packed.as_bytes_mut());
        Some(eager(Box::new(format.clone()), packed, panel_bytes, k, mn))
    } else {
        None
    }
}

/// What replaces `node` of `model` (optimised): [`PackI8K4`] for an `OptMatMulPack` that packs a
/// computed operand (the int8 activations of a product) into `PackedI8K4`, which tract does at
/// every pass a byte at a time; nothing for any other node (see `optimise::replace_ops`).
pub(super) fn replacement(
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<Option<Box<dyn TypedOp>>> {
    let Some(pack) = read_pack(model, node)? else {
        return Ok(None);
    };
    let input = model.outlet_fact(node.inputs[0])?;
    let k4 = pack.formats.iter().all(|f| f.is::<PackedI8K4>());
    if input.konst.is_some() || !k4 || input.datum_type.unquantized() != DatumType::I8 {
        return Ok(None);
    }
    Ok(Some(Box::new(PackI8K4 {
        formats: pack.formats.to_vec(),
        k_axis: pack.k_axis,
        mn_axis: pack.mn_axis,
        tracts: pack.op.clone(),
    })))
}

/// tract's `OptMatMulPack` into `PackedI8K4` of an operand computed at every pass, by
/// [`interleave_k4`] for a single matrix with a contiguous axis (what tipedge's graphs give it),
/// by tract's own op otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PackI8K4 {
    formats: Vec<Box<dyn MMMInputFormat>>,
    k_axis: usize,
    mn_axis: usize,
    tracts: OptMatMulPack,
}

impl Op for PackI8K4 {
    fn name(&self) -> StaticName {
        "OptMatMulPack (tipedge)".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        self.tracts.info()
    }

    op_as_typed_op!();
}

impl EvalOp for PackI8K4 {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = &inputs[0];
        match pack_matrix(input, self.k_axis, self.mn_axis, &self.formats, false) {
            Some(value) => Ok(tvec!(stored(&self.tracts, input, value))),
            None => self.tracts.eval(ctx, inputs),
        }
    }
}

impl TypedOp for PackI8K4 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.tracts.output_facts(inputs)
    }

    fn axes_mapping(
        &self,
        inputs: &[&TypedFact],
        outputs: &[&TypedFact],
    ) -> TractResult<AxesMapping> {
        self.tracts.axes_mapping(inputs, outputs)
    }

    as_op!();
}

/// A matrix of `k × mn` values in `bytes`, value `(k, x)` at byte `k · k_stride + x · mn_stride`.
struct Matrix<'a> {
    bytes: &'a [u8],
    k: usize,
    mn: usize,
    k_stride: usize,
    mn_stride: usize,
}

/// A packed matrix as tract's packers make it.
fn eager(
    format: Box<dyn MMMInputFormat>,
    packed: Blob,
    panel_bytes: usize,
    k: usize,
    mn: usize,
) -> Box<dyn MMMInputValue> {
    Box::new(EagerPackedInput {
        fact: PackedExoticFact {
            format,
            mn: mn.to_dim(),
            k,
        },
        packed: Arc::new(packed),
        panel_bytes,
        mn,
    })
}

/// Maps in the pages of `bytes`, fresh memory about to be written whole, in one system call
/// (`MADV_POPULATE_WRITE`, Linux 5.14 and later) instead of a page fault per page as the writes
/// reach them: 8 % off the int8 ViT-B/32 load when packing its weights. Where the call does not
/// exist or fails, the pages fault in as before.
fn populate(bytes: &mut [u8]) {
    #[cfg(target_os = "linux")]
    {
        // <asm-generic/mman-common.h>, the value on x86-64, aarch64 and arm; libc 0.2.191 does
        // not name it.
        const MADV_POPULATE_WRITE: libc::c_int = 23;
        // SAFETY: sysconf has no preconditions.
        let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            p if p > 0 => p as usize,
            _ => return,
        };
        // Only the whole pages inside `bytes`.
        let start = bytes.as_mut_ptr() as usize;
        let first = start.div_ceil(page) * page;
        let end = (start + bytes.len()) / page * page;
        if end > first {
            // SAFETY: the range lies inside `bytes`, which this function borrows mutably;
            // populating only maps pages in, it does not change their contents.
            unsafe {
                libc::madvise(first as *mut libc::c_void, end - first, MADV_POPULATE_WRITE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = bytes;
}

/// Lays `src`, `k` rows `k_stride` bytes apart of `width` bytes each, out in panels of
/// `row_bytes`-wide rows, `panel_bytes` apart; the bytes of `dst` no value lands on (the rows
/// after the `k`th, the lanes past `width` in the last panel) are zeroed. Source row by source
/// row, each cut into its panels' rows (a copy of a width fixed at compile time for the usual
/// widths): the source is read once, in order.
fn copy_panel_rows(
    src: &[u8],
    dst: &mut [u8],
    k: usize,
    k_stride: usize,
    row_bytes: usize,
    panel_bytes: usize,
    width: usize,
) {
    fn rows<const W: usize>(src: &[u8], dst: &mut [u8], k: usize, k_stride: usize, pb: usize) {
        let full = dst.len() / pb;
        for row in 0..k {
            let line = &src[row * k_stride..][..full * W];
            for (p, chunk) in line.chunks_exact(W).enumerate() {
                dst[p * pb + row * W..][..W].copy_from_slice(chunk);
            }
        }
    }
    let full = width / row_bytes;
    let (head, last) = dst.split_at_mut(full * panel_bytes);
    match row_bytes {
        4 => rows::<4>(src, head, k, k_stride, panel_bytes),
        8 => rows::<8>(src, head, k, k_stride, panel_bytes),
        16 => rows::<16>(src, head, k, k_stride, panel_bytes),
        32 => rows::<32>(src, head, k, k_stride, panel_bytes),
        64 => rows::<64>(src, head, k, k_stride, panel_bytes),
        _ => {
            for row in 0..k {
                let line = &src[row * k_stride..][..full * row_bytes];
                for (p, chunk) in line.chunks_exact(row_bytes).enumerate() {
                    head[p * panel_bytes + row * row_bytes..][..row_bytes].copy_from_slice(chunk);
                }
            }
        }
    }
    for panel in head.chunks_exact_mut(panel_bytes) {
        panel[k * row_bytes..].fill(0);
    }
    // The last panel when `width` is not a whole number of rows: its valid lanes, zeros after.
    if !last.is_empty() {
        let tail = width - full * row_bytes;
        last.fill(0);
        for row in 0..k {
            let at = row * k_stride + full * row_bytes;
            last[row * row_bytes..][..tail].copy_from_slice(&src[at..][..tail]);
        }
    }
}

/// Lays the int8 `matrix` (one of its strides 1) out as `PackedI8K4` with `r` lanes per panel
/// in `dst` (`⌈mn / r⌉` panels of `⌈k / 4⌉ · 4r` bytes), every byte written: zero where no value
/// lands (k past `matrix.k`, lanes past `matrix.mn`).
fn interleave_k4(matrix: &Matrix, r: usize, dst: &mut [u8]) {
    let Matrix { k, mn, .. } = *matrix;
    let blocks = k.div_ceil(4);
    let panel_bytes = blocks * 4 * r;
    debug_assert_eq!(dst.len(), mn.div_ceil(r) * panel_bytes);
    if matrix.mn_stride == 1 {
        // `[k, n]`: four source rows at a time (a row past `k` reads as zeros), sixteen lanes at
        // a time interleaved into four groups of four lanes, each group to its panel.
        let zeros = if k % 4 == 0 {
            Vec::new()
        } else {
            vec![0u8; mn]
        };
        let row = |kk: usize| match kk < k {
            true => &matrix.bytes[kk * matrix.k_stride..][..mn],
            false => &zeros[..],
        };
        // Where lane `x`'s four bytes of block `block` go.
        let place = |x: usize, block: usize| (x / r) * panel_bytes + block * 4 * r + (x % r) * 4;
        let simd = if r.is_multiple_of(4) { mn / 16 * 16 } else { 0 };
        if mn % r != 0 {
            dst[mn / r * panel_bytes..].fill(0);
        }
        for block in 0..blocks {
            let rows = [
                row(4 * block),
                row(4 * block + 1),
                row(4 * block + 2),
                row(4 * block + 3),
            ];
            for x in (0..simd).step_by(16) {
                let lanes = |i: usize| -> &[u8; 16] { rows[i][x..][..16].try_into().unwrap() };
                let groups = interleave16(lanes(0), lanes(1), lanes(2), lanes(3));
                for (g, group) in groups.iter().enumerate() {
                    dst[place(x + 4 * g, block)..][..16].copy_from_slice(group);
                }
            }
            for x in simd..mn {
                let quad = [rows[0][x], rows[1][x], rows[2][x], rows[3][x]];
                dst[place(x, block)..][..4].copy_from_slice(&quad);
            }
        }
    } else {
        // `[n, k]` (k contiguous): four lanes by four blocks at a time (a 4 × 4 transpose of
        // four-byte words), then what is left of the blocks and lanes four bytes at a time.
        debug_assert_eq!(matrix.k_stride, 1);
        let (whole, rest) = (k / 4, k % 4);
        for (p, panel) in dst.chunks_exact_mut(panel_bytes).enumerate() {
            let lanes = r.min(mn - p * r);
            let line = |x: usize| &matrix.bytes[(p * r + x) * matrix.mn_stride..][..k];
            if lanes < r {
                panel.fill(0);
            } else if rest > 0 {
                panel[whole * 4 * r..].fill(0);
            }
            let (simd_lanes, simd_blocks) = (lanes / 4 * 4, whole / 4 * 4);
            for x in (0..simd_lanes).step_by(4) {
                let lines = [line(x), line(x + 1), line(x + 2), line(x + 3)];
                for block in (0..simd_blocks).step_by(4) {
                    let words =
                        |i: usize| -> &[u8; 16] { lines[i][4 * block..][..16].try_into().unwrap() };
                    let out = transpose4(words(0), words(1), words(2), words(3));
                    for (j, o) in out.iter().enumerate() {
                        panel[(block + j) * 4 * r + 4 * x..][..16].copy_from_slice(o);
                    }
                }
            }
            for x in 0..lanes {
                let line = line(x);
                let first = if x < simd_lanes { simd_blocks } else { 0 };
                for block in first..whole {
                    panel[block * 4 * r + 4 * x..][..4].copy_from_slice(&line[4 * block..][..4]);
                }
                if rest > 0 {
                    panel[whole * 4 * r + 4 * x..][..rest].copy_from_slice(&line[4 * whole..]);
                }
            }
        }
    }
}

/// Four rows of four four-byte words transposed: word `j` of row `i` to word `i` of out `j`.
fn transpose4(a: &[u8; 16], b: &[u8; 16], c: &[u8; 16], d: &[u8; 16]) -> [[u8; 16]; 4] {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE2 is part of x86-64; the loads and stores are unaligned ones of 16-byte arrays.
    unsafe {
        use std::arch::x86_64::*;
        let load = |v: &[u8; 16]| _mm_loadu_si128(v.as_ptr().cast());
        let (a, b, c, d) = (load(a), load(b), load(c), load(d));
        let (ab_lo, ab_hi) = (_mm_unpacklo_epi32(a, b), _mm_unpackhi_epi32(a, b));
        let (cd_lo, cd_hi) = (_mm_unpacklo_epi32(c, d), _mm_unpackhi_epi32(c, d));
        let words = [
            _mm_unpacklo_epi64(ab_lo, cd_lo),
            _mm_unpackhi_epi64(ab_lo, cd_lo),
            _mm_unpacklo_epi64(ab_hi, cd_hi),
            _mm_unpackhi_epi64(ab_hi, cd_hi),
        ];
        let mut out = [[0u8; 16]; 4];
        for (o, w) in out.iter_mut().zip(words) {
            _mm_storeu_si128(o.as_mut_ptr().cast(), w);
        }
        out
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: NEON is part of aarch64; the loads and stores are of 16-byte arrays.
    unsafe {
        use std::arch::aarch64::*;
        let load = |v: &[u8; 16]| vreinterpretq_u32_u8(vld1q_u8(v.as_ptr()));
        let (a, b, c, d) = (load(a), load(b), load(c), load(d));
        let (ab_lo, ab_hi) = (vzip1q_u32(a, b), vzip2q_u32(a, b));
        let (cd_lo, cd_hi) = (vzip1q_u32(c, d), vzip2q_u32(c, d));
        let pairs = |x: uint32x4_t| vreinterpretq_u64_u32(x);
        let words = [
            vzip1q_u64(pairs(ab_lo), pairs(cd_lo)),
            vzip2q_u64(pairs(ab_lo), pairs(cd_lo)),
            vzip1q_u64(pairs(ab_hi), pairs(cd_hi)),
            vzip2q_u64(pairs(ab_hi), pairs(cd_hi)),
        ];
        let mut out = [[0u8; 16]; 4];
        for (o, w) in out.iter_mut().zip(words) {
            vst1q_u8(o.as_mut_ptr(), vreinterpretq_u8_u64(w));
        }
        out
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let rows = [a, b, c, d];
        let mut out = [[0u8; 16]; 4];
        for (j, o) in out.iter_mut().enumerate() {
            for (i, row) in rows.iter().enumerate() {
                o[4 * i..][..4].copy_from_slice(&row[4 * j..][..4]);
            }
        }
        out
    }
}

/// Sixteen lanes of four rows side by side: group `g` holds lanes `4g .. 4g + 4`, each lane's
/// four bytes in row order (`a[x], b[x], c[x], d[x]`).
fn interleave16(a: &[u8; 16], b: &[u8; 16], c: &[u8; 16], d: &[u8; 16]) -> [[u8; 16]; 4] {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE2 is part of x86-64; the loads and stores are unaligned ones of 16-byte arrays.
    unsafe {
        use std::arch::x86_64::*;
        let load = |v: &[u8; 16]| _mm_loadu_si128(v.as_ptr().cast());
        let (a, b, c, d) = (load(a), load(b), load(c), load(d));
        let (ab_lo, ab_hi) = (_mm_unpacklo_epi8(a, b), _mm_unpackhi_epi8(a, b));
        let (cd_lo, cd_hi) = (_mm_unpacklo_epi8(c, d), _mm_unpackhi_epi8(c, d));
        let groups = [
            _mm_unpacklo_epi16(ab_lo, cd_lo),
            _mm_unpackhi_epi16(ab_lo, cd_lo),
            _mm_unpacklo_epi16(ab_hi, cd_hi),
            _mm_unpackhi_epi16(ab_hi, cd_hi),
        ];
        let mut out = [[0u8; 16]; 4];
        for (o, g) in out.iter_mut().zip(groups) {
            _mm_storeu_si128(o.as_mut_ptr().cast(), g);
        }
        out
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: NEON is part of aarch64; the loads and stores are of 16-byte arrays.
    unsafe {
        use std::arch::aarch64::*;
        let mut out = [[0u8; 16]; 4];
        let rows = uint8x16x4_t(
            vld1q_u8(a.as_ptr()),
            vld1q_u8(b.as_ptr()),
            vld1q_u8(c.as_ptr()),
            vld1q_u8(d.as_ptr()),
        );
        // One interleaving store: 64 bytes, lane by lane, four rows each.
        vst4q_u8(out.as_mut_ptr().cast(), rows);
        out
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let mut out = [[0u8; 16]; 4];
        for x in 0..16 {
            out[x / 4][(x % 4) * 4..][..4].copy_from_slice(&[a[x], b[x], c[x], d[x]]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `copy_panel_rows` against tract's own packing of a `[k, mn]` matrix, for formats of the
    /// widths tract copies a row at a time and those it writes value by value, partial last
    /// panels, padding records and alignments: the bytes tract defines are equal, the others
    /// zero.
    #[test]
    fn panel_rows_are_tracts_layout() {
        let mut rng = crate::rng::Rng::new(11);
        let mut cases = 0;
        for dt in [i8::datum_type(), f16::datum_type(), f32::datum_type()] {
            let size = dt.size_of();
            for r in [1, 4, 6, 8, 16, 24, 32] {
                for align in [size, 32, 64] {
                    for end_padding in [0, 1, 3] {
                        for (k, mn) in [(1, 1), (3, 5), (17, 9), (64, 48), (7, 33), (5, 64)] {
                            let format = PackedFormat::new(dt, r, align)
                                .with_end_padding_record(end_padding);
                            let bytes: Vec<u8> =
                                (0..k * mn * size).map(|_| rng.below(256) as u8).collect();
                            let t = unsafe { Tensor::from_raw_dt(dt, &[k, mn], &bytes).unwrap() };
                            let theirs = format.pack_tensor(&t, 0, 1).unwrap();
                            let theirs = theirs.downcast_ref::<EagerPackedInput>().unwrap();
                            let theirs = theirs.packed.as_bytes();
                            let panel_bytes = format.single_panel_len(k) * size;
                            let mut ours = vec![0xA5u8; mn.div_ceil(r) * panel_bytes];
                            assert_eq!(ours.len(), theirs.len());
                            let row = r * size;
                            copy_panel_rows(
                                &bytes,
                                &mut ours,
                                k,
                                mn * size,
                                row,
                                panel_bytes,
                                mn * size,
                            );
                            let what = format!(
                                "{dt:?} r {r} align {align} pad {end_padding} k {k} mn {mn}"
                            );
                            for (p, (a, b)) in ours
                                .chunks(panel_bytes)
                                .zip(theirs.chunks(panel_bytes))
                                .enumerate()
                            {
                                let lanes = (mn * size - p * row).min(row);
                                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                                    let defined = i < k * row && i % row < lanes;
                                    if defined {
                                        assert_eq!(x, y, "{what}: panel {p} byte {i}");
                                    } else {
                                        assert_eq!(*x, 0, "{what}: panel {p} padding byte {i}");
                                    }
                                }
                            }
                            cases += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(cases, 3 * 7 * 3 * 3 * 6);
    }

    /// `interleave_k4` against tract's `PackedI8K4` packing, for `[k, n]` and `[n, k]` int8
    /// matrices (rows further apart than their width too), the panel widths tract's kernels take
    /// (4, 8, 16, 32) and others, k not a multiple of 4 and partial last panels: every byte
    /// equal.
    #[test]
    fn k4_interleave_is_tracts_layout() {
        let mut rng = crate::rng::Rng::new(12);
        let mut cases = 0;
        for r in [4, 8, 16, 32, 3, 12] {
            for (k, mn) in [
                (1, 1),
                (3, 5),
                (4, 8),
                (17, 9),
                (64, 48),
                (7, 33),
                (5, 64),
                (768, 40),
            ] {
                for mn_contiguous in [true, false] {
                    for pad in [0, 3] {
                        let (rows, width) = if mn_contiguous { (k, mn) } else { (mn, k) };
                        let stride = width + pad;
                        let bytes: Vec<u8> =
                            (0..rows * stride).map(|_| rng.below(256) as u8).collect();
                        let dense: Vec<i8> = (0..rows)
                            .flat_map(|i| bytes[i * stride..][..width].iter().map(|b| *b as i8))
                            .collect();
                        let t = Tensor::from_shape(&[rows, width], &dense).unwrap();
                        let (k_axis, mn_axis) = if mn_contiguous { (0, 1) } else { (1, 0) };
                        let format = PackedI8K4::new(r);
                        let theirs = format.prepare_one(&t, k_axis, mn_axis).unwrap();
                        let theirs = theirs.downcast_ref::<EagerPackedInput>().unwrap();
                        let theirs = theirs.packed.as_bytes();
                        let (k_stride, mn_stride) = if mn_contiguous {
                            (stride, 1)
                        } else {
                            (1, stride)
                        };
                        let matrix = Matrix {
                            bytes: &bytes,
                            k,
                            mn,
                            k_stride,
                            mn_stride,
                        };
                        let mut ours = vec![0xA5u8; theirs.len()];
                        interleave_k4(&matrix, r, &mut ours);
                        let what =
                            format!("r {r} k {k} mn {mn} mn contiguous {mn_contiguous} pad {pad}");
                        assert_eq!(
                            ours.len(),
                            mn.div_ceil(r) * format.single_panel_len(k),
                            "{what}"
                        );
                        assert!(ours == theirs, "{what}");
                        cases += 1;
                    }
                }
            }
        }
        assert_eq!(cases, 6 * 8 * 2 * 2);
    }

    /// `pack_matrix` on an activation-shaped tensor (`[1, n, k]`, either axis contiguous, and a
    /// single-column / several-columns format pair) against tract's `PackedI8K4` packing.
    #[test]
    fn activations_pack_as_tracts() {
        let mut rng = crate::rng::Rng::new(13);
        for (n, k) in [(50, 768), (1, 768), (7, 30), (16, 3072)] {
            let values: Vec<i8> = (0..n * k).map(|_| rng.below(256) as u8 as i8).collect();
            for (shape, k_axis, mn_axis) in [([1, n, k], 2, 1), ([1, k, n], 1, 2)] {
                let t = Tensor::from_shape(&shape, &values).unwrap();
                let formats: Vec<Box<dyn MMMInputFormat>> =
                    vec![Box::new(PackedI8K4::new(32)), Box::new(PackedI8K4::new(8))];
                let ours = pack_matrix(&t, k_axis, mn_axis, &formats, false).unwrap();
                let format = &formats[(n > 1) as usize];
                let theirs = format.prepare_one(&t, k_axis, mn_axis).unwrap();
                let [ours, theirs] = [&ours, &theirs].map(|v| {
                    let v = v.downcast_ref::<EagerPackedInput>().unwrap();
                    (
                        format!("{:?}", v.fact),
                        v.panel_bytes,
                        v.mn,
                        v.packed.as_bytes().to_vec(),
                    )
                });
                assert!(ours == theirs, "n {n} k {k} shape {shape:?}");
            }
        }
    }
}
