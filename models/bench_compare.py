#!/usr/bin/env python3
"""tract (tipedge) vs onnxruntime on the same graphs and thread counts, side by side.

For every round, every graph and every thread count it runs `tipedge bench encoder --json` and
`models/bench_ort.py` (onnxruntime: intra_op_num_threads = T, inter_op 1, sequential execution,
ORT_ENABLE_ALL) on the same .onnx file, each in a fresh process. The order of the two alternates
from round to round (tract first in even rounds, onnxruntime first in odd ones), so that slow
drifts of a shared machine hit both runtimes alike. Each invocation reports the median of
--runs timed runs after its warm-up; the table shows, per graph and thread count, the median over
the rounds of those medians and the tract/onnxruntime ratio (the median of the per-round paired
ratios, with their range). Never quote a single invocation on a busy machine.

  python models/bench_compare.py /work/bigmodels/efficientnet-lite0 /work/bigmodels/vit-b-32 \\
      --threads 1 2 --rounds 5
  python models/bench_compare.py G.onnx --images examples/textile/query --json > cmp.json

A graph argument is a model folder (its image.onnx is used) or an .onnx file with its sidecar
.json next to it (tipedge refuses graphs without one). --images passes image folders/files to
tipedge, which then also reports decode and preprocess medians per image (single thread) and
their share of the encode time per image. --tract-env KEY=VALUE sets an environment variable for
the tipedge runs only (tract reads its knobs, e.g. TRACT_DISABLE_DIRECT_SPATIAL, from the
environment).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def graph_path(arg: str) -> str:
    p = os.path.join(arg, "image.onnx") if os.path.isdir(arg) else arg
    if not os.path.isfile(p):
        raise SystemExit(f"no graph at {p}")
    return p


def label(path: str) -> str:
    parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return f"{parent}/{os.path.basename(path)}"


def fmt_mib(v) -> str:
    return "?" if v is None else f"{v:.0f}"


def run_json(cmd: list[str], env: dict | None = None) -> dict:
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr.strip()}")
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if not lines:
        raise SystemExit(f"no JSON from: {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    out = json.loads(lines[-1])
    out["_wall_s"] = time.perf_counter() - t
    return out


def tract_cmd(a, graph: str, threads: int) -> list[str]:
    cmd = [a.tipedge, "bench", "encoder", "--model", graph, "--threads", str(threads),
           "--precision", a.precision, "--batch", str(a.batch), "--runs", str(a.runs),
           "--warmup", str(a.warmup), "--json"]
    for img in a.images or []:
        cmd += ["--images", img]
    return cmd


def ort_cmd(a, graph: str, threads: int) -> list[str]:
    return [a.python, os.path.join(HERE, "bench_ort.py"), graph, "--threads", str(threads),
            "--batch", str(a.batch), "--runs", str(a.runs), "--warmup", str(a.warmup)]


def med(v):
    return statistics.median(v) if v else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("graphs", nargs="+", help="model folders or .onnx files (with sidecars)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    ap.add_argument("--runs", type=int, default=30, help="timed runs per invocation (default 30)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--precision", default="f32", choices=["f32", "f16"], help="tract precision (onnxruntime runs the graph as is)")
    ap.add_argument("--images", action="append", help="image folder/file for tipedge's decode + preprocess timing (repeatable)")
    ap.add_argument("--tipedge", default=os.path.join(REPO, "target", "release", "tipedge"))
    ap.add_argument("--python", default=sys.executable, help="interpreter with onnxruntime for bench_ort.py")
    ap.add_argument("--tract-env", action="append", default=[], metavar="KEY=VALUE",
                    help="environment variable for the tipedge runs only (tract knobs)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--json-out", metavar="FILE", help="also write the JSON object to FILE")
    a = ap.parse_args(argv)

    if not os.access(a.tipedge, os.X_OK):
        raise SystemExit(f"tipedge binary not found at {a.tipedge} (cargo build --release)")
    tenv = dict(os.environ)
    for kv in a.tract_env:
        k, _, v = kv.partition("=")
        tenv[k] = v
    graphs = [graph_path(g) for g in a.graphs]
    cells = {(g, t): {"tract": [], "ort": []} for g in graphs for t in a.threads}
    for r in range(a.rounds):
        for g in graphs:
            for t in a.threads:
                order = ["tract", "ort"] if r % 2 == 0 else ["ort", "tract"]
                for rt in order:
                    res = (run_json(tract_cmd(a, g, t), tenv) if rt == "tract"
                           else run_json(ort_cmd(a, g, t)))
                    cells[(g, t)][rt].append(res)
                    if not a.json:
                        print(f"  round {r + 1}/{a.rounds} {label(g):<32} T={t} {rt:<5} "
                              f"median {res['median_ms']:.2f} ms", file=sys.stderr, flush=True)

    results = []
    for (g, t), c in cells.items():
        tm = [x["median_ms"] for x in c["tract"]]
        om = [x["median_ms"] for x in c["ort"]]
        ratios = [x / y for x, y in zip(tm, om)]
        row = {
            "graph": g, "label": label(g), "threads": t, "batch": a.batch, "precision": a.precision,
            "tract_median_ms": med(tm), "ort_median_ms": med(om),
            "tract_round_medians_ms": tm, "ort_round_medians_ms": om,
            "ratio_median": med(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "tract_load_ms": med([x["load_ms"] for x in c["tract"]]),
            "ort_load_ms": med([x["load_ms"] for x in c["ort"]]),
            "tract_peak_rss_mib": med([x["peak_rss_mib"] for x in c["tract"] if x.get("peak_rss_mib") is not None]),
            "ort_peak_rss_mib": med([x["peak_rss_mib"] for x in c["ort"] if x.get("peak_rss_mib") is not None]),
        }
        if c["tract"] and "decode_median_ms" in c["tract"][0]:
            dec = med([x["decode_median_ms"] for x in c["tract"]])
            pre = med([x["preprocess_median_ms"] for x in c["tract"]])
            row.update(images=c["tract"][0]["images"], decode_median_ms=dec, preprocess_median_ms=pre,
                       decode_preprocess_over_encode=(dec + pre) / (row["tract_median_ms"] / a.batch))
        results.append(row)

    meta = {"rounds": a.rounds, "runs": a.runs, "warmup": a.warmup, "batch": a.batch,
            "precision": a.precision, "tract_env": a.tract_env, "machine": platform.machine(),
            "cpus": os.cpu_count(), "loadavg_end": os.getloadavg()}
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"config": meta, "results": results}, f, indent=1)
    if a.json:
        print(json.dumps({"config": meta, "results": results}))
        return
    print(f"tract (tipedge) vs onnxruntime: {a.rounds} alternating rounds x {a.runs} runs, batch {a.batch}, "
          f"tract {a.precision}; medians of the per-round medians; ratio = median of per-round tract/ORT "
          f"[min-max]; load average at the end {os.getloadavg()[0]:.2f}")
    hdr = (f"{'graph':<40} {'T':>2} {'tract ms':>9} {'ORT ms':>9} {'tract/ORT':>9} {'[range]':>13} "
           f"{'tract MiB':>9} {'ORT MiB':>8}")
    img = any("decode_median_ms" in r for r in results)
    if img:
        hdr += f" {'decode ms':>9} {'prep ms':>8} {'(d+p)/enc':>9}"
    print(hdr)
    for r in results:
        line = (f"{r['label']:<40} {r['threads']:>2} {r['tract_median_ms']:>9.2f} {r['ort_median_ms']:>9.2f} "
                f"{r['ratio_median']:>9.2f} {'[%.2f-%.2f]' % (r['ratio_min'], r['ratio_max']):>13} "
                f"{fmt_mib(r['tract_peak_rss_mib']):>9} {fmt_mib(r['ort_peak_rss_mib']):>8}")
        if "decode_median_ms" in r:
            line += (f" {r['decode_median_ms']:>9.2f} {r['preprocess_median_ms']:>8.2f} "
                     f"{100 * r['decode_preprocess_over_encode']:>8.1f}%")
        print(line)


if __name__ == "__main__":
    main()
