#!/usr/bin/env python3
"""The committed int8 fixtures and their onnxruntime reference outputs (tests/quant.rs).

  models/fixtures/clip-tiny-int8/          quantize.py --scheme static-s8 --per-channel
                                           --form qoperator of the clip-tiny image tower
                                           (QLinearConv + QLinearMatMul, per-axis weight scales),
                                           calibrated on the default calibration set
                                           (calibration/assemble.py)
  models/fixtures/clip-tiny-int8-integer/  the same with --form integer (ConvInteger /
                                           MatMulInteger → Cast → Mul by the scales, + bias)
  models/fixtures/clip-tiny-int8-dynamic/  quantize.py --scheme dynamic-u8 (DynamicQuantizeLinear
                                           + MatMulInteger / ConvInteger)
  models/fixtures/quant/*.npy + manifest.json
                                           onnxruntime's output of each int8 graph on the committed
                                           preprocessed tensors reference/pre_clip_{chelsea_jpg,
                                           astronaut_jpg,camera_png}.npy, batch 3

EfficientNet-Lite0 int8 (≈ 4-5 MB) is not committed (the fixtures stay under 20 MB); its accuracy
is in models/accuracy_report.py's report.

  python calibration/assemble.py && python models/make_quant_refs.py [NAME…]

With NAMEs (e.g. clip-tiny-int8-integer) only those fixtures are rewritten; the manifest keeps the
other entries as they are. onnxruntime is not bit-reproducible across hosts: on the AVX-512 VNNI
host that added clip-tiny-int8-integer (2026-11-30), regenerating everything gave a
clip-tiny-int8/image.onnx with three activation scales one ulp off the committed one (same
onnxruntime output), and onnxruntime's output of the unchanged clip-tiny-int8-dynamic graph moved
(max |diff| vs f32 0.20 → 0.030: different u8 kernels). So only the new fixture was written there.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import OrderedDict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402

FIX = os.path.join(HERE, "fixtures")
OUT = os.path.join(FIX, "quant")
IMAGES = ["chelsea_jpg", "astronaut_jpg", "camera_png"]
GRAPHS = {
    "clip-tiny-int8": ["--scheme", "static-s8", "--per-channel", "--form", "qoperator"],
    "clip-tiny-int8-dynamic": ["--scheme", "dynamic-u8"],
    "clip-tiny-int8-integer": ["--scheme", "static-s8", "--per-channel", "--form", "integer"],
}


def load_npy(name: str) -> np.ndarray:
    return np.load(os.path.join(FIX, "reference", name))


def main() -> None:
    names = sys.argv[1:] or list(GRAPHS)
    unknown = [n for n in names if n not in GRAPHS]
    if unknown:
        raise SystemExit(f"unknown fixture(s) {unknown}; known: {list(GRAPHS)}")
    os.makedirs(OUT, exist_ok=True)
    x = np.concatenate([load_npy(f"pre_clip_{n}.npy") for n in IMAGES]).astype(np.float32)
    f32 = common.ort_run(common.ort_session(os.path.join(FIX, "clip-tiny", "image.onnx")), x)
    manifest_path = os.path.join(OUT, "manifest.json")
    old: dict = {}
    if os.path.isfile(manifest_path):
        with open(manifest_path) as f:
            old = json.load(f, object_pairs_hook=OrderedDict)
    entries: dict = {}
    for name in names:
        opts = GRAPHS[name]
        out_dir = os.path.join(FIX, name)
        subprocess.run([sys.executable, os.path.join(HERE, "quantize.py"), os.path.join(FIX, "clip-tiny"),
                        "--out", out_dir, *opts], check=True)
        y = common.ort_run(common.ort_session(os.path.join(out_dir, "image.onnx")), x)
        fname = name.replace("-", "_") + "_ort.npy"
        common.save_npy(os.path.join(OUT, fname), y)
        c = common.compare(y, f32)
        entries[fname] = OrderedDict([
            ("graph", f"{name}/image.onnx"),
            ("inputs", [f"reference/pre_clip_{n}.npy" for n in IMAGES]),
            ("shape", list(y.shape)),
            ("what", "onnxruntime output (raw features, batch 3) of the int8 graph"),
            ("vs_f32_onnxruntime", c),
        ])
        print(f"{name}: onnxruntime int8 vs f32 {common.fmt_cmp(c)}")
    manifest: "OrderedDict[str, object]" = OrderedDict()
    for name in GRAPHS:   # in GRAPHS order; fixtures not rewritten keep their entries
        fname = name.replace("-", "_") + "_ort.npy"
        if fname in entries:
            manifest[fname] = entries[fname]
        elif fname in old:
            manifest[fname] = old[fname]
    common.write_json(manifest_path, manifest)


if __name__ == "__main__":
    main()
