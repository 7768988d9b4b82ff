#!/usr/bin/env python3
"""Export an OpenCLIP model's image and text towers to ONNX for tipedge.

Writes DIR/image.onnx + DIR/image.json and DIR/text.onnx + DIR/text.json (tipedge-sidecar/1).

  image.onnx: input  `image`  f32 [B,3,H,W] (dynamic batch) -> output `features` = encode_image
  text.onnx : input  `tokens` i64 [B,77]    (dynamic batch) -> output `features` = encode_text
Features are NOT L2-normalised. The text graph contains open_clip's EOT pooling (ArgMax of the
token ids + Gather), so it must be fed exactly open_clip's tokenizer output.

Examples:
  python models/export_clip.py --arch ViT-B-32 --pretrained openai --out out/vit-b-32
  python models/export_clip.py --arch ViT-B-32 --pretrained none --out /work/bigmodels/vit-b-32
  python models/export_clip.py --arch tiny --pretrained none --fixture --out models/fixtures/clip-tiny

`--pretrained openai` needs network access to download the weights (open_clip does it);
`--pretrained PATH` loads a local open_clip / OpenAI checkpoint file.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

# The tiny fixture architecture: the real OpenCLIP VisionTransformer + text Transformer (full
# 49,408-token vocabulary, 77-token context, causal mask, argmax EOT pooling), just narrow/shallow.
TINY_NAME = "tiny-vit"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 2},
}


def register_tiny() -> None:
    from open_clip import factory

    factory._MODEL_CONFIGS[TINY_NAME] = dict(TINY_CFG)


def build_model(arch: str, pretrained: str, seed: int = 0, fixture: bool = False):
    """Return (model in eval mode, canonical arch name, sidecar 'pretrained' string).

    Deterministic for pretrained='none' (torch.manual_seed(seed) before construction). With
    fixture=True the large weights are rounded through fp16 (see common.compact_fp16)."""
    import open_clip
    import torch

    if arch in ("tiny", TINY_NAME):
        register_tiny()
        arch = TINY_NAME
    kwargs = {}
    if pretrained == "none":
        pt, pt_name = None, "none"
    elif pretrained == "openai":
        # OpenAI's weights were trained with QuickGELU; open_clip's plain configs use nn.GELU.
        pt, pt_name = "openai", "openai"
        if not arch.endswith("-quickgelu"):
            kwargs["force_quick_gelu"] = True
    elif os.path.exists(pretrained):
        pt, pt_name = os.path.abspath(pretrained), pretrained
    else:
        pt, pt_name = pretrained, pretrained  # another open_clip pretrained tag
    torch.manual_seed(seed)
    model = open_clip.create_model(arch, pretrained=pt, device="cpu", **kwargs)
    model.eval()
    if fixture:
        n = common.round_module_fp16_(model)
        print(f"  fixture: rounded {n} tensors with >= {common.FP16_MIN_ELEMS} elements through fp16")
    return model, arch, pt_name



def _wrappers():
    import torch

    class Image(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, image):
            return self.m.encode_image(image)

    class Text(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, tokens):
            return self.m.encode_text(tokens)

    return Image, Text


def image_preprocess(model) -> dict:
    from open_clip.model import get_model_preprocess_cfg

    cfg = get_model_preprocess_cfg(model)
    size = cfg.get("size", 224)
    if isinstance(size, (tuple, list)):
        if size[0] != size[1]:
            raise SystemExit(f"non-square input size {size} is not supported by tipedge-sidecar/1")
        size = size[0]
    mode = cfg.get("resize_mode", "shortest")
    if mode != "shortest":
        raise SystemExit(f"resize_mode {mode!r} not supported (only 'shortest')")
    interp = cfg.get("interpolation", "bicubic")
    return common.make_preprocess(size, size, cfg.get("mean", common.CLIP_MEAN),
                                  cfg.get("std", common.CLIP_STD), interp)


def export_tower(wrapper, dummy, path, input_name, opset):
    import torch

    t0 = time.time()
    # Not under torch.no_grad(): with grad disabled nn.MultiheadAttention takes its fused fast
    # path (aten::_native_multi_head_attention), which has no ONNX symbolic.
    torch.onnx.export(
        wrapper, (dummy,), path,
        input_names=[input_name], output_names=["features"],
        dynamic_axes={input_name: {0: "batch"}, "features": {0: "batch"}},
        opset_version=opset, do_constant_folding=True, dynamo=False,
    )
    print(f"  exported {path} in {time.time() - t0:.1f}s ({os.path.getsize(path) / 1e6:.2f} MB)")


def sample_prompts():
    return ["a photo of a cat.", "a photo of a dog.", "itap of a rocket.",
            "A Bad Photo Of The Coffee Mug!", "café au lait, naïve art"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="ViT-B-32",
                    help="open_clip architecture (ViT-B-32, ViT-B-16, RN50, ...) or 'tiny' for the "
                         "test fixture architecture (registered as 'tiny-vit')")
    ap.add_argument("--pretrained", default="none", help="openai | none | PATH to a checkpoint | open_clip tag")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--towers", default="image,text", help="comma list of towers to export")
    ap.add_argument("--seed", type=int, default=0, help="torch seed for random weights (default 0)")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--fixture", action="store_true",
                    help="compact fixture graph: round weights with >= %d elements through fp16 and store "
                         "them as fp16 initializers + Cast (lossless w.r.t. the rounded model)"
                         % common.FP16_MIN_ELEMS)
    ap.add_argument("--skip-check", action="store_true", help="skip the onnxruntime-vs-PyTorch parity check")
    args = ap.parse_args(argv)

    import open_clip
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    towers = [t.strip() for t in args.towers.split(",") if t.strip()]
    os.makedirs(args.out, exist_ok=True)
    print(f"building open_clip {args.arch} (pretrained={args.pretrained}, seed={args.seed})")
    model, arch, pt_name = build_model(args.arch, args.pretrained, args.seed, args.fixture)
    ImageW, TextW = _wrappers()
    logit_scale = float(model.logit_scale.exp().item())
    tokenizer = open_clip.get_tokenizer(arch)
    g = torch.Generator().manual_seed(1234)
    worst = {}

    if "image" in towers:
        pre = image_preprocess(model)
        size = pre["crop_size"]
        path = os.path.join(args.out, "image.onnx")
        wrapper = ImageW(model).eval()
        export_tower(wrapper, torch.randn(2, 3, size, size, generator=g), path, "image", args.opset)
        if args.fixture:
            st = common.compact_fp16(path)
            print(f"  fp16 storage: {st['converted']} initializers converted, {st['kept_f32_inexact']} kept f32; "
                  f"{st['bytes_before'] / 1e6:.2f} MB -> {st['bytes_after'] / 1e6:.2f} MB")
        common.check_onnx(path)
        with torch.no_grad():
            dim = int(wrapper(torch.zeros(1, 3, size, size)).shape[-1])
        side = common.make_sidecar(
            family="clip", arch=arch, tower="image", pretrained=pt_name, graph_path=path,
            input_name="image", input_shape=[None, 3, size, size], input_dtype="f32",
            output_dim=dim, embed_dim=dim, preprocess=pre, logit_scale=logit_scale)
        common.write_json(os.path.join(args.out, "image.json"), side)
        print(f"  wrote image.json (embed_dim={dim}, logit_scale={logit_scale:.4f})")
        if not args.skip_check:
            sess = common.ort_session(path, threads=2)
            x = torch.randn(3, 3, size, size, generator=g)
            try:  # a real photo as well, with the sidecar's own preprocessing
                import skimage.data
                from PIL import Image
                import tempfile
                with tempfile.TemporaryDirectory() as td:
                    p = os.path.join(td, "chelsea.png")
                    Image.fromarray(skimage.data.chelsea()).save(p)
                    x = torch.cat([common.preprocess(p, pre), x], 0)
            except ImportError:
                pass
            with torch.no_grad():
                ref = wrapper(x).numpy()
            out = common.ort_run(sess, x.numpy())
            c = common.compare(out, ref)
            print(f"  parity image ORT vs PyTorch (batch {x.shape[0]}, photo + noise): {common.fmt_cmp(c)}")
            out1 = common.ort_run(sess, x[:1].numpy())
            c1 = common.compare(out1, ref[:1])
            print(f"  parity image ORT vs PyTorch (batch 1): {common.fmt_cmp(c1)}")
            worst["image"] = c

    if "text" in towers:
        path = os.path.join(args.out, "text.onnx")
        wrapper = TextW(model).eval()
        toks = tokenizer(sample_prompts()[:2])
        export_tower(wrapper, toks, path, "tokens", args.opset)
        if args.fixture:
            st = common.compact_fp16(path)
            print(f"  fp16 storage: {st['converted']} initializers converted, {st['kept_f32_inexact']} kept f32; "
                  f"{st['bytes_before'] / 1e6:.2f} MB -> {st['bytes_after'] / 1e6:.2f} MB")
        common.check_onnx(path)
        ctx = int(model.context_length)
        with torch.no_grad():
            dim = int(wrapper(toks[:1]).shape[-1])
        side = common.make_sidecar(
            family="clip", arch=arch, tower="text", pretrained=pt_name, graph_path=path,
            input_name="tokens", input_shape=[None, ctx], input_dtype="i64",
            output_dim=dim, embed_dim=dim, logit_scale=logit_scale,
            context_length=ctx, vocab_size=int(model.vocab_size))
        common.write_json(os.path.join(args.out, "text.json"), side)
        print(f"  wrote text.json (embed_dim={dim}, context_length={ctx}, vocab_size={model.vocab_size})")
        if not args.skip_check:
            sess = common.ort_session(path, threads=2)
            toks = tokenizer(sample_prompts())
            with torch.no_grad():
                ref = wrapper(toks).numpy()
            out = common.ort_run(sess, toks.numpy().astype(np.int64))
            c = common.compare(out, ref)
            print(f"  parity text ORT vs PyTorch (batch {toks.shape[0]}): {common.fmt_cmp(c)}")
            out1 = common.ort_run(sess, toks[2:3].numpy().astype(np.int64))
            print(f"  parity text ORT vs PyTorch (batch 1): {common.fmt_cmp(common.compare(out1, ref[2:3]))}")
            worst["text"] = c

    for k, c in worst.items():
        if c["min_cosine"] < 0.9999 or c["max_rel"] > 1e-3:
            raise SystemExit(f"PARITY FAILURE for {k}: {common.fmt_cmp(c)}")
    print("done:", args.out)


if __name__ == "__main__":
    main()
