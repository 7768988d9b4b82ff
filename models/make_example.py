#!/usr/bin/env python3
"""Build examples/textile/: a small few-shot data set from the PyPI package conformal-clip-data.

The package (MIT, (c) 2025 Megahed) ships 2,000 simulated textile-inspection images
(250x250 RGB JPEG, generated with the R package spc4sts) in three classes:
  nominal (1,000), local (500: local defect), global (500: global defect).

This script draws, per class, a deterministic seeded random subset (numpy default_rng(SEED)
permutation of the sorted file names): the first SHOTS files become the few-shot support set
examples/textile/shots/<class>/, the next QUERIES files the query set
examples/textile/query/<class>/ and the next VALS files the validation set
examples/textile/val/<class>/ (for choosing alpha/beta and the Tip-Adapter-F epoch; never tune
on the query split). The val files come after shots + query in the same permutation, so adding
them left the shots and query files unchanged. Class folders: nominal, local_defect, global_defect.

The images are copied byte for byte: they are already 250x250 (short side <= 256) JPEGs of about
21 kB, and re-encoding them at q90 would make them larger and add a second JPEG generation.
It also writes examples/textile/README.md (attribution, licence text, how the subset was drawn)
and examples/textile/files.json (the exact list).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from collections import OrderedDict

import numpy as np

SEED = 20240607
SHOTS = 16
QUERIES = 16
VALS = 16
# package folder -> example class folder name (spaces -> '_')
CLASSES = OrderedDict([("nominal", "nominal"), ("global", "global_defect"), ("local", "local_defect")])
PACKAGE = "conformal-clip-data"


def package_info():
    from importlib import metadata

    import conformal_clip_data

    dist = metadata.distribution(PACKAGE)
    root = os.path.join(os.path.dirname(conformal_clip_data.__file__), "data", "textile_images", "simulated")
    lic = None
    for f in dist.files or []:
        if os.path.basename(str(f)).upper().startswith("LICENSE"):
            lic = open(dist.locate_file(f), encoding="utf-8").read().strip()
    if lic is None:
        raise SystemExit("licence file not found in the installed package")
    return dist.version, root, lic


def draw(root: str, seed: int = SEED, shots: int = SHOTS, queries: int = QUERIES, vals: int = VALS):
    """Return OrderedDict split -> class -> [source file names]."""
    rng = np.random.default_rng(seed)
    out = OrderedDict([("shots", OrderedDict()), ("query", OrderedDict()), ("val", OrderedDict())])
    for src, dst in CLASSES.items():
        files = sorted(f for f in os.listdir(os.path.join(root, src)) if f.lower().endswith(".jpg"))
        perm = rng.permutation(len(files))
        if shots + queries + vals > len(files):
            raise SystemExit(f"class {src}: {len(files)} files < {shots} + {queries} + {vals}")
        chosen = [files[i] for i in perm[: shots + queries + vals]]
        out["shots"][dst] = sorted(chosen[:shots])
        out["query"][dst] = sorted(chosen[shots:shots + queries])
        out["val"][dst] = sorted(chosen[shots + queries:])
    return out


README = """# textile: a small few-shot inspection data set

{n_shots} shots, {n_query} query and {n_val} validation images per class, three classes:

| folder | meaning | shots | query | val |
|---|---|---|---|---|
| `nominal` | standard textile weave | {shots} | {queries} | {vals} |
| `global_defect` | global defect: both spatial-AR weave parameters reduced by 5% | {shots} | {queries} | {vals} |
| `local_defect` | local defect inserted into the weave | {shots} | {queries} | {vals} |

Layout: `shots/<class>/*.jpg` (the few-shot support set; use the first K files in name order for
K-shot experiments with K = 1, 2, 4, 8, 16), `query/<class>/*.jpg` (held-out queries: the test
split) and `val/<class>/*.jpg` (validation split). The three splits are disjoint.
`files.json` lists every file with its source path in the package and its sha256.

**Use `val` for every choice you make**: Tip-Adapter's α/β grid search and the epoch of
Tip-Adapter-F that you keep are selected by accuracy on `val`. Never tune on `query`: the query
split is the test split, and accuracy on it is only meaningful if nothing was chosen by looking
at it.

## Source and attribution

The images are simulated stochastic textured surfaces (250x250 px RGB JPEG, grey content), taken
unmodified (byte for byte) from the Python package **`{package}` version {version}** (PyPI), the
data bundle of *clip-conformal* by Fadel M. Megahed and Ying-Ju (Tessa) Chen, used in:

> F. M. Megahed, Y.-J. Chen, B. M. Colosimo, M. L. G. Grasso, L. A. Jones-Farmer, S. Knoth, H. Sun,
> I. Zwetsloot. *Adapting OpenAI's CLIP Model for Few-Shot Image Inspection in Manufacturing Quality
> Control: An Expository Case Study with Multiple Application Examples.* arXiv:2501.12596, 2025.

The images were generated with the R package spc4sts (A. T. Bui and D. W. Apley, *spc4sts:
Statistical process control for stochastic textured surfaces in R*, Journal of Quality
Technology 53(3), 2021). Package folders `nominal`, `global`, `local` map to `nominal`,
`global_defect`, `local_defect` here.

## How the subset was drawn

`models/make_example.py` (deterministic): for each class, the package's file names are sorted,
permuted with `numpy.random.default_rng({seed})` (one generator, classes in the order nominal,
global, local), and the first {shots} permuted files become the shots, the next {queries} the
queries and the next {vals} the validation images (the val split was added later; because it
takes the files after shots + query in the same permutation, the shots and query files did not
change). Nothing is re-encoded, resized or augmented. Re-run with
`python models/make_example.py` (needs `pip install {package}=={version}`).

## A larger split

`large_split.py` draws 150 validation and 300 test images per class from the package's images the
bundled splits do not use (seeded, standard library only; symbolic links, nothing copied into the
repository): 450 / 900 images for measurements where 48 are too few.
`calibration.sh` uses it (`LARGE=<its output folder>`) for the README's calibration table.

## Licence

The images are redistributed under the MIT licence of `{package}`:

```
{license}
```
"""


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(here), "examples", "textile"))
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--shots", type=int, default=SHOTS)
    ap.add_argument("--queries", type=int, default=QUERIES)
    ap.add_argument("--vals", type=int, default=VALS)
    args = ap.parse_args(argv)

    version, root, lic = package_info()
    sel = draw(root, args.seed, args.shots, args.queries, args.vals)
    for split in sel:
        d = os.path.join(args.out, split)
        if os.path.isdir(d):
            shutil.rmtree(d)
    listing = OrderedDict([("package", PACKAGE), ("version", version), ("seed", args.seed),
                           ("classes", list(CLASSES.values())), ("splits", OrderedDict())])
    total = 0
    src_of = {v: k for k, v in CLASSES.items()}
    for split, per_class in sel.items():
        listing["splits"][split] = OrderedDict()
        for cls, files in per_class.items():
            dst_dir = os.path.join(args.out, split, cls)
            os.makedirs(dst_dir, exist_ok=True)
            entries = []
            for f in files:
                src = os.path.join(root, src_of[cls], f)
                dst = os.path.join(dst_dir, f)
                shutil.copyfile(src, dst)
                data = open(dst, "rb").read()
                total += len(data)
                entries.append(OrderedDict([("file", f"{split}/{cls}/{f}"),
                                            ("source", f"conformal_clip_data/data/textile_images/simulated/{src_of[cls]}/{f}"),
                                            ("sha256", hashlib.sha256(data).hexdigest())]))
            listing["splits"][split][cls] = entries
    with open(os.path.join(args.out, "files.json"), "w") as f:
        json.dump(listing, f, indent=2)
        f.write("\n")
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write(README.format(n_shots=args.shots, n_query=args.queries, n_val=args.vals, shots=args.shots,
                              queries=args.queries, vals=args.vals, package=PACKAGE, version=version, seed=args.seed, license=lic))
    n = sum(len(v) for s in sel.values() for v in s.values())
    print(f"  wrote {n} images ({total / 1e6:.2f} MB) to {args.out} from {PACKAGE} {version}, seed {args.seed}")


if __name__ == "__main__":
    main()
