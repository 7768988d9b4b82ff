#!/usr/bin/env python3
"""Time onnxruntime (CPU) on one ONNX graph: the baseline tipedge's tract numbers are compared with.

Session: intra_op_num_threads = --threads, inter_op 1, sequential execution, graph optimisation
level ORT_ENABLE_ALL. Input: batch --batch (default 1) of the graph's input; image graphs get
random N(0,1) data, token graphs (int64) get a realistic token row (SOT, ids, EOT, zero padding).
Warm-up runs, then the median (and p10/p90) wall time of --runs timed runs.

Prints one JSON line:
  {"runtime":"onnxruntime","model":...,"threads":...,"batch":...,"median_ms":...,...}
"""
from __future__ import annotations

import argparse
import json
import resource
import os
import platform
import time

import numpy as np

from common import ort_session


def make_input(inp, batch: int):
    shape = [batch if (d is None or isinstance(d, str) or d <= 0) and i == 0 else d for i, d in enumerate(inp.shape)]
    shape = [1 if (d is None or isinstance(d, str)) else int(d) for d in shape]
    rng = np.random.default_rng(0)
    if inp.type == "tensor(int64)":
        x = np.zeros(shape, np.int64)
        row = [49406, 320, 1125, 539, 320, 2368, 269, 49407]  # <sot> a photo of a cat . <eot>
        x[..., : len(row)] = row
        return x
    if inp.type == "tensor(float)":
        return rng.standard_normal(shape).astype(np.float32)
    raise SystemExit(f"unsupported input type {inp.type}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="path to an .onnx graph")
    ap.add_argument("--threads", type=int, default=1, help="intra_op_num_threads (1 or 2 on the target boards)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args(argv)

    import onnxruntime as ort

    t0 = time.perf_counter()
    sess = ort_session(args.model, args.threads)
    load_ms = (time.perf_counter() - t0) * 1e3
    inp = sess.get_inputs()[0]
    feed = {inp.name: make_input(inp, args.batch)}
    out_names = [o.name for o in sess.get_outputs()]
    for _ in range(args.warmup):
        sess.run(out_names, feed)
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        sess.run(out_names, feed)
        times.append((time.perf_counter() - t) * 1e3)
    times = np.array(times)
    print(json.dumps({
        "runtime": "onnxruntime",
        "version": ort.__version__,
        "model": args.model,
        "threads": args.threads,
        "batch": args.batch,
        "input": {"name": inp.name, "shape": list(feed[inp.name].shape)},
        "runs": args.runs,
        "median_ms": round(float(np.median(times)), 3),
        "p10_ms": round(float(np.percentile(times, 10)), 3),
        "p90_ms": round(float(np.percentile(times, 90)), 3),
        "min_ms": round(float(times.min()), 3),
        "load_ms": round(load_ms, 1),
        # whole process (the Python interpreter and numpy included, ~30-40 MiB on their own)
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
