"""Per-frame cost of the Python package, in one run, on a 640x480 RGB frame with the bundled
EfficientNet-Lite0 (1 thread) and a pack of the bundled textile shots (3 classes x 16 shots):

1. ``Session.classify`` from Python against the library's ``Session::classify`` called from
   Rust on the same session and frame (``Session._classify_native``): the binding's overhead.
2. What a user would otherwise write: onnxruntime on the same image.onnx plus a NumPy
   Tip-Adapter (Pillow resize + crop + normalise, L2-normalised features, affinity with the 48
   shot features computed the same way, alpha * exp(-beta * (1 - A)) @ L, softmax, top-3).
   Only with ``--ort`` (pip install onnxruntime).

Blocks of frames alternate between the paths and the medians of their per-frame times are
compared, so the shared machine's drift cancels.

    python python/bench/overhead.py --pack textile.pack [--ort] [--rounds 30] [--json]
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

import tipedge

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "fixtures" / "efficientnet-lite0"
SHOTS = ROOT / "examples" / "textile" / "shots"


def frame_640x480() -> np.ndarray:
    img = Image.open(ROOT / "models" / "fixtures" / "images" / "rocket.jpg").convert("RGB")
    return np.asarray(img.resize((640, 480), Image.BILINEAR))


class OrtTipAdapter:
    """onnxruntime + NumPy, as a user would write it without tipedge."""

    def __init__(self, model: Path, shots: Path, k: int, alpha: float, beta: float):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.ort = ort.InferenceSession(str(model / "image.onnx"), opts,
                                        providers=["CPUExecutionProvider"])
        self.input = self.ort.get_inputs()[0].name
        pre = json.loads((model / "image.json").read_text())["preprocess"]
        self.resize, self.crop = pre["resize"], pre["crop_size"]
        self.mean = np.array(pre["mean"], np.float32).reshape(3, 1, 1)
        self.std = np.array(pre["std"], np.float32).reshape(3, 1, 1)
        self.classes = sorted(p.name for p in shots.iterdir() if p.is_dir())
        keys, labels = [], []
        for c, name in enumerate(self.classes):
            for path in sorted((shots / name).iterdir())[:k]:
                keys.append(self.features(np.asarray(Image.open(path).convert("RGB"))))
                labels.append(c)
        self.keys = np.stack(keys)
        self.values = np.eye(len(self.classes), dtype=np.float32)[labels]
        self.alpha, self.beta = alpha, beta

    def features(self, rgb: np.ndarray) -> np.ndarray:
        img = Image.fromarray(rgb)
        w, h = img.size
        s = self.resize / min(w, h)
        img = img.resize((round(w * s), round(h * s)), Image.BICUBIC)
        w, h = img.size
        left, top = (w - self.crop) // 2, (h - self.crop) // 2
        img = img.crop((left, top, left + self.crop, top + self.crop))
        x = np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0
        x = ((x - self.mean) / self.std)[None]
        f = self.ort.run(None, {self.input: x})[0][0]
        return f / np.linalg.norm(f)

    def classify(self, rgb: np.ndarray):
        f = self.features(rgb)
        a = self.keys @ f
        logits = self.alpha * np.exp(-self.beta * (1.0 - a)) @ self.values
        p = np.exp(logits - logits.max())
        p /= p.sum()
        top = np.argsort(-p)[:3]
        return [(self.classes[i], float(p[i])) for i in top]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pack", type=Path, required=True,
                    help="a pack of the bundled shots: tipedge cache build -m " + str(MODEL) +
                    " --shots " + str(SHOTS) + " -k 16 --out textile.pack")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--block", type=int, default=10, help="frames per block")
    ap.add_argument("--ort", action="store_true", help="also onnxruntime + NumPy")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    frame = frame_640x480()
    s = tipedge.Session(MODEL, pack=args.pack, threads=1)
    paths = {
        "python Session.classify": lambda n: [s.classify(frame) for _ in range(n)],
        "rust Session::classify": lambda n: s._classify_native(frame, "rgb24", n),
    }
    if args.ort:
        ort = OrtTipAdapter(MODEL, SHOTS, 16, 1.17, 1.0)  # the pack's alpha, beta
        paths["onnxruntime + numpy"] = lambda n: [ort.classify(frame) for _ in range(n)]
    for run in paths.values():  # warm up
        run(2)
    times = {name: [] for name in paths}
    names = list(paths)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            t = time.perf_counter()
            paths[name](args.block)
            times[name].append((time.perf_counter() - t) * 1e3 / args.block)
    med = {name: statistics.median(v) for name, v in times.items()}
    base = med["rust Session::classify"]
    report = {
        "frame": "640x480 rgb24", "threads": 1, "rounds": args.rounds, "block": args.block,
        "median_ms_per_frame": med,
        "ratio_to_rust": {name: m / base for name, m in med.items()},
        "python": sys.version.split()[0], "tipedge": tipedge.__version__,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{args.rounds} rounds of {args.block}-frame blocks, alternating (medians):")
        for name, m in med.items():
            print(f"  {name:26s} {m:8.3f} ms/frame   x{m / base:.4f} of Rust")
    return 0


if __name__ == "__main__":
    sys.exit(main())
