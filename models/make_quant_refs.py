#!/usr/bin/env python3
"""The committed int8 fixtures and their onnxruntime reference outputs (tests/quant.rs).

  models/fixtures/clip-tiny-int8/          quantize.py --scheme static-s8 --per-channel of the
                                           clip-tiny image tower (QLinearConv + QLinearMatMul,
                                           per-axis weight scales), calibrated on the default
                                           calibration set (calibration/assemble.py)
  models/fixtures/clip-tiny-int8-dynamic/  quantize.py --scheme dynamic-u8 (DynamicQuantizeLinear
                                           + MatMulInteger / ConvInteger)
  models/fixtures/quant/*.npy + manifest.json
                                           onnxruntime's output of each int8 graph on the committed
                                           preprocessed tensors reference/pre_clip_{chelsea_jpg,
                                           astronaut_jpg,camera_png}.npy, batch 3

EfficientNet-Lite0 int8 (≈ 4-5 MB) is not committed (the fixtures stay under 20 MB); its accuracy
is in models/accuracy_report.py's report.

  python calibration/assemble.py && python models/make_quant_refs.py
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
    "clip-tiny-int8": ["--scheme", "static-s8", "--per-channel"],
    "clip-tiny-int8-dynamic": ["--scheme", "dynamic-u8"],
}


def load_npy(name: str) -> np.ndarray:
    return np.load(os.path.join(FIX, "reference", name))


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    x = np.concatenate([load_npy(f"pre_clip_{n}.npy") for n in IMAGES]).astype(np.float32)
    f32 = common.ort_run(common.ort_session(os.path.join(FIX, "clip-tiny", "image.onnx")), x)
    manifest: "OrderedDict[str, object]" = OrderedDict()
    for name, opts in GRAPHS.items():
        out_dir = os.path.join(FIX, name)
        subprocess.run([sys.executable, os.path.join(HERE, "quantize.py"), os.path.join(FIX, "clip-tiny"),
                        "--out", out_dir, *opts], check=True)
        y = common.ort_run(common.ort_session(os.path.join(out_dir, "image.onnx")), x)
        fname = name.replace("-", "_") + "_ort.npy"
        common.save_npy(os.path.join(OUT, fname), y)
        c = common.compare(y, f32)
        manifest[fname] = OrderedDict([
            ("graph", f"{name}/image.onnx"),
            ("inputs", [f"reference/pre_clip_{n}.npy" for n in IMAGES]),
            ("shape", list(y.shape)),
            ("what", "onnxruntime output (raw features, batch 3) of the int8 graph"),
            ("vs_f32_onnxruntime", c),
        ])
        print(f"{name}: onnxruntime int8 vs f32 {common.fmt_cmp(c)}")
    common.write_json(os.path.join(OUT, "manifest.json"), manifest)


if __name__ == "__main__":
    main()
