#!/usr/bin/env python3
"""Reference outputs for the Rust TDA parity test (tests/tda.rs): models/fixtures/tda/.

Re-run with `python3 models/make_tda_refs.py` (numpy only, well under a second). Deterministic.

TDA (Karmanov et al., CVPR 2024, "Efficient Test-Time Adaptation of Vision-Language Models";
code kdiAAA/TDA, tda_runner.py and utils.py) is re-implemented here, not copied, in the
official code's own structure — a dict of per-class Python lists, `sorted(..., key=loss)` after
every update, the caches' keys walked in sorted class order — for the single-view path (one
image per step, as the official runner does for the cross-domain datasets):

  per frame, from the base logits (the official `100 * f @ W`):
    loss = softmax entropy (natural log), prob = softmax, pred = argmax;
    normalised entropy = loss / log2(C)            (sic: the official get_entropy);
    positive cache: update_cache(pos, pred, (f, loss), capacity)
    negative cache: if lower < normalised entropy < upper:
                    update_cache(neg, pred, (f, loss, prob), capacity)
    update_cache: a class not cached yet gets [item]; below capacity the item is appended;
                  at capacity it replaces the last (worst) item if its loss is strictly lower;
                  then the class's list is sorted by loss (stable).
    logits = base + pos_alpha * sum_k exp(-pos_beta (1 - f.k)) onehot(class of k)
                  - neg_alpha * sum_k exp(-neg_beta (1 - f.k)) [mask_lo < prob_k < mask_hi]
    (the caches are updated with the current frame before it is scored).

Float64 throughout, from the stored float32 inputs. The defaults are the official ImageNet
configuration (configs/imagenet.yaml).

Files (npy 1.0, little endian, C order):
  features.npy    N x D  <f4  unit-norm frame features (every 7th repeats the one before)
  base_logits.npy N x C  <f4  100 * f @ W
  logits.npy      N x C  <f8  the TDA logits of each frame
  pos_cache.npy   N x C x pos_capacity <i8  after each frame: the frames in each class's
                  positive cache, in the cache's order (ascending loss), -1 = empty
  neg_cache.npy   N x C x neg_capacity <i8  the same for the negative cache
  manifest.json   the configuration and statistics (updates, evictions)
"""
from __future__ import annotations

import json
import math
import operator
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "tda")

SEED = 5
W_PROTO = 0.04
N, D, C = 120, 24, 5
CONFIG = {
    "positive": {"shot_capacity": 3, "alpha": 2.0, "beta": 5.0},
    "negative": {
        "shot_capacity": 2,
        "alpha": 0.117,
        "beta": 1.0,
        "entropy_threshold": {"lower": 0.2, "upper": 0.5},
        "mask_threshold": {"lower": 0.03, "upper": 1.0},
    },
}


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def softmax_entropy(x):
    # -(softmax * log_softmax).sum()
    logp = x - (x.max() + np.log(np.exp(x - x.max()).sum()))
    return float(-(np.exp(logp) * logp).sum())


def get_entropy(loss, n_classes):
    return float(loss / math.log2(n_classes))


def update_cache(cache, pred, item, shot_capacity):
    if pred in cache:
        if len(cache[pred]) < shot_capacity:
            cache[pred].append(item)
        elif item[1] < cache[pred][-1][1]:
            cache[pred][-1] = item
        cache[pred] = sorted(cache[pred], key=operator.itemgetter(1))
    else:
        cache[pred] = [item]


def cache_logits(f, cache, alpha, beta, n_classes, mask=None):
    keys, values = [], []
    for c in sorted(cache.keys()):
        for item in cache[c]:
            keys.append(item[0])
            if mask is not None:
                prob = item[2]
                values.append(((prob > mask[0]) & (prob < mask[1])).astype(np.float64))
            else:
                values.append(np.eye(n_classes)[c])
    keys = np.stack(keys)  # k x D
    values = np.stack(values)  # k x C
    affinity = keys @ f
    return alpha * (np.exp(-(beta - beta * affinity)) @ values)


def main():
    rng = np.random.default_rng(SEED)
    # Class prototypes sharing a common direction, frames = prototype + noise of varying size
    # (so the base classifier is sometimes sure, sometimes torn: both caches fill and evict).
    common = rng.normal(size=D)
    common /= np.linalg.norm(common)
    protos = rng.normal(size=(C, D))
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    protos = 0.6 * common + protos
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    # Text rows: a small multiple of the prototype on a shared direction, as CLIP's image-text
    # cosines differ by a few hundredths between classes (a few logits after the x100 scale).
    w = common + W_PROTO * protos + 0.02 * rng.normal(size=(C, D))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    labels = rng.integers(0, C, size=N)
    sigma = rng.uniform(0.05, 0.35, size=N)
    feats = protos[labels] + sigma[:, None] * rng.normal(size=(N, D))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    # Every 7th frame repeats the one before (a camera that sends a frame twice): equal
    # entropies, so the order of ties is checked too.
    for i in range(7, N, 7):
        feats[i] = feats[i - 1]
        labels[i] = labels[i - 1]
    feats = feats.astype(np.float32)
    base = (100.0 * feats.astype(np.float32) @ w.astype(np.float32).T).astype(np.float32)

    pos, neg = CONFIG["positive"], CONFIG["negative"]
    lo, hi = neg["entropy_threshold"]["lower"], neg["entropy_threshold"]["upper"]
    mlo, mhi = neg["mask_threshold"]["lower"], neg["mask_threshold"]["upper"]
    pos_cache, neg_cache = {}, {}
    out = np.zeros((N, C))
    pos_ids = -np.ones((N, C, pos["shot_capacity"]), dtype=np.int64)
    neg_ids = -np.ones((N, C, neg["shot_capacity"]), dtype=np.int64)
    stats = {"pos_updates": 0, "pos_replacements": 0, "neg_updates": 0, "neg_replacements": 0}
    for i in range(N):
        f = feats[i].astype(np.float64)
        logits = base[i].astype(np.float64)
        loss = softmax_entropy(logits)
        prob = softmax(logits)
        pred = int(np.argmax(logits))
        ent = get_entropy(loss, C)
        full = len(pos_cache.get(pred, [])) == pos["shot_capacity"]
        if full and loss < pos_cache[pred][-1][1]:
            stats["pos_replacements"] += 1
        update_cache(pos_cache, pred, (f, loss, None, i), pos["shot_capacity"])
        stats["pos_updates"] += 1
        if lo < ent < hi:
            full = len(neg_cache.get(pred, [])) == neg["shot_capacity"]
            if full and loss < neg_cache[pred][-1][1]:
                stats["neg_replacements"] += 1
            update_cache(neg_cache, pred, (f, loss, prob, i), neg["shot_capacity"])
            stats["neg_updates"] += 1
        final = logits.copy()
        if pos_cache:
            final += cache_logits(f, pos_cache, pos["alpha"], pos["beta"], C)
        if neg_cache:
            final -= cache_logits(f, neg_cache, neg["alpha"], neg["beta"], C, (mlo, mhi))
        out[i] = final
        for c, items in pos_cache.items():
            for j, item in enumerate(items):
                pos_ids[i, c, j] = item[3]
        for c, items in neg_cache.items():
            for j, item in enumerate(items):
                neg_ids[i, c, j] = item[3]

    assert stats["pos_replacements"] > 5 and stats["neg_replacements"] > 2, stats
    os.makedirs(OUT, exist_ok=True)
    np.save(os.path.join(OUT, "features.npy"), feats)
    np.save(os.path.join(OUT, "base_logits.npy"), base)
    np.save(os.path.join(OUT, "logits.npy"), out)
    np.save(os.path.join(OUT, "pos_cache.npy"), pos_ids)
    np.save(os.path.join(OUT, "neg_cache.npy"), neg_ids)
    manifest = {
        "format": "tipedge-tda-reference/1",
        "generated_by": "models/make_tda_refs.py",
        "official_code": "kdiAAA/TDA tda_runner.py (update_cache, compute_cache_logits, "
        "run_test_tda) and utils.py (get_clip_logits single view, softmax_entropy, get_entropy), "
        "re-implemented",
        "numpy": np.__version__,
        "seed": SEED,
        "frames": N,
        "dim": D,
        "classes": C,
        "config": CONFIG,
        "stats": stats,
        "base_accuracy": float((base.argmax(1) == labels).mean()),
        "tda_accuracy": float((out.argmax(1) == labels).mean()),
    }
    with open(os.path.join(OUT, "manifest.json"), "w") as fh:
        json.dump(manifest, fh, indent=1)
        fh.write("\n")
    print(json.dumps(manifest["stats"]), manifest["base_accuracy"], manifest["tda_accuracy"])


if __name__ == "__main__":
    main()
