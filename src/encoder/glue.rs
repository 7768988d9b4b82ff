//! Faster forms of the two element-wise operators tract 0.23.9 runs around every integer product
//! of an int8 graph, a value at a time: the quantisation of the activations to int8
//! (`QuantizeLinearI8`, about 1.8 ns per value on an AVX2 host) and the cast of the products'
//! i32 sums to f32 (`Cast`, 0.8–1.9 ns per value). Together they were 14.3 ms of the int8
//! ViT-B/32 tower's run and 8.4 ms of EfficientNet-Lite0's (`tipedge bench encoder --profile`),
//! whose whole f32 run takes 29 ms on the VNNI host the int8 targets are measured on.
//!
//! [`replacement`] gives the operators that replace them in the optimised graph, node for node,
//! computing the same bits in loops the compiler vectorises (AVX2 when the CPU has it, NEON on
//! aarch64): what `QuantizeLinearI8` computes is `clamp(round_ties_to_even(x · scale) as i32 + zero_point)`
//! (tract-core `quantize_linear_f32_i8`; its `+` wraps in a release build, as here), what `Cast`
//! computes is Rust's `i32 as f32`. Tested against tract's own operators below, on edge values
//! and random bit patterns, and end to end by the int8 fixtures' parity tests.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::quant::QuantizeLinearI8;

/// What replaces `node` of `model` (optimised): [`QuantizeI8`] for an f32 → i8
/// `QuantizeLinearI8`, [`CastI32F32`] for an i32 → f32 `Cast`, nothing for any other node (see
/// `optimise::replace_ops`).
pub(super) fn replacement(
    model: &TypedModel,
    node: &TypedNode,
    loops: Loops,
) -> TractResult<Option<Box<dyn TypedOp>>> {
    if node.inputs.len() != 1 {
        return Ok(None);
    }
    let input_dt = model.outlet_fact(node.inputs[0])?.datum_type;
    let output_dt = model.outlet_fact(node.id.into())?.datum_type;
    if let Some(q) = node
        .op_as::<ElementWiseOp>()
        .and_then(|op| op.0.downcast_ref::<QuantizeLinearI8>())
    {
        if input_dt != f32::datum_type() || output_dt != i8::datum_type() {
            return Ok(None);
        }
        return Ok(Some(Box::new(QuantizeI8 {
            scale: q.scale,
            zero_point: q.zero_point as i32,
            loops,
        })));
    }
    if node.op_is::<Cast>() && input_dt == i32::datum_type() && output_dt == f32::datum_type() {
        return Ok(Some(Box::new(CastI32F32 { loops })));
    }
    Ok(None)
}

/// tract's `QuantizeLinearI8` on f32 input (`scale` is its multiplier, 1 / the ONNX scale).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct QuantizeI8 {
    pub scale: f32,
    pub zero_point: i32,
    loops: Loops,
}

impl Eq for QuantizeI8 {}

impl Op for QuantizeI8 {
    fn name(&self) -> StaticName {
        "QuantizeLinearI8 (tipedge)".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "scale: {} zero_point: {}",
            self.scale, self.zero_point
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for QuantizeI8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let xs = input.try_as_plain_ram()?;
        // SAFETY: every value is written by `quantize` before the tensor is read.
        let mut output = unsafe { Tensor::uninitialized::<i8>(input.shape())? };
        let mut ys = output.try_as_plain_ram_mut()?;
        self.loops.quantize(
            xs.as_slice::<f32>()?,
            ys.as_slice_mut::<i8>()?,
            self.scale,
            self.zero_point,
        );
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for QuantizeI8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(i8::datum_type().fact(inputs[0].shape.clone())))
    }

    as_op!();
}

/// tract's `Cast` from i32 to f32.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CastI32F32 {
    loops: Loops,
}

impl Op for CastI32F32 {
    fn name(&self) -> StaticName {
        "Cast (tipedge)".into()
    }

    op_as_typed_op!();
}

impl EvalOp for CastI32F32 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        // Converted where they lie (same size), sparing a fresh buffer and its page faults: the
        // products' sums are read by this cast only, so `into_tensor` takes them without a copy
        // (it copies a shared input, which stays as it was).
        let mut tensor = args_1!(inputs).into_tensor();
        (self.loops).cast_in_place(tensor.try_as_plain_ram_mut()?.as_slice_mut::<i32>()?);
        // SAFETY: every value now holds the bits of an f32.
        unsafe { tensor.set_datum_type(f32::datum_type()) };
        Ok(tvec!(tensor.into_tvalue()))
    }
}

impl TypedOp for CastI32F32 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::datum_type().fact(inputs[0].shape.clone())))
    }

    as_op!();
}

/// One value as tract-core 0.23.9's `quantize_linear_f32_i8` gives it: its `round_ties_to_even`
/// is IEEE round-half-to-even (`f32::round_ties_even`) for every finite value and returns
/// infinities and NaN unchanged, `as i32` saturates (NaN → 0), and the zero point's `+` wraps.
#[inline(always)]
fn quantize_one(x: f32, scale: f32, zero_point: i32) -> i8 {
    saturating_i32((x * scale).round_ties_even())
        .wrapping_add(zero_point)
        .clamp(i8::MIN as i32, i8::MAX as i32) as i8
}

/// `v as i32` (saturating, NaN → 0). On x86-64 Rust's form compiles to a scalar conversion per
/// value (the vector conversion gives i32::MIN for every out-of-range value), so it is written as
/// selects around an unchecked conversion there, which vectorise.
#[inline(always)]
#[cfg(not(target_arch = "aarch64"))]
fn saturating_i32(v: f32) -> i32 {
    const TWO_31: f32 = 2_147_483_648.0;
    let (high, low, nan) = (v >= TWO_31, v < -TWO_31, v.is_nan());
    let in_range = if high || low || nan { 0.0 } else { v };
    // SAFETY: `in_range` is finite and within [-2^31, 2^31), where the conversion is exact.
    let converted = unsafe { in_range.to_int_unchecked::<i32>() };
    if high {
        i32::MAX
    } else if low {
        i32::MIN
    } else {
        converted
    }
}

/// `v as i32`: aarch64's vector conversion (`fcvtzs`) saturates and gives 0 for NaN itself.
#[inline(always)]
#[cfg(target_arch = "aarch64")]
fn saturating_i32(v: f32) -> i32 {
    v as i32
}

#[inline(always)]
fn quantize_each(xs: &[f32], ys: &mut [i8], scale: f32, zero_point: i32) {
    for (y, x) in ys.iter_mut().zip(xs) {
        *y = quantize_one(*x, scale, zero_point);
    }
}

#[inline(always)]
fn cast_each_in_place(xs: &mut [i32]) {
    for x in xs {
        *x = (*x as f32).to_bits() as i32;
    }
}

/// The same loops compiled for AVX2 (x86-64's baseline, SSE2, has no vector rounding).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    #[target_feature(enable = "avx2")]
    pub(super) fn quantize(xs: &[f32], ys: &mut [i8], scale: f32, zero_point: i32) {
        super::quantize_each(xs, ys, scale, zero_point)
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn cast_in_place(xs: &mut [i32]) {
        super::cast_each_in_place(xs)
    }
}

/// Which compilation of the loops this CPU runs, chosen once when the graph is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Loops {
    /// Compiled for AVX2; only ever made where the CPU has it.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Compiled for the target's baseline (NEON on aarch64).
    Baseline,
}

impl Loops {
    pub(super) fn detect() -> Loops {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Loops::Avx2;
        }
        Loops::Baseline
    }

    fn quantize(self, xs: &[f32], ys: &mut [i8], scale: f32, zero_point: i32) {
        match self {
            // SAFETY: `Avx2` is made only where the CPU has AVX2 (`detect`).
            #[cfg(target_arch = "x86_64")]
            Loops::Avx2 => unsafe { avx2::quantize(xs, ys, scale, zero_point) },
            Loops::Baseline => quantize_each(xs, ys, scale, zero_point),
        }
    }

    fn cast_in_place(self, xs: &mut [i32]) {
        match self {
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Loops::Avx2 => unsafe { avx2::cast_in_place(xs) },
            Loops::Baseline => cast_each_in_place(xs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values around every rounding and clamping edge, the special values, and random bit
    /// patterns.
    fn values() -> Vec<f32> {
        let mut v = vec![
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            126.5,
            127.5,
            -127.5,
            -128.5,
            -129.5,
            8388607.5,
            8388608.0,
            -8388609.0,
            2147483520.0,
            3e9,
            -3e9,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            1e-40,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        for i in -600..600 {
            v.push(i as f32 * 0.25);
            v.push(f32::from_bits((i as f32 * 0.5).to_bits().wrapping_add(1)));
            v.push(f32::from_bits((i as f32 * 0.5).to_bits().wrapping_sub(1)));
        }
        let mut rng = crate::rng::Rng::new(5);
        v.extend((0..20_000).map(|_| f32::from_bits(rng.next_u64() as u32)));
        v.extend((0..20_000).map(|_| rng.uniform_in(-300.0, 300.0) as f32));
        v
    }

    /// `op`'s output for `input` (tract's operator or tipedge's).
    fn eval(op: &dyn TypedOp, input: Tensor) -> Tensor {
        let out = op.eval_out_of_plan(tvec![input.into_tvalue()]).unwrap();
        out.unwrap().remove(0).into_tensor()
    }

    #[test]
    fn quantize_is_tracts() {
        let xs = values();
        // (1 / scale, zero point): tipedge's symmetric activations, and asymmetric ones. A zero
        // point is applied after the cast to i32, where tract's `+` would overflow (and panic in
        // this build) only for products beyond ±2^31 with a zero point of that sign: those
        // inputs are left out for non-zero zero points.
        for (scale, zero_point) in [(1.0f32, 0i8), (17.3, 0), (0.01, 0), (1.0, 3), (41.7, -5)] {
            let xs: Vec<f32> = (xs.iter().copied())
                .filter(|x| zero_point == 0 || (x * scale).abs() < 2e9 || x.is_nan())
                .collect();
            let input = Tensor::from_shape(&[xs.len()], &xs).unwrap();
            let theirs = eval(
                &ElementWiseOp(Box::new(QuantizeLinearI8 { scale, zero_point }), None),
                input.clone(),
            );
            let op = |loops| QuantizeI8 {
                scale,
                zero_point: zero_point as i32,
                loops,
            };
            let portable = eval(&op(Loops::Baseline), input.clone());
            let ours = eval(&op(Loops::detect()), input);
            let (theirs, ours) = (
                theirs.try_as_plain_ram().unwrap(),
                ours.try_as_plain_ram().unwrap(),
            );
            let (t, o) = (
                theirs.as_slice::<i8>().unwrap(),
                ours.as_slice::<i8>().unwrap(),
            );
            // The baseline loop (the one aarch64 runs) as well as the one this CPU takes.
            let portable = portable.try_as_plain_ram().unwrap();
            let portable = portable.as_slice::<i8>().unwrap();
            for (((x, t), o), p) in xs.iter().zip(t).zip(o).zip(portable) {
                let what = format!("x {x:e} ({:#x}) scale {scale} zp {zero_point}", x.to_bits());
                assert_eq!(t, o, "{what}");
                assert_eq!(t, p, "{what} (portable)");
            }
        }
    }

    #[test]
    fn cast_is_tracts() {
        let mut rng = crate::rng::Rng::new(9);
        let mut xs = vec![
            0,
            1,
            -1,
            i32::MAX,
            i32::MIN,
            16_777_217,
            -16_777_217,
            33_554_435,
        ];
        xs.extend((0..50_000).map(|_| rng.next_u64() as i32));
        xs.extend((0..50_000).map(|_| (rng.next_u64() % 4_000_000) as i32 - 2_000_000));
        let input = Tensor::from_shape(&[xs.len()], &xs).unwrap();
        let theirs = eval(&Cast::new(f32::datum_type()), input.clone());
        let bits = |t: &Tensor| -> Vec<u32> {
            let view = t.try_as_plain_ram().unwrap();
            view.as_slice::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        let theirs = bits(&theirs);
        let op = CastI32F32 {
            loops: Loops::detect(),
        };
        // In place (the input held by the cast only), and on a copy (the input shared).
        let ours_in_place = eval(&op, input.clone());
        assert_eq!(ours_in_place.datum_type(), f32::datum_type());
        assert_eq!(bits(&ours_in_place), theirs, "in place");
        let shared = input.clone().into_tvalue();
        let out = op.eval_out_of_plan(tvec![shared.clone()]).unwrap();
        assert_eq!(
            bits(&out.unwrap()[0].clone().into_tensor()),
            theirs,
            "shared"
        );
        assert_eq!(
            shared.datum_type(),
            i32::datum_type(),
            "the shared input is untouched"
        );
        assert_eq!(*shared, input, "the shared input's values are untouched");
        // The baseline loop (the one aarch64 runs) as well as the one this CPU takes.
        let portable = CastI32F32 {
            loops: Loops::Baseline,
        };
        assert_eq!(bits(&eval(&portable, input.clone())), theirs, "portable");
        let out = portable.eval_out_of_plan(tvec![shared.clone()]).unwrap();
        let out = out.unwrap()[0].clone().into_tensor();
        assert_eq!(bits(&out), theirs, "portable, shared");
    }
}
