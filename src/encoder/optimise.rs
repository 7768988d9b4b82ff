//! tract's optimisation of a loaded graph, with changes that leave its result the same: plain
//! integer products reach its codegen as plain products, each weight's unpacked copy leaves
//! memory soon after its packed copy exists, and the weights tract would pack a value at a time
//! are packed by tipedge's faster code ([`super::packing`]).
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
/// the int8 glue and the int8 activations' packing swapped for faster operators computing the
/// same bits ([`super::glue`], [`super::packing`]).
pub(crate) fn optimise(model: TypedModel) -> TractResult<TypedModel> {
    let mut model = optimise_in_steps(model, STEP_BYTES)?.0;
    let loops = super::glue::Loops::detect();
    replace_ops(&mut model, |model, node| {
        super::glue::replacement(model, node, loops)
    })?;
    replace_ops(&mut model, super::packing::replacement)?;
    Ok(model)
}

/// Replaces the op of every node of `model` for which `replacement` gives one (an op computing
/// the same outputs, faster); returns how many.
fn replace_ops(
    model: &mut TypedModel,
    replacement: impl Fn(&TypedModel, &TypedNode) -> TractResult<Option<Box<dyn TypedOp>>>,
) -> TractResult<usize> {
    let mut replaced = 0;
    for id in 0..model.nodes().len() {
        let node = model.node(id);
        let Some(op) = replacement(model, node)? else {
            continue;
        };
        let patch = TypedModelPatch::replace_single_op(model, node, &node.inputs, op)?;
        patch.apply(model)?;
        replaced += 1;
    }
    if replaced > 0 {
        model.compact()?;
    }
    Ok(replaced)
}

/// [`optimise`] with steps of `step_bytes`, also returning how many weights [`PackWeights`]
/// packed, and how many of them tipedge's own packing made ([`super::packing`]).
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
    /// Weights packed so far, and how many of them by tipedge's own packing (tract clones its
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

/// The output of the pack `id`, a single-input node whose input is a constant, and whether
/// tipedge's own packing made it ([`super::packing`]).
fn pack(model: &TypedModel, id: usize) -> TractResult<(TVec<TValue>, bool)> {
    let node = model.node(id);
    let input = model.outlet_fact(node.inputs[0])?.konst.clone();
    let input = input.ok_or_else(|| format_err!("{}: input is not a constant", node.name))?;
    if let Some(packed) = super::packing::pack_constant(model, node, &input)? {
        return Ok((tvec![packed], true));
    }
    let values = (node.op)
        .eval_out_of_plan(tvec![input.into_tvalue()])?
        .ok_or_else(|| format_err!("{}: cannot be evaluated at load", node.name))?;
    Ok((values, false))
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
            let loops = super::super::glue::Loops::detect();
            let glue = |m: &TypedModel, n: &TypedNode| super::super::glue::replacement(m, n, loops);
            let n = replace_ops(&mut swapped, glue).unwrap();
            eprintln!("{fixture}: {n} operators swapped");
            assert!(n > 0, "{fixture}: nothing swapped");
            let input = random_input(&tract_only, 3, 1.5);
            assert_eq!(run(swapped, &input), run(tract_only, &input), "{fixture}");
        }
    }

    /// The activations' packs swapped for tipedge's ([`super::super::packing::replacement`]): the
    /// same output bits on the int8 fixtures. Only CPUs whose int8 kernels take `PackedI8K4`
    /// have such packs (AVX-512 VNNI / AVX-VNNI, aarch64 with dot products: a Pi 5, qemu's
    /// cortex-a76); elsewhere nothing is swapped.
    #[test]
    fn k4_pack_swap_keeps_the_output_bits() {
        #[cfg(target_arch = "x86_64")]
        let k4 = std::arch::is_x86_feature_detected!("avx512vnni")
            || std::arch::is_x86_feature_detected!("avxvnni");
        #[cfg(target_arch = "aarch64")]
        let k4 = std::arch::is_aarch64_feature_detected!("dotprod");
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let k4 = false;
        let mut total = 0;
        for fixture in ["clip-tiny-int8", "clip-tiny-int8-integer", "pointwise-int8"] {
            let tract_only = optimise_in_steps(typed(fixture, Precision::F32), STEP_BYTES)
                .unwrap()
                .0;
            let mut swapped = tract_only.clone();
            let n = replace_ops(&mut swapped, super::super::packing::replacement).unwrap();
            eprintln!("{fixture}: {n} packs swapped");
            total += n;
            let input = random_input(&tract_only, 5, 1.5);
            assert_eq!(run(swapped, &input), run(tract_only, &input), "{fixture}");
        }
        assert_eq!(total > 0, k4, "{total} packs swapped");
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
            // Seven of the float transformer's nine weights are stored [k, n] and take
            // tipedge's packing on every host (tract's float kernels all take `PackedFormat`);
            // the int8 ones too, in either layout its int8 kernels take (AVX2 and a Pi 4:
            // `PackedFormat`, all nine here; VNNI and a Pi 5: `PackedI8K4`, all nine under qemu
            // cortex-a76).
            if fixture.starts_with("clip-tiny") {
                assert!(
                    by_rows >= 7,
                    "{what}: only {by_rows} packed by tipedge's code"
                );
            }
        }
    }
}
