#!/usr/bin/env python3
"""Convert an official CoOp checkpoint (KaiyangZhou/CoOp, trained with Dassl) into a tipedge-coop/1
context file (models/coop.py).

The official trainer saves, per registered model, `OUTPUT/prompt_learner/model.pth.tar-EPOCH`
(Dassl's `save_checkpoint`: `torch.save` of a dict with "state_dict" (the PromptLearner's
`ctx` [M, D] or [N, M, D], `token_prefix` [N, 1, D], `token_suffix` [N, 77-1-M, D]), "epoch",
"optimizer", "scheduler", "val_result"). Only `ctx` is imported; `token_prefix`/`token_suffix`
(the SOS and class-name token embeddings the context was trained with) are used to check that
--classnames (names and order) and the model folder's token table match the checkpoint.

Loading: the "scheduler" entry holds a pickled torch CosineAnnealingLR object and the optimizer
state uses a defaultdict, so torch.load(weights_only=True) refuses official checkpoints. The file
is read with torch.load(weights_only=True) first; if that fails it is re-read with a restricted
unpickler that only resolves containers, tensor-rebuild functions and torch's own optimizer /
LR-scheduler classes (no arbitrary code). Only --trust-checkpoint falls back to
weights_only=False. The context file records which loader was used.

Examples:
  python models/coop_import.py --checkpoint output/.../prompt_learner/model.pth.tar-200 \\
      --classnames classes.txt --model out/vit-b-32 --out ctx.safetensors
  python models/coop_import.py --checkpoint output/.../prompt_learner --classnames data/shots \\
      --position middle --model out/rn50 --out ctx.safetensors
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import pickle
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402
import coop  # noqa: E402


class ImportError_(Exception):
    """A one-line user-facing error (exit code 2)."""


# ----------------------------------------------------------------------------------------------
# loading


def _restricted_pickle_module():
    """A pickle module whose Unpickler resolves only what a Dassl checkpoint needs."""
    import torch

    allowed = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("collections", "defaultdict"): collections.defaultdict,
        ("builtins", "dict"): dict, ("builtins", "list"): list, ("builtins", "tuple"): tuple,
        ("builtins", "set"): set, ("builtins", "int"): int, ("builtins", "float"): float,
        ("builtins", "bool"): bool, ("builtins", "str"): str,
        ("torch", "device"): torch.device, ("torch", "Size"): torch.Size,
    }
    for n in ("float16", "float32", "float64", "bfloat16", "int64", "int32", "bool", "uint8"):
        allowed[("torch", n)] = getattr(torch, n)
    for n in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
              "_rebuild_parameter_with_state"):
        if hasattr(torch._utils, n):
            allowed[("torch._utils", n)] = getattr(torch._utils, n)

    def torch_optim_class(mod, name):
        # torch's optimizers and LR schedulers (Dassl pickles the CosineAnnealingLR successor and
        # the optimizer object it references)
        if not (mod == "torch.optim" or mod.startswith("torch.optim.")):
            return None
        import importlib

        try:
            obj = getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            return None
        base = (torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler)
        return obj if isinstance(obj, type) and issubclass(obj, base) else None

    class Unpickler(pickle.Unpickler):
        def find_class(self, mod, name):
            mod = {"__builtin__": "builtins"}.get(mod, mod)  # protocol-2 pickles name Python 2's
            if (mod, name) in allowed:
                return allowed[(mod, name)]
            cls = torch_optim_class(mod, name)
            if cls is not None:
                return cls
            raise pickle.UnpicklingError(f"global {mod}.{name} is not allowed")

    class Module:
        pass

    m = Module()
    m.Unpickler = Unpickler
    m.load = pickle.load
    m.__name__ = "coop_import_restricted_pickle"
    return m


def load_checkpoint(path: str, trust: bool):
    """(checkpoint object, loader name)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True), "torch.load(weights_only=True)"
    except pickle.UnpicklingError:
        pass
    except Exception as e:  # noqa: BLE001 - not a torch file at all, truncated, ...
        raise ImportError_(f"{path}: not a readable torch checkpoint ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False,
                         pickle_module=_restricted_pickle_module())
        return obj, "restricted unpickler (torch optimizer/scheduler classes only)"
    except pickle.UnpicklingError as e:
        if not trust:
            raise ImportError_(f"{path}: refusing to unpickle it ({str(e).splitlines()[0]}); pass "
                               f"--trust-checkpoint to load it with weights_only=False if you trust "
                               f"its source") from None
    except Exception as e:  # noqa: BLE001
        raise ImportError_(f"{path}: not a readable torch checkpoint ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False), "torch.load(weights_only=False)"
    except Exception as e:  # noqa: BLE001
        raise ImportError_(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from None


def resolve_checkpoint(path: str) -> str:
    """A file, or a Dassl output folder (OUT, OUT/prompt_learner) whose `checkpoint` file names
    the latest checkpoint."""
    if os.path.isfile(path):
        return path
    if os.path.isdir(path):
        for d in (path, os.path.join(path, "prompt_learner")):
            marker = os.path.join(d, "checkpoint")
            if os.path.isfile(marker):
                with open(marker) as f:
                    name = f.readline().strip()
                p = os.path.join(d, name)
                if not os.path.isfile(p):
                    raise ImportError_(f"{marker} names {name}, which does not exist")
                return p
        raise ImportError_(f"{path} is a folder without a Dassl 'checkpoint' file (give the "
                           f"model.pth.tar-N file)")
    raise ImportError_(f"{path}: no such file")


def state_dict_of(obj, path: str):
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        sd = obj["state_dict"]
    elif isinstance(obj, dict):
        sd = obj
    else:
        raise ImportError_(f"{path}: not a checkpoint dict (got {type(obj).__name__})")
    out = {}
    for k, v in sd.items():
        k = str(k)
        for p in ("module.", "prompt_learner."):
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


# ----------------------------------------------------------------------------------------------
# class names, model folder


def read_classnames(src: str):
    if os.path.isdir(src):
        names = sorted(d for d in os.listdir(src) if os.path.isdir(os.path.join(src, d))
                       and not d.startswith("."))
        if not names:
            raise ImportError_(f"--classnames folder {src} has no class sub-folders")
        return names
    if not os.path.isfile(src):
        raise ImportError_(f"--classnames {src}: no such file or folder")
    try:
        with open(src, encoding="utf-8") as f:
            names = [ln.strip() for ln in f.read().splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise ImportError_(f"--classnames {src}: cannot read it ({e})") from None
    names = [n for n in names if n]
    if not names:
        raise ImportError_(f"--classnames {src} lists no class names")
    return names


def read_model(model_dir: str):
    side = os.path.join(model_dir, "text_embed.json")
    if not os.path.isfile(side):
        raise ImportError_(f"{side} is missing (export the folder with export_clip.py --towers ...,text_embed)")
    try:
        with open(side) as f:
            meta = json.load(f)
        width = int(meta["input"]["shape"][-1])
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise ImportError_(f"{side}: cannot read the embeddings width ({e})") from None
    return meta, width


def token_table(model_dir: str, meta: dict):
    from safetensors.numpy import load_file

    tt = meta.get("token_table") or {"file": "token_embedding.safetensors", "tensor": "token_embedding"}
    p = os.path.join(model_dir, tt["file"])
    try:
        return load_file(p)[tt["tensor"]].astype(np.float32)
    except Exception as e:  # noqa: BLE001
        raise ImportError_(f"cannot read the token table {p}: {e}") from None


def tokenizer_for(arch: str):
    import open_clip

    from export_clip import TINY_NAME, register_tiny

    if arch == TINY_NAME:
        register_tiny()
    return open_clip.get_tokenizer(arch)


def check_tokens(sd, names, n_ctx: int, table, tokenizer, path: str, tol_rel: float = 1e-3):
    """token_prefix / token_suffix of the checkpoint against the embeddings of SOS and
    `name + "."` + EOT + padding under the model folder's token table (exactly what the official
    PromptLearner stores: embedding of "X X ... X name." without the SOS and context positions)."""
    import torch

    res = {}
    pre, suf = sd.get("token_prefix"), sd.get("token_suffix")
    prompts = [" ".join(["X"] * n_ctx) + " " + n + "." for n in names]
    toks = tokenizer(prompts).numpy()
    emb = table[toks]  # [N, L, D]
    for key, got, want in (("token_prefix", pre, emb[:, :1, :]), ("token_suffix", suf, emb[:, 1 + n_ctx:, :])):
        if got is None:
            res[key] = "absent"
            continue
        if not isinstance(got, torch.Tensor) or got.dim() != 3:
            raise ImportError_(f"{path}: {key} is not a 3-D tensor")
        g = got.detach().float().cpu().numpy()
        if g.shape[0] != len(names):
            raise ImportError_(f"{path}: the checkpoint was trained for {g.shape[0]} classes "
                               f"({key} {tuple(g.shape)}), --classnames lists {len(names)}")
        if g.shape[1:] != want.shape[1:]:
            raise ImportError_(f"{path}: {key} is {tuple(g.shape)}, expected {tuple(want.shape)} "
                               f"for n_ctx {n_ctx} under this model folder")
        d = float(np.abs(g - want).max())
        lim = tol_rel * float(np.abs(want).max())
        if not d <= lim:
            worst = int(np.abs(g - want).reshape(len(names), -1).max(1).argmax())
            raise ImportError_(
                f"{path}: {key} does not match the token embeddings of the class names under the "
                f"model folder (max abs diff {d:.3e} > {lim:.3e}, worst class {worst} {names[worst]!r}): "
                f"wrong --classnames or order, or a checkpoint for another CLIP (--no-token-check skips)")
        res[key] = {"max_abs_diff": d, "tolerance": lim}
    return res


# ----------------------------------------------------------------------------------------------
# main


def run(args):
    import torch

    path = resolve_checkpoint(args.checkpoint)
    names = coop.class_names(read_classnames(args.classnames))
    meta, width = read_model(args.model)
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise ImportError_(f"output folder {os.path.dirname(os.path.abspath(args.out))} does not exist")

    obj, loader = load_checkpoint(path, args.trust_checkpoint)
    sd = state_dict_of(obj, path)
    if "ctx" not in sd:
        raise ImportError_(f"{path}: no 'ctx' in the state dict (keys: {', '.join(list(sd)[:8]) or 'none'})")
    ctx = sd["ctx"]
    if not isinstance(ctx, torch.Tensor) or not ctx.is_floating_point():
        raise ImportError_(f"{path}: 'ctx' is not a floating-point tensor ({type(ctx).__name__})")
    if ctx.dim() not in (2, 3):
        raise ImportError_(f"{path}: ctx has shape {tuple(ctx.shape)}, expected [M, D] or [N, M, D]")
    csc = ctx.dim() == 3
    if csc and ctx.shape[0] != len(names):
        raise ImportError_(f"{path}: class-specific ctx {tuple(ctx.shape)} has {ctx.shape[0]} classes, "
                           f"--classnames lists {len(names)}")
    if ctx.shape[-1] != width:
        raise ImportError_(f"{path}: ctx width {ctx.shape[-1]} != the token-embedding width {width} of "
                           f"{args.model}")
    n_ctx = int(ctx.shape[-2])
    ctx_init = (args.ctx_init or "").replace("_", " ")
    if ctx_init and len(ctx_init.split(" ")) != n_ctx:
        raise ImportError_(f"--ctx-init {args.ctx_init!r} has {len(ctx_init.split(' '))} words, the "
                           f"checkpoint's ctx has {n_ctx} vectors")
    ctx_np = ctx.detach().float().cpu().numpy()
    if not np.isfinite(ctx_np).all():
        raise ImportError_(f"{path}: ctx has non-finite values")

    token_check = "skipped"
    if not args.no_token_check:
        table = token_table(args.model, meta)
        token_check = check_tokens(sd, names, n_ctx, table, tokenizer_for(meta["arch"]), path)

    epoch = obj.get("epoch") if isinstance(obj, dict) else None
    training = {
        "checkpoint": os.path.basename(path),
        "checkpoint_sha256": common.sha256_file(path),
        "epoch": epoch if isinstance(epoch, (int, float)) else None,
        "ctx_dtype": str(ctx.dtype).replace("torch.", ""),
        "loaded_with": loader,
        "token_check": token_check,
        "position_source": "--position (not recorded in the checkpoint)",
    }
    coop.save_context(args.out, ctx_np, classnames=names, position=args.position, csc=csc,
                      text_tower_sha256=coop.text_tower_sha256(args.model), ctx_init=ctx_init,
                      source="coop_import.py", training=training)
    print(f"wrote {args.out}: ctx {tuple(ctx_np.shape)} ({'CSC' if csc else 'generic'}, "
          f"{training['ctx_dtype']} -> float32), {len(names)} classes, position {args.position}, "
          f"epoch {training['epoch']}; loaded with {loader}; token check: "
          + (token_check if isinstance(token_check, str) else
             ", ".join(f"{k} {v if isinstance(v, str) else format(v['max_abs_diff'], '.2e')}"
                       for k, v in token_check.items())))
    return training


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True,
                    help="prompt_learner/model.pth.tar-N (or model-best.pth.tar), or the output "
                         "folder whose Dassl 'checkpoint' file names it")
    ap.add_argument("--classnames", required=True, metavar="FILE|DIR",
                    help="one class name per line in the training order, or a folder-per-class "
                         "directory (sorted folder names); '_' -> ' ' as CoOp does")
    ap.add_argument("--position", choices=coop.POSITIONS, default="end",
                    help="class token position it was trained with (not in the checkpoint; default end)")
    ap.add_argument("--ctx-init", default="",
                    help="the words it was initialised from (recorded only; must have M words)")
    ap.add_argument("--model", required=True, metavar="DIR",
                    help="exported model folder the context is for (text_embed.json: sha256, width)")
    ap.add_argument("--no-token-check", action="store_true",
                    help="do not compare token_prefix/token_suffix with the class names' embeddings")
    ap.add_argument("--trust-checkpoint", action="store_true",
                    help="allow torch.load(weights_only=False) when the restricted loader refuses "
                         "the file (runs arbitrary pickled code: only for files you trust)")
    ap.add_argument("--out", required=True, help="output context file (.safetensors)")
    args = ap.parse_args(argv)
    try:
        run(args)
    except ImportError_ as e:
        print(f"coop_import: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
