#!/usr/bin/env python3
"""What a user would write instead of `tipedge stream`: a Python loop over raw NV12 camera frames
with OpenCV (NV12 -> RGB), Pillow (bicubic resize + centre crop, as the model's sidecar says),
NumPy (normalise; Tip-Adapter's cache term on the L2-normalised feature) and onnxruntime (the
same image.onnx). The comparison `tipedge bench stream` is measured against.

Frames: the same synthetic 640x480 NV12 frame as `tipedge bench stream` (xorshift32 bytes,
seed 0x9E3779B9), classified --frames times per round; --rounds rounds, interleaved with the
encoder alone on a ready input (the ceiling), medians reported. The cache: 12 random unit keys
of 3 classes (alpha = 1.17, beta = 1), as the Rust bench's synthetic cache.

Prints one JSON line:
  {"runtime":"python+onnxruntime","encoder_fps":...,"loop_fps":...,"loop_over_encoder":...,...}

Needs: numpy, pillow, opencv-python-headless, onnxruntime (models/requirements.txt). Not used by
CI. Example:
  python models/bench_stream_python.py models/fixtures/efficientnet-lite0 --threads 1
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

import numpy as np

from common import ort_session


def xorshift_frame(n: int) -> np.ndarray:
    """The bytes of `tipedge bench stream`'s frame: xorshift32 from 0x9E3779B9, top byte each."""
    out = np.empty(n, np.uint8)
    s = 0x9E3779B9
    for i in range(n):
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        out[i] = s >> 24
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="model folder with image.onnx and image.json")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra_op_num_threads")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)

    import cv2
    import onnxruntime as ort
    from PIL import Image

    sidecar = json.load(open(os.path.join(args.model, "image.json")))
    pre = sidecar["preprocess"]
    mean = np.array(pre["mean"], np.float32).reshape(3, 1, 1)
    std = np.array(pre["std"], np.float32).reshape(3, 1, 1)
    sess = ort_session(os.path.join(args.model, "image.onnx"), args.threads)
    name = sess.get_inputs()[0].name

    rng = np.random.default_rng(0)
    dim = sidecar["embed_dim"]
    keys = rng.standard_normal((12, dim)).astype(np.float32)
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    values = np.eye(3, dtype=np.float32)[np.arange(12) // 4]
    alpha, beta = 1.17, 1.0

    w, h = args.width, args.height
    nv12 = xorshift_frame(w * h * 3 // 2).reshape(h * 3 // 2, w)

    def preprocess(frame: np.ndarray) -> np.ndarray:
        rgb = cv2.cvtColor(frame, cv2.COLOR_YUV2RGB_NV12)
        img = Image.fromarray(rgb)
        s = pre["resize"]
        if img.width <= img.height:
            size = (s, int(s * img.height / img.width))
        else:
            size = (int(s * img.width / img.height), s)
        img = img.resize(size, Image.BICUBIC)
        c = pre["crop_size"]
        left, top = int(round((img.width - c) / 2.0)), int(round((img.height - c) / 2.0))
        img = img.crop((left, top, left + c, top + c))
        x = np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0
        return ((x - mean) / std)[None]

    def classify(frame: np.ndarray):
        f = sess.run(None, {name: preprocess(frame)})[0][0]
        f /= np.linalg.norm(f)
        logits = alpha * np.exp(-beta * (1.0 - keys @ f)) @ values
        p = np.exp(logits - logits.max())
        p /= p.sum()
        return int(np.argmax(p)), float(p.max())

    ready = preprocess(nv12)
    sess.run(None, {name: ready})
    classify(nv12)
    enc, loop = [], []
    for _ in range(args.rounds):
        t = time.perf_counter()
        for _ in range(args.frames):
            sess.run(None, {name: ready})
        enc.append(args.frames / (time.perf_counter() - t))
        t = time.perf_counter()
        for _ in range(args.frames):
            classify(nv12)
        loop.append(args.frames / (time.perf_counter() - t))
    encoder_fps, loop_fps = float(np.median(enc)), float(np.median(loop))
    print(json.dumps({
        "runtime": "python+onnxruntime",
        "version": ort.__version__,
        "model": args.model,
        "threads": args.threads,
        "format": "nv12",
        "width": w,
        "height": h,
        "frames": args.frames,
        "rounds": args.rounds,
        "encoder_fps": round(encoder_fps, 2),
        "loop_fps": round(loop_fps, 2),
        "loop_over_encoder": round(loop_fps / encoder_fps, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
