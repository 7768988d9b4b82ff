#!/usr/bin/env python3
"""Reference outputs for the Rust CoOp parity test (tests/coop.rs): models/fixtures/coop/.

  PYTHON=/path/to/venv/bin/python; $PYTHON models/make_coop_refs.py      (~10 s, deterministic)

On the tiny CLIP fixture (models/fixtures/clip-tiny, rebuilt here exactly as export_clip.py
--arch tiny --pretrained none --seed 0 --fixture builds it), for every class-token position
(end, middle, front) and both a generic and a class-specific (CSC) context: a seeded random
context (N(0, 0.02^2), as CoOp initialises it, scaled up x10 so that the context visibly moves W)
written as a context file, and the W [N, 32] that the official construction (models/coop.py
PromptLearner + TextEncoder, in PyTorch f32) computes from it, L2-normalised.

Files:
  ctx_<position>_<generic|csc>.safetensors   context files (tipedge-coop/1)
  w_<position>_<generic|csc>.npy             <f4 [N, 32] reference W
  ctx_imported_<generic|csc>.safetensors     what models/coop_import.py makes of a checkpoint in
                                             the official format (Dassl's save_checkpoint dict:
                                             state_dict with ctx, token_prefix, token_suffix;
                                             epoch; optimizer; scheduler with a pickled
                                             CosineAnnealingLR), written to a temporary folder
  w_imported_<generic|csc>.npy               <f4 W of the checkpoint's ctx by the official
                                             construction (position middle, 8 context vectors)
  manifest.json                              class names, shapes, the prompt graph's sha256, and
                                             onnxruntime's max |W - reference| on the same prompts
"""
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402
import coop  # noqa: E402
from export_clip import build_model  # noqa: E402

OUT = os.path.join(HERE, "fixtures", "coop")
MODEL = os.path.join(HERE, "fixtures", "clip-tiny")
# Names of one, two and several tokens, one with accents, one of CoOp's "_" form.
CLASSES = ["nominal", "hairline crack", "oil_stain", "café au lait spot on woven cotton"]
N_CTX = {"end": 16, "middle": 5, "front": 4}


def main():
    import open_clip
    import torch

    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    model, arch, _ = build_model("tiny", "none", 0, fixture=True)
    tokenizer = open_clip.get_tokenizer(arch)
    sha = coop.text_tower_sha256(MODEL)
    assert sha == common.sha256_file(os.path.join(MODEL, "text_embed.onnx"))
    sess = common.ort_session(os.path.join(MODEL, "text_embed.onnx"), threads=1)
    names = coop.class_names(CLASSES)
    manifest = {"classes": names, "text_tower_sha256": sha, "cases": {}}
    for position in coop.POSITIONS:
        for csc in (False, True):
            g = torch.Generator().manual_seed(100 + 10 * coop.POSITIONS.index(position) + csc)
            pl = coop.PromptLearner(model, tokenizer, CLASSES, n_ctx=N_CTX[position], csc=csc,
                                    position=position, generator=g)
            with torch.no_grad():
                pl.ctx.mul_(10.0)
                w = pl.weights(model).numpy().astype(np.float32)
                prompts = pl.prompts().numpy().astype(np.float32)
            feats = sess.run(None, {"embeddings": prompts, "eot": pl.eot.numpy().astype(np.int64)})[0]
            w_ort = feats / np.linalg.norm(feats, axis=-1, keepdims=True)
            name = f"{position}_{'csc' if csc else 'generic'}"
            coop.save_context(os.path.join(OUT, f"ctx_{name}.safetensors"), pl.ctx.detach().numpy(),
                              classnames=names, position=position, csc=csc, text_tower_sha256=sha,
                              source="make_coop_refs.py")
            common.save_npy(os.path.join(OUT, f"w_{name}.npy"), w)
            manifest["cases"][name] = {
                "n_ctx": N_CTX[position], "csc": csc, "position": position,
                "ctx_shape": list(pl.ctx.shape), "eot": pl.eot.tolist(),
                "name_lens": pl.name_lens,
                "ort_max_abs_vs_torch": float(np.abs(w_ort - w).max()),
            }
            print(f"  {name}: ctx {tuple(pl.ctx.shape)}, eot {pl.eot.tolist()}, "
                  f"ORT vs torch max |dW| {manifest['cases'][name]['ort_max_abs_vs_torch']:.2e}")
    manifest["imported"] = write_imported(model, tokenizer, names)
    common.write_json(os.path.join(OUT, "manifest.json"), manifest)
    print("wrote", OUT)


def write_imported(model, tokenizer, names):
    """An official-format checkpoint (a few SGD steps from the official init, so ctx is not the
    init) -> coop_import.py -> context file; and the W PyTorch gives the checkpoint's ctx."""
    import subprocess
    import tempfile
    from collections import OrderedDict

    import torch

    out = {}
    with tempfile.TemporaryDirectory() as td:
        classes = os.path.join(td, "classes.txt")
        with open(classes, "w") as f:
            f.write("\n".join(CLASSES) + "\n")
        for csc in (False, True):
            kind = "csc" if csc else "generic"
            torch.manual_seed(7 + csc)
            pl = coop.PromptLearner(model, tokenizer, CLASSES, n_ctx=8, csc=csc, position="middle")
            opt = torch.optim.SGD([pl.ctx], lr=0.002, momentum=0.9, weight_decay=5e-4)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 10.0)
            target = torch.randn(pl.n_cls, 32, generator=torch.Generator().manual_seed(5))
            for _ in range(3):
                loss = -(pl.weights(model) * target).sum() * 100.0
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
            state_dict = OrderedDict(ctx=pl.ctx.detach().clone(), token_prefix=pl.token_prefix.clone(),
                                     token_suffix=pl.token_suffix.clone())
            ckpt_dir = os.path.join(td, kind, "prompt_learner")
            os.makedirs(ckpt_dir)
            ckpt = os.path.join(ckpt_dir, "model.pth.tar-3")
            # Dassl's ConstantWarmupScheduler.state_dict(): its __dict__ without the optimizer,
            # so the successor CosineAnnealingLR is pickled as an object (weights_only refuses).
            warmup = {"successor": sched, "warmup_epoch": 1, "cons_lr": 1e-5, "last_epoch": 3,
                      "base_lrs": [0.002], "_last_lr": sched.get_last_lr()}
            torch.save({"state_dict": state_dict, "epoch": 3, "optimizer": opt.state_dict(),
                        "scheduler": warmup, "val_result": None}, ckpt)
            ctx_path = os.path.join(OUT, f"ctx_imported_{kind}.safetensors")
            subprocess.run([sys.executable, os.path.join(HERE, "coop_import.py"), "--checkpoint", ckpt,
                            "--classnames", classes, "--position", "middle", "--model", MODEL,
                            "--out", ctx_path], check=True)
            ctx, meta = coop.load_context(ctx_path)
            assert np.array_equal(ctx, pl.ctx.detach().numpy()), "imported ctx differs"
            # torch.save writes a random serialization id into every file, so the checkpoint's
            # sha256 differs from run to run: blanked here to keep the fixture reproducible.
            training = json.loads(meta["training"])
            training["checkpoint_sha256"] = "(varies: torch.save writes a random serialization id)"
            coop.save_context(ctx_path, ctx, classnames=json.loads(meta["classnames"]),
                              position=meta["position"], csc=meta["csc"] == "true",
                              text_tower_sha256=meta["text_tower_sha256"], ctx_init=meta["ctx_init"],
                              source=meta["source"], training=training)
            with torch.no_grad():
                w = pl.weights(model).numpy().astype(np.float32)
            common.save_npy(os.path.join(OUT, f"w_imported_{kind}.npy"), w)
            out[kind] = {"ctx_shape": list(ctx.shape), "position": meta["position"],
                         "source": meta["source"]}
            print(f"  imported_{kind}: ctx {ctx.shape} from an official-format checkpoint")
    return out


if __name__ == "__main__":
    main()
