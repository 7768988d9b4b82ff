#!/usr/bin/env python3
"""Reference outputs for the Rust GDA parity test (tests/train.rs): models/fixtures/gda/.

Re-run with `python3 models/make_gda_refs.py` (numpy only, well under a second). Deterministic.

The GDA fitting of the official code (mrflogs/ICLR24, main_few_shots.py `run`: "KS Estimator")
re-implemented here, not copied, in numpy float64 with the official operations — torch.cov is
numpy.cov with rows as variables (ddof 1), torch.linalg.pinv is numpy.linalg.pinv — and the
official alpha grid search (first strictly best validation accuracy, starting from alpha 0.1 at
accuracy 0), on a synthetic but CLIP-like problem: C classes, K shots each seen in V augmented
views (so N = C K V features, fewer than D: the covariance is singular and the shrinkage is what
makes it invertible), unit-norm; a zero-shot classifier W of small class-specific components on
a shared direction, logits 100 f W^T.

Files (npy 1.0, little endian, C order):
  features.npy      N x D  <f4   every view of every shot
  labels.npy        N      <i8
  val_features.npy  M x D  <f4
  val_labels.npy    M      <i8
  clip_weights.npy  C x D  <f4   zero-shot classifier rows
  weights.npy       C x D  <f8   W_g = mu cov_inv
  bias.npy          C      <f8   b = log(1/C) - mu cov_inv mu^T / 2
  val_logits.npy    M x C  <f8   100 f W^T + alpha (f W_g^T + b) at the chosen alpha
  choice.npy        2      <f8   the chosen alpha and its validation top-1 (percent)
  manifest.json     shapes, the chosen alpha and its validation accuracy
"""
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "gda")
SEED = 11
C, K, V, D, M = 4, 2, 5, 64, 80
ALPHAS = [0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0]


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def main():
    rng = np.random.default_rng(SEED)
    common = unit(rng.normal(size=D))
    protos = unit(0.7 * common + unit(rng.normal(size=(C, D))))
    shots = unit(protos.repeat(K, 0) + 0.12 * rng.normal(size=(C * K, D)))
    views = unit(shots.repeat(V, 0) + 0.05 * rng.normal(size=(C * K * V, D))).astype(np.float32)
    labels = np.arange(C).repeat(K * V)
    val_labels = rng.integers(0, C, size=M)
    val = unit(protos[val_labels] + 0.45 * rng.normal(size=(M, D))).astype(np.float32)
    clip_w = unit(common + 0.05 * protos + 0.03 * rng.normal(size=(C, D))).astype(np.float32)

    vecs = views.astype(np.float64)
    mus = np.stack([vecs[labels == i].mean(0) for i in range(C)])
    center = np.concatenate([vecs[labels == i] - mus[i] for i in range(C)])
    cov = np.cov(center.T)
    cov_inv = D * np.linalg.pinv((center.shape[0] - 1) * cov + np.trace(cov) * np.eye(D))
    ps = np.ones(C) / C
    w = mus @ cov_inv  # einsum('nd,dc->cn', mus, cov_inv): row c = mus[c] @ cov_inv
    b = np.log(ps) - np.einsum("nd,dc,nc->n", mus, cov_inv, mus) / 2

    zs = 100.0 * val.astype(np.float64) @ clip_w.astype(np.float64).T
    g = val.astype(np.float64) @ w.T + b
    best_acc, best_alpha = 0.0, 0.1
    for alpha in ALPHAS:
        acc = 100.0 * ((zs + alpha * g).argmax(1) == val_labels).mean()
        if acc > best_acc:
            best_acc, best_alpha = acc, alpha
    val_logits = zs + best_alpha * g

    os.makedirs(OUT, exist_ok=True)
    for name, a in [
        ("features", views),
        ("labels", labels.astype(np.int64)),
        ("val_features", val),
        ("val_labels", val_labels.astype(np.int64)),
        ("clip_weights", clip_w),
        ("weights", w),
        ("bias", b),
        ("val_logits", val_logits),
        ("choice", np.array([best_alpha, best_acc], dtype=np.float64)),
    ]:
        np.save(os.path.join(OUT, f"{name}.npy"), a)
    manifest = {
        "format": "tipedge-gda-reference/1",
        "generated_by": "models/make_gda_refs.py",
        "official_code": "mrflogs/ICLR24 main_few_shots.py run() (KS estimator, alpha grid), "
        "re-implemented",
        "numpy": np.__version__,
        "seed": SEED,
        "classes": C,
        "shots": K,
        "views": V,
        "dim": D,
        "val": M,
        "alpha": best_alpha,
        "val_top1": best_acc,
        "zero_shot_val_top1": float(100.0 * (zs.argmax(1) == val_labels).mean()),
        "gda_only_val_top1": float(100.0 * (g.argmax(1) == val_labels).mean()),
    }
    with open(os.path.join(OUT, "manifest.json"), "w") as fh:
        json.dump(manifest, fh, indent=1)
        fh.write("\n")
    print(json.dumps({k: manifest[k] for k in ("alpha", "val_top1", "zero_shot_val_top1", "gda_only_val_top1")}))


if __name__ == "__main__":
    main()
