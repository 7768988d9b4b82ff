#!/usr/bin/env python3
"""A tiny int8 CNN in quantize.py's integer form, for the test of tract's pointwise products
(tests/encoder.rs, `pointwise_integer_products_run_as_one_product_each`).

  models/fixtures/pointwise-int8/image.onnx + image.json   backbone [B,3,32,32] -> [B,16]
  models/fixtures/quant/pointwise_int8_input.npy           2 random inputs [2,3,32,32]
  models/fixtures/quant/pointwise_int8_ort.npy             onnxruntime's output on them [2,16]

The graph, with random weights (seed 0) and the ops the integer form writes (no zero points):

  QuantizeLinear(1/32) → ConvInteger 1×1 (3→8) → Cast → Mul(per-channel) → Relu
  → QuantizeLinear → ConvInteger 3×3, pad 1 (8→8) → Cast → Mul → Relu
  → QuantizeLinear → ConvInteger 1×1 (8→16) → Cast → Mul → GlobalAveragePool → Flatten

tract 0.23.9 keeps H and W apart in a 1×1 ConvInteger and runs it as H products of W columns;
tipedge rewrites it at load (src/encoder/graph.rs, plain_integer_products) so that it is one
product. Deterministic: the same bytes on every run.

  python models/make_pointwise_fixture.py
"""
import hashlib
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "pointwise-int8")
QUANT = os.path.join(HERE, "fixtures", "quant")


def main() -> None:
    rng = np.random.default_rng(0)
    nodes, inits = [], []

    def init(name, array):
        inits.append(numpy_helper.from_array(array, name))
        return name

    x = "image"
    layers = [(3, 8, 1), (8, 8, 3), (8, 16, 1)]
    for i, (cin, cout, k) in enumerate(layers):
        q = f"q{i}"
        nodes.append(helper.make_node("QuantizeLinear", [x, init(f"s{i}", np.float32(1 / 32)),
                                                         init(f"z{i}", np.int8(0))], [q]))
        w = init(f"w{i}", rng.integers(-127, 128, (cout, cin, k, k)).astype(np.int8))
        acc = f"acc{i}"
        nodes.append(helper.make_node("ConvInteger", [q, w], [acc], kernel_shape=[k, k],
                                      pads=[k // 2] * 4, strides=[1, 1]))
        nodes.append(helper.make_node("Cast", [acc], [f"f{i}"], to=TensorProto.FLOAT))
        scale = (rng.uniform(0.5, 1.5, (cout, 1, 1)) / (32 * 127 * cin * k * k) * 8).astype(np.float32)
        y = f"y{i}"
        nodes.append(helper.make_node("Mul", [f"f{i}", init(f"m{i}", scale)], [y]))
        if i + 1 < len(layers):
            nodes.append(helper.make_node("Relu", [y], [f"r{i}"]))
            x = f"r{i}"
        else:
            x = y
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], axis=1))
    graph = helper.make_graph(
        nodes, "pointwise-int8",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="tipedge make_pointwise_fixture.py")
    onnx.checker.check_model(model)
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "image.onnx")
    data = model.SerializeToString()
    with open(path, "wb") as f:
        f.write(data)
    sidecar = {
        "format": "tipedge-sidecar/1",
        "family": "backbone",
        "arch": "pointwise-int8-test",
        "tower": "image",
        "pretrained": "none",
        "graph": "image.onnx",
        "sha256": hashlib.sha256(data).hexdigest(),
        "input": {"name": "image", "shape": [None, 3, 32, 32], "dtype": "f32"},
        "output": {"name": "features", "dim": 16},
        "embed_dim": 16,
        "preprocess": {"resize": 32, "resize_mode": "shortest", "interpolation": "bilinear",
                       "crop": "center", "crop_size": 32, "mean": [0.5, 0.5, 0.5],
                       "std": [0.25, 0.25, 0.25]},
        "quantization": {"scheme": "static-s8", "format": "QOperator", "form": "integer",
                         "per_channel": True, "note": "hand-built test graph, random weights"},
    }
    with open(os.path.join(OUT, "image.json"), "w") as f:
        json.dump(sidecar, f, indent=2)
        f.write("\n")
    x = rng.normal(0, 1, (2, 3, 32, 32)).astype(np.float32)
    y = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    np.save(os.path.join(QUANT, "pointwise_int8_input.npy"), x)
    np.save(os.path.join(QUANT, "pointwise_int8_ort.npy"), y.astype(np.float32))
    print(f"wrote {path} ({len(data)} bytes) and its onnxruntime output {y.shape}, |y| max {np.abs(y).max():.3f}")


if __name__ == "__main__":
    main()
