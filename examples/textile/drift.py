#!/usr/bin/env python3
"""Frames for the TDA drift benchmark (examples/textile/drift.sh), and their scoring.

    drift.py frames TEST_DIR KIND OUT.rgb OUT.labels.json [SEED]
        The test split's images (folder per class) in one shuffled order (random.Random(SEED),
        default 0), each resized to 250 x 250 RGB and drifted by t = i / (n - 1), written as raw
        rgb24 frames for `tipedge stream --format rgb24 --size 250x250`:
          none         unchanged
          brightness   pixel values x (1 - 0.6 t): the light fades to 40 %
          colour       red x (1 + 0.35 t), blue x (1 - 0.35 t): the light warms
          blur         Gaussian blur of radius 3 t pixels: the lens defocuses
        The labels (class folder names, frame order) go to OUT.labels.json.
    drift.py score OUT.labels.json PREDICTIONS.jsonl [WINDOW]
        Prints one JSON object: top-1 per window of WINDOW (default 100) frames and overall, from
        `tipedge stream`'s prediction lines (labels compared with spaces as underscores).
    drift.py compare OUT.labels.json A.jsonl B.jsonl
        Prints one JSON object: frames A gets right and B wrong, the reverse, and the exact
        two-sided McNemar p-value (binomial at 1/2 over the frames they disagree on).

Needs numpy and Pillow.
"""
import json
import math
import os
import random
import sys

import numpy as np
from PIL import Image, ImageFilter

SIZE = 250
KINDS = ("none", "brightness", "colour", "blur")


def frames(test_dir, kind, out, labels_out, seed=0):
    if kind not in KINDS:
        sys.exit(f"unknown drift '{kind}' ({', '.join(KINDS)})")
    items = []
    for cls in sorted(os.listdir(test_dir)):
        d = os.path.join(test_dir, cls)
        if os.path.isdir(d):
            items += [(os.path.join(d, f), cls) for f in sorted(os.listdir(d))]
    random.Random(seed).shuffle(items)
    n = len(items)
    with open(out, "wb") as fh:
        for i, (path, _) in enumerate(items):
            t = i / max(n - 1, 1)
            im = Image.open(path).convert("RGB").resize((SIZE, SIZE), Image.BICUBIC)
            if kind == "blur" and t > 0:
                im = im.filter(ImageFilter.GaussianBlur(radius=3.0 * t))
            a = np.asarray(im).astype(np.float32)
            if kind == "brightness":
                a *= 1.0 - 0.6 * t
            elif kind == "colour":
                a[..., 0] *= 1.0 + 0.35 * t
                a[..., 2] *= 1.0 - 0.35 * t
            fh.write(np.clip(np.rint(a), 0, 255).astype(np.uint8).tobytes())
    with open(labels_out, "w") as fh:
        json.dump({"kind": kind, "seed": seed, "frames": [c for _, c in items]}, fh)


def hits_of(labels_path, predictions):
    labels = json.load(open(labels_path))["frames"]
    pred = {}
    for line in open(predictions):
        r = json.loads(line)
        if r.get("type") == "prediction":
            pred[r["frame"]] = r["top"][0]["label"].replace(" ", "_")
    if len(pred) != len(labels):
        sys.exit(f"{predictions}: {len(pred)} predictions for {len(labels)} frames")
    return [pred[i] == labels[i] for i in range(len(labels))]


def compare(labels_path, a, b):
    ha, hb = hits_of(labels_path, a), hits_of(labels_path, b)
    better = sum(x and not y for x, y in zip(ha, hb))
    worse = sum(y and not x for x, y in zip(ha, hb))
    n, k = better + worse, min(better, worse)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    print(json.dumps({"better": better, "worse": worse, "p_value": p}))


def score(labels_path, predictions, window=100):
    hits = hits_of(labels_path, predictions)
    windows = [
        100.0 * sum(hits[i : i + window]) / len(hits[i : i + window])
        for i in range(0, len(hits), window)
    ]
    print(json.dumps({"top1": 100.0 * sum(hits) / len(hits), "windows": windows, "n": len(hits)}))


if __name__ == "__main__":
    if len(sys.argv) >= 6 and sys.argv[1] == "frames":
        frames(*sys.argv[2:6], *(int(s) for s in sys.argv[6:7]))
    elif len(sys.argv) == 5 and sys.argv[1] == "compare":
        compare(*sys.argv[2:5])
    elif len(sys.argv) >= 4 and sys.argv[1] == "score":
        score(sys.argv[2], sys.argv[3], *(int(w) for w in sys.argv[4:5]))
    else:
        sys.exit(__doc__)
