#!/usr/bin/env python3
"""Reference outputs for the Rust training / augmentation parity tests: models/fixtures/train/.

Re-run with `/work/pyenv/bin/python models/make_train_refs.py` (a few seconds, CPU only, one
thread). Deterministic: fixed seeds, no data downloaded. Inputs: the fixture photos
models/fixtures/images/ (make_images.py) and examples/textile/shots/nominal/ (make_example.py).

The functions of the official Tip-Adapter code (gaopengcuhk/Tip-Adapter, utils.py and
main.py) are re-implemented here (not copied) in numpy (float64) and torch (float32):

  B1  crop_K.npy           torchvision RandomResizedCrop with fixed parameters: resized_crop
                           (bicubic, to S x S) -> optional hflip -> ToTensor -> Normalize(CLIP).
  B2  tip_*.npy            Tip-Adapter logits and the official alpha/beta grid search
                           (`search_hp`: beta outer, alpha inner, top-1 accuracy in percent, best
                           updated on strictly greater accuracy), with and without the zero-shot
                           term, on a synthetic but realistic problem, computed in float64 from
                           the stored float32 inputs.
  B3  cache_*.npy          `build_cache_model`: keys = mean over augmentation passes of the raw
                           features, then divided by each key's L2 norm (float64, cast to f32).
  B4  tipf_*.npy           6 Tip-Adapter-F optimiser steps (`run_tip_adapter_F`): Linear adapter
                           initialised with the keys, AdamW(lr 1e-3, eps 1e-4, weight decay
                           0.01), CosineAnnealingLR(T_max 10), float32 torch on CPU. Checked
                           against an independent float64 numpy re-implementation (manual
                           gradient, textbook AdamW, torch's recursive cosine schedule).

Every file is npy format 1.0 (numpy.save), little endian, C order; dtype '<f4', '<f8' or '<i8'
as listed in manifest.json, which also records every scalar parameter and result.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
from collections import OrderedDict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CROP_SIZE = 48

# B2 synthetic problem
B2_SEED = 27  # chosen with --scan-b2-seeds 40: see the manifest margin statistics
B2_DIM, B2_CLASSES, B2_KEYS_PER_CLASS, B2_QUERIES_PER_CLASS = 64, 5, 8, 30
B2_ALPHA, B2_BETA = 1.17, 5.5
# Image features: unit prototypes sharing a common direction (weight B2_PROTO_SHARED) plus
# per-coordinate noise (a noise vector has norm ~ sigma * sqrt(dim)): same-class image-image
# cosines ~0.6-0.7. Text (W): a small multiple B2_W_PROTO of the prototype on top of a common
# "modality gap" direction, as with CLIP (image-text cosines ~0.2-0.3, differences of a few
# hundredths between classes, i.e. a few logits after the x100 scale).
B2_PROTO_SHARED, B2_NOISE_KEY, B2_NOISE_QUERY = 0.75, 0.08, 0.10
B2_W_PROTO, B2_NOISE_W = 0.1, 0.0035
# official search ranges (configs/imagenet.yaml: search_scale [7, 3], search_step [200, 20])
SEARCH_SCALE, SEARCH_STEP = (7.0, 3.0), (200, 20)

# B3
B3_SEED, B3_PASSES, B3_SHOTS, B3_DIM = 2, 3, 12, 16

# B4
B4_SEED = 3
B4_DIM, B4_CLASSES, B4_KEYS_PER_CLASS, B4_STEPS, B4_BATCH = 32, 4, 4, 6, 8
B4_ALPHA, B4_BETA, B4_LOGIT_SCALE = 1.17, 5.5, 100.0
B4_LR, B4_EPS, B4_WD, B4_BETAS, B4_TMAX = 1e-3, 1e-4, 1e-2, (0.9, 0.999), 10


# ----------------------------------------------------------------------------------------------
# helpers


def rel(path: str) -> str:
    return os.path.relpath(path, REPO).replace(os.sep, "/")


class Writer:
    """Saves .npy files and collects their manifest entries."""

    DTYPES = {"<f4", "<f8", "<i8"}

    def __init__(self, out: str):
        self.out = out
        self.files = OrderedDict()
        self.total = 0
        os.makedirs(out, exist_ok=True)

    def save(self, name: str, arr, dtype: str, meaning: str) -> None:
        assert dtype in self.DTYPES, dtype
        arr = np.ascontiguousarray(np.asarray(arr).astype(dtype))
        path = os.path.join(self.out, name)
        np.save(path, arr, allow_pickle=False)
        self.total += os.path.getsize(path)
        self.files[name] = OrderedDict([("shape", list(arr.shape)), ("dtype", dtype), ("meaning", meaning)])


def l2n(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def f32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# B1: RandomResizedCrop with given parameters


def crop_cases():
    """(image path, top i, left j, height h, width w, flip, what it exercises)."""
    img = os.path.join(REPO, "models", "fixtures", "images")
    nominal = os.path.join(REPO, "examples", "textile", "shots", "nominal")
    textile = os.path.join(nominal, sorted(f for f in os.listdir(nominal) if f.lower().endswith(".jpg"))[0])
    chelsea, coffee, tiny = (os.path.join(img, f) for f in ("chelsea.jpg", "coffee.jpg", "tiny_20x13.bmp"))
    return [
        (chelsea, 20, 60, 200, 300, False, "downscale both axes, non-square (3:2), interior"),
        (chelsea, 163, 240, 137, 211, True, "touches right and bottom border (451x300), downscale, flip"),
        (chelsea, 5, 7, 48, 150, False, "height == S: Pillow skips the vertical pass, horizontal downscale only"),
        (coffee, 0, 0, 400, 600, True, "whole image (600x400), strong downscale, flip"),
        (coffee, 123, 377, 48, 48, False, "exactly S x S: Pillow's identity (no resampling), no flip"),
        (coffee, 352, 552, 48, 48, True, "exactly S x S at the bottom-right corner, flip"),
        (tiny, 0, 0, 13, 20, False, "whole 20x13 image, upscale both axes"),
        (tiny, 3, 13, 10, 7, True, "touches right and bottom border of the tiny image, upscale, flip"),
        (tiny, 2, 1, 5, 12, False, "strong non-square upscale (5x12 -> 48x48)"),
        (textile, 10, 30, 180, 120, True, "textile 250x250: tall crop, downscale, flip"),
        (textile, 190, 0, 60, 40, False, "touches bottom and left border, vertical downscale + horizontal upscale"),
    ]


def make_crops(w: Writer, size: int = CROP_SIZE):
    import torch
    import torchvision.transforms.functional as TF
    from PIL import Image
    from torchvision.transforms import InterpolationMode

    entries = []
    for k, (path, i, j, h, ww, flip, what) in enumerate(crop_cases()):
        im = Image.open(path).convert("RGB")
        W, H = im.size
        assert 0 <= i and 0 <= j and i + h <= H and j + ww <= W, (path, i, j, h, ww)
        out = TF.resized_crop(im, i, j, h, ww, [size, size], InterpolationMode.BICUBIC)
        if flip:
            out = TF.hflip(out)
        t = TF.normalize(TF.to_tensor(out), list(CLIP_MEAN), list(CLIP_STD))
        assert t.dtype == torch.float32 and tuple(t.shape) == (3, size, size)
        name = f"crop_{k}.npy"
        w.save(name, t.numpy(), "<f4", f"B1 case {k}: normalised tensor [3,S,S] of the crop (see 'crops')")
        entries.append(OrderedDict([
            ("file", name), ("image", rel(path)), ("image_size_wh", [W, H]), ("i", i), ("j", j), ("h", h),
            ("w", ww), ("flip", flip), ("size", size), ("mean", list(CLIP_MEAN)), ("std", list(CLIP_STD)),
            ("exercises", what),
            ("touches_right", j + ww == W), ("touches_bottom", i + h == H),
        ]))
        print(f"  crop_{k}: {rel(path)} i={i} j={j} h={h} w={ww} flip={flip}")
    return entries


# ----------------------------------------------------------------------------------------------
# B2: Tip-Adapter logits and the official alpha/beta search (float64)


def search_lists(scale=SEARCH_SCALE, step=SEARCH_STEP):
    """Official search_hp lists, same expression and evaluation order (Python floats)."""
    beta_list = [i * (scale[0] - 0.1) / step[0] + 0.1 for i in range(step[0])]
    alpha_list = [i * (scale[1] - 0.1) / step[1] + 0.1 for i in range(step[1])]
    return beta_list, alpha_list


def tip_logits(q, keys, values, w, alpha, beta, clip=True):
    """Official form: exp(-(beta - beta * affinity)) @ values * alpha (+ 100 q W^T), float64."""
    affinity = q @ keys.T
    cache = np.exp(-1.0 * (beta - beta * affinity)) @ values
    out = cache * alpha
    if clip:
        out = 100.0 * (q @ w.T) + out
    return out


def margins(logits):
    s = np.sort(logits, axis=1)
    return s[:, -1] - s[:, -2]


def rel_margins(logits):
    """Margin divided by |top-1 logit| (what f32 rounding of the logits is relative to)."""
    s = np.sort(logits, axis=1)
    return (s[:, -1] - s[:, -2]) / np.abs(s[:, -1])


def grid_search(q, labels, keys, values, w, clip):
    """acc[b, a] in percent, best (beta, alpha, acc), margin statistics. Loops as in search_hp."""
    beta_list, alpha_list = search_lists()
    acc = np.zeros((len(beta_list), len(alpha_list)))
    marg = np.zeros((len(beta_list), len(alpha_list), len(q)))
    rmarg = np.zeros_like(marg)
    best_acc, best_beta, best_alpha = 0.0, 0.0, 0.0
    best_idx = [None, None]
    for bi, beta in enumerate(beta_list):
        for ai, alpha in enumerate(alpha_list):
            lg = tip_logits(q, keys, values, w, alpha, beta, clip)
            correct = int((np.argmax(lg, axis=1) == labels).sum())
            a = 100.0 * correct / len(labels)
            acc[bi, ai] = a
            marg[bi, ai] = margins(lg)
            rmarg[bi, ai] = rel_margins(lg)
            if a > best_acc:
                best_acc, best_beta, best_alpha, best_idx = a, beta, alpha, [bi, ai]
    return acc, marg, rmarg, (best_beta, best_alpha, best_acc, best_idx)


def b2_data(seed=B2_SEED):
    rng = np.random.default_rng(seed)
    d, c = B2_DIM, B2_CLASSES
    # correlated prototypes (a shared direction) make the classes confusable
    shared = rng.standard_normal(d)
    protos = l2n(B2_PROTO_SHARED * l2n(shared) + (1 - B2_PROTO_SHARED) * l2n(rng.standard_normal((c, d))))
    key_labels = np.repeat(np.arange(c), B2_KEYS_PER_CLASS)
    q_labels = np.repeat(np.arange(c), B2_QUERIES_PER_CLASS)
    keys = f32(l2n(protos[key_labels] + B2_NOISE_KEY * rng.standard_normal((len(key_labels), d))))
    gap = l2n(rng.standard_normal(d))
    w = f32(l2n(B2_W_PROTO * protos + gap + B2_NOISE_W * rng.standard_normal((c, d))))
    q = f32(l2n(protos[q_labels] + B2_NOISE_QUERY * rng.standard_normal((len(q_labels), d))))
    return keys, key_labels, w, q, q_labels


def b2_evaluate(seed):
    keys, kl, w, q, ql = b2_data(seed)
    k64, w64, q64 = (x.astype(np.float64) for x in (keys, w, q))
    values = np.eye(B2_CLASSES)[kl]
    res = {}
    for name, clip in (("tip", True), ("cache", False)):
        res[name] = grid_search(q64, ql, k64, values, w64, clip)
    return (keys, kl, w, q, ql), res


def b2_summary(acc, marg, rmarg, best):
    m = marg.min(axis=2)
    r = rmarg.min(axis=2)
    return OrderedDict([
        ("best_beta", best[0]), ("best_alpha", best[1]), ("best_acc", best[2]),
        ("best_index_beta_alpha", best[3]),
        ("acc_min", float(acc.min())), ("acc_max", float(acc.max())),
        ("distinct_acc_values", int(len(np.unique(acc)))),
        ("min_margin", float(m.min())),
        ("min_margin_cell_beta_alpha_index", [int(x) for x in np.unravel_index(np.argmin(m), m.shape)]),
        ("cells_with_min_margin_below_1e-5", int((m < 1e-5).sum())),
        ("cells_with_min_margin_below_1e-4", int((m < 1e-4).sum())),
        ("cells_with_min_margin_below_1e-3", int((m < 1e-3).sum())),
        ("query_cell_pairs_with_margin_below_1e-4", int((marg < 1e-4).sum())),
        ("best_cell_min_margin", float(m[tuple(best[3])])),
        ("cells_with_best_acc", int((acc == best[2]).sum())),
        ("near_best_cells_at_risk", int(((acc >= best[2] - 100.0 / marg.shape[2] - 1e-9) & (m < 1e-4)).sum())),
        ("min_relative_margin", float(r.min())),
        ("cells_with_min_relative_margin_below_1e-5", int((r < 1e-5).sum())),
        ("cells_with_min_relative_margin_below_1e-6", int((r < 1e-6).sum())),
    ])


def make_b2(w: Writer, seed=B2_SEED):
    (keys, kl, wt, q, ql), res = b2_evaluate(seed)
    k64, w64, q64 = (x.astype(np.float64) for x in (keys, wt, q))
    values = np.eye(B2_CLASSES)[kl]
    w.save("tip_keys.npy", keys, "<f4", "B2 cache keys [40,64], unit rows (f32), sorted by class: 8 per class")
    w.save("tip_key_labels.npy", kl, "<i8", "B2 key labels [40]: 0,0,...,4 (cache values = one_hot(labels))")
    w.save("tip_clip_weights.npy", wt, "<f4",
           "B2 zero-shot classifier W [5,64], unit rows (official clip_weights is its transpose [64,5])")
    w.save("tip_queries.npy", q, "<f4", "B2 validation query features [150,64], unit rows (f32)")
    w.save("tip_query_labels.npy", ql, "<i8", "B2 query labels [150]: 30 per class, sorted")
    lg = tip_logits(q64, k64, values, w64, B2_ALPHA, B2_BETA, True)
    w.save("tip_logits.npy", lg, "<f8",
           f"B2 Tip-Adapter logits [150,5] for alpha={B2_ALPHA}, beta={B2_BETA}: 100 q W^T + alpha "
           "exp(-beta (1 - q K^T)) one_hot(labels), float64 from the f32 inputs")
    beta_list, alpha_list = search_lists()
    w.save("search_beta_list.npy", np.array(beta_list), "<f8",
           "B2 official beta_list [200]: i*(7-0.1)/200 + 0.1 (Python float arithmetic)")
    w.save("search_alpha_list.npy", np.array(alpha_list), "<f8",
           "B2 official alpha_list [20]: j*(3-0.1)/20 + 0.1 (Python float arithmetic)")
    w.save("search_acc_tip.npy", res["tip"][0], "<f8",
           "B2 accuracy grid [200 beta, 20 alpha] in percent (100*correct/150), full Tip-Adapter logits")
    w.save("search_acc_cache.npy", res["cache"][0], "<f8",
           "B2 accuracy grid [200 beta, 20 alpha] in percent, cache-only logits alpha*exp(-beta(1-qK^T)) L")
    w.save("search_margin_tip.npy", res["tip"][1].min(axis=2), "<f8",
           "B2 per grid cell [200,20]: min over the 150 queries of top1 - top2 of the full logits "
           "(a cell whose margin is tiny may legitimately differ by one query under f32 arithmetic)")
    w.save("search_margin_cache.npy", res["cache"][1].min(axis=2), "<f8",
           "B2 per grid cell [200,20]: min over queries of top1 - top2 of the cache-only logits")
    lm = margins(lg)
    info = OrderedDict([
        ("seed", seed), ("rng", "numpy.random.default_rng(seed)"), ("dim", B2_DIM), ("classes", B2_CLASSES),
        ("keys_per_class", B2_KEYS_PER_CLASS), ("queries_per_class", B2_QUERIES_PER_CLASS),
        ("generation", "prototypes p_c = l2n(s*l2n(shared) + (1-s)*l2n(N(0,I))) with s = proto_shared; "
                       "keys = l2n(p_label + noise_key*N(0,I)), gap = l2n(N(0,I)), "
                       "W = l2n(w_proto*p_c + gap + noise_w*N(0,I)), "
                       "queries = l2n(p_label + noise_query*N(0,I)); all cast to f32 and stored"),
        ("proto_shared", B2_PROTO_SHARED), ("noise_key", B2_NOISE_KEY), ("w_proto", B2_W_PROTO),
        ("noise_w", B2_NOISE_W), ("noise_query", B2_NOISE_QUERY),
        ("alpha", B2_ALPHA), ("beta", B2_BETA), ("logit_scale", 100.0),
        ("logits_formula", "official: clip = 100 * q @ W^T; cache = exp(-1 * (beta - beta * (q @ K^T))) @ one_hot; "
                           "logits = clip + cache * alpha (float64 throughout; exp(-beta(1-a)) agrees to ~1e-16)"),
        ("logits_top1_accuracy", 100.0 * float((np.argmax(lg, 1) == ql).mean())),
        ("logits_min_margin", float(lm.min())),
        ("zero_shot_only_accuracy", 100.0 * float((np.argmax(q64 @ w64.T, 1) == ql).mean())),
        ("search", OrderedDict([
            ("search_scale", list(SEARCH_SCALE)), ("search_step", list(SEARCH_STEP)),
            ("order", "for beta in beta_list: for alpha in alpha_list (acc[b, a]); best_acc starts at 0 and "
                      "is replaced only when acc > best_acc (first maximum in that order wins)"),
            ("accuracy", "top-1 (argmax over classes) correct count * 100 / 150, as cls_acc"),
            ("margin", "top1 - top2 logit per query; min_margin = min over queries and grid cells. "
                       "cells_with_min_margin_below_X counts grid cells whose closest query is within X; "
                       "relative margin = margin / |top1| (f32 rounding is relative: logits of the full "
                       "model are ~30, cache-only logits can be < 0.1 at alpha 0.1 and large beta)"),
            ("near_best_cells_at_risk", "cells with accuracy >= best - one query (100/150) whose min margin is "
                                        "< 1e-4: a flip there could change the argmax cell under f32"),
            ("tip", b2_summary(*res["tip"])),
            ("cache_only", b2_summary(*res["cache"])),
            ("cache_only_note", "alpha scales every cache-only logit equally, so for alpha > 0 the "
                                "cache-only accuracy does not depend on alpha (each grid row is constant) "
                                "and the best alpha is the first, 0.1"),
        ])),
    ])
    return info


def pick_b2_seed(seeds):
    for s in seeds:
        _, res = b2_evaluate(s)
        t, c = b2_summary(*res["tip"]), b2_summary(*res["cache"])
        print(f"  seed {s}: risk {t['near_best_cells_at_risk']}/{c['near_best_cells_at_risk']} tip acc {t['acc_min']:.2f}..{t['acc_max']:.2f} ({t['distinct_acc_values']}) "
              f"best b={t['best_beta']:.4f} a={t['best_alpha']:.4f} min {t['min_margin']:.1e} "
              f"cells <1e-5/-4/-3: {t['cells_with_min_margin_below_1e-5']}/{t['cells_with_min_margin_below_1e-4']}"
              f"/{t['cells_with_min_margin_below_1e-3']}; cache acc {c['acc_min']:.2f}..{c['acc_max']:.2f} "
              f"min {c['min_margin']:.1e} rel {c['min_relative_margin']:.1e} cells rel<1e-5/-6: "
              f"{c['cells_with_min_relative_margin_below_1e-5']}/{c['cells_with_min_relative_margin_below_1e-6']}",
              flush=True)


# ----------------------------------------------------------------------------------------------
# B3: cache keys from augmented passes (build_cache_model)


def make_b3(w: Writer, seed=B3_SEED):
    rng = np.random.default_rng(seed)
    raw = f32(3.0 * rng.standard_normal((B3_PASSES, B3_SHOTS, B3_DIM)))
    mean = raw.astype(np.float64).mean(axis=0)
    keys = mean / np.linalg.norm(mean, axis=-1, keepdims=True)
    w.save("cache_raw_features.npy", raw, "<f4",
           "B3 raw (unnormalised) image features [3 passes, 12 shots, 16]: 3*N(0,1) cast to f32")
    w.save("cache_keys.npy", f32(keys), "<f4",
           "B3 cache keys [12,16]: mean over the 3 passes, then divided by each key's L2 norm "
           "(float64, cast to f32); the official cache_keys is its transpose [16,12]")
    return OrderedDict([
        ("seed", seed), ("rng", "numpy.random.default_rng(seed)"), ("passes", B3_PASSES),
        ("shots", B3_SHOTS), ("dim", B3_DIM),
        ("formula", "keys = mean_e(raw[e]); keys /= ||keys||_2 per row (no normalisation of single passes)"),
        ("raw_norm_range", [float(np.linalg.norm(raw, axis=-1).min()), float(np.linalg.norm(raw, axis=-1).max())]),
    ])


# ----------------------------------------------------------------------------------------------
# B4: Tip-Adapter-F optimiser steps


def b4_data(seed=B4_SEED):
    rng = np.random.default_rng(seed)
    d, c, kpc = B4_DIM, B4_CLASSES, B4_KEYS_PER_CLASS
    protos = l2n(0.5 * l2n(rng.standard_normal(d)) + 0.5 * l2n(rng.standard_normal((c, d))))
    key_labels = np.repeat(np.arange(c), kpc)
    keys = f32(l2n(protos[key_labels] + 0.12 * rng.standard_normal((c * kpc, d))))
    w = f32(l2n(protos + 0.15 * rng.standard_normal((c, d))))
    targets = rng.integers(0, c, size=(B4_STEPS, B4_BATCH))
    feats = f32(l2n(protos[targets] + 0.15 * rng.standard_normal((B4_STEPS, B4_BATCH, d))))
    return keys, key_labels, w, feats, targets


def tipf_torch(keys, key_labels, w, feats, targets):
    """Official run_tip_adapter_F inner loop, float32 torch on CPU."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)  # nothing random below; set for good measure
    adapter = torch.nn.Linear(B4_DIM, keys.shape[0], bias=False)
    adapter.weight = torch.nn.Parameter(torch.from_numpy(keys.copy()))
    values = F.one_hot(torch.from_numpy(key_labels), B4_CLASSES).float()
    clip_w = torch.from_numpy(w.copy()).t()  # official clip_weights [dim, classes]
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=B4_LR, eps=B4_EPS)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, B4_TMAX)
    g = optimizer.param_groups[0]
    assert g["weight_decay"] == B4_WD and tuple(g["betas"]) == B4_BETAS and not g["amsgrad"], g
    assert not g.get("foreach") and not g.get("fused"), g
    beta, alpha = B4_BETA, B4_ALPHA
    after, losses, lrs, grad0, logits0 = [], [], [], None, None
    for t in range(B4_STEPS):
        f = torch.from_numpy(feats[t].copy())
        y = torch.from_numpy(targets[t].copy())
        affinity = adapter(f)
        cache_logits = ((-1) * (beta - beta * affinity)).exp() @ values
        clip_logits = B4_LOGIT_SCALE * f @ clip_w
        tip = clip_logits + cache_logits * alpha
        loss = F.cross_entropy(tip, y)
        lrs.append(float(optimizer.param_groups[0]["lr"]))
        optimizer.zero_grad()
        loss.backward()
        if t == 0:
            grad0 = adapter.weight.grad.detach().numpy().copy()
            logits0 = tip.detach().numpy().copy()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.item()))
        after.append(adapter.weight.detach().numpy().copy())
    return np.stack(after), np.array(losses, np.float32), np.array(lrs), grad0, logits0


def tipf_numpy(keys, key_labels, w, feats, targets):
    """Independent float64 re-implementation (manual gradient, textbook AdamW) for cross-checking."""
    k = keys.astype(np.float64)
    wt = w.astype(np.float64)
    values = np.eye(B4_CLASSES)[key_labels]
    m, v = np.zeros_like(k), np.zeros_like(k)
    b1, b2 = B4_BETAS
    lr = B4_LR
    after, losses, lrs, grads = [], [], [], []
    for t in range(B4_STEPS):
        f = feats[t].astype(np.float64)
        y = targets[t]
        e = np.exp(-(B4_BETA - B4_BETA * (f @ k.T)))  # [B, N]
        logits = B4_LOGIT_SCALE * f @ wt.T + B4_ALPHA * (e @ values)
        z = logits - logits.max(1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        losses.append(float(np.mean(-np.log(p[np.arange(len(y)), y]))))
        dlog = (p - np.eye(B4_CLASSES)[y]) / len(y)  # d loss / d logits
        de = B4_ALPHA * dlog @ values.T  # d loss / d e
        daff = de * e * B4_BETA  # d e / d affinity = beta * e
        grad = daff.T @ f  # affinity = f @ k^T
        grads.append(grad)
        lrs.append(lr)
        # AdamW (decoupled weight decay), step count s = t + 1
        s = t + 1
        k = k * (1 - lr * B4_WD)
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad * grad
        denom = np.sqrt(v) / math.sqrt(1 - b2 ** s) + B4_EPS
        k = k - (lr / (1 - b1 ** s)) * m / denom
        after.append(k.copy())
        # torch's CosineAnnealingLR recursive (chainable) update, eta_min = 0
        n = t + 1
        lr = (1 + math.cos(math.pi * n / B4_TMAX)) / (1 + math.cos(math.pi * (n - 1) / B4_TMAX)) * lr
    return np.stack(after), np.array(losses), np.array(lrs), grads[0]


def make_b4(w: Writer, seed=B4_SEED):
    keys, kl, wt, feats, targets = b4_data(seed)
    after, losses, lrs, grad0, logits0 = tipf_torch(keys, kl, wt, feats, targets)
    n_after, n_losses, n_lrs, n_grad0 = tipf_numpy(keys, kl, wt, feats, targets)
    closed = np.array([B4_LR * (1 + math.cos(math.pi * t / B4_TMAX)) / 2 for t in range(B4_STEPS)])
    move = float(np.abs(after[-1].astype(np.float64) - keys).max())
    check = OrderedDict([
        ("keys_max_abs_torch_f32_vs_numpy_f64", float(np.abs(after - n_after).max())),
        ("loss_max_abs", float(np.abs(losses - n_losses).max())),
        ("grad0_max_abs", float(np.abs(grad0 - n_grad0).max())),
        ("grad0_max_abs_ref", float(np.abs(grad0).max())),
        ("lr_max_abs", float(np.abs(lrs - n_lrs).max())),
        ("lr_recursive_vs_closed_form_max_abs", float(np.abs(lrs - closed).max())),
    ])
    print("  B4 check:", dict(check))
    assert check["keys_max_abs_torch_f32_vs_numpy_f64"] < 1e-5 and check["lr_max_abs"] == 0.0, check
    assert move > 1e-4, move
    w.save("tipf_keys_init.npy", keys, "<f4", "B4 initial cache keys = adapter weight [16,32], unit rows, sorted by class")
    w.save("tipf_key_labels.npy", kl, "<i8", "B4 key labels [16]: 4 per class; cache values = one_hot [16,4] f32")
    w.save("tipf_clip_weights.npy", wt, "<f4", "B4 zero-shot classifier W [4,32], unit rows (official clip_weights = W^T)")
    w.save("tipf_features.npy", feats, "<f4", "B4 training batches [6 steps, 8, 32]: unit-norm image features")
    w.save("tipf_targets.npy", targets, "<i8", "B4 training targets [6 steps, 8]")
    w.save("tipf_keys_after.npy", after, "<f4", "B4 adapter weight after each step [6,16,32] (index t = after step t)")
    w.save("tipf_loss.npy", losses, "<f4", "B4 cross-entropy loss at each step [6] (before that step's update)")
    w.save("tipf_lr.npy", lrs, "<f8", "B4 learning rate used by each step [6] (param_groups[0]['lr'] before optimizer.step)")
    w.save("tipf_grad0.npy", grad0, "<f4", "B4 gradient of the loss w.r.t. the adapter weight at step 0 [16,32]")
    return OrderedDict([
        ("seed", seed), ("rng", "numpy.random.default_rng(seed)"), ("dim", B4_DIM), ("classes", B4_CLASSES),
        ("keys_per_class", B4_KEYS_PER_CLASS), ("steps", B4_STEPS), ("batch", B4_BATCH),
        ("alpha", B4_ALPHA), ("beta", B4_BETA), ("logit_scale", B4_LOGIT_SCALE),
        ("generation", "prototypes p_c = l2n(0.5 l2n(N) + 0.5 l2n(N)); keys = l2n(p_label + 0.12 N), "
                       "W = l2n(p_c + 0.15 N), targets uniform, features = l2n(p_target + 0.15 N); f32"),
        ("model", "adapter = nn.Linear(32, 16, bias=False), weight = keys [16,32]; affinity = f @ weight^T; "
                  "cache_logits = exp(-1 * (beta - beta * affinity)) @ values; clip_logits = 100 * f @ W^T; "
                  "logits = clip_logits + cache_logits * alpha; loss = F.cross_entropy(logits, targets) (mean)"),
        ("optimizer", OrderedDict([
            ("name", "torch.optim.AdamW (single-tensor CPU path: foreach/fused off)"),
            ("lr", B4_LR), ("eps", B4_EPS), ("weight_decay", B4_WD), ("betas", list(B4_BETAS)),
            ("amsgrad", False),
            ("update", "s = step count (1-based); w *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; "
                       "denom = sqrt(v) / sqrt(1 - b2^s) + eps; w -= lr / (1 - b1^s) * m / denom"),
        ])),
        ("scheduler", OrderedDict([
            ("name", "torch.optim.lr_scheduler.CosineAnnealingLR"), ("T_max", B4_TMAX), ("eta_min", 0.0),
            ("note", "torch updates the lr recursively: lr_n = (1 + cos(pi n/T)) / (1 + cos(pi (n-1)/T)) * lr_(n-1); "
                     "closed form lr0 (1 + cos(pi n/T)) / 2 agrees within lr_recursive_vs_closed_form_max_abs"),
        ])),
        ("per_step", "zero_grad, backward, optimizer.step(), scheduler.step()"),
        ("loss", [float(x) for x in losses]),
        ("lr", [float(x) for x in lrs]),
        ("logits_step0_margin_min", float(margins(logits0).min())),
        ("train_accuracy_step0", 100.0 * float((np.argmax(logits0, 1) == targets[0]).mean())),
        ("max_abs_keys_6_minus_keys_0", move),
        ("max_abs_step_update", [float(np.abs(after[t].astype(np.float64) - (keys if t == 0 else after[t - 1])).max())
                                 for t in range(B4_STEPS)]),
        ("cross_check_numpy_float64", check),
    ])


# ----------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "fixtures", "train"))
    ap.add_argument("--scan-b2-seeds", type=int, default=0, metavar="N",
                    help="only print the B2 grid statistics for seeds 0..N-1 (to choose B2_SEED), write nothing")
    ap.add_argument("--scan-from", type=int, default=0, help="first seed of --scan-b2-seeds")
    args = ap.parse_args(argv)

    import torch
    import torchvision
    import PIL

    torch.set_num_threads(1)
    if args.scan_b2_seeds:
        pick_b2_seed(range(args.scan_from, args.scan_from + args.scan_b2_seeds))
        return

    w = Writer(args.out)
    crops = make_crops(w)
    b2 = make_b2(w)
    b3 = make_b3(w)
    b4 = make_b4(w)
    manifest = OrderedDict([
        ("format", "tipedge-train-reference/1"),
        ("generated_by", "models/make_train_refs.py (/work/pyenv/bin/python models/make_train_refs.py)"),
        ("npy", "npy format 1.0 (numpy.save), little endian, C order; dtype '<f4', '<f8' or '<i8' as listed"),
        ("versions", OrderedDict([("python", platform.python_version()), ("torch", torch.__version__),
                                  ("torchvision", torchvision.__version__), ("pillow", PIL.__version__),
                                  ("numpy", np.__version__)])),
        ("official_code", "gaopengcuhk/Tip-Adapter utils.py (build_cache_model, search_hp, cls_acc) and main.py "
                          "(run_tip_adapter_F), re-implemented here"),
        ("crops", OrderedDict([
            ("pipeline", "PIL Image.open(p).convert('RGB') -> torchvision.transforms.functional.resized_crop("
                         "img, i, j, h, w, [size, size], InterpolationMode.BICUBIC) -> hflip if flip -> "
                         "to_tensor -> normalize(mean, std)"),
            ("params", "i = top row, j = left column, h = crop height, w = crop width (pixels of the decoded image)"),
            ("cases", crops),
        ])),
        ("tip_search", b2),
        ("cache_build", b3),
        ("tip_adapter_f", b4),
        ("total_bytes_npy", w.total),
        ("files", w.files),
    ])
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(f"  wrote {len(w.files)} .npy files ({w.total / 1e6:.3f} MB) + manifest.json to {rel(args.out)}")
    t, c = b2["search"]["tip"], b2["search"]["cache_only"]
    print(f"  tip grid: best beta {t['best_beta']} alpha {t['best_alpha']} acc {t['best_acc']}, "
          f"min margin {t['min_margin']:.3e}; cache-only: best beta {c['best_beta']} alpha {c['best_alpha']} "
          f"acc {c['best_acc']}, min margin {c['min_margin']:.3e}; key movement {b4['max_abs_keys_6_minus_keys_0']:.3e}")


if __name__ == "__main__":
    main()
