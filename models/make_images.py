#!/usr/bin/env python3
"""Build the fixture photos in models/fixtures/images/ from scikit-image's sample data.

Sources (all shipped inside the scikit-image wheel, no download): chelsea, astronaut, coffee,
rocket, camera. Their licences: chelsea, coffee, camera CC0 (photographers Stefan van der Walt,
Rachel Michetti, Lav Varshney); astronaut (NASA) and rocket (SpaceX) public domain; the
scikit-image package itself is BSD-3-Clause.

Every file is derived deterministically (no randomness except a seeded generator for the 16-bit
low bits), and images.json next to them records what each file is meant to exercise.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections import OrderedDict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

MAX_BYTES = 150_000


def _resize(im, w, h):
    from PIL import Image

    return im.resize((w, h), Image.Resampling.LANCZOS)


def build(out_dir: str) -> "OrderedDict[str, dict]":
    import skimage
    import skimage.data as sd
    from PIL import Image, ImageOps

    os.makedirs(out_dir, exist_ok=True)
    chelsea = Image.fromarray(sd.chelsea())      # 451x300 RGB
    astronaut = Image.fromarray(sd.astronaut())  # 512x512 RGB
    coffee = Image.fromarray(sd.coffee())        # 600x400 RGB
    rocket = Image.fromarray(sd.rocket())        # 640x427 RGB
    camera = Image.fromarray(sd.camera())        # 512x512 L
    src_note = f"scikit-image {skimage.__version__} skimage.data"
    info: "OrderedDict[str, dict]" = OrderedDict()

    def add(name, kind, source, notes=""):
        p = os.path.join(out_dir, name)
        with Image.open(p) as im:
            size, mode = im.size, im.mode
        info[name] = OrderedDict([("kind", kind), ("source", source), ("stored_size_wh", list(size)),
                                  ("pil_mode", mode), ("bytes", os.path.getsize(p)), ("notes", notes)])

    # 1-4: ordinary photos as JPEG q90. 4:4:4 (no chroma subsampling) except coffee, so that JPEG
    # decoders differ only by IDCT rounding; coffee keeps the common 4:2:0 layout.
    chelsea.save(os.path.join(out_dir, "chelsea.jpg"), quality=90, subsampling=0)
    add("chelsea.jpg", "photo: RGB baseline JPEG q90 4:4:4, landscape", f"{src_note}.chelsea()")
    astronaut.save(os.path.join(out_dir, "astronaut.jpg"), quality=90, subsampling=0)
    add("astronaut.jpg", "photo: RGB baseline JPEG q90 4:4:4, square", f"{src_note}.astronaut()")
    coffee.save(os.path.join(out_dir, "coffee.jpg"), quality=90, subsampling=2)
    add("coffee.jpg", "photo: RGB baseline JPEG q90 4:2:0 (chroma subsampled)", f"{src_note}.coffee()",
        "chroma upsampling differs between decoders (libjpeg fancy upsampling vs others): looser tolerance")
    rocket.save(os.path.join(out_dir, "rocket.jpg"), quality=90, subsampling=0)
    add("rocket.jpg", "photo: RGB baseline JPEG q90 4:4:4", f"{src_note}.rocket()")

    # 5: grayscale PNG (8-bit L)
    cam = camera if len(_png_bytes(camera)) <= MAX_BYTES else _resize(camera, 384, 384)
    cam.save(os.path.join(out_dir, "camera.png"), optimize=True)
    add("camera.png", "photo: 8-bit grayscale PNG (mode L)", f"{src_note}.camera()" +
        ("" if cam is camera else ", LANCZOS-downscaled to 384x384"), "convert('RGB') replicates the gray channel")

    # 6: RGBA PNG. Alpha: left-to-right ramp 255 -> 0 plus a fully transparent disc; the colour
    # samples under transparent pixels are kept (not premultiplied).
    c = _resize(chelsea, 240, 160)
    w, h = c.size
    yy, xx = np.mgrid[0:h, 0:w]
    alpha = np.round(255 * (1 - xx / (w - 1))).astype(np.uint8)
    alpha[(xx - 170) ** 2 + (yy - 50) ** 2 < 25 ** 2] = 0
    rgba = np.dstack([np.asarray(c), alpha])
    Image.fromarray(rgba, "RGBA").save(os.path.join(out_dir, "chelsea_rgba.png"), optimize=True)
    add("chelsea_rgba.png", "format: 8-bit RGBA PNG with a non-trivial alpha channel",
        f"{src_note}.chelsea(), LANCZOS 240x160",
        "reference drops alpha (PIL convert('RGB') from RGBA ignores alpha, no compositing)")

    # 7: 16-bit RGB PNG with genuine 16-bit samples (not 8-bit * 257).
    from skimage.transform import resize as sk_resize

    f = sk_resize(np.asarray(coffee).astype(np.float64) / 255.0, (128, 192), order=3, anti_aliasing=True)
    rng = np.random.default_rng(16)
    v16 = np.clip(np.round(f * 65535.0 + rng.uniform(-96, 96, f.shape)), 0, 65535).astype(np.uint16)
    common.write_png16(os.path.join(out_dir, "coffee_rgb16.png"), v16)
    assert np.array_equal(common.read_png16(os.path.join(out_dir, "coffee_rgb16.png")), v16)
    add("coffee_rgb16.png", "format: 16-bit/channel RGB PNG (48 bpp)",
        f"{src_note}.coffee(), skimage bicubic resize to 192x128 in float, x65535 + seeded low-bit noise",
        "Pillow cannot hold 16-bit RGB (Pillow 13 opens it as 8-bit RGB keeping the high byte, v >> 8); "
        "the reference 8-bit RGB is round(v / 257) of the raw samples, computed with numpy")

    # 8: CMYK JPEG
    a = _resize(astronaut, 256, 256)
    a.convert("CMYK").save(os.path.join(out_dir, "astronaut_cmyk.jpg"), quality=90)
    add("astronaut_cmyk.jpg", "format: 4-channel CMYK JPEG (Adobe APP14, written by Pillow/libjpeg)",
        f"{src_note}.astronaut(), LANCZOS 256x256, Pillow convert('CMYK')",
        "reference uses Pillow's CMYK->RGB conversion: APPROXIMATE, decoders disagree on CMYK")

    # 9: EXIF Orientation = 6. Upright view is landscape 320x213; pixels are stored rotated 90
    # degrees counter-clockwise (portrait 213x320); orientation 6 says "rotate 90 CW to display".
    upright = _resize(rocket, 320, 213)
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(os.path.join(out_dir, "rocket_exif6.jpg"), quality=90, subsampling=0, exif=exif.tobytes())
    with Image.open(os.path.join(out_dir, "rocket_exif6.jpg")) as chk:
        assert chk.getexif().get(0x0112) == 6 and chk.size == (213, 320)
        up = ImageOps.exif_transpose(chk)
        assert up.size == (320, 213), up.size
    add("rocket_exif6.jpg", "format: JPEG with EXIF Orientation=6 (stored portrait, displayed landscape)",
        f"{src_note}.rocket(), LANCZOS 320x213, stored rotated 90 deg CCW",
        "reference applies ImageOps.exif_transpose: upright size is 320x213")

    # 10: lossless WebP
    c = _resize(chelsea, 300, 200)
    c.save(os.path.join(out_dir, "chelsea_lossless.webp"), lossless=True, quality=100, method=6)
    with Image.open(os.path.join(out_dir, "chelsea_lossless.webp")) as chk:
        assert np.array_equal(np.asarray(chk.convert("RGB")), np.asarray(c)), "WebP not lossless"
    add("chelsea_lossless.webp", "format: lossless WebP (VP8L)", f"{src_note}.chelsea(), LANCZOS 300x200",
        "decoding is exact")

    # 11: TIFF (uncompressed, RGB, 8-bit)
    c = _resize(coffee, 240, 160)
    c.save(os.path.join(out_dir, "coffee.tiff"), compression=None)
    add("coffee.tiff", "format: uncompressed 8-bit RGB TIFF", f"{src_note}.coffee(), LANCZOS 240x160")

    # 12: a very small BMP (24-bit) -> upsampling path
    _resize(chelsea, 20, 13).save(os.path.join(out_dir, "tiny_20x13.bmp"))
    add("tiny_20x13.bmp", "format+size: 24-bit BMP, 20x13 pixels (resize upsamples)",
        f"{src_note}.chelsea(), LANCZOS 20x13")

    # 13: panorama 10:1
    tiles = [_resize(im, round(im.width * 96 / im.height), 96) for im in (rocket, chelsea, astronaut, coffee)]
    pano = Image.new("RGB", (960, 96))
    x = 0
    while x < 960:
        for t in tiles:
            pano.paste(t, (x, 0))
            x += t.width
            if x >= 960:
                break
    pano.save(os.path.join(out_dir, "panorama_960x96.jpg"), quality=90, subsampling=0)
    add("panorama_960x96.jpg", "size: very wide 10:1 JPEG (960x96), q90 4:4:4",
        f"{src_note} rocket|chelsea|astronaut|coffee strips at height 96, tiled")

    for name, d in info.items():
        if d["bytes"] > MAX_BYTES:
            raise SystemExit(f"{name} is {d['bytes']} bytes > {MAX_BYTES}")
    return info


def _png_bytes(im) -> bytes:
    b = io.BytesIO()
    im.save(b, "PNG", optimize=True)
    return b.getvalue()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "fixtures", "images"))
    args = ap.parse_args(argv)
    info = build(args.out)
    with open(os.path.join(args.out, "images.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    total = 0
    for name, d in info.items():
        total += d["bytes"]
        print(f"  {name:24s} {d['pil_mode']:5s} {str(tuple(d['stored_size_wh'])):12s} {d['bytes']:7d} B  {d['kind']}")
    print(f"  total {total / 1e3:.1f} kB in {len(info)} files")


if __name__ == "__main__":
    main()
