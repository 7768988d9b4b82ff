"""CoOp (Zhou et al., "Learning to Prompt for Vision-Language Models") on an open_clip model.

The prompt construction and text encoder follow the official code (KaiyangZhou/CoOp,
`trainers/coop.py`: `PromptLearner`, `TextEncoder`) with the OpenAI `clip` package replaced by
the open_clip model the graphs are exported from; written anew here, not copied. Shared by
`coop_train.py`, `coop_import.py`, `make_coop_refs.py` and `make_coop_train_refs.py` (the
parity fixtures); `export_clip.py` exports the same TextEncoder as `text_embed.onnx`.

The context file (what tipedge deploys) is safetensors:
  tensor `ctx`  f32 [M, D] (generic context) or [N, M, D] (class-specific context, CSC)
  metadata (string -> string, as safetensors allows):
    format            "tipedge-coop/1"
    n_ctx             M
    csc               "true" | "false"
    position          "end" | "middle" | "front"   (where the class tokens go)
    classnames        JSON list of the N class names (after CoOp's "_" -> " ")
    text_tower_sha256 sha256 of the embeddings text graph (text_embed.onnx) it was trained for
    ctx_init          the words the context was initialised from ("" = random N(0, 0.02^2))
    source            what wrote it ("coop_train.py", "coop_import.py", ...)
    training          optional JSON: recipe and per-epoch log
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

CONTEXT_FORMAT = "tipedge-coop/1"
POSITIONS = ("end", "middle", "front")


class TextEncoder:
    """CoOp's `TextEncoder.forward` on an open_clip CLIP: prompt token embeddings [N, L, D] +
    positional embedding -> transformer with CLIP's causal mask -> ln_final -> the EOT row ->
    text_projection. `eot` [N] is the EOT position (CoOp: `tokenized_prompts.argmax(-1)`)."""

    def __init__(self, model):
        self.m = model

    def __call__(self, prompts, eot):
        import torch

        m = self.m
        cast = m.transformer.get_cast_dtype()
        x = prompts.to(cast) + m.positional_embedding.to(cast)
        x = m.transformer(x, attn_mask=m.attn_mask)
        x = m.ln_final(x)
        # x[arange(N), eot] as a gather: exports as one GatherElements (a broadcast add and an
        # index, not expand/squeeze, which export as Where/If); the same rows, exactly.
        idx = eot.view(-1, 1, 1) + torch.zeros(1, 1, x.shape[-1], dtype=torch.long)
        x = torch.gather(x, 1, idx)[:, 0, :]
        if isinstance(m.text_projection, torch.nn.Linear):
            return m.text_projection(x)
        return x @ m.text_projection


def class_names(names: Sequence[str]) -> List[str]:
    """CoOp's class-name normalisation: "_" -> " "."""
    return [n.replace("_", " ") for n in names]


class PromptLearner:
    """The official `PromptLearner` construction: SOS, M context vectors, the class name's tokens,
    ".", EOT, padding; the class tokens at the end, middle (between the two halves of the context)
    or front (before the context). `ctx` is [M, D] (generic) or [N, M, D] (CSC).

    With `ctx_init` ("a photo of a") the context is the token embeddings of those words and M is
    their word count, exactly as the official code does (it assumes one BPE token per word); the
    tokenized prompt is then `ctx_init + " " + name + "."`. Otherwise the context is drawn from
    N(0, 0.02^2) and the prompt is `"X " * M + name + "."`, where each "X" is a placeholder token
    whose embedding is replaced by the context."""

    def __init__(self, model, tokenizer, classnames, n_ctx=16, ctx_init="", csc=False,
                 position="end", generator=None, ctx=None):
        import torch

        if position not in POSITIONS:
            raise ValueError(f"position {position!r} is not one of {POSITIONS}")
        self.tokenizer = tokenizer
        self.classnames = class_names(classnames)
        self.n_cls = len(self.classnames)
        self.position = position
        self.csc = csc
        emb = model.token_embedding
        dim = emb.weight.shape[1]
        ctx_init = (ctx_init or "").replace("_", " ")
        self.ctx_init = ctx_init
        if ctx_init:
            n_ctx = len(ctx_init.split(" "))
            with torch.no_grad():
                e = emb(tokenizer([ctx_init]))
            init = e[0, 1:1 + n_ctx, :].clone()
            # As the official code: a word-initialised context is generic even with CSC.
            self.csc = csc = False
            prefix = ctx_init
        else:
            shape = (self.n_cls, n_ctx, dim) if csc else (n_ctx, dim)
            init = torch.empty(shape)
            if generator is None:
                torch.nn.init.normal_(init, std=0.02)
            else:
                init.normal_(0.0, 0.02, generator=generator)
            prefix = " ".join(["X"] * n_ctx)
        self.n_ctx = n_ctx
        if ctx is not None:
            ctx = torch.as_tensor(ctx, dtype=torch.float32)
            if tuple(ctx.shape) != tuple(init.shape):
                raise ValueError(f"ctx shape {tuple(ctx.shape)}, expected {tuple(init.shape)}")
            init = ctx.clone()
        self.ctx = torch.nn.Parameter(init.float())
        self.name_lens = [len(tokenizer.encode(n)) for n in self.classnames]
        prompts = [prefix + " " + n + "." for n in self.classnames]
        self.tokenized = tokenizer(prompts)
        with torch.no_grad():
            e = emb(self.tokenized).float()
        self.token_prefix = e[:, :1, :]
        self.token_suffix = e[:, 1 + n_ctx:, :]
        self.eot = self.tokenized.argmax(dim=-1)

    def prompts(self):
        import torch

        ctx = self.ctx
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        pre, suf = self.token_prefix, self.token_suffix
        if self.position == "end":
            return torch.cat([pre, ctx, suf], dim=1)
        out = []
        half = self.n_ctx // 2
        for i in range(self.n_cls):
            n = self.name_lens[i]
            cls_i, rest_i = suf[i:i + 1, :n, :], suf[i:i + 1, n:, :]
            if self.position == "middle":
                p = torch.cat([pre[i:i + 1], ctx[i:i + 1, :half], cls_i, ctx[i:i + 1, half:], rest_i], dim=1)
            else:
                p = torch.cat([pre[i:i + 1], cls_i, ctx[i:i + 1], rest_i], dim=1)
            out.append(p)
        return torch.cat(out, dim=0)

    def weights(self, model, normalize=True):
        """The classifier W [N, embed_dim] (L2-normalised rows by default)."""
        f = TextEncoder(model)(self.prompts(), self.eot)
        return f / f.norm(dim=-1, keepdim=True) if normalize else f


def save_context(path: str, ctx, *, classnames: Sequence[str], position: str, csc: bool,
                 text_tower_sha256: str, ctx_init: str = "", source: str = "",
                 training: Optional[dict] = None) -> None:
    """Writes a context file atomically (temporary file + rename)."""
    ctx = np.ascontiguousarray(np.asarray(ctx, dtype=np.float32))
    if ctx.ndim not in (2, 3):
        raise ValueError(f"ctx has {ctx.ndim} dimensions, expected 2 or 3")
    if csc != (ctx.ndim == 3) or (csc and ctx.shape[0] != len(classnames)):
        raise ValueError(f"ctx shape {ctx.shape} does not fit csc={csc} with {len(classnames)} classes")
    if position not in POSITIONS:
        raise ValueError(f"position {position!r} is not one of {POSITIONS}")
    meta = {
        "format": CONTEXT_FORMAT,
        "n_ctx": str(ctx.shape[-2]),
        "csc": "true" if csc else "false",
        "position": position,
        "classnames": json.dumps(list(classnames), ensure_ascii=False),
        "text_tower_sha256": text_tower_sha256,
        "ctx_init": ctx_init or "",
        "source": source,
    }
    if training is not None:
        meta["training"] = json.dumps(training)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(safetensors_bytes("ctx", ctx, meta))
    load_context(tmp)  # the library reads back what was written
    os.replace(tmp, path)
    os.chmod(path, 0o644)


def safetensors_bytes(name: str, array: np.ndarray, metadata: Dict[str, str]) -> bytes:
    """One little-endian f32 tensor in the safetensors layout (u64 header length, JSON header
    padded with spaces to 8 bytes, data) with the header's keys sorted: the safetensors package
    writes its metadata in hash order, which differs from run to run, and the fixtures must be
    reproducible byte for byte."""
    data = np.ascontiguousarray(array, dtype="<f4").tobytes()
    header = {"__metadata__": dict(sorted(metadata.items())),
              name: {"dtype": "F32", "shape": list(array.shape), "data_offsets": [0, len(data)]}}
    text = json.dumps(header, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data


def load_context(path: str):
    """(ctx as np.float32, metadata dict) from a context file."""
    from safetensors import safe_open

    with safe_open(path, framework="np") as f:
        meta = dict(f.metadata() or {})
        if meta.get("format") != CONTEXT_FORMAT:
            raise ValueError(f"{path}: not a {CONTEXT_FORMAT} context file")
        ctx = f.get_tensor("ctx").astype(np.float32)
    return ctx, meta


def text_tower_sha256(model_dir: str) -> str:
    """The sha256 of the embeddings text graph in an exported model folder."""
    side = os.path.join(model_dir, "text_embed.json")
    with open(side) as f:
        return json.load(f)["sha256"]
