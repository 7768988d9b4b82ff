#!/usr/bin/env python3
"""Assemble the calibration image folder for static int8 quantisation (models/quantize.py).

The default set is described by calibration/manifest.json: real photos from scikit-image's
bundled sample data (read from the installed package, nothing is downloaded) and the textile
example's `shots` and `val` splits from this repository. The textile `query` split is left out on
purpose: it is the held-out set of the accuracy report (models/accuracy_report.py).

  python calibration/assemble.py                        # default set → calibration/images/
  python calibration/assemble.py --from ~/my-photos     # your own folder → calibration/images/
                                                        #   + calibration/images/manifest.json
  python calibration/assemble.py --write-manifest       # (maintainers) regenerate manifest.json

Every file is checked against the manifest's sha256 and must decode as an image; a mismatch or an
unreadable file stops the script with one line naming the file. Existing files in the output folder
are replaced only by verified copies.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "models"))
from common import sha256_file as sha256  # noqa: E402
MANIFEST = os.path.join(HERE, "manifest.json")
FORMAT = "tipedge-calibration/1"
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# Natural photos and textures from skimage.data (BSD-3-Clause; see skimage/data/README.txt).
# Synthetic images (chessboards, logo, text, page, phantom, horse silhouette) are not used.
SKIMAGE_PHOTOS = [
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png",
    "coffee.png", "coins.png", "color.png", "grass.png", "gravel.png", "hubble_deep_field.jpg",
    "ihc.png", "moon.png", "motorcycle_left.png", "retina.jpg", "rocket.jpg",
]
TEXTILE_SPLITS = ["examples/textile/shots", "examples/textile/val"]


def skimage_dir() -> str:
    try:
        import skimage
    except ImportError:
        raise SystemExit("scikit-image is not installed: pip install -r models/requirements.txt")
    return os.path.join(os.path.dirname(skimage.__file__), "data")


def source_path(entry: dict) -> str:
    if entry["source"] == "skimage":
        return os.path.join(skimage_dir(), entry["path"])
    if entry["source"] == "repo":
        return os.path.join(REPO, entry["path"])
    if entry["source"] == "folder":
        return entry["path"]
    raise SystemExit(f"{MANIFEST}: unknown source {entry['source']!r}")


def check_image(path: str) -> None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
    except Exception as e:  # noqa: BLE001 - any decoder error is a bad calibration file
        raise SystemExit(f"{path}: not a readable image ({e})")


def default_entries() -> list[dict]:
    entries = []
    for name in SKIMAGE_PHOTOS:
        p = os.path.join(skimage_dir(), name)
        entries.append({"file": f"skimage-{name}", "source": "skimage", "path": name, "sha256": sha256(p)})
    for split in TEXTILE_SPLITS:
        root = os.path.join(REPO, split)
        for cls in sorted(os.listdir(root)):
            for f in sorted(os.listdir(os.path.join(root, cls))):
                rel = f"{split}/{cls}/{f}"
                tag = rel.replace("examples/", "").replace("/", "-")
                entries.append({"file": tag, "source": "repo", "path": rel, "sha256": sha256(os.path.join(REPO, rel))})
    return entries


def write_manifest(path: str, entries: list[dict], note: str) -> None:
    with open(path, "w") as f:
        json.dump({"format": FORMAT, "note": note, "images": entries}, f, indent=1)
        f.write("\n")


def assemble(entries: list[dict], out: str) -> None:
    os.makedirs(out, exist_ok=True)
    for i, e in enumerate(entries, 1):
        src = source_path(e)
        if not os.path.isfile(src):
            raise SystemExit(f"{src}: missing (needed by calibration entry {e['file']})")
        digest = sha256(src)
        if digest != e["sha256"]:
            raise SystemExit(f"{src}: sha256 {digest[:12]}… differs from the manifest's {e['sha256'][:12]}… "
                             f"(another version of the file; see calibration/README.md)")
        check_image(src)
        dst = os.path.join(out, e["file"])
        tmp = dst + ".part"
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        if i % 25 == 0 or i == len(entries):
            print(f"   {i}/{len(entries)}", file=sys.stderr)
    print(f"{len(entries)} calibration images in {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "images"), help="output folder (default calibration/images)")
    ap.add_argument("--from", dest="folder", help="use the images of this folder (recursively) instead of the default set")
    ap.add_argument("--write-manifest", action="store_true", help="regenerate calibration/manifest.json from the sources")
    args = ap.parse_args()

    if args.write_manifest:
        entries = default_entries()
        write_manifest(MANIFEST, entries, "default calibration set: scikit-image sample photos + textile shots and val")
        print(f"wrote {MANIFEST}: {len(entries)} images")
        return
    if args.folder:
        files = []
        for root, _dirs, names in os.walk(args.folder):
            files += [os.path.join(root, n) for n in names if n.lower().endswith(IMAGE_EXTS)]
        if not files:
            raise SystemExit(f"{args.folder}: no images ({', '.join(IMAGE_EXTS)})")
        entries = []
        for p in sorted(files):
            rel = os.path.relpath(p, args.folder).replace(os.sep, "-")
            entries.append({"file": rel, "source": "folder", "path": os.path.abspath(p), "sha256": sha256(p)})
        assemble(entries, args.out)
        write_manifest(os.path.join(args.out, "manifest.json"), entries, f"user folder {os.path.abspath(args.folder)}")
        return
    with open(MANIFEST) as f:
        m = json.load(f)
    if m.get("format") != FORMAT:
        raise SystemExit(f"{MANIFEST}: format {m.get('format')!r}, expected {FORMAT!r}")
    assemble(m["images"], args.out)


if __name__ == "__main__":
    main()
