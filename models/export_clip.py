#!/usr/bin/env python3
"""Export an OpenCLIP model's image and text towers to ONNX for tipedge.

Writes DIR/image.onnx + DIR/image.json, DIR/text.onnx + DIR/text.json and (for CoOp)
DIR/text_embed.onnx + DIR/text_embed.json + DIR/token_embedding.safetensors (tipedge-sidecar/1).

  image.onnx      : input `image`  f32 [B,3,H,W] (dynamic batch) -> `features` = encode_image
  text.onnx       : input `tokens` i64 [B,77]    (dynamic batch) -> `features` = encode_text
  text_embed.onnx : inputs `embeddings` f32 [B,77,W] (the prompt's token embeddings) and `eot`
                    i64 [B] (the EOT position) -> `features`: + positional embedding, the
                    transformer with CLIP's causal mask, ln_final, the EOT row, text_projection
                    (CoOp's TextEncoder.forward; models/coop.py)
  token_embedding.safetensors: tensor `token_embedding` [vocab, W] (f16 when every value is
                    exactly an f16, as in the --fixture graphs; else f32), memory-mapped by tipedge
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

    class TextEmbed(torch.nn.Module):
        """CoOp's TextEncoder.forward: the EOT row picked by GatherElements (exact)."""

        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, embeddings, eot):
            import coop

            return coop.TextEncoder(self.m)(embeddings, eot)

    return Image, Text, TextEmbed


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


def compact(path):
    """--fixture: large initializers stored as fp16 + Cast (lossless), with a line saying so."""
    st = common.compact_fp16(path)
    print(f"  fp16 storage: {st['converted']} initializers converted, {st['kept_f32_inexact']} kept f32; "
          f"{st['bytes_before'] / 1e6:.2f} MB -> {st['bytes_after'] / 1e6:.2f} MB")


def export_tower(wrapper, dummy, path, input_name, opset):
    import torch

    t0 = time.time()
    dummies = dummy if isinstance(dummy, tuple) else (dummy,)
    names = input_name if isinstance(input_name, list) else [input_name]
    axes = {n: {0: "batch"} for n in names}
    axes["features"] = {0: "batch"}
    # Not under torch.no_grad(): with grad disabled nn.MultiheadAttention takes its fused fast
    # path (aten::_native_multi_head_attention), which has no ONNX symbolic.
    torch.onnx.export(
        wrapper, dummies, path,
        input_names=names, output_names=["features"],
        dynamic_axes=axes,
        opset_version=opset, do_constant_folding=True, dynamo=False,
    )
    print(f"  exported {path} in {time.time() - t0:.1f}s ({os.path.getsize(path) / 1e6:.2f} MB)")


def write_token_table(model, path: str) -> dict:
    """The token-embedding table as safetensors (f16 when lossless). Returns its sidecar entry."""
    from safetensors.numpy import save_file

    table = model.token_embedding.weight.detach().float().numpy()
    half = table.astype(np.float16)
    exact = bool(np.array_equal(half.astype(np.float32), table))
    data = half if exact else np.ascontiguousarray(table, dtype=np.float32)
    tmp = path + ".tmp"
    save_file({"token_embedding": data}, tmp)
    os.replace(tmp, path)
    os.chmod(path, 0o644)
    return {
        "file": os.path.basename(path),
        "tensor": "token_embedding",
        "dtype": "f16" if exact else "f32",
        "rows": int(table.shape[0]),
        "width": int(table.shape[1]),
        "sha256": common.sha256_file(path),
    }


def export_text_embed(model, arch, pt_name, logit_scale, tokenizer, TextEmbedW, args):
    """DIR/text_embed.onnx + text_embed.json + token_embedding.safetensors; returns the parity
    comparison of onnxruntime against open_clip's encode_text on the same prompts."""
    import torch

    path = os.path.join(args.out, "text_embed.onnx")
    wrapper = TextEmbedW(model).eval()
    ctx = int(model.context_length)
    width = int(model.token_embedding.weight.shape[1])
    toks = tokenizer(sample_prompts()[:2])
    with torch.no_grad():
        emb = model.token_embedding(toks).float()
    export_tower(wrapper, (emb, toks.argmax(-1)), path, ["embeddings", "eot"], args.opset)
    if args.fixture:
        compact(path)
    common.check_onnx(path)
    with torch.no_grad():
        dim = int(wrapper(emb[:1], toks[:1].argmax(-1)).shape[-1])
    table = write_token_table(model, os.path.join(args.out, "token_embedding.safetensors"))
    side = common.make_sidecar(
        family="clip", arch=arch, tower="prompt", pretrained=pt_name, graph_path=path,
        input_name="embeddings", input_shape=[None, ctx, width], input_dtype="f32",
        output_dim=dim, embed_dim=dim, logit_scale=logit_scale,
        context_length=ctx, vocab_size=int(model.vocab_size))
    side["eot_input"] = {"name": "eot", "shape": [None], "dtype": "i64"}
    side["token_table"] = table
    common.write_json(os.path.join(args.out, "text_embed.json"), side)
    print(f"  wrote text_embed.json (embed_dim={dim}, width={width}, token table {table['dtype']} "
          f"{table['rows']}x{table['width']})")
    if args.skip_check:
        return None
    # The embeddings graph fed the token embeddings of real prompts must give encode_text.
    sess = common.ort_session(path, threads=2)
    toks = tokenizer(sample_prompts())
    with torch.no_grad():
        ref = model.encode_text(toks).numpy()
        emb = model.token_embedding(toks).float().numpy()
    feeds = {"embeddings": emb, "eot": toks.argmax(-1).numpy().astype(np.int64)}
    out = sess.run(None, feeds)[0]
    c = common.compare(out, ref)
    print(f"  parity text_embed ORT vs open_clip encode_text (batch {toks.shape[0]}): {common.fmt_cmp(c)}")
    return c


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
    ap.add_argument("--towers", default="image,text,text_embed",
                    help="comma list of towers to export: image, text, text_embed (CoOp's "
                         "embeddings text graph + token table)")
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
    ImageW, TextW, TextEmbedW = _wrappers()
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
            compact(path)
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
            compact(path)
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

    if "text_embed" in towers:
        worst["text_embed"] = export_text_embed(model, arch, pt_name, logit_scale, tokenizer,
                                                TextEmbedW, args)

    for k, c in worst.items():
        if c["min_cosine"] < 0.9999 or c["max_rel"] > 1e-3:
            raise SystemExit(f"PARITY FAILURE for {k}: {common.fmt_cmp(c)}")
    print("done:", args.out)


if __name__ == "__main__":
    main()
