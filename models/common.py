"""Shared helpers for the tipedge export / fixture scripts.

Imported by export_clip.py, export_efficientnet.py, make_references.py, make_example.py.
Nothing here downloads anything.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from typing import Dict, Iterable, Optional, Sequence

import numpy as np

SIDECAR_FORMAT = "tipedge-sidecar/1"

# OpenAI CLIP normalisation (open_clip.constants.OPENAI_DATASET_MEAN / STD).
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# Large float initializers with at least this many elements are stored as fp16 in the compact
# (--fixture) graphs, provided their values are exactly representable in fp16.
FP16_MIN_ELEMS = 4096

# Tip-Adapter's 7 ImageNet prompt templates (Zhang et al., utils / imagenet.py).
TIP_TEMPLATES = [
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
]


def ort_session(model_path: str, threads: int):
    """An onnxruntime CPU session as the benchmarks use it: intra_op_num_threads = threads,
    inter_op 1, sequential execution, ORT_ENABLE_ALL."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_sidecar(
    *,
    family: str,
    arch: str,
    tower: str,
    pretrained: str,
    graph_path: str,
    input_name: str,
    input_shape: Sequence[Optional[int]],
    input_dtype: str,
    output_dim: int,
    embed_dim: int,
    preprocess: Optional[dict] = None,
    logit_scale: Optional[float] = None,
    context_length: Optional[int] = None,
    vocab_size: Optional[int] = None,
) -> "OrderedDict[str, object]":
    """Build a sidecar dict with the keys in the documented order (tipedge-sidecar/1)."""
    assert family in ("clip", "backbone")
    assert tower in ("image", "text", "prompt")
    assert input_dtype in ("f32", "i64")
    d: "OrderedDict[str, object]" = OrderedDict()
    d["format"] = SIDECAR_FORMAT
    d["family"] = family
    d["arch"] = arch
    d["tower"] = tower
    d["pretrained"] = pretrained
    d["graph"] = os.path.basename(graph_path)
    d["sha256"] = sha256_file(graph_path)
    d["input"] = OrderedDict([("name", input_name), ("shape", list(input_shape)), ("dtype", input_dtype)])
    d["output"] = OrderedDict([("name", "features"), ("dim", int(output_dim))])
    d["embed_dim"] = int(embed_dim)
    if tower == "image":
        assert preprocess is not None
        d["preprocess"] = preprocess
    if family == "clip":
        assert logit_scale is not None
        d["logit_scale"] = float(logit_scale)
    if tower in ("text", "prompt"):
        d["context_length"] = int(context_length)
        d["vocab_size"] = int(vocab_size)
    return d


def make_preprocess(resize: int, crop_size: int, mean, std, interpolation: str = "bicubic") -> "OrderedDict":
    assert interpolation in ("bicubic", "bilinear")
    p: "OrderedDict[str, object]" = OrderedDict()
    p["resize"] = int(resize)
    p["resize_mode"] = "shortest"
    p["interpolation"] = interpolation
    p["crop"] = "center"
    p["crop_size"] = int(crop_size)
    p["mean"] = [float(x) for x in mean]
    p["std"] = [float(x) for x in std]
    return p


def write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


# ----------------------------------------------------------------------------------------------
# fp16 storage of large initializers


def round_module_fp16_(module, min_elems: int = FP16_MIN_ELEMS) -> int:
    """Round (in place) every floating parameter/buffer with >= min_elems elements through fp16.

    Returns the number of tensors rounded. Used so that PyTorch computes with exactly the weights
    that the compact ONNX graph stores as fp16."""
    import torch

    n = 0
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            if t.is_floating_point() and t.numel() >= min_elems:
                t.copy_(t.half().float())
                n += 1
    return n


def compact_fp16(onnx_path: str, min_elems: int = FP16_MIN_ELEMS) -> dict:
    """Store large f32 initializers as fp16 + a Cast(to=FLOAT) node, in place.

    Only initializers whose values survive the f32 -> f16 -> f32 round trip bit-exactly are
    converted, so the graph computes with exactly the same f32 weights as before: the conversion
    is lossless by construction (the caller rounds the PyTorch weights through fp16 first)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(onnx_path)
    g = model.graph
    used_names = {n for node in g.node for n in list(node.input) + list(node.output)}
    used_names |= {i.name for i in g.initializer}
    new_inits, casts = [], []
    stats = {"converted": 0, "kept_f32_inexact": 0, "bytes_before": 0, "bytes_after": 0, "inexact": []}
    for init in g.initializer:
        arr = numpy_helper.to_array(init)
        nbytes = arr.nbytes
        stats["bytes_before"] += nbytes
        if init.data_type == TensorProto.FLOAT and arr.size >= min_elems:
            h = arr.astype(np.float16)
            if np.array_equal(h.astype(np.float32), arr):
                name16 = init.name + "__fp16"
                assert name16 not in used_names
                new_inits.append(numpy_helper.from_array(h, name16))
                casts.append(helper.make_node("Cast", [name16], [init.name], to=TensorProto.FLOAT,
                                              name=init.name + "__cast"))
                stats["converted"] += 1
                stats["bytes_after"] += h.nbytes
                continue
            stats["kept_f32_inexact"] += 1
            stats["inexact"].append(init.name)
        new_inits.append(init)
        stats["bytes_after"] += nbytes
    del g.initializer[:]
    g.initializer.extend(new_inits)
    old_nodes = list(g.node)
    del g.node[:]
    g.node.extend(casts + old_nodes)
    onnx.checker.check_model(model)
    onnx.save(model, onnx_path)
    return stats


# ----------------------------------------------------------------------------------------------
# checks


def check_onnx(onnx_path: str) -> None:
    """onnx.checker (full) + strict shape inference; prints op histogram and declared I/O."""
    import onnx
    from collections import Counter

    model = onnx.load(onnx_path)
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    ops = Counter(n.op_type for n in inferred.graph.node)
    domains = {n.domain for n in inferred.graph.node if n.domain not in ("", "ai.onnx")}
    if domains:
        raise SystemExit(f"{onnx_path}: non-standard op domains {domains}")

    def fmt(vi):
        dims = [d.dim_param if d.dim_param else d.dim_value for d in vi.type.tensor_type.shape.dim]
        return f"{vi.name}{dims} elem_type={vi.type.tensor_type.elem_type}"

    print(f"  onnx.checker + shape inference OK: {os.path.basename(onnx_path)} opset "
          f"{[o.version for o in model.opset_import]}")
    print("   inputs :", [fmt(i) for i in inferred.graph.input])
    print("   outputs:", [fmt(o) for o in inferred.graph.output])
    print("   ops    :", dict(sorted(ops.items())))


def ort_session(onnx_path: str, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])


def ort_run(sess, x: np.ndarray) -> np.ndarray:
    name = sess.get_inputs()[0].name
    return sess.run(["features"], {name: x})[0]


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    """max abs diff, max abs diff relative to max |b|, min row cosine."""
    a = np.asarray(a, dtype=np.float64).reshape(a.shape[0], -1)
    b = np.asarray(b, dtype=np.float64).reshape(b.shape[0], -1)
    d = np.abs(a - b)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)
    return {
        "max_abs": float(d.max()),
        "max_rel": float(d.max() / (np.abs(b).max() + 1e-30)),
        "min_cosine": float(cos.min()),
    }


def fmt_cmp(c: dict) -> str:
    return f"max_abs={c['max_abs']:.3e} max_rel={c['max_rel']:.3e} min_cosine={c['min_cosine']:.9f}"


# ----------------------------------------------------------------------------------------------
# .npy output (format version 1.0, little endian, C order: what the Rust reader supports)


def save_npy(path: str, arr: np.ndarray) -> None:
    arr = np.asarray(arr)
    if arr.dtype.kind == "f":
        arr = arr.astype("<f4")
    elif arr.dtype.kind in "iub":
        arr = arr.astype("<i8")
    else:
        raise TypeError(arr.dtype)
    arr = np.ascontiguousarray(arr)
    with open(path, "wb") as f:
        np.lib.format.write_array(f, arr, version=(1, 0), allow_pickle=False)


# ----------------------------------------------------------------------------------------------
# Reference image pipeline (PIL + torchvision), see models/README.md


def load_rgb(path: str):
    """PIL.Image.open -> ImageOps.exif_transpose -> convert('RGB'), except 16-bit RGB PNGs.

    Pillow cannot represent 16-bit RGB (Pillow 13 opens a 48-bit PNG as 8-bit RGB keeping only
    the high byte, older versions clipped). For such files the 8-bit RGB is built from the raw
    16-bit samples as round(v / 257) == (v + 128) // 257."""
    from PIL import Image, ImageOps

    with open(path, "rb") as f:
        head = f.read(32)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[24] == 16 and head[25] in (2, 6):
        arr16 = read_png16(path)[..., :3]
        arr8 = np.floor(arr16.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
        return Image.fromarray(arr8, "RGB")
    im = Image.open(path)
    im = ImageOps.exif_transpose(im)
    return im.convert("RGB")


def preprocess(path: str, pre: dict):
    """Reference tensor [1,3,crop,crop] float32 for image file `path` and sidecar recipe `pre`."""
    import torch
    from torchvision import transforms as T

    assert pre["resize_mode"] == "shortest" and pre["crop"] == "center"
    interp = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}[
        pre["interpolation"]]
    tf = T.Compose([
        T.Resize(pre["resize"], interpolation=interp),
        T.CenterCrop(pre["crop_size"]),
        T.ToTensor(),
        T.Normalize(pre["mean"], pre["std"]),
    ])
    with torch.no_grad():
        return tf(load_rgb(path)).unsqueeze(0).contiguous()


# ----------------------------------------------------------------------------------------------
# minimal 16-bit PNG writer / reader (Pillow cannot write or read 16-bit RGB)


def write_png16(path: str, arr: np.ndarray) -> None:
    """Write uint16 array [H,W,3] (or [H,W,4]) as a 16-bit/channel PNG, filter type 0."""
    import struct
    import zlib

    assert arr.dtype == np.uint16 and arr.ndim == 3 and arr.shape[2] in (3, 4)
    h, w, c = arr.shape
    color_type = 2 if c == 3 else 6
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw, 9)))
        f.write(chunk(b"IEND", b""))


def read_png16(path: str) -> np.ndarray:
    """Read a non-interlaced 16-bit RGB/RGBA PNG as uint16 [H,W,C] (all five filter types)."""
    import struct
    import zlib

    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        tag = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        if tag == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = ihdr
    assert depth == 16 and ctype in (2, 6) and interlace == 0
    c = 3 if ctype == 2 else 4
    bpp = 2 * c
    stride = w * bpp
    raw = zlib.decompress(idat)
    out = np.zeros((h, stride), np.uint8)
    prev = np.zeros(stride, np.int32)
    for y in range(h):
        ft = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int32)
        cur = np.zeros(stride, np.int32)
        if ft == 0:
            out[y] = line
            prev = line
            continue
        for x in range(stride):
            a = cur[x - bpp] if x >= bpp else 0
            b = prev[x]
            cc = prev[x - bpp] if x >= bpp else 0
            if ft == 0:
                p = 0
            elif ft == 1:
                p = a
            elif ft == 2:
                p = b
            elif ft == 3:
                p = (a + b) // 2
            else:
                pa, pb, pc = abs(b - cc), abs(a - cc), abs(a + b - 2 * cc)
                p = a if (pa <= pb and pa <= pc) else (b if pb <= pc else cc)
            cur[x] = (line[x] + p) & 0xFF
        out[y] = cur
        prev = cur
    return out.view(">u2").reshape(h, w, c).astype(np.uint16)
