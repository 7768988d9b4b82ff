#!/usr/bin/env python3
"""Accuracy of the quantised encoders under tract: int8 and f16 against f32. One command:

  python models/accuracy_report.py            # → models/ACCURACY.md + models/accuracy.json

What it measures, all with the tipedge binary (tract), nothing with onnxruntime:
* EfficientNet-Lite0 (real ImageNet weights): feature cosine, mean and minimum, of each variant
  against the f32 graph on the held-out textile `query` split (48 photos, none of them in the
  calibration set), and the few-shot accuracy on the same split with the 16 shots per class of
  examples/textile/shots (`tipedge classify --shots`, the pack's default α/β).
* ViT-B/32 image tower with random weights (open_clip, pretrained=None): the same cosines on
  --vit-images held-out photos. Random weights do not predict the quantisation error of trained
  weights (trained transformers have outlier activations random ones lack); the numbers only show
  that the graph form runs and how large the rounding is for that weight distribution.

Variants: f32; f16 (tract's f32→f16 transform at load, `--precision f16`); int8 graphs from
models/quantize.py with the recipes listed in RECIPES (calibration: calibration/images, assembled
if missing). The f32 graphs are exported if --effnet / --vit are not given (needs PyTorch).

On x86 CPUs without AVX-512 VNNI / AVX-VNNI the int8 graphs run with TRACT_CPU_ISA=-avx2: tract's
AVX2 int8 kernel is ~10x slower than its AVX one there (see models/QUANTIZATION.md). This changes
only the speed: the integer products are exact either way.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections import OrderedDict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

HELD_OUT = os.path.join(REPO, "examples", "textile", "query")
SHOTS = os.path.join(REPO, "examples", "textile", "shots")

# name → quantize.py options
RECIPES = {
    "efficientnet-lite0": OrderedDict([
        ("int8", ["--scheme", "static-s8", "--per-channel", "--skip-depthwise", "--calibrate", "percentile",
                  "--keep-float", "/conv_stem/", "/conv_head/"]),
        ("int8-qoperator", ["--scheme", "static-s8", "--per-channel", "--skip-depthwise", "--calibrate",
                            "percentile", "--keep-float", "/conv_stem/", "/conv_head/", "--form", "qoperator"]),
        ("int8-all-convs", ["--scheme", "static-s8", "--per-channel"]),
    ]),
    "vit-b-32": OrderedDict([
        ("int8", ["--scheme", "static-s8", "--per-channel"]),
        ("int8-qoperator", ["--scheme", "static-s8", "--per-channel", "--form", "qoperator"]),
        ("int8-dynamic", ["--scheme", "dynamic-u8"]),
    ]),
}


def run(cmd: list[str], env: dict | None = None) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr.strip()[-2000:]}")
    return r.stdout


def int8_env() -> dict:
    env = dict(os.environ)
    if platform.machine() in ("x86_64", "AMD64"):
        flags = open("/proc/cpuinfo").read()
        if "avx512_vnni" not in flags and "avx_vnni" not in flags:
            env["TRACT_CPU_ISA"] = "-avx2"
    return env


def embed(tipedge: str, model: str, images: list[str], precision: str, env=None) -> dict[str, np.ndarray]:
    out = run([tipedge, "embed", "--model", model, "--precision", precision, *images], env)
    feats = {}
    for line in out.splitlines():
        d = json.loads(line)
        feats[os.path.relpath(d["path"], REPO)] = np.array(d["features"], dtype=np.float64)
    return feats


def cosines(a: dict, b: dict) -> dict:
    c = [float(a[k] @ b[k] / (np.linalg.norm(a[k]) * np.linalg.norm(b[k]))) for k in sorted(a)]
    return {"n": len(c), "mean": float(np.mean(c)), "min": float(np.min(c))}


def few_shot(tipedge: str, model: str, precision: str, env=None) -> dict:
    out = run([tipedge, "classify", "--model", model, "--precision", precision, "--shots", SHOTS, HELD_OUT,
               "--json"], env)
    rows = [json.loads(l) for l in out.splitlines() if l.startswith("{") and '"correct"' in l]
    return {"correct": sum(r["correct"] for r in rows), "n": len(rows)}


def ensure_model(arg: str | None, work: str, name: str) -> str:
    if arg:
        return arg
    out = os.path.join(work, name)
    if os.path.isfile(os.path.join(out, "image.onnx")):
        return out
    print(f"== exporting {name} into {out}", file=sys.stderr)
    if name == "efficientnet-lite0":
        run([sys.executable, os.path.join(HERE, "export_efficientnet.py"), "--out", out])
    else:
        run([sys.executable, os.path.join(HERE, "export_clip.py"), "--arch", "ViT-B-32", "--pretrained", "none",
             "--towers", "image", "--out", out])
    return out


def read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def quantise(src: str, out: str, opts: list[str]) -> None:
    """quantize.py src → out, unless out already holds an int8 graph made from this src
    (REQUANTIZE=1 forces it)."""
    side = os.path.join(out, "image.json")
    made_from_src = (os.path.isfile(side) and read_json(side).get("quantization", {}).get("source_sha256")
                     == read_json(os.path.join(src, "image.json"))["sha256"])
    if made_from_src and os.environ.get("REQUANTIZE") != "1":
        return
    print(f"== quantising {src} → {out} {' '.join(opts)}", file=sys.stderr)
    run([sys.executable, os.path.join(HERE, "quantize.py"), src, "--out", out, *opts])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--effnet", help="f32 EfficientNet-Lite0 folder (export_efficientnet.py without --fixture)")
    ap.add_argument("--vit", help="f32 ViT-B/32 folder (export_clip.py --arch ViT-B-32 --pretrained none)")
    ap.add_argument("--work", default=os.path.join(REPO, "target", "accuracy"), help="exports and int8 graphs")
    ap.add_argument("--tipedge", default=os.path.join(REPO, "target", "release", "tipedge"))
    ap.add_argument("--vit-images", type=int, default=16, help="held-out images for the ViT cosines")
    ap.add_argument("--out", default=os.path.join(HERE, "ACCURACY.md"))
    ap.add_argument("--markdown-only", action="store_true", help="re-render the .md from models/accuracy.json")
    ap.add_argument("--keep-f16", action="store_true",
                    help="take the f16 rows from the existing models/accuracy.json instead of measuring them (f16 "
                         "does not depend on the int8 recipes, and it is emulated on x86: on an AVX-512 host about "
                         "9 s per EfficientNet-Lite0 image, so its few-shot run alone takes over an hour)")
    args = ap.parse_args()
    previous = read_json(os.path.join(HERE, "accuracy.json")) if args.keep_f16 else None
    if args.markdown_only:
        write_markdown(args.out, read_json(os.path.join(HERE, "accuracy.json")))
        return

    if not os.path.isfile(args.tipedge):
        raise SystemExit(f"{args.tipedge}: no tipedge binary (cargo build --release)")
    if not os.path.isdir(os.path.join(REPO, "calibration", "images")):
        run([sys.executable, os.path.join(REPO, "calibration", "assemble.py")])
    os.makedirs(args.work, exist_ok=True)
    t0 = time.time()
    held_out = sorted(os.path.join(r, f) for r, _, fs in os.walk(HELD_OUT) for f in fs)
    env8 = int8_env()
    report: "OrderedDict[str, object]" = OrderedDict()
    flags = open("/proc/cpuinfo").read() if os.path.isfile("/proc/cpuinfo") else ""
    isa = " with AVX-512 VNNI" if "avx512_vnni" in flags else " with AVX2, no VNNI" if "avx2" in flags else ""
    report["machine"] = f"{platform.machine()}{isa}, {os.cpu_count()} cores"
    report["int8_env"] = {k: v for k, v in env8.items() if k.startswith("TRACT_")}
    for name, images, accuracy in [("efficientnet-lite0", held_out, True),
                                   ("vit-b-32", held_out[:: max(1, len(held_out) // args.vit_images)][: args.vit_images],
                                    False)]:
        src = ensure_model(args.effnet if name.startswith("eff") else args.vit, args.work, name)
        print(f"== {name}: f32", file=sys.stderr)
        ref = embed(args.tipedge, src, images, "f32")
        rows = OrderedDict()
        rows["f32"] = {"graph": src, "cosine": cosines(ref, ref)}
        if accuracy:
            rows["f32"]["few_shot"] = few_shot(args.tipedge, src, "f32")
        if previous is not None:
            rows["f16"] = dict(previous[name]["variants"]["f16"], previous_report=previous["machine"])
        else:
            print(f"== {name}: f16", file=sys.stderr)
            rows["f16"] = {"graph": src + " --precision f16",
                           "cosine": cosines(ref, embed(args.tipedge, src, images, "f16"))}
            if accuracy:
                rows["f16"]["few_shot"] = few_shot(args.tipedge, src, "f16")
        for variant, opts in RECIPES[name].items():
            out = os.path.join(args.work, f"{name}-{variant}")
            quantise(src, out, opts)
            print(f"== {name}: {variant}", file=sys.stderr)
            rows[variant] = {"graph": out, "quantize": " ".join(opts),
                             "cosine": cosines(ref, embed(args.tipedge, out, images, "f32", env8))}
            if accuracy:
                rows[variant]["few_shot"] = few_shot(args.tipedge, out, "f32", env8)
        report[name] = {"images": len(images), "variants": rows}
    report["seconds"] = round(time.time() - t0, 1)

    with open(os.path.join(HERE, "accuracy.json"), "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    write_markdown(args.out, report)
    print(open(args.out).read())


def write_markdown(path: str, r: dict) -> None:
    L = ["# Quantised encoders: accuracy under tract", "",
         "Generated by `python models/accuracy_report.py` (numbers also in `models/accuracy.json`); "
         f"{r['machine']}, {r['seconds']} s. Cosines are between the variant's features and the f32 "
         "graph's (both from `tipedge embed`, tract) on held-out photos of `examples/textile/query` that are "
         "not in the calibration set. Few-shot accuracy: `tipedge classify --shots examples/textile/shots "
         "examples/textile/query` (16 shots per class, 48 queries).", ""]
    if r["int8_env"]:
        env = " ".join(f"{k}={v}" for k, v in r["int8_env"].items())
        L += [f"int8 runs used `{env}` (speed only, see models/QUANTIZATION.md).", ""]
    if r["machine"].startswith("x86_64"):
        L += ["f16 here is tract's f16 path on a CPU without fp16 arithmetic (emulated, the same results "
              "as a Pi 4). A Pi 5 runs native fp16 kernels, which round more: EfficientNet-Lite0 under qemu "
              "as a Cortex-A76 gave cosine mean 0.99992 (min 0.99989) against x86 f32 on 8 of these photos "
              "(models/QUANTIZATION.md).", ""]
    for name in ("efficientnet-lite0", "vit-b-32"):
        m = r[name]
        L += [f"## {name} ({m['images']} held-out images)", ""]
        if name == "vit-b-32":
            L += ["> **Random weights** (open_clip `pretrained=None`): these cosines do not predict the "
                  "quantisation error of trained CLIP weights, whose activations have outliers that random "
                  "weights lack. They show the graph form runs and the size of the rounding for this weight "
                  "distribution only.", ""]
        acc = "few_shot" in m["variants"]["f32"]
        L += ["| variant | recipe | cosine mean | cosine min |" + (" few-shot top-1 | Δ vs f32 |" if acc else ""),
              "|---|---|---|---|" + ("---|---|" if acc else "")]
        base = m["variants"]["f32"].get("few_shot")
        for v, d in m["variants"].items():
            c = d["cosine"]
            recipe = d.get('quantize', 'tract f32→f16 at load' if v == 'f16' else '—')
            if "previous_report" in d:
                recipe += f" (from the previous report, {d['previous_report']})"
            row = f"| {v} | {recipe} | {c['mean']:.5f} | {c['min']:.5f} |"
            if acc:
                fs = d["few_shot"]
                pct = 100 * fs["correct"] / fs["n"]
                delta = pct - 100 * base["correct"] / base["n"]
                row += f" {fs['correct']}/{fs['n']} = {pct:.1f} % | {delta:+.1f} pt |"
            L.append(row)
        L.append("")
    with open(path, "w") as f:
        f.write("\n".join(L))


if __name__ == "__main__":
    main()
