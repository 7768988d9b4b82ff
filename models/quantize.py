#!/usr/bin/env python3
"""Quantise a tipedge image graph to int8 in forms tract runs on its integer kernels.

tract (0.23.9) runs int8 on integer kernels only for QOperator graphs (QLinearMatMul,
QLinearConv, MatMulInteger, ConvInteger); QuantizeLinear/DequantizeLinear (QDQ) graphs run in
f32. This script uses onnxruntime's quantiser in QOperator form, shapes the graph so tract loads
it and runs it fast, and (static-s8, --form integer, the default) rewrites the products into
MatMulInteger / ConvInteger with a float rescale:

* Gemm nodes become MatMul + Add first (onnxruntime would emit its contrib op QGemm, which tract
  cannot load), with the weight transposed once if transB.
* Only products with a constant weight are quantised (the patch embedding Conv, the Linear layers
  of attention and MLP, the projection). The attention products QKᵀ and A·V, LayerNorm,
  Softmax, GELU and the residual adds stay in f32: they are a few percent of the work and most of
  the accuracy risk.
* A ReLU / ReLU6 (Clip) right after a quantised product is quantised with it, so the product's
  output gets the activation's range ([0, 6]) rather than the much wider pre-activation range.
  --skip-depthwise and --keep-float NAME… leave chosen convolutions in f32 (for CNNs: depthwise,
  stem and head are the int8-unfriendly layers).
* Schemes (--scheme):
    static-s8  (default) symmetric int8 activations and weights, zero points 0, scales fixed by
               calibration. tract's QLinearMatMul then needs no zero-point correction sums
               (with asymmetric u8 activations those Reduce<Sum> nodes took 70 % of tract's time).
    static-u8  onnxruntime's usual static form: asymmetric u8 activations, s8 weights (for
               comparison: the form onnxruntime itself is fastest on).
    dynamic-u8 onnxruntime's dynamic quantisation: DynamicQuantizeLinear + MatMulInteger,
               no calibration.
  --per-channel: one weight scale per output channel (tract 0.23.9 handles per-axis weight
  scales in QLinearMatMul / QLinearConv; `models/quantize.py --check` and the Rust tests compare
  with onnxruntime).
* Graph form of static-s8 (--form):
    integer    (default) each product is rewritten from onnxruntime's QLinearMatMul / QLinearConv
               to MatMulInteger / ConvInteger (int8 × int8 → int32, no zero-point inputs) →
               Cast(float) → Mul(s_x·s_w) [→ Add(bias) for a Conv]. The product's int8 output
               requantisation and the DequantizeLinear after it disappear; a BatchNormalization
               with constant parameters that is the only consumer of a conv's output is folded
               into the Mul / Add. tract 0.23.9 lowers QLinearMatMul / QLinearConv with
               un-fused requantisation glue (Scale, Min, Max, Cast, Sub, Reduce<Sum>) around every
               product; the integer form has none (measured: ViT-B/32 int8 0.87 → 0.615 of the f32
               time, EfficientNet-Lite0 int8 3.97 → 2.12, features closer to f32, on an AVX-512 VNNI
               host; models/QUANTIZATION.md). Needs zero points 0 (refused otherwise).
    qoperator  the QLinearMatMul / QLinearConv graph as onnxruntime writes it (this script's
               output before --form existed, byte for byte).
* Calibration (static schemes): the images of --calibration (a folder, see calibration/README.md),
  preprocessed exactly like the f32 graph's sidecar says; --calibrate minmax | percentile |
  entropy.

Output: DIR/image.onnx + DIR/image.json. The sidecar is the f32 graph's with the new sha256 and a
`quantization` block (scheme, per_channel, calibration method, image count and manifest hash,
nodes quantised, source graph hash; for the integer form also "form": "integer" and
"integer_form": the products rewritten per op type and the BatchNorms folded; no "form" key means
the QOperator products as onnxruntime wrote them). Afterwards the script compares onnxruntime's
output on the int8 graph with the f32 graph on the held-out --check images (cosine, mean and
minimum).

Recommended recipes (models/QUANTIZATION.md has the measurements behind them):

  python calibration/assemble.py                       # calibration/images, the default
  python models/quantize.py out/vit-b-32 --out out/vit-b-32-int8 --per-channel
  python models/quantize.py out/efficientnet-lite0 --out out/effnet-int8 --per-channel \\
      --skip-depthwise --calibrate percentile --keep-float /conv_stem/ /conv_head/ \\
      --check examples/textile/query

int8 graphs are fast under tract on ARM (SMLAL / SDOT kernels) and on x86 with VNNI; on x86
without VNNI tract 0.23.9's int8 kernel is far slower than f32 (tipedge warns when it loads one).
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import sys
import tempfile
from collections import Counter, OrderedDict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def list_images(paths: list[str]) -> list[str]:
    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            for root, _dirs, files in os.walk(p):
                out += [os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTS)]
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise SystemExit(f"{p}: no such file or folder")
    return sorted(out)


def load_model_dir(arg: str) -> tuple[str, dict]:
    graph = os.path.join(arg, "image.onnx") if os.path.isdir(arg) else arg
    side = os.path.splitext(graph)[0] + ".json"
    if not os.path.isfile(graph):
        raise SystemExit(f"{graph}: no such graph")
    if not os.path.isfile(side):
        raise SystemExit(f"{side}: the graph has no sidecar (export it with models/export_*.py)")
    with open(side) as f:
        sidecar = json.load(f, object_pairs_hook=OrderedDict)
    if sidecar.get("tower") != "image":
        raise SystemExit(f"{side}: only image towers are quantised (tower is {sidecar.get('tower')!r})")
    if "quantization" in sidecar:
        raise SystemExit(f"{side}: this graph is already quantised; start from the f32 graph")
    return graph, sidecar


# ----------------------------------------------------------------------------------------------
# graph preparation


def fold_fp16_casts(model) -> int:
    """Undo the compact fp16 storage of the committed fixtures (an fp16 initializer followed by
    Cast(to=FLOAT)): the weight becomes an f32 initializer again, which the quantiser needs to
    see as a constant. Returns how many were folded."""
    from onnx import TensorProto, helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    folded = {}
    for node in model.graph.node:
        if node.op_type != "Cast" or node.input[0] not in inits:
            continue
        to = next(helper.get_attribute_value(a) for a in node.attribute if a.name == "to")
        if to == TensorProto.FLOAT and inits[node.input[0]].data_type == TensorProto.FLOAT16:
            folded[node.output[0]] = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
    if not folded:
        return 0
    keep = [n for n in model.graph.node if not (n.op_type == "Cast" and n.output[0] in folded)]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    for name, arr in folded.items():
        model.graph.initializer.append(numpy_helper.from_array(arr, name))
    used = {i for n in model.graph.node for i in n.input}
    kept = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return len(folded)


def gemm_to_matmul(model) -> int:
    """Rewrite Gemm(A, B, C) with a constant B as MatMul(A, B') + Add(C) (alpha = beta = 1,
    transA = 0). Returns how many were rewritten."""
    import onnx
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    nodes = []
    n = 0
    for node in model.graph.node:
        if node.op_type != "Gemm" or node.input[1] not in inits:
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            w = np.ascontiguousarray(w.T)
        wname = node.input[1] + "_kn"
        model.graph.initializer.append(numpy_helper.from_array(w.astype(np.float32), wname))
        mm_out = node.output[0] + ("_mm" if len(node.input) > 2 else "")
        nodes.append(helper.make_node("MatMul", [node.input[0], wname], [mm_out], name=node.name + "_matmul"))
        if len(node.input) > 2 and node.input[2]:
            nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]], name=node.name + "_bias"))
        n += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    # drop initializers nobody uses any more (the transposed-away originals)
    used = {i for node in model.graph.node for i in node.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    onnx.checker.check_model(model)
    return n


def is_depthwise(node) -> bool:
    from onnx import helper

    group = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "group"), 1)
    return node.op_type == "Conv" and group > 1


def weighted_products(model, skip_depthwise: bool, keep_float: list[str]) -> list[str]:
    """Names of the MatMul / Conv nodes whose weight (input 1) is an initializer."""
    inits = {i.name for i in model.graph.initializer}
    consts = {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    out = []
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Conv") and (node.input[1] in inits or node.input[1] in consts):
            if skip_depthwise and is_depthwise(node):
                continue
            if any(k in node.name for k in keep_float):
                continue
            out.append(node.name)
    # An activation right after a quantised product (ReLU6 = Clip, Relu) is quantised with it:
    # onnxruntime then gives the product's output the activation's range ([0, 6] instead of the
    # pre-activation range, often ten times wider) and drops the activation node.
    producer = {o: n.name for n in model.graph.node for o in n.output}
    chosen = set(out)
    for node in model.graph.node:
        if node.op_type in ("Clip", "Relu") and producer.get(node.input[0]) in chosen:
            out.append(node.name)
    return out


# ----------------------------------------------------------------------------------------------
# calibration


class ImageReader:
    """onnxruntime CalibrationDataReader over preprocessed images, one image per batch."""

    def __init__(self, files: list[str], pre: dict, input_name: str):
        self.files = files
        self.pre = pre
        self.input_name = input_name
        self.i = 0

    def get_next(self):
        if self.i >= len(self.files):
            return None
        f = self.files[self.i]
        self.i += 1
        if self.i % 10 == 0 or self.i == len(self.files):
            print(f"   calibration {self.i}/{len(self.files)}", file=sys.stderr)
        return {self.input_name: common.preprocess(f, self.pre).numpy()}

    def rewind(self):
        self.i = 0


def files_digest(files: list[str]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(common.sha256_file(f).encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# integer form (static-s8)


def integer_form(model) -> "OrderedDict[str, object]":
    """Rewrite onnxruntime's static-s8 QOperator products into the integer form, in place.

    Every

        QLinearMatMul(xq, s_x, 0, Wq, s_w, 0, s_y, 0) → DequantizeLinear(·, s_y, 0)
        QLinearConv(xq, s_x, 0, Wq, s_w, 0, s_y, 0, B_i32) → DequantizeLinear(·, s_y, 0)

    becomes

        MatMulInteger(xq, Wq) → Cast(float) → Mul(s_x·s_w)
        ConvInteger(xq, Wq)   → Cast(float) → Mul(s_x·s_w[c]) → Add(B_i32·s_x·s_w[c])

    (s_w per output channel with --per-channel: shape [N] for a MatMul, [C, 1, 1] for a Conv). The
    int32 accumulator goes straight to float: the int8 requantisation of the product's output
    (and its rounding and clamp to the calibrated range) and the DequantizeLinear after it are
    gone. tract 0.23.9 lowers QLinearMatMul / QLinearConv with that requantisation as separate
    Scale / Min / Max / Cast / Sub / Reduce<Sum> nodes around every product (the per-channel
    scale is not fused into the kernel); MatMulInteger without zero points has none of them.

    A constant-parameter BatchNormalization that is the only consumer of a convolution's
    dequantised output is folded into that Mul / Add (tract does not fold BatchNorm into a
    quantised convolution). A consumer of the int8 output other than DequantizeLinear (none in
    this script's graphs) gets a QuantizeLinear of the float value.

    Refuses non-zero zero points and per-row activation scales. Returns counts for the sidecar.
    """
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    graph_outputs = {o.name for o in g.output}

    def const(name: str, node) -> np.ndarray:
        if name not in inits:
            raise SystemExit(f"{node.name}: input {name!r} is not an initializer; cannot rewrite to the integer form")
        return numpy_helper.to_array(inits[name])

    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    new_inits = []
    replace: dict[int, list] = {}   # id(node) -> the nodes that take its place
    drop: set[int] = set()          # ids of nodes removed
    stats: Counter = Counter()

    for n in g.node:
        if n.op_type not in ("QLinearMatMul", "QLinearConv"):
            continue
        is_conv = n.op_type == "QLinearConv"
        x, x_s, x_z, w, w_s, w_z, y_s, y_z = n.input[:8]
        for z in (x_z, w_z, y_z):
            if z and np.any(const(z, n) != 0):
                raise SystemExit(f"{n.name}: zero point {z!r} is not 0; the integer form needs symmetric "
                                 "quantisation (--scheme static-s8), or use --form qoperator")
        sx, sw, wq = const(x_s, n), const(w_s, n), const(w, n)
        if sx.size != 1:
            raise SystemExit(f"{n.name}: per-row activation scale; the integer form needs one activation scale")
        channels = wq.shape[0] if is_conv else wq.shape[-1]
        if sw.size not in (1, channels):
            raise SystemExit(f"{n.name}: weight scale of {sw.size} values for {channels} output channels")
        scale = sx.astype(np.float64).reshape(()) * sw.astype(np.float64).ravel()  # [1] or [channels]
        bias = None
        if is_conv and len(n.input) > 8 and n.input[8]:
            bias = const(n.input[8], n).astype(np.float64) * scale   # int32 bias, scale s_x·s_w

        cons = consumers.get(n.output[0], [])
        deqs = [c for c in cons if c.op_type == "DequantizeLinear"]
        # the int8 output itself is still needed by anything but a DequantizeLinear
        requant = any(c.op_type != "DequantizeLinear" for c in cons) or n.output[0] in graph_outputs

        # A BatchNormalization right after the convolution's only DequantizeLinear, with constant
        # parameters, becomes part of the per-channel Mul / Add: y = A·x + B.
        bn = None
        if is_conv and len(deqs) == 1 and not requant and deqs[0].output[0] not in graph_outputs:
            dc = consumers.get(deqs[0].output[0], [])
            if (len(dc) == 1 and dc[0].op_type == "BatchNormalization" and len(dc[0].output) == 1
                    and all(i in inits for i in dc[0].input[1:5])):
                bn = dc[0]
        bn_attrs = {a.name: helper.get_attribute_value(a) for a in bn.attribute} if bn is not None else {}
        if bn_attrs.get("training_mode", 0):
            bn = None
        if bn is not None:
            gamma, beta, mean, var = (const(i, bn).astype(np.float64) for i in bn.input[1:5])
            a = gamma / np.sqrt(var + bn_attrs.get("epsilon", 1e-5))
            scale = scale * a
            bias = (bias * a if bias is not None else 0.0) + (beta - mean * a)
            drop.add(id(bn))
            stats["batchnorm_folded"] += 1

        shape = (-1, 1, 1) if is_conv else (-1,)   # channel axis: 1 of NCHW, last of a MatMul
        scale = scale.astype(np.float32)
        scale = scale.reshape(()) if scale.size == 1 else scale.reshape(shape)
        base = n.name or n.output[0]
        acc, acc_f = base + "_acc_i32", base + "_acc_f32"
        if bn is not None:
            out = bn.output[0]
        elif deqs:
            out = deqs[0].output[0]
        else:
            out = base + "_f32"
        mul_out = out if bias is None else base + "_scaled"
        new_inits.append(numpy_helper.from_array(scale, base + "_int_scale"))
        nodes = []
        if is_conv:
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            nodes.append(helper.make_node("ConvInteger", [x, w], [acc], name=base + "_int", **attrs))
            stats["ConvInteger"] += 1
        else:
            nodes.append(helper.make_node("MatMulInteger", [x, w], [acc], name=base + "_int"))
            stats["MatMulInteger"] += 1
        nodes.append(helper.make_node("Cast", [acc], [acc_f], name=base + "_int_cast", to=TensorProto.FLOAT))
        nodes.append(helper.make_node("Mul", [acc_f, base + "_int_scale"], [mul_out], name=base + "_int_mul"))
        if bias is not None:
            bias = np.asarray(bias, np.float32).reshape(shape)
            new_inits.append(numpy_helper.from_array(bias, base + "_int_bias"))
            nodes.append(helper.make_node("Add", [mul_out, base + "_int_bias"], [out], name=base + "_int_add"))
        for d in deqs:
            drop.add(id(d))
            if d.output[0] != out:   # a second DequantizeLinear of the same product
                nodes.append(helper.make_node("Identity", [out], [d.output[0]], name=d.name + "_int_id"))
        if requant:
            nodes.append(helper.make_node("QuantizeLinear", [out, y_s, y_z], [n.output[0]], name=base + "_int_requant"))
            stats["requantized"] += 1
        replace[id(n)] = nodes

    kept = []
    for n in g.node:
        if id(n) in replace:
            kept.extend(replace[id(n)])
        elif id(n) not in drop:
            kept.append(n)
    del g.node[:]
    g.node.extend(kept)
    g.initializer.extend(new_inits)
    used = {i for n in g.node for i in n.input} | graph_outputs
    live = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(live)

    summary: "OrderedDict[str, object]" = OrderedDict()
    summary["products"] = {k: stats[k] for k in ("ConvInteger", "MatMulInteger") if stats[k]}
    summary["batchnorm_folded"] = stats["batchnorm_folded"]
    if stats["requantized"]:
        summary["requantized"] = stats["requantized"]
    return summary


# ----------------------------------------------------------------------------------------------


def quantize(args) -> None:
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    if args.form is not None and args.scheme != "static-s8":
        raise SystemExit(f"--form applies to --scheme static-s8 only (not {args.scheme})")
    form = (args.form or "integer") if args.scheme == "static-s8" else None
    src, sidecar = load_model_dir(args.model)
    os.makedirs(args.out, exist_ok=True)
    out_graph = os.path.join(args.out, "image.onnx")
    out_side = os.path.join(args.out, "image.json")
    if os.path.abspath(out_graph) == os.path.abspath(src):
        raise SystemExit(f"{out_graph}: refusing to overwrite the f32 graph")

    print(f"== {src}")
    model = onnx.load(src)
    n_cast = fold_fp16_casts(model)
    n_gemm = gemm_to_matmul(model)
    model = onnx.shape_inference.infer_shapes(model)
    targets = weighted_products(model, args.skip_depthwise, args.keep_float)
    ops = Counter(n.op_type for n in model.graph.node if n.name in targets)
    print(f"   fp16 weights folded: {n_cast}; Gemm → MatMul + Add: {n_gemm}; products with constant weights: {dict(ops)}")
    if not targets:
        raise SystemExit(f"{src}: no MatMul or Conv with a constant weight to quantise")

    extra = {"MatMulConstBOnly": True}
    meta: "OrderedDict[str, object]" = OrderedDict()
    meta["scheme"] = args.scheme
    meta["format"] = "QOperator"
    if form == "integer":
        # absent: the QOperator products as onnxruntime wrote them (--form qoperator, and every
        # graph written before the option existed)
        meta["form"] = "integer"
    meta["per_channel"] = bool(args.per_channel)
    meta["nodes_quantized"] = dict(sorted(ops.items()))
    meta["source_sha256"] = sidecar["sha256"]

    with tempfile.TemporaryDirectory() as tmp:
        prepared = os.path.join(tmp, "prepared.onnx")
        onnx.save(model, prepared)
        if args.scheme == "dynamic-u8":
            quantize_dynamic(prepared, out_graph, per_channel=args.per_channel, weight_type=QuantType.QInt8,
                             nodes_to_quantize=targets, op_types_to_quantize=["MatMul", "Conv"],
                             extra_options=extra)
        else:
            files = list_images(args.calibration)
            if args.max_calibration:
                files = files[: args.max_calibration]
            if not files:
                raise SystemExit(f"{', '.join(args.calibration)}: no calibration images (see calibration/README.md)")
            symmetric = args.scheme == "static-s8"
            extra.update({"ActivationSymmetric": symmetric, "WeightSymmetric": True})
            if args.calibrate == "percentile":
                extra["CalibPercentile"] = args.percentile
            method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                      "entropy": CalibrationMethod.Entropy}[args.calibrate]
            print(f"   calibrating on {len(files)} images ({args.calibrate})")
            quantize_static(prepared, out_graph, ImageReader(files, sidecar["preprocess"], sidecar["input"]["name"]),
                            quant_format=QuantFormat.QOperator, op_types_to_quantize=["MatMul", "Conv", "Clip", "Relu"],
                            nodes_to_quantize=targets, per_channel=args.per_channel,
                            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=method, extra_options=extra)
            cal: "OrderedDict[str, object]" = OrderedDict()
            cal["method"] = args.calibrate
            if args.calibrate == "percentile":
                cal["percentile"] = args.percentile
            cal["images"] = len(files)
            cal["images_sha256"] = files_digest(files)
            meta["calibration"] = cal

    q = onnx.load(out_graph)
    # onnxruntime's shape inference leaves value_info with the symbolic batch name of the input on
    # some tensors and 1 on others; tract takes value_info as facts and fails to unify them.
    # Shapes follow from the input, so none are kept.
    del q.graph.value_info[:]
    if form == "integer":
        meta["integer_form"] = integer_form(q)
        print(f"   integer form: {dict(meta['integer_form'])}")
    onnx.save(q, out_graph)
    onnx.checker.check_model(q)
    domains = {n.domain for n in q.graph.node if n.domain not in ("", "ai.onnx")}
    if domains:
        raise SystemExit(f"{out_graph}: the quantiser emitted non-standard ops ({domains}); tract cannot load them")
    qops = Counter(n.op_type for n in q.graph.node)
    print("   ops:", dict(sorted(qops.items())))

    side = OrderedDict(sidecar)
    side["graph"] = "image.onnx"
    side["sha256"] = common.sha256_file(out_graph)
    side["quantization"] = meta
    common.write_json(out_side, side)
    mb = lambda p: os.path.getsize(p) / 1e6  # noqa: E731
    print(f"   wrote {out_graph} ({mb(out_graph):.1f} MB, f32 graph {mb(src):.1f} MB) and {out_side}")

    if args.check:
        check(src, out_graph, sidecar, list_images(args.check))


def check(f32_graph: str, q_graph: str, sidecar: dict, files: list[str]) -> None:
    """onnxruntime: cosine between the f32 graph's and the int8 graph's features."""
    a = common.ort_session(f32_graph)
    b = common.ort_session(q_graph)
    cos = []
    for f in files:
        x = common.preprocess(f, sidecar["preprocess"]).numpy()
        fa = common.ort_run(a, x).astype(np.float64).ravel()
        fb = common.ort_run(b, x).astype(np.float64).ravel()
        cos.append(float(fa @ fb / (np.linalg.norm(fa) * np.linalg.norm(fb) + 1e-30)))
    cos = np.array(cos)
    print(f"   onnxruntime int8 vs f32 on {len(files)} held-out images: cosine mean {cos.mean():.5f} "
          f"min {cos.min():.5f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="f32 model folder (image.onnx + image.json) or an image .onnx with its sidecar")
    ap.add_argument("--out", required=True, help="output folder (gets image.onnx + image.json)")
    ap.add_argument("--scheme", default="static-s8", choices=["static-s8", "static-u8", "dynamic-u8"])
    ap.add_argument("--form", choices=["integer", "qoperator"], default=None,
                    help="static-s8 only. integer (default): each product becomes MatMulInteger / "
                         "ConvInteger → Cast → Mul(scales) [→ Add(bias)], BatchNorm after a conv folded in "
                         "(faster under tract 0.23.9, closer to f32); qoperator: onnxruntime's "
                         "QLinearMatMul / QLinearConv as written (the script's output before --form)")
    ap.add_argument("--per-channel", action="store_true", help="one weight scale per output channel")
    ap.add_argument("--skip-depthwise", action="store_true",
                    help="keep depthwise (grouped) convolutions in f32: cheap, and the least int8-friendly layers")
    ap.add_argument("--keep-float", nargs="*", default=[], metavar="NAME",
                    help="keep the products whose node name contains NAME in f32 (e.g. /conv_head/ /conv_stem/)")
    ap.add_argument("--calibration", nargs="+", default=[os.path.join(os.path.dirname(HERE), "calibration", "images")],
                    help="calibration images: folders or files (default calibration/images, "
                         "assembled by calibration/assemble.py)")
    ap.add_argument("--max-calibration", type=int, default=0, help="use at most N calibration images (0 = all)")
    ap.add_argument("--calibrate", default="minmax", choices=["minmax", "percentile", "entropy"])
    ap.add_argument("--percentile", type=float, default=99.999, help="for --calibrate percentile")
    ap.add_argument("--check", nargs="*", help="held-out images: compare onnxruntime int8 vs f32 features")
    args = ap.parse_args()
    quantize(args)


if __name__ == "__main__":
    main()
