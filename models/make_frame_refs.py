"""Reference conversions of camera frames for tests/frame.rs (models/fixtures/frames/).

OpenCV's integer YUV -> RGB (cv2.cvtColor with COLOR_YUV2RGB_NV12 / _I420 / _YUYV) is the
reference for the default colorimetry (BT.601 limited range); Pillow's YCbCr -> RGB (JPEG's
BT.601 full range) a second one for the full-range option; Pillow's resize a reference for the
resampler's vertical-first branch, which the photo references in models/fixtures/reference/ do
not reach (none of those photos is tall enough).

    python models/make_frame_refs.py            # rewrites models/fixtures/frames/

Writes:
  photo_96x72.{nv12,i420,yuyv}     a 96x72 crop of chelsea.jpg (the cat's face), converted to
                                   YUV by OpenCV (COLOR_RGB2YUV_I420, NV12 from the same
                                   planes, COLOR_RGB2YUV_YUYV)
  photo_96x72_420_rgb.png          OpenCV's RGB of the NV12 and the I420 bytes (identical)
  photo_96x72_yuyv_rgb.png         OpenCV's RGB of the YUYV bytes
  random_48x48.{nv12,i420,yuyv}    uniformly random bytes (every Y value, chroma at the extremes)
  random_48x48_420_rgb.png, random_48x48_yuyv_rgb.png   OpenCV's RGB of those
  random_48x48_420_full_pillow.png Pillow's YCbCr -> RGB of the random 4:2:0 frame, chroma
                                   repeated over its 2x2 block (nearest, as OpenCV does)
  tall_96x300_{bicubic,bilinear}_48.png   Pillow's resize of chelsea.jpg's 96x300 region at
                                   (180, 0) to 48x150 (torchvision Resize(48)), centre crop 48
  manifest.json                    sizes, offsets, sha256 of every file, library versions
"""

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import PIL
from PIL import Image

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "fixtures" / "frames"
CHELSEA = ROOT / "fixtures" / "images" / "chelsea.jpg"


def i420_to_nv12(i420: np.ndarray, w: int, h: int) -> np.ndarray:
    y = i420[:h].reshape(-1)
    chroma = i420[h:].reshape(-1)
    u, v = chroma[: w * h // 4], chroma[w * h // 4 :]
    uv = np.stack([u, v], axis=-1).reshape(-1)
    return np.concatenate([y, uv]).reshape(h * 3 // 2, w)


def opencv_rgb(frames: dict, w: int, h: int) -> dict:
    """OpenCV's RGB of each frame; the NV12 and I420 results must agree (same planes)."""
    nv12 = cv2.cvtColor(frames["nv12"], cv2.COLOR_YUV2RGB_NV12)
    i420 = cv2.cvtColor(frames["i420"], cv2.COLOR_YUV2RGB_I420)
    assert np.array_equal(nv12, i420), "NV12 and I420 of the same planes differ"
    yuyv = cv2.cvtColor(frames["yuyv"].reshape(h, w, 2), cv2.COLOR_YUV2RGB_YUYV)
    return {"420": nv12, "yuyv": yuyv}


def write(files: dict, name: str, data: bytes) -> None:
    (OUT / name).write_bytes(data)
    files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def write_png(files: dict, name: str, rgb: np.ndarray) -> None:
    Image.fromarray(rgb, "RGB").save(OUT / name, optimize=True)
    data = (OUT / name).read_bytes()
    files[name] = {
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "pixels_sha256": hashlib.sha256(rgb.tobytes()).hexdigest(),
    }


def frame_set(files: dict, stem: str, frames: dict, w: int, h: int) -> None:
    for fmt in ("nv12", "i420", "yuyv"):
        write(files, f"{stem}.{fmt}", frames[fmt].tobytes())
    for kind, rgb in opencv_rgb(frames, w, h).items():
        write_png(files, f"{stem}_{kind}_rgb.png", rgb)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    files: dict = {}
    chelsea = np.asarray(Image.open(CHELSEA).convert("RGB"))

    # A real picture, converted to YUV the way OpenCV converts RGB.
    px, py, w, h = 220, 60, 96, 72
    photo = np.ascontiguousarray(chelsea[py : py + h, px : px + w])
    i420 = cv2.cvtColor(photo, cv2.COLOR_RGB2YUV_I420)
    photo_frames = {
        "i420": i420,
        "nv12": i420_to_nv12(i420, w, h),
        "yuyv": cv2.cvtColor(photo, cv2.COLOR_RGB2YUV_YUYV),
    }
    frame_set(files, "photo_96x72", photo_frames, w, h)

    # Random bytes: every Y value, chroma at the extremes (clipping).
    rw, rh = 48, 48
    rng = np.random.default_rng(20261129)
    i420 = rng.integers(0, 256, size=(rh * 3 // 2, rw), dtype=np.uint8)
    random_frames = {
        "i420": i420,
        "nv12": i420_to_nv12(i420, rw, rh),
        "yuyv": rng.integers(0, 256, size=(rh, rw * 2), dtype=np.uint8),
    }
    frame_set(files, "random_48x48", random_frames, rw, rh)
    y = i420[:rh]
    u = i420[rh : rh + rh // 4].reshape(rh // 2, rw // 2)
    v = i420[rh + rh // 4 :].reshape(rh // 2, rw // 2)
    up = lambda c: np.repeat(np.repeat(c, 2, axis=0), 2, axis=1)  # noqa: E731
    ycbcr = np.stack([y, up(u), up(v)], axis=-1)
    full = np.asarray(Image.frombytes("YCbCr", (rw, rh), ycbcr.tobytes()).convert("RGB"))
    write_png(files, "random_48x48_420_full_pillow.png", full)

    # A tall region: Pillow resizes it vertical pass first.
    tx, ty, tw, th, size = 180, 0, 96, 300, 48
    tall = Image.fromarray(np.ascontiguousarray(chelsea[ty : ty + th, tx : tx + tw]))
    new_w, new_h = size, int(size * th / tw)  # torchvision Resize(int): short side = size
    top = int(round((new_h - size) / 2.0))
    for name, resample in (("bicubic", Image.BICUBIC), ("bilinear", Image.BILINEAR)):
        resized = tall.resize((new_w, new_h), resample)
        crop = np.asarray(resized.crop((0, top, size, top + size)))
        write_png(files, f"tall_96x300_{name}_48.png", crop)

    manifest = {
        "generator": "models/make_frame_refs.py",
        "versions": {
            "opencv": cv2.__version__,
            "numpy": np.__version__,
            "pillow": PIL.__version__,
        },
        "photo": {"source": "images/chelsea.jpg", "x": px, "y": py, "width": w, "height": h},
        "random": {"seed": 20261129, "width": rw, "height": rh},
        "tall": {
            "source": "images/chelsea.jpg",
            "x": tx,
            "y": ty,
            "width": tw,
            "height": th,
            "resize": size,
            "crop_size": size,
        },
        "layouts": "tight strides: nv12 = Y (w*h) + UV (w*h/2); i420 = Y + U (w*h/4) + V; "
        "yuyv = Y0 U Y1 V (2*w*h)",
        "files": files,
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum(f["bytes"] for f in files.values())
    print(f"wrote {len(files)} files, {total} bytes, to {OUT}")


if __name__ == "__main__":
    main()
