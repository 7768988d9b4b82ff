//! tract's optimisation of a loaded graph, with changes that leave its result the same: plain
//! integer products reach its codegen as plain products, each weight's unpacked copy leaves
//! memory soon after its packed copy exists, and the weights tract would pack a value at a time
//! are packed a row at a time ([`pack_mn_contiguous`]).
//!
//! tract 0.23.9's codegen puts an `OptMatMulPack` after each constant operand of a matrix
//! product, and its next constant-propagation pass (`PropConst`) folds each into a packed
//! constant, keeping every unpacked weight in the graph beside its packed copy until the pass
//! ends; glibc then keeps what they held for reuse. Loading the f32 ViT-B/32 tower so peaked at
//! 1.5× what it then holds. [`PackWeights`] runs first in each round of tract's codegen passes
//! and makes the same folds, a few MiB of weights at a time, dropping the unpacked weights after
//! each step and returning their memory to the system. What it leaves (a weight shared by
//! several products) `PropConst` folds as before; the optimised graph is the same node for node
//! (tested below).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::format_err;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::ops::matmul::pack::OptMatMulPack;
use tract_onnx::tract_core::optim::{
    Optimizer, OptimizerSession, TypedPass, CONST_FOLD_MEM_BUDGET,
};

/// `model` (typed, decluttered) optimised for this CPU, as tract's `into_optimized`, with its
/// plain integer products made plain EinSums first and [`PackWeights`] in its codegen, then
/// the int8 glue swapped for faster operators computing the same bits ([`super::glue`]).
pub(crate) fn optimise(model: TypedModel) -> TractResult<TypedModel> {
    let mut model = optimise_in_steps(model, STEP_BYTES)?.0;
    super::glue::swap_in(&mut model)?;
    Ok(model)
}

/// [`optimise`] with steps of `step_bytes`, also returning how many weights [`PackWeights`]
/// packed, and how many of them [`pack_mn_contiguous`] did.
fn optimise_in_steps(
    mut model: TypedModel,
    step_bytes: u64,
) -> TractResult<(TypedModel, [usize; 2])> {
    plain_integer_products(&mut model)?;
    // Declutter again even for a compiled form: tract's NNEF reader leaves axis moves and
    // reshapes that only its declutter folds (skipping it left 10 more MoveAxis nodes in the
    // optimised clip-tiny; tests/encoder.rs compares the optimised graphs).
    model.declutter()?;
    let packed = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let mut codegen = Optimizer::codegen();
    let pass = PackWeights {
        step_bytes,
        packed: packed.clone(),
    };
    codegen.add_pass(0, Box::new(pass));
    model.optimize_with_session(&mut codegen.session())?;
    let packed = packed.each_ref().map(|n| n.load(Ordering::Relaxed));
    Ok((model, packed))
}

/// Rewrites every integer product that carries no quantisation (what tract makes of ONNX's
/// MatMulInteger and ConvInteger without zero points, the products of `models/quantize.py`'s
/// integer form) into a plain two-input i8 × i8 → i32 EinSum, before tract's codegen; returns
/// how many.
///
/// tract 0.23.9 lowers those ops to a quantised EinSum with nine inputs (the two operands, a zero
/// bias, zero points 0 and scales 1) and removes the quantisation only in its codegen pass, after
/// the pass that merges consecutive axes of the same role (which takes two-input EinSums only).
/// A 1×1 convolution over `[C, H, W]` then keeps H and W apart and runs as H products of W
/// columns each instead of one product of H·W columns (EfficientNet-Lite0's pointwise
/// convolutions: 112 products of 112 × 32 × 16). The sums are exact integers either way, so the
/// features are the same bit for bit (tests/encoder.rs checks the int8 fixtures against
/// onnxruntime).
fn plain_integer_products(model: &mut TypedModel) -> TractResult<usize> {
    use tract_onnx::tract_core::ops::einsum::EinSum;
    let uniform = |model: &TypedModel, outlet: OutletId, value: f32| -> TractResult<bool> {
        let fact = model.outlet_fact(outlet)?;
        Ok(match &fact.konst {
            Some(t) => t.is_uniform() && t.cast_to_scalar::<f32>()? == value,
            None => false,
        })
    };
    let mut rewritten = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(op) = node.op_as::<EinSum>() else {
            continue;
        };
        let i32_out = i32::datum_type();
        if op.q_params != Some(i32_out) || op.operating_dt != i32_out || node.inputs.len() != 9 {
            continue;
        }
        let i8_operand = |slot: usize| -> TractResult<bool> {
            Ok(model.outlet_fact(node.inputs[slot])?.datum_type == i8::datum_type())
        };
        // Inputs: a, b, bias, a0, a_scale, b0, b_scale, c0, c_scale.
        let trivial = i8_operand(0)?
            && i8_operand(1)?
            && [2, 3, 5, 7]
                .into_iter()
                .map(|slot| uniform(model, node.inputs[slot], 0.0))
                .chain([4, 6, 8].map(|slot| uniform(model, node.inputs[slot], 1.0)))
                .try_fold(true, |all, t| t.map(|t| all && t))?;
        if !trivial {
            continue;
        }
        let plain = EinSum {
            axes: op.axes.extract_sub_mapping(&[0, 1], &[0])?,
            operating_dt: i32_out,
            q_params: None,
        };
        let mut patch = TypedModelPatch::new(format!("plain integer product {}", node.name));
        let taps = patch.taps(model, &node.inputs[0..2])?;
        let out = patch.wire_node(&node.name, plain, &taps)?[0];
        patch.shunt_outside(model, id.into(), out)?;
        patch.apply(model)?;
        rewritten += 1;
    }
    if rewritten > 0 {
        model.compact()?;
    }
    Ok(rewritten)
}

/// Folds `Const → OptMatMulPack` pairs into packed constants, as tract's `PropConst` would,
/// `step_bytes` of weights per step; after each step the unpacked weights (no longer used) leave
/// the graph and the memory they held goes back to the system.
#[derive(Debug, Clone)]
struct PackWeights {
    step_bytes: u64,
    /// Weights packed so far, and how many of them by [`pack_mn_contiguous`] (tract clones its
    /// passes for every round).
    packed: Arc<[AtomicUsize; 2]>,
}

/// Bytes of unpacked weights packed per step: about what the load holds twice. Small models take
/// one step.
const STEP_BYTES: u64 = 16 << 20;

impl PackWeights {
    /// The next step: packs whose only input is a constant used by nothing else, in graph order,
    /// up to `step_bytes` of input (at least one), none named in `left`.
    fn pending(&self, model: &TypedModel, left: &HashSet<String>) -> TractResult<Vec<usize>> {
        let mut found = Vec::new();
        let mut bytes = 0;
        for node in model.nodes() {
            if bytes >= self.step_bytes {
                break;
            }
            if !node.op_is::<OptMatMulPack>() || node.inputs.len() != 1 || left.contains(&node.name)
            {
                continue;
            }
            let input = node.inputs[0];
            let sole_use = model.node(input.node).outputs[input.slot].successors.len() == 1;
            let fact = model.outlet_fact(input)?;
            if sole_use && fact.konst.is_some() {
                found.push(node.id);
                bytes += mem_size(fact);
            }
        }
        Ok(found)
    }
}

/// Bytes a fact's tensor takes (as tract's `PropConst` counts them).
fn mem_size(fact: &TypedFact) -> u64 {
    fact.mem_size().as_i64().unwrap_or(i64::MAX) as u64
}

impl TypedPass for PackWeights {
    fn reset(&mut self) -> TractResult<()> {
        Ok(())
    }

    fn next(
        &mut self,
        _session: &mut OptimizerSession,
        _model: &TypedModel,
    ) -> TractResult<Option<TypedModelPatch>> {
        Ok(None)
    }

    fn run_direct(&mut self, model: &mut TypedModel) -> TractResult<bool> {
        let mut changed = false;
        // Packs whose result PropConst's size rule refuses: left to run at every inference.
        let mut left = HashSet::new();
        loop {
            let ids = self.pending(model, &left)?;
            if ids.is_empty() {
                return Ok(changed);
            }
            for id in ids {
                let (values, by_rows) = pack(model, id)?;
                let node = model.node(id);
                // PropConst's size rule: a fold may not grow its input beyond the budget.
                let input_mem = mem_size(model.outlet_fact(node.inputs[0])?);
                let output_mem: u64 = values
                    .iter()
                    .map(|t| (t.datum_type().size_of() * t.volume()) as u64)
                    .sum();
                if output_mem > input_mem.max(CONST_FOLD_MEM_BUDGET) {
                    left.insert(node.name.clone());
                    continue;
                }
                let exotic = model.outlet_fact(id.into())?.exotic_fact.clone();
                let [value] = <[TValue; 1]>::try_from(values.into_vec())
                    .map_err(|v| format_err!("{} gave {} outputs", node.name, v.len()))?;
                let mut patch = TypedModelPatch::new(format!("pack {}", node.name));
                let konst = Const::new_with_opt_exotic_fact(value.into_arc_tensor(), exotic)?;
                let wire = patch.wire_node(&node.name, konst, &[])?[0];
                patch.shunt_outside(model, id.into(), wire)?;
                patch.apply(model)?;
                self.packed[0].fetch_add(1, Ordering::Relaxed);
                self.packed[1].fetch_add(by_rows as usize, Ordering::Relaxed);
                changed = true;
            }
            // Drops the unpacked weights (nothing uses them now) and hands what they held back to
            // the system: glibc would keep it for its own reuse, which the packed weights (in
            // other sizes and alignments) mostly do not get.
            model.compact()?;
            release_freed_memory();
        }
    }
}

/// Hands the memory the load freed (the parsed model's tensors, replaced by the optimised
/// graph's packed copies) back to the system. glibc keeps freed heap memory for reuse, so
/// without this a loaded ViT-B/32 stayed 121 MiB above what it holds (`tipedge bench encoder`'s
/// resident memory after load) — memory a 1 GB board does not have to spare.
pub(super) fn release_freed_memory() {
    // SAFETY: glibc's malloc_trim only returns unused heap pages; it is thread-safe.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
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

/// The output of the pack `id`, a single-input node whose input is a constant, and whether
/// [`pack_mn_contiguous`] made it.
fn pack(model: &TypedModel, id: usize) -> TractResult<(TVec<TValue>, bool)> {
    let node = model.node(id);
    let input = model.outlet_fact(node.inputs[0])?.konst.clone();
    let input = input.ok_or_else(|| format_err!("{}: input is not a constant", node.name))?;
    if let Some(packed) = pack_mn_contiguous(model, node, &input)? {
        return Ok((tvec![packed], true));
    }
    let values = (node.op)
        .eval_out_of_plan(tvec![input.into_tvalue()])?
        .ok_or_else(|| format_err!("{}: cannot be evaluated at load", node.name))?;
    Ok((values, false))
}

/// What tract's `OptMatMulPack` makes of a constant matrix whose mn axis is contiguous (a weight
/// stored `[k, n]`), made panel by panel a row at a time; `None` for any other pack (tract's
/// own code then runs).
///
/// tract 0.23.9 copies such a matrix a panel row at a time only when a row is 16 to 128 bytes
/// wide; any other width goes through its per-value writer (`PackedFormat::pack_t`), about
/// 0.8 ns per value. That includes the 8-byte rows of int8 weights for its AVX2 kernel
/// (`avx2_mmm_i32_8x8`) and its aarch64 kernel without dot-product instructions
/// (`arm64simd_mmm_i32_8x8`, a Pi 4): packing the int8 ViT-B/32 tower's 85 M weight values that
/// way was a fifth of its load. (The VNNI and SDOT kernels take `PackedI8K4`, another format,
/// left to tract.) The pages of the packed copy are mapped in at once ([`populate`]). The
/// layout is tract's: value
/// `(k, x)` at `(x / r) · panel + k · r + x % r`, a panel being `(k + end_padding_record) · r`
/// values rounded up to the format's alignment; the bytes tract leaves unwritten (the padding
/// records, the lanes past `mn` in the last panel) are zero here. Tested byte for byte against
/// tract's packing below.
fn pack_mn_contiguous(
    model: &TypedModel,
    node: &TypedNode,
    input: &Arc<Tensor>,
) -> TractResult<Option<TValue>> {
    use tract_linalg::mmm::PackedMatrixStorage;
    use tract_linalg::mmm::{EagerPackedInput, MMMInputValue, PackedExoticFact};
    use tract_linalg::pack::PackedFormat;
    use tract_onnx::tract_core::ops::matmul::pack::DynPackedExoticFact;

    let Some(op) = node.op_as::<OptMatMulPack>() else {
        return Ok(None);
    };
    let output = model.outlet_fact(node.id.into())?;
    let Some(exotic) = output.exotic_fact.as_ref() else {
        return Ok(None);
    };
    let Some(exotic) = exotic.downcast_ref::<DynPackedExoticFact>() else {
        return Ok(None);
    };
    let mapping = op.axes_mapping(&[model.outlet_fact(node.inputs[0])?], &[output])?;
    let (k_axis, mn_axis) = (mapping.axis('K')?, mapping.axis('M')?);
    let (Some(&k_axis), Some(&mn_axis)) = (k_axis.inputs[0].first(), mn_axis.inputs[0].first())
    else {
        return Ok(None);
    };
    let shape = input.shape();
    let (k, mn) = (shape[k_axis], shape[mn_axis]);
    // One matrix (every other axis 1), its mn axis contiguous.
    let single = (shape.iter().enumerate()).all(|(ax, d)| ax == k_axis || ax == mn_axis || *d == 1);
    if !single || k == 0 || mn == 0 || input.strides()[mn_axis] != 1 {
        return Ok(None);
    }
    // tract's `ModePicker`: one format, or one for a single column and one for several.
    let format = match exotic.packers.len() {
        1 => &exotic.packers[0],
        2 => &exotic.packers[(mn > 1) as usize],
        _ => return Ok(None),
    };
    let Some(format) = format.downcast_ref::<PackedFormat>() else {
        return Ok(None);
    };
    let dt = input.datum_type();
    if format.dt.unquantized() != dt.unquantized() || !dt.is_copy() {
        return Ok(None);
    }
    let size = dt.size_of();
    let row_bytes = format.r * size;
    let panel_bytes = format.single_panel_len(k) * size;
    let panels = mn.div_ceil(format.r);
    let k_stride_bytes = input.strides()[k_axis] as usize * size;
    let Some(src) = input.as_plain_ram() else {
        return Ok(None);
    };
    let src = &src.as_bytes()[..(k - 1) * k_stride_bytes + mn * size];
    // SAFETY: a fresh blob of `panels · panel_bytes` bytes (as tract allocates it), every byte of
    // it written by `copy_panel_rows` before it is read.
    let mut packed =
        unsafe { Blob::new_for_size_and_align(panels * panel_bytes, format.alignment_bytes) };
    populate(packed.as_bytes_mut());
    copy_panel_rows(
        src,
        packed.as_bytes_mut(),
        k,
        k_stride_bytes,
        row_bytes,
        panel_bytes,
        mn * size,
    );
    let value: Box<dyn MMMInputValue> = Box::new(EagerPackedInput {
        fact: PackedExoticFact {
            format: Box::new(format.clone()),
            mn: mn.to_dim(),
            k,
        },
        packed: Arc::new(packed),
        panel_bytes,
        mn,
    });
    let storage = PackedMatrixStorage::new_batched(&op.output_shape(shape), tvec![value]);
    Ok(Some(storage.into_tensor(dt).into_tvalue()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::graph::{typed_from_onnx, Inputs};
    use crate::encoder::{Precision, RunOptions};
    use crate::sidecar::Tower;
    use std::path::Path;

    fn typed(fixture: &str, precision: Precision) -> TypedModel {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models/fixtures")
            .join(fixture)
            .join("image.onnx");
        let sidecar = crate::encoder::read_sidecar(&path, Tower::Image).unwrap();
        let side = sidecar.recipe().unwrap().crop_size as usize;
        let opts = RunOptions {
            precision,
            ..RunOptions::default()
        };
        let item = [3, side, side];
        let inputs = Inputs::one(f32::datum_type(), &item);
        typed_from_onnx(&path, &sidecar, inputs, &opts).unwrap().0
    }

    fn describe(model: &TypedModel) -> Vec<String> {
        let node = |n: &TypedNode| {
            let inputs: Vec<String> = n.inputs.iter().map(|i| format!("{i:?}")).collect();
            let facts: Vec<String> = n.outputs.iter().map(|o| format!("{:?}", o.fact)).collect();
            format!(
                "{} {} {:?} {inputs:?} {facts:?}",
                n.name,
                n.op.name(),
                n.op.info().ok()
            )
        };
        model.nodes().iter().map(node).collect()
    }

    fn run(model: TypedModel, input: &Tensor) -> Vec<u32> {
        let dt = model.input_fact(0).unwrap().datum_type;
        let input = input.cast_to_dt(dt).unwrap().into_owned();
        let out = model
            .into_runnable()
            .unwrap()
            .run(tvec![input.into()])
            .unwrap();
        let out = out[0].cast_to::<f32>().unwrap();
        let view = out.try_as_plain_ram().unwrap();
        let values = view.as_slice::<f32>().unwrap();
        values.iter().map(|v| v.to_bits()).collect()
    }

    /// `copy_panel_rows` against tract's own packing of a `[k, mn]` matrix, for formats of the
    /// widths tract copies a row at a time and those it writes value by value, partial last
    /// panels, padding records and alignments: the bytes tract defines are equal, the others
    /// zero.
    #[test]
    fn panel_rows_are_tracts_layout() {
        use tract_linalg::mmm::EagerPackedInput;
        use tract_linalg::pack::PackedFormat;
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

    /// An input for `model`, uniform in ±`range`.
    fn random_input(model: &TypedModel, seed: u64, range: f64) -> Tensor {
        let fact = model.input_fact(0).unwrap();
        let shape = fact.shape.as_concrete().unwrap().to_vec();
        let mut rng = crate::rng::Rng::new(seed);
        let values: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| rng.uniform_in(-range, range) as f32)
            .collect();
        Tensor::from_shape(&shape, &values).unwrap()
    }

    /// The int8 glue swapped for tipedge's operators ([`super::super::glue`]): the same output
    /// bits on the int8 fixtures (QOperator, dynamic, integer forms and the pointwise one).
    #[test]
    fn glue_swap_keeps_the_output_bits() {
        for fixture in [
            "clip-tiny-int8",
            "clip-tiny-int8-dynamic",
            "clip-tiny-int8-integer",
            "pointwise-int8",
        ] {
            let tract_only = optimise_in_steps(typed(fixture, Precision::F32), STEP_BYTES)
                .unwrap()
                .0;
            let mut swapped = tract_only.clone();
            let n = super::super::glue::swap_in(&mut swapped).unwrap();
            eprintln!("{fixture}: {n} operators swapped");
            assert!(n > 0, "{fixture}: nothing swapped");
            let input = random_input(&tract_only, 3, 1.5);
            assert_eq!(run(swapped, &input), run(tract_only, &input), "{fixture}");
        }
    }

    #[test]
    fn packing_in_steps_gives_tracts_own_graph() {
        for (fixture, precision) in [
            ("clip-tiny", Precision::F32),
            ("clip-tiny", Precision::F16),
            ("clip-tiny-int8-integer", Precision::F32),
            ("efficientnet-lite0", Precision::F32),
        ] {
            let what = format!("{fixture} {}", precision.name());
            let model = typed(fixture, precision);
            let mut theirs = model.clone();
            plain_integer_products(&mut theirs).unwrap();
            let theirs = theirs.into_optimized().unwrap();
            // Steps of 256 KiB: several steps even for the small graphs.
            let (ours, [packed, by_rows]) = optimise_in_steps(model, 256 << 10).unwrap();
            assert_eq!(describe(&ours), describe(&theirs), "{what}");
            let input = random_input(&theirs, 7, 1.0);
            assert_eq!(run(ours, &input), run(theirs, &input), "{what}");
            eprintln!("{what}: {packed} weights packed by PackWeights, {by_rows} a row at a time");
            if fixture.starts_with("clip-tiny") {
                assert!(
                    packed >= 8,
                    "{what}: only {packed} weights packed by PackWeights"
                );
            }
            // Seven of the float transformer's nine weights are stored [k, n] and take the
            // row-at-a-time path on every host (tract's float kernels all take `PackedFormat`);
            // the int8 one's do where the int8 kernel does (AVX2: all nine; VNNI: none).
            if fixture == "clip-tiny" {
                assert!(
                    by_rows >= 7,
                    "{what}: only {by_rows} packed a row at a time"
                );
            }
        }
    }
}
