#!/usr/bin/env python3
"""Compute the committed reference outputs in models/fixtures/reference/ (+ manifest.json).

Inputs (must exist; models/make_fixtures.sh builds them first):
  models/fixtures/clip-tiny/{image,text}.{onnx,json}    (export_clip.py --arch tiny --fixture)
  models/fixtures/efficientnet-lite0/image.{onnx,json}  (export_efficientnet.py --fixture)
  models/fixtures/images/*                               (make_images.py)
  examples/textile/                                      (make_example.py)

The PyTorch models are rebuilt deterministically with the same code and seeds as the exporters
(including the fp16 rounding of the large weights), and every PyTorch result is checked against
onnxruntime on the committed graph. All .npy files are npy format 1.0, little endian, C order,
float32 ('<f4') or int64 ('<i8'). manifest.json describes each file and its tolerances.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import OrderedDict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402
import export_clip  # noqa: E402
import export_efficientnet  # noqa: E402

# Images whose full 224x224 preprocessed tensors (both recipes) and features are stored. The full
# tensors are 602 kB each, so only these three (JPEG landscape, JPEG square, grayscale PNG) get
# them; every fixture image gets the same pipeline at a reduced 32x32 recipe (see SMALL_RECIPES).
FULL_IMAGES = ["chelsea.jpg", "astronaut.jpg", "camera.png"]

TEXT_PROMPTS = [
    "a photo of a cat.",
    "a photo of a dog.",
    "a blurry photo of a tabby cat.",
    "an astronaut in a white space suit",
    "A ROCKET LAUNCH AT NIGHT",
    "coffee",
    "a cup of coffee on a wooden table, seen from above.",
    "",
    "   extra   spaces\tand\ttabs\n  newline ",
    "café crème brûlée",
    "naïve résumé",
    "the number 42 and 3.14159",
    "don't stop believin'",
    "it's a dog's life!!!",
    "emoji \U0001F431\U0001F680",
    "\u6f22\u5b57\u306e\u30c6\u30ad\u30b9\u30c8",
    "HTML &amp; entities &lt;b&gt;",
    "hyphen-ated and under_scored words",
    "textile with a local defect",
    "nominal woven fabric",
    "a photo of a global defect in textile.",
    "x",
    " ".join(["a very long prompt that will certainly be truncated"] * 12),
    "itap of a camera.",
]

ZS_CLASSNAMES = ["cat", "astronaut", "camera", "coffee mug", "rocket"]
TIP_LOGIT_SCALE = 100.0
TEXTILE_ALPHA = 1.0
TEXTILE_BETA = 1.0


def rel(path):
    return os.path.relpath(path, os.path.dirname(HERE))


def stem(name: str) -> str:
    return name.replace(".", "_")


def levels_tol(pre: dict, max_levels: float, mean_levels: float) -> OrderedDict:
    """Tolerance on a normalised tensor expressed as 8-bit levels: level / 255 / min(std)."""
    s = min(pre["std"])
    return OrderedDict([("max_abs", round(max_levels / 255.0 / s + 1e-6, 6)),
                        ("mean_abs", round(mean_levels / 255.0 / s + 1e-6, 6)),
                        ("max_levels", max_levels), ("mean_levels", mean_levels)])


def image_tolerance(name: str, pre: dict) -> OrderedDict:
    if name.endswith("_cmyk.jpg"):
        t = levels_tol(pre, 40, 4)
        t["approximate"] = True
        t["note"] = "CMYK->RGB conversion is decoder-specific (Pillow: Adobe-inverted CMYK, R=(255-C)(255-K)/255)"
        return t
    if name == "coffee.jpg":
        t = levels_tol(pre, 16, 1.0)
        t["note"] = "4:2:0 JPEG: chroma upsampling differs between decoders"
        return t
    if name.endswith(".jpg"):
        t = levels_tol(pre, 4, 0.5)
        t["note"] = "4:4:4 JPEG: IDCT rounding differs between decoders by ~1-2 levels"
        return t
    t = levels_tol(pre, 1, 0.1)
    t["note"] = "lossless format: only the resize implementation (Pillow's antialiased filter, uint8 rounding after each pass) matters"
    return t


FEATURE_TOL = OrderedDict([("max_rel", 2e-4), ("min_cosine", 0.99999),
                           ("note", "max_rel = max|a-b| / max|ref|; row-wise cosine; for f32 engines fed the stored input")])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", default=os.path.join(HERE, "fixtures"))
    ap.add_argument("--examples", default=os.path.join(os.path.dirname(HERE), "examples", "textile"))
    args = ap.parse_args(argv)

    import open_clip
    import PIL
    import timm
    import torch
    import torchvision
    import onnxruntime

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    fx = args.fixtures
    ref_dir = os.path.join(fx, "reference")
    img_dir = os.path.join(fx, "images")
    os.makedirs(ref_dir, exist_ok=True)
    for f in os.listdir(ref_dir):
        if f.endswith(".npy"):
            os.remove(os.path.join(ref_dir, f))

    files: "OrderedDict[str, dict]" = OrderedDict()
    checks: "OrderedDict[str, dict]" = OrderedDict()

    def save(name, arr, what, **meta):
        arr = np.asarray(arr)
        common.save_npy(os.path.join(ref_dir, name), arr)
        d = OrderedDict([("what", what), ("shape", list(arr.shape)),
                         ("dtype", "<f4" if arr.dtype.kind == "f" else "<i8")])
        d.update(meta)
        files[name] = d

    # ------------------------------------------------------------------ graphs and sidecars
    graphs = OrderedDict()
    side = {}
    for key, sub, tower in [("clip_image", "clip-tiny", "image"), ("clip_text", "clip-tiny", "text"),
                            ("eff_image", "efficientnet-lite0", "image")]:
        gp = os.path.join(fx, sub, f"{tower}.onnx")
        sp = os.path.join(fx, sub, f"{tower}.json")
        s = json.load(open(sp))
        h = common.sha256_file(gp)
        if h != s["sha256"]:
            raise SystemExit(f"{gp}: sha256 {h} does not match its sidecar {s['sha256']}")
        side[key] = s
        graphs[key] = OrderedDict([("graph", rel(gp)), ("sidecar", rel(sp)), ("sha256", h)])
    clip_pre = side["clip_image"]["preprocess"]
    eff_pre = side["eff_image"]["preprocess"]
    recipes = OrderedDict()
    recipes["clip"] = OrderedDict([("from", graphs["clip_image"]["sidecar"]), ("preprocess", clip_pre)])
    recipes["eff"] = OrderedDict([("from", graphs["eff_image"]["sidecar"]), ("preprocess", eff_pre)])
    recipes["clip32"] = OrderedDict([("from", "clip recipe scaled down: resize 32, crop 32"),
                                     ("preprocess", common.make_preprocess(32, 32, clip_pre["mean"], clip_pre["std"],
                                                                           clip_pre["interpolation"]))])
    recipes["eff32"] = OrderedDict([("from", "efficientnet recipe scaled down: resize 37 (=32/0.875 rounded), crop 32"),
                                    ("preprocess", common.make_preprocess(37, 32, eff_pre["mean"], eff_pre["std"],
                                                                          eff_pre["interpolation"]))])

    # ------------------------------------------------------------------ images
    images_json = json.load(open(os.path.join(img_dir, "images.json")))
    image_names = list(images_json.keys())
    images = OrderedDict()
    for n in image_names:
        p = os.path.join(img_dir, n)
        rgb = common.load_rgb(p)
        images[n] = OrderedDict(images_json[n])
        images[n]["sha256"] = common.sha256_file(p)
        images[n]["upright_rgb_size_wh"] = list(rgb.size)

    print("preprocessing")
    pre_full = {"clip": {}, "eff": {}}
    for n in image_names:
        p = os.path.join(img_dir, n)
        for r in ("clip32", "eff32"):
            x = common.preprocess(p, recipes[r]["preprocess"]).numpy()
            save(f"pre_{r}_{stem(n)}.npy", x, f"preprocessed tensor, reduced {r} recipe",
                 image=f"images/{n}", recipe=r, tolerance=image_tolerance(n, recipes[r]["preprocess"]))
        if n in FULL_IMAGES:
            for r in ("clip", "eff"):
                x = common.preprocess(p, recipes[r]["preprocess"]).numpy()
                pre_full[r][n] = x
                save(f"pre_{r}_{stem(n)}.npy", x, f"preprocessed tensor, {r} recipe (model input)",
                     image=f"images/{n}", recipe=r, tolerance=image_tolerance(n, recipes[r]["preprocess"]))
    # how far Pillow's own 16-bit handling is from round(v/257), for the record
    with PIL.Image.open(os.path.join(img_dir, "coffee_rgb16.png")) as im16:
        pil8 = np.asarray(im16.convert("RGB")).astype(int)
    ours = np.asarray(common.load_rgb(os.path.join(img_dir, "coffee_rgb16.png"))).astype(int)
    images["coffee_rgb16.png"]["pillow_8bit_vs_round_v_over_257"] = OrderedDict(
        [("pillow_mode", "RGB"), ("max_levels", int(np.abs(pil8 - ours).max())),
         ("mean_levels", round(float(np.abs(pil8 - ours).mean()), 4))])

    # ------------------------------------------------------------------ clip-tiny image tower
    print("clip-tiny image tower")
    clip_model, arch, _ = export_clip.build_model("tiny", "none", seed=0, fixture=True)
    ImageW, TextW = export_clip._wrappers()
    cimg, ctxt = ImageW(clip_model).eval(), TextW(clip_model).eval()
    s_ci = common.ort_session(os.path.join(fx, "clip-tiny", "image.onnx"), threads=1)
    s_ct = common.ort_session(os.path.join(fx, "clip-tiny", "text.onnx"), threads=1)
    s_ei = common.ort_session(os.path.join(fx, "efficientnet-lite0", "image.onnx"), threads=1)

    def feats(wrapper, sess, xs, prefix, graph_key, dim_note):
        xb = np.concatenate(xs, 0)
        with torch.no_grad():
            t = np.concatenate([wrapper(torch.from_numpy(x)).numpy() for x in xs], 0)
            tb = wrapper(torch.from_numpy(xb)).numpy()
        o = np.concatenate([common.ort_run(sess, x) for x in xs], 0)
        ob = common.ort_run(sess, xb)
        c1, c2, c3 = common.compare(o, t), common.compare(ob, o), common.compare(tb, t)
        print(f"  {prefix}: ORT vs PyTorch {common.fmt_cmp(c1)}")
        print(f"  {prefix}: ORT batch {len(xs)} vs ORT batch 1 {common.fmt_cmp(c2)}; PyTorch batch vs single {common.fmt_cmp(c3)}")
        for c in (c1, c2, c3):
            assert c["max_rel"] < 1e-4 and c["min_cosine"] > 0.99999, c
        checks[prefix] = OrderedDict([("ort_vs_torch", c1), ("ort_batch_vs_single", c2), ("torch_batch_vs_single", c3)])
        meta = dict(images=[f"images/{n}" for n in FULL_IMAGES], graph=graphs[graph_key]["graph"])
        save(f"{prefix}_features_torch.npy", t, f"{dim_note}, PyTorch, each image run at batch 1, "
             "input = the stored pre_* tensors", tolerance=FEATURE_TOL, **meta)
        save(f"{prefix}_features_ort.npy", o, f"{dim_note}, onnxruntime on the committed graph, batch 1 each",
             tolerance=FEATURE_TOL, **meta)
        save(f"{prefix}_features_ort_batch{len(xs)}.npy", ob,
             f"{dim_note}, onnxruntime, all images in ONE batch of {len(xs)} (batching check)",
             tolerance=FEATURE_TOL, **meta)
        return t

    clip_x = [pre_full["clip"][n] for n in FULL_IMAGES]
    eff_x = [pre_full["eff"][n] for n in FULL_IMAGES]
    f_clip = feats(cimg, s_ci, clip_x, "clip_tiny_image", "clip_image",
                   "clip-tiny image features (encode_image, NOT normalised), rows = images")
    print("efficientnet-lite0")
    eff_model = export_efficientnet.build_model(num_classes=0, fixture=True, verbose=False)
    feats(eff_model, s_ei, eff_x, "effnet_image", "eff_image",
          "efficientnet-lite0 pooled 1280-d features (NOT normalised), rows = images")

    # ------------------------------------------------------------------ text tower
    print("clip-tiny text tower")
    tokenizer = open_clip.get_tokenizer(arch)
    toks = tokenizer(TEXT_PROMPTS).numpy().astype(np.int64)
    save("clip_tiny_text_tokens.npy", toks, "open_clip tokenizer output (SimpleTokenizer, context 77) for "
         "manifest text.prompts, rows = prompts", tolerance="exact")
    with torch.no_grad():
        tt = ctxt(torch.from_numpy(toks)).numpy()
    to = common.ort_run(s_ct, toks)
    c = common.compare(to, tt)
    print(f"  text ORT vs PyTorch (batch {len(toks)}): {common.fmt_cmp(c)}")
    assert c["max_rel"] < 1e-4 and c["min_cosine"] > 0.99999
    checks["clip_tiny_text"] = OrderedDict([("ort_vs_torch", c)])
    save("clip_tiny_text_features_torch.npy", tt, "clip-tiny text features (encode_text, NOT normalised) "
         "for clip_tiny_text_tokens.npy, PyTorch", graph=graphs["clip_text"]["graph"], tolerance=FEATURE_TOL)
    save("clip_tiny_text_features_ort.npy", to, "same, onnxruntime on the committed graph (one batch)",
         graph=graphs["clip_text"]["graph"], tolerance=FEATURE_TOL)

    # ------------------------------------------------------------------ zero-shot (Tip-Adapter clip_classifier)
    print("zero-shot classifier")
    zs_prompts = [t.format(c) for c in ZS_CLASSNAMES for t in common.TIP_TEMPLATES]
    zs_toks = tokenizer(zs_prompts).numpy().astype(np.int64)
    save("zeroshot_tokens.npy", zs_toks, "tokens of class x template prompts, row = class_index * 7 + "
         "template_index (manifest zeroshot.classnames / templates)", tolerance="exact")

    def classifier(text_feats):
        # Tip-Adapter clip_classifier: per class, normalise each template embedding, mean,
        # renormalise. Official W is [dim, classes] (stacked on dim=1); stored here as [classes, dim].
        e = text_feats.reshape(len(ZS_CLASSNAMES), len(common.TIP_TEMPLATES), -1).astype(np.float64)
        e = e / np.linalg.norm(e, axis=-1, keepdims=True)
        m = e.mean(1)
        return (m / np.linalg.norm(m, axis=-1, keepdims=True)).astype(np.float32)

    with torch.no_grad():
        zt = ctxt(torch.from_numpy(zs_toks)).numpy()
    zo = common.ort_run(s_ct, zs_toks)
    w_t, w_o = classifier(zt), classifier(zo)
    c = common.compare(w_o, w_t)
    print(f"  classifier W ORT vs PyTorch: {common.fmt_cmp(c)}")
    checks["zeroshot_classifier"] = OrderedDict([("ort_vs_torch", c)])
    wtol = OrderedDict([("max_abs", 1e-4)])
    save("zeroshot_classifier_torch.npy", w_t, "zero-shot classifier W as [N_classes, dim] (official "
         "Tip-Adapter clip_weights is the transpose, [dim, N_classes]); rows L2-normalised; from PyTorch "
         "text features", graph=graphs["clip_text"]["graph"], tolerance=wtol)
    save("zeroshot_classifier_ort.npy", w_o, "same W from onnxruntime text features",
         graph=graphs["clip_text"]["graph"], tolerance=wtol)
    f_n = f_clip / np.linalg.norm(f_clip, axis=-1, keepdims=True)
    logits = (TIP_LOGIT_SCALE * f_n.astype(np.float64) @ w_t.T.astype(np.float64)).astype(np.float32)
    save("zeroshot_logits.npy", logits, "zero-shot logits 100 * normalize(clip_tiny_image_features_torch) @ "
         "zeroshot_classifier_torch.T, rows = images, cols = classes",
         images=[f"images/{n}" for n in FULL_IMAGES], tolerance=OrderedDict([("max_abs", 2e-3)]))
    print("  zero-shot argmax per image:", {n: ZS_CLASSNAMES[i] for n, i in zip(FULL_IMAGES, logits.argmax(1))},
          "(random weights: meaningless, parity only)")

    # ------------------------------------------------------------------ textile Tip-Adapter cache reference
    print("textile Tip-Adapter cache (efficientnet-lite0)")
    ex = args.examples
    classes = sorted(os.listdir(os.path.join(ex, "shots")))

    def listing(split):
        out = []
        for ci, cname in enumerate(classes):
            for f in sorted(os.listdir(os.path.join(ex, split, cname))):
                out.append((f"{split}/{cname}/{f}", ci))
        return out

    def eff_feats(items):
        xs = [common.preprocess(os.path.join(ex, p), eff_pre) for p, _ in items]
        outs = []
        with torch.no_grad():
            for i in range(0, len(xs), 16):
                outs.append(eff_model(torch.cat(xs[i:i + 16], 0)).numpy())
        x_all = torch.cat(xs, 0).numpy()
        o = np.concatenate([common.ort_run(s_ei, x_all[i:i + 16]) for i in range(0, len(x_all), 16)], 0)
        return np.concatenate(outs, 0), o

    shots, queries = listing("shots"), listing("query")
    fs, fs_o = eff_feats(shots)
    fq, fq_o = eff_feats(queries)
    c = common.compare(np.concatenate([fs_o, fq_o]), np.concatenate([fs, fq]))
    print(f"  textile features ORT vs PyTorch: {common.fmt_cmp(c)}")
    checks["textile_features"] = OrderedDict([("ort_vs_torch", c)])
    keys = fs / np.linalg.norm(fs, axis=-1, keepdims=True)
    ls = np.array([ci for _, ci in shots], np.int64)
    lq = np.array([ci for _, ci in queries], np.int64)
    L = np.eye(len(classes), dtype=np.float64)[ls]
    qn = fq / np.linalg.norm(fq, axis=-1, keepdims=True)
    aff = qn.astype(np.float64) @ keys.T.astype(np.float64)
    cache = TEXTILE_ALPHA * np.exp(-TEXTILE_BETA * (1.0 - aff)) @ L
    pred = cache.argmax(1)
    acc = float((pred == lq).mean())
    per_class = {cname: float((pred[lq == ci] == ci).mean()) for ci, cname in enumerate(classes)}
    print(f"  cache-only top-1 accuracy on {len(lq)} queries ({len(ls)} shots, alpha={TEXTILE_ALPHA}, "
          f"beta={TEXTILE_BETA}): {acc:.4f}  per class {per_class}")
    conf = np.zeros((len(classes), len(classes)), int)
    for t_, p_ in zip(lq, pred):
        conf[t_, p_] += 1
    print("  confusion (rows true, cols predicted, order", classes, "):\n", conf)
    ttol = OrderedDict([("min_cosine", 0.999), ("note", "end-to-end: the engine decodes and preprocesses the "
                                                        "JPEGs itself, so JPEG/resize differences are included")])
    save("textile_shot_keys.npy", keys.astype(np.float32), "Tip-Adapter cache keys: L2-normalised "
         "efficientnet-lite0 features of the shots (no augmentation), rows sorted by class then file name",
         files=[p for p, _ in shots], tolerance=ttol)
    save("textile_shot_labels.npy", ls, "class index of each key row (manifest textile.classes)", tolerance="exact")
    save("textile_query_features.npy", fq.astype(np.float32), "efficientnet-lite0 features (NOT normalised) "
         "of the query images, rows sorted by class then file name", files=[p for p, _ in queries], tolerance=ttol)
    save("textile_query_labels.npy", lq, "true class index of each query row", tolerance="exact")
    save("textile_cache_logits.npy", cache.astype(np.float32),
         "cache-only Tip-Adapter logits alpha * exp(-beta * (1 - q_norm @ keys.T)) @ onehot(labels), "
         "alpha = beta = 1, rows = queries, cols = classes",
         tolerance=OrderedDict([("max_abs", 0.05), ("note", "same end-to-end caveat as the features")]))

    # ------------------------------------------------------------------ manifest
    manifest = OrderedDict()
    manifest["format"] = "tipedge-reference/1"
    manifest["generated_by"] = "models/make_references.py (run via models/make_fixtures.sh)"
    manifest["npy"] = "npy format 1.0, little endian, C order; dtype '<f4' (float32) or '<i8' (int64)"
    manifest["versions"] = OrderedDict([
        ("python", sys.version.split()[0]), ("torch", torch.__version__), ("torchvision", torchvision.__version__),
        ("open_clip_torch", open_clip.__version__), ("timm", timm.__version__),
        ("onnxruntime", onnxruntime.__version__), ("pillow", PIL.__version__), ("numpy", np.__version__)])
    manifest["graphs"] = graphs
    manifest["weights_note"] = (
        "Both fixture graphs store their large weights (>= %d elements) as fp16 initializers followed by "
        "Cast(to=float); the PyTorch models used for every reference here had the same weights rounded "
        "through fp16, so PyTorch and the graphs compute with identical f32 weights." % common.FP16_MIN_ELEMS)
    manifest["reference_pipeline"] = OrderedDict([
        ("steps", "PIL.Image.open -> ImageOps.exif_transpose -> .convert('RGB') -> torchvision "
                  "Resize(resize, interpolation) -> CenterCrop(crop_size) -> ToTensor -> Normalize(mean, std)"),
        ("resize", "Resize(int): the SHORT side becomes `resize`, the long side int(resize * long / short) "
                   "(truncated); PIL Image.resize with its antialiased filter (support scaled by the "
                   "downscale factor; bicubic a=-0.5), horizontal pass then vertical pass, each rounded/clamped "
                   "to uint8"),
        ("center_crop", "top = int(round((h - crop) / 2.0)), left = int(round((w - crop) / 2.0))"),
        ("to_tensor", "uint8 / 255 -> float32, CHW"),
        ("16-bit PNG", "Pillow cannot hold 16-bit RGB; for coffee_rgb16.png the 8-bit RGB is "
                       "round(v / 257) of the raw 16-bit samples (== (v + 128) // 257), computed with numpy"),
        ("RGBA", "alpha is dropped (no compositing), as Pillow's convert('RGB') does"),
        ("grayscale", "gray replicated into R, G, B"),
        ("CMYK", "Pillow's CMYK->RGB: APPROXIMATE reference"),
    ])
    manifest["recipes"] = recipes
    manifest["full_images"] = [f"images/{n}" for n in FULL_IMAGES]
    manifest["images"] = images
    manifest["text"] = OrderedDict([("prompts", TEXT_PROMPTS), ("tokenizer", "open_clip.get_tokenizer('tiny-vit') "
                                                                             "== SimpleTokenizer(context_length=77)")])
    manifest["zeroshot"] = OrderedDict([
        ("classnames", ZS_CLASSNAMES), ("templates", common.TIP_TEMPLATES), ("logit_scale", TIP_LOGIT_SCALE),
        ("method", "Tip-Adapter clip_classifier: for each class, encode the 7 template prompts, L2-normalise each, "
                   "mean, L2-normalise; logits = 100 * normalize(f) @ W.T"),
        ("note", "clip-tiny has random weights: the predictions are meaningless, this checks arithmetic only")])
    manifest["textile"] = OrderedDict([
        ("root", rel(ex)), ("classes", classes), ("n_shots", len(shots)), ("n_queries", len(queries)),
        ("alpha", TEXTILE_ALPHA), ("beta", TEXTILE_BETA), ("encoder", graphs["eff_image"]["graph"]),
        ("recipe", "eff"), ("cache_only_top1_accuracy", acc), ("per_class_accuracy", per_class),
        ("confusion_rows_true_cols_pred", conf.tolist())])
    manifest["checks"] = checks
    manifest["files"] = files
    common.write_json(os.path.join(ref_dir, "manifest.json"), manifest)
    total = sum(os.path.getsize(os.path.join(ref_dir, f)) for f in os.listdir(ref_dir))
    print(f"wrote {len(files)} .npy files + manifest.json to {ref_dir} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
